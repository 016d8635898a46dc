"""Learners' sandboxes: one per (learner, course, lab), made on first open, reused after.

The web app holds only a `sandbox.client.Client`; every privileged step happens in
sandboxd. A learner's home volume is named after the assignment, so it outlives a
sandbox that was stopped or destroyed and comes back when the lab is opened again.

What an app holds for its sandboxes lives on the app, under the keys below, made by
`webapp.sandboxes.init_app`: the daemon's client, the activity tracker, the
`/terminal` namespace (the relays of the pages attached to each sandbox), and the locks
that let one open at a time make or start a learner's sandbox for a lab (several tabs
opened at once all get the one sandbox).
"""

from __future__ import annotations

import threading
from collections.abc import Hashable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone

from flask import Flask, current_app
from sqlalchemy.exc import IntegrityError

from nslab.labkit.model import DEFAULT_SANDBOX
from nslab.labkit.provision import run_setup
from sandbox.client import Client
from sandbox.errors import NotFound, SandboxError

from .. import labstore
from ..extensions import db
from ..models import Course, SandboxAssignment, SandboxState, User
from .activity import ActivityTracker

CLIENT = "nslab.sandboxd"      # app.extensions[CLIENT]: the sandbox.client.Client
ACTIVITY = "nslab.activity"    # app.extensions[ACTIVITY]: the ActivityTracker
TERMINAL = "nslab.terminal"    # app.extensions[TERMINAL]: the TerminalNamespace
OPENING = "nslab.opening"      # app.extensions[OPENING]: the KeyedLocks of sandbox_for
# app.extensions[GRANTS], where set: `allows(teacher_id, learner_id, course_id)`, whether a
# teacher may type in that learner's sandboxes of the course now (a consented take-over,
# webapp.classroom.takeover). Looked up, not imported: the classroom builds on this module.
GRANTS = "nslab.write_grants"


class KeyedLocks:
    """A lock per key (a learner's lab), made when first wanted and dropped when nobody
    holds it or waits for it, so the registry does not grow with every lab ever opened.
    The web app is one process (`nslab serve`), so these serialise every open of a lab."""

    def __init__(self):
        self._guard = threading.Lock()
        self._locks: dict[Hashable, list] = {}  # key -> [its lock, holders and waiters]

    @contextmanager
    def hold(self, key: Hashable) -> Iterator[None]:
        with self._guard:
            entry = self._locks.setdefault(key, [threading.Lock(), 0])
            entry[1] += 1
        try:
            with entry[0]:
                yield
        finally:
            with self._guard:
                entry[1] -= 1
                if not entry[1]:
                    del self._locks[key]

    def __len__(self) -> int:
        return len(self._locks)


def client() -> Client:
    """This app's client of sandboxd."""
    return current_app.extensions[CLIENT]


def tracker() -> ActivityTracker:
    """This app's activity tracker."""
    return current_app.extensions[ACTIVITY]


def touch_sandbox(sandbox_id: str | None) -> None:
    """Note activity in a sandbox (a page opened, a file moved): its idle stop starts
    counting again. Cheap, memory only."""
    tracker().touch(sandbox_id)


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


def notify(sandbox_id: str, event: str, data: dict, *, app: Flask | None = None) -> None:
    """An event to every page attached to this sandbox's terminals (its learner's tabs,
    a watching instructor). `app` is for a caller outside any app context (a keystroke's
    thread); others use the current app's."""
    terminal = (app or current_app).extensions.get(TERMINAL)
    if terminal is not None:
        terminal.to_sandbox(sandbox_id, event, data)


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
    """The id of this learner's running sandbox for the lab, creating or starting it.
    Opens of the same lab by the same learner (tabs opened at once) take turns: the
    first makes the sandbox, the others find it made."""
    if not getattr(user, "is_authenticated", False):
        raise NotFound("sign in first")
    course, lab = _member_lab(user, course_id, lab_id)
    with current_app.extensions[OPENING].hold((user.id, course.id, lab)):
        assignment = _assignment(user, course, lab)
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


def _assignment(user: User, course: Course, lab: str) -> SandboxAssignment:
    """The learner's assignment for the lab as committed now (another open may just have
    made its sandbox), made and committed first if there is none: no write transaction
    stays open while the daemon makes a sandbox (SQLite would hold every other writer)."""
    # What the caller has pending goes first; the commit also expires what the session
    # holds, so the read below sees what another open committed meanwhile.
    db.session.commit()
    query = db.select(SandboxAssignment).filter_by(
        user_id=user.id, course_id=course.id, lab_id=lab)
    assignment = db.session.execute(query).scalar_one_or_none()
    if assignment is not None:
        return assignment
    db.session.add(SandboxAssignment(user_id=user.id, course_id=course.id, lab_id=lab))
    try:
        db.session.commit()
    except IntegrityError:
        # Another web process made it between the read and the write.
        db.session.rollback()
    return db.session.execute(query).scalar_one()


def find_for_terminal(user: User, course_id, lab_id) -> str:
    """`sandbox_for` for the terminal's `open` by course and lab: a failure leaves no
    half-made assignment in the session the socket.io handler goes on with."""
    try:
        return sandbox_for(user, course_id, lab_id)
    except SandboxError:
        db.session.rollback()
        raise


def _create(c: Client, user: User, course: Course, lab_id: str,
            assignment: SandboxAssignment) -> str:
    """A new sandbox with the lab's limits (over the defaults), its setup script run with
    this learner's drawn values; nothing is left behind if the setup fails."""
    lab = labstore.load(lab_id)
    usable = lab is not None and lab.ok
    # A lab folder without lab.yaml (a plain lesson) gets the default sandbox.
    limits = lab.sandbox_limits if usable else DEFAULT_SANDBOX
    params = None
    if usable and lab.setup:
        # Drawn (and committed) before the sandbox is made: no write transaction waits
        # on the daemon.
        params = labstore.params_for(user, course, lab)
        db.session.commit()
    sb = c.create(**limits, home=_home_name(assignment),
                  labels={"user": user.username, "course": str(course.id), "lab": lab_id})
    if params is not None:
        try:
            run_setup(c, sb["id"], lab, params)
        except SandboxError:
            c.destroy(sb["id"])
            raise
    return sb["id"]


def reset(user: User, course_id, lab_id) -> bool:
    """Destroy this learner's sandbox for the lab (its home volume is kept); the next open
    makes a fresh one. False if there was none."""
    course, lab = _member_lab(user, course_id, lab_id)
    with current_app.extensions[OPENING].hold((user.id, course.id, lab)):  # not mid-open
        db.session.commit()  # a fresh read: an open may just have made the sandbox
        assignment = db.session.execute(db.select(SandboxAssignment).filter_by(
            user_id=user.id, course_id=course.id, lab_id=lab)).scalar_one_or_none()
        if assignment is None or not assignment.sandbox_id:
            return False
        try:
            client().destroy(assignment.sandbox_id)
        except NotFound:
            pass
        tracker().forget(assignment.sandbox_id)
        assignment.sandbox_id = None
        assignment.state = SandboxState.STOPPED
        db.session.commit()
    return True


def may_use(user: User, sandbox_id: str, mode: str) -> bool:
    """Write: the learner it belongs to, and a teacher of its course while that learner
    lets them take over (GRANTS). Read: also every teacher of its course."""
    if not getattr(user, "is_authenticated", False) or not sandbox_id:
        return False
    assignment = db.session.execute(db.select(SandboxAssignment).filter_by(
        sandbox_id=sandbox_id)).scalar_one_or_none()
    if assignment is None:
        return False
    if assignment.user_id == user.id:
        return True
    if mode != "read":
        grants = current_app.extensions.get(GRANTS)
        if grants is None or not grants.allows(user.id, assignment.user_id,
                                               assignment.course_id):
            return False
    return assignment.course.is_taught_by(user)
