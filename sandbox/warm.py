"""Sandboxes half-built ahead of demand, so that a create does not wait for the slow part.

A warm slot is an id, a claimed uid block, an unlimited cgroup and a user namespace the
spawner has parked for it (`SpawnerClient.park`). `Engine.create` takes a ready slot when
there is one, sets the sandbox's limits on its cgroup and boots the rest; the pool then
makes the next slot off that request's path. A slot that cannot be made is logged and
its leftovers (cgroup, uid claim) removed: creates go on without one.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from dataclasses import dataclass

from .cgroups import CgroupManager, Limits
from .config import UID_BLOCK, HostConfig
from .errors import SandboxError
from .spawner.client import SpawnerClient
from .spawner.spec import ParkSpec
from .uids import UidBlocks, uid_base

log = logging.getLogger("nslab.engine")


@dataclass
class WarmSlot:
    """A sandbox half-built ahead of demand: id, uid block, cgroup and user namespace."""

    id: str
    uid_block: int
    ready: asyncio.Future


class WarmPool:
    """Keeps `config.warm` slots ready (0: none)."""

    def __init__(self, config: HostConfig, cgroups: CgroupManager, spawner: SpawnerClient,
                 uids: UidBlocks):
        self.config = config
        self.cgroups = cgroups
        self.spawner = spawner
        self.uids = uids
        self.size = config.warm
        self._slots: list[WarmSlot] = []
        self._refill: asyncio.Task | None = None

    def _group(self, sid: str) -> str:
        return f"{self.config.cgroup_prefix}/{sid}"

    def ids(self) -> set[str]:
        """Ids of every slot, ready or not (their cgroups and uid claims are in use)."""
        return {slot.id for slot in self._slots}

    def status(self) -> dict:
        """What `GET /v1/info` shows: ids of the ready slots, and how many are being made."""
        return {"warm_slots": [w.id for w in self._slots if w.ready.done()],
                "warm_pending": sum(1 for w in self._slots if not w.ready.done())
                + int(self._refill is not None and not self._refill.done())}

    def take(self) -> WarmSlot | None:
        """A ready slot, now the caller's (who must `refill()` afterwards), or None."""
        for slot in self._slots:
            if slot.ready.done() and slot.ready.exception() is None:
                self._slots.remove(slot)
                return slot
        return None

    def refill(self) -> None:
        """Start making slots up to the pool's size, unless that is under way already."""
        if self.size > 0 and (self._refill is None or self._refill.done()):
            self._refill = asyncio.get_running_loop().create_task(self._fill())

    async def _fill(self) -> None:
        while len(self._slots) < self.size:
            sid = secrets.token_hex(6)
            block = self.uids.claim(sid)
            group = self._group(sid)
            base = uid_base(block)
            try:
                self.cgroups.create(group, Limits(), base, base)
                ready = await self.spawner.park(ParkSpec(
                    slot=sid, uid_base=base, uid_count=UID_BLOCK,
                    cgroup_files=self.cgroups.spawn_procs_files(group)))
                # Retrieve a failure here, so that asyncio never logs it as unretrieved.
                ready.add_done_callback(lambda f: f.cancelled() or f.exception())
                self._slots.append(WarmSlot(id=sid, uid_block=block, ready=ready))
                await ready
            except (SandboxError, OSError) as e:
                log.warning("could not prepare a warm sandbox slot: %s", e)
                self._slots = [w for w in self._slots if w.id != sid]
                await self._drop(sid, block)
                return

    async def _drop(self, sid: str, block: int) -> None:
        group = self._group(sid)
        if self.cgroups.exists(group):
            await asyncio.to_thread(self.cgroups.kill_all, group)
            self.cgroups.remove(group)
        self.uids.release(block, sid)

    async def drain(self) -> None:
        """Stop refilling and give back every slot (the daemon stops)."""
        if self._refill is not None:
            self._refill.cancel()
        for slot in list(self._slots):
            self._slots.remove(slot)
            await self.spawner.unpark(slot.id)
            await self._drop(slot.id, slot.uid_block)
