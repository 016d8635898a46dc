"""Courses and pages: roles, the join-code flow, who may see which page, lesson Markdown,
errors in one place."""

from __future__ import annotations

import os

import re

import pytest
from sqlalchemy import func, select
from webapp_helpers import enrolled, login, make_course, make_user

from webapp.extensions import db
from webapp.lesson import render_inline, render_markdown, shell_commands
from webapp.models import JOIN_CODE_RE, Course, Role, User


@pytest.fixture
def school(app):
    """ann teaches C1 (labs intro, cgroups; learner alice), bea teaches C2 (learner bert)."""
    make_user(app, "ann", Role.INSTRUCTOR)
    make_user(app, "bea", Role.INSTRUCTOR)
    make_user(app, "alice")
    make_user(app, "bert")
    c1, _ = make_course(app, "ann", "Containers", labs=("intro", "cgroups"), learners=("alice",))
    c2, _ = make_course(app, "bea", "Kubernetes", labs=("pods",), learners=("bert",))
    return {"c1": c1, "c2": c2}


def test_instructor_creates_course_and_sees_join_code(app, web):
    make_user(app, "ann", Role.INSTRUCTOR)
    login(web, "ann")
    assert web.get("/courses/new").status_code == 200
    r = web.post("/courses/new", data={"title": "  Containers   from scratch "})
    assert r.status_code == 302
    course_id = int(r.location.rsplit("/", 1)[1])
    with app.app_context():
        course = db.session.get(Course, course_id)
        assert course.title == "Containers from scratch"
        assert JOIN_CODE_RE.match(course.join_code)
        assert course.instructor.username == "ann"
        code = course.join_code
    page = web.get(r.location)
    assert f"Learners join with the code {code}." in page.text  # the flash
    assert f'<code class="join-code" id="join-code">{code}</code>' in page.text
    assert code in web.get("/dashboard").text


def test_learner_cannot_create_a_course(app, web):
    make_user(app, "alice")
    login(web, "alice")
    assert web.get("/courses/new").status_code == 403
    r = web.post("/courses/new", data={"title": "Mine"})
    assert r.status_code == 403
    assert "Only instructors can do that." in r.text
    with app.app_context():
        assert db.session.scalar(select(func.count(Course.id))) == 0


def test_learner_joins_with_code(app, web):
    make_user(app, "ann", Role.INSTRUCTOR)
    make_user(app, "alice")
    course_id, code = make_course(app, "ann", "Containers")
    login(web, "alice")
    assert "No courses yet" in web.get("/dashboard").text
    r = web.post("/courses/join", data={"join_code": code.lower().replace("-", "")})
    assert r.status_code == 302 and r.location == f"/courses/{course_id}"
    assert enrolled(app, "alice", course_id)
    assert "You joined Containers." in web.get(r.location).text
    assert "Containers" in web.get("/dashboard").text
    r = web.post("/courses/join", data={"join_code": code}, follow_redirects=True)
    assert "You are already in Containers." in r.text
    r = web.post("/courses/join", data={"join_code": "ZZZZ-0000"}, follow_redirects=True)
    assert "No course has this join code" in r.text

    # The instructor sees the new learner.
    login(web := app.test_client(), "ann")
    page = web.get(f"/courses/{course_id}").text
    assert "<td>alice</td>" in page and "1 learner" in page


def test_instructor_cannot_join(app, web):
    make_user(app, "ann", Role.INSTRUCTOR)
    make_user(app, "bea", Role.INSTRUCTOR)
    _, code = make_course(app, "ann")
    login(web, "bea")
    assert web.post("/courses/join", data={"join_code": code}).status_code == 403


# anonymous → sign-in page; members 200; non-members 403; no such course or lab 404.
MATRIX = [
    # who,    course, lab intro, lab missing, course 9999
    (None,    302,    302,       302,         302),
    ("alice", 200,    200,       404,         404),
    ("bert",  403,    403,       403,         404),
    ("ann",   200,    200,       404,         404),
    ("bea",   403,    403,       403,         404),
]


@pytest.mark.parametrize("who,course,lab,missing_lab,missing_course", MATRIX)
def test_authorization_matrix(app, web, school, who, course, lab, missing_lab, missing_course):
    c1 = school["c1"]
    if who:
        assert login(web, who).status_code == 302
    urls = {f"/courses/{c1}": course, f"/courses/{c1}/labs/intro": lab,
            f"/courses/{c1}/labs/missing": missing_lab, "/courses/9999": missing_course}
    for url, status in urls.items():
        r = web.get(url)
        assert r.status_code == status, (who, url)
        if status == 302:
            assert r.location == f"/login?next={url}"


def test_adding_labs_is_for_the_course_instructor(app, web, school):
    c1 = school["c1"]
    for who, status in (("alice", 403), ("bea", 403)):
        login(web, who)
        assert web.post(f"/courses/{c1}/labs", data={"lab_id": "net"}).status_code == status
        web.post("/logout")
    login(web, "ann")
    r = web.post(f"/courses/{c1}/labs", data={"lab_id": "Net"}, follow_redirects=True)
    assert "There is no lab &#39;net&#39; in" in r.text  # only labs that exist in labs/
    os.makedirs(os.path.join(app.config["LABS_DIR"], "net"))
    r = web.post(f"/courses/{c1}/labs", data={"lab_id": "Net"}, follow_redirects=True)
    assert "Added the lab net." in r.text
    r = web.post(f"/courses/{c1}/labs", data={"lab_id": "../etc"}, follow_redirects=True)
    assert "A lab id is 1-64 lower-case letters" in r.text
    with app.app_context():
        assert [lab.lab_id for lab in db.session.get(Course, c1).labs] == ["intro", "cgroups",
                                                                            "net"]


def test_course_page_lists_labs_and_progress(app, web, school):
    login(web, "alice")
    page = web.get(f"/courses/{school['c1']}").text
    assert page.index(">intro<") < page.index(">cgroups<")
    assert "Started 0 of 2 labs" in page
    assert page.count("not started") == 2
    assert "Kubernetes" not in web.get("/dashboard").text


def test_lab_page_layout(app, web, school):
    login(web, "alice")
    page = web.get(f"/courses/{school['c1']}/labs/intro").text
    assert f'<div id="terminal" class="terminal" data-course="{school["c1"]}" data-lab="intro"' \
        in page
    assert 'role="separator"' in page
    assert re.search(r'<meta name="csrf-token" content="[^"]+">', page)
    assert "This lab's lesson is not written yet." in page  # no labs/intro yet
    assert 'class="run-in-terminal" data-command="uname -a"' in page
    assert "cgroups &rarr;" in page  # the next lab
    for asset in ("/static/js/app.js", "/static/js/terminal.js", "/static/vendor/xterm.js",
                  "/static/css/app.css"):
        assert f'"{asset}"' in page
    with web.get("/static/css/app.css") as css:
        assert css.status_code == 200


def test_lesson_markdown_is_sanitised(app, web, school):
    folder = app.config["LABS_DIR"] + "/intro"
    import os

    os.makedirs(folder)
    with open(f"{folder}/lesson.md", "w") as f:
        f.write("# Namespaces\n\n<script>alert('inline')</script>\n\n"
                "<img src=x onerror=\"alert('img')\">\n\n"
                "[click](javascript:alert('link'))\n\n"
                "```sh\nunshare --pid --fork --mount-proc bash\n```\n\n"
                "```html\n<script>alert('fenced')</script>\n```\n")
    login(web, "alice")
    page = web.get(f"/courses/{school['c1']}/labs/intro").text
    assert "<title>Namespaces · Containers · nslab</title>" in page
    assert "alert(" not in page.replace("&#39;", "'").split("<article")[0]  # head is clean
    article = page.split('<article class="prose">')[1].split("</article>")[0]
    # Raw HTML is shown as text, never as a tag; the javascript: link is not a link.
    assert "<script" not in article and "<img" not in article and "<a " not in article
    assert "&lt;script&gt;alert('inline')&lt;/script&gt;" in article
    assert 'data-command="unshare --pid --fork --mount-proc bash"' in article
    assert article.count("run-in-terminal") == 1  # not on the html block


def test_render_markdown_units():
    html = render_markdown("Hello <b onclick='x()'>there</b>\n\n| a | b |\n|--:|---|\n| 1 | 2 |\n")
    assert "<b" not in html and "&lt;b onclick" in html
    assert '<th style="text-align:right">a</th>' in html
    html = render_markdown("```python\nprint('hi')\n```\n")
    assert '<code class="language-python">' in html and "run-in-terminal" not in html
    html = render_markdown('```sh\necho "<b>" && ls\n```\n')
    assert 'data-command="echo &quot;&lt;b&gt;&quot; &amp;&amp; ls"' in html
    assert shell_commands("$ ls /proc\n1 2 self\n$ id\nuid=0\n", console=True) == "ls /proc\nid"
    assert shell_commands("ls\npwd\n") == "ls\npwd"
    # The Run button sits in a bar above the code, not over it.
    html = render_markdown("```sh\nls\n```\n")
    assert html.startswith('<div class="code-block"><div class="code-bar"><span class="code-lang">'
                           'sh</span><button type="button" class="run-in-terminal" '
                           'data-command="ls"')
    assert html.index("</button></div><pre>") > 0


def test_asset_paths_become_the_labs_asset_urls_and_summaries_render_inline():
    base = "/courses/1/labs/demo/assets/"
    html = render_markdown("![tree](assets/v2/tree.svg) [big](assets/big.png) "
                           "[odd](assets/tree%20big.png) "
                           "![up](assets/../lab.yaml) ![web](https://example.org/a.png) "
                           "![x](notassets/a.svg)\n", assets=base)
    assert f'<img src="{base}v2/tree.svg" alt="tree">' in html
    assert f'<a href="{base}big.png"' in html
    # Not an asset name (the loader reports it): left alone, and the server refuses it.
    assert '<a href="assets/tree%20big.png"' in html and '<img src="assets/../lab.yaml"' in html
    assert '<img src="https://example.org/a.png"' in html and 'src="notassets/a.svg"' in html
    assert 'src="assets/v2/tree.svg"' in render_markdown("![tree](assets/v2/tree.svg)")
    assert render_inline("Build what `docker run --cpus` does, *by hand*") == \
        "Build what <code>docker run --cpus</code> does, <em>by hand</em>"
    assert render_inline("<script>x</script> [a](javascript:alert(1))") == \
        "&lt;script&gt;x&lt;/script&gt; [a](javascript:alert(1))"


def test_errors_json_for_api_page_for_browsers(app, web):
    r = web.get("/api/nothing")
    assert r.status_code == 404 and r.is_json and r.json["error"] == "not_found"
    r = web.get("/nothing")
    assert r.status_code == 404 and r.mimetype == "text/html"
    assert '<p class="error-code">404</p>' in r.text
    r = web.get("/nothing", headers={"Accept": "application/json"})
    assert r.is_json
    assert web.get("/api/health").json == {"ok": True}


def test_500_rolls_back_and_answers_in_one_place(app):
    app.config["PROPAGATE_EXCEPTIONS"] = False

    @app.route("/api/boom")
    @app.route("/boom")
    def boom():
        db.session.add(User(username="halfway", password_hash="x", role=Role.LEARNER))
        db.session.flush()
        raise RuntimeError("boom")

    web = app.test_client()
    r = web.get("/api/boom")
    assert r.status_code == 500 and r.json["error"] == "internal_server_error"
    r = web.get("/boom")
    assert r.status_code == 500 and "Something went wrong on our side" in r.text
    with app.app_context():
        assert User.by_name("halfway") is None


def test_security_headers(web):
    r = web.get("/login")
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert "frame-ancestors 'none'" in r.headers["Content-Security-Policy"]
