"""Containers inside a sandbox as host-side facts for grading, through a real sandboxd.

No container engine is needed: each test makes a "container" by hand inside a real
sandbox the way an engine does (a child cgroup under `libpod_parent/libpod-<id>` with
the limits Docker's flags set, then `unshare --pid --mount --net --uts --ipc --fork` into
it, a server listening in its own network namespace) and checks what `inspect` and the
lab API's `SandboxView` report of it, read from the kernel: the main process (PID 1 of
its pid namespace) with its pid inside, in the sandbox and on the host, its namespaces,
cgroup path and limit files, its listening sockets, and OOM kills. Names and images from
the engine's store are labels, and a store the learner fills with garbage changes nothing
else. `http_get` reaches a server in the sandbox from the host side through sandboxd,
bounded in bytes and time.
"""

from __future__ import annotations

import secrets
import time

import pytest

from nslab.labkit.check import SandboxView, _image_matches
from sandbox.errors import Conflict, InvalidRequest
from sandbox.cgroupsv2 import CgroupsV2
from sandbox.procfs import container_groups
from sandbox.protocol import Reason

from conftest import SERVE_SCRIPT, ok, sh

MiB = 1 << 20
STORE = "/var/lib/containers/storage/overlay-containers/containers.json"

SERVE = SERVE_SCRIPT

# The controllers an engine puts a container in, and the limit files Docker's flags set
# (--cpus 0.5, --cpu-shares 512, --cpuset-cpus 0, -m 64m, --memory-swap 128m,
# --memory-reservation 32m, --memory-swappiness 10, --oom-kill-disable), per version.
LIMITS_V1 = """
C=/sys/fs/cgroup; P=libpod_parent/libpod-$ID
for h in cpu cpuacct cpuset memory pids; do mkdir -p $C/$h/$P; done
echo 50000 > $C/cpu/$P/cpu.cfs_quota_us
echo 512 > $C/cpu/$P/cpu.shares
echo 0 > $C/cpuset/$P/cpuset.cpus
echo {memory} > $C/memory/$P/memory.limit_in_bytes
echo {memsw} > $C/memory/$P/memory.memsw.limit_in_bytes
echo {reservation} > $C/memory/$P/memory.soft_limit_in_bytes
echo 10 > $C/memory/$P/memory.swappiness
echo {oom_disable} > $C/memory/$P/memory.oom_control
enter='for h in cpu cpuacct cpuset memory pids; do echo $$ > '$C'/$h/'$P'/cgroup.procs; done'
"""
LIMITS_V2 = """
C=/sys/fs/cgroup; P=libpod_parent/libpod-$ID
echo '+cpu +cpuset +memory +pids' > $C/cgroup.subtree_control
mkdir -p $C/libpod_parent $C/$P
echo '+cpu +cpuset +memory +pids' > $C/libpod_parent/cgroup.subtree_control
echo '50000 100000' > $C/$P/cpu.max
echo 20 > $C/$P/cpu.weight
echo 0 > $C/$P/cpuset.cpus
echo {memory} > $C/$P/memory.max
echo {swap} > $C/$P/memory.swap.max
echo {reservation} > $C/$P/memory.low
enter='echo $$ > '$C'/'$P'/cgroup.procs'
"""


def start_container(client, sid: str, version: int, main: str, *, memory: int = 64 * MiB,
                    memsw: int = 128 * MiB, oom_disable: int = 1) -> tuple[str, int]:
    """Make a container by hand as an engine would; (its 64-hex id, the sandbox pid of
    the process that enters it). `main` is the shell command its PID 1 runs."""
    cid = secrets.token_hex(32)
    limits = (LIMITS_V1 if version == 1 else LIMITS_V2).format(
        memory=memory, memsw=memsw, swap=memsw - memory, reservation=32 * MiB,
        oom_disable=oom_disable)
    script = (f"ID={cid}\n{limits}\ncat > /tmp/main-$ID.sh <<'EOF'\n{main}\nEOF\n"
              "sh -c \"$enter; exec unshare --pid --mount --net --uts --ipc --fork "
              "--mount-proc sh /tmp/main-$ID.sh\" </dev/null >/dev/null 2>&1 &\necho $!")
    pid = int(ok(client, sid, script).strip())
    return cid, pid


def wait_containers(client, sid: str, ready, timeout: float = 10.0) -> dict:
    """inspect() until `ready(facts)` holds."""
    deadline = time.monotonic() + timeout
    while True:
        facts = client.inspect(sid)
        if ready(facts):
            return facts
        assert time.monotonic() < deadline, \
            f"containers never got ready: {facts['containers']}"
        time.sleep(0.1)


def main_runs(comm: str):
    # Until it execs, the PID 1 that `unshare --fork` forks still shows as unshare.
    return lambda facts: any(c["main"]["comm"] == comm for c in facts["containers"])


def listens(port: int):
    return lambda facts: any(any(s["port"] == port for s in c["sockets"])
                             for c in facts["containers"])


@pytest.mark.privileged
def test_hand_made_container_is_found_from_the_kernel_with_its_limits(client, sandbox):
    sid = sandbox["id"]
    version = client.info()["cgroup_version"]
    ok(client, sid, f"cat > /tmp/serve.py <<'EOF'\n{SERVE % 8080}EOF")
    cid, _ = start_container(client, sid, version, "exec python3 /tmp/serve.py")
    # The store says what podman would; only labels come from it.
    store = ('[{"id": "%s", "names": ["web"], "image": "abc", '
             '"metadata": "{\\"image-name\\":\\"docker.io/library/nginx:latest\\"}"}]' % cid)
    ok(client, sid, f"mkdir -p {STORE.rsplit('/', 1)[0]} && cat > {STORE} <<'EOF'\n{store}\nEOF")
    facts = wait_containers(client, sid, listens(8080))
    [c] = facts["containers"]
    init = next(p for p in facts["processes"] if p["pid"] == 1)
    main = c["main"]
    proc = next(p for p in facts["processes"] if p["host_pid"] == main["host_pid"])
    assert main["pid"] == 1 and proc["nspids"] == [main["host_pid"], main["sandbox_pid"], 1]
    assert main["comm"] == "python3" and main["parent_comm"] == "unshare"
    assert c["level"] == 1 and c["pid_namespace"] == proc["namespaces"]["pid"]
    assert main["host_pid"] in c["processes"]
    # Every namespace the engine unshared differs from the sandbox init's, and only those.
    assert set(c["new_namespaces"]) == {"ipc", "mnt", "net", "pid", "uts"}
    for t in ("ipc", "mnt", "net", "pid", "uts"):
        assert c["namespaces"][t] != init["namespaces"][t]
    assert c["namespaces"]["user"] == init["namespaces"]["user"]
    assert c["cgroup"] == f"/libpod_parent/libpod-{cid}"
    lim = c["limits"]
    assert lim["cpu_quota_us"] == 50000 and lim["cpu_period_us"] == 100000
    assert lim["cpus"] == 0.5 and lim["cpuset_cpus"] == "0"
    assert lim["memory_max"] == 64 * MiB and lim["memory_reservation"] == 32 * MiB
    assert lim["swap_max"] == 64 * MiB
    if version == 1:
        assert lim["cpu_shares"] == 512 and lim["memsw_max"] == 128 * MiB
        assert lim["memory_swappiness"] == 10
        assert lim["oom_kill_disable"] is True and lim["under_oom"] is False
    else:
        assert lim["cpu_weight"] == 20 and lim["memory_low"] == 32 * MiB
    assert c["oom_kills"] == 0
    # Its socket is in its own network namespace, not the sandbox's.
    [s] = [s for s in c["sockets"] if s["port"] == 8080]
    assert s["state"] == "LISTEN" and s["netns"] == c["namespaces"]["net"]
    assert not any(s["port"] == 8080 and s["netns"] == init["namespaces"]["net"]
                   for s in facts["sockets"])
    assert (c["id"], c["name"], c["image"]) == (cid, "web", "docker.io/library/nginx:latest")
    # The lab API's typed view of the same facts.
    view = SandboxView(client, sid)
    found = view.container(image="nginx", port=8080)
    assert found is not None and found.name == "web" and found.cpus == 0.5
    assert found.main.pid == 1 and found.main.host_pid == main["host_pid"]
    assert "net" in found.new_namespaces and found.listens(8080)
    assert [p.comm for p in view.processes_of(found)] == ["python3"]
    assert view.container(image="nginx:1.0") is None and view.container(name="db") is None


@pytest.mark.privileged
def test_oom_kill_in_a_container_counts_and_the_sandbox_lives(client, sandbox):
    sid = sandbox["id"]
    version = client.info()["cgroup_version"]
    # PID 1 survives: the allocation runs in a child, which the OOM killer picks.
    main = ('python3 -c "b = bytearray(200 << 20)"; echo $? > /tmp/rc; exec sleep 1000')
    start_container(client, sid, version, main, memory=32 * MiB, memsw=32 * MiB,
                    oom_disable=0)
    facts = wait_containers(client, sid, lambda f: any(
        c["oom_kills"] for c in f["containers"]), timeout=20)
    [c] = facts["containers"]
    assert c["oom_kills"] >= 1 and c["main"]["comm"] == "sleep"
    assert c["limits"]["memory_max"] == 32 * MiB
    assert ok(client, sid, "cat /tmp/rc").strip() == "137"  # SIGKILL
    assert client.get(sid)["state"] == "running"
    assert any(p["pid"] == 1 for p in client.inspect(sid)["processes"])


@pytest.mark.privileged
def test_a_container_is_a_pid_namespace_not_any_new_namespace(client, sandbox):
    sid = sandbox["id"]
    # A process in a mount (or network) namespace of its own is a tool at work, not a
    # container; a new pid namespace, even alone, is one.
    ok(client, sid, "unshare -m sleep 1000 </dev/null >/dev/null 2>&1 & "
                    "unshare -n sleep 1001 </dev/null >/dev/null 2>&1 &")
    facts = wait_containers(client, sid, lambda f: sum(
        p["comm"] == "sleep" for p in f["processes"]) == 2)
    assert facts["containers"] == []
    ok(client, sid, "unshare --pid --fork sleep 1002 </dev/null >/dev/null 2>&1 &")
    facts = wait_containers(client, sid, main_runs("sleep"))
    [c] = facts["containers"]
    assert c["new_namespaces"] == ["pid"] and c["main"]["cmdline"] == ["sleep", "1002"]
    assert c["cgroup"] == "/" and c["id"] is None and c["name"] is None


@pytest.mark.privileged
@pytest.mark.parametrize("store", [
    "deep",    # nested deeper than the JSON parser goes: inspect must not fail
    "large",   # over the read bound
    "fifo",    # a reader that opened it would block
    "wrong",   # JSON, but not podman's shape
])
def test_a_hostile_engine_store_changes_nothing_but_labels(client, sandbox, store):
    sid = sandbox["id"]
    d = STORE.rsplit("/", 1)[0]
    make = {
        "deep": f"python3 -c 'print(\"[\" * 200000)' > {STORE}",
        "large": f"head -c {2 * MiB} /dev/zero | tr '\\0' ' ' > {STORE}",
        "fifo": f"mkfifo {STORE}",
        "wrong": f"echo '[1, {{\"id\": 5}}, {{\"id\": \"x\", \"names\": 7, \"metadata\": 3}}]'"
                 f" > {STORE}",
    }[store]
    ok(client, sid, f"mkdir -p {d} && {make}")
    ok(client, sid, "unshare --pid --fork sleep 1000 </dev/null >/dev/null 2>&1 &")
    t0 = time.monotonic()
    facts = wait_containers(client, sid, main_runs("sleep"))
    assert time.monotonic() - t0 < 5
    [c] = facts["containers"]
    assert (c["name"], c["image"]) == (None, None) and c["main"]["comm"] == "sleep"


def test_container_groups_are_bounded():
    """Unprivileged: the grouping itself, on facts made up here."""
    def proc(host, nspids, pidns, ppid=1):
        return {"host_pid": host, "pid": nspids[1], "nspids": nspids, "ppid": ppid,
                "comm": "sh", "cmdline": ["sh"], "host_uid": 0, "uid": 0, "state": "S",
                "namespaces": {"pid": pidns}, "cgroup": "/", "cgroups": {}, "cpu_ns": 0,
                "cpus_allowed": None}
    init = proc(100, [100, 1], 1)
    procs = [init] + [proc(200 + i, [200 + i, 10 + i, 1], 50 + i) for i in range(5)]
    procs.append(proc(300, [300, 30, 2], 50))  # a second process of the first container
    groups, cut = container_groups(procs, init, 3)
    assert cut and [g.inode for g in groups] == [50, 51, 52]
    assert groups[0].members == [200, 300] and groups[0].main["sandbox_pid"] == 10
    groups, cut = container_groups(procs, init, 64)
    assert not cut and len(groups) == 5


# ---------------------------------------------------------------- http_get


@pytest.mark.privileged
def test_http_get_reaches_a_server_in_the_sandbox_from_the_host(client, sandbox):
    sid = sandbox["id"]
    ok(client, sid, "mkdir -p /tmp/www && echo 'Welcome to nginx!' > /tmp/www/index.html && "
                    "(python3 -m http.server 8080 --directory /tmp/www "
                    "</dev/null >/dev/null 2>&1 &)")
    view = SandboxView(client, sid)
    deadline = time.monotonic() + 10
    while not client.port(sid, 8080)["listening"]:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    r = view.http_get(8080, "/index.html")
    assert r.status == 200 and r.text == "Welcome to nginx!\n" and not r.truncated
    assert r.headers["content-length"] == "18"
    r = view.http_get(8080, "/missing")
    assert r.status == 404
    assert view.http_get(8083, "/", timeout=1) is None  # nothing listens there


@pytest.mark.privileged
def test_http_get_is_bounded_against_a_hostile_server(client, sandbox):
    sid = sandbox["id"]
    # An endless body, and a server that accepts and never answers.
    endless = ("import socket\ns = socket.socket()\n"
               "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
               "s.bind(('0.0.0.0', 8081)); s.listen(4)\n"
               "while True:\n"
               "    c = s.accept()[0]\n"
               "    try:\n"
               "        c.sendall(b'HTTP/1.0 200 OK\\r\\n\\r\\n')\n"
               "        while True: c.sendall(b'x' * 65536)\n"
               "    except OSError: c.close()\n")
    silent = SERVE.replace("s.accept()[0].close()", "conns = [s.accept()[0]]") % 8082
    ok(client, sid, f"cat > /tmp/endless.py <<'EOF'\n{endless}EOF\n"
                    f"cat > /tmp/silent.py <<'EOF'\n{silent}EOF\n"
                    "(python3 /tmp/endless.py </dev/null >/dev/null 2>&1 &); "
                    "(python3 /tmp/silent.py </dev/null >/dev/null 2>&1 &)")
    for port in (8081, 8082):
        deadline = time.monotonic() + 10
        while not client.port(sid, port)["listening"]:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    t0 = time.monotonic()
    facts = client.http_get(sid, 8081, "/", limit=100_000, timeout=5)
    assert facts["truncated"] and facts["status"] == 200
    assert time.monotonic() - t0 < 5
    t0 = time.monotonic()
    with pytest.raises(Conflict) as e:
        client.http_get(sid, 8082, "/", timeout=1)
    assert e.value.reason == Reason.NO_ANSWER and 0.9 < time.monotonic() - t0 < 3
    with pytest.raises(Conflict) as e:
        client.http_get(sid, 8083, "/", timeout=1)  # nothing listens: refused
    assert e.value.reason == Reason.NO_ANSWER
    for bad, field in (("index.html", "path"), ("/a b", "path"), ("/\r\nX: y", "path")):
        with pytest.raises(InvalidRequest) as e:
            client.http_get(sid, 8081, bad)
        assert e.value.field == field
    for kwargs, field in (({"timeout": 0}, "timeout"), ({"timeout": 60}, "timeout"),
                          ({"limit": 1 << 30}, "limit")):
        with pytest.raises(InvalidRequest) as e:
            client.http_get(sid, 8081, "/", **kwargs)
        assert e.value.field == field
    # The sandbox's own server still answers afterwards.
    assert sh(client, sid, "true")["exit_code"] == 0


def test_image_labels_match_as_docker_names_them():
    """Unprivileged: `sb.container(image=...)` takes the short names a learner types."""
    label = "docker.io/library/nginx:latest"
    for wanted in ("nginx", "nginx:latest", "docker.io/library/nginx", label):
        assert _image_matches(label, wanted), wanted
    for wanted in ("nginx:1.0", "ngin", "library", "debian"):
        assert not _image_matches(label, wanted), wanted
    assert _image_matches("localhost:5000/web", "web")
    assert not _image_matches(None, "nginx")


def test_v2_container_limits_are_read_under_their_names(tmp_path):
    """Unprivileged, and a fake: this development machine is cgroup v1, so the v2 files are
    plain files in a temporary directory, with the values Docker's flags write there
    (the privileged tests above take the v2 path on a pure v2 host)."""
    node = tmp_path / "nslab/t/sb/libpod_parent/libpod-x"
    node.mkdir(parents=True)
    for name, value in {"cpu.max": "50000 100000", "cpu.weight": "20", "cpuset.cpus": "0",
                        "cpuset.mems": "0", "memory.max": str(64 * MiB),
                        "memory.swap.max": str(64 * MiB), "memory.low": str(32 * MiB),
                        "memory.high": "max", "pids.max": "max",
                        "memory.events": "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n"}.items():
        (node / name).write_text(value + "\n")
    limits = CgroupsV2(tmp_path).container_limits("nslab/t/sb", {"": "/libpod_parent/libpod-x"})
    assert limits == {"cpu_quota_us": 50000, "cpu_period_us": 100000, "cpus": 0.5,
                      "cpu_weight": 20, "cpuset_cpus": "0", "cpuset_mems": "0",
                      "memory_max": 64 * MiB, "swap_max": 64 * MiB, "memory_low": 32 * MiB,
                      "memory_high": None, "memory_reservation": 32 * MiB, "oom_kills": 1,
                      "pids_max": None}
    # A path that is not below the sandbox's group is never read.
    assert CgroupsV2(tmp_path).container_limits("nslab/t/sb", {"": "/../../x"}) == {}
    assert CgroupsV2(tmp_path).container_limits("nslab/t/sb", {"": "user.slice"}) == {}
