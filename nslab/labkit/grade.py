"""Grading one exercise: its check run against a learner's sandbox with a deadline (or its
quiz answer compared), every outcome (pass, Fail, a bug in the check, a timeout, the
daemon being away) turned into a `Result` a learner can read."""

from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass

from sandbox.errors import SandboxError

from .check import CheckTimeout, Fail, SandboxView
from .model import Exercise, Lab
from .params import expand

log = logging.getLogger("nslab.grader")


@dataclass
class Result:
    passed: bool
    feedback: str
    points: int
    max_points: int
    duration_ms: int = 0

    def as_json(self) -> dict:
        return {"passed": self.passed, "feedback": self.feedback, "points": self.points,
                "max_points": self.max_points}


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
        if wrong.answer is not None and wrong.answer.strip().casefold() == given.casefold():
            return False, wrong.feedback
    return False, f"{given!r} is not the answer; read the step again or take a hint."


def grade(lab: Lab, ex: Exercise, *, client, sandbox_id: str | None, params: dict,
          answer: str | None = None) -> Result:
    """Run one exercise's check (or quiz) and say what the learner should know."""
    started = time.monotonic()

    def done(passed: bool, feedback: str, points: int | None = None) -> Result:
        pts = ex.points if passed and points is None else (points or 0)
        return Result(passed, feedback, min(pts, ex.points), ex.points,
                      int((time.monotonic() - started) * 1000))

    if ex.quiz is not None and not ex.check:
        return done(*_quiz_feedback(ex, answer or "", params))
    fn = lab.check_function(ex)
    if fn is None:
        return done(False, "This exercise cannot be checked: the lab is broken (tell your "
                           "instructor).")
    if sandbox_id is None:
        return done(False, "Your sandbox is not running: open the lab's terminal first.")
    if ex.quiz is not None and not (answer or "").strip():
        return done(False, "Type an answer first.")
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
                           "stopped. Is the sandbox very busy? Try again in a moment.")
    err = outcome.get("error")
    if isinstance(err, Fail):
        return done(False, err.message, err.points)
    if isinstance(err, SandboxError):
        return done(False, f"The sandbox could not be checked: {err.message}")
    if err is not None:
        log.error("check %s/%s raised", lab.id, ex.id, exc_info=err)
        return done(False, f"The check itself failed ({type(err).__name__}); this is a bug "
                           "in the lab, not your answer. Tell your instructor.")
    message = outcome.get("message")
    return done(True, str(message) if message else "Passed.")
