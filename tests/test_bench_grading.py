"""`nslab bench grading`: a measured check replayed beside sandboxes that run CPU hogs (a
full class on a small host). The real figures come from `--hogs 20` (README); here four hog
sandboxes keep CI time bounded while still loading both cores."""

from __future__ import annotations

import pytest

from nslab.bench import grading as bg
from nslab.cli import build_parser
from nslab.labkit.catalog import default_labs_dir
from nslab.labkit.loader import load_lab


def _lab():
    lab = load_lab(default_labs_dir() / "cgroups")
    assert lab.errors == [], [str(e) for e in lab.errors]
    return lab


def _bench_sandboxes(client) -> list[str]:
    return [s["id"] for s in client.list()
            if (s.get("labels") or {}).get("purpose") == "bench-grading"]


class NoDaemon:
    """A client that fails the test if the benchmark touches the daemon at all."""

    def __getattr__(self, name):
        raise AssertionError(f"the benchmark called client.{name} on arguments it refuses")


@pytest.mark.parametrize("kwargs, why", [
    ({"exercise": "no-such"}, "has no exercise"),
    ({"exercise": "quota-file"}, "not a checked task"),
    ({"hogs": -1}, "--hogs"),
    ({"runs": 0}, "--runs"),
])
def test_bad_arguments_are_refused_before_any_sandbox_is_made(kwargs, why):
    with pytest.raises(bg.BenchError, match=why):
        bg.bench_grading(NoDaemon(), _lab(), **kwargs)


def test_summary_counts_passes_and_keeps_every_failure():
    runs = [bg.Run(1, {"target": 0.3}, True, 1000, "ok", [0.30], [0.9]),
            bg.Run(2, {"target": 0.5}, False, 4000, "too little", [0.01], [0.0]),
            bg.Run(3, {"target": 0.4}, True, 3000, "busy", [0.05, 0.02], [0.0, None])]
    s = bg.summarize(runs)
    assert (s["runs"], s["passed"], s["pass_rate"]) == (3, 2, 0.667)
    assert (s["hog_cpus_min"], s["hog_cpus_max"], s["hog_cpus_p50"]) == (0.01, 0.30, 0.035)
    assert (s["check_ms_p50"], s["check_ms_max"]) == (3000, 4000)
    assert s["failures"] == [{"run": 2, "params": {"target": 0.5}, "feedback": "too little"}]
    assert bg.summarize([])["pass_rate"] is None


def test_cli_options():
    args = build_parser().parse_args(["bench", "grading", "--hogs", "4", "--runs", "2",
                                      "--json"])
    assert (args.lab, args.exercise, args.hogs, args.runs, args.json) == \
        ("cgroups", "cpu-limit", 4, 2, True)


@pytest.mark.privileged
@pytest.mark.slow
def test_the_cpu_limit_check_passes_beside_hog_sandboxes(client):
    result = bg.bench_grading(client, _lab(), exercise="cpu-limit", hogs=4, runs=2, seed=3)
    assert result["pass_rate"] == 1.0, result["failures"]
    assert (result["hogs"], result["runs"]) == (4, 2)
    # The benchmark measured the solution's hog itself, after each check.
    assert all(len(d["hog_cpus"]) == 1 for d in result["detail"]), result["detail"]
    assert _bench_sandboxes(client) == []


@pytest.mark.privileged
@pytest.mark.slow
def test_an_interrupted_benchmark_destroys_every_sandbox_it_made(client):
    def interrupt_once_the_hogs_run(msg):
        if "hogs running" in msg:
            assert len(_bench_sandboxes(client)) == 2  # they exist at this point
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        bg.bench_grading(client, _lab(), hogs=2, runs=1, log=interrupt_once_the_hogs_run)
    assert _bench_sandboxes(client) == []
