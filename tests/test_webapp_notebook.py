"""Notebooks in the lab page (webapp/notebook/): what a kernel's output becomes before a
page sees it, and the whole path with real kernels: a signed-in learner's cells run in
the kernel inside their own sandbox (nslab.kernels through a real sandboxd), outputs
stream over socket.io `/notebook`, and the authorization matrix of every event."""

from __future__ import annotations

import base64
import re
import shutil
import time

import pytest
from webapp_helpers import SocketPage, login, make_course, make_user, two_courses

from conftest import ROOT
from sandbox.errors import NotFound
from webapp.models import Role
from webapp.notebook import render
from webapp.notebook.kernels import MAX_CELL_OUTPUT, MAX_QUEUED

NS = "/notebook"
PNG_1x1 = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5"
           "ErkJggg==")
HOSTILE = ('<img src=x onerror=alert(1)><script>alert(2)</script><b onclick="alert(3)">b</b>'
           '<a href="javascript:alert(4)">j</a><a href="data:text/html,<script>alert(5)</script>">'
           'd</a><svg onload=alert(6)></svg><iframe src="/"></iframe><style>*{}</style>'
           '<img src="/logout"><table><tr><td style="x" colspan="2">ok</td></tr></table>')


# ---------------------------------------------------------------- rendering (no kernel)

def _no_script(markup: str) -> None:
    lowered = markup.lower()
    for bad in ("<script", "onerror", "onclick", "onload", "javascript:", "<iframe", "<svg",
                "<style", "data:text", 'src="x"', "/logout", "style="):
        assert bad not in lowered, f"{bad!r} survived in {markup!r}"


def test_hostile_html_is_cleaned_on_the_server():
    out = render.render("display_data", {"data": {"text/html": HOSTILE}})
    assert out["kind"] == "html"
    _no_script(out["html"])
    assert "<b>b</b>" in out["html"] and '<td colspan="2">ok</td>' in out["html"]
    # An embedded picture of a raster format stays (a data: URL: nothing is fetched).
    ok = render.clean_html(f'<img src="data:image/png;base64,{PNG_1x1}" alt="p">')
    assert f'src="data:image/png;base64,{PNG_1x1}"' in ok
    assert "src" not in render.clean_html('<img src="data:image/svg+xml;base64,PHN2Zz4=">')


def test_text_is_escaped_and_ansi_colours_become_classes():
    html = render.ansi_to_html("\x1b[0;31mred <b>&\x1b[1;92m bold\x1b[0m plain\x1b[2K\x1b]0;t\x07"
                               "\x1b[38;5;200mx\x1b[0m\x07")
    assert html == ('<span class="ansi-red-fg">red &lt;b&gt;&amp;</span>'
                    '<span class="ansi-bright-green-fg ansi-bold"> bold</span> plainx')
    out = render.render("stream", {"name": "stderr", "text": "<script>alert(1)</script>"})
    assert out == {"type": "stream", "name": "stderr",
                   "html": "&lt;script&gt;alert(1)&lt;/script&gt;"}
    err = render.render("error", {"ename": "ZeroDivisionError", "evalue": "division by zero",
                                  "traceback": ["\x1b[0;31mZeroDivisionError\x1b[0m", "<x>"]})
    assert err["html"] == '<span class="ansi-red-fg">ZeroDivisionError</span>\n&lt;x&gt;'


def test_pictures_are_checked_to_be_what_they_say():
    out = render.render("display_data", {"data": {"image/png": PNG_1x1 + "\n",
                                                  "text/plain": "<Figure>"}})
    assert out == {"type": "display_data", "kind": "image", "mime": "image/png",
                   "data": PNG_1x1}
    # HTML that calls itself a PNG is not shown as one: the text/plain beside it is.
    fake = base64.b64encode(b"<html><script>alert(1)</script>").decode()
    out = render.render("display_data", {"data": {"image/png": fake, "text/plain": "<x>"}})
    assert out["kind"] == "text" and out["html"] == "&lt;x&gt;"
    assert render.render("display_data", {"data": {"image/png": "%%%"}}) is None
    assert render.render("display_data", {"data": {"application/javascript": "alert(1)"}}) \
        is None
    assert render.render("execute_result", {"data": {"text/plain": "2"},
                                            "execution_count": 3}) == \
        {"type": "execute_result", "kind": "text", "html": "2", "execution_count": 3}


def test_saving_the_scratch_notebook_needs_the_csrf_token(tmp_path, webapp_schema):
    """A PUT from another site (no token) is refused before anything reaches a sandbox."""
    from webapp import create_app
    from webapp.config import TestConfig
    from webapp.extensions import db
    from webapp_helpers import csrf_token

    shutil.copy(webapp_schema, tmp_path / "nslab.db")
    app = create_app(TestConfig(tmp_path, WTF_CSRF_ENABLED=True,
                                NSLAB_SOCKET=str(tmp_path / "no-daemon.sock")))
    make_user(app, "teach", Role.INSTRUCTOR)
    make_user(app, "alice")
    course, _ = make_course(app, "teach", learners=("alice",))
    web = app.test_client()
    token = csrf_token(web.get("/login").text)
    web.post("/login", data={"username": "alice", "password": "correct horse",
                             "csrf_token": token})
    url = f"/courses/{course}/labs/intro/notebook"
    asks_json = {"Accept": "application/json"}  # as static/js/notebook.js asks
    r = web.put(url, json={"cells": []}, headers=asks_json)
    assert r.status_code == 400 and r.json["error"] == "bad_request"
    # With the token it goes on to the sandbox (here: no daemon, said plainly).
    token = csrf_token(web.get("/dashboard").text)
    r = web.put(url, json={"cells": []}, headers={"X-CSRFToken": token, **asks_json})
    assert r.status_code == 503, r.json
    with app.app_context():
        db.engine.dispose()


# ---------------------------------------------------------------- real kernels

@pytest.fixture
def nb_app(tmp_path, webapp_schema, sandboxd):
    """The web app wired to the session's real sandboxd, with a lab whose step has a
    `python cell`; its kernels' clients are closed and its sandboxes destroyed after."""
    from webapp import create_app
    from webapp.config import TestConfig
    from webapp.extensions import db

    labs = tmp_path / "labs"
    shutil.copytree(ROOT / "labs" / "example", labs / "example")
    intro = labs / "example" / "steps" / "01-intro.md"
    intro.write_text(intro.read_text() + "\n```python cell\nprint('from the lesson', 6 * 7)\n"
                     "```\n")
    shutil.copy(webapp_schema, tmp_path / "nslab.db")
    app = create_app(TestConfig(tmp_path, NSLAB_SOCKET=str(sandboxd.socket),
                                LABS_DIR=str(labs)))
    yield app
    app.extensions["nslab.notebook"].notebooks.close()
    client = sandboxd.client()
    for sb in client.list():
        if sb["labels"].get("lab") == "example" and sb["labels"].get("course"):
            client.destroy(sb["id"], purge=True)
    with app.app_context():
        db.engine.dispose()


class Page(SocketPage):
    """A signed-in browser: a Flask test client plus a socket.io test client on /notebook."""

    def __init__(self, app, name: str | None):
        super().__init__(app, name, NS)

    def emit(self, event: str, data) -> None:
        self.sio.emit(event, data, namespace=NS)

    def open(self, **data) -> dict:
        tag = f"t{time.monotonic_ns()}"
        self.emit("open", {"tag": tag, **data})
        return self.wait(lambda e: e.get("tag") == tag and e["name"] in ("opened", "error"),
                         "open")

    def cell(self, cell_id: str, state: str, timeout: float = 30) -> dict:
        return self.wait(lambda e: e["name"] == "cell" and e["cell_id"] == cell_id
                         and e["state"] == state, f"cell {cell_id} {state}", timeout)

    def outputs(self, cell_id: str) -> list[dict]:
        self.pump()
        return [e["output"] for e in self.events
                if e["name"] == "output" and e["cell_id"] == cell_id]


def _course(app) -> int:
    """Alice and Bob learn in Teach's course; Olga in Other's."""
    return two_courses(app, "example")


@pytest.mark.privileged
def test_cells_run_in_the_learners_sandbox_and_only_the_learner_runs_them(nb_app, client):
    course = _course(nb_app)
    alice = Page(nb_app, "alice")
    opened = alice.open(course=course, lab="example")
    assert opened["name"] == "opened", opened
    sid = opened["sandbox_id"]
    # The page alone starts no kernel (it would cost the sandbox memory); the tab does.
    with pytest.raises(NotFound):
        client.kernel(sid)
    assert alice.open(course=course, lab="example", start=True)["sandbox_id"] == sid
    alice.wait(lambda e: e["name"] == "kernel" and e["status"] == "idle", "kernel idle", 60)

    # The cell runs inside the learner's sandbox: its hostname and PID namespace.
    box = client.get(sid)
    alice.emit("run", {"sandbox_id": sid, "cell_id": "c1",
                       "source": "import socket, os\nprint(socket.gethostname())\nos.getpid()"})
    assert alice.cell("c1", "done")
    out = alice.outputs("c1")
    assert out[0] == {"type": "stream", "name": "stdout", "html": box["hostname"] + "\n"}, out
    pid = int(out[1]["html"])
    kernel = [p for p in client.inspect(sid)["processes"] if p["pid"] == pid]
    assert kernel and "/run/nslab-kernel/launch.py" in kernel[0]["cmdline"], kernel

    # The course's instructor watches read-only and sees outputs as they come; anything
    # else is refused, event by event, and starts nothing.
    teach = Page(nb_app, "teach")
    assert teach.open(sandbox_id=sid, readonly=True)["name"] == "opened"
    assert teach.open(sandbox_id=sid)["name"] == "error"
    bob, other, olga = Page(nb_app, "bob"), Page(nb_app, "other"), Page(nb_app, "olga")
    for page in (bob, other, olga):
        assert page.open(sandbox_id=sid, readonly=True)["name"] == "error"
        assert page.open(sandbox_id=sid)["name"] == "error"
    for page in (teach, bob, other, olga):
        page.events.clear()
        for event, data in (("run", {"cell_id": "x", "source": "open('/root/pwned','w')"}),
                            ("run_all", {"cells": [{"cell_id": "y", "source": "1/0"}]}),
                            ("interrupt", {}), ("restart", {})):
            page.emit(event, {"sandbox_id": sid, **data})
            page.wait(lambda e: e["name"] == "error" and e["reason"] == "forbidden",
                      f"{event} refused")
    for page in (bob, other, olga):
        page.emit("status", {"sandbox_id": sid})
        page.wait(lambda e: e["name"] == "error" and e["reason"] == "forbidden", "status")
    teach.emit("status", {"sandbox_id": sid})
    assert teach.wait(lambda e: e["name"] == "kernel", "status")["status"] == "idle"
    # An anonymous socket is refused at connect.
    anonymous = Page(nb_app, None)
    assert not anonymous.sio.is_connected(NS)

    alice.emit("run", {"sandbox_id": sid, "cell_id": "c2", "source": "print('seen')"})
    alice.cell("c2", "done")
    teach.cell("c2", "done")
    assert teach.outputs("c2") == alice.outputs("c2") == [
        {"type": "stream", "name": "stdout", "html": "seen\n"}]
    for page in (bob, other, olga):
        page.pump()
        assert not [e for e in page.events if e["name"] in ("output", "cell", "kernel")]
    r = client.run(sid, ["sh", "-c", "ls /root/pwned"])
    assert r["exit_code"] != 0, "a refused run ran"
    # No state kept between cells was touched by the refused restarts: the kernel is the
    # one the learner started.
    alice.emit("run", {"sandbox_id": sid, "cell_id": "c3", "source": "x = 41\nx + 1"})
    alice.cell("c3", "done")
    assert alice.outputs("c3")[-1]["html"] == "42"
    # Activity: the idle stop counts the kernel's work.
    tracker = nb_app.extensions["nslab.activity"]
    before = tracker.last(sid)
    time.sleep(0.05)
    alice.emit("run", {"sandbox_id": sid, "cell_id": "c4", "source": "print(x)"})
    alice.cell("c4", "done")
    assert tracker.last(sid) > before

    # The instructor signs out: the watching page is cut, and gets no more outputs.
    assert teach.web.post("/logout").status_code == 302
    deadline = time.monotonic() + 5
    while teach.sio.is_connected(NS):
        assert time.monotonic() < deadline, "the signed-out page is still connected"
        time.sleep(0.02)
    alice.emit("run", {"sandbox_id": sid, "cell_id": "c5", "source": "print('private')"})
    alice.cell("c5", "done")
    teach.pump()
    assert not [e for e in teach.events if e.get("cell_id") == "c5"]


@pytest.mark.privileged
def test_a_kernel_outlives_a_restart_of_the_web_app(nb_app, client, tmp_path, sandboxd):
    from webapp import create_app
    from webapp.config import TestConfig
    from webapp.extensions import db

    course = _course(nb_app)
    alice = Page(nb_app, "alice")
    sid = alice.open(course=course, lab="example")["sandbox_id"]
    alice.emit("run", {"sandbox_id": sid, "cell_id": "a", "source": "x = 41; import os; os.getpid()"})
    alice.cell("a", "done", 60)
    pid = alice.outputs("a")[-1]["html"]
    # The first web app goes away (its clients close; the kernel runs on in the sandbox).
    nb_app.extensions["nslab.notebook"].notebooks.close()
    second = create_app(TestConfig(tmp_path, NSLAB_SOCKET=str(sandboxd.socket),
                                   LABS_DIR=str(tmp_path / "labs")))
    try:
        again = Page(second, "alice")
        assert again.open(course=course, lab="example")["sandbox_id"] == sid
        again.emit("run", {"sandbox_id": sid, "cell_id": "b", "source": "x + 1, os.getpid()"})
        again.cell("b", "done", 60)
        assert again.outputs("b")[-1]["html"] == f"(42, {pid})"
        # A stopped sandbox ends its kernel: a run is told so, and hangs nothing.
        client.stop(sid)
        again.emit("run", {"sandbox_id": sid, "cell_id": "c", "source": "x"})
        again.cell("c", "dead", 30)
        said = again.wait(lambda e: e["name"] == "error", "the error")
        assert said["reason"] == "not_running", said
        # Started again, the next run gets a fresh kernel (x is gone with the old one).
        client.start(sid)
        again.emit("run", {"sandbox_id": sid, "cell_id": "d", "source": "x"})
        again.cell("d", "error", 60)
        assert [o["ename"] for o in again.outputs("d")] == ["NameError"]
    finally:
        second.extensions["nslab.notebook"].notebooks.close()
        with second.app_context():
            db.engine.dispose()


@pytest.mark.privileged
def test_hostile_output_interrupt_and_bounds(nb_app, client):
    from webapp.models import User

    course = _course(nb_app)
    with nb_app.app_context():
        alice_id = User.by_name("alice").id
    alice = Page(nb_app, "alice")
    sid = alice.open(course=course, lab="example")["sandbox_id"]

    # A cell that displays script and event handlers: the page gets them cleaned.
    alice.emit("run", {"sandbox_id": sid, "cell_id": "h", "source":
                       "from IPython.display import HTML, display\n"
                       f"display(HTML({HOSTILE!r}))"})
    alice.cell("h", "done", 60)
    [shown] = alice.outputs("h")
    assert shown["kind"] == "html"
    _no_script(shown["html"])

    # `while True: pass` is interrupted; what was queued behind it is dropped.
    alice.emit("run_all", {"sandbox_id": sid, "cells": [
        {"cell_id": "spin", "source": "while True: pass"},
        {"cell_id": "after", "source": "print('never')"}]})
    alice.cell("spin", "running")
    time.sleep(0.5)
    started = time.monotonic()
    alice.emit("interrupt", {"sandbox_id": sid})
    alice.cell("after", "cancelled")
    alice.cell("spin", "error", 15)
    took = time.monotonic() - started
    assert [o["ename"] for o in alice.outputs("spin")] == ["KeyboardInterrupt"]
    assert not alice.outputs("after")
    assert took < 5, f"the interrupt took {took:.1f} s"

    # At most MAX_QUEUED cells per learner: one more is refused whole, nothing queued.
    nb = nb_app.extensions["nslab.notebook"].notebooks
    alice.events.clear()
    alice.emit("run_all", {"sandbox_id": sid, "cells": [
        {"cell_id": f"q{i}", "source": "1"} for i in range(MAX_QUEUED + 1)]})
    alice.wait(lambda e: e["name"] == "error" and e["reason"] == "too_many_cells", "refusal")
    time.sleep(0.3)
    alice.pump()
    assert not [e for e in alice.events if e["name"] == "cell"]
    assert nb.queued(alice_id) == 0

    # Output past MAX_CELL_OUTPUT is cut, with a notice.
    alice.emit("run", {"sandbox_id": sid, "cell_id": "flood",
                       "source": "for i in range(40):\n    print('x' * 65536)"})
    alice.cell("flood", "done", 60)
    out = alice.outputs("flood")
    assert out[-1]["type"] == "truncated"
    assert sum(render.size(o) for o in out[:-1]) <= MAX_CELL_OUTPUT

    # Bad input is refused and queues nothing.
    for bad in ({"cell_id": "a b", "source": "1"}, {"cell_id": "ok"},
                {"cell_id": "big", "source": "#" * (64 * 1024 + 1)}):
        alice.events.clear()
        alice.emit("run", {"sandbox_id": sid, **bad})
        alice.wait(lambda e: e["name"] == "error" and e["reason"] == "invalid", str(bad)[:40])
    assert nb.queued(alice_id) == 0


@pytest.mark.privileged
def test_lesson_cell_and_the_scratch_notebook(nb_app, client):
    course = _course(nb_app)
    alice = Page(nb_app, "alice")
    page = alice.web.get(f"/courses/{course}/labs/example")
    assert page.status_code == 200
    cell = re.search(rb'data-cell-id="(intro\.0)".*?<code class="language-python" '
                     rb'data-role="source">(.*?)</code>', page.data, re.S)
    assert cell and cell.group(2) == b"print(&#39;from the lesson&#39;, 6 * 7)\n", page.data
    sid = alice.open(course=course, lab="example")["sandbox_id"]
    alice.emit("run", {"sandbox_id": sid, "cell_id": "intro.0",
                       "source": "print('from the lesson', 6 * 7)\n"})
    alice.cell("intro.0", "done", 60)
    assert alice.outputs("intro.0") == [{"type": "stream", "name": "stdout",
                                         "html": "from the lesson 42\n"}]

    url = f"/courses/{course}/labs/example/notebook"
    assert alice.web.get(url).json == {"path": "/root/scratch.ipynb", "cells": [],
                                       "found": False}
    cells = [{"cell_type": "code", "source": "x = 1\nprint(x)"},
             {"cell_type": "markdown", "source": "# notes"}]
    r = alice.web.put(url, json={"cells": cells})
    assert r.status_code == 200, r.json
    assert alice.web.get(url).json == {"path": "/root/scratch.ipynb", "cells": cells,
                                       "found": True}
    # It is a real notebook in the sandbox's /root, the learner's to download.
    raw = client.read_file(sid, "/root/scratch.ipynb")
    assert b'"nbformat": 4' in raw
    r = alice.web.get(f"/courses/{course}/labs/example/files?path=/root/scratch.ipynb")
    assert r.status_code == 200 and r.data == raw
    # Bad input changes nothing.
    for body in ({"cells": "x"}, {"cells": [{"cell_type": "raw", "source": ""}]},
                 {"cells": [{"cell_type": "code"}]}, {"cells": [{}] * 201}, None):
        r = alice.web.put(url, json=body)
        assert r.status_code == 400, body
    assert client.read_file(sid, "/root/scratch.ipynb") == raw
    # A file the learner broke in the terminal is said to be broken, and left alone.
    client.run(sid, ["sh", "-c", "echo '{not json' > /root/scratch.ipynb"])
    r = alice.web.get(url)
    assert r.status_code == 422 and "scratch.ipynb" in r.json["message"]
    assert client.read_file(sid, "/root/scratch.ipynb") == b"{not json\n"
    # Another learner reads and writes only their own.
    bob = Page(nb_app, "bob")
    assert bob.web.get(url).json["found"] is False
    olga = Page(nb_app, "olga")
    assert olga.web.get(url).status_code == 403  # not in the course
    assert nb_app.test_client().get(url).status_code in (302, 401)
