"""`SandboxProvisioner`: a jupyter_client kernel provisioner whose kernel is the sandbox's.

jupyter_client asks a provisioner to launch, poll, signal and end "the kernel process";
this one asks sandboxd instead (`Client.start_kernel`, `kernel`, `stop_kernel`), which
starts Debian's ipykernel inside the learner's sandbox and relays its ipc sockets to a
host path prefix (sandbox/kernels.py). The launch starts or reattaches: when the sandbox
already runs a kernel, the manager adopts it, its kernel id included, so a restarted web
app gets the same kernel back. Its info (`get_provisioner_info`) records the sandbox and
sandboxd's socket for a manager that persists it.

Signals: an interrupt is a message (the kernelspec's `interrupt_mode: message`), never a
signal across namespaces; SIGKILL and SIGTERM end the kernel through sandboxd; any other
signal is not delivered (logged).

The daemon's client is blocking (http.client): each call runs in a thread.
"""

from __future__ import annotations

import asyncio
import signal
from typing import Any

from jupyter_client.connect import KernelConnectionInfo
from jupyter_client.provisioning import KernelProvisionerBase
from traitlets import Instance, Unicode

from sandbox.client import Client
from sandbox.errors import NotFound
from sandbox.protocol import KernelFacts

POLL_INTERVAL = 0.1


class SandboxProvisioner(KernelProvisionerBase):
    """The kernel of sandbox `sandbox_id`, through sandboxd."""

    sandbox_id = Unicode(allow_none=True, config=True,
                         help="the sandbox whose kernel this is")
    socket = Unicode(None, allow_none=True, config=True,
                     help="sandboxd's socket (default: $NSLAB_SOCKET, else the default path)")
    client = Instance(Client, allow_none=True, help="the daemon's client (kernel_manager hands it)")

    facts: KernelFacts | None = None
    exit_code: int | None = None

    def _client(self) -> Client:
        if self.client is None:
            self.client = Client(self.socket)
        return self.client

    def _sandbox(self) -> str:
        if not self.sandbox_id:
            raise ValueError("SandboxProvisioner needs a sandbox_id (the kernelspec's "
                             "metadata.kernel_provisioner.config.sandbox_id)")
        return self.sandbox_id

    @property
    def has_process(self) -> bool:
        return self.facts is not None

    # ------------------------------------------------------------ launch

    async def pre_launch(self, **kwargs: Any) -> dict[str, Any]:
        kwargs = await super().pre_launch(**kwargs)
        # What the manager logs as the command; sandboxd runs its own (the same ipykernel).
        kwargs["cmd"] = list(self.kernel_spec.argv) if self.kernel_spec else []
        return kwargs

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> KernelConnectionInfo:
        facts = await asyncio.to_thread(self._client().start_kernel, self._sandbox(),
                                        self.kernel_id)
        self._adopt(facts)
        return self.connection_info

    def _adopt(self, facts: KernelFacts) -> None:
        self.facts, self.exit_code = facts, None
        if facts["kernel_id"] != self.kernel_id:
            # The sandbox already ran a kernel: this manager is now that kernel's.
            self.kernel_id = facts["kernel_id"]
            if self.parent is not None:
                self.parent.kernel_id = facts["kernel_id"]
        conn = dict(facts["connection"])
        conn["key"] = conn["key"].encode()  # the manager compares it with its session's bytes
        self.connection_info = conn

    # ------------------------------------------------------------ process-like

    async def poll(self) -> int | None:
        if self.facts is None:
            return self.exit_code if self.exit_code is not None else 0
        try:
            now = await asyncio.to_thread(self._client().kernel, self._sandbox())
        except NotFound:  # no kernel now (it exited, or the sandbox stopped or went away)
            now = None
        if now is None or now["kernel_id"] != self.facts["kernel_id"] \
                or now["host_pid"] != self.facts["host_pid"]:
            self.exit_code = 0 if self.exit_code is None else self.exit_code
            return self.exit_code
        return None

    async def wait(self) -> int | None:
        while (code := await self.poll()) is None:
            await asyncio.sleep(POLL_INTERVAL)
        return code

    async def send_signal(self, signum: int) -> None:
        if signum in (signal.SIGKILL, signal.SIGTERM):
            await self._stop()
        elif signum != 0:
            self.log.warning("signal %s is not delivered to a sandbox's kernel (interrupts "
                             "are messages)", signum)

    async def kill(self, restart: bool = False) -> None:
        await self._stop()

    async def terminate(self, restart: bool = False) -> None:
        await self._stop()

    async def _stop(self) -> None:
        if self.facts is None:
            return
        try:
            await asyncio.to_thread(self._client().stop_kernel, self._sandbox())
        except NotFound:
            pass  # it had ended already
        self.exit_code = -signal.SIGKILL

    async def cleanup(self, restart: bool = False) -> None:
        self.facts = None

    # ------------------------------------------------------------ persistence

    async def get_provisioner_info(self) -> dict[str, Any]:
        info = await super().get_provisioner_info()
        conn = dict(info.get("connection_info") or {})
        if isinstance(conn.get("key"), bytes):  # JSON, for a manager that persists it
            conn["key"] = conn["key"].decode()
        info["connection_info"] = conn
        info.update(sandbox_id=self.sandbox_id, socket=self.socket or
                    (str(self.client.socket_path) if self.client and self.client.socket_path
                     else None), facts=self.facts)
        return info

    async def load_provisioner_info(self, provisioner_info: dict) -> None:
        await super().load_provisioner_info(provisioner_info)
        self.sandbox_id = provisioner_info.get("sandbox_id")
        if self.client is None:
            self.socket = provisioner_info.get("socket")
        facts = provisioner_info.get("facts")
        if facts:
            self._adopt(facts)

    def get_shutdown_wait_time(self, recommended: float = 5.0) -> float:
        return recommended

    def get_stable_start_time(self, recommended: float = 10.0) -> float:
        return recommended
