"""A hostile learner against sandboxd (issue 10): what one sandbox does must not stall the
daemon for the others.

Each test does the attack for real, inside a real sandbox of the session's sandboxd, and
measures what another learner gets meanwhile, against a stated bound.
"""

from __future__ import annotations

import queue
import re
import threading
import time
from pathlib import Path

import pytest

from sandbox.cgroupsbase import TREE_LIMIT
from sandbox.client import StreamClosed
from sandbox.protocol import Channel

pytestmark = pytest.mark.privileged

ATTACK_CGROUPS = 10_000
# Bounds, with what the code before the fix gave on a 2-core Debian 12 (v1) host:
# inspect 3.9 s, the event loop blocked up to 2.7 s (others' echo 1.85 s), destroy 1.5 s.
INSPECT_BOUND = 1.5  # s, for the attacker's own inspect
OTHERS_BOUND = 0.3  # s, the slowest GET of another sandbox while inspect and destroy run
OTHERS_ECHO_BOUND = 1.0  # s, another sandbox's `run echo` while the attacker's inspect runs


class Probe(threading.Thread):
    """Another learner: GETs its own sandbox in a loop and keeps the slowest answer."""

    def __init__(self, sandboxd, sid: str):
        super().__init__(daemon=True)
        self.client, self.sid = sandboxd.client(), sid
        self.stop = threading.Event()
        self.worst = 0.0
        self.count = 0

    def run(self) -> None:
        while not self.stop.is_set():
            t0 = time.monotonic()
            self.client.get(self.sid)
            self.worst = max(self.worst, time.monotonic() - t0)
            self.count += 1
            time.sleep(0.01)

    def finish(self) -> float:
        self.stop.set()
        self.join(30)
        return self.worst


def cgroup_dirs(sandboxd, sid: str) -> list[Path]:
    """The sandbox's cgroup in every hierarchy (v1) or the one tree (v2) that still exist."""
    root = Path("/sys/fs/cgroup")
    rel = Path("nslab") / sandboxd.name / sid
    return [base / rel for base in (root, *(h for h in root.iterdir() if h.is_dir()))
            if (base / rel).exists()]


def test_ten_thousand_cgroups_in_one_sandbox_stall_nobody(sandboxd, client, sandbox):
    attacker = client.create(cpus=1.0, memory="256m", pids=256, disk="256m")
    sid = attacker["id"]
    try:
        v1 = client.info()["cgroup_version"] == 1
        base = "/sys/fs/cgroup/cpu" if v1 else "/sys/fs/cgroup"
        # Empty child cgroups, as fast as the learner's root can make them (v2 refuses
        # them past cgroup.max.descendants: xargs goes on, each mkdir fails).
        out = client.run(sid, ["sh", "-c", f"cd {base} && seq -f x%g {ATTACK_CGROUPS} | "
                                           "xargs mkdir 2>/dev/null; ls -d x* | wc -l"],
                         timeout=120)
        made = int(out["stdout"])
        assert made == (ATTACK_CGROUPS if v1 else TREE_LIMIT - 2), out  # v2: init is one

        probe = Probe(sandboxd, sandbox["id"])
        probe.start()
        try:
            echo: dict = {}

            def other_echo():
                time.sleep(0.05)  # once the inspect below is under way
                t0 = time.monotonic()
                echo.update(client.run(sandbox["id"], ["echo", "hi"]))
                echo["took"] = time.monotonic() - t0

            echoer = threading.Thread(target=other_echo)
            echoer.start()
            t0 = time.monotonic()
            facts = client.inspect(sid)
            took = time.monotonic() - t0
            echoer.join(30)
            t0 = time.monotonic()
            client.destroy(sid, purge=True)
            destroy_took = time.monotonic() - t0
        finally:
            worst = probe.finish()
        print(f"\ninspect {took:.2f}s, destroy {destroy_took:.2f}s, others: slowest GET "
              f"{worst * 1000:.0f} ms over {probe.count}, echo {echo.get('took', 0) * 1000:.0f} ms")
        assert took < INSPECT_BOUND
        assert len(facts["cgroups"]) <= TREE_LIMIT
        assert ("cgroups" in facts["truncated"]) == v1
        assert facts["cgroups"][0]["path"] == "/"
        assert any(p["host_pid"] == facts["init_pid"] for p in facts["processes"])
        assert worst < OTHERS_BOUND
        assert echo["stdout"] == "hi\n" and echo["took"] < OTHERS_ECHO_BOUND
        assert cgroup_dirs(sandboxd, sid) == []
    finally:
        try:
            client.destroy(sid, purge=True)
        except Exception as e:  # noqa: BLE001 - destroyed above unless the test failed first
            if getattr(e, "status", None) != 404:
                raise


# ---------------------------------------------------------------- attach frames

BAD_RESIZES = [b"", b"not json", b"\xff\xfe", b"[]", b"null", b"24", b'"24x80"',
               b'{"rows": "24", "cols": 80}', b'{"rows": 24}', b'{"rows": true, "cols": 80}',
               b'{"rows": 24.5, "cols": 80}', b'{"rows": 1e400, "cols": 80}',
               b'{"rows": 99999999999999999999999999, "cols": 80}',
               b'{"rows": -1, "cols": 80}', b'{"rows": 24, "cols": [80]}',
               b"[" * 50_000, b'{"rows": 24, "cols": 80, "x": "' + b"A" * 100_000 + b'"}']
BAD_SIGNALS = [b"", b"garbage", b"\xff", b"[]", b"{}", b'{"signal": 9}', b'{"signal": null}',
               b'{"signal": "NOPE"}', b'{"signal": ["INT"]}', b'{"signal": {"a": 1}}',
               b'{"signal": "' + b"A" * 100_000 + b'"}', b"{" * 50_000]


class Reader(threading.Thread):
    def __init__(self, stream):
        super().__init__(daemon=True)
        self.stream, self.frames = stream, queue.Queue()

    def run(self) -> None:
        try:
            while True:
                self.frames.put(self.stream.recv())
        except StreamClosed as e:
            self.frames.put(("closed", e.code))

    def until(self, pattern: bytes, timeout: float = 10) -> tuple[bytes, int]:
        """Output up to `pattern` and how many daemon notices (stderr frames) came."""
        out, notices = b"", 0
        deadline = time.monotonic() + timeout
        while not re.search(pattern, out):
            channel, data = self.frames.get(timeout=max(0.01, deadline - time.monotonic()))
            assert channel != "closed", f"the stream was closed ({data}) after {out!r}"
            if channel == Channel.STDOUT:
                out += data
            elif channel == Channel.STDERR:
                notices += 1
        return out, notices


def test_malformed_resize_and_signal_frames_leave_the_session_usable(sandboxd, client, sandbox):
    session = client.exec(sandbox["id"], ["/bin/sh"], tty=True, rows=24, cols=80)
    log_from = sandboxd.log.stat().st_size
    with client.attach(session["id"]) as stream:
        reader = Reader(stream)
        reader.start()
        for payload in BAD_RESIZES:
            assert stream.send(Channel.RESIZE, payload)
        for payload in BAD_SIGNALS:
            assert stream.send(Channel.SIGNAL, payload)
        # Still one stream, one shell: a good resize and a command after the garbage.
        assert stream.send_json(Channel.RESIZE, {"rows": 31, "cols": 101})
        assert stream.send(Channel.STDIN, b"stty size; echo ok-$((6*7))\n")
        out, notices = reader.until(rb"ok-42")
        assert b"31 101" in out
        # Each bad frame got its own clear refusal (nslab: ... on stderr).
        assert notices == len(BAD_RESIZES) + len(BAD_SIGNALS)
    log = sandboxd.log.read_bytes()[log_from:]
    assert b"Traceback" not in log and b"Error handling request" not in log, log[-3000:]
    assert client.exec_info(session["id"])["exit_code"] is None
    client.forget_exec(session["id"])
