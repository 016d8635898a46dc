"""The lab page: the lesson on the left, the learner's terminal on the right."""

from __future__ import annotations

from flask import Blueprint, abort, current_app, flash, redirect, render_template, url_for
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


@bp.route("/<lab_id>/reset", methods=["POST"])
@login_required
def reset(course_id: int, lab_id: str):
    """Start the lab over in a fresh sandbox (the page asks for confirmation first)."""
    from sandbox.errors import SandboxError

    from . import sandboxes

    course = course_for_member(course_id)
    if course.lab(lab_id) is None:
        abort(404, description="This course has no such lab.")
    try:
        done = sandboxes.reset(current_user, course_id, lab_id)
    except SandboxError as e:
        flash(f"The sandbox could not be reset: {e.message}", "error")
    else:
        flash("Your sandbox was reset; a fresh one starts with the terminal. Files in "
              "/root are kept." if done else "There was no sandbox to reset.", "success")
    return redirect(url_for("labs.show", course_id=course_id, lab_id=lab_id))
