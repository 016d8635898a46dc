"""Courses: an instructor creates one and shares its join code; learners join with the code."""

from __future__ import annotations

from pathlib import Path

import math

from flask import Blueprint, abort, current_app, flash, redirect, render_template, url_for
from flask_login import current_user, login_required
from flask_wtf import FlaskForm
from sqlalchemy import func, select
from werkzeug.exceptions import TooManyRequests
from wtforms import StringField
from wtforms.validators import InputRequired, Length

from nslab.labkit.catalog import lab_ids
from nslab.labkit.model import LAB_ID_RE

from . import labstore, services
from .auth import join_code_wait, note_wrong_join_code, role_required
from .extensions import db
from .models import Course, ExerciseProgress, Role, SandboxAssignment

bp = Blueprint("courses", __name__, url_prefix="/courses")


class CourseForm(FlaskForm):
    title = StringField("Course title", validators=[InputRequired(), Length(max=120)],
                        render_kw={"placeholder": "Containers from scratch", "autofocus": True})


class JoinForm(FlaskForm):
    join_code = StringField("Join code", validators=[InputRequired(), Length(max=16)],
                            render_kw={"placeholder": "ABCD-1234", "autocomplete": "off",
                                       "autocapitalize": "characters"})


class AddLabForm(FlaskForm):
    lab_id = StringField("Lab id", validators=[InputRequired(), Length(max=64)],
                         render_kw={"placeholder": "namespaces-101", "autocomplete": "off"})


def course_for_member(course_id: int) -> Course:
    """The course if the current user teaches it or is enrolled in it; 404 if there is no
    such course, 403 if it is someone else's."""
    course = db.session.get(Course, course_id)
    if course is None:
        abort(404, description="There is no such course.")
    if not (course.is_taught_by(current_user) or course.has_learner(current_user)):
        abort(403, description="You are not enrolled in this course.")
    return course


def course_for_teacher(course_id: int, refusal: str) -> Course:
    """The course if the current user teaches it (its instructor or a co-instructor); 404
    if there is no such course, 403 with `refusal` for anyone else."""
    course = course_for_member(course_id)
    if not course.is_taught_by(current_user):
        abort(403, description=refusal)
    return course


@bp.route("/new", methods=["GET", "POST"])
@role_required(Role.INSTRUCTOR)
def new():
    form = CourseForm()
    if form.validate_on_submit():
        try:
            course = services.create_course(form.title.data, current_user)
        except services.ServiceError as e:
            db.session.rollback()
            form.title.errors.append(str(e))
        else:
            db.session.commit()
            flash(f"Course created. Learners join with the code {course.join_code}.", "success")
            return redirect(url_for("courses.show", course_id=course.id))
    return render_template("courses/new.html", form=form)


@bp.route("/join", methods=["POST"])
@role_required(Role.LEARNER)
def join():
    form = JoinForm()
    if not form.validate_on_submit():
        flash("Enter the join code your instructor gave you.", "error")
        return redirect(url_for("dashboard.home"))
    wait = join_code_wait(current_user.id)
    if wait:
        error = TooManyRequests(f"Too many wrong join codes. Try again in "
                                f"{math.ceil(wait / 60)} minutes, or ask your instructor "
                                "for the code.")
        return render_template("error.html", error=error), 429, \
            {"Retry-After": str(math.ceil(wait))}
    course = Course.by_code(form.join_code.data)
    if course is None:
        note_wrong_join_code(current_user.id)
        flash("No course has this join code; check it with your instructor.", "error")
        return redirect(url_for("dashboard.home"))
    if course.has_learner(current_user):
        flash(f"You are already in {course.title}.", "info")
    else:
        services.enroll(current_user, course)
        db.session.commit()
        flash(f"You joined {course.title}.", "success")
    return redirect(url_for("courses.show", course_id=course.id))


@bp.route("/<int:course_id>")
@login_required
def show(course_id: int):
    course = course_for_member(course_id)
    labs = {cl.lab_id: lab_card(cl.lab_id) for cl in course.labs}
    if course.is_taught_by(current_user):
        totals = dict(db.session.execute(
            select(ExerciseProgress.user_id, func.sum(ExerciseProgress.points))
            .where(ExerciseProgress.course_id == course.id)
            .group_by(ExerciseProgress.user_id)).all())
        return render_template("courses/instructor.html", course=course, add_lab=AddLabForm(),
                               labs=labs, totals=totals,
                               max_points=sum(c["max_points"] for c in labs.values()))
    started = set(db.session.scalars(
        select(SandboxAssignment.lab_id).where(SandboxAssignment.course_id == course.id,
                                               SandboxAssignment.user_id == current_user.id)))
    points = dict(db.session.execute(
        select(ExerciseProgress.lab_id, func.sum(ExerciseProgress.points))
        .where(ExerciseProgress.course_id == course.id,
               ExerciseProgress.user_id == current_user.id)
        .group_by(ExerciseProgress.lab_id)).all())
    return render_template("courses/learner.html", course=course, started=started, labs=labs,
                           points=points)


def lab_card(lab_id: str) -> dict:
    """What a course page shows of a lab: its title and points, or that it is broken."""
    lab = labstore.load(lab_id)
    if lab is None:
        return {"title": lab_id, "summary": "", "max_points": 0, "ok": True, "errors": 0,
                "minutes": None}
    return {"title": lab.title or lab_id, "summary": lab.summary, "ok": lab.ok,
            "max_points": lab.max_points if lab.ok else 0, "errors": len(lab.errors),
            "minutes": lab.minutes}


@bp.route("/<int:course_id>/labs", methods=["POST"])
@role_required(Role.INSTRUCTOR)
def add_lab(course_id: int):
    course = course_for_member(course_id)
    if not course.is_taught_by(current_user):
        abort(403, description="Only the course's instructor can change its labs.")
    form = AddLabForm()
    if form.validate_on_submit():
        try:
            _require_lab_folder(form.lab_id.data)
            lab = services.add_lab(course, form.lab_id.data)
        except services.ServiceError as e:
            db.session.rollback()
            flash(str(e)[0].upper() + str(e)[1:] + ".", "error")
        else:
            db.session.commit()
            flash(f"Added the lab {lab.lab_id}.", "success")
    return redirect(url_for("courses.show", course_id=course.id))


def _require_lab_folder(lab_id: str) -> None:
    wanted = lab_id.strip().lower()
    if not LAB_ID_RE.match(wanted):
        return  # services.add_lab says what a lab id looks like
    base = Path(current_app.config["LABS_DIR"])
    if not (base / wanted).is_dir():
        known = ", ".join(lab_ids(base)) or "none yet"
        raise services.ServiceError(f"there is no lab {wanted!r} in {base} (labs: {known})")
