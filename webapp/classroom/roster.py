"""The live classroom's roster: the learners × exercises matrix of a course and, per learner,
where they are and how stuck they look (`snapshot`, `learner_row`; shapes in the package
docstring).

Definitions (every time is the server's, `time` of the snapshot being "now"):
- *current lab*: the lab of the learner's latest Attempt in the course, else of their
  latest `SandboxAssignment.last_active`, else the course's first lab. A lab they have
  completed gives way to the course's first lab (in its order) they have not: that is
  the one they work on next. Labs that are missing or broken are left out (as in the
  gradebook).
- *current step*: the first step of the current lab that is not complete
  (`progress.step_states`); None once every lab is complete ("finished").
- `on_step_s`: now − the later of the learner's `LearnerLab.started` for the current lab
  and the latest `passed_at` in it; for a lab not opened yet, since their latest pass in
  the course; None when they have neither (they have not begun).
- `failed_in_row`: the failed counted checks since the learner's last passed check, over
  the whole course (a check that could not run is not counted).
- `hints`: the hints opened (sum of `ExerciseProgress.hints_used`).
- `active`: sandbox activity (the activity tracker's note, or the assignment's
  `last_active`, the later, over the learner's sandboxes of the course) within
  ACTIVE_WINDOW seconds; `idle_s`: seconds since it (None: no sandbox yet).
- `sandbox`: the state of the current lab's sandbox: running, stopped (made, not running,
  or still being made), none (never made, or reset).
- `stuck` = on_step_s / max(class median on_step_s, MIN_MEDIAN_S) + FAIL_WEIGHT ×
  failed_in_row + HAND_WEIGHT if a hand is raised. A learner who finished everything
  scores 0 on the first two terms (a raised hand still counts: they asked). The class
  median is over the learners who have begun and not finished.

Cost: a snapshot is a fixed handful of SELECTs whatever the class size (the course's labs,
its learners, their progress, one aggregate over their attempts, their sandboxes, their
labs' start times, the open help requests); `learner_row` runs the same ones for one learner and
takes the class median from the latest snapshot when it is recent (MEDIAN_TTL_S), so a
check's push costs one learner's rows.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from datetime import datetime

from flask import current_app
from sqlalchemy import case, func, or_, select, true
from sqlalchemy.orm import aliased

from nslab.labkit.model import Lab

from .. import labstore, progress, sandboxes
from ..extensions import db
from ..models import (Attempt, Course, CourseLab, Enrollment, ExerciseProgress, HelpRequest,
                      LearnerLab, SandboxAssignment, SandboxState, User, as_utc)

ACTIVE_WINDOW = 120.0    # seconds: sandbox activity this recent makes a learner "active"
MIN_MEDIAN_S = 60.0      # a class that just began does not make one minute look stuck
FAIL_WEIGHT = 0.5        # each failed check in a row
HAND_WEIGHT = 100.0      # a raised hand goes above everyone who did not ask
MEDIAN_TTL_S = 60.0      # how long a snapshot's class median serves `learner_row`
MEDIANS = "nslab.classroom.medians"   # app.extensions[MEDIANS]: course id -> (at, median)


@dataclass
class _Facts:
    """What the queries found for some learners of a course."""

    learners: list[tuple[int, str]]
    cells: dict[int, dict[tuple[str, str], object]] = field(default_factory=dict)
    attempts: dict[int, tuple[str | None, int]] = field(default_factory=dict)
    sandboxes: dict[int, dict[str, object]] = field(default_factory=dict)
    started: dict[tuple[int, str], datetime] = field(default_factory=dict)
    hands: dict[int, dict] = field(default_factory=dict)
    queue: list[dict] = field(default_factory=list)


def course_labs(course: Course) -> list[tuple[str, Lab]]:
    """The course's usable labs, in its order (a missing or broken lab has no columns)."""
    labs = db.session.scalars(select(CourseLab.lab_id).where(CourseLab.course_id == course.id)
                              .order_by(CourseLab.position, CourseLab.id)).all()
    out = []
    for lab_id in labs:
        lab = labstore.load(lab_id)
        if lab is not None and lab.ok:
            out.append((lab_id, lab))
    return out


def _facts(course: Course, user_id: int | None = None) -> _Facts:
    """Every fact the rows need, in one query per kind (filtered to one learner if given)."""
    cid = course.id

    def only(column):
        return column == user_id if user_id is not None else true()

    learners = db.session.execute(
        select(User.id, User.username).join(Enrollment, Enrollment.user_id == User.id)
        .where(Enrollment.course_id == cid, only(User.id))
        .order_by(Enrollment.created, Enrollment.id)).all()
    facts = _Facts([(uid, name) for uid, name in learners])

    for r in db.session.execute(
            select(ExerciseProgress.user_id, ExerciseProgress.lab_id,
                   ExerciseProgress.exercise_id, ExerciseProgress.attempts,
                   ExerciseProgress.hints_used, ExerciseProgress.points,
                   ExerciseProgress.passed_at)
            .where(ExerciseProgress.course_id == cid, only(ExerciseProgress.user_id))):
        facts.cells.setdefault(r.user_id, {})[(r.lab_id, r.exercise_id)] = r

    # Per learner: the lab of their latest try, and their failed tries since their last
    # pass; correlated subqueries keep it one statement (on the learner index).
    agg = (select(Attempt.user_id.label("uid"), func.max(Attempt.at).label("last"),
                  func.max(case((Attempt.passed, Attempt.at))).label("last_pass"))
           .where(Attempt.course_id == cid, only(Attempt.user_id))
           .group_by(Attempt.user_id).subquery())
    latest, failed = aliased(Attempt), aliased(Attempt)
    lab_of_latest = (select(latest.lab_id)
                     .where(latest.user_id == agg.c.uid, latest.course_id == cid,
                            latest.at == agg.c.last)
                     .limit(1).scalar_subquery())
    failed_since = (select(func.count(failed.id))
                    .where(failed.user_id == agg.c.uid, failed.course_id == cid,
                           failed.counted.is_(True), failed.passed.is_(False),
                           or_(agg.c.last_pass.is_(None), failed.at > agg.c.last_pass))
                    .scalar_subquery())
    for uid, lab_id, n in db.session.execute(select(agg.c.uid, lab_of_latest, failed_since)):
        facts.attempts[uid] = (lab_id, n or 0)

    for a in db.session.execute(
            select(SandboxAssignment.user_id, SandboxAssignment.lab_id,
                   SandboxAssignment.sandbox_id, SandboxAssignment.state,
                   SandboxAssignment.last_active)
            .where(SandboxAssignment.course_id == cid, only(SandboxAssignment.user_id))):
        facts.sandboxes.setdefault(a.user_id, {})[a.lab_id] = a

    for uid, lab_id, started in db.session.execute(
            select(LearnerLab.user_id, LearnerLab.lab_id, LearnerLab.started)
            .where(LearnerLab.course_id == cid, only(LearnerLab.user_id))):
        facts.started[(uid, lab_id)] = started

    facts.queue = help_queue(course, user_id=user_id)
    for hand in facts.queue:
        facts.hands.setdefault(hand["user"], hand)  # oldest first: one per learner anyway
    return facts


def help_queue(course: Course, user_id: int | None = None) -> list[dict]:
    """The open help requests of the course, oldest first (one learner's if given)."""
    claimer = aliased(User)
    query = (select(HelpRequest, User.username, claimer.username)
             .join(User, User.id == HelpRequest.user_id)
             .outerjoin(claimer, claimer.id == HelpRequest.claimed_by_id)
             .where(HelpRequest.course_id == course.id, HelpRequest.closed_at.is_(None))
             .order_by(HelpRequest.created, HelpRequest.id))
    if user_id is not None:
        query = query.where(HelpRequest.user_id == user_id)
    return [{"id": h.id, "user": h.user_id, "username": name, "lab": h.lab_id,
             "message": h.message, "at": iso(h.created),
             "claimed_by": None if h.claimed_by_id is None
             else {"id": h.claimed_by_id, "username": claimed_name}}
            for h, name, claimed_name in db.session.execute(query)]


def iso(at: datetime | None) -> str | None:
    return None if at is None else as_utc(at).isoformat()


def _stamp(at: datetime | None) -> float | None:
    return None if at is None else as_utc(at).timestamp()


def _row(uid: int, username: str, labs: list[tuple[str, Lab]],
         columns: list[tuple[str, str]], facts: _Facts, now: float, tracker) -> dict:
    """One learner's row, all but `stuck` (which needs the class median)."""
    mine = facts.cells.get(uid, {})
    cells = []
    for key in columns:
        c = mine.get(key)
        cells.append(None if c is None else {
            "attempts": c.attempts, "passed": c.passed_at is not None,
            "points": round(c.points, 2), "hints": c.hints_used})
    by_lab = {lab_id: lab for lab_id, lab in labs}
    boxes = facts.sandboxes.get(uid, {})
    latest_lab, failed = facts.attempts.get(uid, (None, 0))

    def complete(lab_id: str) -> bool:
        lab = by_lab[lab_id]
        return all(mine.get((lab_id, e)) is not None and mine[(lab_id, e)].passed_at is not None
                   for e in lab.exercises)

    lab_id = latest_lab if latest_lab in by_lab else None
    if lab_id is None:
        recent = sorted((a for a in boxes.values() if a.lab_id in by_lab),
                        key=lambda a: _stamp(a.last_active) or 0.0)
        lab_id = recent[-1].lab_id if recent else None
    if lab_id is None and labs:
        lab_id = labs[0][0]
    if lab_id is not None and complete(lab_id):
        lab_id = next((lid for lid, _ in labs if not complete(lid)), None)
    finished = lab_id is None and bool(labs)

    step = step_title = on_step = None
    if lab_id is not None:
        lab = by_lab[lab_id]
        rows = {e: r for (lid, e), r in mine.items() if lid == lab_id}
        state = next((s for s in progress.step_states(lab, rows) if not s.passed), None)
        if state is not None:
            step, step_title = state.id, state.title
        passes = [_stamp(r.passed_at) for r in rows.values() if r.passed_at is not None]
        anchors = [t for t in (_stamp(facts.started.get((uid, lab_id))), *passes)
                   if t is not None]
        if not anchors:
            anchors = [_stamp(r.passed_at) for r in mine.values() if r.passed_at is not None]
        if anchors:
            on_step = max(0, round(now - max(anchors)))

    seen = []
    for a in boxes.values():
        last = _stamp(a.last_active)
        if a.sandbox_id:
            noted = tracker.last(a.sandbox_id)
            last = max(last or 0.0, noted or 0.0) or None
        if last is not None:
            seen.append(last)
    idle = max(0, round(now - max(seen))) if seen else None
    current = boxes.get(lab_id) if lab_id is not None else None
    if current is None or not current.sandbox_id:
        sandbox, sandbox_id = "none", None
    else:
        sandbox_id = current.sandbox_id
        sandbox = "running" if current.state == SandboxState.RUNNING else "stopped"
    hand = facts.hands.get(uid)
    return {
        "id": uid, "username": username, "cells": cells, "lab": lab_id, "step": step,
        "step_title": step_title, "on_step_s": None if finished else on_step,
        "failed_in_row": 0 if finished else failed,
        "hints": sum(c.hints_used for c in mine.values()),
        "active": idle is not None and idle <= ACTIVE_WINDOW, "idle_s": idle,
        "sandbox": sandbox, "sandbox_id": sandbox_id,
        "hand": None if hand is None else {k: hand[k] for k in ("id", "message", "at",
                                                                  "claimed_by")},
        "stuck": 0.0, "finished": finished,
        "points": round(sum(c["points"] for c in cells if c), 2),
    }


def _stuck(row: dict, median: float | None) -> float:
    score = HAND_WEIGHT if row["hand"] is not None else 0.0
    if not row["finished"]:
        score += (row["on_step_s"] or 0) / max(median or 0.0, MIN_MEDIAN_S)
        score += FAIL_WEIGHT * row["failed_in_row"]
    return round(score, 2)


def _median(rows: list[dict]) -> float | None:
    times = [r["on_step_s"] for r in rows if not r["finished"] and r["on_step_s"] is not None]
    return float(statistics.median(times)) if times else None


def _rows(course: Course, user_id: int | None = None
          ) -> tuple[list[tuple[str, Lab]], list[tuple[str, str]], list[dict], _Facts, float]:
    labs = course_labs(course)
    columns = [(lab_id, ex.id) for lab_id, lab in labs for ex in lab.ordered_exercises()]
    facts = _facts(course, user_id)
    now = time.time()
    tracker = sandboxes.tracker()
    rows = [_row(uid, name, labs, columns, facts, now, tracker)
            for uid, name in facts.learners]
    return labs, columns, rows, facts, now


def snapshot(course: Course) -> dict:
    """The whole live view of `course` (shape in the package docstring)."""
    labs, columns, rows, facts, now = _rows(course)
    median = _median(rows)
    current_app.extensions.setdefault(MEDIANS, {})[course.id] = (time.monotonic(), median)
    for row in rows:
        row["stuck"] = _stuck(row, median)
    by_lab = dict(labs)
    return {
        "course": course.id, "time": now,
        "columns": [{"lab": lab_id, "exercise": ex_id,
                     "title": by_lab[lab_id].exercises[ex_id].title,
                     "points": by_lab[lab_id].exercises[ex_id].points}
                    for lab_id, ex_id in columns],
        "learners": rows,
        "help": facts.queue,
        "class_median_on_step_s": median,
    }


def class_median(course: Course) -> float | None:
    """The class median of on_step_s: the latest snapshot's if recent, else computed."""
    cached = current_app.extensions.get(MEDIANS, {}).get(course.id)
    if cached is not None and time.monotonic() - cached[0] < MEDIAN_TTL_S:
        return cached[1]
    _, _, rows, _, _ = _rows(course)
    median = _median(rows)
    current_app.extensions.setdefault(MEDIANS, {})[course.id] = (time.monotonic(), median)
    return median


def learner_row(course: Course, user_id: int) -> dict | None:
    """One learner's row as in `snapshot` (None: not a learner of the course)."""
    _, _, rows, _, _ = _rows(course, user_id)
    if not rows:
        return None
    row = rows[0]
    row["stuck"] = _stuck(row, class_median(course))
    return row
