"""The learner's lab API: a lab's status, Check, hints (the instructor's view of the
grades is gradebook.py). No answer holds a hidden param's value (docs/authoring.md).

The API is JSON under /api/ and, like every POST in the app, protected by Flask-WTF's
CSRF check: the page carries `<meta name="csrf-token">` and fetch() sends `X-CSRFToken`.
"""

from __future__ import annotations

from flask import Blueprint, abort, current_app, jsonify, request
from flask_login import current_user, login_required
from sqlalchemy import select

from nslab.labkit.params import expand

from . import labstore, progress, sandboxes
from .classroom import push
from .courses import course_for_member
from .extensions import db
from .labs import assets_url
from .lesson import render_markdown
from .models import Course, CourseLab, Enrollment

bp = Blueprint("lab_api", __name__)


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
    params = labstore.params_for(current_user, course, lab)
    db.session.commit()
    data = progress.summary(lab, params, progress.progress_rows(current_user.id, course.id,
                                                                lab.id))
    data["course"] = course.id
    return jsonify(data)


@bp.route("/api/labs/<lab_id>/exercises/<exercise_id>/check", methods=["POST"])
@login_required
def check(lab_id: str, exercise_id: str):
    course = _learner_course(lab_id)
    answer = _body().get("answer")
    if answer is not None and not isinstance(answer, str):
        abort(400, description="answer must be a string.")
    try:
        lab = progress.usable(lab_id)
        ex = progress.find_exercise(lab, exercise_id)
        done = progress.check(current_user, course, lab, ex, answer, sandboxes.client())
    except progress.ProgressError as e:
        db.session.rollback()
        return _fail(e)
    assets = assets_url(course.id, lab.id)
    out = {**done.result.as_json(), "points": done.award.points,
           "graded": done.award.graded, "deduction": done.award.deduction,
           "step_complete": done.step_complete,
           "feedback_html": str(render_markdown(done.result.feedback, assets=assets)),
           "note": progress.scoring_note(ex, done),
           "exercise": progress.exercise_state(ex, done.row)}
    if done.row.passed_at is not None and ex.walkthrough:
        params = lab.visible_params(labstore.params_for(current_user, course, lab))
        out["walkthrough_html"] = str(render_markdown(expand(ex.walkthrough, params),
                                                      assets=assets))
    db.session.commit()
    # The teachers' live view: one learner's row (nothing when no teacher watches).
    push.learner_changed(current_app._get_current_object(), course.id, current_user.id)
    return jsonify(out)


@bp.route("/api/labs/<lab_id>/exercises/<exercise_id>/hint", methods=["POST"])
@login_required
def hint(lab_id: str, exercise_id: str):
    course = _learner_course(lab_id)
    try:
        lab = progress.usable(lab_id)
        ex = progress.find_exercise(lab, exercise_id)
        row, text = progress.reveal_hint(current_user, course, lab, ex)
    except progress.ProgressError as e:
        db.session.rollback()
        return _fail(e)
    push.learner_changed(current_app._get_current_object(), course.id, current_user.id)
    return jsonify(hints_used=row.hints_used, hints=len(ex.hints), hint=text,
                   hint_html=str(render_markdown(text, assets=assets_url(course.id, lab.id))),
                   exercise=progress.exercise_state(ex, row))
