"""Building a sandbox: its user namespace, its root filesystem and PID 1's world.

This runs in a fresh child C of the spawner (`server.py` forks it), still host root:
  1. C joins the sandbox cgroup and makes the sandbox's user namespace: a helper child,
     as the sandbox's host uid, unshares an intermediate namespace A (C maps it onto
     itself), writes `NAMESPACE_BOUNDS` into it and maps the sandbox's namespace B that
     its own child unshares; C keeps an fd to B. A warm slot is a C parked after this
     step (`park`) until the rest of its `BootSpec` arrives.
  2. In a private staging mount namespace, owned by the host's user namespace, C mounts
     the root filesystem: each image layer is an id-shifted (idmapped) read-only bind
     under an overlay whose upper dir is in the sandbox's storage volume; the home volume
     is bound id-shifted at /root, and a `containers` sandbox's image storage (a directory
     of its volume: an engine's overlay cannot have its upper dir on overlayfs) at
     /var/lib/containers.
  3. A helper child K enters the user namespace and unshares uts, ipc, net, cgroup and
     pid namespaces, so that they are owned by the sandbox's root (the learner configures
     its own interfaces and hostname); its child G is PID 1 and waits (`pid1`). C, still
     host root, joins G's namespaces but user and mount (`join_namespaces_of`) and forks P.
  4. P, host root in the staging mount namespace (PID 2 inside), mounts /proc, /sys
     (read-only), /dev, devpts (at most `spec.MAX_PTYS` terminals), cgroupfs, masks
     Docker's masked paths, makes /proc/sys read-only but /proc/sys/net (the sandbox's
     own network namespace's), hides a full proc and read-only sysfs under a locked cover
     (`mount_unmasked`), pivot_root()s, then enters the user namespace and unshares its
     mount namespace: copied into a namespace of a less privileged user namespace, every
     mount is locked (MNT_LOCKED with its read-only, nosuid... flags: fs/namespace.c
     lock_mnt_tree), so root inside can neither unmount a mask nor remount /proc/sys or
     /sys read-write. P hands that namespace to G over a socket and exits; G enters it,
     installs the seccomp filter (`seccomp.py`) and execs catatonit from an fd C opened
     on the host, so no path inside the sandbox decides what runs as PID 1.

Each kernel operation is one small function; `build_in_userns` and `init` are the
sequence. `Step` names what was being done in any error, and the child reports its
result or its failure to the spawner as `spec.Report` lines on the pipe `w`.
"""

from __future__ import annotations

import errno
import os
import resource
import signal
import socket
from collections.abc import Callable

from .. import libc
from . import seccomp
from .spec import MAX_OPEN_FILES, BootSpec, ParkSpec, Report, loads, write_report

# Docker's defaults (moby oci/defaults.go): hidden, and read-only, paths.
MASKED_PATHS = (
    "proc/asound", "proc/acpi", "proc/kcore", "proc/keys", "proc/latency_stats",
    "proc/timer_list", "proc/timer_stats", "proc/sched_debug", "proc/scsi",
    "sys/firmware", "sys/devices/virtual/powercap",
)
READONLY_PATHS = ("proc/bus", "proc/fs", "proc/irq", "proc/sys", "proc/sysrq-trigger")
# Writable again under a read-only one: /proc/sys/net shows the opener's network namespace,
# the sandbox's own, whose sysctls its root may set (the kernel checks CAP_NET_ADMIN over
# that namespace: net/sysctl_net.c); container engines write them (ping_group_range, a
# published port's route_localnet). The host-wide ones a non-initial namespace lists
# (net.core.rmem_max, nf_conntrack_max...) are read-only there (mode 0444), whoever asks.
WRITABLE_PATHS = ("proc/sys/net",)
# Where a `containers` sandbox's image storage is bound.
CONTAINERS_TARGET = "var/lib/containers"
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
DEV_LINKS = (("ptmx", "pts/ptmx"), ("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
             ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2"))
TTY_GID = 5  # the images' tty group, as on Debian
# Under /dev: where `mount_unmasked` hides a full proc and sysfs.
UNMASKED_DIR = "dev/.nslab"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PROC_FLAGS = libc.MS_NOSUID | libc.MS_NODEV | libc.MS_NOEXEC


class Step:
    """Names the setup step in any error raised inside it, so a failure says what it was
    doing."""

    def __init__(self, name: str):
        self.name = name

    def __enter__(self):
        return self

    def __exit__(self, typ, exc, tb):
        if exc is not None and not hasattr(exc, "step"):
            try:
                exc.step = self.name
            except AttributeError:
                pass
        return False


def report_failure(w: int, step: str, exc: BaseException) -> None:
    """Tell the spawner, on `w`, that this child failed in `step`."""
    try:
        write_report(w, Report(error=f"{step}: {exc}", errno=getattr(exc, "errno", None),
                               step=step))
    except OSError:
        pass  # the spawner stopped listening; it learns of the failure from the exit


# ---------------------------------------------------------------- process primitives


def read_all(fd: int) -> bytes:
    """Everything the pipe `fd` gives until EOF (its writer exited, or exec'd)."""
    chunks = []
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def write_file(path: str, data: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, data.encode())
    finally:
        os.close(fd)


def close_fds_except(keep: set[int]) -> None:
    """Close every descriptor from 3 on but `keep`: a child holds only what it needs."""
    lo = 3
    for fd in sorted(k for k in keep if k >= 3):
        os.closerange(lo, fd)
        lo = fd + 1
    os.closerange(lo, 65536)


def join_cgroup(procs_files: list[str]) -> None:
    for path in procs_files:
        write_file(path, str(os.getpid()))


# Bounds written into the sandbox's own intermediate user namespace A (see make_userns):
# every namespace, inotify or fanotify object made anywhere in the sandbox is counted
# against them, and root inside cannot raise them (it has no capability in A). A pinned
# network namespace costs about 200 KiB of kernel memory here (100 pinned by sleepers:
# +21 MiB slab), half of it not charged to the sandbox's cgroup: 64 keep that under
# ~13 MiB while leaving a podman course room for dozens of containers (each takes a net,
# mnt, pid, uts, ipc and cgroup namespace; the sandbox's own PID 1 takes one of each and
# its user namespace one of `user`). Mount namespaces are cheap and tools make them
# freely (unshare -m, systemd-style services): 256. inotify/fanotify: the kernel's own
# per-user defaults, now the sandbox's alone instead of shared with host root.
NAMESPACE_BOUNDS = {
    "max_user_namespaces": 64,
    "max_net_namespaces": 64,
    "max_mnt_namespaces": 256,
    "max_pid_namespaces": 256,
    "max_uts_namespaces": 256,
    "max_ipc_namespaces": 256,
    "max_cgroup_namespaces": 256,
    "max_time_namespaces": 256,
    "max_inotify_instances": 128,
    "max_inotify_watches": 65536,
    "max_fanotify_groups": 128,
    "max_fanotify_marks": 65536,
}


def write_ns_bounds(bounds: dict[str, int]) -> None:
    """Set the current user namespace's limits: /proc/sys/user is the opener's own
    namespace's. A kernel without a limit (time namespaces before 5.6) has no file."""
    for name, value in bounds.items():
        try:
            write_file(f"/proc/sys/user/{name}", str(value))
        except FileNotFoundError:
            pass


def _wait_byte(fd: int, expect: bytes, what: str) -> None:
    if os.read(fd, 1) != expect:
        raise OSError(errno.EPERM, f"{what} failed in the user namespace helper")


def _userns_helper(base: int, count: int, to_c: int, from_c: int) -> None:
    """The helper child of `make_userns`: A, its bounds, then B through its own child."""
    # As the sandbox's host uid, so that A (and with it every count of the sandbox) is
    # owned by `base`, not by host root whose counts every sandbox would share.
    os.setgroups([])
    os.setresgid(base, base, base)
    os.setresuid(base, base, base)
    # Dropping uid made us non-dumpable, which would leave /proc/<H2>/uid_map owned by
    # host root and unwritable to us; as `base` only our own namespaces are at stake.
    libc.prctl(libc.PR_SET_DUMPABLE, 1)
    libc.unshare(libc.CLONE_NEWUSER)  # A: we hold every capability in it
    os.write(to_c, b"a")
    _wait_byte(from_c, b"m", "mapping the intermediate user namespace")
    write_ns_bounds(NAMESPACE_BOUNDS)
    r, w = os.pipe2(os.O_CLOEXEC)
    h2 = os.fork()
    if h2 == 0:
        code = 0
        try:
            os.close(r)
            libc.unshare(libc.CLONE_NEWUSER)  # B, child of A
            os.write(w, b"b")
            os.read(from_c, 1)  # EOF: C holds its fd to B
        except BaseException:  # noqa: BLE001 - a forked child must never unwind
            code = 1
        os._exit(code)
    os.close(w)
    told = False
    try:
        _wait_byte(r, b"b", "unshare(CLONE_NEWUSER) of the sandbox's namespace")
        # Only a process in B's parent A with CAP_SETUID there may write B's maps.
        write_file(f"/proc/{h2}/uid_map", f"0 {base} {count}\n")
        write_file(f"/proc/{h2}/gid_map", f"0 {base} {count}\n")
        os.write(to_c, b"%d\n" % h2)
        told = True
    finally:
        os.close(r)
        if not told:
            os.kill(h2, signal.SIGKILL)  # C waits on us, and H2 on C: nobody else ends it
        os.waitpid(h2, 0)  # H2 exits once C closes its end


def make_userns(base: int, count: int) -> int:
    """Create the sandbox's user namespace B mapping 0..count-1 onto base.. and return an
    fd to it.

    B is a child of an intermediate namespace A owned by host uid `base` and mapping
    base.. onto itself, with `NAMESPACE_BOUNDS` written into it: the kernel charges each
    namespace, inotify instance, queued signal or mqueue byte at every level up to init
    (kernel/ucount.c), so the sandbox's counts go to (A, base) against bounds root inside
    cannot raise, and to (init, base) instead of host root's (init, 0) that every sandbox
    shared. Inside, /proc/self/uid_map still reads `0 base count`.
    """
    r1, w1 = os.pipe2(os.O_CLOEXEC)
    r2, w2 = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.close(r1)
            os.close(w2)  # or H2's read never sees the parent's close
            _userns_helper(base, count, w1, r2)
        except BaseException:  # noqa: BLE001 - a forked child must never unwind into C
            code = 1
        os._exit(code)
    os.close(w1)
    os.close(r2)
    try:
        _wait_byte(r1, b"a", "unshare(CLONE_NEWUSER) of the intermediate namespace")
        # Only a process in init (A's parent) with CAP_SETUID may map A.
        write_file(f"/proc/{pid}/uid_map", f"{base} {base} {count}\n")
        write_file(f"/proc/{pid}/gid_map", f"{base} {base} {count}\n")
        os.write(w2, b"m")
        line = read_line(r1)
        if not line.isdigit():
            raise OSError(errno.EPERM, "the user namespace helper could not make the "
                                       "sandbox's namespace")
        return os.open(f"/proc/{int(line)}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.close(w2)
        os.close(r1)
        os.waitpid(pid, 0)


def read_line(fd: int, limit: int = 32) -> str:
    """One short line from a pipe our own child writes (EOF: what came)."""
    data = b""
    while not data.endswith(b"\n") and len(data) < limit:
        chunk = os.read(fd, 1)
        if not chunk:
            break
        data += chunk
    return data.decode().strip()


def become_ns_root() -> None:
    """After setns into a user namespace: be its root, with no supplementary groups."""
    os.setgroups([])
    os.setresgid(0, 0, 0)
    os.setresuid(0, 0, 0)


def join_and_make_userns(cgroup_files: list[str], uid_base: int, uid_count: int) -> int:
    with Step("joining the sandbox cgroup"):
        join_cgroup(cgroup_files)
    with Step("creating the user namespace"):
        return make_userns(uid_base, uid_count)


# ---------------------------------------------------------------- mount primitives


def mount_layer(vol: str, i: int, lower: str, target: str, userns: int) -> None:
    """Layer `i`: `lower` bound id-shifted, read-only, under an overlay at `target`."""
    staged = f"{vol}/lower/{i}"
    libc.idmapped_bind(lower, staged, userns, readonly=True)
    libc.mount("overlay", target, "overlay", 0,
               f"lowerdir={staged},upperdir={vol}/upper/{i},workdir={vol}/work/{i}")


def mount_dev(rootfs: str, shm_size: int, max_ptys: int, tty_gid: int) -> None:
    """/dev: a tmpfs with the host's harmless devices bound in, its own devpts (`tty_gid`:
    the host gid of the sandbox's tty group), shm and mqueue."""
    dev = f"{rootfs}/dev"
    libc.mount("tmpfs", dev, "tmpfs", libc.MS_NOSUID | libc.MS_NOEXEC, "mode=755,size=256k")
    for name in DEVICES:
        path = f"{dev}/{name}"
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o666))
        libc.mount(f"/dev/{name}", path, None, libc.MS_BIND)
    for name in ("pts", "shm", "mqueue"):
        os.mkdir(f"{dev}/{name}", 0o755)
    libc.mount("devpts", f"{dev}/pts", "devpts", libc.MS_NOSUID | libc.MS_NOEXEC,
               f"newinstance,ptmxmode=0666,mode=0620,gid={tty_gid},max={max_ptys}")
    libc.mount("shm", f"{dev}/shm", "tmpfs", libc.MS_NOSUID | libc.MS_NODEV,
               f"mode=1777,size={shm_size}")
    libc.mount("mqueue", f"{dev}/mqueue", "mqueue", PROC_FLAGS)
    for name, target in DEV_LINKS:
        os.symlink(target, f"{dev}/{name}")


def mount_cgroups(rootfs: str, mounts: list[tuple[str, str, str]], version: int) -> None:
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


def mask_paths(rootfs: str) -> None:
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
    for rel in WRITABLE_PATHS:
        path = f"{rootfs}/{rel}"
        if os.path.exists(path):
            libc.mount(path, path, None, libc.MS_BIND)
            libc.mount(None, path, None, libc.MS_BIND | libc.MS_REMOUNT | PROC_FLAGS)


def mount_unmasked(rootfs: str, owner: int) -> None:
    """A full proc and a full read-only sysfs under `UNMASKED_DIR`, out of reach inside.

    A user namespace may mount a new proc or sysfs (`unshare --mount-proc`, `ip netns
    exec`, a container's /proc) only while its mount namespace holds one of that type that
    no locked mount covers, and at least as read-only (fs/namespace.c mnt_already_visible
    scans every mount of the namespace, reachable or not). The locked masks cover /proc and
    /sys, so these two are what the kernel compares with. An empty read-only tmpfs (root's
    inside, `owner` on the host) then covers their directory: locked, it cannot be
    unmounted or moved, so no path inside leads to them, and `find /` meets an empty
    directory. Beneath it the directory is host root's, unmapped inside, and 0700."""
    base = f"{rootfs}/{UNMASKED_DIR}"
    os.mkdir(base, 0o700)
    os.mkdir(f"{base}/proc", 0o555)
    os.mkdir(f"{base}/sys", 0o555)
    libc.mount("proc", f"{base}/proc", "proc", PROC_FLAGS)
    libc.mount("sysfs", f"{base}/sys", "sysfs", PROC_FLAGS | libc.MS_RDONLY)
    libc.mount("tmpfs", base, "tmpfs", PROC_FLAGS | libc.MS_RDONLY,
               f"size=4k,mode=555,uid={owner},gid={owner}")


def bind_containers(source: str, rootfs: str, userns: int) -> None:
    """The image storage `source` (host root's on disk: root's inside) bound id-shifted at
    `CONTAINERS_TARGET`. Its mount point is made in the overlay as host root: unmapped
    inside, and covered by the bind."""
    target = f"{rootfs}/{CONTAINERS_TARGET}"
    os.makedirs(target, 0o700, exist_ok=True)
    libc.idmapped_bind(source, target, userns)


def pivot_root_here() -> None:
    """Make the working directory the root, the old root stacked under it and detached."""
    libc.pivot_root(".", ".")
    libc.umount2(".", libc.MNT_DETACH)
    os.chdir("/")


def stdio_to_null() -> None:
    null = os.open("/dev/null", os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)


# ---------------------------------------------------------------- the sequence


def build(w: int, spec: BootSpec, start_helper: Callable[[], int], helper_ctl: int) -> None:
    """C, cold: steps 1 to 4 in a child of the spawner. `start_helper` forks the sandbox's
    exec helper (on `helper_ctl`) once C is in the cgroup (spawner/enter.py)."""
    close_fds_except({w, helper_ctl})
    libc.prctl(libc.PR_SET_DUMPABLE, 0)
    userns = join_and_make_userns(spec.cgroup_files, spec.uid_base, spec.uid_count)
    build_in_userns(w, spec, userns, start_helper)


def park(w: int, control: int, spec: ParkSpec, start_helper: Callable[[], int],
         helper_ctl: int) -> None:
    """C, warm: step 1, then report parked and wait on `control` for the `BootSpec`
    (EOF instead: unparked, exit)."""
    close_fds_except({w, control, helper_ctl})
    libc.prctl(libc.PR_SET_DUMPABLE, 0)
    userns = join_and_make_userns(spec.cgroup_files, spec.uid_base, spec.uid_count)
    write_report(w, Report(parked=True))
    data = read_all(control)
    if not data:
        return  # unparked
    build_in_userns(w, loads(data), userns, start_helper)


def build_in_userns(w: int, spec: BootSpec, userns: int, start_helper: Callable[[], int]) -> None:
    """The exec helper, steps 2 and 3, then fork P (step 4); report PID 1's pid."""
    with Step("starting the exec helper"):
        # Forked by C, which is in the cgroup: it never migrates (spawner/enter.py). Before
        # the staging mount namespace, so that it lives in the host's.
        write_report(w, Report(helper=start_helper()))
    d = spec.dir
    rootfs = f"{d}/rootfs"
    init_fd = os.open(spec.init, os.O_RDONLY | os.O_CLOEXEC)
    with Step("mounting the root filesystem"):
        libc.unshare(libc.CLONE_NEWNS)
        libc.mount(None, "/", None, libc.MS_REC | libc.MS_PRIVATE)
        for i, layer in enumerate(spec.layers):
            target = f"{rootfs}/{layer.target}" if layer.target else rootfs
            mount_layer(d, i, layer.lower, target, userns)
        if spec.home:
            libc.idmapped_bind(spec.home.source, f"{rootfs}/{spec.home.target}", userns)
        if spec.containers:
            bind_containers(spec.containers, rootfs, userns)
        # P works relative to its working directory, the overlay's root: pivot_root(".", ".")
        os.chdir(rootfs)
    # P hands G the locked mount namespace over it (an fd; only a socket carries one).
    to_g, from_p = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with Step("creating the sandbox's namespaces"):
        g = start_pid1(w, spec, userns, init_fd, from_p)
        from_p.close()
        write_report(w, Report(pid=g))
        join_namespaces_of(g)
    # P keeps C's signal dispositions: the spawner's were reset when C was forked.
    p = os.fork()
    if p == 0:
        code = 0
        try:
            build_filesystem(spec, userns, to_g)
        except BaseException as e:  # noqa: BLE001 - a forked child must never unwind into C
            report_failure(w, getattr(e, "step", "building the filesystem"), e)
            code = 1
        os._exit(code)
    to_g.close()
    os.close(userns)
    write_report(w, Report(forked=p))
    # Reaped here, or a zombie of host root's would sit in the sandbox (its pid namespace
    # and cgroup) until the spawner or PID 1 took it over.
    os.waitpid(p, 0)


def start_pid1(w: int, spec: BootSpec, userns: int, init_fd: int,
               from_p: socket.socket) -> int:
    """Start G, PID 1 of the sandbox, in namespaces owned by the sandbox's root, and return
    its host pid. A namespace belongs to its creator's user namespace, so a helper child K
    enters `userns` and unshares them; its child G is PID 1 of the new pid namespace (a pid
    namespace without one cannot be joined: /proc/K/ns/pid_for_children is ENOENT) and waits
    in `pid1` for its mount namespace."""
    r, w1 = os.pipe2(os.O_CLOEXEC)
    k = os.fork()
    if k == 0:
        code = 0
        try:
            os.close(r)
            libc.setns(userns, libc.CLONE_NEWUSER)
            become_ns_root()
            libc.unshare(libc.CLONE_NEWUTS | libc.CLONE_NEWIPC | libc.CLONE_NEWNET
                         | libc.CLONE_NEWCGROUP | libc.CLONE_NEWPID)
            libc.sethostname(spec.hostname)
            g = os.fork()
            if g == 0:
                try:
                    pid1(init_fd, from_p)
                except BaseException as e:  # noqa: BLE001 - never unwind into K
                    report_failure(w, getattr(e, "step", "starting init"), e)
                os._exit(1)
            os.write(w1, b"%d" % g)
        except BaseException as e:  # noqa: BLE001 - a forked child must never unwind into C
            report_failure(w, "creating the sandbox's namespaces", e)
            code = 1
        os._exit(code)
    os.close(w1)
    try:
        answer = os.read(r, 32)  # one write of a few bytes: atomic on a pipe
    finally:
        os.close(r)
        os.waitpid(k, 0)
    if not answer.isdigit():
        raise OSError(errno.EPERM, "the namespace helper could not start PID 1")
    return int(answer)


# The namespaces of G that C joins; its pid namespace only for C's children.
SANDBOX_NAMESPACES = (("net", libc.CLONE_NEWNET), ("uts", libc.CLONE_NEWUTS),
                      ("ipc", libc.CLONE_NEWIPC), ("cgroup", libc.CLONE_NEWCGROUP),
                      ("pid", libc.CLONE_NEWPID))


def join_namespaces_of(pid: int) -> None:
    """Join `pid`'s namespaces but its user and mount namespaces: C stays host root (it
    holds every capability over a descendant user namespace's namespaces) in the staging
    mount namespace, which belongs to the host's user namespace."""
    for name, nstype in SANDBOX_NAMESPACES:
        fd = os.open(f"/proc/{pid}/ns/{name}", os.O_RDONLY | os.O_CLOEXEC)
        try:
            libc.setns(fd, nstype)
        finally:
            os.close(fd)


def build_filesystem(spec: BootSpec, userns: int, to_g: socket.socket) -> None:
    """P, host root in the sandbox's pid (as PID 2), net and cgroup namespaces and in the
    staging mount namespace: finish the filesystem, lock it in a mount namespace of the
    sandbox's user namespace, and hand that to G."""
    os.umask(0o022)
    rootfs = "."
    with Step("mounting /proc, /sys and /dev"):
        # As the sandbox's root, what P makes (tmpfs, mqueue and devpts roots, /dev's
        # entries) is root's inside, as when PID 1 made it inside the user namespace.
        libc.set_fs_ids(spec.uid_base, spec.uid_base)
        libc.mount("proc", f"{rootfs}/proc", "proc", PROC_FLAGS)
        libc.mount("sysfs", f"{rootfs}/sys", "sysfs", PROC_FLAGS | libc.MS_RDONLY)
        mount_dev(rootfs, spec.shm_size, spec.max_ptys, spec.uid_base + TTY_GID)
    with Step("mounting the cgroup filesystem"):
        mount_cgroups(rootfs, spec.cgroup_mounts, spec.cgroup_version)
    with Step("masking /proc and /sys paths"):
        mask_paths(rootfs)
    with Step("mounting the full /proc and /sys out of reach"):
        libc.set_fs_ids(0, 0)
        # devpts gives its root directory to root of the mounter's user namespace, host root
        # here: root's inside, as before.
        os.chown(f"{rootfs}/dev/pts", spec.uid_base, spec.uid_base)
        mount_unmasked(rootfs, spec.uid_base)
    with Step("pivot_root into the sandbox"):
        pivot_root_here()
    with Step("locking the mounts"):
        libc.setns(userns, libc.CLONE_NEWUSER)
        os.close(userns)
        become_ns_root()
        # The copy into a mount namespace of a less privileged user namespace locks every
        # mount P made (fs/namespace.c copy_mnt_ns, lock_mnt_tree).
        libc.unshare(libc.CLONE_NEWNS)
        mnt = os.open("/proc/self/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
        socket.send_fds(to_g, [b"m"], [mnt])


def pid1(init_fd: int, from_p: socket.socket) -> None:
    """G, PID 1 of the new pid namespace, root of the sandbox's user namespace: enter the
    mount namespace P built (EOF instead: P failed and said why) and become catatonit."""
    os.umask(0o022)
    # Its own session and process group: no signal sent to the daemon's group (a
    # terminal's Ctrl-C, `timeout`, a service manager) may reach the sandbox.
    os.setsid()
    with Step("entering the sandbox's mount namespace"):
        _, fds, _, _ = socket.recv_fds(from_p, 1, 1)
        from_p.close()
        if not fds:
            os._exit(1)  # P failed and reported why
        libc.setns(fds[0], libc.CLONE_NEWNS)  # root and cwd: the sandbox's /
        os.close(fds[0])
    stdio_to_null()
    with Step("limiting open files"):
        # Inherited by every process PID 1 and its children start; see enter.limit_open_files.
        resource.setrlimit(resource.RLIMIT_NOFILE, (MAX_OPEN_FILES, MAX_OPEN_FILES))
    with Step("installing the seccomp filter"):
        # Last, so PID 1's own setup above is not filtered; as the namespace's root G has
        # CAP_SYS_ADMIN there, which is what loading a filter without no_new_privs needs.
        seccomp.install()
    with Step("starting catatonit"):
        os.execve(init_fd, ["catatonit", "-P"], {"PATH": DEFAULT_PATH})
