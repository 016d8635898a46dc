"""Helpers for the web app tests: accounts and courses made straight in the database."""

from __future__ import annotations

import re

from webapp import services
from webapp.extensions import db
from webapp.models import Course, Role, User

PASSWORD = "correct horse"


def make_user(app, name: str, role: Role = Role.LEARNER, password: str = PASSWORD) -> int:
    with app.app_context():
        user = services.create_user(name, password, role)
        db.session.commit()
        return user.id


def make_course(app, instructor: str, title: str = "Containers", labs=("intro",),
                learners=()) -> tuple[int, str]:
    """A course taught by `instructor`, with these labs and learners; (id, join code)."""
    with app.app_context():
        course = services.create_course(title, User.by_name(instructor))
        db.session.flush()
        for lab in labs:
            services.add_lab(course, lab)
        for name in learners:
            services.enroll(User.by_name(name), course)
        db.session.commit()
        return course.id, course.join_code


def login(web, name: str, password: str = PASSWORD, **kwargs):
    return web.post("/login", data={"username": name, "password": password}, **kwargs)


def logout(web):
    return web.post("/logout")


def csrf_token(html: str) -> str:
    match = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', html) or \
        re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "no csrf_token field in the page"
    return match.group(1)


def enrolled(app, name: str, course_id: int) -> bool:
    with app.app_context():
        return db.session.get(Course, course_id).has_learner(User.by_name(name))
