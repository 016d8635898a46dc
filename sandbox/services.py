"""The host services a daemon's sandboxes may reach: an image registry and a package proxy.

Container engines inside sandboxes pull images and install packages without any hub
or the internet: `docker pull nginx` and `FROM debian:bookworm` resolve to this
daemon's read-only registry (Debian's `docker-registry`), and `RUN apt-get install`
in a build goes through its package proxy (Debian's `apt-cacher-ng`, which fetches
Debian's packages once and serves them from its cache afterwards).

The sequence (`Services.start`, run by sandboxd after `Network.setup()`, so that the
gateway address exists; `Services.stop` at the daemon's exit):

1. Stop what an earlier daemon on this state dir left running (its pid files name the
   processes, checked by start time so that a recycled pid is never signalled).
2. Refresh the registry's storage (`services/registry`) from the one scripts/setup
   seeded (`config.images_src/registry`), when their inputs differ: a hard-linked copy
   where both lie on one filesystem, a plain copy elsewhere.
3. Start each service as an unprivileged user (`nobody` for the registry, which only
   reads; `apt-cacher-ng` for the proxy, which owns its cache), no_new_privs, with a
   parent-death signal so that neither outlives sandboxd, listening on the gateway
   address only (`config.REGISTRY_PORT`, `config.PROXY_PORT`): the firewall lets
   sandboxes reach these two ports there and nothing else of the host.
4. Wait until both accept connections.

The registry is read-only (`storage.maintenance.readonly`, delete disabled): a
sandbox's root may pull but never push, delete or overwrite what another sandbox pulls.
The proxy serves only Debian's repositories (`ForceManaged`: it forwards no other
URL), tunnels nothing (no CONNECT) and has no report page to act through.

What the registry serves is also the host's answer to "is the image in a learner's store
the registry's?": `read_registry` reads each tag's manifest digest, config digest and layer
digests from the storage (each blob checked against its digest) for `GET /v1/registry`.

A service whose program is not installed, or that does not come up, is left out with
a log line naming the cause: sandboxes without containers do not need it, so sandboxd
serves on (and the registry tests fail, loudly).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from .config import PROXY_PORT, REGISTRY_PORT, HostConfig
from .errors import SandboxError
from .protocol import RegistryImage

log = logging.getLogger("nslab.services")

INPUTS_STAMP = ".nslab-inputs"  # written by scripts/base-images into the seeded storage
READY_TIMEOUT = 15.0
# docker-registry's filesystem layout (distribution's storage driver): a repository is a
# directory with `_manifests`, a tag's manifest digest is in tags/TAG/current/link, and a
# blob's bytes in blobs/sha256/XX/HEX/data.
REGISTRY_V2 = Path("docker") / "registry" / "v2"
DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")
NAME_RE = re.compile(r"[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*")
TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
MAX_MANIFEST = 4 << 20  # a manifest or an image config is a few KiB: a bigger blob is no such thing
# registries.conf (sandbox/config.py) serves Docker Hub's names from the registry, so an
# engine inside stores what it pulled under docker.io/...
PULLED_AS = "docker.io"
DEBIAN_MIRROR = "http://deb.debian.org/debian"  # what scripts/base-images builds from


@dataclass
class Service:
    name: str
    program: str
    user: str
    port: int
    argv: list[str]  # after the program
    proc: subprocess.Popen | None = None


def _start_time(pid: int) -> str | None:
    """Field 22 of /proc/<pid>/stat (after the command, which may hold spaces)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return stat.rsplit(")", 1)[1].split()[19]


class Services:
    """This daemon's registry and package proxy, started and stopped with its bridge."""

    def __init__(self, config: HostConfig):
        self.config = config
        self.dir = config.services_dir
        self.address = str(config.gateway)
        self.services: list[Service] = []

    # -- configuration -------------------------------------------------------------

    def registry_config(self) -> str:
        # Paths relative to the working directory (see `_spawn`). The secret only signs
        # upload state, which a read-only registry never hands out; it is set so that
        # the registry does not warn on every start.
        return f"""version: 0.1
log: {{level: warn, formatter: text, accesslog: {{disabled: true}}}}
storage:
  filesystem: {{rootdirectory: registry}}
  delete: {{enabled: false}}
  maintenance:
    readonly: {{enabled: true}}
    uploadpurging: {{enabled: false}}
http:
  addr: "{self.address}:{REGISTRY_PORT}"
  secret: "{secrets.token_hex(16)}"
  headers: {{X-Content-Type-Options: [nosniff]}}
"""

    def _plan(self) -> list[Service]:
        # apt-cacher-ng wants absolute paths; /proc/self/cwd is one that, like a relative
        # path, needs no search permission on the state dir's parents (see `_spawn`).
        proxy = "/proc/self/cwd/proxy"
        return [
            Service("registry", "docker-registry", "nobody", REGISTRY_PORT,
                    ["serve", "registry.yml"]),
            Service("proxy", "apt-cacher-ng", "apt-cacher-ng", PROXY_PORT, [
                "-c", "/etc/apt-cacher-ng", "ForeGround=1",
                f"BindAddress={self.address}", f"Port={PROXY_PORT}",
                f"CacheDir={proxy}/cache", f"LogDir={proxy}/log",
                f"SocketPath={proxy}/acng.socket", "PidFile=",
                # Only the repositories it knows (Debian's, by its Remap lines), no
                # CONNECT tunnels, no report page (its maintenance actions).
                "ForceManaged=1", "PassThroughPattern=^$", "ReportPage=",
                # Debian's archive from the mirror its images name (the package's default
                # is the first of a mirror list, which may not be the one reachable).
                f"Remap-debrep=file:deb_mirror*.gz /debian ; {DEBIAN_MIRROR}/",
            ]),
        ]

    # -- start and stop ------------------------------------------------------------

    async def start(self) -> None:
        """Start the registry and the proxy on the gateway address; wait until they answer."""
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o711)
        self.stop_leftovers()
        began = time.monotonic()
        for service in self._plan():
            path = shutil.which(service.program)
            if path is None:
                log.warning("%s is not installed: sandboxes get no %s (run scripts/setup)",
                            service.program, service.name)
                continue
            try:
                if service.name == "registry":
                    await asyncio.to_thread(self._prepare_registry)
                else:
                    self._prepare_proxy(service.user)
                self._spawn(service, path)
            except KeyError:
                log.error("no user %r on this host: sandboxes get no %s (run scripts/setup)",
                          service.user, service.name)
                continue
            except (SandboxError, OSError) as e:
                log.error("starting the %s failed: %s; sandboxes get no %s", service.name,
                          getattr(e, "message", e), service.name)
                continue
            self.services.append(service)
        deadline = time.monotonic() + READY_TIMEOUT
        for service in list(self.services):
            try:
                await self._wait_ready(service, deadline)
            except SandboxError as e:
                # Sandboxes that run no containers do not need it: the daemon serves on.
                log.error("%s; sandboxes get no %s", e.message, service.name)
                self._end(service)
                self.services.remove(service)
        if self.services:
            log.info("%s listening on %s (ready in %.0f ms)",
                     ", ".join(f"{s.name} :{s.port}" for s in self.services), self.address,
                     (time.monotonic() - began) * 1000)

    def _prepare_registry(self) -> None:
        (self.dir / "registry.yml").write_text(self.registry_config())
        seeded = self.config.images_src / "registry"
        stamp = seeded / INPUTS_STAMP
        ours = self.dir / "registry"
        if not stamp.exists():
            log.warning("no seeded image registry in %s: sandboxes can pull nothing "
                        "(run scripts/setup)", seeded)
            ours.mkdir(exist_ok=True)
            return
        if (ours / INPUTS_STAMP).exists() and \
                (ours / INPUTS_STAMP).read_bytes() == stamp.read_bytes():
            return
        staging = self.dir / f".registry.{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        # The copy is never written (the registry is read-only and runs as nobody, and
        # the files are root's, mode 0644), so hard links share the seeded blobs.
        same_fs = os.stat(seeded).st_dev == os.stat(self.dir).st_dev
        cmd = ["cp", "-al" if same_fs else "-a", str(seeded), str(staging)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            shutil.rmtree(staging, ignore_errors=True)
            raise SandboxError(f"copying the image registry from {seeded} failed: "
                               f"{proc.stderr.strip()}")
        shutil.rmtree(ours, ignore_errors=True)
        os.rename(staging, ours)

    def _prepare_proxy(self, user: str) -> None:
        entry = pwd.getpwnam(user)
        for d in (self.dir / "proxy", self.dir / "proxy" / "cache", self.dir / "proxy" / "log"):
            d.mkdir(exist_ok=True)
            os.chown(d, entry.pw_uid, entry.pw_gid)
            os.chmod(d, 0o750)

    def _spawn(self, service: Service, path: str) -> None:
        entry = pwd.getpwnam(service.user)
        logfile = self.dir / f"{service.name}.log"
        # The working directory is the services' own, entered by root: the programs use
        # paths below it, so they need no search permission on the state dir's parents
        # (a test's state dir lies in pytest's private temporary directory).
        # setpriv (util-linux) drops to the service's user before the program starts;
        # --pdeathsig ends it with the daemon even if sandboxd is killed outright. It is
        # started from the daemon's main thread: the signal is sent when the thread that
        # forked it exits, and that one lives as long as sandboxd does.
        argv = ["setpriv", f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}",
                "--clear-groups", "--no-new-privs", "--inh-caps=-all",
                "--bounding-set=-all", "--pdeathsig=KILL", "--", path, *service.argv]
        with open(logfile, "ab") as out:
            service.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                            stderr=subprocess.STDOUT, cwd=self.dir,
                                            start_new_session=True, env={"PATH": "/usr/bin:/bin"})
        # Popen returns once the exec succeeded, so the process is there to be read.
        start = _start_time(service.proc.pid)
        (self.dir / f"{service.name}.pid").write_text(f"{service.proc.pid} {start}\n")

    async def _wait_ready(self, service: Service, deadline: float) -> None:
        while True:
            if service.proc.poll() is not None:
                raise SandboxError(
                    f"{service.program} ({service.name}) exited with {service.proc.returncode} "
                    f"at start: see {self.dir / (service.name + '.log')}")
            try:
                with socket.create_connection((self.address, service.port), timeout=1):
                    return
            except OSError:
                pass  # not listening yet; the deadline below bounds the wait
            if time.monotonic() > deadline:
                raise SandboxError(f"{service.program} ({service.name}) did not listen on "
                                   f"{self.address}:{service.port} within {READY_TIMEOUT:.0f} s")
            await asyncio.sleep(0.05)

    def stop(self) -> None:
        """Stop the services this object started (TERM, then KILL after 5 s); wait for each."""
        for service in self.services:
            self._end(service)
        self.services = []

    def _end(self, service: Service) -> None:
        proc = service.proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        (self.dir / f"{service.name}.pid").unlink(missing_ok=True)

    def stop_leftovers(self) -> None:
        """Kill services an earlier daemon on this state dir started and did not stop."""
        for pidfile in self.dir.glob("*.pid"):
            try:
                pid_text, start = pidfile.read_text().split()
                pid = int(pid_text)
            except ValueError:
                pidfile.unlink()
                continue
            if _start_time(pid) == start:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                for _ in range(100):
                    if _start_time(pid) != start:
                        break
                    time.sleep(0.02)
            pidfile.unlink()

    def registry_images(self) -> list[RegistryImage]:
        """Every tag the registry serves, with its manifest digest (`read_registry`)."""
        return read_registry(self.dir / "registry")

    def running(self) -> dict[str, int]:
        """Service name -> pid of those now running (for `info` and the tests)."""
        return {s.name: s.proc.pid for s in self.services
                if s.proc is not None and s.proc.poll() is None}


def read_registry(root: Path) -> list[RegistryImage]:
    """The tags of the registry storage at `root` and their manifests' digests, sorted by
    reference; [] when nothing was seeded. Read from the files docker-registry serves, on
    the host: the truth a learner's pulled image is compared with (`GET /v1/registry`).
    A tag whose link or manifest blob is missing or malformed is left out (the registry
    would not serve it either)."""
    repos = root / REGISTRY_V2 / "repositories"
    blobs = root / REGISTRY_V2 / "blobs" / "sha256"
    found: list[RegistryImage] = []
    if not repos.is_dir():
        return found
    for manifests in sorted(repos.glob("**/_manifests")):
        repository = manifests.parent.relative_to(repos).as_posix()
        tags = manifests / "tags"
        if not NAME_RE.fullmatch(repository) or not tags.is_dir():
            continue
        for tag_dir in sorted(tags.iterdir()):
            try:
                digest = (tag_dir / "current" / "link").read_text().strip()
            except (FileNotFoundError, NotADirectoryError):
                continue
            if not TAG_RE.fullmatch(tag_dir.name) or not DIGEST_RE.fullmatch(digest):
                continue
            manifest = _blob_json(blobs, digest)
            if not isinstance(manifest, dict):
                continue
            media_type = manifest.get("mediaType")
            config = manifest.get("config")
            config_digest = config.get("digest") if isinstance(config, dict) else None
            config_digest = config_digest if isinstance(config_digest, str) and \
                DIGEST_RE.fullmatch(config_digest) else None
            # A manifest list names no config; an image's config lists its layers' contents.
            image_config = _blob_json(blobs, config_digest) if config_digest else None
            rootfs = image_config.get("rootfs") if isinstance(image_config, dict) else None
            diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
            found.append(RegistryImage(
                repository=repository, tag=tag_dir.name,
                reference=f"{PULLED_AS}/{repository}:{tag_dir.name}", digest=digest,
                media_type=media_type if isinstance(media_type, str) else None,
                config_digest=config_digest,
                diff_ids=[d for d in diff_ids if isinstance(d, str)]
                if isinstance(diff_ids, list) else []))
    return sorted(found, key=lambda i: i["reference"])


def _blob_json(blobs: Path, digest: str):
    """The JSON of a small blob (a manifest, an image config), checked against its digest;
    None if it is missing, too big, altered or not JSON."""
    try:
        with open(blobs / digest[7:9] / digest[7:] / "data", "rb") as f:
            raw = f.read(MAX_MANIFEST + 1)
    except FileNotFoundError:
        return None
    if len(raw) > MAX_MANIFEST or "sha256:" + hashlib.sha256(raw).hexdigest() != digest:
        log.warning("registry: blob %s does not match its digest", digest)
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


__all__ = ["Services", "Service", "read_registry"]
