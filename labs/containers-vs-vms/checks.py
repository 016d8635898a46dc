"""Checks of the containers-vs-vms lab.

The containers are found by sandboxd on the host, from the kernel (`sb.containers`): a pid
namespace below the sandbox's, its PID 1, that process's namespaces and its parent. The
kernel release a container reports is compared with the release of the kernel the grader
runs on (`os.uname()`): the web app grades on the host that runs the sandboxes, and a
container has no kernel of its own to report anything else. A hostname is read from the
container's UTS namespace on the host (`sb.hostname_of`). A container's root filesystem is
read through its PID 1's root, from the host. No check runs a program inside the sandbox,
and none believes a name from the engine's store.
"""

from __future__ import annotations

import os
import re

from nslab.labkit.check import Fail
from nslab.labkit.glassbox import glass_box

# The namespace types of /proc/PID/ns that a container may or may not get anew.
NS_TYPES = ("cgroup", "ipc", "mnt", "net", "pid", "user", "uts")
# What people answer when they mean "the engine": the daemon of Docker, its helpers, and
# the CLI that exits once the container runs.
DOCKER_DAEMONS = ("dockerd", "containerd", "containerd-shim", "containerd-shim-runc-v2")
CLIENTS = ("podman", "docker", "runc", "crun")


def _running(sb, what: str):
    """The containers of the sandbox; Fail when there is none."""
    found = sb.containers
    if not found:
        raise Fail(f"No container is running in your sandbox: start one that stays "
                   f"(`docker run -d debian:bookworm sleep infinity`) and {what}.")
    return found


def _os_release(sb, container) -> dict[str, str]:
    """The container's /etc/os-release, read from the host through its root."""
    try:
        text = sb.read_file("/etc/os-release", pid=container.main.sandbox_pid).decode(
            errors="replace")
    except FileNotFoundError:
        try:
            text = sb.read_file("/usr/lib/os-release", pid=container.main.sandbox_pid).decode(
                errors="replace")
        except FileNotFoundError:
            return {}
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key.strip()] = value.strip().strip('"')
    return out


# ----------------------------------------------------------------- shared-kernel

def shared_kernel(sb, params, answer):
    containers = _running(sb, "ask it with `docker exec CONTAINER uname -r`")
    release = os.uname().release
    a = answer.strip()
    if a == release:
        c = containers[-1]
        osr = _os_release(sb, c)
        distro = osr.get("PRETTY_NAME") or "its image's distribution"
        return (f"Right: `{release}`, the release of the host's kernel, the only kernel here. "
                f"The container's files say `{distro}` (its /etc/os-release, read through its "
                f"root), but its PID 1 `{c.main.comm}` is process {c.main.host_pid} of the "
                "host, scheduled and served by the host's kernel like any other. A VM would "
                "answer with the release of the kernel its guest booted.\n\n"
                + glass_box(sb, c))
    osr_values = set()
    for c in containers:
        osr = _os_release(sb, c)
        osr_values |= {osr.get(k, "").lower() for k in ("VERSION_ID", "VERSION_CODENAME", "ID",
                                                         "VERSION", "PRETTY_NAME", "NAME")}
    osr_values.discard("")
    if a.lower() in osr_values:
        raise Fail(f"{a[:40]!r} is from the container's /etc/os-release: the Debian release "
                   "of the image's files, its user space. Ask the kernel: `uname -r` inside "
                   "the container.")
    raise Fail(f"{a[:40]!r} is not the kernel release your container reports. Run `uname -r` "
               "inside it (`docker exec CONTAINER uname -r`) and answer with what it prints.")


# ----------------------------------------------------------------- hostname

def hostname(sb, params):
    want = params["hostname"]
    containers = sb.containers
    if not containers:
        mine = sb.hostname_of(sb.init)
        tip = (f" Your sandbox's own hostname is {mine!r}: renaming the sandbox is not "
               "what the task asks." if mine == want else "")
        raise Fail("No container is running in your sandbox." + tip + " Start one that "
                   f"stays, named {want} by its own UTS namespace.")
    seen = []
    for c in containers:
        main = sb.process(c.main.sandbox_pid)
        name = sb.hostname_of(main) if main else None
        if name == want and "uts" in c.new_namespaces:
            return (f"Right: your container's UTS namespace (`{c.namespaces.get('uts')}`) "
                    f"calls the machine {want!r}, while your sandbox's says "
                    f"{sb.hostname_of(sb.init)!r}. `uname -n` reads the namespace's name; "
                    "`uname -r` reads the kernel's release, which no namespace changes. A VM "
                    "has its own of both.\n\n" + glass_box(sb, c))
        seen.append((c, name))
    c, name = seen[0]
    if name == want:
        raise Fail(f"The container whose PID 1 is `{c.main.comm}` shares its UTS namespace "
                   "with your sandbox, so its name is your sandbox's. Give the container a "
                   "UTS namespace of its own (Docker does, unless told `--uts=host`).")
    mine = sb.hostname_of(sb.init)
    extra = (" (that is your sandbox's own hostname: the container does not see it, it "
             "has a UTS namespace of its own)" if mine == want else "")
    raise Fail(f"Your running container(s) are called {', '.join(repr(n) for _, n in seen)}, "
               f"not {want!r}{extra}. Name the container's machine when you start it "
               "(`--hostname`).")


# ----------------------------------------------------------------- daemon

def daemon(sb, params, answer):
    containers = _running(sb, "look at its parent")
    parents = {c.main.parent_comm for c in containers if c.main.parent_comm}
    # `ps -o args=` prints the path (/usr/bin/conmon); the kernel's comm is the file name.
    a = answer.strip().rsplit("/", 1)[-1]
    if a in parents:
        c = next(c for c in containers if c.main.parent_comm == a)
        return (f"Right: `{a}` (process {c.main.parent_host_pid} on the host) is the parent "
                f"of your container's PID 1 `{c.main.comm}`. podman started it, handed it the "
                "container, and exited: no daemon holds your containers. With Docker, the "
                "`docker` CLI asks `dockerd`, which asks `containerd`, whose "
                "`containerd-shim` is the parent of each container's PID 1.\n\n"
                + glass_box(sb, c))
    low = a.lower()
    if low in DOCKER_DAEMONS:
        raise Fail(f"No `{a}` runs in your sandbox: that is how Docker's engine is built, but "
                   "`docker` here is podman, which has no daemon. Look at the parent of your "
                   "container's PID 1 (`ps -o ppid= -p PID`, then `ps -p PPID`).")
    if low in CLIENTS:
        raise Fail(f"`{a}` started the container, but it is not the parent of the "
                   "container's PID 1 now: podman (and runc under it) exit once the container "
                   "runs. Which process is left above it? `ps -ef --forest`.")
    raise Fail(f"{a[:40]!r} is not the parent of your container's PID 1. Find the PID 1 "
               "(`docker top CONTAINER` or `pgrep`), then its parent with `ps -o ppid=`.")


# ----------------------------------------------------------------- shared namespaces

def _shared(container) -> set[str]:
    """The namespace types the container shares with the sandbox's init."""
    return {t for t in NS_TYPES if t in container.namespaces
            and t not in container.new_namespaces}


def shared_namespaces(sb, params, answer):
    containers = _running(sb, "compare its namespaces with your sandbox's")
    words = set(re.split(r"[\s,]+", answer.strip().lower())) - {""}
    # Containers may differ (`--net=host` shares one more): the answer may be about any
    # of them; feedback speaks of the first.
    for c in containers:
        if words == _shared(c):
            break
    else:
        c = containers[0]
    shared = _shared(c)
    if words == {"none"} and shared:
        raise Fail("It shares some: a container gets a namespace of its own only of the "
                   "types the engine asks for. Compare `/proc/1/ns` with the container's "
                   "PID 1's `/proc/PID/ns`, type by type.")
    unknown = words - set(NS_TYPES)
    if unknown:
        raise Fail(f"{', '.join(sorted(unknown))[:40]!r} is not a namespace type of "
                   f"/proc/PID/ns (those are: {' '.join(NS_TYPES)}).")
    if words == shared:
        own = " ".join(sorted(c.new_namespaces))
        return (f"Right: your container (PID 1 `{c.main.comm}`) shares "
                f"{' and '.join(sorted(shared))} with your sandbox and got its own {own}. "
                "What it shares is shared for real: with the user namespace shared, root in "
                "the container is root of your sandbox, limited only by what the runtime "
                "took away (capabilities, seccomp, masked /proc paths). A VM shares none of "
                "this: its guest kernel has namespaces of its own.\n\n" + glass_box(sb, c))
    wrong = words - shared
    if wrong:
        raise Fail(f"Your container got its own {' '.join(sorted(wrong))}: at least one "
                   "type you named is one it does not share. Two processes share a namespace "
                   "when their /proc/PID/ns links show the same number.")
    raise Fail("You left out at least one type your container shares with your sandbox. "
               "Compare every type: `ls -l /proc/1/ns /proc/PID/ns`.")
