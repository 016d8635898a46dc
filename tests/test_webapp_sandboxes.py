"""The whole path: a signed-in learner opens a lab's terminal; the web app gets their
sandbox from a real sandboxd (made on first open, reused after) and relays the shell."""

from __future__ import annotations

import re
import shutil
import threading
import time

import pytest

from conftest import ROOT
from webapp_helpers import login, make_course, make_user
from webapp.models import Role

pytestmark = pytest.mark.privileged
NS = "/terminal"


@pytest.fixture
def lab_app(tmp_path, webapp_schema, sandboxd):
    """The web app wired to the session's real sandboxd."""
    from webapp import create_app
    from webapp.config import TestConfig
    from webapp.extensions import db

    shutil.copy(webapp_schema, tmp_path / "nslab.db")
    app = create_app(TestConfig(tmp_path, NSLAB_SOCKET=str(sandboxd.socket),
                                LABS_DIR=str(tmp_path / "labs")))
    yield app
    with app.app_context():
        db.engine.dispose()


class Browser:
    """A signed-in browser: a Flask test client plus a socket.io test client on /terminal."""

    def __init__(self, app, name: str):
        from webapp.extensions import socketio

        self.web = app.test_client()
        assert login(self.web, name).status_code in (302, 303)
        self.sio = socketio.test_client(app, namespace=NS, flask_test_client=self.web)
        self.out = bytearray()
        self.events = []

    def pump(self):
        # Take what the relay threads queued so far (get_received() can lose an event
        # appended while it rebuilds the list).
        q = self.sio.queue
        items = q[:len(q)]
        del q[:len(items)]
        for item in items:
            if item["name"] == "output":
                eid, data = item["args"]
                self.out += data
                self.sio.emit("ack", {"exec_id": eid, "bytes": len(data)}, namespace=NS)
            else:
                self.events.append({"name": item["name"], **item["args"][0]})

    def wait(self, pred, what, timeout=15):
        deadline = time.monotonic() + timeout
        while not (got := pred()):
            assert time.monotonic() < deadline, \
                f"timed out waiting for {what}: {self.events}, output {bytes(self.out[-300:])!r}"
            time.sleep(0.01)
            self.pump()
        return got

    def open(self, **data) -> dict:
        tag = f"t{time.monotonic_ns()}"
        self.sio.emit("open", {"rows": 24, "cols": 80, "tag": tag, **data}, namespace=NS)
        return self.wait(lambda: next((e for e in self.events if e.get("tag") == tag
                                       and e["name"] in ("opened", "error")), None), "open")

    def type(self, eid: str, seq: int, text: str) -> None:
        self.sio.emit("input", eid, seq, text, namespace=NS)


def test_learner_gets_their_own_sandbox_and_others_cannot_touch_it(lab_app, client):
    for name, role in (("teach", Role.INSTRUCTOR), ("other", Role.INSTRUCTOR),
                       ("alice", Role.LEARNER), ("bob", Role.LEARNER)):
        make_user(lab_app, name, role)
    course, _ = make_course(lab_app, "teach", labs=("intro",), learners=("alice", "bob"))
    make_course(lab_app, "other", labs=("intro",))

    alice = Browser(lab_app, "alice")
    opened = alice.open(course=course, lab="intro")
    assert opened["name"] == "opened", opened
    eid, sid = opened["exec_id"], opened.get("sandbox_id")
    alice.type(eid, 0, "hostname\r")
    hostname = alice.wait(lambda: re.search(rb"[\r\n](sb-[0-9a-f]{8})\r\n", alice.out),
                          "hostname").group(1).decode()
    boxes = [b for b in client.list() if b["hostname"] == hostname]
    assert len(boxes) == 1 and boxes[0]["labels"]["user"] == "alice"
    sid = sid or boxes[0]["id"]

    # Opening the lab again reuses the sandbox (no second one).
    again = alice.open(course=course, lab="intro")
    assert again["name"] == "opened"
    assert [b["id"] for b in client.list() if b["labels"].get("user") == "alice"] == [sid]

    # Another learner, and the instructor of another course, cannot attach to it at all;
    # the course's instructor may watch (read-only) but not type.
    bob = Browser(lab_app, "bob")
    assert bob.open(sandbox_id=sid)["name"] == "error"
    assert bob.open(sandbox_id=sid, readonly=True)["name"] == "error"
    other = Browser(lab_app, "other")
    assert other.open(sandbox_id=sid, readonly=True)["name"] == "error"
    teach = Browser(lab_app, "teach")
    assert teach.open(sandbox_id=sid)["name"] == "error"
    assert teach.open(sandbox_id=sid, exec_id=eid, readonly=True)["name"] == "opened"
    # Bob's own lab gets Bob's own sandbox.
    assert bob.open(course=course, lab="intro")["name"] == "opened"
    mine = {b["labels"].get("user"): b["id"] for b in client.list() if b["labels"].get("lab")}
    assert mine["bob"] != mine["alice"]
    # A lab the course does not have, or a course one is not in, opens nothing.
    assert alice.open(course=course, lab="nope")["name"] == "error"
    assert bob.open(course=course + 1, lab="intro")["name"] == "error"
    for sbid in mine.values():
        client.destroy(sbid, purge=True)


def test_reset_gives_a_fresh_sandbox_and_keeps_the_home(lab_app, client):
    make_user(lab_app, "teach", Role.INSTRUCTOR)
    make_user(lab_app, "carol", Role.LEARNER)
    course, _ = make_course(lab_app, "teach", labs=("intro",), learners=("carol",))
    carol = Browser(lab_app, "carol")
    first = carol.open(course=course, lab="intro")["sandbox_id"]
    client.run(first, ["sh", "-c", "echo kept > /root/notes; echo lost > /etc/scratch"])
    page = carol.web.get(f"/courses/{course}/labs/intro")
    assert b"data-confirm=" in page.data and b"Reset sandbox" in page.data
    r = carol.web.post(f"/courses/{course}/labs/intro/reset")
    assert r.status_code == 302
    ids = [b["id"] for b in client.list()]
    assert first not in ids, "reset destroyed the old sandbox"
    second = carol.open(course=course, lab="intro")["sandbox_id"]
    assert second != first
    out = client.run(second, ["sh", "-c", "cat /root/notes; ls /etc/scratch 2>&1"])["stdout"]
    assert out.startswith("kept\n") and "No such file" in out
    client.destroy(second, purge=True)
    # Nobody else can reset it: another course's lab, or anonymous.
    anon = lab_app.test_client().post(f"/courses/{course}/labs/intro/reset")
    assert anon.status_code in (302, 401) and "/login" in anon.headers.get("Location", "")


def test_daemon_down_is_said_plainly_and_retryable(tmp_path, webapp_schema):
    from webapp import create_app
    from webapp.config import TestConfig
    from webapp.extensions import db

    shutil.copy(webapp_schema, tmp_path / "nslab.db")
    app = create_app(TestConfig(tmp_path, NSLAB_SOCKET=str(tmp_path / "no-daemon.sock"),
                                LABS_DIR=str(tmp_path / "labs")))
    try:
        make_user(app, "teach", Role.INSTRUCTOR)
        make_user(app, "dave", Role.LEARNER)
        course, _ = make_course(app, "teach", labs=("intro",), learners=("dave",))
        e = Browser(app, "dave").open(course=course, lab="intro")
        assert e["name"] == "error" and e.get("retry") is True, e
        assert "cannot reach sandboxd" in e["message"], e["message"]
    finally:
        with app.app_context():
            db.engine.dispose()


def test_parallel_first_opens_of_a_lab_all_get_its_one_sandbox(lab_app, client, tmp_path):
    """One learner opens a lab four times at once on a brand-new database (four tabs, say):
    every open gets the same sandbox, and the daemon is asked to make exactly one (its
    lab setup run once)."""
    from webapp.extensions import db
    from webapp.models import LearnerLab, SandboxAssignment

    shutil.copytree(ROOT / "labs" / "example", tmp_path / "labs" / "example")
    make_user(lab_app, "teach", Role.INSTRUCTOR)
    make_user(lab_app, "erin", Role.LEARNER)
    course, _ = make_course(lab_app, "teach", labs=("example",), learners=("erin",))
    daemon = lab_app.extensions["nslab.sandboxd"]
    created, create = [], daemon.create

    def counting_create(**kwargs):
        sb = create(**kwargs)
        created.append(sb["id"])
        return sb

    daemon.create = counting_create
    pages = [Browser(lab_app, "erin") for _ in range(4)]
    start = threading.Barrier(len(pages))
    answers: list[dict | BaseException | None] = [None] * len(pages)

    def first_open(i: int) -> None:
        start.wait()
        try:
            answers[i] = pages[i].open(course=course, lab="example")
        except BaseException as e:  # noqa: BLE001 - reported below, with the others
            answers[i] = e

    threads = [threading.Thread(target=first_open, args=(i,)) for i in range(len(pages))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    try:
        assert all(isinstance(a, dict) and a["name"] == "opened" for a in answers), answers
        assert len(created) == 1, f"the daemon was asked for {len(created)} sandboxes"
        assert {a["sandbox_id"] for a in answers} == {created[0]}
        assert [b["id"] for b in client.list() if b["labels"].get("user") == "erin"] == created
        assert not len(lab_app.extensions["nslab.opening"]), "a lock outlived its opens"
        with lab_app.app_context():
            rows = db.session.execute(db.select(SandboxAssignment)).scalars().all()
            assert [(r.lab_id, r.sandbox_id) for r in rows] == [("example", created[0])]
            assert len(db.session.execute(db.select(LearnerLab)).scalars().all()) == 1
        out = client.run(created[0], ["cat", "/etc/motd"])["stdout"]
        assert "prepared for the example lab" in out  # its setup ran
    finally:
        for sid in created:
            client.destroy(sid, purge=True)


def test_parallel_first_page_opens_draw_the_learners_values_once(lab_app, tmp_path):
    """Four tabs of one learner load a lab's page at once on a brand-new database: every
    page is served, with the one set of drawn values (the race to draw them once ended in
    a UNIQUE error for the losers)."""
    from webapp.extensions import db
    from webapp.models import LearnerLab

    shutil.copytree(ROOT / "labs" / "example", tmp_path / "labs" / "example")
    make_user(lab_app, "teach", Role.INSTRUCTOR)
    make_user(lab_app, "finn", Role.LEARNER)
    course, _ = make_course(lab_app, "teach", labs=("example",), learners=("finn",))
    webs = [lab_app.test_client() for _ in range(4)]
    for web in webs:
        assert login(web, "finn").status_code == 302
    start = threading.Barrier(len(webs))
    statuses: list[int | BaseException | None] = [None] * len(webs)

    def open_page(i: int) -> None:
        start.wait()
        try:
            statuses[i] = webs[i].get(f"/courses/{course}/labs/example").status_code
        except BaseException as e:  # noqa: BLE001 - reported below, with the others
            statuses[i] = e

    threads = [threading.Thread(target=open_page, args=(i,)) for i in range(len(webs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert statuses == [200] * len(webs)
    with lab_app.app_context():
        assert len(db.session.execute(db.select(LearnerLab)).scalars().all()) == 1
