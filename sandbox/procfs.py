"""What the host reads about a process from /proc, in one place.

Every rule for a /proc file lives here once: the start time in /proc/PID/stat (with the
pid it names one process for all time), the kernel's CPU list format, the v1/v2 lines of
/proc/PID/cgroup, the pid a process has inside its pid namespace (NSpid). The engine
builds the `protocol.ProcessFacts` of `inspect` from these reads, and groups them into the
containers inside a sandbox (`container_groups`: pid namespaces other than the sandbox's);
the spawner checks a sandbox's init by its start time before it joins its namespaces.

Reads that take a `proc_fd` go through an fd on /proc/PID opened beforehand: a pid that
is reused meanwhile by another process of the host is never followed.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from .nsenter import in_namespace
from .protocol import ContainerProcessFacts, ProcessFacts, UtsNamespaceFacts

# The namespaces of /proc/PID/ns that `inspect` reports, by their inode.
NAMESPACE_TYPES = ("cgroup", "ipc", "mnt", "net", "pid", "user", "uts")
MAX_CPU_ID = 8191  # NR_CPUS upper bound of common distribution kernels

_CPULIST_RE = re.compile(r"\d+(-\d+)?(,\d+(-\d+)?)*")
# A process that has exited but was not reaped yet (Z), or is being reaped (X).
_DEAD_STATES = (b"Z", b"X")


# ---------------------------------------------------------------- /proc/PID/stat


def _stat_fields(stat: bytes) -> list[bytes]:
    """The fields of /proc/PID/stat from the third (state) on. The command name before
    them may contain spaces and parentheses; the fields follow the last ')'."""
    return stat[stat.rindex(b")") + 2:].split()


def _start_time(fields: list[bytes]) -> int:
    return int(fields[19])  # field 22, starttime: clock ticks after boot


def start_time(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat: with the pid it names one process for all time; None
    if the process does not exist."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return _start_time(_stat_fields(stat))


def start_time_at(proc_fd: int) -> int | None:
    """`start_time` of the process whose /proc directory `proc_fd` is; None if it exited."""
    try:
        stat = read_at(proc_fd, "stat")
    except (FileNotFoundError, ProcessLookupError):
        return None
    return _start_time(_stat_fields(stat))


def alive(pid: int | None, start: int | None) -> bool:
    """Is this exact process (pid + start time) still running (a zombie is not)?"""
    if not pid:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = _stat_fields(f.read())
    except (FileNotFoundError, ProcessLookupError):
        return False
    return _start_time(fields) == start and fields[0][:1] not in _DEAD_STATES


# ---------------------------------------------------------------- reads through an fd


def read_at(dir_fd: int, name: str) -> bytes:
    """The file `name` of the directory `dir_fd` (a /proc/PID fd); /proc files are small."""
    fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        return os.read(fd, 65536)
    finally:
        os.close(fd)


def open_proc(pid: int) -> int:
    """An fd on /proc/PID, which keeps naming that process even if the pid is reused."""
    return os.open(f"/proc/{pid}", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


# ---------------------------------------------------------------- /proc/PID/status


def _status_fields(text: str) -> dict[str, list[str]]:
    fields = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.split()
    return fields


def _pid_inside(nspids: list) -> int | None:
    """NSpid lists the pid in the host's namespace first, then in each nested one: the
    second is the pid in the sandbox's pid namespace."""
    return int(nspids[1]) if len(nspids) > 1 else None


def inside_pid(host_pid: int, proc_fd: int | None = None) -> int | None:
    """The pid of host process `host_pid` in the sandbox's pid namespace (NSpid's second
    field), read through `proc_fd` (its /proc dir) when given; None if it has exited."""
    try:
        if proc_fd is None:
            text = Path(f"/proc/{host_pid}/status").read_bytes()
        else:
            text = read_at(proc_fd, "status")
    except (FileNotFoundError, ProcessLookupError):
        return None
    return _pid_inside(_status_fields(text.decode(errors="replace")).get("NSpid", []))


# ---------------------------------------------------------------- /proc/PID/cgroup


def _cgroup_lines(text: str) -> list[tuple[str, str]]:
    """(controllers, path) of each line "hierarchy-id:controllers:path". On cgroup v2 the
    one line has no controllers ("0::/path"); a hybrid v1 host lists that line too, beside
    one line per v1 hierarchy ("4:cpu,cpuacct:/path", "1:name=systemd:/path")."""
    out = []
    for line in text.splitlines():
        _hid, controllers, path = line.split(":", 2)
        out.append((controllers, path))
    return out


def relative(path: str, group: str) -> str:
    """A cgroup path as seen from inside `group` ("/" is the group itself); a path outside
    the group is returned as it is."""
    prefix = "/" + group
    if path == prefix or path.startswith(prefix + "/"):
        return path[len(prefix):] or "/"
    return path


def cgroup_paths(text: str) -> dict[str, str]:
    """Controller -> the process's cgroup, from the text of /proc/PID/cgroup; on cgroup v2
    the one unified path is under "" ("name=" hierarchies of v1 are left out)."""
    out = {}
    for controllers, path in _cgroup_lines(text):
        if controllers.startswith("name="):
            continue
        for controller in controllers.split(",") if controllers else [""]:
            out[controller] = path
    return out


def cpu_cgroup(paths: dict[str, str]) -> str | None:
    """The cgroup whose CPU limits apply to the process: v1's `cpu` hierarchy where there
    is one, else the unified (v2) one."""
    return paths.get("cpu", paths.get(""))


def in_group(proc_fd: int, group: str) -> bool:
    """Whether the process is in the cgroup `group` or below it (any hierarchy)."""
    prefix = "/" + group
    text = read_at(proc_fd, "cgroup").decode(errors="replace")
    return any(path == prefix or path.startswith(prefix + "/")
               for _controllers, path in _cgroup_lines(text))


# ---------------------------------------------------------------- CPU lists


def parse_cpulist(text: str) -> set[int]:
    """Parse a kernel CPU list such as "0-3,6" (cpuset.cpus, /sys/devices/system/cpu/online,
    Cpus_allowed_list) into a set of CPU numbers; ValueError if it is not one."""
    text = text.strip()
    if not text:
        return set()
    if not _CPULIST_RE.fullmatch(text):
        raise ValueError(f"{text!r} is not a CPU list like '0', '0-1' or '0,2'")
    cpus: set[int] = set()
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        first, last = int(lo), int(hi or lo)
        if last < first or last > MAX_CPU_ID:
            raise ValueError(f"CPU range {part!r} is reversed or too large")
        cpus.update(range(first, last + 1))
    return cpus


# ---------------------------------------------------------------- a sandbox's processes


def _namespaces(pid: int) -> dict[str, int]:
    out = {}
    for ns in NAMESPACE_TYPES:
        try:
            link = os.readlink(f"/proc/{pid}/ns/{ns}")  # "net:[4026531840]"
            out[ns] = int(link[link.index("[") + 1:-1])
        except (FileNotFoundError, ProcessLookupError, ValueError):
            pass
    return out


def process_facts(pid: int, group: str, uid_base: int) -> ProcessFacts | None:
    """What the host knows about process `pid` of the sandbox whose cgroup is `group` and
    whose root is host uid `uid_base`; None if it just exited."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        cgroup = Path(f"/proc/{pid}/cgroup").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = _status_fields(status)
    nspids = [int(x) for x in fields.get("NSpid", [pid])]
    host_uid = int(fields["Uid"][1]) if "Uid" in fields else None  # the effective uid
    uid_inside = host_uid - uid_base if host_uid is not None and host_uid >= uid_base else None
    try:
        # schedstat's first field: nanoseconds on a CPU so far (graders measure usage with it).
        cpu_ns = int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])
    except (FileNotFoundError, ProcessLookupError, ValueError, IndexError):
        cpu_ns = None
    paths = cgroup_paths(cgroup)
    cpu_path = cpu_cgroup(paths)
    return {
        "host_pid": pid,
        "pid": _pid_inside(nspids),
        "nspids": nspids,
        "ppid": int(fields.get("PPid", [0])[0]),
        "comm": " ".join(fields.get("Name", [])),
        "cmdline": [a.decode(errors="replace") for a in cmdline.split(b"\0") if a],
        "host_uid": host_uid,
        "uid": uid_inside,
        "state": fields.get("State", ["?"])[0],
        "namespaces": _namespaces(pid),
        "cgroup": None if cpu_path is None else relative(cpu_path, group),
        "cgroups": {c: relative(p, group) for c, p in paths.items()},
        "cpu_ns": cpu_ns,
        "cpus_allowed": " ".join(fields.get("Cpus_allowed_list", [])) or None,
    }


def uts_hostnames(procs: list[ProcessFacts]) -> list[UtsNamespaceFacts]:
    """The hostname of each UTS namespace of these processes, read by a thread that joins
    it (procfs would show the reader's own hostname, not the process's)."""
    out: list[UtsNamespaceFacts] = []
    seen = set()
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


# ---------------------------------------------------------------- containers


class ContainerGroup:
    """The processes of one pid namespace below the sandbox's (a container), as the
    engine's facts listed them; `main` is its PID 1."""

    def __init__(self, inode: int, level: int, main: ContainerProcessFacts,
                 facts: ProcessFacts, members: list[int]):
        self.inode = inode
        self.level = level
        self.main = main
        self.facts = facts          # the main process's ProcessFacts
        self.members = members      # host pids


def container_groups(procs: list[ProcessFacts], init: ProcessFacts | None,
                     limit: int) -> tuple[list[ContainerGroup], bool]:
    """The containers among a sandbox's processes: each pid namespace other than the
    sandbox init's that has its PID 1 among `procs`, at most `limit` of them (lowest
    sandbox pid of their PID 1 first), and whether some were left out.

    A container is a pid namespace, not any differing namespace: every engine gives one
    (Docker, podman, runc, `unshare --pid --fork`), while a process merely in a mount or
    network namespace of its own is a tool at work (`unshare -m`, `ip netns exec`, an
    engine's own helpers), not a container. A container run with `--pid=host` is
    therefore not listed."""
    if init is None:
        return [], False
    own_pidns = init["namespaces"].get("pid")
    base_level = len(init["nspids"])  # the sandbox init's pid namespace depth (host: 1)
    by_host = {p["host_pid"]: p for p in procs}
    members: dict[int, list[int]] = {}
    mains: dict[int, ProcessFacts] = {}
    for p in procs:
        ns = p["namespaces"].get("pid")
        if ns is None or ns == own_pidns or len(p["nspids"]) <= base_level:
            continue
        members.setdefault(ns, []).append(p["host_pid"])
        if p["nspids"][-1] == 1:
            mains[ns] = p
    order = sorted(mains.items(), key=lambda item: item[1]["nspids"][base_level - 1])
    out = []
    for ns, p in order[:limit]:
        parent = by_host.get(p["ppid"])
        main: ContainerProcessFacts = {
            "pid": p["nspids"][-1], "sandbox_pid": p["nspids"][base_level - 1],
            "host_pid": p["host_pid"], "comm": p["comm"], "cmdline": p["cmdline"],
            "parent_host_pid": p["ppid"],
            "parent_comm": parent["comm"] if parent is not None else None}
        out.append(ContainerGroup(ns, len(p["nspids"]) - base_level, main, p,
                                  sorted(members[ns])))
    return out, len(order) > limit
