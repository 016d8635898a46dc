"""Sandbox lifecycle: create, list, inspect, exec, stats, stop, start, destroy, recover.

The engine owns the records of one daemon's sandboxes and ties the parts together:
storage volume and uid block first, then cgroup, then the spawner builds the namespaces
and PID 1, then the network. Every step that succeeded is undone if a later one fails,
so a failed create leaves nothing behind. Records are JSON files under the state dir;
at start the engine adopts sandboxes whose init still runs and removes every leftover
(cgroup, veth, volume, uid claim) of the ones that died.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import json
import logging
import os
import secrets
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import files, libc
from .cgroups import CgroupManager, Limits
from .config import UID_BASE, UID_BLOCK, UID_BLOCKS, HostConfig
from .errors import (CapacityExhausted, Conflict, HostUnsupported, InvalidRequest, NotFound,
                     SandboxError)
from .images import ImageStore
from .network import Network, in_namespace
from .requests import CreateRequest, ExecRequest, FileQuery, check_sandbox_id
from .sessions import ExecSession
from .spawner import SpawnerClient, start_time
from .storage import Storage

log = logging.getLogger("nslab.engine")

def _find_init() -> str:
    """catatonit from PATH (Debian, Ubuntu) or where podman keeps its copy."""
    import shutil

    for candidate in (shutil.which("catatonit"), "/usr/libexec/podman/catatonit"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return "/usr/bin/catatonit"


INIT_BINARY = _find_init()
NAMESPACE_TYPES = ("cgroup", "ipc", "mnt", "net", "pid", "user", "uts")
# An exit reported before its session was registered is the session's only this long; an
# older one (a forgotten session's process) would otherwise end the next session whose
# process gets the same pid once pids wrap around.
EARLY_EXIT_TTL = 10.0


@dataclass
class WarmSlot:
    """A sandbox half-built ahead of demand: id, uid block, cgroup and user namespace."""

    id: str
    uid_block: int
    ready: asyncio.Future


@dataclass
class SandboxRecord:
    id: str
    image: str
    hostname: str
    limits: dict
    disk: int
    shm: int
    home: str | None
    uid_block: int
    group: str
    created: float
    state: str = "creating"  # creating | running | stopped
    address: str | None = None
    veth: str | None = None
    init_pid: int | None = None
    init_start: int | None = None
    labels: dict = field(default_factory=dict)

    @property
    def uid_base(self) -> int:
        return UID_BASE + self.uid_block * UID_BLOCK

    def to_json(self) -> dict:
        d = asdict(self)
        d["uid_base"] = self.uid_base
        d["uid_count"] = UID_BLOCK
        return d

    def summary(self) -> dict:
        return {"id": self.id, "state": self.state, "image": self.image,
                "hostname": self.hostname, "address": self.address, "home": self.home,
                "created": self.created, "init_pid": self.init_pid, "limits": self.limits,
                "disk": self.disk, "uid_base": self.uid_base, "labels": self.labels}


class Engine:
    def __init__(self, config: HostConfig, spawner: SpawnerClient):
        self.config = config
        self.spawner = spawner
        self.cgroups = CgroupManager.detect(config.cgroup_root)
        self.network = Network(config)
        self.storage = Storage(config)
        self.images = ImageStore(config)
        self.records: dict[str, SandboxRecord] = {}
        self.sessions: dict[str, ExecSession] = {}
        self._sessions_by_pid: dict[int, ExecSession] = {}
        self._init_watch: dict[str, int] = {}  # sandbox id -> pidfd of its init
        # pid -> (exit code, when): exits reported before exec() registered the session
        self._early_exits: dict[int, tuple[int, float]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        spawner.on_exit = self._on_process_exit
        self.max_cpus = float(os.cpu_count() or 1)
        self.warm_size = config.warm
        self._warm: list[WarmSlot] = []
        self._refill: asyncio.Task | None = None

    # ------------------------------------------------------------------ start-up

    def preflight(self) -> None:
        """Fail early, naming what the host lacks."""
        if os.geteuid() != 0:
            raise HostUnsupported("sandboxd must run as root (it creates namespaces, "
                                  "cgroups, mounts and network devices)")
        try:
            if int(Path("/proc/sys/user/max_user_namespaces").read_text()) == 0:
                raise HostUnsupported("user namespaces are disabled: set "
                                      "sysctl user.max_user_namespaces=15000")
        except FileNotFoundError:
            raise HostUnsupported("this kernel has no user namespaces (CONFIG_USER_NS)") from None
        if "overlay" not in Path("/proc/filesystems").read_text():
            raise HostUnsupported("overlayfs is missing: run `modprobe overlay`")
        if not os.access(INIT_BINARY, os.X_OK):
            raise HostUnsupported("catatonit is missing (PID 1 of every sandbox): install the "
                                  "catatonit package")
        self.cgroups.check()

    async def start(self) -> None:
        self.preflight()
        self.config.ensure_dirs()
        self.storage.ensure()
        self.images.ensure_host()
        # pyroute2's synchronous API runs its own event loop, so never on ours.
        await asyncio.to_thread(self.network.setup)
        await self.recover()
        self._schedule_refill()

    # ------------------------------------------------------------------ records

    def _record_path(self, sid: str) -> Path:
        return self.config.sandboxes_dir / f"{sid}.json"

    def _save(self, rec: SandboxRecord) -> None:
        path = self._record_path(rec.id)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(rec), indent=1))
        os.replace(tmp, path)

    def _lock(self, sid: str) -> asyncio.Lock:
        return self._locks.setdefault(sid, asyncio.Lock())

    def get(self, sid: str) -> SandboxRecord:
        check_sandbox_id(sid)
        rec = self.records.get(sid)
        if rec is None:
            raise NotFound(f"no sandbox {sid}")
        return rec

    def list(self) -> list[SandboxRecord]:
        return sorted(self.records.values(), key=lambda r: r.created)

    # ------------------------------------------------------------------ uid blocks

    def _claim_uid_block(self, sid: str) -> int:
        claims = self.config.uid_claims_dir
        claims.mkdir(parents=True, exist_ok=True)
        owner = f"{self.config.state_dir}\n{sid}\n"
        used = {int(p.name) for p in claims.iterdir() if p.name.isdigit()}
        for block in range(UID_BLOCKS):
            if block in used:
                continue
            try:
                fd = os.open(claims / str(block), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                continue  # another daemon took it just now
            with os.fdopen(fd, "w") as f:
                f.write(owner)
            return block
        raise CapacityExhausted("no free host uid range is left for another sandbox")

    def _release_uid_block(self, block: int, sid: str) -> None:
        path = self.config.uid_claims_dir / str(block)
        try:
            if path.read_text() == f"{self.config.state_dir}\n{sid}\n":
                path.unlink()
        except FileNotFoundError:
            pass

    # ------------------------------------------------------------------ create

    async def create(self, req: CreateRequest) -> SandboxRecord:
        image = self.images.get(req.image)
        if req.home and any(r.home == req.home for r in self.records.values()):
            raise Conflict(f"home {req.home!r} is in use by another sandbox", field="home")
        if req.cpuset:
            self._check_cpuset(req.cpuset)
        limits = Limits(cpus=req.cpus, cpu_weight=req.cpu_weight, cpuset=req.cpuset,
                        memory=req.memory, swap=req.swap, pids=req.pids, io_weight=req.io_weight)
        limits.validate()
        slot = self._take_warm_slot()  # from here on, every path ends in the try below
        sid = slot.id if slot else secrets.token_hex(6)
        rec = SandboxRecord(id=sid, image=image.name, hostname=req.hostname or f"sb-{sid[:8]}",
                            limits=asdict(limits), disk=req.disk, shm=req.shm, home=req.home,
                            uid_block=-1, group=f"{self.config.cgroup_prefix}/{sid}",
                            created=time.time(), labels=req.labels)
        async with self._lock(sid):
            rec.uid_block = slot.uid_block if slot else self._claim_uid_block(sid)
            self.records[sid] = rec
            self._save(rec)
            try:
                self.storage.create_volume("sandboxes", sid, req.disk)
                if req.home:
                    self.storage.ensure_volume("homes", req.home, req.home_quota)
                await self._boot(rec, slot)
            except BaseException:
                await self._teardown(rec, purge_home=False, keep_volume=False)
                raise
            finally:
                if slot:  # make the next one, off this request's path
                    self._schedule_refill()
        return rec

    def _check_cpuset(self, cpuset: str) -> None:
        online = Path("/sys/devices/system/cpu/online").read_text().strip()
        allowed = _expand_cpulist(online)
        wanted = _expand_cpulist(cpuset)
        if not wanted or not wanted <= allowed:
            raise InvalidRequest(f"cpuset {cpuset!r} names CPUs this host does not have "
                                 f"(online: {online})", field="cpuset")

    def _layers(self, rec: SandboxRecord) -> list[dict]:
        image = self.images.get(rec.image)
        layers = [{"lower": str(image.rootfs), "target": ""}]
        layers += [{"lower": host, "target": inside.strip("/")} for host, inside in image.binds]
        return layers

    def _prepare_volume(self, rec: SandboxRecord, layers: list[dict]) -> Path:
        vol = self.storage.path("sandboxes", rec.id)
        base = rec.uid_base
        (vol / "rootfs").mkdir(exist_ok=True)
        for i in range(len(layers)):
            for part in ("lower", "upper", "work"):
                (vol / part / str(i)).mkdir(parents=True, exist_ok=True)
            # The merged directory takes its owner from the upper dir: root inside.
            os.chown(vol / "upper" / str(i), base, base)
            os.chmod(vol / "upper" / str(i), 0o755)
        etc = vol / "upper" / "0" / "etc"
        etc.mkdir(exist_ok=True)
        os.chown(etc, base, base)
        files = {
            "hostname": f"{rec.hostname}\n",
            "hosts": (f"127.0.0.1\tlocalhost\n127.0.1.1\t{rec.hostname}\n"
                      f"::1\tlocalhost ip6-localhost ip6-loopback\n"),
        }
        for name, text in files.items():
            path = etc / name
            path.write_text(text)
            os.chown(path, base, base)
        return vol

    async def _boot(self, rec: SandboxRecord, slot: WarmSlot | None = None) -> None:
        """Start PID 1 and the network for a record whose volume exists."""
        layers = self._layers(rec)
        vol = self._prepare_volume(rec, layers)
        limits = Limits(**rec.limits)
        if slot:
            self.cgroups.set_limits(rec.group, limits)  # its cgroup exists, unlimited
        else:
            self.cgroups.create(rec.group, limits, rec.uid_base, rec.uid_base)
        home = None
        if rec.home:
            home = {"source": str(self.storage.path("homes", rec.home)), "target": "root"}
        spec = {
            "dir": str(vol), "layers": layers, "home": home, "hostname": rec.hostname,
            "uid_base": rec.uid_base, "uid_count": UID_BLOCK,
            "cgroup_files": self.cgroups.spawn_procs_files(rec.group),
            "cgroup_mounts": [list(m) for m in self.cgroups.mounts_inside()],
            "cgroup_version": self.cgroups.version,
            "init": INIT_BINARY, "shm_size": rec.shm,
        }
        if slot:
            spec["slot"] = slot.id
        pid = await self.spawner.spawn(spec)
        rec.init_pid = pid
        rec.init_start = start_time(pid)
        self.cgroups.finish_spawn(rec.group, pid)
        used = {r.address for r in self.records.values() if r.address and r is not rec}
        address = self.network.allocate({ipaddress.IPv4Address(a) for a in used})
        info = await asyncio.to_thread(self.network.attach, rec.id, pid, address)
        rec.address, rec.veth = info.address, info.veth
        rec.state = "running"
        self._save(rec)
        self._watch_init(rec)

    # ------------------------------------------------------------------ warm slots

    def _take_warm_slot(self) -> WarmSlot | None:
        for slot in self._warm:
            if slot.ready.done() and slot.ready.exception() is None:
                self._warm.remove(slot)
                return slot
        return None

    def _schedule_refill(self) -> None:
        if self.warm_size > 0 and (self._refill is None or self._refill.done()):
            self._refill = asyncio.get_running_loop().create_task(self._fill_pool())

    async def _fill_pool(self) -> None:
        while len(self._warm) < self.warm_size:
            sid = secrets.token_hex(6)
            block = self._claim_uid_block(sid)
            group = f"{self.config.cgroup_prefix}/{sid}"
            base = UID_BASE + block * UID_BLOCK
            try:
                self.cgroups.create(group, Limits(), base, base)
                ready = await self.spawner.park(sid, {
                    "uid_base": base, "uid_count": UID_BLOCK,
                    "cgroup_files": self.cgroups.spawn_procs_files(group)})
                ready.add_done_callback(lambda f: f.cancelled() or f.exception())
                slot = WarmSlot(id=sid, uid_block=block, ready=ready)
                self._warm.append(slot)
                await ready
            except (SandboxError, OSError) as e:
                log.warning("could not prepare a warm sandbox slot: %s", e)
                self._warm = [w for w in self._warm if w.id != sid]
                await self._drop_slot_resources(sid, block)
                return

    async def _drop_slot_resources(self, sid: str, block: int) -> None:
        group = f"{self.config.cgroup_prefix}/{sid}"
        if self.cgroups.exists(group):
            await asyncio.to_thread(self.cgroups.kill_all, group)
            self.cgroups.remove(group)
        self._release_uid_block(block, sid)

    async def drain_pool(self) -> None:
        if self._refill is not None:
            self._refill.cancel()
        for slot in list(self._warm):
            self._warm.remove(slot)
            await self.spawner.unpark(slot.id)
            await self._drop_slot_resources(slot.id, slot.uid_block)

    # ------------------------------------------------------------------ init watch

    def _watch_init(self, rec: SandboxRecord) -> None:
        try:
            pidfd = libc.pidfd_open(rec.init_pid)
        except OSError:
            asyncio.get_running_loop().call_soon(self._init_exited, rec.id)
            return
        self._init_watch[rec.id] = pidfd
        asyncio.get_running_loop().add_reader(pidfd, self._init_exited, rec.id)

    def _unwatch_init(self, sid: str) -> None:
        pidfd = self._init_watch.pop(sid, None)
        if pidfd is not None:
            asyncio.get_running_loop().remove_reader(pidfd)
            os.close(pidfd)

    def _init_exited(self, sid: str) -> None:
        """PID 1 ended (killed from inside, or by the kernel): stop the sandbox, keep its files."""
        self._unwatch_init(sid)
        rec = self.records.get(sid)
        if rec is None or rec.state != "running":
            return
        log.info("sandbox %s: init exited; stopping it", sid)
        asyncio.get_running_loop().create_task(self._stop_after_init_exit(sid))

    async def _stop_after_init_exit(self, sid: str) -> None:
        try:
            await self.stop(sid)
        except NotFound:
            pass  # destroyed meanwhile: nothing left to stop

    def _on_process_exit(self, pid: int, code: int) -> None:
        session = self._sessions_by_pid.pop(pid, None)
        if session is not None:
            session.process_exited(code)
            return
        # The spawner reports an exit right after its exec reply; it can reach us
        # before exec() below has registered the session. (Or the session was forgotten
        # first, `DELETE /exec/ID`: nobody claims that one, and it must not be taken for
        # the exit of a later process that gets the same pid; hence the time limit.)
        now = time.monotonic()
        self._early_exits[pid] = (code, now)
        for old in [p for p, (_, t) in self._early_exits.items() if now - t > EARLY_EXIT_TTL]:
            del self._early_exits[old]
        while len(self._early_exits) > 1024:
            self._early_exits.pop(next(iter(self._early_exits)))

    def _claim_early_exit(self, pid: int) -> int | None:
        """The exit code of `pid` if it was reported just now, before its session existed."""
        code, at = self._early_exits.pop(pid, (None, 0.0))
        return code if code is not None and time.monotonic() - at <= EARLY_EXIT_TTL else None

    # ------------------------------------------------------------------ stop / start / destroy

    async def stop(self, sid: str) -> SandboxRecord:
        rec = self.get(sid)
        async with self._lock(sid):
            if rec.state == "running":
                await self._halt(rec)
                rec.state = "stopped"
                self._save(rec)
        return rec

    async def start_sandbox(self, sid: str) -> SandboxRecord:
        rec = self.get(sid)
        async with self._lock(sid):
            if rec.state == "running":
                return rec
            try:
                await self._boot(rec)
            except BaseException:
                await self._halt(rec)
                rec.state = "stopped"
                self._save(rec)
                raise
        return rec

    async def destroy(self, sid: str, purge: bool = False) -> None:
        rec = self.get(sid)
        async with self._lock(sid):
            await self._teardown(rec, purge_home=purge, keep_volume=False)
        self._locks.pop(sid, None)

    async def _halt(self, rec: SandboxRecord) -> None:
        """Kill every process of the sandbox and release its cgroup and network."""
        self._unwatch_init(rec.id)
        for session in [s for s in self.sessions.values() if s.sandbox_id == rec.id]:
            session.close()
            self.sessions.pop(session.id, None)
        if _alive(rec.init_pid, rec.init_start):
            try:
                os.kill(rec.init_pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        await asyncio.to_thread(self.cgroups.kill_all, rec.group)
        self.cgroups.remove(rec.group)
        await asyncio.to_thread(self.network.detach, rec.id)
        rec.init_pid = rec.init_start = None
        rec.address = rec.veth = None

    async def _teardown(self, rec: SandboxRecord, *, purge_home: bool, keep_volume: bool) -> None:
        await self._halt(rec)
        if not keep_volume:
            await self._delete_volume("sandboxes", rec.id)
        if purge_home and rec.home:
            await self._delete_volume("homes", rec.home)
        if rec.uid_block >= 0:
            self._release_uid_block(rec.uid_block, rec.id)
        self.records.pop(rec.id, None)
        try:
            self._record_path(rec.id).unlink()
        except FileNotFoundError:
            pass

    async def _delete_volume(self, kind: str, name: str) -> None:
        # The overlay lives in the sandbox's mount namespaces, which the kernel frees a
        # moment after the last process is gone; until then the subvolume is busy.
        for attempt in range(50):
            try:
                self.storage.delete_volume(kind, name)
                return
            except SandboxError as e:
                if attempt == 49 or "busy" not in str(e).lower():
                    raise
            except OSError as e:
                if e.errno != errno.EBUSY or attempt == 49:
                    raise
            await asyncio.sleep(0.02)

    # ------------------------------------------------------------------ recovery

    async def recover(self) -> dict:
        """Adopt live sandboxes, clean up after dead ones. Returns what was done."""
        adopted, cleaned = [], []
        for path in sorted(self.config.sandboxes_dir.glob("*.json")):
            try:
                data = json.loads(path.read_text())
                rec = SandboxRecord(**data)
            except (ValueError, TypeError) as e:
                log.warning("ignoring unreadable record %s: %s", path, e)
                path.rename(path.with_suffix(".broken"))
                continue
            self.records[rec.id] = rec
            if rec.state == "running" and _alive(rec.init_pid, rec.init_start):
                self._watch_init(rec)
                adopted.append(rec.id)
            elif rec.state in ("running", "stopped"):
                # Its init died while we were away: stopped, as if it had died under us
                # (processes, cgroup and veth released; its files kept for `start`).
                await self._halt(rec)
                if rec.state == "running":
                    cleaned.append(rec.id)
                rec.state = "stopped"
                self._save(rec)
            else:  # it was being created when we died
                await self._teardown(rec, purge_home=False, keep_volume=False)
                cleaned.append(rec.id)
        live = set(self.records) | {w.id for w in self._warm}
        for name in self.cgroups.children(self.config.cgroup_prefix):
            if name not in live:
                group = f"{self.config.cgroup_prefix}/{name}"
                await asyncio.to_thread(self.cgroups.kill_all, group)
                self.cgroups.remove(group)
                cleaned.append(f"cgroup:{name}")
        live_veths = {r.veth for r in self.records.values() if r.veth}
        for veth in await asyncio.to_thread(self.network.veths):
            if veth not in live_veths:
                await asyncio.to_thread(self.network._delete_veth, veth)
                cleaned.append(f"veth:{veth}")
        for name in self.storage.volumes("sandboxes"):
            if name not in live:
                await self._delete_volume("sandboxes", name)
                cleaned.append(f"volume:{name}")
        claims = self.config.uid_claims_dir
        if claims.exists():
            for p in claims.iterdir():
                try:
                    state_dir, sid = p.read_text().splitlines()[:2]
                except (ValueError, OSError):
                    continue
                if state_dir == str(self.config.state_dir) and sid.strip() not in live:
                    p.unlink(missing_ok=True)
        if adopted or cleaned:
            log.info("recovered: adopted %s, cleaned %s", adopted, cleaned)
        return {"adopted": adopted, "cleaned": cleaned}

    async def teardown_host(self) -> None:
        """Remove everything this daemon made: sandboxes, homes, bridge, firewall, pool mount."""
        self.preflight()
        await self.drain_pool()
        if self.config.storage_image.exists():
            self.storage.ensure()
        if self.storage.is_mounted():
            await self.recover()
            for sid in list(self.records):
                await self.destroy(sid, purge=True)
            for name in self.storage.volumes("homes"):
                await self._delete_volume("homes", name)
        await asyncio.to_thread(self.network.teardown)
        if self.storage.is_mounted():
            self.storage.unmount()
        if self.cgroups.exists(self.config.cgroup_prefix):
            await asyncio.to_thread(self.cgroups.kill_all, self.config.cgroup_prefix)
            self.cgroups.remove(self.config.cgroup_prefix)

    async def shutdown(self, *, destroy_all: bool = False) -> None:
        """Stop watching; sandboxes keep running unless destroy_all (tests, `--ephemeral`)."""
        await self.drain_pool()
        if destroy_all:
            for sid in list(self.records):
                await self.destroy(sid, purge=True)
        for sid in list(self._init_watch):
            self._unwatch_init(sid)
        for session in list(self.sessions.values()):
            session.close()

    # ------------------------------------------------------------------ exec

    def _running(self, sid: str) -> SandboxRecord:
        rec = self.get(sid)
        if rec.state != "running":
            raise Conflict(f"sandbox {sid} is {rec.state}; start it first")
        return rec

    async def exec(self, sid: str, req: ExecRequest) -> ExecSession:
        rec = self._running(sid)
        spec = {
            "init_pid": rec.init_pid, "init_start": rec.init_start,
            "cgroup_files": self.cgroups.exec_procs_files(rec.group),
            "argv": req.argv, "tty": req.tty, "user": req.user, "cwd": req.cwd,
            "env": req.env, "rows": req.rows, "cols": req.cols, "hostname": rec.hostname,
        }
        handle = await self.spawner.exec(spec)
        session = ExecSession(sandbox_id=sid, handle=handle, tty=req.tty, argv=req.argv)
        self.sessions[session.id] = session
        self._sessions_by_pid[handle.pid] = session
        session.start(asyncio.get_running_loop())
        code = self._claim_early_exit(handle.pid)
        if code is not None:
            self._sessions_by_pid.pop(handle.pid, None)
            session.process_exited(code)
        return session

    def session(self, exec_id: str) -> ExecSession:
        s = self.sessions.get(exec_id)
        if s is None:
            raise NotFound(f"no exec session {exec_id}")
        return s

    def forget_session(self, exec_id: str) -> None:
        s = self.sessions.pop(exec_id, None)
        if s is not None:
            self._sessions_by_pid.pop(s.handle.pid, None)
            s.close()

    async def run(self, sid: str, req: ExecRequest, *, stdin: bytes = b"", timeout: float = 10.0,
                  limit: int = 1 << 20) -> dict:
        """Run a command to completion (for graders): exit code and bounded output."""
        session = await self.exec(sid, req)
        try:
            return await session.collect(stdin=stdin, timeout=timeout, limit=limit)
        finally:
            self.forget_session(session.id)

    # ------------------------------------------------------------------ host-side facts

    def stats(self, sid: str) -> dict:
        rec = self._running(sid)
        stats = self.cgroups.stats(rec.group)
        stats["disk"] = self.storage.usage("sandboxes", rec.id)
        stats["id"] = sid
        stats["time"] = time.time()
        return stats

    async def inspect(self, sid: str) -> dict:
        rec = self._running(sid)
        procs = []
        for pid in self.cgroups.procs(rec.group):
            info = _process_info(pid, rec)
            if info:
                procs.append(info)
        netns_seen = {}
        for p in procs:
            ns = p["namespaces"].get("net")
            if ns and ns not in netns_seen:
                netns_seen[ns] = p["host_pid"]
        sockets = []
        for ns, pid in netns_seen.items():
            for s in self.network.listening_sockets(pid):
                s["netns"] = ns
                sockets.append(s)
        net_namespaces = await asyncio.to_thread(self._net_namespaces, netns_seen)
        uts_namespaces = await asyncio.to_thread(_uts_namespaces, procs)
        return {
            "id": rec.id, "state": rec.state, "hostname": rec.hostname,
            "init_pid": rec.init_pid, "uid_base": rec.uid_base, "uid_count": UID_BLOCK,
            "cgroup_version": self.cgroups.version, "cgroup": rec.group,
            "processes": procs, "cgroups": self.cgroups.tree(rec.group),
            "sockets": sockets,
            "addresses": await asyncio.to_thread(self.network.addresses, rec.init_pid),
            "address": rec.address, "limits": rec.limits, "disk": rec.disk,
            "net_namespaces": net_namespaces, "uts_namespaces": uts_namespaces,
        }

    def _net_namespaces(self, seen: dict[int, int]) -> list[dict]:
        """Every network namespace a process of the sandbox is in, with its interfaces
        (a learner's own namespaces too: graders see a veth they made from the host)."""
        out = []
        for inode, pid in seen.items():
            try:
                addresses = self.network.addresses(pid)
            except SandboxError:  # the process exited meanwhile
                continue
            out.append({"inode": inode, "host_pid": pid, "addresses": addresses})
        return out

    # ------------------------------------------------------------------ files (sandbox/files.py)

    async def read_file(self, sid: str, q: FileQuery) -> bytes:
        """A regular file of the sandbox, resolved in its init's root (or `q.pid`'s)."""
        rec = self._running(sid)
        return await asyncio.to_thread(self._in_root, rec, q.pid, files.read_file, q.path,
                                       q.limit or files.DEFAULT_LIMIT)

    async def list_dir(self, sid: str, q: FileQuery) -> list[dict]:
        rec = self._running(sid)
        return await asyncio.to_thread(self._in_root, rec, q.pid, files.list_dir, q.path)

    def _in_root(self, rec: SandboxRecord, pid: int | None, fn, *args):
        root = self._root_fd(rec, pid)
        try:
            return fn(root, *args)
        finally:
            os.close(root)

    def _root_fd(self, rec: SandboxRecord, pid: int | None) -> int:
        """An O_PATH fd on the root directory of the sandbox's init, or of its process
        `pid` (a pid as seen inside the sandbox), whose mount namespace may be its own.
        /proc/<host pid> is opened first and the process checked through that fd, so a
        pid reused meanwhile by some other process of the host is never followed."""
        if pid is None:
            candidates = [rec.init_pid] if rec.init_pid else []
        else:
            candidates = [p for p in self.cgroups.procs(rec.group) if _inside_pid(p) == pid]
        for host_pid in candidates:
            try:
                proc = os.open(f"/proc/{host_pid}", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except (FileNotFoundError, ProcessLookupError):
                continue
            try:
                if pid is None:
                    ok = _start_time_at(proc) == rec.init_start
                else:
                    ok = _inside_pid(host_pid, proc) == pid and _in_group(proc, rec.group)
                if ok:
                    return os.open("root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=proc)
            except (FileNotFoundError, ProcessLookupError):
                continue
            finally:
                os.close(proc)
        if pid is None:
            raise Conflict(f"sandbox {rec.id} has no running init; start it again")
        raise NotFound(f"no process {pid} in sandbox {rec.id}")


def _read_at(dir_fd: int, name: str) -> bytes:
    fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        return os.read(fd, 65536)
    finally:
        os.close(fd)


def _inside_pid(host_pid: int, proc_fd: int | None = None) -> int | None:
    """The pid of host process `host_pid` in the sandbox's pid namespace (NSpid's second
    field), read through `proc_fd` (its /proc dir) when given; None if it has exited."""
    try:
        if proc_fd is None:
            text = Path(f"/proc/{host_pid}/status").read_bytes()
        else:
            text = _read_at(proc_fd, "status")
    except (FileNotFoundError, ProcessLookupError):
        return None
    for line in text.splitlines():
        if line.startswith(b"NSpid:"):
            fields = line.split()[1:]
            return int(fields[1]) if len(fields) > 1 else None
    return None


def _start_time_at(proc_fd: int) -> int | None:
    stat = _read_at(proc_fd, "stat")
    return int(stat[stat.rindex(b")") + 2:].split()[19])


def _in_group(proc_fd: int, group: str) -> bool:
    """Whether the process is in the cgroup `group` or below it (any hierarchy)."""
    prefix = "/" + group
    for line in _read_at(proc_fd, "cgroup").decode(errors="replace").splitlines():
        path = line.split(":", 2)[-1]
        if path == prefix or path.startswith(prefix + "/"):
            return True
    return False


def _uts_namespaces(procs: list[dict]) -> list[dict]:
    """The hostname of each UTS namespace of the sandbox's processes, read by a thread that
    joins it (procfs would show the reader's own hostname, not the process's)."""
    out, seen = [], set()
    for p in procs:
        inode = p["namespaces"].get("uts")
        if inode is None or inode in seen:
            continue
        try:
            fd = os.open(f"/proc/{p['host_pid']}/ns/uts", os.O_RDONLY | os.O_CLOEXEC)
        except (FileNotFoundError, ProcessLookupError):
            continue
        try:
            name = in_namespace(fd, "uts", lambda: os.uname().nodename)
        except OSError:
            continue
        finally:
            os.close(fd)
        seen.add(inode)
        out.append({"inode": inode, "hostname": name})
    return out


def _alive(pid: int | None, start: int | None) -> bool:
    """Is this exact process (pid + start time) still running (a zombie is not)?"""
    if not pid or start_time(pid) != start:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except FileNotFoundError:
        return False
    return stat[stat.rindex(b")") + 2:][:1] not in (b"Z", b"X")


def _expand_cpulist(text: str) -> set[int]:
    cpus = set()
    for part in text.split(","):
        if not part:
            continue
        if "-" in part:
            lo, hi = part.split("-")
            cpus.update(range(int(lo), int(hi) + 1))
        else:
            cpus.add(int(part))
    return cpus


def _process_info(pid: int, rec: SandboxRecord) -> dict | None:
    """What the host knows about one process of the sandbox; None if it just exited."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        cgroup = Path(f"/proc/{pid}/cgroup").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = {}
    for line in status.splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.split()
    nspids = [int(x) for x in fields.get("NSpid", [pid])]
    host_uid = int(fields["Uid"][1]) if "Uid" in fields else None
    namespaces = {}
    for ns in NAMESPACE_TYPES:
        try:
            link = os.readlink(f"/proc/{pid}/ns/{ns}")
            namespaces[ns] = int(link[link.index("[") + 1:-1])
        except (FileNotFoundError, ProcessLookupError, ValueError):
            pass
    uid_inside = host_uid - rec.uid_base if host_uid is not None and host_uid >= rec.uid_base else None
    try:
        # schedstat's first field: nanoseconds on a CPU so far (graders measure usage with it).
        cpu_ns = int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])
    except (FileNotFoundError, ProcessLookupError, ValueError, IndexError):
        cpu_ns = None
    return {
        "host_pid": pid,
        "pid": nspids[1] if len(nspids) > 1 else None,
        "nspids": nspids,
        "ppid": int(fields.get("PPid", [0])[0]),
        "comm": " ".join(fields.get("Name", [])),
        "cmdline": [a.decode(errors="replace") for a in cmdline.split(b"\0") if a],
        "host_uid": host_uid,
        "uid": uid_inside,
        "state": fields.get("State", ["?"])[0],
        "namespaces": namespaces,
        "cgroup": _cgroup_line(cgroup, rec.group),
        "cgroups": _cgroup_paths(cgroup, rec.group),
        "cpu_ns": cpu_ns,
        "cpus_allowed": " ".join(fields.get("Cpus_allowed_list", [])) or None,
    }


def _relative(path: str, group: str) -> str:
    prefix = "/" + group
    if path == prefix or path.startswith(prefix + "/"):
        return path[len(prefix):] or "/"
    return path


def _cgroup_paths(text: str, group: str) -> dict[str, str]:
    """Controller -> the process's cgroup relative to the sandbox's own; on cgroup v2
    the one unified path is under "" ("name=" hierarchies of v1 are left out)."""
    out = {}
    for line in text.splitlines():
        _hid, controllers, path = line.split(":", 2)
        if controllers.startswith("name="):
            continue
        for controller in controllers.split(",") if controllers else [""]:
            out[controller] = _relative(path, group)
    return out


def _cgroup_line(text: str, group: str) -> str | None:
    """The process's cgroup relative to the sandbox's own (what it sees as /)."""
    best = None
    for line in text.splitlines():
        _hid, controllers, path = line.split(":", 2)
        if controllers in ("", "cpu", "cpu,cpuacct") or "cpu" in controllers.split(","):
            best = path
            if controllers:
                break
    return None if best is None else _relative(best, group)
