"""The fork server: the one process that forks sandboxes and the processes inside them.

`sandboxd` is an asyncio program with threads, and fork() from a threaded process can
deadlock in the child (benchexec #435). So the daemon forks this spawner once, first
thing, while it is still single-threaded (`client.SpawnerClient.fork`); the spawner
stays single-threaded and does every later fork. It reads one request at a time from
the daemon's socket (`spec.py`), forks a child that does the work (`rootfs.build` builds
a sandbox, `enter.start` starts a process in one) and goes back to its loop: the child's
reports are read there as they come (`Pending`), and the reply is sent when the child is
done, or when its deadline passes (then the child and what it started are killed). A
sandbox can slow or stop the child that enters it, never the spawner: other requests
are served meanwhile, and answered out of order (each reply names its request).

The spawner is a child subreaper: sandbox inits and exec'd processes are reparented
to it when their short-lived setup parents exit, so it learns every exit status and
reports it to the daemon as an event.
"""

from __future__ import annotations

import errno
import json
import gc
import os
import select
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import NoReturn

from .. import libc
from ..procfs import start_time
from . import enter, rootfs, seccomp
from .rootfs import report_failure
from .spec import (EXEC_DEADLINE, SPAWN_DEADLINE, BindSpec, BootSpec, ExecSpec, ExitEvent,
                   ParkedEvent, ParkSpec, Reply, Report, Request, Unpark,
                   decode_report, decode_request, dumps, encode_message, encode_request,
                   read_reports, recv, send)

MAX_REPORTS = 64 << 10  # a child's reports are a few lines; more is a broken child


@dataclass
class Pending:
    """A forked child working on request `req`: its reports are read from `r` in the loop
    until EOF, then `finish` makes the reply from them (and the descriptors it carries);
    past `deadline` (monotonic) the child is killed and the request fails."""

    req: int | None
    pid: int
    r: int
    deadline: float
    finish: Callable[[list[Report]], tuple[Reply, list[int]]]
    cleanup: Callable[[], None] = lambda: None  # the request failed: close what finish would
    limit: float = 0.0  # seconds it was given
    lives_on: bool = False  # the child stays when done (an exec helper that did a bind)
    data: bytearray = field(default_factory=bytearray)
    reaped: set[int] = field(default_factory=set)  # its processes that exited and were reaped

    def reports(self) -> list[Report]:
        """The complete lines so far (a child killed mid-write leaves half of one)."""
        whole = bytes(self.data[:self.data.rfind(b"\n") + 1])
        return read_reports(whole)

    def started(self) -> list[int]:
        """The child and the processes it reported starting, the child's own first."""
        pids = [self.pid]
        for report in self.reports():
            for pid in (report.forked, report.pid):
                if pid is not None and pid not in pids:
                    pids.append(pid)
        return pids


@dataclass
class ParkedSlot:
    """A warm slot's child: parked until its `BootSpec` is written to `control`."""

    pid: int
    control: int  # write end: the BootSpec, or EOF to make the child exit
    report: int   # read end: the child's reports
    helper_ctl: socket.socket  # our end of the exec helper's socket the child will fork


@dataclass
class Helper:
    """A sandbox's exec helper (`enter.serve_helper`): `pid` waits for an exec on `ctl`.
    `pid` is None while an exec it was given is under way (its successor's pid comes in
    that exec's reports, and is handed execs only once that exec's E has exited, so that
    it is our child)."""

    ctl: socket.socket
    pid: int | None


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
        self.pending: dict[int, Pending] = {}  # report fd -> a child working on a request
        self.helpers: dict[tuple[int, int | None], Helper] = {}  # (init pid, start) -> helper

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
        try:
            # Built once here, so each child only loads the program it inherits. If libseccomp
            # is missing, each sandbox and exec fails in its own "installing the seccomp
            # filter" step, with the reason, rather than running unfiltered.
            seccomp.program()
        except OSError:
            pass
        if os.getppid() == 1:  # the daemon died before PDEATHSIG was armed
            os._exit(0)
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.set_wakeup_fd(wake_w)
        while True:
            timeout = None
            if self.pending:
                nearest = min(p.deadline for p in self.pending.values())
                timeout = max(0.0, nearest - time.monotonic())
            try:
                ready, _, _ = select.select([self.sock, wake_r, *self.parking, *self.pending],
                                            [], [], timeout)
            except InterruptedError:
                continue
            for fd in [fd for fd in ready if fd in self.parking]:
                self._on_parked(fd)
            for fd in [fd for fd in ready if fd in self.pending]:
                self._on_report(fd)
            self._expire()
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
        req = msg.get("req")
        out_fds: list[int] = []
        try:
            spec = decode_request(msg)
        except ValueError as e:  # an op this spawner does not know
            reply = Reply(error=str(e))
        else:
            try:
                result = self._handle(spec, req)
            except OSError as e:
                result = Reply(error=str(e), errno=e.errno), []
            if result is None:
                return  # a child works on it: answered from the loop (_on_report, _expire)
            reply, out_fds = result
        self._reply(req, reply, out_fds)

    def _reply(self, req: int | None, reply: Reply, out_fds: list[int]) -> None:
        reply.req = req
        send(self.sock, encode_message(reply), out_fds)
        for fd in out_fds:
            os.close(fd)

    # -- children working on a request

    def _start(self, req: int | None, pid: int, r: int, deadline: float,
               finish: Callable[[list[Report]], tuple[Reply, list[int]]],
               cleanup: Callable[[], None] = lambda: None, lives_on: bool = False) -> None:
        os.set_blocking(r, False)
        self.pending[r] = Pending(req, pid, r, time.monotonic() + deadline, finish, cleanup,
                                  limit=deadline, lives_on=lives_on)

    def _on_report(self, fd: int) -> None:
        p = self.pending[fd]
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            return
        if chunk and len(p.data) + len(chunk) <= MAX_REPORTS:
            p.data += chunk
            return
        del self.pending[fd]
        os.close(fd)
        if chunk:  # far more than any report: a child gone wrong
            self._give_up(p, "the setup child wrote more than its reports")
            return
        # EOF: the child exited (or exec'd, with all it started); reap it unless the loop did.
        if p.pid not in p.reaped and not p.lives_on:
            os.waitpid(p.pid, 0)
        try:
            reply, out_fds = p.finish(p.reports())
        except OSError as e:
            reply, out_fds = Reply(error=str(e), errno=e.errno), []
        self._reply(p.req, reply, out_fds)

    def _expire(self) -> None:
        now = time.monotonic()
        for fd, p in list(self.pending.items()):
            if p.deadline <= now:
                del self.pending[fd]
                os.close(fd)
                self._give_up(p, f"its setup did not finish in {p.limit:.0f} s (the "
                                 "sandbox's processes stopped it, or its files blocked it); "
                                 "what it started was killed")

    def _give_up(self, p: Pending, why: str) -> None:
        """Kill the child and every process it reported starting; fail its request. None
        of them can have been reaped by pid reuse: each is the child's child or ours until
        the loop reaps it, and those it reaped are skipped."""
        started = p.started()
        for pid in reversed(started):
            if pid not in p.reaped:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if p.pid not in p.reaped:
            os.waitpid(p.pid, 0)
        p.cleanup()
        pids = [r.pid for r in p.reports() if r.pid is not None]
        self._reply(p.req, Reply(error=why, errno=errno.ETIMEDOUT,
                                 pid=pids[0] if pids else None), [])

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if self._helper_exited(pid):
                continue  # nobody asked for it: no event
            owner = next((p for p in self.pending.values() if pid in p.started()), None)
            if owner is not None:
                owner.reaped.add(pid)
                if pid == owner.pid:
                    continue  # a setup child: its request's reply says how it went
            send(self.sock, encode_message(ExitEvent(pid, os.waitstatus_to_exitcode(status))))

    def _handle(self, spec: Request, req: int | None) -> tuple[Reply, list[int]] | None:
        """The reply now, or None when a child was started that the loop will answer for."""
        if isinstance(spec, BootSpec):
            return self._spawn_parked(spec, req) if spec.slot else self._spawn(spec, req)
        if isinstance(spec, ParkSpec):
            return self._park(spec), []
        if isinstance(spec, Unpark):
            return self._unpark(spec.slot), []
        if isinstance(spec, BindSpec):
            self._bind(spec, req)
            return None
        return self._exec(spec, req)

    # -- exec helpers

    def _new_helper_ctl(self) -> tuple[socket.socket, int]:
        """A socket pair for an exec helper to be forked by a child (which gets the fd)."""
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        parent.setblocking(False)
        return parent, child.detach()

    def _helper_exited(self, pid: int) -> bool:
        for key, helper in self.helpers.items():
            if helper.pid == pid:
                helper.ctl.close()
                del self.helpers[key]
                return True
        return False

    def _bind(self, spec: BindSpec, req: int | None) -> None:
        """A bind into the sandbox: done by its exec helper without a fork when it has one
        (enter.serve_helper), by a forked child otherwise."""
        r, w = os.pipe2(os.O_CLOEXEC)
        try:
            handed = self._hand_to_helper(spec, [w])
        finally:
            os.close(w)
        if handed is None:
            os.close(r)
            pid, r = start_child(enter.bind_into, spec)
            self._start(req, pid, r, EXEC_DEADLINE, _bind_result)
            return
        pid, helper = handed

        def finish(reports: list[Report]) -> tuple[Reply, list[int]]:
            self._helper_done(helper, [Report(helper=pid)])  # the same helper serves on
            return _bind_result(reports)

        self._start(req, pid, r, EXEC_DEADLINE, finish,
                    cleanup=lambda: self._helper_done(helper, []), lives_on=True)

    def _hand_to_helper(self, spec: ExecSpec | BindSpec,
                        fds: list[int]) -> tuple[int, Helper] | None:
        """Give the exec to the sandbox's idle helper: (its pid, the helper), or None when
        there is none or it cannot take it (then the caller forks E itself)."""
        helper = self.helpers.get((spec.init_pid, spec.init_start))
        if helper is None or helper.pid is None:
            return None
        try:
            # Never wait on a helper: one that is stuck (its sandbox's cgroup frozen) must
            # not stall the spawner; a full or closed socket means "do it yourself".
            socket.send_fds(helper.ctl, [json.dumps(encode_request(spec)).encode()], fds)
        except OSError:
            return None
        pid, helper.pid = helper.pid, None
        return pid, helper

    def _helper_done(self, helper: Helper, reports: list[Report]) -> None:
        """The helper's exec is over (its E exited and was reaped): its successor, if it
        made one, is ours now and takes the next exec."""
        successor = next((r.helper for r in reports if r.helper), None)
        key = next((k for k, h in self.helpers.items() if h is helper), None)
        if key is None:
            return  # dropped meanwhile
        if successor is not None:
            try:
                # Alive and ours (E has exited, so it was reparented to us)? A successor that
                # died meanwhile was reaped by the loop, or is reaped here.
                alive = os.waitpid(successor, os.WNOHANG) == (0, 0)
            except ChildProcessError:
                alive = False
            if alive:
                helper.pid = successor
                return
        helper.ctl.close()
        del self.helpers[key]

    # -- warm slots

    def _park(self, spec: ParkSpec) -> Reply:
        if spec.slot in self.parked:
            return Reply(error=f"slot {spec.slot} is already parked")
        r, w = os.pipe2(os.O_CLOEXEC)
        cr, cw = os.pipe2(os.O_CLOEXEC)
        ctl, ctl_child = self._new_helper_ctl()
        try:
            pid = fork_child(w, "parking", rootfs.park, w, cr, spec,
                             partial(enter.fork_helper, ctl_child), ctl_child,
                             close=(r, cw, ctl.fileno()))
        finally:
            os.close(w)
            os.close(cr)
            os.close(ctl_child)
        self.parked[spec.slot] = ParkedSlot(pid=pid, control=cw, report=r, helper_ctl=ctl)
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
        entry.helper_ctl.close()
        try:
            os.waitpid(entry.pid, 0)
        except ChildProcessError:
            pass
        return Reply()

    def _spawn_parked(self, spec: BootSpec, req: int | None) -> tuple[Reply, list[int]] | None:
        entry = self.parked.pop(spec.slot, None)
        if entry is None:
            return Reply(error=f"no parked slot {spec.slot}"), []
        self.parking.pop(entry.report, None)
        try:
            os.write(entry.control, dumps(spec))  # specs are far below the pipe's 64 KiB
        finally:
            os.close(entry.control)
        self._start_spawn(req, entry.pid, entry.report, entry.helper_ctl)
        return None

    def _start_spawn(self, req: int | None, pid: int, r: int, ctl: socket.socket) -> None:
        """Wait for the builder C; when it is done, its exec helper (forked by C, in the
        sandbox's cgroup from birth) serves the sandbox's execs."""
        helper = Helper(ctl=ctl, pid=None)

        def finish(reports: list[Report]) -> tuple[Reply, list[int]]:
            reply, fds = _spawn_result(reports)
            if reply.error is None:
                try:
                    self.helpers[(reply.pid, start_time(reply.pid))] = helper
                except OSError:  # its init died already: so did the sandbox
                    ctl.close()
                    return reply, fds
                self._helper_done(helper, reports)
            else:
                ctl.close()
            return reply, fds

        self._start(req, pid, r, SPAWN_DEADLINE, finish, cleanup=ctl.close)

    # -- building and exec

    def _spawn(self, spec: BootSpec, req: int | None) -> None:
        ctl, ctl_child = self._new_helper_ctl()
        try:
            pid, r = start_child(rootfs.build, spec, partial(enter.fork_helper, ctl_child),
                                 ctl_child)
        except BaseException:
            ctl.close()
            raise
        finally:
            os.close(ctl_child)
        self._start_spawn(req, pid, r, ctl)

    def _exec(self, spec: ExecSpec, req: int | None) -> None:
        report_parent, report_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        stdio_child: list[int] = []
        stdio_parent: list[int] = []
        if not spec.tty:
            # stdin: the child reads, we write; stdout and stderr: the other way round
            for child_reads in (True, False, False):
                r, w = os.pipe2(os.O_CLOEXEC)
                stdio_child.append(r if child_reads else w)
                stdio_parent.append(w if child_reads else r)
        helper = None
        try:
            r, w = os.pipe2(os.O_CLOEXEC)
            try:
                handed = self._hand_to_helper(spec, [w, report_child.fileno(), *stdio_child])
            finally:
                os.close(w)
            if handed is not None:
                pid, helper = handed
            else:
                os.close(r)
                ctl_child = None
                if (spec.init_pid, spec.init_start) not in self.helpers:
                    # This E joins the cgroup; it forks the sandbox's helper from there.
                    ctl, ctl_child = self._new_helper_ctl()
                    helper = Helper(ctl=ctl, pid=None)
                    self.helpers[(spec.init_pid, spec.init_start)] = helper
                try:
                    pid, r = start_child(enter.start, spec, report_child.fileno(), stdio_child,
                                         ctl_child)
                except BaseException:
                    if helper is not None:
                        self._helper_done(helper, [])
                    raise
                finally:
                    if ctl_child is not None:
                        os.close(ctl_child)
        except BaseException:
            report_parent.close()
            for fd in stdio_parent:
                os.close(fd)
            raise
        finally:
            report_child.close()
            for fd in stdio_child:
                os.close(fd)

        def cleanup() -> None:
            report_parent.close()
            for fd in stdio_parent:
                os.close(fd)
            if helper is not None:
                self._helper_done(helper, [])  # given up on: its successor is not trusted

        def finish(reports: list[Report]) -> tuple[Reply, list[int]]:
            if helper is not None:
                self._helper_done(helper, reports)
            return _exec_result(reports, report_parent, stdio_parent)

        self._start(req, pid, r, EXEC_DEADLINE, finish, cleanup)


def serve(sock: socket.socket) -> NoReturn:
    """Run the spawner on `sock` (its end of the daemon's socket pair); never returns."""
    Server(sock).serve()


# ---------------------------------------------------------------- replies from reports


def _spawn_result(reports: list[Report]) -> tuple[Reply, list[int]]:
    err = first_error(reports)
    pids = [r.pid for r in reports if r.pid is not None]
    if err:
        return Reply(error=err.error, errno=err.errno, pid=pids[0] if pids else None), []
    if not pids:
        return Reply(error="sandbox setup ended without reporting its init"), []
    return Reply(pid=pids[0]), []


def _bind_result(reports: list[Report]) -> tuple[Reply, list[int]]:
    err = first_error(reports)
    if err:
        return Reply(error=err.error, errno=err.errno), []
    return Reply(), []


def _exec_result(reports: list[Report], report_parent: socket.socket,
                 stdio_parent: list[int]) -> tuple[Reply, list[int]]:
    """The reply to an exec whose child E is done: F's pid, a pidfd on it, its PTY master
    (from E's report socket) and the daemon's ends of its pipes."""
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


def start_child(target, *args) -> tuple[int, int]:
    """Fork a child that runs target(w, *args); its pid and the read end of its reports."""
    r, w = os.pipe2(os.O_CLOEXEC)
    pid = fork_child(w, target.__name__, target, w, *args, close=(r,))
    os.close(w)
    return pid, r


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
