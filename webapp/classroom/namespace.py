"""The `/classroom` socket.io namespace (events in the package docstring).

Signed-in pages only (refused at connect otherwise, `SandboxRoomNamespace`). A page is in
one course at a time: `join {course}` first leaves whatever rooms the page was in, then
puts a teacher's page in `staff:<course>` (and watches the course's usage) or a learner's
in `course:<course>` and `learner:<course>:<uid>`; anyone else gets `error` forbidden and
is in no room. Rights are read again on every event, and the usage sampler rechecks every
teacher's page of its course each round (`recheck`): a co-instructor removed mid-class
stops receiving within one USAGE_INTERVAL, and their page is told (`error` forbidden).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta

from flask import request
from sqlalchemy import or_, select

from ..extensions import db
from ..models import Announcement, Course, User, utcnow
from ..socketusers import SandboxRoomNamespace
from . import roster
from .usage import Usage

NAMESPACE = "/classroom"
STAFF, LEARNER = "staff", "learner"
HELLO_ANNOUNCEMENTS = 5                 # the latest ones a learner's page is shown on join
HELLO_WITHIN = timedelta(days=1)        # ... from this far back at most

# (course id, learner id) -> the learner's takeover state for `hello`, or None.
TakeoverState = Callable[[int, int], "dict | None"]


def staff_room(course_id: int) -> str:
    return f"staff:{course_id}"


def course_room(course_id: int) -> str:
    return f"course:{course_id}"


def learner_room(course_id: int, user_id: int) -> str:
    return f"learner:{course_id}:{user_id}"


def announcement_json(a: Announcement, author: str | None) -> dict:
    """The `announcement` event (and an entry of `hello`'s list)."""
    return {"id": a.id, "text": a.text, "author": author,
            "at": roster.iso(a.created), "personal": a.to_user_id is not None}


def _no_sandboxes(user, sandbox_id: str, mode: str) -> bool:
    return False   # this namespace has no sandbox rooms: nothing is ever asked of it


class ClassroomNamespace(SandboxRoomNamespace):
    """`/classroom` for one app; `usage` (set by `init_app`) holds the course samplers.
    `takeover_state` answers `hello`'s takeover (None until a takeover module is wired)."""

    usage: Usage

    def __init__(self, namespace: str = NAMESPACE, *,
                 takeover_state: TakeoverState | None = None, **kwargs):
        super().__init__(namespace, authorize=_no_sandboxes, **kwargs)
        self.takeover_state = takeover_state or (lambda course_id, user_id: None)
        self._pages_lock = threading.Lock()
        self.pages: dict[str, tuple[int, str]] = {}   # sid -> (course id, STAFF|LEARNER)

    # ------------------------------------------------------------ sending (any thread)

    def send(self, room: str, event: str, data: dict) -> None:
        with self._emit_lock:
            self.socketio.emit(event, data, to=room, namespace=self.namespace)

    # ------------------------------------------------------------ pages

    def _left(self, sid: str) -> None:
        with self._pages_lock:
            self.pages.pop(sid, None)
        self.usage.unwatch(sid)

    def _leave_rooms(self, sid: str) -> None:
        with self._pages_lock:
            page = self.pages.pop(sid, None)
        if page is None:
            return
        course_id, kind = page
        if kind == STAFF:
            self.leave_room(sid, staff_room(course_id))
            self.usage.unwatch(sid)
        else:
            self.leave_room(sid, course_room(course_id))
            user = self.users.get(sid)
            if user is not None:
                self.leave_room(sid, learner_room(course_id, user))

    def staff_pages(self, course_id: int) -> list[str]:
        with self._pages_lock:
            return [sid for sid, page in self.pages.items() if page == (course_id, STAFF)]

    def recheck(self, course_id: int) -> None:
        """Drop the teacher pages of `course_id` whose user no longer teaches it (in an
        app context; the usage sampler calls it each round)."""
        sids = self.staff_pages(course_id)
        if not sids:
            return
        course = db.session.get(Course, course_id)
        teachers = set(course.teacher_ids()) if course is not None else set()
        for sid in sids:
            if self.users.get(sid) not in teachers:
                self._leave_rooms(sid)
                self.send(sid, "error", {"message": "you no longer teach this course",
                                         "reason": "forbidden"})

    # ------------------------------------------------------------ events

    def on_join(self, data):
        """{course} → a teacher's page: `snapshot`; a learner's: `hello`."""
        sid = request.sid
        course_id = data.get("course") if isinstance(data, dict) else None
        if isinstance(course_id, bool) or not isinstance(course_id, int):
            return self._error("join needs {course: id}", "invalid")
        user = self.get_user()
        if self.user_key(user) is None:
            return self._error("sign in first", "forbidden")
        # Whatever the answer, the page is in no room of its old course any more: a
        # teacher removed since, or a learner who left, must not go on receiving.
        self._leave_rooms(sid)
        course = db.session.get(Course, course_id)
        if course is None:
            return self._error("there is no such course", "not_found")
        if course.is_taught_by(user):
            snap = roster.snapshot(course)
            with self._pages_lock:
                self.pages[sid] = (course_id, STAFF)
            self.enter_room(sid, staff_room(course_id))
            self.usage.watch(sid, course_id, snap)
            self.emit("snapshot", snap, room=sid)
        elif course.has_learner(user):
            with self._pages_lock:
                self.pages[sid] = (course_id, LEARNER)
            self.enter_room(sid, course_room(course_id))
            self.enter_room(sid, learner_room(course_id, user.id))
            self.emit("hello", self.hello(course, user.id), room=sid)
        else:
            self._error("only the course's teachers and learners follow it", "forbidden")

    def on_leave(self, data=None):
        """The page follows no course any more."""
        self._leave_rooms(request.sid)

    def hello(self, course: Course, user_id: int) -> dict:
        """What a learner's page is told on joining: the latest announcements to them
        (oldest first, as they came), their open hand, their takeover."""
        since = utcnow() - HELLO_WITHIN
        latest = db.session.execute(
            select(Announcement, User.username)
            .outerjoin(User, User.id == Announcement.author_id)
            .where(Announcement.course_id == course.id, Announcement.created >= since,
                   or_(Announcement.to_user_id.is_(None), Announcement.to_user_id == user_id))
            .order_by(Announcement.created.desc(), Announcement.id.desc())
            .limit(HELLO_ANNOUNCEMENTS)).all()
        hands = roster.help_queue(course, user_id=user_id)
        hand = hands[-1] if hands else None
        return {"announcements": [announcement_json(a, name) for a, name in reversed(latest)],
                "hand": None if hand is None else {k: hand[k] for k in ("id", "message", "at",
                                                                         "claimed_by")},
                "takeover": self.takeover_state(course.id, user_id)}
