"""`nslab bench sandbox|terminal`: the benchmarks (nslab.bench), their options and how
their figures are printed."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from nslab.bench.sandbox import bench_sandbox
from nslab.bench.terminal import BenchError, bench_terminal, parse_counts
from sandbox.client import Client

from .common import CommandError, add_socket


def cmd_bench_sandbox(args) -> int:
    result = bench_sandbox(Client(args.socket), count=args.count, background=args.background)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for k, v in result.items():
            print(f"{k:28} {v}")
    return 0


def cmd_bench_terminal(args) -> int:
    password = args.password or os.environ.get("NSLAB_BENCH_PASSWORD") or \
        _demo_password(args.user)
    if not password:
        raise CommandError("--password is needed (or NSLAB_BENCH_PASSWORD, or a readable "
                           "demo-credentials.json in $NSLAB_INSTANCE or /var/lib/nslab-web)")
    log = (lambda msg: print(msg, file=sys.stderr, flush=True)) if not args.quiet else \
        (lambda msg: None)
    try:
        result = bench_terminal(args.url, args.user, password, parse_counts(args.terminals),
                                seconds=args.seconds, rate=args.rate, tabs=args.tabs,
                                flood=not args.no_flood, pid=args.pid, log=log)
    except BenchError as e:
        raise CommandError(str(e)) from None
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for k, v in result.items():
            if not isinstance(v, dict):
                print(f"{k:28} {v}")
        for phase in ("steady", "flood"):
            for n, r in result[phase].items():
                print(f"{phase} {n:>4} terminals: p50 {r['echo_p50_ms']} ms, p99 "
                      f"{r['echo_p99_ms']} ms, max {r['echo_max_ms']} ms, lost {r['lost']}"
                      + (f", web RSS +{r['rss_growth_mib']} MiB" if phase == "flood" else ""))
    return 0


def _demo_password(user: str) -> str | None:
    """The demo account's password from `nslab demo`'s file, where this user may read it."""
    for base in filter(None, (os.environ.get("NSLAB_INSTANCE"), "/var/lib/nslab-web")):
        try:
            return json.loads((Path(base) / "demo-credentials.json").read_text()).get(user)
        except (OSError, ValueError):
            continue
    return None


# ---------------------------------------------------------------- parser

def add_bench_commands(sub) -> None:
    b = sub.add_parser("bench", help="benchmarks")
    bs = b.add_subparsers(dest="bench_command", metavar="COMMAND")
    bs.required = True
    bsb = bs.add_parser("sandbox", help="sandbox create/exec/destroy latency and memory")
    add_socket(bsb)
    bsb.add_argument("--count", type=int, default=50)
    bsb.add_argument("--background", type=int, default=0,
                     help="idle sandboxes to create first (load test)")
    bsb.add_argument("--json", action="store_true")
    bsb.set_defaults(func=cmd_bench_sandbox)
    bst = bs.add_parser("terminal", help="keystroke-to-echo latency through a running web "
                        "app's terminals, and its memory while one terminal floods")
    bst.add_argument("--url", default="http://127.0.0.1:8000", help="the running web app")
    bst.add_argument("--user", default="learner", help="a learner enrolled in a course with "
                     "labs (default: the demo's 'learner')")
    bst.add_argument("--password", help="(default: $NSLAB_BENCH_PASSWORD, else the demo "
                     "credentials file when readable)")
    bst.add_argument("--terminals", default="1,50,200", metavar="N,N,...",
                     help="terminal counts to measure (default 1,50,200)")
    bst.add_argument("--seconds", type=float, default=10.0, help="length of each phase")
    bst.add_argument("--rate", type=float, default=5.0,
                     help="keystrokes per second per terminal (default 5)")
    bst.add_argument("--tabs", type=int, default=1, metavar="K",
                     help="terminals per Socket.IO connection (a page's tabs; default 1)")
    bst.add_argument("--no-flood", action="store_true", help="skip the `yes` phases")
    bst.add_argument("--pid", type=int, help="the web process to watch (default: the one "
                     "listening on the URL's port)")
    bst.add_argument("--quiet", action="store_true", help="no progress on stderr")
    bst.add_argument("--json", action="store_true")
    bst.set_defaults(func=cmd_bench_terminal)


COMMANDS = {"bench": add_bench_commands}
