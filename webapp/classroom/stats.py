"""Per-exercise statistics of a course, for its teachers: who tried each exercise, how many
passed, how many tries and how long passing took, the hints opened and the failed checks'
most common feedback.

  GET /courses/<id>/stats        the page (plain SVG bar charts drawn by the template)
  GET /courses/<id>/stats.json   the same numbers

The numbers (`course_stats`) are read from the learners' Attempt and ExerciseProgress rows;
`summarize` does the arithmetic over plain rows, without the database.

Definitions (the page says them too):
- tried: enrolled learners with at least one check of the exercise (any press of Check that
  was recorded, judged or not);
- passed: of those, the learners with a passing check; `pass_rate` is passed / enrolled,
  `pass_rate_tried` passed / tried (None where the divisor is 0);
- attempts to pass: the judged checks up to and including the first passing one;
- time to pass: from the learner's first check of the exercise to its first passing check
  (time spent reading before the first check is not seen);
- hints: hints opened by enrolled learners, and by how many of them;
- feedback: failed judged checks' feedback, whitespace trimmed and grouped by exact text,
  the 3 most common (ties: the one seen first).
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from flask import Blueprint, jsonify, render_template
from flask_login import current_user, login_required
from sqlalchemy import select

from .. import labstore
from ..courses import course_for_teacher
from ..extensions import db
from ..models import Attempt, Course, ExerciseProgress, as_utc

bp = Blueprint("classroom_stats", __name__)

TOP_FEEDBACK = 3


@dataclass(frozen=True)
class Column:
    """One exercise of the course, in lab order."""

    lab: str
    exercise: str
    title: str
    points: float


@dataclass(frozen=True)
class Check:
    """One recorded press of Check (an Attempt row)."""

    user: int
    lab: str
    exercise: str
    at: datetime
    passed: bool
    counted: bool
    feedback: str


@dataclass(frozen=True)
class Hints:
    """The hints one learner opened on one exercise."""

    user: int
    lab: str
    exercise: str
    opened: int


@dataclass
class _Learner:
    first: datetime
    tries: int = 0
    passed_at: datetime | None = None
    tries_to_pass: int | None = None


@dataclass
class _Exercise:
    learners: dict[int, _Learner] = field(default_factory=dict)
    feedback: Counter = field(default_factory=Counter)
    hints: int = 0
    hint_learners: int = 0


def summarize(columns: list[Column], enrolled: int, checks: Iterable[Check],
              hints: Iterable[Hints]) -> list[dict]:
    """The statistics of each column (see the module's docstring). `checks` in the order
    they were made; checks and hints of exercises not in `columns` are ignored."""
    acc = {(c.lab, c.exercise): _Exercise() for c in columns}
    for check in checks:
        ex = acc.get((check.lab, check.exercise))
        if ex is None:
            continue
        learner = ex.learners.setdefault(check.user, _Learner(first=check.at))
        if learner.passed_at is None:
            # A passing check is judged by definition; later checks do not change how
            # passing went.
            if check.counted or check.passed:
                learner.tries += 1
            if check.passed:
                learner.passed_at, learner.tries_to_pass = check.at, learner.tries
        if check.counted and not check.passed:
            ex.feedback[check.feedback.strip()] += 1
    for h in hints:
        ex = acc.get((h.lab, h.exercise))
        if ex is not None and h.opened > 0:
            ex.hints += h.opened
            ex.hint_learners += 1
    out = []
    for c in columns:
        ex = acc[(c.lab, c.exercise)]
        passers = [x for x in ex.learners.values() if x.passed_at is not None]
        tried, passed = len(ex.learners), len(passers)
        out.append({
            "lab": c.lab, "exercise": c.exercise, "title": c.title, "points": c.points,
            "tried": tried, "passed": passed,
            "pass_rate": _ratio(passed, enrolled), "pass_rate_tried": _ratio(passed, tried),
            "median_attempts": _median([x.tries_to_pass for x in passers]),
            "median_seconds": _median([(as_utc(x.passed_at) - as_utc(x.first)).total_seconds()
                                       for x in passers]),
            "hints": ex.hints, "hint_learners": ex.hint_learners,
            "failed_checks": sum(ex.feedback.values()),
            "feedback": [{"text": text, "count": n}
                         for text, n in ex.feedback.most_common(TOP_FEEDBACK)],
        })
    return out


def _ratio(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _median(values: list[float]) -> float | None:
    return round(float(statistics.median(values)), 3) if values else None


def course_stats(course: Course) -> dict:
    """The statistics of every exercise of the course's usable labs, in lab order."""
    columns, labs, unavailable = [], [], []
    for cl in course.labs:
        lab = labstore.load(cl.lab_id)
        if lab is None or not lab.ok:
            # A missing or broken lab has no exercises to count (its page says why).
            unavailable.append(cl.lab_id)
            continue
        labs.append({"lab": lab.id, "title": lab.title or lab.id})
        columns += [Column(lab.id, ex.id, ex.title, ex.points) for ex in lab.ordered_exercises()]
    learners = [e.user_id for e in course.enrollments]
    checks = (Check(*row) for row in db.session.execute(
        select(Attempt.user_id, Attempt.lab_id, Attempt.exercise_id, Attempt.at,
               Attempt.passed, Attempt.counted, Attempt.feedback)
        .where(Attempt.course_id == course.id, Attempt.user_id.in_(learners))
        .order_by(Attempt.at, Attempt.id)))
    hints = (Hints(*row) for row in db.session.execute(
        select(ExerciseProgress.user_id, ExerciseProgress.lab_id, ExerciseProgress.exercise_id,
               ExerciseProgress.hints_used)
        .where(ExerciseProgress.course_id == course.id,
               ExerciseProgress.user_id.in_(learners), ExerciseProgress.hints_used > 0)))
    exercises = summarize(columns, len(learners), checks, hints)
    return {"course": course.id, "enrolled": len(learners), "labs": labs,
            "unavailable": unavailable, "checked": sum(e["tried"] for e in exercises) > 0,
            "exercises": exercises}


def duration_text(seconds: float | None) -> str:
    """42 -> "42 s", 200 -> "3 min 20 s", 5400 -> "1 h 30 min"; None -> "–"."""
    if seconds is None:
        return "–"
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s" if s % 60 else f"{s // 60} min"
    return f"{s // 3600} h {s % 3600 // 60} min"


def _taught(course_id: int) -> Course:
    return course_for_teacher(course_id, "Only the course's teachers see its statistics.")


@bp.route("/courses/<int:course_id>/stats")
@login_required
def page(course_id: int):
    course = _taught(course_id)
    stats = course_stats(course)
    most = max((e["median_attempts"] or 0 for e in stats["exercises"]), default=0)
    return render_template("courses/stats.html", course=course, stats=stats,
                           max_attempts=max(1.0, most), duration=duration_text)


@bp.route("/courses/<int:course_id>/stats.json")
def as_json(course_id: int):
    # Always JSON, errors included (401, not login_required's sign-in page).
    if not current_user.is_authenticated:
        return jsonify(error="unauthorized", message="Sign in first."), 401
    course = db.session.get(Course, course_id)
    if course is None:
        return jsonify(error="not_found", message="There is no such course."), 404
    if not course.is_taught_by(current_user):
        return jsonify(error="forbidden",
                       message="Only the course's teachers see its statistics."), 403
    return jsonify(course_stats(course))
