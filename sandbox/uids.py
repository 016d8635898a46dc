"""The blocks of host uids that sandboxes' roots map onto, claimed machine-wide.

Each sandbox's user namespace maps its ids 0..UID_BLOCK-1 onto a block of host ids of
its own. A block is claimed by creating a file named after it (O_EXCL) under the
machine-wide `HostConfig.uid_claims_dir`, holding the claiming daemon's state dir and
the sandbox id, so that two daemons never hand out the same block and each daemon
releases only its own claims.
"""

from __future__ import annotations

import os

from .config import UID_BASE, UID_BLOCK, UID_BLOCKS, HostConfig
from .errors import CapacityExhausted


def uid_base(block: int) -> int:
    """The first host uid of `block` (root inside a sandbox of that block)."""
    return UID_BASE + block * UID_BLOCK


class UidBlocks:
    """This daemon's claims on the machine's uid blocks."""

    def __init__(self, config: HostConfig):
        self.config = config
        self.dir = config.uid_claims_dir

    def _owner(self, sid: str) -> str:
        return f"{self.config.state_dir}\n{sid}\n"

    def claim(self, sid: str) -> int:
        """The lowest free block, now claimed for sandbox `sid`."""
        self.dir.mkdir(parents=True, exist_ok=True)
        used = {int(p.name) for p in self.dir.iterdir() if p.name.isdigit()}
        for block in range(UID_BLOCKS):
            if block in used:
                continue
            try:
                fd = os.open(self.dir / str(block), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                continue  # another daemon took it just now
            with os.fdopen(fd, "w") as f:
                f.write(self._owner(sid))
            return block
        raise CapacityExhausted("no free host uid range is left for another sandbox")

    def release(self, block: int, sid: str) -> None:
        """Give `block` back if sandbox `sid` of this daemon holds it; absent is fine."""
        path = self.dir / str(block)
        try:
            if path.read_text() == self._owner(sid):
                path.unlink()
        except FileNotFoundError:
            pass

    def prune(self, live: set[str]) -> None:
        """Release every claim of this daemon whose sandbox is not in `live` (at start-up:
        sandboxes that died while the daemon was away)."""
        if not self.dir.exists():
            return
        for p in self.dir.iterdir():
            try:
                state_dir, sid = p.read_text().splitlines()[:2]
            except (ValueError, OSError):
                continue
            if state_dir == str(self.config.state_dir) and sid.strip() not in live:
                p.unlink(missing_ok=True)
