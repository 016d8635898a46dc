"""A lab's sandbox made ready for a learner (or a replay): the lab's setup script run in
it, with this learner's params."""

from __future__ import annotations

from sandbox.errors import SandboxError

from .model import Lab
from .params import expand, param_env

SETUP_TIMEOUT = 30.0


def run_setup(client, sid: str, lab: Lab, params: dict) -> None:
    """Run the lab's setup script in a new sandbox; raise SandboxError if it fails."""
    if not lab.setup:
        return
    out = client.run(sid, ["/bin/sh", "-c", expand(lab.setup, params)], env=param_env(params),
                     timeout=SETUP_TIMEOUT)
    if out.get("timed_out") or out.get("exit_code") != 0:
        raise SandboxError(f"the setup of lab {lab.id!r} failed (exit {out.get('exit_code')}"
                           f"{', timed out' if out.get('timed_out') else ''}): "
                           f"{(out.get('stderr') or out.get('stdout') or '').strip()[-300:]}")
