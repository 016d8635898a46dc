"""Notebook kernels inside sandboxes: one ipykernel per sandbox, and sandboxd's relay to it.

Start (`Kernels.start`): the kernel is an exec'd process of the sandbox (`Engine.exec`, so
the spawner forks it into the sandbox's namespaces and cgroup, as its root, HOME=/root,
with a clean environment: no JPY_PARENT_PID, whose parent poller makes ipykernel exit
when its parent is PID 1, as it may be inside a pid namespace). A small bootstrap
(`BOOTSTRAP`, Debian's /usr/bin/python3 inside) reads the connection file from its stdin,
writes it inside at `INSIDE_FILE` (0600, the key never on a command line), points its
stdio at /dev/null (ipykernel echoes fd output there; a pipe nobody reads would block it)
and execs `/usr/bin/python3 /run/nslab-kernel/launch.py -f INSIDE_FILE` (ipykernel, its
pipe for forked processes' output moved from TCP to a Unix socket: `LAUNCH`): ipc transport, its
five sockets at `INSIDE_PREFIX-1..5`, in the sandbox's mount namespace. The start
answers once all five exist (or fails with `Reason.KERNEL_FAILED`).

Reach: the web app is not root and the sockets are in the sandbox's mount namespace. So
sandboxd listens on five host sockets, `HOST_PREFIX-1..5`, in a directory of its run dir
that is root:<socket group> 0750 (the sockets 0660): the users that may already use
sandboxd's own socket reach them; learners, inside sandboxes, never see the host's /run.
Per accepted connection the relay opens the inside socket afresh: resolved by the kernel
under the init's root with openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS |
RESOLVE_NO_SYMLINKS) as O_PATH | O_NOFOLLOW (the learner, root inside, may replace the
path with anything: a link is refused wherever it points, a fifo or a device is never
opened), then it must be a socket owned by an id of the sandbox on a data filesystem, and
is connected through /proc/self/fd/N (the inode resolved, no second walk). Bytes are
piped both ways untouched; the messages are signed with the kernel's key, which only the
kernel's file inside and the facts of `GET .../kernel` hold. Nothing listens on TCP.

Bounds: one kernel per sandbox; MAX_CONNECTIONS relayed connections per channel (more are
closed at once); READ_CHUNK read at a time and the writer drained before the next read,
so a connection holds at most a few chunks. Bytes relayed on shell, iopub, stdin and
control are activity (`last_activity`, for idle stop); the heartbeat's pings are not.

End: the kernel's exit (killed inside, shut down), `DELETE .../kernel`, or the sandbox
halting (`Engine.on_halt`: stop, destroy, its init's death) close the relay and remove
the host sockets. After a sandboxd restart no kernel is known: a start makes a new one,
and the bootstrap first ends the one its pid file names (if it is still that kernel).
"""

from __future__ import annotations

import asyncio
import errno
import grp
import json
import logging
import os
import re
import secrets
import shutil
import socket
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import files, libc, procfs
from .config import UID_BLOCK, HostConfig
from .engine import Engine
from .errors import Conflict, InvalidRequest, NotFound, SandboxError
from .payloads import ExecRequest, check_sandbox_id
from .protocol import Channel, KernelConnection, KernelFacts, Reason
from .sessions import ExecSession

log = logging.getLogger("nslab.kernels")

PYTHON = "/usr/bin/python3"  # Debian's, seen inside through the host's /usr
INSIDE_DIR = "/run/nslab-kernel"
INSIDE_FILE = f"{INSIDE_DIR}/kernel.json"
INSIDE_PREFIX = f"{INSIDE_DIR}/kernel"  # short: a unix socket path holds 107 bytes
# Jupyter's channel names, in the order of their ipc "ports" 1..5.
CHANNELS = ("shell", "iopub", "stdin", "control", "hb")
PORTS = {name: i + 1 for i, name in enumerate(CHANNELS)}
QUIET = {"hb"}  # not activity: a page's heartbeat pings every few seconds
START_TIMEOUT = 30.0  # ipykernel imports in 0.5-1 s; a sandbox with a small CPU quota is slower
STOP_TIMEOUT = 5.0
SOCKET_POLL = 0.02
MAX_CONNECTIONS = 8  # per channel: a few clients (the learner's page, a watcher, the CLI)
READ_CHUNK = 64 << 10
MAX_CONNECTION_FILE = 4096
KERNEL_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_RESOLVE = libc.RESOLVE_IN_ROOT | libc.RESOLVE_NO_MAGICLINKS | libc.RESOLVE_NO_SYMLINKS

# What the bootstrap writes beside the connection file and execs (`python3 launch.py -f
# FILE`, readable in `ps`): ipykernel, with the pipe that carries forked processes' output
# to IOPub moved from a TCP port on 127.0.0.1 (hard-wired in ipykernel 6's IOPubThread) to
# a Unix socket beside the others, so nothing of the kernel listens on TCP. An ipykernel
# without these methods (another major version) keeps its own pipe.
LAUNCH = r"""
import os, sys
import zmq
from ipykernel import iostream
pipe = "ipc://" + os.path.join(os.path.dirname(sys.argv[2]), "fork-pipe")  # beside -f FILE
T = iostream.IOPubThread
if hasattr(T, "_setup_pipe_in") and hasattr(T, "_setup_pipe_out"):
    def _setup_pipe_in(self):
        self._pipe_uuid = os.urandom(16)
        pipe_in = self.socket.context.socket(zmq.PULL)
        pipe_in.linger = 0
        pipe_in.bind(pipe)
        self._pipe_in = iostream.ZMQStream(pipe_in, self.io_loop)
        self._pipe_in.on_recv(self._handle_pipe_msg)
    def _setup_pipe_out(self):
        ctx = zmq.Context()  # a new one after fork
        pipe_out = ctx.socket(zmq.PUSH)
        pipe_out.linger = 3000
        pipe_out.connect(pipe)
        return ctx, pipe_out
    T._setup_pipe_in, T._setup_pipe_out = _setup_pipe_in, _setup_pipe_out
from ipykernel.kernelapp import launch_new_instance
launch_new_instance()
"""

# Run by Debian's python inside, as the sandbox's root, argv[1] the connection file. Ends
# a kernel a previous sandboxd left (its pid file names it, and it still runs that file),
# removes the sockets a dead kernel left (the daemon waits for the new ones), writes the
# file from stdin (no link followed: the learner may have left one there) and becomes
# ipykernel (the pid stays: it is the kernel's).
BOOTSTRAP = r"""
import os, sys, signal, importlib.util
path = sys.argv[1]
d = os.path.dirname(path)
data = sys.stdin.buffer.read(%(max)d)
os.makedirs(d, mode=0o700, exist_ok=True)
try:
    with open(d + "/kernel.pid") as f:
        old = int(f.read(32))
    with open("/proc/%%d/cmdline" %% old, "rb") as f:
        if path.encode() in f.read().split(b"\0") and old != os.getpid():
            os.kill(old, signal.SIGKILL)
except (OSError, ValueError):
    pass
for name in ["kernel-%%d" %% port for port in range(1, 6)] + ["fork-pipe"]:
    try:  # a dead kernel's sockets: the daemon waits for the new ones
        os.unlink(d + "/" + name)
    except FileNotFoundError:
        pass
for name, text in (("kernel.json", data), ("kernel.pid", str(os.getpid()).encode()),
                   ("launch.py", %(launch)r.encode())):
    tmp = "%%s/.%%s.%%d" %% (d, name, os.getpid())
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    os.write(fd, text)
    os.close(fd)
    os.replace(tmp, d + "/" + name)
if importlib.util.find_spec("ipykernel_launcher") is None:
    sys.exit("nslab: ipykernel is not installed here (Debian's python3-ipykernel)")
os.write(1, b"%(marker)s")
null = os.open("/dev/null", os.O_RDWR)
for i in (0, 1, 2):
    os.dup2(null, i)
os.execv(sys.executable, [sys.executable, d + "/launch.py", "-f", path])
""" % {"max": MAX_CONNECTION_FILE, "marker": "nslab-kernel: exec\\n", "launch": LAUNCH}
EXEC_MARKER = b"nslab-kernel: exec\n"  # the bootstrap's last words, before it becomes ipykernel


def connection_info(ip: str, key: str) -> KernelConnection:
    return {"transport": "ipc", "ip": ip, **{f"{name}_port": PORTS[name] for name in CHANNELS},
            "key": key, "signature_scheme": "hmac-sha256", "kernel_name": "python3"}


@dataclass
class Kernel:
    """One sandbox's running kernel, its relay listeners and their connections."""

    kernel_id: str
    sandbox_id: str
    key: str
    host_prefix: str
    uid_base: int
    session: ExecSession | None = None
    inside_pid: int | None = None
    started: float = field(default_factory=time.time)
    last_activity: float = field(default_factory=time.time)
    bytes_relayed: int = 0
    servers: list[asyncio.AbstractServer] = field(default_factory=list)
    connections: dict[str, set[asyncio.Task]] = field(
        default_factory=lambda: {name: set() for name in CHANNELS})
    output: bytearray = field(default_factory=bytearray)  # what the bootstrap said
    # Set when the bootstrap has removed a dead kernel's sockets and execs ipykernel: only
    # sockets found after this are the new kernel's.
    execing: asyncio.Event = field(default_factory=asyncio.Event)
    exit_code: int | None = None
    watcher: asyncio.Task | None = None
    ready: bool = False  # its sockets are open: until then a GET knows no kernel
    closed: bool = False

    @property
    def host_pid(self) -> int:
        return self.session.handle.pid

    def facts(self) -> KernelFacts:
        return {"kernel_id": self.kernel_id, "sandbox_id": self.sandbox_id,
                "pid": self.inside_pid, "host_pid": self.host_pid, "started": self.started,
                "last_activity": self.last_activity, "bytes_relayed": self.bytes_relayed,
                "connections": {name: len(c) for name, c in self.connections.items()},
                "connection": connection_info(self.host_prefix, self.key)}

    def host_paths(self) -> list[Path]:
        return [Path(f"{self.host_prefix}-{PORTS[name]}") for name in CHANNELS]


class Kernels:
    """The kernels of one daemon's sandboxes (at most one each) and their relays."""

    def __init__(self, engine: Engine, config: HostConfig):
        self.engine = engine
        self.config = config
        self.dir = config.run_dir / f"kernels-{config.name}"
        self.kernels: dict[str, Kernel] = {}
        # sandbox id -> (kernel id, key) of its last kernel: a restart that names the same
        # kernel id gets the same key and host sockets, so the clients it had (which
        # reconnect by themselves) reach the new kernel, as with Jupyter's own restart.
        self._last: dict[str, tuple[str, str]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._gid = 0  # the socket group's (`setup`)
        engine.on_halt.append(self.forget)

    def setup(self) -> None:
        """The host directory of the relay sockets, emptied (a previous daemon's relays
        died with it): root:<socket group> 0750, so the web app reaches the sockets."""
        if self.dir.is_symlink():
            self.dir.unlink()
        elif self.dir.exists():
            shutil.rmtree(self.dir)
        self.dir.mkdir(mode=0o750, parents=True)
        gid = 0
        if self.config.socket_group:
            try:
                gid = grp.getgrnam(self.config.socket_group).gr_gid
            except KeyError:
                raise InvalidRequest(f"no group {self.config.socket_group!r}",
                                     field="socket_group") from None
        os.chown(self.dir, 0, gid)
        os.chmod(self.dir, 0o750)
        self._gid = gid

    def teardown(self) -> None:
        """sandboxd stops: its relays go, so do the kernels (nobody could reach them)."""
        for sid, k in list(self.kernels.items()):
            if k.session is not None:
                k.session.signal("KILL")
            self.forget(sid)
        shutil.rmtree(self.dir, ignore_errors=True)

    # ------------------------------------------------------------ API

    def get(self, sid: str) -> Kernel:
        check_sandbox_id(sid)
        self.engine.get(sid)  # 404 for a sandbox that does not exist
        k = self.kernels.get(sid)
        if k is None or k.closed or not k.ready:
            raise NotFound(f"sandbox {sid} runs no kernel", reason=Reason.NO_SUCH_KERNEL)
        return k

    async def start(self, sid: str, kernel_id: str | None = None) -> tuple[Kernel, bool]:
        """The sandbox's kernel, started if none runs (`kernel_id` names a new one); True
        when it was started now."""
        check_sandbox_id(sid)
        if kernel_id is not None and (not isinstance(kernel_id, str)
                                      or not KERNEL_ID_RE.fullmatch(kernel_id)):
            raise InvalidRequest("kernel_id must be 1-64 characters of letters, digits, "
                                 "'.', '_' and '-'", field="kernel_id")
        async with self._locks.setdefault(sid, asyncio.Lock()):
            k = self.kernels.get(sid)
            if k is not None and not k.closed:
                return k, False
            rec = self.engine.get(sid)
            if rec.state != "running":
                raise Conflict(f"sandbox {sid} is {rec.state}; start it first",
                               reason=Reason.NOT_RUNNING)
            for gone in set(self._last) - set(self.engine.records):
                del self._last[gone]
            kernel_id = kernel_id or secrets.token_hex(16)
            last_id, key = self._last.get(sid, (None, None))
            if last_id != kernel_id:
                key = secrets.token_hex(32)
            self._last[sid] = (kernel_id, key)
            k = Kernel(kernel_id=kernel_id, sandbox_id=sid, key=key,
                       host_prefix=str(self.dir / sid), uid_base=rec.uid_base)
            self.kernels[sid] = k
            try:
                await self._launch(k)
            except BaseException:
                self.forget(sid, k)
                raise
            return k, True

    async def stop(self, sid: str) -> None:
        """End the sandbox's kernel (killed; its relay closed, its host sockets removed)."""
        k = self.get(sid)
        if k.session is not None:
            k.session.signal("KILL")
            try:
                await asyncio.wait_for(k.session.finished.wait(), STOP_TIMEOUT)
            except asyncio.TimeoutError:
                log.warning("kernel of %s did not end within %s s of SIGKILL", sid, STOP_TIMEOUT)
        self.forget(sid, k)

    def forget(self, sid: str, only: Kernel | None = None) -> None:
        """Close the kernel's relay and remove its host sockets (the sandbox halts, or the
        kernel ended). Its process is the sandbox's: killed by `stop` or the halt."""
        k = self.kernels.get(sid)
        if k is None or (only is not None and k is not only):
            return
        del self.kernels[sid]
        k.closed = True
        for server in k.servers:
            server.close()
        for tasks in k.connections.values():
            for task in tasks:
                task.cancel()
        if k.watcher is not None and k.watcher is not asyncio.current_task():
            k.watcher.cancel()
        for path in k.host_paths():
            try:
                path.unlink()
            except FileNotFoundError:
                pass

    # ------------------------------------------------------------ start

    async def _launch(self, k: Kernel) -> None:
        # The host sockets first: a client may connect as soon as it has the facts.
        for name in CHANNELS:
            await self._listen(k, name)
        req = ExecRequest(argv=[PYTHON, "-c", BOOTSTRAP, INSIDE_FILE])
        k.session = await self.engine.exec(k.sandbox_id, req)
        inside = connection_info(INSIDE_PREFIX, k.key)
        k.session.write(json.dumps(inside).encode())
        k.session.close_stdin()
        k.watcher = asyncio.create_task(self._watch(k))
        deadline = time.monotonic() + START_TIMEOUT
        while not (k.execing.is_set() and await asyncio.to_thread(self._sockets_ready, k)):
            if k.session.finished.is_set() or k.closed:
                await asyncio.sleep(0.05)  # the bootstrap's last words, if any
                said = k.output.decode(errors="replace").strip()
                raise Conflict(f"the kernel of sandbox {k.sandbox_id} exited as it started "
                               f"(exit code {k.session.exit_code})"
                               + (f": {said[-2000:]}" if said else ""),
                               reason=Reason.KERNEL_FAILED)
            if time.monotonic() > deadline:
                k.session.signal("KILL")
                raise Conflict(f"the kernel of sandbox {k.sandbox_id} did not open its sockets "
                               f"within {START_TIMEOUT:.0f} s", reason=Reason.KERNEL_FAILED)
            await asyncio.sleep(SOCKET_POLL)
        k.inside_pid = procfs.inside_pid(k.host_pid)
        k.started = k.last_activity = time.time()
        k.ready = True

    async def _watch(self, k: Kernel) -> None:
        """Keep what the bootstrap wrote (bounded) and end the kernel's relay when it exits."""
        att = k.session.attach(readonly=False, replay=False)
        try:
            while True:
                frames = await att.next()
                if not frames:
                    break
                for channel, data in frames:
                    if channel in (Channel.STDOUT, Channel.STDERR):
                        k.output += data[:max(0, 16384 - len(k.output))]
                        if EXEC_MARKER in k.output:
                            k.execing.set()
                    att.delivered(len(data))
                if k.session.finished.is_set():
                    break
            k.exit_code = k.session.exit_code
            if not k.closed:
                log.info("kernel %s of sandbox %s exited (%s)", k.kernel_id, k.sandbox_id,
                         k.exit_code)
        finally:
            att.close()
            self.forget(k.sandbox_id, k)

    def _sockets_ready(self, k: Kernel) -> bool:
        """Do all five inside sockets exist yet? (resolved as the relay resolves them)"""
        try:
            root = self.engine.root_fd(k.sandbox_id)
        except SandboxError:
            return False
        try:
            for name in CHANNELS:
                try:
                    os.close(self._resolve(root, k, name))
                except SandboxError:
                    return False
            return True
        finally:
            os.close(root)

    # ------------------------------------------------------------ relay

    async def _listen(self, k: Kernel, name: str) -> None:
        path = f"{k.host_prefix}-{PORTS[name]}"
        server = await asyncio.start_unix_server(
            lambda r, w: self._accept(k, name, r, w), path=path, limit=READ_CHUNK)
        k.servers.append(server)
        os.chown(path, 0, self._gid)
        os.chmod(path, 0o660)

    async def _accept(self, k: Kernel, name: str, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        conns = k.connections[name]
        if k.closed or len(conns) >= MAX_CONNECTIONS:
            writer.close()
            return
        task = asyncio.current_task()
        conns.add(task)
        inside_writer = None
        try:
            try:
                sock = await asyncio.to_thread(self._connect_inside, k, name)
            except SandboxError as e:
                # Missing or refusing: the kernel is (re)starting, clients reconnect by
                # themselves. Anything else is what a learner put there: worth a line.
                quiet = e.reason in (Reason.NO_SUCH_FILE, Reason.KERNEL_FAILED)
                log.log(logging.DEBUG if quiet else logging.WARNING,
                        "kernel of %s: %s channel not relayed: %s", k.sandbox_id, name,
                        e.message)
                return
            inside_reader, inside_writer = await asyncio.open_unix_connection(
                sock=sock, limit=READ_CHUNK)
            await asyncio.gather(self._pipe(k, name, reader, inside_writer),
                                 self._pipe(k, name, inside_reader, writer))
        except (ConnectionError, asyncio.CancelledError, OSError):
            pass
        finally:
            conns.discard(task)
            writer.close()
            if inside_writer is not None:
                inside_writer.close()

    @staticmethod
    async def _pipe(k: Kernel, name: str, reader: asyncio.StreamReader,
                    writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(READ_CHUNK):
                k.bytes_relayed += len(data)
                if name not in QUIET:
                    k.last_activity = time.time()
                writer.write(data)
                await writer.drain()  # at most one chunk beyond the socket's own buffer
        finally:
            # One side is done: ZeroMQ does not half-close, so end both.
            writer.close()

    def _connect_inside(self, k: Kernel, name: str) -> socket.socket:
        """A connected socket to the kernel's `name` socket inside (see the module's
        docstring for why each check); SandboxError when it is not the kernel's socket."""
        root = self.engine.root_fd(k.sandbox_id)
        try:
            pfd = self._resolve(root, k, name)
        finally:
            os.close(root)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            sock.setblocking(False)  # a full backlog is refused, never waited on
            sock.connect(f"/proc/self/fd/{pfd}")
        except OSError as e:
            sock.close()
            raise Conflict(f"the kernel's {name} socket does not accept: "
                           f"{os.strerror(e.errno or 0)}", reason=Reason.KERNEL_FAILED) from None
        finally:
            os.close(pfd)
        return sock

    def _resolve(self, root: int, k: Kernel, name: str) -> int:
        """An O_PATH fd on the kernel's `name` socket inside: no link anywhere on the way,
        a socket of the sandbox's own ids on a data filesystem; else SandboxError."""
        path = f"{INSIDE_PREFIX}-{PORTS[name]}"
        try:
            pfd = libc.openat2(root, path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, _RESOLVE)
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.ENOTDIR):
                raise NotFound(f"{path} does not exist", reason=Reason.NO_SUCH_FILE) from None
            if e.errno in (errno.ELOOP, errno.EXDEV, errno.EAGAIN):
                raise InvalidRequest(f"{path} leads through a symbolic link") from None
            raise SandboxError(f"{path} cannot be opened: {os.strerror(e.errno or 0)}") from None
        try:
            st = os.fstat(pfd)
            if not stat.S_ISSOCK(st.st_mode):
                raise InvalidRequest(f"{path} is not a socket",
                                     reason=Reason.NOT_REGULAR_FILE)
            if not k.uid_base <= st.st_uid < k.uid_base + UID_BLOCK:
                raise InvalidRequest(f"{path} is not the sandbox's")
            if libc.fstatfs_type(pfd) not in files.DATA_FILESYSTEMS:
                raise InvalidRequest(f"{path} is on a special filesystem",
                                     reason=Reason.SPECIAL_FILESYSTEM)
        except BaseException:
            os.close(pfd)
            raise
        return pfd


__all__ = ["Kernels", "Kernel", "connection_info", "INSIDE_FILE", "INSIDE_PREFIX", "CHANNELS"]
