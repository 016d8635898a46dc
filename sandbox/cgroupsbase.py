"""What cgroup v1 and v2 share: the abstract `CgroupManager`, `Limits` and their checks.

`CgroupsV1` (cgroupsv1.py) and `CgroupsV2` (cgroupsv2.py) implement `CgroupManager`;
`sandbox.cgroups.detect()` picks one of them once, and no caller ever asks which one it
got. Every write to a control file goes through `_write()`, which turns a kernel error
into a `SandboxError` whose message names the file, the cause and the fix.

A group is a path relative to each hierarchy's root ("nslab/default/0123456789ab"). Its
own limit files stay owned by host root; its directory and the files that organise
processes are handed to the sandbox's root, so that it can build and limit a subtree
below its group but never raise the group's own limits.
"""

from __future__ import annotations

import errno
import math
import os
import re
import signal
import time
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from .errors import Conflict, HostUnsupported, InvalidRequest, NotFound, SandboxError
from .procfs import parse_cpulist
from .protocol import CgroupNode, Reason

CPU_PERIOD_US = 100_000
MIN_MEMORY = 4 << 20
MAX_BYTES = 1 << 50  # 1 PiB: anything above is a typo, not a limit
MAX_PIDS = 4_194_304  # PID_MAX_LIMIT, linux/threads.h
WEIGHT_MIN, WEIGHT_MAX = 1, 10_000  # CGROUP_WEIGHT_MIN/MAX, linux/cgroup.h

# How many cgroups a sandbox's root may make below its group. Each one costs kernel memory
# and host time whenever the daemon reads or removes the subtree (10,000 empty ones made
# inspect take 3.9 s and destroy 1.5 s). The labs nest two deep (team/job) and make a
# handful; a container engine inside adds one or two per container; v2's own leaf
# (<group>/init) counts as one. 8 levels and 128 groups leave ample room for all of that.
# v2 enforces both on the group (cgroup.max.depth, cgroup.max.descendants, which stay
# root's); v1 has no such knob, so there `tree()` reads at most TREE_LIMIT cgroups and
# says the rest were left out.
MAX_DEPTH = 8
MAX_DESCENDANTS = 128
TREE_LIMIT = 1 + MAX_DESCENDANTS  # the group itself and every descendant v2 allows

_COMPONENT_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@:+-]{0,127}")

# Keys of stats() and of tree()'s "usage"; a value is None where this host cannot tell.
# pids_events_max: forks refused because a pids limit was reached (pids.events "max"), so
# a check can tell a fork bomb that hit the limit from a limit lowered under running
# processes. cpu_nr_periods, cpu_nr_throttled, cpu_throttled_ns: the CFS bandwidth
# statistics of cpu.stat (periods with the group runnable, periods it ran out of quota,
# time it waited for the next period), which a check under load can trust more than a
# short measurement of the usage.
STAT_KEYS = ("cpu_usage_ns", "memory_current", "memory_peak", "memory_limit", "oom_kills",
             "pids_current", "pids_limit", "pids_events_max", "cpus", "frozen",
             "cpu_nr_periods", "cpu_nr_throttled", "cpu_throttled_ns")

# Keys of container_limits(): the files Docker's flags write (--cpus, --cpu-shares/-weight,
# --cpuset-cpus/-mems, -m, --memory-swap, --memory-reservation, --memory-swappiness,
# --kernel-memory, --oom-kill-disable, --pids-limit), under one name where v1 and v2 mean
# the same. memory_reservation is v1's memory.soft_limit_in_bytes or v2's memory.low;
# memsw_max (v1) is memory plus swap, as --memory-swap gives it, swap_max the swap alone;
# memory_swappiness, oom_kill_disable, under_oom, kmem_max are v1 only; memory_low and
# memory_high v2 only. oom_kills: kills by the OOM killer in the cgroup (v1
# memory.oom_control "oom_kill", v2 memory.events "oom_kill").
CONTAINER_LIMIT_KEYS = ("cpu_quota_us", "cpu_period_us", "cpus", "cpu_shares", "cpu_weight",
                        "cpuset_cpus", "cpuset_mems", "memory_max", "memsw_max", "swap_max",
                        "memory_reservation", "memory_low", "memory_high",
                        "memory_swappiness", "kmem_max", "oom_kill_disable", "under_oom",
                        "oom_kills", "pids_max")


def check_group(group: str) -> str:
    """Return `group` if it is a safe relative cgroup path, else raise InvalidRequest."""
    if not isinstance(group, str) or not group:
        raise InvalidRequest("cgroup path must be a non-empty string", field="group")
    if group.startswith("/"):
        raise InvalidRequest(f"cgroup path {group!r} must be relative to the hierarchy root, "
                             "not absolute", field="group")
    for part in group.split("/"):
        if part in ("", ".", ".."):
            raise InvalidRequest(f"cgroup path {group!r} has an empty, '.' or '..' component",
                                 field="group")
        if not _COMPONENT_RE.fullmatch(part):
            raise InvalidRequest(f"cgroup path component {part!r} must be 1-128 characters of "
                                 "letters, digits and _.@:+- (not starting with one of .@:+-)",
                                 field="group")
    return group


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class Limits:
    """Resource limits of one sandbox; None leaves a resource as it is (unlimited when new)."""

    cpus: float | None = None  # CPUs of quota: 0.5 -> 50000us per 100000us period
    cpu_weight: int | None = None  # 1..10000 on the v2 scale (default 100)
    cpuset: str | None = None  # "0", "0-1", "0,1": within the parent's effective cpus
    memory: int | None = None  # bytes
    swap: int | None = None  # bytes of swap on top of memory
    pids: int | None = None  # pids.max
    io_weight: int | None = None  # 1..10000, applied only where the host has the file

    def validate(self) -> None:
        """Raise InvalidRequest(field=...) for a value no sandbox should get."""
        host_cpus = os.cpu_count() or 1
        if self.cpus is not None:
            if (not isinstance(self.cpus, (int, float)) or isinstance(self.cpus, bool)
                    or not math.isfinite(self.cpus) or not 0.01 <= self.cpus <= host_cpus):
                raise InvalidRequest(f"cpus must be a number from 0.01 to {host_cpus} (the "
                                     f"host's CPUs), not {self.cpus!r}", field="cpus")
        for name in ("cpu_weight", "io_weight"):
            value = getattr(self, name)
            if value is not None and (not _is_int(value)
                                      or not WEIGHT_MIN <= value <= WEIGHT_MAX):
                raise InvalidRequest(f"{name} must be an integer from {WEIGHT_MIN} to "
                                     f"{WEIGHT_MAX} (100 is the default), not {value!r}",
                                     field=name)
        if self.cpuset is not None:
            try:
                if not isinstance(self.cpuset, str) or not parse_cpulist(self.cpuset):
                    raise ValueError("it is empty")
            except ValueError as e:
                raise InvalidRequest(f"cpuset {self.cpuset!r} is invalid: {e}",
                                     field="cpuset") from None
        if self.memory is not None and (not _is_int(self.memory)
                                        or not MIN_MEMORY <= self.memory <= MAX_BYTES):
            raise InvalidRequest(f"memory must be a number of bytes from {MIN_MEMORY} (4 MiB) "
                                 f"to {MAX_BYTES} (1 PiB), not {self.memory!r}", field="memory")
        if self.swap is not None and (not _is_int(self.swap) or not 0 <= self.swap <= MAX_BYTES):
            raise InvalidRequest(f"swap must be a number of bytes from 0 to {MAX_BYTES}, not "
                                 f"{self.swap!r}", field="swap")
        if self.pids is not None and (not _is_int(self.pids) or not 1 <= self.pids <= MAX_PIDS):
            raise InvalidRequest(f"pids must be an integer from 1 to {MAX_PIDS}, not "
                                 f"{self.pids!r}", field="pids")

    @property
    def cpu_quota_us(self) -> int | None:
        return None if self.cpus is None else max(1000, round(self.cpus * CPU_PERIOD_US))


def _write_hint(path: Path, err: OSError) -> str:
    name = path.name
    if err.errno == errno.EBUSY and name == "cgroup.subtree_control":
        return ("the cgroup has processes of its own, and under cgroup v2 a cgroup with "
                "processes cannot enable controllers for its children (no-internal-process "
                "rule): move them into a leaf cgroup first (for sandboxd, run it in its own "
                "cgroup, e.g. a systemd service with Delegate=yes, or move the container's "
                "processes into a child such as /init)")
    if err.errno == errno.EBUSY and name == "cgroup.procs":
        return ("the target cgroup has controllers enabled for its children, so under cgroup "
                "v2 it cannot hold processes (no-internal-process rule): use a leaf cgroup")
    if err.errno == errno.EBUSY and name.startswith("memory."):
        return ("the cgroup uses more memory than the new limit and the kernel could not "
                "reclaim it: stop processes in it first or choose a higher limit")
    if err.errno == errno.EBUSY and name.startswith("cpuset."):
        return "child cgroups use CPUs outside the new set: change those first"
    hints = {
        errno.EACCES: "permission denied: sandboxd must run as root (host uid 0)",
        errno.EPERM: "operation not permitted: sandboxd must run as root in the initial "
                     "user and cgroup namespace",
        errno.EROFS: "the cgroup filesystem is mounted read-only: remount it read-write",
        errno.EINVAL: "the kernel rejected the value: it is out of range, or a child's limit "
                      "would exceed its parent's",
        errno.ENOSPC: "the cgroup has no CPUs or memory nodes to run on (cpuset.cpus or "
                      "cpuset.mems is empty), or the cgroup depth/descendant limit is reached",
        errno.ENOENT: "the cgroup or this control file does not exist: the group was removed "
                      "or the controller is not enabled for it",
        errno.ENODEV: "the cgroup was removed meanwhile",
        errno.ESRCH: "the process has already exited",
        errno.EOPNOTSUPP: "the cgroup is threaded and cannot hold whole processes",
        errno.EAGAIN: "the kernel asked to retry: the cgroup is changing state",
    }
    return hints.get(err.errno, err.strerror or "unknown error")


def cgroup_error(what: str, path: Path, err: OSError) -> SandboxError:
    """An OSError on a cgroup file as a SandboxError that names the file, cause and fix."""
    name = errno.errorcode.get(err.errno, str(err.errno))
    cls = HostUnsupported if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS) else SandboxError
    return cls(f"cgroup: {what} {path} failed: {_write_hint(path, err)} [{name}]")


@dataclass(frozen=True)
class MountInfo:
    """One line of /proc/self/mountinfo, with its octal escapes decoded."""

    root: str
    mountpoint: str
    fstype: str
    source: str
    super_options: tuple[str, ...]


def _unescape(text: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), text)


def read_mountinfo(path: Path = Path("/proc/self/mountinfo")) -> list[MountInfo]:
    mounts = []
    for line in Path(path).read_text().splitlines():
        left, sep, right = line.partition(" - ")
        fields, tail = left.split(" "), right.split(" ")
        if not sep or len(fields) < 5 or len(tail) < 3:
            continue
        mounts.append(MountInfo(root=_unescape(fields[3]), mountpoint=_unescape(fields[4]),
                                fstype=tail[0], source=_unescape(tail[1]),
                                super_options=tuple(tail[2].split(","))))
    return mounts


def int_or_none(text: str | None) -> int | None:
    """A control file's number; None for absent, "max" or -1 (no limit)."""
    if text is None:
        return None
    text = text.strip()
    if text in ("", "max", "-1"):
        return None
    return int(text)


def keyed(text: str | None) -> dict[str, int]:
    """Parse "key value" lines (cpu.stat, memory.events, memory.oom_control)."""
    out: dict[str, int] = {}
    for line in (text or "").splitlines():
        key, _, value = line.partition(" ")
        try:
            out[key] = int(value)
        except ValueError:
            continue
    return out


class CgroupManager(ABC):
    """Create, limit, delegate, inspect and remove sandbox cgroups on this host."""

    version: int

    def __init__(self, root: Path = Path("/sys/fs/cgroup")):
        self.root = Path(root)

    # -- the one place that touches the filesystem ------------------------------------

    def _sys_write(self, path: Path, data: str) -> None:
        # A control file takes one value per write(2); never create one.
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, data.encode())
        finally:
            os.close(fd)

    def _sys_mkdir(self, path: Path) -> None:
        os.mkdir(path, 0o755)

    def _sys_rmdir(self, path: Path) -> None:
        os.rmdir(path)

    def _write(self, path: Path, value, *, tolerate: tuple[int, ...] = ()) -> bool:
        """Write `value` to a control file; False if it failed with a tolerated errno."""
        data = str(value)
        try:
            self._sys_write(path, data)
        except OSError as e:
            if e.errno in tolerate:
                return False
            raise cgroup_error(f"writing {data!r} to", path, e) from None
        return True

    def _read(self, path: Path, *, tolerate: tuple[int, ...] = ()) -> str | None:
        """A control file's text, or None where it does not exist (controller absent)."""
        try:
            return path.read_text()
        except OSError as e:
            # ENODEV: the cgroup was removed while we read it.
            if e.errno in (errno.ENOENT, errno.ENODEV) + tolerate:
                return None
            raise cgroup_error("reading", path, e) from None

    def _node_pids(self, node: Path) -> set[int]:
        # Read with plain os calls: kill and remove read this file in every cgroup of a
        # learner's subtree, and pathlib's text layer costs five times the kernel's part.
        path = node / "cgroup.procs"
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            # A threaded v2 cgroup has no process list (EOPNOTSUPP); its domain parent
            # lists the processes instead. ENOENT, ENODEV: removed meanwhile.
            if e.errno in (errno.ENOENT, errno.ENODEV, errno.EOPNOTSUPP):
                return set()
            raise cgroup_error("reading", path, e) from None
        try:
            chunks = []
            while chunk := os.read(fd, 1 << 16):
                chunks.append(chunk)
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.ENODEV, errno.EOPNOTSUPP):
                return set()
            raise cgroup_error("reading", path, e) from None
        finally:
            os.close(fd)
        return {int(x) for x in b"".join(chunks).split()}

    def _mkdir(self, path: Path) -> bool:
        """Create one cgroup; False if it already existed."""
        try:
            self._sys_mkdir(path)
        except OSError as e:
            if e.errno == errno.EEXIST:
                return False
            raise cgroup_error("creating cgroup", path, e) from None
        return True

    def _chown(self, path: Path, uid: int, gid: int, *, tolerate_missing: bool = False) -> None:
        try:
            os.chown(path, uid, gid)
        except OSError as e:
            # Not every kernel has every delegated file (cgroup.threads is 4.14+).
            if tolerate_missing and e.errno == errno.ENOENT:
                return
            raise cgroup_error(f"handing to uid {uid}:", path, e) from None

    def _rmdir_retry(self, path: Path, deadline: float) -> None:
        delay = 0.01
        while True:
            try:
                self._sys_rmdir(path)
                return
            except OSError as e:
                if e.errno == errno.ENOENT:
                    return
                # EBUSY: exited tasks or css references linger for a moment after a kill.
                if e.errno != errno.EBUSY or time.monotonic() > deadline:
                    raise cgroup_error("removing cgroup", path, e) from None
            time.sleep(delay)
            delay = min(delay * 2, 0.1)

    @staticmethod
    def _scan(base: Path, limit: int | None = None) -> tuple[list[str], bool]:
        """Relative paths ("" for base itself) of the cgroups in base's subtree, breadth
        first (every parent before its children, shallow ones first), and whether more
        than `limit` exist (then only the first `limit` are returned). Iterative: the
        sandbox's root may nest deeper than Python's recursion limit."""
        found: list[str] = []
        queue = deque([""])
        while queue:
            if limit is not None and len(found) >= limit:
                return found, True
            rel = queue.popleft()
            try:
                entries = list(os.scandir(base / rel if rel else base))
            except FileNotFoundError:
                continue  # removed meanwhile (or base never existed)
            found.append(rel)
            queue.extend(f"{rel}/{e.name}" if rel else e.name
                         for e in entries if e.is_dir(follow_symlinks=False))
        return found, False

    @classmethod
    def _walk(cls, base: Path, *, bottom_up: bool = False) -> list[str]:
        """Every cgroup of base's subtree, parents first (or last): for kill and remove,
        which must reach all of them. Slow for a learner-sized tree: never on the event
        loop."""
        found = cls._scan(base)[0]
        return found[::-1] if bottom_up else found

    @staticmethod
    def _check_owner(uid: int, gid: int) -> None:
        for name, value in (("owner_uid", uid), ("owner_gid", gid)):
            if not _is_int(value) or not 0 <= value < 2**32 - 1:
                raise InvalidRequest(f"{name} must be a host id from 0 to 4294967294, "
                                     f"not {value!r}", field=name)

    # -- what each version provides ---------------------------------------------------

    @abstractmethod
    def _dirs(self, group: str) -> list[Path]:
        """The group's directory in every hierarchy this manager uses."""

    @abstractmethod
    def check(self) -> None:
        """Raise HostUnsupported naming any controller this host lacks and how to get it."""

    @abstractmethod
    def create(self, group: str, limits: Limits, owner_uid: int, owner_gid: int, *,
               containers: bool = False) -> None:
        """Create `group` with `limits` and delegate it to host uid/gid `owner_*`;
        `containers`: also what a container engine inside needs."""

    @abstractmethod
    def set_limits(self, group: str, limits: Limits) -> None:
        """Apply the limits that are not None to an existing group."""

    @abstractmethod
    def spawn_procs_files(self, group: str) -> list[str]:
        """cgroup.procs files a new sandbox process writes its pid into before it unshares
        its cgroup namespace; it must not fork before `finish_spawn` returns."""

    @abstractmethod
    def finish_spawn(self, group: str, pid: int) -> None:
        """Complete the move of a new sandbox process into its group."""

    @abstractmethod
    def exec_procs_files(self, group: str) -> list[str]:
        """cgroup.procs files that put a process exec'd into the sandbox under its limits."""

    @abstractmethod
    def kill_all(self, group: str, timeout: float = 5.0) -> None:
        """SIGKILL every process in the group's subtree; a fork bomb must not escape."""

    @abstractmethod
    def _usage(self, group: str) -> dict:
        """The STAT_KEYS of one cgroup (absent files give None)."""

    @abstractmethod
    def _limits(self, group: str) -> dict:
        """The limit files of one cgroup under uniform names; absent files are left out."""

    @abstractmethod
    def _container_limits(self, groups: dict[str, str]) -> dict:
        """`container_limits` for `groups` (controller -> full group path, checked)."""

    @abstractmethod
    def mounts_inside(self, group: str | None = None) -> list[tuple[str, str, str]]:
        """(subdir of /sys/fs/cgroup, fstype, data) for a sandbox's own cgroup mounts. A
        subdir of co-mounted v1 controllers ("cpu,cpuacct") also gets a symbolic link per
        controller inside, as on the host (the spawner makes them). With `group`: those
        of that group (a `containers` one has more)."""

    # -- shared behaviour -------------------------------------------------------------

    def exists(self, group: str) -> bool:
        return any(d.is_dir() for d in self._dirs(check_group(group)))

    def _require(self, group: str) -> str:
        check_group(group)
        if not self.exists(group):
            raise NotFound(f"cgroup {group!r} does not exist", reason=Reason.NOT_FOUND)
        return group

    def _procs(self, group: str) -> list[int]:
        pids: set[int] = set()
        for base in self._dirs(group):
            for rel in self._walk(base):
                pids |= self._node_pids(base / rel)
        return sorted(pids)

    def procs(self, group: str) -> list[int]:
        """Every pid (host pid namespace) in the group's whole subtree."""
        return self._procs(check_group(group))

    def children(self, parent: str) -> list[str]:
        """Names of the child cgroups directly under `parent` (in any hierarchy)."""
        names: set[str] = set()
        for base in self._dirs(check_group(parent)):
            try:
                names.update(e.name for e in os.scandir(base) if e.is_dir(follow_symlinks=False))
            except FileNotFoundError:
                continue
        return sorted(names)

    def remove(self, group: str) -> None:
        """Kill what is left in the group, then rmdir its whole subtree in every hierarchy."""
        check_group(group)
        if self._procs(group):
            self.kill_all(group)
        deadline = time.monotonic() + 2.0
        for base in self._dirs(group):
            for rel in self._walk(base, bottom_up=True):
                self._rmdir_retry(base / rel if rel else base, deadline)

    def stats(self, group: str) -> dict:
        """Usage and limits of the group (its subtree included), STAT_KEYS, None if unknown."""
        return self._usage(self._require(group))

    def tree(self, group: str, *, limit: int = TREE_LIMIT) -> tuple[list[CgroupNode], bool]:
        """The subtree's cgroups with their limits, usage and host pids ("/" is `group`),
        at most `limit` of them, shallow ones first; and whether some were left out (a
        v1 sandbox made more than v2 would let it: their processes are not listed)."""
        self._require(group)
        pids_of: dict[str, set[int]] = {}
        truncated = False
        for base in self._dirs(group):
            rels, cut = self._scan(base, limit)
            truncated |= cut
            for rel in rels:
                pids_of.setdefault(rel, set()).update(self._node_pids(base / rel))
        # v1: each hierarchy has its own subtree; keep the shallowest `limit` of them all.
        kept = sorted(pids_of, key=lambda rel: (rel.count("/") + bool(rel), rel))
        if len(kept) > limit:
            kept, truncated = kept[:limit], True
        out = []
        for rel in sorted(kept):
            path = f"{group}/{rel}" if rel else group
            usage = {k: v for k, v in self._usage(path).items() if v is not None}
            out.append({"path": "/" + rel, "limits": self._limits(path), "usage": usage,
                        "procs": sorted(pids_of[rel])})
        return out, truncated

    def container_limits(self, group: str, paths: dict[str, str]) -> dict:
        """Every limit Docker's resource flags set, read from the cgroup a container's main
        process is in (CONTAINER_LIMIT_KEYS; a file this host lacks is left out, None is
        "no limit"). `paths` maps a controller to that process's cgroup relative to
        `group` ("/x/y", "/" is the group; v2's one path under ""), as /proc/PID/cgroup
        shows it from the sandbox. A path that is not a cgroup below `group` is skipped:
        nothing is read outside the sandbox's subtree."""
        groups: dict[str, str] = {}
        for controller, rel in paths.items():
            if not rel.startswith("/"):
                continue
            full = group + rel.rstrip("/")
            try:
                groups[controller] = check_group(full)
            except InvalidRequest:
                continue  # "..", or a name no cgroup below ours can have
        return self._container_limits(groups)

    def _signal_all(self, group: str) -> None:
        for pid in self._procs(group):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue

    def _wait_empty(self, group: str, deadline: float) -> bool:
        delay = 0.005
        while self._procs(group):
            if time.monotonic() > deadline:
                return False
            time.sleep(delay)
            delay = min(delay * 2, 0.05)
        return True

    def _kill_timeout(self, group: str, timeout: float) -> SandboxError:
        left = self._procs(group)
        return SandboxError(f"cgroup {group!r}: processes {left[:20]} survived SIGKILL for "
                            f"{timeout}s; they are probably blocked in the kernel (D state, "
                            "e.g. on a hung NFS or FUSE mount): see /proc/PID/stack")

    def _conflict(self, group: str) -> Conflict:
        return Conflict(f"cgroup {group!r} already exists: it is left from an earlier "
                        "sandbox; remove it first", reason=Reason.ALREADY_EXISTS)
