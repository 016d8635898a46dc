"""The live classroom's authorization matrix: every route of the contract
(webapp/classroom/__init__.py) and every `/classroom` socket.io event, for every kind of
caller, with the status (or event) each must get — and a refused request changes nothing.

Callers: anonymous, the course's learner, a learner of another course, the instructor of
another course, the course's instructor (its owner), a co-instructor, a removed
co-instructor. The routes that would reach sandboxd are sent a body that is refused only
after the caller was let in (400 for a teacher), so no daemon is needed and the rights are
still what is tested."""

from __future__ import annotations

import shutil
from dataclasses import dataclass

import pytest
from sqlalchemy import select
from webapp_helpers import login, make_course, make_user

from webapp import create_app
from webapp.classroom import push
from webapp.config import TestConfig
from webapp.extensions import db, socketio
from webapp.models import (Announcement, CourseStaff, HelpRequest, Role, SandboxAssignment,
                           User)

NS = "/classroom"
CALLERS = ("anonymous", "learner", "other_learner", "other_instructor", "instructor",
           "co_instructor", "removed")
LOGINS = {"learner": "amy", "other_learner": "bob", "other_instructor": "far",
          "instructor": "own", "co_instructor": "ta", "removed": "ex"}
TAKEOVERS = "nslab.takeovers"  # webapp.classroom.takeover.TAKEOVERS (B2's module)


def teachers(ok: int, anonymous: int = 401) -> dict[str, int]:
    """The course's instructor and co-instructor get `ok`; everyone else is refused."""
    return {"anonymous": anonymous, "learner": 403, "other_learner": 403,
            "other_instructor": 403, "instructor": ok, "co_instructor": ok, "removed": 403}


def learners(ok: int) -> dict[str, int]:
    """Only the course's learner gets `ok`: a teacher is refused a learner's own action."""
    return {"anonymous": 401, "learner": ok, "other_learner": 403, "other_instructor": 403,
            "instructor": 403, "co_instructor": 403, "removed": 403}


def owner(ok: int) -> dict[str, int]:
    """Only the course's owner; a co-instructor is refused."""
    return {**teachers(ok), "co_instructor": 403}


@dataclass
class Route:
    name: str
    method: str
    path: str               # {c} course, {amy} the learner's id, {rid} her open request,
    expect: dict[str, int]  # {ta} the co-instructor's id
    body: dict | None = None
    page: bool = False      # a page: anonymous is sent to the sign-in page
    takeover: bool = False  # needs a take-over of amy asked already


ROUTES = [
    Route("live", "GET", "/courses/{c}/live", teachers(200, anonymous=302), page=True),
    Route("live_state", "GET", "/courses/{c}/live/state", teachers(200)),
    Route("stats", "GET", "/courses/{c}/stats", teachers(200, anonymous=302), page=True),
    Route("stats_json", "GET", "/courses/{c}/stats.json", teachers(200)),
    Route("watch", "GET", "/courses/{c}/live/watch/{amy}/intro", teachers(200, anonymous=302),
          page=True),
    Route("help", "POST", "/courses/{c}/help", learners(201), {"message": "stuck"}),
    Route("help_cancel", "POST", "/courses/{c}/help/cancel", learners(200), {}),
    Route("help_claim", "POST", "/courses/{c}/help/{rid}/claim", teachers(200), {}),
    Route("help_close", "POST", "/courses/{c}/help/{rid}/close", teachers(200), {}),
    Route("announce", "POST", "/courses/{c}/announcements", teachers(201), {"text": "Hello"}),
    Route("announce_one", "POST", "/courses/{c}/announcements", teachers(201),
          {"text": "Hello you", "to": "{amy}"}),
    # Refused for the lab (400) only once the caller is let in: nothing reaches sandboxd.
    Route("reset", "POST", "/courses/{c}/learners/{amy}/reset", teachers(400), {"lab": 5}),
    Route("extend", "POST", "/courses/{c}/learners/{amy}/extend", teachers(400),
          {"minutes": 0}),
    Route("start_all", "POST", "/courses/{c}/sandboxes/start-all", teachers(400), {"lab": 5}),
    Route("stop_all", "POST", "/courses/{c}/sandboxes/stop-all", teachers(202), {}),
    Route("takeover_ask", "POST", "/courses/{c}/learners/{amy}/takeover", teachers(201), {}),
    Route("takeover_answer", "POST", "/courses/{c}/takeover/answer", learners(200),
          {"allow": True}, takeover=True),
    Route("takeover_end", "POST", "/courses/{c}/takeover/end",
          {**teachers(200), "learner": 200}, {"user": "{amy}"}, takeover=True),
    Route("staff_add", "POST", "/courses/{c}/staff", owner(201), {"username": "ta2"}),
    Route("staff_remove", "POST", "/courses/{c}/staff/{ta}/remove", owner(200), {}),
]


class World:
    """`own` owns course c (lab intro, learner amy, co-instructor ta; ex was one and was
    removed through the staff route); `far` owns course c2 (learner bob); ta2 is an
    instructor of nothing. amy has an open help request `rid`."""

    def __init__(self, app):
        self.app = app
        for name, role in (("own", Role.INSTRUCTOR), ("ta", Role.INSTRUCTOR),
                           ("ex", Role.INSTRUCTOR), ("ta2", Role.INSTRUCTOR),
                           ("far", Role.INSTRUCTOR), ("amy", Role.LEARNER),
                           ("bob", Role.LEARNER)):
            make_user(app, name, role)
        self.c, _ = make_course(app, "own", "Containers", labs=("intro",), learners=("amy",))
        self.c2, _ = make_course(app, "far", "Elsewhere", labs=("intro",), learners=("bob",))
        with app.app_context():
            self.uid = {u.username: u.id for u in db.session.scalars(select(User))}
            for name in ("ta", "ex"):
                db.session.add(CourseStaff(course_id=self.c, user_id=self.uid[name]))
            hand = HelpRequest(course_id=self.c, user_id=self.uid["amy"], message="help")
            db.session.add(hand)
            db.session.commit()
            self.rid = hand.id
        r = self.client("instructor").post(f"/courses/{self.c}/staff/{self.uid['ex']}/remove",
                                           headers={"Accept": "application/json"})
        assert r.status_code == 200, r.text

    def client(self, caller: str):
        web = self.app.test_client()
        if caller != "anonymous":
            assert login(web, LOGINS[caller]).status_code == 302
        return web

    def fill(self, value, course: int | None = None):
        ids = {"c": self.c if course is None else course, "amy": self.uid["amy"],
               "rid": self.rid, "ta": self.uid["ta"]}
        if isinstance(value, str):
            if value.startswith("{") and value.endswith("}") and value[1:-1] in ids:
                return ids[value[1:-1]]  # a whole id: a number in JSON
            return value.format(**ids)
        if isinstance(value, dict):
            return {k: self.fill(v, course) for k, v in value.items()}
        return value

    def state(self) -> list:
        """Everything a refused request must leave as it was."""
        with self.app.app_context():
            db.session.expire_all()
            rows = [(h.id, h.user_id, h.message, h.lab_id, h.claimed_by_id, h.closed_at)
                    for h in db.session.scalars(select(HelpRequest).order_by(HelpRequest.id))]
            rows += [(a.id, a.text, a.to_user_id)
                     for a in db.session.scalars(select(Announcement))]
            rows += [(s.course_id, s.user_id) for s in db.session.scalars(select(CourseStaff))]
            rows += [(a.id, a.state, a.last_active)
                     for a in db.session.scalars(select(SandboxAssignment))]
        takeovers = self.app.extensions.get(TAKEOVERS)
        current = takeovers.current(self.c, self.uid["amy"]) if takeovers else None
        rows.append(current.state if current is not None else None)
        return rows

    def ask_takeover(self) -> None:
        takeovers = self.app.extensions.get(TAKEOVERS)
        if takeovers is not None:  # absent until the classroom's routes are registered
            takeovers.ask(self.c, self.uid["amy"], self.uid["own"], "own")

    def close(self) -> None:
        takeovers = self.app.extensions.get(TAKEOVERS)
        if takeovers is not None:
            # Ended here, the expiry timers a take-over started find nothing to do.
            for uid in self.uid.values():
                takeovers.end_for_user(uid)
        ns = push.namespace(self.app)
        if ns is not None:
            ns.usage.close()


@pytest.fixture
def world(tmp_path, webapp_schema):
    """The `World`, in an app with nothing running in the background."""
    shutil.copy(webapp_schema, tmp_path / "nslab.db")
    (tmp_path / "labs").mkdir()
    app = create_app(TestConfig(
        tmp_path, LABS_DIR=str(tmp_path / "labs"), NSLAB_SOCKET=str(tmp_path / "none.sock"),
        # Nothing in the background during a test: no sampler round, no take-over expiry.
        CLASSROOM_USAGE_INTERVAL=3600.0, CLASSROOM_SNAPSHOT_INTERVAL=3600.0,
        CLASSROOM_TAKEOVER_TTL=3600.0, CLASSROOM_RATE_LIMIT=1000))
    w = World(app)
    yield w
    w.close()
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


def _request(world: World, route: Route, caller: str, course: int | None = None):
    web = world.client(caller)
    path = world.fill(route.path, course)
    headers = {} if route.page else {"Accept": "application/json"}
    if route.method == "GET":
        return web.get(path, headers=headers)
    return web.post(path, json=world.fill(route.body, course), headers=headers)


CASES = [pytest.param(route, caller, id=f"{route.name}-{caller}")
         for route in ROUTES for caller in CALLERS]


@pytest.mark.parametrize("route, caller", CASES)
def test_route(world, route, caller):
    if route.takeover:
        world.ask_takeover()
    before = world.state()
    r = _request(world, route, caller)
    want = route.expect[caller]
    assert r.status_code == want, f"{route.method} {route.path} as {caller}: {r.status_code} " \
                                  f"{r.get_data(as_text=True)[:300]}"
    if want == 302:
        assert r.location.startswith("/login")
    elif want in (401, 403) and not route.page:
        assert r.get_json()["error"] == {401: "unauthorized", 403: "forbidden"}[want]
    if want in (302, 401, 403):
        assert world.state() == before, "a refused request changed something"


@pytest.mark.parametrize("route", ROUTES, ids=[r.name for r in ROUTES])
def test_unknown_course_is_404(world, route):
    caller = "learner" if route.expect["learner"] not in (401, 403) else "instructor"
    before = world.state()
    r = _request(world, route, caller, course=9999)
    assert r.status_code == 404, r.get_data(as_text=True)[:300]
    assert world.state() == before


# ---------------------------------------------------------------- socket.io /classroom

class Page:
    """A signed-in page on /classroom (a socket.io test client sharing the login)."""

    def __init__(self, world: World, caller: str):
        self.web = world.client(caller)
        self.sio = socketio.test_client(world.app, namespace=NS, flask_test_client=self.web)

    def events(self) -> list[tuple[str, dict]]:
        """What the page received since last asked."""
        got = self.sio.get_received(NS) if self.sio.is_connected(NS) else []
        return [(e["name"], e["args"][0] if e["args"] else None) for e in got]

    def join(self, course: int) -> list[tuple[str, dict]]:
        self.sio.emit("join", {"course": course}, namespace=NS)
        return self.events()


JOINED = {"learner": "hello", "instructor": "snapshot", "co_instructor": "snapshot"}
MARK = "authz-test"  # on the events this test pushes (a teacher's page also gets the
                     # sampler's own `usage` rounds, which start when it joins)


def push_everything(world: World, course: int) -> None:
    """One of each event the teachers' and the learners' rooms carry."""
    staff = {"learner": {"row": {"id": world.uid["amy"]}}, "usage": {"time": 0, "sandboxes": {}},
             "help": {"help": []}, "snapshot": {"learners": []},
             "bulk": {"action": "stop", "done": 0, "total": 0, "failed": 0},
             "takeover": {"user": world.uid["amy"], "state": "asked"}}
    for event, data in staff.items():
        push.to_staff(world.app, course, event, {**data, "mark": MARK})
    push.to_course(world.app, course, "announcement", {"id": 1, "text": "hi", "mark": MARK})
    push.to_learner(world.app, course, world.uid["amy"], "hand", {"hand": None, "mark": MARK})


def marked(events: list[tuple[str, dict]]) -> list[str]:
    return [name for name, data in events if isinstance(data, dict) and data.get("mark") == MARK]


STAFF_EVENTS = ["learner", "usage", "help", "snapshot", "bulk", "takeover"]


@pytest.mark.parametrize("caller", CALLERS)
def test_join(world, caller):
    page = Page(world, caller)
    if caller == "anonymous":
        assert not page.sio.is_connected(NS)  # refused at connect
        return
    assert page.sio.is_connected(NS)
    got = page.join(world.c)
    names = [name for name, _ in got if name != "usage"]
    if caller in JOINED:
        assert names == [JOINED[caller]], got
    else:
        assert names == ["error"] and got[0][1]["reason"] == "forbidden", got
    # The staff room hears only the course's teachers' pages; the course room only its
    # learners' (a learner's `join` never puts the page in the staff room).
    push_everything(world, world.c)
    received = page.events()
    if caller in ("instructor", "co_instructor"):
        assert marked(received) == STAFF_EVENTS
    elif caller == "learner":
        assert [name for name, _ in received] == ["announcement", "hand"]
    else:
        assert received == []
    page.sio.disconnect(NS)


def test_bad_join_changes_no_room(world):
    """A page that joined, then asks for a course it may not follow, leaves its old rooms."""
    page = Page(world, "co_instructor")
    assert "snapshot" in [n for n, _ in page.join(world.c)]
    got = [(n, d) for n, d in page.join(world.c2) if n != "usage"]
    assert [n for n, _ in got] == ["error"] and got[0][1]["reason"] == "forbidden"
    push_everything(world, world.c)
    push_everything(world, world.c2)
    assert marked(page.events()) == []
    for bad in (None, "1", True, {"course": "1"}, {"course": None}, [world.c]):
        page.sio.emit("join", bad, namespace=NS)
        got = page.events()
        assert [n for n, _ in got] == ["error"], (bad, got)
    page.sio.disconnect(NS)


def test_removed_co_instructor_page_stops_hearing_the_course_at_once(world):
    ta, amy = Page(world, "co_instructor"), Page(world, "learner")
    assert "snapshot" in [n for n, _ in ta.join(world.c)]
    assert [n for n, _ in amy.join(world.c)] == ["hello"]
    r = world.client("instructor").post(f"/courses/{world.c}/staff/{world.uid['ta']}/remove",
                                        headers={"Accept": "application/json"})
    assert r.status_code == 200
    got = [(n, d) for n, d in ta.events() if n != "usage"]
    assert [n for n, _ in got] == ["error"] and got[0][1]["reason"] == "forbidden", got
    push_everything(world, world.c)
    assert [n for n, _ in ta.events()] == []
    got = ta.join(world.c)
    assert [n for n, _ in got] == ["error"] and got[0][1]["reason"] == "forbidden"
    # Their HTTP requests are refused as well, in the same session.
    assert ta.web.get(f"/courses/{world.c}/live/state").status_code == 403
    # The learner's page was never in the staff room, and still hears the course.
    assert [n for n, _ in amy.events()] == ["announcement", "hand"]
    ta.sio.disconnect(NS)
    amy.sio.disconnect(NS)
