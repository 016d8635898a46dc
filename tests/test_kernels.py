"""Notebook kernels inside sandboxes (sandbox/kernels.py, nslab/kernels), for real.

Each test starts Debian's ipykernel inside a real sandbox through sandboxd and talks to it
with jupyter_client over the host-side ipc sockets that sandboxd relays. What the kernel
is (its pid, hostname, namespaces, cgroup, memory) is checked from the host against the
sandbox's inspect facts; the learner's attacks (root inside) are done for real.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
import subprocess
import sys
import time
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from nslab.kernels import (SandboxProvisioner, connect, disconnect, execute, kernel_manager,
                           wait_idle)
from sandbox.errors import Conflict, InvalidRequest, NotFound
from sandbox.protocol import Reason

from conftest import ok

pytestmark = pytest.mark.privileged

INSIDE_PREFIX = "/run/nslab-kernel/kernel"  # sandbox/kernels.py
FACTS = """
import json, os, socket
print(json.dumps({"pid": os.getpid(), "hostname": socket.gethostname(),
                  "ns": {n: os.stat(f"/proc/self/ns/{n}").st_ino
                         for n in os.listdir("/proc/self/ns")},
                  "cgroup": open("/proc/self/cgroup").read()}))
"""


def run(coro):
    return asyncio.run(coro)


async def _exec(client, sid: str, code: str):
    km, kc = await connect(client, sid)
    try:
        return km, await execute(kc, code, timeout=30)
    finally:
        disconnect(km, kc)


def result_text(outcome) -> str:
    return "".join(o["content"]["data"]["text/plain"] for o in outcome.outputs
                   if o["msg_type"] == "execute_result")


def stdout_text(outcome) -> str:
    return "".join(o["content"]["text"] for o in outcome.outputs if o["msg_type"] == "stream")


def wait_gone(client, sid: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            client.kernel(sid)
        except NotFound as e:
            assert e.reason == Reason.NO_SUCH_KERNEL
            return
        time.sleep(0.05)
    raise AssertionError(f"the kernel of {sid} is still known {timeout} s later")


def alive(host_pid: int) -> bool:
    try:
        return Path(f"/proc/{host_pid}/stat").read_text().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


def host_socket(facts, channel: int) -> str:
    return f"{facts['connection']['ip']}-{channel}"


def test_the_kernel_is_a_process_of_the_sandbox(client, sandbox, sandboxd):
    """PID, hostname, namespaces and cgroup inside are the sandbox's, as the host reads
    them; `1+1` gives '2' through the host-side ipc sockets; nothing listens on TCP."""
    sid = sandbox["id"]
    _km, outcome = run(_exec(client, sid, FACTS + "1+1"))
    assert outcome.ok, outcome.error
    assert result_text(outcome) == "2"
    inside = json.loads(stdout_text(outcome))
    facts = client.kernel(sid)
    conn = facts["connection"]
    assert conn["transport"] == "ipc" and conn["signature_scheme"] == "hmac-sha256"
    assert [conn[f"{c}_port"] for c in ("shell", "iopub", "stdin", "control", "hb")] == \
        [1, 2, 3, 4, 5]
    host_dir = Path(conn["ip"]).parent
    assert host_dir.is_dir() and stat.S_IMODE(host_dir.stat().st_mode) == 0o750
    for n in range(1, 6):
        st = os.stat(host_socket(facts, n))
        assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o660
    assert len(host_socket(facts, 5)) < 100
    # Only root and the socket group (none here) reach them: another host user does not.
    probe = ("import socket, sys\ns = socket.socket(socket.AF_UNIX)\ntry:\n"
             f"    s.connect({host_socket(facts, 1)!r})\nexcept PermissionError:\n"
             "    sys.exit(3)\n")
    assert subprocess.run([sys.executable, "-c", probe], user="nobody", group="nogroup",
                          extra_groups=[], timeout=30).returncode == 3
    assert facts["pid"] == inside["pid"]
    assert inside["hostname"] == sandbox["hostname"]

    view = client.inspect(sid)
    procs = {p["host_pid"]: p for p in view["processes"]}
    kernel = procs[facts["host_pid"]]
    init = procs[view["init_pid"]]
    assert kernel["pid"] == inside["pid"]
    assert kernel["uid"] == 0 and kernel["cmdline"][1:3] == ["/run/nslab-kernel/launch.py", "-f"]
    for ns in ("user", "uts", "ipc", "net", "pid", "mnt", "cgroup"):
        assert kernel["namespaces"][ns] == init["namespaces"][ns] == inside["ns"][ns], ns
    assert kernel["cgroup"] == "/"  # the sandbox's own cgroup (relative to it)
    host_cgroup = Path(f"/proc/{facts['host_pid']}/cgroup").read_text()
    assert f"/nslab/{sandboxd.name}/{sid}" in host_cgroup
    # Inside its cgroup namespace the sandbox's cgroup is the root.
    assert all(line.endswith(":/") for line in inside["cgroup"].splitlines() if line), \
        inside["cgroup"]

    # Its five channels, and ipykernel's pipe for forked processes' output (a TCP port on
    # 127.0.0.1 in ipykernel 6, moved by sandbox/kernels.py's LAUNCH), are Unix sockets in
    # the inside directory: nothing of the kernel listens on TCP.
    fds = Path(f"/proc/{facts['host_pid']}/fd")
    inodes = {os.readlink(fd)[8:-1] for fd in fds.iterdir()
              if os.readlink(fd).startswith("socket:[")}
    net = Path(f"/proc/{facts['host_pid']}/net")
    # /proc/net/unix: Num RefCount Protocol Flags (0x10000: listening) Type St Inode Path
    bound = {line.split()[6]: line.split()[7] for line in
             (net / "unix").read_text().splitlines()[1:]
             if len(line.split()) == 8 and line.split()[3] == "00010000"}
    listening = sorted(path for inode, path in bound.items() if inode in inodes)
    assert [p for p in listening if p.startswith(INSIDE_PREFIX)] == \
        [f"{INSIDE_PREFIX}-{n}" for n in range(1, 6)]
    assert f"{INSIDE_PREFIX.rsplit('/', 1)[0]}/fork-pipe" in listening, listening
    for table in ("tcp", "tcp6"):
        for line in (net / table).read_text().splitlines()[1:]:
            assert line.split()[9] not in inodes, f"the kernel has a TCP socket: {line}"
    assert not [s for s in view["sockets"] if s["proto"] == "tcp"], view["sockets"]


def test_an_endless_loop_is_interrupted_by_message(client, sandbox):
    sid = sandbox["id"]

    async def go():
        km, kc = await connect(client, sid)
        try:
            assert km.kernel_spec.interrupt_mode == "message"
            msg_id = kc.execute("while True: pass")
            await asyncio.sleep(1.0)
            await km.interrupt_kernel()
            while True:
                reply = await kc.get_shell_msg(timeout=10)
                if reply["parent_header"].get("msg_id") == msg_id:
                    return reply["content"]
        finally:
            disconnect(km, kc)

    content = run(go())
    assert content["status"] == "error" and content["ename"] == "KeyboardInterrupt"
    _km, outcome = run(_exec(client, sid, "1+1"))
    assert result_text(outcome) == "2"


def test_output_of_a_forked_process_reaches_the_client(client, sandbox):
    """What a forked child prints comes back through ipykernel's pipe for subprocesses,
    which sandbox/kernels.py moved from TCP to a Unix socket."""
    code = ("import os\npid = os.fork()\nif pid == 0:\n    print('from-the-child', flush=True)\n"
            "    os._exit(0)\nos.waitpid(pid, 0)\nprint('from-the-parent')")
    _km, outcome = run(_exec(client, sandbox["id"], code))
    assert outcome.ok, outcome.error
    out = stdout_text(outcome)
    assert "from-the-child" in out and "from-the-parent" in out, out


def test_a_second_manager_reattaches_with_the_state_kept(client, sandbox):
    """A restarted web app makes a new manager: it gets the same kernel back."""
    sid = sandbox["id"]
    km1, outcome = run(_exec(client, sid, "x = 41"))
    assert outcome.ok
    km2, outcome = run(_exec(client, sid, "x + 1"))
    assert km2.kernel_id == km1.kernel_id == client.kernel(sid)["kernel_id"]
    assert result_text(outcome) == "42"

    async def restart_and_shutdown():
        km = kernel_manager(client, sid)
        await km.start_kernel()
        kc = km.client()
        kc.start_channels()
        try:
            await wait_idle(kc, 30)
            await km.restart_kernel()
            assert await km.is_alive()
            await wait_idle(kc, 30)  # the client made before the restart reaches the new one
            after = await execute(kc, "'x' in dir()", timeout=30)
        finally:
            kc.stop_channels()
        await km.shutdown_kernel()
        return after, await km.is_alive()

    after, still_alive = run(restart_and_shutdown())
    assert result_text(after) == "False", after  # a fresh kernel
    assert not still_alive
    wait_gone(client, sid)


def test_stopping_the_sandbox_ends_the_kernel_and_its_relay(client, sandbox):
    sid = sandbox["id"]
    run(_exec(client, sid, "1+1"))
    facts = client.kernel(sid)
    client.stop(sid)
    assert not alive(facts["host_pid"])
    for n in range(1, 6):
        assert not os.path.exists(host_socket(facts, n))
    with pytest.raises(NotFound) as e:
        client.kernel(sid)
    assert e.value.reason == Reason.NO_SUCH_KERNEL
    with pytest.raises(Conflict) as e:
        client.start_kernel(sid)
    assert e.value.reason == Reason.NOT_RUNNING
    assert not os.path.exists(host_socket(facts, 1))
    client.start(sid)
    _km, outcome = run(_exec(client, sid, "1+1"))
    assert result_text(outcome) == "2"


def test_the_kernels_memory_is_the_sandboxs(client, sandbox):
    sid = sandbox["id"]
    run(_exec(client, sid, "1+1"))
    before = client.stats(sid)["memory_current"]
    _km, outcome = run(_exec(client, sid, "block = bytearray(100 << 20)\nblock[::4096] = "
                                          "b'x' * len(block[::4096])"))
    assert outcome.ok, outcome.error
    after = client.stats(sid)["memory_current"]
    assert after - before >= 80 << 20, (before, after)


def test_bad_input_is_refused_and_starts_nothing(client, sandbox):
    sid = sandbox["id"]
    for bad in ("../x", "", "a" * 65, "a b"):
        with pytest.raises(InvalidRequest) as e:
            client.start_kernel(sid, bad)
        assert e.value.field == "kernel_id"
    with pytest.raises(InvalidRequest) as e:
        client.request("POST", f"/sandboxes/{sid}/kernel", {"argv": ["sh"]})
    assert e.value.field == "argv"
    with pytest.raises(NotFound) as e:
        client.kernel(sid)
    assert e.value.reason == Reason.NO_SUCH_KERNEL
    with pytest.raises(NotFound) as e:
        client.start_kernel("0123456789ab")
    assert e.value.reason == Reason.NO_SUCH_SANDBOX
    assert ok(client, sid, "pgrep -f 'ipykernel[_]launcher' || echo none").strip() == "none"


def test_the_learner_killing_the_kernel_is_seen_and_a_new_one_starts(client, sandbox):
    sid = sandbox["id"]
    run(_exec(client, sid, "1+1"))
    first = client.kernel(sid)
    ok(client, sid, f"kill -9 {first['pid']}")
    wait_gone(client, sid)
    assert not os.path.exists(host_socket(first, 1))
    _km, outcome = run(_exec(client, sid, "1+1"))
    assert result_text(outcome) == "2"
    assert client.kernel(sid)["host_pid"] != first["host_pid"]


def _refused(path: str) -> None:
    """The relay accepts on `path` and closes at once, having connected nothing."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    try:
        s.connect(path)
        try:
            s.sendall(b"\xff\x00\x00\x00\x00\x00\x00\x00\x01\x7f")  # a ZMTP greeting's start
            assert s.recv(100) == b""
        except (BrokenPipeError, ConnectionResetError):
            pass  # closed before the bytes came: refused all the same
    finally:
        s.close()


def test_a_link_or_fifo_in_place_of_a_kernel_socket_is_refused(client, sandbox, tmp_path):
    """The learner (root inside) replaces the kernel's sockets: with a link to a socket on
    the host's path, a link to another socket inside, a fifo. The relay connects to none
    of them, and never hangs."""
    sid = sandbox["id"]
    run(_exec(client, sid, "1+1"))
    facts = client.kernel(sid)
    host_target = tmp_path / "host.sock"
    host_listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    host_listener.bind(str(host_target))
    host_listener.listen(4)
    host_listener.settimeout(0.5)
    ok(client, sid, f"rm -f {INSIDE_PREFIX}-1 {INSIDE_PREFIX}-2 "
                    f"{INSIDE_PREFIX}-3 && ln -s {host_target} {INSIDE_PREFIX}-1 && "
                    f"ln -s /tmp/inside.sock {INSIDE_PREFIX}-2 && mkfifo {INSIDE_PREFIX}-3")
    # A listener inside where the second link points, counting what connects to it.
    ok(client, sid, "nohup python3 -c \"import socket; s = socket.socket(socket.AF_UNIX); "
                    "s.bind('/tmp/inside.sock'); s.listen(4); s.accept(); "
                    "open('/tmp/connected', 'w').write('yes')\" >/dev/null 2>&1 &"
                    " for i in $(seq 50); do [ -S /tmp/inside.sock ] && break; sleep 0.1; done")
    try:
        for channel in (1, 2, 3):
            started = time.monotonic()
            _refused(host_socket(facts, channel))
            assert time.monotonic() - started < 3
        with pytest.raises(socket.timeout):
            host_listener.accept()
        assert ok(client, sid, "cat /tmp/connected 2>/dev/null || echo no").strip() == "no"
    finally:
        host_listener.close()
    assert client.kernel(sid)["kernel_id"] == facts["kernel_id"]  # the relay serves on
    client.stop_kernel(sid)
    wait_gone(client, sid)
    _km, outcome = run(_exec(client, sid, "1+1"))
    assert result_text(outcome) == "2"


def test_relayed_connections_are_bounded_and_the_heartbeat_is_not_activity(client, sandbox):
    sid = sandbox["id"]
    run(_exec(client, sid, "1+1"))
    facts = client.kernel(sid)
    held = []

    def hb_count(want: int) -> int:
        deadline = time.monotonic() + 5
        while (n := client.kernel(sid)["connections"]["hb"]) != want and \
                time.monotonic() < deadline:
            time.sleep(0.05)
        return n

    assert hb_count(0) == 0
    try:
        for _ in range(8):  # MAX_CONNECTIONS per channel
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(host_socket(facts, 5))
            held.append(s)
        assert hb_count(8) == 8
        _refused(host_socket(facts, 5))
        before = client.kernel(sid)
        time.sleep(0.05)
        held[0].sendall(b"\xff" + bytes(8) + b"\x7f")  # bytes on the heartbeat
        deadline = time.monotonic() + 5
        while client.kernel(sid)["bytes_relayed"] == before["bytes_relayed"] and \
                time.monotonic() < deadline:
            time.sleep(0.05)
        now = client.kernel(sid)
        assert now["bytes_relayed"] > before["bytes_relayed"]
        assert now["last_activity"] == before["last_activity"]
    finally:
        for s in held:
            s.close()
    run(_exec(client, sid, "1+1"))  # a cell is activity
    assert client.kernel(sid)["last_activity"] > now["last_activity"]


def test_nslab_kernel_run_prints_outputs_and_exits_1_on_an_error(sandboxd, client, sandbox):
    sid = sandbox["id"]
    r = sandboxd.cli("kernel", "run", sid, "--code", "print('hello'); y = 20; y + 22")
    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout.decode().split() == ["hello", "42"]
    r = sandboxd.cli("kernel", "run", sid, "--code", "y / 0")
    assert r.returncode == 1
    assert "ZeroDivisionError" in r.stderr.decode()
    r = sandboxd.cli("kernel", "run", sid, "--code", "-", input=b"print(y)")
    assert r.returncode == 0 and r.stdout.decode().strip() == "20"


def test_the_provisioner_is_the_registered_entry_point():
    found = entry_points(group="jupyter_client.kernel_provisioners")
    assert found["nslab-sandbox"].load() is SandboxProvisioner


def test_provisioner_info_finds_the_kernel_again(client, sandbox):
    """What a manager persists (`get_provisioner_info`, JSON) is enough for another
    process's provisioner to find the running kernel, and to end it."""
    sid = sandbox["id"]
    km, _ = run(_exec(client, sid, "1+1"))
    info = json.loads(json.dumps(run(km.provisioner.get_provisioner_info())))
    assert info["sandbox_id"] == sid and info["socket"] == str(client.socket_path)
    again = SandboxProvisioner(kernel_id=km.kernel_id)
    run(again.load_provisioner_info(info))
    assert again.has_process and run(again.poll()) is None
    run(again.kill())
    wait_gone(client, sid)
    assert run(again.poll()) is not None
