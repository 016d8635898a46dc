"""Run code in a sandbox's kernel and hand each output to a callback: what `nslab kernel
run` prints and `nslab bench kernel` times; the web app streams the same IOPub messages."""

from __future__ import annotations

import asyncio
import queue
from collections.abc import Callable
from dataclasses import dataclass, field

from jupyter_client import AsyncKernelClient, AsyncKernelManager

from sandbox.client import Client

from .manager import kernel_manager

READY_TIMEOUT = 60.0
READY_TRY = 1.0  # a kernel_info request unanswered this long is asked again
READY_QUIET = 0.1  # IOPub quiet this long after the kernel's first idle: it is caught up
# The outputs a runner passes on (IOPub message types); status and execute_input are the
# kernel's bookkeeping.
OUTPUTS = ("stream", "execute_result", "display_data", "update_display_data", "error",
           "clear_output")


@dataclass
class Outcome:
    """How a run ended: `ok` unless the code raised (`error`: ename, evalue, traceback)."""

    ok: bool
    error: dict | None = None
    outputs: list[dict] = field(default_factory=list)  # {"msg_type", "content"} in order


async def connect(client: Client, sandbox_id: str) -> tuple[AsyncKernelManager,
                                                            AsyncKernelClient]:
    """The sandbox's kernel (started, or the running one) and a client of it, ready."""
    km = kernel_manager(client, sandbox_id)
    await km.start_kernel()
    kc = km.client()
    kc.start_channels()
    try:
        await wait_idle(kc, timeout=READY_TIMEOUT)
    except BaseException:
        kc.stop_channels()
        raise
    return km, kc


def disconnect(km: AsyncKernelManager, kc: AsyncKernelClient) -> None:
    """Close this process's connections to the kernel (its client's channels and the
    manager's control socket), leaving the kernel running: the ZeroMQ contexts the
    manager and its client made for themselves are destroyed."""
    kc.stop_channels()
    if kc.context is not km.context:
        kc.context.destroy(linger=0)
    km.context.destroy(linger=0)


async def wait_idle(kc: AsyncKernelClient, timeout: float = READY_TIMEOUT) -> None:
    """Until the kernel has answered a kernel_info request on shell and said `idle` for it
    on IOPub (so IOPub is connected: the next request's outputs are not lost), then until
    IOPub has been quiet for READY_QUIET (what else the kernel said meanwhile is read
    away: `execute_interactive` reads one message per poll and must not start behind a
    queue). jupyter_client's `wait_for_ready` does the same with a 0.2 s quiet time."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        msg_id = kc.kernel_info()
        try:
            await _until(kc.get_shell_msg, lambda m: m["parent_header"].get("msg_id") == msg_id,
                         READY_TRY)
            # IOPub not subscribed yet (ZeroMQ's slow joiner) times out: ask again.
            await _until(kc.get_iopub_msg,
                         lambda m: m["parent_header"].get("msg_id") == msg_id
                         and m["header"]["msg_type"] == "status"
                         and m["content"].get("execution_state") == "idle", READY_TRY)
        except queue.Empty:
            continue
        try:
            while True:
                await kc.get_iopub_msg(timeout=READY_QUIET)
        except queue.Empty:
            return
    raise TimeoutError(f"the kernel did not answer within {timeout} s")


async def _until(get, match, timeout: float) -> dict:
    """The first message `get` returns that `match`es, within `timeout` seconds (others
    are dropped); queue.Empty when none came."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while (left := end - loop.time()) > 0:
        msg = await get(timeout=left)
        if match(msg):
            return msg
    raise queue.Empty



async def execute(kc: AsyncKernelClient, code: str, *, timeout: float | None = None,
                  on_output: Callable[[str, dict], None] | None = None) -> Outcome:
    """Run `code`; each output (`OUTPUTS`) goes to `on_output(msg_type, content)` as it
    comes. TimeoutError after `timeout` seconds (the kernel keeps running it: interrupt)."""
    outcome = Outcome(ok=True)

    def hook(msg: dict) -> None:
        kind = msg["header"]["msg_type"]
        if kind not in OUTPUTS:
            return
        outcome.outputs.append({"msg_type": kind, "content": msg["content"]})
        if on_output is not None:
            on_output(kind, msg["content"])

    reply = await kc.execute_interactive(code, timeout=timeout, output_hook=hook,
                                         allow_stdin=False)
    content = reply["content"]
    if content.get("status") != "ok":
        outcome.ok = False
        outcome.error = {"ename": content.get("ename", ""), "evalue": content.get("evalue", ""),
                         "traceback": content.get("traceback", [])}
    return outcome


def text_of(kind: str, content: dict) -> str | None:
    """An output as plain text for a terminal (None: nothing to print)."""
    if kind == "stream":
        return content.get("text", "")
    if kind in ("execute_result", "display_data", "update_display_data"):
        data = content.get("data", {})
        if "text/plain" in data:
            return data["text/plain"] + "\n"
        return "[" + ", ".join(sorted(data)) + "]\n"
    if kind == "error":
        return "\n".join(content.get("traceback", [])) + "\n"
    return None
