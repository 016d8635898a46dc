"""A learner's progress through a lab: hints, attempts, statuses, unlocking.

The grading itself is `nslab.labkit.grade.grade`; this module stores what came out and
decides what a learner may see and do next. Views (webapp/lab_api.py) stay thin on top
of it. The lab and the learner's drawn values come from `labstore`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from flask import Flask, current_app
from sqlalchemy import select

from nslab.labkit.grade import Result, grade
from nslab.labkit.model import Exercise, Lab
from nslab.labkit.params import PLACEHOLDER_RE, expand

from . import labstore, sandboxes
from .extensions import db
from .models import (Attempt, Course, ExerciseProgress, SandboxAssignment, SandboxState, User,
                     utcnow)

CHECKS = "nslab.checks"  # app.extensions[CHECKS]: the app's RunningChecks


class ProgressError(Exception):
    """A request the learner may not make now; `status` is the HTTP status to answer."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.message = message
        self.status = status


class RunningChecks:
    """The learners whose check is running: one at a time per learner, since a check may
    measure for a second or more, and a learner hammering the button must not fill the
    web process's threads."""

    def __init__(self):
        self._users: set[int] = set()
        self._lock = threading.Lock()

    @contextmanager
    def one_for(self, user_id: int) -> Iterator[None]:
        """Hold the learner's one check; ProgressError (429) if one of theirs runs."""
        with self._lock:
            if user_id in self._users:
                raise ProgressError("a check of yours is still running; wait for its result",
                                    429)
            self._users.add(user_id)
        try:
            yield
        finally:
            with self._lock:
                self._users.discard(user_id)


def init_app(app: Flask) -> None:
    app.extensions[CHECKS] = RunningChecks()


def usable(lab_id: str) -> Lab:
    """The lab, or ProgressError if it is missing or broken (details go to instructors)."""
    lab = labstore.load(lab_id)
    if lab is None:
        raise ProgressError(f"there is no lab {lab_id!r}", 404)
    if lab.errors:
        raise ProgressError(f"the lab {lab_id!r} is unavailable: it has errors its author "
                            "must fix", 503)
    return lab


def progress_rows(user_id: int, course_id: int, lab_id: str) -> dict[str, ExerciseProgress]:
    rows = db.session.scalars(select(ExerciseProgress).filter_by(
        user_id=user_id, course_id=course_id, lab_id=lab_id))
    return {r.exercise_id: r for r in rows}


def _row(user: User, course: Course, lab: Lab, ex: Exercise) -> ExerciseProgress:
    row = db.session.execute(select(ExerciseProgress).filter_by(
        user_id=user.id, course_id=course.id, lab_id=lab.id, exercise_id=ex.id)
    ).scalar_one_or_none()
    if row is None:
        row = ExerciseProgress(user_id=user.id, course_id=course.id, lab_id=lab.id,
                               exercise_id=ex.id, attempts=0, hints_used=0, points=0)
        db.session.add(row)
    return row


@dataclass
class StepState:
    id: str
    title: str
    unlocked: bool
    passed: bool
    exercises: list[str] = field(default_factory=list)


def step_states(lab: Lab, rows: dict[str, ExerciseProgress]) -> list[StepState]:
    """A step is open when every exercise of the steps before it has passed."""
    out, open_ = [], True
    for step in lab.steps:
        passed = all(rows.get(e) is not None and rows[e].passed_at is not None
                     for e in step.exercises)
        out.append(StepState(step.id, step.title, open_, passed, list(step.exercises)))
        open_ = open_ and passed
    return out


def exercise_unlocked(lab: Lab, ex: Exercise, rows: dict[str, ExerciseProgress]) -> bool:
    return next((s.unlocked for s in step_states(lab, rows) if s.id == ex.step), False)


def find_exercise(lab: Lab, exercise_id: str) -> Exercise:
    ex = lab.exercises.get(exercise_id)
    if ex is None:
        raise ProgressError(f"the lab {lab.id!r} has no exercise {exercise_id!r}", 404)
    return ex


def reveal_hint(user: User, course: Course, lab: Lab, ex: Exercise) -> tuple[int, str]:
    """Open the next hint; (how many are open now, its Markdown text with values filled)."""
    row = _row(user, course, lab, ex)
    if not ex.hints:
        raise ProgressError("this exercise has no hints", 404)
    if row.hints_used >= len(ex.hints):
        raise ProgressError("every hint of this exercise is open already", 409)
    row.hints_used += 1
    params = labstore.params_for(user, course, lab)
    db.session.commit()
    return row.hints_used, expand(ex.hints[row.hints_used - 1], params)


def check(user: User, course: Course, lab: Lab, ex: Exercise, answer: str | None,
          client) -> tuple[Result, bool]:
    """Grade, store the attempt, and say whether the exercise's step is now complete."""
    rows = progress_rows(user.id, course.id, lab.id)
    if not exercise_unlocked(lab, ex, rows):
        raise ProgressError("this exercise's step is still locked: pass the steps before "
                            "it first", 409)
    if ex.quiz is not None and answer is not None and len(answer) > 500:
        raise ProgressError("an answer is at most 500 characters", 400)
    params = labstore.params_for(user, course, lab)
    assignment = db.session.execute(select(SandboxAssignment).filter_by(
        user_id=user.id, course_id=course.id, lab_id=lab.id)).scalar_one_or_none()
    sandbox_id = assignment.sandbox_id if assignment and \
        assignment.state == SandboxState.RUNNING else None
    db.session.commit()  # nothing is held open while the check runs
    with current_app.extensions[CHECKS].one_for(user.id):
        result = grade(lab, ex, client=client, sandbox_id=sandbox_id, params=params,
                       answer=answer)
    row = _row(user, course, lab, ex)
    now = utcnow()
    row.attempts += 1
    row.last_attempt = now
    if result.passed and row.passed_at is None:
        row.passed_at = now
    row.points = max(row.points, result.points)
    db.session.add(Attempt(user_id=user.id, course_id=course.id, lab_id=lab.id,
                           exercise_id=ex.id, at=now, passed=result.passed,
                           points=result.points, feedback=result.feedback[:4000],
                           answer=answer[:500] if answer is not None else None,
                           hints_used=row.hints_used, duration_ms=result.duration_ms))
    sandboxes.touch(user.id, course.id, lab.id)  # checking is working: not idle
    db.session.commit()
    rows[ex.id] = row
    step = next(s for s in step_states(lab, rows) if s.id == ex.step)
    return result, result.passed and step.passed


def summary(lab: Lab, params: dict, rows: dict[str, ExerciseProgress]) -> dict:
    """The JSON of GET /api/labs/<lab> for one learner."""
    states = {s.id: s for s in step_states(lab, rows)}
    exercises = []
    for ex in lab.ordered_exercises():
        row = rows.get(ex.id)
        names = set(_placeholders(ex))
        exercises.append({
            "id": ex.id, "title": ex.title, "points": ex.points, "kind": ex.kind,
            "step": ex.step, "unlocked": states[ex.step].unlocked,
            "params": {k: params[k] for k in sorted(params) if k in names},
            "status": row.status if row else "not_started",
            "attempts": row.attempts if row else 0,
            "hints_used": row.hints_used if row else 0, "hints": len(ex.hints),
            "score": row.points if row else 0,
        })
    return {"id": lab.id, "title": lab.title, "summary": lab.summary,
            "max_points": lab.max_points,
            "points": sum(r.points for r in rows.values() if r.exercise_id in lab.exercises),
            "params": params, "exercises": exercises}


def _placeholders(ex: Exercise) -> list[str]:
    return [m.group(1) for t in (ex.text, *ex.hints)
            for m in PLACEHOLDER_RE.finditer(t or "")]


def last_attempts(user_id: int, course_id: int, lab_id: str) -> dict[str, Attempt]:
    """Each exercise's latest attempt by this learner."""
    out: dict[str, Attempt] = {}
    for attempt in db.session.scalars(select(Attempt).filter_by(
            user_id=user_id, course_id=course_id, lab_id=lab_id).order_by(Attempt.at)):
        out[attempt.exercise_id] = attempt
    return out
