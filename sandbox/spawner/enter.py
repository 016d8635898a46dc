"""Starting a process inside a running sandbox (exec).

This runs in a fresh child E of the spawner (`server.py` forks it): E joins the cgroup
as host root, opens the init's namespace files, enters them (user first), opens a PTY
inside the sandbox's own devpts if asked, forks F into the sandbox's pid namespace,
sends F's pid and the PTY master back and exits. F starts a new session, becomes the
chosen user, sets no_new_privs, installs the seccomp filter (`seccomp.py`) and execs the
command with a clean environment and no inherited fds.

A held exec (`ExecSpec.hold`, for a traced run) stops F just before it resolves and execs
the command: F waits on a pipe whose write end E sends to the daemon beside the report.
The daemon attaches the host's tracer to F, then writes one byte; F execs only on that
byte (EOF, the daemon gone or giving up, makes F exit), so the command never runs
untraced. E cannot wait for the exec then, so F reports a failed exec on its stderr.

The exec helper (`serve_helper`) is E made ahead: a process in the sandbox's cgroup that
waits on a socket for an exec. It is only ever forked by a process already in that cgroup
(the sandbox's builder C, `fork_helper`; a first exec's E; a helper), so it never migrates:
on cgroup v1 every migration waits for an RCU grace period (5-15 ms here), the largest part
of an exec, and a process joining late could keep a destroyed sandbox's cgroup busy. For
each exec it forks its successor, then serves the exec as E without joining anything. The
successor becomes the spawner's child (the spawner is a subreaper) when this E exits, which
the spawner waits for before it hands the successor an exec. It also binds a warm
sandbox's home volume when a create claims it (`serve_bind`, no fork). It runs nothing the
sandbox controls, holds no namespace and is invisible inside (not in the sandbox's pid
namespace); a sandbox's root can only starve it of its own pids or memory, and then that
sandbox's execs fail or fall back to a forked E.

Everything here may meet what the sandbox's root arranged: its /etc/passwd may be a fifo
or huge, and its processes may SIGSTOP F before it execs. So the account files are read
with bounds (`read_account_file`), and E tells the spawner F's pid as soon as F exists
(`Report.forked`): the spawner waits for E only until its deadline, then kills E and F.
"""

from __future__ import annotations

import errno
import fcntl
import os
import resource
import socket
import stat
import struct
import termios

from .. import libc
from ..procfs import start_time
from . import seccomp
from .rootfs import (DEFAULT_PATH, Step, become_ns_root, close_fds_except, join_cgroup,
                     read_all, report_failure)
from .spec import (GO, MAX_ACCOUNT_FILE, MAX_OPEN_FILES, BindSpec, ExecSpec, Report,
                   decode_request, encode_report, recv, send, write_report)

NAMESPACES_JOIN_ORDER = ("user", "ipc", "uts", "net", "cgroup", "pid", "mnt")


def set_winsize(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def bind_into(w: int, spec: BindSpec) -> None:
    """A forked child: `bind_here`, then report."""
    close_fds_except({w})
    libc.prctl(libc.PR_SET_DUMPABLE, 0)
    bind_here(spec)
    write_report(w, Report())


def bind_here(spec: BindSpec, back: int | None = None) -> None:
    """Bind `spec.source` id-shifted at `spec.target` in the sandbox's mount namespace. The
    tree is taken on the host side first (the host path is not visible inside), then
    attached from inside; `back`: a mount namespace to return to afterwards (the helper's
    own, the host's). Only for a sandbox nothing has run in yet (a warm one being
    claimed): the target is resolved in its tree, which is still the image's."""
    with Step("opening the sandbox's namespaces"):
        userns = os.open(f"/proc/{spec.init_pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
        mntns = os.open(f"/proc/{spec.init_pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
    try:
        if start_time(spec.init_pid) != spec.init_start:
            raise OSError(errno.ESRCH, "the sandbox's init is gone")
        with Step(f"binding {spec.source} at /{spec.target} in the sandbox"):
            tree = libc.open_tree(spec.source)
            try:
                libc.mount_setattr(tree, libc.MOUNT_ATTR_IDMAP, userns)
                libc.setns(mntns, libc.CLONE_NEWNS)  # also moves our root to the sandbox's
                try:
                    libc.move_mount(tree, f"/{spec.target}")
                finally:
                    if back is not None:
                        libc.setns(back, libc.CLONE_NEWNS)
            finally:
                os.close(tree)
    finally:
        os.close(userns)
        os.close(mntns)


def fork_helper(ctl: int) -> int:
    """Fork the sandbox's exec helper on `ctl` (our end closed here); its pid. The caller
    must be in the sandbox's cgroup."""
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            serve_helper(ctl)
        except BaseException:  # noqa: BLE001 - a forked child must never unwind
            code = 1
        os._exit(code)
    os.close(ctl)
    return pid


def serve_helper(ctl: int) -> None:
    """The exec helper: per exec on `ctl` fork the next helper and serve the exec as E; per
    bind, bind. EOF on `ctl`: the spawner is gone or dropped us; exit."""
    close_fds_except({ctl})
    libc.prctl(libc.PR_SET_DUMPABLE, 0)
    home_ns = os.open("/proc/self/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
    sock = socket.socket(fileno=ctl)
    while True:
        msg, fds = recv(sock)
        if msg is None:
            os._exit(0)
        if msg.get("op") == BindSpec.op and len(fds) == 1:
            serve_bind(fds[0], msg, home_ns)
            continue
        if len(fds) < 2:  # not what the spawner sends: keep waiting for a real one
            for fd in fds:
                os.close(fd)
            continue
        w, report_fd, *stdio = fds
        try:
            successor = os.fork()
        except OSError:
            successor = None  # out of pids in its cgroup: serve this exec, be the last
        if successor == 0:
            for fd in fds:
                os.close(fd)
            continue
        code = 0
        try:
            write_report(w, Report(helper=successor))
            spec_e = decode_request(msg)
            if not isinstance(spec_e, ExecSpec):
                raise OSError(errno.EINVAL, f"an exec helper got a {spec_e.op!r} request")
            start(w, spec_e, report_fd, stdio, helper_ctl=None, joined=True)
        except BaseException as e:  # noqa: BLE001 - a forked child must never unwind
            report_failure(w, getattr(e, "step", "starting the process"), e)
            code = 1
        os._exit(code)


def serve_bind(w: int, msg: dict, home_ns: int) -> None:
    """The helper binds itself (no fork: it returns to `home_ns`) and reports on `w`; if it
    could not return, it must not serve execs from inside a sandbox: it exits."""
    try:
        spec = decode_request(msg)
        if not isinstance(spec, BindSpec):
            raise OSError(errno.EINVAL, f"a bind request carried a {spec.op!r}")
        bind_here(spec, back=home_ns)
        write_report(w, Report())
    except BaseException as e:  # noqa: BLE001 - reported; the helper serves on
        report_failure(w, getattr(e, "step", "binding into the sandbox"), e)
    finally:
        os.close(w)
    if os.readlink("/proc/self/ns/mnt") != os.readlink(f"/proc/self/fd/{home_ns}"):
        os._exit(1)


def start(w: int, spec: ExecSpec, report_fd: int, stdio: list[int], helper_ctl: int | None,
          joined: bool = False) -> None:
    """E: enter the sandbox, fork F and report F's pid (and the PTY master on
    `report_fd`); F's stdio is the PTY, or the pipe ends `stdio`. `joined`: E is in the
    sandbox's cgroup already (an exec helper); else it joins, and forks the sandbox's helper
    on `helper_ctl` if it is given one."""
    keep = {w, report_fd, *stdio} | ({helper_ctl} if helper_ctl is not None else set())
    close_fds_except(keep)
    libc.prctl(libc.PR_SET_DUMPABLE, 0)
    init = spec.init_pid
    if not joined:
        with Step("joining the sandbox cgroup"):
            join_cgroup(spec.cgroup_files)
        if helper_ctl is not None:
            try:
                helper = fork_helper(helper_ctl)
            except OSError:  # out of pids: this exec fails below the same way
                os.close(helper_ctl)
            else:
                write_report(w, Report(helper=helper))
    with Step("opening the sandbox's namespaces"):
        nsfds = {ns: os.open(f"/proc/{init}/ns/{ns}", os.O_RDONLY | os.O_CLOEXEC)
                 for ns in NAMESPACES_JOIN_ORDER}
        if start_time(init) != spec.init_start:
            raise OSError(errno.ESRCH, "the sandbox's init is gone")
    with Step("entering the sandbox"):
        libc.setns(nsfds["user"], libc.CLONE_NEWUSER)
        become_ns_root()
        for ns in NAMESPACES_JOIN_ORDER[1:]:
            libc.setns(nsfds[ns], 0)
            os.close(nsfds[ns])
        os.chdir("/")
    master = slave = None
    if spec.tty:
        with Step("opening a terminal"):
            master, slave = os.openpty()
            set_winsize(master, spec.rows, spec.cols)
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    go_r, go_w = os.pipe2(os.O_CLOEXEC) if spec.hold else (None, None)
    try:
        pid = os.fork()
    except BlockingIOError:  # EAGAIN: its pids cgroup is full
        raise OSError(errno.EAGAIN, "the sandbox's processes fill its process limit (pids); "
                                    "end some of them and retry") from None
    if pid == 0:
        try:
            os.close(w)  # the spawner's EOF must not wait for F
            run(spec, err_w, slave, stdio, go_r)
        except BaseException as e:  # noqa: BLE001
            try:
                os.write(err_w, str(e).encode()[:4000])
            except OSError:
                pass
        os._exit(127)
    # Before E waits on F: F is in the sandbox's pid namespace, where its root can stop it.
    write_report(w, Report(forked=pid))
    os.close(err_w)
    if slave is not None:
        os.close(slave)
    fds = [master] if master is not None else []
    if go_w is not None:
        # F waits for the daemon: it has not exec'd, and a failed exec is reported on
        # its stderr; E only reports a failure before the wait.
        os.close(go_r)
        exec_error = _early_error(err_r)
        fds.append(go_w)
    else:
        exec_error = read_all(err_r).decode(errors="replace") or None
    report = Report(pid=pid, exec_error=exec_error, held=go_w is not None)
    send(socket.socket(fileno=report_fd), encode_report(report), fds)
    write_report(w, Report(pid=pid))


def _early_error(err_r: int) -> str | None:
    """What a held F wrote before it began to wait (it failed: setting up the user, say),
    or None; F writes a single byte, WAITING, when it is ready instead."""
    data = read_all(err_r)
    if data == WAITING or not data:
        return None
    return data.decode(errors="replace")


WAITING = b"\0"


def run(spec: ExecSpec, err_w: int, slave: int | None, stdio: list[int],
        go_r: int | None = None) -> None:
    """F: take the terminal or the pipes, become the user, exec the command. Why execve
    failed (if it did) goes to `err_w`, which closes on exec. Held (`go_r`): wait for the
    daemon's byte on `go_r` first, and report a failed exec on stderr."""
    os.setsid()
    if slave is not None:
        fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
        fds = [slave, slave, slave]
    else:
        fds = stdio
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
    close_fds_except({err_w} if go_r is None else {err_w, go_r})
    user = spec.user
    uid, gid, home, _shell = parse_passwd(user)
    name = str(user) if not isinstance(user, int) else ""
    os.setgroups(groups_of(name, gid) if name else [gid])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    libc.prctl(libc.PR_SET_NO_NEW_PRIVS, 1)
    limit_open_files()
    seccomp.install()  # after no_new_privs, which an unprivileged filter needs
    cwd = spec.cwd or home
    try:
        os.chdir(cwd)
    except OSError:
        os.chdir("/")
    env = {"PATH": DEFAULT_PATH, "HOME": home, "HOSTNAME": spec.hostname,
           "LANG": "C.UTF-8", "USER": name or str(uid), "LOGNAME": name or str(uid)}
    if slave is not None:
        env["TERM"] = "xterm-256color"
    env.update(spec.env or {})
    argv = spec.argv
    if go_r is not None:
        wait_for_go(err_w, go_r)
        try:
            os.execve(which(argv[0], env["PATH"]), argv, env)
        except OSError as e:
            os.write(2, f"nslab: {e}\n".encode(errors="replace")[:4000])
            os._exit(127)
    os.execve(which(argv[0], env["PATH"]), argv, env)


def wait_for_go(err_w: int, go_r: int) -> None:
    """F, held: tell E it is waiting (E reports then), and exec only on the daemon's byte."""
    os.write(err_w, WAITING)
    os.close(err_w)
    if os.read(go_r, 1) != GO:
        os._exit(125)  # the daemon gave up (or is gone): the command must not run untraced
    os.close(go_r)


def limit_open_files() -> None:
    """Soft and hard RLIMIT_NOFILE of MAX_OPEN_FILES: the sandbox's root cannot raise a
    hard limit (that needs CAP_SYS_RESOURCE in the host's user namespace), so a sandbox
    holds at most its pids.max times this many open files."""
    resource.setrlimit(resource.RLIMIT_NOFILE, (MAX_OPEN_FILES, MAX_OPEN_FILES))


def read_account_file(path: str) -> str | None:
    """The text of the sandbox's `path` (/etc/passwd, /etc/group), None if it is absent.
    Opened non-blocking and read only if it is a regular file of at most MAX_ACCOUNT_FILE
    bytes: a fifo, a device or a huge file there is an error, never a wait."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, f"the sandbox's {path} is not a regular file")
        if st.st_size > MAX_ACCOUNT_FILE:
            raise OSError(errno.EFBIG, f"the sandbox's {path} is larger than "
                                       f"{MAX_ACCOUNT_FILE >> 20} MiB")
        chunks, size = [], 0
        while size <= MAX_ACCOUNT_FILE:  # a file that grows while read stops here too
            chunk = os.read(fd, MAX_ACCOUNT_FILE + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > MAX_ACCOUNT_FILE:
            raise OSError(errno.EFBIG, f"the sandbox's {path} is larger than "
                                       f"{MAX_ACCOUNT_FILE >> 20} MiB")
        return b"".join(chunks).decode(errors="replace")
    finally:
        os.close(fd)


def parse_passwd(user: str | int) -> tuple[int, int, str, str]:
    """Resolve a user inside the sandbox from its own /etc/passwd (no NSS modules). A
    numeric user without an entry (or without the file) is itself, home /; a passwd that
    cannot be read safely is an error (`read_account_file`)."""
    text = read_account_file("/etc/passwd") or ""
    for line in text.splitlines():
        parts = line.split(":")
        if len(parts) < 7:
            continue
        if parts[0] == str(user) or (isinstance(user, int) and parts[2] == str(user)):
            try:
                return int(parts[2]), int(parts[3]), parts[5] or "/", parts[6] or "/bin/sh"
            except ValueError:
                continue  # a malformed entry names no one
    if isinstance(user, int):
        return user, user, "/", "/bin/sh"
    raise OSError(errno.ENOENT, f"no user {user!r} in the sandbox's /etc/passwd")


def groups_of(name: str, gid: int) -> list[int]:
    groups = {gid}
    for line in (read_account_file("/etc/group") or "").splitlines():
        parts = line.split(":")
        if len(parts) >= 4 and name in parts[3].split(","):
            try:
                groups.add(int(parts[2]))
            except ValueError:
                continue
    return sorted(groups)


def which(cmd: str, path: str) -> str:
    if "/" in cmd:
        return cmd
    for d in path.split(":"):
        candidate = f"{d or '.'}/{cmd}"
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise OSError(errno.ENOENT, f"{cmd}: command not found")
