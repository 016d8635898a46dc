"""The live classroom's routes (blueprint `classroom`): the teachers' page and its snapshot,
the watch page, and every POST that changes something — the help queue, announcements, a
learner's sandbox reset or idle extension, start-all and stop-all, take-over (the contract
is the docstring of `webapp.classroom`).

Every JSON route answers errors as `{"error": reason, "message"}` (400 bad input, 401
signed out, 403 not a teacher (or not a learner) of the course, 404 unknown course, learner
or lab, 409 conflict, 429 too many posts, 503 sandboxd unreachable), and changes nothing
when it answers one. After each change the pages hear it through `push`.

What the blueprint keeps lives on the app, set up when it is registered (`_setup`): the
take-overs (`takeover.TAKEOVERS`, also the sandboxes' write grants), the rate limiter of
learners' hands and teachers' announcements, the bulk task running per course, and a lock
that keeps a learner at one open hand.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from datetime import datetime, timezone

from flask import Blueprint, Flask, abort, current_app, jsonify, render_template, request
from flask_login import current_user, login_required, user_logged_out
from sqlalchemy import select

from sandbox.errors import DaemonUnavailable, NotFound, SandboxError

from .. import sandboxes
from ..extensions import db, socketio
from ..models import (Announcement, Course, HelpRequest, SandboxAssignment, SandboxState, User,
                      as_utc, utcnow)
from ..sandboxes.service import GRANTS, OPENING, TERMINAL
from . import push, roster
from .namespace import announcement_json
from .takeover import ENDED, TAKEOVERS, TTL, Takeover, TakeoverError, Takeovers

log = logging.getLogger("nslab.classroom")

bp = Blueprint("classroom", __name__)

LIMITER = "nslab.classroom.limiter"   # app.extensions[LIMITER]: the RateLimiter
BULK = "nslab.classroom.bulk"         # app.extensions[BULK]: the Bulk tasks
HANDS = "nslab.classroom.hands"       # app.extensions[HANDS]: lock of "one open hand each"

MAX_TEXT = 500        # a hand's message, an announcement
MAX_MINUTES = 240     # the longest idle extension
RATE_LIMIT = 10       # posts per RATE_WINDOW per user (hands; announcements)
RATE_WINDOW = 60.0


class ActionError(Exception):
    def __init__(self, status: int, reason: str, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.status, self.reason, self.message = status, reason, message
        self.retry_after = retry_after


class RateLimiter:
    """At most `limit` posts per `window` seconds per key (a user and what they post), in
    memory: the web app is one process. A learner must not be able to flood the teachers'
    page with hands, nor a teacher every learner's page with announcements."""

    def __init__(self, limit: int, window: float, clock: Callable[[], float] = time.monotonic):
        self.limit, self.window, self.clock = limit, window, clock
        self._lock = threading.Lock()
        self._posts: dict[Hashable, deque[float]] = {}

    def take(self, key: Hashable) -> float:
        """0 and the post counted, or the seconds until one more is allowed."""
        now = self.clock()
        with self._lock:
            posts = self._posts.setdefault(key, deque())
            while posts and now - posts[0] >= self.window:
                posts.popleft()
            if len(posts) >= self.limit:
                return self.window - (now - posts[0])
            posts.append(now)
            return 0.0


class Bulk:
    """The start-all or stop-all running for each course (one at a time per course)."""

    def __init__(self):
        self._lock = threading.Lock()
        self.running: dict[int, str] = {}   # course id -> action

    def claim(self, course_id: int, action: str) -> bool:
        with self._lock:
            if course_id in self.running:
                return False
            self.running[course_id] = action
            return True

    def release(self, course_id: int) -> None:
        with self._lock:
            self.running.pop(course_id, None)


@bp.record_once
def _setup(state) -> None:
    app: Flask = state.app
    takeovers = Takeovers(ttl=float(app.config.get("CLASSROOM_TAKEOVER_TTL", TTL)))
    app.extensions[TAKEOVERS] = takeovers
    app.extensions[GRANTS] = takeovers   # may_use asks it for a teacher's right to type
    app.extensions[LIMITER] = RateLimiter(int(app.config.get("CLASSROOM_RATE_LIMIT", RATE_LIMIT)),
                                          float(app.config.get("CLASSROOM_RATE_WINDOW",
                                                               RATE_WINDOW)))
    app.extensions[BULK] = Bulk()
    app.extensions[HANDS] = threading.Lock()

    def signed_out(sender, user=None, **extra):
        # A take-over lasts while both sides are signed in.
        if user is not None and getattr(user, "id", None) is not None:
            for t in takeovers.end_for_user(user.id):
                _finish_takeover(app, t)

    user_logged_out.connect(signed_out, app, weak=False)


@bp.errorhandler(ActionError)
def _action_error(e: ActionError):
    response = jsonify(error=e.reason, message=e.message)
    response.status_code = e.status
    if e.retry_after is not None:
        response.headers["Retry-After"] = str(max(1, math.ceil(e.retry_after)))
    return response


# ---------------------------------------------------------------- who and what

def _app() -> Flask:
    return current_app._get_current_object()


def _signed_in() -> None:
    # JSON routes say 401 (login_required would send a browser to the sign-in page).
    if not current_user.is_authenticated:
        raise ActionError(401, "unauthorized", "Sign in first.")


def _course(course_id: int) -> Course:
    course = db.session.get(Course, course_id)
    if course is None:
        raise ActionError(404, "not_found", "There is no such course.")
    return course


def _teacher_course(course_id: int) -> Course:
    _signed_in()
    course = _course(course_id)
    if not course.is_taught_by(current_user):
        raise ActionError(403, "forbidden", "Only the course's teachers can do that.")
    return course


def _learner_course(course_id: int) -> Course:
    _signed_in()
    course = _course(course_id)
    if not course.has_learner(current_user):
        raise ActionError(403, "forbidden", "Only the course's learners can do that.")
    return course


def _page_course(course_id: int) -> Course:
    """`_teacher_course` for a page: the app's error page, not JSON."""
    try:
        return _teacher_course(course_id)
    except ActionError as e:
        abort(e.status, description=e.message)


def _learner_of(course: Course, user_id) -> User:
    """A learner of this course (a teacher of it, or anybody else, is not one)."""
    if not isinstance(user_id, int) or isinstance(user_id, bool):
        raise ActionError(400, "bad_request", "user must be a user id (a number).")
    user = db.session.get(User, user_id)
    if user is None or not course.has_learner(user):
        raise ActionError(404, "not_found", "This course has no such learner.")
    return user


def _lab_of(course: Course, lab) -> str:
    if not isinstance(lab, str) or not 0 < len(lab) <= 64:
        raise ActionError(400, "bad_request", "lab must be a lab id (a string).")
    if course.lab(lab) is None:
        raise ActionError(404, "not_found", f"This course has no lab {lab!r}.")
    return lab


def _body() -> dict:
    """The POST's JSON object ({} for an empty body); 400 for anything else."""
    if not request.get_data():
        return {}
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ActionError(400, "bad_request", "The body must be a JSON object.")
    return body


def _text(value, what: str, *, required: bool) -> str:
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise ActionError(400, "bad_request", f"{what} must be a string.")
    text = value.strip()
    if required and not text:
        raise ActionError(400, "bad_request", f"{what} must not be empty.")
    if len(text) > MAX_TEXT:
        raise ActionError(400, "bad_request", f"{what} is at most {MAX_TEXT} characters.")
    return text


def _rate(kind: str) -> None:
    wait = current_app.extensions[LIMITER].take((kind, current_user.id))
    if wait:
        raise ActionError(429, "rate_limited",
                          f"Too many at once: try again in {math.ceil(wait)} seconds.",
                          retry_after=wait)


def _daemon_error(e: SandboxError) -> ActionError:
    if isinstance(e, DaemonUnavailable):
        return ActionError(503, "unavailable", "The sandbox service is not reachable; try "
                                               "again in a moment.")
    return ActionError(409, "sandbox_error", f"The sandbox service refused: {e.message}")


def _iso(at: datetime | None) -> str | None:
    return None if at is None else as_utc(at).isoformat()


def _assignments(user_id: int, course_id: int, *, running: bool = False):
    query = select(SandboxAssignment).where(SandboxAssignment.user_id == user_id,
                                            SandboxAssignment.course_id == course_id,
                                            SandboxAssignment.sandbox_id.is_not(None))
    if running:
        query = query.where(SandboxAssignment.state == SandboxState.RUNNING)
    return db.session.scalars(query.order_by(SandboxAssignment.id)).all()


# ---------------------------------------------------------------- pages

@bp.route("/courses/<int:course_id>/live")
@login_required
def live(course_id: int):
    course = _page_course(course_id)
    return render_template("courses/live.html", course=course)


@bp.route("/courses/<int:course_id>/live/state")
def live_state(course_id: int):
    course = _teacher_course(course_id)
    return jsonify(roster.snapshot(course))


@bp.route("/courses/<int:course_id>/live/watch/<int:user_id>/<lab_id>")
@login_required
def watch(course_id: int, user_id: int, lab_id: str):
    """One learner's terminal, read-only (and typed into while they let the teacher)."""
    course = _page_course(course_id)
    try:
        learner = _learner_of(course, user_id)
        lab = _lab_of(course, lab_id)
    except ActionError as e:
        abort(e.status, description=e.message)
    assignment = db.session.scalars(select(SandboxAssignment).filter_by(
        user_id=learner.id, course_id=course.id, lab_id=lab)).first()
    sandbox_id = assignment.sandbox_id if assignment is not None else None
    terminals = current_app.extensions.get(TERMINAL)
    exec_id = terminals.latest_shell.get(sandbox_id) if terminals and sandbox_id else None
    t = current_app.extensions[TAKEOVERS].current(course.id, learner.id)
    return render_template("courses/watch.html", course=course, learner=learner, lab=lab,
                           sandbox_id=sandbox_id, exec_id=exec_id,
                           takeover=t.as_json() if t is not None else None)


# ---------------------------------------------------------------- help queue

def help_json(h: HelpRequest) -> dict:
    """A request as the queue shows it (`roster.help_queue`), and whether it is closed."""
    return {"id": h.id, "user": h.user_id, "username": h.user.username, "lab": h.lab_id,
            "message": h.message, "at": _iso(h.created),
            "claimed_by": None if h.claimed_by is None
            else {"id": h.claimed_by_id, "username": h.claimed_by.username},
            "closed": h.closed_at is not None}


def _open_hand(course_id: int, user_id: int) -> HelpRequest | None:
    return db.session.scalars(select(HelpRequest).where(
        HelpRequest.course_id == course_id, HelpRequest.user_id == user_id,
        HelpRequest.closed_at.is_(None)).order_by(HelpRequest.id)).first()


def _hand_changed(course_id: int, user_id: int, hand: HelpRequest | None) -> None:
    app = _app()
    push.queue_changed(app, course_id)
    push.learner_changed(app, course_id, user_id)
    push.to_learner(app, course_id, user_id, "hand",
                    {"hand": help_json(hand) if hand is not None and hand.closed_at is None
                     else None})


@bp.route("/courses/<int:course_id>/help", methods=["POST"])
def raise_hand(course_id: int):
    course = _learner_course(course_id)
    body = _body()
    message = _text(body.get("message"), "message", required=False)
    lab = _lab_of(course, body["lab"]) if body.get("lab") is not None else None
    _rate("help")
    # One open hand per learner and course: the read and the insert take turns (one web
    # process; no unique index can say "one open row").
    with current_app.extensions[HANDS]:
        db.session.commit()   # a fresh read
        hand = _open_hand(course.id, current_user.id)
        created = hand is None
        if created:
            hand = HelpRequest(course_id=course.id, user_id=current_user.id)
            db.session.add(hand)
        hand.message = message
        if lab is not None or created:
            hand.lab_id = lab
        db.session.commit()
    _hand_changed(course.id, current_user.id, hand)
    return jsonify(help=help_json(hand), created=created), 201


@bp.route("/courses/<int:course_id>/help/cancel", methods=["POST"])
def lower_hand(course_id: int):
    course = _learner_course(course_id)
    _rate("help")
    with current_app.extensions[HANDS]:
        db.session.commit()
        hand = _open_hand(course.id, current_user.id)
        if hand is None:
            return jsonify(help=None, closed=False)   # lowered already (another tab)
        hand.closed_at = utcnow()
        hand.closed_by_id = current_user.id
        db.session.commit()
    _hand_changed(course.id, current_user.id, None)
    return jsonify(help=help_json(hand), closed=True)


def _request_of(course: Course, request_id: int) -> HelpRequest:
    hand = db.session.get(HelpRequest, request_id)
    if hand is None or hand.course_id != course.id:
        raise ActionError(404, "not_found", "This course has no such help request.")
    if hand.closed_at is not None:
        raise ActionError(409, "closed", "This help request is closed already.")
    return hand


@bp.route("/courses/<int:course_id>/help/<int:request_id>/claim", methods=["POST"])
def claim(course_id: int, request_id: int):
    """A teacher takes the request (another teacher may take it over from them: the
    queue shows who has it, and claiming again is how a colleague steps in)."""
    course = _teacher_course(course_id)
    with current_app.extensions[HANDS]:
        db.session.commit()
        hand = _request_of(course, request_id)
        before = hand.claimed_by
        taken_from = before.username if before is not None and before.id != current_user.id \
            else None
        hand.claimed_by_id = current_user.id
        hand.claimed_at = utcnow()
        db.session.commit()
    _hand_changed(course.id, hand.user_id, hand)
    # `taken_from`: the colleague who had it, for the page to say so.
    return jsonify(help=help_json(hand), taken_from=taken_from)


@bp.route("/courses/<int:course_id>/help/<int:request_id>/close", methods=["POST"])
def close(course_id: int, request_id: int):
    course = _teacher_course(course_id)
    with current_app.extensions[HANDS]:
        db.session.commit()
        hand = _request_of(course, request_id)
        hand.closed_at = utcnow()
        hand.closed_by_id = current_user.id
        db.session.commit()
    _hand_changed(course.id, hand.user_id, None)
    return jsonify(help=help_json(hand))


# ---------------------------------------------------------------- announcements

@bp.route("/courses/<int:course_id>/announcements", methods=["POST"])
def announce(course_id: int):
    course = _teacher_course(course_id)
    body = _body()
    text = _text(body.get("text"), "text", required=True)
    to = _learner_of(course, body["to"]) if body.get("to") is not None else None
    _rate("announce")
    a = Announcement(course_id=course.id, author_id=current_user.id, text=text,
                     to_user_id=to.id if to is not None else None)
    db.session.add(a)
    db.session.commit()
    data = announcement_json(a, current_user.username)
    if to is None:
        push.to_course(_app(), course.id, "announcement", data)
    else:
        push.to_learner(_app(), course.id, to.id, "announcement", data)
    return jsonify(announcement={**data, "to": a.to_user_id}), 201


# ---------------------------------------------------------------- one learner's sandbox

@bp.route("/courses/<int:course_id>/learners/<int:user_id>/reset", methods=["POST"])
def reset(course_id: int, user_id: int):
    """Destroy the learner's sandbox for the lab (their home is kept); their next open
    makes a fresh one."""
    course = _teacher_course(course_id)
    learner = _learner_of(course, user_id)
    lab = _lab_of(course, _body().get("lab"))
    before = [a.sandbox_id for a in _assignments(learner.id, course.id) if a.lab_id == lab]
    if not before:
        raise ActionError(404, "no_sandbox", f"{learner.username} has no sandbox for {lab}.")
    # The learner's pages hear why their shell ends.
    sandboxes.notify(before[0], "stopped", {"sandbox_id": before[0], "reason": "reset"})
    try:
        done = sandboxes.reset(learner, course.id, lab)
    except SandboxError as e:
        db.session.rollback()
        raise _daemon_error(e) from None
    if not done:   # reset meanwhile by the learner themselves
        raise ActionError(404, "no_sandbox", f"{learner.username} has no sandbox for {lab}.")
    push.learner_changed(_app(), course.id, learner.id)
    return jsonify(reset=True, user=learner.id, lab=lab)


@bp.route("/courses/<int:course_id>/learners/<int:user_id>/extend", methods=["POST"])
def extend(course_id: int, user_id: int):
    """The idle stop of the learner's running sandboxes of the course (or of one lab)
    waits `minutes` from now: noted as activity at now + minutes, in memory and in the
    assignment (so the sweeper, which takes the later of the two, honours it, and a
    warning the pages had is taken back)."""
    course = _teacher_course(course_id)
    learner = _learner_of(course, user_id)
    body = _body()
    minutes = body.get("minutes")
    if not isinstance(minutes, (int, float)) or isinstance(minutes, bool) \
            or not math.isfinite(minutes) or not 1 <= minutes <= MAX_MINUTES:
        raise ActionError(400, "bad_request", f"minutes must be a number from 1 to {MAX_MINUTES}.")
    lab = _lab_of(course, body["lab"]) if body.get("lab") is not None else None
    running = [a for a in _assignments(learner.id, course.id, running=True)
               if lab is None or a.lab_id == lab]
    if not running:
        raise ActionError(404, "no_sandbox", f"{learner.username} has no running sandbox.")
    until = time.time() + minutes * 60
    until_dt = datetime.fromtimestamp(until, timezone.utc)
    for a in running:
        if a.last_active is None or as_utc(a.last_active) < until_dt:
            a.last_active = until_dt
    db.session.commit()
    for a in running:
        # After the commit: the warning's withdrawal goes out once the new time holds.
        sandboxes.tracker().touch_at(a.sandbox_id, until)
    push.learner_changed(_app(), course.id, learner.id)
    return jsonify(user=learner.id, until=until_dt.isoformat(),
                   sandboxes=[a.sandbox_id for a in running])


# ---------------------------------------------------------------- every sandbox of a course

@bp.route("/courses/<int:course_id>/sandboxes/start-all", methods=["POST"])
def start_all(course_id: int):
    course = _teacher_course(course_id)
    body = _body()
    labs = [_lab_of(course, body["lab"])] if body.get("lab") is not None \
        else [cl.lab_id for cl in course.labs]
    jobs = [(e.user_id, lab) for e in course.enrollments for lab in labs]
    return _start_bulk(course.id, "start", jobs, _start_one)


@bp.route("/courses/<int:course_id>/sandboxes/stop-all", methods=["POST"])
def stop_all(course_id: int):
    course = _teacher_course(course_id)
    _body()
    running = db.session.scalars(select(SandboxAssignment).where(
        SandboxAssignment.course_id == course.id,
        SandboxAssignment.state == SandboxState.RUNNING,
        SandboxAssignment.sandbox_id.is_not(None)).order_by(SandboxAssignment.id)).all()
    jobs = [(a.user_id, a.lab_id) for a in running]
    return _start_bulk(course.id, "stop", jobs, _stop_one)


def _start_bulk(course_id: int, action: str, jobs: list[tuple[int, str]],
                one: Callable[[int, int, str], bool]):
    app = _app()
    bulk: Bulk = app.extensions[BULK]
    if not bulk.claim(course_id, action):
        raise ActionError(409, "busy", f"A {bulk.running.get(course_id, 'bulk')}-all is "
                                       "under way for this course; wait for it to finish.")
    if not jobs:
        bulk.release(course_id)
        push.to_staff(app, course_id, "bulk", {"action": action, "done": 0, "total": 0,
                                               "failed": 0})
    else:
        socketio.start_background_task(_run_bulk, app, course_id, action, jobs, one)
    return jsonify(action=action, total=len(jobs)), 202


def _run_bulk(app: Flask, course_id: int, action: str, jobs: list[tuple[int, str]],
              one: Callable[[int, int, str], bool]) -> None:
    """One sandbox at a time (a class's worth at once would crowd the daemon), each in
    its own app context; the teachers hear `bulk` after each."""
    bulk: Bulk = app.extensions[BULK]
    done = failed = 0
    try:
        for user_id, lab in jobs:
            with app.app_context():
                try:
                    ok = one(course_id, user_id, lab)
                except SandboxError as e:
                    log.warning("%s-all: course %s, user %s, lab %s: %s", action, course_id,
                                user_id, lab, e.message)
                    ok = False
                except Exception:  # noqa: BLE001 - one learner's failure must not stop the rest
                    log.exception("%s-all: course %s, user %s, lab %s", action, course_id,
                                  user_id, lab)
                    ok = False
            done += 1
            failed += not ok
            if done == len(jobs):
                bulk.release(course_id)   # before the last event: the page may go again
            push.to_staff(app, course_id, "bulk", {"action": action, "done": done,
                                                   "total": len(jobs), "failed": failed})
            push.learner_changed(app, course_id, user_id)
    finally:
        bulk.release(course_id)


def _start_one(course_id: int, user_id: int, lab: str) -> bool:
    user = db.session.get(User, user_id)
    if user is None:
        return False
    sandboxes.sandbox_for(user, course_id, lab)
    return True


def _stop_one(course_id: int, user_id: int, lab: str) -> bool:
    """Stop the learner's sandbox as the idle stop does (processes end; files are kept;
    opening the lab starts it again)."""
    with current_app.extensions[OPENING].hold((user_id, course_id, lab)):   # not mid-open
        db.session.commit()
        a = db.session.scalars(select(SandboxAssignment).filter_by(
            user_id=user_id, course_id=course_id, lab_id=lab)).first()
        if a is None or a.state != SandboxState.RUNNING or not a.sandbox_id:
            return True   # stopped meanwhile
        sid = a.sandbox_id
        # The pages hear it first, so the shells that end next are explained.
        sandboxes.notify(sid, "stopped", {"sandbox_id": sid, "reason": "instructor"})
        try:
            sandboxes.client().stop(sid)
        except NotFound:
            pass   # destroyed meanwhile: stopped enough
        a.state = SandboxState.STOPPED
        db.session.commit()
        sandboxes.tracker().forget(sid)
    return True


# ---------------------------------------------------------------- take-over

def _takeovers() -> Takeovers:
    return current_app.extensions[TAKEOVERS]


def _announce_takeover(app: Flask, t: Takeover) -> None:
    push.to_learner(app, t.course_id, t.learner_id, "takeover", {"state": t.state,
                                                                  "by": t.teacher})
    push.to_staff(app, t.course_id, "takeover", t.as_json())


def _finish_takeover(app: Flask, t: Takeover) -> None:
    """`t` has ended: both sides hear it, and the teacher's writable terminals on the
    learner's sandboxes of the course are cut at once."""
    terminals = app.extensions.get(TERMINAL)
    if terminals is not None:
        for a in _assignments(t.learner_id, t.course_id):
            terminals.cut_writers(t.teacher_id, a.sandbox_id,
                                  "the take-over ended: this terminal is read-only again",
                                  "takeover_ended")
    _announce_takeover(app, t)


def teacher_removed(app: Flask, course_id: int, teacher_id: int) -> None:
    """A co-instructor was removed from the course: their take-overs there end, and every
    terminal of theirs on the course's sandboxes is cut, watching ones too (a relay's
    right is checked when it opens, not on every byte)."""
    for t in app.extensions[TAKEOVERS].end_for_teacher(teacher_id, course_id):
        _finish_takeover(app, t)
    terminals = app.extensions.get(TERMINAL)
    if terminals is None:
        return
    sandbox_ids = db.session.scalars(select(SandboxAssignment.sandbox_id).where(
        SandboxAssignment.course_id == course_id,
        SandboxAssignment.sandbox_id.is_not(None))).all()
    for sandbox_id in sandbox_ids:
        terminals.cut_writers(teacher_id, sandbox_id, "you no longer teach this course",
                              "forbidden", viewers_too=True)


def _expire_later(app: Flask, t: Takeover, delay: float) -> None:
    def expire():
        if app.extensions[TAKEOVERS].expire(t):
            with app.app_context():
                _finish_takeover(app, t)

    timer = threading.Timer(delay, expire)
    timer.daemon = True
    timer.start()


def expire_takeovers(app: Flask) -> list[Takeover]:
    """End every unanswered take-over past its time now (the timers do this on their own;
    here for a caller that moved the clock)."""
    gone = app.extensions[TAKEOVERS].expire_due()
    for t in gone:
        _finish_takeover(app, t)
    return gone


@bp.route("/courses/<int:course_id>/learners/<int:user_id>/takeover", methods=["POST"])
def takeover_ask(course_id: int, user_id: int):
    course = _teacher_course(course_id)
    learner = _learner_of(course, user_id)
    takeovers = _takeovers()
    try:
        t = takeovers.ask(course.id, learner.id, current_user.id, current_user.username)
    except TakeoverError as e:
        raise ActionError(409, e.reason, e.message) from None
    _announce_takeover(_app(), t)
    _expire_later(_app(), t, takeovers.ttl)
    return jsonify(takeover=t.as_json(), expires_in=takeovers.ttl), 201


@bp.route("/courses/<int:course_id>/takeover/answer", methods=["POST"])
def takeover_answer(course_id: int):
    course = _learner_course(course_id)
    allow = _body().get("allow")
    if not isinstance(allow, bool):
        raise ActionError(400, "bad_request", "allow must be true or false.")
    try:
        t = _takeovers().answer(course.id, current_user.id, allow)
    except TakeoverError as e:
        raise ActionError(409, e.reason, e.message) from None
    if t.state == ENDED:
        _finish_takeover(_app(), t)
    else:
        _announce_takeover(_app(), t)
    return jsonify(takeover=t.as_json())


@bp.route("/courses/<int:course_id>/takeover/end", methods=["POST"])
def takeover_end(course_id: int):
    """The learner ends theirs; a teacher of the course ends a learner's ({user})."""
    _signed_in()
    course = _course(course_id)
    body = _body()
    if course.has_learner(current_user):
        learner_id = current_user.id
    elif course.is_taught_by(current_user):
        learner_id = _learner_of(course, body.get("user")).id
    else:
        raise ActionError(403, "forbidden", "Only the course's teachers and learners can "
                                            "do that.")
    try:
        t = _takeovers().end(course.id, learner_id)
    except TakeoverError as e:
        raise ActionError(409, e.reason, e.message) from None
    _finish_takeover(_app(), t)
    return jsonify(takeover=t.as_json())


__all__ = ["bp", "help_json", "expire_takeovers", "teacher_removed", "RateLimiter", "Bulk",
           "ActionError"]
