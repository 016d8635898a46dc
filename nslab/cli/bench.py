"""`nslab bench sandbox|docker|terminal|grading|kernel|classroom`: the benchmarks
(nslab.bench), their options and how their figures are printed."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

from nslab.bench.classroom import BenchError as ClassroomBenchError
from nslab.bench.classroom import bench_classroom
from nslab.bench.classroom import validate as validate_classroom
from nslab.bench.docker import IMAGES_SRC
from nslab.bench.docker import BenchError as DockerBenchError
from nslab.bench.docker import bench_docker
from nslab.bench.grading import BenchError as GradingBenchError
from nslab.bench.grading import bench_grading
from nslab.bench.kernel import BenchError as KernelBenchError
from nslab.bench.kernel import bench_kernel
from nslab.bench.sandbox import bench_sandbox
from nslab.bench.terminal import BenchError, bench_terminal, parse_counts
from nslab.labkit.catalog import default_labs_dir
from nslab.labkit.loader import load_lab
from sandbox.client import Client

from .bench_instance import seed_instance
from .common import EXIT_ERROR, CommandError, add_socket


def cmd_bench_sandbox(args) -> int:
    try:
        result = bench_sandbox(Client(args.socket), count=args.count,
                               background=args.background, interval=args.interval)
    except ValueError as e:  # a bad --count or --interval: nothing was created
        raise CommandError(str(e)) from None
    return _print_figures(result, args.json)


def _print_figures(result: dict, as_json: bool) -> int:
    if as_json:
        print(json.dumps(result, indent=2))
    else:
        for k, v in result.items():
            print(f"{k:28} {v}")
    return 0


def cmd_bench_docker(args) -> int:
    try:
        result = bench_docker(Client(args.socket), runs=args.runs,
                              images_src=Path(args.images_src))
    except ValueError as e:  # a bad --runs: nothing was created
        raise CommandError(str(e)) from None
    except DockerBenchError as e:
        print(f"nslab: bench docker: {e}", file=sys.stderr)
        return EXIT_ERROR
    return _print_figures(result, args.json)


def cmd_bench_terminal(args) -> int:
    password = args.password or os.environ.get("NSLAB_BENCH_PASSWORD") or \
        _demo_password(args.user)
    if not password:
        raise CommandError("--password is needed (or NSLAB_BENCH_PASSWORD, or a readable "
                           "demo-credentials.json in $NSLAB_INSTANCE or /var/lib/nslab-web)")
    log = _progress_log(args)
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


def cmd_bench_kernel(args) -> int:
    try:
        result = bench_kernel(Client(args.socket), starts=args.starts, execs=args.execs)
    except ValueError as e:  # a bad --starts or --execs: nothing was created
        raise CommandError(str(e)) from None
    except KernelBenchError as e:
        raise CommandError(str(e)) from None
    return _print_figures(result, args.json)


def _progress_log(args):
    """Progress lines on stderr (stdout keeps the figures), unless --quiet."""
    if args.quiet:
        return lambda msg: None
    return lambda msg: print(msg, file=sys.stderr, flush=True)


def _interrupt(signum, frame):
    # SIGTERM ends the benchmark the way Ctrl-C does, so that its sandboxes are destroyed.
    raise KeyboardInterrupt


def _until_done(run, error: type[Exception]):
    """`run()` with SIGTERM taken as Ctrl-C (the benchmark cleans up on either); its
    `error` becomes a one-line command error."""
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        return run()
    except error as e:
        raise CommandError(str(e)) from None
    finally:
        signal.signal(signal.SIGTERM, previous)


def cmd_bench_grading(args) -> int:
    path = Path(args.lab) if "/" in args.lab else default_labs_dir() / args.lab
    if not (path / "lab.yaml").is_file():
        raise CommandError(f"{args.lab}: no such lab (looked for {path / 'lab.yaml'})")
    lab = load_lab(path)
    if lab.errors:
        raise CommandError(f"lab {lab.id} does not validate: {lab.errors[0]} "
                           "(`nslab lab validate`)")
    client = Client(args.socket)
    client.info()  # a clear "cannot reach sandboxd" before any sandbox is made
    log = _progress_log(args)
    result = _until_done(lambda: bench_grading(client, lab, exercise=args.exercise,
                                               hogs=args.hogs, runs=args.runs,
                                               seed=args.seed, log=log), GradingBenchError)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for k, v in result.items():
            if k not in ("detail", "failures"):
                print(f"{k:28} {v}")
        for f in result["failures"]:
            print(f"failure in run {f['run']} ({f['params']}): {f['feedback']}")
    return 0 if result["passed"] == result["runs"] else EXIT_ERROR


def cmd_bench_classroom(args) -> int:
    try:
        validate_classroom(args.learners, args.checks, args.rate, args.seconds)
    except ClassroomBenchError as e:
        raise CommandError(str(e)) from None
    if os.geteuid() != 0:
        raise CommandError("bench classroom runs as root: it serves its throwaway instance "
                           "as the user nslab, as scripts/serve does")
    client = Client(args.socket)  # $NSLAB_SOCKET, else the default daemon's
    log = _progress_log(args)
    result = _until_done(lambda: bench_classroom(
        client, seed_instance, socket_path=str(client.socket_path), learners=args.learners,
        checks=args.checks, rate=args.rate, seconds=args.seconds, seed_rng=args.seed, log=log),
        ClassroomBenchError)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for k, v in result.items():
            if not isinstance(v, dict):
                print(f"{k:28} {v}")
        for phase in ("without_view", "at_rest", "checking"):
            print(f"{phase}: {json.dumps(result[phase])}")
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
    bsb.add_argument("--interval", type=float, default=0.1, metavar="SECONDS",
                     help="pause before each create, as learners arrive (default 0.1; "
                          "0: back to back, which outruns the warm pool)")
    bsb.add_argument("--json", action="store_true")
    bsb.set_defaults(func=cmd_bench_sandbox)
    bsd = bs.add_parser("docker", help="the container engine inside a sandbox: docker run, "
                        "pull, build and memory, against podman run on the host")
    add_socket(bsd)
    bsd.add_argument("--runs", type=int, default=10, help="timed `docker run`s (default 10)")
    bsd.add_argument("--images-src", default=str(IMAGES_SRC),
                     help="where scripts/setup built the images (default %(default)s)")
    bsd.add_argument("--json", action="store_true")
    bsd.set_defaults(func=cmd_bench_docker)
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
    bsg = bs.add_parser("grading", help="replay a measured exercise's check beside sandboxes "
                        "running CPU hogs (a full class on this host)")
    add_socket(bsg)
    bsg.add_argument("--lab", default="cgroups", help="lab id or folder (default: cgroups)")
    bsg.add_argument("--exercise", default="cpu-limit",
                     help="the exercise to replay (default: cpu-limit)")
    bsg.add_argument("--hogs", type=int, default=20,
                     help="sandboxes running `stress-ng --cpu 1` beside it (default 20)")
    bsg.add_argument("--runs", type=int, default=10,
                     help="fresh sandboxes to replay the solution and check in (default 10)")
    bsg.add_argument("--seed", type=int, help="seed for the drawn per-learner values")
    bsg.add_argument("--quiet", action="store_true", help="no progress on stderr")
    bsg.add_argument("--json", action="store_true")
    bsg.set_defaults(func=cmd_bench_grading)
    bsk = bs.add_parser("kernel", help="notebook kernel start (request to idle) and `1+1` "
                        "latency inside a sandbox")
    add_socket(bsk)
    bsk.add_argument("--starts", type=int, default=5, help="kernels started (default 5)")
    bsk.add_argument("--execs", type=int, default=50, help="timed `1+1` runs (default 50)")
    bsk.add_argument("--json", action="store_true")
    bsk.set_defaults(func=cmd_bench_kernel)
    bsc = bs.add_parser("classroom", help="the instructor's live view with a class: time "
                        "from a learner's check to the instructor's cell, and the web "
                        "process's CPU at rest (a throwaway instance; as root)")
    add_socket(bsc)
    bsc.add_argument("--learners", type=int, default=50,
                     help="learner accounts, each with a running sandbox and an open page "
                          "(default 50)")
    bsc.add_argument("--checks", type=int, default=250, help="checks in phase 2 (default 250)")
    bsc.add_argument("--rate", type=float, default=5.0,
                     help="checks a second, the whole class together (default 5)")
    bsc.add_argument("--seconds", type=float, default=30.0,
                     help="length of phase 1, the live view at rest (default 30)")
    bsc.add_argument("--seed", type=int, help="seed for the check times and answers")
    bsc.add_argument("--quiet", action="store_true", help="no progress on stderr")
    bsc.add_argument("--json", action="store_true")
    bsc.set_defaults(func=cmd_bench_classroom)


COMMANDS = {"bench": add_bench_commands}
