"""`nslab sandbox create|ls|exec|inspect|stats|stop|start|rm`: sandboxes through a running
daemon. `exec` streams the process's output and stdin through `Client.attach()` and exits
with the process's exit code."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import termios
import threading
import tty as ttymod
from contextlib import contextmanager

from sandbox.client import Client, StreamClosed
from sandbox.errors import SandboxError
from sandbox.protocol import Channel

from .common import add_socket, print_json, table


def cmd_create(args) -> int:
    params = {"image": args.image, "cpus": args.cpus, "memory": args.memory, "pids": args.pids,
              "disk": args.disk, "hostname": args.hostname, "home": args.home,
              "cpu_weight": args.cpu_weight, "cpuset": args.cpuset, "swap": args.swap,
              "containers": args.containers or None}
    sb = Client(args.socket).create(**params)
    if args.json:
        print_json(sb)
    else:
        print(sb["id"])
    return 0


def cmd_ls(args) -> int:
    boxes = Client(args.socket).list()
    if args.json:
        print_json(boxes)
        return 0
    rows = [[b["id"], b["state"], b["image"], b["hostname"], b["address"] or "-",
             b["home"] or "-"] for b in boxes]
    table(rows, ["ID", "STATE", "IMAGE", "HOSTNAME", "ADDRESS", "HOME"])
    return 0


def cmd_inspect(args) -> int:
    print_json(Client(args.socket).inspect(args.id))
    return 0


def cmd_stats(args) -> int:
    s = Client(args.socket).stats(args.id)
    if args.json:
        print_json(s)
        return 0
    mib = 1 << 20
    lim = s.get("memory_limit")
    print(f"cpu time      {s.get('cpu_usage_ns', 0) / 1e9:.2f} s"
          f"   (limit {s['cpus']} CPU)" if s.get("cpus") else
          f"cpu time      {s.get('cpu_usage_ns', 0) / 1e9:.2f} s")
    print(f"memory        {s.get('memory_current', 0) / mib:.1f} MiB, peak "
          f"{(s.get('memory_peak') or 0) / mib:.1f} MiB"
          + (f", limit {lim / mib:.0f} MiB" if lim else ""))
    print(f"oom kills     {s.get('oom_kills', 0)}")
    print(f"pids          {s.get('pids_current', 0)} / {s.get('pids_limit') or 'max'}")
    disk = s.get("disk") or {}
    if disk:
        print(f"disk          {disk.get('used_bytes', 0) / mib:.1f} MiB / "
              f"{(disk.get('limit_bytes') or 0) / mib:.0f} MiB")
    return 0


def cmd_rm(args) -> int:
    daemon = Client(args.socket)
    for sid in args.ids:
        daemon.destroy(sid, purge=args.purge)
    return 0


def cmd_stop(args) -> int:
    Client(args.socket).stop(args.id)
    return 0


def cmd_start(args) -> int:
    Client(args.socket).start(args.id)
    return 0


# ---------------------------------------------------------------- exec

def cmd_exec(args) -> int:
    argv = args.cmd[1:] if args.cmd and args.cmd[0] == "--" else args.cmd
    if not argv:
        raise SandboxError("exec needs a command: nslab sandbox exec ID -- CMD [ARG...]")
    env = {}
    for item in args.env or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise SandboxError(f"-e takes NAME=VALUE, not {item!r}")
        env[key] = value
    user = int(args.user) if args.user and args.user.isdigit() else (args.user or 0)
    tty = args.tty
    rows, cols = 24, 80
    if tty and sys.stdout.isatty():
        cols, rows = os.get_terminal_size(sys.stdout.fileno())
    daemon = Client(args.socket)
    info = daemon.exec(args.id, argv, tty=tty, user=user, cwd=args.workdir, env=env,
                       rows=rows, cols=cols)
    with _raw_terminal(tty and sys.stdin.isatty()), daemon.attach(info["id"]) as stream:
        threading.Thread(target=_pump_stdin, args=(stream,), name="stdin", daemon=True).start()
        with _forward_resizes(stream, tty and sys.stdout.isatty()):
            return _relay_output(stream)


@contextmanager
def _raw_terminal(raw: bool):
    """The caller's terminal in raw mode (every key, ^C and ^D too, goes to the sandbox's
    PTY), restored afterwards."""
    if not raw:
        yield
        return
    saved = termios.tcgetattr(0)
    ttymod.setraw(0)
    try:
        yield
    finally:
        termios.tcsetattr(0, termios.TCSADRAIN, saved)


@contextmanager
def _forward_resizes(stream, forward: bool):
    """While inside, a resize of the caller's terminal (SIGWINCH) resizes the PTY."""
    if not forward:
        yield
        return

    def on_winch(_signum, _frame) -> None:
        c, r = os.get_terminal_size(sys.stdout.fileno())
        stream.send_json(Channel.RESIZE, {"rows": r, "cols": c})

    previous = signal.signal(signal.SIGWINCH, on_winch)
    try:
        yield
    finally:
        signal.signal(signal.SIGWINCH, previous)


def _pump_stdin(stream) -> None:
    """Our stdin to the process's, until EOF (then CLOSE_STDIN: EOF on a pipe, ^D on a
    PTY) or until the stream is gone."""
    while True:
        try:
            data = os.read(0, 65536)
        except OSError:
            data = b""
        if not data:
            stream.send(Channel.CLOSE_STDIN)
            return
        if not stream.send(Channel.STDIN, data):
            return


def _relay_output(stream) -> int:
    """The process's stdout and stderr to ours until its exit frame; its exit code (a
    signal N as 128+N, as a shell reports it; 255 if the stream ended without one)."""
    out, err = sys.stdout.buffer, sys.stderr.buffer
    while True:
        try:
            channel, data = stream.recv()
        except StreamClosed:
            return 255
        if channel == Channel.STDOUT:
            out.write(data)
            out.flush()
        elif channel == Channel.STDERR:
            err.write(data)
            err.flush()
        elif channel == Channel.EXIT:
            code = json.loads(data)["exit_code"]
            if code is None:
                return 255
            return 128 - code if code < 0 else code  # killed by a signal: 128 + N


# ---------------------------------------------------------------- parser

def add_sandbox_commands(sub) -> None:
    s = sub.add_parser("sandbox", help="create and use sandboxes")
    ss = s.add_subparsers(dest="sandbox_command", metavar="COMMAND")
    ss.required = True

    c = ss.add_parser("create", help="create a sandbox and print its id")
    add_socket(c)
    c.add_argument("--image", default="host")
    c.add_argument("--cpus", type=float, help="CPU quota, e.g. 0.5")
    c.add_argument("--cpu-weight", type=int, help="relative CPU weight 1-10000 (default 100)")
    c.add_argument("--cpuset", help="CPUs allowed, e.g. 0 or 0-1")
    c.add_argument("--memory", help="memory limit, e.g. 256m")
    c.add_argument("--swap", help="swap allowed on top of --memory")
    c.add_argument("--pids", type=int, help="process limit")
    c.add_argument("--disk", help="size of the writable layer, e.g. 1g")
    c.add_argument("--hostname")
    c.add_argument("--home", help="name of a persistent home volume mounted at /root")
    c.add_argument("--containers", action="store_true",
                   help="run a container engine inside (podman, `docker`): image storage "
                        "on the sandbox's disk, devices cgroup; give it about 1g memory")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_create)

    ls = ss.add_parser("ls", help="list sandboxes")
    add_socket(ls)
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_ls)

    e = ss.add_parser("exec", help="run a command in a sandbox")
    add_socket(e)
    e.add_argument("-t", "--tty", action="store_true", help="allocate a terminal")
    e.add_argument("-u", "--user", help="user name or uid inside the sandbox (default root)")
    e.add_argument("-w", "--workdir", help="working directory inside the sandbox")
    e.add_argument("-e", "--env", action="append", help="NAME=VALUE (repeatable)")
    e.add_argument("id")
    e.add_argument("cmd", nargs=argparse.REMAINDER)
    e.set_defaults(func=cmd_exec)

    for name, func, text in (("inspect", cmd_inspect, "host-side facts as JSON"),
                             ("stop", cmd_stop, "stop all processes, keep the files"),
                             ("start", cmd_start, "start a stopped sandbox again")):
        x = ss.add_parser(name, help=text)
        add_socket(x)
        x.add_argument("id")
        x.set_defaults(func=func)

    st = ss.add_parser("stats", help="resource usage")
    add_socket(st)
    st.add_argument("id")
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=cmd_stats)

    rm = ss.add_parser("rm", help="destroy sandboxes (homes are kept unless --purge)")
    add_socket(rm)
    rm.add_argument("--purge", action="store_true", help="also delete the home volume")
    rm.add_argument("ids", nargs="+", metavar="ID")
    rm.set_defaults(func=cmd_rm)


COMMANDS = {"sandbox": add_sandbox_commands}
