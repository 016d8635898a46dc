"""Host-side file reading (GET /v1/sandboxes/ID/files and /dir) against a hostile root.

Every path is resolved inside the sandbox (the root of its init, or of one of its
processes), never on the host: symlinks, `..` and /proc magic links cannot lead out,
special files cannot hang or leak, and every bad parameter is a 400 naming it.
"""

from __future__ import annotations

import base64
import json
import os
import time
import uuid
from pathlib import Path
from urllib.parse import quote

import pytest

from sandbox.client import _UnixConnection
from sandbox.errors import Conflict, InvalidRequest, NotFound, TooLarge
from sandbox.protocol import Reason

pytestmark = pytest.mark.privileged

MIB = 1 << 20


def sh(client, sid: str, script: str, stdin: str = "") -> str:
    r = client.run(sid, ["sh", "-c", script], stdin=stdin)
    assert r["exit_code"] == 0, r
    return r["stdout"]


def get(sandboxd, path: str) -> tuple[int, str, bytes]:
    conn = _UnixConnection(str(sandboxd.socket), 30)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.getheader("Content-Type", ""), resp.read()
    finally:
        conn.close()


# ------------------------------------------------------------------ reading

def test_reads_what_the_learner_wrote_byte_for_byte(client, box):
    sid = box["id"]
    blob = os.urandom(300_000) + b"\0\n\xff"
    sh(client, sid, "base64 -d > /root/blob.bin", stdin=base64.b64encode(blob).decode())
    sh(client, sid, "printf 'hello\\n' > /root/hello.txt; : > /root/empty")
    assert client.read_file(sid, "/root/blob.bin") == blob
    assert client.read_file(sid, "/root/hello.txt") == b"hello\n"
    assert client.read_file(sid, "/root/empty") == b""
    # /etc is the sandbox's own (the overlay), not the host's.
    assert client.read_file(sid, "/etc/hostname").decode().strip() == box["hostname"]


def test_the_http_answer_is_raw_bytes(sandboxd, client, box):
    sh(client, box["id"], "printf 'a\\0b' > /root/raw")
    status, ctype, body = get(sandboxd, f"/v1/sandboxes/{box['id']}/files?path=/root/raw")
    assert (status, ctype, body) == (200, "application/octet-stream", b"a\0b")


def test_symlinks_and_dotdot_resolve_inside_the_sandbox(client, box):
    sid = box["id"]
    host_name = Path("/etc/hostname").read_text().strip()
    inside = box["hostname"]
    assert host_name != inside
    sh(client, sid, "cd /root && ln -sfn /etc/hostname abs-link && "
       "ln -sfn ../../../../../../../etc/hostname up-link && ln -sfn /etc etc-dir && "
       "ln -sfn / slash && echo sandbox-shadow > /etc/shadow-test && "
       "ln -sfn /etc/shadow-test shadow-link")
    for path in ("/root/abs-link", "/root/up-link", "/root/etc-dir/hostname",
                 "/root/slash/etc/hostname", "/../../../../etc/hostname",
                 "/root/../../../etc/./hostname"):
        assert client.read_file(sid, path).decode().strip() == inside, path
    assert client.read_file(sid, "/root/shadow-link") == b"sandbox-shadow\n"
    # A file only the host has does not exist inside, whatever the path says.
    marker = Path("/tmp") / f"nslab-host-only-{uuid.uuid4().hex}"
    marker.write_text("host secret\n")
    try:
        sh(client, sid, f"ln -sfn {marker} /root/host-link")
        for path in (str(marker), "/root/host-link", f"/root/../..{marker}"):
            with pytest.raises(NotFound):
                client.read_file(sid, path)
    finally:
        marker.unlink()


def test_proc_magic_links_are_refused(client, box):
    sid = box["id"]
    sh(client, sid, "ln -sfn /proc/1/root /root/magic; ln -sfn /proc/self/root /root/self-root")
    for path in ("/proc/1/root/etc/hostname", "/proc/self/root/etc/hostname",
                 "/root/magic/etc/hostname", "/root/self-root/etc/hostname",
                 "/proc/1/cwd/etc/hostname"):
        with pytest.raises((InvalidRequest, NotFound)) as e:
            client.read_file(sid, path)
        if isinstance(e.value, InvalidRequest):
            assert e.value.field == "path"


def test_proc_sys_and_cgroup_files_are_not_read_with_host_privileges(client, box):
    # Read by the daemon (host root), kcore or kallsyms would leak the host's kernel.
    sid = box["id"]
    for path in ("/proc/1/environ", "/proc/kallsyms", "/proc/self/status",
                 "/sys/kernel/mm/transparent_hugepage/enabled", "/proc/kcore"):
        with pytest.raises((InvalidRequest, NotFound)) as e:
            client.read_file(sid, path)
        if isinstance(e.value, InvalidRequest):
            assert "filesystem" in e.value.message or "regular file" in e.value.message, path
            assert e.value.reason in (Reason.SPECIAL_FILESYSTEM, Reason.NOT_REGULAR_FILE), path
    with pytest.raises(InvalidRequest, match="filesystem") as e:
        client.read_file(sid, "/proc/1/status")
    assert e.value.reason == Reason.SPECIAL_FILESYSTEM


def test_special_files_are_refused_without_hanging(client, box):
    sid = box["id"]
    sh(client, sid, "rm -f /root/fifo && mkfifo /root/fifo && ln -sfn /dev/zero /root/zero")
    for path, what in (("/root/fifo", "a fifo"), ("/dev/zero", "a character device"),
                       ("/root/zero", "a character device"), ("/root", "a directory"),
                       ("/dev/null", "a character device")):
        t0 = time.monotonic()
        with pytest.raises(InvalidRequest, match="not a regular file") as e:
            client.read_file(sid, path)
        assert time.monotonic() - t0 < 5, f"{path} took {time.monotonic() - t0:.1f} s"
        assert what in e.value.message and e.value.field == "path", e.value.message
        assert e.value.status == 400 and e.value.reason == Reason.NOT_REGULAR_FILE


def test_a_unix_socket_is_not_a_regular_file(client, box):
    sid = box["id"]
    r = client.exec(sid, ["python3", "-c", "import socket, time; s = socket.socket("
                          "socket.AF_UNIX); s.bind('/root/sock'); time.sleep(60)"])
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                client.read_file(sid, "/root/sock")
            except NotFound:
                assert time.monotonic() < deadline
                time.sleep(0.05)
                continue
            except InvalidRequest as e:
                assert "a socket" in e.message and e.reason == Reason.NOT_REGULAR_FILE
                break
            raise AssertionError("a socket was read")
    finally:
        client.request("DELETE", f"/exec/{r['id']}")


def test_size_limits(sandboxd, client, box):
    sid = box["id"]
    sh(client, sid, "truncate -s 9M /root/nine && truncate -s 17M /root/seventeen && "
       "head -c 1000 /dev/zero > /root/thousand")
    with pytest.raises(TooLarge) as e:
        client.read_file(sid, "/root/nine")  # default 8 MiB
    assert e.value.status == 413 and "limit" in e.value.message
    assert len(client.read_file(sid, "/root/nine", limit=16 * MIB)) == 9 * MIB
    assert len(client.read_file(sid, "/root/thousand", limit=1000)) == 1000
    with pytest.raises(TooLarge):
        client.read_file(sid, "/root/thousand", limit=999)
    with pytest.raises(TooLarge):
        client.read_file(sid, "/root/seventeen", limit=16 * MIB)
    status, ctype, body = get(sandboxd, f"/v1/sandboxes/{sid}/files?path=/root/nine&limit=8m")
    assert status == 413 and ctype.startswith("application/json")
    assert json.loads(body)["error"] == "too_large"


# ------------------------------------------------------------------ processes and mounts

def test_a_file_in_a_mount_namespace_the_learner_made_is_read_with_pid(client, box):
    sid = box["id"]
    tag = uuid.uuid4().hex[:8]
    session = client.exec(sid, ["unshare", "-m", "sh", "-c",
                                "mount -t tmpfs none /mnt && echo inner-$0 > /mnt/inner && "
                                "mkdir /mnt/sub && exec sleep 300", tag])
    try:
        deadline = time.monotonic() + 10
        while True:
            procs = client.inspect(sid)["processes"]
            sleeper = next((p for p in procs if p["cmdline"][:1] == ["sleep"]), None)
            if sleeper:
                try:
                    data = client.read_file(sid, "/mnt/inner", pid=sleeper["pid"])
                    break
                except NotFound:
                    pass
            assert time.monotonic() < deadline, "the sleeper never came up"
            time.sleep(0.05)
        assert data == f"inner-{tag}\n".encode()
        names = [(e["name"], e["type"]) for e in client.list_dir(sid, "/mnt", pid=sleeper["pid"])]
        assert names == [("inner", "file"), ("sub", "dir")]
        # The init's mount namespace does not have that tmpfs.
        with pytest.raises(NotFound):
            client.read_file(sid, "/mnt/inner")
        assert client.list_dir(sid, "/mnt") == []
        # pid 1 (the init) works too; host pids and pids nobody has are not in the sandbox.
        assert client.read_file(sid, "/etc/hostname", pid=1).strip() == box["hostname"].encode()
        for pid in (4_000_000, sleeper["host_pid"] if sleeper["host_pid"] > 1000 else 4_100_000):
            with pytest.raises(NotFound, match="no process") as e:
                client.read_file(sid, "/etc/hostname", pid=pid)
            assert e.value.reason == Reason.NO_SUCH_PROCESS
    finally:
        client.request("DELETE", f"/exec/{session['id']}")


def test_a_pid_of_another_sandbox_is_not_followed(client, box, sandbox):
    # Another sandbox's sleeper has a pid inside it; in `box` no process has that pid.
    session = client.exec(sandbox["id"], ["sh", "-c", "echo other > /root/mine; exec sleep 300"])
    try:
        deadline = time.monotonic() + 10
        while not (p := next((p for p in client.inspect(sandbox["id"])["processes"]
                              if p["cmdline"][:1] == ["sleep"]), None)):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        mine = {q["pid"] for q in client.inspect(box["id"])["processes"]}
        if p["pid"] not in mine:
            with pytest.raises(NotFound) as e:
                client.read_file(box["id"], "/root/mine", pid=p["pid"])
            assert e.value.reason == Reason.NO_SUCH_PROCESS
        assert client.read_file(sandbox["id"], "/root/mine", pid=p["pid"]) == b"other\n"
    finally:
        client.request("DELETE", f"/exec/{session['id']}")


def test_a_stopped_sandbox_is_a_conflict_and_unknown_ones_not_found(client, sandbox):
    client.stop(sandbox["id"])
    with pytest.raises(Conflict) as e:
        client.read_file(sandbox["id"], "/etc/hostname")
    assert e.value.reason == Reason.NOT_RUNNING
    with pytest.raises(Conflict) as e:
        client.list_dir(sandbox["id"], "/root")
    assert e.value.reason == Reason.NOT_RUNNING
    with pytest.raises(NotFound) as e:
        client.read_file("0123456789ab", "/etc/hostname")
    assert e.value.reason == Reason.NO_SUCH_SANDBOX


# ------------------------------------------------------------------ listing

def test_list_dir(client, box):
    sid = box["id"]
    sh(client, sid, "rm -rf /root/ls && mkdir -p /root/ls/sub && cd /root/ls && "
       "printf 12345 > b.txt && ln -s /etc/passwd a-link && mkfifo c-fifo && "
       "touch -d @1700000000 b.txt")
    entries = client.list_dir(sid, "/root/ls")
    assert [(e["name"], e["type"]) for e in entries] == [
        ("a-link", "link"), ("b.txt", "file"), ("c-fifo", "other"), ("sub", "dir")]
    b = entries[1]
    assert b["size"] == 5 and b["mtime"] == 1700000000
    assert entries[0]["size"] == len("/etc/passwd")  # the link itself, not followed
    # A symlinked directory is followed inside the sandbox, like a path.
    sh(client, sid, "ln -sfn /root/ls /root/ls-link")
    assert client.list_dir(sid, "/root/ls-link") == entries
    with pytest.raises(InvalidRequest, match="not a directory") as e:
        client.list_dir(sid, "/root/ls/b.txt")
    assert e.value.reason == Reason.NOT_DIRECTORY
    with pytest.raises(NotFound) as e:
        client.list_dir(sid, "/root/nope")
    assert e.value.reason == Reason.NO_SUCH_FILE
    with pytest.raises(InvalidRequest, match="filesystem") as e:
        client.list_dir(sid, "/proc")
    assert e.value.reason == Reason.SPECIAL_FILESYSTEM


def test_list_dir_gives_the_first_1000_by_name(client, box):
    sid = box["id"]
    sh(client, sid, "rm -rf /root/many && mkdir /root/many && cd /root/many && "
       "for i in $(seq 1100); do : > f$i; done")
    entries = client.list_dir(sid, "/root/many")
    every = sorted(f"f{i}" for i in range(1, 1101))
    assert [e["name"] for e in entries] == every[:1000]


# ------------------------------------------------------------------ bad input

BAD = [
    ("files", "", "path"),
    ("files", "path=", "path"),
    ("files", "path=etc/hostname", "path"),
    ("files", "path=/etc/host%00name", "path"),
    ("files", "path=/" + "a" * 256, "path"),
    ("files", "path=/" + "a/" * 2100, "path"),
    ("files", "path=/etc/hostname&path=/etc/passwd", "path"),
    ("files", "path=/etc/hostname&pid=abc", "pid"),
    ("files", "path=/etc/hostname&pid=0", "pid"),
    ("files", "path=/etc/hostname&pid=-1", "pid"),
    ("files", "path=/etc/hostname&pid=+1", "pid"),
    ("files", "path=/etc/hostname&pid=01", "pid"),
    ("files", "path=/etc/hostname&pid=1.0", "pid"),
    ("files", "path=/etc/hostname&pid=99999999", "pid"),
    ("files", "path=/etc/hostname&pid=", "pid"),
    ("files", "path=/etc/hostname&limit=0", "limit"),
    ("files", "path=/etc/hostname&limit=-5", "limit"),
    ("files", "path=/etc/hostname&limit=17m", "limit"),
    ("files", "path=/etc/hostname&limit=lots", "limit"),
    ("files", "path=/etc/hostname&limit=1&limit=2", "limit"),
    ("files", "path=/etc/hostname&limit=%D9%A3", "limit"),
    ("files", "path=/etc/hostname&follow=1", "follow"),
    ("dir", "", "path"),
    ("dir", "path=root", "path"),
    ("dir", "path=/root&limit=5", "limit"),
    ("dir", "path=/root&pid=x", "pid"),
]


@pytest.mark.parametrize("what,query,field", BAD, ids=[f"{w}?{q[:40]}" for w, q, _ in BAD])
def test_bad_parameters_are_400_naming_the_field(sandboxd, client, box, what, query, field):
    before = sorted(b["id"] for b in client.list())
    status, ctype, body = get(sandboxd, f"/v1/sandboxes/{box['id']}/{what}?{query}")
    assert status == 400, (status, body[:200])
    assert ctype.startswith("application/json")
    err = json.loads(body)
    assert err["error"] == "invalid_request" and err["field"] == field, err
    assert sorted(b["id"] for b in client.list()) == before


@pytest.mark.parametrize("sid", ["..", "0123456789AB", "abc", "0123456789ab0"])
def test_bad_sandbox_ids_are_400(sandboxd, sid):
    status, _, body = get(sandboxd, f"/v1/sandboxes/{quote(sid, safe='')}/files?path=/etc/hostname")
    assert status in (400, 404), body
    if status == 400:
        assert json.loads(body)["field"] == "id"


def test_the_client_quotes_odd_names(client, box):
    sid = box["id"]
    name = "odd name & ?x=1#frag%20é"
    client.run(sid, ["sh", "-c", 'printf odd > "/root/$1"', "sh", name])
    assert client.read_file(sid, f"/root/{name}") == b"odd"
    assert name in [e["name"] for e in client.list_dir(sid, "/root")]
