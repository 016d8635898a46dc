"""A blocking WebSocket to sandboxd's `/v1/exec/<id>/attach`, for the terminal relay.

The web app runs Flask-SocketIO in threading mode, so the relay is a thread that blocks
in `recv()`; sandbox.client's `attach` is asyncio and would need a loop per thread.
websocket-client takes a pre-connected socket (`socket=`), so the daemon's Unix socket
works as well as TCP; it answers the daemon's pings while it reads, and its send and
receive sides have separate locks, so input can be sent from handler threads while the
relay thread reads.

Frames are binary and their first byte is the channel (sandbox/sessions.py).
"""

from __future__ import annotations

import json
import select
import socket
import struct

import websocket

from sandbox.client import Client, DaemonUnavailable
from sandbox.errors import NotFound, SandboxError

# Channels of the attach protocol (sandbox/sessions.py); the web app must not import the
# daemon's asyncio session module for seven integers.
STDIN, STDOUT, STDERR, RESIZE, EXIT, CLOSE_STDIN, SIGNAL, REPLAYED = range(8)
CONNECT_TIMEOUT = 10.0


class StreamClosed(Exception):
    """The daemon closed the stream (or the connection broke); `code` says why if it said."""

    def __init__(self, code: int | None = None):
        super().__init__(f"attach stream closed ({code})")
        self.code = code


class AttachStream:
    """One viewer's WebSocket to an exec session."""

    def __init__(self, ws: websocket.WebSocket):
        self._ws = ws

    @classmethod
    def open(cls, client: Client, exec_id: str, *, readonly: bool = False,
             replay: bool = True) -> "AttachStream":
        url = client.attach_url(exec_id, readonly=readonly, replay=replay)
        url = "ws" + url[len("http"):]  # http→ws, https→wss
        header = [f"Authorization: Bearer {client.token}"] if client.token else []
        sock = None
        if client.socket_path is not None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(CONNECT_TIMEOUT)
            try:
                sock.connect(str(client.socket_path))
            except OSError as e:
                sock.close()
                raise DaemonUnavailable(f"cannot reach sandboxd at {client.where()}: "
                                        f"{e.strerror or e}") from None
        ws = websocket.WebSocket(enable_multithread=True, skip_utf8_validation=True)
        try:
            ws.connect(url, socket=sock, header=header, timeout=CONNECT_TIMEOUT,
                       suppress_origin=True)
        except websocket.WebSocketBadStatusException as e:
            ws.shutdown()
            message = _error_message(e) or f"attach failed with HTTP {e.status_code}"
            if e.status_code == 404:
                raise NotFound(message) from None
            err = SandboxError(message)
            err.status = e.status_code
            raise err from None
        except (OSError, websocket.WebSocketException) as e:
            ws.shutdown()
            raise DaemonUnavailable(f"cannot attach through {client.where()}: {e}") from None
        ws.settimeout(None)  # the relay blocks until output comes; close() wakes it
        return cls(ws)

    def recv(self) -> tuple[int, bytes]:
        """The next (channel, payload); raises StreamClosed at the end."""
        try:
            while True:
                opcode, data = self._ws.recv_data()
                if opcode == websocket.ABNF.OPCODE_CLOSE:
                    code = struct.unpack("!H", data[:2])[0] if len(data) >= 2 else None
                    raise StreamClosed(code)
                if opcode == websocket.ABNF.OPCODE_BINARY and data:
                    return data[0], data[1:]
        except (OSError, websocket.WebSocketException):
            raise StreamClosed() from None

    def ready(self) -> bool:
        """Whether a frame (or part of one) is already waiting, so recv() would not block
        long: the relay uses it to merge a burst of small frames into one event."""
        sock = self._ws.sock
        if sock is None:
            return False
        try:
            return bool(select.select([sock], [], [], 0)[0])
        except (OSError, ValueError):
            return False

    def send(self, channel: int, payload: bytes = b"") -> bool:
        """Send one frame; False when the stream is gone."""
        try:
            self._ws.send_bytes(bytes([channel]) + payload)
            return True
        except (OSError, websocket.WebSocketException):
            return False

    def send_json(self, channel: int, obj: dict) -> bool:
        return self.send(channel, json.dumps(obj).encode())

    def abort(self) -> None:
        """Wake a thread blocked in recv() (it gets StreamClosed); safe from any thread."""
        self._ws.abort()

    def close(self) -> None:
        self._ws.shutdown()


def _error_message(e: websocket.WebSocketBadStatusException) -> str | None:
    """The daemon's JSON error message, if the refused handshake carried one."""
    body = getattr(e, "resp_body", None)
    if not body:
        return None
    try:
        return json.loads(body).get("message")
    except (ValueError, AttributeError):
        return None
