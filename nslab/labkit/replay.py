"""`nslab lab test`: prove a lab on real sandboxes before a learner sees it.

It replays every exercise on real sandboxes: a fresh sandbox must fail the check, the
same sandbox after the reference solution must pass it, and each listed wrong answer, on a
fresh sandbox of its own, must fail with the feedback the author expects.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

from sandbox.errors import SandboxError

from .grade import Result, grade
from .model import Exercise, Lab
from .params import draw_params, expand, param_env
from .provision import run_setup

SOLUTION_TIMEOUT = 60.0
# A learner does not press Check a millisecond after their command returns; processes a
# solution starts in the background (setsid -f, &) need a moment to exec.
SETTLE = 0.5


@dataclass
class Outcome:
    exercise: str
    ok: bool = True
    lines: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def expect(self, ok: bool, line: str) -> None:
        self.ok &= ok
        self.lines.append(("ok    " if ok else "FAIL  ") + line)


class LabTester:
    def __init__(self, client, lab: Lab, params: dict, keep: bool = False):
        self.client = client
        self.lab = lab
        self.params = params
        self.keep = keep
        self.leaks: list[str] = []  # feedback that held a hidden value (redacted)

    def fresh(self) -> str:
        sb = self.client.create(**self.lab.sandbox_limits,
                                labels={"purpose": "lab-test", "lab": self.lab.id})
        try:
            run_setup(self.client, sb["id"], self.lab, self.params)
        except BaseException:
            self.drop(sb["id"])
            raise
        return sb["id"]

    def drop(self, sid: str) -> None:
        if not self.keep:
            try:
                self.client.destroy(sid, purge=True)
            except SandboxError:
                pass

    def shell(self, sid: str, script: str) -> dict:
        out = self.client.run(sid, ["/bin/bash", "-c", expand(script, self.params)],
                              env=param_env(self.params), timeout=SOLUTION_TIMEOUT)
        time.sleep(SETTLE)
        return out

    def check(self, ex: Exercise, sid: str | None, answer: str | None = None) -> Result:
        r = grade(self.lab, ex, client=self.client, sandbox_id=sid, params=self.params,
                  answer=answer)
        if r.redacted:
            # The learner would read "…" where the check wrote a hidden value: the check
            # must say what is wrong without it.
            self.leaks.append(_short(r.feedback))
        return r

    def exercise(self, ex: Exercise) -> Outcome:
        out = Outcome(ex.id)
        started = time.monotonic()
        self.leaks = []
        try:
            if ex.quiz is not None and not ex.check:
                self._quiz(ex, out)
            else:
                self._task(ex, out)
        except SandboxError as e:
            out.expect(False, f"sandbox error: {e.message}")
        for feedback in self.leaks:
            out.expect(False, f"the feedback showed a hidden param's value (the learner reads "
                              f"it as …): {feedback}")
        out.seconds = time.monotonic() - started
        return out

    def _quiz(self, ex: Exercise, out: Outcome) -> None:
        right = expand(ex.quiz.answer, self.params) if ex.quiz.answer else None
        if right is not None:
            r = self.check(ex, None, right)
            out.expect(r.passed, f"the answer {right!r} passes")
        r = self.check(ex, None, "")
        out.expect(not r.passed, "an empty answer fails")
        self._wrong_answers(ex, out, None)

    def _task(self, ex: Exercise, out: Outcome) -> None:
        sid = self.fresh()
        try:
            r = self.check(ex, sid, "" if ex.quiz else None)
            out.expect(not r.passed, f"fresh sandbox fails: {_short(r.feedback)}")
            done = self.shell(sid, ex.solution or "")
            if done.get("exit_code") != 0 or done.get("timed_out"):
                out.expect(False, f"the solution exited {done.get('exit_code')}: "
                                  f"{_short(done.get('stderr') or done.get('stdout'))}")
                return
            answer = done.get("stdout", "").strip() if ex.quiz else None
            r = self.check(ex, sid, answer)
            out.expect(r.passed, f"solution passes ({r.duration_ms} ms): {_short(r.feedback)}")
        finally:
            self.drop(sid)
        self._wrong_answers(ex, out, "task")

    def _wrong_answers(self, ex: Exercise, out: Outcome, kind: str | None) -> None:
        for n, wrong in enumerate(ex.wrong, 1):
            sid = None
            try:
                if wrong.run is not None:  # a task's attempt, or a quiz's staged sandbox
                    sid = self.fresh()
                    self.shell(sid, wrong.run)
                    r = self.check(ex, sid, None if wrong.answer is None
                                   else expand(wrong.answer, self.params))
                else:
                    if ex.check:
                        sid = self.fresh()
                    r = self.check(ex, sid, expand(wrong.answer, self.params))
            finally:
                if sid:
                    self.drop(sid)
            want = expand(wrong.feedback, self.params)
            out.expect(not r.passed and want in r.feedback,
                       f"wrong answer {n} fails with {want!r}"
                       + ("" if want in r.feedback else f" — got {_short(r.feedback)}")
                       + (" — but it PASSED" if r.passed else ""))


def _short(text: str | None, n: int = 110) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= n else text[:n - 1] + "…"


def replay_lab(client, lab: Lab, *, seed: int | None = None, only: list[str] | None = None,
             keep: bool = False, echo=print) -> bool:
    rng = random.Random(seed)
    params = draw_params(lab.params, rng)
    echo(f"lab {lab.id}: {len(lab.exercises)} exercises; params {params or '{}'}")
    tester = LabTester(client, lab, params, keep)
    ok = True
    for ex in lab.ordered_exercises():
        if only and ex.id not in only:
            continue
        outcome = tester.exercise(ex)
        ok &= outcome.ok
        echo(f"  {'PASS' if outcome.ok else 'FAIL'}  {ex.id} ({outcome.seconds:.1f} s)")
        for line in outcome.lines:
            echo(f"        {line}")
    return ok

