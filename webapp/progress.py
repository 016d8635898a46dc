"""A learner's progress through a lab: hints, attempts, statuses, unlocking, and what a
try or a hint costs.

The grading itself is `nslab.labkit.grade.grade` and the scoring rules `grade.award`;
this module stores what came out and decides what a learner may see and do next. Views
(webapp/lab_api.py) stay thin on top of it. The lab and the learner's drawn values come
from `labstore`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from flask import Flask, current_app
from sqlalchemy import select

from nslab.labkit.grade import Award, Result, award, grade, worth
from nslab.labkit.model import Exercise, Lab
from nslab.labkit.params import expand, placeholders, split_step

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
                               exercise_id=ex.id, attempts=0, hints_used=0, points=0,
                               deduction=0)
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


def exercise_state(ex: Exercise, row: ExerciseProgress | None) -> dict:
    """What the learner should know before the next try or hint: the graded tries left,
    what a pass would earn now, what the next hint takes off (docs/authoring.md)."""
    tries = row.attempts if row else 0
    used = row.hints_used if row else 0
    limit = ex.graded_attempts
    passed = row is not None and row.passed_at is not None
    state = {
        "attempts": tries, "graded_attempts": limit,
        "attempts_left": None if limit is None else max(0, limit - tries),
        "worth": worth(ex, tries=tries, hints_used=used),
        # Once passed, a hint takes nothing off: the best try stands, and no later try can
        # earn more than the pass did (tries and open hints only grow).
        "hint_cost": 0 if passed else ex.hint_points,
        "hints_used": used, "hints": len(ex.hints),
        "deduction": row.deduction if row else 0,
        "score": row.points if row else 0,
        "status": row.status if row else "not_started",
    }
    state["cost_text"] = _cost_text(ex, state, row)
    return state


def _cost_text(ex: Exercise, state: dict, row: ExerciseProgress | None) -> str:
    """The sentence under an exercise that says what the next try and hint are worth (or,
    once passed, why it earned less than its points)."""
    if ex.points == 0:
        return ""
    if row is not None and row.passed_at is not None:
        if row.points >= ex.points:
            return ""
        if row.deduction:
            return (f"Passed for {_pts(row.points)} of {_pts(ex.points)}: the hints opened "
                    f"before took {_pts(row.deduction)} off.")
        return f"Passed for {_pts(row.points)} of {_pts(ex.points)} after its graded tries."
    if state["attempts_left"] == 0:
        return ("No graded tries left: Check still tells you whether your work passes, "
                "but earns no points.")
    bits = [f"A pass now earns {_pts(state['worth'])} of {_pts(ex.points)} "
            f"pt{'' if ex.points == 1 else 's'}"]
    left = state["attempts_left"]
    if left is not None:
        bits.append(f"{left} graded {'try' if left == 1 else 'tries'} left")
    if state["hint_cost"] and state["hints_used"] < state["hints"]:
        bits.append(f"each hint costs {_pts(state['hint_cost'])} "
                    f"pt{'' if state['hint_cost'] == 1 else 's'}")
    return " · ".join(bits) + "."


def reveal_hint(user: User, course: Course, lab: Lab, ex: Exercise
                ) -> tuple[ExerciseProgress, str]:
    """Open the next hint; (the learner's row, the hint's Markdown with values filled)."""
    params = lab.visible_params(labstore.params_for(user, course, lab))  # before any change
    row = _row(user, course, lab, ex)
    if not ex.hints:
        raise ProgressError("this exercise has no hints", 404)
    if row.hints_used >= len(ex.hints):
        raise ProgressError("every hint of this exercise is open already", 409)
    row.hints_used += 1
    db.session.commit()
    return row, expand(ex.hints[row.hints_used - 1], params)


@dataclass
class Checked:
    """One press of Check, graded and stored."""

    result: Result
    award: Award
    row: ExerciseProgress
    step_complete: bool


def check(user: User, course: Course, lab: Lab, ex: Exercise, answer: str | None,
          client) -> Checked:
    """Grade, score and store the try; say whether the exercise's step is now complete."""
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
    if sandbox_id is None and needs_sandbox(ex):
        # Nothing to look at is no try: refused, with nothing recorded (no attempt, no
        # graded try used), and the learner told how to go on.
        if assignment is not None and assignment.state == SandboxState.STOPPED:
            raise ProgressError("your sandbox is stopped: start it again (open the lab's "
                                "terminal) to check", 409)
        raise ProgressError("your sandbox is not running: open the lab's terminal first", 409)
    db.session.commit()  # nothing is held open while the check runs
    with current_app.extensions[CHECKS].one_for(user.id):
        result = grade(lab, ex, client=client, sandbox_id=sandbox_id, params=params,
                       answer=answer)
    row = _row(user, course, lab, ex)
    now = utcnow()
    # The try is scored against the tries and hints as they stand now, read again after
    # the check (one check at a time per learner, so no other try moved them; a hint
    # opened while this one ran is charged to it: a learner never pays less than they saw).
    earned = award(ex, result, tries_before=row.attempts, hints_used=row.hints_used)
    first_pass = result.passed and row.passed_at is None
    if result.counted:
        row.attempts += 1
    row.last_attempt = now
    if first_pass:
        row.passed_at = now
    # The best try stands, with what the hints took off it (the first pass, on a tie).
    if earned.points > row.points or (first_pass and earned.points >= row.points):
        row.points, row.deduction = earned.points, earned.deduction
    db.session.add(Attempt(user_id=user.id, course_id=course.id, lab_id=lab.id,
                           exercise_id=ex.id, at=now, passed=result.passed,
                           points=earned.points, feedback=result.feedback[:4000],
                           answer=answer[:500] if answer is not None else None,
                           hints_used=row.hints_used, duration_ms=result.duration_ms,
                           counted=result.counted, graded=earned.graded,
                           deduction=earned.deduction))
    sandboxes.touch(user.id, course.id, lab.id)  # checking is working: not idle
    db.session.commit()
    rows[ex.id] = row
    step = next(s for s in step_states(lab, rows) if s.id == ex.step)
    return Checked(result, earned, row, result.passed and step.passed)


def needs_sandbox(ex: Exercise) -> bool:
    """Whether the exercise's check looks into the sandbox (a plain quiz does not)."""
    return not (ex.quiz is not None and not ex.check)


def scoring_note(ex: Exercise, checked: Checked) -> str | None:
    """One sentence on how the try was scored, when it is not simply "all points"."""
    result, earned = checked.result, checked.award
    if not result.counted or ex.points == 0:
        return None
    if not earned.graded:
        limit = ex.graded_attempts
        first = "only the first try" if limit == 1 else f"only the first {limit} tries"
        return (f"This try earns no points: {first} of this exercise can. Check still "
                "tells you whether your work passes.")
    if earned.deduction:
        hints = checked.row.hints_used
        return (f"{_pts(earned.points)} of {_pts(ex.points)} points: {hints} hint"
                f"{'' if hints == 1 else 's'} opened took {_pts(earned.deduction)} off.")
    return None


def _pts(value: float) -> str:
    return f"{value:g}"


def summary(lab: Lab, params: dict, rows: dict[str, ExerciseProgress]) -> dict:
    """The JSON of GET /api/labs/<lab> for one learner. A value appears only where the
    learner's text shows it, and a hidden one never."""
    states = {s.id: s for s in step_states(lab, rows)}
    shown = lab.visible_params(params)
    exercises, everywhere = [], set()
    for step in lab.steps:
        everywhere.update(n for part in split_step(step.source)
                          if part.kind in ("markdown", "cell") for n in placeholders(part.value))
    for ex in lab.ordered_exercises():
        row = rows.get(ex.id)
        passed = row is not None and row.passed_at is not None
        used = row.hints_used if row else 0
        texts = [ex.title, ex.text, *(ex.quiz.choices or [] if ex.quiz else []), *ex.hints[:used]]
        if passed and ex.walkthrough:
            texts.append(ex.walkthrough)
        names = {n for t in texts for n in placeholders(t)}
        everywhere |= names
        exercises.append({
            "id": ex.id, "title": expand(ex.title, shown), "points": ex.points, "kind": ex.kind,
            "step": ex.step, "unlocked": states[ex.step].unlocked,
            "params": {k: shown[k] for k in sorted(shown) if k in names},
            "walkthrough": bool(ex.walkthrough),
            **exercise_state(ex, row),
        })
    return {"id": lab.id, "title": lab.title, "summary": lab.summary,
            "max_points": lab.max_points,
            "points": round(sum(r.points for r in rows.values()
                                if r.exercise_id in lab.exercises), 2),
            "params": {k: shown[k] for k in sorted(shown) if k in everywhere},
            "exercises": exercises}


def last_attempts(user_id: int, course_id: int, lab_id: str) -> dict[str, Attempt]:
    """Each exercise's latest attempt by this learner."""
    out: dict[str, Attempt] = {}
    for attempt in db.session.scalars(select(Attempt).filter_by(
            user_id=user_id, course_id=course_id, lab_id=lab_id).order_by(Attempt.at)):
        out[attempt.exercise_id] = attempt
    return out
