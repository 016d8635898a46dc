"""`nslab bench kernel` against a real sandboxd: its figures are there and plausible, and
it leaves no sandbox behind."""

from __future__ import annotations

import json

import pytest

pytestmark = [pytest.mark.privileged, pytest.mark.slow]


def test_bench_kernel_reports_start_and_exec_latency(sandboxd, client):
    before = {s["id"] for s in client.list()}
    r = sandboxd.cli("bench", "kernel", "--json", "--starts", "2", "--execs", "5", timeout=180)
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    figures = json.loads(r.stdout)
    assert figures["starts"] == 2 and figures["execs"] == 5
    # A kernel start imports ipykernel inside (hundreds of ms); `1+1` is a round trip.
    assert 100 < figures["start_p50_ms"] <= figures["start_max_ms"] < 30_000
    assert 0 < figures["exec_p50_ms"] <= figures["exec_p99_ms"] < 5_000
    assert figures["targets"] == {"start_p50_ms": 1500, "exec_p50_ms": 20}
    assert {s["id"] for s in client.list()} == before


def test_bench_kernel_refuses_bad_counts_before_making_anything(sandboxd, client):
    before = {s["id"] for s in client.list()}
    r = sandboxd.cli("bench", "kernel", "--starts", "0")
    assert r.returncode == 1 and b"--starts" in r.stderr
    assert {s["id"] for s in client.list()} == before
