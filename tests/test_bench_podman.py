"""`nslab bench sandbox`'s yardstick: `podman run --rm` with networking (nslab/bench/podman.py).

podman is installed by scripts/setup, so a missing podman fails here (it is never skipped).
The real run happens in the bench's own network and mount namespaces: the host must show
nothing of it afterwards (no bridge, veth, NAT rule, ip_forward, netns handle, mount,
cgroup, CNI lease, podman storage or temporary directory).
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
import tempfile
from pathlib import Path

import pytest

from nslab.bench import podman
from nslab.bench.sandbox import PODMAN_RUNS, bench_sandbox

pytestmark = pytest.mark.privileged

PODMAN_DEFAULT_NET = ipaddress.ip_network("10.88.0.0/16")


def _tree(root: Path) -> dict[str, int]:
    """Every path under `root` with its mtime (podman's and CNI's state on the host)."""
    found = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = os.path.join(dirpath, name)
            found[p] = os.lstat(p).st_mtime_ns
    return found


def _host_state() -> dict:
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True,
                           check=True).stdout
    names = {line.split(":")[1].strip().split("@")[0] for line in links.splitlines()}
    nat = subprocess.run(["iptables-save"], capture_output=True, text=True, check=True).stdout
    return {
        "links": {n for n in names if n.startswith(("cni", "podman", "veth"))},
        "ip_forward": Path("/proc/sys/net/ipv4/ip_forward").read_text(),
        "iptables": {line for line in nat.splitlines()
                     if "CNI" in line or "10.88." in line or "NETAVARK" in line},
        "mounts": [line for line in Path("/proc/self/mountinfo").read_text().splitlines()
                   if "nslab-bench-podman" in line or "/run/netns/cni-" in line],
        "netns": sorted(n for n in os.listdir("/run/netns") if n.startswith(("cni-", "netns-")))
        if os.path.isdir("/run/netns") else None,
        "cni": _tree(Path("/var/lib/cni")),
        "containers": _tree(Path("/var/lib/containers")) | _tree(Path("/run/containers")),
        "cgroups": sorted(str(p) for p in Path("/sys/fs/cgroup").glob("*nslab-bench-podman*"))
        + sorted(str(p) for p in Path("/sys/fs/cgroup").glob("*/*nslab-bench-podman*")),
        "tmp": sorted(p.name for p in Path(tempfile.gettempdir()).glob("nslab-bench-podman-*")),
    }


def test_podman_is_installed_by_setup():
    assert subprocess.run(["podman", "--version"], capture_output=True).returncode == 0, \
        "podman is missing: scripts/setup installs it"


def test_bench_sandbox_measures_podman_with_networking_and_leaves_nothing(client):
    before = _host_state()
    result = bench_sandbox(client, count=3)
    after = _host_state()
    assert "podman_error" not in result, result.get("podman_error")
    assert result["podman_runs"] == PODMAN_RUNS >= 10
    assert 0 < result["podman_p50_ms"] <= result["podman_p95_ms"]
    assert result["ratio_vs_podman"] == round(result["podman_p50_ms"] /
                                              result["create_p50_ms"], 1)
    # the container had podman's default network: an address on eth0 from its bridge
    assert ipaddress.ip_interface(result["podman_eth0"]).ip in PODMAN_DEFAULT_NET
    assert result["podman_runtime"] == podman.choose_runtime()
    assert after == before


def test_a_failed_podman_run_is_reported_and_cleaned_up(client, sandbox):
    rootfs, binds = podman.host_image(client.images())
    before = _host_state()
    # a bind whose host side does not exist: podman refuses the run
    with pytest.raises(podman.PodmanError) as e:
        podman.measure(rootfs, [*binds, ("/nonexistent-nslab-bench", "srv/x")], runs=1)
    assert e.value.reason == podman.Failure.RUN_FAILED
    assert _host_state() == before


def test_options_come_before_the_rootfs(tmp_path):
    """`--rootfs` takes no value: what follows the rootfs is the command, so an option
    placed after it (as `--ulimit` was) would silently be ignored."""
    argv = podman.podman_argv(tmp_path, "runc", "/p", "/img", [("/usr", "usr")], ["true"],
                              podman.Limits(cpus=1.0, memory="256m", pids=256))
    assert argv[-3:] == ["--rootfs", "/img:O", "true"]
    assert argv[argv.index("--memory") + 1] == "256m" and "--pids-limit" in argv
    assert argv.count("--ulimit") == 2 and "nofile=1024:1024" in argv
    assert argv[argv.index("-v") + 1] == "/usr:/usr:O"


@pytest.mark.parametrize("controllers, runtime", [
    ("hugetlb\n", "runc"),   # this VM: v1 hybrid, hugetlb left on the v2 hierarchy
    ("\n", "crun"),          # hybrid with an empty v2 hierarchy
    (None, "crun"),          # pure v2 (or v1 without a v2 mount)
])
def test_runtime_is_crun_unless_the_hybrid_layout_stops_it(tmp_path, controllers, runtime):
    if controllers is not None:
        (tmp_path / "unified").mkdir()
        (tmp_path / "unified" / "cgroup.controllers").write_text(controllers)
    assert podman.choose_runtime(tmp_path) == runtime


def test_podman_missing_from_path_is_a_clear_failure(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(podman.PodmanError) as e:
        podman.measure(str(tmp_path), [], runs=1)
    assert e.value.reason == podman.Failure.NOT_INSTALLED


def test_host_image_must_exist_on_this_machine(tmp_path):
    with pytest.raises(podman.PodmanError) as e:
        podman.host_image([{"name": "debian", "rootfs": str(tmp_path), "binds": []}])
    assert e.value.reason == podman.Failure.NO_HOST_IMAGE
    with pytest.raises(podman.PodmanError) as e:
        podman.host_image([{"name": "host", "rootfs": str(tmp_path / "gone"), "binds": []}])
    assert e.value.reason == podman.Failure.IMAGE_ELSEWHERE
    image = {"name": "host", "rootfs": str(tmp_path), "binds": [["/usr", "usr"]]}
    assert podman.host_image([image]) == (str(tmp_path), [("/usr", "usr")])
