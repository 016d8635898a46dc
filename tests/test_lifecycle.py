"""Lifecycle: nothing leaks over many cycles, homes persist, a killed daemon recovers."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from conftest import Daemon, free_subnet, leftovers
from sandbox.config import HostConfig

pytestmark = pytest.mark.privileged


def _cgroup_children(name: str) -> set[str]:
    """Sandbox cgroups of daemon `name`, on cgroup v2 or in any v1 hierarchy."""
    root = Path("/sys/fs/cgroup")
    found = set()
    for base in (root, *(h for h in root.iterdir() if h.is_dir())):
        d = base / "nslab" / name
        if d.is_dir():
            found |= {p.name for p in d.iterdir() if p.is_dir()}
    return found


def _links(prefix: str) -> set[str]:
    out = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    names = {line.split(":")[1].strip().split("@")[0] for line in out.splitlines()}
    return {n for n in names if n.startswith(prefix)}


def _processes_with_uid_in(bases: set[int]) -> list[int]:
    pids = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            uid = p.stat().st_uid
        except FileNotFoundError:
            continue
        if any(b <= uid < b + 65536 for b in bases):
            pids.append(int(p.name))
    return pids


def _settled(client, timeout: float = 10.0) -> set[str]:
    """Wait until the daemon's warm slots are refilled; return the ids of those slots."""
    from sandbox.config import HostConfig as _HC

    deadline = time.monotonic() + timeout
    while True:
        info = client.info()
        if (len(info["warm_slots"]) >= _HC().warm and not info["warm_pending"]) \
                or time.monotonic() > deadline:
            return set(info["warm_slots"])
        time.sleep(0.05)


def _mounts_under(path: Path) -> list[str]:
    return [line for line in Path("/proc/self/mountinfo").read_text().splitlines()
            if str(path) in line.split()[4] and "/storage " not in line + " "]


def test_200_create_destroy_cycles_leave_nothing_behind(sandboxd, client):
    tag = HostConfig(name=sandboxd.name).tag
    volumes = sandboxd.state_dir / "storage" / "sandboxes"
    def state(warm: set[str]) -> tuple:
        """What the daemon holds, less its warm sandboxes (each a whole sandbox: cgroup,
        veth named after its id, volume)."""
        prefix = f"nl{tag}"
        links = {link for link in _links(prefix)
                 if not any(w.startswith(link[len(prefix):]) for w in warm)}
        return (_cgroup_children(sandboxd.name) - warm, links, set(os.listdir(volumes)) - warm,
                len(list((sandboxd.state_dir / "sandboxes").iterdir())))

    before = state(_settled(client))
    bases = set()
    for i in range(200):
        sb = client.create(cpus=0.5, memory="64m", pids=32, disk="32m")
        bases.add(sb["uid_base"])
        if i % 50 == 0:  # now and then, really use it before tearing it down
            assert client.run(sb["id"], ["true"])["exit_code"] == 0
        client.destroy(sb["id"])
    after = state(_settled(client))
    assert after == before, f"leftovers after 200 cycles: before {before}, after {after}"
    # A block freed by our destroy may already serve another daemon's sandbox (blocks are
    # machine-wide); only blocks nobody claims now must be empty of processes.
    claimed = {int(p.name) for p in Path("/run/nslab/uid-blocks").iterdir() if p.name.isdigit()}
    free = {b for b in bases if (b - 100000) // 65536 not in claimed}
    assert _processes_with_uid_in(free) == [], "sandbox processes survived their sandbox"
    assert _mounts_under(volumes) == [], "mounts of destroyed sandboxes remain on the host"


def test_uid_ranges_are_never_shared_between_live_sandboxes(client):
    boxes = [client.create(memory="64m", disk="32m") for _ in range(3)]
    try:
        bases = [b["uid_base"] for b in boxes]
        assert len(set(bases)) == 3
        assert all(b >= 100000 and b % 65536 == 100000 % 65536 for b in bases)
    finally:
        for b in boxes:
            client.destroy(b["id"])


def test_home_outlives_the_sandbox_unless_purged(client):
    home = f"learner-{uuid.uuid4().hex[:6]}"
    sb = client.create(home=home, memory="64m", disk="32m")
    r = client.run(sb["id"], ["sh", "-c", "echo kept > /root/notes.txt && ls -ln /root/notes.txt"])
    assert r["exit_code"] == 0, r
    assert " 0 0 " in r["stdout"], "files in the home are owned by root inside"
    client.destroy(sb["id"])

    again = client.create(home=home, memory="64m", disk="32m")
    assert again["uid_base"] != sb["uid_base"] or True  # a new range may be the same block
    r = client.run(again["id"], ["sh", "-c", "cat /root/notes.txt; stat -c '%u %g' /root/notes.txt"])
    assert r["stdout"] == "kept\n0 0\n", "the home and its ownership survive a new sandbox"
    with pytest.raises(Exception) as busy:
        client.create(home=home, memory="64m", disk="32m")
    assert getattr(busy.value, "status", None) == 409, "one home is never shared by two sandboxes"
    client.destroy(again["id"], purge=True)

    fresh = client.create(home=home, memory="64m", disk="32m")
    try:
        r = client.run(fresh["id"], ["sh", "-c", "ls -A /root"])
        assert r["stdout"] == "", "--purge deleted the home"
    finally:
        client.destroy(fresh["id"], purge=True)


def test_stop_keeps_files_and_start_brings_the_sandbox_back(client):
    sb = client.create(memory="64m", disk="32m")
    try:
        client.run(sb["id"], ["sh", "-c", "echo hello > /etc/motd.lab"])
        stopped = client.stop(sb["id"])
        assert stopped["state"] == "stopped" and stopped["address"] is None
        with pytest.raises(Exception) as e:
            client.run(sb["id"], ["true"])
        assert getattr(e.value, "status", None) == 409
        started = client.start(sb["id"])
        assert started["state"] == "running"
        r = client.run(sb["id"], ["cat", "/etc/motd.lab"])
        assert r["stdout"] == "hello\n"
    finally:
        client.destroy(sb["id"])


def test_killing_pid_1_from_inside_stops_the_sandbox(client):
    sb = client.create(memory="64m", disk="32m")
    try:
        client.run(sb["id"], ["kill", "-TERM", "1"])
        deadline = time.monotonic() + 10
        while client.get(sb["id"])["state"] != "stopped":
            assert time.monotonic() < deadline, "the daemon did not notice its init exit"
            time.sleep(0.05)
    finally:
        client.destroy(sb["id"])


FREEZE = r"""
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
  G=/sys/fs/cgroup/ice; mkdir $G
  sh -c "echo \$\$ > $G/cgroup.procs; exec sleep 300" >/dev/null 2>&1 &
  sleep 0.3; echo 1 > $G/cgroup.freeze
  for i in $(seq 50); do grep -q '^frozen 1' $G/cgroup.events && exit 0; sleep 0.1; done
else
  G=/sys/fs/cgroup/freezer/ice; mkdir $G
  sh -c "echo \$\$ > $G/tasks; exec sleep 300" >/dev/null 2>&1 &
  sleep 0.3; echo FROZEN > $G/freezer.state
  for i in $(seq 50); do [ "$(cat $G/freezer.state)" = FROZEN ] && exit 0; sleep 0.1; done
fi
exit 1
"""


@pytest.mark.parametrize("end", ["stop", "destroy"])
def test_processes_the_learner_froze_do_not_keep_the_sandbox_alive(client, end):
    # A frozen task never dies of SIGKILL; on cgroup v1 thawing the sandbox's own cgroup
    # leaves a child it froze itself frozen, so the engine thaws the whole subtree.
    sb = client.create(memory="64m", disk="32m")
    try:
        r = client.run(sb["id"], ["sh", "-c", FREEZE])
        assert r["exit_code"] == 0, r
        assert any(p["cmdline"][:1] == ["sleep"] for p in client.inspect(sb["id"])["processes"])
        if end == "stop":
            assert client.stop(sb["id"])["state"] == "stopped"
            assert client.start(sb["id"])["state"] == "running"
    finally:
        client.destroy(sb["id"])


@pytest.fixture
def second_daemon(tmp_path):
    """Another sandboxd, beside the session's one, that this test may kill -9."""
    d = Daemon(tmp_path, f"r{uuid.uuid4().hex[:8]}", free_subnet())
    d.start()
    yield d
    result = d.teardown()
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    assert not leftovers(d.name, d.state_dir, HostConfig(name=d.name).tag)


def test_kill_9_daemon_recovers_live_sandboxes_and_cleans_dead_ones(second_daemon, client):
    d = second_daemon
    c = d.client()
    boxes = [c.create(memory="64m", disk="32m", home=f"h{i}-{d.name}") for i in range(5)]
    for b in boxes:
        assert c.run(b["id"], ["sh", "-c", "echo mine > /root/f"])["exit_code"] == 0
    other = client.list()  # the session daemon is not disturbed by this one

    d.stop(signal.SIGKILL)
    # While the daemon is down, one sandbox dies (its init is killed from the host).
    victim = boxes[0]
    os.kill(victim["init_pid"], signal.SIGKILL)
    time.sleep(0.2)
    d.start()

    listed = {b["id"]: b for b in c.list()}
    assert listed[victim["id"]]["state"] == "stopped", \
        "a sandbox whose init died is stopped: processes, cgroup, veth released, files kept"
    for b in boxes[1:]:
        assert listed[b["id"]]["state"] == "running"
        r = c.run(b["id"], ["cat", "/root/f"])
        assert r["stdout"] == "mine\n", "adopted sandboxes are usable again"
    tag = HostConfig(name=d.name).tag
    warm = _settled(c)
    assert _cgroup_children(d.name) - warm == {b["id"] for b in boxes[1:]}
    # (warm sandboxes, booted again after the restart, hold a veth each as well)
    assert _links(f"nl{tag}") - {f"nlbr{tag}"} - {f"nl{tag}{w[:9]}" for w in warm} \
        == {f"nl{tag}{b['id'][:9]}" for b in boxes[1:]}
    # Nothing of the dead sandbox is lost: started again, its home is there.
    c.start(victim["id"])
    assert c.run(victim["id"], ["cat", "/root/f"])["stdout"] == "mine\n"
    # And a destroyed one's home is kept for a new sandbox.
    c.destroy(boxes[1]["id"])
    new = c.create(memory="64m", disk="32m", home=boxes[1]["home"])
    assert c.run(new["id"], ["cat", "/root/f"])["stdout"] == "mine\n"
    assert [b["id"] for b in client.list()] == [b["id"] for b in other]


def test_a_forgotten_sessions_exit_does_not_end_a_later_process_with_its_pid(monkeypatch):
    # DELETE /exec/ID kills the process and forgets its session at once; the spawner's
    # exit report comes after and is kept as an "early" exit. Once pids wrap around, a
    # new shell can get that pid: it must not be ended by the stale report (it was: the
    # shell's session said exit -9 while bash ran on, and the page's terminal died).
    from sandbox import engine as eng

    e = eng.Engine.__new__(eng.Engine)
    e._sessions_by_pid, e._early_exits = {}, {}
    clock = [1000.0]
    monkeypatch.setattr(eng.time, "monotonic", lambda: clock[0])
    e._on_process_exit(4242, 3)   # reported just before exec() registers the session
    clock[0] += 0.01
    assert e._claim_early_exit(4242) == 3
    e._on_process_exit(4343, -9)  # a forgotten session's process
    clock[0] += eng.EARLY_EXIT_TTL + 1
    assert e._claim_early_exit(4343) is None
    e._on_process_exit(4444, -9)
    clock[0] += eng.EARLY_EXIT_TTL + 1
    e._on_process_exit(4545, 0)   # stale reports are dropped as new ones come
    assert list(e._early_exits) == [4545]
