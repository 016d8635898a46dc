"""The live terminal: Flask-SocketIO's test client ⇄ webapp.terminal ⇄ a real sandboxd.

A minimal app (Flask + SocketIO in threading mode + register_terminal) stands in for the
web app; the user comes from the connection's query string, so a test picks who it is.
"""

from __future__ import annotations

import re
import time
from collections import defaultdict

import pytest
from flask import Flask, request
from flask_socketio import SocketIO

from sandbox.sessions import PACE_BURST, PACE_RATE
from webapp.terminal import CHUNK, NAMESPACE, WINDOW, register_terminal

pytestmark = pytest.mark.privileged

PROMPT = "nslab-test# "  # PS1 'nslab-test\$ ' as root: the typed line never matches it


def allowed(user, sandbox_id, mode):
    return user == "alice" or (user == "instructor" and mode == "read")


@pytest.fixture(scope="module")
def app(sandboxd, box):
    """A Flask app serving /terminal against the test sandboxd; lab "intro" of course 1
    is the module's sandbox."""
    flask_app = Flask(__name__)
    flask_app.config["TESTING"] = True
    sio = SocketIO(flask_app, async_mode="threading")

    def find_sandbox(user, course, lab):
        return box["id"] if (course, lab) == ("1", "intro") else None

    ns = register_terminal(sio, get_client=sandboxd.client, authorize=allowed,
                           get_user=lambda: request.args.get("user"),
                           find_sandbox=find_sandbox)
    flask_app.extensions["nslab_terminal"] = ns
    flask_app.extensions["test_socketio"] = sio
    return flask_app


class Page:
    """One browser connection to /terminal, collecting output per exec id."""

    def __init__(self, app, user="alice"):
        sio = app.extensions["test_socketio"]
        self.tc = sio.test_client(app, namespace=NAMESPACE, query_string=f"user={user}")
        self.out: dict[str, bytearray] = defaultdict(bytearray)
        self.events: list[dict] = []
        self.seq: dict[str, int] = {}
        self.unacked: dict[str, int] = defaultdict(int)
        self.opened_at: dict[str, int] = {}

    def pump(self, ack=True) -> None:
        # Take what the relay threads have queued so far; they keep appending meanwhile.
        # (get_received() rebuilds the list and can lose an event appended concurrently.)
        q = self.tc.queue
        n = len(q)
        items = q[:n]
        del q[:n]
        for item in items:
            if item["name"] == "output":
                eid, data = item["args"]
                self.out[eid] += data
                self.unacked[eid] += len(data)
            else:
                e = {"name": item["name"], **item["args"][0]}
                if e["name"] == "opened":  # where the page would clear its screen
                    self.opened_at[e["exec_id"]] = len(self.out[e["exec_id"]])
                self.events.append(e)
        if ack:
            for eid in list(self.unacked):
                self.ack(eid)

    def ack(self, eid):
        if self.unacked[eid]:
            self.tc.emit("ack", {"exec_id": eid, "bytes": self.unacked[eid]}, namespace=NAMESPACE)
            self.unacked[eid] = 0

    def wait(self, pred, timeout=10.0, ack=True, what="condition"):
        deadline = time.monotonic() + timeout
        while True:
            self.pump(ack)
            got = pred()
            if got:
                return got
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; events {self.events[-5:]}")
            time.sleep(0.005)

    def event(self, name, **match):
        for e in self.events:
            if e["name"] == name and all(e.get(k) == v for k, v in match.items()):
                return e
        return None

    def open(self, sandbox_id, **kw) -> dict:
        tag = f"t{len(self.events)}-{time.monotonic_ns()}"
        self.tc.emit("open", {"sandbox_id": sandbox_id, "rows": kw.pop("rows", 24),
                              "cols": kw.pop("cols", 80), "tag": tag, **kw}, namespace=NAMESPACE)
        e = self.wait(lambda: self.event("opened", tag=tag) or self.event("error", tag=tag),
                      what="opened")
        if e["name"] == "opened":
            self.seq[e["exec_id"]] = 0
        return e

    def type(self, eid, text: str) -> None:
        """As the page sends keystrokes: text (the server encodes it as UTF-8)."""
        self.tc.emit("input", eid, self.seq[eid], text, namespace=NAMESPACE)
        self.seq[eid] += 1

    def text(self, eid, start=0) -> str:
        return self.out[eid][start:].decode(errors="replace")

    def shell(self, sandbox_id, **kw) -> str:
        """Open a terminal and wait for a known prompt."""
        e = self.open(sandbox_id, **kw)
        assert e["name"] == "opened", e
        eid = e["exec_id"]
        self.type(eid, "PS1='nslab-test\\$ '\r")
        self.wait(lambda: PROMPT in self.text(eid), what="the prompt")
        return eid

    def close(self):
        self.tc.disconnect(namespace=NAMESPACE)


@pytest.fixture
def page(app):
    """A connected page as the learner; disconnected afterwards."""
    p = Page(app)
    yield p
    if p.tc.is_connected(NAMESPACE):
        p.close()


def relay_stats(app, eid):
    return next(s for s in app.extensions["nslab_terminal"].stats() if s["exec_id"] == eid)


def test_hostname_and_exit(app, page, box):
    eid = page.shell(box["id"])
    mark = len(page.out[eid])
    page.type(eid, "hostname\r")
    page.wait(lambda: box["hostname"] in page.text(eid, mark), what="the hostname")
    page.type(eid, "exit 3\r")
    e = page.wait(lambda: page.event("exit", exec_id=eid), what="exit")
    assert e["exit_code"] == 3
    assert not [s for s in app.extensions["nslab_terminal"].stats() if s["exec_id"] == eid]


def test_input_order_utf8_and_bytes(page, box):
    # socket.io handles each event in its own thread: the seq numbers restore the order.
    eid = page.shell(box["id"])
    seq = page.seq[eid]
    page.tc.emit("input", eid, seq + 1, "b-ordered\r", namespace=NAMESPACE)
    page.tc.emit("input", eid, seq, "echo a-", namespace=NAMESPACE)
    page.seq[eid] = seq + 2
    page.wait(lambda: re.search(r"[\r\n]a-b-ordered", page.text(eid)), what="a-b-ordered")
    # Text goes to the PTY as UTF-8; raw bytes and "binary" text (a char per byte) as is.
    mark = len(page.out[eid])
    page.type(eid, "printf '%s' 'ü€' | od -An -tx1\r")
    page.wait(lambda: "c3 bc e2 82 ac" in page.text(eid, mark), what="UTF-8 bytes")
    mark = len(page.out[eid])
    page.tc.emit("input", eid, page.seq[eid], b"echo raw-\xc3\xa9\r", namespace=NAMESPACE)
    page.tc.emit("input", eid, page.seq[eid] + 1, "echo bin-\xc3\xa9\r", True,
                 namespace=NAMESPACE)
    page.seq[eid] += 2
    page.wait(lambda: "raw-é" in page.text(eid, mark) and "bin-é" in page.text(eid, mark),
              what="raw and binary input")


def test_yes_then_ctrl_c_and_no_ack_stays_bounded(app, page, box):
    eid = page.shell(box["id"])
    page.type(eid, "yes\r")
    t0 = time.monotonic()
    page.wait(lambda: time.monotonic() - t0 > 1.0, what="1 s of yes")
    flowed = len(page.out[eid])
    assert flowed > 4 * WINDOW, f"only {flowed} bytes of `yes` in 1 s with acks"

    mark = len(page.out[eid])
    page.type(eid, "\x03")
    t_int = time.monotonic()
    page.wait(lambda: PROMPT in page.text(eid, mark), timeout=5, what="the prompt after ^C")
    took = time.monotonic() - t_int
    assert took < 0.5, f"prompt came back {took:.3f} s after ^C"
    print(f"\nyes through the relay: {flowed / 1e6:.1f} MB in 1 s with acks; "
          f"prompt {took * 1e3:.0f} ms after ^C")

    # A page that never acks: the relay stops at the window and the shell is paused.
    page.pump()
    page.type(eid, "yes\r")
    start = len(page.out[eid])
    t0 = time.monotonic()
    while time.monotonic() - t0 < 1.0:
        page.pump(ack=False)
        time.sleep(0.01)
    got = len(page.out[eid]) - start
    stats = relay_stats(app, eid)
    assert got <= WINDOW + CHUNK, f"{got} bytes reached a page that acked nothing"
    assert stats["unacked"] <= WINDOW + CHUNK and stats["held"] <= 1 << 20, stats
    time.sleep(0.3)
    page.pump(ack=False)
    assert len(page.out[eid]) - start == got, "output kept coming without acks"
    print(f"no acks: {got} bytes reached the page, relay {stats}")

    # Ack again: output flows, ^C brings the prompt back.
    page.type(eid, "\x03")
    mark = len(page.out[eid])
    page.wait(lambda: PROMPT in page.text(eid, mark), what="the prompt after acking")


def test_a_flood_is_paced_and_ctrl_c_still_stops_it(page, box):
    # Past its first PACE_BURST bytes, a terminal's output is read at PACE_RATE at most,
    # so one learner's `yes` cannot take the machine from the others (sandbox/sessions.py).
    eid = page.shell(box["id"])
    page.type(eid, "yes\r")
    page.wait(lambda: len(page.out[eid]) > 2 * PACE_BURST, what="the burst")
    n0, t0 = len(page.out[eid]), time.monotonic()
    page.wait(lambda: time.monotonic() - t0 > 1.5, what="1.5 s of yes")
    rate = (len(page.out[eid]) - n0) / (time.monotonic() - t0)
    mark = len(page.out[eid])
    page.type(eid, "\x03")
    t_int = time.monotonic()
    page.wait(lambda: PROMPT in page.text(eid, mark), timeout=5, what="the prompt after ^C")
    took = time.monotonic() - t_int
    print(f"\npaced yes: {rate / 1e6:.2f} MB/s; prompt {took * 1e3:.0f} ms after ^C")
    assert PACE_RATE / 4 < rate < 1.3 * PACE_RATE, f"{rate:.0f} bytes/s"
    assert took < 0.5, f"prompt came back {took:.3f} s after ^C"


def test_keystrokes_and_acks_go_without_a_flask_request_context(app, page, box, monkeypatch):
    # The hot events skip Flask-SocketIO's context push (and its session cookie decoding);
    # the others still get it.
    eid = page.shell(box["id"])
    pushed = []
    push = app.request_context
    monkeypatch.setattr(app, "request_context", lambda environ: pushed.append(1) or push(environ))
    mark = len(page.out[eid])
    page.type(eid, "echo bare-$((3*4))\r")
    page.wait(lambda: "bare-12" in page.text(eid, mark), what="the echo")
    page.pump()  # and its ack
    assert not pushed, "a keystroke or an ack pushed a request context"
    page.tc.emit("resize", {"exec_id": eid, "rows": 30, "cols": 90}, namespace=NAMESPACE)
    assert pushed, "resize went without Flask's context"


def test_reconnect_reattaches_to_the_same_shell(app, box):
    first = Page(app)
    eid = first.shell(box["id"])
    first.type(eid, "echo PID=$$ before-reconnect\r")
    first.wait(lambda: re.search(r"PID=(\d+) before", first.text(eid)), what="pid")
    pid = re.search(r"PID=(\d+) before", first.text(eid)).group(1)
    first.close()

    again = Page(app)
    e = again.open(box["id"], exec_id=eid)
    assert e["name"] == "opened" and e["exec_id"] == eid and e["reattached"], e
    again.seq[eid] = 0
    again.wait(lambda: f"PID={pid} before-reconnect" in again.text(eid), what="the scrollback")
    mark = len(again.out[eid])
    again.type(eid, "echo PID=$$ after\r")
    m = again.wait(lambda: re.search(r"PID=(\d+) after", again.text(eid, mark)), what="pid again")
    assert m.group(1) == pid, "reconnecting started a new shell"
    again.close()


def test_unauthorized_open_is_refused(app, box):
    stranger = Page(app, user="mallory")
    before = app.extensions["nslab_terminal"].stats()
    e = stranger.open(box["id"])
    assert e["name"] == "error" and "may not" in e["message"], e
    assert not stranger.event("opened")
    assert app.extensions["nslab_terminal"].stats() == before
    # An instructor may watch but not open a shell of their own.
    instructor = Page(app, user="instructor")
    e = instructor.open(box["id"])
    assert e["name"] == "error", e
    stranger.close()
    instructor.close()


def test_readonly_viewer_sees_output_and_cannot_type(app, page, box):
    eid = page.shell(box["id"])
    watcher = Page(app, user="instructor")
    e = watcher.open(box["id"], readonly=True)  # no exec id: the sandbox's latest shell
    assert e["name"] == "opened" and e["exec_id"] == eid and e["readonly"], e
    assert watcher.open(box["id"], readonly=True, exec_id=eid)["name"] == "opened"
    watcher.seq[eid] = 0

    page.type(eid, "echo seen-by-$((6*7))\r")
    watcher.wait(lambda: "seen-by-42" in watcher.text(eid), what="the learner's output")
    watcher.type(eid, "echo typed-by-$((6*8))\r")
    page.type(eid, "echo learner-$((1+1))\r")
    page.wait(lambda: "learner-2" in page.text(eid), what="the learner's echo")
    time.sleep(0.2)
    page.pump()
    # (not a bare "48": the prompt's hex hostname may hold it)
    assert "typed-by" not in page.text(eid), "a read-only viewer's typing reached the shell"

    # A watcher that acks nothing never pauses the learner (3 MB > the daemon's drop limit).
    watcher.pump(ack=False)
    mark = len(page.out[eid])
    page.type(eid, "head -c 3000000 /dev/zero | tr '\\0' a; echo; echo big-$((2*5))\r")
    page.wait(lambda: "big-10" in page.text(eid, mark), timeout=15, what="the learner's output")
    assert len(page.out[eid]) - mark > 3_000_000
    # The daemon dropped the watcher; once it acks again it is attached anew, from a
    # clean screen ('opened' again) with the scrollback.
    watcher.pump(ack=False)
    assert len(watcher.out[eid]) < 1 << 20
    opened = sum(e["name"] == "opened" for e in watcher.events)
    watcher.wait(lambda: sum(e["name"] == "opened" for e in watcher.events) > opened,
                 what="the watcher's resync")
    watcher.wait(lambda: "big-10" in watcher.text(eid, watcher.opened_at[eid]),
                 what="the scrollback")
    watcher.close()


def test_resize_reaches_the_pty(page, box):
    eid = page.shell(box["id"], rows=30, cols=100)
    mark = len(page.out[eid])
    page.type(eid, "stty size\r")
    page.wait(lambda: "30 100" in page.text(eid, mark), what="stty size 30 100")
    page.tc.emit("resize", {"exec_id": eid, "rows": 40, "cols": 120}, namespace=NAMESPACE)
    mark = len(page.out[eid])
    page.type(eid, "stty size\r")
    page.wait(lambda: "40 120" in page.text(eid, mark), what="stty size 40 120")


def test_several_terminals_on_one_connection(page, box):
    a = page.shell(box["id"])
    b = page.shell(box["id"])
    assert a != b
    page.type(a, "echo in-$((10+1))\r")
    page.type(b, "echo in-$((20+2))\r")
    page.wait(lambda: "in-11" in page.text(a) and "in-22" in page.text(b), what="both")
    assert "in-22" not in page.text(a) and "in-11" not in page.text(b)
    page.tc.emit("close", {"exec_id": b, "kill": True}, namespace=NAMESPACE)
    page.type(a, "echo still-$((1+2))\r")
    page.wait(lambda: "still-3" in page.text(a), what="the other tab goes on")


def test_open_by_course_and_lab(page, box):
    e = page.open(None, course="1", lab="intro")
    assert e["name"] == "opened" and e["sandbox_id"] == box["id"], e
    e = page.open(None, course="1", lab="nope")
    assert e["name"] == "error" and "no sandbox" in e["message"], e


def test_keys_typed_before_a_new_shell_starts_reach_it_once(page, box):
    """Keys sent the moment a new shell's terminal opens, before bash has started: the
    relay holds them until the shell's first output (its prompt), so they reach it whole
    and in order, echoed once by its line editor (not first by the terminal in cooked
    mode, before the prompt)."""
    e = page.open(box["id"])
    assert e["name"] == "opened", e
    eid = e["exec_id"]
    page.type(eid, "echo typed-")
    page.type(eid, "ahead-$((5*5))\r")
    page.wait(lambda: re.search(r"[\r\n]typed-ahead-25\r\n", page.text(eid)),
              what="typed-ahead-25")
    text = page.text(eid)
    assert text.count("echo typed-ahead-$((5*5))") == 1, text
    assert re.search(r"# echo typed-ahead-\$\(\(5\*5\)\)\r\n", text), text  # after the prompt
