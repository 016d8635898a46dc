"""The one way live-classroom events reach pages: from a request, a background task or a
sampler thread, with the app handed in (never `current_app`: a caller may have none).

Each function is a no-op in an app without the `/classroom` namespace (`init_app` not
called), and `learner_changed` / `queue_changed` do nothing while no teacher's page
watches the course (nobody would hear; the check's request pays nothing). Sending never
waits on a slow page: socket.io queues what it emits per connection. A row that cannot be
made is logged, never raised: a push must not turn a stored check into an error.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from flask import Flask, current_app, has_app_context

from ..extensions import db
from ..models import Course
from . import roster
from .namespace import ClassroomNamespace, course_room, learner_room, staff_room

log = logging.getLogger("nslab.classroom")

CLASSROOM = "nslab.classroom"   # app.extensions[CLASSROOM]: the ClassroomNamespace


def namespace(app: Flask) -> ClassroomNamespace | None:
    return app.extensions.get(CLASSROOM)


def to_staff(app: Flask, course_id: int, event: str, data: dict) -> None:
    """`event` to every teacher's page of the course."""
    ns = namespace(app)
    if ns is not None:
        ns.send(staff_room(course_id), event, data)


def to_course(app: Flask, course_id: int, event: str, data: dict) -> None:
    """`event` to every learner's page of the course."""
    ns = namespace(app)
    if ns is not None:
        ns.send(course_room(course_id), event, data)


def to_learner(app: Flask, course_id: int, user_id: int, event: str, data: dict) -> None:
    """`event` to every page of one learner of the course."""
    ns = namespace(app)
    if ns is not None:
        ns.send(learner_room(course_id, user_id), event, data)


@contextmanager
def _context(app: Flask) -> Iterator[None]:
    """The caller's app context when it is `app`'s (a request: its session has committed
    what changed), else one of its own."""
    if has_app_context() and current_app._get_current_object() is app:
        yield
    else:
        with app.app_context():
            yield


def _watched(app: Flask, course_id: int) -> ClassroomNamespace | None:
    ns = namespace(app)
    return ns if ns is not None and ns.usage.watched(course_id) else None


def _safely(what: str, fn: Callable[[], None]) -> None:
    try:
        fn()
    except Exception:  # noqa: BLE001 - the change is stored; only the live view misses it
        log.exception("live classroom: could not push %s", what)


def learner_changed(app: Flask, course_id: int, user_id: int) -> None:
    """Send the teachers `learner {row}`: that learner's row made again (a check, a hint,
    a hand, their sandbox). Call it after the change is committed."""
    ns = _watched(app, course_id)
    if ns is None:
        return

    def push() -> None:
        with _context(app):
            course = db.session.get(Course, course_id)
            row = roster.learner_row(course, user_id) if course is not None else None
        if row is not None:
            ns.usage.set_lab(course_id, user_id, row["lab"])
            ns.send(staff_room(course_id), "learner", {"row": row})

    _safely(f"learner {user_id} of course {course_id}", push)


def queue_changed(app: Flask, course_id: int) -> None:
    """Send the teachers `help {help}`: the course's open requests, oldest first."""
    ns = _watched(app, course_id)
    if ns is None:
        return

    def push() -> None:
        with _context(app):
            course = db.session.get(Course, course_id)
            queue = roster.help_queue(course) if course is not None else []
        ns.send(staff_room(course_id), "help", {"help": queue})

    _safely(f"the help queue of course {course_id}", push)
