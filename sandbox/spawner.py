"""The fork server that builds sandboxes and starts processes inside them.

`sandboxd` is an asyncio program with threads, and fork() from a threaded process can
deadlock in the child (benchexec #435). So the daemon forks this spawner once, first
thing, while it is still single-threaded; the spawner stays single-threaded and does
every later fork. It talks to the daemon over a SOCK_SEQPACKET socket: one JSON message
per request, file descriptors (pidfds, PTY masters, pipes) passed with SCM_RIGHTS.

The spawner is a child subreaper: sandbox inits and exec'd processes are reparented
to it when their short-lived setup parents exit, so it learns every exit status and
reports it to the daemon as an event.

Building a sandbox (`_build_sandbox`, in a fresh child C of the spawner, still host root):
  1. C joins the sandbox cgroup and makes the sandbox's user namespace (a helper child
     unshares it, C writes the uid/gid maps and keeps an fd to it).
  2. In a private staging mount namespace C mounts the root filesystem: each image
     layer is an id-shifted (idmapped) read-only bind under an overlay whose upper dir
     is in the sandbox's storage volume; the home volume is bound id-shifted at /root.
     These mounts were made by host root, so inside the sandbox they are locked.
  3. C enters the user namespace and unshares mnt, uts, ipc, net, cgroup and pid
     namespaces, so that they are owned by the sandbox's root; then it forks G.
  4. G is PID 1: it mounts /proc, /sys (read-only), /dev, devpts, cgroupfs, masks
     Docker's masked paths, pivot_root()s and execs catatonit from an fd it opened on
     the host, so no path inside the sandbox decides what runs as PID 1.

Exec (`_exec_child`, in a fresh child E): E joins the cgroup as host root, opens the
init's namespace files, enters them (user first), opens a PTY inside the sandbox's own
devpts if asked, forks F into the sandbox's pid namespace, sends F's pid and the PTY
master back and exits. F starts a new session, becomes the chosen user, sets
no_new_privs and execs the command with a clean environment and no inherited fds.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import gc
import json
import os
import select
import signal
import socket
import struct
import termios
import time
from dataclasses import dataclass, field

from . import libc
from .errors import SandboxError, explain_oserror

MAX_MSG = 1 << 20
MAX_FDS = 8

# Docker's defaults (moby oci/defaults.go): hidden, and read-only, paths.
MASKED_PATHS = (
    "proc/asound", "proc/acpi", "proc/kcore", "proc/keys", "proc/latency_stats",
    "proc/timer_list", "proc/timer_stats", "proc/sched_debug", "proc/scsi",
    "sys/firmware", "sys/devices/virtual/powercap",
)
READONLY_PATHS = ("proc/bus", "proc/fs", "proc/irq", "proc/sys", "proc/sysrq-trigger")
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
DEV_LINKS = (("ptmx", "pts/ptmx"), ("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
             ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2"))
NAMESPACES_JOIN_ORDER = ("user", "ipc", "uts", "net", "cgroup", "pid", "mnt")
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PROC_FLAGS = libc.MS_NOSUID | libc.MS_NODEV | libc.MS_NOEXEC


# ---------------------------------------------------------------------------
# wire helpers (both sides)

def _send(sock: socket.socket, msg: dict, fds: list[int] = ()) -> None:
    data = json.dumps(msg).encode()
    if fds:
        socket.send_fds(sock, [data], list(fds))
    else:
        sock.send(data)


def _recv(sock: socket.socket) -> tuple[dict | None, list[int]]:
    data, fds, _flags, _addr = socket.recv_fds(sock, MAX_MSG, MAX_FDS)
    if not data:
        for fd in fds:
            os.close(fd)
        return None, []
    return json.loads(data), fds


def _read_all(fd: int) -> bytes:
    chunks = []
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _write_file(path: str, data: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, data.encode())
    finally:
        os.close(fd)


def _close_fds_except(keep: set[int]) -> None:
    lo = 3
    for fd in sorted(k for k in keep if k >= 3):
        os.closerange(lo, fd)
        lo = fd + 1
    os.closerange(lo, 65536)


def _child_report_error(w: int, step: str, exc: BaseException) -> None:
    err = getattr(exc, "errno", None)
    msg = {"error": f"{step}: {exc}", "errno": err, "step": step}
    try:
        os.write(w, (json.dumps(msg) + "\n").encode())
    except OSError:
        pass


def start_time(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat: with the pid it names one process for all time."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name may contain spaces and parentheses; fields follow the last ')'.
    rest = stat[stat.rindex(b")") + 2:].split()
    return int(rest[19])


# ---------------------------------------------------------------------------
# the spawner process

def serve(sock: socket.socket) -> None:
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
    if os.getppid() == 1:  # the daemon died before PDEATHSIG was armed
        os._exit(0)
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.set_wakeup_fd(wake_w)
    while True:
        try:
            ready, _, _ = select.select([sock, wake_r, *_parking], [], [])
        except InterruptedError:
            continue
        for fd in [fd for fd in ready if fd in _parking]:
            _on_parked(sock, fd)
        if wake_r in ready:
            try:
                while os.read(wake_r, 4096):
                    pass
            except BlockingIOError:
                pass
        _reap(sock)
        if sock in ready:
            msg, fds = _recv(sock)
            if msg is None:
                os._exit(0)
            try:
                reply, out_fds = _handle(msg, fds)
            except SandboxError as e:
                reply, out_fds = {"error": e.message}, []
            except OSError as e:
                reply, out_fds = {"error": str(e), "errno": e.errno}, []
            finally:
                for fd in fds:
                    os.close(fd)
            reply["req"] = msg.get("req")
            _send(sock, reply, out_fds)
            for fd in out_fds:
                os.close(fd)
            _reap(sock)


def _reap(sock: socket.socket) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        _send(sock, {"event": "exit", "pid": pid, "code": os.waitstatus_to_exitcode(status)})


def _handle(msg: dict, fds: list[int]) -> tuple[dict, list[int]]:
    op = msg.get("op")
    if op == "spawn":
        if msg.get("slot"):
            return _spawn_parked(msg), []
        return _spawn(msg), []
    if op == "park":
        return _park(msg), []
    if op == "unpark":
        return _unpark(msg["slot"]), []
    if op == "exec":
        return _exec(msg, fds)
    if op == "ping":
        return {"ok": True}, []
    return {"error": f"unknown op {op!r}"}, []


def _fork(w: int, step: str, target, *args, close: tuple = (), reset: bool = True) -> int:
    """Fork a child that runs target(*args) and exits; its failure is reported on w."""
    pid = os.fork()
    if pid != 0:
        return pid
    code = 0
    try:
        for fd in close:
            os.close(fd)
        if reset:
            _reset_signals()
        target(*args)
    except BaseException as e:  # noqa: BLE001 - a forked child must never unwind into the loop
        _child_report_error(w, getattr(e, "step", step), e)
        code = 1
    os._exit(code)


def _run_child(target, *args) -> tuple[int, list[dict]]:
    """Fork a child that runs target(w, *args); collect its JSON lines until EOF."""
    r, w = os.pipe2(os.O_CLOEXEC)
    pid = _fork(w, target.__name__, target, w, *args, close=(r,))
    os.close(w)
    return pid, _collect(r, pid)


def _collect(r: int, pid: int) -> list[dict]:
    """A child's JSON report lines, read until EOF (its exit or exec); then reap it."""
    try:
        data = _read_all(r)
    finally:
        os.close(r)
    os.waitpid(pid, 0)
    return [json.loads(line) for line in data.splitlines() if line.strip()]


def _reset_signals() -> None:
    """A forked child must not write the spawner's wakeup fd, nor ignore what it ignores."""
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGCHLD, signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)


def _first_error(lines: list[dict]) -> dict | None:
    for line in lines:
        if "error" in line:
            return line
    return None


# Warm slots: children that have already joined their sandbox's cgroup and made its
# user namespace (the slow part on cgroup v1, where every cgroup migration waits for an
# RCU grace period), parked until a create request hands them the rest of the spec.
_parked: dict[str, tuple[int, int, int]] = {}  # slot -> (pid, control fd, report fd)
_parking: dict[int, str] = {}  # report fd -> slot, until the child says it is parked


def _park(req: dict) -> dict:
    slot = req["slot"]
    if slot in _parked:
        return {"error": f"slot {slot} is already parked"}
    r, w = os.pipe2(os.O_CLOEXEC)
    cr, cw = os.pipe2(os.O_CLOEXEC)
    pid = _fork(w, "parking", _parked_child, w, cr, req, close=(r, cw))
    os.close(w)
    os.close(cr)
    _parked[slot] = (pid, cw, r)
    _parking[r] = slot
    return {"ok": True}


def _on_parked(sock: socket.socket, fd: int) -> None:
    slot = _parking.pop(fd)
    line = os.read(fd, 65536).split(b"\n")[0]
    msg = json.loads(line) if line.strip() else {"error": "the parked child exited"}
    if "error" in msg:
        _unpark(slot)
    _send(sock, {"event": "parked", "slot": slot, "error": msg.get("error")})


def _unpark(slot: str) -> dict:
    entry = _parked.pop(slot, None)
    if entry is None:
        return {"ok": False}
    pid, cw, r = entry
    _parking.pop(r, None)
    os.close(cw)  # EOF: the parked child exits
    os.close(r)
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass
    return {"ok": True}


def _parked_child(w: int, control: int, req: dict) -> None:
    _close_fds_except({w, control})
    libc.prctl(libc.PR_SET_DUMPABLE, 0)
    userns = _join_and_make_userns(req)
    os.write(w, (json.dumps({"parked": True}) + "\n").encode())
    data = _read_all(control)
    if not data:
        return  # unparked
    spec = json.loads(data)
    _build_rest(w, spec, userns)


def _spawn_parked(req: dict) -> dict:
    entry = _parked.pop(req["slot"], None)
    if entry is None:
        return {"error": f"no parked slot {req['slot']}"}
    pid, cw, r = entry
    _parking.pop(r, None)
    try:
        os.write(cw, json.dumps(req).encode())  # specs are far below the pipe's 64 KiB
    finally:
        os.close(cw)
    return _spawn_result(_collect(r, pid))


def _spawn(req: dict) -> dict:
    _pid, lines = _run_child(_build_sandbox, req)
    return _spawn_result(lines)


def _spawn_result(lines: list[dict]) -> dict:
    err = _first_error(lines)
    pids = [line["pid"] for line in lines if "pid" in line]
    if err:
        return {"error": err["error"], "errno": err.get("errno"), "pid": pids[0] if pids else None}
    if not pids:
        return {"error": "sandbox setup ended without reporting its init"}
    trace = {}
    for line in lines:
        trace.update(line.get("trace") or {})
        trace.update({f"init: {k}": v for k, v in (line.get("trace_init") or {}).items()})
    return {"pid": pids[0], "trace": trace}


def _exec(req: dict, fds: list[int]) -> tuple[dict, list[int]]:
    report_parent, report_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    stdio_child: list[int] = []
    stdio_parent: list[int] = []
    if not req.get("tty"):
        # stdin: the child reads, we write; stdout and stderr: the other way round
        for child_reads in (True, False, False):
            r, w = os.pipe2(os.O_CLOEXEC)
            stdio_child.append(r if child_reads else w)
            stdio_parent.append(w if child_reads else r)
    try:
        _pid, lines = _run_child(_exec_child, req, report_child.fileno(), stdio_child)
    finally:
        report_child.close()
        for fd in stdio_child:
            os.close(fd)
    err = _first_error(lines)
    if err and not any("pid" in line for line in lines):
        report_parent.close()
        for fd in stdio_parent:
            os.close(fd)
        return {"error": err["error"], "errno": err.get("errno")}, []
    report_parent.setblocking(False)
    try:
        report, master_fds = _recv(report_parent)
    except BlockingIOError:
        report, master_fds = None, []
    report_parent.close()
    if not report:
        for fd in stdio_parent:
            os.close(fd)
        return {"error": "exec setup ended without reporting its process"}, []
    pid = report["pid"]
    try:
        pidfd = libc.pidfd_open(pid)
    except OSError:
        pidfd = None  # it already exited and was reaped; the exit event follows
    out = ([pidfd] if pidfd is not None else []) + master_fds + stdio_parent
    return {"pid": pid, "exec_error": report.get("exec_error"), "pidfd": pidfd is not None}, out


# ---------------------------------------------------------------------------
# children (run after fork, in the spawner's single thread; never return normally)

_TRACE: dict[str, float] = {}  # step -> ms, in a child; sent with its report


class _Step:
    """Names the setup step in any error, so a failure says what it was doing; timed."""

    def __init__(self, name: str):
        self.name = name

    def __enter__(self):
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, typ, exc, tb):
        _TRACE[self.name] = round((time.perf_counter() - self.t0) * 1000, 3)
        if exc is not None and not hasattr(exc, "step"):
            try:
                exc.step = self.name
            except AttributeError:
                pass
        return False


def _make_userns(base: int, count: int) -> int:
    """Create a user namespace mapping 0..count-1 onto base.. and return an fd to it."""
    r1, w1 = os.pipe2(os.O_CLOEXEC)
    r2, w2 = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.close(r1)
            os.close(w2)  # or our read below never sees the parent's close
            libc.unshare(libc.CLONE_NEWUSER)
            os.write(w1, b"u")
            os.read(r2, 1)
        except BaseException:  # noqa: BLE001
            code = 1
        os._exit(code)
    os.close(w1)
    os.close(r2)
    try:
        if os.read(r1, 1) != b"u":
            raise OSError(errno.EPERM, "unshare(CLONE_NEWUSER) failed in the helper")
        _write_file(f"/proc/{pid}/uid_map", f"0 {base} {count}\n")
        _write_file(f"/proc/{pid}/gid_map", f"0 {base} {count}\n")
        return os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.close(w2)
        os.close(r1)
        os.waitpid(pid, 0)


def _become_ns_root() -> None:
    os.setgroups([])
    os.setresgid(0, 0, 0)
    os.setresuid(0, 0, 0)


def _join_and_make_userns(req: dict) -> int:
    with _Step("joining the sandbox cgroup"):
        for path in req["cgroup_files"]:
            _write_file(path, str(os.getpid()))
    with _Step("creating the user namespace"):
        return _make_userns(req["uid_base"], req["uid_count"])


def _build_sandbox(w: int, req: dict) -> None:
    _close_fds_except({w})
    libc.prctl(libc.PR_SET_DUMPABLE, 0)
    _build_rest(w, req, _join_and_make_userns(req))


def _build_rest(w: int, req: dict, userns: int) -> None:
    d = req["dir"]
    rootfs = f"{d}/rootfs"
    init_fd = os.open(req["init"], os.O_RDONLY | os.O_CLOEXEC)
    with _Step("mounting the root filesystem"):
        libc.unshare(libc.CLONE_NEWNS)
        libc.mount(None, "/", None, libc.MS_REC | libc.MS_PRIVATE)
        for i, layer in enumerate(req["layers"]):
            lower = f"{d}/lower/{i}"
            libc.idmapped_bind(layer["lower"], lower, userns, readonly=True)
            target = f"{rootfs}/{layer['target']}" if layer["target"] else rootfs
            libc.mount("overlay", target, "overlay", 0,
                       f"lowerdir={lower},upperdir={d}/upper/{i},workdir={d}/work/{i}")
        if req.get("home"):
            libc.idmapped_bind(req["home"]["source"], f"{rootfs}/{req['home']['target']}", userns)
        # G works relative to its working directory: as the sandbox's root it may not
        # be allowed to walk the host path above the volume (a state dir under a 0700
        # directory). unshare(CLONE_NEWNS) below moves the cwd into the new namespace.
        os.chdir(rootfs)
    with _Step("entering the user namespace"):
        libc.setns(userns, libc.CLONE_NEWUSER)
        os.close(userns)
        _become_ns_root()
        libc.unshare(libc.CLONE_NEWNS | libc.CLONE_NEWUTS | libc.CLONE_NEWIPC | libc.CLONE_NEWNET
                     | libc.CLONE_NEWCGROUP | libc.CLONE_NEWPID)
        libc.sethostname(req["hostname"])
    g = _fork(w, "starting init", _init_child, req, init_fd, w, reset=False)
    os.write(w, (json.dumps({"pid": g, "trace": _TRACE}) + "\n").encode())


def _mount_dev(rootfs: str, shm_size: int) -> None:
    dev = f"{rootfs}/dev"
    libc.mount("tmpfs", dev, "tmpfs", libc.MS_NOSUID | libc.MS_NOEXEC, "mode=755,size=256k")
    for name in DEVICES:
        path = f"{dev}/{name}"
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o666))
        libc.mount(f"/dev/{name}", path, None, libc.MS_BIND)
    for name in ("pts", "shm", "mqueue"):
        os.mkdir(f"{dev}/{name}", 0o755)
    libc.mount("devpts", f"{dev}/pts", "devpts", libc.MS_NOSUID | libc.MS_NOEXEC,
               "newinstance,ptmxmode=0666,mode=0620,gid=5")
    libc.mount("shm", f"{dev}/shm", "tmpfs", libc.MS_NOSUID | libc.MS_NODEV,
               f"mode=1777,size={shm_size}")
    libc.mount("mqueue", f"{dev}/mqueue", "mqueue", PROC_FLAGS)
    for name, target in DEV_LINKS:
        os.symlink(target, f"{dev}/{name}")


def _mount_cgroups(rootfs: str, mounts: list, version: int) -> None:
    base = f"{rootfs}/sys/fs/cgroup"
    if version == 2:
        libc.mount("cgroup2", base, "cgroup2", PROC_FLAGS)
        return
    libc.mount("tmpfs", base, "tmpfs", PROC_FLAGS, "mode=755,size=64k")
    for subdir, fstype, data in mounts:
        path = f"{base}/{subdir}"
        os.makedirs(path, exist_ok=True)
        libc.mount("cgroup", path, fstype, PROC_FLAGS, data or None)
        # co-mounted controllers ("cpu,cpuacct") get a link per controller, as on the host
        if "," in subdir:
            for part in subdir.split(","):
                if not os.path.lexists(f"{base}/{part}"):
                    os.symlink(subdir, f"{base}/{part}")
    libc.mount(None, base, None, libc.MS_REMOUNT | libc.MS_RDONLY | PROC_FLAGS, "mode=755,size=64k")


def _mask_paths(rootfs: str) -> None:
    for rel in MASKED_PATHS:
        path = f"{rootfs}/{rel}"
        if os.path.isdir(path):
            libc.mount("tmpfs", path, "tmpfs", libc.MS_RDONLY | PROC_FLAGS, "size=0")
        elif os.path.exists(path):
            libc.mount(f"{rootfs}/dev/null", path, None, libc.MS_BIND)
    for rel in READONLY_PATHS:
        path = f"{rootfs}/{rel}"
        if os.path.exists(path):
            libc.mount(path, path, None, libc.MS_BIND | libc.MS_REC)
            libc.mount(None, path, None,
                       libc.MS_BIND | libc.MS_REMOUNT | libc.MS_RDONLY | libc.MS_REC | PROC_FLAGS)


def _init_child(req: dict, init_fd: int, report_fd: int) -> None:
    """PID 1 of the new pid namespace: finish the filesystem and become catatonit."""
    os.umask(0o022)
    # Its own session and process group: no signal sent to the daemon's group (a
    # terminal's Ctrl-C, `timeout`, a service manager) may reach the sandbox.
    os.setsid()
    rootfs = "."
    with _Step("mounting /proc, /sys and /dev"):
        # A bind of the root onto itself is owned by this (the sandbox's) mount
        # namespace; pivot_root refuses the locked mount C made. Re-entering by name
        # from the parent directory lands on that new top mount.
        libc.mount(".", ".", None, libc.MS_BIND | libc.MS_REC)
        os.chdir("..")
        os.chdir("rootfs")
        libc.mount("proc", f"{rootfs}/proc", "proc", PROC_FLAGS)
        libc.mount("sysfs", f"{rootfs}/sys", "sysfs", PROC_FLAGS | libc.MS_RDONLY)
        _mount_dev(rootfs, req["shm_size"])
    with _Step("mounting the cgroup filesystem"):
        _mount_cgroups(rootfs, req["cgroup_mounts"], req["cgroup_version"])
    with _Step("masking /proc and /sys paths"):
        _mask_paths(rootfs)
    with _Step("pivot_root into the sandbox"):
        libc.pivot_root(".", ".")
        libc.umount2(".", libc.MNT_DETACH)
        os.chdir("/")
    null = os.open("/dev/null", os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)
    if req.get("trace"):
        os.write(report_fd, (json.dumps({"trace_init": _TRACE}) + "\n").encode())
    with _Step("starting catatonit"):
        os.execve(init_fd, ["catatonit", "-P"], {"PATH": DEFAULT_PATH})


def _parse_passwd(user: str | int) -> tuple[int, int, str, str]:
    """Resolve a user inside the sandbox from its own /etc/passwd (no NSS modules)."""
    try:
        with open("/etc/passwd") as f:
            for line in f:
                parts = line.rstrip("\n").split(":")
                if len(parts) < 7:
                    continue
                if parts[0] == str(user) or (isinstance(user, int) and parts[2] == str(user)):
                    return int(parts[2]), int(parts[3]), parts[5] or "/", parts[6] or "/bin/sh"
    except (OSError, ValueError):
        pass
    if isinstance(user, int):
        return user, user, "/", "/bin/sh"
    raise OSError(errno.ENOENT, f"no user {user!r} in the sandbox's /etc/passwd")


def _groups_of(name: str, gid: int) -> list[int]:
    groups = {gid}
    try:
        with open("/etc/group") as f:
            for line in f:
                parts = line.rstrip("\n").split(":")
                if len(parts) >= 4 and name in parts[3].split(","):
                    groups.add(int(parts[2]))
    except (OSError, ValueError):
        pass
    return sorted(groups)


def _which(cmd: str, path: str) -> str:
    if "/" in cmd:
        return cmd
    for d in path.split(":"):
        candidate = f"{d or '.'}/{cmd}"
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise OSError(errno.ENOENT, f"{cmd}: command not found")


def _exec_child(w: int, req: dict, report_fd: int, stdio: list[int]) -> None:
    _close_fds_except({w, report_fd, *stdio})
    libc.prctl(libc.PR_SET_DUMPABLE, 0)
    init = req["init_pid"]
    with _Step("joining the sandbox cgroup"):
        for path in req["cgroup_files"]:
            _write_file(path, str(os.getpid()))
    with _Step("opening the sandbox's namespaces"):
        nsfds = {ns: os.open(f"/proc/{init}/ns/{ns}", os.O_RDONLY | os.O_CLOEXEC)
                 for ns in NAMESPACES_JOIN_ORDER}
        if start_time(init) != req["init_start"]:
            raise OSError(errno.ESRCH, "the sandbox's init is gone")
    with _Step("entering the sandbox"):
        libc.setns(nsfds["user"], libc.CLONE_NEWUSER)
        _become_ns_root()
        for ns in NAMESPACES_JOIN_ORDER[1:]:
            libc.setns(nsfds[ns], 0)
            os.close(nsfds[ns])
        os.chdir("/")
    master = slave = None
    if req.get("tty"):
        with _Step("opening a terminal"):
            master, slave = os.openpty()
            set_winsize(master, req.get("rows", 24), req.get("cols", 80))
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        try:
            _exec_final(req, err_w, slave, stdio)
        except BaseException as e:  # noqa: BLE001
            try:
                os.write(err_w, str(e).encode()[:4000])
            except OSError:
                pass
        os._exit(127)
    os.close(err_w)
    if slave is not None:
        os.close(slave)
    exec_error = _read_all(err_r).decode(errors="replace") or None
    report = {"pid": pid, "exec_error": exec_error}
    _send(socket.socket(fileno=report_fd), report, [master] if master is not None else [])
    os.write(w, (json.dumps({"pid": pid}) + "\n").encode())


def _exec_final(req: dict, err_w: int, slave: int | None, stdio: list[int]) -> None:
    os.setsid()
    if slave is not None:
        fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
        fds = [slave, slave, slave]
    else:
        fds = stdio
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
    _close_fds_except({err_w})
    user = req.get("user", 0)
    uid, gid, home, _shell = _parse_passwd(user)
    name = str(user) if not isinstance(user, int) else ""
    os.setgroups(_groups_of(name, gid) if name else [gid])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    libc.prctl(libc.PR_SET_NO_NEW_PRIVS, 1)
    cwd = req.get("cwd") or home
    try:
        os.chdir(cwd)
    except OSError:
        os.chdir("/")
    env = {"PATH": DEFAULT_PATH, "HOME": home, "HOSTNAME": req.get("hostname", ""),
           "LANG": "C.UTF-8", "USER": name or str(uid), "LOGNAME": name or str(uid)}
    if slave is not None:
        env["TERM"] = "xterm-256color"
    env.update(req.get("env") or {})
    argv = req["argv"]
    os.execve(_which(argv[0], env["PATH"]), argv, env)


def set_winsize(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


# ---------------------------------------------------------------------------
# the daemon's side

@dataclass
class ExecHandle:
    pid: int
    pidfd: int | None
    master: int | None = None
    stdin: int | None = None
    stdout: int | None = None
    stderr: int | None = None
    exec_error: str | None = None


@dataclass
class SpawnerClient:
    """The daemon's handle on the spawner process (asyncio, one socket)."""

    pid: int
    sock: socket.socket
    on_exit: object = None  # callable(pid, code)
    _next: int = 0
    _waiting: dict = field(default_factory=dict)
    _parked_waiting: dict = field(default_factory=dict)
    _loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def fork(cls) -> "SpawnerClient":
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
                msg, fds = _recv(self.sock)
            except BlockingIOError:
                return
            if msg is None:
                self._fail_all(SandboxError("the spawner process exited"))
                self._loop.remove_reader(self.sock.fileno())
                return
            if msg.get("event") == "exit":
                if self.on_exit:
                    self.on_exit(msg["pid"], msg["code"])
                continue
            if msg.get("event") == "parked":
                fut = self._parked_waiting.pop(msg["slot"], None)
                if fut is not None and not fut.done():
                    if msg.get("error"):
                        fut.set_exception(SandboxError(f"parking failed: {msg['error']}"))
                    else:
                        fut.set_result(True)
                continue
            fut = self._waiting.pop(msg.get("req"), None)
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

    async def request(self, msg: dict) -> tuple[dict, list[int]]:
        self._next += 1
        msg = dict(msg, req=self._next)
        fut = self._loop.create_future()
        self._waiting[self._next] = fut
        _send_blocking(self.sock, msg)
        return await fut

    async def park(self, slot: str, spec: dict) -> asyncio.Future:
        """Start a warm slot; the returned future resolves when it is parked."""
        fut = self._loop.create_future()
        self._parked_waiting[slot] = fut
        reply, _ = await self.request(dict(spec, op="park", slot=slot))
        if "error" in reply:
            self._parked_waiting.pop(slot, None)
            raise _spawn_error("parking a warm slot", reply)
        return fut

    async def unpark(self, slot: str) -> None:
        self._parked_waiting.pop(slot, None)
        await self.request({"op": "unpark", "slot": slot})

    async def spawn(self, spec: dict) -> int:
        reply, _ = await self.request(dict(spec, op="spawn"))
        if "error" in reply:
            if reply.get("pid"):
                _kill_quietly(reply["pid"])
            raise _spawn_error("building the sandbox", reply)
        return reply["pid"]

    async def exec(self, spec: dict) -> ExecHandle:
        reply, fds = await self.request(dict(spec, op="exec"))
        if "error" in reply:
            raise _spawn_error("starting the process", reply)
        fds = list(fds)
        pidfd = fds.pop(0) if reply.get("pidfd") else None
        handle = ExecHandle(pid=reply["pid"], pidfd=pidfd, exec_error=reply.get("exec_error"))
        if spec.get("tty"):
            handle.master = fds[0]
        else:
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


def _send_blocking(sock: socket.socket, msg: dict) -> None:
    # Requests are small; the spawner reads them promptly, so this never blocks long.
    data = json.dumps(msg).encode()
    while True:
        try:
            sock.send(data)
            return
        except BlockingIOError:
            select.select([], [sock], [], 1.0)


def _kill_quietly(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _spawn_error(what: str, reply: dict) -> SandboxError:
    if reply.get("errno") in (errno.EPERM, errno.EACCES, errno.ENODEV, errno.ENOSYS):
        return explain_oserror(reply["error"], OSError(reply["errno"], reply["error"]))
    return SandboxError(f"{what} failed: {reply['error']}")


