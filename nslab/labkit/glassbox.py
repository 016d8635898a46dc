"""The "glass box" shown after a Docker exercise passes: what the kernel holds for the
learner's container, read from the host. Which namespaces it got (and which it shares with
the sandbox), the cgroup it is in, and the file each Docker flag wrote there with the value
the host reads now, on this host's cgroup version. Markdown, for a check's pass message:

    return "Right: ..." + "\\n\\n" + glass_box(sb, web, flags=("cpus", "memory"))
"""

from __future__ import annotations

from dataclasses import dataclass

from .check import Container, SandboxView

MIB = 1 << 20


@dataclass(frozen=True)
class Flag:
    """A Docker flag and the cgroup file it writes: (v1 file, v2 file) per limit key;
    None where that version has no such file (the flag does nothing there)."""

    spelling: str
    files: tuple[tuple[str, str | None, str | None], ...]  # (limit key, v1 file, v2 file)
    note_v2: str = ""


FLAGS: dict[str, Flag] = {
    "cpus": Flag("--cpus", (("cpu_quota_us", "cpu.cfs_quota_us", "cpu.max"),
                            ("cpu_period_us", "cpu.cfs_period_us", None))),
    "cpu-shares": Flag("-c/--cpu-shares", (("cpu_shares", "cpu.shares", None),
                                           ("cpu_weight", None, "cpu.weight")),
                       "shares are converted to a weight (1024 → 100)"),
    "cpuset-cpus": Flag("--cpuset-cpus", (("cpuset_cpus", "cpuset.cpus", "cpuset.cpus"),)),
    "memory": Flag("-m/--memory", (("memory_max", "memory.limit_in_bytes", "memory.max"),)),
    "memory-swap": Flag("--memory-swap", (("memsw_max", "memory.memsw.limit_in_bytes", None),
                                          ("swap_max", None, "memory.swap.max")),
                        "swap alone: --memory-swap minus -m"),
    "memory-reservation": Flag("--memory-reservation",
                               (("memory_reservation", "memory.soft_limit_in_bytes",
                                 "memory.low"),)),
    "memory-swappiness": Flag("--memory-swappiness",
                              (("memory_swappiness", "memory.swappiness", None),),
                              "no per-cgroup swappiness: the flag is ignored"),
    "oom-kill-disable": Flag("--oom-kill-disable",
                             (("oom_kill_disable", "memory.oom_control", None),),
                             "no such switch: the flag is ignored"),
    "kernel-memory": Flag("--kernel-memory", (("kmem_max", "memory.kmem.limit_in_bytes", None),),
                          "kernel memory is counted in memory.max; the flag is ignored"),
    "pids-limit": Flag("--pids-limit", (("pids_max", "pids.max", "pids.max"),)),
}


def glass_box(sb: SandboxView, container: Container, flags: tuple[str, ...] = ()) -> str:
    """Markdown: the container's namespaces beside the sandbox's, its cgroup, and for each
    flag in `flags` (keys of FLAGS) the file it wrote and its value now."""
    unknown = [f for f in flags if f not in FLAGS]
    if unknown:
        raise ValueError(f"glass_box: unknown flags {unknown}; known: {sorted(FLAGS)}")
    v = sb.cgroup_version
    mine = sb.init.namespaces
    main = container.main
    lines = [f"**In the kernel** — the container's PID 1 is `{main.comm}` "
             f"(pid {main.sandbox_pid} in your sandbox, {main.host_pid} on the host"
             + (f", started by `{main.parent_comm}`" if main.parent_comm else "") + ").",
             "",
             "| namespace | container | your sandbox | |",
             "|---|---|---|---|"]
    for kind in sorted(container.namespaces):
        own, base = container.namespaces[kind], mine.get(kind)
        new = "new" if kind in container.new_namespaces else "shared"
        lines.append(f"| {kind} | `{own}` | `{base if base is not None else '?'}` | {new} |")
    if container.cgroup:
        lines += ["", f"Its cgroup: `{_cgroup_dir(v, container)}`"]
    rows = _flag_rows(v, container, flags)
    if rows:
        lines += ["", "| flag | file (cgroup v%d) | value now |" % v, "|---|---|---|"] + rows
    return "\n".join(lines)


def _cgroup_dir(version: int, container: Container) -> str:
    if version == 2:
        return f"/sys/fs/cgroup{container.cgroup}"
    return f"/sys/fs/cgroup/<controller>{container.cgroup}"


def _flag_rows(version: int, container: Container, flags: tuple[str, ...]) -> list[str]:
    rows = []
    limits = container.limits
    for name in flags:
        flag = FLAGS[name]
        wrote = False
        for key, v1_file, v2_file in flag.files:
            file = v1_file if version == 1 else v2_file
            if file is None or key not in limits:
                continue
            wrote = True
            value = _cpu_max(limits) if file == "cpu.max" else _show(key, limits[key])
            rows.append(f"| `{flag.spelling}` | `{file}` | {value} |")
        if not wrote:
            why = flag.note_v2 if version == 2 and flag.note_v2 else \
                "this host's kernel has no such file"
            rows.append(f"| `{flag.spelling}` | — | {why} |")
    return rows


def _cpu_max(limits: dict) -> str:
    quota, period = limits.get("cpu_quota_us"), limits.get("cpu_period_us")
    return f"`{'max' if quota is None else quota} {period}`"


def _show(key: str, value) -> str:
    if value is None:
        return "`max` (no limit)"
    if isinstance(value, bool):
        return "`1`" if value else "`0`"
    if key.endswith("_max") and key not in ("pids_max",) or key == "memory_reservation":
        if isinstance(value, int) and value >= MIB:
            return f"`{value}` ({value / MIB:g} MiB)"
    if key == "cpu_quota_us" and isinstance(value, int) and value < 0:
        return "`-1` (no limit)"
    return f"`{value}`"
