"""What the daemon asks the spawner to do, and every message that carries it.

The daemon and the spawner share one SOCK_SEQPACKET socket: each message is one JSON
object, with file descriptors (pidfds, PTY masters, pipes) beside it as SCM_RIGHTS.
A request is a spec (`BootSpec`, `ParkSpec`, `Unpark`, `ExecSpec`, `BindSpec`)
with its `op` and a
`req` number that the `Reply` repeats. Replies may come in any order: a request whose child
is slow (one sandbox's exec) is answered when it finishes or its deadline passes, and the
requests after it are not held up; `SpawnerClient` matches each reply to its request by
`req`. The spawner also sends events nobody asked for: a
process it reaped exited (`ExitEvent`), a warm slot finished parking (`ParkedEvent`).
Inside the spawner, each forked child reports back in JSON lines on a pipe (`Report`).
This module alone encodes and decodes all of them.
"""

from __future__ import annotations

import json
import os
import select
import socket
from dataclasses import asdict, dataclass, field
from typing import ClassVar

MAX_MSG = 1 << 20  # the largest message either side reads
MAX_FDS = 8        # the most descriptors one message carries
GO = b"g"          # what the daemon writes on a held process's go pipe to let it exec

# Limits the spawner puts on every sandbox, in one place.
# Terminals: all devpts instances share the kernel's pty.max less pty.reserve (4096 - 1024 =
# 3072 by default); without a per-instance `max=` one sandbox could take them all. 32 is
# far more than a learner's browser terminals, tmux panes and ssh sessions need, and keeps
# 3072 / 32 = 96 sandboxes' worth of terminals guaranteed at the default sysctls.
MAX_PTYS = 32
# Open files per process (RLIMIT_NOFILE) of every process the spawner starts in a sandbox.
MAX_OPEN_FILES = 1024
# Files a process reads inside a sandbox on the spawner's behalf (/etc/passwd, /etc/group)
# are read only if they are regular files of at most this size: a fifo, a device or a
# huge file there must not block or slow the spawner.
MAX_ACCOUNT_FILE = 1 << 20
# How long the spawner waits for a child that a sandbox can influence (its files, its
# processes can SIGSTOP the exec's child) before it kills the child and fails the request.
EXEC_DEADLINE = 5.0
# Building a sandbox: its own files (a stopped sandbox's upper dir) are mounted on; the
# host may be busy (cgroup v1 migrations wait for RCU), so this one is generous.
SPAWN_DEADLINE = 60.0


# ---------------------------------------------------------------- requests


@dataclass(frozen=True)
class Layer:
    """An image layer: a host directory that is the read-only lower dir of an overlay
    mounted at `target` in the root filesystem ("" is the root itself)."""

    lower: str
    target: str


@dataclass(frozen=True)
class Bind:
    """A host directory bound id-shifted and writable at `target` (the home volume)."""

    source: str
    target: str


@dataclass(frozen=True)
class ParkSpec:
    """Start the warm slot `slot`: a child that joins the sandbox's cgroup and makes its
    user namespace (the slow part on cgroup v1), then waits for the `BootSpec` naming it."""

    op: ClassVar[str] = "park"
    slot: str
    uid_base: int
    uid_count: int
    cgroup_files: list[str]  # cgroup.procs files the child writes its pid into first


@dataclass(frozen=True)
class BootSpec:
    """Build a sandbox and start its PID 1; from scratch, or by finishing warm slot `slot`."""

    op: ClassVar[str] = "spawn"
    dir: str  # the sandbox's volume: rootfs/ and lower/N, upper/N, work/N per layer
    layers: list[Layer]
    home: Bind | None
    hostname: str
    uid_base: int
    uid_count: int
    cgroup_files: list[str]
    cgroup_mounts: list[tuple[str, str, str]]  # (subdir of /sys/fs/cgroup, fstype, data)
    cgroup_version: int
    init: str  # the host path of catatonit
    shm_size: int
    slot: str | None = None
    max_ptys: int = MAX_PTYS  # its devpts instance's `max=`
    containers: str | None = None  # a host directory bound id-shifted at /var/lib/containers

    @classmethod
    def from_wire(cls, fields: dict) -> BootSpec:
        home = fields.get("home")
        return cls(**dict(fields, layers=[Layer(**x) for x in fields["layers"]],
                          home=Bind(**home) if home else None,
                          cgroup_mounts=[tuple(m) for m in fields["cgroup_mounts"]]))


@dataclass(frozen=True)
class Unpark:
    """End the warm slot `slot`: its parked child exits."""

    op: ClassVar[str] = "unpark"
    slot: str


@dataclass(frozen=True)
class ExecSpec:
    """Start `argv` in the running sandbox whose init is `init_pid` (checked by its start
    time, so a reused pid is never entered)."""

    op: ClassVar[str] = "exec"
    init_pid: int
    init_start: int | None
    cgroup_files: list[str]  # cgroup.procs files that put the process under the limits
    argv: list[str]
    hostname: str
    tty: bool = False
    user: str | int = 0
    cwd: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    rows: int = 24
    cols: int = 80
    hold: bool = False  # stop before the exec until the daemon's byte (enter.py)


@dataclass(frozen=True)
class BindSpec:
    """Bind host directory `source`, id-shifted, at `target` (relative to its root) inside
    the running sandbox whose init is `init_pid`: the home volume of a create that took a
    warm sandbox, booted before anyone knew whose it would be."""

    op: ClassVar[str] = "bind"
    init_pid: int
    init_start: int | None
    source: str
    target: str


Request = BootSpec | ParkSpec | Unpark | ExecSpec | BindSpec
_REQUESTS = {cls.op: cls for cls in (BootSpec, ParkSpec, Unpark, ExecSpec, BindSpec)}


def encode_request(spec: Request, req: int | None = None) -> dict:
    msg = {"op": spec.op, **asdict(spec)}
    if req is not None:
        msg["req"] = req
    return msg


def decode_request(msg: dict) -> Request:
    """The spec a request message carries; ValueError for an op this side does not know."""
    cls = _REQUESTS.get(msg.get("op"))
    if cls is None:
        raise ValueError(f"unknown op {msg.get('op')!r}")
    fields = {k: v for k, v in msg.items() if k not in ("op", "req")}
    return cls.from_wire(fields) if cls is BootSpec else cls(**fields)


def dumps(spec: Request) -> bytes:
    """A spec as bytes for a pipe (a parked child gets its `BootSpec` this way)."""
    return json.dumps(encode_request(spec)).encode()


def loads(data: bytes) -> Request:
    return decode_request(json.loads(data))


# ---------------------------------------------------------------- replies and events


@dataclass
class Reply:
    """The spawner's answer to request `req`: `error` (and its errno) if it failed."""

    req: int | None = None
    pid: int | None = None  # spawn: the sandbox's init (on failure too: to kill); exec: the process
    exec_error: str | None = None  # exec: why the process could not be started (execve failed)
    has_pidfd: bool = False  # exec: the first descriptor is a pidfd of `pid`
    held: bool = False  # exec: the process waits; a descriptor (after the PTY master, if
                        # any) is the write end of its go pipe
    error: str | None = None
    errno: int | None = None


@dataclass(frozen=True)
class ExitEvent:
    """A process the spawner reaped (a sandbox's init or an exec'd process) exited."""

    event: ClassVar[str] = "exit"
    pid: int
    code: int  # as os.waitstatus_to_exitcode: -N for death by signal N


@dataclass(frozen=True)
class ParkedEvent:
    """Warm slot `slot` is parked, or failed to (`error`) and is gone."""

    event: ClassVar[str] = "parked"
    slot: str
    error: str | None = None


Message = Reply | ExitEvent | ParkedEvent
_EVENTS = {cls.event: cls for cls in (ExitEvent, ParkedEvent)}


def encode_message(msg: Message) -> dict:
    if isinstance(msg, Reply):
        return asdict(msg)
    return {"event": msg.event, **asdict(msg)}


def decode_message(msg: dict) -> Message:
    event = msg.get("event")
    if event is None:
        return Reply(**msg)
    return _EVENTS[event](**{k: v for k, v in msg.items() if k != "event"})


# ---------------------------------------------------------------- a child's report


@dataclass
class Report:
    """What a forked child of the spawner tells it: the pid it started (and, for an exec,
    why execve failed), that it is parked, or the step it failed in."""

    pid: int | None = None
    exec_error: str | None = None
    forked: int | None = None  # a process started but not yet done: killed if the child is
                               # given up on (its deadline passed)
    held: bool = False  # exec: the process waits for its go byte; its pipe comes along
    helper: int | None = None  # the pid of an exec helper it forked (enter.serve_helper): a
                               # sandbox's builder, a first exec, or a helper's successor
    parked: bool = False
    error: str | None = None
    errno: int | None = None
    step: str | None = None


def encode_report(report: Report) -> dict:
    return asdict(report)


def decode_report(msg: dict) -> Report:
    return Report(**msg)


def write_report(fd: int, report: Report) -> None:
    """One line on the child's report pipe."""
    os.write(fd, (json.dumps(encode_report(report)) + "\n").encode())


def read_reports(data: bytes) -> list[Report]:
    """The reports in what a child wrote to its pipe, one JSON object a line."""
    return [decode_report(json.loads(line)) for line in data.splitlines() if line.strip()]


# ---------------------------------------------------------------- the socket


def send(sock: socket.socket, msg: dict, fds: list[int] = ()) -> None:
    """One message, with `fds` beside it. Messages are small and the other side reads them
    promptly, so a non-blocking socket that is full is waited on rather than failing."""
    data = json.dumps(msg).encode()
    while True:
        try:
            if fds:
                socket.send_fds(sock, [data], list(fds))
            else:
                sock.send(data)
            return
        except BlockingIOError:
            select.select([], [sock], [], 1.0)


def recv(sock: socket.socket) -> tuple[dict | None, list[int]]:
    """One message and the descriptors that came with it; (None, []) when the other side
    has closed. BlockingIOError when a non-blocking socket has none."""
    data, fds, _flags, _addr = socket.recv_fds(sock, MAX_MSG, MAX_FDS)
    if not data:
        for fd in fds:
            os.close(fd)
        return None, []
    return json.loads(data), fds
