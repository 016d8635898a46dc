"""Strict parsing of what callers ask the engine to do.

Every API payload and CLI argument goes through these parsers before anything on the
host changes. Unknown fields, wrong types, out-of-range values and hostile strings are
refused with an `InvalidRequest` naming the field.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from .errors import InvalidRequest
from .protocol import TRACEABLE_SYSCALLS

KIB, MIB, GIB, TIB = 1 << 10, 1 << 20, 1 << 30, 1 << 40
_UNITS = {"": 1, "b": 1, "k": KIB, "kb": KIB, "kib": KIB, "m": MIB, "mb": MIB, "mib": MIB,
          "g": GIB, "gb": GIB, "gib": GIB, "t": TIB, "tb": TIB, "tib": TIB}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")
HOSTNAME_RE = re.compile(r"^[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?$")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
USER_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
SANDBOX_ID_RE = re.compile(r"^[0-9a-f]{12}$")
CPUSET_RE = re.compile(r"^\d{1,4}(-\d{1,4})?(,\d{1,4}(-\d{1,4})?)*$")

MAX_MEMORY = 1 * TIB
MAX_DISK = 16 * TIB
MAX_ARGV = 4096
MAX_ARG_BYTES = 128 * KIB
MAX_ENV = 256


def parse_size(value, what: str, *, minimum: int = 0, maximum: int = MAX_DISK) -> int:
    """'512m', '1G', '64MiB' or a number of bytes -> bytes, within [minimum, maximum]."""
    if isinstance(value, bool):
        raise InvalidRequest(f"{what} must be a size like 512m or 2g", field=what)
    if isinstance(value, int):
        n = value
    elif isinstance(value, str):
        m = _SIZE_RE.fullmatch(value)
        if not m or m.group(2).lower() not in _UNITS:
            raise InvalidRequest(f"{what} must be a size like 512m or 2g, not {value!r}", field=what)
        n = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    else:
        raise InvalidRequest(f"{what} must be a size like 512m or 2g", field=what)
    if n < minimum or n > maximum:
        raise InvalidRequest(
            f"{what} must be between {format_size(minimum)} and {format_size(maximum)}, "
            f"not {format_size(n) if n >= 0 else n}", field=what)
    return n


def format_size(n: int) -> str:
    for unit, size in (("GiB", GIB), ("MiB", MIB), ("KiB", KIB)):
        if n >= size and n % (size // 1024 or 1) == 0:
            return f"{n / size:g} {unit}"
    return f"{n} B"


def _check_fields(payload, allowed: set[str], what: str) -> dict:
    if not isinstance(payload, dict):
        raise InvalidRequest(f"{what} must be a JSON object")
    unknown = sorted(set(payload) - allowed)
    if unknown:
        raise InvalidRequest(f"unknown field {unknown[0]!r} in {what}; allowed: "
                             f"{', '.join(sorted(allowed))}", field=unknown[0])
    return payload


def _number(payload, key, *, lo, hi, integer=False):
    v = payload.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (integer and not isinstance(v, int)):
        raise InvalidRequest(f"{key} must be {'an integer' if integer else 'a number'}", field=key)
    if not lo <= v <= hi:
        raise InvalidRequest(f"{key} must be between {lo} and {hi}, not {v}", field=key)
    return v


def _string(payload, key, regex, hint, default=None):
    v = payload.get(key, default)
    if v is None:
        return None
    if not isinstance(v, str) or not regex.fullmatch(v):
        raise InvalidRequest(f"{key} must be {hint}", field=key)
    return v


@dataclass
class CreateRequest:
    image: str = "host"
    cpus: float | None = 1.0
    cpu_weight: int | None = None
    cpuset: str | None = None
    memory: int | None = 512 * MIB
    swap: int | None = None
    pids: int | None = 512
    io_weight: int | None = None
    disk: int = 1 * GIB
    hostname: str | None = None
    home: str | None = None
    home_quota: int = 1 * GIB
    shm: int = 64 * MIB
    labels: dict = field(default_factory=dict)
    containers: bool = False  # a container engine inside: image storage, devices cgroup

    FIELDS = {"image", "cpus", "cpu_weight", "cpuset", "memory", "swap", "pids", "io_weight",
              "disk", "hostname", "home", "home_quota", "shm", "labels", "containers"}

    @classmethod
    def from_json(cls, payload, *, max_cpus: float) -> "CreateRequest":
        p = _check_fields(payload, cls.FIELDS, "the create request")
        req = cls()
        req.image = _string(p, "image", NAME_RE, "an image name like 'host'", "host")
        if "cpus" in p:
            req.cpus = _number(p, "cpus", lo=0.01, hi=max_cpus)
        req.cpu_weight = _number(p, "cpu_weight", lo=1, hi=10000, integer=True)
        req.cpuset = _string(p, "cpuset", CPUSET_RE, "a CPU list like '0' or '0-1'")
        if "memory" in p:
            req.memory = None if p["memory"] is None else parse_size(
                p["memory"], "memory", minimum=8 * MIB, maximum=MAX_MEMORY)
        if p.get("swap") is not None:
            req.swap = parse_size(p["swap"], "swap", maximum=MAX_MEMORY)
        if "pids" in p:
            req.pids = _number(p, "pids", lo=8, hi=4_194_304, integer=True)
        req.io_weight = _number(p, "io_weight", lo=1, hi=10000, integer=True)
        if p.get("disk") is not None:
            req.disk = parse_size(p["disk"], "disk", minimum=16 * MIB, maximum=MAX_DISK)
        if p.get("home_quota") is not None:
            req.home_quota = parse_size(p["home_quota"], "home_quota", minimum=16 * MIB,
                                        maximum=MAX_DISK)
        if p.get("shm") is not None:
            req.shm = parse_size(p["shm"], "shm", minimum=1 * MIB, maximum=16 * GIB)
        req.hostname = _string(p, "hostname", HOSTNAME_RE,
                               "a host name of 1-63 letters, digits and '-'")
        req.home = _string(p, "home", NAME_RE,
                           "a name of 1-64 letters, digits, '.', '_' or '-' (no slashes)")
        labels = p.get("labels") or {}
        if (not isinstance(labels, dict) or len(labels) > 32
                or any(not isinstance(k, str) or not isinstance(v, str) or len(k) > 64
                       or len(v) > 256 for k, v in labels.items())):
            raise InvalidRequest("labels must be at most 32 string pairs (keys <= 64, "
                                 "values <= 256 characters)", field="labels")
        req.labels = labels
        containers = p.get("containers")
        if containers is None:
            containers = False  # absent or null: the default, as for the other fields
        elif not isinstance(containers, bool):
            raise InvalidRequest("containers must be true or false", field="containers")
        req.containers = containers
        return req


@dataclass
class ExecRequest:
    argv: list[str]
    tty: bool = False
    user: str | int = 0
    cwd: str | None = None
    env: dict = field(default_factory=dict)
    rows: int = 24
    cols: int = 80

    FIELDS = {"argv", "tty", "user", "cwd", "env", "rows", "cols"}

    @classmethod
    def from_json(cls, payload) -> "ExecRequest":
        p = _check_fields(payload, cls.FIELDS, "the exec request")
        argv = p.get("argv")
        if (not isinstance(argv, list) or not argv or len(argv) > MAX_ARGV
                or any(not isinstance(a, str) or "\0" in a for a in argv)
                or sum(len(a) for a in argv) > MAX_ARG_BYTES or not argv[0]):
            raise InvalidRequest("argv must be a non-empty list of strings without NUL bytes "
                                 f"(at most {MAX_ARGV} items, {MAX_ARG_BYTES} bytes)", field="argv")
        tty = p.get("tty", False)
        if not isinstance(tty, bool):
            raise InvalidRequest("tty must be true or false", field="tty")
        user = p.get("user", 0)
        if isinstance(user, bool) or not (
                (isinstance(user, int) and 0 <= user < 65536)
                or (isinstance(user, str) and USER_RE.fullmatch(user))):
            raise InvalidRequest("user must be a user name or a uid from 0 to 65535", field="user")
        cwd = p.get("cwd")
        if cwd is not None and (not isinstance(cwd, str) or not cwd.startswith("/")
                                or "\0" in cwd or len(cwd) > 4096):
            raise InvalidRequest("cwd must be an absolute path", field="cwd")
        env = p.get("env") or {}
        if (not isinstance(env, dict) or len(env) > MAX_ENV
                or any(not isinstance(k, str) or not ENV_RE.fullmatch(k) or not isinstance(v, str)
                       or "\0" in v or len(v) > 32 * KIB for k, v in env.items())):
            raise InvalidRequest("env must map variable names to strings", field="env")
        rows = _number(p, "rows", lo=1, hi=1000, integer=True) or 24
        cols = _number(p, "cols", lo=1, hi=1000, integer=True) or 80
        return cls(argv=argv, tty=tty, user=user, cwd=cwd, env=env, rows=rows, cols=cols)


def parse_trace(value) -> list[str] | None:
    """`trace` of a run: None (not traced), or a list of distinct names from
    protocol.TRACEABLE_SYSCALLS."""
    if value is None:
        return None
    allowed = ", ".join(sorted(TRACEABLE_SYSCALLS))
    if (not isinstance(value, list) or not value or len(value) > len(TRACEABLE_SYSCALLS)
            or any(not isinstance(n, str) for n in value) or len(set(value)) != len(value)):
        raise InvalidRequest(f"trace must be a list of distinct system call names from: "
                             f"{allowed}", field="trace")
    unknown = [n for n in value if n not in TRACEABLE_SYSCALLS]
    if unknown:
        raise InvalidRequest(f"trace cannot name {unknown[0][:40]!r}; it may name: {allowed}",
                             field="trace")
    return list(value)


# A resize or signal frame of an attach stream is a small JSON object; anything longer is
# not one.
MAX_CONTROL_FRAME = 1024


def _control_frame(payload: bytes, what: str, field: str) -> dict:
    """The JSON object of a control frame, or InvalidRequest."""
    try:
        if len(payload) > MAX_CONTROL_FRAME:
            raise ValueError("too long")
        data = json.loads(payload)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        data = None
    if not isinstance(data, dict):
        raise InvalidRequest(f"a {what} frame must be a JSON object of at most "
                             f"{MAX_CONTROL_FRAME} bytes", field=field)
    return data


def parse_resize_frame(payload: bytes) -> tuple[int, int]:
    """(rows, cols) of an attach stream's resize frame: {"rows": 1-1000, "cols": 1-1000}."""
    data = _control_frame(payload, "resize", "rows")
    rows = _number(data, "rows", lo=1, hi=1000, integer=True)
    cols = _number(data, "cols", lo=1, hi=1000, integer=True)
    if rows is None or cols is None:
        raise InvalidRequest("a resize frame needs rows and cols", field="rows")
    return rows, cols


def parse_signal_frame(payload: bytes) -> str:
    """The signal name of an attach stream's signal frame: {"signal": "INT"}; the session
    checks the name."""
    name = _control_frame(payload, "signal", "signal").get("signal")
    if not isinstance(name, str) or len(name) > 16:
        raise InvalidRequest("a signal frame's signal must be a name like INT or TERM",
                             field="signal")
    return name


def check_sandbox_id(value: str) -> str:
    if not isinstance(value, str) or not SANDBOX_ID_RE.fullmatch(value):
        raise InvalidRequest("a sandbox id is 12 hex digits", field="id")
    return value


MAX_PATH = 4096
MAX_PID = 4_194_304  # the kernel's PID_MAX_LIMIT
_PID_RE = re.compile(r"^[1-9][0-9]{0,6}$")


@dataclass
class FileQuery:
    """`?path=/abs[&pid=N][&limit=SIZE]` of GET /sandboxes/ID/files and /dir."""

    path: str
    pid: int | None = None
    limit: int | None = None

    @classmethod
    def from_query(cls, query, *, allowed: frozenset[str], default_limit: int = 0,
                   max_limit: int = 0) -> "FileQuery":
        """`query` is a multidict (aiohttp's request.query); every key at most once."""
        for key in query:
            if key not in allowed:
                raise InvalidRequest(f"unknown parameter {key!r}; allowed: "
                                     f"{', '.join(sorted(allowed))}", field=key)
            if len(query.getall(key)) > 1:
                raise InvalidRequest(f"{key} is given more than once", field=key)
        path = query.get("path")
        if path is None or path == "":
            raise InvalidRequest("path is required: an absolute path inside the sandbox",
                                 field="path")
        if (not path.startswith("/") or "\0" in path or len(path.encode(errors="surrogateescape"))
                > MAX_PATH or any(len(part.encode(errors="surrogateescape")) > 255
                                  for part in path.split("/"))):
            raise InvalidRequest("path must be an absolute path without NUL bytes (at most "
                                 f"{MAX_PATH} bytes, 255 per name)", field="path")
        q = cls(path=path)
        if "pid" in query:
            raw = query["pid"]
            if not _PID_RE.fullmatch(raw) or int(raw) > MAX_PID:
                raise InvalidRequest(f"pid must be a process id from 1 to {MAX_PID} "
                                     "(as seen inside the sandbox)", field="pid")
            q.pid = int(raw)
        if "limit" in allowed:
            q.limit = default_limit
            if "limit" in query:
                raw = query["limit"]
                if not raw.isascii():
                    raise InvalidRequest("limit must be a size like 1048576 or 8m", field="limit")
                q.limit = parse_size(int(raw) if raw.isdigit() and len(raw) < 16 else raw,
                                     "limit", minimum=1, maximum=max_limit)
        return q
