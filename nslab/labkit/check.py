"""The author's API for checks (docs/authoring.md): what a check may look at and do.

A check gets a `SandboxView`: the kernel's view of the sandbox as sandboxd reads it from
the host (processes, namespaces, the cgroup tree with limits and usage, sockets, files
resolved inside the sandbox's root) plus a way to run a command inside as the grader.
Nothing a learner writes inside can change what the host reads from /proc and the cgroup
filesystems, which is why checks should grade those facts. The facts are the TypedDicts
of `sandbox.protocol`, read by key: a key the protocol guarantees is never defaulted.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sandbox.errors import NotFound
from sandbox.protocol import (CgroupNode, InspectFacts, InterfaceFacts, NetNamespaceFacts,
                              ProcessFacts, Reason, SocketFacts)


class Fail(Exception):
    """Raised by a check: the task is not done. The message is shown to the learner."""

    def __init__(self, message: str, points: int = 0):
        super().__init__(message)
        self.message = message
        self.points = points


class CheckTimeout(Exception):
    """The check's deadline passed; raised by the view, reported by `grade`."""


@dataclass
class RunResult:
    exit_code: int | None
    stdout: str
    stderr: str
    timed_out: bool


class Process:
    """One process of the sandbox, as the host sees it."""

    def __init__(self, info: ProcessFacts, version: int):
        self.info = info
        self._version = version
        self.pid: int | None = info["pid"]
        self.host_pid: int = info["host_pid"]
        self.ppid: int = info["ppid"]
        self.comm: str = info["comm"]
        self.cmdline: list[str] = info["cmdline"]
        self.uid: int | None = info["uid"]
        self.state: str = info["state"]
        # Only the namespaces whose link could be read: a type may be missing.
        self.namespaces: dict[str, int] = info["namespaces"]
        self.cpu_ns: int | None = info["cpu_ns"]
        self.cpus_allowed: str | None = info["cpus_allowed"]
        self.nspids: list[int] = info["nspids"]

    def cgroup_path(self, controller: str = "cpu") -> str | None:
        """The process's cgroup for `controller`, relative to the sandbox's; None when it
        is in no hierarchy of that controller. On cgroup v2 there is one unified path."""
        paths = self.info["cgroups"]
        if self._version == 2:
            return paths.get("", self.info["cgroup"])
        return paths.get(controller)

    @property
    def name(self) -> str:
        return " ".join(self.cmdline)[:60] or self.comm

    def __repr__(self) -> str:
        return f"<Process {self.pid} {self.comm}>"


class Cgroup:
    """One cgroup of the sandbox's tree; `path` as seen inside ("/" is the sandbox's own)."""

    def __init__(self, node: CgroupNode):
        self.path: str = node["path"]
        # Open-ended: a limit or usage the host's cgroup version lacks is not a key.
        self.limits: dict = node["limits"]
        self.usage: dict = node["usage"]
        self.procs: list[int] = node["procs"]

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
        self._facts: InspectFacts | None = None

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
    def facts(self) -> InspectFacts:
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
        return self.facts["hostname"]

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
    def sockets(self) -> list[SocketFacts]:
        return self.facts["sockets"]

    @property
    def addresses(self) -> list[InterfaceFacts]:
        return self.facts["addresses"]

    @property
    def net_namespaces(self) -> list[NetNamespaceFacts]:
        """Each network namespace a process of the sandbox is in: `inode`, `host_pid`,
        `addresses` (interfaces as in `addresses`), read from the host."""
        return self.facts["net_namespaces"]

    def hostname_of(self, proc: Process) -> str | None:
        """The hostname of the process's UTS namespace, read from the host."""
        inode = proc.namespaces.get("uts")
        return next((u["hostname"] for u in self.facts["uts_namespaces"]
                     if u["inode"] == inode), None)

    def measure_cpu(self, procs: list[Process], seconds: float = 1.0) -> float:
        """CPUs used by `procs` together over `seconds`, from their scheduler time as the
        host sees it (processes that exit meanwhile count what they used until then)."""
        wanted = {p.host_pid for p in procs}

        def sample() -> tuple[float, int]:
            facts = self.client.inspect(self.id)
            total = sum(p["cpu_ns"] or 0 for p in facts["processes"]
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
            if e.reason == Reason.NO_SUCH_FILE:
                raise FileNotFoundError(path) from None
            raise

    def run(self, cmd: str | list[str], timeout: float = 5.0) -> RunResult:
        argv = ["/bin/sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)
        out = self.client.run(self.id, argv, timeout=self._budget(timeout))
        return RunResult(out.get("exit_code"), out.get("stdout", ""), out.get("stderr", ""),
                         bool(out.get("timed_out")))
