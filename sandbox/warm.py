"""Sandboxes built ahead of demand, so that a create does not wait for the slow part.

A warm slot is a whole sandbox of the default image, booted before anyone asked for it:
an id, a claimed uid block, a cgroup without limits, its PID 1 and exec helper, its volume
and its network. Nothing of a learner has run in it. `Engine.create` takes one when the
request fits (the default image, hostname and /dev/shm size) and only makes it the
learner's: limits, disk quota, home bind, record. The pool then boots the next slot off
that request's path. A request that does not fit, or an empty pool, builds from scratch.

Making a slot goes in two steps: the spawner parks a child that has joined the cgroup and
made the user namespace (`SpawnerClient.park`; on cgroup v1 the join waits for an RCU
grace period), then the engine boots it (`boot`, the engine's own `_boot` with a record
that is not saved: a daemon that dies with warm slots finds their cgroups, volumes and
veths without records and removes them, `Engine.recover`). A slot that cannot be made is
logged and its leftovers removed: creates go on without one.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .cgroups import CgroupManager, Limits
from .config import UID_BLOCK, HostConfig
from .errors import SandboxError
from .spawner.client import SpawnerClient
from .spawner.spec import ParkSpec
from .uids import UidBlocks, uid_base

if TYPE_CHECKING:  # annotations only: the engine imports this module
    from .engine import SandboxRecord

log = logging.getLogger("nslab.engine")

REFILL_DELAY = 0.05  # seconds after a create takes a slot before its replacement is begun


@dataclass
class WarmSlot:
    """A sandbox built ahead of demand. `ready` resolves when its child is parked; `rec`
    is its (unsaved) record from the start of its boot, `booted` once that is done."""

    id: str
    uid_block: int
    ready: asyncio.Future
    rec: SandboxRecord | None = None
    booted: bool = False


class WarmPool:
    """Keeps `config.warm` booted slots ready (0: none). `boot(slot)` boots a parked slot
    and sets its `rec`; `discard(slot)` removes a slot the pool gives up (booted or not)."""

    def __init__(self, config: HostConfig, cgroups: CgroupManager, spawner: SpawnerClient,
                 uids: UidBlocks):
        self.config = config
        self.cgroups = cgroups
        self.spawner = spawner
        self.uids = uids
        self.size = config.warm
        self._slots: list[WarmSlot] = []
        self._making: set[asyncio.Task] = set()
        self.boot: Callable[[WarmSlot], Awaitable[None]] | None = None
        self.discard: Callable[[WarmSlot], Awaitable[None]] | None = None

    def _group(self, sid: str) -> str:
        return f"{self.config.cgroup_prefix}/{sid}"

    def ids(self) -> set[str]:
        """Ids of every slot, ready or not (their cgroups, volumes and uid claims are in use)."""
        return {slot.id for slot in self._slots}

    def addresses(self) -> set[str]:
        """Network addresses the booted slots hold."""
        return {s.rec.address for s in self._slots if s.rec is not None and s.rec.address}

    def status(self) -> dict:
        """What `GET /v1/info` shows: ids of the ready slots, and how many are being made."""
        return {"warm_slots": [w.id for w in self._slots if w.booted],
                "warm_pending": sum(1 for t in self._making if not t.done())}

    def take(self) -> WarmSlot | None:
        """A booted slot, now the caller's (who must `refill()` afterwards), or None."""
        for slot in self._slots:
            if slot.booted:
                self._slots.remove(slot)
                return slot
        return None

    def refill_soon(self) -> None:
        """`refill()` in REFILL_DELAY: what a create is for (the learner's terminal, its first
        exec) follows it within milliseconds, and must not queue behind the next slot's
        forks, cgroup writes and mounts on a host with few cores."""
        if self.size > 0:
            asyncio.get_running_loop().call_later(REFILL_DELAY, self.refill)

    def refill(self) -> None:
        """Start making slots up to the pool's size, all at once: most of a slot's making
        is waiting (for RCU grace periods, for its children), so slots made side by side
        come faster than one after another."""
        loop = asyncio.get_running_loop()
        self._making = {t for t in self._making if not t.done()}
        for _ in range(self.size - len(self._slots) - len(self._making)):
            self._making.add(loop.create_task(self._make_one()))

    async def _make_one(self) -> None:
        sid = secrets.token_hex(6)
        block = self.uids.claim(sid)
        group = self._group(sid)
        base = uid_base(block)
        slot = None
        try:
            self.cgroups.create(group, Limits(), base, base)
            ready = await self.spawner.park(ParkSpec(
                slot=sid, uid_base=base, uid_count=UID_BLOCK,
                cgroup_files=self.cgroups.spawn_procs_files(group)))
            # Retrieve a failure here, so that asyncio never logs it as unretrieved.
            ready.add_done_callback(lambda f: f.cancelled() or f.exception())
            slot = WarmSlot(id=sid, uid_block=block, ready=ready)
            self._slots.append(slot)
            await ready
            await self.boot(slot)
            slot.booted = True
        except (SandboxError, OSError, asyncio.CancelledError) as e:
            # Cancelled: the daemon stops (drain); what this slot holds goes either way.
            if not isinstance(e, asyncio.CancelledError):
                log.warning("could not prepare a warm sandbox: %s", e)
            if slot is not None and slot in self._slots:
                self._slots.remove(slot)
            if slot is not None and slot.rec is not None:
                await self.discard(slot)
            else:
                await self._drop(sid, block)
            if isinstance(e, asyncio.CancelledError):
                raise

    async def _drop(self, sid: str, block: int) -> None:
        """Remove what a slot that never booted holds: its parked child, cgroup, uid claim."""
        await self.spawner.unpark(sid)
        group = self._group(sid)
        if self.cgroups.exists(group):
            await asyncio.to_thread(self.cgroups.kill_all, group)
            self.cgroups.remove(group)
        self.uids.release(block, sid)

    async def drain(self) -> None:
        """Stop refilling and give back every slot (the daemon stops)."""
        making, self._making = self._making, set()
        for task in making:
            task.cancel()
        for task in making:
            try:
                await task
            except (asyncio.CancelledError, SandboxError, OSError):
                pass
        for slot in list(self._slots):
            self._slots.remove(slot)
            if slot.rec is not None:
                await self.discard(slot)
            else:
                await self._drop(slot.id, slot.uid_block)
