"""Checks of the cgroups lab.

Every fact graded here is read by sandboxd from the host: the processes' comm, allowed CPUs
and scheduler time from /proc/<host pid>, their cgroups from /proc/<host pid>/cgroup, and the
limits and counters from the real cgroup files of the sandbox's subtree. A learner who is
root inside can write fake cgroup files in /tmp, bind-mount them over /sys/fs/cgroup or
/proc inside the sandbox, or rename a process; none of that changes what the host reads.

The same checks hold on cgroup v1 and v2: `Process.cgroup_path(controller)` gives the one
unified path on v2, and `Cgroup.limits` uses the same keys on both (cpu_shares on v1 and
cpu_weight on v2 are the only pair that differ, and the lab speaks of each by its name).
"""

from __future__ import annotations

import re
import time

from nslab.labkit.check import Fail, parents

MIB = 1 << 20
CPU_MARGIN = 0.05            # the issue's ±0.05 CPU
SPLIT_RATIO = (1.6, 2.5)     # 2:1 measured over about a second, with room for a busy host


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


def _sample(sb) -> tuple[float, dict[int, int]]:
    """(time, host pid -> nanoseconds on a CPU) for every process of the sandbox."""
    t0 = time.monotonic()
    facts = sb.client.inspect(sb.id)
    t1 = time.monotonic()
    sb.refresh()  # anything read after this should be as fresh as the sample
    return (t0 + t1) / 2, {p["host_pid"]: p["cpu_ns"] or 0 for p in facts["processes"]}


def _usage(sb, groups: dict, seconds: float = 1.0, period_us: int | None = None) -> tuple[dict, float]:
    """CPUs used by each group of processes ({key: [Process]}) over one common window of
    about `seconds`, measured from their scheduler time on the host. With `period_us` the
    window is a whole number of CFS periods: a throttled group runs `quota` in every
    period, so such a window holds the same run time whatever its phase."""
    left = sb.deadline_left() - 1.0
    if left < 0.3:
        raise Fail("The check ran out of time before it could measure; press Check again.")
    seconds = min(seconds, left)
    if period_us:
        period = period_us / 1e6
        seconds = max(period, round(seconds / period) * period)
    t0, a = _sample(sb)
    half = time.monotonic() - t0  # the second sample's midpoint comes this long after it starts
    time.sleep(max(0.0, t0 + seconds - half - time.monotonic()))
    t1, b = _sample(sb)
    span = max(t1 - t0, 1e-3)
    out = {}
    for key, procs in groups.items():
        ns = sum(max(0, b.get(p.host_pid, a.get(p.host_pid, 0)) - a.get(p.host_pid, 0))
                 for p in procs if p.host_pid in a)
        out[key] = ns / 1e9 / span
    return out, span


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
    if given > limit:
        raise Fail(f"{answer.strip()} is more than your sandbox may use. If you took it from "
                   "`free` or /proc/meminfo: those show the host's memory — they are not "
                   "cgroup-aware, which is why a program in a container can misjudge how much "
                   "it has. Read the limit file of your cgroup.")
    raise Fail(f"{answer.strip()} is less than the limit of your sandbox. Read "
               "`memory.limit_in_bytes` (v1) or `memory.max` (v2) at the top of your cgroup "
               "tree and divide by 1048576.")


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
    results = []
    for attempt in range(2):
        period = min(w.limits.get("cpu_period_us") or 100000 for w, _ in limited.values())
        groups = {path: procs for path, (_, procs) in limited.items()}
        groups.update({("other", p.host_pid): [p] for p in others})
        used, span = _usage(sb, groups, 1.0, period)
        for path, (where, procs) in limited.items():
            u = used[path]
            if abs(u - target) <= CPU_MARGIN:
                return (f"`stress-ng-cpu` (pid {_pids(procs)}) runs in {where.describe_cpu()}, "
                        f"and the host measured it using {u:.2f} CPU over {span:.1f} s: the "
                        f"kernel holds it at {target:g} CPU.")
            busy = [(p, used[("other", p.host_pid)]) for p in others]
            results.append((where, procs, u, span, [(p, b) for p, b in busy if b >= 0.2]))
        if sb.deadline_left() < 3:
            break
    where, procs, u, span, busy = min(results, key=lambda r: abs(r[2] - target))
    msg = (f"The quota is right ({where.describe_cpu()}), but `stress-ng-cpu` (pid "
           f"{_pids(procs)}) used {u:.2f} CPU over {span:.1f} s; under this quota a hog uses "
           f"{target:g} ± {CPU_MARGIN} CPU.")
    if u < 0.05:
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
            msg += (" Was it started with --cpu-load, or is the machine very busy? Press "
                    "Check again to measure again.")
    raise Fail(msg)


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
        raise Fail(f"I see {len(hogs)} stress-ng CPU worker ({seen}); the task needs two, each "
                   "in a cgroup of its own.")
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
    last = None
    for attempt in range(2):
        used, span = _usage(sb, {"a": [ha], "b": [hb]}, 1.0)
        ua, ub = used["a"], used["b"]
        ratio = ua / ub if ub > 0.005 else float("inf")
        if SPLIT_RATIO[0] <= ratio <= SPLIT_RATIO[1] and ua + ub >= 0.2:
            return (f"On CPU {ha.cpus_allowed}, the hog in `{pa}` ({file} {wa}) used {ua:.2f} "
                    f"CPU and the one in `{pb}` ({file} {wb}) {ub:.2f} CPU over {span:.1f} s: "
                    f"a ratio of {ratio:.2f}, measured from the host.")
        last = (ua, ub, ratio, span)
        if sb.deadline_left() < 3:
            break
    ua, ub, ratio, span = last
    raise Fail(f"Both hogs are pinned to CPU {ha.cpus_allowed} and the weights are 2:1 "
               f"(`{pa}` {wa}, `{pb}` {wb}), but over {span:.1f} s they used {ua:.2f} and "
               f"{ub:.2f} CPU (ratio {ratio:.2f}; about 2 expected). Are both running (not "
               "stopped or frozen), and is nothing else of yours busy on that CPU? Press "
               "Check again to measure again.")


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

def pids_bomb(sb, params):
    want = int(params["pids_max"])
    until = time.monotonic() + 1.5  # a bomb's count can dip for a moment as processes die
    while True:
        mine = [c for c in sb.cgroups if not _own(sb, c.path) and c.limits.get("pids_max") is not None]
        right = [c for c in mine if c.limits["pids_max"] == want]
        for c in right:
            cur = c.usage.get("pids_current") or 0
            if cur >= want:
                return (f"cgroup `{c.path}` holds {cur} processes, its pids.max: every further "
                        "fork in it fails, and the rest of your sandbox is untouched.")
        if not right or time.monotonic() > until or sb.deadline_left() < 2:
            break
        time.sleep(0.25)
        sb.refresh()
    if right:
        c = right[0]
        raise Fail(f"cgroup `{c.path}` allows {want} processes and holds "
                   f"{c.usage.get('pids_current') or 0}: set the fork bomb off inside it (move "
                   "the starting shell in first).")
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
        used, span = _usage(sb, {path: [t] for t, path in candidates}, 0.6)
        for t, path in candidates:
            if used[path] > 0:
                return (f"`ticker` (pid {t.pid}) is in the thawed cgroup `{path}` and the host "
                        f"saw it use the CPU again ({used[path] * 1000:.1f} ms per second).")
            notes.append(f"`ticker` (pid {t.pid}) is in the thawed cgroup `{path}` but used "
                         f"no CPU time in {span:.1f} s.")
    raise Fail(" ".join(notes))
