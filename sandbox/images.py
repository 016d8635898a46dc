"""Root filesystem images: the read-only lower layer of every sandbox's overlay.

`host` is instant: a small skeleton (merged-/usr symlinks, empty mount points, a
generated /etc that holds no secret and no identity of the host) over which the engine
binds the host's own /usr read-only. `debian` is a full Debian rootfs built with
mmdebstrap (or debootstrap) for lessons that need a system of their own.

An image lives in `images_dir/<name>/`: `image.json` says which `rootfs-<id>/` is
current. A rebuild makes a new `rootfs-<id>` under a temporary name, renames it into
place and then switches `image.json` (both atomic), so a running sandbox keeps the
lower layer it was started with; an old rootfs is removed only once no mount on the
host uses it any more.

The `host` image's /etc is a copy, so it is rebuilt whenever what it is made from changes:
at daemon start (`ensure_host` compares a fingerprint of every copied entry) and, between
starts, whenever a package install or an alternatives switch has touched the host
(`host_stale` compares the stat of `HOST_STAMP_PATHS`, cheap enough for every create).
Its /etc also carries a containers.conf for a container engine inside (`containers_conf`),
and host commands that would shadow ours inside (`shadowing_paths`: a hand-installed
/usr/local/bin/docker before podman-docker's /usr/bin/docker) are hidden by the engine
with a whiteout in each sandbox's own upper dir.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import resource
import secrets
import shutil
import stat
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .config import REGISTRIES_CONF, REGISTRIES_CONF_PATH, HostConfig
from .errors import HostUnsupported, InvalidRequest, NotFound, SandboxError
from .protocol import Reason

Progress = Callable[[float, str], None]

HOST_IMAGE_VERSION = 2  # bump when the skeleton or the generated /etc changes
IMAGE_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
LEARNER_UID = 1000
SHADOW_GID = 42

# What a lesson needs inside a full Debian image. gcc is left out (about 200 MB);
# pass `packages=` to add it.
DEBIAN_PACKAGES = ("bash", "coreutils", "procps", "util-linux", "iproute2", "iputils-ping",
                   "curl", "ca-certificates", "python3", "stress-ng", "nginx-light",
                   "vim-tiny", "nano", "less")
DEFAULT_MIRROR = "http://deb.debian.org/debian"

# Directories of the host skeleton and their modes; symlinks below.
SKELETON_DIRS = {
    "usr": 0o755, "dev": 0o755, "proc": 0o555, "sys": 0o555, "tmp": 0o1777, "root": 0o700,
    "home": 0o755, "run": 0o755, "run/lock": 0o1777, "var": 0o755, "var/tmp": 0o1777,
    "var/log": 0o755, "var/lib": 0o755, "var/cache": 0o755, "var/spool": 0o755,
    "var/mail": 0o2775, "var/opt": 0o755, "var/lib/nginx": 0o755, "var/log/nginx": 0o755,
    "opt": 0o755, "srv": 0o755, "mnt": 0o755, "media": 0o755, "etc": 0o755,
}
SKELETON_LINKS = {"var/run": "/run", "var/lock": "/run/lock"}
# What dpkg and update-alternatives touch on every install, removal or switch: a change in
# their stat means the host image's /etc may be out of date.
HOST_STAMP_PATHS = ("/var/lib/dpkg/status", "/etc", "/etc/alternatives")
# Commands the sandbox must find in /usr/bin even where the host has another one earlier
# in PATH (/usr/local/bin/docker, a Docker CLI installed by hand, would shadow
# podman-docker's `docker`, which talks to the engine inside).
SHADOWED_COMMANDS = ("docker",)
NPROC = 32768  # RLIMIT_NPROC of a container inside (containers_conf)
SHADOWING_DIRS = ("usr/local/sbin", "usr/local/bin", "usr/sbin")
# Docker's `rm -f` kills a running container at once; podman's stops it as `stop` does,
# waiting the 10 s stop timeout for a PID 1 that ignores SIGTERM (a shell loop, `sleep`:
# measured 10.9-13.1 s per `docker rm -f` here). This `docker`, first in PATH inside,
# makes `rm` kill at once and leaves every other command to podman-docker's.
DOCKER = "/usr/bin/docker"
DOCKER_SHIM_PATH = "usr/local/sbin/docker"
DOCKER_SHIM = f"""#!/bin/sh
# Written by nslab: `docker rm -f` kills at once, as Docker's does (podman's waits out the
# stop timeout). Everything else is podman-docker's {DOCKER}.
if [ "$1" = rm ] || [ "$1 $2" = "container rm" ]; then
  [ "$1" = container ] && shift
  shift
  for arg in "$@"; do
    case "$arg" in
      --) break ;;
      # podman refuses --time without --force: only a forced rm gets it.
      --force|--force=true) exec {DOCKER} rm --time 0 "$@" ;;
      --*) ;;
      -*f*) exec {DOCKER} rm --time 0 "$@" ;;
    esac
  done
  exec {DOCKER} rm "$@"
fi
exec {DOCKER} "$@"
"""
# Top-level directories that merged-/usr systems make symlinks into /usr.
USR_MERGED = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")

# /etc entries never copied from the host: secrets, the host's identity, files the
# image generates itself, and backups (name-). Any file or directory that is not
# world-readable is left out too, and so is anything mounted over /etc.
ETC_SKIP = {
    "shadow", "gshadow", "passwd", "group", "subuid", "subgid", "machine-id", "hostname",
    "hosts", "resolv.conf", "sudoers", "sudoers.d", ".pwd.lock", "ssl/private",
    "apt/auth.conf", "apt/auth.conf.d", "NetworkManager/system-connections",
    "wireguard", "ppp/chap-secrets", "ppp/pap-secrets", "krb5.keytab", ".git", ".etckeeper",
}
ETC_SKIP_PATTERNS = (re.compile(r"(^|/)[^/]*-$"), re.compile(r"^ssh/ssh_host_"))


@dataclass
class Image:
    name: str
    rootfs: Path                      # the read-only lower layer
    binds: list[tuple[str, str]]      # (host path, path inside), bound read-only, id-shifted
    created: float
    size_bytes: int
    description: str
    extra: dict = field(default_factory=dict, repr=False)

    def to_json(self) -> dict:
        return {"name": self.name, "rootfs": str(self.rootfs),
                "binds": [list(b) for b in self.binds], "created": self.created,
                "size_bytes": self.size_bytes, "description": self.description}


# --- the generated /etc ---------------------------------------------------------------

PASSWD = [
    ("root", 0, 0, "root", "/root", "/bin/bash"),
    ("daemon", 1, 1, "daemon", "/usr/sbin", "/usr/sbin/nologin"),
    ("bin", 2, 2, "bin", "/bin", "/usr/sbin/nologin"),
    ("sys", 3, 3, "sys", "/dev", "/usr/sbin/nologin"),
    ("sync", 4, 65534, "sync", "/bin", "/bin/sync"),
    ("www-data", 33, 33, "www-data", "/var/www", "/usr/sbin/nologin"),
    ("nobody", 65534, 65534, "nobody", "/nonexistent", "/usr/sbin/nologin"),
    ("learner", LEARNER_UID, LEARNER_UID, "Learner", "/home/learner", "/bin/bash"),
]
GROUPS = [("root", 0), ("daemon", 1), ("bin", 2), ("sys", 3), ("adm", 4), ("tty", 5),
          ("disk", 6), ("www-data", 33), ("shadow", SHADOW_GID), ("users", 100),
          ("nogroup", 65534), ("learner", LEARNER_UID)]

HOSTS = """\
# Generated by nslab; the engine writes each sandbox's own copy.
127.0.0.1\tlocalhost
127.0.1.1\tsandbox
::1\tlocalhost ip6-localhost ip6-loopback
ff02::1\tip6-allnodes
ff02::2\tip6-allrouters
"""
RESOLV_CONF = """\
# Generated by nslab. Sandboxes have no network egress, so no DNS server is set.
"""


def _write(path: Path, text: str, mode: int = 0o644, gid: int = 0) -> None:
    path.write_text(text)
    os.chown(path, 0, gid)
    os.chmod(path, mode)


def write_identity(etc: Path, *, merge: bool = False) -> None:
    """Write the accounts, hosts, hostname, resolv.conf and an empty machine-id into `etc`.

    With `merge`, keep the accounts a distribution already has and add the missing ones.
    """
    days = int(time.time() // 86400)
    users, groups = PASSWD, GROUPS
    if merge:
        have = {line.split(":", 1)[0] for line in (etc / "passwd").read_text().splitlines()}
        have_ids = {line.split(":")[2] for line in (etc / "passwd").read_text().splitlines()}
        users = [u for u in PASSWD if u[0] not in have and str(u[1]) not in have_ids]
        have = {line.split(":", 1)[0] for line in (etc / "group").read_text().splitlines()}
        have_ids = {line.split(":")[2] for line in (etc / "group").read_text().splitlines()}
        groups = [g for g in GROUPS if g[0] not in have and str(g[1]) not in have_ids]

    def emit(name: str, lines: list[str], mode: int, gid: int = 0) -> None:
        old = (etc / name).read_text() if merge and (etc / name).exists() else ""
        _write(etc / name, old + "".join(line + "\n" for line in lines), mode, gid)

    emit("passwd", [f"{n}:x:{u}:{g}:{gecos}:{home}:{shell}"
                    for n, u, g, gecos, home, shell in users], 0o644)
    emit("group", [f"{n}:x:{g}:" for n, g in groups], 0o644)
    # Locked passwords: tools that read shadow work, nobody can log in with one.
    emit("shadow", [f"{n}:{'!' if n == 'learner' else '*'}:{days}:0:99999:7:::"
                    for n, *_ in users], 0o640, SHADOW_GID)
    emit("gshadow", [f"{n}:*::" for n, _ in groups], 0o640, SHADOW_GID)
    for name in ("hosts", "resolv.conf", "hostname", "machine-id"):
        if (etc / name).is_symlink():
            (etc / name).unlink()
    _write(etc / "hosts", HOSTS)
    _write(etc / "hostname", "sandbox\n")
    _write(etc / "resolv.conf", RESOLV_CONF)
    _write(etc / "machine-id", "", 0o444)


def etc_mount_points() -> set[str]:
    """Paths under /etc (relative) that something is mounted on, e.g. a container runtime's
    /etc/hosts; they belong to the host's runtime, not to its system."""
    found = set()
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), line.split()[4])
            if point.startswith("/etc/"):
                found.add(point[len("/etc/"):])
    return found


def _etc_skipped(rel: str, st: os.stat_result, mounts: set[str]) -> bool:
    if rel in ETC_SKIP or rel in mounts or any(p.search(rel) for p in ETC_SKIP_PATTERNS):
        return True
    if stat.S_ISLNK(st.st_mode):
        return False
    if stat.S_ISDIR(st.st_mode):
        return (st.st_mode & 0o005) != 0o005  # not world-listable: root's business only
    if stat.S_ISREG(st.st_mode):
        return not st.st_mode & 0o004  # 0600, 0640, ...: secrets or root-only
    return True  # sockets, fifos, devices


def walk_etc(src: Path = Path("/etc")):
    """(relative path, lstat) of every entry of the host's /etc that the image copies."""
    mounts = etc_mount_points()
    for dirpath, dirnames, filenames in os.walk(src):
        base = os.path.relpath(dirpath, src)
        base = "" if base == "." else base + "/"
        for name in sorted(dirnames) + sorted(filenames):
            rel = base + name
            st = os.lstat(os.path.join(dirpath, name))
            skipped = _etc_skipped(rel, st, mounts)
            if name in dirnames and (skipped or stat.S_ISLNK(st.st_mode)):
                dirnames.remove(name)  # os.walk must not go in
            if not skipped:
                yield rel, st


def copy_etc(dst: Path, src: Path = Path("/etc")) -> None:
    for rel, st in walk_etc(src):
        target = dst / rel
        if stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(src / rel), target)
        elif stat.S_ISDIR(st.st_mode):
            target.mkdir()
            os.chmod(target, stat.S_IMODE(st.st_mode) & 0o1777)
        else:
            shutil.copyfile(src / rel, target, follow_symlinks=False)
            os.chmod(target, stat.S_IMODE(st.st_mode) & 0o777)  # no setuid/setgid
        # Everything belongs to host root; the engine shifts ids when it mounts.


def host_layout() -> tuple[dict[str, str], list[tuple[str, str]]]:
    """The host's top-level /usr links to replicate, and the directories to bind."""
    links, binds = {}, [("/usr", "usr")]
    for name in USR_MERGED:
        host = Path("/") / name
        if host.is_symlink():
            links[name] = os.readlink(host)
        elif host.is_dir():
            binds.append((str(host), name))  # not merged-/usr: bind it beside /usr
    return links, binds


def containers_conf(cgroup_root: Path = Path("/sys/fs/cgroup")) -> str:
    """containers.conf for an engine inside a sandbox.

    runc on cgroup v1: crun 1.8 refuses a hybrid host whose v2 hierarchy has controllers
    (nslab/bench/podman.py), and runc is what was measured inside. No systemd inside:
    cgroupfs and a file event log. The sandbox's hard nofile limit is spec.MAX_OPEN_FILES,
    so podman's default of 1048576 would fail setrlimit; Docker's own default is 1024.
    Likewise podman's nproc of 1048576: the sandbox inherits the daemon's hard limit, which
    only CAP_SYS_RESOURCE in the host's user namespace may raise; runc was refused even that
    limit itself here, and 32768 (what podman asks of a rootless host) worked. Neither
    binds: the sandbox's pids limit is lower.
    No session keyring per container: the sandbox's seccomp filter refuses keyctl (keyrings
    are not namespaced), and runc gives up on anything but ENOSYS there."""
    v2 = (cgroup_root / "cgroup.controllers").exists()
    runtime = "" if v2 else 'runtime = "runc"\n'
    conmon = f'conmon_path = ["/{CONMON_WRAPPER_PATH}"]\n' if Path(CONMON).exists() else ""
    ulimits = ['"nofile=1024:1024"']
    nproc = resource.getrlimit(resource.RLIMIT_NPROC)[1]
    nproc = NPROC if nproc == resource.RLIM_INFINITY else min(nproc, NPROC)
    ulimits.append(f'"nproc={nproc}:{nproc}"')
    return ("# Generated by nslab for a container engine inside a sandbox.\n"
            "[containers]\n"
            f"default_ulimits = [{', '.join(ulimits)}]\n"
            "keyring = false\n"
            "\n[engine]\n"
            'cgroup_manager = "cgroupfs"\n'
            'events_logger = "file"\n'
            + runtime + conmon)


# conmon creates its "oom" file in its working directory, while podman before 5.2 starts it
# wherever `docker run` was typed and looks for the file in the container's bundle
# (containers/conmon#504, fixed by containers/podman#23243): `docker inspect` said
# OOMKilled=false after every OOM kill (Debian's podman 4.3 + conmon 2.1.6, measured) and
# left a stray `oom` file in the learner's directory. Start conmon in the bundle instead.
CONMON = "/usr/bin/conmon"
CONMON_WRAPPER_PATH = "etc/containers/nslab-conmon"
CONMON_WRAPPER = f"""#!/bin/sh
# Generated by nslab: runs conmon in the container's bundle (-b) so that its "oom" file is
# where podman reads it (containers/conmon#504).
prev=
for arg in "$@"; do
  case "$prev" in -b|--bundle) cd "$arg" 2>/dev/null || true ;; esac
  case "$arg" in --bundle=*) cd "${{arg#--bundle=}}" 2>/dev/null || true ;; esac
  prev=$arg
done
exec {CONMON} "$@"
"""


def shadowing_paths(root: Path = Path("/")) -> list[str]:
    """Paths (relative to /) of host commands that would shadow `SHADOWED_COMMANDS` in
    /usr/bin inside a sandbox; only where /usr/bin has one."""
    out = []
    for name in SHADOWED_COMMANDS:
        if not os.path.lexists(root / "usr/bin" / name):
            continue
        out += [f"{d}/{name}" for d in SHADOWING_DIRS if os.path.lexists(root / d / name)]
    return out


def docker_shim() -> str | None:
    """The `docker` that makes `rm -f` Docker's (DOCKER_SHIM), where podman-docker's is."""
    return DOCKER_SHIM if os.path.exists(DOCKER) else None


def host_stamp() -> tuple:
    """(inode, size, mtime) of each of `HOST_STAMP_PATHS` (None where absent)."""
    out = []
    for path in HOST_STAMP_PATHS:
        try:
            st = os.stat(path)
            out.append((st.st_ino, st.st_size, st.st_mtime_ns))
        except FileNotFoundError:
            out.append(None)
    return tuple(out)


def host_inputs() -> str:
    """A fingerprint of everything the host image is made from."""
    h = hashlib.sha256(f"v{HOST_IMAGE_VERSION}".encode())
    h.update(containers_conf().encode())
    h.update(REGISTRIES_CONF.encode())
    h.update(CONMON_WRAPPER.encode())
    links, binds = host_layout()
    h.update(json.dumps([links, binds], sort_keys=True).encode())
    for rel, st in walk_etc():
        link = os.readlink(Path("/etc") / rel) if stat.S_ISLNK(st.st_mode) else ""
        h.update(f"{rel}\0{st.st_mode}\0{st.st_size}\0{st.st_mtime_ns}\0{link}\n".encode())
    return h.hexdigest()


def build_host_rootfs(root: Path) -> list[tuple[str, str]]:
    """Make the host skeleton in the empty directory `root`; returns the binds it needs."""
    links, binds = host_layout()
    os.chmod(root, 0o755)
    for rel, mode in SKELETON_DIRS.items():
        (root / rel).mkdir(parents=True, exist_ok=True)
        os.chmod(root / rel, mode)
    for rel, target in {**links, **SKELETON_LINKS}.items():
        os.symlink(target, root / rel)
    for _host, inside in binds:
        (root / inside).mkdir(exist_ok=True)  # mount points for the binds
    copy_etc(root / "etc")
    write_identity(root / "etc")
    (root / "etc/containers").mkdir(mode=0o755, exist_ok=True)
    _write(root / "etc/containers/containers.conf", containers_conf())
    _write(root / CONMON_WRAPPER_PATH, CONMON_WRAPPER, mode=0o755)
    # `docker pull nginx`, `FROM debian:bookworm`: Docker Hub's names resolve to the
    # daemon's own read-only registry (sandbox/services.py).
    (root / "etc" / REGISTRIES_CONF_PATH).parent.mkdir(parents=True, exist_ok=True)
    _write(root / "etc" / REGISTRIES_CONF_PATH, REGISTRIES_CONF)
    # podman-docker's `docker` prints a notice on every command unless this exists: the
    # document's commands should print what Docker prints.
    _write(root / "etc/containers/nodocker", "")
    home = root / "home" / "learner"
    home.mkdir()
    os.chown(home, LEARNER_UID, LEARNER_UID)
    os.chmod(home, 0o755)
    return binds


def du(path: Path) -> int:
    total = 0
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
    return total


def rmtree(path: Path) -> None:
    """Remove a tree that may hold read-only or immutable-looking directories of a rootfs."""
    def retry(func, p, exc):
        if isinstance(exc, PermissionError):
            os.chmod(os.path.dirname(p), 0o700)
            func(p)
        elif not isinstance(exc, FileNotFoundError):
            raise exc
    shutil.rmtree(path, onexc=retry) if sys.version_info >= (3, 12) else \
        shutil.rmtree(path, onerror=lambda f, p, ei: retry(f, p, ei[1]))


def paths_in_use(names: set[str]) -> set[str]:
    """Which of these directory names appear in any mount on the host (any mount namespace).

    An overlay names its lower dir in its options; a bind shows its root.
    """
    used, seen_ns = set(), set()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            ns = os.stat(f"/proc/{pid}/ns/mnt").st_ino
            if ns in seen_ns:
                continue
            seen_ns.add(ns)
            with open(f"/proc/{pid}/mountinfo") as f:
                text = f.read()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        used |= {n for n in names if n in text}
    return used


def default_mirror(suite: str, sources: Path = Path("/etc/apt")) -> str:
    """The host's Debian mirror for `suite`, from sources.list(.d), else deb.debian.org."""
    files = [sources / "sources.list", *sorted((sources / "sources.list.d").glob("*"))]
    for path in files:
        try:
            text = path.read_text()
        except (FileNotFoundError, IsADirectoryError, PermissionError, UnicodeDecodeError):
            continue
        if path.suffix == ".sources":  # deb822
            for stanza in re.split(r"\n\s*\n", text):
                fields = dict(re.findall(r"^([A-Za-z-]+):\s*(.*)$", stanza, re.M))
                if "deb" in fields.get("Types", "").split() and \
                        suite in fields.get("Suites", "").split() and fields.get("URIs"):
                    return fields["URIs"].split()[0]
        else:
            for line in text.splitlines():
                m = re.match(r"^\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)", line)
                if m and m.group(2) == suite:
                    return m.group(1)
    return DEFAULT_MIRROR


class BootstrapProgress:
    """Turns mmdebstrap's (or debootstrap's) output into (fraction, message) calls."""

    # (line prefix, where that stage starts, label); a stage ends where the next starts.
    STAGES = {
        "mmdebstrap": [
            ("I: running apt-get update", 0.02, "reading the package index"),
            ("I: downloading packages", 0.06, "downloading essential packages"),
            ("I: extracting archives", 0.25, "extracting"),
            ("I: installing essential packages", 0.30, "installing essential packages"),
            ("I: installing remaining packages", 0.55, "installing lesson tools"),
            ("I: cleaning package lists", 0.97, "cleaning up"),
            ("I: success", 0.98, "bootstrapped"),
        ],
        "debootstrap": [
            ("I: Retrieving Release", 0.02, "reading the package index"),
            ("I: Retrieving ", 0.06, "downloading packages"),
            ("I: Extracting ", 0.35, "extracting"),
            ("I: Installing core packages", 0.40, "installing core packages"),
            ("I: Configuring required packages", 0.60, "configuring packages"),
            ("I: Base system installed successfully", 0.98, "bootstrapped"),
        ],
    }
    # Per package, apt prints one "Get:" line, then dpkg "Unpacking" and "Setting up".
    STEP = re.compile(r"^(?:Get:\d+ \S+ \S+ \S+ (\S+)|Unpacking (\S+)|Setting up (\S+))")
    NEWLY = re.compile(r"^\d+ upgraded, (\d+) newly installed")

    def __init__(self, report: Progress | None, tool: str = "mmdebstrap"):
        self.report = report or (lambda fraction, message: None)
        self.stages = self.STAGES[tool]
        self.start, self.end, self.label = 0.0, 0.02, "starting"
        self.total = self.done = self.essential = 0
        self.fraction = 0.0

    def feed(self, line: str) -> None:
        for i, (prefix, start, label) in enumerate(self.stages):
            if line.startswith(prefix):
                if label != self.label:
                    following = [s for _, s, _ in self.stages[i + 1:]]
                    self.start, self.end, self.label = start, min(following, default=1.0), label
                    self.done = 0
                    # The essential packages were counted when they were downloaded.
                    self.total = 2 * self.essential if label.startswith("installing ess") else 0
                    self._emit(start, label)
                return
        m = self.NEWLY.match(line)
        if m:
            count = int(m.group(1))
            if self.label.startswith("downloading"):
                self.essential, self.total = count, count
            else:
                self.total = 3 * count  # download, unpack, set up
            return
        m = self.STEP.match(line)
        if m and self.total:
            self.done += 1
            package = next(g for g in m.groups() if g)
            part = min(self.done / self.total, 1.0)
            self._emit(self.start + (self.end - self.start) * part, f"{self.label}: {package}")

    def _emit(self, fraction: float, message: str) -> None:
        self.fraction = max(self.fraction, fraction)  # never go backwards
        self.report(self.fraction, message)


# --- the store ------------------------------------------------------------------------


class ImageStore:
    """The images of one daemon, under `config.images_dir`."""

    def __init__(self, config: HostConfig):
        self.config = config
        self.root = config.images_dir
        self._host_stamp: tuple | None = None  # host_stamp() when ensure_host last looked

    def _dir(self, name: str) -> Path:
        if not isinstance(name, str) or not IMAGE_NAME_RE.fullmatch(name):
            raise InvalidRequest(f"image name {name!r} must be 1-64 characters of a-z, 0-9, "
                                 "'_', '.' and '-'", field="image")
        return self.root / name

    @contextmanager
    def _locked(self, name: str):
        d = self._dir(name)
        d.mkdir(parents=True, exist_ok=True)
        with open(d / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one build of an image at a time
            yield d

    @staticmethod
    def _read_meta(d: Path) -> dict | None:
        try:
            meta = json.loads((d / "image.json").read_text())
        except FileNotFoundError:
            return None
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None  # a damaged record: treat the image as absent, a build rewrites it
        rootfs = meta.get("rootfs") if isinstance(meta, dict) else None
        if not isinstance(rootfs, str) or not re.fullmatch(r"rootfs-[0-9a-f]+", rootfs) \
                or not (d / rootfs).is_dir():
            return None
        return meta

    @staticmethod
    def _image(d: Path, meta: dict) -> Image:
        return Image(name=meta["name"], rootfs=d / meta["rootfs"],
                     binds=[tuple(b) for b in meta["binds"]], created=meta["created"],
                     size_bytes=meta["size_bytes"], description=meta["description"],
                     extra={k: v for k, v in meta.items() if k not in (
                         "name", "rootfs", "binds", "created", "size_bytes", "description")})

    def _install(self, d: Path, built: Path, meta: dict) -> Image:
        """Rename the finished `built` rootfs into place and make it the current one."""
        rootfs = f"rootfs-{secrets.token_hex(6)}"
        os.rename(built, d / rootfs)
        meta = {**meta, "rootfs": rootfs, "created": time.time(), "size_bytes": du(d / rootfs)}
        tmp = d / f".image.json.{os.getpid()}"
        tmp.write_text(json.dumps(meta, indent=2) + "\n")
        os.rename(tmp, d / "image.json")
        self._prune(d, keep=rootfs)
        return self._image(d, meta)

    @staticmethod
    def _prune(d: Path, keep: str) -> None:
        """Remove old rootfs versions no mount uses, and what failed builds left behind."""
        old = {p.name for p in d.iterdir()
               if p.name != keep and (p.name.startswith("rootfs-") or p.name.startswith(".build-"))}
        for name in old - paths_in_use(old):
            rmtree(d / name)

    # host

    def host_stale(self) -> bool:
        """Whether the host may have changed since `ensure_host` last looked (cheap)."""
        return host_stamp() != self._host_stamp

    def ensure_host(self) -> Image:
        """The `host` image; (re)built when missing or when the host's inputs changed."""
        # Before the fingerprint: a change made while it is taken is seen next time.
        self._host_stamp = host_stamp()
        inputs = host_inputs()
        d = self._dir("host")
        meta = self._read_meta(d)
        if meta and meta.get("inputs") == inputs:
            return self._image(d, meta)
        with self._locked("host") as d:
            meta = self._read_meta(d)
            if meta and meta.get("inputs") == inputs:  # built meanwhile
                return self._image(d, meta)
            built = d / f".build-{secrets.token_hex(6)}"
            built.mkdir()
            try:
                binds = build_host_rootfs(built)
            except BaseException:
                rmtree(built)
                raise
            return self._install(d, built, {
                "name": "host", "binds": binds, "inputs": inputs, "version": HOST_IMAGE_VERSION,
                "description": "the host's own /usr, read-only, with a generated /etc"})

    # lookups

    def get(self, name: str) -> Image:
        d = self._dir(name)
        meta = self._read_meta(d)
        if meta is None:
            names = ", ".join(i.name for i in self.list()) or "none yet"
            raise NotFound(f"image {name!r} does not exist; available: {names}", field="image",
                           reason=Reason.NO_SUCH_IMAGE)
        return self._image(d, meta)

    def list(self) -> list[Image]:
        images = []
        if self.root.is_dir():
            for d in sorted(self.root.iterdir()):
                meta = self._read_meta(d) if IMAGE_NAME_RE.fullmatch(d.name) else None
                if meta is not None:
                    images.append(self._image(d, meta))
        return images

    # debian

    def build_debian(self, progress: Progress | None = None, suite: str = "bookworm",
                     mirror: str | None = None,
                     packages: tuple[str, ...] = DEBIAN_PACKAGES) -> Image:
        """Build the `debian` image: a full Debian rootfs with the lesson tools (minutes)."""
        if not re.fullmatch(r"[a-z][a-z0-9-]*", suite):
            raise InvalidRequest(f"suite {suite!r} is not a Debian suite name", field="suite")
        if any(not re.fullmatch(r"[a-z0-9][a-z0-9+.-]+", p) for p in packages):
            raise InvalidRequest("package names must be Debian package names", field="packages")
        mirror = mirror or default_mirror(suite)
        report = progress or (lambda fraction, message: None)
        tool = self._bootstrap_tool(report)
        tracker = BootstrapProgress(report, tool)
        with self._locked("debian") as d:
            built = d / f".build-{secrets.token_hex(6)}"
            if tool == "mmdebstrap":
                cmd = ["mmdebstrap", "--verbose", "--mode=root", "--variant=minbase",
                       f"--include={','.join(packages)}",
                       # Docs and translations are not what lessons read; man pages are.
                       "--dpkgopt=path-exclude=/usr/share/doc/*",
                       "--dpkgopt=path-include=/usr/share/doc/*/copyright",
                       "--dpkgopt=path-exclude=/usr/share/locale/*",
                       suite, str(built), mirror]
            else:
                cmd = ["debootstrap", "--variant=minbase", f"--include={','.join(packages)}",
                       suite, str(built), mirror]
            log = d / "build.log"
            try:
                self._run_logged(cmd, log, tracker)
                tracker.report(0.99, "writing accounts and identity")
                self._finish_debian(built)
            except BaseException:
                if built.exists():
                    rmtree(built)
                raise
            image = self._install(d, built, {
                "name": "debian", "binds": [], "suite": suite, "mirror": mirror,
                "packages": list(packages), "tool": tool,
                "description": f"Debian {suite} ({tool}, minbase + lesson tools)"})
            tracker.report(1.0, f"debian image ready ({image.size_bytes / 2**20:.0f} MiB)")
            return image

    @staticmethod
    def _bootstrap_tool(report: Progress) -> str:
        if shutil.which("mmdebstrap"):
            return "mmdebstrap"
        if shutil.which("apt-get"):
            report(0.0, "installing mmdebstrap")
            result = subprocess.run(["apt-get", "install", "-y", "--no-install-recommends",
                                     "mmdebstrap"], capture_output=True, text=True,
                                    env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
            if result.returncode == 0 and shutil.which("mmdebstrap"):
                return "mmdebstrap"
            if not shutil.which("debootstrap"):
                raise HostUnsupported("neither mmdebstrap nor debootstrap is installed and "
                                      "`apt-get install mmdebstrap` failed: "
                                      f"{result.stderr.strip()[-800:]}")
        if shutil.which("debootstrap"):
            return "debootstrap"
        raise HostUnsupported("building the debian image needs mmdebstrap or debootstrap; "
                              "install one (apt-get install mmdebstrap)")

    @staticmethod
    def _run_logged(cmd: list[str], log: Path, tracker: BootstrapProgress) -> None:
        with open(log, "w") as out, subprocess.Popen(
                cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={**os.environ, "DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C.UTF-8"},
                text=True, errors="replace") as proc:
            out.write("$ " + " ".join(cmd) + "\n")
            for line in proc.stdout:
                out.write(line)
                tracker.feed(line.rstrip("\n"))
            rc = proc.wait()
        if rc != 0:
            tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-25:])
            raise SandboxError(f"{cmd[0]} failed (exit {rc}); the end of {log}:\n{tail}")

    @staticmethod
    def _finish_debian(root: Path) -> None:
        """Make a bootstrapped Debian look like the host image to a lesson: same accounts,
        same identity files, no host secrets (there are none to begin with)."""
        write_identity(root / "etc", merge=True)
        for p in (root / "var/lib/dbus/machine-id",):
            if p.exists() or p.is_symlink():
                p.unlink()
        home = root / "home" / "learner"
        home.mkdir(parents=True, exist_ok=True)
        os.chown(home, LEARNER_UID, LEARNER_UID)
        os.chmod(home, 0o755)
        for rel in ("var/lib/nginx", "var/log/nginx"):
            (root / rel).mkdir(parents=True, exist_ok=True)


def progress_bar(stream=None) -> Progress:
    """A progress callback for the CLI: a redrawn bar on a terminal, plain lines otherwise."""
    stream = stream if stream is not None else sys.stderr
    tty = hasattr(stream, "isatty") and stream.isatty()
    last = [None]

    def report(fraction: float, message: str) -> None:
        fraction = min(max(fraction, 0.0), 1.0)
        pct = int(fraction * 100)
        if tty:
            filled = int(fraction * 30)
            stream.write(f"\r\x1b[K[{'#' * filled}{'.' * (30 - filled)}] {pct:3d}%  {message}")
            if fraction >= 1.0:
                stream.write("\n")
        else:
            if (pct, message) == last[0]:
                return
            stream.write(f"{pct:3d}%  {message}\n")
        last[0] = (pct, message)
        stream.flush()

    return report
