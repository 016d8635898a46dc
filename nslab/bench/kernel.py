"""`nslab bench kernel`: how long a notebook kernel takes to start inside a sandbox, and to
run `1+1`.

`start_p50_ms` is measured as a page feels it: from the start request (`kernel_manager(...)
.start_kernel()`, sandboxd starting ipykernel in the sandbox) until the kernel answers
`kernel_info` through the relay (jupyter_client's `wait_for_ready`: the kernel is idle).
Each start is a fresh kernel in the same sandbox (the previous one ended first).
`exec_p50_ms` is one `1+1` from the execute request to its reply, with its result and
the kernel's idle status received (`execute_interactive`), through the host-side ipc
sockets and sandboxd's relay, as the web app runs a cell.
"""

from __future__ import annotations

import asyncio
import statistics
import time

from nslab.kernels import connect, disconnect, execute
from sandbox.client import Client
from sandbox.errors import NotFound
from .stats import percentile

LIMITS = {"cpus": 1.0, "memory": "512m", "pids": 256, "disk": "256m"}
TARGETS = {"start_p50_ms": 1500, "exec_p50_ms": 20}  # on the 2-core reference host


class BenchError(Exception):
    """The benchmark could not measure (a kernel failed); the message says why."""


def bench_kernel(client: Client, *, starts: int = 5, execs: int = 50) -> dict:
    if starts < 1 or execs < 1:
        raise ValueError("--starts and --execs must be at least 1")
    sb = client.create(**LIMITS)
    try:
        return asyncio.run(_measure(client, sb["id"], starts, execs))
    finally:
        client.destroy(sb["id"], purge=True)


async def _measure(client: Client, sid: str, starts: int, execs: int) -> dict:
    start_ms: list[float] = []
    exec_ms: list[float] = []
    for i in range(starts):
        t0 = time.perf_counter()
        km, kc = await connect(client, sid)
        start_ms.append((time.perf_counter() - t0) * 1000)
        try:
            if i == starts - 1:
                await execute(kc, "1+1")  # a first run imports what execution needs
                for _ in range(execs):
                    t1 = time.perf_counter()
                    outcome = await execute(kc, "1+1", timeout=10)
                    exec_ms.append((time.perf_counter() - t1) * 1000)
                    results = [o["content"]["data"].get("text/plain") for o in outcome.outputs
                               if o["msg_type"] == "execute_result"]
                    if not outcome.ok or results != ["2"]:
                        raise BenchError(f"1+1 did not give 2: {outcome}")
        finally:
            disconnect(km, kc)
            try:
                await asyncio.to_thread(client.stop_kernel, sid)
            except NotFound:
                pass
    r = lambda v: round(v, 1)  # noqa: E731
    return {
        "starts": starts, "execs": execs,
        "start_p50_ms": r(statistics.median(start_ms)), "start_max_ms": r(max(start_ms)),
        "exec_p50_ms": r(statistics.median(exec_ms)), "exec_p99_ms": r(percentile(exec_ms, 0.99)),
        "targets": TARGETS,
        "met": {"start": statistics.median(start_ms) <= TARGETS["start_p50_ms"],
                "exec": statistics.median(exec_ms) <= TARGETS["exec_p50_ms"]},
    }
