"""The host services sandboxes reach (sandbox/services.py), from inside real sandboxes.

The session's sandboxd runs a read-only docker-registry seeded by scripts/setup (with
`debian:bookworm` and `nginx:latest`) and an apt-cacher-ng, both on its bridge's gateway
address; the firewall lets a sandbox reach those two ports there and nothing else of
the host. Each check runs its client inside a sandbox, where the learner is root.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import time
import uuid
from pathlib import Path

import pytest

from sandbox.config import PROXY_PORT, REGISTRY_PORT, HostConfig
from sandbox.config import PROXY_NAME, REGISTRY_NAME
from sandbox.services import read_registry
from conftest import Daemon, free_subnet, leftovers, ok, require_root, sh
from nslab.labkit.check import SandboxView

pytestmark = pytest.mark.privileged

OCI = "-H 'Accept: application/vnd.oci.image.manifest.v1+json'"  # the base images' kind

# Run inside: one TCP connect, printed as open / refused / timeout.
PROBE = """
import socket, sys
s = socket.socket()
s.settimeout(float(sys.argv[3]))
try:
    s.connect((sys.argv[1], int(sys.argv[2])))
    print("open")
except ConnectionRefusedError:
    print("refused")
except (socket.timeout, TimeoutError):
    print("timeout")
"""
# Run inside: an HTTP request with a method and a body; prints the status (urllib raises
# on 4xx/5xx, whose code is the status too).
REQUEST = """
import sys, urllib.request, urllib.error
req = urllib.request.Request(sys.argv[2], data=sys.argv[3].encode() or None, method=sys.argv[1],
                             headers={"Content-Type": sys.argv[4]})
try:
    with urllib.request.urlopen(req, timeout=10) as r:
        print(r.status); print(r.read().decode())
except urllib.error.HTTPError as e:
    print(e.code); print(e.read().decode())
"""


def gateway(sandboxd) -> str:
    return str(HostConfig(name=sandboxd.name, subnet=sandboxd.subnet).gateway)


def probe(client, sid: str, address: str, port: int, timeout: float = 2.0) -> str:
    return ok(client, sid, f"python3 -c '{PROBE}' {address} {port} {timeout}").strip()


def request(client, sid: str, method: str, url: str, body: str = "",
            content_type: str = "application/octet-stream") -> tuple[int, str]:
    r = client.run(sid, ["python3", "-c", REQUEST, method, url, body, content_type], timeout=20)
    assert r["exit_code"] == 0, r["stderr"]
    status, _, text = r["stdout"].partition("\n")
    return int(status), text


def host_address() -> str:
    """An address of this host outside every bridge (the one its default route leaves by)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("192.0.2.1", 9))  # TEST-NET-1: nothing is sent, only a route chosen
        return s.getsockname()[0]


def test_registry_serves_the_seeded_images_to_a_sandbox(client, sandboxd, sandbox):
    gw = gateway(sandboxd)
    base = f"http://{gw}:{REGISTRY_PORT}/v2"
    status, text = request(client, sandbox["id"], "GET", f"{base}/library/nginx/tags/list")
    assert status == 200, text
    assert json.loads(text) == {"name": "library/nginx", "tags": ["latest"]}
    status, text = request(client, sandbox["id"], "GET", f"{base}/library/debian/tags/list")
    assert (status, json.loads(text)["tags"]) == (200, ["bookworm"])
    # The manifest, and through it the image config: nginx's entrypoint as Docker's has it.
    sid = sandbox["id"]
    manifest = json.loads(ok(client, sid,
                             f"curl -sf -m 10 {OCI} {base}/library/nginx/manifests/latest"))
    digest = manifest["config"]["digest"]
    config = json.loads(ok(client, sid, f"curl -sfL -m 10 {base}/library/nginx/blobs/{digest}"))
    assert config["config"]["Entrypoint"] == ["nginx", "-g", "daemon off;"]
    assert "80/tcp" in config["config"]["ExposedPorts"]


def test_the_daemon_tells_the_digest_a_pull_records(client, sandboxd):
    """`GET /v1/registry` (read from the registry's storage on the host) names each tag's
    manifest digest, config and layers exactly as `docker pull` inside stores them: the
    host's side of "the image in the learner's store is the registry's"."""
    tags = {t["reference"]: t for t in client.registry()}
    assert set(tags) == {"docker.io/library/debian:bookworm", "docker.io/library/nginx:latest"}
    nginx = tags["docker.io/library/nginx:latest"]
    assert (nginx["repository"], nginx["tag"]) == ("library/nginx", "latest")
    assert nginx["media_type"] == "application/vnd.oci.image.manifest.v1+json"
    sb = client.create(cpus=1.0, memory="1g", pids=1024, disk="2g", containers=True)
    sid = sb["id"]
    try:
        # What the registry itself answers over HTTP, from inside.
        served = ok(client, sid, f"curl -sfI -m 10 {OCI} http://{REGISTRY_NAME}:{REGISTRY_PORT}"
                    "/v2/library/nginx/manifests/latest | tr -d '\\r' | "
                    "sed -n 's/^Docker-Content-Digest: //Ip'").strip()
        assert served == nginx["digest"]
        out = sh(client, sid, "docker pull nginx 2>&1", timeout=120)
        assert out["exit_code"] == 0, out["stdout"][-2000:]
        image = SandboxView(client, sid).image("nginx")
        assert image is not None
        assert image.digest == nginx["digest"]
        assert "sha256:" + image.id == nginx["config_digest"]
        assert [layer.diff_digest for layer in image.layers] == nginx["diff_ids"]
    finally:
        client.destroy(sid, purge=True)


def test_a_registry_tag_whose_blobs_do_not_match_is_left_out(tmp_path):
    """A tag is reported only with a manifest and config that match their digests."""
    seeded = HostConfig().images_src / "registry"
    if not (seeded / "docker").is_dir():
        pytest.fail(f"no seeded registry in {seeded}: run scripts/setup")
    copy = tmp_path / "registry"
    shutil.copytree(seeded, copy, symlinks=True)
    before = {t["reference"]: t for t in read_registry(copy)}
    assert len(before) == 2 and all(t["diff_ids"] for t in before.values())
    digest = before["docker.io/library/nginx:latest"]["digest"][7:]
    blob = copy / "docker/registry/v2/blobs/sha256" / digest[:2] / digest / "data"
    blob.write_bytes(blob.read_bytes().replace(b"{", b"{ ", 1))
    assert [t["reference"] for t in read_registry(copy)] == ["docker.io/library/debian:bookworm"]
    assert read_registry(tmp_path / "nothing") == []


def test_sandboxes_know_the_services_by_name(client, sandboxd, sandbox):
    """The names the base images' apt line and registries.conf use resolve to the gateway."""
    gw = gateway(sandboxd)
    sid = sandbox["id"]
    assert ok(client, sid, f"getent hosts {REGISTRY_NAME} {PROXY_NAME}").split() == [
        gw, REGISTRY_NAME, PROXY_NAME, gw, REGISTRY_NAME, PROXY_NAME]
    out = ok(client, sid, f"curl -sf -m 10 http://{REGISTRY_NAME}:{REGISTRY_PORT}/v2/_catalog")
    assert json.loads(out) == {"repositories": ["library/debian", "library/nginx"]}


def test_a_sandbox_root_can_neither_push_nor_delete(client, sandboxd, sandbox):
    gw = gateway(sandboxd)
    base = f"http://{gw}:{REGISTRY_PORT}/v2"
    sid = sandbox["id"]
    before = request(client, sid, "GET", f"{base}/library/nginx/tags/list")
    # An upload starts with a POST; a monolithic one is a POST with the digest.
    status, text = request(client, sid, "POST", f"{base}/library/nginx/blobs/uploads/")
    assert status == 405, text  # Method Not Allowed: read-only
    status, text = request(client, sid, "POST", f"{base}/library/evil/blobs/uploads/?digest="
                           "sha256:" + "0" * 64, "x")
    assert status == 405, text  # Method Not Allowed: read-only
    # Overwriting the tag with a manifest of blobs the registry has.
    manifest = ok(client, sid, f"curl -sf -m 10 {OCI} "
                  f"{base}/library/debian/manifests/bookworm")
    status, text = request(client, sid, "PUT", f"{base}/library/nginx/manifests/latest",
                           manifest, "application/vnd.oci.image.manifest.v1+json")
    assert status == 405, text  # Method Not Allowed: read-only
    digest = ok(client, sid, f"curl -sfI -m 10 {OCI} "
                f"{base}/library/nginx/manifests/latest | tr -d '\\r' | "
                "sed -n 's/^Docker-Content-Digest: //Ip'").strip()
    assert digest.startswith("sha256:")
    status, text = request(client, sid, "DELETE", f"{base}/library/nginx/manifests/{digest}")
    assert status == 405, text  # Method Not Allowed: read-only
    assert request(client, sid, "GET", f"{base}/library/nginx/tags/list") == before
    # Still served by its digest: nothing was deleted.
    ok(client, sid, f"curl -sf -m 10 {OCI} "
       f"{base}/library/nginx/manifests/{digest}")


def test_only_the_service_ports_on_the_gateway_are_reachable(client, sandboxd, sandbox):
    gw = gateway(sandboxd)
    sid = sandbox["id"]
    assert probe(client, sid, gw, REGISTRY_PORT) == "open"
    assert probe(client, sid, gw, PROXY_PORT) == "open"
    # A host service on the gateway address, and one on every address: dropped (a
    # timeout, not a refusal: not even a reset comes back), and nothing ever arrives.
    other = host_address()
    with socket.socket() as on_gateway, socket.socket() as on_all:
        for server, address in ((on_gateway, gw), (on_all, "0.0.0.0")):
            server.bind((address, 0))
            server.listen()
        assert probe(client, sid, gw, on_gateway.getsockname()[1]) == "timeout"
        assert probe(client, sid, gw, on_all.getsockname()[1]) == "timeout"
        assert probe(client, sid, other, on_all.getsockname()[1]) == "timeout"
        for server in (on_gateway, on_all):
            server.setblocking(False)
            with pytest.raises(BlockingIOError):
                server.accept()
    # The services' ports at another address of the host: dropped too.
    assert probe(client, sid, other, REGISTRY_PORT) == "timeout"
    assert probe(client, sid, other, PROXY_PORT) == "timeout"
    # UDP to the registry's port: dropped (no ICMP port unreachable comes back).
    r = sh(client, sid, f"python3 -c 'import socket; s = socket.socket(socket.AF_INET, "
           f"socket.SOCK_DGRAM); s.settimeout(1); s.connect((\"{gw}\", {REGISTRY_PORT})); "
           "s.send(b\"x\"); s.recv(1)'")
    assert "timed out" in r["stderr"] or "TimeoutError" in r["stderr"], r["stderr"]


def test_the_proxy_serves_debian_and_nothing_else(client, sandboxd, sandbox):
    gw = gateway(sandboxd)
    sid = sandbox["id"]
    proxy = f"http://{gw}:{PROXY_PORT}"
    url = "http://deb.debian.org/debian/dists/bookworm/Release"
    first = time.monotonic()
    fetch = "curl -s -m 20 -o /dev/null -w '%{http_code}'"
    r = sh(client, sid, f"{fetch} -x {proxy} {url}", timeout=60)
    first = time.monotonic() - first
    assert r["stdout"] == "200", r
    cached = sandboxd.state_dir / "services" / "proxy" / "cache" / "debrep" / "dists" / "bookworm"
    assert (cached / "Release").exists()
    second = time.monotonic()
    r = sh(client, sid, f"{fetch} -x {proxy} {url}")
    second = time.monotonic() - second
    assert r["stdout"] == "200", r
    print(f"proxy: Release fetched in {first * 1000:.0f} ms, again in {second * 1000:.0f} ms")
    # Any other site, or a tunnel: refused by the proxy itself.
    r = sh(client, sid, f"{fetch} -x {proxy} "
           "http://example.com/index.html", timeout=30)
    assert r["stdout"].startswith(("4", "5")), r
    r = sh(client, sid, f"{fetch} -x {proxy} -p "
           "https://deb.debian.org/", timeout=30)
    assert r["stdout"] != "200", r


def _pids(state_dir: Path) -> dict[str, int]:
    found = {}
    for pidfile in (state_dir / "services").glob("*.pid"):
        found[pidfile.stem] = int(pidfile.read_text().split()[0])
    return found


def _gone(pid: int, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except FileNotFoundError:
            return True
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return True  # dead; its parent (gone too) leaves the reaping to init
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_the_services_end_with_the_daemon_and_leave_nothing(tmp_path, how):
    """Stopped with sandboxd, and killed with it when sandboxd itself is killed."""
    require_root()
    name = f"t{uuid.uuid4().hex[:8]}"
    d = Daemon(tmp_path, name, free_subnet())
    d.start()
    try:
        pids = _pids(d.state_dir)
        assert set(pids) == {"registry", "proxy"}
        for pid in pids.values():
            assert Path(f"/proc/{pid}").exists()
            assert Path(f"/proc/{pid}/status").read_text().count("\nUid:\t0\t") == 0  # not root
        if how == "sigkill":
            d.proc.send_signal(signal.SIGKILL)
            d.proc.wait()
        d.stop()
        for service, pid in pids.items():
            assert _gone(pid), f"{service} (pid {pid}) outlived sandboxd"
    finally:
        result = d.teardown()
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    assert not leftovers(name, d.state_dir, HostConfig(name=name).tag)
    assert not list((d.state_dir / "services").glob("*.pid"))


def test_a_restarted_daemon_stops_the_services_an_earlier_one_left(tmp_path):
    """Pid files are checked by start time: one naming a live process that is not the
    service it recorded (here: this test's own process) is removed, never signalled."""
    require_root()
    name = f"t{uuid.uuid4().hex[:8]}"
    d = Daemon(tmp_path, name, free_subnet())
    d.start()
    try:
        first = _pids(d.state_dir)
        d.stop()
        # A stale pid file naming a live process that is not ours: left alone.
        (d.state_dir / "services" / "registry.pid").write_text(f"{os.getpid()} 1\n")
        d.start()
        assert Path(f"/proc/{os.getpid()}").exists()
        second = _pids(d.state_dir)
        assert set(second) == {"registry", "proxy"}
        assert not set(first.values()) & set(second.values())
        assert probe_host(str(HostConfig(name=name, subnet=d.subnet).gateway), REGISTRY_PORT)
    finally:
        result = d.teardown()
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    assert not leftovers(name, d.state_dir, HostConfig(name=name).tag)


def probe_host(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=2):
            return True
    except OSError:
        return False
