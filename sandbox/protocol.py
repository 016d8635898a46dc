"""What sandboxd and its clients share: the wire contract, in one module both sides import.

The daemon (`sandbox/daemon.py`, `sandbox/sessions.py`, the engine that builds the facts)
and the unprivileged side (`sandbox/client.py`, the web app, the lab machinery and the
CLI) import these names; nobody copies a channel number, a close code, an error reason or
the keys of an inspect fact. This module imports nothing of the engine, so importing it
is free for unprivileged code.

- `Channel`, `CloseCode`: the attach WebSocket (`GET /v1/exec/ID/attach`). Every frame is
  binary; its first byte is the channel, the rest the payload.
- `Reason`: the machine-readable cause every error answer carries (`{"error", "reason",
  "message", "field"}`). Callers branch on the reason, never on the message text, which
  is for people and may change.
- `ProcessFacts`, `CgroupNode`, `ContainerFacts`, `InspectFacts`, ...: the host-side facts of
  `GET /v1/sandboxes/ID/inspect`, built by the engine and read by the graders.
- `RunFacts`, `SyscallFacts`, `TRACEABLE_SYSCALLS`: the answer of `POST .../run`, with the
  system calls of a traced run (`sandbox/tracing.py`).
- `RegistryImage`: each tag of `GET /v1/registry`, what the daemon's image registry serves.
- `KernelFacts`, `KernelConnection`: a sandbox's notebook kernel (`/v1/sandboxes/ID/kernel`,
  sandbox/kernels.py) and the connection file a jupyter_client uses to reach it.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum
from pathlib import Path
from typing import TypedDict

API_PREFIX = "/v1"
DEFAULT_DAEMON_NAME = "default"
DEFAULT_RUN_DIR = Path("/run/nslab")


def default_socket_path(name: str = DEFAULT_DAEMON_NAME) -> Path:
    """Where the daemon called `name` listens (and where clients look for it)."""
    if name == DEFAULT_DAEMON_NAME:
        return DEFAULT_RUN_DIR / "sandboxd.sock"
    return DEFAULT_RUN_DIR / f"sandboxd-{name}.sock"


# ---------------------------------------------------------------- attach stream


class Channel(IntEnum):
    """The first byte of every attach frame."""

    STDIN = 0        # client -> process: bytes for its stdin / the PTY
    STDOUT = 1       # process -> client: output (the PTY's, or stdout)
    STDERR = 2       # process -> client: stderr (pipes only)
    RESIZE = 3       # client -> process: {"rows": R, "cols": C}
    EXIT = 4         # process -> client: {"exit_code": N} (or {"signal": ...}); last frame
    CLOSE_STDIN = 5  # client -> process: end of input (pipes: EOF; a PTY: ^D)
    SIGNAL = 6       # client -> process: {"signal": "INT"}
    REPLAYED = 7     # process -> client: the ring buffer has been replayed; live from here


class CloseCode(IntEnum):
    """Why the daemon closed an attach WebSocket (besides the standard 1000 / 1001)."""

    VIEWER_BEHIND = 4000  # a read-only viewer fell too far behind: reattach (with replay)
    SESSION_GONE = 4001   # the session ended with its sandbox (stopped or destroyed)


# ---------------------------------------------------------------- errors


class Reason(StrEnum):
    """Why a request failed, for programs; one per distinct cause a caller may act on."""

    # 400 invalid_request
    INVALID = "invalid"                          # a field is missing, of the wrong type or out of range
    NOT_REGULAR_FILE = "not_regular_file"        # files: a directory, fifo, socket or device
    NOT_DIRECTORY = "not_directory"              # files: listing something that is not a directory
    SPECIAL_FILESYSTEM = "special_filesystem"    # files: on proc, sysfs, cgroupfs, devpts, ...
                                                 # (not a data filesystem: never read)
    # 401 unauthorized
    UNAUTHORIZED = "unauthorized"                # the TCP listener wants a valid bearer token
    # 404 not_found
    NO_SUCH_SANDBOX = "no_such_sandbox"
    NO_SUCH_EXEC = "no_such_exec"
    NO_SUCH_PROCESS = "no_such_process"          # a pid that is not (or no longer) in the sandbox
    NO_SUCH_FILE = "no_such_file"                # a path that does not exist inside
    NO_SUCH_IMAGE = "no_such_image"
    NO_SUCH_KERNEL = "no_such_kernel"            # the sandbox runs no notebook kernel (now)
    NOT_FOUND = "not_found"                      # anything else that is not there
    # 409 conflict
    NOT_RUNNING = "not_running"                  # the sandbox is stopped (or its init died)
    ALREADY_EXISTS = "already_exists"
    IN_USE = "in_use"                            # a home volume another sandbox has mounted
    BUSY = "busy"                                # the kernel or another request holds it; retry
                                                 # (also on a 500 whose cause is EBUSY)
    SANDBOX_UNRESPONSIVE = "sandbox_unresponsive"  # its processes or files kept a process
                                                   # from starting in it within the deadline
    AT_PROCESS_LIMIT = "at_process_limit"        # the sandbox's processes fill its pids limit
    NO_ANSWER = "no_answer"                      # http_get: nothing at the port answered HTTP
                                                 # in time (refused, reset, timed out, garbage)
    KERNEL_FAILED = "kernel_failed"              # the kernel exited, or did not open its
                                                 # sockets in time, as it started
    CONFLICT = "conflict"
    # 413, 503, 500
    TOO_LARGE = "too_large"
    CAPACITY = "capacity"                        # no uid block, address or storage left
    DAEMON_UNAVAILABLE = "daemon_unavailable"    # client side: the daemon did not answer
    HOST_UNSUPPORTED = "host_unsupported"        # the host lacks a kernel feature or privilege
    INTERNAL = "internal"


# ---------------------------------------------------------------- inspect facts


class ProcessFacts(TypedDict):
    """One process of a sandbox as the host reads it from /proc/PID."""

    host_pid: int
    pid: int | None             # in the sandbox's pid namespace (None: not in it)
    nspids: list[int]           # NSpid: host first, then each nested pid namespace
    ppid: int                   # host pid of the parent
    comm: str
    cmdline: list[str]
    host_uid: int | None
    uid: int | None             # inside the sandbox's user namespace (None: unmapped)
    state: str                  # R, S, D, T, Z, ...
    namespaces: dict[str, int]  # "net" -> inode, for cgroup ipc mnt net pid user uts
    cgroup: str | None          # the CPU cgroup relative to the sandbox's ("/" is its own)
    cgroups: dict[str, str]     # controller -> path relative to the sandbox's; v2: "" -> path
    cpu_ns: int | None          # time on a CPU so far (schedstat)
    cpus_allowed: str | None    # Cpus_allowed_list, e.g. "0-1"


class CgroupNode(TypedDict):
    """One cgroup of a sandbox's subtree; `path` as seen inside ("/" is the sandbox's).

    `limits` holds the limit files the host has, under one name on v1 and v2 (a file that
    is absent is left out; None is "no limit"): cpus, cpu_quota_us, cpu_period_us,
    cpu_shares (v1) or cpu_weight (v2), cpuset_cpus, cpuset_cpus_effective, freeze,
    memory_max, swap_max, pids_max, io_weight.
    `usage` holds what the host can tell of cgroups.STAT_KEYS (an unknown value is left
    out): cpu_usage_ns, memory_current, memory_peak, memory_limit, oom_kills,
    pids_current, pids_limit, pids_events_max (forks refused at a pids limit: pids.events
    "max"; v1 counts them in the cgroup of the process that forked, v2 in the cgroup whose
    limit was reached and its ancestors), cpus, frozen, cpu_nr_periods, cpu_nr_throttled,
    cpu_throttled_ns (cpu.stat's CFS bandwidth statistics; v2 has them where the cpu
    controller is enabled)."""

    path: str
    limits: dict[str, int | float | str | bool | None]
    usage: dict[str, int | float | bool]
    procs: list[int]                                    # host pids


class SocketFacts(TypedDict):
    proto: str       # tcp, udp
    family: str      # inet, inet6
    address: str
    port: int
    state: str       # LISTEN, ...
    inode: int
    netns: int       # inode of the network namespace the socket is in


class AddressFacts(TypedDict):
    family: str | None  # inet, inet6 (None: another family)
    address: str
    prefixlen: int


class VethPeer(TypedDict):
    """The other end of a veth pair, as the kernel links them (IFLA_LINK and
    IFLA_LINK_NETNSID): so "these two ends are one pair" is a host fact."""

    netns: int | None  # inode of the peer's network namespace (None: not one of the
                       # sandbox's, e.g. the host end of its eth0 on the daemon's bridge)
    ifindex: int       # the peer's ifindex, in its own namespace


class InterfaceFacts(TypedDict):
    ifname: str | None
    index: int
    mac: str | None
    up: bool
    operstate: str | None
    kind: str | None  # veth, bridge, ... (None: a plain device such as lo)
    addresses: list[AddressFacts]
    peer: VethPeer | None  # a veth's other end (None: not a veth)


class NetNamespaceFacts(TypedDict):
    inode: int
    host_pid: int    # a process in it, through which it was read
    addresses: list[InterfaceFacts]


class UtsNamespaceFacts(TypedDict):
    inode: int
    hostname: str


class SyscallFacts(TypedDict):
    """One system call of a traced run, as the host's strace saw it finish."""

    pid: int | None        # the caller in the sandbox's pid namespace (None: not known, e.g.
                           # a process in a pid namespace the program made, or its children)
    host_pid: int          # the caller on the host
    name: str              # "unshare"
    args: str              # strace's text of the arguments: "CLONE_NEWUTS"
    flags: list[str]       # the symbolic constants in `args`, outside strings: ["CLONE_NEWUTS"]
    result: int | None     # the return value (-1 on failure; None: unknown, e.g. it was
                           # killed in the call)
    error: str | None      # "EPERM" when it failed


# What `trace` of `POST /v1/sandboxes/ID/run` may name: the calls the labs teach.
TRACEABLE_SYSCALLS = frozenset({
    "unshare", "clone", "clone3", "fork", "vfork", "setns", "execve", "execveat",
    "mount", "umount2", "pivot_root", "chroot", "sethostname", "setdomainname",
})


class RunFacts(TypedDict):
    """`POST /v1/sandboxes/ID/run`: the command ran to completion (or its timeout)."""

    exit_code: int | None      # -N: killed by signal N
    timed_out: bool
    truncated: bool            # output beyond `limit` was dropped
    stdout: str                # decoded as UTF-8, undecodable bytes replaced
    stderr: str
    stdout_b64: str            # the exact bytes
    stderr_b64: str
    syscalls: list[SyscallFacts] | None  # with `trace`: the calls named there, in order;
                                         # None without
    trace_truncated: bool      # some calls were left out (too many, or too much output)


class ContainerProcessFacts(TypedDict):
    """A container's main process: PID 1 of its pid namespace."""

    pid: int                    # in the container's own pid namespace (1)
    sandbox_pid: int            # in the sandbox's pid namespace
    host_pid: int
    comm: str
    cmdline: list[str]
    parent_host_pid: int        # its parent (an engine's conmon, or the shell of `unshare`)
    parent_comm: str | None


class ContainerFacts(TypedDict):
    """A container inside a sandbox, found from the kernel: a pid namespace other than the
    sandbox's, with the processes in it. What an engine's store says (`id`, `name`,
    `image`) is a label a learner can write: never proof of anything."""

    pid_namespace: int          # inode
    level: int                  # 1: made by the sandbox's root; 2: a container in one
    main: ContainerProcessFacts
    processes: list[int]        # host pids of every listed process in its pid namespace
    namespaces: dict[str, int]  # its main process's, "net" -> inode
    new_namespaces: list[str]   # the types (of cgroup ipc mnt net pid user uts) that differ
                                # from the sandbox init's
    cgroup: str | None          # the main process's CPU cgroup relative to the sandbox's,
                                # e.g. "/libpod_parent/libpod-<id>"
    cgroups: dict[str, str]     # controller -> path relative to the sandbox's; v2: "" -> path
    limits: dict[str, int | float | str | bool | None]  # cgroupsbase.CONTAINER_LIMIT_KEYS
    oom_kills: int | None       # OOM kills in its memory cgroup (None: not known)
    sockets: list[SocketFacts]  # listening sockets of its network namespace
    id: str | None              # label: the 64-hex id in its cgroup path, if any
    name: str | None            # label: from the engine's store
    image: str | None           # label: from the engine's store


# `GET /v1/sandboxes/ID/ports/PORT/http`: bounds of the daemon's HTTP GET to a sandbox.
HTTP_GET_MAX_BODY = 4 << 20
HTTP_GET_MAX_TIMEOUT = 10.0


class HttpFacts(TypedDict):
    """`GET /v1/sandboxes/ID/ports/PORT/http`: what the host got from the sandbox's port."""

    status: int
    reason: str
    headers: list[list[str]]   # [name, value] as sent, in order
    body_b64: str              # the body's bytes, at most the limit asked for
    truncated: bool            # the server sent more than the limit


class RegistryImage(TypedDict):
    """One tag of `GET /v1/registry`: what this daemon's read-only registry serves, read
    from its storage on the host. A learner's `docker pull` stores `digest` with the image
    (`docker images --digests`); their store is theirs to write, this is the host's word."""

    repository: str            # "library/nginx"
    tag: str                   # "latest"
    reference: str             # "docker.io/library/nginx:latest": the name an engine stores
    digest: str                # the manifest's, "sha256:<64 hex>"
    media_type: str | None     # the manifest's mediaType (OCI or Docker schema 2)
    config_digest: str | None  # the image config's: an engine's image id is its hex part
    diff_ids: list[str]        # the config's rootfs.diff_ids: each layer's content, bottom first


class KernelConnection(TypedDict):
    """A Jupyter connection file (`jupyter_client.connect`), as a client on the daemon's
    host uses it: ipc transport, `ip` a path prefix on the host whose sockets `ip-1` ..
    `ip-5` sandboxd relays to the kernel's inside the sandbox (sandbox/kernels.py)."""

    transport: str         # "ipc"
    ip: str                # the host prefix, "/run/nslab/kernels-<daemon>/<sandbox id>"
    shell_port: int
    iopub_port: int
    stdin_port: int
    control_port: int
    hb_port: int
    key: str               # hex: the HMAC key that signs every message
    signature_scheme: str  # "hmac-sha256"
    kernel_name: str       # "python3"


class KernelFacts(TypedDict):
    """`/v1/sandboxes/ID/kernel`: the sandbox's ipykernel, one at most."""

    kernel_id: str
    sandbox_id: str
    pid: int | None        # in the sandbox's pid namespace (what `os.getpid()` says inside)
    host_pid: int
    started: float         # epoch seconds
    last_activity: float   # epoch seconds of the last bytes relayed on shell, iopub, stdin
                           # or control (not the heartbeat): activity for idle stop
    bytes_relayed: int     # both ways, every channel
    connections: dict[str, int]  # channel ("shell", ..., "hb") -> relayed connections open now
    connection: KernelConnection


class InspectFacts(TypedDict):
    """`GET /v1/sandboxes/ID/inspect`."""

    id: str
    state: str
    hostname: str
    init_pid: int | None
    uid_base: int
    uid_count: int
    cgroup_version: int
    cgroup: str
    processes: list[ProcessFacts]
    cgroups: list[CgroupNode]
    sockets: list[SocketFacts]
    addresses: list[InterfaceFacts]       # the sandbox's own network namespace
    address: str | None                   # its address on the daemon's bridge
    limits: dict[str, int | float | str | None]  # as created: cpus, cpu_weight, cpuset, memory,
                                                 # swap, pids, io_weight (None: not limited)
    disk: int                             # bytes of the sandbox's disk quota
    net_namespaces: list[NetNamespaceFacts]
    uts_namespaces: list[UtsNamespaceFacts]
    containers: list[ContainerFacts]      # pid namespaces other than the sandbox's
    truncated: list[str]                  # lists cut at their bound: "cgroups" (a v1
                                          # sandbox made more than cgroup v2 would let
                                          # it), "processes", "net_namespaces",
                                          # "containers"
