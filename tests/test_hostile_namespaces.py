"""What one sandbox's namespaces and kernel counters may hold, and that it holds them alone
(issue 10).

The kernel counts namespaces, inotify instances and the like per (user namespace, owner)
at every level up to init (kernel/ucount.c). Each sandbox's user namespace now sits under
its own intermediate one owned by the sandbox's host uid (`rootfs.make_userns`), so each
test does the attack for real as root inside one sandbox (`hog`) and shows that it stops
at the bound root inside cannot raise, and that another sandbox (and host root) is not
touched. On the old code (the sandbox's namespace a direct child of init, owned by host
root) the hog made namespaces without a bound and took every other sandbox's, and host
root's, inotify instances and message queue bytes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import time
import uuid

import pytest

from conftest import ok, sh

from sandbox.config import UID_BLOCK
from sandbox.errors import NotFound
from sandbox.spawner.rootfs import NAMESPACE_BOUNDS

pytestmark = pytest.mark.privileged

LIMITS = dict(cpus=1.0, memory="256m", pids=256, disk="256m")
HOLD = 60  # seconds a hog holds what it took; it is killed when its test ends
TRIES = 300  # attempts a hog makes: far over every bound, so the old code shows none

# Calls `call` (a libc function name) up to TRIES times, keeping what each returns open;
# writes how many succeeded and the errno of the first failure (0: none) to /tmp/hog, then
# holds them.
HOG = """
import ctypes, os, sys, time
libc = ctypes.CDLL(None, use_errno=True)
call, arg, tries = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
got, err = [], 0
for _ in range(tries):
    if call == "unshare":
        # each new netns stays alive through an fd to it, as `ip netns add` keeps a bind
        if libc.unshare(arg) != 0:
            err = ctypes.get_errno()
            break
        got.append(os.open("/proc/self/ns/net", os.O_RDONLY))
    elif call == "mq_open":
        # default attributes: 10 messages of 8 KiB, charged to RLIMIT_MSGQUEUE's count
        fd = libc.mq_open(f"/hog{len(got)}".encode(), os.O_CREAT | os.O_RDWR, 0o600, None)
        if fd < 0:
            err = ctypes.get_errno()
            break
        got.append(fd)
    else:
        fd = getattr(libc, call)()
        if fd < 0:
            err = ctypes.get_errno()
            break
        got.append(fd)
with open("/tmp/hog.new", "w") as f:
    f.write(f"{len(got)} {err}")
os.rename("/tmp/hog.new", "/tmp/hog")
time.sleep(float(sys.argv[4]))
"""

# One call, made once: prints ok, or the errno name.
ONCE = ("import ctypes, errno, os; libc = ctypes.CDLL(None, use_errno=True); "
        "print('ok' if libc.{call} >= 0 else errno.errorcode[ctypes.get_errno()])")
INOTIFY_ONCE = ONCE.format(call="inotify_init()")
MQ_ONCE = ONCE.format(call="mq_open(b'/other', os.O_CREAT | os.O_RDWR, 0o600, None)")

CLONE_NEWNET = 0x40000000


class Hog:
    """HOG running in the background in sandbox `sid`; `taken` and `errno` once it holds
    what it got. Killed by `stop`."""

    def __init__(self, client, sid: str, call: str, arg: int = 0):
        self.client = client
        self.session = client.exec(sid, ["python3", "-c", HOG, call, str(arg), str(TRIES),
                                         str(HOLD)])
        deadline = time.monotonic() + 60
        while True:
            try:
                out = client.read_file(sid, "/tmp/hog").decode().split()
                break
            except NotFound:
                assert time.monotonic() < deadline, f"the {call} hog did not finish taking"
                time.sleep(0.2)
        self.taken, self.errno = int(out[0]), int(out[1])

    def stop(self) -> None:
        self.client.signal(self.session["id"], "KILL")


@pytest.fixture
def two(client):
    """Two fresh sandboxes, destroyed afterwards: (hog, other)."""
    made = []
    try:
        for _ in range(2):
            made.append(client.create(**LIMITS))
        yield made
    finally:
        for sb in made:
            client.destroy(sb["id"], purge=True)


LIBC = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def inotify_init_on_host() -> str:
    """inotify_init(2) as host root (this test): 'ok', or the errno name."""
    fd = LIBC.inotify_init()
    if fd < 0:
        return errno.errorcode[ctypes.get_errno()]
    os.close(fd)
    return "ok"


def mq_open_on_host() -> str:
    """A POSIX message queue made (and removed) as host root: 'ok', or the errno name."""
    name = f"/nslab-test-{uuid.uuid4().hex[:8]}".encode()
    fd = LIBC.mq_open(name, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600, None)
    if fd < 0:
        return errno.errorcode[ctypes.get_errno()]
    os.close(fd)
    LIBC.mq_unlink(name)
    return "ok"


def test_network_namespaces_are_bounded_per_sandbox(client, two):
    hog_box, other = two
    bound = NAMESPACE_BOUNDS["max_net_namespaces"]
    # Root inside may raise its own namespace's limit (a fresh procfs's /proc/sys/user is
    # the opener's namespace's): that must not lift the bound, which lives one level up.
    out = ok(client, hog_box["id"], "mkdir -p /tmp/p && mount -t proc proc /tmp/p && "
                                   "echo 100000 > /tmp/p/sys/user/max_net_namespaces && "
                                   "cat /tmp/p/sys/user/max_net_namespaces; umount /tmp/p")
    assert out.split() == ["100000"], out
    hog = Hog(client, hog_box["id"], "unshare", CLONE_NEWNET)
    try:
        # PID 1's own network namespace is one of the sandbox's.
        assert (hog.taken, hog.errno) == (bound - 1, errno.ENOSPC), \
            f"the hog kept {hog.taken} network namespaces (errno {hog.errno}), bound {bound}"
        r = sh(client, hog_box["id"], "unshare -n true")
        assert r["exit_code"] != 0 and "No space left on device" in r["stderr"], r
        # Another sandbox is untouched: it makes namespaces, and a new sandbox starts.
        assert ok(client, other["id"], "unshare -n -m -u -i -p -f true && echo made") == "made\n"
        third = client.create(**LIMITS)
        try:
            assert ok(client, third["id"], "unshare -n true && echo made") == "made\n"
        finally:
            client.destroy(third["id"], purge=True)
    finally:
        hog.stop()


def test_inotify_instances_are_each_sandboxs_own(client, two):
    hog_box, other = two
    hog = Hog(client, hog_box["id"], "inotify_init")
    try:
        assert hog.errno == errno.EMFILE, f"the hog took {hog.taken} with no refusal"
        assert hog.taken <= NAMESPACE_BOUNDS["max_inotify_instances"], hog.taken
        # Old code: both failed with EMFILE, the hog had taken host root's 128.
        others = (ok(client, other["id"], f'python3 -c "{INOTIFY_ONCE}"'),
                  inotify_init_on_host())
        assert others == ("ok\n", "ok"), f"(another sandbox, host root): {others}"
    finally:
        hog.stop()


def test_message_queue_bytes_are_each_sandboxs_own(client, two):
    """RLIMIT_MSGQUEUE is counted per user at every user namespace level too."""
    hog_box, other = two
    hog = Hog(client, hog_box["id"], "mq_open")
    try:
        assert hog.errno == errno.EMFILE and hog.taken > 0, (hog.taken, hog.errno)
        others = (ok(client, other["id"], f'python3 -c "{MQ_ONCE}"'), mq_open_on_host())
        assert others == ("ok\n", "ok"), f"(another sandbox, host root): {others}"
    finally:
        hog.stop()


def test_uid_map_reads_as_before_and_nested_user_namespaces_work(client, two):
    sb = two[0]
    for name in ("uid_map", "gid_map"):
        fields = ok(client, sb["id"], f"cat /proc/self/{name}").split()
        assert fields == ["0", str(sb["uid_base"]), str(UID_BLOCK)], (name, fields)
    assert ok(client, sb["id"], "unshare -U -r id -u") == "0\n"
    assert ok(client, sb["id"], "unshare -U -r cat /proc/self/uid_map").split() == ["0", "0", "1"]
