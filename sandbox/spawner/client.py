"""The daemon's handle on the spawner process: `SpawnerClient`.

`SpawnerClient.fork()` starts the spawner (`server.serve`); the daemon calls it first
thing, before any thread exists and before its heavy imports (aiohttp, pyroute2), since
every sandbox and exec is a fork of the spawner and a small process forks faster. So this
module and what it imports stay light: the standard library, this package and
`sandbox.errors`; asyncio is only named in annotations, never imported.

Afterwards the daemon's event loop owns the socket (`attach_loop`): each request is
awaited until its `spec.Reply` comes back, matched by its `req` number (replies come in
the order the spawner's children finish, not the order asked), and the spawner's events (a process exited,
a warm slot is parked) are dispatched as they arrive.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import Conflict, SandboxError, explain_oserror
from ..protocol import Reason
from .server import serve
from .spec import (BindSpec, BootSpec, ExecSpec, ExitEvent, ParkedEvent, ParkSpec, Reply,
                   Request, Unpark, decode_message, encode_request, recv, send)

if TYPE_CHECKING:  # annotations only: importing asyncio would make the spawner bigger
    import asyncio


@dataclass
class ExecHandle:
    """A process the spawner started: its pid, a pidfd on it (None if it was already
    reaped), and its PTY master or the daemon's ends of its stdin/stdout/stderr pipes."""

    pid: int
    pidfd: int | None
    master: int | None = None
    stdin: int | None = None
    stdout: int | None = None
    stderr: int | None = None
    exec_error: str | None = None  # why the command could not be started
    go: int | None = None  # held: write one byte (enter.GO) to let it exec, or close it


class SpawnerClient:
    """The daemon's handle on the spawner process (asyncio, one socket)."""

    def __init__(self, pid: int, sock: socket.socket):
        self.pid = pid
        self.sock = sock
        self.on_exit: Callable[[int, int], None] | None = None  # (pid, exit code)
        self._next = 0
        self._waiting: dict[int, asyncio.Future] = {}  # req -> (Reply, fds)
        self._parked_waiting: dict[str, asyncio.Future] = {}  # slot -> parked
        self._loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def fork(cls) -> SpawnerClient:
        """Fork the spawner. Call before any thread exists in this process."""
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = os.fork()
        if pid == 0:
            parent.close()
            try:
                serve(child)
            finally:
                os._exit(0)
        child.close()
        return cls(pid=pid, sock=parent)

    def attach_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.sock.setblocking(False)
        loop.add_reader(self.sock.fileno(), self._on_readable)

    def _on_readable(self) -> None:
        while True:
            try:
                raw, fds = recv(self.sock)
            except BlockingIOError:
                return
            if raw is None:
                self._fail_all(SandboxError("the spawner process exited"))
                self._loop.remove_reader(self.sock.fileno())
                return
            msg = decode_message(raw)
            if isinstance(msg, ExitEvent):
                if self.on_exit:
                    self.on_exit(msg.pid, msg.code)
                continue
            if isinstance(msg, ParkedEvent):
                fut = self._parked_waiting.pop(msg.slot, None)
                if fut is not None and not fut.done():
                    if msg.error:
                        fut.set_exception(SandboxError(f"parking failed: {msg.error}"))
                    else:
                        fut.set_result(True)
                continue
            fut = self._waiting.pop(msg.req, None)
            if fut is None or fut.done():
                for fd in fds:
                    os.close(fd)
                continue
            fut.set_result((msg, fds))

    def _fail_all(self, exc: Exception) -> None:
        for fut in self._waiting.values():
            if not fut.done():
                fut.set_exception(exc)
        self._waiting.clear()

    async def _request(self, spec: Request) -> tuple[Reply, list[int]]:
        self._next += 1
        fut = self._loop.create_future()
        self._waiting[self._next] = fut
        send(self.sock, encode_request(spec, self._next))
        return await fut

    async def park(self, spec: ParkSpec) -> asyncio.Future:
        """Start a warm slot; the returned future resolves when it is parked."""
        fut = self._loop.create_future()
        self._parked_waiting[spec.slot] = fut
        reply, _ = await self._request(spec)
        if reply.error is not None:
            self._parked_waiting.pop(spec.slot, None)
            raise _spawn_error("parking a warm slot", reply)
        return fut

    async def unpark(self, slot: str) -> None:
        self._parked_waiting.pop(slot, None)
        await self._request(Unpark(slot))

    async def spawn(self, spec: BootSpec) -> int:
        """Build a sandbox; the pid of its init."""
        reply, _ = await self._request(spec)
        if reply.error is not None:
            if reply.pid:
                _kill_quietly(reply.pid)
            raise _spawn_error("building the sandbox", reply)
        return reply.pid

    async def bind(self, spec: BindSpec) -> None:
        reply, _ = await self._request(spec)
        if reply.error is not None:
            raise _spawn_error("binding into the sandbox", reply)

    async def exec(self, spec: ExecSpec) -> ExecHandle:
        reply, fds = await self._request(spec)
        if reply.error is not None:
            raise _spawn_error("starting the process", reply)
        fds = list(fds)
        pidfd = fds.pop(0) if reply.has_pidfd else None
        handle = ExecHandle(pid=reply.pid, pidfd=pidfd, exec_error=reply.exec_error)
        if spec.tty:
            handle.master = fds.pop(0)
        if reply.held:
            handle.go = fds.pop(0)
        if not spec.tty:
            handle.stdin, handle.stdout, handle.stderr = fds
        return handle

    def close(self) -> None:
        if self._loop is not None:
            self._loop.remove_reader(self.sock.fileno())
        self.sock.close()
        try:
            os.kill(self.pid, signal.SIGTERM)
            os.waitpid(self.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


def _kill_quietly(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _spawn_error(what: str, reply: Reply) -> SandboxError:
    if reply.errno == errno.ETIMEDOUT:  # the spawner gave up on a child the sandbox held up
        return Conflict(f"{what} failed: {reply.error}", reason=Reason.SANDBOX_UNRESPONSIVE)
    if reply.errno == errno.EAGAIN:  # the sandbox's own doing; it can free some and retry
        return Conflict(f"{what} failed: {reply.error}", reason=Reason.AT_PROCESS_LIMIT)
    if reply.errno in (errno.EPERM, errno.EACCES, errno.ENODEV, errno.ENOSYS):
        return explain_oserror(reply.error, OSError(reply.errno, reply.error))
    return SandboxError(f"{what} failed: {reply.error}")
