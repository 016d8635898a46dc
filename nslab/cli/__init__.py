"""The `nslab` command: one entry point for the daemon, sandboxes, images, labs, benchmarks
and the web app's administration (database, users, courses).

Usage errors exit 2, operational errors exit 1 with one line `nslab: error: ...`;
`nslab sandbox exec` exits with the command's own exit code.

One module per command group (`daemon`: sandboxd and images, `sandbox`, `lab`, `bench`,
`web`, `kernel`), each importing what its commands use; `common` holds what they share. A group's
module is imported only when its command runs (or `--help` lists them all):
`nslab sandboxd` forks its spawner from this very process, and every sandbox and exec is a
fork of the spawner, so it must not carry the web app, the lab machinery or the daemon's
HTTP client; `nslab sandbox ls` need not load Flask either.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from sandbox.errors import SandboxError

from .common import EXIT_ERROR, CommandError

# Each top-level command and the module of this package that defines it (its `COMMANDS`
# maps the command to the function adding its parser), in the order `nslab --help` lists them.
COMMANDS = {
    "sandboxd": "daemon", "sandbox": "sandbox", "image": "daemon", "bench": "bench",
    "db": "web", "user": "web", "course": "web", "demo": "web", "lab": "lab", "serve": "web",
    "kernel": "kernel",
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command, or of just the command `only` (importing only its module)."""
    p = argparse.ArgumentParser(prog="nslab", description="A teaching lab for Linux container internals.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, module in COMMANDS.items():
        if only in (None, name):
            importlib.import_module(f"{__name__}.{module}").COMMANDS[name](sub)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = argv[0] if argv and argv[0] in COMMANDS else None
    args = build_parser(command).parse_args(argv)
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
