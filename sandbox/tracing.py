"""A traced run: a sandbox process under the host's strace, and what it did.

`POST /v1/sandboxes/ID/run` with `"trace": ["unshare", ...]` runs the command held
(`spawner/enter.py`): its process F is in the sandbox, set up, and waits before it
resolves and execs the command. `Tracer.attach` starts the host's strace on F's host
pid; once strace says it is attached, the daemon lets F exec. `Tracer.finish` stops
strace when the run is over and `parse` turns its output into `SyscallFacts`.

Why the result can be trusted, though the learner is root inside and the program is
theirs:
- The tracer is the host's `/usr/bin/strace`, resolved in the daemon's (the host's)
  mount namespace; the sandbox's /usr is an overlay whose writes land in the sandbox's own
  volume, so no file a learner replaces inside is the one executed here.
- strace runs as host root in the host's namespaces and attaches by host pid
  (PTRACE_SEIZE): the learner's processes can neither signal nor trace it (host uid 0 in
  the initial user namespace), and a process has one tracer at most, so they cannot take
  its tracee away. Every process the program forks is traced from birth (strace -f), so
  nothing it runs escapes, save a child made with CLONE_UNTRACED, whose calls are then
  missing (which can only make a check fail, never pass).
- F execs only after the attach is complete (strace prints "Process N attached" after
  PTRACE_INTERRUPT, so F stops before it runs another instruction), so the trace covers
  the program from its first instruction; if the attach fails, F exits without exec.
- strace writes to a pipe only the daemon reads; the program's own output is separate.
  A line's syscall name is what strace printed at its start; strings from the program
  are quoted and escaped by strace, so they cannot start a line.
Bounds: the run's timeout covers the attach and the program; strace is stopped with the
run (SIGTERM after a short grace, then SIGKILL); at most MAX_TRACE_BYTES of its output
is read and MAX_SYSCALLS entries returned (`trace_truncated` says so).

Pids: strace prints host pids. The answer gives each call's `host_pid` and, where it is
known, its `pid` in the sandbox's pid namespace: F's is read from /proc before it execs;
a child's is the value its parent's clone/fork returned when that parent is itself in the
sandbox's pid namespace (not in one it made). To know which processes those are, the
calls that create processes and pid namespaces are always traced (and reported only if
asked for).
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import stat
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from .errors import HostUnsupported, SandboxError
from .protocol import SyscallFacts

STRACE = Path("/usr/bin/strace")
MAX_TRACE_BYTES = 1 << 20  # of strace's output read; the rest is drained and dropped
MAX_SYSCALLS = 1000        # entries in one answer
MAX_ARGS = 1024            # characters of one call's arguments
ATTACH_TIMEOUT = 5.0       # strace attaches in milliseconds; this is for a stalled host
EXIT_GRACE = 0.5           # after the program exits, how long its traced children may run
STOP_TIMEOUT = 2.0         # after SIGTERM, before SIGKILL

# Traced whatever was asked: they say which process each line is (see "Pids" above).
PROCESS_CALLS = ("clone", "clone3", "fork", "vfork", "unshare", "setns")
FORKS = frozenset({"clone", "clone3", "fork", "vfork"})


def find_strace() -> str:
    """The host's strace, if it is a root-owned executable nobody else may write."""
    try:
        st = STRACE.stat()
    except FileNotFoundError:
        raise HostUnsupported("strace is not installed on the host: a traced run needs it "
                              "(apt install strace)") from None
    if (not stat.S_ISREG(st.st_mode) or st.st_uid != 0
            or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) or not os.access(STRACE, os.X_OK)):
        raise HostUnsupported(f"{STRACE} is not a root-owned executable that only root may "
                              "write: reinstall strace")
    return str(STRACE)


class Tracer:
    """One host strace attached to one held process of a sandbox."""

    def __init__(self, syscalls: list[str]):
        self.syscalls = list(syscalls)
        self.strace = find_strace()  # before anything runs: a host without it runs nothing
        self.proc: asyncio.subprocess.Process | None = None
        self.output = bytearray()
        self.truncated = False
        self.errors: list[str] = []  # strace's own messages, the last few
        self._tasks: list[asyncio.Task] = []

    def argv(self, host_pid: int) -> list[str]:
        names = sorted(set(self.syscalls) | set(PROCESS_CALLS))
        return [self.strace, "-f", "-e", "trace=" + ",".join("?" + n for n in names),
                "-e", "signal=none", "--quiet=exit,personality,thread-execve,superseded",
                "--decode-pids=pidns", "-o", "/dev/stdout", "-p", str(host_pid)]

    async def attach(self, host_pid: int, timeout: float) -> None:
        """Start strace on `host_pid` and return once it is attached; SandboxError if it
        could not attach within `timeout`."""
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv(host_pid), stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env={"PATH": "/usr/bin:/bin", "LANG": "C"}, close_fds=True)
        self._tasks.append(asyncio.ensure_future(self._read_output()))
        attached = asyncio.get_running_loop().create_future()
        self._tasks.append(asyncio.ensure_future(self._read_messages(host_pid, attached)))
        try:
            await asyncio.wait_for(asyncio.shield(attached), min(timeout, ATTACH_TIMEOUT))
        except asyncio.TimeoutError:
            raise SandboxError("the host's strace did not attach to the process in time"
                               + self._said()) from None
        if not attached.result():
            raise SandboxError("the host's strace could not attach to the process"
                               + self._said())

    def _said(self) -> str:
        return f": {' '.join(self.errors)[-500:]}" if self.errors else ""

    async def _read_output(self) -> None:
        while chunk := await self.proc.stdout.read(65536):
            room = MAX_TRACE_BYTES - len(self.output)
            if len(chunk) > room:
                self.truncated = True
            self.output += chunk[:max(room, 0)]

    async def _read_messages(self, host_pid: int, attached: asyncio.Future) -> None:
        # Drained to the end: strace says "Process N attached" for every child, and must
        # never block on a full pipe. Read in chunks: a line has no length limit.
        want = f"Process {host_pid} attached".encode()
        pending = b""
        try:
            while chunk := await self.proc.stderr.read(65536):
                *lines, pending = (pending + chunk).split(b"\n")
                pending = pending[-4096:]
                for line in lines:
                    if line.rstrip().endswith(want):
                        if not attached.done():
                            attached.set_result(True)
                    elif not line.rstrip().endswith(b" attached"):
                        text = line.decode(errors="replace").strip()[:300]
                        self.errors = (self.errors + [text])[-5:]
        finally:
            if not attached.done():
                attached.set_result(False)

    async def finish(self, root_host_pid: int, root_pid: int | None,
                     grace: float = EXIT_GRACE) -> tuple[list[SyscallFacts], bool]:
        """Stop strace (the program has ended) and parse what it wrote: the calls asked
        for, and whether anything was left out."""
        await self.stop(grace)
        calls, cut = parse(self.output.decode(errors="replace"), root_host_pid, root_pid,
                           set(self.syscalls))
        return calls, cut or self.truncated

    async def stop(self, grace: float = 0.0) -> None:
        """End strace: at once if it is done, else after `grace` (children the program
        left running may still be traced), SIGTERM (strace detaches, and writes what it
        holds), then SIGKILL. Safe to call again."""
        if self.proc is None:
            return
        for sig, wait in ((None, grace), (signal.SIGTERM, STOP_TIMEOUT), (signal.SIGKILL, None)):
            if sig is not None and self.proc.returncode is None:
                try:
                    self.proc.send_signal(sig)  # our unreaped child: its pid is still ours
                except ProcessLookupError:
                    pass
            try:
                await asyncio.wait_for(self.proc.wait(), wait)
                break
            except asyncio.TimeoutError:
                continue
        for task in self._tasks:
            try:
                await asyncio.wait_for(task, STOP_TIMEOUT)
            except asyncio.TimeoutError:
                task.cancel()  # a descendant holds the pipe open; what was read is kept


# ---------------------------------------------------------------- strace's output

# "PID rest": with -o and -f every line starts with the host pid of the caller.
_LINE = re.compile(r"^(?P<pid>\d+)\s+(?P<rest>.*)$")
_CALL = re.compile(r"^(?P<name>[a-z_][a-z0-9_]*)\((?P<args>.*)$")
_RESUMED = re.compile(r"^<\.\.\. (?P<name>[a-z_][a-z0-9_]*) resumed>(?P<args>.*)$")
# The end of a finished call: greedy on the left, so the last ") = " of the line is the
# one taken (an argument string may hold the same characters).
_END = re.compile(r"^(?P<args>.*)\)\s+= (?P<ret>-?\d+|0x[0-9a-f]+|\?)"
                  r"(?: (?P<err>E[A-Z0-9]+)(?: \([^()]*\))?)?"
                  r"(?: /\* (?P<host>\d+) in strace's PID NS \*/)?"
                  r"(?: \([^()]*\))?\s*$")
_UNFINISHED = " <unfinished ...>"
_DETACHED = " <detached ...>"
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"(?:\.\.\.)?')
_FLAG = re.compile(r"\b[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+\b")


@dataclass
class _Call:
    host_pid: int
    name: str
    args: str
    result: int | None = None
    error: str | None = None
    child: int | None = None  # forks: the new process's host pid
    flags: list[str] = field(default_factory=list)


def flags_of(args: str) -> list[str]:
    """The symbolic constants in strace's text of the arguments (CLONE_NEWUTS, MS_BIND,
    ...), outside quoted strings (which hold the program's data, not flags)."""
    return _FLAG.findall(_STRING.sub('""', args))


def _calls(text: str) -> list[_Call]:
    """Every finished call in strace's output, in the order strace finished them."""
    pending: dict[int, tuple[str, str]] = {}
    out: list[_Call] = []
    for line in text.splitlines():
        m = _LINE.match(line)
        if not m:
            continue
        pid, rest = int(m["pid"]), m["rest"]
        if rest.startswith(("+++", "---")):
            continue
        if (r := _RESUMED.match(rest)) is not None:
            name, head = pending.pop(pid, (r["name"], ""))
            name, rest = r["name"], head + r["args"]
        elif (c := _CALL.match(rest)) is not None:
            name, rest = c["name"], c["args"]
        else:
            continue
        if rest.endswith(_UNFINISHED):
            pending[pid] = (name, rest[:-len(_UNFINISHED)])
            continue
        if rest.endswith(_DETACHED):  # strace stopped while the call was in progress
            out.append(_Call(pid, name, rest[:-len(_DETACHED)].rstrip(", ")))
            continue
        e = _END.match(rest)
        if e is None:
            continue
        ret = e["ret"]
        result = None if ret == "?" else int(ret, 0)
        call = _Call(pid, name, e["args"], result, e["err"])
        if name in FORKS and result is not None and result > 0:
            # In another pid namespace than strace's the return value is the child's pid
            # there, and strace adds the host pid; otherwise the value is the host pid.
            call.child = int(e["host"]) if e["host"] else result
        out.append(call)
    for call in out:
        call.flags = flags_of(call.args)
    return out


def inside_pids(calls: list[_Call], root_host_pid: int, root_pid: int | None) -> dict[int, int]:
    """Host pid -> pid in the sandbox's pid namespace, for the processes where that is
    known (see "Pids" in the module's docstring).

    Each process is walked in its own order of calls, from the root down the forks:
    `level` is how deep its pid namespace lies below the sandbox's (0: the sandbox's
    own), `nested` the level its children are born at (unshare(CLONE_NEWPID) makes it
    level + 1; setns into a pid namespace makes it unknown)."""
    by_pid: dict[int, list[_Call]] = defaultdict(list)
    for call in calls:
        by_pid[call.host_pid].append(call)
    inside = {root_host_pid: root_pid} if root_pid is not None else {}
    stack: list[tuple[int, int | None]] = [(root_host_pid, 0)]
    seen = set()
    while stack:
        pid, level = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        nested = level
        for call in by_pid.get(pid, ()):
            ok = call.result is not None and call.result >= 0
            if call.name == "unshare" and ok and "CLONE_NEWPID" in call.flags:
                nested = None if level is None else level + 1
            elif call.name == "setns" and ok and ("CLONE_NEWPID" in call.flags or not any(
                    f.startswith("CLONE_NEW") for f in call.flags)):
                nested = None  # some pid namespace below this one: which, strace can't say
            elif call.child is not None:
                if level == 0:
                    inside[call.child] = call.result
                born = nested
                if born is not None and "CLONE_NEWPID" in call.flags:
                    born += 1
                stack.append((call.child, born))
    return inside


def parse(text: str, root_host_pid: int, root_pid: int | None,
          wanted: set[str]) -> tuple[list[SyscallFacts], bool]:
    """strace's output as the answer's `syscalls` (only the names in `wanted`), and
    whether entries were left out (more than MAX_SYSCALLS)."""
    calls = _calls(text)
    inside = inside_pids(calls, root_host_pid, root_pid)
    out: list[SyscallFacts] = []
    for call in calls:
        if call.name not in wanted:
            continue
        if len(out) == MAX_SYSCALLS:
            return out, True
        out.append({"pid": inside.get(call.host_pid), "host_pid": call.host_pid,
                    "name": call.name, "args": call.args[:MAX_ARGS], "flags": call.flags,
                    "result": call.result, "error": call.error})
    return out, False
