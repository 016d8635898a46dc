"""cgroup v2: one unified hierarchy, delegated to the sandbox the way cgroup-v2.rst says.

Documentation/admin-guide/cgroup-v2.rst, the rules this follows:
- Top-down constraint: a controller can be enabled in a cgroup's cgroup.subtree_control
  only if the parent has it enabled, so every ancestor of a group enables what it needs.
- No-internal-process rule: a non-root cgroup with controllers enabled in its
  cgroup.subtree_control cannot hold processes. The sandbox's processes therefore live in
  the leaf <group>/init, and <group> enables its controllers only once the first process
  has been moved there (`finish_spawn`).
- Delegation: write access to the directory and its cgroup.procs, cgroup.threads and
  cgroup.subtree_control; the resource files of <group> distribute the parent's resources
  and stay with root. With nsdelegate the cgroup namespace is a delegation boundary too.
"""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path

from .cgroupsbase import (CPU_PERIOD_US, MAX_DEPTH, MAX_DESCENDANTS, STAT_KEYS, CgroupManager,
                          Limits, check_group, int_or_none, keyed)
from .errors import HostUnsupported, InvalidRequest, NotFound
from .procfs import parse_cpulist
from .protocol import Reason

REQUIRED = ("cpu", "cpuset", "memory", "pids")
OPTIONAL = ("io",)
LEAF = "init"

# Files of <group> handed to the sandbox's root ("" is the directory itself).
DELEGATED = ("", "cgroup.procs", "cgroup.threads", "cgroup.subtree_control")


class CgroupsV2(CgroupManager):
    version = 2

    # -- layout -------------------------------------------------------------------------

    def _dirs(self, group: str) -> list[Path]:
        return [self.root / group]

    def _controllers(self, d: Path, name: str = "cgroup.controllers") -> set[str]:
        return set((self._read(d / name) or "").split())

    def _wanted(self) -> list[str]:
        available = self._controllers(self.root)
        return [c for c in REQUIRED + OPTIONAL if c in available]

    def _enable(self, d: Path) -> None:
        """Enable the controllers sandboxes use in d's cgroup.subtree_control."""
        have = self._controllers(d, "cgroup.subtree_control")
        offered = self._controllers(d)
        missing = [c for c in self._wanted() if c not in have and c in offered]
        if missing:
            self._write(d / "cgroup.subtree_control", " ".join("+" + c for c in missing))

    # -- host check ---------------------------------------------------------------------

    def check(self) -> None:
        if os.geteuid() != 0:
            raise HostUnsupported("managing cgroups needs root: run sandboxd as root")
        if self._read(self.root / "cgroup.controllers") is None:
            raise HostUnsupported(f"{self.root} is not a cgroup v2 mount: mount it with "
                                  f"'mount -t cgroup2 -o nsdelegate cgroup2 {self.root}'")
        available = self._controllers(self.root)
        problems = [
            f"cgroup v2 controller '{c}' is not available in {self.root}/cgroup.controllers: "
            f"it is bound to a cgroup v1 hierarchy (unmount that, or boot with "
            f"cgroup_no_v1=all) or disabled (remove cgroup_disable={c} from the kernel "
            "command line)"
            for c in REQUIRED if c not in available]
        if os.statvfs(self.root).f_flag & os.ST_RDONLY:
            problems.append(f"{self.root} is mounted read-only: remount it read-write (in a "
                            "container: run it privileged with its own cgroup namespace)")
        if problems:
            raise HostUnsupported("; ".join(problems))

    # -- create and limit ---------------------------------------------------------------

    def _make_parents(self, group: str) -> None:
        parts = group.split("/")
        self._enable(self.root)
        for i in range(1, len(parts)):
            d = self.root.joinpath(*parts[:i])
            self._mkdir(d)
            self._enable(d)

    def _check_cpuset(self, group: str, cpuset: str) -> None:
        # Missing parents take all their parent's CPUs; look at the nearest one that exists.
        parent = (self.root / group).parent
        while not parent.is_dir() and parent != self.root:
            parent = parent.parent
        available = (self._read(parent / "cpuset.cpus.effective") or "").strip()
        if not available:
            return  # cpuset not enabled above this group: nothing to check against
        if not parse_cpulist(cpuset) <= parse_cpulist(available):
            raise InvalidRequest(f"cpuset {cpuset!r} is not within the CPUs available to "
                                 f"sandboxes here ({available})", field="cpuset")

    def create(self, group: str, limits: Limits, owner_uid: int, owner_gid: int, *,
               containers: bool = False) -> None:
        # `containers` asks nothing more of v2: one hierarchy, every controller delegated.
        check_group(group)
        limits.validate()
        self._check_owner(owner_uid, owner_gid)
        g = self.root / group
        if g.exists():
            raise self._conflict(group)
        if limits.cpuset is not None:
            self._check_cpuset(group, limits.cpuset)
        made: list[Path] = []
        try:
            self._make_parents(group)
            if not self._mkdir(g):
                raise self._conflict(group)
            made.append(g)
            # Linux 4.14+; without them the subtree is bounded only by the pids limit.
            # Root keeps these files: the sandbox's root cannot raise them (cgroupsbase
            # says why these values).
            self._write(g / "cgroup.max.depth", MAX_DEPTH, tolerate=(errno.ENOENT,))
            self._write(g / "cgroup.max.descendants", MAX_DESCENDANTS,
                        tolerate=(errno.ENOENT,))
            self._mkdir(g / LEAF)
            made.append(g / LEAF)
            self.set_limits(group, limits)
            for name in DELEGATED:
                self._chown(g / name if name else g, owner_uid, owner_gid,
                            tolerate_missing=bool(name))
            self._chown_tree(g / LEAF, owner_uid, owner_gid)
        except BaseException:
            deadline = time.monotonic() + 2.0
            for d in reversed(made):
                self._rmdir_retry(d, deadline)
            raise

    def _chown_tree(self, d: Path, uid: int, gid: int) -> None:
        """Hand a cgroup the sandbox owns, with every file in it, to the sandbox's root."""
        self._chown(d, uid, gid)
        for entry in os.scandir(d):
            if entry.is_file(follow_symlinks=False):
                self._chown(Path(entry.path), uid, gid, tolerate_missing=True)

    def set_limits(self, group: str, limits: Limits) -> None:
        self._require(group)
        limits.validate()
        g = self.root / group
        if limits.cpus is not None:
            self._write(g / "cpu.max", f"{limits.cpu_quota_us} {CPU_PERIOD_US}")
        if limits.cpu_weight is not None:
            self._write(g / "cpu.weight", limits.cpu_weight)
        if limits.cpuset is not None:
            self._check_cpuset(group, limits.cpuset)
            self._write(g / "cpuset.cpus", limits.cpuset)
        if limits.memory is not None:
            self._write(g / "memory.max", limits.memory)
        # memory.swap.max exists only with swap accounting (CONFIG_MEMCG_SWAP, swapaccount).
        if limits.swap is not None and (g / "memory.swap.max").exists():
            self._write(g / "memory.swap.max", limits.swap)
        if limits.pids is not None:
            self._write(g / "pids.max", limits.pids)
        # io.weight exists only where the io controller is enabled for the group.
        if limits.io_weight is not None and (g / "io.weight").exists():
            self._write(g / "io.weight", f"default {limits.io_weight}")

    # -- processes ----------------------------------------------------------------------

    def spawn_procs_files(self, group: str) -> list[str]:
        return [str(self.root / check_group(group) / "cgroup.procs")]

    def finish_spawn(self, group: str, pid: int) -> None:
        """Move the new process (and anything else in <group> itself) into <group>/init,
        then enable controllers for <group>'s children, which the no-internal-process
        rule allows only once <group> holds no process."""
        g = self.root / self._require(group)
        if not self._write(g / LEAF / "cgroup.procs", int(pid), tolerate=(errno.ESRCH,)):
            raise NotFound(f"process {pid} exited before it was moved into {g / LEAF}",
                           reason=Reason.NO_SUCH_PROCESS)
        # A process the new one forked early would still sit in <group> and block the rule.
        for other in self._node_pids(g):
            self._write(g / LEAF / "cgroup.procs", other, tolerate=(errno.ESRCH,))
        self._enable(g)
        # Controller files appear in init only now, owned by root: hand them over as well.
        st = os.stat(g)
        self._chown_tree(g / LEAF, st.st_uid, st.st_gid)

    def exec_procs_files(self, group: str) -> list[str]:
        g = self.root / self._require(group)
        # The sandbox's root owns <group> and may have removed an empty init; bring it back.
        if self._mkdir(g / LEAF):
            st = os.stat(g)
            self._chown_tree(g / LEAF, st.st_uid, st.st_gid)
        return [str(g / LEAF / "cgroup.procs")]

    def kill_all(self, group: str, timeout: float = 5.0) -> None:
        check_group(group)
        g = self.root / group
        deadline = time.monotonic() + timeout
        has_kill = (g / "cgroup.kill").exists()  # Linux 5.14+
        while self._procs(group):
            if time.monotonic() > deadline:
                raise self._kill_timeout(group, timeout)
            if has_kill:
                # cgroup.kill signals the whole subtree in the kernel, with forks in flight.
                self._write(g / "cgroup.kill", "1", tolerate=(errno.ENOENT, errno.ENODEV))
            else:
                frozen = self._write(g / "cgroup.freeze", "1",
                                     tolerate=(errno.ENOENT, errno.ENODEV))
                if frozen:
                    self._wait_frozen(g, min(deadline, time.monotonic() + 0.5))
                self._signal_all(group)
                if frozen:
                    self._write(g / "cgroup.freeze", "0", tolerate=(errno.ENOENT, errno.ENODEV))
            self._wait_empty(group, min(deadline, time.monotonic() + 0.5))

    def _wait_frozen(self, g: Path, until: float) -> None:
        while keyed(self._read(g / "cgroup.events")).get("frozen", 1) != 1:
            if time.monotonic() > until:
                return
            time.sleep(0.005)

    # -- inspection ---------------------------------------------------------------------

    def _usage(self, group: str) -> dict:
        g = self.root / group
        out = dict.fromkeys(STAT_KEYS)
        stat = keyed(self._read(g / "cpu.stat"))
        if "usage_usec" in stat:
            out["cpu_usage_ns"] = stat["usage_usec"] * 1000
        # The bandwidth lines are there only where the cpu controller is enabled for the
        # group; v2 counts the throttled time in microseconds.
        out["cpu_nr_periods"] = stat.get("nr_periods")
        out["cpu_nr_throttled"] = stat.get("nr_throttled")
        if "throttled_usec" in stat:
            out["cpu_throttled_ns"] = stat["throttled_usec"] * 1000
        out["memory_current"] = int_or_none(self._read(g / "memory.current"))
        out["memory_peak"] = int_or_none(self._read(g / "memory.peak"))  # Linux 5.19+
        out["memory_limit"] = int_or_none(self._read(g / "memory.max"))
        events = self._read(g / "memory.events")
        if events is not None:
            out["oom_kills"] = keyed(events).get("oom_kill")
        out["pids_current"] = int_or_none(self._read(g / "pids.current"))
        out["pids_limit"] = int_or_none(self._read(g / "pids.max"))
        out["pids_events_max"] = keyed(self._read(g / "pids.events")).get("max")
        out["cpus"] = self._limits(group).get("cpus")
        out["frozen"] = keyed(self._read(g / "cgroup.events")).get("frozen") == 1
        return out

    def _limits(self, group: str) -> dict:
        g = self.root / group
        out: dict = {}
        if (cpu_max := self._read(g / "cpu.max")) is not None:
            quota, _, period = cpu_max.strip().partition(" ")
            out["cpu_quota_us"] = int_or_none(quota)
            out["cpu_period_us"] = int(period or CPU_PERIOD_US)
            out["cpus"] = None if out["cpu_quota_us"] is None \
                else out["cpu_quota_us"] / out["cpu_period_us"]
        if (weight := self._read(g / "cpu.weight")) is not None:
            out["cpu_weight"] = int(weight)
        if (cpus := self._read(g / "cpuset.cpus")) is not None:
            out["cpuset_cpus"] = cpus.strip() or None
        if (cpus := self._read(g / "cpuset.cpus.effective")) is not None:
            out["cpuset_cpus_effective"] = cpus.strip() or None
        if (freeze := self._read(g / "cgroup.freeze")) is not None:
            out["freeze"] = freeze.strip() == "1"
        for key, name in (("memory_max", "memory.max"), ("swap_max", "memory.swap.max"),
                          ("pids_max", "pids.max")):
            if (text := self._read(g / name)) is not None:
                out[key] = int_or_none(text)
        if (io := self._read(g / "io.weight")) is not None:
            for line in io.splitlines():
                key, _, value = line.partition(" ")
                if key == "default":
                    out["io_weight"] = int(value)
        return out

    def mounts_inside(self, group: str | None = None) -> list[tuple[str, str, str]]:
        return [("", "cgroup2", "")]

    def _container_limits(self, groups: dict[str, str]) -> dict:
        if "" not in groups:
            return {}
        g = self.root / groups[""]
        out = {k: v for k, v in self._limits(groups[""]).items()
               if k in ("cpu_quota_us", "cpu_period_us", "cpus", "cpu_weight", "cpuset_cpus",
                        "memory_max", "swap_max", "pids_max")}
        if (mems := self._read(g / "cpuset.mems")) is not None:
            out["cpuset_mems"] = mems.strip() or None
        for key, name in (("memory_low", "memory.low"), ("memory_high", "memory.high")):
            if (text := self._read(g / name)) is not None:
                out[key] = int_or_none(text)
        if "memory_low" in out:
            # Docker's --memory-reservation on v2: 0 is v2's "no protection".
            out["memory_reservation"] = out["memory_low"] or None
        if (events := self._read(g / "memory.events")) is not None:
            out["oom_kills"] = keyed(events).get("oom_kill")
        return out
