"""`nslab bench terminal`'s parts that need no server: the figures, the JSON it prints,
its options, and finding the process that listens on a port. (The benchmark itself runs
against a live server: see the README's benchmark section.)"""

from __future__ import annotations

import json
import os
import socket

import pytest

from nslab.bench import terminal as bt
from nslab.cli import build_parser

HEADLINE = {"echo_p50_ms", "echo_p99_ms", "terminals", "flood_echo_p99_ms",
            "flood_rss_growth_mib"}


def test_percentile_interpolates_between_ranks():
    assert bt.percentile([], 0.5) is None
    assert bt.percentile([7.0], 0.99) == 7.0
    assert bt.percentile([3, 1, 2], 0.5) == 2          # unsorted input
    assert bt.percentile([1, 2, 3, 4], 0.5) == 2.5
    values = list(range(1, 101))                         # 1..100
    assert bt.percentile(values, 0.0) == 1 and bt.percentile(values, 1.0) == 100
    assert bt.percentile(values, 0.99) == pytest.approx(99.01)
    with pytest.raises(ValueError):
        bt.percentile(values, 99)


def test_summarize_counts_lost_keystrokes():
    s = bt.summarize([1.0, 2.0, 3.0, 100.0], lost=2)
    assert s["keystrokes"] == 6 and s["lost"] == 2
    assert s["echo_p50_ms"] == 2.5 and s["echo_max_ms"] == 100.0
    assert s["echo_p99_ms"] == pytest.approx(97.09)
    empty = bt.summarize([], lost=3)
    assert empty["echo_p50_ms"] is None and empty["keystrokes"] == 3


def test_headline_is_fifty_terminals_or_the_closest_count():
    assert bt.headline_count([1, 50, 200]) == 50
    assert bt.headline_count([1, 20, 200]) == 20
    assert bt.headline_count([1, 200]) == 1
    assert bt.headline_count([40, 60]) == 60              # a tie goes to the larger
    assert bt.headline_count([]) is None


def test_result_shape_with_a_fake_measurement():
    steady = {n: {**bt.summarize([2.0 + n / 100, 3.0, 20.0]), "terminals": n}
              for n in (1, 50, 200)}
    flood = {n: {**bt.summarize([5.0, 60.0]), "terminals": n, "rss_growth_mib": 1.5}
             for n in (50, 200)}
    result = bt.build_result(steady, flood, {"sandboxes": 2, "connections": 201})
    assert HEADLINE <= set(result)
    assert result["terminals"] == 50
    assert result["echo_p50_ms"] == steady[50]["echo_p50_ms"]
    assert result["flood_echo_p99_ms"] == flood[50]["echo_p99_ms"]
    assert result["flood_rss_growth_mib"] == 1.5 and result["sandboxes"] == 2
    assert list(result["steady"]) == ["1", "50", "200"] and list(result["flood"]) == ["50", "200"]
    assert json.loads(json.dumps(result)) == result       # plain JSON
    # Without flood phases the flood figures are null, not missing.
    bare = bt.build_result({1: steady[1]}, {}, {})
    assert HEADLINE <= set(bare) and bare["flood_echo_p99_ms"] is None


def test_counts_and_options():
    assert bt.parse_counts("200,1, 50,50") == [1, 50, 200]
    for bad in ("", "0", "a,b", "-3"):
        with pytest.raises(bt.BenchError):
            bt.parse_counts(bad)
    args = build_parser().parse_args(["bench", "terminal", "--password", "pw", "--json"])
    assert (args.url, args.user, args.terminals, args.seconds, args.rate, args.tabs) == \
        ("http://127.0.0.1:8000", "learner", "1,50,200", 10.0, 5.0, 1)
    with pytest.raises(bt.BenchError):
        bt.bench_terminal(password="pw", seconds=0)


def test_server_pid_finds_the_listener_and_reads_its_memory():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert bt.server_pid(port) == os.getpid()
    assert bt.rss_bytes(os.getpid()) > 1 << 20
    assert bt.cpu_seconds(os.getpid()) > 0
    with socket.socket() as s:   # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    assert bt.server_pid(free) is None
