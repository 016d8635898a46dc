"""cgroup v1 (also the v1 half of a hybrid host): one directory per group in every hierarchy.

Hierarchies are read from /proc/self/mountinfo, so `cpu` and `cpuacct` may be separate
mounts or co-mounted as `cpu,cpuacct`. Processes live in the group itself; children the
sandbox's root creates inherit cpus and mems through cgroup.clone_children in cpuset.

A sandbox that runs a container engine (`containers`) also gets its group in the `devices`
and `name=systemd` hierarchies (`CONTAINER_HIERARCHIES`), delegated and mounted inside like
the others: runc and crun look for them. Its `devices.allow`/`devices.deny` stay host
root's, and the kernel lets only CAP_SYS_ADMIN in the initial user namespace write any
devices file (security/device_cgroup.c), so root inside can neither widen its own list nor
that of a child it makes (runc skips device rules in a user namespace).
"""

from __future__ import annotations

import dataclasses
import errno
import os
import time
from dataclasses import dataclass
from pathlib import Path

from .cgroupsbase import (CPU_PERIOD_US, STAT_KEYS, CgroupManager, Limits, MountInfo,
                          check_group, int_or_none, keyed)
from .errors import HostUnsupported, InvalidRequest
from .procfs import parse_cpulist

REQUIRED = ("cpu", "cpuacct", "cpuset", "memory", "pids", "freezer")
OPTIONAL = ("blkio",)
# Only for a sandbox made with `containers`: every other sandbox would pay a cgroup
# migration per hierarchy (an RCU grace period each on v1) for what it never uses.
CONTAINER_HIERARCHIES = ("devices", "name=systemd")

# Kernel config symbol of each controller, to name in "missing" messages.
CONFIG = {"cpu": "CONFIG_CGROUP_SCHED", "cpuacct": "CONFIG_CGROUP_CPUACCT",
          "cpuset": "CONFIG_CPUSETS", "memory": "CONFIG_MEMCG", "pids": "CONFIG_CGROUP_PIDS",
          "freezer": "CONFIG_CGROUP_FREEZER", "blkio": "CONFIG_BLK_CGROUP"}

# PAGE_COUNTER_MAX * PAGE_SIZE reads back as 9223372036854771712; anything this large
# means "no limit".
UNLIMITED = 1 << 62

# Files of the group handed to the sandbox's root in every hierarchy ("" is the dir).
DELEGATED = ("", "tasks", "cgroup.procs", "cgroup.clone_children", "notify_on_release")


@dataclass(frozen=True)
class Hierarchy:
    mountpoint: Path
    controllers: tuple[str, ...]  # in the order the kernel lists them in the mount options


def _known_controllers(path: Path = Path("/proc/cgroups")) -> set[str]:
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return set(REQUIRED + OPTIONAL + ("devices", "net_cls", "net_prio", "perf_event",
                                          "hugetlb", "rdma", "misc"))
    return {line.split()[0] for line in lines if line and not line.startswith("#")}


class CgroupsV1(CgroupManager):
    version = 1

    def __init__(self, root: Path, hierarchies: dict[str, Hierarchy]):
        super().__init__(root)
        self.by_controller = dict(hierarchies)

    @classmethod
    def from_mounts(cls, root: Path, mounts: list[MountInfo]) -> "CgroupsV1 | None":
        # A named hierarchy is not in /proc/cgroups; the one engines use is.
        known = _known_controllers() | {"name=systemd"}
        managed = set(REQUIRED + OPTIONAL + CONTAINER_HIERARCHIES)
        candidates = [m for m in mounts if m.fstype == "cgroup"]

        def under_root(m: MountInfo) -> bool:
            return m.mountpoint == str(root) or m.mountpoint.startswith(str(root) + "/")

        # A hierarchy can be mounted more than once (bind mounts): prefer the mount of its
        # real root under `root`.
        candidates.sort(key=lambda m: (not under_root(m), m.root != "/"))
        found: dict[str, Hierarchy] = {}
        for m in candidates:
            controllers = tuple(o for o in m.super_options if o in known)
            if not managed.intersection(controllers):
                continue
            h = Hierarchy(Path(m.mountpoint), controllers)
            for c in controllers:
                found.setdefault(c, h)
        return cls(root, found) if found else None

    # -- layout -------------------------------------------------------------------------

    def hierarchies(self, *, containers: bool = False) -> list[Hierarchy]:
        """Every sandbox's hierarchies; with `containers`, also those a container engine
        needs (unless co-mounted with one of the others, each hierarchy once)."""
        seen: dict[Path, Hierarchy] = {}
        for c in REQUIRED + OPTIONAL + (CONTAINER_HIERARCHIES if containers else ()):
            h = self.by_controller.get(c)
            if h is not None:
                seen.setdefault(h.mountpoint, h)
        return sorted(seen.values(), key=lambda h: str(h.mountpoint))

    def _dirs(self, group: str) -> list[Path]:
        # All of them: kill, remove and inspect must reach a containers sandbox's groups.
        return [h.mountpoint / group for h in self.hierarchies(containers=True)]

    def _group_hierarchies(self, group: str) -> list[Hierarchy]:
        """The hierarchies `group` was made in: the container ones only if it has them."""
        base = self.hierarchies()
        extra = [h for h in self.hierarchies(containers=True)
                 if h not in base and (h.mountpoint / group).is_dir()]
        return sorted(base + extra, key=lambda h: str(h.mountpoint))

    def _dir(self, controller: str, group: str) -> Path | None:
        h = self.by_controller.get(controller)
        return None if h is None else h.mountpoint / group

    def _subdir(self, h: Hierarchy) -> str:
        try:
            rel = h.mountpoint.relative_to(self.root)
        except ValueError:
            return ",".join(h.controllers)
        return str(rel) if str(rel) != "." else ",".join(h.controllers)

    # -- host check ---------------------------------------------------------------------

    def check(self) -> None:
        if os.geteuid() != 0:
            raise HostUnsupported("managing cgroups needs root: run sandboxd as root")
        enabled: dict[str, bool] = {}
        try:
            for line in Path("/proc/cgroups").read_text().splitlines()[1:]:
                fields = line.split()
                enabled[fields[0]] = fields[-1] == "1"
        except FileNotFoundError:
            pass
        problems = []
        for c in REQUIRED:
            if c in self.by_controller:
                continue
            if c in enabled and not enabled[c]:
                why = f"it is disabled on the kernel command line: remove cgroup_disable={c}"
            elif c not in enabled and enabled:
                why = f"the kernel was built without it: use a kernel with {CONFIG[c]}=y"
            else:
                why = (f"it is not mounted (or is bound to the cgroup2 hierarchy): mount it "
                       f"with 'mkdir -p {self.root}/{c} && mount -t cgroup -o {c} cgroup "
                       f"{self.root}/{c}'")
            problems.append(f"cgroup v1 controller '{c}' is not available: {why}")
        for h in self.hierarchies():
            if os.statvfs(h.mountpoint).f_flag & os.ST_RDONLY:
                problems.append(f"cgroup hierarchy {h.mountpoint} is mounted read-only: "
                                "remount it read-write (in a container: run it privileged)")
        if problems:
            raise HostUnsupported("; ".join(problems))

    # -- create and limit ---------------------------------------------------------------

    def _effective_cpus(self, cpuset_dir: Path) -> str:
        text = self._read(cpuset_dir / "cpuset.effective_cpus")
        if text is None or not text.strip():
            text = self._read(cpuset_dir / "cpuset.cpus")
        return (text or "").strip()

    def _fill_cpuset(self, d: Path, cpus: str | None = None) -> None:
        """Give a cpuset cgroup cpus and mems (from `cpus` or its parent's); an empty
        cpuset cannot hold a process (ENOSPC)."""
        parent = d.parent
        if not (self._read(d / "cpuset.mems") or "").strip():
            self._write(d / "cpuset.mems", (self._read(parent / "cpuset.mems") or "").strip())
        if cpus is not None:
            self._write(d / "cpuset.cpus", cpus)
        elif not (self._read(d / "cpuset.cpus") or "").strip():
            self._write(d / "cpuset.cpus", (self._read(parent / "cpuset.cpus") or "").strip())

    def _check_cpuset(self, group: str, cpuset: str) -> None:
        # Parents not made yet will copy their cpus from the nearest one that exists.
        parent = self._dir("cpuset", group).parent
        while not parent.is_dir() and parent != self.by_controller["cpuset"].mountpoint:
            parent = parent.parent
        available = self._effective_cpus(parent)
        if not parse_cpulist(cpuset) <= parse_cpulist(available):
            raise InvalidRequest(f"cpuset {cpuset!r} is not within the CPUs available to "
                                 f"sandboxes here ({available})", field="cpuset")

    def _make_parents(self, h: Hierarchy, group: str) -> None:
        parts = group.split("/")
        for i in range(1, len(parts)):
            d = h.mountpoint.joinpath(*parts[:i])
            created = self._mkdir(d)
            if "cpuset" in h.controllers:
                self._fill_cpuset(d)
            if created and "memory" in h.controllers:
                # Kernels before 5.11 default to a flat memory hierarchy, where a parent's
                # limit does not cover its children; it can only be set while childless.
                if (self._read(d / "memory.use_hierarchy") or "1").strip() == "0":
                    self._write(d / "memory.use_hierarchy", "1")

    def create(self, group: str, limits: Limits, owner_uid: int, owner_gid: int, *,
               containers: bool = False) -> None:
        check_group(group)
        limits.validate()
        self._check_owner(owner_uid, owner_gid)
        if self.exists(group):
            raise self._conflict(group)
        if limits.cpuset is not None and "cpuset" in self.by_controller:
            self._check_cpuset(group, limits.cpuset)
        made: list[Path] = []
        try:
            for h in self.hierarchies(containers=containers):
                self._make_parents(h, group)
                d = h.mountpoint / group
                if not self._mkdir(d):
                    raise self._conflict(group)
                made.append(d)
                if "cpuset" in h.controllers:
                    self._fill_cpuset(d, limits.cpuset)
                    # Children the sandbox makes inherit cpus and mems instead of starting
                    # empty (an empty cpuset cannot hold a process).
                    self._write(d / "cgroup.clone_children", "1")
            self.set_limits(group, dataclasses.replace(limits, cpuset=None))
            for d in made:
                for name in DELEGATED:
                    self._chown(d / name if name else d, owner_uid, owner_gid,
                                tolerate_missing=bool(name))
        except BaseException:
            # Undo only what this call made: a Conflict may mean another caller's group.
            deadline = time.monotonic() + 2.0
            for d in reversed(made):
                self._rmdir_retry(d, deadline)
            raise

    def set_limits(self, group: str, limits: Limits) -> None:
        self._require(group)
        limits.validate()
        cpu = self._dir("cpu", group)
        if limits.cpus is not None:
            self._write(cpu / "cpu.cfs_period_us", CPU_PERIOD_US)
            self._write(cpu / "cpu.cfs_quota_us", limits.cpu_quota_us)
        if limits.cpu_weight is not None:
            self._write(cpu / "cpu.shares", max(2, limits.cpu_weight * 1024 // 100))
        if limits.cpuset is not None:
            self._check_cpuset(group, limits.cpuset)
            self._write(self._dir("cpuset", group) / "cpuset.cpus", limits.cpuset)
        if limits.memory is not None or limits.swap is not None:
            self._set_memory(self._dir("memory", group), limits.memory, limits.swap)
        if limits.pids is not None:
            self._write(self._dir("pids", group) / "pids.max", limits.pids)
        if limits.io_weight is not None and (blkio := self._dir("blkio", group)) is not None:
            # blkio.weight belongs to CFQ (gone since 5.0); BFQ has its own file, 1..1000.
            if (blkio / "blkio.weight").exists():
                self._write(blkio / "blkio.weight", min(1000, max(10, limits.io_weight)))
            elif (blkio / "blkio.bfq.weight").exists():
                self._write(blkio / "blkio.bfq.weight", min(1000, limits.io_weight))

    def _set_memory(self, d: Path, memory: int | None, swap: int | None) -> None:
        limit_file = d / "memory.limit_in_bytes"
        memsw_file = d / "memory.memsw.limit_in_bytes"
        current = int(self._read(limit_file) or UNLIMITED)
        current_memsw = int_or_none(self._read(memsw_file))  # None: no swap accounting
        new = memory if memory is not None else current
        new_memsw = None
        if current_memsw is not None:
            if swap is not None:
                if new >= UNLIMITED:
                    raise InvalidRequest("a swap limit needs a memory limit on cgroup v1 "
                                         "(memory.memsw.limit_in_bytes counts memory plus "
                                         "swap)", field="swap")
                new_memsw = new + swap
            elif current_memsw < UNLIMITED:
                # Keep the swap allowance the group had.
                new_memsw = current_memsw - current + new
        # The kernel keeps limit_in_bytes <= memsw.limit_in_bytes at every step, so raise
        # memsw first when the new memory limit would pass the current memsw limit.
        if new_memsw is not None and current_memsw is not None and new > current_memsw:
            self._write(memsw_file, new_memsw)
            self._write(limit_file, new)
        else:
            if memory is not None:
                self._write(limit_file, new)
            if new_memsw is not None:
                self._write(memsw_file, new_memsw)

    # -- processes ----------------------------------------------------------------------

    def spawn_procs_files(self, group: str) -> list[str]:
        return [str(h.mountpoint / group / "cgroup.procs")
                for h in self._group_hierarchies(check_group(group))]

    def finish_spawn(self, group: str, pid: int) -> None:
        # v1 allows processes in inner cgroups: the process already is where it belongs.
        check_group(group)

    def exec_procs_files(self, group: str) -> list[str]:
        return self.spawn_procs_files(self._require(group))

    def kill_all(self, group: str, timeout: float = 5.0) -> None:
        check_group(group)
        deadline = time.monotonic() + timeout
        freezer = self._dir("freezer", group)
        while self._procs(group):
            if time.monotonic() > deadline:
                raise self._kill_timeout(group, timeout)
            # Frozen processes cannot fork, so the list read after the freeze is complete;
            # the kill lands when they thaw.
            frozen = freezer is not None and self._write(
                freezer / "freezer.state", "FROZEN", tolerate=(errno.ENOENT, errno.ENODEV))
            if frozen:
                self._wait_frozen(freezer, min(deadline, time.monotonic() + 0.5))
            self._signal_all(group)
            if freezer is not None:
                # Thaw the whole subtree: a child cgroup the sandbox froze itself stays
                # frozen when its parent thaws (v1), and a frozen task never dies.
                for rel in self._walk(freezer):
                    self._write((freezer / rel if rel else freezer) / "freezer.state",
                                "THAWED", tolerate=(errno.ENOENT, errno.ENODEV))
            self._wait_empty(group, min(deadline, time.monotonic() + 0.5))

    def _wait_frozen(self, freezer: Path, until: float) -> None:
        # FREEZING lasts while a task is in an uninterruptible sleep; kill anyway then.
        while (self._read(freezer / "freezer.state") or "").strip() == "FREEZING":
            if time.monotonic() > until:
                return
            time.sleep(0.005)

    # -- inspection ---------------------------------------------------------------------

    def _usage(self, group: str) -> dict:
        cpu, memory, pids = (self._dir(c, group) for c in ("cpu", "memory", "pids"))
        acct = self._dir("cpuacct", group)
        out = dict.fromkeys(STAT_KEYS)
        if acct is not None:
            out["cpu_usage_ns"] = int_or_none(self._read(acct / "cpuacct.usage"))
        if memory is not None:
            out["memory_current"] = int_or_none(self._read(memory / "memory.usage_in_bytes"))
            out["memory_peak"] = int_or_none(self._read(memory / "memory.max_usage_in_bytes"))
            out["memory_limit"] = self._bytes(self._read(memory / "memory.limit_in_bytes"))
            oom = self._read(memory / "memory.oom_control")
            if oom is not None:
                out["oom_kills"] = keyed(oom).get("oom_kill")
        if pids is not None:
            out["pids_current"] = int_or_none(self._read(pids / "pids.current"))
            out["pids_limit"] = int_or_none(self._read(pids / "pids.max"))
            out["pids_events_max"] = keyed(self._read(pids / "pids.events")).get("max")
        if cpu is not None:
            out["cpus"] = self._cpus(cpu)
            # v1 counts the throttled time in nanoseconds.
            stat = keyed(self._read(cpu / "cpu.stat"))
            out["cpu_nr_periods"] = stat.get("nr_periods")
            out["cpu_nr_throttled"] = stat.get("nr_throttled")
            out["cpu_throttled_ns"] = stat.get("throttled_time")
        if (freezer := self._dir("freezer", group)) is not None:
            out["frozen"] = (self._read(freezer / "freezer.state") or "").strip() == "FROZEN"
        return out

    @staticmethod
    def _bytes(text: str | None) -> int | None:
        value = int_or_none(text)
        return None if value is None or value >= UNLIMITED else value

    def _cpus(self, cpu: Path) -> float | None:
        quota = int_or_none(self._read(cpu / "cpu.cfs_quota_us"))
        period = int_or_none(self._read(cpu / "cpu.cfs_period_us"))
        return None if quota is None or not period else quota / period

    def _limits(self, group: str) -> dict:
        out: dict = {}
        if (cpu := self._dir("cpu", group)) is not None:
            quota = self._read(cpu / "cpu.cfs_quota_us")
            if quota is not None:
                out["cpu_quota_us"] = int_or_none(quota)
                out["cpu_period_us"] = int_or_none(self._read(cpu / "cpu.cfs_period_us"))
                out["cpus"] = self._cpus(cpu)
            if (shares := self._read(cpu / "cpu.shares")) is not None:
                out["cpu_shares"] = int(shares)
        if (cpuset := self._dir("cpuset", group)) is not None:
            if (cpus := self._read(cpuset / "cpuset.cpus")) is not None:
                out["cpuset_cpus"] = cpus.strip() or None
            if (cpus := self._read(cpuset / "cpuset.effective_cpus")) is not None:
                out["cpuset_cpus_effective"] = cpus.strip() or None
        if (freezer := self._dir("freezer", group)) is not None:
            if (state := self._read(freezer / "freezer.self_freezing")) is not None:
                out["freeze"] = state.strip() == "1"
        if (memory := self._dir("memory", group)) is not None:
            mem = self._read(memory / "memory.limit_in_bytes")
            if mem is not None:
                out["memory_max"] = self._bytes(mem)
            memsw = self._read(memory / "memory.memsw.limit_in_bytes")
            if memsw is not None:
                total = self._bytes(memsw)
                out["swap_max"] = None if total is None or out.get("memory_max") is None \
                    else total - out["memory_max"]
        if (pids := self._dir("pids", group)) is not None:
            if (pmax := self._read(pids / "pids.max")) is not None:
                out["pids_max"] = int_or_none(pmax)
        if (blkio := self._dir("blkio", group)) is not None:
            for name in ("blkio.weight", "blkio.bfq.weight"):
                if (w := self._read(blkio / name)) is not None:
                    out["io_weight"] = int(w.split()[-1])
                    break
        return out

    def mounts_inside(self, group: str | None = None) -> list[tuple[str, str, str]]:
        # Never a hierarchy the group is not in: the sandbox's cgroup namespace would then
        # show it the host's whole tree there.
        hs = self.hierarchies() if group is None else self._group_hierarchies(check_group(group))
        return [(self._subdir(h), "cgroup", ",".join(h.controllers)) for h in hs]

    def _container_limits(self, groups: dict[str, str]) -> dict:
        out: dict = {}

        def node(controller: str) -> Path | None:
            # The controller's own hierarchy, at the path the process has in it.
            return None if controller not in groups else self._dir(controller, groups[controller])

        if (cpu := node("cpu")) is not None:
            if (quota := self._read(cpu / "cpu.cfs_quota_us")) is not None:
                out["cpu_quota_us"] = int_or_none(quota)
                out["cpu_period_us"] = int_or_none(self._read(cpu / "cpu.cfs_period_us"))
                out["cpus"] = self._cpus(cpu)
            if (shares := self._read(cpu / "cpu.shares")) is not None:
                out["cpu_shares"] = int(shares)
        if (cpuset := node("cpuset")) is not None:
            for key, name in (("cpuset_cpus", "cpuset.cpus"), ("cpuset_mems", "cpuset.mems")):
                if (text := self._read(cpuset / name)) is not None:
                    out[key] = text.strip() or None
        if (memory := node("memory")) is not None:
            for key, name in (("memory_max", "memory.limit_in_bytes"),
                              ("memsw_max", "memory.memsw.limit_in_bytes"),
                              ("memory_reservation", "memory.soft_limit_in_bytes"),
                              ("kmem_max", "memory.kmem.limit_in_bytes")):
                if (text := self._read(memory / name)) is not None:
                    out[key] = self._bytes(text)
            if "memsw_max" in out:
                total, mem = out["memsw_max"], out.get("memory_max")
                out["swap_max"] = None if total is None or mem is None else total - mem
            if (swappiness := self._read(memory / "memory.swappiness")) is not None:
                out["memory_swappiness"] = int(swappiness)
            if (oom := self._read(memory / "memory.oom_control")) is not None:
                fields = keyed(oom)
                out["oom_kill_disable"] = fields.get("oom_kill_disable") == 1
                out["under_oom"] = fields.get("under_oom") == 1
                out["oom_kills"] = fields.get("oom_kill")  # Linux 4.13+
        if (pids := node("pids")) is not None:
            if (pmax := self._read(pids / "pids.max")) is not None:
                out["pids_max"] = int_or_none(pmax)
        return out
