"""Take-over: a teacher types in a learner's terminal, only with the learner's consent.

A teacher asks (`asked`); the learner's pages show the question; the learner allows
(`active`) or denies (`ended`). While a take-over is active, `may_use(teacher, sandbox,
"write")` is true for that teacher on that learner's sandboxes of that course, and for
nobody else (`Takeovers.allows`, which `webapp.sandboxes.service.may_use` consults through
`app.extensions[GRANTS]`). Either side ends it; so does the learner or the teacher signing
out; a request left unanswered ends after `ttl` seconds (CLASSROOM_TAKEOVER_TTL, 60). The
moment one ends, the teacher's writable terminals on those sandboxes are cut
(`TerminalNamespace.cut_writers`) — the caller of `end` does that, with the sandbox ids.

One take-over per learner and course at a time. Everything is in memory on the app: the
web app is one process, and a take-over does not outlive it (a restart ends them all,
which is the safe way round).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

ASKED, ACTIVE, ENDED = "asked", "active", "ended"
TAKEOVERS = "nslab.takeovers"   # app.extensions[TAKEOVERS]: the app's Takeovers
TTL = 60.0  # seconds a request waits for the learner's answer


class TakeoverError(Exception):
    """A take-over step that does not apply now; `reason` for the caller to branch on."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass
class Takeover:
    course_id: int
    learner_id: int
    teacher_id: int
    teacher: str            # the teacher's username, what the learner is shown
    state: str = ASKED
    asked_at: float = field(default=0.0)

    def as_json(self) -> dict:
        return {"user": self.learner_id, "state": self.state, "by": self.teacher,
                "teacher_id": self.teacher_id}


class Takeovers:
    """The app's take-overs, by (course id, learner id); every method is safe from any
    thread. `clock` is monotonic seconds (a test passes its own)."""

    def __init__(self, ttl: float = TTL, clock: Callable[[], float] = time.monotonic):
        self.ttl = ttl
        self.clock = clock
        self._lock = threading.Lock()
        self._by_learner: dict[tuple[int, int], Takeover] = {}

    def _current(self, course_id: int, learner_id: int) -> Takeover | None:
        """The live take-over of this learner (lock held); an unanswered one past its
        time is dropped here, so nothing depends on the expiry timer having run."""
        t = self._by_learner.get((course_id, learner_id))
        if t is not None and t.state == ASKED and self.clock() - t.asked_at >= self.ttl:
            del self._by_learner[(course_id, learner_id)]
            t.state = ENDED
            return None
        return t

    def ask(self, course_id: int, learner_id: int, teacher_id: int, teacher: str) -> Takeover:
        with self._lock:
            if self._current(course_id, learner_id) is not None:
                raise TakeoverError("conflict", "a take-over of this learner is already "
                                                "asked or under way; end it first")
            t = Takeover(course_id, learner_id, teacher_id, teacher, ASKED, self.clock())
            self._by_learner[(course_id, learner_id)] = t
            return t

    def answer(self, course_id: int, learner_id: int, allow: bool) -> Takeover:
        with self._lock:
            t = self._current(course_id, learner_id)
            if t is None or t.state != ASKED:
                raise TakeoverError("conflict", "no take-over is waiting for your answer")
            if allow:
                t.state = ACTIVE
            else:
                t.state = ENDED
                del self._by_learner[(course_id, learner_id)]
            return t

    def end(self, course_id: int, learner_id: int) -> Takeover:
        with self._lock:
            t = self._current(course_id, learner_id)
            if t is None:
                raise TakeoverError("conflict", "there is no take-over of this learner")
            t.state = ENDED
            del self._by_learner[(course_id, learner_id)]
            return t

    def expire(self, t: Takeover) -> bool:
        """End `t` if it is still the same unanswered request and its time is up (the
        expiry timer calls this); whether it ended it."""
        with self._lock:
            key = (t.course_id, t.learner_id)
            if self._by_learner.get(key) is not t or t.state != ASKED:
                return False
            if self.clock() - t.asked_at < self.ttl:
                return False
            del self._by_learner[key]
            t.state = ENDED
            return True

    def expire_due(self) -> list[Takeover]:
        """End every unanswered request whose time is up; those it ended."""
        with self._lock:
            due = [t for t in self._by_learner.values()
                   if t.state == ASKED and self.clock() - t.asked_at >= self.ttl]
            for t in due:
                t.state = ENDED
                del self._by_learner[(t.course_id, t.learner_id)]
            return due

    def end_for_user(self, user_id: int) -> list[Takeover]:
        """End every take-over this user is either side of (they signed out)."""
        with self._lock:
            gone = [t for t in self._by_learner.values()
                    if user_id in (t.learner_id, t.teacher_id)]
            for t in gone:
                t.state = ENDED
                del self._by_learner[(t.course_id, t.learner_id)]
            return gone

    def end_for_teacher(self, teacher_id: int, course_id: int) -> list[Takeover]:
        """End every take-over this teacher asked for or holds in the course (they no
        longer teach it)."""
        with self._lock:
            gone = [t for t in self._by_learner.values()
                    if t.teacher_id == teacher_id and t.course_id == course_id]
            for t in gone:
                t.state = ENDED
                del self._by_learner[(t.course_id, t.learner_id)]
            return gone

    def current(self, course_id: int, learner_id: int) -> Takeover | None:
        with self._lock:
            return self._current(course_id, learner_id)

    def allows(self, teacher_id: int, learner_id: int, course_id: int) -> bool:
        """Whether `teacher_id` may type in `learner_id`'s sandboxes of the course now."""
        with self._lock:
            t = self._current(course_id, learner_id)
            return t is not None and t.state == ACTIVE and t.teacher_id == teacher_id


def state_for(app, course_id: int, learner_id: int) -> dict | None:
    """The learner's take-over as their page shows it (`hello`): {state, by} or None."""
    takeovers = app.extensions.get(TAKEOVERS)
    t = takeovers.current(course_id, learner_id) if takeovers is not None else None
    return None if t is None else {"state": t.state, "by": t.teacher}
