"""`nslab bench sandbox`: create, exec and destroy latency, and memory per idle sandbox.

"Create" is measured as a learner feels it: from the create request until an
interactive shell in the new sandbox has printed its prompt. Memory per idle sandbox
is the growth of the host's used memory (MemTotal - MemAvailable) with `count`
sandboxes alive and no shell running in them, divided by `count`.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import time

from sandbox.client import Client, StreamClosed
from sandbox.protocol import Channel

PROMPT_MARK = b"nslab-ready$ "


def _percentile(values: list[float], p: float) -> float:
    values = sorted(values)
    k = (len(values) - 1) * p
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def _used_memory() -> int:
    info = {}
    with open("/proc/meminfo") as f:
        for line in f:
            key, value = line.split(":")
            info[key] = int(value.split()[0]) * 1024
    return info["MemTotal"] - info["MemAvailable"]


def _shell_until_prompt(client: Client, sid: str) -> None:
    """An interactive shell in the sandbox, until it has printed its prompt; then it is
    told to exit, and waited for, so the sandbox is idle again."""
    info = client.exec(sid, ["bash", "--norc", "-i"], tty=True,
                       env={"PS1": PROMPT_MARK.decode()})
    with client.attach(info["id"]) as stream:
        seen = b""
        try:
            while True:
                channel, data = stream.recv()
                if channel == Channel.STDOUT:
                    seen += data
                    if PROMPT_MARK in seen:
                        stream.send(Channel.STDIN, b"exit\n")
                        break
                elif channel == Channel.EXIT:
                    raise RuntimeError(f"the shell exited before its prompt: {seen[-200:]!r}")
            while stream.recv()[0] != Channel.EXIT:
                pass
        except StreamClosed:  # the stream ended with the session: the shell is gone
            pass


def _run(client: Client, count: int, background: int) -> dict:
    params = {"cpus": 1.0, "memory": "256m", "pids": 256, "disk": "256m"}
    bg_ids = []
    for _ in range(background):
        bg_ids.append(client.create(**params)["id"])
    ids, create_ms, exec_ms, destroy_ms = [], [], [], []
    # warm-up: the first sandbox pays for cold caches
    warm = client.create(**params)["id"]
    _shell_until_prompt(client, warm)
    client.destroy(warm)
    mem_before = _used_memory()
    try:
        for _ in range(count):
            t0 = time.perf_counter()
            sid = client.create(**params)["id"]
            ids.append(sid)
            _shell_until_prompt(client, sid)
            create_ms.append((time.perf_counter() - t0) * 1000)
        for sid in ids:
            t0 = time.perf_counter()
            r = client.run(sid, ["true"])
            exec_ms.append((time.perf_counter() - t0) * 1000)
            assert r["exit_code"] == 0, r
        time.sleep(1.0)
        mem_after = _used_memory()
    finally:
        for sid in ids:
            t0 = time.perf_counter()
            client.destroy(sid)
            destroy_ms.append((time.perf_counter() - t0) * 1000)
        for sid in bg_ids:
            client.destroy(sid)
    podman = _podman_p50()
    p50 = statistics.median(create_ms)
    return {
        "count": count,
        "background_sandboxes": background,
        "create_p50_ms": round(p50, 2),
        "create_p95_ms": round(_percentile(create_ms, 0.95), 2),
        "exec_p50_ms": round(statistics.median(exec_ms), 2),
        "destroy_p50_ms": round(statistics.median(destroy_ms), 2),
        "rss_kib_per_idle_sandbox": round((mem_after - mem_before) / count / 1024, 1),
        "podman_p50_ms": podman,
        "ratio_vs_podman": round(podman / p50, 1) if podman else None,
    }


def _podman_p50(runs: int = 5) -> float | None:
    """`podman run --rm` of the same host tree as a rootfs, if podman is installed."""
    if not shutil.which("podman"):
        return None
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        proc = subprocess.run(["podman", "run", "--rm", "--rootfs", "/", "true"],
                              capture_output=True, timeout=60)
        if proc.returncode != 0:
            return None
        times.append((time.perf_counter() - t0) * 1000)
    return round(statistics.median(times), 2)


def bench_sandbox(client: Client, count: int = 50, background: int = 0) -> dict:
    if count < 1:
        raise ValueError("count must be at least 1")
    return _run(client, count, background)
