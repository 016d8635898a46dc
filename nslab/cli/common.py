"""What the command groups share: the --socket option, printing tables and JSON, and
`CommandError` for bad input. Light on purpose: `nslab sandboxd` imports it before it
forks its spawner."""

from __future__ import annotations

import argparse
import json

EXIT_ERROR = 1


class CommandError(Exception):
    """Bad input for a command; the message is printed after `nslab: error: `."""


def add_socket(p: argparse.ArgumentParser) -> None:
    p.add_argument("--socket", help="sandboxd's Unix socket (default: $NSLAB_SOCKET or "
                   "/run/nslab/sandboxd.sock)")


def print_json(data) -> None:
    print(json.dumps(data, indent=2, sort_keys=True))


def table(rows: list[list[str]], header: list[str]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    for row in [header, *rows]:
        print("  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip())
