"""Grading over HTTP: the learner's lab API (status, Check, hints) and the instructor's
gradebook (a table and a CSV export).

The API is JSON under /api/ and, like every POST in the app, protected by Flask-WTF's
CSRF check: the page carries `<meta name="csrf-token">` and fetch() sends `X-CSRFToken`.
"""

from __future__ import annotations

import csv
import io

from flask import Blueprint, Response, abort, jsonify, render_template, request
from flask_login import current_user, login_required
from sqlalchemy import select

from . import progress
from .courses import course_for_member
from .extensions import db
from .lesson import render_markdown
from .models import Attempt, Course, CourseLab, Enrollment, ExerciseProgress

bp = Blueprint("grading", __name__)


def _fail(e: progress.ProgressError):
    return jsonify(error="unavailable" if e.status == 503 else "refused",
                   message=e.message[0].upper() + e.message[1:] + "."), e.status


def _learner_course(lab_id: str) -> Course:
    """The course in which the signed-in learner does `lab_id`: ?course=ID (or the JSON
    body's "course"), else the only course of theirs that has the lab."""
    wanted = request.args.get("course")
    if wanted is None and request.method == "POST":
        wanted = _body().get("course")
    if wanted is not None:
        try:
            course = course_for_member(int(wanted))
        except (TypeError, ValueError):
            abort(400, description="course must be a course id (a number)")
        if course.lab(lab_id) is None:
            abort(404, description=f"This course has no lab {lab_id!r}.")
        if not course.has_learner(current_user):
            abort(403, description="Only the course's learners do its exercises.")
        return course
    courses = db.session.scalars(
        select(Course).join(Enrollment, Enrollment.course_id == Course.id)
        .join(CourseLab, CourseLab.course_id == Course.id)
        .where(Enrollment.user_id == current_user.id, CourseLab.lab_id == lab_id)).all()
    if not courses:
        abort(404, description=f"None of your courses has the lab {lab_id!r}.")
    if len(courses) > 1:
        abort(400, description="Several of your courses have this lab: say which with "
                               "?course=ID.")
    return courses[0]


def _body() -> dict:
    """The POST's JSON object ({} for an empty body); 400 for anything else."""
    if not request.get_data():
        return {}
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        abort(400, description="The body must be a JSON object.")
    return body


@bp.route("/api/labs/<lab_id>")
@login_required
def lab_status(lab_id: str):
    course = _learner_course(lab_id)
    try:
        lab = progress.usable(lab_id)
    except progress.ProgressError as e:
        return _fail(e)
    params = progress.params_for(current_user, course, lab)
    db.session.commit()
    data = progress.summary(lab, params, progress.progress_rows(current_user.id, course.id,
                                                                lab.id))
    data["course"] = course.id
    return jsonify(data)


@bp.route("/api/labs/<lab_id>/exercises/<exercise_id>/check", methods=["POST"])
@login_required
def check(lab_id: str, exercise_id: str):
    from .sandboxes import client

    course = _learner_course(lab_id)
    answer = _body().get("answer")
    if answer is not None and not isinstance(answer, str):
        abort(400, description="answer must be a string.")
    try:
        lab = progress.usable(lab_id)
        ex = progress.find_exercise(lab, exercise_id)
        result, step_done = progress.check(current_user, course, lab, ex, answer, client())
    except progress.ProgressError as e:
        db.session.rollback()
        return _fail(e)
    return jsonify({**result.as_json(), "step_complete": step_done,
                    "feedback_html": str(render_markdown(result.feedback))})


@bp.route("/api/labs/<lab_id>/exercises/<exercise_id>/hint", methods=["POST"])
@login_required
def hint(lab_id: str, exercise_id: str):
    course = _learner_course(lab_id)
    try:
        lab = progress.usable(lab_id)
        ex = progress.find_exercise(lab, exercise_id)
        used, text = progress.reveal_hint(current_user, course, lab, ex)
    except progress.ProgressError as e:
        db.session.rollback()
        return _fail(e)
    return jsonify(hints_used=used, hints=len(ex.hints), hint=text,
                   hint_html=str(render_markdown(text)))


# ----------------------------------------------------------------- instructor gradebook

def _gradebook(course: Course) -> dict:
    """Learners x exercises of every usable lab of the course."""
    labs = []
    for cl in course.labs:
        lab = progress.load(cl.lab_id)
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
        learners.append({"user": enrollment.user,
                         "cells": [cells.get((lab_id, ex.id)) for lab_id, ex in columns],
                         "points": sum(c.points for c in cells.values()
                                       if any(c.lab_id == l and c.exercise_id == e.id
                                              for l, e in columns))})
    max_points = sum(ex.points for _, ex in columns)
    return {"labs": labs, "columns": columns, "learners": learners, "max_points": max_points}


def _taught(course_id: int) -> Course:
    course = course_for_member(course_id)
    if not course.is_taught_by(current_user):
        abort(403, description="Only the course's instructor sees its grades.")
    return course


@bp.route("/courses/<int:course_id>/grades")
@login_required
def gradebook(course_id: int):
    course = _taught(course_id)
    recent = db.session.scalars(select(Attempt).where(Attempt.course_id == course.id)
                                .order_by(Attempt.at.desc()).limit(50)).all()
    return render_template("courses/grades.html", course=course, book=_gradebook(course),
                           recent=recent)


@bp.route("/courses/<int:course_id>/grades.csv")
@login_required
def gradebook_csv(course_id: int):
    course = _taught(course_id)
    book = _gradebook(course)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["learner"] + [f"{lab_id}/{ex.id} ({ex.points})"
                                   for lab_id, ex in book["columns"]]
                    + ["attempts", "hints used", "points", f"of {book['max_points']}"])
    for learner in book["learners"]:
        cells = learner["cells"]
        writer.writerow([_csv_safe(learner["user"].username)]
                        + [c.points if c else 0 for c in cells]
                        + [sum(c.attempts for c in cells if c),
                           sum(c.hints_used for c in cells if c), learner["points"], ""])
    filename = f"grades-course-{course.id}.csv"
    return Response(out.getvalue(), mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})


def _csv_safe(text: str) -> str:
    """Spreadsheets run cells that start with = + - @ as formulas."""
    return "'" + text if text[:1] in ("=", "+", "-", "@") else text
