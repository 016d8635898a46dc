"""The lab page's live gauges in a real browser: Debian's chromium, headless, on the web
app served as `nslab serve` by the unprivileged user nslab against a sandboxd of the
test's own (the fixtures of tests/test_browser.py). In the cgroups lab's terminal the
demo learner starts `stress-ng --cpu 1` in a child cgroup with a 0.3 CPU quota; the
page's gauge for that group settles near 0.3 and the sandbox's gauge shows the use.
Screenshot: artifacts/browser-gauges.png.
"""

from __future__ import annotations

import os
import time

import pytest

from test_browser import (_learner_in_cgroups_lab, _shot, _type_line,  # noqa: F401
                          chromium, web_daemon, webapp)

pytestmark = pytest.mark.privileged

HOG = "/hog"


def _rows(page) -> dict[str, tuple[str, str]]:
    """path -> (data-cpu, data-cpu-max) of each gauge row on the page."""
    return page.evaluate("""() => Object.fromEntries(
        Array.from(document.querySelectorAll('#gauges [data-path]'))
             .map((r) => [r.dataset.path, [r.dataset.cpu || '', r.dataset.cpuMax || '']]))""")


def _cpu_seconds(pids) -> float:
    """User + system CPU time of these processes so far."""
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])   # utime, stime (proc(5): 14, 15)
    return total / os.sysconf("SC_CLK_TCK")


def _names(pids) -> str:
    names = []
    for pid in sorted(pids):
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            names.append(f"{pid} " + f.read().replace(b"\0", b" ").decode()[:60].strip())
    return "; ".join(names)


def test_the_gauge_of_a_throttled_hog_settles_at_its_quota(chromium, web_daemon, webapp):
    app, password = webapp
    page, errors = _learner_in_cgroups_lab(chromium, app, password)
    # The sandbox's own row comes first, with its limits (the lab's 2 CPUs).
    page.wait_for_selector("#gauges [data-path='/'][data-cpu-max='2']")

    _type_line(page, f"export G=/sys/fs/cgroup/cpu{HOG}; [ -f /sys/fs/cgroup/cgroup.controllers ] && "
                     f"G=/sys/fs/cgroup{HOG}; mkdir -p $G; if [ -f $G/cpu.max ]; then "
                     "echo '30000 100000' > $G/cpu.max; else echo 100000 > $G/cpu.cfs_period_us;"
                     " echo 30000 > $G/cpu.cfs_quota_us; fi")
    _type_line(page, "sh -c 'echo $$ > $G/cgroup.procs && exec stress-ng --cpu 1 --quiet' "
                     "&")
    try:
        page.wait_for_selector(f"#gauges [data-path='{HOG}'][data-cpu-max='0.3']")
        readings: list[tuple[float, float]] = []   # (hog, sandbox), one a second
        deadline = time.monotonic() + 40
        last = None
        while len(readings) < 8:
            assert time.monotonic() < deadline, (readings, _rows(page))
            rows = _rows(page)
            hog, root = rows.get(HOG, ("", ""))[0], rows["/"][0]
            if hog and root and (hog, root) != last:
                readings.append((float(hog), float(root)))
                last = (hog, root)
            time.sleep(0.25)
        settled = readings[-5:]
        hog_avg = sum(h for h, _ in settled) / len(settled)
        root_avg = sum(r for _, r in settled) / len(settled)
        print(f"hog {hog_avg:.2f} CPUs, sandbox {root_avg:.2f} CPUs: {readings}")
        assert hog_avg == pytest.approx(0.3, abs=0.08), readings
        assert max(h for h, _ in settled) < 0.45, readings  # clamped, never a full CPU
        assert root_avg >= 0.25, readings                   # the sandbox's gauge shows it
        assert page.locator(f"#gauges [data-path='{HOG}'] .gauge-line").get_attribute("points")
        _shot(page, "browser-gauges.png")

        # The web process's CPU while pages watch: one sampler for all of them.
        for n in (1, 4):
            extra = [chromium.new_page() for _ in range(n - 1)]
            for p in extra:
                p.goto(page.url)
                p.wait_for_selector(f"#gauges [data-path='{HOG}']")
            before, t0 = _cpu_seconds(app.pids), time.monotonic()
            time.sleep(10)
            used = (_cpu_seconds(app.pids) - before) / (time.monotonic() - t0)
            print(f"web app ({_names(app.pids)}) with {n} page(s) watching: "
                  f"{used * 100:.1f} % of a core")
            assert used < 0.5, f"{n} pages: {used * 100:.1f} % of a core"
            for p in extra:
                p.close()
    finally:
        _type_line(page, "pkill stress-ng")
    assert not errors, f"JavaScript errors on the page: {errors}"
    page.close()
