"""One cgroup per sandbox: limits, delegation to the sandbox's root, inspection, teardown.

cgroup v1 and v2 sit behind one abstract class, `CgroupManager` (cgroupsbase.py);
`detect()` picks `CgroupsV1` (cgroupsv1.py) or `CgroupsV2` (cgroupsv2.py) once, and no
caller ever asks which one it got. This module is what the rest of the engine imports.

A group is a path relative to each hierarchy's root ("nslab/default/0123456789ab"). Its
own limit files stay owned by host root; its directory and the files that organise
processes are handed to the sandbox's root, so that it can build and limit a subtree
below its group but never raise the group's own limits.
"""

from __future__ import annotations

from pathlib import Path

from .cgroupsbase import CgroupManager, Limits, MountInfo, check_group, read_mountinfo
from .cgroupsv1 import CgroupsV1
from .cgroupsv2 import CgroupsV2
from .errors import HostUnsupported

__all__ = ["CgroupManager", "Limits", "MountInfo", "check_group", "detect", "read_mountinfo"]


def detect(root: Path = Path("/sys/fs/cgroup")) -> CgroupManager:
    """v2 if `root` is a cgroup2 mount, else the v1 hierarchies of /proc/self/mountinfo."""
    root = Path(root)
    mounts = read_mountinfo()
    at_root = [m for m in mounts if m.mountpoint == str(root)]
    # The last mount on a path is the one visible there.
    if at_root and at_root[-1].fstype == "cgroup2":
        return CgroupsV2(root)
    manager = CgroupsV1.from_mounts(root, mounts)
    if manager is None:
        raise HostUnsupported(
            f"no cgroup filesystem is mounted at {root}: mount cgroup v2 there "
            f"(mount -t cgroup2 -o nsdelegate cgroup2 {root}) or the v1 hierarchies")
    return manager
