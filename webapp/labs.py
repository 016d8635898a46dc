"""The lab page: the lesson on the left, the learner's terminal on the right."""

from __future__ import annotations

from flask import Blueprint, abort, current_app, render_template
from flask_login import current_user, login_required

from .courses import course_for_member
from .lesson import load_lesson

bp = Blueprint("labs", __name__, url_prefix="/courses/<int:course_id>/labs")


@bp.route("/<lab_id>")
@login_required
def show(course_id: int, lab_id: str):
    course = course_for_member(course_id)
    lab = course.lab(lab_id)
    if lab is None:
        abort(404, description="This course has no such lab.")
    lesson = load_lesson(current_app.config["LABS_DIR"], lab.lab_id)
    position = course.labs.index(lab)
    neighbours = (course.labs[position - 1] if position > 0 else None,
                  course.labs[position + 1] if position + 1 < len(course.labs) else None)
    return render_template("labs/lab.html", course=course, lab=lab, lesson=lesson,
                           previous=neighbours[0], next=neighbours[1],
                           shadowing=course.is_taught_by(current_user))
