"""The only module that calls the C library directly.

Every function declares its argument types and shares one `errcheck`, so a failing
call raises `OSError(errno, "<call>(...) failed: <strerror>")` and no caller ever looks
at a -1. Constants name the header they come from.
"""

from __future__ import annotations

import ctypes
import ctypes.util
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
PR_SET_NO_NEW_PRIVS = 38
PR_SET_CHILD_SUBREAPER = 36

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
