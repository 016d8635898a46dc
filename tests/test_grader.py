"""What a learner reads for every way a check can end: passed, failed with partial credit,
a bug in the check, a timeout, the daemon away; quizzes by answer, pattern and choice.
A stand-in client returns recorded host facts, so these run without a daemon."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from nslab.labkit.check import SandboxView, parents
from nslab.labkit.grade import grade
from nslab.labkit.loader import load_lab
from sandbox.client import DaemonUnavailable

def process(pid: int, host_pid: int, comm: str, cgroups: dict, uts: int) -> dict:
    """A `protocol.ProcessFacts` as the engine builds it (every key is always there)."""
    return {"host_pid": host_pid, "pid": pid, "nspids": [host_pid, pid], "ppid": 99,
            "comm": comm, "cmdline": [comm] + (["-P"] if pid == 1 else []),
            "host_uid": 100000, "uid": 0, "state": "S",
            "namespaces": {"uts": uts, "net": 21}, "cgroup": cgroups["cpu"],
            "cgroups": cgroups, "cpu_ns": 0, "cpus_allowed": "0-1"}


FACTS = {
    "cgroup_version": 1, "hostname": "sb-1",
    "processes": [
        process(1, 100, "catatonit", {"cpu": "/", "memory": "/"}, uts=11),
        process(7, 107, "stress-ng-cpu", {"cpu": "/a/b", "memory": "/"}, uts=12),
    ],
    "cgroups": [
        {"path": "/", "limits": {"cpus": 2.0, "memory_max": 512 << 20}, "usage": {},
         "procs": [100]},
        {"path": "/a", "limits": {"cpus": 0.5}, "usage": {}, "procs": []},
        {"path": "/a/b", "limits": {"cpus": 1.0, "cpu_quota_us": 100000,
                                    "cpu_period_us": 100000}, "usage": {"frozen": True},
         "procs": [107]},
    ],
    "uts_namespaces": [{"inode": 11, "hostname": "sb-1"}, {"inode": 12, "hostname": "zebra"}],
}


class FakeClient:
    def __init__(self, burn: float = 0.5):
        self.burn = burn  # CPUs the stress-ng worker uses
        self.t0 = time.monotonic()

    def inspect(self, sid):
        facts = {**FACTS, "processes": [dict(p) for p in FACTS["processes"]]}
        facts["processes"][1]["cpu_ns"] = int((time.monotonic() - self.t0) * self.burn * 1e9)
        return facts


def lab_with(tmp_path: Path, checks: str, extra: str = ""):
    """A one-exercise lab whose check is `checks`' function `task`."""
    folder = tmp_path / "t"
    (folder / "steps").mkdir(parents=True, exist_ok=True)
    (folder / "lab.yaml").write_text(f"""id: t
title: T
steps:
  - {{id: s, title: S, file: steps/s.md}}
exercises:
  - id: task
    title: Task
    points: 4
    text: Do it.
    timeout: 1
    solution: "true"
    wrong:
      - {{run: "false", feedback: x}}
{extra}""")
    (folder / "steps" / "s.md").write_text("::: exercise task\n" + (
        "::: exercise quiz\n" if extra else ""))
    (folder / "checks.py").write_text(checks)
    lab = load_lab(folder)
    assert lab.errors == [], [str(e) for e in lab.errors]
    return lab


def run(lab, ex="task", answer=None, client=None):
    return grade(lab, lab.exercises[ex], client=client or FakeClient(), sandbox_id="sb",
                 params={}, answer=answer)


def test_passed_failed_and_partial_credit(tmp_path):
    lab = lab_with(tmp_path, "from nslab.labkit.check import Fail\n"
                             "def task(sb, params):\n    return 'well done'\n")
    r = run(lab)
    assert (r.passed, r.feedback, r.points, r.max_points) == (True, "well done", 4, 4)
    lab = lab_with(tmp_path, "from nslab.labkit.check import Fail\n"
                             "def task(sb, params):\n    raise Fail('half there', points=2)\n")
    r = run(lab)
    assert (r.passed, r.feedback, r.points) == (False, "half there", 2)


def test_a_bug_in_the_check_is_not_blamed_on_the_learner(tmp_path, caplog):
    lab = lab_with(tmp_path, "def task(sb, params):\n    return 1 / 0\n")
    r = run(lab)
    assert not r.passed and "The check itself failed (ZeroDivisionError)" in r.feedback
    assert "check t/task raised" in caplog.text


def test_a_slow_check_times_out_with_a_clear_message(tmp_path):
    lab = lab_with(tmp_path, "import time\ndef task(sb, params):\n    time.sleep(5)\n")
    started = time.monotonic()
    r = run(lab)
    assert time.monotonic() - started < 2.5
    assert not r.passed and "did not finish within 1 s" in r.feedback
    # A check that asks for more time than is left is stopped by the view itself.
    lab = lab_with(tmp_path, "def task(sb, params):\n    return sb.measure_cpu(sb.processes(), 5)\n")
    r = run(lab)
    assert r.passed  # measured within the second it had (the window shrinks to fit)


def test_daemon_away_and_no_sandbox(tmp_path):
    class Away:
        def inspect(self, sid):
            raise DaemonUnavailable("cannot reach sandboxd at /x: no such file")

    lab = lab_with(tmp_path, "def task(sb, params):\n    return sb.init.comm\n")
    r = run(lab, client=Away())
    assert not r.passed and r.feedback == ("The sandbox could not be checked: cannot reach "
                                           "sandboxd at /x: no such file")
    r = grade(lab, lab.exercises["task"], client=FakeClient(), sandbox_id=None, params={})
    assert not r.passed and "not running" in r.feedback


def test_view_reads_limits_up_the_tree_and_measures(tmp_path):
    view = SandboxView(FakeClient(burn=0.5), "sb", timeout=5)
    hog = view.processes(comm="stress-ng-cpu")[0]
    assert view.cgroup_of(hog, "cpu").path == "/a/b" and view.cgroup_of(hog, "cpu").frozen
    cpus, where = view.cpu_limit_of(hog)
    assert cpus == 0.5 and where.path == "/a"  # the tightest quota on the way up
    assert view.limit_of(hog, "memory_max", "memory")[0] == 512 << 20
    assert view.hostname_of(hog) == "zebra" and view.hostname_of(view.init) == "sb-1"
    assert abs(view.measure_cpu([hog], 0.3) - 0.5) < 0.05
    assert parents("/a/b") == ["/a/b", "/a", "/"]


QUIZ = """  - id: quiz
    title: Q
    points: 1
    text: Which?
    quiz:
      pattern: '4026\\d+'
    wrong:
      - {answer: '42', feedback: too short}
"""


def test_quiz_by_pattern_with_feedback_for_known_wrong_answers(tmp_path):
    lab = lab_with(tmp_path, "def task(sb, params):\n    return 'ok'\n", extra=QUIZ)
    assert run(lab, "quiz", " 4026531840 ").passed
    assert run(lab, "quiz", "42").feedback == "too short"
    assert "'7' is not the answer" in run(lab, "quiz", "7").feedback
    assert run(lab, "quiz", "").feedback == "Type an answer first."


@pytest.mark.parametrize("given, ok", [("Catatonit", True), (" catatonit ", True),
                                       ("bash", False)])
def test_example_quiz_answers(given, ok):
    lab = load_lab(Path(__file__).resolve().parent.parent / "labs" / "example")
    assert run(lab, "pid-one", given).passed is ok


HIDDEN = """params:
  code: {token: 10, hidden: true}
  port: {int: [10, 20], hidden: true}
"""


def hidden_lab(tmp_path: Path, checks: str):
    lab = lab_with(tmp_path, checks)
    meta = lab.path / "lab.yaml"
    meta.write_text(meta.read_text().replace("steps:\n", HIDDEN + "steps:\n", 1))
    lab = load_lab(lab.path)
    assert lab.errors == [] and lab.hidden == {"code", "port"}
    return lab


def test_a_hidden_value_in_a_checks_feedback_is_redacted(tmp_path):
    lab = hidden_lab(tmp_path, "from nslab.labkit.check import Fail\n"
                               "def task(sb, params):\n"
                               "    raise Fail(f\"wanted {params['code']} on port "
                               "{params['port']}, not 150\")\n")
    params = {"code": "k3v9q2mz7a", "port": 15}
    r = grade(lab, lab.exercises["task"], client=FakeClient(), sandbox_id="sb",
              params=params)
    assert (r.passed, r.feedback, r.redacted) == (False, "wanted … on port …, not 150", True)
    ok = lab_with(tmp_path / "2", "def task(sb, params):\n    return 'port 15'\n")
    r = grade(ok, ok.exercises["task"], client=FakeClient(), sandbox_id="sb", params=params)
    assert (r.feedback, r.redacted) == ("port 15", False)  # nothing hidden in this lab


def test_replay_reports_feedback_that_held_a_hidden_value(tmp_path):
    """`nslab lab test` tells the author, even where every expectation holds."""
    from nslab.labkit.replay import LabTester

    class Daemon(FakeClient):
        def create(self, **limits):
            return {"id": "sb"}

        def run(self, sid, argv, **kw):
            return {"exit_code": 0, "stdout": "", "stderr": ""}

        def destroy(self, sid, purge=False):
            pass

    lab = hidden_lab(tmp_path, "from nslab.labkit.check import Fail\n"
                               "def task(sb, params):\n"
                               "    raise Fail('x: the code is ' + params['code'])\n")
    out = LabTester(Daemon(), lab, {"code": "k3v9q2mz7a", "port": 12}).exercise(
        lab.exercises["task"])
    assert not out.ok
    assert "FAIL  the feedback showed a hidden param's value (the learner reads it as …): " \
           "x: the code is …" in out.lines


def test_only_a_judged_try_counts(tmp_path):
    checks = ("from nslab.labkit.check import Fail\n"
              "def task(sb, params):\n    raise Fail('not yet', points=1)\n")
    lab = lab_with(tmp_path, checks, extra=QUIZ)
    assert run(lab).counted  # a Fail judged the work
    assert run(lab, "quiz", "42").counted and not run(lab, "quiz", " ").counted
    r = grade(lab, lab.exercises["task"], client=FakeClient(), sandbox_id=None, params={})
    assert not r.counted  # no sandbox: nothing was judged
    broken = lab_with(tmp_path / "2", "def task(sb, params):\n    return 1 / 0\n")
    assert not run(broken).counted
    slow = lab_with(tmp_path / "3", "import time\ndef task(sb, params):\n    time.sleep(5)\n")
    assert not run(slow).counted


def test_award_applies_graded_tries_and_hint_costs(tmp_path):
    from nslab.labkit.grade import Award, Result, award, worth

    lab = lab_with(tmp_path, "def task(sb, params):\n    return 'ok'\n")
    ex = lab.exercises["task"]  # 4 points, the default hint_cost 0.25: 1 point a hint
    passed, partial = Result(True, "", 4, 4), Result(False, "", 2, 4)
    assert award(ex, passed, tries_before=7, hints_used=0) == Award(4, 0, True)
    assert award(ex, passed, tries_before=0, hints_used=1) == Award(3, 1, True)
    assert award(ex, partial, tries_before=0, hints_used=1) == Award(1, 1, True)
    assert award(ex, partial, tries_before=0, hints_used=3) == Award(0, 2, True)  # never < 0
    assert award(ex, Result(False, "", 0, 4, counted=False), tries_before=0,
                 hints_used=0) == Award(0, 0, False)
    ex.attempts, ex.hint_cost = 2, 0.3
    assert award(ex, passed, tries_before=1, hints_used=1) == Award(2.8, 1.2, True)
    assert award(ex, passed, tries_before=2, hints_used=0) == Award(0, 0, False)
    assert worth(ex, tries=1, hints_used=2) == 1.6 and worth(ex, tries=2, hints_used=0) == 0
    quiz = load_lab(Path(__file__).resolve().parent.parent / "labs" / "example").exercises
    assert quiz["which-ns"].graded_attempts == 1  # a choice quiz: the first try only
    assert quiz["pid-one"].graded_attempts is None  # short answer: every try
