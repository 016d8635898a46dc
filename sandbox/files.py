"""Reading a sandbox's files from the host, safely against a hostile root inside.

The daemon is host root: whatever it opens, it opens with host root's rights. So a path
from the caller is never walked on the host. It is resolved by the kernel, with
openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS), relative to a process's root
directory (`/proc/<pid>/root`, opened through a pinned `/proc/<pid>` fd): absolute
symlinks and `..` stay inside that root, and /proc magic links (`/proc/1/root`,
`/proc/self/fd/N`, ...) are refused. The first open is `O_PATH`: it runs no driver's
open (a fifo cannot hang it, a device is never opened). Only a regular file (or, to
list, a directory) on a plain data filesystem (overlay, btrfs, tmpfs, ext4, xfs) is
then reopened for reading: files of proc, sysfs or cgroupfs would be read with host
root's privileges (kcore, kallsyms, ...), so they are refused.
"""

from __future__ import annotations

import errno
import os
import stat

from . import libc
from .errors import InvalidRequest, NotFound, SandboxError, TooLarge
from .protocol import Reason

KIB, MIB = 1 << 10, 1 << 20
DEFAULT_LIMIT = 8 * MIB
MAX_LIMIT = 16 * MIB
MAX_ENTRIES = 1000       # a listing's entries, the first by name
MAX_SCAN = 100_000       # names read from one directory at most

DATA_FILESYSTEMS = {
    libc.OVERLAYFS_SUPER_MAGIC: "overlay", libc.BTRFS_SUPER_MAGIC: "btrfs",
    libc.TMPFS_MAGIC: "tmpfs", libc.RAMFS_MAGIC: "ramfs", libc.EXT4_SUPER_MAGIC: "ext4",
    libc.XFS_SUPER_MAGIC: "xfs",
}
_KNOWN = {libc.PROC_SUPER_MAGIC: "proc", 0x62656572: "sysfs", 0x27E0EB: "cgroup",
          0x63677270: "cgroup2", 0x1CD1: "devpts", 0x19800202: "mqueue"}

_RESOLVE = libc.RESOLVE_IN_ROOT | libc.RESOLVE_NO_MAGICLINKS


def read_file(root_fd: int, path: str, limit: int = DEFAULT_LIMIT) -> bytes:
    """The bytes of the regular file `path` under `root_fd`, at most `limit` of them
    (TooLarge past it)."""
    pfd = _open_path(root_fd, path)
    try:
        st = os.fstat(pfd)
        if not stat.S_ISREG(st.st_mode):
            raise InvalidRequest(f"{path} is {_kind(st.st_mode)}, not a regular file",
                                 field="path", reason=Reason.NOT_REGULAR_FILE)
        _check_filesystem(pfd, path)
        if st.st_size > limit:
            raise TooLarge(f"{path} is {st.st_size} bytes, more than the limit of {limit} "
                           f"bytes (at most {MAX_LIMIT} with limit=)")
        fd = _reopen(pfd, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY, st)
    finally:
        os.close(pfd)
    try:
        chunks, got = [], 0
        while got <= limit:
            chunk = os.read(fd, min(limit + 1 - got, 1 * MIB))
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
        if got > limit:  # it grew while we read
            raise TooLarge(f"{path} is more than the limit of {limit} bytes")
        return b"".join(chunks)
    finally:
        os.close(fd)


def list_dir(root_fd: int, path: str) -> list[dict]:
    """The entries of directory `path` under `root_fd`, sorted by name, the first
    MAX_ENTRIES: {name, type (file, dir, link, other), size, mtime}. Symbolic links are
    reported, never followed."""
    pfd = _open_path(root_fd, path)
    try:
        st = os.fstat(pfd)
        if not stat.S_ISDIR(st.st_mode):
            raise InvalidRequest(f"{path} is {_kind(st.st_mode)}, not a directory", field="path",
                                 reason=Reason.NOT_DIRECTORY)
        _check_filesystem(pfd, path)
        fd = _reopen(pfd, os.O_RDONLY | os.O_DIRECTORY, st)
    finally:
        os.close(pfd)
    try:
        names = []
        with os.scandir(fd) as it:
            for entry in it:
                names.append(entry.name)
                if len(names) >= MAX_SCAN:
                    break
        names.sort()
        out = []
        for name in names:
            if len(out) >= MAX_ENTRIES:
                break
            try:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except (FileNotFoundError, NotADirectoryError):
                continue  # went away meanwhile
            out.append({"name": name, "type": _type(st.st_mode), "size": st.st_size,
                        "mtime": st.st_mtime})
        return out
    finally:
        os.close(fd)


def _open_path(root_fd: int, path: str) -> int:
    for _ in range(8):
        try:
            return libc.openat2(root_fd, path, os.O_PATH | os.O_CLOEXEC, _RESOLVE)
        except OSError as e:
            if e.errno == errno.EAGAIN:  # a rename or mount raced the walk: walk again
                continue
            raise _explain(e, path) from None
    raise SandboxError(f"{path} kept changing while it was looked up; try again",
                       reason=Reason.BUSY)


def _reopen(pfd: int, flags: int, st: os.stat_result) -> int:
    """A real open of the inode the O_PATH fd holds (no second walk, so nothing can be
    swapped in between)."""
    try:
        fd = os.open(f"/proc/self/fd/{pfd}", flags | os.O_CLOEXEC)
    except OSError as e:
        raise _explain(e, "the file") from None
    got = os.fstat(fd)
    if (got.st_dev, got.st_ino) != (st.st_dev, st.st_ino):  # cannot happen; never serve it
        os.close(fd)
        raise SandboxError("the file changed while it was opened; try again", reason=Reason.BUSY)
    return fd


def _check_filesystem(fd: int, path: str) -> None:
    kind = libc.fstatfs_type(fd)
    if kind not in DATA_FILESYSTEMS:
        name = _KNOWN.get(kind, hex(kind))
        raise InvalidRequest(f"{path} is on a {name} filesystem: only files on the sandbox's "
                             "disk or a tmpfs are served (use inspect for processes and "
                             "cgroups)", field="path", reason=Reason.SPECIAL_FILESYSTEM)


def _explain(e: OSError, path: str) -> SandboxError:
    if e.errno in (errno.ENOENT, errno.ENOTDIR):
        return NotFound(f"no such file or directory: {path}", reason=Reason.NO_SUCH_FILE)
    if e.errno == errno.ELOOP:
        return InvalidRequest(f"{path} leads through a /proc magic link or too many symbolic "
                              "links", field="path")
    if e.errno == errno.ENAMETOOLONG:
        return InvalidRequest("path is too long", field="path")
    if e.errno == errno.EACCES:
        return InvalidRequest(f"{path} cannot be opened: permission denied", field="path")
    if e.errno == errno.ENOSYS:
        return SandboxError("reading files needs openat2 (Linux >= 5.6)",
                            reason=Reason.HOST_UNSUPPORTED)
    return SandboxError(f"{path} cannot be opened: {os.strerror(e.errno or 0)}")


def _type(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISLNK(mode):
        return "link"
    return "other"


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a fifo"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISLNK, "a symbolic link")):
        if test(mode):
            return name
    return "a regular file" if stat.S_ISREG(mode) else "not a regular file"
