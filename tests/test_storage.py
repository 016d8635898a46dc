"""The btrfs pool for real: a sparse file, a loop device, subvolumes and qgroups.

How the quota bites (what these tests rely on): btrfs reserves qgroup space when data
enters the page cache, so write() itself fails with EDQUOT once the volume's
reservations reach its limit; no fsync is needed. The counters `usage` reads move at
transaction commit, so the usage test commits first (`commit=True`).
"""

from __future__ import annotations

import errno
import os
import secrets
import statistics
import subprocess
import time
from pathlib import Path

import pytest

from sandbox import libc
from sandbox import storage as st
from sandbox.config import HostConfig
from sandbox.errors import Conflict, InvalidRequest, NotFound
from sandbox.protocol import Reason

pytestmark = pytest.mark.privileged

MiB = 1 << 20


def require_root():
    if os.geteuid() != 0:
        pytest.fail("the storage tests need root (loop devices, mount, btrfs ioctls); "
                    "run them as root, they must not be skipped")


def loop_devices_of(image: Path) -> list[str]:
    out = subprocess.run(["losetup", "--list", "--noheadings", "--output", "NAME,BACK-FILE"],
                         capture_output=True, text=True, check=True).stdout
    return [line.split()[0] for line in out.splitlines() if str(image) in line]


def mounted_at(path: Path) -> int:
    want = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        return sum(1 for line in f if st._unescape(line.split()[4]) == want)


@pytest.fixture(scope="module")
def storage(tmp_path_factory):
    """A real pool (2 GiB sparse) under a temp state dir; unmounted and checked gone after."""
    require_root()
    config = HostConfig(name=f"test-{secrets.token_hex(4)}",
                        state_dir=tmp_path_factory.mktemp("storage"), storage_size=2 << 30)
    pool = st.Storage(config)
    pool.ensure()
    yield pool
    pool.unmount()
    assert mounted_at(config.storage_mount) == 0
    # Autoclear detaches the loop device when the unmount drops its last user.
    for _ in range(100):
        if not loop_devices_of(config.storage_image):
            break
        time.sleep(0.02)
    assert loop_devices_of(config.storage_image) == []
    config.storage_image.unlink()


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


def write_until_error(path: Path, limit: int) -> tuple[int, OSError | None]:
    """Write 1 MiB chunks until `limit` bytes or an error; returns (bytes written, error)."""
    written, chunk = 0, b"\xa5" * MiB
    try:
        with open(path, "wb", buffering=0) as f:
            while written < limit:
                written += f.write(chunk)
            os.fsync(f.fileno())
    except OSError as e:
        return written, e
    return written, None


def test_ensure_is_idempotent_and_fast(storage):
    for _ in range(2):
        storage.ensure()
    started = time.perf_counter()
    storage.ensure()
    assert time.perf_counter() - started < 0.01
    assert storage.is_mounted()
    assert mounted_at(storage.mount) == 1
    assert len(loop_devices_of(storage.image)) == 1
    assert sorted(p.name for p in storage.mount.iterdir()) == sorted(st.VOLUME_KINDS)
    # Sparse: the 2 GiB pool takes only what btrfs wrote.
    assert storage.image.stat().st_size == 2 << 30
    assert storage.image.stat().st_blocks * 512 < 64 * MiB
    assert storage.quota_mode in ("simple", "full")


def test_write_beyond_quota_fails_with_edquot(storage):
    path = storage.create_volume("sandboxes", unique("q"), 8 * MiB)
    written, err = write_until_error(path / "fill", 32 * MiB)
    assert err is not None and err.errno in (errno.EDQUOT, errno.ENOSPC), (written, err)
    assert 4 * MiB <= written <= 8 * MiB
    # Deleting frees the space again (btrfs commits when a reservation fails).
    (path / "fill").unlink()
    written, err = write_until_error(path / "again", 6 * MiB)
    assert err is None and written == 6 * MiB


def test_create_existing_is_a_conflict(storage):
    name = unique("c")
    storage.create_volume("sandboxes", name, None)
    with pytest.raises(Conflict) as e:
        storage.create_volume("sandboxes", name, MiB)
    assert e.value.reason == Reason.ALREADY_EXISTS


def test_per_call_times(storage):
    names = [unique("t") for _ in range(20)]
    created, deleted = [], []
    for name in names:
        t = time.perf_counter()
        storage.create_volume("sandboxes", name, 64 * MiB)
        created.append(time.perf_counter() - t)
    for name in names:
        t = time.perf_counter()
        storage.delete_volume("sandboxes", name)
        deleted.append(time.perf_counter() - t)
    print(f"create median {statistics.median(created) * 1e3:.3f} ms, "
          f"delete median {statistics.median(deleted) * 1e3:.3f} ms")
    assert statistics.median(created) < 0.002
    assert statistics.median(deleted) < 0.002
    assert storage.reap(timeout=10) == 0


def qgroups_of(storage, path: Path) -> tuple[int, bool, bool]:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        sid = st.subvol_id(fd)
    finally:
        os.close(fd)
    return sid, *qgroups_exist(storage, sid)


def qgroups_exist(storage, sid: int) -> tuple[bool, bool]:
    fd = os.open(storage.mount, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return tuple(st.quota_item(fd, st.BTRFS_QGROUP_INFO_KEY, q) is not None
                     for q in (sid, st.level1(sid)))
    finally:
        os.close(fd)


def subvolume_ids(storage) -> set[int]:
    out = subprocess.run(["btrfs", "subvolume", "list", str(storage.mount)],
                         capture_output=True, text=True, check=True).stdout
    return {int(line.split()[1]) for line in out.splitlines()}


def test_delete_volume_removes_subvolume_and_qgroups(storage):
    name = unique("d")
    path = storage.create_volume("sandboxes", name, 16 * MiB)
    (path / "data").write_bytes(os.urandom(2 * MiB))
    sid, level0, level1 = qgroups_of(storage, path)
    assert level0 and level1 and sid in subvolume_ids(storage)
    storage.delete_volume("sandboxes", name, wait=True)
    assert not path.exists()
    assert name not in storage.volumes("sandboxes")
    assert sid not in subvolume_ids(storage)
    assert qgroups_exist(storage, sid) == (False, False)
    storage.delete_volume("sandboxes", name)  # already gone: fine


def test_delete_volume_whose_overlay_is_gone(storage, tmp_path):
    name = unique("o")
    path = storage.create_volume("sandboxes", name, 16 * MiB)
    (path / "upper").mkdir()
    (path / "work").mkdir()
    lower, merged = tmp_path / "lower", tmp_path / "merged"
    lower.mkdir()
    merged.mkdir()
    libc.mount("overlay", merged, "overlay", 0,
               f"lowerdir={lower},upperdir={path / 'upper'},workdir={path / 'work'}")
    try:
        (merged / "file").write_text("written through the overlay")
    finally:
        libc.umount2(merged)
    # overlayfs leaves work/work behind with mode 000.
    assert (path / "work" / "work").exists()
    storage.delete_volume("sandboxes", name, wait=True)
    assert not path.exists()


def test_nested_subvolume_counts_and_is_deleted(storage):
    # Anyone who may write a directory may create a subvolume in it; a learner could
    # try that in a home to get out of its quota.
    name = unique("n")
    path = storage.create_volume("homes", name, 8 * MiB)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        st.subvol_create(fd, "nested")
    finally:
        os.close(fd)
    assert storage.quota_mode == "simple", "full qgroups let nested subvolumes escape the limit"
    written, err = write_until_error(path / "nested" / "fill", 32 * MiB)
    assert err is not None and err.errno in (errno.EDQUOT, errno.ENOSPC), (written, err)
    assert written <= 8 * MiB
    nested_sid, _, _ = qgroups_of(storage, path / "nested")
    storage.delete_volume("homes", name, wait=True)
    assert not path.exists()
    assert nested_sid not in subvolume_ids(storage)
    assert qgroups_exist(storage, nested_sid) == (False, False)


def test_ensure_volume_keeps_content_and_updates_quota(storage):
    name = unique("home")
    path = storage.ensure_volume("homes", name, 8 * MiB)
    (path / "notes.txt").write_text("kept across sandboxes")
    again = storage.ensure_volume("homes", name, 16 * MiB)
    assert again == path
    assert (path / "notes.txt").read_text() == "kept across sandboxes"
    assert storage.usage("homes", name)["limit_bytes"] == 16 * MiB
    storage.set_quota("homes", name, None)
    assert storage.usage("homes", name)["limit_bytes"] is None
    written, err = write_until_error(path / "big", 24 * MiB)
    assert err is None and written == 24 * MiB
    storage.set_quota("homes", name, 4 * MiB)
    assert storage.usage("homes", name)["limit_bytes"] == 4 * MiB


def test_usage_reports_bytes(storage):
    name = unique("u")
    path = storage.create_volume("sandboxes", name, 32 * MiB)
    before = storage.usage("sandboxes", name, commit=True)
    assert before["limit_bytes"] == 32 * MiB
    assert before["used_bytes"] < 64 * 1024
    (path / "three").write_bytes(os.urandom(3 * MiB))
    after = storage.usage("sandboxes", name, commit=True)
    assert 3 * MiB <= after["used_bytes"] < 4 * MiB
    assert after["limit_bytes"] == 32 * MiB


@pytest.mark.parametrize("bad", ["", ".", "..", "a/b", "../x", "x/..", ".hidden", "-x", "_x",
                                 "a..b", "a" * 65, "x\n", "sp ace", "é", None, 7])
def test_bad_names_are_rejected_and_nothing_is_created(storage, bad):
    before = {kind: sorted(os.listdir(storage.mount / kind)) for kind in st.VOLUME_KINDS}
    for call in (lambda: storage.create_volume("sandboxes", bad, MiB),
                 lambda: storage.ensure_volume("homes", bad, None),
                 lambda: storage.delete_volume("sandboxes", bad),
                 lambda: storage.set_quota("homes", bad, MiB),
                 lambda: storage.usage("sandboxes", bad)):
        with pytest.raises(InvalidRequest) as info:
            call()
        assert info.value.field == "name"
    assert {kind: sorted(os.listdir(storage.mount / kind)) for kind in st.VOLUME_KINDS} == before
    assert sorted(p.name for p in storage.mount.iterdir()) == sorted(st.VOLUME_KINDS)


def test_bad_kind_and_quota_are_rejected(storage):
    with pytest.raises(InvalidRequest) as info:
        storage.create_volume("images", "x", MiB)
    assert info.value.field == "kind"
    with pytest.raises(InvalidRequest):
        storage.volumes("../")
    for quota in (0, -1, True, "10M", 1.5, 2**64 - 1):
        with pytest.raises(InvalidRequest) as info:
            storage.create_volume("sandboxes", "never", quota)
        assert info.value.field == "quota_bytes"
    assert "never" not in storage.volumes("sandboxes")


def test_missing_volume(storage):
    with pytest.raises(NotFound):
        storage.set_quota("homes", "nobody-here", MiB)
    with pytest.raises(NotFound):
        storage.usage("homes", "nobody-here")


def test_volumes_lists_names(storage):
    names = sorted(unique("l") for _ in range(3))
    for name in names:
        storage.create_volume("homes", name, None)
    assert set(names) <= set(storage.volumes("homes"))
    assert not set(names) & set(storage.volumes("sandboxes"))
