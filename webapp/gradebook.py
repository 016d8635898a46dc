"""The instructor's gradebook: learners x exercises of a course's labs, as a page and as
a CSV export, with the tries each learner took and what their hints cost them."""

from __future__ import annotations

import csv
import io

from flask import Blueprint, Response, render_template
from flask_login import login_required
from sqlalchemy import select

from . import labstore
from .courses import course_for_teacher
from .extensions import db
from .models import Attempt, Course, ExerciseProgress

bp = Blueprint("gradebook", __name__)


def _gradebook(course: Course) -> dict:
    """Learners x exercises of every usable lab of the course."""
    labs = []
    for cl in course.labs:
        lab = labstore.load(cl.lab_id)
        labs.append({"id": cl.lab_id, "lab": lab if lab is not None and lab.ok else None,
                     "errors": [str(e) for e in lab.errors] if lab is not None else []})
    columns = [(entry["id"], ex) for entry in labs if entry["lab"]
               for ex in entry["lab"].ordered_exercises()]
    rows = db.session.scalars(select(ExerciseProgress).where(
        ExerciseProgress.course_id == course.id)).all()
    by_learner: dict[int, dict] = {}
    for r in rows:
        by_learner.setdefault(r.user_id, {})[(r.lab_id, r.exercise_id)] = r
    learners = []
    for enrollment in course.enrollments:
        cells = by_learner.get(enrollment.user_id, {})
        shown = [cells.get((lab_id, ex.id)) for lab_id, ex in columns]
        learners.append({"user": enrollment.user, "cells": shown,
                         "points": round(sum(c.points for c in shown if c), 2),
                         "attempts": sum(c.attempts for c in shown if c),
                         "hints": sum(c.hints_used for c in shown if c),
                         "deduction": round(sum(c.deduction for c in shown if c), 2)})
    max_points = sum(ex.points for _, ex in columns)
    return {"labs": labs, "columns": columns, "learners": learners, "max_points": max_points}


def _taught(course_id: int) -> Course:
    return course_for_teacher(course_id, "Only the course's teachers see its grades.")


@bp.route("/courses/<int:course_id>/grades")
@login_required
def show(course_id: int):
    course = _taught(course_id)
    recent = db.session.scalars(select(Attempt).where(Attempt.course_id == course.id)
                                .order_by(Attempt.at.desc()).limit(50)).all()
    return render_template("courses/grades.html", course=course, book=_gradebook(course),
                           recent=recent)


@bp.route("/courses/<int:course_id>/grades.csv")
@login_required
def export(course_id: int):
    course = _taught(course_id)
    book = _gradebook(course)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["learner"] + [f"{lab_id}/{ex.id} ({ex.points})"
                                   for lab_id, ex in book["columns"]]
                    + ["attempts", "hints used", "hint deductions", "points",
                       f"of {book['max_points']}"])
    for learner in book["learners"]:
        cells = learner["cells"]
        writer.writerow([_csv_safe(learner["user"].username)]
                        + [_number(c.points) if c else 0 for c in cells]
                        + [learner["attempts"], learner["hints"],
                           _number(learner["deduction"]), _number(learner["points"]), ""])
    filename = f"grades-course-{course.id}.csv"
    return Response(out.getvalue(), mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})


def _number(value: float) -> str:
    """2.0 -> "2", 1.5 -> "1.5" (points are fractional once a hint took a share off)."""
    return f"{round(value, 2):g}"


def _csv_safe(text: str) -> str:
    """Spreadsheets run cells that start with = + - @ as formulas."""
    return "'" + text if text[:1] in ("=", "+", "-", "@") else text
