"""Building a sandbox: its user namespace, its root filesystem and PID 1's world.

This runs in a fresh child C of the spawner (`server.py` forks it), still host root:
  1. C joins the sandbox cgroup and makes the sandbox's user namespace (a helper child
     unshares it, C writes the uid/gid maps and keeps an fd to it). A warm slot is a C
     parked after this step (`park`) until the rest of its `BootSpec` arrives.
  2. In a private staging mount namespace C mounts the root filesystem: each image
     layer is an id-shifted (idmapped) read-only bind under an overlay whose upper dir
     is in the sandbox's storage volume; the home volume is bound id-shifted at /root.
     These mounts were made by host root, so inside the sandbox they are locked.
  3. C enters the user namespace and unshares mnt, uts, ipc, net, cgroup and pid
     namespaces, so that they are owned by the sandbox's root; then it forks G.
  4. G is PID 1: it mounts /proc, /sys (read-only), /dev, devpts (at most
     `spec.MAX_PTYS` terminals), cgroupfs, masks Docker's masked paths, pivot_root()s,
     installs the seccomp filter (`seccomp.py`) and execs catatonit from an fd it opened
     on the host, so no path inside the sandbox decides what runs as PID 1.

Each kernel operation is one small function; `build_in_userns` and `init` are the
sequence. `Step` names what was being done in any error, and the child reports its
result or its failure to the spawner as `spec.Report` lines on the pipe `w`.
"""

from __future__ import annotations

import errno
import os
import resource

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
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
DEV_LINKS = (("ptmx", "pts/ptmx"), ("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
             ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2"))
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


def make_userns(base: int, count: int) -> int:
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
        write_file(f"/proc/{pid}/uid_map", f"0 {base} {count}\n")
        write_file(f"/proc/{pid}/gid_map", f"0 {base} {count}\n")
        return os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.close(w2)
        os.close(r1)
        os.waitpid(pid, 0)


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


def mount_dev(rootfs: str, shm_size: int, max_ptys: int) -> None:
    dev = f"{rootfs}/dev"
    libc.mount("tmpfs", dev, "tmpfs", libc.MS_NOSUID | libc.MS_NOEXEC, "mode=755,size=256k")
    for name in DEVICES:
        path = f"{dev}/{name}"
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o666))
        libc.mount(f"/dev/{name}", path, None, libc.MS_BIND)
    for name in ("pts", "shm", "mqueue"):
        os.mkdir(f"{dev}/{name}", 0o755)
    libc.mount("devpts", f"{dev}/pts", "devpts", libc.MS_NOSUID | libc.MS_NOEXEC,
               f"newinstance,ptmxmode=0666,mode=0620,gid=5,max={max_ptys}")
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


def build(w: int, spec: BootSpec) -> None:
    """C, cold: steps 1 to 4 in a child of the spawner."""
    close_fds_except({w})
    libc.prctl(libc.PR_SET_DUMPABLE, 0)
    build_in_userns(w, spec, join_and_make_userns(spec.cgroup_files, spec.uid_base,
                                                  spec.uid_count))


def park(w: int, control: int, spec: ParkSpec) -> None:
    """C, warm: step 1, then report parked and wait on `control` for the `BootSpec`
    (EOF instead: unparked, exit)."""
    close_fds_except({w, control})
    libc.prctl(libc.PR_SET_DUMPABLE, 0)
    userns = join_and_make_userns(spec.cgroup_files, spec.uid_base, spec.uid_count)
    write_report(w, Report(parked=True))
    data = read_all(control)
    if not data:
        return  # unparked
    build_in_userns(w, loads(data), userns)


def build_in_userns(w: int, spec: BootSpec, userns: int) -> None:
    """Steps 2 and 3, then fork G (step 4) and report its pid."""
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
        # G works relative to its working directory: as the sandbox's root it may not
        # be allowed to walk the host path above the volume (a state dir under a 0700
        # directory). unshare(CLONE_NEWNS) below moves the cwd into the new namespace.
        os.chdir(rootfs)
    with Step("entering the user namespace"):
        libc.setns(userns, libc.CLONE_NEWUSER)
        os.close(userns)
        become_ns_root()
        libc.unshare(libc.CLONE_NEWNS | libc.CLONE_NEWUTS | libc.CLONE_NEWIPC | libc.CLONE_NEWNET
                     | libc.CLONE_NEWCGROUP | libc.CLONE_NEWPID)
        libc.sethostname(spec.hostname)
    # G keeps C's signal dispositions: the spawner's were reset when C was forked.
    g = os.fork()
    if g == 0:
        code = 0
        try:
            init(spec, init_fd)
        except BaseException as e:  # noqa: BLE001 - a forked child must never unwind into C
            report_failure(w, getattr(e, "step", "starting init"), e)
            code = 1
        os._exit(code)
    write_report(w, Report(pid=g))


def init(spec: BootSpec, init_fd: int) -> None:
    """G, PID 1 of the new pid namespace: finish the filesystem and become catatonit."""
    os.umask(0o022)
    # Its own session and process group: no signal sent to the daemon's group (a
    # terminal's Ctrl-C, `timeout`, a service manager) may reach the sandbox.
    os.setsid()
    rootfs = "."
    with Step("mounting /proc, /sys and /dev"):
        # A bind of the root onto itself is owned by this (the sandbox's) mount
        # namespace; pivot_root refuses the locked mount C made. Re-entering by name
        # from the parent directory lands on that new top mount.
        libc.mount(".", ".", None, libc.MS_BIND | libc.MS_REC)
        os.chdir("..")
        os.chdir("rootfs")
        libc.mount("proc", f"{rootfs}/proc", "proc", PROC_FLAGS)
        libc.mount("sysfs", f"{rootfs}/sys", "sysfs", PROC_FLAGS | libc.MS_RDONLY)
        mount_dev(rootfs, spec.shm_size, spec.max_ptys)
    with Step("mounting the cgroup filesystem"):
        mount_cgroups(rootfs, spec.cgroup_mounts, spec.cgroup_version)
    with Step("masking /proc and /sys paths"):
        mask_paths(rootfs)
    with Step("pivot_root into the sandbox"):
        pivot_root_here()
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
