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

# The host services sandboxes may reach, on their daemon's gateway address only
# (sandbox/services.py; the firewall's one exception, sandbox/network.py). Fixed: the
# base images' apt line (scripts/base-images) and each sandbox's registries.conf name them.
REGISTRY_PORT = 5000  # docker-registry, read-only: `docker pull nginx` inside
PROXY_PORT = 3142  # apt-cacher-ng: `RUN apt-get install` in a build inside
# Where scripts/setup (scripts/base-images) leaves the base images and the registry
# storage seeded with them; each daemon serves a copy of that storage.
DEFAULT_IMAGES_SRC = Path("/var/lib/nslab/images-src")


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
    images_src: Path = DEFAULT_IMAGES_SRC
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if not NAME_RE.fullmatch(self.name):
            raise InvalidRequest(
                f"daemon name {self.name!r} must be 1-31 characters of a-z, 0-9 and '-'",
                field="name",
            )
        self.state_dir = Path(self.state_dir)
        self.run_dir = Path(self.run_dir)
        self.images_src = Path(self.images_src)
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
    def services_dir(self) -> Path:
        """The registry's copy of the image storage, the package proxy's cache, their logs."""
        return self.state_dir / "services"

    @property
    def gateway(self) -> ipaddress.IPv4Address:
        """The bridge's address: the host as its sandboxes see it."""
        return self.network.network_address + 1

    @property
    def service_ports(self) -> tuple[int, ...]:
        return (REGISTRY_PORT, PROXY_PORT)

    @property
    def uid_claims_dir(self) -> Path:
        # Machine-wide on purpose: all daemons share one set of uid blocks.
        return DEFAULT_RUN_DIR / "uid-blocks"

    def ensure_dirs(self) -> None:
        for d in (self.state_dir, self.sandboxes_dir, self.images_dir, self.uid_claims_dir):
            d.mkdir(parents=True, exist_ok=True)
        os.chmod(self.state_dir, 0o711)


# The names sandboxes know the services by: each sandbox's /etc/hosts maps them to its
# daemon's gateway (`hosts_entry`), so that files which cannot know the subnet (the base
# images' apt line, the registries.conf below) name them. The containers an engine runs
# inside a sandbox get that hosts file's entries too (containers.conf base_hosts_file).
REGISTRY_NAME = "nslab-registry"
PROXY_NAME = "nslab-proxy"

# /etc/containers/registries.conf.d/99-nslab.conf in every sandbox image (written by
# sandbox/images.py): Docker Hub's names (`nginx`, `debian:bookworm`,
# `docker.io/library/nginx`) resolve to the host's registry. Plain HTTP: the registry
# listens on the sandbox's own bridge, reached over its own veth, whose port cannot see
# or spoof any other sandbox's traffic (sandbox/network.py); the images are public, and
# the engine checks every blob against the digest its manifest names.
REGISTRIES_CONF_PATH = "containers/registries.conf.d/99-nslab.conf"
REGISTRIES_CONF = f"""\
# Generated by nslab: images come from the host's read-only registry, never a hub.
unqualified-search-registries = ["docker.io"]
short-name-mode = "permissive"

[[registry]]
prefix = "docker.io"
location = "{REGISTRY_NAME}:{REGISTRY_PORT}"
insecure = true
"""


def hosts_entry(config: HostConfig) -> str:
    """The /etc/hosts line that names the services in each sandbox of this daemon."""
    return f"{config.gateway}\t{REGISTRY_NAME} {PROXY_NAME}\n"
