"""Notebooks in a real browser: Debian's chromium, headless, on the web app served as
`nslab serve` by the unprivileged user nslab against a sandboxd of the test's own (the
fixtures of tests/test_browser.py). The demo learner opens the cgroups lab, runs Python in
the Notebook tab (a matplotlib plot arrives as a PNG image; `while True: pass` is stopped
with the page's Interrupt), then the lab's own cell that plots a throttled hog's CPU use,
in the kernel inside their sandbox. Screenshots go to artifacts/.
"""

from __future__ import annotations

import base64
import time

import pytest

from test_browser import (_check, _learner_in_cgroups_lab, _shot,  # noqa: F401
                          chromium, web_daemon, webapp)

pytestmark = pytest.mark.privileged

PLOT = """import matplotlib.pyplot as plt
plt.figure(figsize=(4, 2))
plt.plot([0, 1, 2, 3], [0, 1, 4, 9])
plt.title('from the sandbox')
plt.show()"""


def _png(page, selector: str) -> bytes:
    """The bytes of the PNG data: URL of the first image under `selector`."""
    src = page.locator(f"{selector} img.nb-image").first.get_attribute("src")
    assert src and src.startswith("data:image/png;base64,"), src
    data = base64.b64decode(src.split(",", 1)[1])
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    return data


def _wait_kernel(page, app, status: str, timeout: float) -> None:
    try:
        page.wait_for_selector(f"#notebook [data-role=kernel][data-status={status}]",
                               timeout=timeout * 1000)
    except Exception:
        _shot(page, "browser-notebook-failure.png")
        said = page.inner_text("#notebook .nb-toolbar")
        raise AssertionError(f"the kernel never became {status}; the toolbar says: {said}; "
                             f"the web app's log:\n{app.log.read_text()[-3000:]}") from None


def test_learner_runs_cells_and_sees_a_plot_in_a_real_browser(chromium, web_daemon, webapp):
    app, password = webapp
    page, errors = _learner_in_cgroups_lab(chromium, app, password, timeout_ms=30_000,
                                           prompt=False)

    # The Notebook tab, beside the terminal's tabs: its kernel starts in the sandbox.
    t0 = time.monotonic()
    page.click(".terminal-tabs .notebook-tab")
    page.wait_for_selector("#notebook:not([hidden]) .nb-scratch-cell textarea")
    _wait_kernel(page, app, "idle", 60)
    idle_s = time.monotonic() - t0
    first = "#notebook .nb-scratch-cell:nth-child(1)"
    page.fill(f"{first} textarea", PLOT)
    page.click(f"{first} button[data-nb=run]")
    page.wait_for_selector(f"{first}[data-state=done] img.nb-image")
    plot = _png(page, first)
    assert len(plot) > 2000
    mine = [sb for sb in web_daemon.client().list() if sb["labels"].get("user") == "learner"]
    assert len(mine) == 1, mine
    page.click("#notebook [data-nb=add]")
    second = "#notebook .nb-scratch-cell:nth-child(2)"
    page.fill(f"{second} textarea", "import socket; print(socket.gethostname())")
    page.press(f"{second} textarea", "Shift+Enter")
    page.wait_for_selector(f"{second}[data-state=done] pre.nb-stdout")
    assert page.inner_text(f"{second} pre.nb-stdout").strip() == mine[0]["hostname"]

    # `while True: pass`, stopped with the page's Interrupt.
    page.click("#notebook [data-nb=add]")
    third = "#notebook .nb-scratch-cell:nth-child(3)"
    page.fill(f"{third} textarea", "while True: pass")
    page.click(f"{third} button[data-nb=run]")
    page.wait_for_selector(f"{third}[data-state=running]")
    time.sleep(1)
    t1 = time.monotonic()
    page.click("#notebook [data-nb=interrupt]")
    page.wait_for_selector(f"{third}[data-state=error] pre.nb-error", timeout=10_000)
    interrupt_s = time.monotonic() - t1
    assert "KeyboardInterrupt" in page.inner_text(f"{third} pre.nb-error")
    _shot(page, "browser-notebook.png")

    # Saved into the sandbox: a reload of the page brings the cells back.
    page.click("#notebook [data-nb=save]")
    page.wait_for_selector("#notebook [data-role=message]:has-text('saved to /root/scratch.ipynb')")
    page.reload()
    page.click(".terminal-tabs .notebook-tab")
    page.wait_for_selector("#notebook .nb-scratch-cell:nth-child(3) textarea")
    assert page.input_value("#notebook .nb-scratch-cell:nth-child(1) textarea") == PLOT

    # The lab's own cell (step 3, unlocked by the two quizzes): a throttled hog's CPU use
    # against the quota, plotted over ten seconds.
    page.locator("#exercise-quota-file label", has_text="v1: cpu.cfs_quota_us").click()
    assert _check(page, "quota-file")[0]
    page.fill("#exercise-sandbox-memory input[name=answer]", "512")
    assert _check(page, "sandbox-memory")[0]
    page.wait_for_selector("#step-cpu-quota:not([hidden])")
    cell = "#step-cpu-quota .nb-lesson-cell"
    page.locator(f"{cell} button[data-nb=run]").scroll_into_view_if_needed()
    page.click(f"{cell} button[data-nb=run]")
    page.wait_for_selector(f"{cell}[data-state=done] img.nb-image", timeout=60_000)
    assert len(_png(page, cell)) > 10_000
    assert "throttled in" in page.inner_text(f"{cell} pre.nb-stdout")
    page.locator(f"{cell} img.nb-image").scroll_into_view_if_needed()
    _shot(page, "browser-notebook-lab-cell.png")

    assert not errors, f"JavaScript errors on the page: {errors}"
    print(f"kernel idle after opening the tab: {idle_s * 1000:.0f} ms; "
          f"cell stopped after Interrupt: {interrupt_s * 1000:.0f} ms")
    page.close()
