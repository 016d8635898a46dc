"""The lab page: the lesson on the left, the learner's terminal on the right; and the
pictures of a lab's assets/ folder."""

from __future__ import annotations

from flask import (Blueprint, abort, current_app, flash, redirect, render_template, send_file,
                   url_for)
from flask_login import current_user, login_required
from markupsafe import Markup

from nslab.labkit.model import ASSET_PART_RE, ASSET_TYPES
from sandbox.errors import SandboxError

from . import labstore, progress, sandboxes
from .courses import course_for_member
from .extensions import db
from .lesson import lesson_steps, load_lesson, render_inline

bp = Blueprint("labs", __name__, url_prefix="/courses/<int:course_id>/labs")
# An asset is an image, never a document that runs: an SVG opened on its own gets no
# scripts, no requests out, and no origin of its own (sandbox).
ASSET_POLICY = ("default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
                "font-src data:; sandbox")


@bp.app_template_filter("points")
def points_filter(value) -> str:
    """2.0 -> "2", 1.5 -> "1.5": points are fractional once a hint took a share off."""
    return f"{round(float(value or 0), 2):g}"


@bp.app_template_filter("inline_markdown")
def inline_markdown_filter(text: str | None) -> Markup:
    return render_inline(text or "")


def assets_url(course_id: int, lab_id: str) -> str:
    """The URL prefix of a lab's assets/ folder, as a lesson's `assets/x.svg` becomes."""
    return url_for("labs.asset", course_id=course_id, lab_id=lab_id, name="x")[:-1]


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
    version = None
    if shadowing:  # the instructor reads every step, with each param's name in place
        params = {name: f"⟨{name}⟩" for name in structured.params}
        rows, last = {}, {}
    else:
        params = labstore.params_for(current_user, course, structured)
        db.session.commit()
        rows = progress.progress_rows(current_user.id, course.id, structured.id)
        last = progress.last_attempts(current_user.id, course.id, structured.id)
        if structured.conditional:  # the learner reads only their host's spelling
            version = labstore.cgroup_version(sandboxes.client())
    steps = lesson_steps(structured, params, rows, last, all_open=shadowing,
                         cgroup_version=version, assets=assets_url(course.id, structured.id))
    return render_template("labs/lab.html", structured=structured, steps=steps,
                           title=structured.title, lesson=None,
                           points=sum(r.points for r in rows.values()), **common)


@bp.route("/<lab_id>/assets/<path:name>")
@login_required
def asset(course_id: int, lab_id: str, name: str):
    """A picture from the lab's assets/ folder, for the course's members."""
    course = course_for_member(course_id)
    if course.lab(lab_id) is None:
        abort(404, description="This course has no such lab.")
    lab = labstore.load(lab_id)
    parts = name.split("/")
    if lab is None or not all(ASSET_PART_RE.match(p) for p in parts):
        abort(404, description="There is no such asset.")
    base = (lab.path / "assets").resolve()
    path = base.joinpath(*parts)
    kind = ASSET_TYPES.get(path.suffix.lower())
    # resolve(): a link inside assets/ must not lead out of it.
    if kind is None or not path.resolve().is_relative_to(base) or not path.is_file():
        abort(404, description="There is no such asset.")
    response = send_file(path.resolve(), mimetype=kind, max_age=300, conditional=True)
    response.headers["Content-Security-Policy"] = ASSET_POLICY
    return response


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
