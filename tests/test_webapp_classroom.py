"""The live classroom's data and push (webapp/classroom/: roster, push, namespace, usage):
a learner's check and hint reach the teachers' pages as that learner's row, the snapshot's
shape and its "who needs help" order, a snapshot's cost in statements, the usage sampler
(a fake sandboxd, then a real one), and the rooms: a learner's page never hears what is
for the teachers, a removed co-instructor stops hearing, signing out cuts a page.

Quiz labs made here need no sandbox, so most of this runs without sandboxd; the one test
with a real sandbox uses the session's daemon (tests/conftest.py)."""

from __future__ import annotations

import shutil
import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import event
from webapp_helpers import login, logout, make_course, make_user

from conftest import ROOT
from sandbox.errors import NotFound, SandboxError
from sandbox.protocol import Reason
from webapp import create_app, services
from webapp.classroom import CLASSROOM, push, roster
from webapp.classroom.takeover import TAKEOVERS
from webapp.config import TestConfig
from webapp.extensions import db, socketio
from webapp.models import (Announcement, Attempt, Course, CourseStaff, ExerciseProgress,
                           HelpRequest, LearnerLab, Role, SandboxAssignment, SandboxState, User,
                           utcnow)
from webapp.sandboxes import sandbox_for

NS = "/classroom"
STAFF_EVENTS = {"snapshot", "learner", "help", "usage", "bulk"}


# ---------------------------------------------------------------- labs, app, pages

def quiz_lab(labs, lab_id: str, steps: list[list[str]]) -> None:
    """A lab of quizzes (answer "yes"), one step per list of exercise ids."""
    folder = labs / lab_id
    (folder / "steps").mkdir(parents=True)
    lines = [f"id: {lab_id}", f"title: Lab {lab_id}", "summary: Quizzes only.", "minutes: 5",
             "steps:"]
    for n, _ in enumerate(steps):
        lines += [f"  - id: s{n}", f"    title: Step {n}", f"    file: steps/s{n}.md"]
    lines.append("exercises:")
    for n, exercises in enumerate(steps):
        (folder / "steps" / f"s{n}.md").write_text(
            f"# Step {n}\n\n" + "".join(f"::: exercise {e}\n\n" for e in exercises))
        for e in exercises:
            lines += [f"  - id: {e}", f"    title: Quiz {e}", "    points: 1",
                      "    text: Say yes.", "    quiz:", "      answer: 'yes'",
                      "    hints:", "      - 'It is yes.'", "    wrong:",
                      "      - answer: 'no'", "        feedback: 'is not the answer'"]
    (folder / "lab.yaml").write_text("\n".join(lines) + "\n")


class FakeDaemon:
    """sandboxd's stats as the sampler reads them, for sandboxes this machine need not
    make: a counter that moves 0.5 CPU-seconds a second, and the sandboxes that are gone.
    It notes how many calls were ever in flight at once."""

    def __init__(self):
        self.gone: set[str] = set()
        self.calls = 0
        self.in_flight = 0
        self.most_in_flight = 0
        self._lock = threading.Lock()
        self._start = time.monotonic()

    def stats(self, sandbox_id: str) -> dict:
        with self._lock:
            self.calls += 1
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            time.sleep(0.005)   # a call takes a while: overlapping calls would show
            if sandbox_id in self.gone:
                raise NotFound("no such sandbox", reason=Reason.NO_SUCH_SANDBOX)
            if sandbox_id == "sb-broken":
                raise SandboxError("the daemon could not read it")
            used = int((time.monotonic() - self._start) * 0.5e9)
            return {"cpu_usage_ns": used, "memory_current": 64 << 20,
                    "memory_limit": 256 << 20, "cpus": 1.0, "pids_current": 2}
        finally:
            with self._lock:
                self.in_flight -= 1


def _make_app(tmp_path, webapp_schema, labs, **config):
    shutil.copy(webapp_schema, tmp_path / "nslab.db")
    config = {"CLASSROOM_USAGE_INTERVAL": 0.05, "CLASSROOM_SNAPSHOT_INTERVAL": 3600.0, **config}
    return create_app(TestConfig(tmp_path, LABS_DIR=str(labs), **config))


def _close(app) -> None:
    app.extensions[CLASSROOM].usage.close()
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


@pytest.fixture
def room(tmp_path, webapp_schema):
    """An app with two quiz labs and a fake sandboxd: Teach's course (co-instructor TA;
    learners Amy, Bob, Cat), Other's course (learner Olga)."""
    labs = tmp_path / "labs"
    quiz_lab(labs, "quizzes", [["q1", "q2"], ["q3"]])
    quiz_lab(labs, "more", [["m1"]])
    app = _make_app(tmp_path, webapp_schema, labs)
    app.extensions[CLASSROOM].usage.daemon = FakeDaemon()
    for name, role in (("teach", Role.INSTRUCTOR), ("ta", Role.INSTRUCTOR),
                       ("other", Role.INSTRUCTOR), ("amy", Role.LEARNER), ("bob", Role.LEARNER),
                       ("cat", Role.LEARNER), ("olga", Role.LEARNER)):
        make_user(app, name, role)
    app.course_id, _ = make_course(app, "teach", labs=("quizzes", "more"),
                                   learners=("amy", "bob", "cat"))
    app.other_course, _ = make_course(app, "other", labs=("quizzes",), learners=("olga",))
    with app.app_context():
        db.session.add(CourseStaff(course_id=app.course_id, user_id=_uid("ta")))
        db.session.commit()
    yield app
    _close(app)


def _uid(name: str) -> int:
    return db.session.execute(db.select(User.id).filter_by(username=name)).scalar_one()


def uid(app, name: str) -> int:
    with app.app_context():
        return _uid(name)


class Page:
    """A signed-in browser: a Flask test client plus a socket.io test client on /classroom."""

    def __init__(self, app, name: str | None):
        self.app = app
        self.web = app.test_client()
        if name is not None:
            assert login(self.web, name).status_code in (302, 303)
        self.sio = socketio.test_client(app, namespace=NS, flask_test_client=self.web)
        self.events: list[dict] = []

    def pump(self) -> list[dict]:
        if self.sio.is_connected(NS):
            q = self.sio.queue
            items = q[:len(q)]
            del q[:len(items)]
            self.events += [{"name": i["name"], **i["args"][0]} for i in items]
        return self.events

    def wait(self, pred, what: str, timeout: float = 10) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            self.pump()
            got = next((e for e in self.events if pred(e)), None)
            if got is not None:
                self.events.remove(got)
                return got
            assert time.monotonic() < deadline, f"timed out waiting for {what}: {self.events}"
            time.sleep(0.01)

    def join(self, course) -> dict:
        self.events.clear()
        self.sio.emit("join", {"course": course}, namespace=NS)
        return self.wait(lambda e: e["name"] in ("snapshot", "hello", "error"), "join")

    def names(self) -> set[str]:
        return {e["name"] for e in self.pump()}

    def api(self, path: str, body: dict):
        return self.web.post(f"/api/labs/{path}", json=body)


def learner_event(page: Page, who: int, pred=lambda row: True) -> dict:
    return page.wait(lambda e: e["name"] == "learner" and e["row"]["id"] == who
                     and pred(e["row"]), f"learner {who}")["row"]


# ---------------------------------------------------------------- checks and hints pushed

def test_a_learners_check_and_hint_reach_the_teachers_page_as_their_row(room):
    cid = room.course_id
    teach, amy_page = Page(room, "teach"), Page(room, "amy")
    snap = teach.join(cid)
    assert snap["name"] == "snapshot" and snap["course"] == cid
    assert amy_page.join(cid)["name"] == "hello"
    amy = uid(room, "amy")

    wrong = amy_page.api("quizzes/exercises/q1/check", {"course": cid, "answer": "no"})
    assert wrong.status_code == 200 and wrong.get_json()["passed"] is False
    row = learner_event(teach, amy)
    assert row["cells"][0] == {"attempts": 1, "passed": False, "points": 0, "hints": 0}
    assert row["failed_in_row"] == 1 and row["lab"] == "quizzes" and row["step"] == "s0"

    hint = amy_page.api("quizzes/exercises/q1/hint", {"course": cid})
    assert hint.status_code == 200
    row = learner_event(teach, amy)
    assert row["hints"] == 1 and row["cells"][0]["hints"] == 1

    for ex in ("q1", "q2"):
        assert amy_page.api(f"quizzes/exercises/{ex}/check",
                            {"course": cid, "answer": "yes"}).get_json()["passed"]
    row = learner_event(teach, amy, lambda r: r["cells"][1] is not None)
    teach.events.clear()   # the first pass's row, before this one
    assert row["cells"][0]["passed"] and row["cells"][1]["passed"]
    assert 0 < row["cells"][0]["points"] < 1   # the hint took a share off
    assert row["failed_in_row"] == 0 and row["step"] == "s1" and row["step_title"] == "Step 1"
    assert row["points"] == 1 + row["cells"][0]["points"]

    # A refused check (bad input) is no try: nothing is pushed for it, nothing changed.
    assert amy_page.api("quizzes/exercises/q1/check",
                        {"course": cid, "answer": 7}).status_code == 400
    # The learner's own page heard none of it; nor did anybody else's.
    assert not amy_page.names() & STAFF_EVENTS, amy_page.events
    assert not [e for e in teach.pump() if e["name"] == "learner"], teach.events


def test_pushes_cost_nothing_while_no_teacher_watches(room):
    cid, amy = room.course_id, uid(room, "amy")
    with room.app_context():
        selects = _statements(lambda: push.learner_changed(room, cid, amy))[1]
        assert selects == []
        assert _statements(lambda: push.queue_changed(room, cid))[1] == []
    # An app without the namespace: every push is a no-op (no error either).
    bare = type("Bare", (), {"extensions": {}})()
    push.to_staff(bare, cid, "help", {})
    push.learner_changed(bare, cid, amy)


def test_learner_and_course_pushes_reach_only_their_pages(room):
    cid = room.course_id
    teach, amy, bob, olga = (Page(room, n) for n in ("teach", "amy", "bob", "olga"))
    for page in (teach, amy, bob):
        page.join(cid)
    assert olga.join(room.other_course)["name"] == "hello"
    push.to_learner(room, cid, uid(room, "amy"), "announcement", {"id": 1, "text": "hi amy"})
    push.to_course(room, cid, "announcement", {"id": 2, "text": "hi all"})
    push.to_staff(room, cid, "bulk", {"action": "start", "done": 0, "total": 0, "failed": 0})
    texts = {p: [e["text"] for e in p.pump() if e["name"] == "announcement"]
             for p in (teach, amy, bob, olga)}
    assert texts == {teach: [], amy: ["hi amy", "hi all"], bob: ["hi all"], olga: []}
    assert "bulk" in teach.names() and not (amy.names() | bob.names()) & STAFF_EVENTS


# ---------------------------------------------------------------- the snapshot

def test_the_snapshot_ranks_who_looks_stuck(room):
    cid = room.course_id
    for name in ("dan", "eve"):
        make_user(room, name, Role.LEARNER)
    with room.app_context():
        course = db.session.get(Course, cid)
        for name in ("dan", "eve"):
            from_db = db.session.execute(db.select(User).filter_by(username=name)).scalar_one()
            services.enroll(from_db, course)
        ids = {n: _uid(n) for n in ("amy", "bob", "cat", "dan", "eve")}
        now = utcnow()

        def ago(seconds):
            return now - timedelta(seconds=seconds)

        def started(name, lab, seconds):
            db.session.add(LearnerLab(user_id=ids[name], course_id=cid, lab_id=lab, params={},
                                      started=ago(seconds)))

        def progress(name, lab, ex, passed_s=None, attempts=1, hints=0, points=0.0):
            db.session.add(ExerciseProgress(
                user_id=ids[name], course_id=cid, lab_id=lab, exercise_id=ex,
                attempts=attempts, hints_used=hints, points=points, deduction=0,
                passed_at=None if passed_s is None else ago(passed_s)))

        def attempt(name, lab, ex, seconds, passed, counted=True):
            db.session.add(Attempt(user_id=ids[name], course_id=cid, lab_id=lab,
                                   exercise_id=ex, at=ago(seconds), passed=passed,
                                   points=1 if passed else 0, feedback="", counted=counted))

        # Amy: ten minutes on her first step, her sandbox used half a minute ago.
        started("amy", "quizzes", 600)
        db.session.add(SandboxAssignment(user_id=ids["amy"], course_id=cid, lab_id="quizzes",
                                         sandbox_id="sb-amy", state=SandboxState.RUNNING,
                                         last_active=ago(30)))
        # Bob: passed q1 two minutes ago, then three failed checks (and one that could not
        # run) on q2; his only sandbox is in the other lab, stopped, but typed in just now.
        started("bob", "quizzes", 900)
        progress("bob", "quizzes", "q1", passed_s=120, points=1)
        progress("bob", "quizzes", "q2", attempts=3, hints=2)
        attempt("bob", "quizzes", "q1", 130, False)
        attempt("bob", "quizzes", "q1", 120, True)
        for s in (90, 60, 30):
            attempt("bob", "quizzes", "q2", s, False)
        attempt("bob", "quizzes", "q2", 20, False, counted=False)
        db.session.add(SandboxAssignment(user_id=ids["bob"], course_id=cid, lab_id="more",
                                         sandbox_id="sb-bob", state=SandboxState.STOPPED,
                                         last_active=ago(600)))
        # Cat: did the lab "more" (her latest try), one minute into "quizzes"; hand up.
        progress("cat", "more", "m1", passed_s=70, points=1)
        attempt("cat", "more", "m1", 70, True)
        started("cat", "quizzes", 60)
        db.session.add(HelpRequest(course_id=cid, user_id=ids["cat"], lab_id="quizzes",
                                   message="stuck on q1", created=ago(10)))
        # Dan: everything passed. Eve: has not begun.
        for lab, ex in (("quizzes", "q1"), ("quizzes", "q2"), ("quizzes", "q3"),
                        ("more", "m1")):
            progress("dan", lab, ex, passed_s=1000, points=1)
        db.session.commit()
        room.extensions["nslab.activity"].touch("sb-bob")

        snap = roster.snapshot(db.session.get(Course, cid))

    assert set(snap) == {"course", "time", "columns", "learners", "help",
                         "class_median_on_step_s"}
    assert snap["columns"] == [
        {"lab": "quizzes", "exercise": "q1", "title": "Quiz q1", "points": 1},
        {"lab": "quizzes", "exercise": "q2", "title": "Quiz q2", "points": 1},
        {"lab": "quizzes", "exercise": "q3", "title": "Quiz q3", "points": 1},
        {"lab": "more", "exercise": "m1", "title": "Quiz m1", "points": 1}]
    rows = {r["username"]: r for r in snap["learners"]}
    assert list(rows) == ["amy", "bob", "cat", "dan", "eve"]   # enrollment order
    assert set(rows["amy"]) == {
        "id", "username", "cells", "lab", "step", "step_title", "on_step_s", "failed_in_row",
        "hints", "active", "idle_s", "sandbox", "sandbox_id", "hand", "stuck", "finished",
        "points"}
    # Times on a step: 600 (Amy), 120 (Bob: since his pass), 60 (Cat): the median is 120.
    # (Seconds pass while the test runs: times are compared within two.)
    assert snap["class_median_on_step_s"] == pytest.approx(120, abs=2)
    amy, bob, cat, dan, eve = (rows[n] for n in ("amy", "bob", "cat", "dan", "eve"))
    assert (amy["lab"], amy["step"]) == ("quizzes", "s0")
    assert amy["on_step_s"] == pytest.approx(600, abs=2)
    assert amy["sandbox"] == "running" and amy["sandbox_id"] == "sb-amy"
    assert amy["active"] and 29 <= amy["idle_s"] <= 32
    assert amy["cells"] == [None] * 4 and amy["hand"] is None
    assert bob["on_step_s"] == pytest.approx(120, abs=2)
    assert (bob["failed_in_row"], bob["hints"]) == (3, 2)
    assert bob["cells"][:2] == [{"attempts": 1, "passed": True, "points": 1, "hints": 0},
                                {"attempts": 3, "passed": False, "points": 0, "hints": 2}]
    assert bob["sandbox"] == "none" and bob["sandbox_id"] is None   # none in his lab
    assert bob["active"] and bob["idle_s"] <= 2                    # the tracker's note
    assert (cat["lab"], cat["step"]) == ("quizzes", "s0")
    assert cat["on_step_s"] == pytest.approx(60, abs=2)
    assert cat["hand"]["message"] == "stuck on q1" and cat["hand"]["claimed_by"] is None
    assert cat["idle_s"] is None and not cat["active"]
    assert dan["finished"] and dan["lab"] is None and dan["step"] is None
    assert dan["on_step_s"] is None and dan["points"] == 4
    assert eve["on_step_s"] is None and not eve["finished"] and eve["lab"] == "quizzes"
    # stuck = on_step / median + 0.5 x failed in a row + 100 for a hand.
    assert cat["stuck"] == pytest.approx(100.5, abs=0.05)
    assert amy["stuck"] == pytest.approx(5.0, abs=0.1)
    assert bob["stuck"] == pytest.approx(2.5, abs=0.05)
    assert dan["stuck"] == 0 and eve["stuck"] == 0
    order = [r["username"] for r in sorted(snap["learners"], key=lambda r: -r["stuck"])]
    assert order[:3] == ["cat", "amy", "bob"]
    assert [h["username"] for h in snap["help"]] == ["cat"]
    assert set(snap["help"][0]) == {"id", "user", "username", "lab", "message", "at",
                                    "claimed_by"}

    # One learner's row is the same row (the class median from the snapshot).
    with room.app_context():
        again = roster.learner_row(db.session.get(Course, cid), ids["bob"])
        assert roster.learner_row(db.session.get(Course, cid), _uid("olga")) is None
    same = {"idle_s": 0, "on_step_s": 0, "stuck": 0}
    assert again | same == bob | same and again["stuck"] == pytest.approx(bob["stuck"], abs=0.05)


def _statements(fn):
    """(fn's result, the SELECTs it ran), in the current app context."""
    seen: list[str] = []

    def note(conn, cursor, statement, *args):
        seen.append(statement)

    event.listen(db.engine, "before_cursor_execute", note)
    try:
        result = fn()
    finally:
        event.remove(db.engine, "before_cursor_execute", note)
    return result, [s for s in seen if s.lstrip().upper().startswith("SELECT")]


def test_a_snapshot_is_a_handful_of_selects_whatever_the_class_size(tmp_path, webapp_schema):
    labs = tmp_path / "labs"
    quiz_lab(labs, "big", [[f"e{s}{i}" for i in range(5)] for s in range(4)])   # 20 quizzes
    app = _make_app(tmp_path, webapp_schema, labs)
    try:
        make_user(app, "teach", Role.INSTRUCTOR)
        counts = {}
        for size in (5, 50):
            names = [f"l{size}x{n}" for n in range(size)]
            for name in names:
                make_user(app, name)
            cid, _ = make_course(app, "teach", labs=("big",), learners=names)
            with app.app_context():
                now = utcnow()
                for name in names:
                    user = _uid(name)
                    db.session.add(LearnerLab(user_id=user, course_id=cid, lab_id="big",
                                              params={}, started=now))
                    db.session.add(SandboxAssignment(user_id=user, course_id=cid, lab_id="big",
                                                     sandbox_id=f"sb-{name}",
                                                     state=SandboxState.RUNNING))
                    db.session.add(HelpRequest(course_id=cid, user_id=user, message="?"))
                    for s in range(4):
                        for i in range(5):
                            db.session.add(ExerciseProgress(
                                user_id=user, course_id=cid, lab_id="big",
                                exercise_id=f"e{s}{i}", attempts=2, hints_used=1, points=1,
                                deduction=0, passed_at=now if s < 2 else None))
                            # Passes first, then a failed try of each later exercise.
                            db.session.add(Attempt(
                                user_id=user, course_id=cid, lab_id="big",
                                exercise_id=f"e{s}{i}", at=now + timedelta(seconds=s),
                                passed=s < 2, feedback=""))
                db.session.commit()
                course = db.session.get(Course, cid)
                snap, selects = _statements(lambda: roster.snapshot(course))
                assert len(snap["learners"]) == size and len(snap["columns"]) == 20
                assert all(r["step"] == "s2" and r["failed_in_row"] == 10 and r["hand"]
                           for r in snap["learners"]), snap["learners"][0]
                counts[size] = len(selects)
                # One learner's row, with the median of the snapshot just made.
                row, one = _statements(lambda: roster.learner_row(course, _uid(names[0])))
                assert row["points"] == 20 and len(one) <= counts[size] + 1
        print("SELECTs per snapshot:", counts)
        assert counts[5] == counts[50] <= 8, counts
    finally:
        _close(app)


# ---------------------------------------------------------------- rooms and rights

def test_who_may_join_and_what_each_page_hears(room):
    cid = room.course_id
    anon = Page(room, None)
    assert not anon.sio.is_connected(NS)   # refused at connect
    amy = Page(room, "amy")
    for bad, reason in (("nope", "invalid"), ({"course": "1"}, "invalid"),
                        ({"course": True}, "invalid"), ({"course": 9999}, "not_found")):
        amy.sio.emit("join", bad, namespace=NS)
        got = amy.wait(lambda e: e["name"] == "error", "error")
        assert got["reason"] == reason, (bad, got)
    # A learner of another course, a teacher of another course: forbidden, in no room.
    olga, other = Page(room, "olga"), Page(room, "other")
    for page in (olga, other):
        answer = page.join(cid)
        assert answer["name"] == "error" and answer["reason"] == "forbidden", answer
    assert amy.join(cid)["name"] == "hello"
    teach, ta = Page(room, "teach"), Page(room, "ta")
    assert teach.join(cid)["name"] == "snapshot"
    assert ta.join(cid)["name"] == "snapshot"          # the co-instructor: same rights
    # A check, a help queue and two rounds of usage later, only the teachers heard them.
    assert amy.api("quizzes/exercises/q1/check", {"course": cid, "answer": "no"}).status_code \
        == 200
    push.queue_changed(room, cid)
    for page in (teach, ta):
        learner_event(page, uid(room, "amy"))
        page.wait(lambda e: e["name"] == "help", "help")
        page.wait(lambda e: e["name"] == "usage", "usage")
        page.wait(lambda e: e["name"] == "usage", "usage")
    for page in (amy, olga, other, anon):
        assert not page.names() & STAFF_EVENTS, page.events
    # A learner's page that joins a course it may not follow leaves the one it was in.
    amy.join(room.other_course)
    push.to_course(room, cid, "announcement", {"id": 3, "text": "after"})
    assert "announcement" not in amy.names()


def test_a_removed_co_instructor_stops_hearing_and_is_told(room):
    cid = room.course_id
    ta = Page(room, "ta")
    assert ta.join(cid)["name"] == "snapshot"
    ta.wait(lambda e: e["name"] == "usage", "usage")
    with room.app_context():
        db.session.execute(db.delete(CourseStaff).where(CourseStaff.course_id == cid))
        db.session.commit()
    # The sampler's next round finds them gone: told, and out of the teachers' room.
    got = ta.wait(lambda e: e["name"] == "error", "forbidden")
    assert got["reason"] == "forbidden"
    ta.events.clear()
    push.to_staff(room, cid, "bulk", {"action": "stop", "done": 1, "total": 1, "failed": 0})
    assert "bulk" not in ta.names()
    assert ta.join(cid)["reason"] == "forbidden"
    usage = room.extensions[CLASSROOM].usage
    deadline = time.monotonic() + 5
    while usage.watched(cid):   # their page was the only one: the sampler stops
        assert time.monotonic() < deadline, usage.samplers
        time.sleep(0.02)


def test_signing_out_cuts_the_page(room):
    teach = Page(room, "teach")
    teach.join(room.course_id)
    logout(teach.web)
    deadline = time.monotonic() + 5
    while teach.sio.is_connected(NS):
        assert time.monotonic() < deadline, "the signed-out page is still connected"
        time.sleep(0.05)
    assert not room.extensions[CLASSROOM].usage.watchers


def test_a_learners_hello_has_their_announcements_hand_and_takeover(room):
    cid = room.course_id
    with room.app_context():
        teach, amy, bob = _uid("teach"), _uid("amy"), _uid("bob")
        now = utcnow()
        for n, (to, age) in enumerate([(None, 3), (amy, 2), (bob, 1), (None, 90000)]):
            db.session.add(Announcement(course_id=cid, author_id=teach, to_user_id=to,
                                        text=f"note {n}", created=now - timedelta(seconds=age)))
        for n in range(6):   # six more to everyone: only the latest five are sent
            db.session.add(Announcement(course_id=cid, author_id=teach, text=f"more {n}",
                                        created=now - timedelta(seconds=1 - n * 0.01)))
        db.session.add(Announcement(course_id=room.other_course, author_id=teach, text="x"))
        db.session.add(HelpRequest(course_id=cid, user_id=amy, message="help me"))
        db.session.commit()
    hello = Page(room, "amy").join(cid)
    assert hello["name"] == "hello" and hello["takeover"] is None
    assert [a["text"] for a in hello["announcements"]] == [f"more {n}" for n in range(1, 6)]
    assert hello["announcements"][0]["author"] == "teach"
    assert hello["hand"]["message"] == "help me"
    with room.app_context():
        db.session.execute(db.delete(Announcement).where(Announcement.text.like("more%")))
        db.session.commit()
    hello = Page(room, "amy").join(cid)
    assert [(a["text"], a["personal"]) for a in hello["announcements"]] == \
        [("note 0", False), ("note 1", True)]   # not Bob's, not yesterday's
    assert Page(room, "bob").join(cid)["hand"] is None
    # A takeover asked of Amy (webapp.classroom.takeover): her page learns it on joining.
    room.extensions[TAKEOVERS].ask(cid, uid(room, "amy"), uid(room, "teach"), "teach")
    assert Page(room, "amy").join(cid)["takeover"] == {"state": "asked", "by": "teach"}
    assert Page(room, "bob").join(cid)["takeover"] is None


# ---------------------------------------------------------------- usage

def test_usage_samples_each_learners_sandbox_one_call_at_a_time(room):
    cid = room.course_id
    daemon = room.extensions[CLASSROOM].usage.daemon
    with room.app_context():
        ids = {n: _uid(n) for n in ("amy", "bob", "cat")}
        for name, sid, state in (("amy", "sb-amy", SandboxState.RUNNING),
                                 ("bob", "sb-bob", SandboxState.RUNNING),
                                 ("cat", "sb-cat", SandboxState.STOPPED)):
            db.session.add(SandboxAssignment(user_id=ids[name], course_id=cid,
                                             lab_id="quizzes", sandbox_id=sid, state=state))
        db.session.commit()
    daemon.gone.add("sb-bob")   # vanished since the assignment said running
    pages = [Page(room, "teach"), Page(room, "teach"), Page(room, "ta")]
    for page in pages:
        page.join(cid)
    usage = room.extensions[CLASSROOM].usage
    assert list(usage.samplers) == [cid]   # one sampler for the course's three pages
    data = pages[0].wait(lambda e: e["name"] == "usage"
                         and e["sandboxes"][str(ids["amy"])]["cpu"] is not None, "a rate")
    amy = data["sandboxes"][str(ids["amy"])]
    assert amy["state"] == "running" and amy["cpu"] == pytest.approx(0.5, abs=0.25)
    assert (amy["cpu_max"], amy["memory"], amy["memory_max"]) == (1.0, 64 << 20, 256 << 20)
    assert data["sandboxes"][str(ids["bob"])]["state"] == "stopped"
    assert data["sandboxes"][str(ids["cat"])] == {"cpu": None, "cpu_max": None,
                                                  "memory": None, "memory_max": None,
                                                  "state": "stopped"}
    for page in pages:
        for _ in range(3):
            page.wait(lambda e: e["name"] == "usage", "usage")
    assert daemon.most_in_flight == 1
    # The learner's current lab moves with their row: a sandbox of "more" once they are there.
    with room.app_context():
        db.session.add(SandboxAssignment(user_id=ids["cat"], course_id=cid, lab_id="more",
                                         sandbox_id="sb-broken", state=SandboxState.RUNNING))
        db.session.add(Attempt(user_id=ids["cat"], course_id=cid, lab_id="more",
                               exercise_id="m1", passed=False, feedback=""))
        db.session.commit()
    push.learner_changed(room, cid, ids["cat"])
    assert learner_event(pages[0], ids["cat"])["lab"] == "more"
    pages[0].wait(lambda e: e["name"] == "usage"
                  and e["sandboxes"][str(ids["cat"])]["state"] == "unavailable", "cat's")
    # Reading stats is never activity.
    with room.app_context():
        activity = room.extensions["nslab.activity"]
        assert all(activity.last(s) is None for s in ("sb-amy", "sb-bob", "sb-broken"))
    # The last page gone, the sampler stops and sandboxd is asked no more.
    sampler = usage.samplers[cid]
    for page in pages:
        page.sio.disconnect(namespace=NS)
    assert sampler.stopped and not usage.samplers
    deadline = time.monotonic() + 5
    while True:   # one call may have been in flight when the last page left
        calls = daemon.calls
        time.sleep(0.2)
        if daemon.calls == calls:
            break
        assert time.monotonic() < deadline


def test_the_sampler_sends_a_fresh_snapshot_now_and_then(tmp_path, webapp_schema):
    labs = tmp_path / "labs"
    quiz_lab(labs, "quizzes", [["q1"]])
    app = _make_app(tmp_path, webapp_schema, labs, CLASSROOM_SNAPSHOT_INTERVAL=0.2)
    try:
        app.extensions[CLASSROOM].usage.daemon = FakeDaemon()
        make_user(app, "teach", Role.INSTRUCTOR)
        make_user(app, "amy")
        cid, _ = make_course(app, "teach", labs=("quizzes",), learners=("amy",))
        teach = Page(app, "teach")
        first = teach.join(cid)
        again = teach.wait(lambda e: e["name"] == "snapshot", "a second snapshot")
        assert again["time"] > first["time"] and again["learners"][0]["username"] == "amy"
    finally:
        _close(app)


@pytest.mark.privileged
def test_usage_of_a_real_sandbox(tmp_path, webapp_schema, sandboxd):
    labs = tmp_path / "labs"
    shutil.copytree(ROOT / "labs" / "example", labs / "example",
                    ignore=shutil.ignore_patterns("__pycache__"))
    app = _make_app(tmp_path, webapp_schema, labs, NSLAB_SOCKET=str(sandboxd.socket),
                    CLASSROOM_USAGE_INTERVAL=0.2)
    client = sandboxd.client()
    made = None
    try:
        make_user(app, "teach", Role.INSTRUCTOR)
        make_user(app, "amy")
        cid, _ = make_course(app, "teach", labs=("example",), learners=("amy",))
        with app.app_context():
            made = sandbox_for(db.session.execute(db.select(User).filter_by(
                username="amy")).scalar_one(), cid, "example")
            amy = _uid("amy")
            before = app.extensions["nslab.activity"].last(made)
        teach = Page(app, "teach")
        assert teach.join(cid)["learners"][0]["sandbox"] == "running"
        data = teach.wait(lambda e: e["name"] == "usage"
                          and e["sandboxes"][str(amy)]["cpu"] is not None, "a rate", 30)
        mine = data["sandboxes"][str(amy)]
        assert mine["state"] == "running" and mine["cpu_max"] == 1.0
        assert mine["memory_max"] == 256 << 20 and 0 < mine["memory"] < 256 << 20
        assert app.extensions["nslab.activity"].last(made) == before   # not activity
        client.stop(made)
        teach.wait(lambda e: e["name"] == "usage"
                   and e["sandboxes"][str(amy)]["state"] == "stopped", "stopped", 30)
    finally:
        _close(app)
        if made is not None:
            client.destroy(made, purge=True)
