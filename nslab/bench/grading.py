"""`nslab bench grading`: do the measured checks hold in a full class?

A class is many learners on one small machine, most of them running CPU hogs at the same
time. The benchmark fills the host with `hogs` sandboxes, each running `stress-ng --cpu 1`
(as a learner of the cgroups lab does), then replays one measured exercise `runs` times,
each on a fresh sandbox of that lab: its setup, its reference solution, its check, as the
web app grades it. It reports how often the check passed, the CPU the solution's hogs got
(measured by the benchmark right after the check), how long the check took, and the
feedback of every failure.

Every sandbox it makes carries the label `bench=<token of this run>`, and every one is
destroyed at the end, also when the run is interrupted (Ctrl-C, SIGTERM from the CLI).
"""

from __future__ import annotations

import os
import random
import secrets
import time
from dataclasses import asdict, dataclass

from nslab.labkit.check import SandboxView
from nslab.labkit.grade import grade
from nslab.labkit.model import Lab
from nslab.labkit.params import draw_params, expand, param_env
from nslab.labkit.provision import run_setup
from sandbox.errors import SandboxError

from .terminal import percentile

HOG = "setsid -f stress-ng --cpu 1 --quiet </dev/null >/dev/null 2>&1"
HOG_COMM = "stress-ng-cpu"
SOLUTION_TIMEOUT = 60.0
# As `nslab lab test`: a learner presses Check a moment after the command returns.
SETTLE = 0.5
HOGS_READY_TIMEOUT = 60.0


class BenchError(Exception):
    """The benchmark cannot run as asked (bad arguments, a hog that never started)."""


@dataclass
class Run:
    """One replay of the exercise on a fresh sandbox."""

    run: int
    params: dict
    passed: bool
    check_ms: int
    feedback: str
    hog_cpus: list[float]            # CPU each hog of the solution got, right after the check
    throttled_share: list[float]     # share of periods its cgroup ran out of quota


def _labels(token: str, role: str) -> dict:
    return {"purpose": "bench-grading", "bench": token, "role": role}


def destroy_all(client, ids: list[str], token: str) -> list[str]:
    """Destroy `ids` and anything else labelled with this run's token; what could not be
    destroyed is returned. A Ctrl-C in the middle of this does not stop it: a hog left
    running would load the host until someone finds it."""
    interrupted = False
    left = []
    try:
        known = {s["id"] for s in client.list() if (s.get("labels") or {}).get("bench") == token}
    except SandboxError:
        known = set()
    for sid in list(dict.fromkeys([*ids, *sorted(known)])):
        for _ in range(2):
            try:
                client.destroy(sid, purge=True)
                break
            except SandboxError as e:
                if getattr(e, "status", None) != 404:
                    left.append(sid)
                break
            except KeyboardInterrupt:
                interrupted = True
        else:
            left.append(sid)
    if interrupted:
        raise KeyboardInterrupt
    return left


def _hogs_running(client, ids: list[str]) -> int:
    return sum(any(p["comm"] == HOG_COMM for p in client.inspect(sid)["processes"])
               for sid in ids)


def _measure(client, sid: str) -> tuple[list[float], list[float]]:
    """The CPU each stress-ng worker of the sandbox gets over about a second, and how
    often its cgroup ran out of quota, read from the host as a check reads it."""
    view = SandboxView(client, sid, timeout=5.0)
    hogs = [p for p in view.processes() if p.comm == HOG_COMM]
    if not hogs:
        return [], []
    paths = {p.host_pid: p.cgroup_path("cpu") or "/" for p in hogs}
    meter = view.cpu_meter({p.host_pid: [p] for p in hogs}, cgroups=set(paths.values()))
    meter.run(1.0, reserve=0.5)
    shares = []
    for p in hogs:
        th = meter.throttling(paths[p.host_pid])
        shares.append(round(th.share, 2) if th is not None else None)
    return [round(meter.cpus(p.host_pid), 3) for p in hogs], shares


def summarize(runs: list[Run]) -> dict:
    """The figures of a benchmark's runs (pass rate, hog CPU, check duration)."""
    cpus = [c for r in runs for c in r.hog_cpus]
    ms = [r.check_ms for r in runs]

    def pct(values, p):
        v = percentile(values, p)
        return None if v is None else round(v, 3)

    passed = sum(r.passed for r in runs)
    return {
        "runs": len(runs),
        "passed": passed,
        "pass_rate": round(passed / len(runs), 3) if runs else None,
        "hog_cpus_p50": pct(cpus, 0.5),
        "hog_cpus_min": min(cpus) if cpus else None,
        "hog_cpus_max": max(cpus) if cpus else None,
        "check_ms_p50": pct(ms, 0.5),
        "check_ms_p95": pct(ms, 0.95),
        "check_ms_max": max(ms) if ms else None,
        "failures": [{"run": r.run, "params": r.params, "feedback": r.feedback}
                     for r in runs if not r.passed],
    }


def _loadavg() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def bench_grading(client, lab: Lab, *, exercise: str = "cpu-limit", hogs: int = 20,
                  runs: int = 10, seed: int | None = None, log=lambda msg: None) -> dict:
    """Replay `exercise` of `lab` `runs` times beside `hogs` sandboxes running CPU hogs."""
    ex = lab.exercises.get(exercise)
    if ex is None:
        raise BenchError(f"lab {lab.id!r} has no exercise {exercise!r} (it has: "
                         f"{', '.join(lab.exercises)})")
    if not ex.check or ex.quiz is not None or not ex.solution:
        raise BenchError(f"exercise {exercise!r} is not a checked task with a reference "
                         "solution: there is nothing to replay")
    if hogs < 0 or runs < 1:
        raise BenchError("--hogs must be 0 or more and --runs 1 or more")
    rng = random.Random(seed)
    token = secrets.token_hex(4)
    made: list[str] = []
    results: list[Run] = []
    started = time.monotonic()
    try:
        for _ in range(hogs):
            sid = client.create(**lab.sandbox_limits, labels=_labels(token, "hog"))["id"]
            made.append(sid)
            client.run(sid, ["/bin/sh", "-c", HOG], timeout=30)
        hog_ids = list(made)
        deadline = time.monotonic() + HOGS_READY_TIMEOUT
        while (running := _hogs_running(client, hog_ids)) < hogs:
            if time.monotonic() > deadline:
                raise BenchError(f"only {running} of {hogs} hog sandboxes run stress-ng")
            time.sleep(0.5)
        time.sleep(2.0)  # let the load settle in before the first check
        log(f"{hogs} hogs running (load {_loadavg()}); {runs} runs of {lab.id}/{exercise}")
        for n in range(1, runs + 1):
            params = draw_params(lab.params, rng)
            sid = client.create(**lab.sandbox_limits, labels=_labels(token, "learner"))["id"]
            made.append(sid)
            run_setup(client, sid, lab, params)
            done = client.run(sid, ["/bin/bash", "-c", expand(ex.solution, params)],
                              env=param_env(params), timeout=SOLUTION_TIMEOUT)
            if done.get("exit_code") != 0 or done.get("timed_out"):
                raise BenchError(f"the reference solution exited {done.get('exit_code')}: "
                                 f"{(done.get('stderr') or '')[-300:]}")
            time.sleep(SETTLE)
            result = grade(lab, ex, client=client, sandbox_id=sid, params=params)
            cpus, shares = _measure(client, sid)
            results.append(Run(n, params, result.passed, result.duration_ms,
                               result.feedback, cpus, shares))
            client.destroy(sid, purge=True)
            made.remove(sid)
            log(f"run {n}/{runs}: {'pass' if result.passed else 'FAIL'} in "
                f"{result.duration_ms} ms; hog CPU {cpus}, throttled {shares}; "
                f"{result.feedback[:100]}")
        load = _loadavg()
    finally:
        left = destroy_all(client, made, token)
        if left:
            log(f"could not destroy {len(left)} sandboxes: {', '.join(left)}")
    return {
        "lab": lab.id,
        "exercise": exercise,
        "hogs": hogs,
        "loadavg_1m": load,
        **summarize(results),
        "seconds": round(time.monotonic() - started, 1),
        "detail": [asdict(r) for r in results],
    }
