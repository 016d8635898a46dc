"""The instructor's live classroom in a real browser (issue 14's done-when): Debian's
chromium, headless, on the web app served as `nslab serve` by the unprivileged user nslab
against a sandboxd of the test's own (the fixtures of tests/test_browser.py).

Three separate browser contexts (three cookie jars, three sessions): the demo teacher on
the live page, the demo learner on the cgroups lab, a second learner on the course page.
Without a reload of the teacher's page: a check turns the learner's cell green; a raised
hand (its message full of markup, which must arrive as text) enters the help queue and
puts the learner first in "Who needs help"; a CPU hog shows in the learner's gauge and in
the teacher's sparkline; the teacher watches the learner's terminal and sees their typing,
then takes it over with the learner's consent, types, and the learner ends it; an
announcement reaches both learner pages. Screenshots: artifacts/browser-classroom-*.png.
"""

from __future__ import annotations

import re
import shutil
import tempfile

import pytest

from test_browser import (ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, _prompt, _screen, _shot,  # noqa: F401
                          _sign_in, _type_line, _wait_for, playwright_started, web_daemon,
                          webapp)

pytestmark = pytest.mark.privileged

HELP_MESSAGE = "<b>stuck</b> on <img src=x onerror=alert(1)> the quota file"


@pytest.fixture
def browser():
    """Debian's chromium, headless; each `new_context()` is a session of its own."""
    downloads = tempfile.mkdtemp(prefix="nslab-browser-classroom-")
    try:
        with playwright_started() as pw:
            b = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                   args=CHROMIUM_ARGS, chromium_sandbox=False,
                                   downloads_path=downloads)
            try:
                yield b
            finally:
                b.close()
    finally:
        shutil.rmtree(downloads, ignore_errors=True)


def _page(browser, errors: list[str], who: str):
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.set_default_timeout(20_000)
    page.on("pageerror", lambda e: errors.append(f"{who}: {e}"))
    return page


def _second_learner(app) -> str:
    """A second learner, enrolled in the demo course; their password."""
    out = app.run("user", "add", "--role", "learner", "learner2")
    password = re.search(r"with password: (\S+)", out).group(1)
    code = re.search(r"join code (\S+)", app.demo).group(1)
    app.run("course", "enroll", code, "learner2")
    return password


def _full_shot(page, name: str) -> None:
    """The whole page, below the fold too (the live page's matrix)."""
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name), full_page=True)
    print(f"screenshot: {ARTIFACTS / name}")


def _terminal_of(page, what: str, pred, timeout: float = 20):
    return _wait_for(page, pred, what, timeout=timeout)


def test_live_classroom_with_a_teacher_and_two_learners(browser, web_daemon, webapp):
    app, password = webapp
    teacher_password = re.search(r"^\s*instructor\s+teacher\s+password: (\S+)$", app.demo,
                                 re.M).group(1)
    password2 = _second_learner(app)
    errors: list[str] = []

    # The teacher opens the live page of the demo course.
    teacher = _page(browser, errors, "teacher")
    _sign_in(teacher, app.url, "teacher", teacher_password)
    teacher.click("a.course-card")
    course_url = teacher.url.rstrip("/")
    teacher.goto(course_url + "/live")
    teacher.wait_for_selector("#matrix td[data-username=learner2][data-lab=cgroups]"
                              "[data-exercise=quota-file]")
    cell = "#matrix td[data-username=learner][data-lab=cgroups][data-exercise=quota-file]"
    # The lab's header stands above its own exercises: their columns line up.
    header = teacher.locator("#matrix th.live-lab-col[data-lab=cgroups]").bounding_box()
    first = teacher.locator(cell).bounding_box()
    assert abs(header["x"] - first["x"]) < 2, (header, first)
    assert teacher.get_attribute(cell, "data-state") == "none"
    # Set once: still there at the end means the page was never reloaded.
    teacher.evaluate("() => { window.__sameLivePage = true; }")

    # Learner 1 works in the cgroups lab; learner 2 stays on the course page.
    one = _page(browser, errors, "learner")
    _sign_in(one, app.url, "learner", password)
    one.click("a.course-card")
    one.click("ol.lab-list a[href$='/labs/cgroups']")
    one.wait_for_selector("#terminal .xterm-screen")
    _wait_for(one, _prompt, "learner's shell prompt")
    two = _page(browser, errors, "learner2")
    _sign_in(two, app.url, "learner2", password2)
    two.click("a.course-card")
    two.wait_for_selector("#classroom [data-action=help]")

    # A check turns the teacher's cell green, on the page as it is.
    one.locator("#exercise-quota-file label", has_text="v1: cpu.cfs_quota_us").click()
    one.click("#exercise-quota-file button[data-action=check]")
    teacher.wait_for_selector(cell + "[data-state=passed]")
    assert teacher.locator(cell).inner_text().startswith("\u2713")
    assert teacher.get_attribute(cell, "class").count("cell-passed") == 1
    # A wrong answer (the next step's) turns its cell amber, with the attempts.
    wrong = ("#matrix td[data-username=learner][data-lab=cgroups]"
             "[data-exercise=sandbox-memory]")
    one.fill("#exercise-sandbox-memory input[name=answer]", "1")
    one.click("#exercise-sandbox-memory button[data-action=check]")
    teacher.wait_for_selector(wrong + "[data-state=failed]")
    assert teacher.locator(wrong).inner_text() == "1\u00d7"
    row = teacher.locator("#stuck tbody tr").filter(
        has=teacher.locator(".live-name", has_text=re.compile("^learner$")))
    assert row.locator(".live-failed").inner_text() == "1"   # failed checks in a row

    # A raised hand: in the queue (its markup shown as text), and first in "Who needs help".
    one.click("#classroom [data-action=help]")
    one.fill("#help-message", HELP_MESSAGE)
    one.click("#help-dialog button[type=submit]")
    one.wait_for_selector("#classroom [data-action=help][data-state=raised]")
    item = teacher.locator("#help-queue li", has_text="learner")
    item.wait_for()
    assert item.locator(".help-message").inner_text() == HELP_MESSAGE
    assert teacher.locator("#help-queue img, #help-queue b").count() == 0
    teacher.wait_for_selector("#stuck tr:first-child[data-user] .live-hand:not([hidden])")
    assert teacher.locator("#stuck tr:first-child .live-name").inner_text() == "learner"
    item.locator("[data-action=claim]").click()
    item.locator(".help-claimed", has_text="claimed by you").wait_for()
    assert item.locator("[data-action=claim]").is_hidden()
    one.wait_for_selector("#classroom [data-role=help-status]:has-text('on the way')")

    # A CPU hog held at its quota (0.3 CPU, a child cgroup the learner makes, as in the
    # cgroups lab): the learner's own gauge shows it at the quota, the teacher's CPU
    # sparkline of the learner's sandbox shows the use (the settling figures:
    # tests/test_browser_gauges.py).
    _type_line(one, "export G=/sys/fs/cgroup/cpu/hog; [ -f /sys/fs/cgroup/cgroup.controllers ] "
                    "&& G=/sys/fs/cgroup/hog; mkdir -p $G; if [ -f $G/cpu.max ]; then "
                    "echo '30000 100000' > $G/cpu.max; else echo 100000 > $G/cpu.cfs_period_us;"
                    " echo 30000 > $G/cpu.cfs_quota_us; fi")
    _type_line(one, "sh -c 'echo $$ > $G/cgroup.procs && exec stress-ng --cpu 1 --quiet' &")
    try:
        one.wait_for_function("""() => {
            const r = document.querySelector("#gauges [data-path='/hog'][data-cpu-max='0.3']");
            return r && r.dataset.cpu !== "" && Math.abs(Number(r.dataset.cpu) - 0.3) < 0.1; }""",
                              timeout=40_000)
        teacher.wait_for_function("""() => Array.from(document.querySelectorAll("#stuck tbody tr"))
            .some((r) => r.querySelector(".live-name").textContent === "learner" &&
                         Number(r.dataset.cpu) >= 0.2)""", timeout=30_000)
        assert row.locator(".live-usage svg polyline").first.get_attribute("points")
        _full_shot(teacher, "browser-classroom-live.png")
        _shot(one, "browser-classroom-gauges.png")
    finally:
        _type_line(one, "pkill stress-ng")

    # Watch: the teacher's new tab shows what the learner types.
    with teacher.context.expect_page() as opened:
        row.locator("[data-action=watch]").click()
    watch = opened.value
    watch.set_default_timeout(20_000)
    watch.on("pageerror", lambda e: errors.append(f"watch: {e}"))
    watch.wait_for_selector("#terminal .xterm-screen")
    assert "/live/watch/" in watch.url and "control" not in watch.url
    assert watch.locator("#watch [data-action=end]").is_hidden()
    _type_line(one, "echo watched-$((6*7))")
    _terminal_of(watch, "the learner's typing on the watch page",
                 lambda ls: any(line.strip() == "watched-42" for line in ls))
    _shot(watch, "browser-classroom-watch.png")

    # Take over, with the learner's consent; the learner sees it and ends it.
    watch.click("#watch [data-action=takeover]")
    one.wait_for_selector("#takeover-dialog[open]")
    assert "teacher asks to type" in one.locator("#takeover-dialog").inner_text()
    _shot(one, "browser-classroom-consent.png")
    one.click("#takeover-dialog [data-action=allow]")
    watch.wait_for_url("**control=1**")
    watch.wait_for_selector("#terminal .xterm-screen")
    one.wait_for_selector("#classroom [data-role=takeover]:not([hidden])")
    assert "teacher is typing" in one.locator("#classroom [data-role=takeover]").inner_text()
    _terminal_of(watch, "the learner's shell in control", _prompt)
    assert watch.locator("#watch [data-action=takeover]").is_hidden()
    _type_line(watch, "echo typed-by-$((40+2))-teacher")
    _terminal_of(one, "the teacher's typing in the learner's terminal",
                 lambda ls: any(line.strip() == "typed-by-42-teacher" for line in ls))
    _shot(one, "browser-classroom-takeover.png")
    _shot(watch, "browser-classroom-control.png")
    one.click("#classroom [data-action=takeover-end]")
    one.wait_for_selector("#classroom [data-role=takeover][hidden]", state="attached")
    watch.wait_for_url(re.compile(r"/live/watch/\d+/cgroups$"))
    watch.wait_for_selector("#terminal[data-readonly='1'] .xterm-screen")

    # An announcement reaches both learner pages, as a banner and a toast.
    text = "Quiz in 5 minutes <script>not markup</script>"
    teacher.fill("#announce-text", text)
    teacher.click("#announce button[type=submit]")
    for page in (one, two):
        page.wait_for_selector("#classroom [data-role=banner]:not([hidden])")
        assert page.locator("#classroom [data-role=banner-text]").inner_text() == text
        assert page.locator("#toasts .toast", has_text="Quiz in 5 minutes").count() == 1
        assert page.locator("#classroom script, #toasts script").count() == 0
    _shot(two, "browser-classroom-announcement.png")
    _shot(one, "browser-classroom-learner.png")

    # A message to one learner: a banner "To you" on their page only.
    teacher.locator("#stuck tbody tr").filter(has=teacher.locator(
        ".live-name", has_text=re.compile("^learner2$"))).locator("[data-action=announce]").click()
    teacher.fill("#announce-one-text", "Only for learner2")
    teacher.click("#announce-one button[type=submit]")
    two.wait_for_selector("#classroom [data-role=banner-label]:has-text('To you')")
    assert two.locator("#classroom [data-role=banner-text]").inner_text() == "Only for learner2"
    assert one.locator("#classroom [data-role=banner-text]").inner_text() == text
    # Dismissed, it stays away after a reload: the page shows the latest one not dismissed.
    two.click("#classroom [data-action=dismiss]")
    assert two.locator("#classroom [data-role=banner]").is_hidden()
    two.reload()
    two.wait_for_selector("#classroom [data-role=banner]:not([hidden])")
    assert two.locator("#classroom [data-role=banner-text]").inner_text() == text

    # From the course page too: a hand raised without a message, then lowered.
    two.click("#classroom [data-action=help]")
    two.click("#help-dialog button[type=submit]")
    teacher.wait_for_selector("#help-queue li:has-text('learner2')")
    assert teacher.locator("[data-role=queue-count]").inner_text() == "2"
    two.click("#classroom [data-action=help][data-state=raised]")
    two.wait_for_selector("#classroom [data-action=help]:not([data-state=raised])")
    teacher.wait_for_selector("#help-queue li:has-text('learner2')", state="detached")
    assert teacher.locator("[data-role=queue-count]").inner_text() == "1"

    assert teacher.evaluate("() => window.__sameLivePage === true"), "the live page reloaded"
    teacher.evaluate("() => { document.documentElement.dataset.theme = 'dark'; }")
    _full_shot(teacher, "browser-classroom-live-dark.png")
    assert not errors, f"JavaScript errors on the pages: {errors}"
