"""Sandbox lifecycle: create, list, inspect, exec, run, stats, stop, start, destroy, recover.

The engine owns the records of one daemon's sandboxes and ties the parts together:
storage volume and uid block first, then cgroup, then the spawner builds the namespaces
and PID 1, then the network. Every step that succeeded is undone if a later one fails,
so a failed create leaves nothing behind. Records are JSON files under the state dir;
at start the engine adopts sandboxes whose init still runs and removes every leftover
(cgroup, veth, volume, uid claim) of the ones that died.

The parts it drives each have a module of their own: `warm.py` (sandboxes half-built
ahead of demand), `uids.py` (host uid blocks), `procfs.py` (what the host reads of a
process), `cgroups*.py`, `network.py`, `storage.py`, `images.py`, `files.py`, and the
spawner, which forks every sandbox process.
"""

from __future__ import annotations

import asyncio
import base64
import errno
import ipaddress
import json
import logging
import os
import re
import secrets
import shutil
import signal
import stat
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import files, libc, procfs
from .cgroups import Limits
from .cgroups import detect as detect_cgroups
from .config import UID_BLOCK, HostConfig, hosts_entry
from .errors import Conflict, HostUnsupported, InvalidRequest, NotFound, SandboxError
from .images import DOCKER_SHIM_PATH, ImageStore, docker_shim, shadowing_paths
from .network import Network
from .payloads import CreateRequest, ExecRequest, FileQuery, check_sandbox_id
from .protocol import (HTTP_GET_MAX_BODY, HTTP_GET_MAX_TIMEOUT, ContainerFacts, HttpFacts,
                       InspectFacts, NetNamespaceFacts, ProcessFacts, Reason, SocketFacts)
from .sessions import ExecSession
from .spawner.client import SpawnerClient
from .spawner.spec import GO, Bind, BindSpec, BootSpec, ExecSpec, Layer
from .storage import Storage
from .tracing import Tracer
from .uids import UidBlocks, uid_base
from .warm import WarmPool, WarmSlot

log = logging.getLogger("nslab.engine")

DEFAULT_IMAGE = CreateRequest.image  # the image warm sandboxes are booted from


def _find_init() -> str:
    """catatonit from PATH (Debian, Ubuntu) or where podman keeps its copy."""
    for candidate in (shutil.which("catatonit"), "/usr/libexec/podman/catatonit"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return "/usr/bin/catatonit"


INIT_BINARY = _find_init()
# An exit reported before its session was registered is the session's only this long; an
# older one (a forgotten session's process) would otherwise end the next session whose
# process gets the same pid once pids wrap around.
EARLY_EXIT_TTL = 10.0
# A finished exec session nobody watches is forgotten after this long.
SESSION_TTL = 60.0
# inspect lists at most this many of a sandbox's processes and network namespaces (and
# says which lists it cut, `truncated`): a sandbox may run thousands of processes where
# its pids limit allows, and the interfaces of N namespaces take N² kernel requests (each
# veth's peer is looked up from every namespace). A lab's sandbox has a few dozen
# processes and a handful of namespaces.
MAX_INSPECT_PROCESSES = 1024
MAX_INSPECT_NETNS = 32
# ... and at most this many containers (pid namespaces below the sandbox's), each with its
# cgroup's limit files read; a lab runs a handful.
MAX_INSPECT_CONTAINERS = 64
# Where rootful podman keeps its containers' names and images (containers/storage), read
# for labels only, through the sandbox's root and at most this many bytes: the learner
# writes it.
ENGINE_STORE = "/var/lib/containers/storage/overlay-containers/containers.json"
MAX_ENGINE_STORE = 1 << 20
# An engine's container id: 64 hex digits in the last part of its cgroup path
# ("libpod-<id>", "libpod-<id>.scope", "docker/<id>").
_CONTAINER_ID_RE = re.compile(r"(?:^|[^0-9a-f])([0-9a-f]{64})(?:\.scope)?$")


# http_get: a request target of printable ASCII (no space or line break that would add a
# header); the learner's server may send at most this many bytes in one status or header
# line, and this many header lines.
_HTTP_PATH_RE = re.compile(r"/[\x21-\x7e]{0,2047}")
HTTP_HEAD_MAX = 64 << 10
HTTP_MAX_HEADERS = 100


async def _http_get(address: str, port: int, path: str, limit: int) -> HttpFacts:
    """One HTTP/1.0 GET (the server closes after its answer), read to at most `limit`
    bytes of body; the caller bounds its time."""
    reader, writer = await asyncio.open_connection(address, port, limit=HTTP_HEAD_MAX)
    try:
        writer.write(f"GET {path} HTTP/1.0\r\nHost: {address}:{port}\r\n"
                     "User-Agent: nslab-grader\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        version, _, rest = (await reader.readuntil(b"\n")).decode("latin-1").strip() \
            .partition(" ")
        code, _, phrase = rest.partition(" ")
        if not version.startswith("HTTP/") or not code.isdigit() or len(code) != 3:
            raise ValueError(f"not an HTTP status line: {version[:40]!r}")
        headers: list[list[str]] = []
        length = None
        while (line := (await reader.readuntil(b"\n")).decode("latin-1").strip()):
            if len(headers) == HTTP_MAX_HEADERS:
                raise ValueError(f"more than {HTTP_MAX_HEADERS} header lines")
            name, _, value = line.partition(":")
            headers.append([name.strip(), value.strip()])
            if name.strip().lower() == "content-length" and value.strip().isdigit():
                length = int(value.strip())
        body = bytearray()
        # Read one byte past the limit to tell a body of exactly `limit` from a longer one.
        want = limit + 1 if length is None else min(length, limit + 1)
        while len(body) < want and (chunk := await reader.read(min(65536, want - len(body)))):
            body += chunk
        truncated = len(body) > limit
        return {"status": int(code), "reason": phrase, "headers": headers,
                "body_b64": base64.b64encode(bytes(body[:limit])).decode(),
                "truncated": truncated}
    finally:
        writer.close()


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
    containers: bool = False  # a container engine runs inside (CreateRequest.containers)

    @property
    def uid_base(self) -> int:
        return uid_base(self.uid_block)

    def summary(self) -> dict:
        return {"id": self.id, "state": self.state, "image": self.image,
                "hostname": self.hostname, "address": self.address, "home": self.home,
                "created": self.created, "init_pid": self.init_pid, "limits": self.limits,
                "disk": self.disk, "uid_base": self.uid_base, "labels": self.labels,
                "containers": self.containers}


class Engine:
    def __init__(self, config: HostConfig, spawner: SpawnerClient):
        self.config = config
        self.spawner = spawner
        self.cgroups = detect_cgroups(config.cgroup_root)
        self.network = Network(config)
        self.storage = Storage(config)
        self.images = ImageStore(config)
        self.uids = UidBlocks(config)
        self.pool = WarmPool(config, self.cgroups, spawner, self.uids)
        self.pool.boot = self._boot_warm
        self.pool.discard = self._discard_warm
        self.records: dict[str, SandboxRecord] = {}
        self.sessions: dict[str, ExecSession] = {}
        self._sessions_by_pid: dict[int, ExecSession] = {}
        self._init_watch: dict[str, int] = {}  # sandbox id -> pidfd of its init
        # pid -> (exit code, when): exits reported before exec() registered the session
        self._early_exits: dict[int, tuple[int, float]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        spawner.on_exit = self._on_process_exit
        self.max_cpus = float(os.cpu_count() or 1)
        # Called with a sandbox's id as it halts (stop, destroy, its init's death, a failed
        # start): what else holds the sandbox (its kernel and relay, sandbox/kernels.py)
        # ends with it, without the engine importing it.
        self.on_halt: list[Callable[[str], None]] = []

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
        self.pool.refill()

    @property
    def cgroup_version(self) -> int:
        return self.cgroups.version

    def info(self) -> dict:
        """The daemon's facts for `GET /v1/info` (the daemon adds its uptime and pid)."""
        running = sum(1 for r in self.records.values() if r.state == "running")
        return {"name": self.config.name, "state_dir": str(self.config.state_dir),
                "cgroup_version": self.cgroups.version, "sandboxes": len(self.records),
                "running": running, "subnet": self.config.subnet, **self.pool.status()}

    def list_images(self) -> list[dict]:
        return [img.to_json() for img in self.images.list()]

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
            raise NotFound(f"no sandbox {sid}", reason=Reason.NO_SUCH_SANDBOX)
        return rec

    def list(self) -> list[SandboxRecord]:
        return sorted(self.records.values(), key=lambda r: r.created)

    def _running(self, sid: str) -> SandboxRecord:
        rec = self.get(sid)
        if rec.state != "running":
            raise Conflict(f"sandbox {sid} is {rec.state}; start it first",
                           reason=Reason.NOT_RUNNING)
        return rec

    # ------------------------------------------------------------------ create

    async def create(self, req: CreateRequest) -> SandboxRecord:
        if req.image == "host" and self.images.host_stale():
            await self._refresh_host_image()
        image = self.images.get(req.image)
        if req.home and any(r.home == req.home for r in self.records.values()):
            raise Conflict(f"home {req.home!r} is in use by another sandbox", field="home",
                           reason=Reason.IN_USE)
        if req.cpuset:
            self._check_cpuset(req.cpuset)
        limits = Limits(cpus=req.cpus, cpu_weight=req.cpu_weight, cpuset=req.cpuset,
                        memory=req.memory, swap=req.swap, pids=req.pids, io_weight=req.io_weight)
        limits.validate()
        slot = self._take_warm(req, image.name)
        if slot is not None:
            try:
                return await self._claim(slot, req, limits)
            finally:
                self.pool.refill_soon()  # the next one, off this request's path
        sid = secrets.token_hex(6)
        rec = SandboxRecord(id=sid, image=image.name, hostname=req.hostname or f"sb-{sid[:8]}",
                            limits=asdict(limits), disk=req.disk, shm=req.shm, home=req.home,
                            uid_block=-1, group=f"{self.config.cgroup_prefix}/{sid}",
                            created=time.time(), labels=req.labels, containers=req.containers)
        async with self._lock(sid):
            rec.uid_block = self.uids.claim(sid)
            self.records[sid] = rec
            self._save(rec)
            try:
                self.storage.create_volume("sandboxes", sid, req.disk)
                if req.home:
                    self.storage.ensure_volume("homes", req.home, req.home_quota)
                await self._boot(rec)
            except BaseException:
                await self._teardown(rec, purge_home=False)
                raise
        return rec

    async def _refresh_host_image(self) -> None:
        """Rebuild the host image if the host changed (a package installed since the daemon
        started: its /etc files, alternatives links); warm sandboxes booted from the old
        one are given back and made again."""
        before = self.images.get("host").rootfs
        image = await asyncio.to_thread(self.images.ensure_host)
        if image.rootfs != before and DEFAULT_IMAGE == "host":
            await self.pool.drain()
            self.pool.refill()

    # ------------------------------------------------------------------ warm sandboxes

    def _take_warm(self, req: CreateRequest, image: str) -> WarmSlot | None:
        """A booted warm sandbox for this request, if one fits (warm.py): the default image,
        hostname and /dev/shm size; everything else is set when it is claimed."""
        if image != DEFAULT_IMAGE or req.hostname is not None or req.shm != CreateRequest.shm:
            return None
        if req.containers:  # booted without the image storage and container cgroups
            return None
        while (slot := self.pool.take()) is not None:
            if procfs.alive(slot.rec.init_pid, slot.rec.init_start):
                return slot
            log.warning("warm sandbox %s died before it was taken; removing it", slot.id)
            asyncio.get_running_loop().create_task(self._discard_warm(slot))
        return None

    async def _boot_warm(self, slot: WarmSlot) -> None:
        """Boot a parked warm slot as a sandbox of the default image, without limits."""
        defaults = CreateRequest()
        slot.rec = SandboxRecord(
            id=slot.id, image=DEFAULT_IMAGE, hostname=f"sb-{slot.id[:8]}",
            limits=asdict(Limits()), disk=defaults.disk, shm=defaults.shm, home=None,
            uid_block=slot.uid_block, group=f"{self.config.cgroup_prefix}/{slot.id}",
            created=time.time())
        self.storage.create_volume("sandboxes", slot.id, defaults.disk)
        await self._boot(slot.rec, slot)

    async def _discard_warm(self, slot: WarmSlot) -> None:
        try:
            await self._teardown(slot.rec, purge_home=False)
        except (SandboxError, OSError) as e:  # recover() finds what is left at the next start
            log.warning("could not remove warm sandbox %s: %s", slot.id, e)

    async def _claim(self, slot: WarmSlot, req: CreateRequest, limits: Limits) -> SandboxRecord:
        """Make a warm sandbox the requester's: its limits, disk quota, home and record."""
        rec = slot.rec
        async with self._lock(rec.id):
            rec.limits, rec.disk, rec.home = asdict(limits), req.disk, req.home
            rec.labels, rec.created = req.labels, time.time()
            self.records[rec.id] = rec
            try:
                self.cgroups.set_limits(rec.group, limits)
                self.storage.set_quota("sandboxes", rec.id, req.disk)
                if req.home:
                    home = self.storage.ensure_volume("homes", req.home, req.home_quota)
                    await self.spawner.bind(BindSpec(init_pid=rec.init_pid,
                                                     init_start=rec.init_start,
                                                     source=str(home), target="root"))
                rec.state = "running"
                self._save(rec)
                self._watch_init(rec)
            except BaseException:
                await self._teardown(rec, purge_home=False)
                raise
        return rec

    def _check_cpuset(self, cpuset: str) -> None:
        online = Path("/sys/devices/system/cpu/online").read_text().strip()
        try:
            wanted = procfs.parse_cpulist(cpuset)
        except ValueError:  # a reversed or absurd range names no CPU this host has either
            wanted = set()
        if not wanted or not wanted <= procfs.parse_cpulist(online):
            raise InvalidRequest(f"cpuset {cpuset!r} names CPUs this host does not have "
                                 f"(online: {online})", field="cpuset")

    def _layers(self, rec: SandboxRecord) -> list[Layer]:
        image = self.images.get(rec.image)
        layers = [Layer(lower=str(image.rootfs), target="")]
        layers += [Layer(lower=host, target=inside.strip("/")) for host, inside in image.binds]
        return layers

    def _prepare_volume(self, rec: SandboxRecord, layers: list[Layer]) -> Path:
        vol = self.storage.path("sandboxes", rec.id)
        base = rec.uid_base
        (vol / "rootfs").mkdir(exist_ok=True)
        for i in range(len(layers)):
            for part in ("lower", "upper", "work"):
                (vol / part / str(i)).mkdir(parents=True, exist_ok=True)
            # The merged directory takes its owner from the upper dir: root inside.
            os.chown(vol / "upper" / str(i), base, base)
            os.chmod(vol / "upper" / str(i), 0o755)
        if rec.image == "host":
            try:
                for rel in shadowing_paths():
                    self._hide(vol, layers, rel, base)
                if rec.containers and (shim := docker_shim()) is not None:
                    self._place(vol, layers, DOCKER_SHIM_PATH, base, shim)
            except OSError as e:
                # A link or file the learner left where a directory was (ELOOP, ENOTDIR):
                # their sandbox boots as they made it.
                log.warning("sandbox %s: its docker commands left as they are: %s", rec.id, e)
        etc = vol / "upper" / "0" / "etc"
        etc.mkdir(exist_ok=True)
        os.chown(etc, base, base)
        etc_files = {
            "hostname": f"{rec.hostname}\n",
            "hosts": (f"127.0.0.1\tlocalhost\n127.0.1.1\t{rec.hostname}\n"
                      f"::1\tlocalhost ip6-localhost ip6-loopback\n"
                      + hosts_entry(self.config)),
        }
        for name, text in etc_files.items():
            path = etc / name
            path.write_text(text)
            os.chown(path, base, base)
        return vol

    @staticmethod
    def _hide(vol: Path, layers: list[Layer], rel: str, owner: int) -> None:
        """Hide host path `rel` inside: an overlay whiteout (a 0:0 character device) in the
        upper dir of the layer it lies in, its parents made as root's inside."""
        dfd, name = Engine._upper_parent(vol, layers, rel, owner)
        try:
            os.mknod(name, 0o600 | stat.S_IFCHR, os.makedev(0, 0), dir_fd=dfd)
        except FileExistsError:
            pass
        finally:
            os.close(dfd)

    @staticmethod
    def _place(vol: Path, layers: list[Layer], rel: str, owner: int, text: str) -> None:
        """An executable file at `rel` inside, root's there (the learner may change it: it
        is theirs, like the rest of their sandbox), over whatever the upper dir has there
        (a whiteout of `_hide`, the learner's own file)."""
        dfd, name = Engine._upper_parent(vol, layers, rel, owner)
        try:
            try:
                os.unlink(name, dir_fd=dfd)
            except FileNotFoundError:
                pass
            except IsADirectoryError:
                return  # the learner made a directory of it: theirs to keep
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o755,
                         dir_fd=dfd)
            try:
                os.write(fd, text.encode())
                os.fchown(fd, owner, owner)
                os.fchmod(fd, 0o755)
            finally:
                os.close(fd)
        finally:
            os.close(dfd)

    @staticmethod
    def _upper_parent(vol: Path, layers: list[Layer], rel: str, owner: int) -> tuple[int, str]:
        """(an fd of the directory, name) where host path `rel` lies in the upper dir of
        the layer that holds it; missing parents made as root's inside. The upper dir is
        the learner's to write between boots: every part is opened without following a
        link, so a link planted there cannot lead this host-root write out of it."""
        i, layer = max(((i, l) for i, l in enumerate(layers)
                        if not l.target or rel.startswith(l.target + "/")),
                       key=lambda il: len(il[1].target))
        parts = (rel[len(layer.target) + 1:] if layer.target else rel).split("/")
        dfd = os.open(vol / "upper" / str(i), os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW)
        try:
            for part in parts[:-1]:
                try:
                    os.mkdir(part, 0o755, dir_fd=dfd)
                    os.chown(part, owner, owner, dir_fd=dfd, follow_symlinks=False)
                except FileExistsError:
                    pass
                nfd = os.open(part, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dfd)
                os.close(dfd)
                dfd = nfd
        except OSError:
            os.close(dfd)
            raise
        return dfd, parts[-1]

    async def _boot(self, rec: SandboxRecord, slot: WarmSlot | None = None) -> None:
        """Start PID 1 and the network for a record whose volume exists. With a warm `slot`
        (parked, its cgroup made without limits) the record is the slot's: not saved, its
        init not watched, until a create claims it."""
        layers = self._layers(rec)
        vol = self._prepare_volume(rec, layers)
        if slot is None:
            self.cgroups.create(rec.group, Limits(**rec.limits), rec.uid_base, rec.uid_base,
                                containers=rec.containers)
        home = None
        if rec.home:
            home = Bind(source=str(self.storage.path("homes", rec.home)), target="root")
        containers = None
        if rec.containers:
            # In the sandbox's volume, so it counts against `disk`; host root's on disk is
            # root's inside (bound id-shifted), as the home is.
            containers = vol / "containers"
            containers.mkdir(mode=0o700, exist_ok=True)
        spec = BootSpec(
            dir=str(vol), layers=layers, home=home, hostname=rec.hostname,
            uid_base=rec.uid_base, uid_count=UID_BLOCK,
            cgroup_files=self.cgroups.spawn_procs_files(rec.group),
            cgroup_mounts=self.cgroups.mounts_inside(rec.group),
            cgroup_version=self.cgroups.version,
            init=INIT_BINARY, shm_size=rec.shm, slot=slot.id if slot else None,
            max_ptys=self.config.max_ptys, containers=str(containers) if containers else None)
        pid = await self.spawner.spawn(spec)
        rec.init_pid = pid
        rec.init_start = procfs.start_time(pid)
        self.cgroups.finish_spawn(rec.group, pid)
        used = {r.address for r in self.records.values() if r.address and r is not rec}
        used |= self.pool.addresses() - {rec.address}
        address = self.network.allocate({ipaddress.IPv4Address(a) for a in used})
        # Held from here: another boot allocating while this attach runs in its thread (a
        # create beside the pool's refills) must not get the same address.
        rec.address = str(address)
        info = await asyncio.to_thread(self.network.attach, rec.id, pid, address)
        rec.address, rec.veth = info.address, info.veth
        if slot is None:
            rec.state = "running"
            self._save(rec)
            self._watch_init(rec)

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
            await self._teardown(rec, purge_home=purge)
        self._locks.pop(sid, None)

    async def _halt(self, rec: SandboxRecord) -> None:
        """Kill every process of the sandbox and release its cgroup and network."""
        self._unwatch_init(rec.id)
        for hook in self.on_halt:
            hook(rec.id)
        for session in [s for s in self.sessions.values() if s.sandbox_id == rec.id]:
            session.close()
            self.sessions.pop(session.id, None)
        if procfs.alive(rec.init_pid, rec.init_start):
            try:
                os.kill(rec.init_pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        # The learner's cgroup tree may be large: walked off the event loop. A process may
        # join after the kill (an exec helper or an exec's setup child the spawner started
        # just before): the cgroup is then busy, and killed again.
        for attempt in range(3):
            await asyncio.to_thread(self.cgroups.kill_all, rec.group)
            try:
                await asyncio.to_thread(self.cgroups.remove, rec.group)
                break
            except SandboxError as e:
                if e.reason != Reason.BUSY or attempt == 2:
                    raise
        await asyncio.to_thread(self.network.detach, rec.id)
        rec.init_pid = rec.init_start = None
        rec.address = rec.veth = None

    async def _teardown(self, rec: SandboxRecord, *, purge_home: bool) -> None:
        """Halt the sandbox and remove its volume (its home too if `purge_home`), uid
        claim and record."""
        await self._halt(rec)
        await self._delete_volume("sandboxes", rec.id)
        if purge_home and rec.home:
            await self._delete_volume("homes", rec.home)
        if rec.uid_block >= 0:
            self.uids.release(rec.uid_block, rec.id)
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
                if attempt == 49 or e.reason != Reason.BUSY:
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
            if rec.state == "running" and procfs.alive(rec.init_pid, rec.init_start):
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
                await self._teardown(rec, purge_home=False)
                cleaned.append(rec.id)
        live = set(self.records) | self.pool.ids()
        for name in self.cgroups.children(self.config.cgroup_prefix):
            if name not in live:
                group = f"{self.config.cgroup_prefix}/{name}"
                await asyncio.to_thread(self.cgroups.kill_all, group)
                await asyncio.to_thread(self.cgroups.remove, group)
                cleaned.append(f"cgroup:{name}")
        live_veths = {r.veth for r in self.records.values() if r.veth}
        for veth in await asyncio.to_thread(self.network.veths):
            if veth not in live_veths:
                await asyncio.to_thread(self.network.delete_veth, veth)
                cleaned.append(f"veth:{veth}")
        for name in self.storage.volumes("sandboxes"):
            if name not in live:
                await self._delete_volume("sandboxes", name)
                cleaned.append(f"volume:{name}")
        self.uids.prune(live)
        if adopted or cleaned:
            log.info("recovered: adopted %s, cleaned %s", adopted, cleaned)
        return {"adopted": adopted, "cleaned": cleaned}

    async def teardown_host(self) -> None:
        """Remove everything this daemon made: sandboxes, homes, bridge, firewall, pool mount."""
        self.preflight()
        await self.pool.drain()
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
            await asyncio.to_thread(self.cgroups.remove, self.config.cgroup_prefix)

    async def shutdown(self, *, destroy_all: bool = False) -> None:
        """Stop watching; sandboxes keep running unless destroy_all (tests, `--ephemeral`)."""
        await self.pool.drain()
        if destroy_all:
            for sid in list(self.records):
                await self.destroy(sid, purge=True)
        for sid in list(self._init_watch):
            self._unwatch_init(sid)
        for session in list(self.sessions.values()):
            session.close()

    def reap_storage(self) -> None:
        """Drop the btrfs qgroups of deleted volumes that the kernel's cleaner is done with."""
        self.storage.reap()

    # ------------------------------------------------------------------ exec

    async def exec(self, sid: str, req: ExecRequest, *, hold: bool = False) -> ExecSession:
        """Start a process in the sandbox; `hold`: it waits before its exec until a byte
        (spec.GO) is written to `session.handle.go` (a traced run)."""
        rec = self._running(sid)
        spec = ExecSpec(
            init_pid=rec.init_pid, init_start=rec.init_start,
            cgroup_files=self.cgroups.exec_procs_files(rec.group),
            argv=req.argv, tty=req.tty, user=req.user, cwd=req.cwd,
            env=req.env, rows=req.rows, cols=req.cols, hostname=rec.hostname, hold=hold)
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
            raise NotFound(f"no exec session {exec_id}", reason=Reason.NO_SUCH_EXEC)
        return s

    def forget_session(self, exec_id: str) -> None:
        s = self.sessions.pop(exec_id, None)
        if s is not None:
            self._sessions_by_pid.pop(s.handle.pid, None)
            s.close()

    def forget_idle_sessions(self, ttl: float = SESSION_TTL) -> None:
        """Forget the sessions that finished more than `ttl` seconds after they were made
        and that nobody watches."""
        now = time.time()
        for s in list(self.sessions.values()):
            if s.finished.is_set() and not s.attachments and now - s.created > ttl:
                self.forget_session(s.id)

    async def run(self, sid: str, req: ExecRequest, *, stdin: bytes = b"", timeout: float = 10.0,
                  limit: int = 1 << 20, trace: list[str] | None = None) -> dict:
        """Run a command to completion (for graders): exit code and bounded output; with
        `trace`, under the host's strace, and the calls it saw (`sandbox/tracing.py`)."""
        if not trace:
            session = await self.exec(sid, req)
            try:
                return await session.collect(stdin=stdin, timeout=timeout, limit=limit)
            finally:
                self.forget_session(session.id)
        tracer = Tracer(trace)  # finds the host's strace: without it nothing runs
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        session = await self.exec(sid, req, hold=True)
        h = session.handle
        try:
            root_pid = None
            try:
                if h.go is None:
                    raise SandboxError("the spawner did not hold the process for its tracer")
                if not h.exec_error:  # else it failed before it could wait: nothing to trace
                    root_pid = procfs.inside_pid(h.pid)
                    await tracer.attach(h.pid, max(0.1, deadline - loop.time()))
                    os.write(h.go, GO)
            finally:
                # Closed unwritten (attach failed), the process exits without its exec.
                if h.go is not None:
                    os.close(h.go)
                    h.go = None
            result = await session.collect(stdin=stdin, limit=limit,
                                           timeout=max(0.1, deadline - loop.time()))
            result["syscalls"], result["trace_truncated"] = await tracer.finish(h.pid, root_pid)
            return result
        finally:
            await tracer.stop()
            self.forget_session(session.id)

    # ------------------------------------------------------------------ host-side facts

    def stats(self, sid: str) -> dict:
        rec = self._running(sid)
        stats = self.cgroups.stats(rec.group)
        stats["disk"] = self.storage.usage("sandboxes", rec.id)
        stats["id"] = sid
        stats["time"] = time.time()
        return stats

    async def inspect(self, sid: str) -> InspectFacts:
        rec = self._running(sid)
        # Everything it reads is the learner's to multiply (cgroups, processes, network
        # namespaces): read in a thread, so that other requests are served meanwhile, and
        # bounded, so that the answer comes in bounded time.
        return await asyncio.to_thread(self._inspect, rec)

    def _inspect(self, rec: SandboxRecord) -> InspectFacts:
        cgroups, cgroups_cut = self.cgroups.tree(rec.group)
        truncated = ["cgroups"] if cgroups_cut else []
        # Its init first (its namespaces are the sandbox's own), then the oldest.
        pids = sorted(set().union(*(n["procs"] for n in cgroups)),
                      key=lambda pid: (pid != rec.init_pid, pid))
        if len(pids) > MAX_INSPECT_PROCESSES:
            pids, truncated = pids[:MAX_INSPECT_PROCESSES], truncated + ["processes"]
        procs: list[ProcessFacts] = []
        for pid in pids:
            facts = procfs.process_facts(pid, rec.group, rec.uid_base)
            # Only the sandbox's own: the spawner's exec helper (and an exec's setup child)
            # sit in its cgroup but outside its pid namespace, unseen inside.
            if facts and facts["pid"] is not None:
                procs.append(facts)
        netns_seen: dict[int, int] = {}  # inode -> a host pid in it
        for p in procs:
            ns = p["namespaces"].get("net")
            if ns and ns not in netns_seen:
                if len(netns_seen) == MAX_INSPECT_NETNS:
                    truncated.append("net_namespaces")
                    break
                netns_seen[ns] = p["host_pid"]
        sockets: list[SocketFacts] = []
        for ns, pid in netns_seen.items():
            try:
                sockets += [{**s, "netns": ns} for s in self.network.listening_sockets(pid)]
            except NotFound:
                continue  # it exited since its facts were read
        # Every network namespace a process of the sandbox is in, with its interfaces (a
        # learner's own namespaces too: graders see a veth they made, and its peer, from
        # the host), read together so that veth peers name each other's namespace.
        interfaces = self.network.interfaces(netns_seen)
        net_namespaces: list[NetNamespaceFacts] = [
            {"inode": ns, "host_pid": pid, "addresses": interfaces[ns]}
            for ns, pid in netns_seen.items() if ns in interfaces]
        init_net = next((p["namespaces"].get("net") for p in procs
                         if p["host_pid"] == rec.init_pid), None)
        if init_net in interfaces:
            addresses = interfaces[init_net]
        else:  # the init is gone (this raises NotFound) or its netns could not be read
            addresses = self.network.addresses(rec.init_pid)
        uts_namespaces = procfs.uts_hostnames(procs)
        init = next((p for p in procs if p["host_pid"] == rec.init_pid), None)
        containers, containers_cut = self._containers(rec, procs, init, sockets)
        if containers_cut:
            truncated.append("containers")
        return {
            "id": rec.id, "state": rec.state, "hostname": rec.hostname,
            "init_pid": rec.init_pid, "uid_base": rec.uid_base, "uid_count": UID_BLOCK,
            "cgroup_version": self.cgroups.version, "cgroup": rec.group,
            "processes": procs, "cgroups": cgroups,
            "sockets": sockets, "addresses": addresses,
            "address": rec.address, "limits": rec.limits, "disk": rec.disk,
            "net_namespaces": net_namespaces, "uts_namespaces": uts_namespaces,
            "containers": containers, "truncated": truncated,
        }

    def _containers(self, rec: SandboxRecord, procs: list[ProcessFacts],
                    init: ProcessFacts | None,
                    sockets: list[SocketFacts]) -> tuple[list[ContainerFacts], bool]:
        """The containers inside the sandbox (procfs.container_groups), each with its
        cgroup's limits and its network namespace's listening sockets; names and images
        from the engine's store, as labels."""
        groups, cut = procfs.container_groups(procs, init, MAX_INSPECT_CONTAINERS)
        labels = self._engine_labels(rec) if groups else {}
        init_ns = init["namespaces"] if init is not None else {}
        out: list[ContainerFacts] = []
        for g in groups:
            p = g.facts
            limits = self.cgroups.container_limits(rec.group, p["cgroups"])
            cid = None
            if p["cgroup"] is not None:
                m = _CONTAINER_ID_RE.search(p["cgroup"].rsplit("/", 1)[-1])
                cid = m.group(1) if m else None
            name, image = labels.get(cid, (None, None)) if cid else (None, None)
            net = p["namespaces"].get("net")
            out.append({
                "pid_namespace": g.inode, "level": g.level, "main": g.main,
                "processes": g.members, "namespaces": p["namespaces"],
                "new_namespaces": sorted(t for t, inode in p["namespaces"].items()
                                         if init_ns.get(t) != inode),
                "cgroup": p["cgroup"], "cgroups": p["cgroups"], "limits": limits,
                "oom_kills": limits.get("oom_kills"),
                "sockets": [s for s in sockets if s["netns"] == net],
                "id": cid, "name": name, "image": image,
            })
        return out, cut

    def _engine_labels(self, rec: SandboxRecord) -> dict[str, tuple[str | None, str | None]]:
        """Container id -> (name, image name) from podman's store inside the sandbox; {}
        where there is none or it is not what podman writes. Labels only: the sandbox's
        root may have written anything there."""
        try:
            data = self._in_root(rec, None, files.read_file, ENGINE_STORE, MAX_ENGINE_STORE)
            entries = json.loads(data)
        except (SandboxError, ValueError, RecursionError):
            # No store (no engine yet), too large, not a regular file, not JSON (or nested
            # deeper than the parser goes): no labels.
            return {}
        out: dict[str, tuple[str | None, str | None]] = {}
        if not isinstance(entries, list):
            return out
        for entry in entries[:MAX_INSPECT_CONTAINERS * 16]:
            if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
                continue
            names = entry.get("names")
            name = names[0] if isinstance(names, list) and names and \
                isinstance(names[0], str) else None
            image = None
            try:
                meta = json.loads(entry.get("metadata") or "{}")
            except (TypeError, ValueError):
                meta = {}
            if isinstance(meta, dict):
                image = meta.get("image-name") if isinstance(meta.get("image-name"), str) \
                    else None
                if name is None and isinstance(meta.get("name"), str):
                    name = meta["name"]
            out[entry["id"]] = (name, image)
        return out

    def port(self, sid: str, port: int) -> dict:
        """Where the host reaches TCP `port` of the sandbox, and whether it listens yet."""
        rec = self._running(sid)
        if not 1 <= port <= 65535:
            raise InvalidRequest("port must be between 1 and 65535", field="port")
        listening = any(s["port"] == port and s["proto"] == "tcp"
                        for s in self.network.listening_sockets(rec.init_pid))
        return {"host": rec.address, "port": port, "listening": listening}

    async def http_get(self, sid: str, port: int, path: str, *, timeout: float,
                       limit: int) -> HttpFacts:
        """GET `path` from TCP `port` at the sandbox's address, from the host: what a
        browser on the host gets from a port the learner published. The server is the
        learner's: the answer is bounded in bytes (`limit` of body, HTTP_HEAD_MAX of
        status and headers) and in time (`timeout` for all of it), and no redirect is
        followed."""
        rec = self._running(sid)
        if not 1 <= port <= 65535:
            raise InvalidRequest("port must be between 1 and 65535", field="port")
        if not isinstance(path, str) or not _HTTP_PATH_RE.fullmatch(path):
            raise InvalidRequest("path must start with '/' and hold at most 2048 printable "
                                 "ASCII characters without spaces", field="path")
        if not 0 < timeout <= HTTP_GET_MAX_TIMEOUT:
            raise InvalidRequest(f"timeout must be above 0 and at most {HTTP_GET_MAX_TIMEOUT} "
                                 "seconds", field="timeout")
        if not 0 <= limit <= HTTP_GET_MAX_BODY:
            raise InvalidRequest(f"limit must be from 0 to {HTTP_GET_MAX_BODY} bytes",
                                 field="limit")
        try:
            return await asyncio.wait_for(_http_get(rec.address, port, path, limit), timeout)
        except (OSError, ValueError, EOFError, asyncio.IncompleteReadError,
                asyncio.LimitOverrunError, TimeoutError) as e:
            # TimeoutError is also asyncio's (3.11+); ValueError: a line over HTTP_HEAD_MAX.
            raise Conflict(f"nothing answered HTTP on port {port} of sandbox {sid} within "
                           f"{timeout} s: {type(e).__name__}: {e}",
                           reason=Reason.NO_ANSWER) from None

    # ------------------------------------------------------------------ files (sandbox/files.py)

    async def read_file(self, sid: str, q: FileQuery) -> bytes:
        """A regular file of the sandbox, resolved in its init's root (or `q.pid`'s)."""
        rec = self._running(sid)
        return await asyncio.to_thread(self._in_root, rec, q.pid, files.read_file, q.path,
                                       q.limit or files.DEFAULT_LIMIT)

    async def list_dir(self, sid: str, q: FileQuery) -> list[dict]:
        rec = self._running(sid)
        return await asyncio.to_thread(self._in_root, rec, q.pid, files.list_dir, q.path)

    def root_fd(self, sid: str) -> int:
        """An O_PATH fd on the root directory of the running sandbox's init (the caller
        closes it): where paths inside are resolved from the host (`_root_fd`)."""
        return self._root_fd(self._running(sid), None)

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
            candidates = [p for p in self.cgroups.procs(rec.group) if procfs.inside_pid(p) == pid]
        for host_pid in candidates:
            try:
                proc = procfs.open_proc(host_pid)
            except (FileNotFoundError, ProcessLookupError):
                continue
            try:
                if pid is None:
                    ok = procfs.start_time_at(proc) == rec.init_start
                else:
                    ok = (procfs.inside_pid(host_pid, proc) == pid
                          and procfs.in_group(proc, rec.group))
                if ok:
                    return os.open("root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=proc)
            except (FileNotFoundError, ProcessLookupError):
                continue
            finally:
                os.close(proc)
        if pid is None:
            raise Conflict(f"sandbox {rec.id} has no running init; start it again",
                           reason=Reason.NOT_RUNNING)
        raise NotFound(f"no process {pid} in sandbox {rec.id}", reason=Reason.NO_SUCH_PROCESS)
