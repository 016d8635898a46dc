"""Checks of the docker-limits lab.

Every Docker flag of the course document ends up as a number in a cgroup file of the
container. The checks find the containers from the kernel (a pid namespace below the
sandbox's: `sb.containers`), read the files the flags wrote in each container's own cgroup
(`Container.limits`), its counters (OOM kills, refused forks, CFS periods and throttling)
and its processes' scheduler time, all from the host. What `docker ps`, `docker inspect` or
a file inside the sandbox says is never graded: a learner who is root inside can write the
engine's store, fake a cgroup file in /tmp or bind-mount one; none of that changes what the
host reads. A container's name and image are labels from the engine's store: they only say
which container a message is about.

The same checks hold on cgroup v1 and v2 (`Container.limits` uses one key where the two mean
the same); where the versions differ (`--cpu-shares` lands in cpu.shares or cpu.weight,
`--memory-swappiness` and `--oom-kill-disable` exist only on v1), the check branches on
`sb.cgroup_version`, and the exercise's text shows each learner only their version.

Measured checks must hold on a busy host: they measure for a second, and longer when that
second says too little (the cgroups lab's approach: a hog that is runnable all along yet
gets less than its quota is starved by the host, and the quota it runs under, read from the
host, is what is graded then).
"""

from __future__ import annotations

import re
import time

from nslab.labkit.check import Fail
from nslab.labkit.glassbox import glass_box

MIB = 1 << 20
CPU_MARGIN = 0.05            # the task's ±0.05 CPU
RUNNABLE_SHARE = 0.9         # a CPU hog is runnable (state R) in nearly every look
HELD_SHARE = 0.5             # throttled in at least half its periods: held at its quota
WINDOWS = (1.0, 2.0, 4.0)    # seconds measured: the first on a quiet host, more when busy
SPLIT_WINDOWS = (1.0, 2.0, 4.0)
SPLIT_CPU_SECONDS = 0.2      # CPU time a pair must get before their ratio means something
# CPU time a container must have used beyond what its current quota allows in the periods
# the kernel counted under a quota: proof that it ran faster before the quota was set.
UPDATE_EXTRA_SECONDS = 0.3
# A memory cgroup's usage can pass its limit by a few pages the kernel must not refuse
# (an OOM victim's last charges); much more means a limit lowered afterwards.
PEAK_SLACK = 8 * MIB
# podman's engine names a container's cgroup after its 64-hex id (libpod-<id>, or
# docker-<id>.scope under systemd); a cgroup below that one was made by someone else.
ENGINE_CGROUP = re.compile(r"[0-9a-f]{64}(?:\.scope)?$")
# v1 cpu.shares and v2 cpu.weight when nobody set them.
DEFAULT_WEIGHT = {1: 1024, 2: 100}


# ----------------------------------------------------------------- helpers

def _label(c) -> str:
    """How a message names a container: its name label, else its id, else its PID 1."""
    if c.name:
        return f"container `{c.name}`"
    if c.id:
        return f"container `{c.id[:12]}`"
    return f"the container whose PID 1 is `{c.main.comm}` (pid {c.main.sandbox_pid})"


def _containers(sb, what: str) -> list:
    found = [c for c in sb.containers if c.level == 1]
    if not found:
        raise Fail(f"No container runs in your sandbox. {what}")
    return found


def _hand_made(c) -> str | None:
    """Why container `c`'s PID 1 is not in the cgroup the engine made for it (the engine
    names that one after the container's id), or None when it is: a limit read from a
    cgroup someone made by hand is not the container's limit."""
    path = c.cgroup or ""
    if ENGINE_CGROUP.search(path):
        return None
    parts = path.split("/")
    for i in range(len(parts) - 1, 0, -1):
        if ENGINE_CGROUP.search(parts[i]):
            engine = "/".join(parts[:i + 1])
            return (f"{_label(c)} runs in `{path}`, a cgroup made by hand below the one the "
                    f"engine made for it (`{engine}`)")
    return (f"{_label(c)} runs in `{path}`, which is not the cgroup the engine made for a "
            "container (that one is named after the container's id, `libpod-<id>`): its PID "
            "1 was moved out by hand, or it was not started by docker")


def _weight(sb, c) -> int | None:
    return c.limits.get("cpu_weight" if sb.cgroup_version == 2 else "cpu_shares")


def _weight_file(sb) -> str:
    return "cpu.weight" if sb.cgroup_version == 2 else "cpu.shares"


def _paused(sb, c) -> bool:
    path = c.cgroups.get("freezer") or c.cgroup
    cg = sb.cgroup(path) if path else None
    return bool(cg is not None and cg.frozen)


def _mib(value) -> str:
    return "no limit" if value is None else f"{value / MIB:g} MiB"


def _is(value, want: float) -> bool:
    return value is not None and abs(value - want) < 0.005


def _wait(sb, pending, seconds: float) -> None:
    """Read the facts again while `pending(sb)` holds, for at most `seconds`: a hog started
    a moment ago may not have reached its container's limit yet."""
    until = time.monotonic() + seconds
    while pending(sb) and time.monotonic() < until and sb.deadline_left() > 3:
        time.sleep(0.25)
        sb.refresh()


# ----------------------------------------------------------------- measuring a quota

def _verdict(meter, key, cgroup: str, target: float) -> str:
    """What one window says of a container's processes under a quota of `target` CPU:
    "at quota" (target ± margin), "throttled" (the host is busy, but the group ran out of
    quota in most periods, so the quota holds it), "starved" (runnable all along, yet below
    its quota: the host gives it less), "over" (only a measuring error could do that), or
    "low" (below its quota because it does not try)."""
    u = meter.cpus(key)
    if abs(u - target) <= CPU_MARGIN:
        return "at quota"
    if u > target:
        return "over"
    th = meter.throttling(cgroup)
    if th is not None and th.periods and th.share >= HELD_SHARE:
        return "throttled"
    if meter.runnable(key) >= RUNNABLE_SHARE:
        return "starved"
    return "low"


def _measure_quota(sb, c, target: float) -> str:
    """Pass text when `c`'s processes burn CPU held at `target` by its quota; Fail otherwise."""
    procs = sb.processes_of(c)
    others = [p for p in sb.processes() if p.host_pid not in set(c.processes)]
    groups = {"hog": procs}
    groups.update({("other", p.host_pid): [p] for p in others})
    meter = sb.cpu_meter(groups, cgroups=[c.cgroup])
    period = c.limits.get("cpu_period_us") or 100000
    verdict = "low"
    for window in WINDOWS:
        meter.run(window, period_us=period)
        verdict = _verdict(meter, "hog", c.cgroup, target)
        if verdict in ("at quota", "throttled"):
            break
        # Measure longer only while that could change the verdict.
        if verdict not in ("starved", "over") and window >= 2:
            break
        if meter.seconds < window - 0.3:  # the check's deadline cut the window short
            break
    used = meter.cpus("hog")
    th = meter.throttling(c.cgroup)
    if verdict == "at quota":
        return (f"the host measured its processes using {used:.2f} CPU over "
                f"{meter.seconds:.1f} s: the kernel holds them at {target:g} CPU.")
    if verdict == "throttled":
        return (f"the host is busy, so it got {used:.2f} CPU over {meter.seconds:.1f} s, but "
                f"the kernel throttled it in {th.throttled} of {th.periods} periods: each "
                f"time it used up its {target:g} CPU and waited for the next period.")
    busy = [(p, meter.cpus(("other", p.host_pid))) for p in others]
    busy = [(p, b) for p, b in busy if b >= 0.2]
    if verdict == "starved" and not busy and meter.seconds >= 1.5:
        return (f"the host is busy: over {meter.seconds:.1f} s its hog was ready to run in "
                f"{meter.runnable('hog'):.0%} of the host's looks, yet got only {used:.2f} "
                f"CPU. The quota, read from the host, is in place: on a quieter machine the "
                f"kernel would hold it at {target:g} CPU.")
    head = (f"{_label(c)} has the right quota ({target:g} CPU), but its processes used "
            f"{used:.2f} CPU over {meter.seconds:.1f} s; under this quota a hog uses "
            f"{target:g} ± {CPU_MARGIN} CPU.")
    if _paused(sb, c):
        raise Fail(head + " It is paused (`docker pause` froze its cgroup): `docker unpause` "
                   "it.")
    if used < 0.05 and meter.runnable("hog") < RUNNABLE_SHARE:
        raise Fail(head + " It is not burning CPU: the task needs a hog inside, e.g. a shell "
                   "loop `sh -c 'while :; do :; done'` as its command, running (not paused "
                   "or stopped).")
    if busy:
        raise Fail(head + " Other busy processes of your sandbox compete for the CPUs: "
                   + ", ".join(f"`{p.comm}` (pid {p.pid}, {b:.2f} CPU)" for p, b in busy)
                   + "; stop them and press Check again.")
    raise Fail(head + f" It was ready to run in only {meter.runnable('hog'):.0%} of the "
               "host's looks: does it sleep, or was it paused for a while?")


def _describe_cpu(sb, c, target: float) -> str:
    """Why container `c` is not limited to `target` CPU by its own cgroup's quota."""
    moved = _hand_made(c)
    if moved is not None:
        cpus = c.limits.get("cpus")
        return (moved + (f", with a quota of {cpus:g} CPU" if cpus is not None else "")
                + ". Docker knows nothing of that cgroup: `docker inspect` and `docker "
                "stats` do not show it, `docker update` does not change it, and a restart "
                "loses it. Give the container itself the limit: `docker run --cpus` or "
                "`docker update --cpus`.")
    cpus = c.limits.get("cpus")
    weight = _weight(sb, c)
    if cpus is None and weight not in (None, DEFAULT_WEIGHT[sb.cgroup_version]):
        return (f"{_label(c)} has no CPU quota, only a CPU weight ({_weight_file(sb)} "
                f"{weight}): that is what `--cpu-shares` writes. Shares are a weight, not a "
                "cap: they only divide a CPU between containers that compete for it, and a "
                "container alone on a free CPU still gets all of it. `--cpus` writes the "
                "quota.")
    if cpus is None:
        return f"{_label(c)} has no CPU quota (its cgroup's quota is `max`)."
    return (f"{_label(c)} has a quota of {cpus:g} CPU ({c.limits.get('cpu_quota_us')} µs per "
            f"{c.limits.get('cpu_period_us')} µs); the task asks for {target:g} CPU.")


# ----------------------------------------------------------------- --cpus (the headline)

def cpu_limit(sb, params):
    target = float(params["target"])
    found = _containers(sb, f"Run one that burns CPU, limited to {target:g} CPU.")
    right = [c for c in found if _hand_made(c) is None and _is(c.cpus, target)]
    if not right:
        raise Fail(" ".join(_describe_cpu(sb, c, target) for c in found))
    notes = []
    for c in right:
        try:
            measured = _measure_quota(sb, c, target)
        except Fail as e:
            notes.append(e.message)
            continue
        return (f"{_label(c)} has a quota of {c.limits['cpu_quota_us']} µs per "
                f"{c.limits['cpu_period_us']} µs = {target:g} CPU in its own cgroup, and "
                f"{measured}\n\n" + glass_box(sb, c, flags=("cpus",)))
    raise Fail(" ".join(notes))


# ----------------------------------------------------------------- --cpuset-cpus

def cpuset_pin(sb, params):
    cpu = str(params["cpu"])
    notes = []
    for c in _containers(sb, f"Run one pinned to CPU {cpu}."):
        procs = sb.processes_of(c)
        allowed = sorted({p.cpus_allowed for p in procs if p.cpus_allowed})
        mine = c.limits.get("cpuset_cpus")
        if mine == cpu and allowed == [cpu]:
            return (f"{_label(c)}'s cgroup allows CPU {cpu} only (`cpuset.cpus` {mine}), "
                    f"and the host's /proc says each of its {len(procs)} process(es) may run "
                    f"on CPU {cpu} only.\n\n" + glass_box(sb, c, flags=("cpuset-cpus",)))
        if mine != cpu and allowed == [cpu]:
            notes.append(f"The processes of {_label(c)} may run on CPU {cpu} only, but by "
                         f"their own affinity (taskset): the container's cgroup allows CPUs "
                         f"{mine}, so any process in it may widen its affinity again. "
                         "`--cpuset-cpus` puts the limit on the container's cgroup.")
        elif mine == cpu:
            notes.append(f"{_label(c)}'s cgroup allows CPU {cpu}, yet its processes may run "
                         f"on CPUs {', '.join(allowed) or 'none (no process)'}.")
        else:
            notes.append(f"{_label(c)}'s cgroup allows CPUs {mine} (`cpuset.cpus`); the task "
                         f"asks for CPU {cpu} only.")
    raise Fail(" ".join(notes))


# ----------------------------------------------------------------- --cpu-shares

def cpu_shares(sb, params):
    ratio = int(params["ratio"])
    found = _containers(sb, "Run two CPU hogs, each in a container of its own.")
    file = _weight_file(sb)
    rows = []
    for c in found:
        procs = sb.processes_of(c)
        allowed = sorted({p.cpus_allowed for p in procs if p.cpus_allowed})
        rows.append((c, procs, allowed, _weight(sb, c)))
    seen = "; ".join(f"{_label(c)} ({file} {w}, CPUs {', '.join(a) or '?'})"
                     for c, _, a, w in rows)
    if len(rows) < 2:
        raise Fail(f"I see one container ({seen}); the task needs two CPU hogs in two "
                   "containers whose weights are "
                   f"{ratio}:1.")
    pairs = []
    for a in rows:
        for b in rows:
            if a is not b and a[3] and b[3] and abs(a[3] / b[3] - ratio) <= 0.12 * ratio:
                pairs.append((a, b))
    if not pairs:
        quota = [c for c, *_ in rows if c.cpus is not None]
        raise Fail(f"No two containers have CPU weights of {ratio}:1 ({seen})."
                   + (" Some have a CPU quota (`--cpus`): a quota is a cap on each alone, "
                      "not a share of a CPU they compete for; this task is about "
                      "`--cpu-shares`." if quota else "")
                   + f" `--cpu-shares` sets the weight (v1 writes it to cpu.shares, v2 "
                   "converts it to cpu.weight).")
    pinned = [(a, b) for a, b in pairs if len(a[2]) == 1 and a[2] == b[2] and "," not in
              a[2][0] and "-" not in a[2][0]]
    if not pinned:
        (ca, _, aa, _), (cb, _, ab, _) = pairs[0]
        raise Fail(f"{_label(ca)} may run on CPUs {', '.join(aa)} and {_label(cb)} on "
                   f"CPUs {', '.join(ab)}. Weights only divide a CPU between tasks that "
                   "compete for it: with a free CPU each, each hog gets a whole one and the "
                   "weights never come into play. Pin both to the same single CPU "
                   "(`--cpuset-cpus`).")
    (ca, pa, aa, wa), (cb, pb, _, wb) = pinned[0]
    meter = sb.cpu_meter({"a": pa, "b": pb})
    enough = False
    for window in SPLIT_WINDOWS:
        meter.run(window)
        enough = meter.cpu_seconds("a") + meter.cpu_seconds("b") >= SPLIT_CPU_SECONDS
        ready = min(meter.runnable("a"), meter.runnable("b")) >= RUNNABLE_SHARE
        if enough or meter.seconds < window - 0.3 or (not ready and window >= 2):
            break
    ua, ub = meter.cpus("a"), meter.cpus("b")
    got = ua / ub if ub > 0.001 else float("inf")
    low, high = ratio * 0.8, ratio * 1.25
    if enough and low <= got <= high:
        return (f"On CPU {aa[0]}, {_label(ca)} ({file} {wa}) used {ua:.2f} CPU and "
                f"{_label(cb)} ({file} {wb}) {ub:.2f} CPU over {meter.seconds:.1f} s: a "
                f"ratio of {got:.2f}, measured from the host.\n\n"
                + glass_box(sb, ca, flags=("cpu-shares", "cpuset-cpus")))
    if not enough and ready:
        return (f"On CPU {aa[0]}, {_label(ca)} ({file} {wa}) and {_label(cb)} ({file} {wb}) "
                f"were both ready to run all along, but the host is busy: over "
                f"{meter.seconds:.1f} s they got only {ua:.3f} and {ub:.3f} CPU, too little "
                "to measure a split. The weights and the pinning, read from the host, are "
                f"right: whatever CPU time the two get, the kernel divides it {ratio}:1.\n\n"
                + glass_box(sb, ca, flags=("cpu-shares", "cpuset-cpus")))
    raise Fail(f"Both containers are pinned to CPU {aa[0]} with weights {wa} and {wb}, but "
               f"over {meter.seconds:.1f} s they used {ua:.2f} and {ub:.2f} CPU (ratio "
               f"{got:.2f}; about {ratio} expected). Do both run a CPU hog, not paused, and "
               "is nothing else of yours busy on that CPU? Press Check again to measure "
               "again.")


# ----------------------------------------------------------------- docker update

def docker_update(sb, params):
    """A quota set on a running container: the container's cgroup has used more CPU time
    than its current quota allows in the periods the kernel counted under a quota (cpu.stat
    nr_periods counts only while a quota is set), so it ran without that quota first, in
    the same cgroup, i.e. the same container. One made anew with `--cpus` has used at most
    its quota in every period of its life."""
    want = float(params["update_cpus"])
    found = _containers(sb, "Start a CPU hog without a limit, then limit it while it runs.")
    right = [c for c in found if _hand_made(c) is None and _is(c.cpus, want)]
    if not right:
        raise Fail(" ".join(_describe_cpu(sb, c, want) for c in found))
    notes = []
    for c in right:
        usage = (sb.cgroup(c.cgroup).usage if sb.cgroup(c.cgroup) else {})
        used, periods = usage.get("cpu_usage_ns"), usage.get("cpu_nr_periods")
        if used is None or periods is None:
            notes.append(f"The host cannot read the CPU counters of {_label(c)}'s cgroup.")
            continue
        period = (c.limits.get("cpu_period_us") or 100000) / 1e6
        extra = used / 1e9 - want * periods * period
        if extra < UPDATE_EXTRA_SECONDS:
            notes.append(f"{_label(c)} has a quota of {want:g} CPU, but it has had it all its "
                         f"life: its cgroup used {used / 1e9:.1f} s of CPU in "
                         f"{periods * period:.1f} s under a quota, no more than {want:g} CPU "
                         "allows: it never ran faster. It was made with its limit (or a "
                         "lower one); the task is to limit a container that has been "
                         "running without one for a while (`docker update`).")
            continue
        try:
            measured = _measure_quota(sb, c, want)
        except Fail as e:
            notes.append(e.message)
            continue
        return (f"{_label(c)} used {extra:.1f} s of CPU more than a quota of {want:g} CPU "
                f"would have allowed since one was set: it ran unlimited first, and the "
                f"quota was written into its running cgroup `{c.cgroup}` later. Now "
                f"{measured}\n\n" + glass_box(sb, c, flags=("cpus",)))
    raise Fail(" ".join(notes))


# ----------------------------------------------------------------- -m and the OOM killer

def _peak_note(sb, c) -> str | None:
    """Why `c`'s OOM kill does not prove its current limit: a peak above it."""
    limit = c.limits.get("memory_max")
    path = c.cgroups.get("memory") or c.cgroup
    cg = sb.cgroup(path) if path else None
    peak = cg.usage.get("memory_peak") if cg else None
    if limit is not None and peak is not None and peak > limit + PEAK_SLACK:
        return (f"{_label(c)}'s memory peaked at {peak / MIB:.0f} MiB, more than its limit "
                f"of {limit / MIB:g} MiB ever allows: the kill happened under a higher limit, "
                "lowered afterwards.")
    return None


def memory_oom(sb, params):
    want = int(params["mem_mb"]) * MIB

    def pending(sb) -> bool:
        limited = [c for c in sb.containers if c.limits.get("memory_max") == want]
        return bool(limited) and not any(c.oom_kills for c in limited)

    _wait(sb, pending, 3.0)
    notes = []
    for c in _containers(sb, f"Run one with a memory limit of {want // MIB} MiB."):
        limit, kills = c.limits.get("memory_max"), c.oom_kills or 0
        if limit == want and kills > 0 and (why := _peak_note(sb, c)) is None:
            return (f"{_label(c)} has a memory limit of {want // MIB} MiB and the kernel's "
                    f"OOM killer has killed {kills} process(es) in its cgroup, while the "
                    "container and your sandbox live on.\n\n"
                    + glass_box(sb, c, flags=("memory", "memory-swap")))
        if limit == want and kills > 0:
            notes.append(why)
        elif limit == want:
            notes.append(f"{_label(c)} has the right limit ({want // MIB} MiB), but nothing in "
                         "it was OOM-killed yet (oom_kill 0): run a process inside that "
                         "wants more memory than that.")
        elif limit is None and c.limits.get("memory_reservation"):
            soft = _mib(c.limits["memory_reservation"])
            notes.append(f"{_label(c)} has only a soft limit ({soft}, "
                         "`--memory-reservation`): the kernel reclaims down to it when memory "
                         "runs short, but never kills for it. `-m` sets the hard limit.")
        else:
            notes.append(f"{_label(c)} has a memory limit of {_mib(limit)}; the task asks for "
                         f"{want // MIB} MiB.")
    raise Fail(" ".join(notes))


# ----------------------------------------------------------------- swap, reservation, swappiness

def memory_knobs(sb, params):
    mem, swap = int(params["mem_mb"]) * MIB, int(params["swap_mb"]) * MIB
    res, swappiness = int(params["res_mb"]) * MIB, int(params["swappiness"])
    v1 = sb.cgroup_version == 1
    best, best_notes = None, None
    for c in _containers(sb, "Run one with the memory flags of this step."):
        lim = c.limits
        notes = []
        if lim.get("memory_max") != mem:
            notes.append(f"its memory limit is {_mib(lim.get('memory_max'))}, not "
                         f"{mem // MIB} MiB (`-m`)")
        if lim.get("swap_max") != swap:
            got = lim.get("swap_max")
            total = lim.get("memsw_max")
            notes.append(f"it may use {_mib(got)} of swap, not {swap // MIB} MiB"
                         + (f" (memory plus swap: {_mib(total)})" if v1 and total else "")
                         + ": `--memory-swap` is memory plus swap, not the swap alone, so "
                         f"{swap // MIB} MiB of swap on top of {mem // MIB} MiB is "
                         f"`--memory-swap {(mem + swap) // MIB}m`")
        if lim.get("memory_reservation") != res:
            notes.append(f"its soft limit is {_mib(lim.get('memory_reservation'))}, not "
                         f"{res // MIB} MiB (`--memory-reservation`)")
        if v1 and lim.get("memory_swappiness") != swappiness:
            notes.append(f"its swappiness is {lim.get('memory_swappiness')}, not {swappiness} "
                         "(`--memory-swappiness`)")
        if not notes:
            flags = ("memory", "memory-swap", "memory-reservation", "memory-swappiness")
            return (f"{_label(c)}: {mem // MIB} MiB of memory, {swap // MIB} MiB of swap on "
                    f"top, a soft limit of {res // MIB} MiB"
                    + (f" and swappiness {swappiness}" if v1 else "")
                    + ", each read from its cgroup by the host.\n\n"
                    + glass_box(sb, c, flags=flags))
        if best_notes is None or len(notes) < len(best_notes):
            best, best_notes = c, notes
    raise Fail(f"{_label(best)}: " + "; ".join(best_notes) + ".")


# ----------------------------------------------------------------- --oom-kill-disable

def oom_kill_disable(sb, params):
    want = int(params["mem_mb"]) * MIB
    v1 = sb.cgroup_version == 1

    def pending(sb) -> bool:
        limited = [c for c in sb.containers if c.limits.get("memory_max") == want]
        if v1:  # the hog has yet to reach the limit, where the kernel holds it
            return any(c.limits.get("oom_kill_disable") for c in limited) and not any(
                c.limits.get("under_oom") for c in limited)
        return bool(limited) and not any(c.oom_kills for c in limited)

    _wait(sb, pending, 3.0)
    notes = []
    for c in _containers(sb, f"Run one with `-m {want // MIB}m --oom-kill-disable` and a "
                             "memory hog inside."):
        lim = c.limits
        kills = c.oom_kills or 0
        if lim.get("memory_max") is None:
            notes.append(f"{_label(c)} has no memory limit. Without `-m` there is nothing the "
                         "container can run out of but the sandbox's memory, and a hog that "
                         "may not be killed there stalls everything else (the document "
                         "warns of exactly this, and Docker prints a warning): the task "
                         f"asks for `-m {want // MIB}m` with it.")
            continue
        if lim["memory_max"] != want:
            notes.append(f"{_label(c)} has a memory limit of {_mib(lim['memory_max'])}; the "
                         f"task asks for {want // MIB} MiB.")
            continue
        if v1:
            if lim.get("oom_kill_disable") and lim.get("under_oom") and kills == 0:
                return (f"{_label(c)}: `memory.oom_control` says `oom_kill_disable 1` and "
                        "`under_oom 1`: its hog reached the limit and the kernel, told not "
                        "to kill, holds it waiting for memory that never comes, instead "
                        "of killing it. Nothing was killed (oom_kill 0).\n\n"
                        + glass_box(sb, c, flags=("memory", "oom-kill-disable")))
            if not lim.get("oom_kill_disable"):
                notes.append(f"{_label(c)} has the OOM killer on (`oom_kill_disable 0`)"
                             + (f": it has killed {kills} process(es) there" if kills else "")
                             + ". `--oom-kill-disable` turns it off.")
            elif kills:
                notes.append(f"{_label(c)} has the OOM killer off but saw {kills} kill(s): "
                             "the hog ran before the flag was set.")
            else:
                notes.append(f"{_label(c)} has the OOM killer off, but nothing in it is "
                             "waiting for memory (`under_oom 0`): run a process inside that "
                             f"wants more than {want // MIB} MiB.")
        else:
            if kills > 0:
                return (f"{_label(c)} has a memory limit of {want // MIB} MiB and the OOM "
                        f"killer killed {kills} process(es) in it all the same: cgroup v2 "
                        "has no switch to turn the OOM killer off for a cgroup, so "
                        "`--oom-kill-disable` does nothing here.\n\n"
                        + glass_box(sb, c, flags=("memory", "oom-kill-disable")))
            notes.append(f"{_label(c)} has the right limit, but nothing in it has wanted more "
                         "memory yet: run a hog inside and see what happens to it.")
    raise Fail(" ".join(notes))


# ----------------------------------------------------------------- --pids-limit

def pids_limit(sb, params):
    want = int(params["pids"])
    # A bomb just set off needs a moment to reach the limit, and its count can dip for a
    # moment as processes die.
    until = time.monotonic() + 3.0
    while True:
        found = _containers(sb, f"Run one with `--pids-limit {want}` and a fork bomb inside.")
        right = [c for c in found if c.limits.get("pids_max") == want]
        for c in right:
            cg = sb.cgroup(c.cgroups.get("pids") or c.cgroup)
            cur = (cg.usage.get("pids_current") if cg else None) or 0
            refused = (cg.usage.get("pids_events_max") if cg else None) or 0
            if cur == want and refused > 0:
                root = sb.cgroup("/")
                total = root.usage.get("pids_current") if root else None
                return (f"{_label(c)} holds {cur} processes, its `pids.max`, and the kernel "
                        f"has refused {refused} fork(s) in it (pids.events `max`): the bomb is "
                        "caged"
                        + (f", and your whole sandbox holds {total} processes" if total else "")
                        + ".\n\n" + glass_box(sb, c, flags=("pids-limit",)))
        if not right or time.monotonic() > until or sb.deadline_left() < 2:
            break
        time.sleep(0.25)
        sb.refresh()
    if right:
        c = right[0]
        cg = sb.cgroup(c.cgroups.get("pids") or c.cgroup)
        cur = (cg.usage.get("pids_current") if cg else None) or 0
        raise Fail(f"{_label(c)} allows {want} processes and holds {cur}, and no fork in it "
                   "was refused yet (pids.events `max` 0): set a fork bomb off inside it.")
    seen = ", ".join(f"{_label(c)} (`pids.max` {c.limits.get('pids_max') or 'max'})"
                     for c in found)
    raise Fail(f"Your containers: {seen}; the task asks for a process limit of {want}.")
