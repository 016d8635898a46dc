"""One hostile sandbox must not stop or slow the spawner for the others (issue 10).

Each test does the attack for real as root inside one sandbox (`hostile`) and, while it
runs, times an exec in another (`box`): it must take under OTHERS_BOUND seconds. The
attacked sandbox's own exec must fail with a clear error (exit 127 and a message on
stderr, or `Reason.SANDBOX_UNRESPONSIVE`) within the spawner's deadline, never hang.
"""

from __future__ import annotations

import errno
import subprocess
import threading
import time
import uuid

import pytest

from conftest import NSLAB, Daemon, free_subnet, leftovers
from sandbox.config import HostConfig
from sandbox.errors import SandboxError
from sandbox.protocol import Channel, Reason
from sandbox.spawner.spec import EXEC_DEADLINE, MAX_OPEN_FILES, MAX_PTYS

pytestmark = pytest.mark.privileged

OTHERS_BOUND = 1.0  # seconds an exec in another sandbox may take while the attack runs
SLACK = 3.0  # seconds over the spawner's deadline a busy 2-core host may add

# Stops each new process of the sandbox the moment it exists (pids in a pid namespace are
# handed out in order, so the next one is ns_last_pid + 1), and lets it go on unless it is
# still the spawner's (an exec's child before its exec). Prints "watching" once it runs.
STOP_WATCHER = """
import os, signal
print("watching", flush=True)
while True:
    with open("/proc/sys/kernel/ns_last_pid") as f:
        nxt = int(f.read()) + 1
    while True:
        try:
            os.kill(nxt, signal.SIGSTOP)
            break
        except ProcessLookupError:
            pass
    try:
        with open(f"/proc/{nxt}/comm") as f:
            comm = f.read().strip()
    except OSError:
        continue
    if comm != "nslab-spawner":
        os.kill(nxt, signal.SIGCONT)
"""

# Opens /dev/ptmx until the kernel refuses; prints how many it got, then holds them.
PTY_HOG = """
import os, sys, time
fds = []
while True:
    try:
        fds.append(os.open("/dev/ptmx", os.O_RDWR | os.O_NOCTTY))
    except OSError as e:
        print(len(fds), e.errno, flush=True)
        break
open("/tmp/ptys-taken", "w").close()
time.sleep(float(sys.argv[1]))
"""

# Prints the names of the processes that are still the spawner's (not yet exec'd).
LIST_SPAWNER_CHILDREN = """
import os
for name in os.listdir("/proc"):
    if name.isdigit():
        try:
            comm = open(f"/proc/{name}/comm").read().strip()
        except OSError:
            continue
        if comm == "nslab-spawner":
            print(name)
"""


@pytest.fixture
def hostile(client):
    """A sandbox the test attacks from the inside; destroyed with --purge afterwards."""
    sb = client.create(cpus=1.0, memory="256m", pids=256, disk="256m")
    yield sb
    client.destroy(sb["id"], purge=True)


def run_ok(client, sid: str, script: str, timeout: float = 10) -> str:
    r = client.run(sid, ["sh", "-c", script], timeout=timeout)
    assert r["exit_code"] == 0 and not r["timed_out"], f"`{script}` failed: {r['stderr']}"
    return r["stdout"]


def timed_exec(client, sid: str) -> float:
    """Seconds one short exec in `sid` takes, start to exit; it must succeed."""
    t0 = time.monotonic()
    r = client.run(sid, ["true"], timeout=10)
    took = time.monotonic() - t0
    assert r["exit_code"] == 0, r
    return took


class Background:
    """`fn()` in a thread: its result or exception, and how long it took."""

    def __init__(self, fn):
        self.result = self.error = None
        self.took = None
        self._thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self._thread.start()

    def _run(self, fn):
        t0 = time.monotonic()
        try:
            self.result = fn()
        except Exception as e:  # noqa: BLE001 - handed to the test's thread
            self.error = e
        self.took = time.monotonic() - t0

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"the attacked sandbox's exec hung over {timeout} s"


def others_while(client, box, attacked: Background, rounds: int = 5) -> list[float]:
    """Exec times in `box`, measured while `attacked` is still pending where it is."""
    times = []
    for _ in range(rounds):
        times.append(timed_exec(client, box["id"]))
        if attacked.took is not None:
            break
    return times


@pytest.mark.parametrize("user", [0, "root"])
def test_fifo_passwd_fails_fast_and_others_unaffected(client, box, hostile, user):
    sid = hostile["id"]
    run_ok(client, sid, "rm /etc/passwd && mkfifo /etc/passwd")
    attacked = Background(lambda: client.run(sid, ["true"], timeout=10, user=user))
    others = others_while(client, box, attacked)
    attacked.join(EXEC_DEADLINE + SLACK)
    assert attacked.error is None, attacked.error
    r = attacked.result
    # The user could not be looked up: the command was not run, and stderr says why.
    assert r["exit_code"] == 127 and r["stdout"] == "" and r["stderr"], r
    assert attacked.took < EXEC_DEADLINE + SLACK, attacked.took
    assert max(others) < OTHERS_BOUND, others


def test_huge_sparse_passwd_fails_fast_and_others_unaffected(client, box, hostile):
    sid = hostile["id"]
    run_ok(client, sid, "truncate -s 700M /etc/passwd")
    attacked = Background(lambda: client.run(sid, ["true"], timeout=10))
    others = others_while(client, box, attacked)
    attacked.join(EXEC_DEADLINE + SLACK)
    assert attacked.error is None, attacked.error
    r = attacked.result
    assert r["exit_code"] == 127 and r["stdout"] == "" and r["stderr"], r
    assert attacked.took < OTHERS_BOUND, f"a 700 MiB passwd took {attacked.took:.2f} s to refuse"
    assert max(others) < OTHERS_BOUND, others


def test_sigstopping_the_exec_child_fails_it_at_the_deadline_and_others_unaffected(
        client, box, hostile):
    sid = hostile["id"]
    watcher = client.exec(sid, ["python3", "-c", STOP_WATCHER])
    try:
        with client.attach(watcher["id"]) as stream:
            seen = b""
            while b"watching" not in seen:  # the replay's end comes first, maybe
                channel, data = stream.recv()
                assert channel != Channel.EXIT, seen
                seen += data
        attacked = Background(lambda: client.run(sid, ["true"], timeout=10))
        time.sleep(0.2)  # the attacked exec is now held by the stopped child
        others = others_while(client, box, attacked, rounds=10)
        attacked.join(EXEC_DEADLINE + SLACK)
        assert isinstance(attacked.error, SandboxError), attacked.result
        assert attacked.error.reason is Reason.SANDBOX_UNRESPONSIVE, attacked.error
        assert EXEC_DEADLINE - 0.5 < attacked.took < EXEC_DEADLINE + SLACK, attacked.took
        assert max(others) < OTHERS_BOUND, others
        assert len(others) >= 3, "the attacked exec did not wait for its deadline"
    finally:
        client.forget_exec(watcher["id"])  # kills the watcher
    # The spawner killed the child it gave up on: nothing of it is left, stopped, inside.
    assert run_ok(client, sid, f"python3 -c '{LIST_SPAWNER_CHILDREN}'").split() == []


def test_one_sandbox_cannot_take_every_terminal(client, box, hostile):
    sid = hostile["id"]
    hog = Background(lambda: client.run(sid, ["python3", "-c", PTY_HOG, "10"], timeout=20))
    deadline = time.monotonic() + 10
    while client.run(sid, ["test", "-e", "/tmp/ptys-taken"])["exit_code"] != 0:
        assert time.monotonic() < deadline, "the pty hog did not finish opening"
        time.sleep(0.1)
    # While the hog holds every terminal its sandbox may have, another still gets one: a
    # terminal exec, and a pty opened inside.
    session = client.exec(box["id"], ["sh", "-c", "exit 3"], tty=True)
    client.forget_exec(session["id"])
    assert run_ok(client, box["id"],
                  "python3 -c 'import os; os.open(\"/dev/ptmx\", os.O_RDWR)' && echo ok") == "ok\n"
    hog.join(30)
    assert hog.error is None, hog.error
    count, err = hog.result["stdout"].split()
    assert (int(count), int(err)) == (MAX_PTYS, errno.ENOSPC), hog.result


def test_open_files_are_bounded_per_process(client, box):
    out = run_ok(client, box["id"], "ulimit -Sn; ulimit -Hn; ulimit -Hn 1048576 2>/dev/null "
                                    "&& echo raised || echo refused")
    assert out.split() == [str(MAX_OPEN_FILES), str(MAX_OPEN_FILES), "refused"]


def test_the_terminal_bound_is_the_daemons_to_set(tmp_path):
    """`nslab sandboxd --max-ptys N` sets each sandbox's devpts `max=` (a benchmark playing one
    learner with 200 terminals needs more than a learner does); a bad N changes nothing."""
    bad = subprocess.run([*NSLAB, "sandboxd", "--max-ptys", "0"], capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 2 and "'0' is not a number from 1 to 1024" in bad.stderr
    name = f"p{uuid.uuid4().hex[:8]}"
    d = Daemon(tmp_path, name, free_subnet())
    d.extra_args = ["--max-ptys", "5", "--warm", "0"]
    d.start()
    try:
        c = d.client()
        sb = c.create(cpus=1.0, memory="256m", pids=64, disk="256m")
        out = c.run(sb["id"], ["python3", "-c", PTY_HOG, "0"], timeout=20)["stdout"].split()
        assert [int(x) for x in out] == [5, errno.ENOSPC]
    finally:
        result = d.teardown()
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    assert not leftovers(name, d.state_dir, HostConfig(name=name).tag)
