"""The live classroom's pages as the server renders them (templates/courses/live.html,
watch.html, _classroom_learner.html): what each page carries for its script, and when the
watch page's terminal is writable. The pages in a real browser:
tests/test_browser_classroom.py; the routes' rights: tests/test_webapp_classroom_authz.py.
"""

from __future__ import annotations

import re

import pytest

from webapp.classroom.takeover import TAKEOVERS
from webapp.extensions import db
from webapp.models import CourseStaff, Role, SandboxAssignment, SandboxState
from webapp_helpers import login, make_course, make_user

SANDBOX = "sb-watched"


@pytest.fixture
def course(app):
    """A course taught by `teach` with the co-instructor `assist`, the learner `ann`
    (with a running sandbox in the lab intro) and `bob` (none); (course id, ids by name)."""
    ids = {"teach": make_user(app, "teach", Role.INSTRUCTOR),
           "assist": make_user(app, "assist", Role.INSTRUCTOR),
           "ann": make_user(app, "ann"), "bob": make_user(app, "bob")}
    course_id, _ = make_course(app, "teach", labs=("intro",), learners=("ann", "bob"))
    with app.app_context():
        db.session.add(CourseStaff(course_id=course_id, user_id=ids["assist"]))
        db.session.add(SandboxAssignment(user_id=ids["ann"], course_id=course_id,
                                         lab_id="intro", sandbox_id=SANDBOX,
                                         state=SandboxState.RUNNING))
        db.session.commit()
    return course_id, ids


def _client(app, name: str):
    web = app.test_client()
    assert login(web, name).status_code in (200, 302)
    return web


def _terminal(html: str) -> str | None:
    """The watch page's terminal element (its opening tag), if it has one."""
    match = re.search(r'<div id="terminal"[^>]*>', html)
    return match.group(0) if match else None


def _no_inline_script(html: str) -> None:
    # The CSP allows scripts from 'self' only: an inline one would not run.
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), "an inline <script>"


def test_the_live_page_carries_what_its_script_needs(app, course):
    course_id, ids = course
    html = _client(app, "teach").get(f"/courses/{course_id}/live").text
    assert f'id="live" class="live" data-course="{course_id}" data-me="{ids["teach"]}"' in html
    for role in ("stuck", "queue", "matrix", "matrix-head", "announce", "bulk"):
        assert f'data-role="{role}"' in html
    assert 'aria-live="polite"' in html and "js/classroom.js" in html
    assert '<option value="intro">' in html
    _no_inline_script(html)


def test_the_learner_side_is_on_the_learners_pages_only(app, course):
    course_id, _ = course
    ann = _client(app, "ann")
    for page in (f"/courses/{course_id}", f"/courses/{course_id}/labs/intro"):
        html = ann.get(page).text
        assert f'id="classroom" data-course="{course_id}"' in html, page
        assert "js/classroom-learner.js" in html and 'id="takeover-dialog"' in html
        _no_inline_script(html)
    assert 'data-lab="intro"' in ann.get(f"/courses/{course_id}/labs/intro").text
    # A teacher shadowing the lab is no learner of it: no hand to raise, no consent asked.
    html = _client(app, "teach").get(f"/courses/{course_id}/labs/intro").text
    assert 'id="classroom"' not in html and "classroom-learner.js" not in html


def test_the_watch_page_is_read_only_without_a_takeover(app, course):
    course_id, ids = course
    teach = _client(app, "teach")
    url = f"/courses/{course_id}/live/watch/{ids['ann']}/intro"
    for query in ("", "?control=1"):   # asking for control in the URL is not having it
        html = teach.get(url + query).text
        tag = _terminal(html)
        assert tag and 'data-readonly="1"' in tag and f'data-sandbox-id="{SANDBOX}"' in tag
        assert "data-guest" not in tag
        assert f'data-watch="{SANDBOX}"' in html   # the gauges of the learner's sandbox
        _no_inline_script(html)
    # No sandbox yet: nothing to watch.
    html = teach.get(f"/courses/{course_id}/live/watch/{ids['bob']}/intro").text
    assert _terminal(html) is None and "no sandbox in this lab yet" in html


def test_the_watch_page_is_writable_only_for_the_teacher_the_learner_allowed(app, course):
    course_id, ids = course
    url = f"/courses/{course_id}/live/watch/{ids['ann']}/intro"
    teach, assist = _client(app, "teach"), _client(app, "assist")
    takeovers = app.extensions[TAKEOVERS]
    takeovers.ask(course_id, ids["ann"], ids["teach"], "teach")
    # Asked, not yet allowed: read-only, even with ?control=1.
    assert 'data-readonly="1"' in _terminal(teach.get(url + "?control=1").text)
    takeovers.answer(course_id, ids["ann"], True)
    tag = _terminal(teach.get(url + "?control=1").text)
    assert "data-readonly" not in tag and 'data-guest="1"' in tag
    # Without ?control=1 the page renders read-only (its script then reloads into control).
    html = teach.get(url).text
    assert 'data-readonly="1"' in _terminal(html) and 'data-takeover="active"' in html
    # A colleague's page stays read-only: the learner allowed `teach`, not them.
    html = assist.get(url + "?control=1").text
    assert 'data-readonly="1"' in _terminal(html)
    assert f'data-takeover-teacher="{ids["teach"]}"' in html
    takeovers.end(course_id, ids["ann"])
    assert 'data-readonly="1"' in _terminal(teach.get(url + "?control=1").text)
