"""Idle stop (webapp/sandboxes/idle.py) with a real sandboxd and a short timeout: the page is warned,
then the sandbox stops; activity postpones it; opening the lab again brings it back with
/root kept."""

from __future__ import annotations

import shutil
import time

import pytest
from sqlalchemy import event

from webapp_helpers import login, make_course, make_user
from webapp.models import Role

pytestmark = pytest.mark.privileged
NS = "/terminal"
TIMEOUT, WARNING = 4.0, 3.0


@pytest.fixture
def idle_app(tmp_path, webapp_schema, sandboxd, client):
    from webapp import create_app
    from webapp.config import TestConfig
    from webapp.extensions import db

    shutil.copy(webapp_schema, tmp_path / "nslab.db")
    app = create_app(TestConfig(tmp_path, NSLAB_SOCKET=str(sandboxd.socket),
                                LABS_DIR=str(tmp_path / "labs"), IDLE_SWEEPER=True,
                                IDLE_TIMEOUT=TIMEOUT, IDLE_WARNING=WARNING,
                                IDLE_SWEEP_INTERVAL=0.1, IDLE_PERSIST_INTERVAL=1.0))
    make_user(app, "teach", Role.INSTRUCTOR)
    make_user(app, "ida", Role.LEARNER)
    course, _ = make_course(app, "teach", labs=("intro",), learners=("ida",))
    app.config["TEST_COURSE"] = course
    before = {b["id"] for b in client.list()}
    yield app
    app.extensions["nslab.idle"].stop()
    for b in client.list():
        if b["id"] not in before:
            client.destroy(b["id"], purge=True)
    with app.app_context():
        db.engine.dispose()


class Page:
    """A signed-in lab page: Flask test client + socket.io test client on /terminal."""

    def __init__(self, app, name):
        from webapp.extensions import socketio

        self.web = app.test_client()
        assert login(self.web, name).status_code in (302, 303)  # the sweeper starts here
        self.sio = socketio.test_client(app, namespace=NS, flask_test_client=self.web)
        self.events: list[dict] = []
        self.out = bytearray()
        self.seq = 0

    def pump(self):
        q = self.sio.queue
        items = q[:len(q)]
        del q[:len(items)]
        for item in items:
            if item["name"] == "output":
                eid, data = item["args"]
                self.out += data
                self.sio.emit("ack", {"exec_id": eid, "bytes": len(data)}, namespace=NS)
            else:
                self.events.append({"name": item["name"], "at": time.monotonic(),
                                    **item["args"][0]})

    def wait(self, pred, what, timeout=15):
        deadline = time.monotonic() + timeout
        while not (got := pred()):
            assert time.monotonic() < deadline, f"timed out waiting for {what}: {self.events}"
            time.sleep(0.02)
            self.pump()
        return got

    def event(self, name, since=0.0, **match):
        return next((e for e in self.events if e["name"] == name and e["at"] >= since
                     and all(e.get(k) == v for k, v in match.items())), None)

    def open(self, course) -> dict:
        tag = f"t{time.monotonic_ns()}"
        self.sio.emit("open", {"course": course, "lab": "intro", "rows": 24, "cols": 80,
                               "tag": tag}, namespace=NS)
        e = self.wait(lambda: next((e for e in self.events if e.get("tag") == tag), None), "open")
        assert e["name"] == "opened", e
        self.seq = 0
        return e

    def type(self, eid, text):
        self.sio.emit("input", eid, self.seq, text, namespace=NS)
        self.seq += 1


def assignment(app, course):
    from webapp.extensions import db
    from webapp.models import SandboxAssignment

    with app.app_context():
        a = db.session.execute(db.select(SandboxAssignment).filter_by(
            course_id=course, lab_id="intro")).scalar_one()
        db.session.expunge(a)
        return a


def test_idle_sandbox_is_warned_then_stopped_and_comes_back(idle_app, client):
    from webapp.models import SandboxState

    course = idle_app.config["TEST_COURSE"]
    page = Page(idle_app, "ida")
    opened = page.open(course)
    sid, eid = opened["sandbox_id"], opened["exec_id"]
    client.run(sid, ["sh", "-c", "echo kept > /root/notes"])  # the host's doing: not activity
    t0 = time.monotonic()

    warned = page.wait(lambda: page.event("idle", sandbox_id=sid), "the idle warning")
    assert 0 < warned["seconds_left"] <= WARNING + 0.5, warned
    assert warned["at"] - t0 >= TIMEOUT - WARNING - 0.5
    assert client.get(sid)["state"] == "running"

    stopped = page.wait(lambda: page.event("stopped", sandbox_id=sid), "the idle stop")
    assert stopped["reason"] == "idle" and stopped["idle_seconds"] >= TIMEOUT
    assert stopped["at"] - t0 >= TIMEOUT - 0.5
    page.wait(lambda: page.event("exit", exec_id=eid), "the shell's end")
    page.wait(lambda: client.get(sid)["state"] == "stopped", "the daemon's stop")
    page.wait(lambda: assignment(idle_app, course).state == SandboxState.STOPPED,
              "the assignment's state")

    # Opening the lab again starts the same sandbox, /root as it was.
    again = page.open(course)
    assert again["sandbox_id"] == sid and again["exec_id"] != eid
    assert client.get(sid)["state"] == "running"
    assert assignment(idle_app, course).state == SandboxState.RUNNING
    assert client.run(sid, ["cat", "/root/notes"])["stdout"] == "kept\n"


def test_activity_postpones_the_stop(idle_app, client):
    from webapp import sandboxes
    from webapp.extensions import db

    course = idle_app.config["TEST_COURSE"]
    page = Page(idle_app, "ida")
    opened = page.open(course)
    sid, eid = opened["sandbox_id"], opened["exec_id"]
    updates = []

    def count(conn, cursor, statement, *args):
        if statement.startswith("UPDATE sandbox_assignments"):
            updates.append(time.monotonic())

    with idle_app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        # Typing now and then for longer than the timeout: no stop. Keystrokes are noted
        # in memory; the database hears of them at most once per IDLE_PERSIST_INTERVAL.
        start = time.monotonic()
        n = 0
        while time.monotonic() - start < TIMEOUT + 2:
            page.type(eid, ":")
            n += 1
            time.sleep(0.1)
            page.pump()
        assert not page.event("stopped"), page.events
        assert client.get(sid)["state"] == "running"
        assert n > 40 and 1 <= len(updates) <= (TIMEOUT + 2) / 1.0 + 2, (n, updates)
    finally:
        event.remove(engine, "before_cursor_execute", count)
    stamp = assignment(idle_app, course).last_active.timestamp()
    assert time.time() - stamp < 2.5, "last_active was not written while typing"

    # Warned, then a key: the warning is taken back (idle with seconds_left null).
    mark = time.monotonic()
    page.wait(lambda: page.event("idle", since=mark, sandbox_id=sid), "the warning")
    page.type(eid, "\r")
    page.wait(lambda: page.event("idle", since=mark, seconds_left=None), "the all-clear")
    # Warned again, then "keep working" from the page (no keystroke).
    mark = time.monotonic()
    page.wait(lambda: page.event("idle", since=mark, sandbox_id=sid), "the second warning")
    page.sio.emit("touch", {"sandbox_id": sid}, namespace=NS)
    page.wait(lambda: page.event("idle", since=mark, seconds_left=None), "the second all-clear")
    # Warned a third time, then a check touches it (sandboxes.touch, for the grader).
    mark = time.monotonic()
    page.wait(lambda: page.event("idle", since=mark, sandbox_id=sid), "the third warning")
    with idle_app.app_context():
        a = assignment(idle_app, course)
        assert sandboxes.touch(a.user_id, course, "intro") is True
        db.session.commit()
        assert sandboxes.touch(a.user_id, course, "nope") is False
    page.wait(lambda: page.event("idle", since=mark, seconds_left=None), "the third all-clear")
    assert not page.event("stopped")
    assert client.get(sid)["state"] == "running"
    # Left alone at last, it stops.
    page.wait(lambda: page.event("stopped", sandbox_id=sid), "the stop", timeout=TIMEOUT + 5)
    page.wait(lambda: client.get(sid)["state"] == "stopped", "the daemon's stop")


def test_the_sweeper_is_off_unless_asked(tmp_path, webapp_schema):
    from webapp import create_app
    from webapp.config import Config, TestConfig
    from webapp.extensions import db

    shutil.copy(webapp_schema, tmp_path / "nslab.db")
    app = create_app(TestConfig(tmp_path))
    try:
        app.test_client().get("/login")
        assert not app.extensions["nslab.idle"].running
    finally:
        with app.app_context():
            db.engine.dispose()
    # The environment sets the served app's timeout and warning, in minutes.
    c = Config({"NSLAB_IDLE_MINUTES": "45", "NSLAB_IDLE_WARNING_MINUTES": "2.5"})
    assert (c.IDLE_TIMEOUT, c.IDLE_WARNING, c.IDLE_SWEEPER) == (2700.0, 150.0, True)
    d = Config({})
    assert (d.IDLE_TIMEOUT, d.IDLE_WARNING) == (1800.0, 300.0)
    assert Config({"NSLAB_IDLE_MINUTES": "0"}).IDLE_TIMEOUT == 0
    for bad in ("soon", "-1", "nan", "1e9"):
        with pytest.raises(ValueError, match="NSLAB_IDLE_MINUTES"):
            Config({"NSLAB_IDLE_MINUTES": bad})


def test_a_kernel_at_work_postpones_the_stop(idle_app, client):
    """A notebook kernel running a long cell that prints (no keystroke, no page event: the
    web app hears nothing) is activity: sandboxd's kernel facts say when it last relayed a
    message, and the sweeper asks for them when a sandbox nears its timeout. Left alone
    afterwards, the sandbox stops (the heartbeat is not activity)."""
    import asyncio
    import threading

    from nslab.kernels.runner import connect, disconnect, execute

    course = idle_app.config["TEST_COURSE"]
    page = Page(idle_app, "ida")
    sid = page.open(course)["sandbox_id"]
    done = threading.Event()

    def work():
        async def run():
            km, kc = await connect(client, sid)
            try:
                await execute(kc, "import time\nfor i in range(16):\n"
                                  "    print(i, flush=True); time.sleep(0.5)", timeout=30)
            finally:
                disconnect(km, kc)
        try:
            asyncio.run(run())
        finally:
            done.set()

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    while not done.is_set():  # 8 s of output, twice the timeout
        page.pump()
        assert not page.event("stopped"), page.events
        time.sleep(0.1)
    worker.join(5)
    assert client.get(sid)["state"] == "running"
    assert time.time() - client.kernel(sid)["last_activity"] < 2
    page.wait(lambda: page.event("stopped", sandbox_id=sid), "the stop", timeout=TIMEOUT + 5)
