"""The only module that calls the C library directly (and libseccomp, for one program).

Every function declares its argument types and shares one `errcheck`, so a failing
call raises `OSError(errno, "<call>(...) failed: <strerror>")` and no caller ever looks
at a -1 (libseccomp's own -errno returns have theirs). Constants name the header they
come from.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import platform

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)

# linux/sched.h
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

# sys/mount.h, linux/mount.h
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_NOATIME = 1024
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MNT_DETACH = 2
MOUNT_ATTR_RDONLY = 0x00000001
MOUNT_ATTR_IDMAP = 0x00100000
OPEN_TREE_CLONE = 1
OPEN_TREE_CLOEXEC = os.O_CLOEXEC
AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000
AT_FDCWD = -100
MOVE_MOUNT_F_EMPTY_PATH = 0x00000004

# linux/openat2.h
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_IN_ROOT = 0x10

# linux/magic.h: filesystems whose regular files are plain data (see sandbox/files.py)
OVERLAYFS_SUPER_MAGIC = 0x794C7630
BTRFS_SUPER_MAGIC = 0x9123683E
TMPFS_MAGIC = 0x01021994
RAMFS_MAGIC = 0x858458F6
EXT4_SUPER_MAGIC = 0xEF53
XFS_SUPER_MAGIC = 0x58465342
PROC_SUPER_MAGIC = 0x9FA0

# linux/prctl.h
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_SECCOMP = 22
PR_SET_NO_NEW_PRIVS = 38
PR_SET_CHILD_SUBREAPER = 36

# linux/seccomp.h
SECCOMP_MODE_FILTER = 2

# seccomp.h (libseccomp 2.5): actions and filter attributes
SCMP_ACT_KILL_PROCESS = 0x80000000
SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_FLTATR_ACT_BADARCH = 2
NR_SCMP_ERROR = -1  # __NR_SCMP_ERROR: a name libseccomp does not know on any architecture


def SCMP_ACT_ERRNO(err: int) -> int:  # noqa: N802 - the macro's name
    return 0x00050000 | (err & 0x0000FFFF)


# asm/unistd_64.h (x86_64) and asm-generic/unistd.h (aarch64)
_SYSCALLS = {
    "x86_64": {"pivot_root": 155, "open_tree": 428, "move_mount": 429, "mount_setattr": 442,
               "pidfd_open": 434, "pidfd_send_signal": 424, "openat2": 437},
    "aarch64": {"pivot_root": 41, "open_tree": 428, "move_mount": 429, "mount_setattr": 442,
                "pidfd_open": 434, "pidfd_send_signal": 424, "openat2": 437},
}
_NR = _SYSCALLS.get(platform.machine())


def _errcheck(result, func, args):
    if result == -1:
        err = ctypes.get_errno()
        shown = ", ".join(repr(a.value if hasattr(a, "value") else a) for a in args)
        raise OSError(err, f"{func.__name__}({shown}) failed: {os.strerror(err)}")
    return result


def _declare(name, restype, *argtypes):
    func = getattr(_libc, name)
    func.restype = restype
    func.argtypes = list(argtypes)
    func.errcheck = _errcheck
    return func


_mount = _declare("mount", ctypes.c_int, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p,
                  ctypes.c_ulong, ctypes.c_char_p)
_umount2 = _declare("umount2", ctypes.c_int, ctypes.c_char_p, ctypes.c_int)
_unshare = _declare("unshare", ctypes.c_int, ctypes.c_int)
_setns = _declare("setns", ctypes.c_int, ctypes.c_int, ctypes.c_int)
_sethostname = _declare("sethostname", ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t)
_prctl = _declare("prctl", ctypes.c_int, ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong,
                  ctypes.c_ulong, ctypes.c_ulong)
_syscall = _declare("syscall", ctypes.c_long, ctypes.c_long)
_fstatfs = _declare("fstatfs", ctypes.c_int, ctypes.c_int, ctypes.c_void_p)


class _MountAttr(ctypes.Structure):
    # linux/mount.h: struct mount_attr
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


class _OpenHow(ctypes.Structure):
    # linux/openat2.h: struct open_how
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                ("resolve", ctypes.c_uint64)]


def _b(value):
    if value is None:
        return None
    return os.fsencode(value)


def mount(source, target, fstype=None, flags=0, data=None) -> None:
    _mount(_b(source), _b(target), _b(fstype), flags, _b(data))


def umount2(target, flags=0) -> None:
    _umount2(_b(target), flags)


def unshare(flags: int) -> None:
    _unshare(flags)


def setns(fd: int, nstype: int = 0) -> None:
    _setns(fd, nstype)


def sethostname(name: str) -> None:
    raw = name.encode()
    _sethostname(raw, len(raw))


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    return _prctl(option, arg2, arg3, arg4, arg5)


def _sys(name: str, *args) -> int:
    if _NR is None:
        raise OSError(38, f"{name}: unsupported architecture {platform.machine()}")
    return _syscall(_NR[name], *args)


def pivot_root(new_root, put_old) -> None:
    _sys("pivot_root", ctypes.c_char_p(_b(new_root)), ctypes.c_char_p(_b(put_old)))


def open_tree(path, flags: int = OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC, dirfd: int = AT_FDCWD) -> int:
    return _sys("open_tree", ctypes.c_int(dirfd), ctypes.c_char_p(_b(path)), ctypes.c_uint(flags))


def move_mount(from_fd: int, to_path, flags: int = MOVE_MOUNT_F_EMPTY_PATH) -> None:
    _sys("move_mount", ctypes.c_int(from_fd), ctypes.c_char_p(b""), ctypes.c_int(AT_FDCWD),
         ctypes.c_char_p(_b(to_path)), ctypes.c_uint(flags))


def mount_setattr(fd: int, attr_set: int, userns_fd: int = 0, recursive: bool = False) -> None:
    attr = _MountAttr(attr_set=attr_set, attr_clr=0, propagation=0, userns_fd=userns_fd)
    flags = AT_EMPTY_PATH | (AT_RECURSIVE if recursive else 0)
    _sys("mount_setattr", ctypes.c_int(fd), ctypes.c_char_p(b""), ctypes.c_uint(flags),
         ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr)))


def idmapped_bind(source, target, userns_fd: int, readonly: bool = False) -> None:
    """Bind `source` onto `target` with ids shifted through `userns_fd`'s mapping."""
    fd = open_tree(source)
    try:
        attrs = MOUNT_ATTR_IDMAP | (MOUNT_ATTR_RDONLY if readonly else 0)
        mount_setattr(fd, attrs, userns_fd)
        move_mount(fd, target)
    finally:
        os.close(fd)


def pidfd_open(pid: int) -> int:
    return _sys("pidfd_open", ctypes.c_int(pid), ctypes.c_uint(0))


def pidfd_send_signal(pidfd: int, sig: int) -> None:
    _sys("pidfd_send_signal", ctypes.c_int(pidfd), ctypes.c_int(sig), None, ctypes.c_uint(0))


def openat2(dirfd: int, path, flags: int, resolve: int, mode: int = 0) -> int:
    """openat2(2): open `path` relative to `dirfd` under the RESOLVE_* rules (Linux >= 5.6)."""
    how = _OpenHow(flags=flags, mode=mode, resolve=resolve)
    return _sys("openat2", ctypes.c_int(dirfd), ctypes.c_char_p(_b(path)), ctypes.byref(how),
                ctypes.c_size_t(ctypes.sizeof(how)))


def fstatfs_type(fd: int) -> int:
    """f_type of fstatfs(2): which filesystem `fd` lies on (the *_MAGIC numbers above).
    struct statfs starts with f_type (a long) on x86_64 and aarch64; 120 bytes in all."""
    buf = ctypes.create_string_buffer(256)
    _fstatfs(fd, buf)
    return ctypes.c_long.from_buffer(buf).value & 0xFFFFFFFF


# ---------------------------------------------------------------- libseccomp (libseccomp2)

def _scmp_errcheck(result, func, args):
    # libseccomp returns -errno itself instead of -1 and errno (seccomp.h)
    if isinstance(result, int) and result < 0:
        raise OSError(-result, f"{func.__name__}() failed: {os.strerror(-result)}")
    return result


def _scmp_declare(lib, name, restype, *argtypes, check=True):
    func = getattr(lib, name)
    func.restype = restype
    func.argtypes = list(argtypes)
    if check:
        func.errcheck = _scmp_errcheck
    return func


def seccomp_program(default: int, bad_arch: int, arches: list[str],
                    rules: list[tuple[str, int]]) -> bytes:
    """A classic-BPF seccomp program built by libseccomp: `default` for any syscall of the
    native architecture and of `arches` (libseccomp names: "x86", "arm"), `bad_arch` for
    any other ABI, and each (syscall name, action) of `rules` on every architecture that
    has that syscall: the `struct sock_filter` array, for `SeccompProgram`. libseccomp is
    used only here, once, and is not needed where the program is loaded."""
    lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)  # Debian's libseccomp2
    init = _scmp_declare(lib, "seccomp_init", ctypes.c_void_p, ctypes.c_uint32, check=False)
    release = _scmp_declare(lib, "seccomp_release", None, ctypes.c_void_p, check=False)
    attr_set = _scmp_declare(lib, "seccomp_attr_set", ctypes.c_int, ctypes.c_void_p,
                             ctypes.c_int, ctypes.c_uint32)
    arch_resolve = _scmp_declare(lib, "seccomp_arch_resolve_name", ctypes.c_uint32,
                                 ctypes.c_char_p, check=False)
    arch_add = _scmp_declare(lib, "seccomp_arch_add", ctypes.c_int, ctypes.c_void_p,
                             ctypes.c_uint32)
    resolve = _scmp_declare(lib, "seccomp_syscall_resolve_name", ctypes.c_int, ctypes.c_char_p,
                            check=False)
    # variadic in C; with no argument comparisons (arg_cnt 0) nothing follows arg_cnt
    rule_add = _scmp_declare(lib, "seccomp_rule_add", ctypes.c_int, ctypes.c_void_p,
                             ctypes.c_uint32, ctypes.c_int, ctypes.c_uint)
    export = _scmp_declare(lib, "seccomp_export_bpf", ctypes.c_int, ctypes.c_void_p, ctypes.c_int)
    ctx = init(default)
    if not ctx:
        raise OSError(errno.ENOMEM, "seccomp_init() failed")
    fd = -1
    try:
        attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, bad_arch)
        for arch in arches:
            token = arch_resolve(arch.encode())
            if not token:
                raise OSError(errno.EINVAL, f"libseccomp knows no architecture {arch!r}")
            try:
                arch_add(ctx, token)
            except OSError as e:
                if e.errno != errno.EEXIST:  # the native one: already there
                    raise
        for name, action in rules:
            nr = resolve(name.encode())
            if nr == NR_SCMP_ERROR:
                raise OSError(errno.EINVAL, f"libseccomp knows no syscall {name!r}")
            rule_add(ctx, action, nr, 0)
        fd = os.memfd_create("seccomp-bpf", os.MFD_CLOEXEC)
        export(ctx, fd)
        os.lseek(fd, 0, os.SEEK_SET)
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        if fd >= 0:
            os.close(fd)
        release(ctx)


class _SockFprog(ctypes.Structure):
    # linux/filter.h: struct sock_fprog (len counts 8-byte struct sock_filter)
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


class SeccompProgram:
    """A BPF program (from `seccomp_program`) with the `struct sock_fprog` that points at
    it, both made once: loading it in a fresh child is then the one prctl (making the
    ctypes objects in each child cost more than the kernel's load)."""

    def __init__(self, code: bytes):
        self.code = code
        self._buf = ctypes.create_string_buffer(code, len(code))
        self._fprog = _SockFprog(len=len(code) // 8, filter=ctypes.addressof(self._buf))

    def load(self) -> None:
        """Install it as this thread's seccomp filter, for good: inherited by children,
        kept across execve. Needs no_new_privs or CAP_SYS_ADMIN in the caller's user
        namespace."""
        prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(self._fprog))


# setfsuid(2) and setfsgid(2) return the previous id and never set errno, so the shared
# errcheck cannot tell a refusal; `set_fs_ids` asks again instead (an invalid id, -1,
# changes nothing and returns the current one).
_setfsuid = _libc.setfsuid
_setfsuid.restype = ctypes.c_int
_setfsuid.argtypes = [ctypes.c_uint]
_setfsgid = _libc.setfsgid
_setfsgid.restype = ctypes.c_int
_setfsgid.argtypes = [ctypes.c_uint]
_NO_ID = 0xFFFFFFFF


def set_fs_ids(uid: int, gid: int) -> None:
    """Create files, directories and filesystem roots (tmpfs, mqueue, devpts' ptmx) as
    `uid`:`gid` from now on; dropping host uid 0 this way also drops the file
    capabilities (CAP_DAC_OVERRIDE, CAP_CHOWN...), setting it back restores them."""
    _setfsgid(gid)
    _setfsuid(uid)
    if _setfsuid(_NO_ID) != uid or _setfsgid(_NO_ID) != gid:
        raise OSError(errno.EPERM, f"setfsuid({uid})/setfsgid({gid}) failed: "
                                   f"{os.strerror(errno.EPERM)}")
