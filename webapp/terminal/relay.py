"""One attached terminal: a relay thread between one socket.io page and sandboxd's attach
stream of one exec session, with the page's credit window (see `webapp.terminal`).

Bytes are never decoded here: a UTF-8 sequence split across two reads stays split until
xterm's decoder joins it. Output is binary socket.io (a raw WebSocket frame, no base64).
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Callable, Protocol

from sandbox.client import AttachStream, Client, StreamClosed
from sandbox.errors import NotFound, SandboxError
from sandbox.protocol import Channel

log = logging.getLogger("nslab.terminal")

WINDOW = 256 * 1024      # unacknowledged bytes per viewer before the relay stops reading
CHUNK = 64 * 1024        # largest output event; the window is checked between chunks
INPUT_CHUNK = 64 * 1024  # largest stdin frame to the daemon (its limit is 1 MiB)
MAX_REORDER = 256        # input events held waiting for an earlier one before giving up
# A new shell's keys wait for its first output (its prompt: bash has set up its line
# editor by then), at most this long (a shell that prints nothing still gets them).
HOLD_MAX = 3.0
OUTPUT = (Channel.STDOUT, Channel.STDERR)


class Pages(Protocol):
    """What a relay needs of the namespace that made it."""

    def send(self, sid: str, event: str, *args) -> None:
        """`event` to the page `sid`, from any thread."""

    def forget(self, relay: "Relay", ended: bool = False) -> None:
        """The relay stopped; `ended`: its process exited."""


class Relay:
    """One attached terminal: the daemon's stream → one page, with the credit window."""

    def __init__(self, ns: Pages, sid: str, exec_id: str, sandbox_id: str,
                 readonly: bool, stream: AttachStream, get_client: Callable[[], Client],
                 new_shell: bool = False):
        self.ns = ns
        self.sid = sid
        self.exec_id = exec_id
        self.sandbox_id = sandbox_id
        self.readonly = readonly
        self.stream = stream
        self._get_client = get_client
        self.unacked = 0          # bytes sent to the page that xterm has not written yet
        self.held = 0             # bytes read from the daemon, not yet sent to the page
        self.sent = 0
        self.closed = False
        self.exit_code: int | None = None
        self._credit = threading.Condition()
        self._input_lock = threading.Lock()
        self._next_seq = 0
        self._early: dict[int, bytes] = {}
        self._ahead: tuple[int, bytes] | StreamClosed | None = None  # read while merging
        # Keys for a shell that has not started reading yet. Written to its PTY at once they
        # would not be lost, but the terminal would echo them before the prompt (cooked
        # mode) and the line editor again after it.
        self._holding = new_shell and not readonly
        self._held: list[bytes] = []
        self._hold_timer: threading.Timer | None = None
        if self._holding:
            self._hold_timer = threading.Timer(HOLD_MAX, self._release)
            self._hold_timer.daemon = True
            self._hold_timer.start()

    # ------------------------------------------------------------ from the page

    def ack(self, n: int) -> None:
        with self._credit:
            self.unacked = max(0, self.unacked - n)
            self._credit.notify_all()

    def input(self, seq: int | None, data: bytes) -> None:
        """Keystrokes, in the page's order: socket.io runs each event in its own thread,
        so two events can reach here swapped; `seq` puts them back in order."""
        if self.readonly or self.closed:
            return
        with self._input_lock:
            if seq is None:
                self._deliver(data)
                return
            if seq < self._next_seq:
                return  # a duplicate
            self._early[seq] = data
            if len(self._early) > MAX_REORDER:
                # An event never came (cannot happen on one connection): send what we have.
                self._next_seq = min(self._early)
            while self._next_seq in self._early:
                self._deliver(self._early.pop(self._next_seq))
                self._next_seq += 1

    def _deliver(self, data: bytes) -> None:
        # Under _input_lock: keys in order, after any held ones.
        if self._holding:
            self._held.append(data)
        else:
            self._write(data)

    def _release(self) -> None:
        """The shell is there (its first output, or HOLD_MAX passed): the held keys go to
        it, in order, before any later ones."""
        with self._input_lock:
            if not self._holding:
                return
            self._holding = False
            held, self._held = self._held, []
            if not self.closed:
                for data in held:
                    self._write(data)
        if self._hold_timer is not None:
            self._hold_timer.cancel()

    def _write(self, data: bytes) -> None:
        for i in range(0, len(data), INPUT_CHUNK):
            self.stream.send(Channel.STDIN, data[i:i + INPUT_CHUNK])

    def resize(self, rows: int, cols: int) -> None:
        if not self.readonly and not self.closed:
            self.stream.send(Channel.RESIZE, json.dumps({"rows": rows, "cols": cols}).encode())

    def close(self) -> None:
        """Stop relaying (the shell goes on); safe from any thread."""
        with self._credit:
            self.closed = True
            self._credit.notify_all()
        if self._hold_timer is not None:
            self._hold_timer.cancel()
        self.stream.abort()

    # ------------------------------------------------------------ daemon → page

    def run(self) -> None:
        try:
            while not self.closed:
                try:
                    channel, data = self._recv()
                except StreamClosed as e:
                    if self.closed or self.exit_code is not None:
                        break
                    log.info("terminal %s: the daemon closed the stream (%s); reattaching",
                             self.exec_id, e.code)
                    if not self._reattach():
                        break
                    continue
                if channel in OUTPUT:
                    self._send_output(self._merge(data))
                    if self._holding:
                        self._release()
                elif channel == Channel.EXIT:
                    try:
                        self.exit_code = json.loads(data).get("exit_code")
                    except ValueError:
                        self.exit_code = None
                    self.ns.send(self.sid, "exit", {"exec_id": self.exec_id,
                                                    "exit_code": self.exit_code})
                    break
        except Exception:  # noqa: BLE001 - a relay thread must never die silently
            log.exception("terminal relay for %s failed", self.exec_id)
            self.ns.send(self.sid, "error", {"exec_id": self.exec_id,
                                             "message": "the terminal connection failed"})
        finally:
            if self._hold_timer is not None:
                self._hold_timer.cancel()
            self.stream.close()
            self.ns.forget(self, ended=self.exit_code is not None)

    def _recv(self) -> tuple[int, bytes]:
        ahead, self._ahead = self._ahead, None
        if isinstance(ahead, StreamClosed):
            raise ahead
        return ahead or self.stream.recv()

    def _merge(self, data: bytes) -> bytes:
        """The daemon sends what each PTY read gave (often 4 KiB): merge the frames that
        have already arrived into one event, up to CHUNK, never waiting for more."""
        if len(data) >= CHUNK or not self.stream.ready():
            return data
        merged = bytearray(data)
        while len(merged) < CHUNK and self.stream.ready():
            try:
                frame = self.stream.recv()
            except StreamClosed as e:
                self._ahead = e
                break
            if frame[0] not in OUTPUT:
                self._ahead = frame
                break
            merged += frame[1]
        return bytes(merged)

    def _send_output(self, data: bytes) -> None:
        self.held = len(data)
        for i in range(0, len(data), CHUNK):
            with self._credit:
                self._credit.wait_for(lambda: self.unacked <= WINDOW or self.closed)
                if self.closed:
                    break
                chunk = data[i:i + CHUNK]
                self.unacked += len(chunk)
            self.ns.send(self.sid, "output", self.exec_id, chunk)
            self.sent += len(chunk)
            self.held -= len(chunk)
        self.held = 0

    def _reattach(self) -> bool:
        """The daemon closed the stream while the process runs: a read-only viewer fell
        too far behind (`CloseCode.VIEWER_BEHIND`), or its heartbeat got no answer while
        this relay was paused; or the session is gone (`CloseCode.SESSION_GONE`: its
        sandbox stopped), and then attaching again finds no session and the page hears
        `exit`. Output may have been lost in between, so attach again and start the page
        over, as after a reload: 'opened' (the page clears its screen), then the
        scrollback."""
        try:
            stream = self._get_client().attach(self.exec_id, readonly=self.readonly,
                                               replay=True)
        except NotFound:
            self.ns.send(self.sid, "exit", {"exec_id": self.exec_id, "exit_code": None})
            return False
        except SandboxError as e:
            self.ns.send(self.sid, "error", {"exec_id": self.exec_id, "message": e.message})
            return False
        self.stream.close()
        self.stream = stream
        if self.closed:
            stream.abort()
            return False
        with self._credit:
            self.unacked = 0  # acks still on their way are for the old screen
        self.ns.send(self.sid, "opened", {"exec_id": self.exec_id, "sandbox_id": self.sandbox_id,
                                          "readonly": self.readonly, "reattached": True})
        return True

    def stats(self) -> dict:
        return {"exec_id": self.exec_id, "unacked": self.unacked, "held": self.held,
                "sent": self.sent, "readonly": self.readonly}
