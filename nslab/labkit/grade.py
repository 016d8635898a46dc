"""Grading one exercise: its check run against a learner's sandbox with a deadline (or its
quiz answer compared), every outcome (pass, Fail, a bug in the check, a timeout, the
daemon being away) turned into a `Result` a learner can read, with the lab's hidden values
taken out of it; and what a try earns once tries and hints are counted (`award`)."""

from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass

from sandbox.errors import SandboxError

from .check import CheckTimeout, Fail, SandboxView
from .model import Exercise, Lab
from .params import expand, redact

log = logging.getLogger("nslab.grader")


@dataclass
class Result:
    passed: bool
    feedback: str
    points: float
    max_points: int
    duration_ms: int = 0
    # Whether the work was judged (passed, or a Fail): a try that counts. An empty answer,
    # a stopped sandbox, a timeout or a bug in the check says nothing about the work.
    counted: bool = True
    # Whether the check's feedback held a hidden value, now replaced by "…" (an author's
    # bug that `nslab lab test` reports; the learner never sees the value).
    redacted: bool = False

    def as_json(self) -> dict:
        return {"passed": self.passed, "feedback": self.feedback, "points": self.points,
                "max_points": self.max_points}


@dataclass(frozen=True)
class Award:
    """What one try earns once the exercise's rules are applied (docs/authoring.md)."""

    points: float  # earned by this try
    deduction: float  # taken off by the hints opened before it
    graded: bool  # within the exercise's graded tries (`attempts:`)


def award(ex: Exercise, result: Result, *, tries_before: int, hints_used: int) -> Award:
    """A try after `tries_before` counted tries, with `hints_used` hints open: beyond the
    exercise's graded tries it earns nothing; otherwise each open hint takes
    `hint_cost` x points off, never below 0."""
    limit = ex.graded_attempts
    if not result.counted or (limit is not None and tries_before >= limit):
        return Award(0, 0, graded=False)
    deduction = min(result.points, ex.hint_points * hints_used)
    return Award(round(max(0.0, result.points - deduction), 2), round(deduction, 2), True)


def worth(ex: Exercise, *, tries: int, hints_used: int) -> float:
    """What a pass on the next try would earn (0 once the graded tries are used up)."""
    limit = ex.graded_attempts
    if limit is not None and tries >= limit:
        return 0
    return round(max(0.0, ex.points - ex.hint_points * hints_used), 2)


def _quiz_feedback(ex: Exercise, answer: str, params: dict) -> tuple[bool, str]:
    quiz = ex.quiz
    given = (answer or "").strip()
    if not given:
        return False, "Type an answer first."
    if quiz.pattern is not None:
        ok = re.fullmatch(expand(quiz.pattern, params), given) is not None
    else:
        ok = given.casefold() == expand(quiz.answer, params).strip().casefold()
    if ok:
        return True, "Correct."
    for wrong in ex.wrong:
        if wrong.answer is not None and \
                expand(wrong.answer, params).strip().casefold() == given.casefold():
            return False, expand(wrong.feedback, params)
    return False, f"{given!r} is not the answer; read the step again or take a hint."


def grade(lab: Lab, ex: Exercise, *, client, sandbox_id: str | None, params: dict,
          answer: str | None = None) -> Result:
    """Run one exercise's check (or quiz) and say what the learner should know."""
    started = time.monotonic()
    hidden = lab.hidden_values(params)

    def done(passed: bool, feedback: str, points: float | None = None, *,
             counted: bool = True) -> Result:
        pts = ex.points if passed and points is None else (points or 0)
        # A check may echo what it compared with; a hidden value must not reach the learner.
        feedback, redacted = redact(feedback, hidden)
        return Result(passed, feedback, max(0, min(pts, ex.points)), ex.points,
                      int((time.monotonic() - started) * 1000), counted, redacted)

    if ex.quiz is not None and not ex.check:
        if not (answer or "").strip():
            return done(False, "Type an answer first.", counted=False)
        return done(*_quiz_feedback(ex, answer or "", params))
    fn = lab.check_function(ex)
    if fn is None:
        return done(False, "This exercise cannot be checked: the lab is broken (tell your "
                           "instructor).", counted=False)
    if sandbox_id is None:
        return done(False, "Your sandbox is not running: open the lab's terminal first.",
                    counted=False)
    if ex.quiz is not None and not (answer or "").strip():
        return done(False, "Type an answer first.", counted=False)
    view = SandboxView(client, sandbox_id, timeout=ex.timeout)
    args = (view, dict(params)) + ((answer.strip(),) if ex.quiz is not None else ())
    outcome: dict = {}

    def call() -> None:
        try:
            outcome["message"] = fn(*args)
        except BaseException as e:  # reported below, in the caller's thread
            outcome["error"] = e

    worker = threading.Thread(target=call, name=f"check-{lab.id}-{ex.id}", daemon=True)
    worker.start()
    worker.join(ex.timeout + 0.5)
    if worker.is_alive() or isinstance(outcome.get("error"), CheckTimeout):
        return done(False, f"The check did not finish within {ex.timeout:g} s and was "
                           "stopped. Is the sandbox very busy? Try again in a moment.",
                    counted=False)
    err = outcome.get("error")
    if isinstance(err, Fail):
        return done(False, err.message, err.points)
    if isinstance(err, SandboxError):
        return done(False, f"The sandbox could not be checked: {err.message}", counted=False)
    if err is not None:
        log.error("check %s/%s raised", lab.id, ex.id, exc_info=err)
        return done(False, f"The check itself failed ({type(err).__name__}); this is a bug "
                           "in the lab, not your answer. Tell your instructor.", counted=False)
    message = outcome.get("message")
    return done(True, str(message) if message else "Passed.")
