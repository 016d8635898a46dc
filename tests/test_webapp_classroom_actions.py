"""The live classroom's actions (webapp/classroom/actions.py, takeover.py): the help queue,
announcements, a learner's sandbox reset and idle extension, start-all and stop-all, and
take-over with the learner's consent — through real Flask test clients, the socket.io
test client for what the pages hear, and a real sandboxd where a sandbox is involved."""

from __future__ import annotations

import shutil
import threading
import time

import pytest

from webapp_helpers import login, logout, make_course, make_user
from webapp.models import Role

CLASSROOM = "/classroom"
TERMINAL = "/terminal"


# ---------------------------------------------------------------- helpers

class Page:
    """A signed-in browser: a Flask test client, and a socket.io test client per
    namespace it follows (the live page on /classroom, a lab's terminal on /terminal)."""

    def __init__(self, app, name: str):
        self.app = app
        self.web = app.test_client()
        assert login(self.web, name).status_code in (302, 303)
        self.sio: dict[str, object] = {}
        self.events: list[dict] = []
        self.out = bytearray()

    def follow(self, course: int) -> None:
        """The live page (a teacher) or a learner's page in the course."""
        from webapp.extensions import socketio

        sio = socketio.test_client(self.app, namespace=CLASSROOM, flask_test_client=self.web)
        assert sio.is_connected(CLASSROOM)
        self.sio[CLASSROOM] = sio
        sio.emit("join", {"course": course}, namespace=CLASSROOM)
        self.wait(lambda: self.seen("snapshot") or self.seen("hello"), "join")

    def terminal(self):
        from webapp.extensions import socketio

        sio = socketio.test_client(self.app, namespace=TERMINAL, flask_test_client=self.web)
        assert sio.is_connected(TERMINAL)
        self.sio[TERMINAL] = sio
        return sio

    def pump(self) -> None:
        # Take what the server queued so far; background threads append to these lists
        # (get_received() rebuilds the list and can lose an event appended meanwhile).
        for ns, sio in self.sio.items():
            q = sio.queue
            items = q[:len(q)]
            del q[:len(items)]
            for item in items:
                if item["name"] == "output":
                    eid, data = item["args"]
                    self.out += data
                    sio.emit("ack", {"exec_id": eid, "bytes": len(data)}, namespace=TERMINAL)
                    continue
                args = item["args"][0] if item["args"] else {}
                self.events.append({"ns": ns, "name": item["name"],
                                    **(args if isinstance(args, dict) else {"args": args})})

    def seen(self, name: str, **match) -> list[dict]:
        self.pump()
        return [e for e in self.events if e["name"] == name
                and all(e.get(k) == v for k, v in match.items())]

    def wait(self, pred, what: str, timeout: float = 30):
        deadline = time.monotonic() + timeout
        while not (got := pred()):
            assert time.monotonic() < deadline, f"timed out waiting for {what}: {self.events}"
            time.sleep(0.01)
            self.pump()
        return got

    def wait_for(self, name: str, **match) -> dict:
        return self.wait(lambda: self.seen(name, **match), f"{name} {match}")[-1]

    def clear(self) -> None:
        self.pump()
        self.events.clear()

    def post(self, url: str, body=None):
        return self.web.post(url, json=body) if body is not None else self.web.post(url)

    def open(self, **data) -> dict:
        tag = f"t{time.monotonic_ns()}"
        self.sio[TERMINAL].emit("open", {"rows": 24, "cols": 80, "tag": tag, **data},
                                namespace=TERMINAL)
        return self.wait(lambda: next((e for e in self.events if e.get("tag") == tag
                                       and e["name"] in ("opened", "error")), None), "open")

    def type(self, eid: str, seq: int, text: str) -> None:
        self.sio[TERMINAL].emit("input", eid, seq, text, namespace=TERMINAL)


def _people(app, *, labs=("intro",)):
    """teach (owner), ta (co-instructor), alice and bob (learners), other (a teacher of
    another course) and eve (a learner of it); (course, other course, {name: id})."""
    from webapp.extensions import db
    from webapp.models import CourseStaff

    ids = {}
    for name, role in (("teach", Role.INSTRUCTOR), ("ta", Role.INSTRUCTOR),
                       ("other", Role.INSTRUCTOR), ("alice", Role.LEARNER),
                       ("bob", Role.LEARNER), ("eve", Role.LEARNER)):
        ids[name] = make_user(app, name, role)
    course, _ = make_course(app, "teach", labs=labs, learners=("alice", "bob"))
    other, _ = make_course(app, "other", labs=labs, learners=("eve",))
    with app.app_context():
        db.session.add(CourseStaff(course_id=course, user_id=ids["ta"]))
        db.session.commit()
    return course, other, ids


def _rows(app, model, **where):
    from webapp.extensions import db

    with app.app_context():
        return [{c.name: getattr(r, c.name) for c in model.__table__.columns}
                for r in db.session.scalars(db.select(model).filter_by(**where))]


# ---------------------------------------------------------------- help queue

def test_a_learner_raises_one_hand_and_teachers_claim_and_close_it(app):
    from webapp.models import HelpRequest

    course, other, ids = _people(app)
    teach, ta, alice = Page(app, "teach"), Page(app, "ta"), Page(app, "alice")
    teach.follow(course)
    alice.follow(course)
    teach.clear()

    r = alice.post(f"/courses/{course}/help", {"lab": "intro", "message": "  stuck on cpu.max "})
    assert r.status_code == 201, r.json
    hand = r.json["help"]
    assert (hand["message"], hand["lab"], hand["claimed_by"]) == ("stuck on cpu.max", "intro", None)
    queue = teach.wait_for("help")["help"]
    assert [(h["id"], h["username"], h["message"]) for h in queue] == \
        [(hand["id"], "alice", "stuck on cpu.max")]
    assert teach.wait_for("learner")["row"]["hand"]["id"] == hand["id"]
    assert alice.wait_for("hand")["hand"]["id"] == hand["id"]

    # Raising it again changes the message of the one open request; it keeps its place.
    created = _rows(app, HelpRequest)[0]["created"]
    r = alice.post(f"/courses/{course}/help", {"message": "never mind the lab"})
    assert r.status_code == 201 and r.json["created"] is False
    rows = _rows(app, HelpRequest)
    assert [(h["id"], h["message"], h["lab_id"], h["created"]) for h in rows] == \
        [(hand["id"], "never mind the lab", "intro", created)]

    # Bad input is refused and changes nothing.
    for body, status in (({"message": "x" * 501}, 400), ({"message": 5}, 400),
                         ({"lab": "nope"}, 404), ({"lab": ["intro"]}, 400)):
        r = alice.post(f"/courses/{course}/help", body)
        assert r.status_code == status, (body, r.json)
        assert set(r.json) == {"error", "message"}
    r = alice.web.post(f"/courses/{course}/help", data="not json",
                       content_type="application/json")
    assert r.status_code == 400
    assert [h["message"] for h in _rows(app, HelpRequest)] == ["never mind the lab"]
    # A teacher, or a learner of another course, raises no hand here.
    assert teach.post(f"/courses/{course}/help", {}).status_code == 403
    eve = Page(app, "eve")
    assert eve.post(f"/courses/{course}/help", {}).status_code == 403
    assert len(_rows(app, HelpRequest)) == 1

    # A teacher claims it; a colleague may claim it from them (it shows who has it).
    teach.clear()
    r = teach.post(f"/courses/{course}/help/{hand['id']}/claim")
    assert r.status_code == 200 and r.json["help"]["claimed_by"]["username"] == "teach"
    assert teach.wait_for("help")["help"][0]["claimed_by"]["username"] == "teach"
    assert r.json["taken_from"] is None
    r = ta.post(f"/courses/{course}/help/{hand['id']}/claim")
    assert r.json["help"]["claimed_by"] == {"id": ids["ta"], "username": "ta"}
    assert r.json["taken_from"] == "teach"
    # Learners, other courses' teachers, and the request through another course: refused.
    assert alice.post(f"/courses/{course}/help/{hand['id']}/claim").status_code == 403
    other_page = Page(app, "other")
    assert other_page.post(f"/courses/{course}/help/{hand['id']}/close").status_code == 403
    assert other_page.post(f"/courses/{other}/help/{hand['id']}/close").status_code == 404
    assert teach.post(f"/courses/{course}/help/999999/close").status_code == 404

    # Closed: the queue is empty, the learner's hand is down, and it cannot be claimed.
    teach.clear()
    alice.clear()
    r = teach.post(f"/courses/{course}/help/{hand['id']}/close")
    assert r.status_code == 200 and r.json["help"]["closed"] is True
    row = _rows(app, HelpRequest)[0]
    assert row["closed_at"] is not None and row["closed_by_id"] == ids["teach"]
    assert teach.wait_for("help")["help"] == []
    assert alice.wait_for("hand")["hand"] is None
    for action in ("claim", "close"):
        r = ta.post(f"/courses/{course}/help/{hand['id']}/{action}")
        assert (r.status_code, r.json["error"]) == (409, "closed")
    assert _rows(app, HelpRequest)[0]["closed_by_id"] == ids["teach"]

    # A new hand is a new request; lowering it closes it (by the learner).
    r = alice.post(f"/courses/{course}/help", {})
    assert r.status_code == 201 and r.json["created"] is True and r.json["help"]["id"] != hand["id"]
    r = alice.post(f"/courses/{course}/help/cancel")
    assert r.status_code == 200 and r.json["closed"] is True
    assert alice.post(f"/courses/{course}/help/cancel").json["closed"] is False
    rows = _rows(app, HelpRequest)
    assert len(rows) == 2 and rows[1]["closed_by_id"] == ids["alice"]


def test_the_live_pages_and_state_are_for_the_courses_teachers(app):
    course, other, ids = _people(app)
    teach, ta, alice, stranger = (Page(app, n) for n in ("teach", "ta", "alice", "other"))
    for page in (teach, ta):
        assert page.web.get(f"/courses/{course}/live").status_code == 200
        state = page.web.get(f"/courses/{course}/live/state")
        assert state.status_code == 200
        assert sorted(r["username"] for r in state.json["learners"]) == ["alice", "bob"]
        watch = page.web.get(f"/courses/{course}/live/watch/{ids['alice']}/intro")
        assert watch.status_code == 200 and b"has no sandbox in this lab yet" in watch.data
    for page, status in ((alice, 403), (stranger, 403)):
        assert page.web.get(f"/courses/{course}/live").status_code == status
        r = page.web.get(f"/courses/{course}/live/state")
        assert (r.status_code, r.json["error"]) == (status, "forbidden")
        assert page.web.get(f"/courses/{course}/live/watch/{ids['alice']}/intro").status_code \
            == status
    assert teach.web.get("/courses/999999/live/state").status_code == 404
    # Only a learner of this course, in a lab of it.
    for uid, lab in ((ids["eve"], "intro"), (ids["ta"], "intro"), (ids["alice"], "nope")):
        assert teach.web.get(f"/courses/{course}/live/watch/{uid}/{lab}").status_code == 404
    anon = app.test_client().get(f"/courses/{course}/live")
    assert anon.status_code == 302 and "/login" in anon.headers["Location"]


def test_signed_out_is_401_in_json(app):
    course, _, ids = _people(app)
    anon = app.test_client()
    for url in (f"/courses/{course}/help", f"/courses/{course}/announcements",
                f"/courses/{course}/learners/{ids['alice']}/takeover",
                f"/courses/{course}/sandboxes/stop-all"):
        r = anon.post(url, json={})
        assert r.status_code == 401 and r.json["error"] == "unauthorized", url
    assert anon.get(f"/courses/{course}/live/state").status_code == 401


def test_a_learner_cannot_flood_the_teachers_page_with_hands(app):
    """Ten posts a minute each: the eleventh is 429 with Retry-After, and changes nothing."""
    from webapp.models import HelpRequest

    course, _, _ = _people(app)
    alice, bob = Page(app, "alice"), Page(app, "bob")
    teach = Page(app, "teach")
    teach.follow(course)
    for i in range(10):
        assert alice.post(f"/courses/{course}/help", {"message": f"help {i}"}).status_code == 201
    teach.clear()
    r = alice.post(f"/courses/{course}/help", {"message": "help 10"})
    assert r.status_code == 429 and r.json["error"] == "rate_limited"
    assert 1 <= int(r.headers["Retry-After"]) <= 60
    assert alice.post(f"/courses/{course}/help/cancel").status_code == 429
    assert [h["message"] for h in _rows(app, HelpRequest)] == ["help 9"]
    assert not teach.seen("help"), "a refused post reached the teachers"
    # Per learner: Bob is not held back by Alice.
    assert bob.post(f"/courses/{course}/help", {"message": "me too"}).status_code == 201


# ---------------------------------------------------------------- announcements

def test_announcements_reach_the_course_or_one_learner(app):
    from webapp.models import Announcement

    course, other, ids = _people(app)
    teach, alice, bob, eve = (Page(app, n) for n in ("teach", "alice", "bob", "eve"))
    alice.follow(course)
    bob.follow(course)
    eve.follow(other)
    for p in (alice, bob, eve):
        p.clear()

    r = teach.post(f"/courses/{course}/announcements", {"text": " Break until 10:15 "})
    assert r.status_code == 201
    a = r.json["announcement"]
    assert (a["text"], a["author"], a["personal"], a["to"]) == \
        ("Break until 10:15", "teach", False, None)
    for p in (alice, bob):
        got = p.wait_for("announcement")
        assert (got["id"], got["text"], got["personal"]) == (a["id"], a["text"], False)

    r = teach.post(f"/courses/{course}/announcements",
                   {"text": "Alice, see me", "to": ids["alice"]})
    assert r.status_code == 201 and r.json["announcement"]["personal"] is True
    assert alice.wait_for("announcement", text="Alice, see me")["personal"] is True
    # Bob hears his own course's announcements, not Alice's personal one; the other
    # course hears none of them. (Bob's next one proves his queue was read past it.)
    teach.post(f"/courses/{course}/announcements", {"text": "Bob next", "to": ids["bob"]})
    bob.wait_for("announcement", text="Bob next")
    assert not bob.seen("announcement", text="Alice, see me")
    assert not eve.seen("announcement")

    before = _rows(app, Announcement)
    for body, status in (({"text": ""}, 400), ({"text": "   "}, 400), ({"text": "x" * 501}, 400),
                         ({"text": 7}, 400), ({}, 400), ({"text": "hi", "to": ids["eve"]}, 404),
                         ({"text": "hi", "to": ids["ta"]}, 404),
                         ({"text": "hi", "to": 999999}, 404), ({"text": "hi", "to": "3"}, 400),
                         ({"text": "hi", "to": True}, 400)):
        r = teach.post(f"/courses/{course}/announcements", body)
        assert r.status_code == status, (body, r.json)
    # Only the course's teachers announce.
    for name in ("alice", "other"):
        r = Page(app, name).post(f"/courses/{course}/announcements", {"text": "hi"})
        assert r.status_code == 403
    assert _rows(app, Announcement) == before
    # ... and not without end either: ten a minute (three sent so far; refused posts do
    # not count), each teacher on their own.
    for _ in range(7):
        assert teach.post(f"/courses/{course}/announcements", {"text": "t"}).status_code == 201
    ta = Page(app, "ta")
    assert ta.post(f"/courses/{course}/announcements", {"text": "ta"}).status_code == 201
    r = teach.post(f"/courses/{course}/announcements", {"text": "one too many"})
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
    assert not [a for a in _rows(app, Announcement) if a["text"] == "one too many"]


# ---------------------------------------------------------------- take-over, the states

def test_takeover_asks_the_learner_and_ends_on_deny_expiry_end_and_sign_out(app):
    from webapp.classroom.actions import expire_takeovers
    from webapp.classroom.takeover import TAKEOVERS, state_for

    course, other, ids = _people(app)
    teach, ta, alice = Page(app, "teach"), Page(app, "ta"), Page(app, "alice")
    teach.follow(course)
    alice.follow(course)
    takeovers = app.extensions[TAKEOVERS]
    url = f"/courses/{course}/learners/{ids['alice']}/takeover"

    # Only a teacher of the course asks, and only of a learner of it.
    assert alice.post(url).status_code == 403
    assert Page(app, "other").post(url).status_code == 403
    assert teach.post(f"/courses/{course}/learners/{ids['eve']}/takeover").status_code == 404
    assert teach.post(f"/courses/{course}/learners/{ids['ta']}/takeover").status_code == 404
    assert takeovers.current(course, ids["alice"]) is None

    r = teach.post(url)
    assert r.status_code == 201 and r.json["takeover"]["state"] == "asked"
    assert alice.wait_for("takeover") == {"ns": CLASSROOM, "name": "takeover",
                                          "state": "asked", "by": "teach"}
    assert teach.wait_for("takeover", user=ids["alice"])["state"] == "asked"
    with app.app_context():
        assert state_for(app, course, ids["alice"]) == {"state": "asked", "by": "teach"}
    # One take-over per learner: another teacher's ask waits for this one to end.
    assert ta.post(url).status_code == 409
    # Nobody answers for the learner: not a teacher, not another learner.
    assert teach.post(f"/courses/{course}/takeover/answer", {"allow": True}).status_code == 403
    bob = Page(app, "bob")
    assert bob.post(f"/courses/{course}/takeover/answer", {"allow": True}).status_code == 409
    for body in ({}, {"allow": "yes"}, {"allow": 1}):
        assert alice.post(f"/courses/{course}/takeover/answer", body).status_code == 400
    assert takeovers.current(course, ids["alice"]).state == "asked"

    # Denied: ended, on both pages.
    alice.clear()
    teach.clear()
    r = alice.post(f"/courses/{course}/takeover/answer", {"allow": False})
    assert r.status_code == 200 and r.json["takeover"]["state"] == "ended"
    assert alice.wait_for("takeover")["state"] == "ended"
    assert teach.wait_for("takeover", user=ids["alice"])["state"] == "ended"
    assert alice.post(f"/courses/{course}/takeover/answer", {"allow": True}).status_code == 409

    # Unanswered: it expires (the clock moved past its time).
    assert teach.post(url).status_code == 201
    alice.clear()
    real = takeovers.clock
    takeovers.clock = lambda: real() + takeovers.ttl + 1
    try:
        with app.app_context():
            gone = expire_takeovers(app)
        assert [t.learner_id for t in gone] == [ids["alice"]]
        assert alice.wait_for("takeover")["state"] == "ended"
        assert alice.post(f"/courses/{course}/takeover/answer", {"allow": True}).status_code \
            == 409
    finally:
        takeovers.clock = real

    # Allowed, then ended by the teacher's side (a colleague may end it too).
    assert teach.post(url).status_code == 201
    assert alice.post(f"/courses/{course}/takeover/answer", {"allow": True}).json[
        "takeover"]["state"] == "active"
    assert takeovers.allows(ids["teach"], ids["alice"], course)
    assert not takeovers.allows(ids["ta"], ids["alice"], course)
    assert not takeovers.allows(ids["teach"], ids["alice"], other)
    assert ta.post(f"/courses/{course}/takeover/end", {}).status_code == 400   # whose?
    assert Page(app, "other").post(f"/courses/{course}/takeover/end",
                                   {"user": ids["alice"]}).status_code == 403
    alice.clear()
    r = ta.post(f"/courses/{course}/takeover/end", {"user": ids["alice"]})
    assert r.status_code == 200 and r.json["takeover"]["state"] == "ended"
    assert alice.wait_for("takeover")["state"] == "ended"
    assert not takeovers.allows(ids["teach"], ids["alice"], course)
    assert ta.post(f"/courses/{course}/takeover/end", {"user": ids["alice"]}).status_code == 409

    # Allowed, then the learner signs out: ended.
    assert teach.post(url).status_code == 201
    assert alice.post(f"/courses/{course}/takeover/answer", {"allow": True}).status_code == 200
    teach.clear()
    logout(alice.web)
    assert teach.wait_for("takeover", user=ids["alice"])["state"] == "ended"
    assert takeovers.current(course, ids["alice"]) is None

    # ... or the teacher does.
    assert login(alice.web, "alice").status_code == 302
    alice.follow(course)
    assert teach.post(url).status_code == 201
    assert alice.post(f"/courses/{course}/takeover/answer", {"allow": True}).status_code == 200
    alice.clear()
    logout(teach.web)
    assert alice.wait_for("takeover")["state"] == "ended"
    assert takeovers.current(course, ids["alice"]) is None


# ---------------------------------------------------------------- with a real sandboxd

@pytest.fixture
def lab_app(tmp_path, webapp_schema, sandboxd):
    """The web app wired to the session's real sandboxd (the idle sweeper's thread off:
    the test makes its looks itself)."""
    from webapp import create_app
    from webapp.config import TestConfig
    from webapp.extensions import db

    shutil.copy(webapp_schema, tmp_path / "nslab.db")
    app = create_app(TestConfig(tmp_path, NSLAB_SOCKET=str(sandboxd.socket),
                                LABS_DIR=str(tmp_path / "labs"),
                                IDLE_TIMEOUT=600.0, IDLE_WARNING=300.0))
    yield app
    with app.app_context():
        db.engine.dispose()


def _cleanup(client, user: str) -> None:
    for b in client.list():
        if b["labels"].get("user") == user:
            client.destroy(b["id"], purge=True)


def _assignment(app, user_id: int, lab: str = "intro") -> dict:
    from webapp.models import SandboxAssignment

    (row,) = _rows(app, SandboxAssignment, user_id=user_id, lab_id=lab)
    return row


@pytest.mark.privileged
def test_reset_and_extend_a_learners_sandbox(lab_app, client):
    from webapp.extensions import db
    from webapp.models import SandboxState
    from webapp.sandboxes.idle import EXTENSION as SWEEPER

    course, other, ids = _people(lab_app)
    teach, alice = Page(lab_app, "teach"), Page(lab_app, "alice")
    alice.terminal()
    try:
        opened = alice.open(course=course, lab="intro")
        assert opened["name"] == "opened", opened
        sid = opened["sandbox_id"]
        base = f"/courses/{course}/learners/{ids['alice']}"

        # Extend: bad input, a learner not of the course, a sandbox that is not running.
        for body, status in (('{}', 400), ('{"minutes": 0}', 400), ('{"minutes": 241}', 400),
                             ('{"minutes": "5"}', 400), ('{"minutes": true}', 400),
                             ('{"minutes": NaN}', 400), ('{"minutes": 1e999}', 400),
                             ('[5]', 400), ('{"minutes": 5, "lab": "nope"}', 404)):
            r = teach.web.post(f"{base}/extend", data=body, content_type="application/json")
            assert r.status_code == status, (body, r.json)
        assert teach.post(f"/courses/{course}/learners/{ids['eve']}/extend",
                          {"minutes": 5}).status_code == 404
        assert teach.post(f"/courses/{course}/learners/{ids['bob']}/extend",
                          {"minutes": 5}).status_code == 404   # no sandbox
        assert alice.post(f"{base}/extend", {"minutes": 5}).status_code == 403

        # The idle stop is near: the learner's page is warned.
        sweeper = lab_app.extensions[SWEEPER]
        with lab_app.app_context():
            sweeper.sweep(now=time.time() + 400)
        warned = alice.wait_for("idle", sandbox_id=sid)
        assert warned["seconds_left"] is not None and warned["seconds_left"] < 300
        alice.clear()
        r = teach.post(f"{base}/extend", {"minutes": 60})
        assert r.status_code == 200 and r.json["sandboxes"] == [sid]
        # The warning is taken back, and the sweeper sees the new time, in memory and
        # in the database (a restarted process has only that).
        assert alice.wait_for("idle", sandbox_id=sid)["seconds_left"] is None
        assert _assignment(lab_app, ids["alice"])["last_active"].timestamp() > \
            time.time() + 3500 - 60
        for forget in (False, True):
            alice.clear()
            with lab_app.app_context():
                if forget:
                    lab_app.extensions["nslab.activity"].forget(sid)
                assert sweeper.sweep(now=time.time() + 3000) == []
                db.session.commit()
            assert not alice.seen("idle"), "warned in spite of the extension"
        assert _assignment(lab_app, ids["alice"])["state"] == SandboxState.RUNNING

        # Reset: bad lab, other course's learner, a learner; then for real.
        assert teach.post(f"{base}/reset", {"lab": "nope"}).status_code == 404
        assert teach.post(f"{base}/reset", {}).status_code == 400
        assert teach.post(f"/courses/{course}/learners/{ids['eve']}/reset",
                          {"lab": "intro"}).status_code == 404
        assert Page(lab_app, "other").post(f"{base}/reset", {"lab": "intro"}).status_code == 403
        assert sid in [b["id"] for b in client.list()]
        alice.clear()
        r = teach.post(f"{base}/reset", {"lab": "intro"})
        assert r.status_code == 200, r.json
        assert sid not in [b["id"] for b in client.list()]
        assert alice.wait_for("stopped", sandbox_id=sid)["reason"] == "reset"
        assert _assignment(lab_app, ids["alice"])["sandbox_id"] is None
        assert teach.post(f"{base}/reset", {"lab": "intro"}).status_code == 404
        assert teach.post(f"{base}/extend", {"minutes": 5}).status_code == 404
    finally:
        _cleanup(client, "alice")


@pytest.mark.privileged
def test_start_all_then_stop_all(lab_app, client):
    from webapp.classroom.actions import BULK
    from webapp.models import SandboxState

    course, other, ids = _people(lab_app, labs=("intro", "second"))
    teach, bob = Page(lab_app, "teach"), Page(lab_app, "bob")
    teach.follow(course)
    try:
        assert bob.post(f"/courses/{course}/sandboxes/start-all").status_code == 403
        assert teach.post(f"/courses/{course}/sandboxes/start-all",
                          {"lab": "nope"}).status_code == 404
        # One bulk task per course at a time.
        lab_app.extensions[BULK].claim(course, "stop")
        assert teach.post(f"/courses/{course}/sandboxes/start-all").status_code == 409
        lab_app.extensions[BULK].release(course)

        teach.clear()
        r = teach.post(f"/courses/{course}/sandboxes/start-all", {"lab": "intro"})
        assert r.status_code == 202 and r.json["total"] == 2
        last = teach.wait_for("bulk", done=2)
        assert (last["action"], last["total"], last["failed"]) == ("start", 2, 0)
        assert [e["done"] for e in teach.seen("bulk")] == [1, 2]
        running = {b["labels"]["user"]: b for b in client.list()
                   if b["labels"].get("course") == str(course)}
        assert sorted(running) == ["alice", "bob"]
        assert all(b["state"] == "running" and b["labels"]["lab"] == "intro"
                   for b in running.values())
        assert _assignment(lab_app, ids["bob"])["state"] == SandboxState.RUNNING
        assert teach.wait(lambda: [e for e in teach.seen("learner")
                                   if e["row"]["id"] == ids["bob"]], "bob's row")

        # Bob's lab page is open: it hears why its shell ends.
        bob.terminal()
        opened = bob.open(course=course, lab="intro")
        assert opened["sandbox_id"] == running["bob"]["id"]
        teach.clear()
        r = teach.post(f"/courses/{course}/sandboxes/stop-all")
        assert r.status_code == 202 and r.json["total"] == 2
        last = teach.wait_for("bulk", done=2)
        assert (last["action"], last["failed"]) == ("stop", 0)
        assert bob.wait_for("stopped", sandbox_id=opened["sandbox_id"])["reason"] == "instructor"
        states = {b["labels"]["user"]: b["state"] for b in client.list()
                  if b["labels"].get("course") == str(course)}
        assert states == {"alice": "stopped", "bob": "stopped"}
        assert _assignment(lab_app, ids["alice"])["state"] == SandboxState.STOPPED
        # Nothing left to stop: done at once.
        teach.clear()
        assert teach.post(f"/courses/{course}/sandboxes/stop-all").json["total"] == 0
        assert teach.wait_for("bulk", action="stop")["total"] == 0
    finally:
        _cleanup(client, "alice")
        _cleanup(client, "bob")


@pytest.mark.privileged
def test_takeover_lets_the_teacher_type_only_with_consent_and_cuts_them_at_the_end(
        lab_app, client):
    course, other, ids = _people(lab_app)
    teach, alice = Page(lab_app, "teach"), Page(lab_app, "alice")
    alice.follow(course)
    alice.terminal()
    teach.terminal()
    ta = Page(lab_app, "ta")
    ta.terminal()
    try:
        opened = alice.open(course=course, lab="intro")
        sid, eid = opened["sandbox_id"], opened["exec_id"]
        alice.type(eid, 0, "echo ready\r")
        alice.wait(lambda: b"ready\r\n" in alice.out, "the shell")

        # Before consent: watching, yes; typing, no.
        assert teach.open(sandbox_id=sid, exec_id=eid)["name"] == "error"
        assert teach.open(sandbox_id=sid, exec_id=eid, readonly=True)["name"] == "opened"
        url = f"/courses/{course}/learners/{ids['alice']}/takeover"
        assert teach.post(url).status_code == 201
        assert teach.open(sandbox_id=sid, exec_id=eid)["name"] == "error"   # asked only

        assert alice.post(f"/courses/{course}/takeover/answer", {"allow": True}).status_code \
            == 200
        # Only the teacher who asked, and only on that learner's sandboxes.
        assert ta.open(sandbox_id=sid, exec_id=eid)["name"] == "error"
        page = teach.web.get(f"/courses/{course}/live/watch/{ids['alice']}/intro?control=1")
        assert page.status_code == 200
        assert f'data-exec-id="{eid}"'.encode() in page.data
        assert f'data-sandbox-id="{sid}"'.encode() in page.data
        assert b'data-control="1"' in page.data and b'data-takeover="active"' in page.data
        # As the watch page opens it: a guest, who never makes a shell of their own there
        # and whose window never resizes the learner's terminal.
        assert teach.open(sandbox_id=sid, guest=True)["name"] == "error"
        wrote = teach.open(sandbox_id=sid, exec_id=eid, guest=True, rows=10, cols=33)
        assert wrote["name"] == "opened" and wrote["readonly"] is False
        teach.type(eid, 0, "echo from-$((6*7))-teach; stty size\r")
        alice.wait(lambda: b"from-42-teach\r\n24 80" in alice.out, "the teacher's typing")

        # The learner ends it: the teacher's writable terminal (a page has one relay per
        # shell: it took the read-only one's place) is cut at once, and typing or opening
        # it writable again is refused; watching goes on.
        teach.clear()
        assert alice.post(f"/courses/{course}/takeover/end").status_code == 200
        cut = teach.wait_for("error", reason="takeover_ended")
        assert cut["exec_id"] == eid
        terminals = lab_app.extensions["nslab.terminal"]
        relays = [(terminals.users[page], r.readonly) for page, terms in terminals.relays.items()
                  for r in terms.values() if r.sandbox_id == sid]
        assert relays == [(ids["alice"], False)]
        teach.type(eid, 1, "echo after-$((6*7))-end\r")
        alice.type(eid, 1, "echo mine-$((6*7))\r")
        alice.wait(lambda: b"mine-42" in alice.out, "the learner's own typing")
        assert b"after-42-end" not in alice.out
        assert teach.open(sandbox_id=sid, exec_id=eid)["name"] == "error"
        assert teach.open(sandbox_id=sid, exec_id=eid, readonly=True)["name"] == "opened"
        teach.clear()
        alice.type(eid, 2, "echo again-$((6*7))\r")
        teach.wait(lambda: b"again-42" in teach.out, "watching after the take-over")

        # Ended while the teacher's writable open is under way (after its right was
        # checked, before its relay is registered, where cut_writers cannot see it yet):
        # the open is refused all the same.
        assert teach.post(url).status_code == 201
        assert alice.post(f"/courses/{course}/takeover/answer", {"allow": True}).status_code \
            == 200
        daemon = lab_app.extensions["nslab.sandboxd"]
        attach = daemon.attach

        def attach_then_end(*args, **kwargs):
            stream = attach(*args, **kwargs)
            if not kwargs.get("readonly"):
                # From a thread of its own: this one is in the teacher's app context.
                ended = []
                t = threading.Thread(target=lambda: ended.append(
                    alice.post(f"/courses/{course}/takeover/end").status_code))
                t.start()
                t.join(30)
                assert ended == [200]
            return stream

        daemon.attach = attach_then_end
        try:
            late = teach.open(sandbox_id=sid, exec_id=eid)
        finally:
            daemon.attach = attach
        assert late["name"] == "error", late
        assert not [r for page, terms in terminals.relays.items() for r in terms.values()
                    if terminals.users[page] == ids["teach"] and not r.readonly]
    finally:
        _cleanup(client, "alice")


@pytest.mark.privileged
def test_a_removed_co_instructor_loses_the_terminals_they_watch_and_type_in(lab_app, client):
    """A relay's right is checked when it opens: removing a co-instructor must cut the
    terminals they have open on the course's sandboxes (watching ones too) and end their
    take-over, or they would go on seeing and typing until they close the page."""
    course, other, ids = _people(lab_app)
    teach, ta, alice, bob = (Page(lab_app, n) for n in ("teach", "ta", "alice", "bob"))
    for page in (alice, bob):
        page.follow(course)
        page.terminal()
    ta.terminal()
    try:
        a = alice.open(course=course, lab="intro")
        b = bob.open(course=course, lab="intro")
        for page, opened in ((alice, a), (bob, b)):
            page.type(opened["exec_id"], 0, "echo ready\r")
            page.wait(lambda p=page: b"ready\r\n" in p.out, "the shell")
        # The TA watches bob and, with alice's consent, types in her terminal.
        assert ta.open(sandbox_id=b["sandbox_id"], exec_id=b["exec_id"],
                       readonly=True)["name"] == "opened"
        assert ta.post(f"/courses/{course}/learners/{ids['alice']}/takeover").status_code == 201
        assert alice.post(f"/courses/{course}/takeover/answer",
                          {"allow": True}).status_code == 200
        assert ta.open(sandbox_id=a["sandbox_id"], exec_id=a["exec_id"])["name"] == "opened"
        ta.type(a["exec_id"], 0, "echo ta-$((6*7))\r")
        alice.wait(lambda: b"ta-42" in alice.out, "the TA's typing")

        alice.clear()
        r = teach.post(f"/courses/{course}/staff/{ids['ta']}/remove", {})
        assert r.status_code == 200, r.data
        assert alice.wait_for("takeover")["state"] == "ended"
        terminals = lab_app.extensions["nslab.terminal"]
        assert not [r for page, terms in terminals.relays.items() for r in terms.values()
                    if terminals.users.get(page) == ids["ta"]]
        # The take-over's terminal hears that it ended, the watching one that the TA may
        # no longer watch.
        assert [e["exec_id"] for e in ta.seen("error", reason="takeover_ended")] == \
            [a["exec_id"]]
        assert [e["exec_id"] for e in ta.seen("error", reason="forbidden")] == [b["exec_id"]]
        ta.clear()
        ta.type(a["exec_id"], 1, "echo after-$((6*7))\r")
        bob.type(b["exec_id"], 1, "echo bob-$((6*7))\r")
        alice.type(a["exec_id"], 1, "echo alice-$((6*7))\r")
        alice.wait(lambda: b"alice-42" in alice.out, "alice's own typing")
        bob.wait(lambda: b"bob-42" in bob.out, "bob's own typing")
        assert b"after-42" not in alice.out and b"bob-42" not in ta.out
        assert ta.open(sandbox_id=b["sandbox_id"], readonly=True)["name"] == "error"
    finally:
        _cleanup(client, "alice")
        _cleanup(client, "bob")
