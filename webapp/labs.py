"""The lab page: the lesson on the left, the learner's terminal on the right."""

from __future__ import annotations

from flask import Blueprint, abort, current_app, flash, redirect, render_template, url_for
from flask_login import current_user, login_required

from sandbox.errors import SandboxError

from . import labstore, progress, sandboxes
from .courses import course_for_member
from .extensions import db
from .lesson import lesson_steps, load_lesson

bp = Blueprint("labs", __name__, url_prefix="/courses/<int:course_id>/labs")


@bp.route("/<lab_id>")
@login_required
def show(course_id: int, lab_id: str):
    course = course_for_member(course_id)
    lab = course.lab(lab_id)
    if lab is None:
        abort(404, description="This course has no such lab.")
    shadowing = course.is_taught_by(current_user)
    position = course.labs.index(lab)
    neighbours = (course.labs[position - 1] if position > 0 else None,
                  course.labs[position + 1] if position + 1 < len(course.labs) else None)
    common = dict(course=course, lab=lab, previous=neighbours[0], next=neighbours[1],
                  shadowing=shadowing)
    structured = labstore.load(lab.lab_id)
    if structured is None:  # a folder with a plain lesson.md (or nothing yet)
        lesson = load_lesson(current_app.config["LABS_DIR"], lab.lab_id)
        return render_template("labs/lab.html", lesson=lesson, title=lesson.title, **common)
    if structured.errors:
        return render_template("labs/unavailable.html", structured=structured,
                               title=structured.title or lab.lab_id, **common), 503
    if shadowing:  # the instructor reads every step, with each param's name in place
        params = {name: f"⟨{name}⟩" for name in structured.params}
        rows, last = {}, {}
    else:
        params = labstore.params_for(current_user, course, structured)
        db.session.commit()
        rows = progress.progress_rows(current_user.id, course.id, structured.id)
        last = progress.last_attempts(current_user.id, course.id, structured.id)
    steps = lesson_steps(structured, params, rows, last, all_open=shadowing)
    return render_template("labs/lab.html", structured=structured, steps=steps,
                           title=structured.title, lesson=None,
                           points=sum(r.points for r in rows.values()), **common)


@bp.route("/<lab_id>/reset", methods=["POST"])
@login_required
def reset(course_id: int, lab_id: str):
    """Start the lab over in a fresh sandbox (the page asks for confirmation first)."""
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
