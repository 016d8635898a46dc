"""Courses: an instructor creates one and shares its join code; learners join with the code."""

from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, render_template, url_for
from flask_login import current_user, login_required
from flask_wtf import FlaskForm
from sqlalchemy import select
from wtforms import StringField
from wtforms.validators import InputRequired, Length

from . import services
from .auth import role_required
from .extensions import db
from .models import Course, Role, SandboxAssignment

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
    course = Course.by_code(form.join_code.data)
    if course is None:
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
    if course.is_taught_by(current_user):
        return render_template("courses/instructor.html", course=course, add_lab=AddLabForm())
    started = set(db.session.scalars(
        select(SandboxAssignment.lab_id).where(SandboxAssignment.course_id == course.id,
                                               SandboxAssignment.user_id == current_user.id)))
    return render_template("courses/learner.html", course=course, started=started)


@bp.route("/<int:course_id>/labs", methods=["POST"])
@role_required(Role.INSTRUCTOR)
def add_lab(course_id: int):
    course = course_for_member(course_id)
    if not course.is_taught_by(current_user):
        abort(403, description="Only the course's instructor can change its labs.")
    form = AddLabForm()
    if form.validate_on_submit():
        try:
            lab = services.add_lab(course, form.lab_id.data)
        except services.ServiceError as e:
            db.session.rollback()
            flash(str(e)[0].upper() + str(e)[1:] + ".", "error")
        else:
            db.session.commit()
            flash(f"Added the lab {lab.lab_id}.", "success")
    return redirect(url_for("courses.show", course_id=course.id))
