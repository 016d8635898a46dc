"""How the CLI and the web app talk to sandboxd.

`Client` makes plain JSON calls with http.client (over the Unix socket, or TCP with a
bearer token) and raises the same `SandboxError` kinds the daemon reported. Streams
(exec) use `attach()`, an asyncio WebSocket over the same transport.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
from pathlib import Path
from urllib.parse import quote, urlencode

from .config import default_socket_path
from .errors import (CapacityExhausted, Conflict, HostUnsupported, InvalidRequest, NotFound,
                     SandboxError, TooLarge)

_ERRORS = {cls.code: cls for cls in (InvalidRequest, NotFound, Conflict, CapacityExhausted,
                                     HostUnsupported, TooLarge)}


class DaemonUnavailable(SandboxError):
    status = 503
    code = "daemon_unavailable"


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
        url = "/v1" + path + ("?" + urlencode(query) if query else "")
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
            payload = payload if isinstance(payload, dict) else {}
            cls = _ERRORS.get(payload.get("error"), SandboxError)
            err = cls(payload.get("message", f"HTTP {resp.status}"), field=payload.get("field"))
            err.status = resp.status
            raise err
        return payload

    # ---------------------------------------------------------- sandboxes

    def info(self) -> dict:
        return self.request("GET", "/info")

    def images(self) -> list[dict]:
        return self.request("GET", "/images")

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

    def exec(self, sid: str, argv: list[str], *, tty: bool = False, user=0, cwd=None, env=None,
             rows: int = 24, cols: int = 80) -> dict:
        body = {"argv": argv, "tty": tty, "user": user, "rows": rows, "cols": cols}
        if cwd:
            body["cwd"] = cwd
        if env:
            body["env"] = env
        return self.request("POST", f"/sandboxes/{quote(sid, safe='')}/exec", body)

    def run(self, sid: str, argv: list[str], *, stdin: str = "", timeout: float = 10.0,
            user=0, cwd=None, env=None) -> dict:
        """Run a command to completion; {"exit_code", "stdout", "stderr", "timed_out"}."""
        body = {"argv": argv, "stdin": stdin, "timeout": timeout, "user": user}
        if cwd:
            body["cwd"] = cwd
        if env:
            body["env"] = env
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

    def exec_info(self, eid: str) -> dict:
        return self.request("GET", f"/exec/{quote(eid, safe='')}")

    def resize(self, eid: str, rows: int, cols: int) -> dict:
        return self.request("POST", f"/exec/{quote(eid, safe='')}/resize", {"rows": rows, "cols": cols})

    def signal(self, eid: str, name: str) -> dict:
        return self.request("POST", f"/exec/{quote(eid, safe='')}/signal", {"signal": name})

    # ---------------------------------------------------------- streams

    def attach_url(self, eid: str, *, readonly: bool = False, replay: bool = True) -> str:
        q = urlencode({"readonly": int(readonly), "replay": int(replay)})
        base = self.url.rstrip("/") if self.url else "http://localhost"
        return f"{base}/v1/exec/{quote(eid, safe='')}/attach?{q}"

    def session(self):
        """An aiohttp ClientSession bound to the daemon's transport (for attach)."""
        import aiohttp

        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        if self.url:
            return aiohttp.ClientSession(headers=headers)
        return aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(self.socket_path)),
                                     headers=headers)
