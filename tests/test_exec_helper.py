"""Each running sandbox has an exec helper: execs fork from a process already in the
sandbox's cgroup instead of migrating into it (spawner/enter.py, `serve_helper`).

What a learner or an operator would notice: execs keep working whatever happens to the
helper (killed, out of pids, many at once), the helper is invisible inside, counts against
the sandbox's own limits, and nothing of it outlives the sandbox.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from sandbox.errors import SandboxError
from sandbox.protocol import Reason

pytestmark = pytest.mark.privileged


def cgroup_pids(sandboxd, sid: str) -> set[int]:
    """Every process in the sandbox's pids cgroup (v1) or its cgroup tree (v2)."""
    for base in (Path("/sys/fs/cgroup/pids"), Path("/sys/fs/cgroup")):
        group = base / "nslab" / sandboxd.name / sid
        if group.is_dir():
            pids = set()
            for procs in group.rglob("cgroup.procs"):
                pids |= {int(p) for p in procs.read_text().split()}
            return pids
    pytest.fail(f"no cgroup for sandbox {sid}")


def helpers(sandboxd, sid: str) -> set[int]:
    """The processes of the sandbox's cgroup that live in the host's pid namespace."""
    host_pidns = os.readlink("/proc/self/ns/pid")
    found = set()
    for pid in cgroup_pids(sandboxd, sid):
        try:
            if os.readlink(f"/proc/{pid}/ns/pid") == host_pidns:
                found.add(pid)
        except FileNotFoundError:
            pass
    return found


def wait_for(cond, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.02)
    return cond()


def test_a_helper_waits_in_the_cgroup_invisible_inside(sandboxd, client, sandbox):
    sid = sandbox["id"]
    found = wait_for(lambda: helpers(sandboxd, sid))
    assert len(found) == 1, f"expected one exec helper in the sandbox's cgroup: {found}"
    ps = client.run(sid, ["sh", "-c", "cat /proc/[0-9]*/comm"])
    assert set(ps["stdout"].split()) <= {"catatonit", "sh", "cat"}, ps  # nothing of the host's


def test_each_exec_leaves_a_fresh_helper_and_works(sandboxd, client, sandbox):
    sid = sandbox["id"]
    seen = set()
    for i in range(5):
        r = client.run(sid, ["sh", "-c", f"echo {i}"])
        assert r["exit_code"] == 0 and r["stdout"] == f"{i}\n", r
        now = wait_for(lambda: helpers(sandboxd, sid))
        assert len(now) == 1, now
        seen |= now
    # every exec was served by the helper, which forked its successor for the next one
    assert len(seen) >= 5, seen


def test_a_killed_helper_is_replaced(sandboxd, client, sandbox):
    sid = sandbox["id"]
    (helper,) = wait_for(lambda: helpers(sandboxd, sid))
    os.kill(helper, signal.SIGKILL)
    wait_for(lambda: not helpers(sandboxd, sid))
    r = client.run(sid, ["true"])
    assert r["exit_code"] == 0, r
    replaced = wait_for(lambda: helpers(sandboxd, sid))
    assert replaced and helper not in replaced
    assert client.run(sid, ["echo", "ok"])["stdout"] == "ok\n"


def test_concurrent_execs_all_run(client, sandbox):
    sid = sandbox["id"]
    results, errors = [], []

    def one(i):
        try:
            results.append(client.run(sid, ["sh", "-c", f"echo {i}"])["stdout"])
        except Exception as e:  # noqa: BLE001 - collected and reported below
            errors.append(e)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert sorted(results) == sorted(f"{i}\n" for i in range(12))


# Takes every free pid of the sandbox for 4 s, and any pid freed meanwhile.
PID_GRABBER = """
import os, time
end = time.time() + 4
while time.time() < end:
    try:
        if os.fork() == 0:
            time.sleep(max(0.0, end - time.time()))
            os._exit(0)
    except OSError:
        time.sleep(0.001)
"""


def test_out_of_pids_fails_clearly_then_recovers(sandboxd, client):
    sb = client.create(cpus=1.0, memory="256m", pids=24, disk="256m")
    sid = sb["id"]
    try:
        wait_for(lambda: helpers(sandboxd, sid))
        client.run(sid, ["sh", "-c", "setsid -f python3 -c \"$0\" </dev/null >/dev/null 2>&1; "
                                     "sleep 0.5", PID_GRABBER])
        started = time.monotonic()
        with pytest.raises(SandboxError) as err:
            client.run(sid, ["true"])
        assert err.value.status == 409 and err.value.reason == Reason.AT_PROCESS_LIMIT, err.value
        time.sleep(max(0.0, 4.5 - (time.monotonic() - started)))
        r = wait_for(lambda: _run_or_none(client, sid), timeout=5)
        assert r is not None and r["exit_code"] == 0, r
        assert wait_for(lambda: helpers(sandboxd, sid)), "no exec helper after recovery"
    finally:
        client.destroy(sid, purge=True)


def _run_or_none(client, sid):
    try:
        return client.run(sid, ["true"])
    except SandboxError:
        return None


def test_nothing_outlives_the_sandbox(sandboxd, client):
    sb = client.create(cpus=1.0, memory="256m", pids=256, disk="256m")
    sid = sb["id"]
    client.run(sid, ["true"])
    found = wait_for(lambda: helpers(sandboxd, sid))
    assert found
    client.destroy(sid, purge=True)
    for pid in found:
        assert wait_for(lambda p=pid: not Path(f"/proc/{p}").exists()), \
            f"exec helper {pid} outlived its sandbox"
