"""Notebook kernels inside sandboxes, for jupyter_client (the web app, `nslab kernel run`,
`nslab bench kernel`).

`kernel_manager(client, sandbox_id)` is an `AsyncKernelManager`, not started, whose
`start_kernel()` starts the sandbox's kernel through sandboxd, or reattaches to the one
that runs (a restarted web app gets the same kernel back, with its state). From there it
is the ordinary jupyter_client API: `km.client()`, `km.interrupt_kernel()` (message
mode: an interrupt_request on the control channel, no signal across namespaces),
`km.restart_kernel()`, `km.shutdown_kernel()`, `km.is_alive()`. The provisioner behind it,
`SandboxProvisioner`, is registered as `nslab-sandbox` in the entry point group
`jupyter_client.kernel_provisioners` (pyproject.toml), so a kernelspec on disk can name it.
The kernel itself and the relay to its sockets are sandboxd's (sandbox/kernels.py).
"""

from __future__ import annotations

from .manager import kernel_manager, kernel_spec
from .provisioner import SandboxProvisioner
from .runner import Outcome, connect, disconnect, execute, text_of, wait_idle

__all__ = ["kernel_manager", "kernel_spec", "SandboxProvisioner", "Outcome", "connect",
           "disconnect", "execute", "text_of", "wait_idle"]
