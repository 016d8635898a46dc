"""One process started by exec: its PTY or pipes, its viewers, its scrollback.

Bytes are never decoded here. Output goes to every attached viewer as frames of
(channel, bytes). Flow control: while any read-write viewer has more than HIGH_WATER
bytes not yet delivered, the session stops reading the PTY, so the writer inside the
sandbox blocks in the kernel instead of growing our memory; it resumes below LOW_WATER.
Read-only viewers (an instructor shadowing) never pause the PTY: one that falls more
than DROP_LIMIT behind is dropped and may reattach, getting the scrollback again.
A session with no read-write viewer also stops reading, like a terminal nobody reads.

Pacing: a terminal's output beyond a burst of PACE_BURST bytes is read from the PTY at
PACE_RATE bytes a second at most (a token bucket; the writer blocks in the kernel in
between). A learner's `yes` would otherwise flow as fast as the machine allows, filling
every core (the writer, the kernel's tty work, this daemon, the web process, the browser)
and making every other learner's echo wait; paced, it costs a fraction of that and the
other terminals stay prompt. Output that fits the burst (a listing, a file of a few
hundred KiB) is not slowed. Since the PTY itself is read no faster, little is queued
downstream and ^C still stops the flood at once (the tty discards its pending output).
Pipes (exec without a terminal: checks, `run`) are not paced.
"""

from __future__ import annotations

import asyncio
import collections
import errno
import json
import os
import secrets
import signal
import time

from . import libc
from .errors import Conflict, InvalidRequest
from .protocol import Channel, Reason
from .spawner.client import ExecHandle
from .spawner.enter import set_winsize

RING_BYTES = 256 * 1024
HIGH_WATER = 512 * 1024
LOW_WATER = 128 * 1024
DROP_LIMIT = 2 * 1024 * 1024
READ_CHUNK = 64 * 1024
UNCLAIMED_LIMIT = 1024 * 1024
PACE_RATE = 2 * 1024 * 1024  # bytes a second a terminal's flood is read at
PACE_BURST = 1024 * 1024     # bytes read at full speed before pacing starts
PACE_STEP = 0.02             # a paced read pauses at least this long (bigger batches)
# Input written to a process: past STDIN_HIGH buffered, its stream waits (up to STDIN_WAIT)
# until the process has read down to STDIN_LOW before taking the next frame; STDIN_MAX is
# what may be buffered at all (a frame past it is refused with a notice).
STDIN_HIGH = 1024 * 1024
STDIN_LOW = 256 * 1024
STDIN_MAX = 4 * 1024 * 1024
STDIN_WAIT = 20.0
EXIT_GRACE = 0.2  # after the process exits, how long to wait for its output to drain
SIGNALS = {"INT": signal.SIGINT, "TERM": signal.SIGTERM, "KILL": signal.SIGKILL,
           "HUP": signal.SIGHUP, "QUIT": signal.SIGQUIT, "TSTP": signal.SIGTSTP,
           "CONT": signal.SIGCONT, "WINCH": signal.SIGWINCH}


class Attachment:
    """One viewer's queue of frames not yet delivered."""

    def __init__(self, session: "ExecSession", readonly: bool):
        self.session = session
        self.readonly = readonly
        self.frames: collections.deque[tuple[int, bytes]] = collections.deque()
        self.pending = 0
        self.dropped = False
        self.closed = False
        self._ready = asyncio.Event()

    def feed(self, channel: int, data: bytes) -> None:
        if self.closed:
            return
        self.frames.append((channel, data))
        self.pending += len(data)
        self._ready.set()
        if self.readonly and self.pending > DROP_LIMIT:
            self.dropped = True
            self.close()

    async def next(self) -> list[tuple[int, bytes]]:
        """Frames to deliver, waiting for some; [] when this attachment has ended."""
        while not self.frames and not self.closed:
            self._ready.clear()
            await self._ready.wait()
        frames = list(self.frames)
        self.frames.clear()
        return frames

    def delivered(self, n: int) -> None:
        self.pending = max(0, self.pending - n)
        self.session.update_flow()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._ready.set()
            self.session.detach(self)


class ExecSession:
    def __init__(self, sandbox_id: str, handle: ExecHandle, tty: bool, argv: list[str]):
        self.id = secrets.token_hex(8)
        self.sandbox_id = sandbox_id
        self.handle = handle
        self.tty = tty
        self.argv = argv
        self.created = time.time()
        self.exit_code: int | None = None
        self.finished = asyncio.Event()
        self.ring = bytearray()
        self.attachments: list[Attachment] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reading: set[int] = set()
        self._open_streams: dict[int, int] = {}  # fd -> channel
        self._stdin_buf = bytearray()
        # Set while the input buffer is under STDIN_LOW (or the process can take no more):
        # the attach stream reads its next frame only then (`stdin_room`).
        self._stdin_room = asyncio.Event()
        self._stdin_room.set()
        self._tokens = float(PACE_BURST)  # terminal output that may be read before pacing
        self._tokens_at = time.monotonic()
        self._paced = False               # reading paused until tokens come back
        self._closed = False
        # Output of a non-terminal process that arrives before anyone attached
        # (it may exit between the exec request and the attach): kept for the first viewer.
        self._unclaimed: list[tuple[int, bytes]] = []
        self._unclaimed_bytes = 0

    # -------------------------------------------------------------- wiring

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        h = self.handle
        if self.tty:
            streams = {h.master: Channel.STDOUT}
        else:
            streams = {h.stdout: Channel.STDOUT, h.stderr: Channel.STDERR}
        for fd, channel in streams.items():
            os.set_blocking(fd, False)
            self._open_streams[fd] = channel
        if h.stdin is not None:
            os.set_blocking(h.stdin, False)
        if h.exec_error:
            msg = f"nslab: {h.exec_error}\r\n" if self.tty else f"nslab: {h.exec_error}\n"
            self._emit(Channel.STDERR if not self.tty else Channel.STDOUT, msg.encode())
        self.update_flow()

    def info(self) -> dict:
        return {"id": self.id, "sandbox": self.sandbox_id, "pid": self.handle.pid,
                "tty": self.tty, "argv": self.argv, "exit_code": self.exit_code,
                "running": not self.finished.is_set(), "created": self.created,
                "viewers": len(self.attachments)}

    # -------------------------------------------------------------- output

    def _emit(self, channel: int, data: bytes) -> None:
        if self.tty:
            self.ring += data
            if len(self.ring) > RING_BYTES:
                del self.ring[: len(self.ring) - RING_BYTES]
        if not self.attachments and not self.tty and self._unclaimed_bytes < UNCLAIMED_LIMIT:
            self._unclaimed.append((channel, data))
            self._unclaimed_bytes += len(data)
        for att in list(self.attachments):
            att.feed(channel, data)

    def _on_readable(self, fd: int) -> None:
        try:
            data = os.read(fd, READ_CHUNK)
        except BlockingIOError:
            return
        except OSError as e:
            if e.errno != errno.EIO:  # EIO: the PTY's last slave fd closed
                raise
            data = b""
        if data:
            self._emit(self._open_streams[fd], data)
            if self.tty:
                self._pace(len(data))
            self.update_flow()
            return
        self._stop_reading(fd)
        self._open_streams.pop(fd, None)
        if not self._open_streams and self.exit_code is not None:
            self._finish()

    def _pace(self, n: int) -> None:
        """Take n bytes from the token bucket; when it runs dry, stop reading until it
        holds enough again for PACE_STEP of output."""
        now = time.monotonic()
        self._tokens = min(float(PACE_BURST),
                           self._tokens + (now - self._tokens_at) * PACE_RATE) - n
        self._tokens_at = now
        if self._tokens < 0 and not self._paced:
            self._paced = True
            self._loop.call_later(max(PACE_STEP, -self._tokens / PACE_RATE), self._unpace)

    def _unpace(self) -> None:
        self._paced = False
        self.update_flow()

    def _should_read(self) -> bool:
        if self._paced:
            return False
        writers = [a for a in self.attachments if not a.readonly]
        if not writers:
            return False
        # hysteresis: keep reading up to the high mark; once paused, resume below the low mark
        limit = HIGH_WATER if self._reading else LOW_WATER
        return all(a.pending < limit for a in writers)

    def update_flow(self) -> None:
        if self._closed or self._loop is None:
            return
        want = self._should_read() or (self.exit_code is not None)
        for fd in list(self._open_streams):
            if want and fd not in self._reading:
                self._loop.add_reader(fd, self._on_readable, fd)
                self._reading.add(fd)
            elif not want and fd in self._reading:
                self._stop_reading(fd)

    def _stop_reading(self, fd: int) -> None:
        if fd in self._reading:
            self._loop.remove_reader(fd)
            self._reading.discard(fd)

    # -------------------------------------------------------------- viewers

    def attach(self, readonly: bool = False, replay: bool = True) -> Attachment:
        att = Attachment(self, readonly)
        if replay and self.ring:
            att.feed(Channel.STDOUT, bytes(self.ring))
        if not readonly and self._unclaimed:
            for channel, data in self._unclaimed:
                att.feed(channel, data)
            self._unclaimed.clear()
            self._unclaimed_bytes = 0
        att.feed(Channel.REPLAYED, b"")
        if self.finished.is_set():
            att.feed(Channel.EXIT, json.dumps({"exit_code": self.exit_code}).encode())
        self.attachments.append(att)
        self.update_flow()
        return att

    def detach(self, att: Attachment) -> None:
        if att in self.attachments:
            self.attachments.remove(att)
        self.update_flow()

    # -------------------------------------------------------------- input

    def write(self, data: bytes) -> None:
        fd = self.handle.master if self.tty else self.handle.stdin
        if fd is None or self._closed:
            raise Conflict("this process's input is closed")
        if len(self._stdin_buf) + len(data) > STDIN_MAX:
            raise Conflict("input is arriving faster than the process reads it",
                           reason=Reason.BUSY)
        self._stdin_buf += data
        self._flush_stdin()
        if len(self._stdin_buf) > STDIN_HIGH:
            self._stdin_room.clear()

    async def stdin_room(self, timeout: float = STDIN_WAIT) -> None:
        """Until the process has read its input down to STDIN_LOW (at most `timeout`): the
        attach stream waits here before its next frame, so a fast writer is slowed by the
        socket rather than losing what STDIN_MAX cannot hold. A process that stops reading
        for longer gets the old answer on the next frame past STDIN_MAX."""
        try:
            await asyncio.wait_for(self._stdin_room.wait(), timeout)
        except asyncio.TimeoutError:
            pass

    def _flush_stdin(self) -> None:
        fd = self.handle.master if self.tty else self.handle.stdin
        if fd is None:
            return
        while self._stdin_buf:
            try:
                n = os.write(fd, self._stdin_buf)
            except BlockingIOError:
                self._loop.add_writer(fd, self._on_writable, fd)
                return
            except OSError as e:
                if e.errno in (errno.EPIPE, errno.EIO):
                    self._stdin_buf.clear()
                    self._stdin_room.set()
                    return
                raise
            del self._stdin_buf[:n]
            if len(self._stdin_buf) <= STDIN_LOW:
                self._stdin_room.set()

    def _on_writable(self, fd: int) -> None:
        self._loop.remove_writer(fd)
        self._flush_stdin()

    def close_stdin(self) -> None:
        if self.tty:
            self.write(b"\x04")
            return
        fd = self.handle.stdin
        if fd is not None:
            if self._stdin_buf:
                # Finish writing first; closing would lose what is buffered.
                self._loop.call_later(0.01, self.close_stdin)
                return
            self._loop.remove_writer(fd)
            os.close(fd)
            self.handle.stdin = None

    def resize(self, rows: int, cols: int) -> None:
        if not self.tty:
            raise InvalidRequest("this process has no terminal to resize")
        if not (1 <= rows <= 1000 and 1 <= cols <= 1000):
            raise InvalidRequest("rows and cols must be between 1 and 1000", field="rows")
        set_winsize(self.handle.master, rows, cols)

    def signal(self, name: str) -> None:
        sig = SIGNALS.get(name.upper().removeprefix("SIG")) if isinstance(name, str) else None
        if sig is None:
            raise InvalidRequest(f"signal must be one of {', '.join(SIGNALS)}", field="signal")
        if self.handle.pidfd is not None and self.exit_code is None:
            try:
                libc.pidfd_send_signal(self.handle.pidfd, sig)
            except ProcessLookupError:
                pass

    # -------------------------------------------------------------- ending

    def process_exited(self, code: int) -> None:
        if self.exit_code is not None:
            return
        self.exit_code = code
        self.update_flow()
        if not self._open_streams:
            self._finish()
        else:
            # Output still buffered is read first; a background child holding the
            # terminal open must not keep the session from ending.
            self._loop.call_later(EXIT_GRACE, self._finish)

    def _finish(self) -> None:
        if self.finished.is_set():
            return
        for fd in list(self._open_streams):
            self._drain(fd)
        self.finished.set()
        self._stdin_room.set()  # nobody may read it now: never hold a stream on it
        payload = json.dumps({"exit_code": self.exit_code}).encode()
        for att in list(self.attachments):
            att.feed(Channel.EXIT, payload)

    def _drain(self, fd: int) -> None:
        for _ in range(64):
            try:
                data = os.read(fd, READ_CHUNK)
            except OSError:
                break
            if not data:
                break
            self._emit(self._open_streams[fd], data)
        self._stop_reading(fd)

    def close(self) -> None:
        """Release every fd; the process itself is ended by its sandbox's teardown."""
        if self._closed:
            return
        for att in list(self.attachments):
            att.close()
        if self._loop is not None:
            for fd in list(self._reading):
                self._stop_reading(fd)
        self._closed = True
        self._stdin_room.set()
        h = self.handle
        for fd in {h.master, h.stdin, h.stdout, h.stderr, h.pidfd, h.go} - {None}:
            try:
                if self._loop is not None and fd in (h.master, h.stdin):
                    self._loop.remove_writer(fd)
                os.close(fd)
            except OSError:
                pass
        if not self.finished.is_set():
            self.finished.set()

    async def collect(self, *, stdin: bytes, timeout: float, limit: int) -> dict:
        """Wait for the process to end, gathering at most `limit` bytes of each stream."""
        att = self.attach(readonly=False, replay=False)
        if stdin:
            self.write(stdin)
        if not self.tty:
            self.close_stdin()
        out = {Channel.STDOUT: bytearray(), Channel.STDERR: bytearray()}
        truncated = False
        timed_out = False

        async def gather():
            nonlocal truncated
            while True:
                frames = await att.next()
                if not frames:
                    return
                for channel, data in frames:
                    if channel in out:
                        room = limit - len(out[channel])
                        if len(data) > room:
                            truncated = True
                        out[channel] += data[:max(room, 0)]
                    att.delivered(len(data))
                    if channel == Channel.EXIT:
                        return

        try:
            await asyncio.wait_for(gather(), timeout)
        except asyncio.TimeoutError:
            timed_out = True
            self.signal("KILL")
            try:
                await asyncio.wait_for(self.finished.wait(), 2)
            except asyncio.TimeoutError:
                pass
        finally:
            att.close()
        return {"exit_code": self.exit_code, "timed_out": timed_out, "truncated": truncated,
                "stdout": bytes(out[Channel.STDOUT]), "stderr": bytes(out[Channel.STDERR])}
