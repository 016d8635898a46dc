"""Grading in the web app: the lab API (status, Check, hints), the lab page's exercises and
locked steps, the instructor's gradebook and CSV, broken labs — against a real sandboxd,
with the example lab (labs/example) copied into the app's labs folder."""

from __future__ import annotations

import csv
import io
import re
import shutil
from pathlib import Path

import pytest

from webapp_helpers import login, logout, make_course, make_user
from webapp.models import Role

pytestmark = pytest.mark.privileged
EXAMPLE = Path(__file__).resolve().parent.parent / "labs" / "example"


@pytest.fixture
def graded(tmp_path, webapp_schema, sandboxd):
    """An app with CSRF on, the example lab, a course taught by `teach` with learners
    `amy` and `ben`, an outsider learner `cat` and another instructor `other`."""
    from webapp import create_app
    from webapp.config import TestConfig
    from webapp.extensions import db

    shutil.copy(webapp_schema, tmp_path / "nslab.db")
    labs = tmp_path / "labs"
    shutil.copytree(EXAMPLE, labs / "example", ignore=shutil.ignore_patterns("__pycache__"))
    app = create_app(TestConfig(tmp_path, NSLAB_SOCKET=str(sandboxd.socket),
                                LABS_DIR=str(labs), WTF_CSRF_ENABLED=True))
    for name, role in (("teach", Role.INSTRUCTOR), ("other", Role.INSTRUCTOR),
                       ("amy", Role.LEARNER), ("ben", Role.LEARNER), ("cat", Role.LEARNER)):
        make_user(app, name, role)
    cid, _ = make_course(app, "teach", labs=("example",), learners=("amy", "ben"))
    make_course(app, "other", title="Elsewhere", labs=("example",), learners=("cat",))
    app.course_id = cid
    yield app
    with app.app_context():
        from webapp.models import SandboxAssignment

        client = _client(app)
        for a in db.session.scalars(db.select(SandboxAssignment)):
            if a.sandbox_id:
                client.destroy(a.sandbox_id, purge=True)  # with the learner's home
        db.engine.dispose()


def _client(app):
    from sandbox.client import Client

    return Client(app.config["NSLAB_SOCKET"])


class Learner:
    """A signed-in browser on the lab page: it sends the page's CSRF token like lab.js."""

    def __init__(self, app, name: str):
        self.app = app
        self.name = name
        self.web = app.test_client()
        page = self.web.get("/login").text
        token = re.search(r'name="csrf-token" content="([^"]+)"', page).group(1)
        r = self.web.post("/login", data={"username": name, "password": "correct horse",
                                          "csrf_token": token})
        assert r.status_code in (302, 303), r.text
        self.page = self.web.get(f"/courses/{app.course_id}/labs/example")
        found = re.search(r'name="csrf-token" content="([^"]+)"', self.page.text)
        self.token = found.group(1) if found else token

    def api(self, path: str, body: dict | None = None, *, csrf: bool = True):
        if body is None:
            return self.web.get(f"/api/labs/example{path}")
        headers = {"X-CSRFToken": self.token} if csrf else {}
        return self.web.post(f"/api/labs/example{path}", json=body, headers=headers)

    def check(self, exercise: str, answer: str | None = None):
        body = {"course": self.app.course_id}
        if answer is not None:
            body["answer"] = answer
        return self.api(f"/exercises/{exercise}/check", body)

    def sandbox(self) -> str:
        """Open the lab's sandbox as the terminal does."""
        from webapp import sandboxes
        from webapp.models import User

        with self.app.test_request_context():
            return sandboxes.sandbox_for(User.by_name(self.name), self.app.course_id, "example")

    def shell(self, script: str) -> dict:
        return _client(self.app).run(self.sandbox(), ["/bin/sh", "-c", script], timeout=10)


def test_learner_does_the_example_lab_through_the_api(graded):
    amy = Learner(graded, "amy")
    status = amy.api("").get_json()
    assert status["id"] == "example" and status["max_points"] == 6 and status["points"] == 0
    secret = status["params"]["secret"]
    assert re.fullmatch(r"[a-z2-9]{8}", secret)
    first = status["exercises"][0]
    assert first == {"id": "make-file", "title": "Write your secret into a file", "points": 2,
                     "kind": "task", "step": "intro", "unlocked": True,
                     "params": {"secret": secret}, "status": "not_started", "attempts": 0,
                     "hints_used": 0, "hints": 2, "score": 0}
    assert status["exercises"][2]["unlocked"] is False  # step 2 waits for step 1
    # The page shows this learner's own secret and the Check buttons.
    assert secret in amy.page.text and 'data-action="check"' in amy.page.text

    # No sandbox yet: the check says so instead of failing obscurely.
    r = amy.check("make-file").get_json()
    assert r["passed"] is False and "not running" in r["feedback"]

    amy.shell("echo nope > /root/hello")
    r = amy.check("make-file").get_json()
    assert r == {**r, "passed": False, "points": 0, "max_points": 2, "step_complete": False}
    assert "contains 'nope'" in r["feedback"] and secret in r["feedback"]

    # The next step stays locked until this one passes.
    locked = amy.check("sleeper")
    assert locked.status_code == 409 and "locked" in locked.get_json()["message"]

    amy.shell(f"echo {secret} > /root/hello")
    r = amy.check("make-file").get_json()
    assert r["passed"] is True and r["points"] == 2 and r["step_complete"] is False
    r = amy.check("pid-one", "bash").get_json()
    assert r["passed"] is False and r["feedback"] == "bash is your shell"
    r = amy.check("pid-one", " Catatonit ").get_json()
    assert r["passed"] is True and r["step_complete"] is True

    r = amy.check("sleeper").get_json()
    assert r["passed"] is False and "No `sleep 1000`" in r["feedback"]
    amy.shell("setsid -f sleep 1000 </dev/null >/dev/null 2>&1; sleep 0.3")
    r = amy.check("sleeper").get_json()
    assert r["passed"] is True

    status = amy.api("").get_json()
    assert status["points"] == 6
    assert [(e["id"], e["status"], e["attempts"]) for e in status["exercises"]] == [
        ("make-file", "passed", 3), ("pid-one", "passed", 2), ("sleeper", "passed", 2)]
    # Another learner has their own drawn value and their own progress.
    ben = Learner(graded, "ben")
    other = ben.api("").get_json()
    assert other["points"] == 0 and re.fullmatch(r"[a-z2-9]{8}", other["params"]["secret"])
    assert [e["status"] for e in other["exercises"]] == ["not_started"] * 3


def test_hints_open_one_at_a_time_and_are_counted(graded):
    amy = Learner(graded, "amy")
    status = amy.api("").get_json()
    secret = status["params"]["secret"]
    r = amy.api("/exercises/make-file/hint", {"course": graded.course_id}).get_json()
    assert r["hints_used"] == 1 and r["hints"] == 2 and "`echo`" in r["hint"]
    r = amy.api("/exercises/make-file/hint", {"course": graded.course_id}).get_json()
    assert r["hints_used"] == 2 and secret in r["hint"]  # the learner's own value
    again = amy.api("/exercises/make-file/hint", {"course": graded.course_id})
    assert again.status_code == 409
    assert amy.api("").get_json()["exercises"][0]["hints_used"] == 2
    page = amy.web.get(f"/courses/{graded.course_id}/labs/example").text
    assert page.count('class="hint"') == 2  # open hints stay open after a reload


def test_csrf_and_bad_input_are_refused_and_change_nothing(graded):
    amy = Learner(graded, "amy")
    r = amy.api("/exercises/pid-one/check", {"course": graded.course_id,
                                              "answer": "catatonit"}, csrf=False)
    assert r.status_code == 400 and "did not come from this site" in r.get_json()["message"]
    bad = [({"course": "x"}, 400), ({"course": graded.course_id, "answer": 5}, 400),
           ({"course": graded.course_id, "answer": "x" * 501}, 400)]
    for body, code in bad:
        r = amy.api("/exercises/pid-one/check", body)
        assert r.status_code == code, (body, r.get_json())
        assert r.get_json()["message"]
    r = amy.web.post("/api/labs/example/exercises/pid-one/check", data="[1]",
                     content_type="application/json", headers={"X-CSRFToken": amy.token})
    assert r.status_code == 400
    assert amy.api("/exercises/nope/check", {"course": graded.course_id}).status_code == 404
    assert amy.web.get("/api/labs/nolab").status_code == 404
    assert amy.api("").get_json()["exercises"][1]["attempts"] == 0  # nothing was recorded


def test_who_may_use_the_lab_api(graded):
    anonymous = graded.test_client()
    assert anonymous.get("/api/labs/example").status_code == 401
    assert anonymous.post("/api/labs/example/exercises/pid-one/check",
                          json={"answer": "catatonit"}).status_code in (400, 401)
    teach = Learner(graded, "teach")  # the course's instructor: watches, does not check
    r = teach.check("pid-one", "catatonit")
    assert r.status_code == 403
    cat = Learner(graded, "cat")  # a learner of another course with the same lab
    r = cat.check("pid-one", "catatonit")
    assert r.status_code == 403  # not this course
    assert cat.api("").status_code == 200  # their own course's run of it
    other = Learner(graded, "other")  # instructor of another course
    assert other.check("pid-one", "catatonit").status_code == 403
    assert other.web.get(f"/courses/{graded.course_id}/grades").status_code == 403
    assert cat.web.get(f"/courses/{graded.course_id}/grades.csv").status_code == 403


def test_instructor_sees_attempts_and_exports_csv(graded):
    amy = Learner(graded, "amy")
    amy.check("pid-one", "bash")
    amy.check("pid-one", "catatonit")
    amy.api("/exercises/make-file/hint", {"course": graded.course_id})
    teach = Learner(graded, "teach")
    page = teach.web.get(f"/courses/{graded.course_id}/grades").text
    row = page.split('data-learner="amy"')[1].split("</tr>")[0]
    assert re.search(r'data-exercise="pid-one"[^>]*>\s*<strong>1</strong><small>2×', row)
    assert re.search(r'data-exercise="make-file"[^>]*>\s*<strong>0</strong><small>0× · 1h', row)
    assert "bash is your shell" in page and "Correct." in page
    # The instructor's lab page shows every step, params by name, no Check buttons.
    lab_page = teach.web.get(f"/courses/{graded.course_id}/labs/example").text
    assert "⟨secret⟩" in lab_page and 'data-action="check"' not in lab_page
    assert 'hidden' not in lab_page.split('id="step-task"')[1].split(">")[0]
    got = teach.web.get(f"/courses/{graded.course_id}/grades.csv")
    assert got.headers["Content-Type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(got.text)))
    assert rows[0][:4] == ["learner", "example/make-file (2)", "example/pid-one (1)",
                           "example/sleeper (3)"]
    assert rows[1][:7] == ["amy", "0", "1", "0", "2", "1", "1"]
    assert rows[2][:7] == ["ben", "0", "0", "0", "0", "0", "0"]


def test_broken_lab_is_unavailable_and_only_the_instructor_sees_why(graded):
    yaml_path = Path(graded.config["LABS_DIR"]) / "example" / "lab.yaml"
    yaml_path.write_text(yaml_path.read_text().replace("  - id: pid-one\n",
                                                       "  - id: pid-one\n    hint: oops\n"))
    amy = Learner(graded, "amy")
    assert amy.page.status_code == 503
    assert "cannot be opened right now" in amy.page.text and "lab.yaml" not in amy.page.text
    assert amy.api("").status_code == 503
    course_page = amy.web.get(f"/courses/{graded.course_id}").text
    assert "unavailable" in course_page
    teach = Learner(graded, "teach")
    assert "example/lab.yaml:" in teach.page.text and "unknown key &#39;hint&#39;" in \
        teach.page.text and "did you mean &#39;hints&#39;?" in teach.page.text
