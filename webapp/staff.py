"""Co-instructors (teaching assistants): the owner of a course names instructor accounts
that teach it with them (`CourseStaff`), and removes them.

A co-instructor has the owner's rights on that course — its gradebook, its live classroom and
its actions, adding labs — and none on any other: every check reads `Course.is_taught_by`.
Only the owner (`Course.is_owned_by`) changes the staff.

  POST /courses/<id>/staff               {username}
  POST /courses/<id>/staff/<uid>/remove

Both answer JSON (errors `{"error": reason, "message"}`, nothing changed) to a client that
sends JSON or asks for it, and otherwise redirect a plain form of the course page back to
it with a flash.
"""

from __future__ import annotations

from flask import (Blueprint, abort, current_app, flash, jsonify, make_response, redirect,
                   request, url_for)
from flask_login import current_user
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from .classroom import actions, push
from .extensions import db, login_manager
from .models import Course, CourseStaff, Enrollment, Role, User

bp = Blueprint("staff", __name__)

USERNAME_MAX = 64  # longer than any username (32): a longer one is bad input, not unknown


class StaffError(Exception):
    """Why the staff could not be changed: `reason` for code, `message` for people."""

    def __init__(self, reason: str, message: str, status: int):
        super().__init__(message)
        self.reason, self.message, self.status = reason, message, status


def co_taught(user: User) -> list[Course]:
    """The courses `user` teaches as a co-instructor (not those they own), oldest first."""
    return list(db.session.scalars(
        select(Course).join(CourseStaff, CourseStaff.course_id == Course.id)
        .where(CourseStaff.user_id == user.id).order_by(Course.created)))


def add_staff(course: Course, username: str) -> CourseStaff:
    """Make the instructor account `username` a co-instructor of `course` (flushed, not
    committed); StaffError, with nothing changed, if it may not be one."""
    name = username.strip() if isinstance(username, str) else ""
    if not name or len(name) > USERNAME_MAX:
        raise StaffError("invalid", "Give the username of an instructor account.", 400)
    user = User.by_name(name)
    if user is None:
        raise StaffError("no_such_user", f"There is no account {name!r}.", 404)
    if user.role != Role.INSTRUCTOR:
        raise StaffError("not_instructor", f"{user.username} is a {user.role.value}, not an "
                         "instructor: only instructor accounts can teach a course.", 400)
    if course.is_owned_by(user):
        raise StaffError("is_owner", f"{user.username} is this course's instructor already.",
                         400)
    if db.session.scalar(select(CourseStaff.id).where(CourseStaff.course_id == course.id,
                                                      CourseStaff.user_id == user.id)):
        raise StaffError("already_staff", f"{user.username} already teaches this course.", 409)
    # An account that takes the course cannot also grade it.
    if db.session.scalar(select(Enrollment.id).where(Enrollment.course_id == course.id,
                                                     Enrollment.user_id == user.id)):
        raise StaffError("is_learner", f"{user.username} is a learner of this course.", 409)
    member = CourseStaff(course_id=course.id, user_id=user.id)
    db.session.add(member)
    try:
        db.session.flush()
    except IntegrityError:
        # The same account added twice at once: the unique (course, user) pair keeps one.
        db.session.rollback()
        raise StaffError("already_staff", f"{user.username} already teaches this course.",
                         409) from None
    return member


def remove_staff(course: Course, user_id: int) -> User:
    """Take `user_id` off the course's co-instructors (not committed): their next request
    or event is refused. StaffError if they are not one."""
    member = db.session.scalar(select(CourseStaff).where(CourseStaff.course_id == course.id,
                                                         CourseStaff.user_id == user_id))
    if member is None:
        raise StaffError("not_staff", "That account is not a co-instructor of this course.",
                         404)
    user = member.user
    db.session.delete(member)
    return user


def _owned(course_id: int) -> Course:
    if not current_user.is_authenticated:
        # A script is told (401, as the classroom's routes say it); a form's browser is
        # sent to sign in.
        if _wants_json():
            abort(make_response(jsonify(error="unauthorized", message="Sign in first."), 401))
        abort(login_manager.unauthorized())
    course = db.session.get(Course, course_id)
    if course is None:
        abort(404, description="There is no such course.")
    if not course.is_owned_by(current_user):
        abort(403, description="Only the course's instructor names its co-instructors.")
    return course


def _wants_json() -> bool:
    return request.is_json or request.accept_mimetypes.best == "application/json"


def _refused(course: Course, e: StaffError):
    db.session.rollback()
    if _wants_json():
        return jsonify(error=e.reason, message=e.message), e.status
    flash(e.message, "error")
    return redirect(url_for("courses.show", course_id=course.id), 303)


@bp.route("/courses/<int:course_id>/staff", methods=["POST"])
def add(course_id: int):
    course = _owned(course_id)
    if _wants_json():
        body = request.get_json(silent=True)
        username = body.get("username") if isinstance(body, dict) else None
    else:
        username = request.form.get("username")
    try:
        member = add_staff(course, username)
    except StaffError as e:
        return _refused(course, e)
    db.session.commit()
    if _wants_json():
        return jsonify(staff={"id": member.user_id, "username": member.user.username}), 201
    flash(f"{member.user.username} now teaches this course with you.", "success")
    return redirect(url_for("courses.show", course_id=course.id), 303)


@bp.route("/courses/<int:course_id>/staff/<int:user_id>/remove", methods=["POST"])
def remove(course_id: int, user_id: int):
    course = _owned(course_id)
    try:
        user = remove_staff(course, user_id)
    except StaffError as e:
        return _refused(course, e)
    db.session.commit()
    # Their live pages already in the course's staff room leave it now, rather than at the
    # usage sampler's next round (every event they send is checked anyway).
    ns = push.namespace(current_app)
    if ns is not None:
        ns.recheck(course.id)
    # Their take-overs end and their terminals on the course's sandboxes close.
    actions.teacher_removed(current_app._get_current_object(), course.id, user.id)
    if _wants_json():
        return jsonify(removed={"id": user.id, "username": user.username})
    flash(f"{user.username} no longer teaches this course.", "success")
    return redirect(url_for("courses.show", course_id=course.id), 303)
