"""The live classroom's sampler: one thread per course that at least one teacher's page
watches (joined `/classroom`), stopped when the last such page leaves (as `gauges.Gauges`
keeps one per sandbox).

Every USAGE_INTERVAL seconds (app config CLASSROOM_USAGE_INTERVAL) it reads sandboxd's
stats of each learner's sandbox of their current lab, one call at a time (so a course
never has more than one stats call in flight, however many teachers watch), and sends
`usage {time, sandboxes: {user id: {cpu, cpu_max, memory, memory_max, state}}}` to the
course's teachers: state running (with the numbers: cpu in CPUs from the usage counter's
rate, None on a sandbox's first sample; a *_max None without a limit), stopped (not
running, or gone when asked), unavailable (sandboxd could not say), none (no sandbox).
Reading stats is never activity: a sandbox watched by the teachers still idles out.

Every SNAPSHOT_INTERVAL seconds (CLASSROOM_SNAPSHOT_INTERVAL) it also sends a fresh
`snapshot`, so that times on a step, idleness and the "who needs help" order move on
without any check; each tick first asks the namespace to check that every watching
page's user still teaches the course (`recheck`): a co-instructor removed mid-class stops
receiving at the next tick. Which lab is a learner's current one comes from the latest
roster the sampler saw (its snapshots and each learner's row pushed since).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from flask import Flask
from sqlalchemy import select

from sandbox.client import Client
from sandbox.errors import SandboxError

from ..extensions import db
from ..gauges.sampler import STOPPED, cpu_rate, shown_limit
from ..models import Course, SandboxAssignment, SandboxState
from ..samplers import SharedSamplers, StoppableSampler
from . import roster

log = logging.getLogger("nslab.classroom")

USAGE_INTERVAL = 2.0       # seconds between two rounds of stats
SNAPSHOT_INTERVAL = 30.0   # seconds between two snapshots sent by the sampler

Emit = Callable[[int, str, dict], None]        # (course id, event, data) to its teachers
Recheck = Callable[[int], None]                # (course id): drop pages no longer allowed

_NOTHING = {"cpu": None, "cpu_max": None, "memory": None, "memory_max": None}


class CourseSampler(StoppableSampler):
    """Samples one course's sandboxes every `interval` seconds on its own thread until
    `stop`; `labs` (learner id -> current lab) says which sandbox is whose."""

    def __init__(self, app: Flask, course_id: int, daemon: Client, *, emit: Emit,
                 interval: float, snapshot_every: float, recheck: Recheck | None = None):
        super().__init__()
        self.app = app
        self.course_id = course_id
        self.daemon = daemon
        self.emit = emit
        self.interval = interval
        self.snapshot_every = snapshot_every
        self.recheck = recheck
        self.labs: dict[int, str | None] = {}
        self.counters: dict[str, tuple[float, int]] = {}
        self.next_snapshot = 0.0   # time.monotonic() of the next snapshot
        self.samples = 0
        self.last: dict | None = None

    def seed(self, snapshot: dict) -> None:
        """The learners and their current labs from a snapshot just made (a page's join
        sent it: the sampler's own comes one interval later)."""
        self.labs = {row["id"]: row["lab"] for row in snapshot["learners"]}
        self.next_snapshot = time.monotonic() + self.snapshot_every

    def _database(self) -> tuple[dict | None, dict[tuple[int, str], tuple]]:
        """The pages rechecked, the snapshot when one is due, and the course's
        assignments; in an app context of its own, closed before sandboxd is asked."""
        with self.app.app_context():
            if self.recheck is not None:
                self.recheck(self.course_id)
            snap = None
            if time.monotonic() >= self.next_snapshot:
                course = db.session.get(Course, self.course_id)
                if course is not None:
                    snap = roster.snapshot(course)
                    self.seed(snap)
            rows = db.session.execute(
                select(SandboxAssignment.user_id, SandboxAssignment.lab_id,
                       SandboxAssignment.sandbox_id, SandboxAssignment.state)
                .where(SandboxAssignment.course_id == self.course_id)).all()
        return snap, {(r.user_id, r.lab_id): r for r in rows}

    def _one(self, sandbox_id: str, seen: dict) -> dict:
        try:
            stats = self.daemon.stats(sandbox_id)
        except SandboxError as e:
            state = "stopped" if e.reason.value in STOPPED else "unavailable"
            return {**_NOTHING, "state": state}
        now = time.monotonic()
        used = stats.get("cpu_usage_ns")
        cpu = cpu_rate(self.counters.get(sandbox_id), now, used)
        if isinstance(used, int):
            seen[sandbox_id] = (now, used)
        return {"cpu": None if cpu is None else round(cpu, 3),
                "cpu_max": shown_limit(stats.get("cpus")),
                "memory": stats.get("memory_current"),
                "memory_max": shown_limit(stats.get("memory_limit")), "state": "running"}

    def sample(self) -> tuple[dict | None, dict]:
        """One round: (the snapshot if one was due, the `usage` event)."""
        snap, assignments = self._database()
        seen: dict[str, tuple[float, int]] = {}
        out: dict[int, dict] = {}
        for user_id, lab_id in list(self.labs.items()):
            if self._stop.is_set():
                break   # the last page left: no more calls to sandboxd
            a = assignments.get((user_id, lab_id)) if lab_id is not None else None
            if a is None or not a.sandbox_id:
                out[user_id] = {**_NOTHING, "state": "none"}
            elif a.state != SandboxState.RUNNING:
                out[user_id] = {**_NOTHING, "state": "stopped"}
            else:
                out[user_id] = self._one(a.sandbox_id, seen)
        # Sandboxes no longer sampled are forgotten: the counters stay as bounded as the class.
        self.counters = seen
        data = {"time": time.time(), "sandboxes": out}
        self.samples += 1
        self.last = data
        return snap, data

    def run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                snap, data = self.sample()
                if self._stop.is_set():
                    break   # the last page left while sandboxd answered
                if snap is not None:
                    self.emit(self.course_id, "snapshot", snap)
                self.emit(self.course_id, "usage", data)
            except Exception:  # noqa: BLE001 - one bad round must not end the sampler
                log.exception("live classroom of course %s: a round failed", self.course_id)
            # A round slower than the interval is followed at once, never overlapped.
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - started)))


class Usage(SharedSamplers):
    """The samplers of an app: one per course with at least one teacher's page; `watch`'s
    seed is the snapshot the page was just sent (a new sampler starts from it)."""

    def __init__(self, app: Flask, daemon: Client, *, emit: Emit,
                 interval: float = USAGE_INTERVAL, snapshot_every: float = SNAPSHOT_INTERVAL,
                 recheck: Recheck | None = None, start: Callable[..., object] | None = None):
        super().__init__(start)
        self.app = app
        self.daemon = daemon
        self.emit = emit
        self.interval = interval
        self.snapshot_every = snapshot_every
        self.recheck = recheck

    def _make(self, course_id: int, seed: dict | None = None) -> CourseSampler:
        sampler = CourseSampler(self.app, course_id, self.daemon, emit=self.emit,
                                interval=self.interval, snapshot_every=self.snapshot_every,
                                recheck=self.recheck)
        if seed is not None:
            sampler.seed(seed)
        return sampler

    def watched(self, course_id: int) -> bool:
        """Whether a teacher's page watches the course (else pushes to them are moot)."""
        return course_id in self.samplers

    def set_lab(self, course_id: int, user_id: int, lab_id: str | None) -> None:
        """A learner's row changed: sample their current lab's sandbox from now on."""
        sampler = self.samplers.get(course_id)
        if sampler is not None:
            sampler.labs[user_id] = lab_id
