"""Co-instructors (webapp/staff.py): the owner of a course adds and removes them, as JSON and
from the course page's forms; a co-instructor has the owner's rights on that course only;
every refusal says why and changes nothing."""

from __future__ import annotations

import re
import shutil

import pytest
from sqlalchemy import event, insert, select
from webapp_helpers import PASSWORD, csrf_token, make_course, make_user

from webapp import create_app
from webapp.config import TestConfig
from webapp.extensions import db
from webapp.models import (Course, CourseStaff, Role, SandboxAssignment, SandboxState, User,
                           utcnow)
from webapp.sandboxes.service import may_use
from webapp.staff import StaffError, add_staff, remove_staff


@pytest.fixture
def school(tmp_path, webapp_schema):
    """An app with CSRF on. `own` owns "Containers" (labs intro; learner amy), `ta` and
    `ta2` are instructors with no course, `far` owns "Elsewhere" (learner bob)."""
    shutil.copy(webapp_schema, tmp_path / "nslab.db")
    (tmp_path / "labs" / "extra").mkdir(parents=True)  # a lab folder add_lab accepts
    app = create_app(TestConfig(tmp_path, LABS_DIR=str(tmp_path / "labs"),
                                WTF_CSRF_ENABLED=True))
    for name, role in (("own", Role.INSTRUCTOR), ("ta", Role.INSTRUCTOR),
                       ("ta2", Role.INSTRUCTOR), ("far", Role.INSTRUCTOR),
                       ("amy", Role.LEARNER), ("bob", Role.LEARNER)):
        make_user(app, name, role)
    app.c1, _ = make_course(app, "own", "Containers", labs=("intro",), learners=("amy",))
    app.c2, _ = make_course(app, "far", "Elsewhere", labs=("intro",), learners=("bob",))
    yield app
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


class Browser:
    """A signed-in test client that sends the page's CSRF token as the pages' fetch does."""

    def __init__(self, app, name: str | None):
        self.web = app.test_client()
        page = self.web.get("/login").text
        self.token = re.search(r'name="csrf-token" content="([^"]+)"', page).group(1)
        if name is not None:
            r = self.web.post("/login", data={"username": name, "password": PASSWORD,
                                              "csrf_token": self.token})
            assert r.status_code == 302, r.text
            page = self.web.get("/dashboard").text
            self.token = re.search(r'name="csrf-token" content="([^"]+)"', page).group(1)

    def post_json(self, path: str, body: dict | None = None, *, csrf: bool = True):
        headers = {"X-CSRFToken": self.token, "Accept": "application/json"} if csrf else \
            {"Accept": "application/json"}
        return self.web.post(path, json=body or {}, headers=headers)

    def get(self, path: str, **kwargs):
        return self.web.get(path, **kwargs)


def staff_of(app, course_id: int) -> list[str]:
    with app.app_context():
        course = db.session.get(Course, course_id)
        return [s.user.username for s in course.staff]


def user_id(app, name: str) -> int:
    with app.app_context():
        return User.by_name(name).id


def test_owner_adds_a_co_instructor_who_teaches_that_course_only(school):
    own, ta = Browser(school, "own"), Browser(school, "ta")
    c1, c2 = school.c1, school.c2
    # Before: the course is not theirs.
    assert ta.get(f"/courses/{c1}").status_code == 403
    assert ta.get(f"/courses/{c1}/grades").status_code == 403
    assert "Containers" not in ta.get("/dashboard").text

    r = own.post_json(f"/courses/{c1}/staff", {"username": " TA "})
    assert r.status_code == 201
    assert r.get_json() == {"staff": {"id": user_id(school, "ta"), "username": "ta"}}
    assert staff_of(school, c1) == ["ta"]

    # The owner's rights on this course: its page (the teacher's), gradebook, CSV,
    # statistics, adding a lab.
    page = ta.get(f"/courses/{c1}")
    assert page.status_code == 200 and "You teach this course with own" in page.text
    assert "Gradebook" in page.text and 'href="/courses/%d/live"' % c1 in page.text
    assert ta.get(f"/courses/{c1}/grades").status_code == 200
    assert ta.get(f"/courses/{c1}/grades.csv").status_code == 200
    assert ta.get(f"/courses/{c1}/stats").status_code == 200
    assert ta.get(f"/courses/{c1}/stats.json").get_json()["enrolled"] == 1
    r = ta.web.post(f"/courses/{c1}/labs", data={"lab_id": "extra", "csrf_token": ta.token})
    assert r.status_code == 302
    with school.app_context():
        assert [cl.lab_id for cl in db.session.get(Course, c1).labs] == ["intro", "extra"]
    dashboard = ta.get("/dashboard").text
    assert "Containers" in dashboard and "co-instructor with own" in dashboard
    # ... and none on another course.
    assert ta.get(f"/courses/{c2}").status_code == 403
    assert ta.get(f"/courses/{c2}/grades").status_code == 403
    assert ta.get(f"/courses/{c2}/stats.json").status_code == 403
    r = ta.web.post(f"/courses/{c2}/labs", data={"lab_id": "extra", "csrf_token": ta.token})
    assert r.status_code == 403
    assert "Elsewhere" not in dashboard

    # Not the owner: a co-instructor names nobody and removes nobody (themselves included).
    r = ta.post_json(f"/courses/{c1}/staff", {"username": "ta2"})
    assert r.status_code == 403 and r.get_json()["error"] == "forbidden"
    r = ta.post_json(f"/courses/{c1}/staff/{user_id(school, 'ta')}/remove")
    assert r.status_code == 403
    assert staff_of(school, c1) == ["ta"]
    # Their course page shows the staff but no add form and no remove buttons.
    assert 'name="username"' not in page.text and "/remove" not in page.text
    assert '<td class="staff-name">ta</td>' in page.text


def test_owner_removes_a_co_instructor_who_loses_the_course_at_once(school):
    own, ta = Browser(school, "own"), Browser(school, "ta")
    c1, uid = school.c1, user_id(school, "ta")
    assert own.post_json(f"/courses/{c1}/staff", {"username": "ta"}).status_code == 201
    assert ta.get(f"/courses/{c1}/grades").status_code == 200

    r = own.post_json(f"/courses/{c1}/staff/{uid}/remove")
    assert r.status_code == 200 and r.get_json() == {"removed": {"id": uid, "username": "ta"}}
    assert staff_of(school, c1) == []
    # The same signed-in session: refused at its next request.
    assert ta.get(f"/courses/{c1}/grades").status_code == 403
    assert ta.get(f"/courses/{c1}/stats.json").status_code == 403
    assert ta.get(f"/courses/{c1}").status_code == 403
    assert "Containers" not in ta.get("/dashboard").text
    # Removing again: not a co-instructor (and the owner is never one).
    r = own.post_json(f"/courses/{c1}/staff/{uid}/remove")
    assert r.status_code == 404 and r.get_json()["error"] == "not_staff"
    r = own.post_json(f"/courses/{c1}/staff/{user_id(school, 'own')}/remove")
    assert r.status_code == 404 and r.get_json()["error"] == "not_staff"
    # Added again later: fine.
    assert own.post_json(f"/courses/{c1}/staff", {"username": "ta"}).status_code == 201


@pytest.mark.parametrize("username, status, reason", [
    ("nobody", 404, "no_such_user"),
    ("amy", 400, "not_instructor"),    # a learner account (of this course)
    ("bob", 400, "not_instructor"),    # a learner account of another course
    ("own", 400, "is_owner"),
    ("", 400, "invalid"),
    ("   ", 400, "invalid"),
    ("x" * 65, 400, "invalid"),
    (None, 400, "invalid"),
    (["ta"], 400, "invalid"),
    (7, 400, "invalid"),
])
def test_refused_additions_say_why_and_change_nothing(school, username, status, reason):
    own = Browser(school, "own")
    r = own.post_json(f"/courses/{school.c1}/staff", {"username": username})
    assert r.status_code == status
    body = r.get_json()
    assert body["error"] == reason and body["message"]
    assert staff_of(school, school.c1) == []


def test_already_staff_and_a_learner_of_the_course_are_refused(school):
    own = Browser(school, "own")
    c1 = school.c1
    assert own.post_json(f"/courses/{c1}/staff", {"username": "ta"}).status_code == 201
    r = own.post_json(f"/courses/{c1}/staff", {"username": "ta"})
    assert r.status_code == 409 and r.get_json()["error"] == "already_staff"
    assert staff_of(school, c1) == ["ta"]
    # A learner of the course later made an instructor cannot grade the course they take.
    with school.app_context():
        amy = User.by_name("amy")
        amy.role = Role.INSTRUCTOR
        db.session.commit()
    r = own.post_json(f"/courses/{c1}/staff", {"username": "amy"})
    assert r.status_code == 409 and r.get_json()["error"] == "is_learner"
    assert staff_of(school, c1) == ["ta"]


def test_only_the_owner_changes_the_staff(school):
    c1, uid = school.c1, user_id(school, "ta")
    own = Browser(school, "own")
    assert own.post_json(f"/courses/{c1}/staff", {"username": "ta"}).status_code == 201
    for name in ("amy", "bob", "far", "ta2"):
        other = Browser(school, name)
        r = other.post_json(f"/courses/{c1}/staff", {"username": "ta2"})
        assert r.status_code == 403, name
        r = other.post_json(f"/courses/{c1}/staff/{uid}/remove")
        assert r.status_code == 403, name
    anonymous = Browser(school, None)
    r = anonymous.post_json(f"/courses/{c1}/staff", {"username": "ta2"})
    assert r.status_code == 401 and r.get_json()["error"] == "unauthorized"
    assert anonymous.post_json(f"/courses/{c1}/staff/{uid}/remove").status_code == 401
    # A form post without a session goes to the sign-in page.
    r = anonymous.web.post(f"/courses/{c1}/staff", data={"username": "ta2",
                                                          "csrf_token": anonymous.token})
    assert r.status_code == 302 and r.location.startswith("/login")
    r = own.post_json("/courses/9999/staff", {"username": "ta2"})
    assert r.status_code == 404
    assert staff_of(school, c1) == ["ta"]


def test_cross_site_requests_without_the_csrf_token_change_nothing(school):
    own = Browser(school, "own")
    c1 = school.c1
    r = own.post_json(f"/courses/{c1}/staff", {"username": "ta"}, csrf=False)
    assert r.status_code == 400
    r = own.web.post(f"/courses/{c1}/staff", data={"username": "ta"})  # a forged form
    assert r.status_code == 400
    assert staff_of(school, c1) == []
    assert own.post_json(f"/courses/{c1}/staff", {"username": "ta"}).status_code == 201
    r = own.web.post(f"/courses/{c1}/staff/{user_id(school, 'ta')}/remove")
    assert r.status_code == 400
    assert staff_of(school, c1) == ["ta"]


def test_the_course_page_forms_add_and_remove_with_a_flash(school):
    own = Browser(school, "own")
    c1 = school.c1
    page = own.get(f"/courses/{c1}").text
    assert "Teaching staff" in page and 'action="/courses/%d/staff"' % c1 in page
    assert 'href="/courses/%d/stats"' % c1 in page and "Live classroom" in page
    token = csrf_token(page)
    r = own.web.post(f"/courses/{c1}/staff", data={"username": "ta", "csrf_token": token})
    assert r.status_code == 303 and r.location == f"/courses/{c1}"
    page = own.get(r.location).text
    assert "ta now teaches this course with you." in page
    uid = user_id(school, "ta")
    assert f'action="/courses/{c1}/staff/{uid}/remove"' in page
    # An error comes back as a flash on the same page, nothing changed.
    r = own.web.post(f"/courses/{c1}/staff", data={"username": "amy", "csrf_token": token},
                     follow_redirects=True)
    assert r.status_code == 200 and "amy is a learner, not an instructor" in r.text
    assert staff_of(school, c1) == ["ta"]
    r = own.web.post(f"/courses/{c1}/staff/{uid}/remove", data={"csrf_token": token},
                     follow_redirects=True)
    assert "ta no longer teaches this course." in r.text
    assert staff_of(school, c1) == []



def test_a_co_instructor_reads_the_courses_sandboxes_like_its_owner(school):
    """The terminal, files, gauges and notebook all ask `may_use`: read for every teacher
    of the course, write for nobody but the learner (no take-over here)."""
    own = Browser(school, "own")
    assert own.post_json(f"/courses/{school.c1}/staff", {"username": "ta"}).status_code == 201
    with school.app_context():
        amy = User.by_name("amy")
        db.session.add(SandboxAssignment(user_id=amy.id, course_id=school.c1, lab_id="intro",
                                         sandbox_id="sb-amy", state=SandboxState.RUNNING))
        db.session.commit()
        users = {u.username: u for u in db.session.scalars(select(User))}
        reads = {name for name, u in users.items() if may_use(u, "sb-amy", "read")}
        writes = {name for name, u in users.items() if may_use(u, "sb-amy", "write")}
        assert reads == {"amy", "own", "ta"} and writes == {"amy"}
        remove_staff(db.session.get(Course, school.c1), users["ta"].id)
        db.session.commit()
        assert not may_use(users["ta"], "sb-amy", "read")


def test_two_owners_tabs_adding_the_same_account_at_once_keep_one_row(school):
    """The race the unique (course, user) pair settles: another request commits the same
    co-instructor between this one's check and its insert."""
    with school.app_context():
        course = db.session.get(Course, school.c1)
        ta_id = User.by_name("ta").id

        def other_request_commits_first(session, flush_context, instances):
            with db.engine.connect() as other:  # its own connection, as another request
                other.execute(insert(CourseStaff).values(course_id=school.c1, user_id=ta_id,
                                                         created=utcnow()))
                other.commit()

        event.listen(db.session, "before_flush", other_request_commits_first, once=True)
        with pytest.raises(StaffError) as refused:
            add_staff(course, "ta")
        assert refused.value.reason == "already_staff" and refused.value.status == 409
    assert staff_of(school, school.c1) == ["ta"]
