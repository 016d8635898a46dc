"""`SandboxView.cpu_meter` / `measure_cpu`: what a measured check computes from the host's
facts, against a fake daemon whose processes burn CPU at known rates (no sandbox needed).
The real thing is proven by the cgroups lab's replay and `nslab bench grading`."""

from __future__ import annotations

import time

import pytest

from nslab.labkit.check import CheckTimeout, SandboxView


class FakeDaemon:
    """inspect() reports processes burning CPU at fixed rates since the fake was made, and
    one cgroup whose quota runs out in `throttled_share` of its 100 ms periods."""

    def __init__(self, rates: dict[int, float], states=None, exits=None,
                 throttled_share: float | None = None):
        self.t0 = time.monotonic()
        self.rates = rates
        self.states = states or {}          # host pid -> states to cycle through, call by call
        self.exits = exits or {}            # host pid -> seconds after which it is gone
        self.throttled_share = throttled_share
        self.calls = 0

    def inspect(self, sid):
        self.calls += 1
        t = time.monotonic() - self.t0
        procs = []
        for pid, rate in self.rates.items():
            gone = self.exits.get(pid)
            if gone is not None and t > gone:
                continue
            cycle = self.states.get(pid, "R")
            procs.append({"host_pid": pid, "cpu_ns": int(rate * t * 1e9),
                          "state": cycle[self.calls % len(cycle)]})
        usage = {}
        if self.throttled_share is not None:
            periods = int(t / 0.1)
            usage = {"cpu_nr_periods": periods,
                     "cpu_nr_throttled": int(periods * self.throttled_share),
                     "cpu_throttled_ns": int(t * 0.5e9)}
        return {"processes": procs, "cgroups": [{"path": "/lim", "usage": usage}]}


class P:
    def __init__(self, host_pid):
        self.host_pid = host_pid


def view(daemon, timeout=10.0):
    return SandboxView(daemon, "sb", timeout=timeout)


def test_cpus_of_each_group_over_the_window():
    d = FakeDaemon({1: 0.3, 2: 0.5, 3: 0.25})
    m = view(d).cpu_meter({"a": [P(1)], "bc": [P(2), P(3)]}).run(0.6, reserve=0.1)
    assert m.seconds == pytest.approx(0.6, abs=0.08)
    assert m.cpus("a") == pytest.approx(0.3, abs=0.02)
    assert m.cpus("bc") == pytest.approx(0.75, abs=0.03)
    assert m.cpu_seconds("a") == pytest.approx(0.3 * m.seconds, abs=0.01)
    assert m.samples >= 3  # it looked in between, for the states


def test_the_window_can_be_extended_from_the_same_start():
    d = FakeDaemon({1: 0.4})
    m = view(d).cpu_meter({"a": [P(1)]}).run(0.3, reserve=0.1)
    first = m.seconds
    m.run(0.7, reserve=0.1)
    assert m.seconds == pytest.approx(0.7, abs=0.08) and m.seconds > first
    assert m.cpus("a") == pytest.approx(0.4, abs=0.02)


def test_runnable_share_counts_the_looks_in_which_a_process_was_ready_to_run():
    d = FakeDaemon({1: 0.3, 2: 0.0, 3: 0.1}, states={1: "R", 2: "S", 3: "RS"})
    m = view(d).cpu_meter({"hog": [P(1)], "sleeper": [P(2)], "half": [P(3)]})
    m.run(0.6, interval=0.05, reserve=0.1)
    assert m.runnable("hog") == 1.0
    assert m.runnable("sleeper") == 0.0
    assert 0.3 <= m.runnable("half") <= 0.7


def test_a_process_that_exits_keeps_what_it_used():
    d = FakeDaemon({1: 1.0}, exits={1: 0.25})
    m = view(d).cpu_meter({"a": [P(1)]}).run(0.6, interval=0.05, reserve=0.1)
    assert m.cpu_seconds("a") == pytest.approx(0.25, abs=0.06)


def test_throttling_is_the_difference_of_the_cgroup_counters():
    d = FakeDaemon({1: 0.3}, throttled_share=1.0)
    m = view(d).cpu_meter({"a": [P(1)]}, cgroups=["lim/"]).run(1.0, reserve=0.1)
    th = m.throttling("/lim")
    assert th.periods == pytest.approx(10, abs=1)
    assert th.throttled == th.periods and th.share == 1.0
    assert th.seconds == pytest.approx(0.5, abs=0.06)
    # A host without cpu.stat counters, or a cgroup not asked for: nothing to say.
    assert view(FakeDaemon({1: 0.3})).cpu_meter({}, cgroups=["/lim"]).throttling("/lim") is None
    assert m.throttling("/other") is None


def test_a_window_in_cfs_periods_ends_on_a_whole_number_of_them():
    d = FakeDaemon({1: 0.3})
    m = view(d).cpu_meter({"a": [P(1)]}).run(0.55, period_us=100000, reserve=0.1)
    assert m.seconds == pytest.approx(0.5, abs=0.03)


def test_the_check_deadline_cuts_the_window_short():
    d = FakeDaemon({1: 0.3})
    v = view(d, timeout=0.8)
    m = v.cpu_meter({"a": [P(1)]}).run(5.0, reserve=0.3)
    assert m.seconds < 0.6 and m.samples >= 2
    # Past the deadline the window stays as it was, and a further look is refused.
    seconds = m.seconds
    time.sleep(v.deadline_left() + 0.01)
    assert m.run(6.0).seconds == seconds
    with pytest.raises(CheckTimeout):
        m.sample()


def test_measure_cpu_keeps_its_meaning():
    d = FakeDaemon({1: 0.5, 2: 0.2})
    assert view(d).measure_cpu([P(1), P(2)], seconds=0.5) == pytest.approx(0.7, abs=0.03)
