"""A container engine inside a sandbox (issue 11): `nslab sandbox create --containers`.

Everything here is real: rootful podman, run by the sandbox's root through podman-docker's
`docker`, inside a real sandbox, on an image made without a registry (Debian's static
busybox tarred and `docker import`ed inside). What must hold:
  - the engine's image storage is native overlay on a directory of the sandbox's own
    volume (not vfs on the overlay root), counted against its disk;
  - `docker run --rm`, `run -d`, `ps`, `inspect` work; `--cpus` and `-m` land in the
    sandbox's delegated cgroup, where the host reads them; a published port answers
    inside and from the host;
  - what this opens stays closed where it must: the sandbox cannot widen its devices
    whitelist or open a block device, and of /proc/sys only its own network namespace's
    part is writable;
  - the host image's /etc follows packages installed after the daemon started;
  - a sandbox without `containers` pays nothing for it, and a `containers` one is never a
    warm sandbox (booted without the storage);
  - destroying it leaves nothing (the session's leftovers check, conftest.py).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import ok, sh
from nslab.labkit.loader import load_lab
from sandbox.errors import InvalidRequest
from sandbox.images import containers_conf
from sandbox.protocol import Reason

pytestmark = pytest.mark.privileged

REPO = Path(__file__).resolve().parent.parent
IMAGE = "bb"
# A registry-free image: the host's static busybox (the sandbox sees the host's /usr).
MAKE_IMAGE = (
    "set -e; d=$(mktemp -d); mkdir -p $d/bin $d/www; cp /bin/busybox $d/bin/; "
    "for c in sh true httpd sleep cat ls wget; do ln -s busybox $d/bin/$c; done; "
    "echo 'hello from a container' > $d/www/index.html; "
    f"tar -C $d -c . | docker import - {IMAGE} >/dev/null; rm -rf $d")


def cgroup_dir(sandboxd, controller: str, sid: str) -> Path:
    return Path("/sys/fs/cgroup") / controller / "nslab" / sandboxd.name / sid


@pytest.fixture(scope="module")
def cbox(sandboxd):
    """One `containers` sandbox with the busybox image imported; destroyed afterwards,
    and checked to leave no cgroup or mount behind (veths, nftables: the session's
    leftovers check)."""
    if not shutil.which("busybox") or not os.path.exists("/usr/bin/docker"):
        pytest.fail("busybox-static and podman-docker are needed: run scripts/setup")
    c = sandboxd.client()
    sb = c.create(cpus=1.0, memory="1g", pids=1024, disk="1g", containers=True)
    try:
        ok(c, sb["id"], MAKE_IMAGE)
        yield sb
    finally:
        c.destroy(sb["id"], purge=True)
    for controller in ("cpu", "memory", "devices", "systemd"):
        assert not cgroup_dir(sandboxd, controller, sb["id"]).exists(), \
            f"the sandbox's {controller} cgroup outlived it"
    assert sb["id"] not in Path("/proc/self/mountinfo").read_text()


def docker(client, sid: str, script: str, timeout: float = 60) -> str:
    r = sh(client, sid, script, timeout=timeout)
    assert r["exit_code"] == 0, f"`{script}` failed inside: {r['stderr']}"
    return r["stdout"]


# ------------------------------------------------------------------ the engine works


def test_image_storage_is_native_overlay_on_the_sandbox_volume(client, cbox):
    """podman's store is overlay (vfs would copy every image per container); the store is
    the sandbox's own btrfs directory, root's inside, and what it holds counts against
    the sandbox's disk."""
    sid = cbox["id"]
    assert ok(client, sid, "podman info --format '{{.Store.GraphDriverName}}'").strip() == "overlay"
    assert ok(client, sid, "stat -f -c %T /var/lib/containers; stat -c %U /var/lib/containers"
              ).split() == ["btrfs", "root"]
    before = client.stats(sid)["disk"]["used_bytes"]
    ok(client, sid, "head -c 50000000 /dev/urandom > /var/lib/containers/blob && sync")
    try:
        after = client.stats(sid)["disk"]["used_bytes"]
        assert after - before >= 40_000_000, (before, after)
    finally:
        ok(client, sid, "rm /var/lib/containers/blob")


def test_docker_is_podman_docker_and_nothing_shadows_it(client, cbox):
    """`docker` inside is nslab's small /usr/local/sbin/docker in front of podman-docker's
    /usr/bin/docker (it only makes `rm` kill at once), even where the host has another
    docker earlier in PATH (/usr/local/bin), and it prints no emulation notice."""
    sid = cbox["id"]
    assert ok(client, sid, "command -v docker").strip() == "/usr/local/sbin/docker"
    assert ok(client, sid, "bash -lc 'command -v docker'").strip() == "/usr/local/sbin/docker"
    assert "exec /usr/bin/docker" in ok(client, sid, "cat /usr/local/sbin/docker")
    r = sh(client, sid, f"docker images --format '{{{{.Repository}}}}'")
    assert r["exit_code"] == 0 and f"localhost/{IMAGE}" in r["stdout"].split()
    assert "Emulate" not in r["stderr"], r["stderr"]
    if os.path.exists("/usr/local/bin/docker"):
        assert sh(client, sid, "test -e /usr/local/bin/docker")["exit_code"] != 0


def test_rm_force_kills_at_once_as_dockers_does(client, cbox):
    """A PID 1 that ignores SIGTERM (a shell loop, sleep): Docker's `rm -f` kills it at
    once; podman's alone waited the 10 s stop timeout (10.9-13.1 s measured). `docker stop`
    keeps its grace period."""
    sid = cbox["id"]
    ok(client, sid, f"docker run -d --name loop {IMAGE} sh -c 'while :; do :; done'")
    t = time.monotonic()
    docker(client, sid, "docker rm -f loop", timeout=30)
    took = time.monotonic() - t
    assert took < 5, f"docker rm -f took {took:.1f} s"
    assert "loop" not in ok(client, sid, "docker ps -a --format '{{.Names}}'").split()
    ok(client, sid, f"docker container run -d --name loop2 {IMAGE} sleep 1000")
    t = time.monotonic()
    docker(client, sid, "docker container rm --force loop2", timeout=30)
    assert time.monotonic() - t < 5
    # Without -f it is podman's own rm (which refuses --time without --force).
    ok(client, sid, f"docker run --name done {IMAGE} true")
    docker(client, sid, "docker rm done")
    docker(client, sid, f"docker run --name done2 {IMAGE} true && docker rm -v done2")
    r = sh(client, sid, f"docker run -d --name up {IMAGE} sleep 1000 && docker rm up")
    assert r["exit_code"] != 0  # a running container needs -f, as with Docker
    docker(client, sid, "docker rm -vf up", timeout=30)
    assert ok(client, sid, "docker ps -aq") == ""


def test_run_rm_detached_ps_inspect(client, cbox, sandboxd):
    """run --rm, run -d, ps and inspect; the container's main process is a real process
    of the sandbox, in namespaces of its own, in a cgroup under the sandbox's."""
    sid = cbox["id"]
    assert docker(client, sid, f"docker run --rm {IMAGE} sh -c 'echo $$'").strip() == "1"
    cid = docker(client, sid, f"docker run -d --name sleeper {IMAGE} sleep 600").strip()
    try:
        assert re.fullmatch(r"[0-9a-f]{64}", cid), cid
        ps = docker(client, sid, "docker ps --format '{{.ID}} {{.Names}} {{.Status}}'")
        assert any(line.startswith(cid[:12]) and " sleeper Up" in line
                   for line in ps.splitlines()), ps
        pid = int(docker(client, sid, "docker inspect sleeper --format '{{.State.Pid}}'"))
        facts = client.inspect(sid)
        init = next(p for p in facts["processes"] if p["host_pid"] == cbox["init_pid"])
        proc = next((p for p in facts["processes"] if p["pid"] == pid), None)
        assert proc is not None, f"container pid {pid} is not among the sandbox's processes"
        assert proc["namespaces"]["pid"] != init["namespaces"]["pid"]
        assert proc["namespaces"]["mnt"] != init["namespaces"]["mnt"]
        host_cgroup = cgroup_dir(sandboxd, "memory", sid) / "libpod_parent" / f"libpod-{cid}"
        assert proc["host_pid"] in map(int, (host_cgroup / "cgroup.procs").read_text().split())
    finally:
        docker(client, sid, "docker rm -f -t 0 sleeper")
    assert "sleeper" not in docker(client, sid, "docker ps -a --format '{{.Names}}'")


def test_cpu_and_memory_flags_land_in_the_delegated_cgroup(client, cbox, sandboxd):
    """--cpus 0.5 and -m 64m are written in the container's cgroup, below the sandbox's
    own group, which the host reads; the sandbox's own limits are unchanged."""
    sid = cbox["id"]
    cid = docker(client, sid, f"docker run -d --cpus 0.5 -m 64m {IMAGE} sleep 600").strip()
    try:
        cpu = cgroup_dir(sandboxd, "cpu", sid)
        mem = cgroup_dir(sandboxd, "memory", sid)
        leaf = Path("libpod_parent") / f"libpod-{cid}"
        assert (cpu / leaf / "cpu.cfs_quota_us").read_text().strip() == "50000"
        assert (cpu / leaf / "cpu.cfs_period_us").read_text().strip() == "100000"
        assert int((mem / leaf / "memory.limit_in_bytes").read_text()) == 64 << 20
        assert (cpu / "cpu.cfs_quota_us").read_text().strip() == "100000"
        assert int((mem / "memory.limit_in_bytes").read_text()) == 1 << 30
    finally:
        docker(client, sid, f"docker rm -f -t 0 {cid}")


def test_published_port_answers_inside_and_from_the_host(client, cbox):
    """-p 8080:80 (busybox httpd): localhost:8080 inside, and the sandbox's address from
    the host, where sandboxd sees the port listening."""
    sid = cbox["id"]
    docker(client, sid, f"docker run -d --name web -p 8080:80 {IMAGE} httpd -f -p 80 -h /www")
    try:
        page = ""
        deadline = time.monotonic() + 10
        while "hello" not in page and time.monotonic() < deadline:
            page = sh(client, sid, "busybox wget -qO- http://127.0.0.1:8080/")["stdout"]
            time.sleep(0.1)
        assert page.strip() == "hello from a container"
        port = client.port(sid, 8080)
        assert port["listening"] and port["host"] == cbox["address"]
        with urllib.request.urlopen(f"http://{cbox['address']}:8080/", timeout=5) as resp:
            assert resp.read().decode().strip() == "hello from a container"
    finally:
        docker(client, sid, "docker rm -f -t 0 web")


# ------------------------------------------------------------------ what stays closed


def test_devices_whitelist_cannot_be_widened(client, cbox, sandboxd):
    """The devices hierarchy is delegated for runc, but its rules are not the sandbox's:
    its top cgroup's devices.allow is host root's, a child it makes may not be widened
    either (the kernel wants CAP_SYS_ADMIN in the host's user namespace), and a block
    device can still be neither made nor opened."""
    sid = cbox["id"]
    top = cgroup_dir(sandboxd, "devices", sid)
    before = (top / "devices.list").read_text()
    assert sh(client, sid, "echo a > /sys/fs/cgroup/devices/devices.allow")["exit_code"] != 0
    r = sh(client, sid, "mkdir /sys/fs/cgroup/devices/mine && "
                        "echo 'b 7:* rwm' > /sys/fs/cgroup/devices/mine/devices.deny; "
                        "echo a > /sys/fs/cgroup/devices/mine/devices.allow; rc=$?; "
                        "rmdir /sys/fs/cgroup/devices/mine; exit $rc")
    assert r["exit_code"] != 0, "root inside wrote a devices rule"
    assert (top / "devices.list").read_text() == before
    r = sh(client, sid, "mknod /tmp/loop0 b 7 0 && head -c1 /tmp/loop0")
    assert r["exit_code"] != 0, "a block device was made and read inside"
    r = sh(client, sid, "mknod /var/lib/containers/loop0 b 7 0 && head -c1 "
                        "/var/lib/containers/loop0")
    assert r["exit_code"] != 0, "a block device was made and read on the image storage"


def test_only_proc_sys_net_is_writable(client, cbox):
    """Network sysctls are the sandbox's own network namespace's: writable (podman writes
    ping_group_range); kernel.* and vm.* stay read-only, the bind cannot be undone, and
    the host's own value does not move."""
    sid = cbox["id"]
    host = Path("/proc/sys/net/ipv4/ping_group_range").read_text()
    ok(client, sid, "sysctl -w net.ipv4.ping_group_range='0 0'")
    assert ok(client, sid, "cat /proc/sys/net/ipv4/ping_group_range").split() == ["0", "0"]
    assert Path("/proc/sys/net/ipv4/ping_group_range").read_text() == host
    forward = Path("/proc/sys/net/ipv4/ip_forward").read_text()
    flipped = "0" if forward.strip() == "1" else "1"
    ok(client, sid, f"echo {flipped} > /proc/sys/net/ipv4/ip_forward")
    assert Path("/proc/sys/net/ipv4/ip_forward").read_text() == forward
    for key in ("kernel.domainname=x", "kernel.pid_max=50000", "vm.swappiness=10",
                "fs.protected_symlinks=0"):
        assert sh(client, sid, f"sysctl -w {key}")["exit_code"] != 0, f"{key} was written"
    # Host-wide values that a network namespace lists: read-only there.
    for rel in ("net/core/rmem_max", "net/netfilter/nf_conntrack_max"):
        host = Path("/proc/sys", rel)
        if not host.exists():
            continue
        before = host.read_text()
        assert sh(client, sid, f"echo 1000 > /proc/sys/{rel}")["exit_code"] != 0, rel
        assert host.read_text() == before
    assert sh(client, sid, "umount /proc/sys/net")["exit_code"] != 0
    assert sh(client, sid, "mount -o remount,rw /proc/sys")["exit_code"] != 0


def test_a_sandbox_without_containers_pays_nothing(client, sandbox, sandboxd):
    """No devices or name=systemd group for it, none mounted inside, no image storage."""
    sid = sandbox["id"]
    assert not cgroup_dir(sandboxd, "devices", sid).exists()
    assert not cgroup_dir(sandboxd, "systemd", sid).exists()
    assert ok(client, sid, "ls /sys/fs/cgroup").split().count("devices") == 0
    assert "/var/lib/containers" not in ok(client, sid, "cat /proc/self/mountinfo")


def test_a_containers_create_never_takes_a_warm_sandbox(client, sandboxd):
    deadline = time.monotonic() + 10
    while not client.info()["warm_slots"] and time.monotonic() < deadline:
        time.sleep(0.05)
    warm = set(client.info()["warm_slots"])
    assert warm, "the warm pool stayed empty"
    sb = client.create(memory="512m", disk="256m", containers=True)
    try:
        assert sb["id"] not in warm and sb["containers"] is True
        assert "/var/lib/containers" in ok(client, sb["id"], "cat /proc/self/mountinfo")
    finally:
        client.destroy(sb["id"], purge=True)


# ------------------------------------------------------------------ the host image's /etc


def test_host_image_etc_follows_the_host(client, sandboxd):
    """A package installed after the daemon started shows its /etc files in new sandboxes
    (warm ones included): here, a fake install (a world-readable /etc file and dpkg's
    status touched) instead of a real one."""
    name = f"nslab-test-{secrets.token_hex(4)}"
    path = Path("/etc") / name
    status = Path("/var/lib/dpkg/status")
    st = status.stat()
    path.write_text("installed after sandboxd started\n")
    os.chmod(path, 0o644)
    sb = None
    try:
        os.utime(status, ns=(st.st_atime_ns, time.time_ns()))
        sb = client.create(cpus=1.0, memory="256m", pids=256, disk="256m")
        assert ok(client, sb["id"], f"cat /etc/{name}") == "installed after sandboxd started\n"
        assert ok(client, sb["id"], "cat /etc/containers/policy.json") \
            == Path("/etc/containers/policy.json").read_text()
        assert ok(client, sb["id"], "readlink /etc/alternatives/iptables").strip() \
            == os.readlink("/etc/alternatives/iptables")
    finally:
        if sb is not None:
            client.destroy(sb["id"], purge=True)
        path.unlink()
        os.utime(status, ns=(st.st_atime_ns, st.st_mtime_ns))
    # The next create rebuilds it without the file again.
    sb = client.create(cpus=1.0, memory="256m", pids=256, disk="256m")
    try:
        assert sh(client, sb["id"], f"test -e /etc/{name}")["exit_code"] != 0
    finally:
        client.destroy(sb["id"], purge=True)


# ------------------------------------------------------------------ asking for it


def test_containers_must_be_a_boolean(client):
    for bad in ("yes", 1, 0, "true", [True]):
        with pytest.raises(InvalidRequest) as e:
            client.request("POST", "/sandboxes", {"containers": bad})
        assert e.value.field == "containers" and e.value.reason == Reason.INVALID


def test_cli_create_containers(sandboxd, client):
    r = sandboxd.cli("sandbox", "create", "--containers", "--memory", "512m", "--disk",
                     "256m", "--json", check=True)
    sb = json.loads(r.stdout)
    try:
        assert sb["containers"] is True
    finally:
        client.destroy(sb["id"], purge=True)


def test_lab_yaml_containers(tmp_path):
    folder = tmp_path / "example"
    shutil.copytree(REPO / "labs" / "example", folder,
                    ignore=shutil.ignore_patterns("__pycache__"))
    yaml = folder / "lab.yaml"
    text = yaml.read_text()
    block = "sandbox:\n  cpus: 1.0\n  memory: 256m\n  pids: 256\n  disk: 512m\n"
    assert block in text
    yaml.write_text(text.replace(block, "sandbox:\n  cpus: 1.0\n  containers: true\n"))
    lab = load_lab(folder)
    assert lab.ok, lab.errors
    assert lab.sandbox_limits["containers"] is True
    assert lab.sandbox_limits["memory"] == "1g"  # an engine's images want about 1 GiB
    yaml.write_text(text.replace(block, "sandbox:\n  cpus: 1.0\n  containers: yes please\n"))
    lab = load_lab(folder)
    assert [(e.line, "containers" in e.message) for e in lab.errors] == [(7, True)]


# ------------------------------------------------------------------ a figure


def test_measure_run_rm_inside_and_on_the_host(client, cbox, tmp_path, record_property):
    """`docker run --rm IMG true` inside (bridge network, and none) vs podman on the host
    (runc, no network: a bridge would leave CNI state on the host; in a throwaway mount
    namespace): reported, and bounded loosely (other tests' load must not fail it)."""
    sid = cbox["id"]
    docker(client, sid, f"docker run --rm {IMAGE} true")  # warm caches
    inside, inside_none = [], []
    for _ in range(5):
        for flags, out in (("", inside), ("--network none", inside_none)):
            t = time.monotonic()
            docker(client, sid, f"docker run --rm {flags} {IMAGE} true")
            out.append(time.monotonic() - t)
    work = Path(tempfile.mkdtemp(prefix="nslp", dir="/tmp"))  # podman: runroot <= 50 chars
    rootfs = tmp_path / "rootfs"
    (rootfs / "bin").mkdir(parents=True)
    shutil.copy("/bin/busybox", rootfs / "bin" / "busybox")
    os.symlink("busybox", rootfs / "bin" / "true")
    # The configuration sandboxes get: runc, ulimits within the inherited hard limits
    # (podman's defaults are above them, and this host root may lack CAP_SYS_RESOURCE).
    conf = containers_conf()
    (work / "containers.conf").write_text(conf)
    ulimits = " ".join(f"--ulimit {u}" for u in re.findall(r'"(\w+=\d+:\d+)"', conf))
    script = (f"set -e; P='podman --root {work}/root --runroot {work}/run --tmpdir {work}/tmp'; "
              f"tar -C {rootfs} -c . | $P import - {IMAGE} >/dev/null; "
              f"$P run --rm --network none {ulimits} {IMAGE} true; "
              "for i in 1 2 3 4 5; do s=$(date +%s%N); "
              f"$P run --rm --network none {ulimits} {IMAGE} true; "
              "e=$(date +%s%N); echo $(( (e - s) / 1000 )); done; "
              "$P rm -a -f >/dev/null; $P rmi -a -f >/dev/null 2>&1 || true")
    r = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                       capture_output=True, text=True, timeout=120,
                       env={**os.environ, "CONTAINERS_CONF": str(work / "containers.conf")})
    try:
        assert r.returncode == 0, r.stderr[-2000:]
        host = [int(x) / 1e6 for x in r.stdout.split()]
    finally:
        subprocess.run(["umount", "-R", str(work)], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    p50 = {"inside": sorted(inside)[2], "inside_none": sorted(inside_none)[2],
           "host_none": sorted(host)[2]}
    for key, value in p50.items():
        record_property(f"{key}_p50_ms", round(value * 1000))
    print("docker run --rm true, p50 ms:", {k: round(v * 1000) for k, v in p50.items()})
    inside_p50 = p50["inside"]
    assert inside_p50 < 5.0


def test_a_link_planted_in_the_upper_dir_cannot_lead_a_restart_out(client):
    """Between boots the sandbox's upper dir is the learner's: a link where
    /usr/local/sbin was must not turn the engine's writes at boot (the whiteout hiding a
    host docker, nslab's `docker`) into writes on the host. The restarted sandbox boots as
    the learner left it, and nothing appears in the link's target on the host."""
    target = Path(tempfile.mkdtemp(prefix="nslab-planted-"))
    sb = client.create(memory="512m", disk="512m", containers=True)
    try:
        ok(client, sb["id"], f"rm -rf /usr/local/sbin /usr/local/bin && "
                             f"ln -s {target} /usr/local/sbin && ln -s {target} /usr/local/bin")
        client.stop(sb["id"])
        client.start(sb["id"])
        assert list(target.iterdir()) == []
        assert ok(client, sb["id"], "readlink /usr/local/sbin").strip() == str(target)
        assert ok(client, sb["id"], "echo alive") == "alive\n"
    finally:
        client.destroy(sb["id"], purge=True)
        shutil.rmtree(target, ignore_errors=True)


def test_images_survive_stop_and_start(client):
    """The record keeps `containers`: a restarted sandbox gets its storage and cgroups
    back, with the images it had."""
    sb = client.create(memory="512m", disk="512m", containers=True)
    try:
        ok(client, sb["id"], MAKE_IMAGE)
        client.stop(sb["id"])
        assert client.start(sb["id"])["containers"] is True
        assert docker(client, sb["id"], f"docker run --rm {IMAGE} cat /www/index.html") \
            == "hello from a container\n"
    finally:
        client.destroy(sb["id"], purge=True)
