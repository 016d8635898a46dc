"""Where one daemon keeps its state, and the machine-wide resources it may use.

A `HostConfig` is handed to every part of the engine instead of globals, so that
several daemons (and the tests) can run side by side on one machine with different
names and state dirs without colliding.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from .errors import InvalidRequest
from .protocol import DEFAULT_DAEMON_NAME as DEFAULT_NAME
from .protocol import DEFAULT_RUN_DIR
from .spawner.spec import MAX_PTYS

DEFAULT_STATE_DIR = Path("/var/lib/nslab")
DEFAULT_SUBNET = "10.213.0.0/16"

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,30}$")

# Each sandbox's root maps onto its own block of host ids; blocks are claimed
# machine-wide (see `uid_claims_dir`) so that two daemons never hand out the same one.
UID_BASE = 100_000
UID_BLOCK = 65_536
UID_BLOCKS = 16_000  # 100000 + 16000 * 65536 stays below 2**31


@dataclass
class HostConfig:
    """One daemon's view of the host: its name, directories, network range and pool."""

    name: str = DEFAULT_NAME
    state_dir: Path = DEFAULT_STATE_DIR
    run_dir: Path = DEFAULT_RUN_DIR
    subnet: str = DEFAULT_SUBNET
    storage_size: int = 64 << 30  # sparse btrfs pool file; only what is written uses disk
    socket_group: str | None = None
    cgroup_root: Path = Path("/sys/fs/cgroup")
    warm: int = 2  # sandboxes kept half-built ahead of demand (0: none)
    max_ptys: int = MAX_PTYS  # each sandbox's devpts `max=` (the host shares pty.max - pty.reserve)
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if not NAME_RE.fullmatch(self.name):
            raise InvalidRequest(
                f"daemon name {self.name!r} must be 1-31 characters of a-z, 0-9 and '-'",
                field="name",
            )
        self.state_dir = Path(self.state_dir)
        self.run_dir = Path(self.run_dir)
        try:
            net = ipaddress.IPv4Network(self.subnet)
        except ValueError as e:
            raise InvalidRequest(f"subnet {self.subnet!r}: {e}", field="subnet") from None
        if not net.is_private or net.prefixlen > 28:
            raise InvalidRequest(
                f"subnet {self.subnet} must be a private IPv4 range of /28 or larger",
                field="subnet",
            )

    # A short, stable tag derived from the name keeps kernel object names (bridge,
    # veths, nftables tables) within IFNAMSIZ and distinct between daemons.
    @property
    def tag(self) -> str:
        return hashlib.sha256(self.name.encode()).hexdigest()[:4]

    @property
    def network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.subnet)

    @property
    def cgroup_prefix(self) -> str:
        """The cgroup (relative to each hierarchy's root) under which all sandboxes live."""
        return f"nslab/{self.name}"

    @property
    def sandboxes_dir(self) -> Path:
        return self.state_dir / "sandboxes"

    @property
    def images_dir(self) -> Path:
        return self.state_dir / "images"

    @property
    def storage_image(self) -> Path:
        return self.state_dir / "storage.img"

    @property
    def storage_mount(self) -> Path:
        return self.state_dir / "storage"

    @property
    def uid_claims_dir(self) -> Path:
        # Machine-wide on purpose: all daemons share one set of uid blocks.
        return DEFAULT_RUN_DIR / "uid-blocks"

    def ensure_dirs(self) -> None:
        for d in (self.state_dir, self.sandboxes_dir, self.images_dir, self.uid_claims_dir):
            d.mkdir(parents=True, exist_ok=True)
        os.chmod(self.state_dir, 0o711)
