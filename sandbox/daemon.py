"""sandboxd: the engine behind a narrow HTTP + JSON and WebSocket API.

Listens on a Unix socket (mode 0660, group configurable) and, for remote sandbox hosts,
optionally on TCP where every request must carry `Authorization: Bearer <token>`.
Every payload is parsed strictly (sandbox/payloads.py) before anything changes; every
error is JSON `{"error", "reason", "message", "field"?}` with a 4xx/5xx status, `reason`
a `protocol.Reason`.

Exec streams use WebSocket binary frames whose first byte is the channel
(`protocol.Channel`); bytes are passed through untouched. The daemon uses only the
engine's public methods.

Each sandbox may run one notebook kernel (`/v1/sandboxes/ID/kernel`): sandbox/kernels.py
starts it inside and relays its ipc sockets to host sockets the web app reaches.

Beside the engine it runs the host services its sandboxes may reach (sandbox/services.py:
the read-only image registry and the package proxy), started once the engine has set up
the bridge and stopped before the engine shuts down; `--teardown` ends any left running.
"""

from __future__ import annotations

import asyncio
import base64
import fcntl
import grp
import hmac
import json
import logging
import os
import signal
import time
from pathlib import Path

from aiohttp import WSMsgType, web

from . import files, sessions
from .config import HostConfig
from .engine import Engine
from .errors import InvalidRequest, SandboxError
from .kernels import Kernels
from .payloads import (CreateRequest, ExecRequest, FileQuery, check_sandbox_id,
                       parse_resize_frame, parse_signal_frame, parse_trace)
from .protocol import API_PREFIX, Channel, CloseCode, Reason, RunFacts
from .services import Services
from .spawner.client import SpawnerClient

log = logging.getLogger("nslab.sandboxd")
API = API_PREFIX
MAX_BODY = 1 << 20
# Output channels, whose runs are coalesced into one frame (a tuple: looked up per frame).
_OUTPUT = (Channel.STDOUT, Channel.STDERR)


def _json(data, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda d: json.dumps(d))


async def _body(request: web.Request) -> dict:
    if not request.body_exists:
        return {}
    try:
        raw = await request.read()
        data = json.loads(raw or b"{}")
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise InvalidRequest("the request body must be JSON") from None
    if not isinstance(data, dict):
        raise InvalidRequest("the request body must be a JSON object")
    return data


@web.middleware
async def errors_middleware(request: web.Request, handler):
    try:
        return await handler(request)
    except SandboxError as e:
        if e.status >= 500:
            log.error("%s %s: %s", request.method, request.path, e.message)
        return _json(e.to_json(), status=e.status)
    except web.HTTPException as e:
        if e.status >= 400 and not isinstance(e, web.HTTPRequestEntityTooLarge):
            return _json({"error": "http", "reason": _http_reason(e.status), "message": e.reason},
                         status=e.status)
        if isinstance(e, web.HTTPRequestEntityTooLarge):
            return _json({"error": "invalid_request", "reason": Reason.TOO_LARGE.value,
                          "message": "request body too large"}, status=413)
        raise


def _http_reason(status: int) -> str:
    """The reason of an error aiohttp raised itself (no such route, wrong method, ...)."""
    if status == 404:
        return Reason.NOT_FOUND.value
    return (Reason.INVALID if status < 500 else Reason.INTERNAL).value


def _token_middleware(token: str | None):
    @web.middleware
    async def check(request: web.Request, handler):
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        if isinstance(sockname, tuple):  # TCP: bearer token required
            got = request.headers.get("Authorization", "")
            if not token or not hmac.compare_digest(got.encode(), f"Bearer {token}".encode()):
                return _json({"error": "unauthorized", "reason": Reason.UNAUTHORIZED.value,
                              "message": "a valid bearer token is required on the TCP listener"},
                             status=401)
        return await handler(request)
    return check


class Daemon:
    def __init__(self, engine: Engine, kernels: Kernels, services: Services | None = None):
        self.engine = engine
        self.services = services
        self.kernels = kernels
        self.started = time.time()
        self.streams: set[web.WebSocketResponse] = set()

    async def close_streams(self) -> None:
        """On shutdown: clients reattach to the next daemon; don't wait for them to leave."""
        for ws in list(self.streams):
            await ws.close(code=1001, message=b"sandboxd is shutting down")

    def app(self, token: str | None = None) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY,
                              middlewares=[_token_middleware(token), errors_middleware])
        r = app.router
        r.add_get(f"{API}/info", self.info)
        r.add_get(f"{API}/images", self.images)
        r.add_get(f"{API}/registry", self.registry)
        r.add_get(f"{API}/sandboxes", self.list)
        r.add_post(f"{API}/sandboxes", self.create)
        r.add_get(f"{API}/sandboxes/{{sid}}", self.get)
        r.add_delete(f"{API}/sandboxes/{{sid}}", self.destroy)
        r.add_post(f"{API}/sandboxes/{{sid}}/stop", self.stop)
        r.add_post(f"{API}/sandboxes/{{sid}}/start", self.start)
        r.add_get(f"{API}/sandboxes/{{sid}}/inspect", self.inspect)
        r.add_get(f"{API}/sandboxes/{{sid}}/stats", self.stats)
        r.add_post(f"{API}/sandboxes/{{sid}}/exec", self.exec)
        r.add_post(f"{API}/sandboxes/{{sid}}/run", self.run)
        r.add_get(f"{API}/sandboxes/{{sid}}/ports/{{port}}", self.port)
        r.add_get(f"{API}/sandboxes/{{sid}}/ports/{{port}}/http", self.http_get)
        r.add_get(f"{API}/sandboxes/{{sid}}/files", self.read_file)
        r.add_get(f"{API}/sandboxes/{{sid}}/dir", self.list_dir)
        r.add_post(f"{API}/sandboxes/{{sid}}/kernel", self.start_kernel)
        r.add_get(f"{API}/sandboxes/{{sid}}/kernel", self.kernel)
        r.add_delete(f"{API}/sandboxes/{{sid}}/kernel", self.stop_kernel)
        r.add_get(f"{API}/exec/{{eid}}", self.exec_info)
        r.add_delete(f"{API}/exec/{{eid}}", self.exec_forget)
        r.add_get(f"{API}/exec/{{eid}}/attach", self.attach)
        r.add_post(f"{API}/exec/{{eid}}/resize", self.resize)
        r.add_post(f"{API}/exec/{{eid}}/signal", self.signal)
        return app

    # -------------------------------------------------------------- sandboxes

    async def info(self, request):
        return _json({**self.engine.info(), "uptime": time.time() - self.started,
                      "pid": os.getpid()})

    async def images(self, request):
        return _json(self.engine.list_images())

    async def registry(self, request):
        """The tags the daemon's registry serves, each with its manifest digest, read from
        its storage on the host: what a check compares a learner's pulled image with."""
        if self.services is None:
            return _json([])
        return _json(await asyncio.to_thread(self.services.registry_images))

    async def list(self, request):
        return _json([r.summary() for r in self.engine.list()])

    async def create(self, request):
        req = CreateRequest.from_json(await _body(request), max_cpus=self.engine.max_cpus)
        rec = await self.engine.create(req)
        return _json(rec.summary(), status=201)

    async def get(self, request):
        return _json(self.engine.get(request.match_info["sid"]).summary())

    async def destroy(self, request):
        purge = request.query.get("purge", "false").lower()
        if purge not in ("true", "false", "1", "0"):
            raise InvalidRequest("purge must be true or false", field="purge")
        await self.engine.destroy(request.match_info["sid"], purge=purge in ("true", "1"))
        return web.Response(status=204)

    async def stop(self, request):
        rec = await self.engine.stop(request.match_info["sid"])
        return _json(rec.summary())

    async def start(self, request):
        rec = await self.engine.start_sandbox(request.match_info["sid"])
        return _json(rec.summary())

    async def inspect(self, request):
        return _json(await self.engine.inspect(request.match_info["sid"]))

    async def stats(self, request):
        return _json(self.engine.stats(request.match_info["sid"]))

    async def port(self, request):
        try:
            port = int(request.match_info["port"])
        except ValueError:
            port = 0  # refused by the engine, after it has checked the sandbox
        return _json(self.engine.port(request.match_info["sid"], port))

    async def http_get(self, request):
        q = request.query
        unknown = sorted(set(q) - {"path", "timeout", "limit"})
        if unknown:
            raise InvalidRequest(f"unknown query parameter {unknown[0]!r}", field=unknown[0])
        values = {}
        for name, text, kind in (("port", request.match_info["port"], int),
                                 ("timeout", q.get("timeout", "3"), float),
                                 ("limit", q.get("limit", str(1 << 20)), int)):
            try:
                values[name] = kind(text)
            except ValueError:
                raise InvalidRequest(f"{name} must be a number, not {text[:40]!r}",
                                     field=name) from None
        port, timeout, limit = values["port"], values["timeout"], values["limit"]
        return _json(await self.engine.http_get(request.match_info["sid"], port,
                                                q.get("path", "/"), timeout=timeout,
                                                limit=limit))

    # -------------------------------------------------------------- files

    async def read_file(self, request):
        sid = check_sandbox_id(request.match_info["sid"])
        q = FileQuery.from_query(request.query, allowed=frozenset({"path", "pid", "limit"}),
                                 default_limit=files.DEFAULT_LIMIT, max_limit=files.MAX_LIMIT)
        data = await self.engine.read_file(sid, q)
        return web.Response(body=data, content_type="application/octet-stream")

    async def list_dir(self, request):
        sid = check_sandbox_id(request.match_info["sid"])
        q = FileQuery.from_query(request.query, allowed=frozenset({"path", "pid"}))
        return _json(await self.engine.list_dir(sid, q))

    # -------------------------------------------------------------- kernels (kernels.py)

    async def start_kernel(self, request):
        """The sandbox's kernel, started if none runs: 201 when started now, else 200."""
        body = await _body(request)
        unknown = sorted(set(body) - {"kernel_id"})
        if unknown:
            raise InvalidRequest(f"unknown field {unknown[0]!r}", field=unknown[0])
        kernel, started = await self.kernels.start(request.match_info["sid"],
                                                   body.get("kernel_id"))
        return _json(kernel.facts(), status=201 if started else 200)

    async def kernel(self, request):
        return _json(self.kernels.get(request.match_info["sid"]).facts())

    async def stop_kernel(self, request):
        await self.kernels.stop(request.match_info["sid"])
        return web.Response(status=204)

    # -------------------------------------------------------------- exec

    async def exec(self, request):
        req = ExecRequest.from_json(await _body(request))
        session = await self.engine.exec(request.match_info["sid"], req)
        return _json(session.info(), status=201)

    async def run(self, request):
        body = await _body(request)
        extra = {k: body.pop(k) for k in ("stdin", "timeout", "limit", "trace") if k in body}
        req = ExecRequest.from_json(body)
        if req.tty:
            raise InvalidRequest("run captures output; use exec for a terminal", field="tty")
        stdin = extra.get("stdin", "")
        if not isinstance(stdin, str) or len(stdin) > MAX_BODY:
            raise InvalidRequest("stdin must be a string", field="stdin")
        timeout = extra.get("timeout", 10)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= 600:
            raise InvalidRequest("timeout must be between 0 and 600 seconds", field="timeout")
        limit = extra.get("limit", 1 << 20)
        if isinstance(limit, bool) or not isinstance(limit, int) or not 0 < limit <= 16 << 20:
            raise InvalidRequest("limit must be between 1 byte and 16 MiB", field="limit")
        trace = parse_trace(extra.get("trace"))
        result = await self.engine.run(request.match_info["sid"], req, stdin=stdin.encode(),
                                       timeout=float(timeout), limit=limit, trace=trace)
        answer: RunFacts = {
            "exit_code": result["exit_code"], "timed_out": result["timed_out"],
            "truncated": result["truncated"],
            "stdout": result["stdout"].decode(errors="replace"),
            "stderr": result["stderr"].decode(errors="replace"),
            "stdout_b64": base64.b64encode(result["stdout"]).decode(),
            "stderr_b64": base64.b64encode(result["stderr"]).decode(),
            "syscalls": result.get("syscalls"),
            "trace_truncated": result.get("trace_truncated", False),
        }
        return _json(answer)

    async def exec_info(self, request):
        return _json(self.engine.session(request.match_info["eid"]).info())

    async def exec_forget(self, request):
        session = self.engine.session(request.match_info["eid"])
        session.signal("KILL")
        self.engine.forget_session(session.id)
        return web.Response(status=204)

    async def resize(self, request):
        body = await _body(request)
        session = self.engine.session(request.match_info["eid"])
        rows, cols = body.get("rows"), body.get("cols")
        if not isinstance(rows, int) or not isinstance(cols, int) or isinstance(rows, bool):
            raise InvalidRequest("rows and cols must be integers", field="rows")
        session.resize(rows, cols)
        return _json(session.info())

    async def signal(self, request):
        body = await _body(request)
        session = self.engine.session(request.match_info["eid"])
        session.signal(body.get("signal", ""))
        return _json(session.info())

    async def attach(self, request):
        session = self.engine.session(request.match_info["eid"])
        readonly = request.query.get("readonly", "0") in ("1", "true")
        replay = request.query.get("replay", "1") in ("1", "true")
        ws = web.WebSocketResponse(max_msg_size=MAX_BODY, heartbeat=30, compress=False)
        await ws.prepare(request)
        self.streams.add(ws)
        att = session.attach(readonly=readonly, replay=replay)
        writer = asyncio.create_task(self._pump(ws, att))
        try:
            async for msg in ws:
                if msg.type != WSMsgType.BINARY or not msg.data:
                    continue
                channel, payload = msg.data[0], msg.data[1:]
                try:
                    self._on_client_frame(session, readonly, channel, payload)
                except SandboxError as e:
                    await ws.send_bytes(bytes([Channel.STDERR])
                                        + f"nslab: {e.message}\n".encode())
                if channel == Channel.STDIN and not readonly:
                    # Backpressure: the next frame is read once the process has taken
                    # this input, so a writer faster than the process waits on the socket.
                    await session.stdin_room()
        finally:
            writer.cancel()
            att.close()
            self.streams.discard(ws)
        return ws

    @staticmethod
    def _on_client_frame(session, readonly: bool, channel: int, payload: bytes) -> None:
        if readonly:
            return  # a shadowing viewer never types
        if channel == Channel.STDIN:
            session.write(payload)
        elif channel == Channel.RESIZE:
            # A malformed frame is refused (InvalidRequest, told to this viewer on stderr);
            # the stream and the session go on.
            session.resize(*parse_resize_frame(payload))
        elif channel == Channel.CLOSE_STDIN:
            session.close_stdin()
        elif channel == Channel.SIGNAL:
            session.signal(parse_signal_frame(payload))

    @staticmethod
    async def _pump(ws: web.WebSocketResponse, att: sessions.Attachment) -> None:
        try:
            while True:
                frames = await att.next()
                if not frames:
                    break
                # Coalesce runs of one channel into one message: fewer, larger frames.
                merged: list[tuple[int, bytearray]] = []
                for channel, data in frames:
                    if merged and merged[-1][0] == channel and channel in _OUTPUT:
                        merged[-1][1].extend(data)
                    else:
                        merged.append((channel, bytearray(data)))
                for channel, data in merged:
                    await ws.send_bytes(bytes([channel]) + bytes(data))
                    att.delivered(len(data))
                    if channel == Channel.EXIT:
                        await ws.close()
                        return
            if att.dropped:
                await ws.close(code=CloseCode.VIEWER_BEHIND,
                               message=b"viewer fell behind; reattach")
            else:  # the session was closed under it: its sandbox stopped or went away
                await ws.close(code=CloseCode.SESSION_GONE, message=b"the session is gone")
        except (ConnectionResetError, asyncio.CancelledError):
            pass

    async def housekeeping(self) -> None:
        """Every 10 s: forget finished sessions nobody watches, and drop the btrfs qgroups
        of deleted volumes once the kernel's cleaner is done with them (it refuses before)."""
        while True:
            await asyncio.sleep(10)
            self.engine.forget_idle_sessions()
            try:
                await asyncio.to_thread(self.engine.reap_storage)
            except SandboxError as e:
                log.warning("could not drop the qgroups of deleted volumes: %s", e.message)


def _lock_state_dir(config: HostConfig) -> int:
    config.ensure_dirs()
    fd = os.open(config.state_dir / "sandboxd.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise SandboxError(f"another sandboxd already uses {config.state_dir}") from None
    return fd


async def serve(config: HostConfig, spawner: SpawnerClient, socket_path: Path,
                listen: str | None = None, token: str | None = None,
                ready=None) -> None:
    loop = asyncio.get_running_loop()
    spawner.attach_loop(loop)
    engine = Engine(config, spawner)
    await engine.start()
    # The registry and the package proxy listen on the bridge's gateway address, so they
    # start once the engine has set the bridge up, and stop before it is gone.
    services = Services(config)
    try:
        await services.start()
    except BaseException:
        services.stop()
        raise
    kernels = Kernels(engine, config)
    kernels.setup()
    daemon = Daemon(engine, kernels, services)
    runner = web.AppRunner(daemon.app(token), access_log=None, handle_signals=False,
                           shutdown_timeout=2.0)
    await runner.setup()
    socket_path.parent.mkdir(parents=True, exist_ok=True)
    if socket_path.exists() or socket_path.is_symlink():
        socket_path.unlink()
    # Bound under a private name, given its mode and group, then renamed into place:
    # nobody ever sees the socket at its path with the wrong permissions.
    staging = socket_path.with_name(f".{socket_path.name}.{os.getpid()}")
    await web.UnixSite(runner, str(staging)).start()
    os.chmod(staging, 0o660)
    if config.socket_group:
        try:
            os.chown(staging, 0, grp.getgrnam(config.socket_group).gr_gid)
        except KeyError:
            staging.unlink()
            raise InvalidRequest(f"no group {config.socket_group!r}", field="socket_group") from None
    os.replace(staging, socket_path)
    if listen:
        host, _, port = listen.rpartition(":")
        await web.TCPSite(runner, host or "127.0.0.1", int(port)).start()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    reaper = asyncio.create_task(daemon.housekeeping())
    log.info("sandboxd %s listening on %s (cgroup v%d)", config.name, socket_path,
             engine.cgroup_version)
    if ready:
        ready()
    try:
        await stop.wait()
    finally:
        reaper.cancel()
        await daemon.close_streams()
        kernels.teardown()
        services.stop()
        await engine.shutdown()
        await runner.cleanup()
        try:
            socket_path.unlink()
        except FileNotFoundError:
            pass
        spawner.close()


async def _teardown(config: HostConfig, spawner: SpawnerClient) -> None:
    spawner.attach_loop(asyncio.get_running_loop())
    engine = Engine(config, spawner)
    try:
        Services(config).stop_leftovers()
        await engine.teardown_host()
    finally:
        await engine.shutdown()
        spawner.close()


def run(config: HostConfig, socket_path: Path, listen: str | None = None,
        token_file: Path | None = None, teardown: bool = False,
        spawner: SpawnerClient | None = None) -> int:
    """Entry point of `nslab sandboxd`: fork the spawner first (or take the one the
    caller forked before importing much), then serve."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s sandboxd %(levelname)s %(message)s")
    try:
        lock_fd = _lock_state_dir(config)
    except SandboxError:
        if spawner is not None:
            spawner.close()
        raise
    token = None
    if listen:
        if not token_file:
            raise InvalidRequest("--listen needs --token-file", field="token_file")
        token = Path(token_file).read_text().strip()
        if len(token) < 16:
            raise InvalidRequest("the token must be at least 16 characters", field="token_file")
    if spawner is None:
        spawner = SpawnerClient.fork()  # while this process still has one thread
    try:
        if teardown:
            asyncio.run(_teardown(config, spawner))
            return 0
        asyncio.run(serve(config, spawner, socket_path, listen, token))
    finally:
        os.close(lock_fd)
    return 0


__all__ = ["run", "serve", "Daemon"]
