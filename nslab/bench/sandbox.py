"""`nslab bench sandbox`: create, exec and destroy latency, and memory per idle sandbox.

"Create" is measured as a learner feels it: from the create request (with a home volume
of its own, as the web app makes for every learner) until an interactive shell in the
new sandbox has printed its prompt. Learners arrive `interval` seconds apart (default
0.1 s: ten a second, a class of thirty in three seconds); `warm_hits` counts the creates
that found a warm sandbox ready (sandbox/warm.py), and `cold_create_p50_ms` is the p50 of
the others (`--interval 0` shows what back-to-back creates do to the pool). Memory per idle sandbox
is the growth of the host's used memory (MemTotal - MemAvailable) with `count`
sandboxes alive and no shell running in them, divided by `count`.

The yardstick is `podman run --rm` with networking of the same tree (the daemon's `host`
image), measured in the same run once the sandboxes are gone (`nslab.bench.podman`: its
own throwaway network and mount namespaces, nothing left on the host). When podman is
missing or fails, its figures are null and `podman_error` says why.
"""

from __future__ import annotations

import secrets
import statistics
import time

from sandbox.client import Client, StreamClosed
from sandbox.protocol import Channel

from nslab.bench import podman
from nslab.bench.stats import percentile

PROMPT_MARK = b"nslab-ready$ "
PODMAN_RUNS = 10  # after one warm-up run
# What each benchmarked sandbox gets; podman's container gets the same CPU, memory and
# process limits (podman has no per-container disk quota on an overlay rootfs).
LIMITS = {"cpus": 1.0, "memory": "256m", "pids": 256, "disk": "256m"}


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


def _run(client: Client, count: int, background: int, interval: float) -> dict:
    params = LIMITS
    run = secrets.token_hex(4)
    bg_ids = []
    for _ in range(background):
        bg_ids.append(client.create(**params)["id"])
    ids, create_ms, cold_ms, exec_ms, destroy_ms = [], [], [], [], []
    # warm-up: the first sandbox pays for cold caches
    warm = client.create(**params, home=f"bench-{run}-warmup")["id"]
    _shell_until_prompt(client, warm)
    client.destroy(warm, purge=True)
    time.sleep(max(interval, 0.5))  # its replacement in the pool
    mem_before = _used_memory()
    try:
        for i in range(count):
            time.sleep(interval)
            warm_ready = bool(client.info().get("warm_slots"))
            t0 = time.perf_counter()
            sid = client.create(**params, home=f"bench-{run}-{i}")["id"]
            ids.append(sid)
            _shell_until_prompt(client, sid)
            create_ms.append((time.perf_counter() - t0) * 1000)
            if not warm_ready:
                cold_ms.append(create_ms[-1])
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
            client.destroy(sid, purge=True)
            destroy_ms.append((time.perf_counter() - t0) * 1000)
        for sid in bg_ids:
            client.destroy(sid)
    p50 = statistics.median(create_ms)
    return {
        "count": count,
        "background_sandboxes": background,
        "interval_s": interval,
        "create_p50_ms": round(p50, 2),
        "create_p95_ms": round(percentile(create_ms, 0.95), 2),
        "warm_hits": count - len(cold_ms),
        "cold_create_p50_ms": round(statistics.median(cold_ms), 2) if cold_ms else None,
        "exec_p50_ms": round(statistics.median(exec_ms), 2),
        "destroy_p50_ms": round(statistics.median(destroy_ms), 2),
        "rss_kib_per_idle_sandbox": round((mem_after - mem_before) / count / 1024, 1),
        **_podman_figures(client, p50),
    }


def _podman_figures(client: Client, create_p50: float) -> dict:
    """`podman run --rm` of the daemon's host image, with networking, and the ratio."""
    try:
        rootfs, binds = podman.host_image(client.images())
        t = podman.measure(rootfs, binds, runs=PODMAN_RUNS, limits=podman.Limits(
            cpus=LIMITS["cpus"], memory=LIMITS["memory"], pids=LIMITS["pids"]))
    except podman.PodmanError as e:
        return {"podman_p50_ms": None, "podman_p95_ms": None, "ratio_vs_podman": None,
                "podman_error": str(e)}
    return {"podman_p50_ms": t.p50_ms, "podman_p95_ms": t.p95_ms, "podman_runs": t.runs,
            "podman_runtime": t.runtime, "podman_eth0": t.address,
            "ratio_vs_podman": round(t.p50_ms / create_p50, 1)}


def bench_sandbox(client: Client, count: int = 50, background: int = 0,
                  interval: float = 0.1) -> dict:
    if count < 1:
        raise ValueError("count must be at least 1")
    if not 0 <= interval <= 60:
        raise ValueError("interval must be from 0 to 60 seconds")
    return _run(client, count, background, interval)
