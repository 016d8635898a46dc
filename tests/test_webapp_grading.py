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
        db.session.remove()  # its connection back before the pool closes (else open till a GC)
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


def note_of(learner: Learner) -> str:
    """The hidden value the example's setup left in the learner's sandbox."""
    return learner.shell("cat /srv/example/note")["stdout"].strip()


def test_learner_does_the_example_lab_through_the_api(graded):
    amy = Learner(graded, "amy")
    status = amy.api("").get_json()
    assert status["id"] == "example" and status["max_points"] == 8 and status["points"] == 0
    secret = status["params"]["secret"]
    assert re.fullmatch(r"[a-z2-9]{8}", secret)
    assert set(status["params"]) == {"secret"}  # `note` is hidden: never sent
    first = status["exercises"][0]
    assert first == {"id": "make-file", "title": "Write your secret into a file", "points": 2,
                     "kind": "task", "step": "intro", "unlocked": True,
                     "params": {"secret": secret}, "status": "not_started", "attempts": 0,
                     "graded_attempts": None, "attempts_left": None, "worth": 2,
                     "hint_cost": 1, "hints_used": 0, "hints": 2, "deduction": 0,
                     "score": 0, "walkthrough": False,
                     "cost_text": "A pass now earns 2 of 2 pts · each hint costs 1 pt."}
    assert [e["id"] for e in status["exercises"]] == ["make-file", "pid-one", "find-note",
                                                      "which-ns", "sleeper"]
    assert status["exercises"][3]["unlocked"] is False  # step 2 waits for step 1
    # The page shows this learner's own secret and the Check buttons.
    assert secret in amy.page.text and 'data-action="check"' in amy.page.text

    # No sandbox yet: the check says so instead of failing obscurely, and records nothing.
    r = amy.check("make-file")
    assert r.status_code == 409 and "not running" in r.get_json()["message"]
    assert attempts_of(graded, "amy") == (0, 0)

    amy.shell("echo nope > /root/hello")
    r = amy.check("make-file").get_json()
    assert r == {**r, "passed": False, "points": 0, "max_points": 2, "step_complete": False}
    assert "contains 'nope'" in r["feedback"] and secret in r["feedback"]
    assert r["exercise"]["attempts"] == 1 and r["exercise"]["status"] == "failed"

    # The next step stays locked until this one passes.
    locked = amy.check("sleeper")
    assert locked.status_code == 409 and "locked" in locked.get_json()["message"]

    amy.shell(f"echo {secret} > /root/hello")
    r = amy.check("make-file").get_json()
    assert r["passed"] is True and r["points"] == 2 and r["step_complete"] is False
    assert r["note"] is None and r["exercise"]["cost_text"] == ""
    r = amy.check("pid-one", "bash").get_json()
    assert r["passed"] is False and r["feedback"] == "bash is your shell"
    r = amy.check("pid-one", " Catatonit ").get_json()
    assert r["passed"] is True and r["step_complete"] is False
    r = amy.check("find-note", "note").get_json()
    assert r["passed"] is False and "is not the answer" in r["feedback"]
    r = amy.check("find-note", note_of(amy)).get_json()
    assert r["passed"] is True and r["step_complete"] is True

    r = amy.check("which-ns", "pid").get_json()
    assert r["passed"] is True and r["points"] == 1
    r = amy.check("sleeper").get_json()
    assert r["passed"] is False and "No `sleep 1000`" in r["feedback"]
    amy.shell("setsid -f sleep 1000 </dev/null >/dev/null 2>&1; sleep 0.3")
    r = amy.check("sleeper").get_json()
    assert r["passed"] is True and r["points"] == 3

    status = amy.api("").get_json()
    assert status["points"] == 8
    assert [(e["id"], e["status"], e["attempts"]) for e in status["exercises"]] == [
        ("make-file", "passed", 2), ("pid-one", "passed", 2), ("find-note", "passed", 2),
        ("which-ns", "passed", 1), ("sleeper", "passed", 2)]
    # Another learner has their own drawn value and their own progress.
    ben = Learner(graded, "ben")
    other = ben.api("").get_json()
    assert other["points"] == 0 and re.fullmatch(r"[a-z2-9]{8}", other["params"]["secret"])
    assert [e["status"] for e in other["exercises"]] == ["not_started"] * 5


def pass_step_one(learner: Learner) -> None:
    secret = learner.api("").get_json()["params"]["secret"]
    learner.shell(f"echo {secret} > /root/hello")
    for exercise, answer in (("make-file", None), ("pid-one", "catatonit"),
                             ("find-note", note_of(learner))):
        assert learner.check(exercise, answer).get_json()["passed"], exercise


def attempts_of(app, name: str) -> tuple[int, int]:
    """(Attempt rows, tries counted on the exercises) of this learner."""
    from sqlalchemy import func, select

    from webapp.extensions import db
    from webapp.models import Attempt, ExerciseProgress, User

    with app.app_context():
        uid = User.by_name(name).id
        return (db.session.scalar(select(func.count(Attempt.id)).filter_by(user_id=uid)),
                db.session.scalar(select(func.coalesce(func.sum(ExerciseProgress.attempts), 0))
                                  .filter_by(user_id=uid)))


def test_a_check_while_the_sandbox_is_stopped_says_so_and_records_nothing(graded):
    from webapp.extensions import db
    from webapp.models import SandboxAssignment, SandboxState

    amy = Learner(graded, "amy")
    secret = amy.api("").get_json()["params"]["secret"]
    sid = amy.sandbox()
    amy.shell(f"echo {secret} > /root/hello")
    # Stopped as the idle sweeper stops it: the daemon stops it, the assignment says so.
    _client(graded).stop(sid)
    with graded.app_context():
        a = db.session.execute(db.select(SandboxAssignment).filter_by(sandbox_id=sid)).scalar_one()
        a.state = SandboxState.STOPPED
        db.session.commit()
    for _ in range(3):
        r = amy.check("make-file")
        assert r.status_code == 409, r.get_json()
        assert r.get_json() == {"error": "refused", "message": "Your sandbox is stopped: "
                                "start it again (open the lab's terminal) to check."}
    assert attempts_of(graded, "amy") == (0, 0)
    status = amy.api("").get_json()["exercises"][0]
    assert status["attempts"] == 0 and status["status"] == "not_started"
    # A quiz needs no sandbox: it is checked as ever.
    r = amy.check("pid-one", "catatonit")
    assert r.status_code == 200 and r.get_json()["passed"] is True
    # Started again (the lab page opens it), the check runs and counts.
    assert amy.sandbox() == sid
    r = amy.check("make-file").get_json()
    assert r["passed"] is True and r["exercise"]["attempts"] == 1
    assert attempts_of(graded, "amy") == (2, 2)


def test_a_choice_quiz_pays_only_its_first_try(graded):
    amy = Learner(graded, "amy")
    pass_step_one(amy)
    before = amy.api("").get_json()["exercises"][3]
    assert (before["graded_attempts"], before["attempts_left"], before["worth"]) == (1, 1, 1)
    assert before["cost_text"] == "A pass now earns 1 of 1 pt · 1 graded try left."
    page = amy.web.get(f"/courses/{graded.course_id}/labs/example").text
    assert "A pass now earns 1 of 1 pt · 1 graded try left." in page
    r = amy.check("which-ns", "mount").get_json()
    assert r["passed"] is False and r["graded"] is True
    assert r["exercise"]["attempts_left"] == 0 and r["exercise"]["worth"] == 0
    assert r["exercise"]["cost_text"].startswith("No graded tries left")
    # Brute force finds the answer: the step opens, but no point is earned for it.
    r = amy.check("which-ns", "pid").get_json()
    assert r["passed"] is True and r["points"] == 0 and r["graded"] is False
    assert "only the first try" in r["note"]
    assert r["exercise"] == {**r["exercise"], "status": "passed", "score": 0, "attempts": 2}
    assert amy.api("").get_json()["exercises"][4]["unlocked"] is True
    # An empty answer is no try at all: it neither uses a try up nor is stored as one.
    ben = Learner(graded, "ben")
    pass_step_one(ben)
    r = ben.check("which-ns", "  ").get_json()
    assert r["passed"] is False and r["exercise"]["attempts_left"] == 1


def test_hints_cost_a_share_of_the_points_never_below_zero(graded):
    amy = Learner(graded, "amy")
    secret = amy.api("").get_json()["params"]["secret"]
    r = amy.api("/exercises/make-file/hint", {"course": graded.course_id}).get_json()
    assert r["exercise"]["worth"] == 1 and r["exercise"]["hint_cost"] == 1
    assert r["exercise"]["cost_text"] == "A pass now earns 1 of 2 pts · each hint costs 1 pt."
    page = amy.web.get(f"/courses/{graded.course_id}/labs/example").text
    assert "Show hint 2 of 2 <span class=\"hint-cost\">(&minus;1 pt)</span>" in page
    amy.shell(f"echo {secret} > /root/hello")
    r = amy.check("make-file").get_json()
    assert (r["passed"], r["points"], r["deduction"]) == (True, 1, 1)
    assert r["note"] == "1 of 2 points: 1 hint opened took 1 off."
    # A hint opened after passing takes nothing off: the passing try stands.
    r = amy.api("/exercises/make-file/hint", {"course": graded.course_id}).get_json()
    assert r["exercise"]["score"] == 1 and amy.api("").get_json()["points"] == 1
    # Both hints open before the first pass: 2 x 1 point off 2, and not below 0.
    ben = Learner(graded, "ben")
    for _ in range(2):
        ben.api("/exercises/make-file/hint", {"course": graded.course_id})
    assert ben.api("").get_json()["exercises"][0]["worth"] == 0
    secret = ben.api("").get_json()["params"]["secret"]
    ben.shell(f"echo {secret} > /root/hello")
    r = ben.check("make-file").get_json()
    assert (r["passed"], r["points"], r["deduction"]) == (True, 0, 2)


def test_graded_tries_run_out_and_the_walkthrough_opens_after_the_pass(graded):
    amy = Learner(graded, "amy")
    pass_step_one(amy)
    amy.check("which-ns", "pid")
    walk = "jobs -l"  # a line of the sleeper's walkthrough
    page = amy.web.get(f"/courses/{graded.course_id}/labs/example").text
    assert walk not in page and "opens here once you pass it" in page
    assert walk not in amy.api("").text
    for n in range(3):  # `attempts: 3`
        r = amy.check("sleeper").get_json()
        assert r["passed"] is False and r["graded"] is True and "walkthrough_html" not in r
        assert r["exercise"]["attempts_left"] == 2 - n
    assert walk not in amy.web.get(f"/courses/{graded.course_id}/labs/example").text
    amy.shell("setsid -f sleep 1000 </dev/null >/dev/null 2>&1; sleep 0.3")
    r = amy.check("sleeper").get_json()
    assert r["passed"] is True and r["points"] == 0 and r["graded"] is False
    assert "only the first 3 tries" in r["note"]
    assert walk in r["walkthrough_html"] and "run-in-terminal" in r["walkthrough_html"]
    page = amy.web.get(f"/courses/{graded.course_id}/labs/example").text
    assert walk in page and "opens here once you pass it" not in page


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
    secret = amy.api("").get_json()["params"]["secret"]
    amy.shell(f"echo {secret} > /root/hello")
    amy.check("make-file")  # 2 points, one hint took 1 off
    teach = Learner(graded, "teach")
    page = teach.web.get(f"/courses/{graded.course_id}/grades").text
    row = page.split('data-learner="amy"')[1].split("</tr>")[0]
    assert re.search(r'data-exercise="pid-one"[^>]*>\s*<strong>1</strong><small>2×</small>',
                     row)
    assert re.search(r'data-exercise="make-file" title="1 try, 1 hint \(&minus;1 pts\)">'
                     r'\s*<strong>1</strong><small>1× · 1h &minus;1</small>', row)
    assert re.search(r'data-exercise="which-ns"[^>]*>–', row)
    assert "<strong>2</strong> / 8<small>hints &minus;1</small>" in row
    assert "bash is your shell" in page and "Correct." in page
    assert "(hints &minus;1)" in page  # the latest attempts say what the hints cost
    # The graded tries of an exercise that limits them are in its header.
    assert 'title="Which namespace? · 1 graded try"' in page
    # The instructor's lab page shows every step, params by name, no Check buttons, both
    # cgroup versions' blocks labelled, and the walkthroughs.
    lab_page = teach.web.get(f"/courses/{graded.course_id}/labs/example").text
    assert "⟨secret⟩" in lab_page and 'data-action="check"' not in lab_page
    assert 'hidden' not in lab_page.split('id="step-task"')[1].split(">")[0]
    assert "Only on cgroup v1 hosts" in lab_page and "Only on cgroup v2 hosts" in lab_page
    assert "jobs -l" in lab_page
    got = teach.web.get(f"/courses/{graded.course_id}/grades.csv")
    assert got.headers["Content-Type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(got.text)))
    assert rows[0] == ["learner", "example/make-file (2)", "example/pid-one (1)",
                       "example/find-note (1)", "example/which-ns (1)", "example/sleeper (3)",
                       "attempts", "hints used", "hint deductions", "points", "of 8"]
    assert rows[1] == ["amy", "1", "1", "0", "0", "0", "3", "1", "1", "2", ""]
    assert rows[2] == ["ben", "0", "0", "0", "0", "0", "0", "0", "0", "0", ""]


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


def test_only_blocks_follow_the_cgroup_version_of_the_learners_host(graded):
    from webapp.labstore import HOSTS

    version = _client(graded).info()["cgroup_version"]
    mine, other = ("v1", "v2") if version == 1 else ("v2", "v1")
    amy = Learner(graded, "amy")
    page = amy.page.text
    assert f"This host runs cgroup {mine}" in page and f"This host runs cgroup {other}" \
        not in page
    # The Run buttons follow: only the learner's spelling can be typed.
    commands = re.findall(r'data-command="([^"]*)"', page)
    v1, v2 = "grep -E 'pids|cpu,' /proc/self/cgroup", "cat /proc/self/cgroup"
    assert (v1 in commands, v2 in commands) == ((True, False) if version == 1 else (False, True))
    assert "Only on cgroup" not in page
    # Asked once per daemon, kept on the app (not in a module).
    assert graded.extensions[HOSTS]._known == {str(graded.config["NSLAB_SOCKET"]): version}


def test_both_spellings_are_labelled_while_the_daemon_cannot_say(tmp_path):
    """Without an answer from the daemon the learner sees both blocks, each labelled."""
    from nslab.labkit.loader import load_lab
    from webapp.lesson import lesson_steps

    lab = load_lab(EXAMPLE)
    html = "".join(str(p) for s in lesson_steps(lab, {"secret": "s3", "note": "n0te"}, {}, {},
                                                cgroup_version=None) for p in s.parts
                   if not hasattr(p, "kind"))
    assert 'data-only="cgroup-v1"' in html and 'data-only="cgroup-v2"' in html
    assert "Only on cgroup v1 hosts" in html and "Only on cgroup v2 hosts" in html
    html2 = "".join(str(p) for s in lesson_steps(lab, {"secret": "s3"}, {}, {},
                                                 cgroup_version=2) for p in s.parts
                    if not hasattr(p, "kind"))
    assert "This host runs cgroup v2" in html2 and "cgroup v1" not in html2


def test_assets_are_served_with_the_lab_and_nothing_else(graded):
    amy = Learner(graded, "amy")
    base = f"/courses/{graded.course_id}/labs/example/assets/"
    # The step's Markdown image points at the lab's asset URL.
    assert f'<img src="{base}processes.svg" alt="catatonit, then bash' in amy.page.text
    with amy.web.get(base + "processes.svg") as r:  # a file: closed when read
        assert r.status_code == 200 and r.mimetype == "image/svg+xml"
        assert r.data.startswith(b"<svg")
        policy = r.headers["Content-Security-Policy"]
        assert "default-src 'none'" in policy and "sandbox" in policy
        assert "script" not in policy and r.headers["X-Content-Type-Options"] == "nosniff"
    folder = Path(graded.config["LABS_DIR"]) / "example"
    (folder / "assets" / "photo.PNG").write_bytes(b"\x89PNG\r\n\x1a\n")
    (folder / "assets" / "page.html").write_text("<script>alert(1)</script>")
    (folder / "assets" / "deep").mkdir()
    (folder / "assets" / "deep" / "d.jpg").write_bytes(b"\xff\xd8\xff")
    (folder / "assets" / "link.svg").symlink_to("../checks.py")
    (folder / "outside.svg").write_text("<svg/>")
    for name, kind in (("photo.PNG", "image/png"), ("deep/d.jpg", "image/jpeg")):
        with amy.web.get(base + name) as r:
            assert (r.status_code, r.mimetype) == (200, kind)
    for name in ("page.html", "link.svg", "../lab.yaml", "..%2Flab.yaml", "%2e%2e/outside.svg",
                 "../outside.svg", "deep/../../checks.py", ".hidden.svg", "deep", "nope.svg",
                 "../../namespaces/assets/x.svg"):
        with amy.web.get(base + name) as r:
            assert r.status_code == 404, (name, r.status_code)
    # Only the course's members see them; a lab of another course is not served here.
    with graded.test_client().get(base + "processes.svg") as anonymous:
        assert anonymous.status_code == 302 and "/login" in anonymous.location
    with Learner(graded, "cat").web.get(base + "processes.svg") as r:
        assert r.status_code == 403
    assert amy.web.get(f"/courses/{graded.course_id}/labs/cgroups/assets/x.svg"
                       ).status_code == 404


def test_the_header_renders_the_summarys_markdown_and_code_has_its_own_bar(graded):
    amy = Learner(graded, "amy")
    head = amy.page.text.split('<header class="lab-head">')[1].split("</header>")[0]
    assert "<code>hidden</code> values" in head and "`" not in head
    course = amy.web.get(f"/courses/{graded.course_id}").text
    assert "<code>::: only</code> blocks" in course
    # The Run button sits in a bar above its code block, never over the code.
    assert re.search(r'<div class="code-block"><div class="code-bar"><span class="code-lang">'
                     r'sh</span><button type="button" class="run-in-terminal" '
                     r'data-command="echo [a-z2-9]{8} &gt; /root/hello\ncat /root/hello"',
                     amy.page.text)
