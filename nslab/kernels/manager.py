"""`kernel_manager(client, sandbox_id)`: a jupyter_client AsyncKernelManager for a sandbox's
kernel, through `SandboxProvisioner` (provisioner.py).

The kernel is the learner's (root inside may even replace the python it runs): every
message from it is theirs, of any size; a reader bounds what it keeps and shows.
The manager's kernelspec is built here, not read from disk: Python 3 run by sandboxd inside
the sandbox, `interrupt_mode: message` (an interrupt_request on the control channel: the
kernel may be PID 1's child in a pid namespace the web app cannot signal into), and the
provisioner `nslab-sandbox` configured with the daemon's client and the sandbox id.
"""

from __future__ import annotations

from typing import Any

from jupyter_client import AsyncKernelManager
from jupyter_client.kernelspec import KernelSpec, KernelSpecManager

from sandbox.client import Client

PROVISIONER = "nslab-sandbox"  # its entry point name (pyproject.toml)
KERNEL_NAME = "python3"


def kernel_spec(client: Client, sandbox_id: str) -> KernelSpec:
    """Python 3 in sandbox `sandbox_id`, provisioned by sandboxd."""
    return KernelSpec(
        argv=["/usr/bin/python3", "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        display_name=f"Python 3 (sandbox {sandbox_id})", language="python",
        interrupt_mode="message",
        metadata={"kernel_provisioner": {"provisioner_name": PROVISIONER,
                                         "config": {"sandbox_id": sandbox_id,
                                                    "client": client}}})


class _OneSpec(KernelSpecManager):
    """Hands the manager the spec made for it, whatever kernel name it asks for."""

    def __init__(self, spec: KernelSpec, **kwargs: Any):
        super().__init__(**kwargs)
        self._spec = spec

    def get_kernel_spec(self, kernel_name: str) -> KernelSpec:
        return self._spec


def kernel_manager(client: Client, sandbox_id: str, **kwargs: Any) -> AsyncKernelManager:
    """An AsyncKernelManager (not started) for the kernel of sandbox `sandbox_id`; its
    `start_kernel()` starts it, or reattaches to the one running (same kernel id, same
    state). `kwargs` go to the manager (its `log`, `parent`, ...)."""
    spec = kernel_spec(client, sandbox_id)
    return AsyncKernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=_OneSpec(spec),
                              **kwargs)
