"""Checks of the docker-basics lab.

Every fact graded here is the host's: the containers are pid namespaces below the
sandbox's, found by sandboxd in /proc (their PID 1, namespaces, processes, listening
sockets); files in a container are read by sandboxd through that container's root
(`sb.read_file(path, pid=...)`); the HTTP request to the learner's port is made from the
host; the registry's digests are read by sandboxd from the registry's own storage
(`GET /v1/registry`). The image store inside the sandbox, the container names and image
labels are the learner's to write: they are only used to find things, or compared with a
fact of the host (an image with the registry's digest, id and layers), never believed
alone. No check runs a program inside the sandbox.
"""

from __future__ import annotations

import ipaddress
import re
import time

from nslab.labkit.check import Fail
from nslab.labkit.glassbox import glass_box

NGINX = "docker.io/library/nginx:latest"
# `docker run` gives a container new namespaces of at least these types (the user namespace
# stays the sandbox's; the cgroup one too on cgroup v1, while podman makes a private one on
# v2); a pid namespace with fewer was made by hand.
DOCKER_NAMESPACES = frozenset({"pid", "mnt", "net", "uts", "ipc"})
NS_NAMES = {"pid": "pid", "mnt": "mount", "net": "network", "uts": "UTS", "ipc": "IPC",
            "user": "user", "cgroup": "cgroup"}
# A file only the sandbox's own root has (the registries.conf sandboxd writes into every
# sandbox image), and one only the nginx image has: they tell whose root a process sees.
SANDBOX_ONLY = "/etc/containers/registries.conf.d/99-nslab.conf"
NGINX_ONLY = "/etc/nginx/nginx.conf"
WELCOME = "Welcome to nginx!"
POLL = 0.5  # seconds between looks while a container is watched
# Numbers printed in the course document, from the author's machine.
DOC_NETNS = 4026532281
DOC_IP = "172.17.0.3"


# ----------------------------------------------------------------- helpers

def _who(c) -> str:
    """`comm` (pid N in your sandbox), and its name label when it has one."""
    name = f" `{c.name}`" if c.name else ""
    return f"container{name} with PID 1 `{c.main.comm}` (pid {c.main.sandbox_pid} in your sandbox)"


def _exists(sb, path: str, pid: int) -> bool:
    try:
        sb.read_file(path, pid=pid, limit=1 << 16)
    except FileNotFoundError:
        return False
    return True


def _not_made_by_docker(c, what: str) -> Fail | None:
    missing = sorted(DOCKER_NAMESPACES - c.new_namespaces)
    if not missing:
        return None
    shared = ", ".join(NS_NAMES[k] for k in missing)
    return Fail(f"{what} is PID 1 of a pid namespace of its own, but it shares its {shared} "
                f"namespace{'s' if len(missing) > 1 else ''} with your sandbox: a pid "
                "namespace made by hand (`unshare --pid`), not a container. `docker run` "
                "gives a container new pid, mount, network, UTS and IPC namespaces.")


def _os_release(sb, pid: int) -> dict[str, str]:
    try:
        text = sb.read_file("/etc/os-release", pid=pid, limit=1 << 16).decode(errors="replace")
    except FileNotFoundError:
        return {}
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            fields[key.strip()] = value.strip().strip('"')
    return fields


# ----------------------------------------------------------------- step 1: images

def pull_nginx(sb, params):
    served = {t["reference"]: t for t in sb.registry()}
    truth = served.get(NGINX)
    if truth is None:
        raise Fail("The lab's registry serves no nginx:latest at the moment, so there is "
                   "nothing to compare your image with; tell your instructor.")
    image = sb.image("nginx")
    if image is None:
        names = sorted(n.removeprefix("docker.io/library/") for i in sb.images() for n in i.names)
        have = ", ".join(f"`{n}`" for n in names) if names else "nothing"
        raise Fail(f"Your image store holds {have}, but no image named nginx (`nginx:latest`, "
                   "what `docker run nginx` would use). Pull it from the registry.")
    if image.digest != truth["digest"]:
        other = next((t for t in served.values() if t["digest"] == image.digest
                      or t["config_digest"] == f"sha256:{image.id}"), None)
        if other is not None:
            short = other["reference"].removeprefix("docker.io/library/")
            raise Fail(f"`nginx:latest` in your store is {short} under another name: its "
                       f"image id {image.id[:12]} and its digest are {short}'s. `docker tag` "
                       "only gives an image one more name. Remove that name with `docker rmi "
                       "nginx:latest` and pull nginx.")
        raise Fail(f"`nginx:latest` in your store has the manifest digest "
                   f"{image.digest or '(none)'}, but the registry serves {truth['digest']}. "
                   "Remove it (`docker rmi -f nginx`) and pull nginx from the registry.")
    layers = [layer.diff_digest for layer in image.layers]
    if f"sha256:{image.id}" != truth["config_digest"] or layers != truth["diff_ids"]:
        raise Fail(f"`nginx:latest` in your store carries the registry's digest, but it is not "
                   "the image the registry serves: its image id "
                   f"({image.id[:12]}) or its layers differ from the config the registry's "
                   "manifest names. A digest is public; the content behind it is what counts. "
                   "Remove it (`docker rmi -f nginx`) and pull nginx.")
    rows = "\n".join(f"| layer {n} | `{d[:19]}…` | `{d[:19]}…` |"
                     for n, d in enumerate(truth["diff_ids"], 1))
    return ("Right: `nginx:latest` is in your store, byte for byte the registry's.\n\n"
            "| | your store | the registry (read on the host) |\n|---|---|---|\n"
            f"| manifest digest | `{image.digest[:19]}…` | `{truth['digest'][:19]}…` |\n"
            f"| image id = config digest | `{image.id[:12]}` | `{truth['config_digest'][7:19]}` |\n"
            f"{rows}\n\n"
            "Each layer is a directory under `/var/lib/containers/storage/overlay/`; a "
            "container's root will be an overlay mount of them with a writable layer on top.")


# ----------------------------------------------------------------- step 2: entrypoints

def _debian_container(sb, c) -> None:
    """Fail unless `c` is a container `docker run` made from debian:bookworm."""
    what = f"bash (pid {c.main.sandbox_pid} in your sandbox)"
    wrong = _not_made_by_docker(c, what)
    if wrong is not None:
        raise wrong
    pid = c.main.sandbox_pid
    if _exists(sb, SANDBOX_ONLY, pid):
        raise Fail(f"{what} is PID 1 of new namespaces, but its root directory is your "
                   f"sandbox's own (it has {SANDBOX_ONLY}, which only your sandbox has): "
                   "a container's root is the image's files, which `docker run` mounts for it.")
    if _exists(sb, NGINX_ONLY, pid):
        raise Fail(f"{what} runs in a container whose root has {NGINX_ONLY}: nginx is "
                   "installed in it, so it was started from the nginx image (built on Debian "
                   "too), not from debian:bookworm.")
    release = _os_release(sb, pid)
    if release.get("ID") != "debian" or release.get("VERSION_CODENAME") != "bookworm":
        seen = release.get("PRETTY_NAME") or "no /etc/os-release"
        raise Fail(f"{what} runs in a container whose root is {seen!r}, not Debian 12 "
                   "(bookworm): start it from the image debian:bookworm.")


def bash_entrypoint(sb, params):
    bashes = [c for c in sb.containers if c.main.comm == "bash"]
    if not bashes:
        running = "; ".join(_who(c) for c in sb.containers)
        raise Fail("No container of yours runs bash as its PID 1"
                   + (f" (running now: {running})" if running else "") + ". "
                   "bash reads its commands from its standard input: started without `-i` it "
                   "reads end-of-file at once and exits, and the container ends with its "
                   "entrypoint. Keep its input open with `-it` (add `-d` to leave it in the "
                   "background).")
    failures = []
    for c in bashes:
        try:
            _debian_container(sb, c)
        except Fail as e:
            failures.append(e.message)
            continue
        return (f"Right: bash is PID 1 of a container from debian:bookworm; your sandbox "
                f"knows it as pid {c.main.sandbox_pid}, a child of "
                f"`{c.main.parent_comm or '?'}`. Its root's /etc/os-release, read from the "
                "host through that process's root, says Debian 12.\n\n" + glass_box(sb, c))
    raise Fail(failures[0])


def entrypoint_exits(sb, params):
    secs = str(params["secs"])
    sleepers = [c for c in sb.containers if c.main.comm == "sleep"]
    mine = [c for c in sleepers if c.main.cmdline[1:] == (secs,)]
    if not mine:
        # The lab's vault sleeps forever; any other sleeping container is the learner's.
        others = [c for c in sleepers if c.main.cmdline[1:] != ("infinity",)]
        if others:
            c = others[0]
            raise Fail(f"The {_who(c)} runs `{' '.join(c.main.cmdline)}`, but the task asks "
                       f"for sleep {secs} as the entrypoint.")
        raise Fail(f"No container of yours has `sleep {secs}` as its PID 1 (its entrypoint). "
                   f"If you started one more than {secs} s ago, it has ended already: start "
                   "it again and press Check right after the `docker exec`.")
    c = mine[0]
    wrong = _not_made_by_docker(c, f"`sleep {secs}` (pid {c.main.sandbox_pid})")
    if wrong is not None:
        raise wrong
    if len(c.processes) < 2:
        raise Fail(f"The {_who(c)} runs `sleep {secs}`, but only its PID 1 runs in it: start "
                   "a second, longer process in it with `docker exec -d` and press Check "
                   f"again before its {secs} s are up.")
    started, last = time.monotonic(), c
    while True:
        if sb.deadline_left() < POLL + 1.0:
            raise Fail(f"The {_who(c)} still ran after the check watched it for "
                       f"{time.monotonic() - started:.0f} s. Press Check within {secs} s of "
                       "starting it.")
        time.sleep(POLL)
        now = next((x for x in sb.refresh().containers if x.pid_namespace == c.pid_namespace),
                   None)
        if now is None:
            break
        last = now
    if len(last.processes) < 2:
        raise Fail(f"The container ended, but its second process had ended before its "
                   f"entrypoint did. Start one that outlives `sleep {secs}` (`sleep 600`).")
    alive = {p.host_pid for p in sb.processes()} & set(last.processes)
    if alive:
        raise Fail(f"The container's pid namespace is gone, but {len(alive)} of its processes "
                   "still run: tell your instructor.")
    return (f"Right: `sleep {secs}`, the container's PID 1, exited, and the kernel ended the "
            f"whole container with it: {len(last.processes)} processes were in its pid "
            "namespace a moment before, and none is left. When PID 1 of a pid namespace "
            "exits, the kernel sends SIGKILL to every other process in that namespace: "
            "that is \"a container lives while its entrypoint lives\".\n\n"
            "It had these namespaces while it ran:\n\n" + glass_box(sb, c))


# ----------------------------------------------------------------- step 3: a published port

def publish(sb, params):
    port = int(params["port"])
    webs = [c for c in sb.containers if c.main.comm == "nginx"]
    page = sb.http_get(port)
    if not webs:
        if page is not None:
            raise Fail(f"Port {port} of your sandbox answers (HTTP {page.status}), but no "
                       "container of yours runs nginx: the answer comes from a server in your "
                       "sandbox itself. Stop it, and run nginx in a container.")
        raise Fail(f"No container of yours runs nginx, and nothing answers on port {port}. "
                   "Run nginx in a container in the background and publish its port 80.")
    web = next((c for c in webs if c.listens(80)), None)
    if web is None:
        raise Fail(f"nginx runs in the {_who(webs[0])}, but nothing listens on port 80 in its "
                   "network namespace yet: give it a second and check again.")
    mine = sb.init.namespaces["net"]
    held = sorted({s["port"] for s in sb.sockets if s["netns"] == mine and s["proto"] == "tcp"})
    if page is None:
        tip = (f" Your sandbox holds port {port} open, so it is published, but no server "
               "answers behind it: the right-hand side of `-p` is the container's port, and "
               "nginx listens on 80 there." if port in held else
               f" Ports held open in your sandbox now: {', '.join(map(str, held))}." if held
               else " No port of your sandbox is held open: none is published.")
        raise Fail(f"nginx runs in the {_who(web)} and listens on port 80 in the container's "
                   f"own network namespace, but nothing answers on port {port} of your "
                   f"sandbox.{tip} `-p {port}:80` publishes it.")
    if page.status != 200 or WELCOME not in page.text:
        raise Fail(f"Port {port} answers HTTP {page.status}, not with nginx's welcome page.")
    server = page.headers.get("server", "")
    if not server.startswith("nginx"):
        raise Fail(f"Port {port} answers with a welcome page, but the server calls itself "
                   f"{server or 'nothing'!r}, not nginx: it is not the nginx of your container. "
                   "Stop that server and publish the container's port instead.")
    return (f"Right: the host got nginx's welcome page from port {port} of your sandbox, and "
            f"nginx listens on port 80 in the container's own network namespace "
            f"(`{web.namespaces['net']}`), not in your sandbox's (`{mine}`). The connection "
            f"to port {port} was rewritten (DNAT) to the container's address, port 80.\n\n"
            + glass_box(sb, web))


# ----------------------------------------------------------------- step 4: inspect

def _vault(sb):
    c = sb.container(name="vault") or next(
        (c for c in sb.containers if c.main.cmdline == ("sleep", "infinity")), None)
    if c is None:
        raise Fail("The lab's container `vault` is not running (see `docker ps -a`): start it "
                   "again with `docker start vault`, or reset your sandbox from the lab page.")
    return c


def inspect_pid(sb, params, answer):
    c = _vault(sb)
    given = answer.strip()
    if re.fullmatch(r"[0-9a-f]{12,64}", given) and not given.isdigit():
        raise Fail(f"{given[:16]!r} is a container ID (the first column of `docker ps`), not a "
                   "PID. The PID is under `State` in `docker inspect vault`.")
    if not given.isdigit():
        raise Fail(f"{given[:40]!r} is not a PID: answer with a number.")
    n = int(given)
    if n == c.main.sandbox_pid:
        return (f"Right: vault's main process is pid {n} in your sandbox, PID 1 inside the "
                f"container, and {c.main.host_pid} on the host: one process, a number in each "
                "pid namespace it is in.\n\n" + glass_box(sb, c))
    if n == 1:
        raise Fail("1 is the main process's PID inside the container's own pid namespace. "
                   "`docker inspect`'s State.Pid is its number in your sandbox's.")
    proc = sb.process(n)
    if proc is not None and proc.host_pid == c.main.parent_host_pid:
        raise Fail(f"PID {n} is `{proc.comm}`, the process that started the container and "
                   "waits for it: the container's main process is its child.")
    if proc is not None:
        raise Fail(f"PID {n} is `{proc.comm}`, not vault's main process.")
    raise Fail(f"No process of your sandbox has PID {n}.")


def inspect_ip(sb, params, answer):
    c = _vault(sb)
    given = answer.strip()
    try:
        ip = ipaddress.ip_address(given)
    except ValueError:
        raise Fail(f"{given[:40]!r} is not an IP address.") from None
    net = c.namespaces["net"]
    mine = [a["address"] for _, ifc in sb.interfaces(net) for a in ifc["addresses"]
            if a["family"] == "inet" and not a["address"].startswith("127.")]
    if str(ip) in mine:
        return (f"Right: {ip} is on `eth0` in vault's network namespace (`{net}`), read from "
                "the host. Its other end is a veth in your sandbox, plugged into podman's "
                "bridge `cni-podman0`.")
    if ip.is_loopback:
        raise Fail(f"{ip} is the loopback address every network namespace has: ask for the "
                   "container's address on the bridge.")
    if str(ip) == DOC_IP:
        raise Fail(f"{ip} is the address in the course document, from Docker's default bridge "
                   "on the author's machine. Ask `docker inspect vault` here.")
    for ns, ifc in sb.interfaces():
        if any(a["address"] == str(ip) for a in ifc["addresses"]):
            if ns == sb.init.namespaces["net"] and ifc["kind"] == "bridge":
                raise Fail(f"{ip} is the bridge's own address (`{ifc['ifname']}` in your "
                           "sandbox): the containers' gateway, not the container.")
            if ns == sb.init.namespaces["net"]:
                raise Fail(f"{ip} is your sandbox's own address on `{ifc['ifname']}`.")
            raise Fail(f"{ip} is the address of another network namespace, not vault's.")
    raise Fail(f"{ip} is not an address of the vault container.")


def inspect_netns(sb, params, answer):
    c = _vault(sb)
    m = re.search(r"\d+", answer)
    if not m:
        raise Fail(f"{answer.strip()[:40]!r} has no number in it: a namespace is named by the "
                   "number between the brackets of its link, `net:[...]`.")
    n = int(m.group())
    if n == c.namespaces["net"]:
        return (f"Right: net:[{n}] is vault's network namespace; your sandbox's is "
                f"net:[{sb.init.namespaces['net']}]. Each container of `docker run` gets one "
                "of its own.")
    if n == sb.init.namespaces["net"]:
        raise Fail(f"{n} is your sandbox's own network namespace (that of your shell and of "
                   "PID 1): look at the container's main process instead.")
    kind = next((k for k, i in c.namespaces.items() if i == n), None)
    if kind is not None:
        raise Fail(f"{n} is vault's {NS_NAMES.get(kind, kind)} namespace, not its network "
                   "namespace: each link in /proc/PID/ns is one kind.")
    if n == DOC_NETNS:
        raise Fail(f"{n} is the number in the course document, from another machine: "
                   "namespace numbers differ from machine to machine.")
    raise Fail(f"{n} is not the inode number of vault's network namespace.")


# ----------------------------------------------------------------- step 5: nsenter

def vault_secret(sb, params, answer):
    given = answer.strip()
    if given == params["secret"]:
        return ("Right: that is `/srv/vault/secret` in the vault container's root, which only "
                "its mount namespace shows at that path.")
    if given == params["decoy"]:
        raise Fail("That is your sandbox's own /srv/vault/secret, a decoy: the same path names "
                   "another file in the container's mount namespace. Read it from in there.")
    raise Fail(f"{given[:40]!r} is not what the vault container's /srv/vault/secret holds.")
