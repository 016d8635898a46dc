"""The `nslab` command: one entry point for the daemon, sandboxes, images, labs, benchmarks
and the web app's administration (database, users, courses).

Usage errors exit 2, operational errors exit 1 with one line `nslab: error: ...`;
`nslab sandbox exec` exits with the command's own exit code.

One module per command group (`daemon`: sandboxd and images, `sandbox`, `lab`, `bench`,
`web`); `common` holds what they share. `nslab sandboxd` forks its spawner from this very
process, and every sandbox and exec is a fork of the spawner, so what this package imports
up front is kept small: the daemon's client, the lab machinery, the benchmarks and the
web app are imported by the commands that use them.
"""

from __future__ import annotations

import argparse
import sys

from sandbox.errors import SandboxError

from . import bench, daemon, lab, sandbox, web
from .common import EXIT_ERROR, CommandError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nslab", description="A teaching lab for Linux container internals.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    # In the order `nslab --help` has always listed them.
    daemon.add_sandboxd_command(sub)
    sandbox.add_commands(sub)
    daemon.add_image_commands(sub)
    bench.add_commands(sub)
    web.add_admin_commands(sub)
    lab.add_commands(sub)
    web.add_serve_command(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except SandboxError as e:
        print(f"nslab: error: {e.message}", file=sys.stderr)
        return EXIT_ERROR
    except CommandError as e:
        print(f"nslab: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
