"""Tests of sandbox/cgroups.py.

Tests marked `privileged` that use the `mgr` fixture run against the real kernel, on
whichever cgroup version this host has (v1/hybrid on the development machines, v2 on a
pure-v2 host), and fail -- never skip -- when they cannot run. Every such test works in
its own group under `nslab-test/` and leaves no cgroup behind.

The `fake` tests drive the v2 code over a directory tree that imitates the kernel, because
the development machines have no cgroup v2 to try it on; each says so in its docstring.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from sandbox import procfs
from sandbox.cgroups import Limits, MountInfo, check_group, detect, read_mountinfo
from sandbox.cgroupsbase import MAX_DEPTH, MAX_DESCENDANTS, TREE_LIMIT
from sandbox.cgroupsv1 import CgroupsV1
from sandbox.cgroupsv2 import CgroupsV2
from sandbox.errors import Conflict, HostUnsupported, InvalidRequest, SandboxError

PARENT = "nslab-test"
OWNER = 1_234_567  # an unused host uid standing in for a sandbox root's mapped uid

# Runs first in every process a test starts: it puts itself into the cgroup.procs files
# given as argv[1], then says so on stdout.
PRELUDE = """\
import errno, json, os, sys, time
for _f in json.loads(sys.argv[1]):
    _fd = os.open(_f, os.O_WRONLY)
    os.write(_fd, str(os.getpid()).encode())
    os.close(_fd)
print("in", flush=True)
"""


# -- fixtures ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def mgr():
    """The host's real cgroup manager; fails if not root or a controller is missing."""
    assert os.geteuid() == 0, "privileged cgroup tests need root: run pytest as root"
    m = detect()
    m.check()
    yield m
    # The shared parent goes too once no test group is left in it.
    if m.exists(PARENT) and not m.children(PARENT):
        m.remove(PARENT)
    assert not m.exists(PARENT) or m.children(PARENT) == [], "test cgroups left behind"


@pytest.fixture
def group(mgr):
    """A unique group name; removed after the test (also on failure) and checked gone."""
    name = f"{PARENT}/{uuid.uuid4().hex[:12]}"
    dirs = group_dirs(mgr, name)
    yield name
    mgr.remove(name)
    assert [d for d in dirs if d.exists()] == [], f"cgroup {name} left behind"


@pytest.fixture
def started():
    """Processes a test starts; each is killed by its pid and reaped afterwards."""
    procs: list[subprocess.Popen] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait(timeout=10)
        p.stdin.close()
        p.stdout.close()


def group_dirs(mgr, group) -> list[Path]:
    return [Path(f).parent for f in mgr.spawn_procs_files(group)]


def kernel_file(mgr, group, name) -> str | None:
    """The content of control file `name` of `group` in whichever hierarchy has it."""
    for d in group_dirs(mgr, group):
        if (d / name).exists():
            return (d / name).read_text().strip()
    return None


def start_in(started, files, body, *args) -> subprocess.Popen:
    """Start Python `body` in a process that first moves itself into `files`."""
    p = subprocess.Popen([sys.executable, "-c", PRELUDE + textwrap.dedent(body),
                          json.dumps([str(f) for f in files]), *map(str, args)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    started.append(p)
    assert p.stdout.readline() == "in\n", "the test process could not enter its cgroup"
    return p


def gone_or_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


# -- pure logic -------------------------------------------------------------------------

@pytest.mark.parametrize("limits, field", [
    (Limits(cpus=0), "cpus"), (Limits(cpus=-1), "cpus"), (Limits(cpus=0.001), "cpus"),
    (Limits(cpus=(os.cpu_count() or 1) + 1), "cpus"), (Limits(cpus=float("nan")), "cpus"),
    (Limits(cpus=True), "cpus"), (Limits(cpu_weight=0), "cpu_weight"),
    (Limits(cpu_weight=10_001), "cpu_weight"), (Limits(cpu_weight=1.5), "cpu_weight"),
    (Limits(cpuset=""), "cpuset"), (Limits(cpuset="1-0"), "cpuset"),
    (Limits(cpuset="0;rm"), "cpuset"), (Limits(cpuset="0-99999"), "cpuset"),
    (Limits(memory=0), "memory"), (Limits(memory=(4 << 20) - 1), "memory"),
    (Limits(memory=1 << 60), "memory"), (Limits(memory="64M"), "memory"),
    (Limits(swap=-1), "swap"), (Limits(pids=0), "pids"), (Limits(pids=-5), "pids"),
    (Limits(pids=4_194_305), "pids"), (Limits(io_weight=0), "io_weight"),
    (Limits(io_weight=20_000), "io_weight"),
])
def test_limits_validate_rejects(limits, field):
    with pytest.raises(InvalidRequest) as e:
        limits.validate()
    assert e.value.field == field


def test_limits_validate_accepts_sane_values():
    Limits().validate()
    Limits(cpus=0.01, cpu_weight=1, cpuset="0", memory=4 << 20, swap=0, pids=1,
           io_weight=10_000).validate()
    Limits(cpus=float(os.cpu_count() or 1), cpuset="0,0-0").validate()
    assert Limits(cpus=0.5).cpu_quota_us == 50_000


@pytest.mark.parametrize("bad", ["", "/abs", "a/../b", "..", "a//b", "a/", "./a", "a/.",
                                 "a\nb", "a\n", "a b", ".hidden", "x" * 129])
def test_group_paths_are_validated(bad):
    with pytest.raises(InvalidRequest) as e:
        check_group(bad)
    assert e.value.field == "group"


def test_cpulist_parsing():
    assert procfs.parse_cpulist("0-2,5\n") == {0, 1, 2, 5}
    assert procfs.parse_cpulist("") == set()
    with pytest.raises(ValueError):
        procfs.parse_cpulist("3-1")


def test_proc_cgroup_lines_v1_hybrid_and_v2():
    """/proc/PID/cgroup: the cpu hierarchy's line on v1 (a hybrid host lists the unified
    "0::" line too), the one "0::" line on v2; "name=" hierarchies are left out; paths
    are relative to the sandbox's group."""
    hybrid = ("12:pids:/nslab/default/sb1\n4:cpu,cpuacct:/nslab/default/sb1/child\n"
              "1:name=systemd:/system.slice/x.service\n0::/system.slice/x.service\n")
    paths = procfs.cgroup_paths(hybrid)
    assert paths == {"pids": "/nslab/default/sb1", "cpu": "/nslab/default/sb1/child",
                     "cpuacct": "/nslab/default/sb1/child", "": "/system.slice/x.service"}
    assert procfs.cpu_cgroup(paths) == "/nslab/default/sb1/child"
    assert procfs.relative(procfs.cpu_cgroup(paths), "nslab/default/sb1") == "/child"
    assert procfs.relative("/nslab/default/sb1", "nslab/default/sb1") == "/"
    assert procfs.relative("/nslab/default/sb10", "nslab/default/sb1") == "/nslab/default/sb10"
    v2 = procfs.cgroup_paths("0::/nslab/default/sb1/init\n")
    assert v2 == {"": "/nslab/default/sb1/init"}
    assert procfs.cpu_cgroup(v2) == "/nslab/default/sb1/init"
    assert procfs.cpu_cgroup({}) is None


def test_v1_layout_from_co_mounted_hierarchies():
    """cpu and cpuacct co-mounted (as on most v1 hosts) share one mount and one entry."""
    mounts = [MountInfo("/", "/sys/fs/cgroup/cpu,cpuacct", "cgroup", "cgroup",
                        ("rw", "cpu", "cpuacct")),
              MountInfo("/", "/sys/fs/cgroup/memory", "cgroup", "cgroup", ("rw", "memory")),
              MountInfo("/", "/sys/fs/cgroup/systemd", "cgroup", "cgroup",
                        ("rw", "xattr", "name=systemd")),
              MountInfo("/", "/sys/fs/cgroup/unified", "cgroup2", "cgroup2", ("rw",))]
    m = CgroupsV1.from_mounts(Path("/sys/fs/cgroup"), mounts)
    assert m.mounts_inside() == [("cpu,cpuacct", "cgroup", "cpu,cpuacct"),
                                 ("memory", "cgroup", "memory")]
    # The sandbox also gets a link per co-mounted controller ("cpu" -> "cpu,cpuacct"):
    # test_isolation.py's test_co_mounted_cgroup_controllers_have_a_link_each.
    assert m.spawn_procs_files("a/b") == ["/sys/fs/cgroup/cpu,cpuacct/a/b/cgroup.procs",
                                          "/sys/fs/cgroup/memory/a/b/cgroup.procs"]


# -- the real kernel --------------------------------------------------------------------

@pytest.mark.privileged
def test_detect_matches_mountinfo(mgr):
    mounts = read_mountinfo()
    at_root = [m for m in mounts if m.mountpoint == "/sys/fs/cgroup"]
    expect = 2 if at_root and at_root[-1].fstype == "cgroup2" else 1
    assert mgr.version == expect
    inside = mgr.mounts_inside()
    if expect == 2:
        assert inside == [("", "cgroup2", "")]
    else:
        by_point = {m.mountpoint: m for m in mounts if m.fstype == "cgroup"}
        for sub, fstype, data in inside:
            host = by_point[f"/sys/fs/cgroup/{sub}"]
            assert fstype == "cgroup"
            assert set(data.split(",")) <= set(host.super_options)
        names = {c for _, _, data in inside for c in data.split(",")}
        assert {"cpu", "cpuacct", "cpuset", "memory", "pids", "freezer"} <= names


@pytest.mark.privileged
def test_create_writes_limits_to_kernel_files(mgr, group):
    limits = Limits(cpus=0.5, cpu_weight=200, cpuset="0", memory=64 << 20, swap=0, pids=50,
                    io_weight=300)
    mgr.create(group, limits, OWNER, OWNER)
    with pytest.raises(Conflict):
        mgr.create(group, limits, OWNER, OWNER)

    if mgr.version == 1:
        expect = {"cpu.cfs_quota_us": "50000", "cpu.cfs_period_us": "100000",
                  "cpu.shares": "2048", "cpuset.cpus": "0", "pids.max": "50",
                  "memory.limit_in_bytes": str(64 << 20)}
        optional = {"memory.memsw.limit_in_bytes": str(64 << 20), "blkio.weight": "300",
                    "blkio.bfq.weight": "300"}
    else:
        expect = {"cpu.max": "50000 100000", "cpu.weight": "200", "cpuset.cpus": "0",
                  "memory.max": str(64 << 20), "pids.max": "50"}
        optional = {"memory.swap.max": "0", "io.weight": "default 300"}
    for name, value in expect.items():
        assert kernel_file(mgr, group, name) == value, name
    for name, value in optional.items():
        assert kernel_file(mgr, group, name) in (None, value), name
    if mgr.version == 1:
        # Children the sandbox makes inherit cpus and mems from the group.
        cpuset_dir = next(d for d in group_dirs(mgr, group) if (d / "cpuset.cpus").exists())
        assert read(cpuset_dir / "cgroup.clone_children") == "1"

    nodes, truncated = mgr.tree(group)
    top = nodes[0]
    assert top["path"] == "/" and not truncated
    lim = top["limits"]
    assert (lim["cpu_quota_us"], lim["cpu_period_us"], lim["cpus"]) == (50_000, 100_000, 0.5)
    assert lim["cpuset_cpus"] == "0" and lim["memory_max"] == 64 << 20
    assert lim["pids_max"] == 50 and lim.get("swap_max", 0) == 0
    assert lim.get("cpu_weight", 200) == 200 and lim.get("cpu_shares", 2048) == 2048

    # Raising memory keeps the swap allowance (v1: memsw moves along with it).
    mgr.set_limits(group, Limits(cpus=1.0, memory=128 << 20, cpuset="0-1"))
    lim = mgr.tree(group)[0][0]["limits"]
    assert lim["cpus"] == 1.0 and lim["memory_max"] == 128 << 20
    assert lim["cpuset_cpus"] == "0-1" and lim.get("swap_max", 0) == 0

    stats = mgr.stats(group)
    assert set(stats) == {"cpu_usage_ns", "memory_current", "memory_peak", "memory_limit",
                          "oom_kills", "pids_current", "pids_limit", "pids_events_max", "cpus",
                          "frozen", "cpu_nr_periods", "cpu_nr_throttled", "cpu_throttled_ns"}
    assert stats["memory_limit"] == 128 << 20 and stats["pids_limit"] == 50
    assert stats["cpus"] == 1.0 and stats["oom_kills"] == 0 and stats["frozen"] is False
    # Nothing has run yet: nothing refused, nothing throttled.
    assert (stats["pids_events_max"], stats["cpu_nr_throttled"], stats["cpu_throttled_ns"]) \
        == (0, 0, 0)


@pytest.mark.privileged
def test_bad_requests_leave_nothing_behind(mgr, group):
    outside = str((os.cpu_count() or 1) + 3)
    with pytest.raises(InvalidRequest) as e:
        mgr.create(group, Limits(cpuset=outside), OWNER, OWNER)
    assert e.value.field == "cpuset"
    with pytest.raises(InvalidRequest):
        mgr.create(group, Limits(memory=1), OWNER, OWNER)
    assert not mgr.exists(group)
    with pytest.raises(InvalidRequest):
        mgr.create("../escape", Limits(), OWNER, OWNER)


@pytest.mark.privileged
def test_delegated_files_belong_to_owner_limits_to_root(mgr, group):
    mgr.create(group, Limits(cpus=0.5, memory=64 << 20, pids=50), OWNER, OWNER + 1)
    for d in group_dirs(mgr, group):
        st = d.stat()
        assert (st.st_uid, st.st_gid) == (OWNER, OWNER + 1), d
        assert (d / "cgroup.procs").stat().st_uid == OWNER
        if mgr.version == 1:
            for name in ("tasks", "cgroup.clone_children", "notify_on_release"):
                assert (d / name).stat().st_uid == OWNER, d / name
        else:
            assert (d / "cgroup.subtree_control").stat().st_uid == OWNER
            assert (d / "init").stat().st_uid == OWNER
            assert (d / "init" / "cgroup.procs").stat().st_uid == OWNER
        for name in ("cpu.cfs_quota_us", "cpu.max", "memory.limit_in_bytes", "memory.max",
                     "pids.max", "cpuset.cpus"):
            if (d / name).exists():
                assert (d / name).stat().st_uid == 0, d / name


DELEGATE_HELPER = """
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
plan, uid = json.loads(sys.argv[2]), int(sys.argv[3])
# Like a sandbox process: it is in its group, and its cgroup namespace starts there.
if libc.unshare(0x02000000) != 0:  # CLONE_NEWCGROUP
    raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWCGROUP)")
print("unshared", flush=True)
sys.stdin.readline()  # meanwhile the test calls finish_spawn()
# Become the sandbox's root: host uid `uid`, root of a user namespace of its own.
os.setgroups([])
os.setresgid(uid, uid, uid)
os.setresuid(uid, uid, uid)
libc.prctl(4, 1, 0, 0, 0)  # PR_SET_DUMPABLE: the id change made /proc/self root's
if libc.unshare(0x10000000) != 0:  # CLONE_NEWUSER
    raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWUSER)")
for name, text in (("setgroups", "deny"), ("uid_map", f"0 {uid} 1"), ("gid_map", f"0 {uid} 1")):
    with open(f"/proc/self/{name}", "w") as f:
        f.write(text)

def attempt(fn, *args):
    try:
        fn(*args)
        return "ok"
    except OSError as e:
        return errno.errorcode[e.errno]

def write(path, value):
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)

result = {"uid": os.getuid(), "mkdir": [attempt(os.mkdir, d) for d in plan["mkdir"]],
          "allowed": [attempt(write, p, v) for p, v in plan["allowed"]],
          "denied": [attempt(write, p, v) for p, v in plan["denied"]]}
print(json.dumps(result), flush=True)
sys.stdin.readline()
"""


@pytest.mark.privileged
def test_sandbox_root_limits_children_but_not_itself(mgr, group, started):
    mgr.create(group, Limits(cpus=0.5, memory=64 << 20, pids=50), OWNER, OWNER)
    dirs = group_dirs(mgr, group)
    cpu_dir = next(d for d in dirs if (d / "cpu.cfs_quota_us").exists() or (d / "cpu.max").exists())
    hroot = cpu_dir.parent.parent  # the hierarchy root above nslab-test/<id>
    if mgr.version == 1:
        plan = {"mkdir": [str(d / "child") for d in dirs],
                "allowed": [(str(cpu_dir / "child" / "cpu.cfs_quota_us"), "25000")]
                + [(str(d / "child" / "cgroup.procs"), "0") for d in dirs],
                "denied": [(str(cpu_dir / "cpu.cfs_quota_us"), "-1"),
                           (str(cpu_dir / "cpu.cfs_period_us"), "1000000"),
                           (str(hroot / "cgroup.procs"), "0"),
                           (str(cpu_dir.parent / "cgroup.procs"), "0")]}
    else:
        g = dirs[0]
        plan = {"mkdir": [str(g / "child")],
                "allowed": [(str(g / "child" / "cpu.max"), "25000 100000"),
                            (str(g / "child" / "cgroup.procs"), "0")],
                "denied": [(str(g / "cpu.max"), "max 100000"), (str(g / "memory.max"), "max"),
                           (str(hroot / "cgroup.procs"), "0"),
                           (str(g.parent / "cgroup.procs"), "0")]}
    p = start_in(started, mgr.spawn_procs_files(group), DELEGATE_HELPER, json.dumps(plan), OWNER)
    assert p.stdout.readline() == "unshared\n"
    mgr.finish_spawn(group, p.pid)
    p.stdin.write("go\n")
    p.stdin.flush()
    result = json.loads(p.stdout.readline())
    assert result["uid"] == 0  # root of its user namespace
    assert set(result["mkdir"]) == {"ok"}
    assert set(result["allowed"]) == {"ok"}, result
    assert "ok" not in result["denied"], result

    # It sits in its own child now, still inside the group.
    assert procfs.process_facts(p.pid, group, OWNER)["cgroup"] == "/child"
    assert p.pid in mgr.procs(group)
    nodes = {n["path"]: n for n in mgr.tree(group)[0]}
    assert nodes["/child"]["limits"]["cpus"] == 0.25
    assert nodes["/child"]["procs"] == [p.pid]
    assert nodes["/"]["limits"]["cpus"] == 0.5
    p.stdin.write("done\n")
    p.stdin.flush()
    assert p.wait(timeout=10) == 0


@pytest.mark.privileged
def test_cpu_quota_holds_under_load(mgr, group, started):
    mgr.create(group, Limits(cpus=0.5), OWNER, OWNER)
    # Two spinning processes on a 2-CPU host would use 2 CPUs without the quota.
    start_in(started, mgr.exec_procs_files(group), "os.fork()\nwhile True: pass\n")
    time.sleep(0.5)
    u0, t0 = mgr.stats(group)["cpu_usage_ns"], time.monotonic()
    time.sleep(2.0)
    u1, t1 = mgr.stats(group)["cpu_usage_ns"], time.monotonic()
    used = (u1 - u0) / 1e9 / (t1 - t0)
    assert abs(used - 0.5) <= 0.05, f"measured {used:.3f} CPUs under a 0.5 CPU quota"


@pytest.mark.privileged
def test_memory_hog_is_oom_killed(mgr, group, started):
    mgr.create(group, Limits(memory=64 << 20, swap=0), OWNER, OWNER)
    assert mgr.stats(group)["oom_kills"] == 0
    p = start_in(started, mgr.exec_procs_files(group),
                 "b = b'x' * (256 << 20)\nprint('survived', flush=True)\n")
    assert p.wait(timeout=20) == -9
    stats = mgr.stats(group)
    assert stats["oom_kills"] >= 1
    assert stats["memory_peak"] is None or stats["memory_peak"] <= 64 << 20


PIDS_HELPER = """
kids = 0
while True:
    try:
        pid = os.fork()
    except OSError as e:
        print(json.dumps({"kids": kids, "errno": e.errno}), flush=True)
        break
    if pid == 0:
        time.sleep(60)
        os._exit(0)
    kids += 1
sys.stdin.readline()
"""


@pytest.mark.privileged
def test_pids_limit_stops_a_fork_loop(mgr, group, started):
    mgr.create(group, Limits(pids=16), OWNER, OWNER)
    p = start_in(started, mgr.exec_procs_files(group), PIDS_HELPER)
    out = json.loads(p.stdout.readline())
    assert out["errno"] == errno.EAGAIN
    assert 1 <= out["kids"] <= 15
    stats = mgr.stats(group)
    assert stats["pids_limit"] == 16 and stats["pids_current"] <= 16
    assert len(mgr.procs(group)) == out["kids"] + 1
    # The refused fork is counted, in the usage of the tree too.
    assert stats["pids_events_max"] >= 1
    assert mgr.tree(group)[0][0]["usage"]["pids_events_max"] >= 1


@pytest.mark.privileged
def test_lowering_pids_max_under_running_processes_counts_no_refused_fork(mgr, group, started):
    """pids-bomb without a bomb: the kernel lets current exceed a lowered max, and only a
    refused fork counts in pids.events, so a check can tell the two apart."""
    mgr.create(group, Limits(pids=64), OWNER, OWNER)
    p = start_in(started, mgr.exec_procs_files(group), """
        for _ in range(11):
            if os.fork() == 0:
                time.sleep(60)
                os._exit(0)
        print("forked", flush=True)
        sys.stdin.readline()
    """)
    assert p.stdout.readline() == "forked\n"
    deadline = time.monotonic() + 5
    while len(mgr.procs(group)) < 12:
        assert time.monotonic() < deadline, "the sleepers did not start"
        time.sleep(0.01)
    mgr.set_limits(group, Limits(pids=4))
    stats = mgr.stats(group)
    assert stats["pids_current"] > stats["pids_limit"] == 4
    assert stats["pids_events_max"] == 0


@pytest.mark.privileged
def test_a_hog_under_a_quota_is_throttled(mgr, group, started):
    # 0.05 CPU (5 ms a 100 ms period): even on a busy host the hog gets more than that, so
    # it runs out of quota in most periods. Waited for, not timed: other tests share the CPUs.
    mgr.create(group, Limits(cpus=0.05), OWNER, OWNER)
    before = mgr.stats(group)
    # Nothing has run yet, so nothing was throttled (a period may already have been
    # counted: the kernel starts the quota's period timer when the quota is set).
    assert (before["cpu_nr_throttled"], before["cpu_throttled_ns"]) == (0, 0)
    assert before["cpu_nr_periods"] is not None
    start_in(started, mgr.exec_procs_files(group), "while True: pass\n")
    deadline = time.monotonic() + 10
    while (after := mgr.stats(group))["cpu_nr_throttled"] < 3:
        assert time.monotonic() < deadline, f"never throttled: {after}"
        time.sleep(0.1)
    assert after["cpu_nr_periods"] >= after["cpu_nr_throttled"]
    # Throttled periods are time spent waiting for the next one: at least a few ms each.
    assert after["cpu_throttled_ns"] >= 3 * 10_000_000
    node = mgr.tree(group)[0][0]["usage"]
    assert node["cpu_nr_throttled"] >= after["cpu_nr_throttled"]


@pytest.mark.privileged
def test_kill_all_ends_a_fork_bomb_and_daemons(mgr, group, started):
    mgr.create(group, Limits(cpus=1.0, pids=200), OWNER, OWNER)
    body = """
    r, w = os.pipe()
    if os.fork() == 0:  # a daemon that leaves the process tree
        os.setsid()
        if os.fork() == 0:
            os.write(w, f"{os.getpid()}\\n".encode())
            time.sleep(120)
        os._exit(0)
    print(os.read(r, 64).decode().strip(), flush=True)
    for _ in range(3):
        if os.fork() == 0:
            while True:
                try:
                    os.fork()
                except OSError:
                    time.sleep(0.001)
    time.sleep(120)
    """
    p = start_in(started, mgr.exec_procs_files(group), body)
    daemon = int(p.stdout.readline())
    deadline = time.monotonic() + 5
    while len(mgr.procs(group)) < 100 and time.monotonic() < deadline:
        time.sleep(0.05)
    before = mgr.procs(group)
    assert len(before) >= 100 and daemon in before
    mgr.kill_all(group, timeout=5)
    assert mgr.procs(group) == []
    assert p.wait(timeout=5) == -9
    assert gone_or_zombie(daemon)
    # pids.current drops as the orphans' zombies are reaped by the host's PID 1.
    deadline = time.monotonic() + 3
    while mgr.stats(group)["pids_current"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert mgr.stats(group)["pids_current"] in (0, None)


@pytest.mark.privileged
def test_remove_takes_whole_subtree_with_processes(mgr, group, started):
    mgr.create(group, Limits(pids=50), OWNER, OWNER)
    dirs = group_dirs(mgr, group)
    # Child cgroups like a container runtime inside the sandbox would make.
    for d in dirs:
        (d / "a" / "b").mkdir(parents=True)
        (d / "c").mkdir()
    outer = start_in(started, mgr.exec_procs_files(group), "time.sleep(120)")
    inner = start_in(started, [d / "a" / "b" / "cgroup.procs" for d in dirs], "time.sleep(120)")
    assert {"a", "c"} <= set(mgr.children(group))
    assert {n["path"] for n in mgr.tree(group)[0]} >= {"/", "/a", "/a/b", "/c"}
    assert inner.pid in mgr.procs(group) and outer.pid in mgr.procs(group)
    name = group.rsplit("/", 1)[1]
    assert name in mgr.children(PARENT)

    mgr.remove(group)
    assert not mgr.exists(group)
    assert [d for d in dirs if d.exists()] == []
    assert name not in mgr.children(PARENT)
    assert outer.wait(timeout=5) == -9 and inner.wait(timeout=5) == -9
    mgr.remove(group)  # removing what is gone is a no-op


@pytest.mark.privileged
def test_remove_copes_with_a_hostile_deep_subtree(mgr, group):
    mgr.create(group, Limits(pids=50), OWNER, OWNER)
    d = group_dirs(mgr, group)[0]
    depth = 0
    try:
        # Deeper than Python's recursion limit: only an iterative walk removes it.
        for depth in range(1, 1100):
            d = d / "x"
            os.mkdir(d)
    except OSError as e:
        # cgroup v2: the group's cgroup.max.depth stops the nesting early.
        assert mgr.version == 2 and e.errno == errno.EAGAIN, e
        assert depth == MAX_DEPTH + 1
    nodes, truncated = mgr.tree(group)
    # The tree is read only down to its bound, shallow groups first.
    assert len(nodes) == min(depth + 1, TREE_LIMIT)
    assert truncated == (depth + 1 > TREE_LIMIT)
    mgr.remove(group)
    assert not mgr.exists(group)


@pytest.mark.privileged
def test_tree_of_a_wide_subtree_is_bounded_and_says_so(mgr, group):
    """A sandbox's root made more cgroups than TREE_LIMIT (v1 cannot refuse them): the
    tree lists the shallowest TREE_LIMIT, says it was cut, and remove takes them all."""
    mgr.create(group, Limits(pids=50), OWNER, OWNER)
    d = group_dirs(mgr, group)[0]
    made = 0
    try:
        for made in range(1, 2 * TREE_LIMIT + 1):
            (d / f"w{made:04d}").mkdir()
        (d / "w0001" / "deep").mkdir()
    except OSError as e:
        # cgroup v2: cgroup.max.descendants refuses them past the bound (init is one).
        assert mgr.version == 2 and e.errno == errno.EAGAIN, e
        assert made == MAX_DESCENDANTS
    nodes, truncated = mgr.tree(group)
    assert len(nodes) <= TREE_LIMIT and truncated == (mgr.version == 1)
    paths = {n["path"] for n in nodes}
    assert "/" in paths
    if mgr.version == 1:  # shallow ones first: the one two deep is left out
        assert "/w0001/deep" not in paths
    mgr.remove(group)
    assert not mgr.exists(group)


# -- cgroup v2 on a FAKE kernel ---------------------------------------------------------

class FakeCgroup2(CgroupsV2):
    """FAKE: CgroupsV2 over a plain directory tree imitating cgroup2, because no v2 host is
    reachable here. It creates each cgroup's files per the parent's cgroup.subtree_control,
    enforces the top-down and no-internal-process rules with the kernel's errnos, moves
    pids between cgroup.procs files and empties a subtree on cgroup.kill. It cannot show
    that the real kernel accepts the values, nor test delegation across namespaces."""

    CORE = {"cgroup.procs": "", "cgroup.threads": "", "cgroup.subtree_control": "",
            "cgroup.events": "populated 0\nfrozen 0\n", "cgroup.kill": "",
            "cgroup.freeze": "0\n", "cgroup.type": "domain\n", "cgroup.max.depth": "max\n",
            "cgroup.max.descendants": "max\n"}
    FILES = {"cpu": {"cpu.max": "max 100000\n", "cpu.weight": "100\n",
                     "cpu.stat": "usage_usec 0\nuser_usec 0\nsystem_usec 0\n"},
             "cpuset": {"cpuset.cpus": "\n", "cpuset.cpus.effective": "0-3\n",
                        "cpuset.mems": "\n"},
             "memory": {"memory.max": "max\n", "memory.swap.max": "max\n",
                        "memory.current": "0\n", "memory.peak": "0\n",
                        "memory.events": "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n"},
             "pids": {"pids.max": "max\n", "pids.current": "0\n", "pids.events": "max 0\n"},
             "io": {"io.weight": "default 100\n"}}

    def __init__(self, root: Path, controllers="cpuset cpu io memory pids"):
        root.mkdir()
        for name, text in {"cgroup.controllers": controllers + "\n",
                           "cgroup.subtree_control": "", "cgroup.procs": "1\n",
                           "cpuset.cpus.effective": "0-3\n", "cpu.stat": "usage_usec 0\n"
                           }.items():
            (root / name).write_text(text)
        super().__init__(root)
        self.writes: list[tuple[str, str]] = []

    def _sys_mkdir(self, path):
        self._check_hierarchy_limits(path)
        os.mkdir(path)
        enabled = (path.parent / "cgroup.subtree_control").read_text().split()
        for name, text in self.CORE.items():
            (path / name).write_text(text)
        (path / "cgroup.controllers").write_text(" ".join(enabled) + "\n")
        for c in enabled:
            for name, text in self.FILES[c].items():
                (path / name).write_text(text)

    def _check_hierarchy_limits(self, path):
        """EAGAIN where an ancestor's cgroup.max.depth or cgroup.max.descendants would be
        passed (kernel/cgroup/cgroup.c, cgroup_check_hierarchy_limits)."""
        anc = path.parent
        while anc != self.root and anc.is_relative_to(self.root):
            level = len(path.relative_to(anc).parts)
            depth = (anc / "cgroup.max.depth").read_text().strip()
            descendants = (anc / "cgroup.max.descendants").read_text().strip()
            have = sum(1 for _ in anc.rglob("cgroup.procs")) - 1  # below anc, anc excluded
            if (depth != "max" and level > int(depth)) or (
                    descendants != "max" and have >= int(descendants)):
                raise OSError(errno.EAGAIN, "hierarchy limit", str(path))
            anc = anc.parent

    def _sys_rmdir(self, path):
        if any(e.is_dir() for e in os.scandir(path)):
            raise OSError(errno.EBUSY, "has children", str(path))
        if (path / "cgroup.procs").read_text().split():
            raise OSError(errno.EBUSY, "has processes", str(path))
        shutil.rmtree(path)

    def _sys_write(self, path, data):
        self.writes.append((str(path.relative_to(self.root)), data))
        if not path.exists():
            raise OSError(errno.ENOENT, "no such file", str(path))
        d, name, is_root = path.parent, path.name, path.parent == self.root
        if name == "cgroup.subtree_control":
            if (d / "cgroup.procs").read_text().split() and not is_root:
                raise OSError(errno.EBUSY, "no-internal-process rule", str(path))
            have = set((d / name).read_text().split())
            offered = set((d / "cgroup.controllers").read_text().split())
            for token in data.split():
                if token[1:] not in offered:
                    raise OSError(errno.ENOENT, "controller not offered", str(path))
                (have.add if token[0] == "+" else have.discard)(token[1:])
            (d / name).write_text(" ".join(sorted(have)) + "\n")
            for child in (e for e in os.scandir(d) if e.is_dir()):
                (Path(child) / "cgroup.controllers").write_text(" ".join(sorted(have)) + "\n")
                for c in have:
                    for fname, text in self.FILES[c].items():
                        if not (Path(child) / fname).exists():
                            (Path(child) / fname).write_text(text)
        elif name == "cgroup.procs":
            if (d / "cgroup.subtree_control").read_text().split() and not is_root:
                raise OSError(errno.EBUSY, "no-internal-process rule", str(path))
            for f in self.root.rglob("cgroup.procs"):
                pids = [p for p in f.read_text().split() if p != data.strip()]
                f.write_text("".join(p + "\n" for p in pids))
            path.write_text(path.read_text() + data.strip() + "\n")
        elif name == "cgroup.kill":
            for f in d.rglob("cgroup.procs"):
                f.write_text("")
        else:
            path.write_text(data + "\n")


@pytest.fixture
def fake(tmp_path):
    """A FAKE cgroup2 tree in tmp_path (no real kernel); chown needs root."""
    assert os.geteuid() == 0, "the fake v2 tests chown files: run pytest as root"
    return FakeCgroup2(tmp_path / "cg")


def read(path: Path) -> str:
    return path.read_text().strip()


@pytest.mark.privileged
def test_fake_v2_create_enables_top_down_and_delegates(fake):
    """FAKE v2 kernel: ancestors enable controllers, <group> does not yet (no process in
    init), limits land in the v2 files, delegated files belong to the owner."""
    g = "nslab/default/sb1"
    fake.create(g, Limits(cpus=0.5, cpu_weight=300, cpuset="1-2", memory=256 << 20, swap=0,
                          pids=100, io_weight=500), OWNER, OWNER + 1)
    r = fake.root
    for anc in (r, r / "nslab", r / "nslab/default"):
        assert set(read(anc / "cgroup.subtree_control").split()) == {
            "cpu", "cpuset", "memory", "pids", "io"}, anc
    assert read(r / g / "cgroup.subtree_control") == ""
    assert read(r / g / "cpu.max") == "50000 100000"
    assert read(r / g / "cpu.weight") == "300"
    assert read(r / g / "cpuset.cpus") == "1-2"
    assert read(r / g / "memory.max") == str(256 << 20)
    assert read(r / g / "memory.swap.max") == "0"
    assert read(r / g / "pids.max") == "100"
    assert read(r / g / "io.weight") == "default 500"
    assert read(r / g / "cgroup.max.depth") == str(MAX_DEPTH)
    assert read(r / g / "cgroup.max.descendants") == str(MAX_DESCENDANTS)
    for name in ("", "cgroup.procs", "cgroup.threads", "cgroup.subtree_control", "init",
                 "init/cgroup.procs", "init/cgroup.subtree_control"):
        st = (r / g / name).stat()
        assert (st.st_uid, st.st_gid) == (OWNER, OWNER + 1), name
    for name in ("cpu.max", "memory.max", "pids.max", "cgroup.kill", "cgroup.freeze",
                 "cgroup.max.depth", "cgroup.max.descendants"):
        assert (r / g / name).stat().st_uid == 0, name
    assert fake.spawn_procs_files(g) == [str(r / g / "cgroup.procs")]
    assert fake.exec_procs_files(g) == [str(r / g / "init" / "cgroup.procs")]
    assert fake.mounts_inside() == [("", "cgroup2", "")]
    assert fake.children("nslab/default") == ["sb1"]


@pytest.mark.privileged
def test_fake_v2_bounds_the_cgroups_a_sandbox_makes(fake):
    """FAKE v2 kernel (it refuses a mkdir past an ancestor's cgroup.max.depth or
    cgroup.max.descendants with EAGAIN, as the kernel does): the cgroups lab's nested
    groups fit; MAX_DESCENDANTS groups in all (init is one) and MAX_DEPTH levels are the
    most a sandbox's root can make; the limit files stay root's, so it cannot raise them."""
    g = "nslab/default/sb1"
    fake.create(g, Limits(pids=100), OWNER, OWNER)
    r = fake.root / g
    for name in ("cgroup.max.depth", "cgroup.max.descendants"):
        assert (r / name).stat().st_uid == 0 and (r / name).stat().st_mode & 0o022 == 0
    # What labs/cgroups makes (team/job, lim, bomb, pin), made as the sandbox's root would.
    for rel in ("team", "team/job", "lim", "bomb", "pin"):
        fake._sys_mkdir(r / rel)
    deep = r / "team" / "job"
    for _ in range(MAX_DEPTH - 2):
        deep = deep / "d"
        fake._sys_mkdir(deep)
    with pytest.raises(OSError) as e:
        fake._sys_mkdir(deep / "d")
    assert e.value.errno == errno.EAGAIN
    made = 1 + 5 + MAX_DEPTH - 2  # init, the lab's five, the chain
    for i in range(MAX_DESCENDANTS - made):
        fake._sys_mkdir(r / f"w{i}")
    with pytest.raises(OSError) as e:
        fake._sys_mkdir(r / "one-too-many")
    assert e.value.errno == errno.EAGAIN
    nodes, truncated = fake.tree(g)
    assert len(nodes) == TREE_LIMIT and not truncated
    fake.remove(g)
    assert not r.exists()


@pytest.mark.privileged
def test_fake_v2_finish_spawn_obeys_no_internal_process_rule(fake):
    """FAKE v2 kernel: the new process moves into init before <group> enables controllers
    (the fake refuses the other order with EBUSY, as the kernel does)."""
    g = "nslab/default/sb1"
    fake.create(g, Limits(cpus=1), OWNER, OWNER)
    r = fake.root
    fake._sys_write(r / g / "cgroup.procs", "4242")  # what the new process does itself
    with pytest.raises(OSError) as e:
        fake._sys_write(r / g / "cgroup.subtree_control", "+cpu")
    assert e.value.errno == errno.EBUSY
    fake.writes.clear()
    fake.finish_spawn(g, 4242)
    assert read(r / g / "cgroup.procs") == ""
    assert read(r / g / "init" / "cgroup.procs") == "4242"
    assert set(read(r / g / "cgroup.subtree_control").split()) == {
        "cpu", "cpuset", "memory", "pids", "io"}
    order = [path for path, _ in fake.writes]
    assert order.index(f"{g}/init/cgroup.procs") < order.index(f"{g}/cgroup.subtree_control")
    # Controller files that appeared in init now belong to the sandbox's root too.
    assert (r / g / "init" / "cpu.max").stat().st_uid == OWNER
    assert fake.procs(g) == [4242]
    nodes = {n["path"]: n for n in fake.tree(g)[0]}
    assert set(nodes) == {"/", "/init"}
    assert nodes["/"]["limits"]["cpus"] == 1.0 and nodes["/init"]["procs"] == [4242]
    assert nodes["/init"]["limits"]["cpus"] is None  # "max": no limit of its own


@pytest.mark.privileged
def test_fake_v2_stats_kill_and_remove(fake):
    """FAKE v2 kernel: stats parse the v2 files; kill_all uses cgroup.kill; remove goes
    bottom-up through children the sandbox made."""
    g = "nslab/default/sb1"
    fake.create(g, Limits(cpus=0.25, memory=64 << 20, pids=10), OWNER, OWNER)
    r = fake.root
    (r / g / "cpu.stat").write_text("usage_usec 1500000\nuser_usec 1000000\n"
                                    "nr_periods 40\nnr_throttled 30\nthrottled_usec 2500\n")
    (r / g / "memory.current").write_text("1048576\n")
    (r / g / "memory.peak").write_text("2097152\n")
    (r / g / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 2\noom_kill 2\n")
    (r / g / "pids.current").write_text("3\n")
    (r / g / "pids.events").write_text("max 7\n")
    assert fake.stats(g) == {"cpu_usage_ns": 1_500_000_000, "memory_current": 1 << 20,
                             "memory_peak": 2 << 20, "memory_limit": 64 << 20,
                             "oom_kills": 2, "pids_current": 3, "pids_limit": 10,
                             "pids_events_max": 7, "cpus": 0.25, "frozen": False,
                             "cpu_nr_periods": 40, "cpu_nr_throttled": 30,
                             "cpu_throttled_ns": 2_500_000}
    fake._sys_mkdir(r / g / "child")
    fake._sys_mkdir(r / g / "child" / "grandchild")
    fake._sys_write(r / g / "child" / "grandchild" / "cgroup.procs", "77")
    fake._sys_write(r / g / "init" / "cgroup.procs", "78")
    assert fake.procs(g) == [77, 78]
    fake.writes.clear()
    fake.remove(g)
    assert (f"{g}/cgroup.kill", "1") in fake.writes
    assert not (r / g).exists() and fake.children("nslab/default") == []
    fake.remove(g)


@pytest.mark.privileged
def test_fake_v2_refusals_name_cause_and_fix(fake, tmp_path):
    """FAKE v2 kernel: a busy ancestor, a cpuset outside the parent's and a missing
    controller give errors that say what to do, and leave nothing behind."""
    r = fake.root
    fake._sys_mkdir(r / "busy")
    fake._sys_write(r / "busy" / "cgroup.procs", "777")
    with pytest.raises(SandboxError) as e:
        fake.create("busy/sb", Limits(), OWNER, OWNER)
    assert "no-internal-process" in e.value.message
    assert not (r / "busy" / "sb").exists()
    with pytest.raises(InvalidRequest) as e:
        fake.create("nslab/sb", Limits(cpuset="5"), OWNER, OWNER)
    assert e.value.field == "cpuset" and not (r / "nslab").exists()

    bare = FakeCgroup2(tmp_path / "bare", controllers="cpu pids")
    with pytest.raises(HostUnsupported) as e:
        bare.check()
    assert "'memory'" in e.value.message and "'cpuset'" in e.value.message
    assert "cgroup_no_v1=all" in e.value.message
    fake.check()
