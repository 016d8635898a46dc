"""`nslab bench docker`: the container engine inside a sandbox, and the same on the host.

In one `containers` sandbox (1 GiB, 2 GiB of disk), as its root, through podman-docker's
`docker`:
- `pull_nginx_s`: `docker pull nginx` from the daemon's registry, an empty store first;
- `run_p50_ms` / `run_p95_ms`: `docker run --rm debian:bookworm true`, bridge network
  (podman's default), `runs` times after a warm-up, each timed inside the sandbox from the
  start of `docker` to its exit (so the exec round trip of the bench is not counted);
- `build_s`: the course document's Dockerfile on Debian (FROM debian:bookworm, RUN
  apt-get update / install nginx, COPY test.html, ENTRYPOINT) with `--no-cache`, after one
  build that warmed the package proxy: what a learner's second build costs;
- `sandbox_rss_mib`: the sandbox's memory use with the engine idle (nothing running, the
  images pulled), as sandboxd's stats report it.
`host_run_p50_ms` is `podman run --rm ... true` on the host of the same debian:bookworm
root filesystem (unpacked from the image scripts/setup built), with a bridge network, in
the bench's throwaway namespaces (`nslab.bench.podman`), in the same run.
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from sandbox.client import Client

from nslab.bench import podman
from nslab.bench.stats import percentile

IMAGES_SRC = Path("/var/lib/nslab/images-src")  # where scripts/setup builds the images
SANDBOX = {"cpus": 1.0, "memory": "1g", "pids": 1024, "disk": "2g", "containers": True}
DOCKERFILE = """FROM debian:bookworm
RUN apt-get -y update
RUN apt-get -y install nginx
COPY test.html /var/www/html/test.html
ENTRYPOINT nginx -g "daemon off;"
"""
# Times `runs` docker runs inside, in milliseconds, one a line.
RUN_LOOP = ('for i in $(seq {runs}); do s=$(date +%s%N); '
            'docker run --rm debian:bookworm true >/dev/null || exit 1; '
            'echo $(( ($(date +%s%N) - s) / 1000 )); done')


class BenchError(Exception):
    """A step of the benchmark failed; the message says which and why."""


def _sh(client: Client, sid: str, script: str, what: str, timeout: float = 300) -> str:
    r = client.run(sid, ["sh", "-c", script], timeout=timeout)
    if r["exit_code"] != 0 or r["timed_out"]:
        raise BenchError(f"{what} failed inside the sandbox (exit {r['exit_code']}): "
                         f"{(r['stderr'] or r['stdout'])[-800:]}")
    return r["stdout"]


def _timed(client: Client, sid: str, script: str, what: str) -> float:
    t0 = time.perf_counter()
    _sh(client, sid, script, what)
    return time.perf_counter() - t0


def _inside(client: Client, runs: int) -> dict:
    sid = client.create(**SANDBOX)["id"]
    try:
        pull = _timed(client, sid, "docker pull -q nginx", "docker pull nginx")
        _sh(client, sid, "docker pull -q debian:bookworm", "docker pull debian:bookworm")
        _sh(client, sid, "docker run --rm debian:bookworm true", "the warm-up run")
        out = _sh(client, sid, RUN_LOOP.format(runs=runs), "docker run --rm")
        times = [int(x) / 1000 for x in out.split()]
        time.sleep(1.0)
        rss = (client.stats(sid).get("memory_current") or 0) / (1 << 20)
        _sh(client, sid, "mkdir -p /root/web && cd /root/web && "
                         "echo '<h1>test</h1>' > test.html && cat > Dockerfile <<'EOF'\n"
                         + DOCKERFILE + "EOF", "writing the Dockerfile")
        build = "cd /root/web && docker build -q -f Dockerfile -t testnginx:1 . >/dev/null"
        _sh(client, sid, build, "the first build (warming the package proxy)")
        build_s = _timed(client, sid, build.replace("build -q", "build --no-cache -q"),
                         "the build")
    finally:
        client.destroy(sid, purge=True)
    return {"run_p50_ms": round(statistics.median(times), 1),
            "run_p95_ms": round(percentile(times, 0.95), 1), "runs": len(times),
            "pull_nginx_s": round(pull, 2), "build_s": round(build_s, 2),
            "sandbox_rss_mib": round(rss, 1)}


def unpack_image(layout: Path, into: Path) -> None:
    """The root filesystem of a one-layer OCI image layout (scripts/oci-image's)."""
    index = json.loads((layout / "index.json").read_text())
    manifest_digest = index["manifests"][0]["digest"].split(":", 1)[1]
    manifest = json.loads((layout / "blobs" / "sha256" / manifest_digest).read_text())
    for layer in manifest["layers"]:
        blob = layout / "blobs" / "sha256" / layer["digest"].split(":", 1)[1]
        decompress = ["zstd", "-dc", str(blob)] if "zstd" in layer["mediaType"] \
            else ["gzip", "-dc", str(blob)]
        with subprocess.Popen(decompress, stdout=subprocess.PIPE) as dec:
            subprocess.run(["tar", "-x", "-C", str(into), "--numeric-owner"],
                           stdin=dec.stdout, check=True)
            if dec.wait() != 0:
                raise BenchError(f"could not decompress {blob}")


def _on_host(runs: int, images_src: Path) -> dict:
    layout = images_src / "debian"
    if not (layout / "index.json").exists():
        return {"host_run_p50_ms": None,
                "host_error": f"no debian image at {layout}: run scripts/setup"}
    rootfs = Path(tempfile.mkdtemp(prefix="nslab-bench-docker-"))
    try:
        unpack_image(layout, rootfs)
        t = podman.measure(str(rootfs), [], runs=runs)
    except podman.PodmanError as e:
        return {"host_run_p50_ms": None, "host_error": str(e)}
    finally:
        shutil.rmtree(rootfs, ignore_errors=True)
    return {"host_run_p50_ms": t.p50_ms, "host_run_p95_ms": t.p95_ms,
            "host_runtime": t.runtime}


def bench_docker(client: Client, runs: int = 10, images_src: Path = IMAGES_SRC) -> dict:
    if not 1 <= runs <= 1000:
        raise ValueError("runs must be from 1 to 1000")
    result = _inside(client, runs)
    result.update(_on_host(runs, images_src))
    if result.get("host_run_p50_ms"):
        result["inside_vs_host"] = round(result["run_p50_ms"] / result["host_run_p50_ms"], 2)
    return result
