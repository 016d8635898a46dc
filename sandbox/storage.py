"""Per-sandbox disk limits: a btrfs pool on a loop device, one subvolume + qgroup per volume.

The host's own filesystem may have no usable quota support (ext4 without the quota
feature, a kernel built without it), so the engine keeps its writable data in a sparse
file formatted as btrfs and mounted through a loop device. Every sandbox's writable
layer and every learner's home is a subvolume there; a write beyond its limit fails
with EDQUOT inside the sandbox.

How a limit is kept:

- Each volume (subvolume id N, qgroup 0/N) is the only member of a level-1 qgroup 1/N
  that carries the limit on referenced bytes. Anyone who may write a directory may
  create a subvolume in it, and a nested subvolume gets its own qgroup 0/M outside the
  volume's. With simple quotas (Linux >= 6.7) a subvolume created inside a volume joins
  the parent's level-1 qgroup by itself, so the learner's nested subvolumes count
  against the same limit. With full qgroups (older kernels) they do not; `quota_mode`
  says which one the pool runs, and the engine's seccomp filter should refuse btrfs
  ioctls there.
- btrfs reserves qgroup space when data is written into the page cache, so write()
  itself fails with EDQUOT once the reservations plus what the last commit counted
  reach the limit; no fsync is needed for the limit to bite. The counters that `usage`
  reads move at transaction commit; freed space comes back at commit too, and btrfs
  commits by itself when a reservation fails before it gives up.
- Deleting a subvolume is one ioctl; its extents are freed by the filesystem's cleaner
  thread after the next commit. The kernel then removes 0/N itself (older kernels leave
  it); 1/N can only go once its member is gone, so `reap()` removes both later, and
  `ensure()` finds the ones a restart left behind.

Volume operations are single ioctls on the mounted pool (`linux/btrfs.h`); only
formatting the pool runs a program (mkfs.btrfs).
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import stat
import struct
import subprocess
import threading
import time
from pathlib import Path

from . import libc
from .config import HostConfig
from .errors import (Conflict, HostUnsupported, InvalidRequest, NotFound, SandboxError,
                     explain_oserror)
from .protocol import Reason

VOLUME_KINDS = ("sandboxes", "homes")
VOLUME_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

# linux/btrfs.h
BTRFS_IOC_SYNC = 0x9408                # _IO(0x94, 8)
BTRFS_IOC_SUBVOL_CREATE = 0x5000940E   # _IOW(0x94, 14, struct btrfs_ioctl_vol_args)
BTRFS_IOC_SNAP_DESTROY = 0x5000940F    # _IOW(0x94, 15, struct btrfs_ioctl_vol_args)
BTRFS_IOC_TREE_SEARCH = 0xD0009411     # _IOWR(0x94, 17, struct btrfs_ioctl_search_args)
BTRFS_IOC_INO_LOOKUP = 0xD0009412      # _IOWR(0x94, 18, struct btrfs_ioctl_ino_lookup_args)
BTRFS_IOC_START_SYNC = 0x80089418      # _IOR(0x94, 24, __u64)
BTRFS_IOC_QUOTA_CTL = 0xC0109428       # _IOWR(0x94, 40, struct btrfs_ioctl_quota_ctl_args)
BTRFS_IOC_QGROUP_ASSIGN = 0x40189429   # _IOW(0x94, 41, struct btrfs_ioctl_qgroup_assign_args)
BTRFS_IOC_QGROUP_CREATE = 0x4010942A   # _IOW(0x94, 42, struct btrfs_ioctl_qgroup_create_args)
BTRFS_IOC_QGROUP_LIMIT = 0x8030942B    # _IOR(0x94, 43, struct btrfs_ioctl_qgroup_limit_args)
BTRFS_IOC_QUOTA_RESCAN_WAIT = 0x942E   # _IO(0x94, 46)
BTRFS_VOL_ARGS_SIZE = 4096             # struct btrfs_ioctl_vol_args: __s64 fd; char name[4088]
BTRFS_SEARCH_ARGS_SIZE = 4096          # struct btrfs_ioctl_search_args: key (104 bytes) + buf
BTRFS_SEARCH_KEY_SIZE = 104
BTRFS_SEARCH_HEADER_SIZE = 32
BTRFS_QUOTA_CTL_ENABLE = 1
BTRFS_QUOTA_CTL_ENABLE_SIMPLE_QUOTA = 4  # Linux >= 6.7
BTRFS_QGROUP_LIMIT_MAX_RFER = 1 << 0
BTRFS_QGROUP_CLEAR = 2**64 - 1         # fs/btrfs/qgroup.c CLEAR_VALUE: "no limit"
BTRFS_QGROUP_LEVEL_SHIFT = 48
# linux/btrfs_tree.h
BTRFS_QUOTA_TREE_OBJECTID = 8
BTRFS_FIRST_FREE_OBJECTID = 256        # the root directory inode of every subvolume
BTRFS_QGROUP_STATUS_KEY = 240
BTRFS_QGROUP_INFO_KEY = 242
BTRFS_QGROUP_LIMIT_KEY = 244
BTRFS_QGROUP_STATUS_FLAG_SIMPLE_MODE = 1 << 3

# linux/loop.h
LOOP_SET_FD = 0x4C00
LOOP_SET_STATUS64 = 0x4C04
LOOP_CONFIGURE = 0x4C0A
LOOP_CTL_GET_FREE = 0x4C82
LO_FLAGS_AUTOCLEAR = 4
LOOP_INFO64_SIZE = 232                 # struct loop_info64
LOOP_INFO64_FLAGS_OFFSET = 52          # lo_flags
LOOP_INFO64_NAME_OFFSET = 56           # lo_file_name[64]
LOOP_CONFIG_SIZE = 304                 # struct loop_config: fd, block_size, loop_info64, reserved
LOOP_MAJOR = 7                         # linux/major.h

U64_MAX = 2**64 - 1


# --- kernel operations, one each ------------------------------------------------------


def _vol_args(name: str) -> bytearray:
    buf = bytearray(BTRFS_VOL_ARGS_SIZE)
    raw = name.encode()
    buf[8:8 + len(raw)] = raw
    return buf


def subvol_create(parent_fd: int, name: str) -> None:
    fcntl.ioctl(parent_fd, BTRFS_IOC_SUBVOL_CREATE, _vol_args(name))


def subvol_destroy(parent_fd: int, name: str) -> None:
    # As root this deletes a subvolume whatever it holds, in one transaction; the
    # extents are freed later by the filesystem's cleaner thread.
    fcntl.ioctl(parent_fd, BTRFS_IOC_SNAP_DESTROY, _vol_args(name))


def subvol_id(fd: int) -> int:
    """The id of the subvolume `fd` lies in (its qgroup is 0/id)."""
    # struct btrfs_ioctl_ino_lookup_args: __u64 treeid, objectid; char name[4080]
    buf = bytearray(4096)
    struct.pack_into("=QQ", buf, 0, 0, BTRFS_FIRST_FREE_OBJECTID)
    fcntl.ioctl(fd, BTRFS_IOC_INO_LOOKUP, buf)
    return struct.unpack_from("=Q", buf, 0)[0]


def start_commit(fd: int) -> None:
    """Start a transaction commit without waiting for it (it wakes the cleaner too)."""
    fcntl.ioctl(fd, BTRFS_IOC_START_SYNC, bytearray(8))


def quota_enable(fs_fd: int) -> None:
    """Turn quotas on: simple quotas where the kernel has them, else full qgroups."""
    # struct btrfs_ioctl_quota_ctl_args: __u64 cmd; __u64 status. On a pool that has
    # quotas on already, either command leaves them as they are.
    try:
        fcntl.ioctl(fs_fd, BTRFS_IOC_QUOTA_CTL,
                    bytearray(struct.pack("=QQ", BTRFS_QUOTA_CTL_ENABLE_SIMPLE_QUOTA, 0)))
    except OSError as e:
        if e.errno != errno.EINVAL:  # EINVAL: a kernel before 6.7
            raise
        fcntl.ioctl(fs_fd, BTRFS_IOC_QUOTA_CTL,
                    bytearray(struct.pack("=QQ", BTRFS_QUOTA_CTL_ENABLE, 0)))
    fcntl.ioctl(fs_fd, BTRFS_IOC_QUOTA_RESCAN_WAIT)


def qgroup_create(fd: int, qgroupid: int) -> None:
    # struct btrfs_ioctl_qgroup_create_args: __u64 create; __u64 qgroupid
    fcntl.ioctl(fd, BTRFS_IOC_QGROUP_CREATE, struct.pack("=QQ", 1, qgroupid))


def qgroup_remove(fd: int, qgroupid: int) -> None:
    fcntl.ioctl(fd, BTRFS_IOC_QGROUP_CREATE, struct.pack("=QQ", 0, qgroupid))


def qgroup_assign(fd: int, member: int, parent: int) -> None:
    # struct btrfs_ioctl_qgroup_assign_args: __u64 assign; __u64 src; __u64 dst
    fcntl.ioctl(fd, BTRFS_IOC_QGROUP_ASSIGN, struct.pack("=QQQ", 1, member, parent))


def qgroup_limit(fd: int, qgroupid: int, max_rfer: int | None) -> None:
    """Limit the bytes referenced by `qgroupid`; None removes the limit."""
    # struct btrfs_ioctl_qgroup_limit_args: __u64 qgroupid; struct btrfs_qgroup_limit
    # {flags, max_rfer, max_excl, rsv_rfer, rsv_excl}. With the flag set the value is the
    # new limit and all ones removes it; 0 would be a limit of zero bytes.
    buf = bytearray(struct.pack("=6Q", qgroupid, BTRFS_QGROUP_LIMIT_MAX_RFER,
                                BTRFS_QGROUP_CLEAR if max_rfer is None else max_rfer, 0, 0, 0))
    fcntl.ioctl(fd, BTRFS_IOC_QGROUP_LIMIT, buf)


def quota_items(fd: int, key_type: int, first: int, last: int, limit: int = 64):
    """(offset, item bytes) of quota tree items (0, key_type, first..last), in key order."""
    # struct btrfs_ioctl_search_key: tree_id, min/max objectid, min/max offset,
    # min/max transid (7 x __u64), min/max type, nr_items, unused (4 x __u32), 4 x __u64;
    # the answer is nr_items x (struct btrfs_ioctl_search_header {transid, objectid,
    # offset, __u32 type, __u32 len} + the item).
    found = []
    while first <= last and len(found) < limit:
        buf = bytearray(BTRFS_SEARCH_ARGS_SIZE)
        struct.pack_into("=7Q4I", buf, 0, BTRFS_QUOTA_TREE_OBJECTID, 0, 0, first, last,
                         0, U64_MAX, key_type, key_type, limit - len(found), 0)
        fcntl.ioctl(fd, BTRFS_IOC_TREE_SEARCH, buf)
        count = struct.unpack_from("=I", buf, 64)[0]
        if count == 0:
            break
        pos = BTRFS_SEARCH_KEY_SIZE
        for _ in range(count):
            _transid, objectid, offset, kind, length = struct.unpack_from("=QQQII", buf, pos)
            pos += BTRFS_SEARCH_HEADER_SIZE
            if objectid == 0 and kind == key_type:
                found.append((offset, bytes(buf[pos:pos + length])))
            pos += length
            first = offset + 1
    return found


def quota_item(fd: int, key_type: int, offset: int) -> bytes | None:
    items = quota_items(fd, key_type, offset, offset, 1)
    return items[0][1] if items else None


def level1(subvolid: int) -> int:
    return (1 << BTRFS_QGROUP_LEVEL_SHIFT) | subvolid


def loop_attach(image: Path) -> tuple[str, int]:
    """Bind `image` to a free loop device that detaches itself when its last user closes it.

    Returns the device and an open fd on it: close that once the device is mounted (or
    to give it up), since closing the last reference detaches it.
    """
    try:
        ctl = os.open("/dev/loop-control", os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        raise HostUnsupported("/dev/loop-control is missing: load the loop module "
                              "(modprobe loop) or give the container /dev/loop-control") from None
    backing = os.open(image, os.O_RDWR | os.O_CLOEXEC)
    try:
        info = bytearray(LOOP_INFO64_SIZE)
        struct.pack_into("=I", info, LOOP_INFO64_FLAGS_OFFSET, LO_FLAGS_AUTOCLEAR)
        name = os.fsencode(image)[-63:]
        info[LOOP_INFO64_NAME_OFFSET:LOOP_INFO64_NAME_OFFSET + len(name)] = name
        config = bytearray(LOOP_CONFIG_SIZE)
        struct.pack_into("=II", config, 0, backing, 0)
        config[8:8 + LOOP_INFO64_SIZE] = info
        for _ in range(8):  # another process may take the free device before we bind it
            n = fcntl.ioctl(ctl, LOOP_CTL_GET_FREE)
            dev = f"/dev/loop{n}"
            if not os.path.exists(dev):  # no udev/devtmpfs in some containers
                os.mknod(dev, 0o660 | stat.S_IFBLK, os.makedev(LOOP_MAJOR, n))
            loop = os.open(dev, os.O_RDWR | os.O_CLOEXEC)
            try:
                fcntl.ioctl(loop, LOOP_CONFIGURE, config)
                return dev, loop
            except OSError as e:
                if e.errno in (errno.EINVAL, errno.ENOTTY):
                    # Kernels before 5.8 have no LOOP_CONFIGURE.
                    try:
                        fcntl.ioctl(loop, LOOP_SET_FD, backing)
                        fcntl.ioctl(loop, LOOP_SET_STATUS64, bytes(info))
                        return dev, loop
                    except OSError as e2:
                        e = e2
                os.close(loop)
                if e.errno != errno.EBUSY:
                    raise explain_oserror(f"attaching {image} to {dev}", e) from None
        raise HostUnsupported("no free loop device could be claimed (all busy); "
                              "detach unused ones with `losetup -D`")
    finally:
        os.close(backing)
        os.close(ctl)


def loop_device_of(image: Path) -> str | None:
    """The loop device already bound to `image`, if any."""
    target = os.fsencode(os.path.realpath(image))
    for entry in Path("/sys/block").glob("loop*"):
        try:
            backing = (entry / "loop" / "backing_file").read_bytes().rstrip(b"\n")
        except FileNotFoundError:
            continue
        if backing == target:
            return f"/dev/{entry.name}"
    return None


def _unescape(field: str) -> str:
    # /proc/self/mountinfo writes space, tab, newline and backslash as octal escapes.
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mounted_fstype(path: Path) -> str | None:
    """The filesystem type mounted exactly at `path` in this mount namespace, or None."""
    want = os.path.realpath(path)
    fstype = None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if _unescape(fields[4]) == want:
                fstype = fields[fields.index("-") + 1]  # the last one there is the one seen
    return fstype


# --- validation -----------------------------------------------------------------------


def validate_kind(kind: str) -> None:
    if kind not in VOLUME_KINDS:
        raise InvalidRequest(f"volume kind {kind!r} must be one of {', '.join(VOLUME_KINDS)}",
                             field="kind")


def validate_volume(kind: str, name: str) -> None:
    validate_kind(kind)
    if not isinstance(name, str) or not VOLUME_NAME_RE.fullmatch(name) or ".." in name:
        raise InvalidRequest(f"volume name {name!r} must be 1-64 characters of A-Z, a-z, 0-9, "
                             "'_', '.' and '-', start with a letter or digit and not contain '..'",
                             field="name")


def validate_quota(quota_bytes: int | None) -> None:
    if quota_bytes is None:
        return
    if not isinstance(quota_bytes, int) or isinstance(quota_bytes, bool) or not (
            0 < quota_bytes < BTRFS_QGROUP_CLEAR):
        raise InvalidRequest(f"quota {quota_bytes!r} must be a positive number of bytes or none",
                             field="quota_bytes")


# --- the pool -------------------------------------------------------------------------


class Storage:
    """The btrfs pool of one daemon: `state_dir/storage.img` mounted at `state_dir/storage`."""

    def __init__(self, config: HostConfig):
        self.config = config
        self.image = config.storage_image
        self.mount = config.storage_mount
        self._pending: set[int] = set()  # destroyed subvolume ids whose 1/N is still there
        self._lock = threading.Lock()

    # pool lifecycle

    def is_mounted(self) -> bool:
        return mounted_fstype(self.mount) == "btrfs"

    def ensure(self) -> None:
        """Format, attach and mount the pool and enable quotas, unless that is done already."""
        if self.is_mounted():
            self._ensure_kind_dirs()
            return
        other = mounted_fstype(self.mount)
        if other is not None:
            raise SandboxError(f"{self.mount} has a {other} filesystem mounted, not the btrfs "
                               "pool; unmount it or give this daemon another state dir")
        self.image.parent.mkdir(parents=True, exist_ok=True)
        with open(self.image.parent / ".storage.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # two callers racing must not both format
            if not self.is_mounted():
                if not self.image.exists():
                    self._format()
                self._mount()
            self._ensure_kind_dirs()
        self._find_stale_qgroups()
        self.reap()

    def _format(self) -> None:
        # Sparse: only what sandboxes write takes space on the host disk. Built under a
        # temporary name so that a failed mkfs never leaves a half-made pool behind.
        tmp = self.image.with_name(f".{self.image.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as f:
                f.truncate(self.config.storage_size)
            try:
                result = subprocess.run(["mkfs.btrfs", "-q", "-f", "-m", "single", "-d", "single",
                                         "-L", f"nslab-{self.config.name}", str(tmp)],
                                        capture_output=True, text=True)
            except FileNotFoundError:
                raise HostUnsupported("mkfs.btrfs is not installed: install btrfs-progs "
                                      "(apt-get install btrfs-progs)") from None
            if result.returncode != 0:
                raise HostUnsupported(f"mkfs.btrfs {tmp} failed: "
                                      f"{(result.stderr or result.stdout).strip()[-500:]}")
            os.rename(tmp, self.image)
        finally:
            if tmp.exists():
                tmp.unlink()

    def _mount(self) -> None:
        self.mount.mkdir(parents=True, exist_ok=True)
        dev, held = loop_device_of(self.image), None
        if dev is None:
            dev, held = loop_attach(self.image)
        try:
            libc.mount(dev, self.mount, "btrfs", libc.MS_NOATIME | libc.MS_NODEV | libc.MS_NOSUID)
        except OSError as e:
            if e.errno == errno.ENODEV:
                raise HostUnsupported("the kernel has no btrfs filesystem: load the btrfs module "
                                      "(modprobe btrfs) or use a kernel with CONFIG_BTRFS_FS"
                                      ) from None
            raise explain_oserror(f"mounting the storage pool {self.image} at {self.mount}",
                                  e) from None
        finally:
            if held is not None:
                os.close(held)  # from now on the mount holds the loop device
        fd = self._open_dir(self.mount)
        try:
            quota_enable(fd)
        except OSError as e:
            raise explain_oserror(f"enabling btrfs quotas on {self.mount}", e) from None
        finally:
            os.close(fd)

    def _ensure_kind_dirs(self) -> None:
        for kind in VOLUME_KINDS:
            d = self.mount / kind
            if not d.is_dir():
                d.mkdir(mode=0o711)

    @property
    def quota_mode(self) -> str:
        """"simple" (nested subvolumes count against their parent's limit) or "full"."""
        fd = self._open_dir(self.mount)
        try:
            status = quota_item(fd, BTRFS_QGROUP_STATUS_KEY, 0)
        finally:
            os.close(fd)
        if status is None:
            return "off"
        # struct btrfs_qgroup_status_item: version, generation, flags, rescan, enable_gen
        flags = struct.unpack_from("<Q", status, 16)[0]
        return "simple" if flags & BTRFS_QGROUP_STATUS_FLAG_SIMPLE_MODE else "full"

    def unmount(self) -> None:
        """Unmount the pool; the loop device detaches itself (autoclear)."""
        if not self.is_mounted():
            return
        try:
            libc.umount2(self.mount)
        except OSError as e:
            if e.errno == errno.EBUSY:
                raise SandboxError(f"the storage pool {self.mount} is still in use (a sandbox, "
                                   "a mount or a shell in it); stop them first",
                                   reason=Reason.BUSY) from None
            raise explain_oserror(f"unmounting {self.mount}", e) from None

    # volumes

    def path(self, kind: str, name: str) -> Path:
        validate_volume(kind, name)
        return self.mount / kind / name

    def _open_dir(self, path: Path) -> int:
        try:
            return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except FileNotFoundError:
            if not self.is_mounted():
                raise SandboxError(f"the storage pool is not mounted at {self.mount}; "
                                   "Storage.ensure() must run first") from None
            raise

    def _open_volume(self, kind: str, name: str) -> int:
        path = self.path(kind, name)
        try:
            return self._open_dir(path)
        except FileNotFoundError:
            raise NotFound(f"{kind} volume {name!r} does not exist", field="name") from None

    def create_volume(self, kind: str, name: str, quota_bytes: int | None) -> Path:
        """A new subvolume at storage/kind/name referencing at most `quota_bytes`."""
        path = self.path(kind, name)
        validate_quota(quota_bytes)
        parent = self._open_dir(path.parent)
        try:
            try:
                subvol_create(parent, name)
            except OSError as e:
                if e.errno == errno.EEXIST:
                    raise Conflict(f"{kind} volume {name!r} already exists", field="name",
                                   reason=Reason.ALREADY_EXISTS) from None
                raise explain_oserror(f"creating subvolume {path}", e) from None
            try:
                fd = self._open_dir(path)
                try:
                    self._limit(fd, quota_bytes)
                finally:
                    os.close(fd)
            except BaseException:
                subvol_destroy(parent, name)
                raise
        finally:
            os.close(parent)
        return path

    def ensure_volume(self, kind: str, name: str, quota_bytes: int | None) -> Path:
        """The volume, created if missing; an existing one keeps its content and gets this quota."""
        path = self.path(kind, name)
        validate_quota(quota_bytes)
        if not os.path.lexists(path):
            try:
                return self.create_volume(kind, name, quota_bytes)
            except Conflict:
                pass  # created meanwhile by another caller: update its quota below
        self.set_quota(kind, name, quota_bytes)
        return path

    def set_quota(self, kind: str, name: str, quota_bytes: int | None) -> None:
        """Change the limit of an existing volume; None removes it."""
        validate_quota(quota_bytes)
        fd = self._open_volume(kind, name)
        try:
            self._limit(fd, quota_bytes)
        finally:
            os.close(fd)

    def _limit(self, fd: int, quota_bytes: int | None) -> None:
        sid = subvol_id(fd)
        if sid == 5:  # the pool's top level: a plain directory where a volume should be
            raise SandboxError("a plain directory stands where a volume should be; remove it")
        try:
            try:
                qgroup_limit(fd, level1(sid), quota_bytes)
            except OSError as e:
                if e.errno != errno.ENOENT:
                    raise
                qgroup_create(fd, level1(sid))
                qgroup_assign(fd, sid, level1(sid))
                qgroup_limit(fd, level1(sid), quota_bytes)
        except OSError as e:
            raise explain_oserror(f"setting the quota of subvolume {sid}", e) from None

    def delete_volume(self, kind: str, name: str, *, wait: bool = False) -> None:
        """Delete the volume whatever it holds, and its qgroups now or later; missing is fine.

        The subvolume goes at once; its qgroups can only go once the cleaner has freed
        its extents, which happens after the next commit (30 s at most): `reap()` then
        removes them. `wait=True` commits now and waits for that (tens of ms for a
        small volume). Deleting also works while an overlay or bind mount still uses the
        volume (the mount keeps what it holds until it goes), so the engine must stop
        the sandbox first.
        """
        path = self.path(kind, name)
        try:
            fd = self._open_dir(path)
        except FileNotFoundError:
            return
        try:
            # Destroying a nested subvolume reserves metadata in the volume itself,
            # which fails with EDQUOT when the volume is full: lift the limit first.
            self._limit(fd, None)
            ids = self._destroy_tree(fd, path)
        finally:
            os.close(fd)
        with self._lock:
            self._pending.update(ids)
        if wait:
            self.reap(timeout=30.0)

    def _destroy_tree(self, fd: int, path: Path) -> list[int]:
        """Destroy the subvolume open as `fd` at `path`, nested subvolumes first; their ids."""
        ids = [subvol_id(fd)]
        if ids[0] == 5:
            raise SandboxError(f"{path} is a plain directory, not a volume; remove it by hand")
        parent = self._open_dir(path.parent)
        try:
            try:
                subvol_destroy(parent, path.name)
                return ids
            except OSError as e:
                # A subvolume created inside the volume (anyone who may write a
                # directory can) makes the destroy fail with ENOTEMPTY.
                if e.errno != errno.ENOTEMPTY:
                    raise explain_oserror(f"deleting subvolume {path}", e) from None
            for nested in self._nested_subvolumes(path):
                nested_fd = self._open_dir(nested)
                try:
                    ids += self._destroy_tree(nested_fd, nested)
                finally:
                    os.close(nested_fd)
            subvol_destroy(parent, path.name)
            return ids
        finally:
            os.close(parent)

    @staticmethod
    def _nested_subvolumes(path: Path):
        # The root directory of every subvolume is inode 256 on a device of its own.
        top = os.stat(path).st_dev
        for dirpath, dirnames, _ in os.walk(path):
            for d in list(dirnames):
                st = os.lstat(os.path.join(dirpath, d))
                if st.st_dev != top and st.st_ino == BTRFS_FIRST_FREE_OBJECTID:
                    dirnames.remove(d)
                    yield Path(dirpath) / d

    def reap(self, timeout: float = 0.0) -> int:
        """Remove the qgroups of deleted volumes that the cleaner is done with; how many remain.

        The daemon calls this now and then; `ensure` calls it at start. It starts a
        commit first, so that the cleaner gets to work; with a timeout it waits up to
        that long for it.
        """
        with self._lock:
            if not self._pending:
                return 0
        deadline = time.monotonic() + timeout
        fd = self._open_dir(self.mount)
        try:
            start_commit(fd)
            while True:
                with self._lock:
                    pending = sorted(self._pending)
                for sid in pending:
                    if self._remove_qgroups(fd, sid):
                        with self._lock:
                            self._pending.discard(sid)
                with self._lock:
                    left = len(self._pending)
                if left == 0 or time.monotonic() >= deadline:
                    return left
                time.sleep(0.02)
        finally:
            os.close(fd)

    @staticmethod
    def _remove_qgroups(fd: int, sid: int) -> bool:
        """Remove 0/sid (unless the kernel did) and 1/sid; False while the cleaner is busy."""
        for qgroupid in (sid, level1(sid)):
            try:
                qgroup_remove(fd, qgroupid)
            except OSError as e:
                if e.errno == errno.EBUSY:  # still counts bytes the cleaner has not freed
                    return False
                if e.errno != errno.ENOENT:  # ENOENT: the kernel removed it already
                    raise explain_oserror(f"removing qgroup {qgroupid >> 48}/{sid}", e) from None
        return True

    def _find_stale_qgroups(self) -> None:
        """Queue the level-1 qgroups left behind by deletes before a restart."""
        fd = self._open_dir(self.mount)
        try:
            level1s = quota_items(fd, BTRFS_QGROUP_INFO_KEY, level1(0), level1(2**48 - 1), 10_000)
            stale = {q & (2**48 - 1) for q, _ in level1s
                     if quota_item(fd, BTRFS_QGROUP_INFO_KEY, q & (2**48 - 1)) is None}
        finally:
            os.close(fd)
        with self._lock:
            self._pending |= stale

    def volumes(self, kind: str) -> list[str]:
        validate_kind(kind)
        try:
            return sorted(e.name for e in os.scandir(self.mount / kind)
                          if e.is_dir(follow_symlinks=False))
        except FileNotFoundError:
            return []

    def usage(self, kind: str, name: str, *, commit: bool = False) -> dict:
        """{"used_bytes", "limit_bytes"} of a volume, nested subvolumes included.

        The counters move when btrfs commits a transaction (every 30 s by default);
        `commit=True` writes back and commits first, so that they include what was just
        written (that costs a flush of the whole pool).
        """
        fd = self._open_volume(kind, name)
        try:
            if commit:
                fcntl.ioctl(fd, BTRFS_IOC_SYNC)
            qgroupid = level1(subvol_id(fd))
            try:
                info = quota_item(fd, BTRFS_QGROUP_INFO_KEY, qgroupid)
                limits = quota_item(fd, BTRFS_QGROUP_LIMIT_KEY, qgroupid)
            except OSError as e:
                if e.errno != errno.ENOENT:  # ENOENT: quotas are off
                    raise explain_oserror(f"reading the qgroup of {kind}/{name}", e) from None
                info = limits = None
        finally:
            os.close(fd)
        if info is not None:
            # struct btrfs_qgroup_info_item: generation, rfer, rfer_cmpr, excl, excl_cmpr
            used = struct.unpack_from("<Q", info, 8)[0]
        else:  # no qgroup to ask: count the blocks
            top = self.path(kind, name)
            used = sum(os.lstat(os.path.join(d, f)).st_blocks * 512
                       for d, dirs, files in os.walk(top) for f in files + dirs)
        limit = None
        if limits is not None:
            # struct btrfs_qgroup_limit_item: flags, max_rfer, max_excl, rsv_rfer, rsv_excl
            flags, max_rfer = struct.unpack_from("<QQ", limits, 0)
            if flags & BTRFS_QGROUP_LIMIT_MAX_RFER:
                limit = max_rfer
        return {"used_bytes": used, "limit_bytes": limit}
