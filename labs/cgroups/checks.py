"""Checks of the cgroups lab.

Every fact graded here is read by sandboxd from the host: the processes' comm, state,
allowed CPUs and scheduler time from /proc/<host pid>, their cgroups from
/proc/<host pid>/cgroup, and the limits and counters (OOM kills, refused forks, CFS
throttling) from the real cgroup files of the sandbox's subtree. A learner who is root
inside can write fake cgroup files in /tmp, bind-mount them over /sys/fs/cgroup or /proc
inside the sandbox, replace a binary, or rename a process; none of that changes what the
host reads. No check runs a program inside the sandbox.

The same checks hold on cgroup v1 and v2: `Process.cgroup_path(controller)` gives the one
unified path on v2, and `Cgroup.limits` uses the same keys on both (cpu_shares on v1 and
cpu_weight on v2 are the only pair that differ, and the lab speaks of each by its name).

Measured checks must hold on a busy host (a class of learners running hogs side by side on
a small machine): they measure for a second, and longer when that second says too little;
a hog that is runnable all the time yet gets less than its quota is starved by the host,
and its quota, read from the host, is what is graded then.
"""

from __future__ import annotations

import re
import time

from nslab.labkit.check import Fail, parents

MIB = 1 << 20
# A memory cgroup's usage can pass its limit by a few pages the kernel must not refuse
# (an OOM victim's last charges); much more than that means a limit lowered afterwards.
PEAK_SLACK = 8 * MIB
CPU_MARGIN = 0.05            # the task's ±0.05 CPU
SPLIT_RATIO = (1.6, 2.5)     # 2:1, with room for the scheduler's slices over a short window
SPLIT_CPU_SECONDS = 0.2      # CPU time the pair must get before their ratio means something
RUNNABLE_SHARE = 0.9         # a CPU hog is runnable (state R) in nearly every look
HELD_SHARE = 0.5             # throttled in at least half its periods: held at its quota
WINDOWS = (1.0, 2.0, 4.0)    # seconds measured: the first on a quiet host, more when busy
SPLIT_WINDOWS = (1.0, 2.0, 4.0, 8.0)  # a ratio needs more CPU time than a level does


# ----------------------------------------------------------------- helpers

def _own(sb, path: str | None) -> bool:
    """The cgroups sandboxd made: the sandbox's own ("/"), and on v2 its leaf "/init"
    where its processes start (a v2 cgroup with children may not hold processes)."""
    return path in (None, "/") or (sb.cgroup_version == 2 and path == "/init")


def _cpu_hogs(sb) -> list:
    """The stress-ng CPU workers (comm `stress-ng-cpu`, set by stress-ng itself); Fail with
    what is there instead when there are none."""
    procs = sb.processes()
    hogs = [p for p in procs if p.comm.startswith("stress-ng-cpu")]
    if hogs:
        return hogs
    fakes = [p for p in procs if p.cmdline and "stress-ng" in p.cmdline[0]
             and not p.comm.startswith("stress-ng")]
    if fakes:
        p = fakes[0]
        raise Fail(f"No stress-ng CPU worker runs. Process {p.pid} calls itself "
                   f"{p.cmdline[0]!r} in its command line, but the kernel knows it as "
                   f"'{p.comm}': argv[0] is only a string a program chooses. Start a real "
                   "hog with `stress-ng --cpu 1 &`.")
    if any(p.comm == "stress-ng" for p in procs):
        raise Fail("stress-ng runs, but without a CPU worker (`stress-ng-cpu`): start it "
                   "with `stress-ng --cpu 1`.")
    raise Fail("No stress-ng CPU worker (`stress-ng-cpu`) runs in your sandbox. Start one "
               "with `stress-ng --cpu 1 &`.")


def _effective(sb, path: str, key: str) -> tuple[float | None, object]:
    """The tightest value of limit `key` from cgroup `path` up to the sandbox's own."""
    best, where = None, None
    for p in parents(path):
        node = sb.cgroup(p)
        value = node.limits.get(key) if node else None
        if value is not None and value >= 0 and (best is None or value < best):
            best, where = value, node
    return best, where


def _pids(procs) -> str:
    return ", ".join(str(p.pid) for p in procs)


# ----------------------------------------------------------------- quiz: the sandbox's memory

# MB and GB are taken as MiB and GiB: people write them loosely, and `free -m` does too.
_UNITS = {"": None, "b": 1, "k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10, "m": MIB, "mb": MIB,
          "mib": MIB, "g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30}


def sandbox_memory(sb, params, answer):
    limit = (sb.cgroup("/").limits if sb.cgroup("/") else {}).get("memory_max")
    if limit is None:
        raise Fail("Your sandbox has no memory limit at the moment, so there is nothing to "
                   "read; tell your instructor.")
    m = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)\s*([a-z]*)", answer.strip().lower())
    if not m or m.group(2) not in _UNITS:
        if answer.strip().lower() in ("max", "unlimited", "none", "-1"):
            raise Fail(f"{answer.strip()!r} would mean no limit, but your sandbox does have "
                       "a limit. Read the file at the top of your cgroup tree.")
        raise Fail(f"{answer.strip()[:40]!r} is not a number of MiB; answer like `300`.")
    value, unit = float(m.group(1)), _UNITS[m.group(2)]
    if unit is None:  # a bare number: MiB, unless it can only be bytes
        unit = 1 if value >= MIB else MIB
    given = value * unit
    if abs(given - limit) < MIB / 2:
        return (f"Right: {limit // MIB} MiB ({limit} bytes). The host read it from the memory "
                "limit file of your sandbox's cgroup, the same one you found at the top of "
                "/sys/fs/cgroup.")
    # Neither "more" nor "less": a direction would let a learner home in on the number by
    # halving, without reading a file.
    raise Fail(f"{answer.strip()} is not the memory limit of your sandbox's cgroup. If you "
               "took it from `free`, `top` or /proc/meminfo: those show the host's memory, "
               "not a cgroup's, which is why a program in a container can misjudge how much "
               "it has. Read the limit file at the top of your cgroup tree (it is in bytes).")


# ----------------------------------------------------------------- CPU quota

def _describe_quota(sb, hog, target: float) -> str:
    cpus, where = sb.cpu_limit_of(hog)
    path = hog.cgroup_path("cpu")
    if where is None:
        return f"`stress-ng-cpu` (pid {hog.pid}) runs in cgroup `{path}`, where no CPU quota applies."
    if _own(sb, where.path):
        return (f"`stress-ng-cpu` (pid {hog.pid}) runs in cgroup `{path}`, where only the "
                f"sandbox's own quota ({cpus:.2f} CPU) applies.")
    return (f"`stress-ng-cpu` (pid {hog.pid}) runs in cgroup `{path}`; the tightest quota on "
            f"its way up is in {where.describe_cpu()}, but the task asks for {target:g} CPU.")


def cpu_limit(sb, params):
    target = float(params["target"])
    hogs = _cpu_hogs(sb)
    limited: dict[str, tuple] = {}
    notes = []
    for h in hogs:
        cpus, where = sb.cpu_limit_of(h)
        if where is not None and not _own(sb, where.path) and abs(cpus - target) < 0.005:
            limited.setdefault(where.path, (where, []))[1].append(h)
        else:
            notes.append(_describe_quota(sb, h, target))
    if not limited:
        tip = ""
        workers_of = {h.ppid for h in hogs}
        for p in sb.processes(comm="stress-ng"):
            cpus, where = sb.cpu_limit_of(p)
            if (p.host_pid in workers_of and where is not None and not _own(sb, where.path)
                    and abs(cpus - target) < 0.005):
                tip = (f" Its parent `stress-ng` (pid {p.pid}) is in `{where.path}` with the "
                       "right quota, but moving a process does not move the children it "
                       "already has: move the worker too (`pgrep stress-ng` lists both).")
                break
        if not tip:
            tip = (f" Make a cgroup of your own with a quota of {target:g} CPU and move the "
                   "hog into it.")
        raise Fail(" ".join(notes) + tip)

    # Every other process of the sandbox is measured too, one by one: when the hog gets
    # less than its quota, the learner's own other hogs are the usual reason.
    inside = {p.host_pid for _, procs in limited.values() for p in procs}
    others = [p for p in sb.processes() if p.host_pid not in inside]
    period = min(w.limits.get("cpu_period_us") or 100000 for w, _ in limited.values())
    groups = {path: procs for path, (_, procs) in limited.items()}
    groups.update({("other", p.host_pid): [p] for p in others})
    meter = sb.cpu_meter(groups, cgroups=list(limited))
    for window in WINDOWS:
        meter.run(window, period_us=period)
        verdicts = {path: _quota_verdict(meter, path, where, target)
                    for path, (where, _) in limited.items()}
        for path, (where, procs) in limited.items():
            if verdicts[path] == "at quota":
                return (f"`stress-ng-cpu` (pid {_pids(procs)}) runs in "
                        f"{where.describe_cpu()}, and the host measured it using "
                        f"{meter.cpus(path):.2f} CPU over {meter.seconds:.1f} s: the kernel "
                        f"holds it at {target:g} CPU.")
            if verdicts[path] == "throttled":
                th = meter.throttling(path)
                return (f"`stress-ng-cpu` (pid {_pids(procs)}) runs in "
                        f"{where.describe_cpu()}. The host is busy, so it got "
                        f"{meter.cpus(path):.2f} CPU over {meter.seconds:.1f} s, but the kernel "
                        f"throttled it in {th.throttled} of {th.periods} periods: each time "
                        f"it used up its {target:g} CPU quota and had to wait for the next "
                        "period. The quota holds it.")
        # Measure longer only while a longer window could change the verdict: a hog that
        # is starved by a busy host (or over its quota by a measuring error).
        if not any(v in ("starved", "over") for v in verdicts.values()) and window >= 2:
            break
        if meter.seconds < window - 0.3:  # the check's deadline cut the window short
            break
    busy = [(p, meter.cpus(("other", p.host_pid))) for p in others]
    busy = [(p, b) for p, b in busy if b >= 0.2]
    starved = [path for path, v in verdicts.items() if v == "starved"]
    if starved and not busy and meter.seconds >= 1.5:
        path = starved[0]
        where, procs = limited[path]
        th = meter.throttling(path)
        return (f"`stress-ng-cpu` (pid {_pids(procs)}) runs in {where.describe_cpu()}. The "
                f"host is busy: over {meter.seconds:.1f} s the hog was ready to run in "
                f"{meter.runnable(path):.0%} of the host's looks, yet got only "
                f"{meter.cpus(path):.2f} CPU, less than its quota"
                + (f" (the kernel throttled it in {th.throttled} of {th.periods} periods)"
                   if th else "")
                + f". The quota, read from the host, is in place: on a quieter machine the "
                f"kernel would hold the hog at {target:g} CPU.")
    path = min(limited, key=lambda k: abs(meter.cpus(k) - target))
    where, procs = limited[path]
    u = meter.cpus(path)
    msg = (f"The quota is right ({where.describe_cpu()}), but `stress-ng-cpu` (pid "
           f"{_pids(procs)}) used {u:.2f} CPU over {meter.seconds:.1f} s; under this quota a "
           f"hog uses {target:g} ± {CPU_MARGIN} CPU.")
    if u < 0.05 and meter.runnable(path) < RUNNABLE_SHARE:
        msg += (" It is not burning CPU (is it really a stress-ng worker, and is it running, "
                "not stopped or frozen?).")
    elif u < target:
        msg += " A quota is only a ceiling: something holds the hog below it."
        if busy:
            msg += (" Other busy processes of your sandbox compete for the CPUs: "
                    + ", ".join(f"`{p.comm}` (pid {p.pid}, {b:.2f} CPU, in cgroup "
                                f"`{p.cgroup_path('cpu')}`)" for p, b in busy)
                    + "; stop them (`kill PID`) and press Check again.")
        else:
            msg += (f" It was ready to run in only {meter.runnable(path):.0%} of the host's "
                    "looks: was it started with --cpu-load, or stopped for a while?")
    raise Fail(msg)


def _quota_verdict(meter, path: str, where, target: float) -> str:
    """What one window says of a group of hogs under a quota of `target` CPU:
    "at quota" (it uses target ± margin), "throttled" (the host is busy, but it ran out of
    quota in most periods, so the quota holds it), "starved" (runnable all along, yet below
    its quota: the host gives it less than that), "over" (more than the quota: only a
    measuring error could do that), or "low" (below its quota because it does not try)."""
    u = meter.cpus(path)
    if abs(u - target) <= CPU_MARGIN:
        return "at quota"
    if u > target:
        return "over"
    th = meter.throttling(where.path)
    if th is not None and th.periods and th.share >= HELD_SHARE:
        return "throttled"
    # A full class can starve a hog down to a few ms per second, or none in a short
    # window: being ready to run all along is what tells it from a hog that does not try.
    if meter.runnable(path) >= RUNNABLE_SHARE:
        return "starved"
    return "low"


# ----------------------------------------------------------------- a nested quota (delegation)

def _quota_text(cg) -> str:
    return f"{cg.cpus:.2f} CPU" if cg is not None and cg.cpus is not None else "no quota"


def delegate(sb, params):
    """A hog in a cgroup of the learner's, nested in another of theirs: the inner one has a
    quota of its own (on v2 it has CPU files at all only when its parent enabled `cpu` in
    its cgroup.subtree_control), the outer one the team's quota. Both are limit files the
    host reads; the hog must really burn CPU in there."""
    team, job = float(params["team_cpus"]), float(params["job_cpus"])
    notes = []
    found = None
    for h in _cpu_hogs(sb):
        path = h.cgroup_path("cpu")
        head = f"`stress-ng-cpu` (pid {h.pid})"
        if _own(sb, path):
            notes.append(f"{head} runs in your sandbox's own cgroup `{path}`.")
            continue
        chain = [c for c in parents(path) if not _own(sb, c)]  # its cgroup, then its parents
        leaf = sb.cgroup(path)
        if len(chain) < 2 or leaf is None:
            notes.append(f"{head} runs in `{path}`, directly under your sandbox's cgroup: "
                         "the task asks for a cgroup nested in another cgroup of yours.")
            continue
        outer = [sb.cgroup(c) for c in chain[1:]]
        if "cpu_quota_us" not in leaf.limits:
            notes.append(f"{head} runs in `{path}`, which has no CPU files: on cgroup v2 a "
                         "cgroup gets a controller's files only when its parent enables the "
                         f"controller for its children, and `{chain[1]}` does not list `cpu` "
                         "in its `cgroup.subtree_control`.")
            continue
        if leaf.cpus is None:
            notes.append(f"{head} runs in `{path}`, which has no CPU quota of its own: only "
                         f"the cgroups around it limit it ("
                         + ", ".join(f"`{c.path}` {_quota_text(c)}" for c in outer if c)
                         + f"). The task asks for a quota of {job:g} CPU on the inner one.")
            continue
        if abs(leaf.cpus - job) >= 0.005:
            notes.append(f"{head} runs in `{path}` with a quota of {leaf.cpus:.2f} CPU; the "
                         f"task asks for {job:g} CPU there.")
            continue
        teams = [c for c in outer if c is not None and c.cpus is not None
                 and abs(c.cpus - team) < 0.005]
        if not teams:
            notes.append(f"{head} runs in `{path}` with the right quota ({job:g} CPU), but "
                         "the cgroups around it have "
                         + ", ".join(f"`{c.path}` {_quota_text(c)}" for c in outer if c)
                         + f"; the task asks for the outer one to have {team:g} CPU.")
            continue
        found = (h, leaf, teams[0])
        break
    if found is None:
        raise Fail(" ".join(notes))
    h, leaf, outer = found
    meter = sb.cpu_meter({"hog": [h]}, cgroups=[leaf.path])
    meter.run(1.0, period_us=leaf.limits.get("cpu_period_us"))
    if meter.runnable("hog") < RUNNABLE_SHARE:
        raise Fail(f"The tree is right (`{outer.path}` {team:g} CPU, `{leaf.path}` {job:g} "
                   f"CPU), but `stress-ng-cpu` (pid {h.pid}) in it is not burning CPU: it was "
                   f"ready to run in only {meter.runnable('hog'):.0%} of the host's looks over "
                   f"{meter.seconds:.1f} s (stopped or frozen?).")
    th = meter.throttling(leaf.path)
    return (f"`stress-ng-cpu` (pid {h.pid}) runs in `{leaf.path}` ({job:g} CPU), inside "
            f"`{outer.path}` ({team:g} CPU): the tighter quota holds it, and it used "
            f"{meter.cpus('hog'):.2f} CPU over {meter.seconds:.1f} s"
            + (f", throttled in {th.throttled} of {th.periods} periods" if th else "")
            + ". Everything under the outer cgroup shares its quota, whatever the inner "
            "ones say.")


# ----------------------------------------------------------------- CPU weight 2:1

def cpu_split(sb, params):
    hogs = _cpu_hogs(sb)
    key, file = ("cpu_weight", "cpu.weight") if sb.cgroup_version == 2 else ("cpu_shares", "cpu.shares")
    rows = []
    for h in hogs:
        cg = sb.cgroup_of(h, "cpu")
        rows.append((h, h.cgroup_path("cpu"), cg.limits.get(key) if cg else None))
    seen = "; ".join(f"pid {h.pid} in `{path}` ({file} {w})" for h, path, w in rows)
    if len(hogs) < 2:
        parents_of = {h.ppid for h in hogs}
        starting = [p for p in sb.processes(comm="stress-ng") if p.host_pid not in parents_of]
        raise Fail(f"I see {len(hogs)} stress-ng CPU worker ({seen}); the task needs two, each "
                   "in a cgroup of its own."
                   + (f" `stress-ng` (pid {_pids(starting)}) has no worker yet: if you just "
                      "started it, press Check again in a moment." if starting else ""))
    pairs = [(a, b) for a in rows for b in rows
             if a[1] != b[1] and a[2] and b[2] and 1.95 <= a[2] / b[2] <= 2.05]
    if not pairs:
        raise Fail(f"stress-ng CPU workers: {seen}. But no two hogs sit in cgroups whose "
                   f"weights are 2:1: set `{file}` of one cgroup to twice the other's.")

    def single(cpus):
        return bool(cpus and re.fullmatch(r"\d+", cpus))

    pinned = [(a, b) for a, b in pairs
              if single(a[0].cpus_allowed) and a[0].cpus_allowed == b[0].cpus_allowed]
    if not pinned:
        (ha, pa, _), (hb, pb, _) = pairs[0]
        if single(ha.cpus_allowed) and single(hb.cpus_allowed):
            raise Fail(f"The hogs in `{pa}` and `{pb}` are pinned to different CPUs "
                       f"({ha.cpus_allowed} and {hb.cpus_allowed}): each has a CPU to itself, "
                       "so there is nothing to divide. Pin both to the same CPU.")
        raise Fail(f"The hog in `{pa}` may run on CPUs {ha.cpus_allowed} and the one in "
                   f"`{pb}` on CPUs {hb.cpus_allowed}. Weights only divide a CPU between tasks "
                   "that compete for it: with a free CPU each, each hog gets a whole one and "
                   "the weights never come into play. Pin both to the same single CPU "
                   "(`taskset -c 0 stress-ng ...`, or a cpuset cgroup).")
    (ha, pa, wa), (hb, pb, wb) = pinned[0]
    # On a busy host the pair gets only a slice of the CPU; the ratio holds all the same,
    # but it takes longer to gather enough scheduler slices for it to show.
    meter = sb.cpu_meter({"a": [ha], "b": [hb]})
    for window in SPLIT_WINDOWS:
        meter.run(window)
        enough = meter.cpu_seconds("a") + meter.cpu_seconds("b") >= SPLIT_CPU_SECONDS
        ready = min(meter.runnable("a"), meter.runnable("b")) >= RUNNABLE_SHARE
        if enough or meter.seconds < window - 0.3 or (not ready and window >= 2):
            break
    ua, ub = meter.cpus("a"), meter.cpus("b")
    ratio = ua / ub if ub > 0.001 else float("inf")
    if enough and SPLIT_RATIO[0] <= ratio <= SPLIT_RATIO[1]:
        return (f"On CPU {ha.cpus_allowed}, the hog in `{pa}` ({file} {wa}) used {ua:.2f} "
                f"CPU and the one in `{pb}` ({file} {wb}) {ub:.2f} CPU over "
                f"{meter.seconds:.1f} s: a ratio of {ratio:.2f}, measured from the host.")
    siblings = pa.rsplit("/", 1)[0] == pb.rsplit("/", 1)[0]
    if not enough and ready and siblings:
        return (f"On CPU {ha.cpus_allowed}, the hogs in `{pa}` ({file} {wa}) and `{pb}` "
                f"({file} {wb}) were both ready to run all along, but the host is busy: "
                f"over {meter.seconds:.1f} s they got only {ua:.3f} and {ub:.3f} CPU, too "
                "little to measure a split. The weights, the pinning and the two sibling "
                "cgroups, read from the host, are right: whatever CPU time the two get, "
                "the kernel divides it 2:1.")
    if not enough:
        raise Fail(f"Both hogs are pinned to CPU {ha.cpus_allowed} and the weights are 2:1 "
                   f"(`{pa}` {wa}, `{pb}` {wb}), but over {meter.seconds:.1f} s they used "
                   f"only {ua:.2f} and {ub:.2f} CPU: too little to see a split"
                   + ("" if siblings else ", and the two cgroups are not siblings (weights "
                      "only compare cgroups with the same parent)")
                   + ". Are both running (not stopped or frozen)? Press Check again to "
                   "measure again.")
    raise Fail(f"Both hogs are pinned to CPU {ha.cpus_allowed} and the weights are 2:1 "
               f"(`{pa}` {wa}, `{pb}` {wb}), but over {meter.seconds:.1f} s they used {ua:.2f} "
               f"and {ub:.2f} CPU (ratio {ratio:.2f}; about 2 expected)"
               + ("" if siblings else ". The two cgroups are not siblings: weights only "
                  "compare cgroups with the same parent, and the parents' weights decide")
               + ". Are both running (not stopped or frozen), and is nothing else of yours "
               "busy on that CPU? Press Check again to measure again.")


# ----------------------------------------------------------------- cpuset

def cpuset_pin(sb, params):
    cpu = str(params["cpu"])
    hogs = _cpu_hogs(sb)
    notes = []
    for h in hogs:
        path = h.cgroup_path("cpuset")
        cg = sb.cgroup(path) if path else None
        eff = cg.limits.get("cpuset_cpus_effective") if cg else None
        if not _own(sb, path) and eff == cpu and h.cpus_allowed == cpu:
            return (f"`stress-ng-cpu` (pid {h.pid}) is in cpuset cgroup `{path}`, whose "
                    f"effective CPUs are {eff}, and the host's /proc says it may run on CPU "
                    f"{h.cpus_allowed} only.")
        if _own(sb, path) and h.cpus_allowed == cpu:
            notes.append(f"`stress-ng-cpu` (pid {h.pid}) is pinned by its own affinity "
                         f"(taskset) to CPU {cpu}, but its cpuset cgroup is the sandbox's own "
                         f"`{path}` with CPUs {eff or 'all'}: the task asks for a cpuset cgroup "
                         "that allows only that CPU, so that the limit belongs to the group "
                         "and no process in it can widen it.")
        elif _own(sb, path):
            notes.append(f"`stress-ng-cpu` (pid {h.pid}) is in the sandbox's own cpuset cgroup "
                         f"`{path}` and may run on CPUs {h.cpus_allowed}.")
        elif eff != cpu:
            notes.append(f"`stress-ng-cpu` (pid {h.pid}) is in cpuset cgroup `{path}`, which "
                         f"allows CPUs {eff or 'all (no cpuset controller there)'}; the task "
                         f"asks for CPU {cpu}.")
        else:
            notes.append(f"`stress-ng-cpu` (pid {h.pid}) is in cpuset cgroup `{path}` (CPUs "
                         f"{eff}), yet it may run on CPUs {h.cpus_allowed}.")
    raise Fail(" ".join(notes))


# ----------------------------------------------------------------- memory

def memory_oom(sb, params):
    want = int(params["mem_mb"]) * MIB
    root = sb.cgroup("/")
    mine = [c for c in sb.cgroups if not _own(sb, c.path)]
    killed = [c for c in mine if (c.usage.get("oom_kills") or 0) > 0]
    wrong = []
    for c in killed:
        limit, where = _effective(sb, c.path, "memory_max")
        peak = where.usage.get("memory_peak") if where is not None else None
        if limit == want and not _own(sb, where.path) and peak is not None \
                and peak > limit + PEAK_SLACK:
            wrong.append(f"cgroup `{c.path}` has seen {c.usage['oom_kills']} OOM kill(s) and "
                         f"now has a limit of {want // MIB} MiB, but its peak usage was "
                         f"{peak / MIB:.0f} MiB: more than that limit ever allows, so the "
                         "kill happened under a higher limit, lowered afterwards. Let the "
                         f"kernel OOM-kill a hog under the {want // MIB} MiB limit itself")
            continue
        if limit == want and not _own(sb, where.path):
            return (f"cgroup `{c.path}` (memory limit {want // MIB} MiB, set in "
                    f"`{where.path}`) has seen {c.usage['oom_kills']} OOM kill(s): the kernel "
                    "killed the hog inside it, and nothing outside it.")
        wrong.append(f"cgroup `{c.path}` has seen {c.usage['oom_kills']} OOM kill(s), but its "
                     f"memory limit is {limit / MIB:g} MiB" if limit is not None else
                     f"cgroup `{c.path}` has seen {c.usage['oom_kills']} OOM kill(s), but it "
                     "has no limit of its own")
    if wrong:
        raise Fail("; ".join(wrong) + f". The task asks for {want // MIB} MiB.")
    right = [c for c in mine if c.limits.get("memory_max") == want]
    if right:
        raise Fail(f"cgroup `{right[0].path}` has the right limit ({want // MIB} MiB), but "
                   "nothing in it was OOM-killed yet (oom_kill 0): start the memory hog "
                   "inside it, from a shell you moved there.")
    if root is not None and (root.usage.get("oom_kills") or 0) > 0:
        raise Fail(f"Your sandbox as a whole hit its own limit "
                   f"({(root.limits.get('memory_max') or 0) // MIB} MiB, "
                   f"{root.usage['oom_kills']} OOM kills): the hog ran outside a cgroup of "
                   f"yours. Make one with a limit of {want // MIB} MiB and run it there.")
    others = [f"`{c.path}` ({c.limits['memory_max'] / MIB:g} MiB)" for c in mine
              if c.limits.get("memory_max") is not None]
    raise Fail(f"No cgroup of yours has a memory limit of {want // MIB} MiB"
               + (f" (limits seen: {', '.join(others)})" if others else "")
               + ". Make one, then run the hog inside it.")


# ----------------------------------------------------------------- pids

def _refused_forks(sb, cg) -> int:
    """Forks the kernel refused in cgroup `cg` or below it (pids.events `max`). v1 counts a
    refusal in the cgroup of the process that forked, v2 in the cgroup whose limit was
    reached and its ancestors: looking at the whole subtree finds it on both."""
    below = cg.path.rstrip("/") + "/"
    return max((c.usage.get("pids_events_max") or 0 for c in sb.cgroups
                if c.path == cg.path or c.path.startswith(below)), default=0)


def pids_bomb(sb, params):
    """A cage holding a fork bomb: the cgroup with pids.max = want holds exactly that many
    processes, and the kernel has refused forks in it (pids.events `max`). Processes moved
    in, or a limit lowered under them, can leave a cgroup over its pids.max without a single
    fork refused: the kernel checks the limit only at fork."""
    want = int(params["pids_max"])
    until = time.monotonic() + 1.5  # a bomb's count can dip for a moment as processes die
    while True:
        mine = [c for c in sb.cgroups if not _own(sb, c.path) and c.limits.get("pids_max") is not None]
        right = [c for c in mine if c.limits["pids_max"] == want]
        for c in right:
            cur = c.usage.get("pids_current") or 0
            refused = _refused_forks(sb, c)
            if cur == want and refused > 0:
                return (f"cgroup `{c.path}` holds {cur} processes, its pids.max, and the "
                        f"kernel has refused {refused} fork(s) in it (pids.events `max`): "
                        "the bomb is caged, and the rest of your sandbox is untouched.")
        if not right or time.monotonic() > until or sb.deadline_left() < 2:
            break
        time.sleep(0.25)
        sb.refresh()
    if right:
        c = right[0]
        cur = c.usage.get("pids_current") or 0
        refused = _refused_forks(sb, c)
        if cur > want:
            raise Fail(f"cgroup `{c.path}` allows {want} processes but holds {cur}, more "
                       "than its pids.max. The kernel checks the limit only when a process "
                       "forks: processes moved in (or a limit lowered under them) stay, and "
                       f"no fork was refused ({refused} in pids.events). A fork bomb started "
                       "inside can never pass the limit; empty the cgroup and set one off "
                       "inside it.")
        if refused == 0:
            raise Fail(f"cgroup `{c.path}` allows {want} processes and holds {cur}, and no "
                       "fork in it was refused yet (pids.events `max` 0): set the fork bomb "
                       "off inside it (move the starting shell in first).")
        raise Fail(f"cgroup `{c.path}` allows {want} processes and the kernel refused "
                   f"{refused} fork(s) in it, but it holds only {cur} now: the bomb is "
                   "gone. Leave a bomb running in the cage and press Check.")
    root = sb.cgroup("/")
    total = (root.usage.get("pids_current") or 0) if root else 0
    limit = (root.limits.get("pids_max") or 0) if root else 0
    full = (" Your whole sandbox is nearly at its own limit: a bomb runs outside a cgroup of "
            "its own. Reset the sandbox from the lab page if the terminal no longer answers."
            if limit and total >= limit - 5 else "")
    if mine:
        seen = ", ".join(f"`{c.path}` (pids.max {c.limits['pids_max']}, holds "
                         f"{c.usage.get('pids_current') or 0})" for c in mine)
        raise Fail(f"Your cgroups with a process limit: {seen}; the task asks for {want}." + full)
    raise Fail(f"No cgroup of yours has pids.max set (your sandbox as a whole holds {total} of "
               f"its {limit} processes)." + full)


# ----------------------------------------------------------------- freezer

def _tickers(sb) -> list:
    found = sb.processes(comm="ticker")
    if not found:
        raise Fail("No process named `ticker` runs (the lab started one in your sandbox). "
                   "Start it again with `setsid -f ticker`.")
    return found


def freeze(sb, params):
    notes = []
    for t in _tickers(sb):
        path = t.cgroup_path("freezer")
        cg = sb.cgroup(path) if path else None
        if cg is not None and not _own(sb, path) and cg.frozen:
            return (f"`ticker` (pid {t.pid}) is in cgroup `{path}`, which the kernel reports "
                    "frozen: it gets no CPU time until you thaw it (`cat /tmp/ticker` stands "
                    "still).")
        if t.state in ("T", "t"):
            notes.append(f"`ticker` (pid {t.pid}) is stopped by a signal (state {t.state}), "
                         f"not frozen by a cgroup: SIGSTOP is visible to the process's parent "
                         "and undone by any SIGCONT. Send `kill -CONT` and use the freezer.")
        elif _own(sb, path):
            notes.append(f"`ticker` (pid {t.pid}) runs in your sandbox's own cgroup `{path}`: "
                         "move it into a cgroup of its own first, then freeze that one.")
        else:
            notes.append(f"`ticker` (pid {t.pid}) is in cgroup `{path}`, which is not frozen "
                         "(v1 `freezer.state` THAWED, v2 `cgroup.freeze` 0).")
    raise Fail(" ".join(notes))


def thaw(sb, params):
    notes = []
    candidates = []
    for t in _tickers(sb):
        path = t.cgroup_path("freezer")
        cg = sb.cgroup(path) if path else None
        if _own(sb, path):
            notes.append(f"`ticker` (pid {t.pid}) runs in your sandbox's own cgroup `{path}`: "
                         "it was never in a freezer cgroup of its own. Freeze it in one "
                         "(previous step), then thaw that cgroup.")
        elif cg is not None and (cg.frozen or cg.limits.get("freeze")):
            notes.append(f"`ticker` (pid {t.pid}) is in cgroup `{path}`, which is still frozen.")
        elif t.state in ("T", "t"):
            notes.append(f"`ticker` (pid {t.pid}) is stopped by a signal (state {t.state}); "
                         "send it `kill -CONT`.")
        else:
            candidates.append((t, path))
    if candidates:
        meter = sb.cpu_meter({path: [t] for t, path in candidates}).run(0.6, reserve=0.5)
        if not any(meter.cpu_seconds(path) > 0 for _, path in candidates):
            meter.run(2.0, reserve=0.5)  # a busy host may not have run it yet
        for t, path in candidates:
            if meter.cpu_seconds(path) > 0:
                return (f"`ticker` (pid {t.pid}) is in the thawed cgroup `{path}` and the host "
                        f"saw it use the CPU again ({meter.cpus(path) * 1000:.1f} ms per "
                        "second).")
            notes.append(f"`ticker` (pid {t.pid}) is in the thawed cgroup `{path}` but used "
                         f"no CPU time in {meter.seconds:.1f} s.")
    raise Fail(" ".join(notes))
