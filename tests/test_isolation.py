"""What root inside a sandbox can see and touch of the host: nothing it should.

Every check runs real commands inside a real sandbox of the session's sandboxd and
compares with what the host itself sees (files, processes, uids, cgroup values,
listening sockets). Read-only checks share one sandbox per module; checks that
change the sandbox (unmounting, hostname, writes to /usr) get a fresh one. Network
traffic goes only to the host's own addresses and to sandboxes made here.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
import shutil
import socket
import subprocess
import time
import uuid
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from conftest import SERVE_SCRIPT, ok, sh

from sandbox.cgroups import detect

pytestmark = pytest.mark.privileged

CONNECT_TIMEOUT = 1.0  # seconds; a connect that takes longer counts as blocked

# Tries every HOST:PORT given as an argument at once; prints one line per target.
CONNECT_SCRIPT = """
import socket, sys, threading
def probe(target):
    host, port = target.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=%s).close()
        print(target, "connected", flush=True)
    except OSError as e:
        print(target, "blocked", type(e).__name__, flush=True)
threads = [threading.Thread(target=probe, args=(t,)) for t in sys.argv[1:]]
for t in threads:
    t.start()
for t in threads:
    t.join()
""" % CONNECT_TIMEOUT



# Docker's masked paths that are files or directories under /proc and /sys.
MASKED = ("/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/sched_debug",
          "/proc/latency_stats", "/proc/timer_stats", "/proc/acpi", "/proc/scsi",
          "/proc/asound", "/sys/firmware", "/sys/devices/virtual/powercap")


# --------------------------------------------------------------------------- helpers

def sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def connect_results(client, sid: str, targets: list[tuple[str, int]]) -> dict[str, str]:
    """'host:port' -> 'connected' or 'blocked', as seen from inside the sandbox."""
    args = [f"{h}:{p}" for h, p in targets]
    r = client.run(sid, ["python3", "-c", CONNECT_SCRIPT, *args], timeout=CONNECT_TIMEOUT + 10)
    assert r["exit_code"] == 0 and not r["timed_out"], f"connect probe failed: {r['stderr']}"
    results = {}
    for line in r["stdout"].splitlines():
        target, outcome, *_ = line.split()
        results[target] = outcome
    assert set(results) == set(args), f"connect probe printed {r['stdout']!r}"
    return results


@contextmanager
def host_listener(address: str):
    """A TCP listener on the host at `address` (ephemeral port); yields the socket."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((address, 0))
    s.listen(16)
    s.setblocking(False)
    try:
        yield s
    finally:
        s.close()


def accepted_any(listener: socket.socket) -> bool:
    """Whether a connection reached the listener's backlog (handshake completed)."""
    try:
        conn, _ = listener.accept()
    except BlockingIOError:
        return False
    conn.close()
    return True


def host_root_device() -> tuple[str, str, str]:
    """(source, fstype, 'major:minor') of the filesystem mounted at / on the host."""
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        if fields[4] == "/":
            post = fields[fields.index("-") + 1:]
            return post[1], post[0], fields[2]
    raise AssertionError("the host has no / in /proc/self/mountinfo")


def host_cgroup_file(info: dict, group: str, controller: str, name: str) -> Path:
    """The host path of one of the sandbox's cgroup files."""
    if info["cgroup_version"] == 1:
        return Path("/sys/fs/cgroup") / controller / group / name
    return Path("/sys/fs/cgroup") / group / name


# --------------------------------------------------------------------------- identity

def test_hostname_is_the_sandboxes_own(client, box):
    inside = ok(client, box["id"], "hostname; cat /etc/hostname").split()
    assert inside == [box["hostname"], box["hostname"]], \
        f"hostname inside is {inside}, expected the sandbox's own {box['hostname']!r}"
    assert box["hostname"] != socket.gethostname(), "the sandbox got the host's hostname"


def test_pid_1_is_catatonit(client, box):
    comm = ok(client, box["id"], "cat /proc/1/comm").strip()
    cmdline = ok(client, box["id"], "tr '\\0' ' ' < /proc/1/cmdline").split()
    assert comm == "catatonit", f"PID 1 inside is {comm!r}, not the sandbox's catatonit"
    assert cmdline[0] == "catatonit", f"PID 1's command line is {cmdline}"


def test_ps_shows_only_sandbox_processes(client, box):
    out = ok(client, box["id"], "ps -eo pid=,comm=")
    procs = {int(pid): comm for pid, comm in (line.split(None, 1) for line in out.splitlines())}
    assert procs.get(1) == "catatonit", f"ps inside shows {procs}"
    assert set(procs.values()) <= {"catatonit", "sh", "ps"}, \
        f"ps inside shows processes that are not the sandbox's: {procs}"
    # The host's own processes (this test, the daemon) are not there under any pid.
    assert len(procs) <= 3, f"ps inside shows more than catatonit, sh and ps: {procs}"


def test_root_inside_is_an_unprivileged_uid_on_the_host(client, box):
    assert ok(client, box["id"], "id -u; id -g").split() == ["0", "0"], "id inside is not root"
    session = client.exec(box["id"], ["sleep", "30"])
    try:
        view = client.inspect(box["id"])
        sleeper = [p for p in view["processes"] if p["comm"] == "sleep"]
        assert sleeper, f"inspect does not show the exec'd sleep: {view['processes']}"
        for p in view["processes"]:
            assert p["host_uid"] is not None and p["host_uid"] >= 100_000, \
                f"process {p['comm']} (host pid {p['host_pid']}) runs as host uid {p['host_uid']}"
        host_pid = sleeper[0]["host_pid"]
        status = Path(f"/proc/{host_pid}/status").read_text()
        uids = [int(x) for x in re.search(r"^Uid:\s+(.*)$", status, re.M).group(1).split()]
        gids = [int(x) for x in re.search(r"^Gid:\s+(.*)$", status, re.M).group(1).split()]
        assert uids == [box["uid_base"]] * 4, f"root inside is host uid {uids} per /proc"
        assert gids == [box["uid_base"]] * 4, f"root inside is host gid {gids} per /proc"
        assert box["uid_base"] >= 100_000
    finally:
        client.signal(session["id"], "KILL")


# --------------------------------------------------------------------------- host files

def test_host_marker_files_are_invisible(client, box, tmp_path):
    name = f"nslab-marker-{uuid.uuid4().hex}"
    markers = [Path("/tmp") / name, Path("/root") / name, tmp_path / name]
    try:
        for m in markers:
            m.write_text("host secret\n")
        for m in markers:
            r = sh(client, box["id"], f"cat {m}")
            assert r["exit_code"] != 0 and "host secret" not in r["stdout"], \
                f"the host file {m} is readable inside the sandbox"
    finally:
        for m in markers:
            m.unlink(missing_ok=True)


def test_host_directories_are_absent_or_hold_only_the_image(client, box, sandboxd):
    # What the host image's skeleton itself puts there; everything else would be the host's.
    skeleton = {"/home": {"learner"}, "/var/lib": {"nginx"}, "/run": {"lock"}}
    dirs = ("/root", "/tmp", "/home", "/var/lib", "/run", "/srv", "/opt", "/mnt", "/media")
    absent = ("/work", "/var/lib/nslab", str(sandboxd.state_dir), str(sandboxd.socket),
              "/etc/nslab", "/lib/modules", "/boot")
    out = ok(client, box["id"], "for d in " + " ".join(dirs + absent) +
             "; do echo \"== $d\"; ls -A \"$d\" 2>/dev/null; done; true")
    inside: dict[str, set[str]] = {}
    for line in out.splitlines():
        if line.startswith("== "):
            current = inside.setdefault(line[3:], set())
        else:
            current.add(line)
    for d in dirs:
        host = set(os.listdir(d)) if os.path.isdir(d) else set()
        leaked = (inside[d] & host) - skeleton.get(d, set())
        assert not leaked, f"host entries of {d} are visible inside: {sorted(leaked)}"
        assert inside[d] <= skeleton.get(d, set()), f"{d} inside holds {sorted(inside[d])}"
    for path in absent:
        assert not inside[path], f"{path} exists inside the sandbox with {sorted(inside[path])}"


def test_host_shadow_is_not_visible(client, box):
    inside = ok(client, box["id"], "cat /etc/shadow")
    host = Path("/etc/shadow").read_text()
    assert inside != host, "/etc/shadow inside is the host's"
    for line in inside.splitlines():
        user, pw = line.split(":")[:2]
        assert pw in ("*", "!", "!*", ""), f"/etc/shadow inside holds a password hash for {user}"


def test_no_block_devices_in_dev(client, box):
    out = ok(client, box["id"], "find /dev -type b")
    assert out.strip() == "", f"block devices inside the sandbox: {out}"


def test_cannot_mount_the_host_disk(client, box):
    source, fstype, _majmin = host_root_device()
    r = sh(client, box["id"], f"mkdir -p /mnt/hostdisk && mount -t {fstype} {source} "
                              "/mnt/hostdisk && ls -A /mnt/hostdisk")
    assert r["exit_code"] != 0, f"mount {source} succeeded inside: {r['stdout']}"
    assert ok(client, box["id"], "ls -A /mnt/hostdisk") == "", "the host disk shows inside"


def test_cannot_mknod_the_host_disk(client, box):
    _source, fstype, majmin = host_root_device()
    major, minor = majmin.split(":")
    r = sh(client, box["id"], f"mknod /tmp/disk b {major} {minor}")
    assert r["exit_code"] != 0, "mknod of the host's root block device succeeded inside"
    r = sh(client, box["id"], f"mkdir -p /mnt/d && mount -t {fstype} /tmp/disk /mnt/d")
    assert r["exit_code"] != 0, "mounting a mknod'ed host disk succeeded inside"
    r = sh(client, box["id"], "mknod /dev/shm/disk b {0} {1} || mknod /dev/disk b {0} {1}"
                              .format(major, minor))
    assert r["exit_code"] != 0, "mknod in /dev or /dev/shm succeeded inside"


# --------------------------------------------------------------------------- /proc and /sys

def test_sysrq_trigger_is_not_writable(client, box):
    r = sh(client, box["id"], "echo h > /proc/sysrq-trigger")
    assert r["exit_code"] != 0, "root inside wrote /proc/sysrq-trigger"


# Not net/*: the sandbox's own network namespace's, writable since issue 11
# (test_containers.py::test_only_proc_sys_net_is_writable checks the host's stay put).
@pytest.mark.parametrize("sysctl", ["kernel/printk", "vm/drop_caches", "kernel/hostname",
                                    "kernel/domainname"])
def test_proc_sys_is_read_only(client, box, sysctl):
    path = f"/proc/sys/{sysctl}"
    before = Path(path).read_text() if sysctl != "vm/drop_caches" else None
    r = sh(client, box["id"], f"echo 1 > {path}")
    assert r["exit_code"] != 0, f"root inside wrote {path}"
    assert "Read-only" in r["stderr"] or "Permission denied" in r["stderr"], r["stderr"]
    if before is not None:
        assert Path(path).read_text() == before, f"the host's {path} changed"


def test_fresh_procfs_mount_cannot_write_host_sysctls(sandbox, client):
    """Root owns its pid namespace and may mount a new /proc; host sysctls stay out of reach."""
    before = Path("/proc/sys/kernel/printk").read_text()
    r = sh(client, sandbox["id"], "mkdir -p /tmp/p && mount -t proc proc /tmp/p; "
                                  "echo 1 > /tmp/p/sys/kernel/printk")
    assert r["exit_code"] != 0, "root inside wrote kernel.printk through a fresh procfs"
    assert Path("/proc/sys/kernel/printk").read_text() == before, "the host's printk changed"


@pytest.mark.parametrize("path", MASKED)
def test_masked_paths_show_nothing(client, box, path):
    r = sh(client, box["id"], f"if [ -d {path} ]; then ls -A {path}; "
                              f"elif [ -e {path} ]; then cat {path}; fi")
    assert r["stdout"] == "", f"{path} inside shows content: {r['stdout'][:200]!r}"
    if os.path.exists(path):
        mounts = ok(client, box["id"], "cut -d' ' -f5 /proc/self/mountinfo").split()
        assert path in mounts, f"{path} exists on the host but is not masked inside"


def test_proc_kcore_and_keys_are_masked(client, box):
    mounts = ok(client, box["id"], "cut -d' ' -f5 /proc/self/mountinfo").split()
    assert "/proc/keys" in mounts, "/proc/keys is not masked inside"
    r = sh(client, box["id"], "head -c 64 /proc/kcore | wc -c")
    assert r["stdout"].strip() in ("0", ""), "/proc/kcore is readable inside"
    if os.path.exists("/proc/kcore"):
        assert "/proc/kcore" in mounts, "/proc/kcore is not masked inside"


def test_sys_is_read_only(client, box):
    mounts = ok(client, box["id"], "cat /proc/self/mountinfo").splitlines()
    sys_mount = [m.split() for m in mounts if m.split()[4] == "/sys"]
    assert sys_mount and "ro" in sys_mount[0][5].split(","), \
        f"/sys is not mounted read-only: {sys_mount}"
    for script in ("touch /sys/nslab-test", "echo 1280 > /sys/class/net/lo/mtu",
                   "mount -o remount,rw /sys", "mount -t sysfs sysfs /mnt"):
        r = sh(client, box["id"], script)
        assert r["exit_code"] != 0, f"`{script}` succeeded inside the sandbox"


def test_sys_firmware_is_empty(client, box):
    assert ok(client, box["id"], "ls -A /sys/firmware") == "", "/sys/firmware shows host firmware"


@pytest.mark.parametrize("path", ["/sys/firmware", "/proc/keys", "/proc/timer_list",
                                  "/proc/acpi"])
def test_unmounting_a_mask_reveals_nothing(sandbox, client, path):
    """Root inside keeps CAP_SYS_ADMIN in its namespaces (for the namespace lessons); the
    masks were mounted by host root and copied into the sandbox's mount namespace, so they
    are locked: umount fails and the mask stays."""
    if not os.path.exists(path):
        pytest.fail(f"{path} does not exist on this host; pick a masked path that does")
    for how in ("umount", "umount -l"):
        r = sh(client, sandbox["id"], f"{how} {path}")
        assert r["exit_code"] != 0, f"`{how} {path}` succeeded inside the sandbox"
    r = sh(client, sandbox["id"], f"if [ -d {path} ]; then ls -A {path}; else cat {path}; fi")
    assert r["stdout"] == "", f"after umount {path} shows host content: {r['stdout'][:200]!r}"
    mounts = ok(client, sandbox["id"], "cut -d' ' -f5 /proc/self/mountinfo").split()
    assert path in mounts, f"the mask on {path} is gone"


def test_every_mask_and_read_only_path_is_locked(sandbox, client):
    """Each of Docker's masked and read-only paths that exists here stays as it is, whatever
    root inside does to the mount (/proc/kcore is among them where the host has one)."""
    sid = sandbox["id"]
    before = ok(client, sid, "cat /proc/self/mountinfo")
    readonly = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")
    present = [p for p in (*MASKED, *readonly) if os.path.exists(p)]
    assert {"/sys/firmware", "/proc/keys", "/proc/sys"} <= set(present), present
    for path in present:
        for how in ("umount", "umount -l"):
            r = sh(client, sid, f"{how} {path}")
            assert r["exit_code"] != 0, f"`{how} {path}` succeeded inside the sandbox"
    for script in ("mount -o remount,rw /proc/sys", "mount -o remount,bind,rw /proc/sys",
                   "mount -o remount,rw /sys", "mount -o remount,bind,rw /sys",
                   "mount -o remount,exec /proc", "mount -o remount,rw /sys/firmware"):
        r = sh(client, sid, script)
        assert r["exit_code"] != 0, f"`{script}` succeeded inside the sandbox"
    r = sh(client, sid, "echo 1 > /proc/sys/kernel/printk")
    assert r["exit_code"] != 0, "root inside wrote /proc/sys after its remount attempts"
    assert ok(client, sid, "cat /proc/self/mountinfo") == before, "a mount changed inside"


def test_full_proc_and_sys_are_out_of_reach(sandbox, client):
    """The unmasked proc and sysfs that let the kernel allow nested proc and sysfs mounts
    lie under a locked, empty, read-only tmpfs: no path inside leads to them, and root
    inside can neither uncover, move nor bind them out (a recursive bind keeps the cover)."""
    sid = sandbox["id"]
    mounts = ok(client, sid, "cut -d' ' -f5 /proc/self/mountinfo").split()
    assert {"/dev/.nslab", "/dev/.nslab/proc", "/dev/.nslab/sys"} <= set(mounts), mounts
    assert ok(client, sid, "ls -A /dev/.nslab") == "", "the cover over the full mounts shows content"
    for script in ("ls /dev/.nslab/proc", "cat /dev/.nslab/proc/keys",
                   "umount /dev/.nslab", "umount -l /dev/.nslab",
                   "umount /dev/.nslab/proc", "umount -l /dev/.nslab/sys",
                   "mount -o remount,rw /dev/.nslab", "mount --move /dev/.nslab /mnt",
                   "mkdir -p /mnt/x && mount --bind /dev/.nslab/proc /mnt/x",
                   "mkdir -p /mnt/y && mount --rbind /dev /mnt/y && "
                   "{ ls /mnt/y/.nslab/proc || umount /mnt/y/.nslab || umount -l /mnt/y/.nslab; }",
                   "mkdir /dev/.nslab/z"):
        r = sh(client, sid, script)
        assert r["exit_code"] != 0, f"`{script}` succeeded inside the sandbox: {r['stdout'][:200]}"
    after = ok(client, sid, "cut -d' ' -f5 /proc/self/mountinfo").split()
    assert {"/dev/.nslab", "/dev/.nslab/proc", "/dev/.nslab/sys"} <= set(after), after
    assert ok(client, sid, "find /dev -name keys") == "", "a path inside reaches the full proc"


def test_nested_proc_and_sysfs_mounts_work(sandbox, client):
    """The namespace lessons' own mounts: a proc for a new pid namespace, a read-only sysfs
    for a new network namespace, and `ip netns exec` (which mounts one over /sys)."""
    sid = sandbox["id"]
    pids = ok(client, sid, "unshare --pid --fork --mount-proc ps -e -o pid=").split()
    assert pids == ["1"], f"a new pid namespace's /proc shows {pids}"
    nets = ok(client, sid, "unshare --net --mount sh -c "
                           "'mount -t sysfs -o ro sysfs /sys && ls /sys/class/net'").split()
    assert nets == ["lo"], f"a new network namespace's sysfs shows {nets}"
    try:
        ok(client, sid, "ip netns add nslabx")
        links = ok(client, sid, "ip netns exec nslabx ip -o link")
        assert [line.split(":")[1].strip() for line in links.splitlines()] == ["lo"], links
        nets = ok(client, sid, "ip netns exec nslabx ls /sys/class/net").split()
        assert nets == ["lo"], f"`ip netns exec` shows {nets} in /sys/class/net"
    finally:
        sh(client, sid, "ip netns delete nslabx")


def test_fresh_proc_and_sysfs_keep_root_only_files_closed(sandbox, client):
    """A fresh proc or sysfs inside shows what an unprivileged host user sees: the files
    the masks hide that are host root's stay unreadable."""
    script = ("mkdir -p /tmp/p /tmp/s && mount -t proc proc /tmp/p && "
              "mount -t sysfs -o ro sysfs /tmp/s && cat {path}")
    for path in ("/tmp/p/timer_list", "/tmp/s/firmware/acpi/tables/DSDT"):
        host = path.replace("/tmp/p", "/proc").replace("/tmp/s", "/sys")
        if not os.path.exists(host):
            pytest.fail(f"{host} does not exist on this host; pick a root-only file that does")
        r = sh(client, sandbox["id"], script.format(path=path))
        assert r["exit_code"] != 0 and r["stdout"] == "", f"{path} was readable inside"


def test_dev_is_roots_inside_and_ptys_belong_to_tty(client, box):
    owners = ok(client, box["id"], "stat -c '%u:%g %n' /dev /dev/pts /dev/pts/ptmx /dev/shm "
                                   "/dev/mqueue /dev/fd /dev/ptmx").splitlines()
    assert all(line.startswith("0:0 ") for line in owners), owners
    pty = ok(client, box["id"], "python3 -c 'import os, pty; m, s = pty.openpty(); "
                                "st = os.fstat(s); print(st.st_uid, st.st_gid, oct(st.st_mode))'")
    assert pty.split() == ["0", "5", "0o20620"], f"a new pty is {pty!r}, not root:tty 0620"


# --------------------------------------------------------------------------- host processes

def test_cannot_see_or_signal_host_processes(client, box):
    host_pids = [os.getpid(), client.info()["pid"]]
    inside = {int(p) for p in ok(client, box["id"], "ls /proc").split() if p.isdigit()}
    for pid in host_pids:
        assert pid not in inside, f"host pid {pid} is a pid inside (test is ambiguous)"
        r = sh(client, box["id"], f"kill -0 {pid}")
        assert r["exit_code"] != 0, f"kill -0 {pid} (a host process) succeeded inside"
        assert "No such process" in r["stderr"], f"kill -0 {pid} said {r['stderr']!r}"
        assert not ok(client, box["id"], f"ls -d /proc/{pid} 2>/dev/null || true").strip()


def test_exec_has_no_new_privs_and_its_own_session(client, box):
    probe = ("import os; print(os.getsid(0), os.getpid()); "
             "print([line for line in open('/proc/self/status') "
             "if line.startswith('NoNewPrivs')][0], end='')")
    r = client.run(box["id"], ["python3", "-c", probe])
    assert r["exit_code"] == 0, r["stderr"]
    ids, nnp = r["stdout"].splitlines()
    sid, pid = map(int, ids.split())
    assert sid == pid, f"an exec'd process (pid {pid}) is in session {sid}, not its own"
    assert nnp.split() == ["NoNewPrivs:", "1"], f"no_new_privs is not set: {nnp!r}"


def test_exec_inherits_no_fds(client, box):
    fds = ok(client, box["id"], "ls /proc/self/fd").split()
    assert sorted(fds) == ["0", "1", "2", "3"], f"an exec'd ls has fds {fds} (3 is its own)"
    targets = ok(client, box["id"], "readlink /proc/$$/fd/0 /proc/$$/fd/1 /proc/$$/fd/2").split()
    assert all(t.startswith("pipe:") for t in targets), f"stdio of an exec'd sh: {targets}"


def test_init_holds_no_host_files(box):
    fd_dir = Path(f"/proc/{box['init_pid']}/fd")
    targets = {fd.name: os.readlink(fd) for fd in fd_dir.iterdir()}
    for fd, target in targets.items():
        assert target == "/dev/null" or target.startswith("anon_inode:"), \
            f"the sandbox's PID 1 holds fd {fd} -> {target}"


# --------------------------------------------------------------------------- host binaries

def test_writing_a_host_binary_copies_up(sandbox, client):
    binary = next(p for p in ("/usr/bin/factor", "/usr/bin/tac", "/usr/bin/rev")
                  if os.path.isfile(p))
    original = Path(binary).read_bytes()
    before = hashlib.sha256(original).hexdigest()
    try:
        out = ok(client, sandbox["id"], f"echo pwned > {binary} && cat {binary}")
        assert out.startswith("pwned"), "the write inside did not land in the sandbox's own layer"
        assert sha256(binary) == before, f"the host's {binary} changed"
        r = sh(client, sandbox["id"], f"rm -f {binary} && ls {binary}")
        assert r["exit_code"] != 0, "rm inside did not remove the file from the sandbox's view"
        assert sha256(binary) == before and os.path.isfile(binary), f"the host's {binary} changed"
    finally:
        if sha256(binary) != before:  # never leave the host broken, whatever happened
            Path(binary).write_bytes(original)


def test_cannot_overwrite_init_binary_via_proc_exe(client, box):
    init = shutil.which("catatonit") or "/usr/bin/catatonit"
    before = sha256(init)
    for target in ("/proc/1/exe", "/proc/self/exe"):
        r = sh(client, box["id"], f"echo pwned >> {target}")
        assert r["exit_code"] != 0, f"root inside wrote {target}"
    assert sha256(init) == before, f"the host's {init} changed"


# --------------------------------------------------------------------------- cgroups

@pytest.mark.parametrize("controller,name,value", [
    ("cpu", "cpu.cfs_quota_us", "-1"), ("memory", "memory.limit_in_bytes", "-1"),
    ("pids", "pids.max", "max"),
])
def test_cannot_change_own_cgroup_limits(client, box, controller, name, value):
    info = client.info()
    group = client.inspect(box["id"])["cgroup"]
    if info["cgroup_version"] == 2:
        v2_names = {"cpu.cfs_quota_us": "cpu.max", "memory.limit_in_bytes": "memory.max"}
        name = v2_names.get(name, name)
        inside = f"/sys/fs/cgroup/{name}"
        value = "max"
    else:
        inside = f"/sys/fs/cgroup/{controller}/{name}"
    host = host_cgroup_file(info, group, controller, name)
    before = host.read_text()
    r = sh(client, box["id"], f"echo {value} > {inside}")
    assert r["exit_code"] != 0, f"root inside wrote its own limit {inside}"
    assert host.read_text() == before, f"the sandbox changed its limit {host}"


def test_co_mounted_cgroup_controllers_have_a_link_each(client, box):
    """Each v1 controller is at /sys/fs/cgroup/<controller> inside, as on the host: a
    hierarchy of co-mounted controllers ("cpu,cpuacct") is one mount with a symbolic link
    per controller ("cpu" -> "cpu,cpuacct"); v2 is one mount, no links. (The development
    machines mount each v1 controller apart, so there they show no link.)"""
    links, controllers = {}, set()
    for subdir, _fstype, data in detect().mounts_inside():
        controllers.update(c for c in data.split(",") if c)
        if "," in subdir:
            links.update({part: subdir for part in subdir.split(",")})
    out = ok(client, box["id"], "cd /sys/fs/cgroup && for l in $(find . -maxdepth 1 -type l); "
                                "do echo \"${l#./} $(readlink $l)\"; done")
    assert dict(line.split() for line in out.splitlines()) == links
    if controllers:
        dirs = ok(client, box["id"], "cd /sys/fs/cgroup && for c in " + " ".join(sorted(controllers))
                  + "; do test -d $c/ && echo $c; done")
        assert set(dirs.split()) == controllers


def test_no_cgroup_release_agent_is_reachable(sandbox, client):
    """CVE-2022-0492: a release_agent writable from inside runs as host root."""
    out = ok(client, sandbox["id"], "find /sys/fs/cgroup -name release_agent")
    assert out.strip() == "", f"release_agent is visible inside: {out}"
    r = sh(client, sandbox["id"], "mkdir -p /tmp/cg && mount -t cgroup -o memory cgroup /tmp/cg "
                                  "&& ls /tmp/cg")
    assert "release_agent" not in r["stdout"], "a fresh cgroup mount exposes release_agent"
    r = sh(client, sandbox["id"],
           "mkdir -p /tmp/cgx && mount -t cgroup -o none,name=x cgroup /tmp/cgx")
    assert r["exit_code"] != 0, "root inside mounted a new named cgroup v1 hierarchy"


# --------------------------------------------------------------------------- hostname

def test_hostname_change_stays_inside(sandbox, client):
    host_before = socket.gethostname()
    new = f"evil-{uuid.uuid4().hex[:6]}"
    r = sh(client, sandbox["id"], f"hostname {new} && hostname")
    assert r["exit_code"] == 0 and r["stdout"].strip() == new, \
        f"root inside could not set its own hostname: {r['stderr']}"
    assert socket.gethostname() == host_before, "the sandbox changed the host's hostname"
    assert Path("/proc/sys/kernel/hostname").read_text().strip() == host_before


# --------------------------------------------------------------------------- network

def test_cannot_reach_a_host_loopback_service(client, box):
    with host_listener("127.0.0.1") as listener:
        port = listener.getsockname()[1]
        results = connect_results(client, box["id"], [("127.0.0.1", port)])
        assert results[f"127.0.0.1:{port}"] == "blocked", \
            "the sandbox reached a service on the host's loopback"
        assert not accepted_any(listener), "the host's loopback service got a connection"


def test_cannot_reach_the_gateway_or_other_host_addresses(client, box):
    gateway = str(ipaddress.ip_network(client.info()["subnet"]).network_address + 1)
    # /proc/net/route rather than `ip`, which a host without iproute2 has not in its /usr
    routes = ok(client, box["id"], "cat /proc/net/route").splitlines()[1:]
    default = [r.split() for r in routes if r.split()[1] == "00000000"]
    assert default, f"no default route inside: {routes}"
    via = str(ipaddress.IPv4Address(bytes.fromhex(default[0][2])[::-1]))
    assert via == gateway, f"the default route inside goes via {via}, not {gateway}"
    host_addrs = {gateway}
    for line in subprocess.run(["ip", "-o", "-4", "addr"], capture_output=True, text=True,
                               check=True).stdout.splitlines():
        addr = line.split()[3].split("/")[0]
        if not addr.startswith("127."):
            host_addrs.add(addr)
    with ExitStack() as stack:
        socks = {addr: stack.enter_context(host_listener(addr)) for addr in sorted(host_addrs)}
        targets = [(addr, s.getsockname()[1]) for addr, s in socks.items()]
        results = connect_results(client, box["id"], targets)
        for (addr, port) in targets:
            assert results[f"{addr}:{port}"] == "blocked", \
                f"the sandbox reached a host service on {addr}:{port}" + \
                (" (the gateway)" if addr == gateway else "")
            assert not accepted_any(socks[addr]), f"the host service on {addr} got a connection"


def wait_listening(client, sid: str, port: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not client.port(sid, port)["listening"]:
        assert time.monotonic() < deadline, f"nothing listens on port {port} in sandbox {sid}"
        time.sleep(0.05)


def test_cannot_reach_another_sandbox_but_the_host_can(client, box, sandbox):
    port = 8080
    ok(client, sandbox["id"], f"python3 -c '{SERVE_SCRIPT % port}' </dev/null >/dev/null 2>&1 &")
    wait_listening(client, sandbox["id"], port)
    with socket.create_connection((sandbox["address"], port), timeout=2):
        pass  # the host reaches sandbox addresses (the web app opens ports that way)
    results = connect_results(client, box["id"], [(sandbox["address"], port)])
    assert results[f"{sandbox['address']}:{port}"] == "blocked", \
        f"sandbox {box['id']} reached a service in sandbox {sandbox['id']}"
