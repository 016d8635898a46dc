"""Helpers for the web app tests: accounts and courses made straight in the database, and
a signed-in page on one socket.io namespace."""

from __future__ import annotations

import re
import time

from webapp import services
from webapp.extensions import db, socketio
from webapp.models import Course, Role, User

PASSWORD = "correct horse"


def make_user(app, name: str, role: Role = Role.LEARNER, password: str = PASSWORD) -> int:
    with app.app_context():
        user = services.create_user(name, password, role)
        db.session.commit()
        return user.id


def make_course(app, instructor: str, title: str = "Containers", labs=("intro",),
                learners=()) -> tuple[int, str]:
    """A course taught by `instructor`, with these labs and learners; (id, join code)."""
    with app.app_context():
        course = services.create_course(title, User.by_name(instructor))
        db.session.flush()
        for lab in labs:
            services.add_lab(course, lab)
        for name in learners:
            services.enroll(User.by_name(name), course)
        db.session.commit()
        return course.id, course.join_code


def login(web, name: str, password: str = PASSWORD, **kwargs):
    return web.post("/login", data={"username": name, "password": password}, **kwargs)


def logout(web):
    return web.post("/logout")


def csrf_token(html: str) -> str:
    match = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', html) or \
        re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "no csrf_token field in the page"
    return match.group(1)


def enrolled(app, name: str, course_id: int) -> bool:
    with app.app_context():
        return db.session.get(Course, course_id).has_learner(User.by_name(name))


def two_courses(app, lab: str) -> int:
    """Alice and Bob learn in Teach's course, Olga in Other's, each course with `lab`;
    Teach's course id."""
    for name, role in (("teach", Role.INSTRUCTOR), ("other", Role.INSTRUCTOR),
                       ("alice", Role.LEARNER), ("bob", Role.LEARNER), ("olga", Role.LEARNER)):
        make_user(app, name, role)
    course, _ = make_course(app, "teach", labs=(lab,), learners=("alice", "bob"))
    make_course(app, "other", labs=(lab,), learners=("olga",))
    return course


class SocketPage:
    """A signed-in browser (or an anonymous one: `name` None): a Flask test client plus a
    socket.io test client on `namespace`; `events` holds what it was sent, in order."""

    def __init__(self, app, name: str | None, namespace: str):
        self.namespace = namespace
        self.web = app.test_client()
        if name is not None:
            assert login(self.web, name).status_code in (302, 303)
        self.sio = socketio.test_client(app, namespace=namespace, flask_test_client=self.web)
        self.events: list[dict] = []

    def pump(self) -> None:
        """Take what the server queued so far (background threads append to the queue:
        get_received() rebuilds the list and can lose an event appended meanwhile)."""
        if not self.sio.is_connected(self.namespace):
            return
        q = self.sio.queue
        items = q[:len(q)]
        del q[:len(items)]
        self.events += [{"name": i["name"], **i["args"][0]} for i in items]

    def wait(self, pred, what: str, timeout: float = 30) -> dict:
        """The first event `pred` accepts, waiting up to `timeout` seconds for it."""
        deadline = time.monotonic() + timeout
        while True:
            self.pump()
            got = next((e for e in self.events if pred(e)), None)
            if got is not None:
                return got
            assert time.monotonic() < deadline, f"timed out waiting for {what}: {self.events}"
            time.sleep(0.02)
