"""The engine's entry points for the root-only commands: `nslab sandboxd` and
`nslab image ls|build`.

The CLI (`nslab/cli/daemon.py`) reaches the engine through this module only; every other
command talks to a running daemon through `sandbox.client`. Errors are `SandboxError`s,
which the CLI prints as one line.
"""

from __future__ import annotations

import os
from pathlib import Path

from .config import DEFAULT_STATE_DIR, HostConfig
from .errors import SandboxError
from .images import ImageStore, progress_bar
from .payloads import parse_size
from .protocol import DEFAULT_DAEMON_NAME, default_socket_path
from .spawner.client import SpawnerClient
from .spawner.spec import MAX_PTYS


def run_daemon(*, name: str = DEFAULT_DAEMON_NAME, state_dir: str | Path | None = None,
               socket: str | Path | None = None, subnet: str, storage_size: str,
               socket_group: str | None = None, warm: int = 2, listen: str | None = None,
               token_file: str | Path | None = None, teardown: bool = False,
               max_ptys: int | None = None) -> int:
    """Serve as the daemon called `name` until SIGTERM (or, with `teardown`, destroy all it
    made instead); the process's exit code."""
    if os.geteuid() != 0:
        raise SandboxError("sandboxd must run as root (it creates namespaces, cgroups, "
                           "mounts and network devices)")
    config = HostConfig(name=name, state_dir=Path(state_dir or DEFAULT_STATE_DIR),
                        subnet=subnet, socket_group=socket_group, warm=warm,
                        max_ptys=max_ptys or MAX_PTYS,
                        storage_size=parse_size(storage_size, "storage-size",
                                                minimum=1 << 30))
    # The spawner is forked now, before the daemon's own imports (aiohttp, pyroute2):
    # every sandbox and exec is a fork of it, and a small process forks faster. So the
    # daemon and the client are imported here, after the fork, not at the top.
    spawner = SpawnerClient.fork()
    from . import daemon
    from .client import resolve_socket

    socket_path = Path(socket) if socket else (
        resolve_socket(None) if name == DEFAULT_DAEMON_NAME else default_socket_path(name))
    return daemon.run(config, socket_path, listen=listen,
                      token_file=Path(token_file) if token_file else None,
                      teardown=teardown, spawner=spawner)


def _image_store(state_dir: str | Path | None) -> ImageStore:
    return ImageStore(HostConfig(state_dir=Path(state_dir or DEFAULT_STATE_DIR)))


def list_images(state_dir: str | Path | None = None) -> list[dict]:
    """The images of the state dir (`{"name", "rootfs", "size_bytes", "description", ...}`)."""
    return [img.to_json() for img in _image_store(state_dir).list()]


def build_image(name: str, state_dir: str | Path | None = None,
                suite: str = "bookworm") -> dict:
    """Build image `name` (only `debian`: `host` is made automatically), with a progress
    bar on stderr; the built image as `list_images` describes it."""
    if name != "debian":
        raise SandboxError(f"can only build 'debian' (the 'host' image is made automatically), "
                           f"not {name!r}")
    if os.geteuid() != 0:
        raise SandboxError("building an image needs root")
    return _image_store(state_dir).build_debian(progress=progress_bar(), suite=suite).to_json()
