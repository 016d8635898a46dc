"""Secrets never leave the server: for every lab in labs/, nothing a learner can fetch (the
lab API's JSON, the lab page's HTML, a hint, a check's feedback, a walkthrough) holds the
value of a param marked `hidden: true`, and a shown param appears only where the learner's
text uses it.

The page, API and hint answers are read with each hidden value replaced by a unique
sentinel, so a short value (a small number, a word) cannot hide in the lesson's own text;
the checks run against a real sandbox set up with the learner's real values."""

from __future__ import annotations

import re
import secrets
import shutil
from datetime import datetime, timezone

import pytest

from nslab.labkit.catalog import default_labs_dir, lab_ids
from nslab.labkit.loader import load_lab
from nslab.labkit.params import draw_params, expand, placeholders, split_step
from webapp_helpers import make_course, make_user
from webapp.models import Role

LABS = lab_ids(default_labs_dir())


@pytest.fixture
def school(tmp_path, webapp_schema, request):
    """An app serving the repo's labs (read only), a course with all of them, learner amy.
    With a sandboxd when the test asks for one (`sandboxd` in its arguments)."""
    from webapp import create_app
    from webapp.config import TestConfig
    from webapp.extensions import db

    shutil.copy(webapp_schema, tmp_path / "nslab.db")
    socket = str(request.getfixturevalue("sandboxd").socket) \
        if "sandboxd" in request.fixturenames else str(tmp_path / "no-daemon.sock")
    app = create_app(TestConfig(tmp_path, NSLAB_SOCKET=socket, LABS_DIR=str(default_labs_dir()),
                                WTF_CSRF_ENABLED=False))
    make_user(app, "teach", Role.INSTRUCTOR)
    make_user(app, "amy")
    app.course_id, _ = make_course(app, "teach", labs=LABS, learners=("amy",))
    yield app
    with app.app_context():
        from sandbox.client import Client
        from webapp.models import SandboxAssignment

        for a in db.session.scalars(db.select(SandboxAssignment)):
            if a.sandbox_id:
                Client(app.config["NSLAB_SOCKET"]).destroy(a.sandbox_id, purge=True)
        # Give the query's connection back before closing the pool: returned after it, it
        # would stay open until a garbage collection (a later test's fd check sees it).
        db.session.remove()
        db.engine.dispose()


def signed_in(app):
    web = app.test_client()
    r = web.post("/login", data={"username": "amy", "password": "correct horse"})
    assert r.status_code in (302, 303)
    return web


def store_params(app, lab_id: str, params: dict) -> None:
    """The learner's values for a lab, as if drawn for them."""
    from webapp.extensions import db
    from webapp.models import LearnerLab, User

    with app.app_context():
        db.session.add(LearnerLab(user_id=User.by_name("amy").id, course_id=app.course_id,
                                  lab_id=lab_id, params=params))
        db.session.commit()


def pass_everything(app, lab) -> None:
    """Every exercise passed, so every step is open and every walkthrough shown."""
    from webapp.extensions import db
    from webapp.models import ExerciseProgress, User

    with app.app_context():
        uid = User.by_name("amy").id
        for ex in lab.exercises.values():
            key = dict(user_id=uid, course_id=app.course_id, lab_id=lab.id, exercise_id=ex.id)
            row = db.session.scalar(db.select(ExerciseProgress).filter_by(**key))
            if row is None:
                row = ExerciseProgress(**key, attempts=0, hints_used=0, points=0, deduction=0)
                db.session.add(row)
            row.attempts, row.points = row.attempts + 1, ex.points
            row.passed_at = datetime.now(timezone.utc)
        db.session.commit()


def learner_names(lab) -> set[str]:
    """The params a learner's text of the lab uses."""
    names = {n for step in lab.steps for part in split_step(step.source)
             if part.kind in ("markdown", "cell") for n in placeholders(part.value)}
    for ex in lab.exercises.values():
        for text in [ex.text, ex.walkthrough, *ex.hints,
                     *(ex.quiz.choices or [] if ex.quiz else [])]:
            names.update(placeholders(text))
    return names


def quiz_answers(ex) -> list[str]:
    """What a learner might type: each known wrong answer, a random one, nothing."""
    return [w.answer for w in ex.wrong if w.answer is not None] + ["zz-no-idea", ""]


@pytest.mark.parametrize("lab_id", LABS)
def test_no_hidden_value_reaches_page_api_or_hint(school, lab_id):
    lab = load_lab(default_labs_dir() / lab_id)
    assert lab.errors == [], [str(e) for e in lab.errors]
    params = draw_params(lab.params)
    sentinels = {name: f"zzhid{secrets.token_hex(6)}" for name in lab.hidden}
    params.update(sentinels)
    store_params(school, lab_id, params)
    web = signed_in(school)
    course = school.course_id
    seen: list[str] = []

    def fetch(method: str, url: str, body: dict | None = None):
        r = web.get(url) if method == "GET" else web.post(url, json=body)
        assert r.status_code < 500 or r.status_code == 503 and lab.errors, (url, r.text)
        seen.append(f"{method} {url}: {r.text}")
        return r

    page_url, api_url = f"/courses/{course}/labs/{lab_id}", f"/api/labs/{lab_id}?course={course}"
    fetch("GET", page_url)
    status = fetch("GET", api_url).get_json()
    shown = learner_names(lab) - lab.hidden
    assert set(status["params"]) <= shown, "a param the learner's text never shows was sent"
    for ex in status["exercises"]:
        assert not set(ex["params"]) & lab.hidden
    for ex in lab.exercises.values():  # every hint of every exercise, opened
        for _ in ex.hints:
            assert fetch("POST", f"/api/labs/{lab_id}/exercises/{ex.id}/hint",
                         {"course": course}).status_code == 200
    fetch("GET", page_url)  # the hints, open
    pass_everything(school, lab)
    fetch("GET", page_url)  # every step open, every walkthrough shown
    fetch("GET", api_url)
    for ex in lab.exercises.values():  # quizzes judged here; tasks say the sandbox is off
        for answer in quiz_answers(ex) if ex.quiz is not None else [None]:
            body = {"course": course} | ({"answer": answer} if answer is not None else {})
            fetch("POST", f"/api/labs/{lab_id}/exercises/{ex.id}/check", body)
    fetch("GET", page_url)  # with each exercise's last feedback
    everything = "\n".join(seen)
    for name, value in sentinels.items():
        assert value not in everything, f"hidden param {name!r} reached the learner"
    assert len(seen) > 5


@pytest.mark.privileged
@pytest.mark.slow
@pytest.mark.parametrize("lab_id", LABS)
def test_no_check_feedback_holds_a_hidden_value(school, sandboxd, lab_id):
    """Every check, on the learner's real sandbox (setup run with their real values), and
    every typical wrong quiz answer: no feedback holds a hidden value."""
    from webapp import sandboxes
    from webapp.models import User

    lab = load_lab(default_labs_dir() / lab_id)
    assert lab.errors == [], [str(e) for e in lab.errors]
    params = draw_params(lab.params)
    store_params(school, lab_id, params)
    with school.test_request_context():
        sandboxes.sandbox_for(User.by_name("amy"), school.course_id, lab_id)
    pass_everything(school, lab)
    web = signed_in(school)
    answers = []
    for ex in lab.exercises.values():
        for answer in quiz_answers(ex) if ex.quiz is not None else [None]:
            # A typical wrong answer as the learner would type it (a decoy's value, say).
            answer = expand(answer, params) if answer is not None else None
            body = {"course": school.course_id} | ({"answer": answer} if answer else {})
            r = web.post(f"/api/labs/{lab_id}/exercises/{ex.id}/check", json=body)
            assert r.status_code == 200, r.text
            answers.append(r.text)
    everything = "\n".join(answers)
    for name in lab.hidden:
        value = str(params[name])
        # The rule the grader redacts by: long values anywhere, short ones as a word.
        pattern = re.escape(value) if len(value) >= 4 else \
            rf"(?<![A-Za-z0-9]){re.escape(value)}(?![A-Za-z0-9])"
        assert not re.search(pattern, everything, re.IGNORECASE), \
            f"hidden param {name!r} ({value!r}) is in a check's feedback"
    assert "The check itself failed" not in everything  # a crash would prove nothing
