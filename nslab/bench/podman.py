"""`podman run --rm` with networking, timed as the yardstick of `nslab bench sandbox`.

Both sides start the same tree: the daemon's `host` image (its rootfs and its binds, the
host's /usr) as overlays, which is how a sandbox mounts it (`--rootfs DIR:O`, `-v
/usr:/usr:O`). The container gets podman's default network (a bridge, a veth, an address
from host-local IPAM, NAT): the warm-up run reads its IPv4 address, and a run without one
fails the measurement rather than timing a container that has no network. It gets the
sandboxes' CPU, memory and process limits when the caller passes them (`Limits`).

The sequence, and what it leaves on the host (nothing of podman's state):
1. A temporary directory holds podman's storage (`--root`, `--runroot`), its `--tmpdir`
   (events, exit files; `--events-backend file`, not the journal) and an empty
   `--network-config-dir` (podman then uses its built-in default network, the same as
   /etc/cni/net.d's 87-podman-bridge.conflist).
2. `unshare --net --mount` runs this module (`_inside`) in a new network namespace and a
   private mount namespace: the bridge, the NAT rules, `ip_forward=1`, the container's
   netns handle and the overlay mounts podman makes all live there and die with it. A tmpfs
   over /var/lib/cni keeps CNI's IPAM records there too (/var/lib/cni and /run/netns are
   made first when missing, and removed again after when still empty).
3. Inside: one warm-up run (reads the container's IPv4 address), then `runs` runs of `true`, each
   timed from the start of the `podman` process to its exit, so podman's own start-up is
   counted as a user feels it.
4. After: the podman cgroup parent (`/nslab-bench-podman-<pid>` in each hierarchy; podman
   puts the container and conmon under it) is removed once conmon has gone, and the
   temporary directory with it.

Limits: podman's default `nofile` (1048576) is above the hard limit of some hosts (a VM
without CAP_SYS_RESOURCE cannot raise it), so the container gets the sandboxes' own
`nofile` (1024) and `nproc` no higher than the caller's hard limit. Runtime: crun, podman's
default, except on a cgroup v1 hybrid host whose v2 hierarchy has controllers, where crun
1.8 refuses to start anything ("cgroups in hybrid mode not supported"); runc there.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from enum import Enum
from pathlib import Path
from .stats import percentile

CGROUP_ROOT = Path("/sys/fs/cgroup")
CNI_STATE = Path("/var/lib/cni")
NETNS_DIR = Path("/run/netns")
SANDBOX_NOFILE = 1024      # the sandboxes' RLIMIT_NOFILE
PODMAN_NPROC = 32768       # podman's own default for rootful containers
RUN_TIMEOUT_S = 60


class Failure(Enum):
    NOT_INSTALLED = "not_installed"
    NO_HOST_IMAGE = "no_host_image"
    IMAGE_ELSEWHERE = "image_elsewhere"  # the daemon runs on another machine
    RUN_FAILED = "run_failed"


class PodmanError(Exception):
    """podman is missing or a run failed: `reason` says which, the message why."""

    def __init__(self, reason: Failure, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass
class PodmanTiming:
    p50_ms: float
    p95_ms: float
    runs: int
    runtime: str
    address: str          # its IPv4 address in the warm-up container: it had a network
    times_ms: list[float]


@dataclass
class Limits:
    """The sandbox's limits that podman has flags for (`--cpus`, `--memory`, `--pids-limit`)."""
    cpus: float
    memory: str
    pids: int


def choose_runtime(cgroup_root: Path = CGROUP_ROOT) -> str:
    """crun, podman's default, unless crun cannot run on this host's cgroup layout."""
    unified = cgroup_root / "unified" / "cgroup.controllers"
    try:
        hybrid_with_controllers = unified.read_text().split() != []
    except FileNotFoundError:  # pure v1 without a v2 mount, or pure v2 (no "unified")
        hybrid_with_controllers = False
    return "runc" if hybrid_with_controllers else "crun"


def host_image(images: list[dict]) -> tuple[str, list[tuple[str, str]]]:
    """The `host` image's rootfs and binds from the daemon's `GET /images`."""
    for image in images:
        if image.get("name") == "host":
            rootfs = image["rootfs"]
            if not Path(rootfs).is_dir():
                raise PodmanError(Failure.IMAGE_ELSEWHERE,
                                  f"the daemon's host image {rootfs} is not on this machine: "
                                  "run the bench on the daemon's host")
            return rootfs, [(host, inside) for host, inside in image["binds"]]
    raise PodmanError(Failure.NO_HOST_IMAGE,
                      "the daemon has no 'host' image yet: create one sandbox first")


def podman_argv(workdir: Path, runtime: str, cgroup_parent: str, rootfs: str,
                binds: list[tuple[str, str]], command: list[str],
                limits: Limits | None = None) -> list[str]:
    nproc = resource.getrlimit(resource.RLIMIT_NPROC)[1]
    nproc = PODMAN_NPROC if nproc == resource.RLIM_INFINITY else min(nproc, PODMAN_NPROC)
    argv = ["podman", "--root", str(workdir / "root"), "--runroot", str(workdir / "run"),
            "--tmpdir", str(workdir / "tmp"), "--network-config-dir", str(workdir / "net"),
            # cgroupfs: a plain cgroup path as the parent (the systemd manager wants a
            # .slice); file: its events stay in --tmpdir, not in the host's journal
            "--cgroup-manager", "cgroupfs", "--events-backend", "file", "--runtime", runtime,
            "run", "--rm", "--cgroup-parent", cgroup_parent,
            "--ulimit", f"nofile={SANDBOX_NOFILE}:{SANDBOX_NOFILE}",
            "--ulimit", f"nproc={nproc}:{nproc}"]
    if limits:
        argv += ["--cpus", str(limits.cpus), "--memory", limits.memory,
                 "--pids-limit", str(limits.pids)]
    for host, inside in binds:
        argv += ["-v", f"{host}:/{inside.strip('/')}:O"]
    # --rootfs takes no value: the first word after the options is the rootfs, the rest the
    # command (an option after it would be the command's, silently).
    return argv + ["--rootfs", f"{rootfs}:O", *command]


def measure(rootfs: str, binds: list[tuple[str, str]], runs: int = 10,
            limits: Limits | None = None) -> PodmanTiming:
    """`runs` timed `podman run --rm ... true` after one warm-up, in throwaway namespaces."""
    if runs < 1:
        raise ValueError("runs must be at least 1")
    if not shutil.which("podman"):
        raise PodmanError(Failure.NOT_INSTALLED,
                          "podman is not installed: scripts/setup installs it")
    runtime = choose_runtime()
    cgroup_parent = f"/nslab-bench-podman-{os.getpid()}"
    made = [d for d in (NETNS_DIR, CNI_STATE) if not d.exists()]
    for d in made:
        d.mkdir(mode=0o755, parents=True)
    workdir = Path(tempfile.mkdtemp(prefix="nslab-bench-podman-"))
    try:
        (workdir / "net").mkdir()
        spec = {"workdir": str(workdir), "runtime": runtime, "cgroup_parent": cgroup_parent,
                "rootfs": rootfs, "binds": binds, "runs": runs,
                "limits": asdict(limits) if limits else None}
        proc = subprocess.run(
            ["unshare", "--net", "--mount", "--propagation", "private", "--",
             sys.executable, "-m", "nslab.bench.podman", json.dumps(spec)],
            capture_output=True, text=True, timeout=RUN_TIMEOUT_S * (runs + 1))
        if proc.returncode != 0:
            raise PodmanError(Failure.RUN_FAILED, f"podman run failed ({runtime}): "
                              f"{(proc.stderr or proc.stdout).strip()[-800:]}")
        out = json.loads(proc.stdout)
    finally:
        remove_cgroup_parent(cgroup_parent)
        shutil.rmtree(workdir, ignore_errors=True)
        for d in made:
            try:
                d.rmdir()
            except OSError:  # something else put files there meanwhile: theirs to keep
                pass
    times = out["times_ms"]
    return PodmanTiming(p50_ms=round(statistics.median(times), 2),
                        p95_ms=round(percentile(times, 0.95), 2), runs=len(times),
                        runtime=runtime, address=out["address"], times_ms=times)


def cgroup_parent_dirs(cgroup_parent: str, cgroup_root: Path = CGROUP_ROOT) -> list[Path]:
    """The podman cgroup parent in every hierarchy it exists in (v2 root, or each v1 one)."""
    name = cgroup_parent.strip("/")
    candidates = [cgroup_root / name] + [d / name for d in cgroup_root.iterdir() if d.is_dir()]
    return [d for d in candidates if (d / "cgroup.procs").exists()]


def remove_cgroup_parent(cgroup_parent: str, wait_s: float = 10.0) -> None:
    """Remove the bench's cgroup parent bottom-up, once conmon's last process has left it."""
    deadline = time.monotonic() + wait_s
    for top in cgroup_parent_dirs(cgroup_parent):
        for dirpath, _dirs, _files in sorted(os.walk(top), key=lambda w: -len(w[0])):
            while True:
                try:
                    os.rmdir(dirpath)
                    break
                except FileNotFoundError:
                    break
                except OSError:  # EBUSY: a conmon that is still exiting; bounded wait
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)


def local_address(fib_trie: str) -> str | None:
    """The first local IPv4 address other than loopback in /proc/net/fib_trie's text (an
    address is a `|-- A.B.C.D` line followed by `/32 host LOCAL`)."""
    last = None
    for line in fib_trie.splitlines():
        line = line.strip()
        if line.startswith("|-- "):
            last = line[4:]
        elif line == "/32 host LOCAL" and last and not last.startswith("127."):
            return last
    return None


def _inside(spec: dict) -> None:
    """Run in the bench's own network and mount namespaces (see the module docstring)."""
    # CNI's IPAM records its leases under /var/lib/cni: keep them in this namespace.
    subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755", "nslab-bench-cni",
                    str(CNI_STATE)], check=True)
    workdir = Path(spec["workdir"])
    binds = [tuple(b) for b in spec["binds"]]
    limits = Limits(**spec["limits"]) if spec["limits"] else None

    def run(command: list[str]) -> subprocess.CompletedProcess:
        argv = podman_argv(workdir, spec["runtime"], spec["cgroup_parent"], spec["rootfs"],
                           binds, command, limits)
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
        if proc.returncode != 0:
            sys.exit(f"{' '.join(argv)}\nexit {proc.returncode}: {proc.stderr.strip()}")
        return proc

    # The kernel's own table, not `ip`: a minimal image (debian:bookworm) has no iproute2.
    address = local_address(run(["cat", "/proc/net/fib_trie"]).stdout)
    if address is None:
        sys.exit("the container had no IPv4 address but loopback")
    times = []
    for _ in range(spec["runs"]):
        t0 = time.perf_counter()
        run(["true"])
        times.append(round((time.perf_counter() - t0) * 1000, 2))
    print(json.dumps({"times_ms": times, "address": address}))


if __name__ == "__main__":
    _inside(json.loads(sys.argv[1]))
