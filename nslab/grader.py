"""Running a lab's checks against a learner's sandbox, from the host side.

A check (docs/authoring.md) gets a `SandboxView`: the kernel's view of the sandbox as
sandboxd reads it from the host (processes, namespaces, the cgroup tree with limits and
usage, sockets, files resolved inside the sandbox's root) plus a way to run a command
inside as the grader. Nothing a learner writes inside can change what the host reads from
/proc and the cgroup filesystems, which is why checks should grade those facts.

`grade()` runs one exercise's check with a deadline and turns every outcome (pass, Fail,
a bug in the check, a timeout, the daemon being away) into a `Result` a learner can read.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass

from sandbox.errors import NotFound, SandboxError

from .labformat import Exercise, Lab, expand

log = logging.getLogger("nslab.grader")


class Fail(Exception):
    """Raised by a check: the task is not done. The message is shown to the learner."""

    def __init__(self, message: str, points: int = 0):
        super().__init__(message)
        self.message = message
        self.points = points


class CheckTimeout(Exception):
    pass


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


@dataclass
class RunResult:
    exit_code: int | None
    stdout: str
    stderr: str
    timed_out: bool


class Process:
    """One process of the sandbox, as the host sees it."""

    def __init__(self, info: dict, version: int):
        self.info = info
        self._version = version
        self.pid: int | None = info.get("pid")
        self.host_pid: int = info["host_pid"]
        self.ppid: int = info.get("ppid", 0)
        self.comm: str = info.get("comm", "")
        self.cmdline: list[str] = info.get("cmdline", [])
        self.uid: int | None = info.get("uid")
        self.state: str = info.get("state", "?")
        self.namespaces: dict[str, int] = info.get("namespaces", {})
        self.cpu_ns: int | None = info.get("cpu_ns")
        self.cpus_allowed: str | None = info.get("cpus_allowed")
        self.nspids: list[int] = info.get("nspids", [])

    def cgroup_path(self, controller: str = "cpu") -> str | None:
        paths = self.info.get("cgroups") or {}
        if self._version == 2:
            return paths.get("", self.info.get("cgroup"))
        return paths.get(controller)

    @property
    def name(self) -> str:
        return " ".join(self.cmdline)[:60] or self.comm

    def __repr__(self) -> str:
        return f"<Process {self.pid} {self.comm}>"


class Cgroup:
    """One cgroup of the sandbox's tree; `path` as seen inside ("/" is the sandbox's own)."""

    def __init__(self, node: dict):
        self.path: str = node["path"]
        self.limits: dict = node.get("limits", {})
        self.usage: dict = node.get("usage", {})
        self.procs: list[int] = node.get("procs", [])

    @property
    def cpus(self) -> float | None:
        return self.limits.get("cpus")

    @property
    def frozen(self) -> bool:
        return bool(self.usage.get("frozen"))

    def describe_cpu(self) -> str:
        q, p = self.limits.get("cpu_quota_us"), self.limits.get("cpu_period_us")
        if q is None or q < 0:
            return f"cgroup {self.path} (no CPU quota)"
        return f"cgroup {self.path} with quota {q}/{p} = {q / p:.2f} CPU"

    def __repr__(self) -> str:
        return f"<Cgroup {self.path}>"


def parents(path: str) -> list[str]:
    """'/a/b' -> ['/a/b', '/a', '/']."""
    out = [path]
    while path not in ("/", ""):
        path = path.rsplit("/", 1)[0] or "/"
        out.append(path)
    return out


class SandboxView:
    """What a check may look at and do (see docs/authoring.md for the table)."""

    def __init__(self, client, sandbox_id: str, *, timeout: float = 10.0):
        self.client = client
        self.id = sandbox_id
        self.deadline = time.monotonic() + timeout
        self._facts: dict | None = None

    # -- time
    def deadline_left(self) -> float:
        return self.deadline - time.monotonic()

    def _budget(self, wanted: float) -> float:
        left = self.deadline_left()
        if left <= 0.05:
            raise CheckTimeout()
        return min(wanted, left)

    # -- host-side facts
    @property
    def facts(self) -> dict:
        if self._facts is None:
            self._budget(1)
            self._facts = self.client.inspect(self.id)
        return self._facts

    def refresh(self) -> SandboxView:
        self._facts = None
        return self

    @property
    def cgroup_version(self) -> int:
        return int(self.facts["cgroup_version"])

    @property
    def hostname(self) -> str:
        return self.facts.get("hostname", "")

    def processes(self, comm: str | None = None, argv0: str | None = None,
                  contains: str | None = None) -> list[Process]:
        out = []
        for info in self.facts["processes"]:
            p = Process(info, self.cgroup_version)
            if comm is not None and p.comm != comm:
                continue
            if argv0 is not None and (not p.cmdline or p.cmdline[0].rsplit("/", 1)[-1] != argv0):
                continue
            if contains is not None and contains not in " ".join(p.cmdline):
                continue
            out.append(p)
        return out

    def process(self, pid: int) -> Process | None:
        return next((p for p in self.processes() if p.pid == pid), None)

    @property
    def init(self) -> Process:
        found = self.process(1)
        if found is None:
            raise Fail("The sandbox has no PID 1 any more; reset it from the lab page.")
        return found

    @property
    def cgroups(self) -> list[Cgroup]:
        return [Cgroup(n) for n in self.facts["cgroups"]]

    def cgroup(self, path: str) -> Cgroup | None:
        path = "/" + path.strip("/") if path.strip("/") else "/"
        return next((c for c in self.cgroups if c.path == path), None)

    def cgroup_of(self, proc: Process, controller: str = "cpu") -> Cgroup | None:
        path = proc.cgroup_path(controller)
        return self.cgroup(path) if path else None

    def limit_of(self, proc: Process, key: str, controller: str) -> tuple[float | None, Cgroup | None]:
        """The tightest value of limit `key` from the process's cgroup up to the sandbox's
        (None: unlimited), and the cgroup that sets it."""
        path = proc.cgroup_path(controller)
        best, where = None, None
        for p in parents(path or "/"):
            node = self.cgroup(p)
            value = node.limits.get(key) if node else None
            if value is not None and value >= 0 and (best is None or value < best):
                best, where = value, node
        return best, where

    def cpu_limit_of(self, proc: Process) -> tuple[float | None, Cgroup | None]:
        return self.limit_of(proc, "cpus", "cpu")

    @property
    def sockets(self) -> list[dict]:
        return self.facts.get("sockets", [])

    @property
    def addresses(self) -> list[dict]:
        return self.facts.get("addresses", [])

    @property
    def net_namespaces(self) -> list[dict]:
        """Each network namespace a process of the sandbox is in: `inode`, `host_pid`,
        `addresses` (interfaces as in `addresses`), read from the host."""
        return self.facts.get("net_namespaces", [])

    def hostname_of(self, proc: Process) -> str | None:
        """The hostname of the process's UTS namespace, read from the host."""
        inode = proc.namespaces.get("uts")
        return next((u["hostname"] for u in self.facts.get("uts_namespaces", [])
                     if u["inode"] == inode), None)

    def measure_cpu(self, procs: list[Process], seconds: float = 1.0) -> float:
        """CPUs used by `procs` together over `seconds`, from their scheduler time as the
        host sees it (processes that exit meanwhile count what they used until then)."""
        wanted = {p.host_pid for p in procs}

        def sample() -> tuple[float, int]:
            facts = self.client.inspect(self.id)
            total = sum(p.get("cpu_ns") or 0 for p in facts["processes"]
                        if p["host_pid"] in wanted)
            return time.monotonic(), total

        window = self._budget(seconds)
        t0, c0 = sample()
        time.sleep(max(0.0, window - 0.05))
        t1, c1 = sample()
        self._facts = None
        return max(0, c1 - c0) / 1e9 / max(t1 - t0, 1e-3)

    # -- inside the sandbox
    def read_file(self, path: str, pid: int | None = None, limit: int = 1 << 20) -> bytes:
        """Raises FileNotFoundError if there is no such file inside."""
        self._budget(1)
        try:
            return self.client.read_file(self.id, path, pid=pid, limit=limit)
        except NotFound as e:
            if e.message.startswith("no such file"):
                raise FileNotFoundError(path) from None
            raise

    def run(self, cmd: str | list[str], timeout: float = 5.0) -> RunResult:
        argv = ["/bin/sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)
        out = self.client.run(self.id, argv, timeout=self._budget(timeout))
        return RunResult(out.get("exit_code"), out.get("stdout", ""), out.get("stderr", ""),
                         bool(out.get("timed_out")))


# ----------------------------------------------------------------- grading

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
