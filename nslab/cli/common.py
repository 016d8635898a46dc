"""What the command groups share: the --socket option, the daemon's client, printing
tables and JSON, and `CommandError` for bad input."""

from __future__ import annotations

import argparse
import json

EXIT_ERROR = 1


class CommandError(Exception):
    """Bad input for a command; the message is printed after `nslab: error: `."""


def add_socket(p: argparse.ArgumentParser) -> None:
    p.add_argument("--socket", help="sandboxd's Unix socket (default: $NSLAB_SOCKET or "
                   "/run/nslab/sandboxd.sock)")


def client(args):
    """The client of the daemon that --socket names."""
    # Imported here, when a command talks to a daemon: `nslab sandboxd` forks its spawner
    # from this process (sandbox.main), which should not carry the client's HTTP and
    # WebSocket modules into every sandbox it forks.
    from sandbox.client import Client

    return Client(args.socket)


def print_json(data) -> None:
    print(json.dumps(data, indent=2, sort_keys=True))


def table(rows: list[list[str]], header: list[str]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    for row in [header, *rows]:
        print("  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip())
