"""Resource limits of whole sandboxes, end to end through a real sandboxd.

Each test creates its own sandbox with the limits it needs, loads it from inside (CPU
hogs, a memory hog, a fork bomb, dd) and measures from the host what the kernel allowed.
The tests run on whichever cgroup version the host has: paths inside the sandbox are
chosen from `client.info()["cgroup_version"]`, never assumed.

CPU figures are rates over a 2 s window after 0.5 s of warm-up, taken from the cgroup's
usage counter (`stats()["cpu_usage_ns"]`, or a child cgroup's usage in `inspect()`).
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from sandbox.errors import NotFound

pytestmark = pytest.mark.privileged

MiB = 1 << 20
SPIN = ["sh", "-c", "while :; do :; done"]
WARMUP, WINDOW = 0.5, 2.0


@pytest.fixture
def make(client):
    """Creates sandboxes with the given limits; each is destroyed (purge) afterwards."""
    made: list[str] = []

    def create(**limits) -> dict:
        sb = client.create(**limits)
        made.append(sb["id"])
        return sb

    yield create
    for sid in made:
        try:
            client.destroy(sid, purge=True)
        except NotFound:
            pass  # the test destroyed it itself


def cpu_rates(*counters) -> list[float]:
    """CPUs used per second by each counter (a callable giving ns) over WINDOW, after WARMUP."""
    time.sleep(WARMUP)
    t0 = time.monotonic()
    u0 = [c() for c in counters]
    time.sleep(WINDOW)
    u1 = [c() for c in counters]
    elapsed = time.monotonic() - t0
    return [(b - a) / 1e9 / elapsed for a, b in zip(u0, u1)]


def ok(r: dict) -> dict:
    assert r["exit_code"] == 0 and not r["timed_out"], r
    return r


def host_cgroup_dirs(group: str) -> list[Path]:
    """Where `group` would be on this host: under the v2 root or any v1 hierarchy."""
    root = Path("/sys/fs/cgroup")
    return [root / group] + [h / group for h in root.iterdir() if h.is_dir()]


def host_pids_with_uid_in(base: int, count: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        uid = int(re.search(r"^Uid:\s+\d+\s+(\d+)", status, re.M).group(1))
        if base <= uid < base + count:
            found.append(int(entry.name))
    return found


# -- CPU -------------------------------------------------------------------------------

# The quota is a ceiling, tight to 0.05 CPU. Reaching it needs idle CPUs: 0.5 of a 2-CPU
# host is reached even while another process spins on the host, a whole 1.0 is not quite
# (0.92 measured), so the contrast case only has to show the limit moved with `cpus`.
@pytest.mark.parametrize("cpus, floor", [(0.5, 0.45), (1.0, 0.8)])
def test_cpu_quota_holds_for_two_hogs(client, make, cpus, floor):
    sid = make(cpus=cpus, memory="64m", pids=64, disk="64m")["id"]
    # Two spinning processes would take both of the host's CPUs without the quota, so
    # the quota, not the number of hogs, is the bound.
    for _ in range(2):
        client.exec(sid, SPIN)
    (used,) = cpu_rates(lambda: client.stats(sid)["cpu_usage_ns"])
    assert floor <= used <= cpus + 0.05, f"measured {used:.3f} CPUs under a {cpus} CPU quota"


def test_cpuset_pins_hogs_to_cpu_0(client, make):
    sid = make(cpuset="0", memory="64m", pids=64, disk="64m")["id"]
    pids = [client.exec(sid, SPIN)["pid"] for _ in range(2)]
    assert {p["host_pid"] for p in client.inspect(sid)["processes"]} >= set(pids)
    for pid in pids:
        allowed = re.search(r"^Cpus_allowed_list:\s*(\S+)",
                            Path(f"/proc/{pid}/status").read_text(), re.M).group(1)
        assert allowed == "0", f"hog {pid} may run on CPUs {allowed}"
    seen = set()
    for _ in range(20):
        for pid in pids:
            # Field 39 of /proc/PID/stat: the CPU the task last ran on (after the comm).
            seen.add(int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[36]))
        time.sleep(0.05)
    assert seen == {0}
    # Two hogs on one CPU share it: together they use at most one.
    (used,) = cpu_rates(lambda: client.stats(sid)["cpu_usage_ns"])
    assert used <= 1.05, f"two hogs pinned to CPU 0 used {used:.3f} CPUs"


def test_cpu_weight_splits_a_shared_cpu(client, make):
    heavy = make(cpuset="0", cpu_weight=200, memory="64m", pids=64, disk="64m")["id"]
    light = make(cpuset="0", cpu_weight=100, memory="64m", pids=64, disk="64m")["id"]
    for sid in (heavy, light):
        client.exec(sid, SPIN)
    h, lo = cpu_rates(lambda: client.stats(heavy)["cpu_usage_ns"],
                      lambda: client.stats(light)["cpu_usage_ns"])
    assert abs(h / lo - 2.0) <= 0.3, f"weights 200:100 gave {h:.3f}:{lo:.3f} CPUs"


# -- memory ----------------------------------------------------------------------------

def test_memory_hog_is_oom_killed_and_sandbox_lives_on(client, make):
    # swap=0: on a host with swap the hog could otherwise page out instead of dying.
    sid = make(cpus=1.0, memory="64m", swap="0", pids=64, disk="64m")["id"]
    assert client.stats(sid)["oom_kills"] == 0
    # b"x" * n fills (touches) every page of the 200 MiB.
    r = client.run(sid, ["python3", "-c", "b = b'x' * (200 << 20); print('survived')"],
                   timeout=30)
    assert not r["timed_out"]
    assert r["exit_code"] in (137, -9), r
    assert "survived" not in r["stdout"]
    stats = client.stats(sid)
    assert stats["oom_kills"] >= 1
    assert stats["memory_limit"] == 64 * MiB
    assert stats["memory_peak"] is None or stats["memory_peak"] <= 64 * MiB

    assert ok(client.run(sid, ["true"]))["exit_code"] == 0
    init = ok(client.run(sid, ["cat", "/proc/1/comm"]))["stdout"]
    assert init == "catatonit\n"


# -- processes -------------------------------------------------------------------------

def test_fork_bomb_stops_at_pids_limit_and_host_answers(client, make):
    sid = make(cpus=1.0, memory="256m", pids=64, disk="64m")["id"]
    info = client.inspect(sid)
    uid_base, uid_count, group = info["uid_base"], info["uid_count"], info["cgroup"]
    client.exec(sid, ["timeout", "5", "bash", "-c", ":(){ :|:& };:"])

    peak, host_ok, daemon_ok = 0, 0, 0
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        peak = max(peak, client.stats(sid)["pids_current"])
        host_ok += subprocess.run(["true"], timeout=5).returncode == 0
        daemon_ok += client.info()["name"] != ""
        time.sleep(0.1)
    assert peak <= 64, f"{peak} pids in a sandbox limited to 64"
    assert peak >= 60, f"the fork bomb reached only {peak} pids: did it run?"
    assert host_ok == daemon_ok > 10  # every probe during the bomb was answered

    client.destroy(sid, purge=True)
    with pytest.raises(NotFound):
        client.inspect(sid)
    assert host_pids_with_uid_in(uid_base, uid_count) == []
    assert [d for d in host_cgroup_dirs(group) if d.exists()] == []


# -- disk ------------------------------------------------------------------------------

def test_disk_quota_stops_dd(client, make, sandboxd):
    sid = make(cpus=1.0, memory="256m", pids=64, disk="64m")["id"]
    image = sandboxd.state_dir / "storage.img"
    for target in ("/big", "/root/big", "/tmp/big"):
        os.sync()
        blocks0 = image.stat().st_blocks
        r = client.run(sid, ["sh", "-c", f"dd if=/dev/zero of={target} bs=1M count=200; "
                                         f"echo rc=$?; sync; stat -c %s {target}"], timeout=60)
        assert not r["timed_out"], r
        assert re.search(r"Disk quota exceeded|No space left", r["stderr"]), r["stderr"]
        out = r["stdout"].split()
        assert out[0] == "rc=1", r
        size = int(out[1])
        assert 0 < size < 64 * MiB, f"{target}: {size} bytes written under a 64 MiB quota"
        os.sync()
        grown = (image.stat().st_blocks - blocks0) * 512
        # What dd wrote plus btrfs metadata; never the 200 MiB it asked for.
        assert grown < 64 * MiB + 16 * MiB, f"the pool image grew {grown / MiB:.1f} MiB"
        disk = client.stats(sid)["disk"]
        assert disk["limit_bytes"] == 64 * MiB and disk["used_bytes"] <= 64 * MiB
        ok(client.run(sid, ["rm", target]))
    # Space comes back: the sandbox can write again.
    r = ok(client.run(sid, ["sh", "-c", "echo hello > /root/after && cat /root/after"]))
    assert r["stdout"] == "hello\n"


# -- delegation ------------------------------------------------------------------------

# Make /child, give it a quarter CPU, start a hog and move it in; print the hog's pid.
# v1: the cpu hierarchy holds the quota; cpuacct (a hierarchy of its own on some hosts,
# co-mounted with cpu on others) gets the same child so the host can read its usage.
DELEGATE = {
    1: """set -e
       for h in cpu cpuacct; do mkdir -p /sys/fs/cgroup/$h/child; done
       echo 25000 > /sys/fs/cgroup/cpu/child/cpu.cfs_quota_us
       sh -c 'while :; do :; done' >/dev/null 2>&1 </dev/null &
       for h in cpu cpuacct; do echo $! > /sys/fs/cgroup/$h/child/cgroup.procs; done
       echo $!""",
    2: """set -e
       mkdir /sys/fs/cgroup/child
       echo '25000 100000' > /sys/fs/cgroup/child/cpu.max
       sh -c 'while :; do :; done' >/dev/null 2>&1 </dev/null &
       echo $! > /sys/fs/cgroup/child/cgroup.procs
       echo $!""",
}


def test_root_inside_limits_a_child_cgroup(client, make):
    version = client.info()["cgroup_version"]
    sid = make(cpus=1.0, memory="64m", pids=64, disk="64m")["id"]
    inner = int(ok(client.run(sid, ["sh", "-c", DELEGATE[version]]))["stdout"])

    info = client.inspect(sid)
    host_pid = next(p["host_pid"] for p in info["processes"] if p["pid"] == inner)
    nodes = {n["path"]: n for n in info["cgroups"]}
    assert "/child" in nodes, sorted(nodes)
    assert nodes["/child"]["limits"]["cpus"] == 0.25
    assert host_pid in nodes["/child"]["procs"]
    assert nodes["/"]["limits"]["cpus"] == 1.0
    assert next(p for p in info["processes"] if p["pid"] == inner)["cgroup"] == "/child"

    def child_usage() -> int:
        child = next(n for n in client.inspect(sid)["cgroups"] if n["path"] == "/child")
        assert "cpu_usage_ns" in child["usage"], f"no CPU usage for /child: {child['usage']}"
        return child["usage"]["cpu_usage_ns"]

    (used,) = cpu_rates(child_usage)
    assert abs(used - 0.25) <= 0.05, f"measured {used:.3f} CPUs under a 0.25 CPU child quota"


# Limit files of the sandbox's own cgroup, as seen inside, and a value that would raise
# each one.
OWN_LIMITS = {
    1: [("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "-1"),
        ("/sys/fs/cgroup/cpu/cpu.cfs_period_us", "1000000"),
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "-1"),
        ("/sys/fs/cgroup/pids/pids.max", "max")],
    2: [("/sys/fs/cgroup/cpu.max", "max 100000"),
        ("/sys/fs/cgroup/memory.max", "max"),
        ("/sys/fs/cgroup/pids.max", "max")],
}


def test_sandbox_cannot_raise_its_own_limits(client, make):
    version = client.info()["cgroup_version"]
    sid = make(cpus=0.5, memory="64m", pids=64, disk="64m")["id"]
    script = "".join(f"echo {value} > {path} 2>/dev/null && echo WROTE {path}; "
                     f"chmod 666 {path} 2>/dev/null && echo CHMOD {path}; "
                     f"test -e {path} || echo MISSING {path}; "
                     for path, value in OWN_LIMITS[version])
    r = client.run(sid, ["sh", "-c", script + "true"])
    assert r["exit_code"] == 0 and r["stdout"] == "", r

    root = next(n for n in client.inspect(sid)["cgroups"] if n["path"] == "/")
    assert root["limits"]["cpus"] == 0.5
    assert root["limits"]["memory_max"] == 64 * MiB
    assert root["limits"]["pids_max"] == 64
    assert root["usage"]["pids_limit"] == 64
    assert root["usage"]["memory_limit"] == 64 * MiB
    stats = client.stats(sid)
    assert (stats["cpus"], stats["memory_limit"], stats["pids_limit"]) == (0.5, 64 * MiB, 64)
