"""Per-exercise statistics (webapp/classroom/stats.py): the numbers from real checks and
hints made through the lab API (quiz exercises: no sandbox needed), the arithmetic on its
own, the page with its SVG charts, and the empty states."""

from __future__ import annotations

import re
import statistics
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import select
from webapp_helpers import login, make_course, make_user

from webapp.classroom.stats import Check, Column, Hints, duration_text, summarize
from webapp.extensions import db
from webapp.models import Attempt, Role, User, as_utc

ALPHA = """\
id: alpha
title: Alpha
steps:
  - id: one
    title: One
    file: steps/01.md
exercises:
  - id: q1
    title: Which namespace?
    text: Which namespace gives a sandbox its own PID 1?
    points: 2
    quiz:
      answer: pid
    hints:
      - "PID 1"
      - "p-i-d"
    wrong:
      - answer: mount
        feedback: "mount is for files"
      - answer: net
        feedback: "net is for addresses"
  - id: q2
    title: Which controller?
    text: Which controller limits memory?
    points: 1
    quiz:
      choices: [cpu, memory, pids]
      answer: memory
    wrong:
      - answer: cpu
        feedback: "cpu is time"
"""
BETA = """\
id: beta
title: Beta
steps:
  - id: one
    title: One
    file: steps/01.md
exercises:
  - id: b1
    title: Which flag?
    text: Which flag of unshare makes a new PID namespace?
    points: 1
    quiz:
      answer: "--pid"
    wrong:
      - answer: "-n"
        feedback: "-n is the network"
"""


def write_lab(labs: Path, lab_id: str, yaml: str, exercises: list[str]) -> None:
    (labs / lab_id / "steps").mkdir(parents=True)
    (labs / lab_id / "lab.yaml").write_text(yaml)
    (labs / lab_id / "steps" / "01.md").write_text(
        "# One\n\n" + "".join(f"::: exercise {e}\n\n" for e in exercises))


@pytest.fixture
def course(app):
    """Labs beta, alpha and a broken one, in that order, in a course taught by `teach`
    (learners amy, ben, cat, dan); `eve` does alpha in another course."""
    labs = Path(app.config["LABS_DIR"])
    write_lab(labs, "alpha", ALPHA, ["q1", "q2"])
    write_lab(labs, "beta", BETA, ["b1"])
    (labs / "broken").mkdir()
    (labs / "broken" / "lab.yaml").write_text("id: broken\ntitle: [unclosed\n")
    make_user(app, "teach", Role.INSTRUCTOR)
    make_user(app, "other", Role.INSTRUCTOR)
    for name in ("amy", "ben", "cat", "dan", "eve"):
        make_user(app, name)
    cid, _ = make_course(app, "teach", labs=("beta", "alpha", "broken"),
                         learners=("amy", "ben", "cat", "dan"))
    app.elsewhere, _ = make_course(app, "other", title="Elsewhere", labs=("alpha",),
                                   learners=("eve",))
    return cid


class Learner:
    def __init__(self, app, name: str, course_id: int):
        self.web = app.test_client()
        assert login(self.web, name).status_code == 302
        self.course_id = course_id

    def check(self, exercise: str, answer: str, lab: str = "alpha") -> bool:
        r = self.web.post(f"/api/labs/{lab}/exercises/{exercise}/check",
                          json={"course": self.course_id, "answer": answer})
        assert r.status_code == 200, r.text
        return r.get_json()["passed"]

    def hint(self, exercise: str, lab: str = "alpha") -> None:
        r = self.web.post(f"/api/labs/{lab}/exercises/{exercise}/hint",
                          json={"course": self.course_id})
        assert r.status_code == 200, r.text


def checks_at(app, name: str, course_id: int, exercise: str) -> list[datetime]:
    with app.app_context():
        uid = User.by_name(name).id
        return [as_utc(a) for a in db.session.scalars(
            select(Attempt.at).where(Attempt.user_id == uid, Attempt.course_id == course_id,
                                     Attempt.exercise_id == exercise).order_by(Attempt.id))]


def teacher(app, name: str = "teach"):
    web = app.test_client()
    assert login(web, name).status_code == 302
    return web


def test_statistics_of_real_checks_and_hints(app, course):
    amy, ben, cat = (Learner(app, n, course) for n in ("amy", "ben", "cat"))
    assert [amy.check("q1", a) for a in ("mount", "net", " PID ")] == [False, False, True]
    amy.check("q1", "mount")  # after the pass: its feedback counts, its try does not
    amy.hint("q1")
    amy.hint("q1")
    assert [ben.check("q1", a) for a in ("mount", "pid")] == [False, True]
    assert [cat.check("q1", a) for a in ("mount", "mount")] == [False, False]
    cat.hint("q1")
    assert [amy.check("q2", a) for a in ("cpu", "memory")] == [False, True]
    # Another course's learner doing the same lab counts there, not here.
    eve = Learner(app, "eve", app.elsewhere)
    assert [eve.check("q1", a) for a in ("net", "net", "pid")] == [False, False, True]

    r = teacher(app).get(f"/courses/{course}/stats.json")
    assert r.status_code == 200
    stats = r.get_json()
    assert stats["enrolled"] == 4 and stats["checked"] is True
    assert stats["labs"] == [{"lab": "beta", "title": "Beta"}, {"lab": "alpha", "title": "Alpha"}]
    assert stats["unavailable"] == ["broken"]
    b1, q1, q2 = stats["exercises"]  # lab order, then the lab's exercise order
    assert b1 == {"lab": "beta", "exercise": "b1", "title": "Which flag?", "points": 1,
                  "tried": 0, "passed": 0, "pass_rate": 0.0, "pass_rate_tried": None,
                  "median_attempts": None, "median_seconds": None, "hints": 0,
                  "hint_learners": 0, "failed_checks": 0, "feedback": []}
    amy_q1, ben_q1 = checks_at(app, "amy", course, "q1"), checks_at(app, "ben", course, "q1")
    seconds = statistics.median([(amy_q1[2] - amy_q1[0]).total_seconds(),
                                 (ben_q1[1] - ben_q1[0]).total_seconds()])
    assert q1 == {"lab": "alpha", "exercise": "q1", "title": "Which namespace?", "points": 2,
                  "tried": 3, "passed": 2, "pass_rate": 0.5, "pass_rate_tried": 0.6667,
                  "median_attempts": 2.5, "median_seconds": round(seconds, 3),
                  "hints": 3, "hint_learners": 2, "failed_checks": 6,
                  "feedback": [{"text": "mount is for files", "count": 5},
                               {"text": "net is for addresses", "count": 1}]}
    assert q2["tried"] == 1 and q2["passed"] == 1 and q2["median_attempts"] == 2
    assert q2["pass_rate"] == 0.25 and q2["pass_rate_tried"] == 1.0
    assert q2["feedback"] == [{"text": "cpu is time", "count": 1}]

    # The page: the same numbers, in two charts and a table.
    page = teacher(app).get(f"/courses/{course}/stats").text
    assert "from the learner's first check of the exercise to its first passing check" in page
    charts = re.findall(r'<svg class="stats-chart".*?</svg>', page, re.S)
    assert len(charts) == 2
    pass_chart, attempts_chart = charts
    assert '<title id="chart-pass-title">Pass rate per exercise</title>' in pass_chart
    # Bars 480 units long at 100 %: b1 none, q1 half, q2 a quarter.
    assert re.findall(r'class="bar" x="0" y="\d+" width="([\d.]+)"', pass_chart) == \
        ["0.0", "240.0", "120.0"]
    assert "Which namespace?: 2 of 4 passed (50 %)" in pass_chart
    assert "50 % (2/4)" in pass_chart
    # Median attempts against the largest (2.5): q1 full length, q2 4/5; b1 has no bar.
    assert re.findall(r'class="bar bar-alt" x="0" y="\d+" width="([\d.]+)"',
                      attempts_chart) == ["480.0", "384.0"]
    assert "Which flag?: nobody passed yet" in attempts_chart
    row = re.search(r'<tr data-lab="alpha" data-exercise="q1">.*?</tr>', page, re.S).group(0)
    assert "mount is for files</span> <span class=\"pill\">5×</span>" in row
    assert "50 % · 67 %" in row and ">2.5<" in row and "(2 learners)" in row
    assert "<code>broken</code>" in page  # said to be left out


def test_statistics_need_a_teacher_of_the_course(app, course):
    for name, status in (("amy", 403), ("other", 403), ("teach", 200)):
        web = teacher(app, name)
        assert web.get(f"/courses/{course}/stats").status_code == status, name
        assert web.get(f"/courses/{course}/stats.json").status_code == status, name
    anonymous = app.test_client()
    r = anonymous.get(f"/courses/{course}/stats")
    assert r.status_code == 302 and r.location.startswith("/login")
    r = anonymous.get(f"/courses/{course}/stats.json")  # JSON, whatever the Accept
    assert r.status_code == 401 and r.get_json()["error"] == "unauthorized"
    r = teacher(app, "other").get(f"/courses/{course}/stats.json")
    assert r.status_code == 403 and r.get_json()["error"] == "forbidden"
    r = teacher(app).get("/courses/9999/stats.json")
    assert r.status_code == 404 and r.get_json()["error"] == "not_found"


def test_empty_states(app):
    make_user(app, "teach", Role.INSTRUCTOR)
    make_user(app, "amy")
    Path(app.config["LABS_DIR"]).mkdir(parents=True, exist_ok=True)
    write_lab(Path(app.config["LABS_DIR"]), "alpha", ALPHA, ["q1", "q2"])
    bare, _ = make_course(app, "teach", labs=())
    quiet, _ = make_course(app, "teach", title="Quiet", labs=("alpha",), learners=("amy",))
    web = teacher(app)
    page = web.get(f"/courses/{bare}/stats").text
    assert "No exercises yet" in page and "<svg class=\"stats-chart\"" not in page
    assert web.get(f"/courses/{bare}/stats.json").get_json() == {
        "course": bare, "enrolled": 0, "labs": [], "unavailable": [], "checked": False,
        "exercises": []}
    page = web.get(f"/courses/{quiet}/stats").text
    assert "No checks yet" in page and "<svg class=\"stats-chart\"" not in page
    assert '<tr data-lab="alpha" data-exercise="q2">' in page  # the table, with dashes
    stats = web.get(f"/courses/{quiet}/stats.json").get_json()
    assert stats["checked"] is False and [e["tried"] for e in stats["exercises"]] == [0, 0]
    assert stats["exercises"][0]["pass_rate"] == 0.0


T0 = datetime(2026, 12, 7, 9, 0, tzinfo=timezone.utc)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_summarize_arithmetic():
    cols = [Column("lab", "a", "A", 1), Column("lab", "b", "B", 2)]
    checks = [
        # u1: a timed-out check (not judged) starts the clock but is no try; passes at 2nd try.
        Check(1, "lab", "a", at(0), False, False, "the check timed out"),
        Check(1, "lab", "a", at(30), False, True, "  wrong one \n"),
        Check(1, "lab", "a", at(100), True, True, "Correct."),
        # u2: its first check passes: 1 try, 0 s.
        Check(2, "lab", "a", at(50), True, True, "Correct."),
        # u3, u4: fail with several messages; ties keep the one seen first.
        Check(3, "lab", "a", at(60), False, True, "wrong one"),
        Check(3, "lab", "a", at(61), False, True, "Wrong one"),
        Check(4, "lab", "a", at(62), False, True, ""),
        Check(4, "lab", "a", at(63), False, True, "fourth"),
        Check(4, "lab", "a", at(64), False, True, "Wrong one"),
        Check(4, "lab", "a", at(65), False, True, ""),
        # u3 passes on its 3rd judged try, 4 min after its first check.
        Check(3, "lab", "a", at(300), True, True, "Correct."),
        # An exercise the course no longer has.
        Check(1, "lab", "gone", at(5), False, True, "wrong one"),
    ]
    hints = [Hints(1, "lab", "a", 2), Hints(3, "lab", "a", 1), Hints(2, "lab", "a", 0),
             Hints(1, "lab", "gone", 4)]
    a, b = summarize(cols, 5, checks, hints)
    assert a["tried"] == 4 and a["passed"] == 3
    assert a["pass_rate"] == 0.6 and a["pass_rate_tried"] == 0.75
    assert a["median_attempts"] == 2  # 2, 1, 3
    assert a["median_seconds"] == 100  # 100, 0, 240
    assert a["hints"] == 3 and a["hint_learners"] == 2
    assert a["failed_checks"] == 7
    assert a["feedback"] == [{"text": "wrong one", "count": 2}, {"text": "Wrong one", "count": 2},
                             {"text": "", "count": 2}]
    assert b == {"lab": "lab", "exercise": "b", "title": "B", "points": 2, "tried": 0,
                 "passed": 0, "pass_rate": 0.0, "pass_rate_tried": None,
                 "median_attempts": None, "median_seconds": None, "hints": 0,
                 "hint_learners": 0, "failed_checks": 0, "feedback": []}
    # Nobody enrolled: no rate at all rather than a division by zero.
    assert summarize(cols, 0, [], [])[0]["pass_rate"] is None
    # An even number of passers: the mean of the middle two.
    two = summarize(cols[:1], 2, [Check(1, "lab", "a", at(0), True, True, "ok"),
                                  Check(2, "lab", "a", at(0), False, True, "no"),
                                  Check(2, "lab", "a", at(45), True, True, "ok")], [])
    assert two[0]["median_attempts"] == 1.5 and two[0]["median_seconds"] == 22.5


@pytest.mark.parametrize("seconds, text", [(None, "–"), (0, "0 s"), (42.4, "42 s"),
                                           (60, "1 min"), (200, "3 min 20 s"),
                                           (5400, "1 h 30 min")])
def test_duration_text(seconds, text):
    assert duration_text(seconds) == text
