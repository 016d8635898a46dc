"""How the CLI, the web app, the lab machinery and the benchmarks talk to sandboxd.

`Client` makes plain JSON calls with http.client (over the Unix socket, or TCP with a
bearer token) and raises the same `SandboxError` kinds, with the same `reason`, the
daemon reported. An exec session's stream is an `AttachStream` (`Client.attach()`): a
blocking WebSocket over the same transport, the one attach client of the project.

With `protocol.py` and `errors.py`, this is all unprivileged code may import of `sandbox`.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
from pathlib import Path
from urllib.parse import quote, urlencode

import select
import struct

import websocket

from .errors import DaemonUnavailable, NotFound, SandboxError, from_json
from .protocol import (API_PREFIX, Channel, HttpFacts, KernelFacts, Reason, RegistryImage,
                       RunFacts, default_socket_path)

CONNECT_TIMEOUT = 10.0


def resolve_socket(path: str | os.PathLike | None = None) -> Path:
    """--socket, else $NSLAB_SOCKET, else the default path."""
    if path:
        return Path(path)
    if os.environ.get("NSLAB_SOCKET"):
        return Path(os.environ["NSLAB_SOCKET"])
    return default_socket_path()


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.settimeout(self.timeout)
            s.connect(self._path)
        except OSError:
            s.close()
            raise
        self.sock = s


class Client:
    def __init__(self, socket_path: str | os.PathLike | None = None, *, url: str | None = None,
                 token: str | None = None, timeout: float = 60.0):
        self.socket_path = None if url else resolve_socket(socket_path)
        self.url = url
        self.token = token
        self.timeout = timeout

    def _conn(self) -> http.client.HTTPConnection:
        if self.url:
            host = self.url.split("://", 1)[-1].rstrip("/")
            return http.client.HTTPConnection(host, timeout=self.timeout)
        return _UnixConnection(str(self.socket_path), self.timeout)

    def where(self) -> str:
        return self.url or str(self.socket_path)

    def request(self, method: str, path: str, body: dict | None = None, *,
                query: dict | None = None, timeout: float | None = None, raw: bool = False):
        """One call; the decoded JSON answer, or with `raw` its bytes as they came. An
        error answer (always JSON) raises the SandboxError kind the daemon named."""
        url = API_PREFIX + path + ("?" + urlencode(query) if query else "")
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        data = json.dumps(body).encode() if body is not None else None
        conn = self._conn()
        if timeout is not None:
            conn.timeout = timeout
        try:
            conn.request(method, url, body=data, headers=headers)
            resp = conn.getresponse()
            answer = resp.read()
        except (FileNotFoundError, ConnectionRefusedError) as e:
            raise DaemonUnavailable(
                f"cannot reach sandboxd at {self.where()}: {e.strerror or e}; start it with "
                "`nslab sandboxd` (as root) or point --socket / NSLAB_SOCKET at it") from None
        except PermissionError:
            raise DaemonUnavailable(
                f"no permission to use {self.where()}: add this user to the socket's group "
                "or run as root") from None
        except (socket.timeout, TimeoutError):
            raise DaemonUnavailable(f"sandboxd at {self.where()} did not answer in time") from None
        finally:
            conn.close()
        if resp.status < 400 and raw:
            return answer
        if resp.status == 204:
            return None
        try:
            payload = json.loads(answer) if answer else None
        except ValueError:
            payload = {"message": answer.decode(errors="replace")}
        if resp.status >= 400:
            raise from_json(payload if isinstance(payload, dict) else {}, resp.status)
        return payload

    # ---------------------------------------------------------- sandboxes

    def info(self) -> dict:
        return self.request("GET", "/info")

    def images(self) -> list[dict]:
        return self.request("GET", "/images")

    def registry(self) -> list[RegistryImage]:
        """The tags the daemon's read-only registry serves (`protocol.RegistryImage`), with
        the manifest digest a `docker pull` inside records: the host's side of "the image
        in the learner's store is the registry's"."""
        return self.request("GET", "/registry")

    def create(self, **params) -> dict:
        return self.request("POST", "/sandboxes", {k: v for k, v in params.items() if v is not None})

    def list(self) -> list[dict]:
        return self.request("GET", "/sandboxes")

    def get(self, sid: str) -> dict:
        return self.request("GET", f"/sandboxes/{quote(sid, safe='')}")

    def inspect(self, sid: str) -> dict:
        return self.request("GET", f"/sandboxes/{quote(sid, safe='')}/inspect")

    def stats(self, sid: str) -> dict:
        return self.request("GET", f"/sandboxes/{quote(sid, safe='')}/stats")

    def stop(self, sid: str) -> dict:
        return self.request("POST", f"/sandboxes/{quote(sid, safe='')}/stop")

    def start(self, sid: str) -> dict:
        return self.request("POST", f"/sandboxes/{quote(sid, safe='')}/start")

    def destroy(self, sid: str, purge: bool = False) -> None:
        self.request("DELETE", f"/sandboxes/{quote(sid, safe='')}",
                     query={"purge": "true" if purge else "false"})

    def port(self, sid: str, port: int) -> dict:
        return self.request("GET", f"/sandboxes/{quote(sid, safe='')}/ports/{int(port)}")

    def http_get(self, sid: str, port: int, path: str = "/", *, timeout: float = 3.0,
                 limit: int = 1 << 20) -> HttpFacts:
        """GET `path` from TCP `port` at the sandbox's address, made by sandboxd on the host
        (`protocol.HttpFacts`); Conflict with reason NO_ANSWER if nothing answered HTTP
        within `timeout` seconds."""
        query = {"path": path, "timeout": str(timeout), "limit": str(limit)}
        return self.request("GET", f"/sandboxes/{quote(sid, safe='')}/ports/{int(port)}/http",
                            query=query, timeout=timeout + 30)

    def exec(self, sid: str, argv: list[str], *, tty: bool = False, user=0, cwd=None, env=None,
             rows: int = 24, cols: int = 80) -> dict:
        body = {"argv": argv, "tty": tty, "user": user, "rows": rows, "cols": cols}
        if cwd:
            body["cwd"] = cwd
        if env:
            body["env"] = env
        return self.request("POST", f"/sandboxes/{quote(sid, safe='')}/exec", body)

    def run(self, sid: str, argv: list[str], *, stdin: str = "", timeout: float = 10.0,
            user=0, cwd=None, env=None, trace: list[str] | None = None) -> RunFacts:
        """Run a command to completion; `protocol.RunFacts` ({"exit_code", "stdout",
        "stderr", "timed_out", ...}). `trace`: system call names (from
        `protocol.TRACEABLE_SYSCALLS`) to record with the host's strace, in "syscalls"."""
        body = {"argv": argv, "stdin": stdin, "timeout": timeout, "user": user}
        if cwd:
            body["cwd"] = cwd
        if env:
            body["env"] = env
        if trace is not None:
            body["trace"] = trace  # as given: the daemon checks it
        return self.request("POST", f"/sandboxes/{quote(sid, safe='')}/run", body,
                            timeout=timeout + 30)

    def read_file(self, sid: str, path: str, *, pid: int | None = None,
                  limit: int | None = None) -> bytes:
        """The bytes of a regular file inside the sandbox, its path resolved in the root of
        the sandbox's init, or of process `pid` (a pid as seen inside the sandbox: a file
        in a mount namespace the learner made). At most `limit` bytes (default 8 MiB, at
        most 16 MiB); a bigger file raises TooLarge, a missing one NotFound, a directory,
        fifo or device InvalidRequest."""
        query = {"path": path}
        if pid is not None:
            query["pid"] = str(pid)
        if limit is not None:
            query["limit"] = str(limit)
        return self.request("GET", f"/sandboxes/{quote(sid, safe='')}/files", query=query,
                            raw=True)

    def list_dir(self, sid: str, path: str, *, pid: int | None = None) -> list[dict]:
        """A directory inside the sandbox: [{"name", "type" (file, dir, link, other),
        "size", "mtime"}], sorted by name, at most 1000 entries; links are not followed."""
        query = {"path": path}
        if pid is not None:
            query["pid"] = str(pid)
        return self.request("GET", f"/sandboxes/{quote(sid, safe='')}/dir", query=query)

    # ---------------------------------------------------------- notebook kernels

    def start_kernel(self, sid: str, kernel_id: str | None = None) -> KernelFacts:
        """The sandbox's ipykernel, started inside it if none runs (`kernel_id` names a
        new one; a running kernel keeps its own): its facts and the connection (ipc, a
        host path prefix sandboxd relays) a jupyter_client uses. sandboxd answers once
        the kernel's sockets are open."""
        body = {"kernel_id": kernel_id} if kernel_id is not None else {}
        return self.request("POST", f"/sandboxes/{quote(sid, safe='')}/kernel", body)

    def kernel(self, sid: str) -> KernelFacts:
        """The sandbox's running kernel; NotFound (`Reason.NO_SUCH_KERNEL`) when none runs."""
        return self.request("GET", f"/sandboxes/{quote(sid, safe='')}/kernel")

    def stop_kernel(self, sid: str) -> None:
        """End the sandbox's kernel (killed; its relay sockets removed)."""
        self.request("DELETE", f"/sandboxes/{quote(sid, safe='')}/kernel")

    def exec_info(self, eid: str) -> dict:
        return self.request("GET", f"/exec/{quote(eid, safe='')}")

    def resize(self, eid: str, rows: int, cols: int) -> dict:
        return self.request("POST", f"/exec/{quote(eid, safe='')}/resize", {"rows": rows, "cols": cols})

    def signal(self, eid: str, name: str) -> dict:
        return self.request("POST", f"/exec/{quote(eid, safe='')}/signal", {"signal": name})

    def forget_exec(self, eid: str) -> None:
        """Kill the session's process (if it still runs) and forget the session."""
        self.request("DELETE", f"/exec/{quote(eid, safe='')}")

    # ---------------------------------------------------------- streams

    def attach_url(self, eid: str, *, readonly: bool = False, replay: bool = True) -> str:
        q = urlencode({"readonly": int(readonly), "replay": int(replay)})
        base = self.url.rstrip("/") if self.url else "http://localhost"
        return f"{base}{API_PREFIX}/exec/{quote(eid, safe='')}/attach?{q}"

    def attach(self, eid: str, *, readonly: bool = False, replay: bool = True) -> "AttachStream":
        """A viewer's stream of exec session `eid` (see `AttachStream`)."""
        return AttachStream.open(self, eid, readonly=readonly, replay=replay)


class StreamClosed(Exception):
    """The daemon closed the stream (or the connection broke); `code` says why if it said
    (a `protocol.CloseCode`, or a standard WebSocket code)."""

    def __init__(self, code: int | None = None):
        super().__init__(f"attach stream closed ({code})")
        self.code = code


class AttachStream:
    """One viewer's WebSocket to an exec session: frames of (`Channel`, payload).

    Blocking (websocket-client), so that threads use it directly: the web relay reads in
    its thread, the CLI reads in its main thread while another sends stdin; the send and
    receive sides have separate locks. websocket-client takes a pre-connected socket
    (`socket=`), so the daemon's Unix socket works as well as TCP, and it answers the
    daemon's pings while it reads."""

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
            payload = _error_payload(e)
            if "message" not in payload:
                payload["message"] = f"attach failed with HTTP {e.status_code}"
                if e.status_code == 404:
                    payload.update(error=NotFound.code, reason=Reason.NO_SUCH_EXEC)
            raise from_json(payload, e.status_code) from None
        except (OSError, websocket.WebSocketException) as e:
            ws.shutdown()
            raise DaemonUnavailable(f"cannot attach through {client.where()}: {e}") from None
        ws.settimeout(None)  # a reader blocks until output comes; abort()/close() wakes it
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
        """Whether a frame (or part of one) is already waiting, so recv() would not block."""
        sock = self._ws.sock
        if sock is None:
            return False
        try:
            return bool(select.select([sock], [], [], 0)[0])
        except (OSError, ValueError):
            return False

    def send(self, channel: Channel, payload: bytes = b"") -> bool:
        """Send one frame; False when the stream is gone."""
        try:
            self._ws.send_bytes(bytes([channel]) + payload)
            return True
        except (OSError, websocket.WebSocketException):
            return False

    def send_json(self, channel: Channel, obj: dict) -> bool:
        return self.send(channel, json.dumps(obj).encode())

    def abort(self) -> None:
        """Wake a thread blocked in recv() (it gets StreamClosed); safe from any thread."""
        self._ws.abort()

    def close(self) -> None:
        self._ws.shutdown()

    def __enter__(self) -> "AttachStream":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _error_payload(e: websocket.WebSocketBadStatusException) -> dict:
    """The daemon's JSON error answer, if the refused handshake carried one."""
    body = getattr(e, "resp_body", None)
    try:
        payload = json.loads(body) if body else {}
    except ValueError:
        return {}
    return payload if isinstance(payload, dict) else {}
