"""Learners' sandboxes: one per (learner, course, lab), made on first open, reused after.

The web app holds only a `sandbox.client.Client`; every privileged step happens in
sandboxd. A learner's home volume is named after the assignment, so it outlives a
sandbox that was stopped or destroyed and comes back when the lab is opened again.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone

from flask import current_app, has_app_context

from nslab.labformat import DEFAULT_SANDBOX
from sandbox.client import Client
from sandbox.errors import NotFound, SandboxError

from .extensions import db
from .models import Course, CourseLab, SandboxAssignment, SandboxState, User

# A sandbox for a lab folder without lab.yaml (a plain lesson).
DEFAULT_LIMITS = DEFAULT_SANDBOX


_last_socket: list = [None]

# Activity per sandbox id (time.time()), noted in memory on every keystroke and written to
# SandboxAssignment.last_active by the idle sweeper at most every IDLE_PERSIST_INTERVAL
# (webapp/idle.py). One web process serves every page, so memory is the whole truth.
_activity: dict[str, float] = {}
# Sandboxes whose pages were warned that an idle stop is near; activity clears it.
_warned: set[str] = set()
# The /terminal namespace, for events to the pages of one sandbox (see register()).
terminal_ns: list = [None]


def client() -> Client:
    """A client for this app's sandboxd. Terminal relay threads run outside any app
    context; they get the socket the app last used (one sandboxd per web process)."""
    if has_app_context():
        _last_socket[0] = current_app.config.get("NSLAB_SOCKET")
    return Client(_last_socket[0])


def touch_sandbox(sandbox_id: str | None) -> None:
    """Note activity in a sandbox (a keystroke, a page opened, a file moved): its idle
    stop starts counting again. Cheap, memory only; safe from any thread."""
    if not sandbox_id:
        return
    _activity[sandbox_id] = time.time()
    if sandbox_id in _warned:
        _warned.discard(sandbox_id)
        notify(sandbox_id, "idle", {"sandbox_id": sandbox_id, "seconds_left": None})


def touch(user_id: int, course_id: int, lab_id: str) -> bool:
    """Note activity in this learner's sandbox for the lab (a check ran, say), in memory
    and in its assignment's last_active (the caller's transaction carries that; the
    memory note counts at once). False if the learner has no sandbox for the lab."""
    assignment = db.session.execute(db.select(SandboxAssignment).filter_by(
        user_id=user_id, course_id=course_id, lab_id=str(lab_id))).scalar_one_or_none()
    if assignment is None or not assignment.sandbox_id:
        return False
    touch_sandbox(assignment.sandbox_id)
    assignment.last_active = datetime.now(timezone.utc)
    return True


def last_activity(assignment: SandboxAssignment) -> float:
    """When the sandbox last saw activity (epoch seconds): memory or database, the later."""
    stored = assignment.last_active
    if stored is None:
        at = 0.0
    else:
        if stored.tzinfo is None:  # SQLite hands back naive datetimes; they are UTC
            stored = stored.replace(tzinfo=timezone.utc)
        at = stored.timestamp()
    return max(at, _activity.get(assignment.sandbox_id or "", 0.0))


def notify(sandbox_id: str, event: str, data: dict) -> None:
    """An event to every page attached to this sandbox's terminals (its learner's tabs,
    a watching instructor)."""
    ns = terminal_ns[0]
    if ns is not None:
        ns.to_sandbox(sandbox_id, event, data)


def _home_name(assignment: SandboxAssignment) -> str:
    return f"u{assignment.user_id}-c{assignment.course_id}-{assignment.lab_id}"


def _member_lab(user: User, course_id, lab_id) -> tuple[Course, str]:
    try:
        course = db.session.get(Course, int(course_id))
    except (TypeError, ValueError):
        course = None
    if course is None or not (course.is_taught_by(user) or course.has_learner(user)):
        raise NotFound("no such course for you")
    lab = str(lab_id or "")
    if not any(cl.lab_id == lab for cl in course.labs):
        raise NotFound(f"the course has no lab {lab!r}")
    return course, lab


def sandbox_for(user: User, course_id, lab_id) -> str:
    """The id of this learner's running sandbox for the lab, creating or starting it."""
    if not getattr(user, "is_authenticated", False):
        raise NotFound("sign in first")
    course, lab = _member_lab(user, course_id, lab_id)
    assignment = db.session.execute(db.select(SandboxAssignment).filter_by(
        user_id=user.id, course_id=course.id, lab_id=lab)).scalar_one_or_none()
    if assignment is None:
        assignment = SandboxAssignment(user_id=user.id, course_id=course.id, lab_id=lab)
        db.session.add(assignment)
        db.session.flush()
    c = client()
    sid = assignment.sandbox_id
    touch_sandbox(sid)  # before the daemon is asked: an idle stop under way holds off
    if sid:
        try:
            state = c.get(sid)["state"]
            if state != "running":
                c.start(sid)
        except NotFound:
            sid = None
    if not sid:
        sid = _create(c, user, course, lab, assignment)
    assignment.sandbox_id = sid
    assignment.state = SandboxState.RUNNING
    assignment.last_active = datetime.now(timezone.utc)
    db.session.commit()
    touch_sandbox(sid)
    return sid


def _create(c: Client, user: User, course: Course, lab_id: str,
            assignment: SandboxAssignment) -> str:
    """A new sandbox with the lab's limits (over the defaults), its setup script run with
    this learner's drawn values; nothing is left behind if the setup fails."""
    from nslab.labtest import run_setup

    from . import progress

    lab = progress.load(lab_id)
    usable = lab is not None and lab.ok
    limits = lab.sandbox_limits if usable else DEFAULT_LIMITS
    sb = c.create(**limits, home=_home_name(assignment),
                  labels={"user": user.username, "course": str(course.id), "lab": lab_id})
    if usable and lab.setup:
        try:
            run_setup(c, sb["id"], lab, progress.params_for(user, course, lab))
        except SandboxError:
            c.destroy(sb["id"])
            raise
    return sb["id"]


def reset(user: User, course_id, lab_id) -> bool:
    """Destroy this learner's sandbox for the lab (its home volume is kept); the next open
    makes a fresh one. False if there was none."""
    course, lab = _member_lab(user, course_id, lab_id)
    assignment = db.session.execute(db.select(SandboxAssignment).filter_by(
        user_id=user.id, course_id=course.id, lab_id=lab)).scalar_one_or_none()
    if assignment is None or not assignment.sandbox_id:
        return False
    try:
        client().destroy(assignment.sandbox_id)
    except NotFound:
        pass
    _activity.pop(assignment.sandbox_id, None)
    _warned.discard(assignment.sandbox_id)
    assignment.sandbox_id = None
    assignment.state = SandboxState.STOPPED
    db.session.commit()
    return True


def may_use(user: User, sandbox_id: str, mode: str) -> bool:
    """Write: only the learner it belongs to. Read: also the instructor of its course."""
    if not getattr(user, "is_authenticated", False) or not sandbox_id:
        return False
    assignment = db.session.execute(db.select(SandboxAssignment).filter_by(
        sandbox_id=sandbox_id)).scalar_one_or_none()
    if assignment is None:
        return False
    if assignment.user_id == user.id:
        return True
    return mode == "read" and assignment.course.is_taught_by(user)


def register(socketio) -> None:
    from .terminal import register_terminal

    def find(user, course, lab):
        try:
            return sandbox_for(user, course, lab)
        except SandboxError:
            db.session.rollback()
            raise

    terminal_ns[0] = register_terminal(socketio, get_client=client, authorize=may_use,
                                       find_sandbox=find, on_activity=touch_sandbox)
