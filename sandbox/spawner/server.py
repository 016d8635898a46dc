"""The fork server: the one process that forks sandboxes and the processes inside them.

`sandboxd` is an asyncio program with threads, and fork() from a threaded process can
deadlock in the child (benchexec #435). So the daemon forks this spawner once, first
thing, while it is still single-threaded (`client.SpawnerClient.fork`); the spawner
stays single-threaded and does every later fork. It reads one request at a time from
the daemon's socket (`spec.py`), forks a child that does the work (`rootfs.build` builds
a sandbox, `enter.start` starts a process in one), collects the child's report and replies.

The spawner is a child subreaper: sandbox inits and exec'd processes are reparented
to it when their short-lived setup parents exit, so it learns every exit status and
reports it to the daemon as an event.
"""

from __future__ import annotations

import gc
import os
import select
import signal
import socket
from dataclasses import dataclass
from typing import NoReturn

from .. import libc
from . import enter, rootfs
from .rootfs import read_all, report_failure
from .spec import (BootSpec, ExecSpec, ExitEvent, ParkedEvent, ParkSpec, Reply, Report, Request,
                   Unpark, decode_report, decode_request, dumps, encode_message, read_reports,
                   recv, send)


@dataclass
class ParkedSlot:
    """A warm slot's child: parked until its `BootSpec` is written to `control`."""

    pid: int
    control: int  # write end: the BootSpec, or EOF to make the child exit
    report: int   # read end: the child's reports


class Server:
    """The state of one spawner process: the daemon's socket and its warm slots.

    Warm slots are children that have already joined their sandbox's cgroup and made
    its user namespace (the slow part on cgroup v1, where every cgroup migration waits
    for an RCU grace period), parked until a spawn request hands them the rest of the
    spec (`rootfs.park`)."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.parked: dict[str, ParkedSlot] = {}
        self.parking: dict[int, str] = {}  # report fd -> slot, until the child says it is parked

    def serve(self) -> NoReturn:
        """Main loop of the spawner process; never returns."""
        try:
            with open("/proc/self/comm", "w") as f:
                f.write("nslab-spawner")
        except OSError:
            pass
        libc.prctl(libc.PR_SET_PDEATHSIG, signal.SIGKILL)
        libc.prctl(libc.PR_SET_CHILD_SUBREAPER, 1)
        # Every fork copies our pages on write. A cyclic GC pass in a child touches every
        # object header and so copies the whole heap (measured: 40 ms per fork in a 40 MB
        # process); freezing what exists and not collecting keeps children cheap.
        gc.disable()
        gc.freeze()
        if os.getppid() == 1:  # the daemon died before PDEATHSIG was armed
            os._exit(0)
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.set_wakeup_fd(wake_w)
        while True:
            try:
                ready, _, _ = select.select([self.sock, wake_r, *self.parking], [], [])
            except InterruptedError:
                continue
            for fd in [fd for fd in ready if fd in self.parking]:
                self._on_parked(fd)
            if wake_r in ready:
                try:
                    while os.read(wake_r, 4096):
                        pass
                except BlockingIOError:
                    pass
            self._reap()
            if self.sock in ready:
                self._serve_one()
                self._reap()

    def _serve_one(self) -> None:
        msg, fds = recv(self.sock)
        if msg is None:  # the daemon closed its end: it is gone
            os._exit(0)
        for fd in fds:
            os.close(fd)  # no request carries descriptors
        out_fds: list[int] = []
        try:
            spec = decode_request(msg)
        except ValueError as e:  # an op this spawner does not know
            reply = Reply(error=str(e))
        else:
            try:
                reply, out_fds = self._handle(spec)
            except OSError as e:
                reply = Reply(error=str(e), errno=e.errno)
        reply.req = msg.get("req")
        send(self.sock, encode_message(reply), out_fds)
        for fd in out_fds:
            os.close(fd)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            send(self.sock, encode_message(ExitEvent(pid, os.waitstatus_to_exitcode(status))))

    def _handle(self, spec: Request) -> tuple[Reply, list[int]]:
        if isinstance(spec, BootSpec):
            return (self._spawn_parked(spec) if spec.slot else _spawn(spec)), []
        if isinstance(spec, ParkSpec):
            return self._park(spec), []
        if isinstance(spec, Unpark):
            return self._unpark(spec.slot), []
        return _exec(spec)

    # -- warm slots

    def _park(self, spec: ParkSpec) -> Reply:
        if spec.slot in self.parked:
            return Reply(error=f"slot {spec.slot} is already parked")
        r, w = os.pipe2(os.O_CLOEXEC)
        cr, cw = os.pipe2(os.O_CLOEXEC)
        pid = fork_child(w, "parking", rootfs.park, w, cr, spec, close=(r, cw))
        os.close(w)
        os.close(cr)
        self.parked[spec.slot] = ParkedSlot(pid=pid, control=cw, report=r)
        self.parking[r] = spec.slot
        return Reply()

    def _on_parked(self, fd: int) -> None:
        slot = self.parking.pop(fd)
        reports = read_reports(os.read(fd, 65536).split(b"\n")[0])
        report = reports[0] if reports else Report(error="the parked child exited")
        if report.error:
            self._unpark(slot)
        send(self.sock, encode_message(ParkedEvent(slot, report.error)))

    def _unpark(self, slot: str) -> Reply:
        entry = self.parked.pop(slot, None)
        if entry is None:
            return Reply()
        self.parking.pop(entry.report, None)
        os.close(entry.control)  # EOF: the parked child exits
        os.close(entry.report)
        try:
            os.waitpid(entry.pid, 0)
        except ChildProcessError:
            pass
        return Reply()

    def _spawn_parked(self, spec: BootSpec) -> Reply:
        entry = self.parked.pop(spec.slot, None)
        if entry is None:
            return Reply(error=f"no parked slot {spec.slot}")
        self.parking.pop(entry.report, None)
        try:
            os.write(entry.control, dumps(spec))  # specs are far below the pipe's 64 KiB
        finally:
            os.close(entry.control)
        return _spawn_result(collect(entry.report, entry.pid))


def serve(sock: socket.socket) -> NoReturn:
    """Run the spawner on `sock` (its end of the daemon's socket pair); never returns."""
    Server(sock).serve()


# ---------------------------------------------------------------- building and exec


def _spawn(spec: BootSpec) -> Reply:
    _pid, reports = run_child(rootfs.build, spec)
    return _spawn_result(reports)


def _spawn_result(reports: list[Report]) -> Reply:
    err = first_error(reports)
    pids = [r.pid for r in reports if r.pid is not None]
    if err:
        return Reply(error=err.error, errno=err.errno, pid=pids[0] if pids else None)
    if not pids:
        return Reply(error="sandbox setup ended without reporting its init")
    return Reply(pid=pids[0])


def _exec(spec: ExecSpec) -> tuple[Reply, list[int]]:
    report_parent, report_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    stdio_child: list[int] = []
    stdio_parent: list[int] = []
    if not spec.tty:
        # stdin: the child reads, we write; stdout and stderr: the other way round
        for child_reads in (True, False, False):
            r, w = os.pipe2(os.O_CLOEXEC)
            stdio_child.append(r if child_reads else w)
            stdio_parent.append(w if child_reads else r)
    try:
        _pid, reports = run_child(enter.start, spec, report_child.fileno(), stdio_child)
    finally:
        report_child.close()
        for fd in stdio_child:
            os.close(fd)
    err = first_error(reports)
    if err and not any(r.pid is not None for r in reports):
        report_parent.close()
        for fd in stdio_parent:
            os.close(fd)
        return Reply(error=err.error, errno=err.errno), []
    report_parent.setblocking(False)
    try:
        msg, master_fds = recv(report_parent)
    except BlockingIOError:
        msg, master_fds = None, []
    report_parent.close()
    if not msg:
        for fd in stdio_parent:
            os.close(fd)
        return Reply(error="exec setup ended without reporting its process"), []
    report = decode_report(msg)
    try:
        pidfd = libc.pidfd_open(report.pid)
    except OSError:
        pidfd = None  # it already exited and was reaped; the exit event follows
    out = ([pidfd] if pidfd is not None else []) + master_fds + stdio_parent
    return Reply(pid=report.pid, exec_error=report.exec_error,
                 has_pidfd=pidfd is not None, held=report.held), out


# ---------------------------------------------------------------- forked children


def fork_child(w: int, step: str, target, *args, close: tuple = ()) -> int:
    """Fork a child that runs target(*args) and exits; its failure is reported on w."""
    pid = os.fork()
    if pid != 0:
        return pid
    code = 0
    try:
        for fd in close:
            os.close(fd)
        reset_signals()
        target(*args)
    except BaseException as e:  # noqa: BLE001 - a forked child must never unwind into the loop
        report_failure(w, getattr(e, "step", step), e)
        code = 1
    os._exit(code)


def run_child(target, *args) -> tuple[int, list[Report]]:
    """Fork a child that runs target(w, *args); collect its reports until EOF."""
    r, w = os.pipe2(os.O_CLOEXEC)
    pid = fork_child(w, target.__name__, target, w, *args, close=(r,))
    os.close(w)
    return pid, collect(r, pid)


def collect(r: int, pid: int) -> list[Report]:
    """A child's reports, read until EOF (its exit or exec); then reap it."""
    try:
        data = read_all(r)
    finally:
        os.close(r)
    os.waitpid(pid, 0)
    return read_reports(data)


def reset_signals() -> None:
    """A forked child must not write the spawner's wakeup fd, nor ignore what it ignores."""
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGCHLD, signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)


def first_error(reports: list[Report]) -> Report | None:
    for report in reports:
        if report.error is not None:
            return report
    return None
