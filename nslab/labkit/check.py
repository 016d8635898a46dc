"""The author's API for checks (docs/authoring.md): what a check may look at and do.

A check gets a `SandboxView`: the kernel's view of the sandbox as sandboxd reads it from
the host (processes, namespaces, the cgroup tree with limits and usage, sockets, the
containers inside with their limits, files resolved inside the sandbox's root), an HTTP
GET to the sandbox's address made from the host side, and a way to run a command inside
as the grader.
Nothing a learner writes inside can change what the host reads from /proc and the cgroup
filesystems, which is why checks should grade those facts. The facts are the TypedDicts
of `sandbox.protocol`, read by key: a key the protocol guarantees is never defaulted.
"""

from __future__ import annotations

import base64
import math
import time
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field

from sandbox.errors import Conflict, NotFound
from sandbox.protocol import (CgroupNode, ContainerFacts, HttpFacts, InspectFacts,
                              InterfaceFacts, NetNamespaceFacts, ProcessFacts, Reason,
                              RegistryImage, SocketFacts, SyscallFacts)

from .images import Image, StoreUnreadable, read_images


class Fail(Exception):
    """Raised by a check: the task is not done. The message is shown to the learner."""

    def __init__(self, message: str, points: int = 0):
        super().__init__(message)
        self.message = message
        self.points = points


class CheckTimeout(Exception):
    """The check's deadline passed; raised by the view, reported by `grade`."""


@dataclass(frozen=True)
class Syscall:
    """One system call of a traced run (`SandboxView.run(..., trace=[...])`), as the host's
    strace saw it: `pid` in the sandbox (None: not known), `name` ("unshare"), `args`
    (strace's text, "CLONE_NEWUTS"), `result` (-1: failed, with `error` "EPERM"; None:
    unknown), `flags` (the constants in `args`), `host_pid`."""

    pid: int | None
    name: str
    args: str
    result: int | None
    error: str | None = None
    flags: tuple[str, ...] = ()
    host_pid: int | None = None

    @classmethod
    def from_facts(cls, facts: SyscallFacts) -> Syscall:
        return cls(pid=facts["pid"], name=facts["name"], args=facts["args"],
                   result=facts["result"], error=facts["error"], flags=tuple(facts["flags"]),
                   host_pid=facts["host_pid"])

    @property
    def ok(self) -> bool:
        return self.result is not None and self.result >= 0


@dataclass
class RunResult:
    """What `SandboxView.run` got. Its output comes from binaries inside the sandbox, which
    the learner may have replaced: never grade on it. `syscalls` (a traced run only) is
    the host tracer's, and may be graded on."""

    exit_code: int | None
    stdout: str
    stderr: str
    timed_out: bool
    syscalls: list[Syscall] = field(default_factory=list)
    trace_truncated: bool = False

    def calls(self, name: str, flag: str | None = None, *, ok: bool | None = None) -> list[Syscall]:
        """The traced calls named `name`, with `flag` among their flags if given, and
        succeeded (ok=True) or failed (ok=False) if asked."""
        return [c for c in self.syscalls if c.name == name
                and (flag is None or flag in c.flags) and (ok is None or c.ok == ok)]


@dataclass(frozen=True)
class HttpResponse:
    """What `SandboxView.http_get` got from a server in the sandbox: `status` (200),
    `headers` (lower-case names; the last value of a repeated one), `body` (bytes, at most
    the limit asked for), `truncated`."""

    status: int
    reason: str
    headers: dict[str, str]
    body: bytes
    truncated: bool

    @classmethod
    def from_facts(cls, facts: HttpFacts) -> HttpResponse:
        return cls(facts["status"], facts["reason"],
                   {k.lower(): v for k, v in facts["headers"]},
                   base64.b64decode(facts["body_b64"]), facts["truncated"])

    @property
    def text(self) -> str:
        return self.body.decode(errors="replace")


def _image_matches(label: str | None, wanted: str) -> bool:
    if label is None:
        return False
    if label == wanted:
        return True
    # "docker.io/library/nginx:latest" is what "nginx" and "nginx:latest" name.
    repo, _, tag = label.rpartition(":") if ":" in label.rsplit("/", 1)[-1] else (label, "", "")
    short = repo.rsplit("/", 1)[-1]
    return wanted in (repo, short, f"{short}:{tag}") if tag else wanted in (repo, short)


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


@dataclass(frozen=True)
class ContainerProcess:
    """A container's main process: `pid` in the container (1), `sandbox_pid` in the
    sandbox, `host_pid`, `comm`, `cmdline`, and its parent (`parent_comm`: "conmon" for
    podman's containers)."""

    pid: int
    sandbox_pid: int
    host_pid: int
    comm: str
    cmdline: tuple[str, ...]
    parent_host_pid: int
    parent_comm: str | None


class Container:
    """A container inside the sandbox as the host finds it in the kernel: a pid namespace
    below the sandbox's, its main process (PID 1 there), its namespaces, its cgroup and
    every limit Docker's flags set there (`limits`: see `CONTAINER_LIMIT_KEYS` in
    docs/authoring.md), its listening sockets and OOM kills. `name`, `image` and `id`
    come from the engine's store, which the learner can write: use them to find a
    container, never as proof that it was made right."""

    def __init__(self, facts: ContainerFacts):
        self.info = facts
        m = facts["main"]
        self.main = ContainerProcess(m["pid"], m["sandbox_pid"], m["host_pid"], m["comm"],
                                     tuple(m["cmdline"]), m["parent_host_pid"],
                                     m["parent_comm"])
        self.pid_namespace: int = facts["pid_namespace"]
        self.level: int = facts["level"]
        self.processes: list[int] = facts["processes"]  # host pids
        self.namespaces: dict[str, int] = facts["namespaces"]
        self.new_namespaces: frozenset[str] = frozenset(facts["new_namespaces"])
        self.cgroup: str | None = facts["cgroup"]
        self.cgroups: dict[str, str] = facts["cgroups"]
        # Open-ended: a limit this host's cgroup version lacks is not a key.
        self.limits: dict = facts["limits"]
        self.oom_kills: int | None = facts["oom_kills"]
        self.sockets: list[SocketFacts] = facts["sockets"]
        self.id: str | None = facts["id"]
        self.name: str | None = facts["name"]
        self.image: str | None = facts["image"]

    @property
    def cpus(self) -> float | None:
        return self.limits.get("cpus")

    def listens(self, port: int, proto: str = "tcp") -> bool:
        """Whether a socket in the container's network namespace listens on `port`."""
        return any(s["port"] == port and s["proto"] == proto for s in self.sockets)

    def __repr__(self) -> str:
        return f"<Container {self.name or self.id or self.pid_namespace} {self.main.comm}>"


def parents(path: str) -> list[str]:
    """'/a/b' -> ['/a/b', '/a', '/']."""
    out = [path]
    while path not in ("/", ""):
        path = path.rsplit("/", 1)[0] or "/"
        out.append(path)
    return out


# The store's index files grow by ~2 KiB per image; a learner's store that needs more than
# this is not one a check should parse.
MAX_STORE_BYTES = 4 << 20


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
    def containers(self) -> list[Container]:
        """The containers inside the sandbox, found from the kernel (`Container`)."""
        return [Container(c) for c in self.facts["containers"]]

    def container(self, name: str | None = None, image: str | None = None,
                  port: int | None = None) -> Container | None:
        """The first container with this name label, image label (with or without its
        registry and tag: "nginx" finds "docker.io/library/nginx:latest") and listening
        port, each where given; None if there is none."""
        for c in self.containers:
            if name is not None and c.name != name:
                continue
            if image is not None and not _image_matches(c.image, image):
                continue
            if port is not None and not c.listens(port):
                continue
            return c
        return None

    def images(self) -> list[Image]:
        """The images in the sandbox's container store (`nslab.labkit.images.Image`), read
        from the host; [] when nothing was pulled or built. The learner can write the store:
        compare what it says with a truth the host holds (the registry's digest, a running
        container), and never take its word alone."""
        try:
            return read_images(lambda path: self.read_file(path, limit=MAX_STORE_BYTES))
        except StoreUnreadable as e:
            raise Fail(f"Your container store cannot be read: {e}. Remove the images with "
                       "`docker rmi -af` (or reset the sandbox) and pull again.") from None

    def registry(self) -> list[RegistryImage]:
        """What the daemon's read-only registry serves, read by sandboxd from the registry's
        storage on the host (`sandbox.protocol.RegistryImage`: `reference` such as
        "docker.io/library/nginx:latest", `digest`, `config_digest`, `diff_ids`): the truth a
        learner's pulled image is compared with."""
        self._budget(1)
        return self.client.registry()

    def image(self, name: str) -> Image | None:
        """The image Docker would run for `name` ("nginx" is nginx:latest, "testnginx:3"
        the local build tagged 3), or None."""
        return next((i for i in self.images() if i.named(name)), None)

    def processes_of(self, container: Container) -> list[Process]:
        """The sandbox's processes that are in `container`'s pid namespace."""
        pids = set(container.processes)
        return [p for p in self.processes() if p.host_pid in pids]

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

    def interfaces(self, netns: int | None = None) -> list[tuple[int, InterfaceFacts]]:
        """(netns inode, interface) of every interface in the sandbox's network
        namespaces, or in the one `netns`. A veth's `peer` is {"netns", "ifindex"}: its
        other end, read from the host (the kernel's IFLA_LINK, not a name)."""
        return [(n["inode"], ifc) for n in self.net_namespaces
                if netns is None or n["inode"] == netns for ifc in n["addresses"]]

    def peer_of(self, netns: int, ifc: InterfaceFacts) -> tuple[int, InterfaceFacts] | None:
        """The other end of veth `ifc` (in namespace `netns`) as (its netns inode, its
        interface), when that end is in one of the sandbox's namespaces; None for a
        non-veth or a peer elsewhere (the host end of eth0)."""
        peer = ifc["peer"]
        if peer is None or peer["netns"] is None:
            return None
        return next(((ns, other) for ns, other in self.interfaces(peer["netns"])
                     if other["index"] == peer["ifindex"]), None)

    def hostname_of(self, proc: Process) -> str | None:
        """The hostname of the process's UTS namespace, read from the host."""
        inode = proc.namespaces.get("uts")
        return next((u["hostname"] for u in self.facts["uts_namespaces"]
                     if u["inode"] == inode), None)

    def measure_cpu(self, procs: list[Process], seconds: float = 1.0) -> float:
        """CPUs used by `procs` together over about `seconds`, from their scheduler time as
        the host sees it (processes that exit meanwhile count what they used until then)."""
        return self.cpu_meter({"": procs}).run(seconds, reserve=0.1).cpus("")

    def cpu_meter(self, groups: dict[Hashable, list[Process]],
                  cgroups: Iterable[str] = ()) -> CpuMeter:
        """A `CpuMeter` whose window starts now: the CPU time of each group of processes
        (`{key: [Process]}`), how often they were runnable, and the CFS throttling of the
        cgroups at `cgroups` (paths as seen inside)."""
        return CpuMeter(self, groups, cgroups)

    def http_get(self, port: int, path: str = "/", *, timeout: float = 3.0,
                 limit: int = 1 << 20) -> HttpResponse | None:
        """GET `path` from TCP `port` at the sandbox's address, from the host side (through
        sandboxd, which reaches the sandbox's bridge wherever the grader runs): what a
        browser on the host would get from a published port (`docker run -p 8080:80`).
        At most `limit` bytes of body (`truncated` says if there was more) within
        `timeout` seconds; no redirect is followed. None when nothing answered HTTP in
        time (refused, reset, silent, not HTTP): the learner's server is not up."""
        try:
            facts = self.client.http_get(self.id, port, path, timeout=self._budget(timeout),
                                         limit=limit)
        except Conflict as e:
            if e.reason == Reason.NO_ANSWER:
                return None
            raise
        return HttpResponse.from_facts(facts)

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

    def run(self, cmd: str | list[str], timeout: float = 5.0,
            trace: list[str] | None = None) -> RunResult:
        """Run `cmd` inside as root, resolved through the sandbox's PATH (so whatever the
        learner put there runs). With `trace` (names from
        `sandbox.protocol.TRACEABLE_SYSCALLS`), it runs under the host's strace and the
        result's `syscalls` lists those calls of it and of every process it started."""
        argv = ["/bin/sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)
        out = self.client.run(self.id, argv, timeout=self._budget(timeout), trace=trace)
        return RunResult(out["exit_code"], out["stdout"], out["stderr"], out["timed_out"],
                         [Syscall.from_facts(c) for c in out.get("syscalls") or []],
                         bool(out.get("trace_truncated")))


# ----------------------------------------------------------------- measuring CPU

# The /proc/PID/stat state of a task that is running or waiting for a CPU. A task whose
# cgroup is throttled keeps this state too: it waits for the next period, not for an event.
RUNNABLE = "R"


@dataclass(frozen=True)
class Throttling:
    """What the CFS bandwidth counters of one cgroup (cpu.stat) say about a window."""

    periods: int      # periods in which the group had a task that wanted to run
    throttled: int    # periods in which it used up its quota and had to wait
    seconds: float    # time its run queues spent throttled, summed over CPUs

    @property
    def share(self) -> float:
        """Share of the active periods in which the quota ran out: near 1 for a group held
        at its quota, near 0 for one that never reached it."""
        return self.throttled / self.periods if self.periods else 0.0


@dataclass
class _Sample:
    at: float                               # midpoint of the inspect call
    cpu_ns: dict[int, int]                  # host pid -> scheduler time
    state: dict[int, str]                   # host pid -> /proc state letter
    usage: dict[str, dict]                  # cgroup path -> its usage counters


class CpuMeter:
    """CPU time of groups of processes over one window that can be extended, as the host
    sees it: each process's scheduler time and state, and each named cgroup's throttling
    counters, sampled from the sandbox's facts. A check measures for a second, and measures
    longer when the host is busy and a second says too little; the window always runs from
    the first sample to the latest one."""

    def __init__(self, view: SandboxView, groups: dict[Hashable, list[Process]],
                 cgroups: Iterable[str] = ()):
        self.view = view
        self.groups = {key: {p.host_pid for p in procs} for key, procs in groups.items()}
        self.paths = {"/" + p.strip("/") if p.strip("/") else "/" for p in cgroups}
        self._samples: list[_Sample] = []
        self._last_cpu: dict[int, int] = {}  # a process that exits keeps what it used
        self._took = 0.0                     # how long the latest inspect call took
        self.sample()

    def sample(self) -> None:
        """Read the facts once more (raises `CheckTimeout` past the check's deadline)."""
        self.view._budget(1)
        t0 = time.monotonic()
        facts = self.view.client.inspect(self.view.id)
        t1 = time.monotonic()
        self._took = t1 - t0
        # Whatever the check reads next is as fresh as the end of the window.
        self.view._facts = facts
        procs = facts["processes"]
        cpu = {p["host_pid"]: p["cpu_ns"] or 0 for p in procs}
        self._last_cpu.update(cpu)
        self._samples.append(_Sample(
            (t0 + t1) / 2, cpu, {p["host_pid"]: p["state"] for p in procs},
            {c["path"]: c["usage"] for c in facts["cgroups"] if c["path"] in self.paths}))

    def run(self, seconds: float, *, period_us: int | None = None, interval: float = 0.2,
            reserve: float = 1.0) -> CpuMeter:
        """Extend the window to about `seconds` from its start, sampling every `interval`
        (for the processes' states). It ends sooner where the check's deadline, less
        `reserve` for what the check does afterwards, comes first. With `period_us`, the
        window is a whole number of CFS periods: a throttled group runs its quota in every
        period, so such a window holds the same run time whatever its phase."""
        start = self._samples[0].at
        end = min(start + seconds, time.monotonic() + self.view.deadline_left() - reserve)
        if period_us:
            period = period_us / 1e6
            end = start + max(period, math.floor((end - start) / period) * period)
        while True:
            # The next sample's midpoint should fall on `end`: it starts half a call early.
            left = end - self._took / 2 - time.monotonic()
            if left <= interval:
                if left > 0 or len(self._samples) < 2:
                    time.sleep(max(0.0, left))
                    self.sample()
                return self
            time.sleep(interval)
            self.sample()

    # -- what the window says
    @property
    def seconds(self) -> float:
        return max(self._samples[-1].at - self._samples[0].at, 1e-3)

    @property
    def samples(self) -> int:
        return len(self._samples)

    def cpu_seconds(self, key: Hashable) -> float:
        first = self._samples[0].cpu_ns
        return sum(max(0, self._last_cpu[pid] - first[pid])
                   for pid in self.groups[key] if pid in first) / 1e9

    def cpus(self, key: Hashable) -> float:
        """CPUs the group used over the window (1.0: one CPU all the time)."""
        return self.cpu_seconds(key) / self.seconds

    def runnable(self, key: Hashable) -> float:
        """Share of the samples in which a process of the group was runnable (running, or
        waiting for a CPU or for its quota), among those in which one of them still lived."""
        pids = self.groups[key]
        alive = [s for s in self._samples if pids & s.state.keys()]
        if not alive:
            return 0.0
        return sum(any(s.state.get(pid) == RUNNABLE for pid in pids) for s in alive) / len(alive)

    def throttling(self, path: str) -> Throttling | None:
        """The cgroup's CFS throttling over the window; None where the host does not report
        it (no cpu.stat counters, or the cgroup came or went meanwhile)."""
        path = "/" + path.strip("/") if path.strip("/") else "/"
        a, b = self._samples[0].usage.get(path), self._samples[-1].usage.get(path)
        keys = ("cpu_nr_periods", "cpu_nr_throttled", "cpu_throttled_ns")
        if a is None or b is None or any(a.get(k) is None or b.get(k) is None for k in keys):
            return None
        return Throttling(max(0, b["cpu_nr_periods"] - a["cpu_nr_periods"]),
                          max(0, b["cpu_nr_throttled"] - a["cpu_nr_throttled"]),
                          max(0, b["cpu_throttled_ns"] - a["cpu_throttled_ns"]) / 1e9)
