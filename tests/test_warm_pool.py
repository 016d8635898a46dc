"""Warm sandboxes (sandbox/warm.py): booted ahead of demand, made the learner's at create.

What a learner would notice is only that create is fast; what must hold is that a warm
sandbox, once taken, is exactly what a cold create makes: the request's limits, disk
quota, home volume and labels, and nothing left of the pool. A request the pool cannot
serve (its own hostname, /dev/shm size) is built from scratch, and a warm sandbox that died
while it waited is never handed out.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.privileged


def warm_slots(client) -> list[str]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        slots = client.info()["warm_slots"]
        if slots:
            return slots
        time.sleep(0.05)
    pytest.fail("the daemon's warm pool stayed empty for 10 s")


def cgroup_file(sandboxd, sid: str, controller: str, name: str) -> str:
    for base in (Path("/sys/fs/cgroup") / controller, Path("/sys/fs/cgroup")):
        path = base / "nslab" / sandboxd.name / sid / name
        if path.exists():
            return path.read_text().strip()
    pytest.fail(f"no {name} for sandbox {sid}")


def test_a_create_takes_a_warm_sandbox_and_makes_it_the_learners(sandboxd, client):
    ready = warm_slots(client)
    home = f"warm-{os.getpid()}"
    sb = client.create(cpus=0.5, memory="128m", pids=100, disk="256m", home=home,
                       labels={"user": "ada"})
    try:
        assert sb["id"] in ready, "a fitting create did not take a warm sandbox"
        assert sb["id"] not in client.info()["warm_slots"]
        assert sb["labels"] == {"user": "ada"} and sb["home"] == home
        if Path("/sys/fs/cgroup/cpu").is_dir():  # v1
            assert cgroup_file(sandboxd, sb["id"], "cpu", "cpu.cfs_quota_us") == "50000"
            assert cgroup_file(sandboxd, sb["id"], "memory",
                               "memory.limit_in_bytes") == str(128 << 20)
            assert cgroup_file(sandboxd, sb["id"], "pids", "pids.max") == "100"
        else:
            assert cgroup_file(sandboxd, sb["id"], "", "cpu.max").startswith("50000 ")
            assert cgroup_file(sandboxd, sb["id"], "", "memory.max") == str(128 << 20)
        # The home volume is /root inside: what is written there is on the host's volume.
        r = client.run(sb["id"], ["sh", "-c", "echo kept > /root/note; stat -c %u /root/note; "
                                              "grep -c ' /root ' /proc/self/mountinfo"])
        assert r["stdout"].split() == ["0", "1"], r
        volume = sandboxd.state_dir / "storage" / "homes" / home
        assert (volume / "note").read_text() == "kept\n"
        # The disk quota is the request's, not the pool's default (1 GiB).
        r = client.run(sb["id"], ["sh", "-c", "dd if=/dev/zero of=/big bs=1M count=400 "
                                              "2>&1; sync"], timeout=60)
        assert "Disk quota exceeded" in r["stdout"], r
    finally:
        client.destroy(sb["id"], purge=False)
    again = client.create(cpus=1.0, memory="256m", pids=256, disk="256m", home=home)
    try:
        assert client.run(again["id"], ["cat", "/root/note"])["stdout"] == "kept\n"
    finally:
        client.destroy(again["id"], purge=True)


@pytest.mark.parametrize("special", [{"hostname": "atlas"}, {"shm": "16m"}])
def test_a_request_the_pool_cannot_serve_is_built_from_scratch(client, special):
    ready = warm_slots(client)
    sb = client.create(cpus=1.0, memory="256m", pids=256, disk="256m", **special)
    try:
        assert sb["id"] not in ready
        if "hostname" in special:
            assert client.run(sb["id"], ["hostname"])["stdout"] == "atlas\n"
        else:
            out = client.run(sb["id"], ["sh", "-c", "df -k /dev/shm | tail -1"])["stdout"]
            assert out.split()[1] == str(16 * 1024), out
        assert set(ready) <= set(client.info()["warm_slots"]), "the pool lost a slot"
    finally:
        client.destroy(sb["id"], purge=True)


def test_warm_sandboxes_are_not_listed(client):
    ready = warm_slots(client)
    listed = {s["id"] for s in client.list()}
    assert not listed & set(ready)


def test_a_warm_sandbox_that_died_is_not_handed_out(sandboxd, client):
    ready = warm_slots(client)
    victim = ready[0]
    procs = None
    for base in (Path("/sys/fs/cgroup/pids"), Path("/sys/fs/cgroup")):
        group = base / "nslab" / sandboxd.name / victim
        if group.is_dir():
            procs = {int(p) for f in group.rglob("cgroup.procs") for p in f.read_text().split()}
    assert procs, "no processes in the warm sandbox's cgroup"
    host_pidns = os.readlink("/proc/self/ns/pid")
    inits = [p for p in procs if os.readlink(f"/proc/{p}/ns/pid") != host_pidns]
    for pid in inits:
        os.kill(pid, signal.SIGKILL)
    time.sleep(0.2)
    taken = []
    try:
        for _ in range(len(ready)):
            sb = client.create(cpus=1.0, memory="256m", pids=256, disk="256m")
            taken.append(sb["id"])
            assert sb["id"] != victim, "a dead warm sandbox was handed out"
            assert client.run(sb["id"], ["true"])["exit_code"] == 0
    finally:
        for sid in taken:
            client.destroy(sid, purge=True)


def test_sandboxes_made_side_by_side_get_their_own_addresses(sandboxd, client):
    """Creates beside the pool's refills (which boot side by side) each get an address of
    their own, and each reaches its gateway (its ARP works: no other port claims its IP)."""
    import threading

    from sandbox.config import REGISTRY_PORT

    made, errors = [], []

    def one():
        try:
            made.append(client.create(cpus=0.5, memory="64m", pids=64, disk="64m"))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=one) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert not errors, errors
        addresses = [sb["address"] for sb in made]
        assert len(set(addresses)) == len(addresses), addresses
        gateway = client.info()["subnet"].split("/")[0].rsplit(".", 1)[0] + ".1"
        for sb in made:
            r = client.run(sb["id"], ["sh", "-c", f"curl -s -m 5 -o /dev/null -w '%{{http_code}}' "
                                                  f"http://{gateway}:{REGISTRY_PORT}/v2/"])
            assert r["stdout"] == "200", (sb["address"], r)
    finally:
        for sb in made:
            client.destroy(sb["id"], purge=True)
