"""sandboxd's API and the `nslab sandbox` CLI under malformed and hostile input.

Every bad request must get a 4xx JSON error naming the offending field and must change
nothing on the host: the list of sandboxes, the daemon's cgroups, its state dir
records and storage volumes, and its veths are compared before and after each one.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import time
from pathlib import Path

import pytest

from sandbox.client import _UnixConnection
from sandbox.config import HostConfig
from sandbox.errors import Conflict, InvalidRequest, NotFound
from sandbox.protocol import Reason

UID_CLAIMS = HostConfig().uid_claims_dir  # machine-wide; each claim names its state dir
WARM = getattr(HostConfig(), "warm", 0)  # conftest's daemon keeps the default pool size

pytestmark = pytest.mark.privileged

SID = "0123456789ab"  # well-formed, never issued (ids are random; a clash is 2**-48)


# --------------------------------------------------------------------------- helpers

def raw(sandboxd, method: str, path: str, body: bytes | None = None,
        content_type: str = "application/json") -> tuple[int, str, bytes]:
    """One HTTP request on the daemon's socket: (status, content type, body)."""
    conn = _UnixConnection(str(sandboxd.socket), 30)
    try:
        headers = {"Content-Type": content_type} if body is not None else {}
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.getheader("Content-Type", ""), resp.read()
    finally:
        conn.close()


def _host_state(sandboxd, client) -> dict:
    info = client.info()
    if info["cgroup_version"] == 1:
        cg = Path("/sys/fs/cgroup/cpu/nslab") / sandboxd.name
    else:
        cg = Path("/sys/fs/cgroup/nslab") / sandboxd.name
    prefix = f"nl{HostConfig(name=sandboxd.name).tag}"
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True,
                           check=True).stdout.splitlines()
    volumes = sandboxd.state_dir / "storage" / "sandboxes"
    claims = []
    for p in UID_CLAIMS.iterdir():
        try:
            if p.read_text().startswith(f"{sandboxd.state_dir}\n"):
                claims.append(p.name)
        except FileNotFoundError:
            pass
    return {
        "sandboxes": sorted(b["id"] for b in client.list()),
        "cgroups": sorted(p.name for p in cg.iterdir() if p.is_dir()),
        "records": sorted(os.listdir(sandboxd.state_dir / "sandboxes")),
        "volumes": sorted(os.listdir(volumes)) if volumes.is_dir() else [],
        "veths": sorted(line.split(":")[1].strip().split("@")[0] for line in links
                        if line.split(":")[1].strip().startswith(prefix)),
        "uid_claims": sorted(claims),
    }


def snapshot(sandboxd, client, timeout: float = 5.0) -> dict:
    """What a request could have changed on the host, once the warm pool is full.

    The daemon keeps WARM sandboxes booted ahead of demand (a cgroup, uid block, volume
    and veth each, no record) and refills the pool in the background after a create; wait
    for that to finish so that a refill does not pass for a change made by the request
    under test.
    """
    deadline = time.monotonic() + timeout
    while True:
        info = client.info()
        state = _host_state(sandboxd, client)
        if (len(info["warm_slots"]) == WARM and not info["warm_pending"]) \
                or time.monotonic() > deadline:
            return {**state, "warm": sorted(info["warm_slots"])}
        time.sleep(0.02)


def refused(sandboxd, client, method: str, path: str, body, *,
            status: int | tuple[int, ...] = 400, field: str | None = None,
            reason: Reason | None = None) -> dict:
    """Send a bad request; assert a 4xx JSON error naming `field` (and `reason`, which
    every error carries), and that nothing changed.

    `body` is a dict (sent as JSON), raw bytes, or None. Returns the error payload.
    """
    data = json.dumps(body).encode() if isinstance(body, (dict, list)) else body
    before = snapshot(sandboxd, client)
    try:
        code, ctype, payload = raw(sandboxd, method, "/v1" + path, data)
    finally:
        after = snapshot(sandboxd, client)
        for sid in set(after["sandboxes"]) - set(before["sandboxes"]):
            client.destroy(sid, purge=True)  # a wrongly accepted create must not leak
    shown = payload[:300]
    wanted = status if isinstance(status, tuple) else (status,)
    assert code in wanted, f"{method} {path} {shown!r}: expected {status}, got {code}"
    assert ctype.startswith("application/json"), f"{method} {path}: error is {ctype}: {shown!r}"
    err = json.loads(payload)
    assert isinstance(err, dict) and err.get("message"), f"error payload {err!r}"
    assert err.get("reason") in {r.value for r in Reason}, f"error without a reason: {err!r}"
    if reason is not None:
        assert err["reason"] == reason, f"{method} {path}: reason {err['reason']!r}, " \
                                        f"expected {reason.value!r}: {err['message']}"
    if field is not None:
        assert err.get("field") == field, f"{method} {path}: error names {err.get('field')!r}, " \
                                          f"expected {field!r}: {err['message']}"
    assert after == before, f"{method} {path} changed the host: {before} -> {after}"
    return err


# --------------------------------------------------------------------------- the socket

def test_socket_is_mode_0660(sandboxd):
    st = os.stat(sandboxd.socket)
    assert stat.S_ISSOCK(st.st_mode), f"{sandboxd.socket} is not a socket"
    assert stat.S_IMODE(st.st_mode) == 0o660, f"socket mode is {oct(stat.S_IMODE(st.st_mode))}"


# --------------------------------------------------------------------------- create

@pytest.mark.parametrize("body,field", [
    ({"cpus": 1, "evil": 1}, "evil"),
    ({"__proto__": {}}, "__proto__"),
    ({"cpus": "lots"}, "cpus"),
    ({"pids": True}, "pids"),
    ({"memory": []}, "memory"),
    ({"memory": {"size": 1}}, "memory"),
    ({"disk": 1.5e9}, "disk"),
    ({"hostname": 7}, "hostname"),
    ({"labels": ["a"]}, "labels"),
    ({"labels": {"k": 1}}, "labels"),
    ({"cpu_weight": 1.5}, "cpu_weight"),
], ids=lambda v: json.dumps(v) if isinstance(v, dict) else str(v))
def test_create_refuses_unknown_fields_and_wrong_types(sandboxd, client, body, field):
    refused(sandboxd, client, "POST", "/sandboxes", body, field=field)


@pytest.mark.parametrize("body,field", [
    ({"cpus": -1}, "cpus"), ({"cpus": 0}, "cpus"),
    ({"memory": "-5"}, "memory"), ({"memory": -5}, "memory"), ({"memory": 0}, "memory"),
    ({"memory": "1k"}, "memory"),
    ({"pids": 0}, "pids"), ({"pids": -1}, "pids"),
    ({"disk": 0}, "disk"), ({"disk": "-1g"}, "disk"),
    ({"shm": 0}, "shm"), ({"home_quota": "0"}, "home_quota"),
    ({"cpu_weight": 0}, "cpu_weight"), ({"io_weight": -3}, "io_weight"),
], ids=lambda v: json.dumps(v) if isinstance(v, dict) else str(v))
def test_create_refuses_negative_and_zero_limits(sandboxd, client, body, field):
    refused(sandboxd, client, "POST", "/sandboxes", body, field=field)


@pytest.mark.parametrize("body,field", [
    ({"memory": "100T"}, "memory"), ({"disk": "99999999T"}, "disk"),
    ({"pids": 10**9}, "pids"), ({"memory": 10**30}, "memory"),
    ({"swap": "100T"}, "swap"), ({"shm": "1T"}, "shm"),
    ({"cpus": 1e308}, "cpus"),
], ids=lambda v: json.dumps(v) if isinstance(v, dict) else str(v))
def test_create_refuses_huge_sizes(sandboxd, client, body, field):
    refused(sandboxd, client, "POST", "/sandboxes", body, field=field)


def test_create_refuses_more_cpus_than_the_host_has(sandboxd, client):
    refused(sandboxd, client, "POST", "/sandboxes", {"cpus": os.cpu_count() + 1}, field="cpus")
    refused(sandboxd, client, "POST", "/sandboxes", {"cpuset": "9999"}, field="cpuset")


@pytest.mark.parametrize("body", [b'{"cpus": NaN}', b'{"cpus": Infinity}',
                                  b'{"memory": -Infinity}'])
def test_create_refuses_non_finite_numbers(sandboxd, client, body):
    refused(sandboxd, client, "POST", "/sandboxes", body)


@pytest.mark.parametrize("body,field", [
    ({"home": "../../etc"}, "home"), ({"home": "a/b"}, "home"), ({"home": ".."}, "home"),
    ({"home": "/etc"}, "home"), ({"home": ""}, "home"), ({"home": "a" * 65}, "home"),
    ({"hostname": "../x"}, "hostname"), ({"hostname": "a\nb"}, "hostname"),
    ({"hostname": "a\0b"}, "hostname"), ({"hostname": "-x"}, "hostname"),
    ({"hostname": "x" * 64}, "hostname"),
    ({"image": "../../bin"}, "image"), ({"image": "/"}, "image"), ({"image": "a/b"}, "image"),
], ids=lambda v: json.dumps(v)[:40] if isinstance(v, dict) else str(v))
def test_create_refuses_traversal_and_hostile_names(sandboxd, client, body, field):
    refused(sandboxd, client, "POST", "/sandboxes", body, field=field)


@pytest.mark.parametrize("body,field", [
    ({"hostname": "evil\n"}, "hostname"),
    ({"home": "h1\n"}, "home"),
    ({"cpuset": "0\n"}, "cpuset"),
    ({"image": "host\n"}, "image"),
], ids=["hostname", "home", "cpuset", "image"])
def test_create_refuses_a_trailing_newline(sandboxd, client, body, field):
    refused(sandboxd, client, "POST", "/sandboxes", body, field=field)


def test_create_with_a_missing_image_is_404_and_lists_images(sandboxd, client):
    err = refused(sandboxd, client, "POST", "/sandboxes", {"image": "nosuch"}, status=404,
                  field="image", reason=Reason.NO_SUCH_IMAGE)
    assert "host" in err["message"], f"the error does not list the images: {err['message']}"


def test_create_with_a_home_in_use_is_409(sandboxd, client):
    sb = client.create(memory="64m", disk="64m", home="api-home")
    try:
        refused(sandboxd, client, "POST", "/sandboxes", {"home": "api-home"}, status=409,
                field="home", reason=Reason.IN_USE)
    finally:
        client.destroy(sb["id"], purge=True)


# --------------------------------------------------------------------------- bodies

@pytest.mark.parametrize("body", [b"{not json", b"[1, 2]", b'"a string"', b"null", b"42",
                                  b"\xff\xfe\x00", b'{"pids": 1' + b"0" * 5000 + b"}"],
                         ids=["broken", "array", "string", "null", "number", "not-utf8",
                              "huge-int"])
def test_bodies_that_are_not_a_json_object_are_refused(sandboxd, client, body):
    refused(sandboxd, client, "POST", "/sandboxes", body)


def test_a_deeply_nested_body_is_refused(sandboxd, client):
    refused(sandboxd, client, "POST", "/sandboxes", b"[" * 100_000 + b"]" * 100_000)


def test_a_2mib_body_is_413(sandboxd, client):
    body = json.dumps({"labels": {"a": "x" * (2 << 20)}}).encode()
    refused(sandboxd, client, "POST", "/sandboxes", body, status=413, reason=Reason.TOO_LARGE)


# --------------------------------------------------------------------------- ids in URLs

@pytest.mark.parametrize("method,path", [
    ("GET", "/sandboxes/..%2F..%2Fetc"), ("GET", "/sandboxes/zzz"),
    ("GET", "/sandboxes/%00"), ("GET", "/sandboxes/0123456789AB"),
    ("DELETE", "/sandboxes/..%2F..%2Fetc"),
    ("GET", "/sandboxes/..%2F..%2Fetc/inspect"), ("POST", "/sandboxes/zzz/stop"),
    ("GET", "/sandboxes/zzz/stats"),
])
def test_garbage_sandbox_ids_in_urls_are_refused(sandboxd, client, method, path):
    err = refused(sandboxd, client, method, path, None, status=400, field="id")
    assert "12 hex digits" in err["message"]


def test_an_id_with_a_trailing_newline_is_refused(sandboxd, client, box):
    """The newline bug (below) lets `id\\n` through the id check; the lookup still fails."""
    for sid in (SID, box["id"]):
        refused(sandboxd, client, "GET", f"/sandboxes/{sid}%0A", None, status=(400, 404))
        refused(sandboxd, client, "DELETE", f"/sandboxes/{sid}%0A", None, status=(400, 404))
    assert client.get(box["id"])["state"] == "running"


@pytest.mark.parametrize("method,path", [
    ("GET", f"/sandboxes/{SID}"), ("DELETE", f"/sandboxes/{SID}"),
    ("GET", f"/sandboxes/{SID}/inspect"), ("POST", f"/sandboxes/{SID}/start"),
    ("POST", f"/sandboxes/{SID}/run"), ("GET", "/sandboxes/../../etc/passwd"),
    ("GET", "/exec/nosuch"), ("POST", "/exec/nosuch/signal"), ("GET", "/nope"),
])
def test_unknown_sandboxes_and_routes_are_404(sandboxd, client, method, path):
    body = b'{"argv": ["true"]}' if path.endswith("/run") else None
    reason = (Reason.NO_SUCH_SANDBOX if SID in path else Reason.NO_SUCH_EXEC if "/exec/" in path
              else Reason.NOT_FOUND)
    refused(sandboxd, client, method, path, body, status=404, reason=reason)


# --------------------------------------------------------------------------- reasons

def test_errors_carry_the_reason_the_client_branches_on(sandboxd, client, box):
    """Each cause a caller may act on comes back as its own `reason`, rebuilt by the
    client into the same kind of error (never to be told apart by its message)."""
    sid = box["id"]
    with pytest.raises(NotFound) as e:
        client.get(SID)
    assert e.value.reason == Reason.NO_SUCH_SANDBOX
    with pytest.raises(NotFound) as e:
        client.exec_info("0" * 16)
    assert e.value.reason == Reason.NO_SUCH_EXEC
    with pytest.raises(InvalidRequest) as e:
        client.read_file(sid, "/proc/1/status")
    assert e.value.reason == Reason.SPECIAL_FILESYSTEM and e.value.field == "path"
    with pytest.raises(InvalidRequest) as e:
        client.read_file(sid, "/sys/kernel/mm/transparent_hugepage/enabled")
    assert e.value.reason == Reason.SPECIAL_FILESYSTEM
    with pytest.raises(NotFound) as e:
        client.read_file(sid, "/no/such/file")
    assert e.value.reason == Reason.NO_SUCH_FILE
    with pytest.raises(InvalidRequest) as e:
        client.read_file(sid, "/etc")
    assert e.value.reason == Reason.NOT_REGULAR_FILE
    with pytest.raises(InvalidRequest) as e:
        client.list_dir(sid, "/etc/hostname")
    assert e.value.reason == Reason.NOT_DIRECTORY
    with pytest.raises(NotFound) as e:
        client.read_file(sid, "/etc/hostname", pid=99999)
    assert e.value.reason == Reason.NO_SUCH_PROCESS


def test_a_stopped_sandbox_answers_not_running(sandboxd, client):
    sb = client.create(memory="64m", disk="64m")
    try:
        client.stop(sb["id"])
        for call in (lambda: client.inspect(sb["id"]), lambda: client.stats(sb["id"]),
                     lambda: client.run(sb["id"], ["true"]),
                     lambda: client.read_file(sb["id"], "/etc/hostname")):
            with pytest.raises(Conflict) as e:
                call()
            assert e.value.reason == Reason.NOT_RUNNING
    finally:
        client.destroy(sb["id"], purge=True)


def test_delete_refuses_a_bad_purge_flag(sandboxd, client, box):
    refused(sandboxd, client, "DELETE", f"/sandboxes/{box['id']}?purge=maybe", None,
            field="purge")


# --------------------------------------------------------------------------- exec and run

EXEC_CASES = [
    ({"argv": []}, "argv"), ({"argv": ["a\0b"]}, "argv"), ({"argv": "ls"}, "argv"),
    ({"argv": [""]}, "argv"), ({"argv": [1]}, "argv"), ({}, "argv"),
    ({"argv": ["x"] * 5000}, "argv"),
    ({"argv": ["true"], "env": {"1BAD": "x"}}, "env"),
    ({"argv": ["true"], "env": {"A=B": "x"}}, "env"),
    ({"argv": ["true"], "env": {"A": 1}}, "env"), ({"argv": ["true"], "env": ["A=1"]}, "env"),
    ({"argv": ["true"], "env": {"A": "a\0b"}}, "env"),
    ({"argv": ["true"], "user": "root; rm"}, "user"), ({"argv": ["true"], "user": -1}, "user"),
    ({"argv": ["true"], "user": 70000}, "user"), ({"argv": ["true"], "user": True}, "user"),
    ({"argv": ["true"], "cwd": "tmp"}, "cwd"), ({"argv": ["true"], "cwd": "../etc"}, "cwd"),
    ({"argv": ["true"], "cwd": 5}, "cwd"),
    ({"argv": ["true"], "rows": 0}, "rows"), ({"argv": ["true"], "cols": 100000}, "cols"),
    ({"argv": ["true"], "tty": "yes"}, "tty"),
    ({"argv": ["true"], "evil": 1}, "evil"),
]


@pytest.mark.parametrize("body,field", EXEC_CASES,
                         ids=lambda v: json.dumps(v)[:40] if isinstance(v, dict) else str(v))
def test_exec_refuses_bad_payloads(sandboxd, client, box, body, field):
    refused(sandboxd, client, "POST", f"/sandboxes/{box['id']}/exec", body, field=field)
    assert not client.inspect(box["id"])["processes"][1:], "a refused exec left a process"


@pytest.mark.parametrize("body,field", EXEC_CASES[:3] + [
    ({"argv": ["true"], "timeout": -1}, "timeout"),
    ({"argv": ["true"], "timeout": 0}, "timeout"),
    ({"argv": ["true"], "timeout": 10000}, "timeout"),
    ({"argv": ["true"], "timeout": "10"}, "timeout"),
    ({"argv": ["true"], "stdin": 5}, "stdin"),
    ({"argv": ["true"], "limit": 0}, "limit"),
    ({"argv": ["true"], "tty": True}, "tty"),
    ({"argv": ["true"], "trace": ["reboot"]}, "trace"),
    ({"argv": ["true"], "trace": "unshare"}, "trace"),
    ({"argv": ["true"], "trace": []}, "trace"),
], ids=lambda v: json.dumps(v)[:40] if isinstance(v, dict) else str(v))
def test_run_refuses_bad_payloads(sandboxd, client, box, body, field):
    refused(sandboxd, client, "POST", f"/sandboxes/{box['id']}/run", body, field=field)


@pytest.mark.parametrize("body,field", [
    ({"argv": ["env"], "env": {"A\n": "x"}}, "env"),
    ({"argv": ["id"], "user": "root\n"}, "user"),
], ids=["env", "user"])
def test_run_refuses_a_trailing_newline(sandboxd, client, box, body, field):
    refused(sandboxd, client, "POST", f"/sandboxes/{box['id']}/run", body, field=field)


# --------------------------------------------------------------------------- the CLI

def assert_cli_error(result: subprocess.CompletedProcess, what: str) -> str:
    lines = result.stderr.decode().splitlines()
    assert result.returncode != 0, f"{what} exited 0"
    assert len(lines) == 1 and lines[0].startswith("nslab: error: "), \
        f"{what}: stderr is not one `nslab: error:` line: {lines}"
    return lines[0]


@pytest.mark.parametrize("args", [
    ["--memory", "-5"], ["--memory", "100T"], ["--disk", "99999999T"], ["--pids", "0"],
    ["--pids", "1000000000"], ["--cpus", "0"], ["--cpus", "1000"], ["--home", "../../etc"],
    ["--home", "a/b"], ["--hostname", "../x"], ["--image", "../../bin"],
    ["--image", "nosuch"], ["--cpuset", "9999"],
], ids=" ".join)
def test_cli_create_refuses_bad_values(sandboxd, client, args):
    before = snapshot(sandboxd, client)
    result = sandboxd.cli("sandbox", "create", *args)
    after = snapshot(sandboxd, client)
    for sid in set(after["sandboxes"]) - set(before["sandboxes"]):
        client.destroy(sid, purge=True)
    assert_cli_error(result, f"nslab sandbox create {' '.join(args)}")
    assert result.stdout == b"", f"create printed {result.stdout!r}"
    assert after == before, f"a refused create changed the host: {before} -> {after}"


def test_cli_usage_errors_exit_2_and_create_nothing(sandboxd, client):
    """Values argparse itself cannot parse are usage errors (exit 2), by the CLI's design."""
    before = snapshot(sandboxd, client)
    result = sandboxd.cli("sandbox", "create", "--cpus", "lots")
    assert result.returncode == 2, result
    assert b"--cpus" in result.stderr, result.stderr
    assert snapshot(sandboxd, client) == before


def test_cli_errors_on_missing_sandbox_and_missing_command(sandboxd):
    line = assert_cli_error(sandboxd.cli("sandbox", "exec", SID, "--", "true"), "exec on nothing")
    assert SID in line
    assert_cli_error(sandboxd.cli("sandbox", "exec", "zzz", "--", "true"), "exec on a bad id")
    assert_cli_error(sandboxd.cli("sandbox", "inspect", "../../etc"), "inspect of a bad id")
    assert_cli_error(sandboxd.cli("sandbox", "rm", SID), "rm of nothing")
    assert_cli_error(sandboxd.cli("sandbox", "exec", SID, "--"), "exec without a command")


def test_cli_exec_passes_stdio_and_exit_code_through(sandboxd, box):
    result = sandboxd.cli("sandbox", "exec", box["id"], "--", "sh", "-c",
                          "cat; echo e >&2; exit 5", input=b"hello")
    assert result.stdout == b"hello", result
    assert result.stderr == b"e\n", result
    assert result.returncode == 5, result


def test_cli_exec_passes_binary_output_and_signals(sandboxd, box):
    data = bytes(range(256))
    result = sandboxd.cli("sandbox", "exec", box["id"], "--", "cat", input=data)
    assert result.stdout == data and result.returncode == 0, result
    result = sandboxd.cli("sandbox", "exec", box["id"], "--", "sh", "-c", "kill -9 $$")
    assert result.returncode == 137, f"a process killed by SIGKILL exits {result.returncode}"


def test_cli_exec_stdin_faster_than_the_process_reads_loses_nothing(sandboxd, box):
    """24 MiB piped into a process that starts reading late and reads slowly: the stream
    waits for the process (backpressure) instead of dropping what does not fit the daemon's
    buffer (before: 45 MB arrived as 34.7 MB, with "input is arriving faster than the
    process reads it")."""
    data = os.urandom(24 << 20)
    result = sandboxd.cli("sandbox", "exec", box["id"], "--", "sh", "-c",
                          "sleep 2; dd bs=64k status=none | sha256sum", input=data,
                          timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[0].decode() == hashlib.sha256(data).hexdigest()
    assert b"faster" not in result.stderr


def test_cli_lifecycle_with_json(sandboxd, client):
    before = snapshot(sandboxd, client)
    created = sandboxd.cli("sandbox", "create", "--memory", "64m", "--disk", "64m", "--json")
    assert created.returncode == 0, created.stderr.decode()
    sid = json.loads(created.stdout)["id"]
    try:
        listed = sandboxd.cli("sandbox", "ls", "--json")
        assert listed.returncode == 0, listed.stderr.decode()
        assert sid in [b["id"] for b in json.loads(listed.stdout)]
        inspected = sandboxd.cli("sandbox", "inspect", sid)
        assert inspected.returncode == 0, inspected.stderr.decode()
        view = json.loads(inspected.stdout)
        assert view["id"] == sid
        assert [p["comm"] for p in view["processes"]] == ["catatonit"], view["processes"]
        stats = sandboxd.cli("sandbox", "stats", sid, "--json")
        assert stats.returncode == 0, stats.stderr.decode()
        assert json.loads(stats.stdout)["id"] == sid
        removed = sandboxd.cli("sandbox", "rm", sid)
        assert removed.returncode == 0, removed.stderr.decode()
    except BaseException:
        if sid in [b["id"] for b in client.list()]:
            client.destroy(sid, purge=True)
        raise
    after = snapshot(sandboxd, client)

    def own(state: dict, key: str) -> set[str]:
        """Volumes and veths (named after the id) less the warm sandboxes'."""
        return {x for x in state[key] if not any(x.endswith(w[:9]) or x == w
                                                for w in state["warm"])}

    for key in ("sandboxes", "records", "volumes", "veths"):
        assert own(after, key) == own(before, key), \
            f"rm left {key} behind: {before[key]} -> {after[key]}"
    # The create took a warm slot that the pool replaced; the sandbox's own are gone.
    assert sid not in after["cgroups"] and sid not in after["uid_claims"] + after["records"], \
        f"rm left the cgroup or uid claim of {sid}: {after}"
