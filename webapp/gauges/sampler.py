"""The samplers behind `/gauges`: one thread per watched sandbox, shared by its pages.

`summarize` turns sandboxd's answers (stats for the sandbox, inspect's cgroup tree for the
learner's child groups) into the `gauges` event; `Sampler` reads them once per interval;
`Gauges` keeps one sampler per sandbox while at least one page watches it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from sandbox.client import Client
from sandbox.errors import SandboxError
from sandbox.protocol import Reason

from ..samplers import SharedSamplers, StoppableSampler

log = logging.getLogger("nslab.gauges")

INTERVAL = 1.0      # seconds between samples
MAX_GROUPS = 16     # child cgroups shown per sandbox; the rest are counted in `hidden`
# Without children, the tree is read again only this often: inspect costs sandboxd more
# than stats (processes, sockets), and a sandbox without child groups is the common case.
TREE_EVERY = 5
# v1 writes "no limit" as the largest page-aligned int64: not a limit a gauge can show.
UNLIMITED = 1 << 60
# The sandbox is not there to read: its gauges say so and the sampler keeps going, so a
# sandbox started again is shown again without the page doing anything.
STOPPED = {Reason.NOT_RUNNING.value, Reason.NO_SUCH_SANDBOX.value, Reason.NOT_FOUND.value}

Emit = Callable[[str, str, dict], None]


def shown_limit(value) -> int | float | None:
    """A limit as a gauge shows it: None where there is none (missing, 0, v1's "max")."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return None if value <= 0 or value >= UNLIMITED else value


def _group(path: str, usage: dict, cpus, memory_max, pids_max, cpu: float | None) -> dict:
    return {"path": path, "cpu": None if cpu is None else round(cpu, 3),
            "cpu_max": shown_limit(cpus), "memory": usage.get("memory_current"),
            "memory_max": shown_limit(memory_max), "pids": usage.get("pids_current"),
            "pids_max": shown_limit(pids_max), "throttled": usage.get("cpu_nr_throttled")}


def cpu_rate(before: tuple[float, int] | None, now: float, used) -> float | None:
    """CPUs used between two samples of a cpu_usage_ns counter (None without two)."""
    if before is None or not isinstance(used, int):
        return None
    dt, dused = now - before[0], used - before[1]
    # A counter that went back is a new cgroup of the same name: no rate this once.
    if dt <= 0 or dused < 0:
        return None
    return dused / 1e9 / dt


def summarize(sandbox_id: str, stats: dict, tree: list[dict] | None, truncated: bool,
              counters: dict, now: float, cpu_ns: dict[int, int] | None = None) -> dict:
    """The `gauges` event for one sample. `counters` holds the previous sample's counters
    ((time, ns) by path, or by (path, pid)) and is updated for the next one; groups and
    processes gone are forgotten, so it stays as bounded as what is shown. `cpu_ns`
    (host pid -> CPU time, inspect's processes) stands in for a group without its own
    counter: on v1 with cpu and cpuacct mounted apart, a group the learner made under
    cpu/ has a quota but no cpuacct.usage."""
    seen: dict = {}

    def rate_of(key, used) -> float | None:
        rate = cpu_rate(counters.get(key), now, used)
        if isinstance(used, int):
            seen[key] = (now, used)
        return rate

    def cpu_of(path: str, used, procs) -> float | None:
        if isinstance(used, int) or cpu_ns is None:
            return rate_of(path, used)
        # Per process, so that a process moved in (with all the CPU time it used before)
        # or one that exits is no jump in the group's line.
        rates = [rate_of((path, pid), cpu_ns.get(pid)) for pid in procs or ()]
        known = [r for r in rates if r is not None]
        return sum(known) if known or not rates else None

    groups = [_group("/", stats, stats.get("cpus"), stats.get("memory_limit"),
                     stats.get("pids_limit"), rate_of("/", stats.get("cpu_usage_ns")))]
    children = sorted((n for n in tree or () if n.get("path") not in (None, "/")),
                      key=lambda n: n["path"])
    for node in children[:MAX_GROUPS]:
        usage, limits = node.get("usage") or {}, node.get("limits") or {}
        groups.append(_group(node["path"], usage, limits.get("cpus"),
                             limits.get("memory_max"), limits.get("pids_max"),
                             cpu_of(node["path"], usage.get("cpu_usage_ns"),
                                    node.get("procs"))))
    counters.clear()
    counters.update(seen)
    hidden = max(0, len(children) - MAX_GROUPS)
    return {"sandbox_id": sandbox_id, "status": "running", "time": now, "groups": groups,
            "hidden": hidden, "truncated": bool(truncated)}


class Sampler(StoppableSampler):
    """Reads one sandbox's gauges every `interval` seconds on its own thread and hands
    each sample to `emit(sandbox_id, "gauges", data)`, until `stop`."""

    def __init__(self, daemon: Client, sandbox_id: str, emit: Emit, interval: float = INTERVAL):
        super().__init__()
        self.daemon = daemon
        self.sandbox_id = sandbox_id
        self.emit = emit
        self.interval = interval
        self.counters: dict[str, tuple[float, int]] = {}
        self.tree: list[dict] | None = None
        self.cpu_ns: dict[int, int] = {}
        self.tree_cut = False
        self.ticks = 0
        self.samples = 0
        self.last: dict | None = None

    def sample(self) -> dict:
        """One sample; the latest is kept (`last`) for a page that starts watching."""
        try:
            stats = self.daemon.stats(self.sandbox_id)
            now = time.monotonic()
            # Children are read every tick while there are any (their sparklines move),
            # else only every TREE_EVERY ticks, to notice the first one made.
            if self.tree is None or len(self.tree) > 1 or self.ticks % TREE_EVERY == 0:
                facts = self.daemon.inspect(self.sandbox_id)
                self.tree = facts.get("cgroups") or []
                self.cpu_ns = {p["host_pid"]: p["cpu_ns"] for p in facts.get("processes") or ()
                               if isinstance(p.get("cpu_ns"), int)}
                self.tree_cut = "cgroups" in (facts.get("truncated") or ())
        except SandboxError as e:
            self.counters.clear()
            self.tree = None
            status = "stopped" if e.reason.value in STOPPED else "unavailable"
            data = {"sandbox_id": self.sandbox_id, "status": status, "time": time.monotonic(),
                    "groups": [], "hidden": 0, "truncated": False, "message": e.message}
        else:
            data = summarize(self.sandbox_id, stats, self.tree, self.tree_cut, self.counters,
                             now, self.cpu_ns)
        finally:
            self.ticks += 1
        self.samples += 1
        self.last = data
        return data

    def run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sample()
                if self._stop.is_set():
                    break   # the last page left while sandboxd answered
                self.emit(self.sandbox_id, "gauges", data)
            except Exception:  # noqa: BLE001 - one bad sample must not end the gauges
                log.exception("gauges of sandbox %s: a sample failed", self.sandbox_id)
            self._stop.wait(self.interval)


class Gauges(SharedSamplers):
    """The samplers of an app: one per sandbox with at least one watching page."""

    def __init__(self, daemon: Client, *, emit: Emit, interval: float = INTERVAL,
                 start: Callable[..., object] | None = None):
        super().__init__(start)
        self.daemon = daemon
        self.emit = emit
        self.interval = interval

    def _make(self, sandbox_id: str, seed=None) -> Sampler:
        return Sampler(self.daemon, sandbox_id, self.emit, self.interval)

    def last(self, sandbox_id: str) -> dict | None:
        """The latest sample of this sandbox, if its sampler has made one."""
        sampler = self.samplers.get(sandbox_id)
        return sampler.last if sampler is not None else None
