"""Account and course operations shared by the web pages and the `nslab` admin commands.

Each checks its input and raises ServiceError (a message for the person) before it changes
anything; the caller commits.
"""

from __future__ import annotations

from sqlalchemy import func, select

from nslab.labkit.model import LAB_ID_RE

from .extensions import db
from .models import (USERNAME_RE, Course, CourseLab, Enrollment, Role, User, new_join_code,
                     normalize_username)

MIN_PASSWORD = 8


class ServiceError(Exception):
    """Bad input for an operation; str() is the message to show."""


def create_user(username: str, password: str, role: Role | str) -> User:
    name = normalize_username(username)
    if not USERNAME_RE.match(name):
        raise ServiceError("a username is 2-32 characters: letters, digits, '.', '_' or '-', "
                           "starting with a letter or digit")
    try:
        role = Role(role)
    except ValueError:
        raise ServiceError(f"role must be 'instructor' or 'learner', not {role!r}") from None
    check_password(password)
    if User.by_name(name) is not None:
        raise ServiceError(f"the username {name!r} is taken")
    user = User(username=name, role=role)
    user.set_password(password)
    db.session.add(user)
    return user


def check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise ServiceError(f"a password needs at least {MIN_PASSWORD} characters")
    if len(password) > 256:
        raise ServiceError("a password may have at most 256 characters")


def create_course(title: str, instructor: User) -> Course:
    title = " ".join(title.split())
    if not title or len(title) > 120:
        raise ServiceError("a course title is 1-120 characters")
    if instructor.role != Role.INSTRUCTOR:
        raise ServiceError(f"{instructor.username!r} is a {instructor.role.value}, "
                           "not an instructor")
    course = Course(title=title, instructor=instructor, join_code=_unused_join_code())
    db.session.add(course)
    return course


def _unused_join_code() -> str:
    for _ in range(100):
        code = new_join_code()
        if db.session.scalar(select(Course.id).where(Course.join_code == code)) is None:
            return code
    raise ServiceError("could not find an unused join code")  # 24^4 * 10^4 codes: never here


def enroll(user: User, course: Course) -> Enrollment:
    if user.role != Role.LEARNER:
        raise ServiceError(f"{user.username!r} is an {user.role.value}; only learners enroll "
                           "in a course")
    if course.has_learner(user):
        raise ServiceError(f"{user.username!r} is already enrolled in {course.title!r}")
    enrollment = Enrollment(user=user, course=course)
    db.session.add(enrollment)
    return enrollment


def add_lab(course: Course, lab_id: str) -> CourseLab:
    lab_id = lab_id.strip().lower()
    if not LAB_ID_RE.match(lab_id):
        raise ServiceError("a lab id is 1-64 lower-case letters, digits and '-'")
    if course.lab(lab_id) is not None:
        raise ServiceError(f"the lab {lab_id!r} is already in this course")
    last = db.session.scalar(select(func.max(CourseLab.position))
                             .where(CourseLab.course_id == course.id))
    lab = CourseLab(lab_id=lab_id, position=(last or 0) + 1)
    course.labs.append(lab)
    return lab
