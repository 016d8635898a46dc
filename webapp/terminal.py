"""The live terminal: xterm.js ⇄ socket.io `/terminal` ⇄ a relay thread ⇄ sandboxd ⇄ PTY.

Events from the page (several terminals, the page's tabs, share one connection and are
keyed by exec id):
  open   {sandbox_id | course+lab, rows, cols, exec_id?, readonly?, tag?}
                                    → opened {tag, exec_id, sandbox_id, readonly, reattached}
  input  (exec_id, seq, text[, binary])  keystrokes, numbered from 0 per open: text is
                                    sent as UTF-8; with binary, each char is one byte
  resize {exec_id, rows, cols}
  ack    {exec_id, bytes}           bytes xterm has written (its write callback)
  close  {exec_id, kill?}           detach; with kill, end the shell as well
  touch  {sandbox_id}               "keep working": activity without a keystroke
Events to the page: opened, output (exec_id, bytes), exit {exec_id, exit_code},
error {message, tag?, exec_id?}; and, to every page attached to a sandbox (a socket.io
room per sandbox, see `to_sandbox`), what the app says about it: idle {sandbox_id,
seconds_left} (an idle stop is near; seconds_left null: not any more), stopped
{sandbox_id, reason} (webapp/idle.py).

Bytes are never decoded here: a UTF-8 sequence split across two reads stays split until
xterm's decoder joins it. Output is binary socket.io (a raw WebSocket frame, no base64).

Flow control, a credit window per viewer: the relay stops reading the daemon's WebSocket
while more than WINDOW bytes it sent to that page are unacknowledged. The daemon's send
then blocks, its viewer queue passes its high mark and it stops reading the PTY, so the
writer inside the sandbox blocks in the kernel: `yes` costs neither memory nor a flooded
browser. Read-only viewers (an instructor shadowing) never pause the learner: the
daemon drops one that falls behind and the relay reattaches it with the scrollback.
At most WINDOW + CHUNK bytes are unacknowledged per viewer, plus one daemon frame held.

A page that reconnects opens with the exec id it had: the relay attaches to the same
shell, the daemon replays its scrollback ring, then the live stream follows.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from typing import Any, Callable

from flask import current_app, request
from flask_socketio import Namespace

from sandbox.client import Client
from sandbox.errors import NotFound, SandboxError

from .terminal_stream import (EXIT, RESIZE, STDERR, STDIN, STDOUT, AttachStream,
                              StreamClosed)

log = logging.getLogger("nslab.terminal")

NAMESPACE = "/terminal"
SHELL = ["bash", "-l"]
WINDOW = 256 * 1024      # unacknowledged bytes per viewer before the relay stops reading
CHUNK = 64 * 1024        # largest output event; the window is checked between chunks
INPUT_CHUNK = 64 * 1024  # largest stdin frame to the daemon (its limit is 1 MiB)
MAX_REORDER = 256        # input events held waiting for an earlier one before giving up
DEFAULT_SIZE = (24, 80)

Authorize = Callable[[Any, str, str], bool]
FindSandbox = Callable[[Any, Any, Any], "str | None"]
OnActivity = Callable[[str], None]


def room(sandbox_id: str) -> str:
    return f"sandbox:{sandbox_id}"


class Relay:
    """One attached terminal: the daemon's stream → one page, with the credit window."""

    def __init__(self, ns: "TerminalNamespace", sid: str, exec_id: str, sandbox_id: str,
                 readonly: bool, stream: AttachStream, get_client: Callable[[], Client]):
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
                self._write(data)
                return
            if seq < self._next_seq:
                return  # a duplicate
            self._early[seq] = data
            if len(self._early) > MAX_REORDER:
                # An event never came (cannot happen on one connection): send what we have.
                self._next_seq = min(self._early)
            while self._next_seq in self._early:
                self._write(self._early.pop(self._next_seq))
                self._next_seq += 1

    def _write(self, data: bytes) -> None:
        for i in range(0, len(data), INPUT_CHUNK):
            self.stream.send(STDIN, data[i:i + INPUT_CHUNK])

    def resize(self, rows: int, cols: int) -> None:
        if not self.readonly and not self.closed:
            self.stream.send(RESIZE, json.dumps({"rows": rows, "cols": cols}).encode())

    def close(self) -> None:
        """Stop relaying (the shell goes on); safe from any thread."""
        with self._credit:
            self.closed = True
            self._credit.notify_all()
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
                if channel in (STDOUT, STDERR):
                    self._send_output(self._merge(data))
                elif channel == EXIT:
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
            if frame[0] not in (STDOUT, STDERR):
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
        too far behind (code 4000), or its heartbeat got no answer while this relay was
        paused; or the session is gone (4001: its sandbox stopped), and then attaching
        again finds no session and the page hears `exit`. Output may have been lost in between, so attach again and start the page
        over, as after a reload: 'opened' (the page clears its screen), then the
        scrollback."""
        try:
            stream = AttachStream.open(self._get_client(), self.exec_id,
                                       readonly=self.readonly, replay=True)
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


class TerminalNamespace(Namespace):
    def __init__(self, namespace: str, *, get_client: Callable[[], Client], authorize: Authorize,
                 get_user: Callable[[], Any] | None = None,
                 find_sandbox: FindSandbox | None = None,
                 on_activity: OnActivity | None = None):
        super().__init__(namespace)
        self.get_client = get_client
        self.authorize = authorize
        self.get_user = get_user or _current_user
        self.find_sandbox = find_sandbox
        self.on_activity = on_activity or (lambda sandbox_id: None)
        self.relays: dict[str, dict[str, Relay]] = {}   # sid → exec id → relay
        self.latest_shell: dict[str, str] = {}          # sandbox id → last shell opened
        self._lock = threading.Lock()
        # python-socketio sends a binary event as several engine.io packets, unlocked:
        # two relay threads emitting at once could interleave them.
        self._emit_lock = threading.Lock()

    # ------------------------------------------------------------ plumbing

    def send(self, sid: str, event: str, *args) -> None:
        with self._emit_lock:
            # A tuple is several event arguments to python-socketio: output(exec_id, bytes).
            data = args[0] if len(args) == 1 else tuple(args)
            self.socketio.emit(event, data, to=sid, namespace=self.namespace)

    def to_sandbox(self, sandbox_id: str, event: str, data: dict) -> None:
        """`event` to every page attached to a terminal of this sandbox; from any thread."""
        with self._emit_lock:
            self.socketio.emit(event, data, to=room(sandbox_id), namespace=self.namespace)

    def _error(self, message: str, **ids) -> None:
        self.send(request.sid, "error", {"message": message, **{k: v for k, v in ids.items()
                                                                 if v is not None}})

    def forget(self, relay: Relay, ended: bool = False) -> None:
        with self._lock:
            terms = self.relays.get(relay.sid, {})
            if terms.get(relay.exec_id) is relay:
                del terms[relay.exec_id]
            if ended and self.latest_shell.get(relay.sandbox_id) == relay.exec_id:
                del self.latest_shell[relay.sandbox_id]

    def _relay(self, data, sid: str | None = None) -> Relay | None:
        exec_id = data.get("exec_id") if isinstance(data, dict) else data
        if not isinstance(exec_id, str):
            return None
        return self.relays.get(sid or request.sid, {}).get(exec_id)

    # Keystrokes and acks, the events that come by the hundred a second, are handled
    # without Flask-SocketIO's wrapping: it pushes an app and request context for each
    # event, which decodes the signed session cookie every time, all under the GIL that
    # every other terminal's echo waits for. These two need only the sid (who the page
    # is was settled when it opened the terminal). Every other event goes through Flask.
    _BARE = {"input": "_on_input", "ack": "_on_ack"}

    def trigger_event(self, event, *args):
        bare = self._BARE.get(event)
        if bare is not None and args:
            return getattr(self, bare)(*args)  # the sid, then the event's arguments
        return super().trigger_event(event, *args)

    def stats(self) -> list[dict]:
        with self._lock:
            return [r.stats() for terms in self.relays.values() for r in terms.values()]

    # ------------------------------------------------------------ events

    def on_connect(self, auth=None):
        _no_delay(request.environ)
        with self._lock:
            self.relays[request.sid] = {}

    def on_disconnect(self, reason=None):
        with self._lock:
            terms = self.relays.pop(request.sid, {})
        for relay in terms.values():
            relay.close()  # the shells go on; the page reattaches when it comes back

    def on_open(self, data):
        if not isinstance(data, dict):
            return self._error("open needs {sandbox_id, rows, cols}")
        tag = data.get("tag")
        sandbox_id = data.get("sandbox_id")
        exec_id = data.get("exec_id") or None
        readonly = bool(data.get("readonly"))
        rows, cols = _size(data)
        if exec_id is not None and not isinstance(exec_id, str):
            return self._error("exec_id must be a string", tag=tag)
        user = self.get_user()
        if sandbox_id is None and self.find_sandbox is not None:
            try:
                sandbox_id = self.find_sandbox(user, data.get("course"), data.get("lab"))
            except SandboxError as e:
                return self._error(e.message, tag=tag, retry=_retryable(e))
        if not isinstance(sandbox_id, str) or not sandbox_id:
            return self._error("there is no sandbox for this terminal", tag=tag)
        if not self.authorize(user, sandbox_id, "read" if readonly else "write"):
            return self._error("you may not use this sandbox's terminal", tag=tag,
                               sandbox_id=sandbox_id)
        client = self.get_client()
        try:
            if readonly and exec_id is None:
                exec_id = self.latest_shell.get(sandbox_id)
            reattached = exec_id is not None and _alive_shell(client, exec_id, sandbox_id)
            if not reattached:
                if readonly:
                    return self._error("there is no terminal to watch in this sandbox",
                                       tag=tag, exec_id=exec_id)
                exec_id = client.exec(sandbox_id, SHELL, tty=True, rows=rows, cols=cols)["id"]
            elif not readonly:
                client.resize(exec_id, rows, cols)  # this page's size, before the replay
            stream = AttachStream.open(client, exec_id, readonly=readonly, replay=True)
        except SandboxError as e:
            return self._error(e.message, tag=tag, exec_id=exec_id, retry=_retryable(e))
        relay = Relay(self, request.sid, exec_id, sandbox_id, readonly, stream, self.get_client)
        with self._lock:
            terms = self.relays.get(request.sid)
            if terms is None:  # the page went away while we were opening
                stream.close()
                return
            old = terms.get(exec_id)
            terms[exec_id] = relay
            if not readonly:
                self.latest_shell[sandbox_id] = exec_id
        if old is not None:
            old.close()
        self.enter_room(request.sid, room(sandbox_id))
        if not readonly:
            self.on_activity(sandbox_id)
        # 'opened' goes out before the relay starts, so the page resets its screen before
        # the scrollback arrives.
        self.send(request.sid, "opened", {"tag": tag, "exec_id": exec_id,
                                          "sandbox_id": sandbox_id, "readonly": readonly,
                                          "reattached": reattached})
        self.socketio.start_background_task(relay.run)

    def _on_input(self, sid, exec_id, seq=None, data=None, binary=False):
        # Text, not a binary event: python-socketio rebuilds a binary event from two
        # engine.io messages, and with async handlers (threading mode's default) each
        # message is handled in its own thread, so the two can be taken out of order.
        if data is None and isinstance(seq, (str, bytes)):
            seq, data = None, seq  # input(exec_id, data), unnumbered
        relay = self._relay(exec_id, sid)
        if relay is None:
            return
        if isinstance(data, str):
            try:
                data = data.encode("latin-1" if binary else "utf-8", "replace")
            except UnicodeEncodeError:
                return  # "binary" text with a char above 255
        if not isinstance(data, (bytes, bytearray)) or isinstance(seq, bool):
            return
        relay.input(seq if isinstance(seq, int) else None, bytes(data))
        if not relay.readonly:
            self.on_activity(relay.sandbox_id)

    def on_touch(self, data):
        """Activity without a keystroke ("keep working" on the page), for a sandbox this
        page types into."""
        sandbox_id = data.get("sandbox_id") if isinstance(data, dict) else None
        if not isinstance(sandbox_id, str):
            return
        terms = self.relays.get(request.sid, {})
        if any(r.sandbox_id == sandbox_id and not r.readonly for r in list(terms.values())):
            self.on_activity(sandbox_id)

    def on_resize(self, data):
        relay = self._relay(data) if isinstance(data, dict) else None
        if relay is not None:
            rows, cols = _size(data)
            relay.resize(rows, cols)

    def _on_ack(self, sid, data):
        relay = self._relay(data, sid)
        n = data.get("bytes") if isinstance(data, dict) else None
        if relay is not None and isinstance(n, int) and n > 0:
            relay.ack(n)

    def on_close(self, data):
        relay = self._relay(data) if isinstance(data, dict) else None
        if relay is None:
            return
        kill = bool(data.get("kill")) and not relay.readonly
        self.forget(relay, ended=kill)
        relay.close()
        if kill:
            try:  # SIGKILL to the shell; the PTY's hangup ends what it started
                self.get_client().request("DELETE", f"/exec/{relay.exec_id}")
            except SandboxError:
                pass


def register_terminal(socketio, *, get_client: Callable[[], Client], authorize: Authorize,
                      get_user: Callable[[], Any] | None = None,
                      find_sandbox: FindSandbox | None = None,
                      on_activity: OnActivity | None = None,
                      namespace: str = NAMESPACE) -> TerminalNamespace:
    """Serve terminals on `namespace`. `get_client()` gives a sandbox.client.Client;
    `authorize(user, sandbox_id, mode)` with mode "write" (type into it) or "read"
    (watch it) says whether the user may; `get_user()` defaults to flask_login's
    current_user where the app has a login manager, else None. `find_sandbox(user,
    course, lab)` gives the sandbox id for an `open` that names a course and lab
    instead (the page need not know it); it may raise SandboxError with a message.
    `on_activity(sandbox_id)` is called on every keystroke, `touch` and writable open (it
    must be cheap: it runs on the keystroke's path)."""
    ns = TerminalNamespace(namespace, get_client=get_client, authorize=authorize,
                           get_user=get_user, find_sandbox=find_sandbox,
                           on_activity=on_activity)
    socketio.on_namespace(ns)
    return ns


def _retryable(e: SandboxError) -> bool | None:
    """The daemon is down or out of capacity (503): the page says so and tries again."""
    return True if getattr(e, "status", None) == 503 else None


def _current_user():
    if getattr(current_app, "login_manager", None) is None:
        return None
    from flask_login import current_user

    return current_user._get_current_object()


def _no_delay(environ) -> None:
    """Turn Nagle's algorithm off for this connection: a binary socket.io event is two
    WebSocket messages, and the second would wait for the peer's delayed ACK, 40 ms per
    keystroke's echo. gunicorn sets TCP_NODELAY itself; Werkzeug's server does not."""
    sock = environ.get("gunicorn.socket") or environ.get("werkzeug.socket")
    if isinstance(sock, socket.socket) and sock.family in (socket.AF_INET, socket.AF_INET6):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass


def _size(data) -> tuple[int, int]:
    rows, cols = data.get("rows"), data.get("cols")
    ok = all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 1000
             for v in (rows, cols))
    return (rows, cols) if ok else DEFAULT_SIZE


def _alive_shell(client: Client, exec_id: str, sandbox_id: str) -> bool:
    """Whether exec_id is a running terminal session of this sandbox."""
    try:
        info = client.exec_info(exec_id)
    except NotFound:
        return False
    return info.get("sandbox") == sandbox_id and bool(info.get("running")) and bool(info.get("tty"))
