"""Checks of the namespaces lab (docs/authoring.md).

Every check grades facts that the host reads, never the output of a program inside the
sandbox: the learner is root in there, and /usr is theirs to overwrite. The facts are the
namespace inodes of each process (/proc/PID/ns on the host), the hostname of each UTS
namespace (sandboxd enters it and calls uname()), the interfaces of each network namespace
a process is in and which two veth ends form one pair (netlink: IFLA_LINK and
IFLA_LINK_NETNSID, read from the host), the listening sockets, files that the kernel
resolves in a process's own mount namespace, and the system calls of the learner's program
as a tracer on the host (strace from the host's /usr) saw them. Writing files, renaming
processes, bind-mounting over /proc or replacing /usr/bin/ping changes none of them.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import stat

from nslab.labkit.check import Fail
from sandbox.errors import InvalidRequest, NotFound, TooLarge
from sandbox.protocol import Reason

TYPES = ("cgroup", "ipc", "mnt", "net", "pid", "user", "uts")
ALIASES = {"mount": "mnt", "mounts": "mnt", "ns": "mnt", "newns": "mnt", "network": "net",
           "hostname": "uts", "users": "user", "cgroups": "cgroup", "process": "pid",
           "processes": "pid", "pids": "pid"}
# The net and user namespace numbers printed in the course document's example: another machine.
DOC_NUMBERS = {4026532281, 4026531837, 4026532278, 4026532276, 4026532279, 4026532277}


def _cmd(p) -> str:
    return " ".join(p.cmdline)[:70] or p.comm


def _vault_types(params) -> set[str]:
    """The namespace types in which setup.sh gave vaultd its own: mnt, and those its code
    names ("vns-uts-net": uts and net)."""
    return {"mnt", *params["vault_ns"].removeprefix("vns-").split("-")}


def _differs(p, init) -> set[str]:
    return {t for t in TYPES if p.namespaces.get(t) != init.namespaces.get(t)}


def _vault(sb, params):
    """vaultd as setup.sh started it, or None if it is gone. A name proves nothing (anyone
    can start a process called vaultd), so it must also differ from PID 1 in exactly the
    types setup.sh gave it; what it is, the params say, not the process."""
    init, want = sb.init, _vault_types(params)
    return next((p for p in sb.processes(comm="vaultd") if _differs(p, init) == want), None)


def _vault_ns(sb, params, kind: str) -> int | None:
    v = _vault(sb, params)
    return v.namespaces.get(kind) if v else None


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


# ----------------------------------------------------------------- step 1: /proc/PID/ns

def ns_inode(sb, params, answer):
    init = sb.init
    truth = init.namespaces["net"]
    m = re.search(r"\d+", answer)
    if not m:
        raise Fail(f"{answer[:40]!r} has no number in it: a namespace is named by the number "
                   "between the brackets of its link, `net:[...]`.")
    n = int(m.group())
    if n == truth:
        return (f"Right: PID 1 is in network namespace net:[{truth}]. Every process that "
                f"shows this number shares PID 1's network stack.")
    same = [t for t, i in init.namespaces.items() if i == n]
    if same:
        raise Fail(f"{n} is PID 1's {same[0]} namespace, not its network namespace: each "
                   "link in /proc/PID/ns is one kind.")
    if n in DOC_NUMBERS:
        raise Fail(f"{n} is a number from the course document's example, printed on another "
                   "machine: namespace numbers differ from machine to machine. Read the link "
                   "in your own sandbox.")
    owner = next((p for p in sb.processes() if n in p.namespaces.values()), None)
    if owner is not None:
        kind = next(t for t, i in owner.namespaces.items() if i == n)
        raise Fail(f"{n} is the {kind} namespace of PID {owner.pid} ({_cmd(owner)}), not the "
                   "network namespace of PID 1.")
    raise Fail(f"{n} is not the inode number of any namespace of PID 1.")


def _types(answer: str) -> tuple[set[str], list[str]]:
    words = [w for w in re.split(r"[\s,;/+&|]+", answer.lower()) if w and w != "and"]
    found, unknown = set(), []
    for w in words:
        w = w.strip(".:'\"`[]()")
        w = ALIASES.get(w, w)
        if w in TYPES:
            found.add(w)
        elif w:
            unknown.append(w)
    return found, unknown


def ns_compare(sb, params, answer):
    vault = _vault(sb, params)
    if vault is None:
        raise Fail("vaultd is not running any more (did you kill it?). Reset the sandbox from "
                   "the lab page to get it back.")
    # The truth is what setup.sh made (the params), which the host's facts about vaultd
    # were just seen to match: a process the learner names vaultd cannot change it.
    truth = _vault_types(params)
    given, unknown = _types(answer)
    if unknown:
        raise Fail(f"{', '.join(map(repr, unknown[:3]))} is not a namespace type; the types in "
                   f"/proc/PID/ns are {', '.join(TYPES)}.")
    if given == truth:
        return (f"Right: vaultd (PID {vault.pid}) has {_plural(len(truth), 'namespace')} of "
                "its own and shares every other one with PID 1.")
    # Feedback that helps without answering: which kind of mistake, never which types nor
    # how many (with the types of the question known, names or counts narrow the answer
    # down in a try or two).
    wrong, missed = given - truth, truth - given
    parts = []
    if wrong:
        parts.append("at least one type you named is one that vaultd shares with PID 1 (the "
                     "same number on both sides)")
    if missed:
        parts.append("you left out at least one type in which they differ")
    raise Fail("Not quite: " + ", and ".join(parts) + ". Compare the two processes' links "
               "kind by kind.")


# ----------------------------------------------------------------- step 2: nsenter

def vault_secret(sb, params, answer):
    given = answer.strip()
    if given == params["secret"]:
        return ("Right: that is the secret on vaultd's private tmpfs, which exists only in "
                "vaultd's mount namespace.")
    if given == params["decoy"]:
        raise Fail("That is the decoy: /run/vault/secret as the sandbox's own mount namespace "
                   "shows it. vaultd mounted a tmpfs over /run/vault in its own mount "
                   "namespace, so the same path names another file in there.")
    raise Fail(f"{given[:40]!r} is not what vaultd's /run/vault/secret holds.")


# ----------------------------------------------------------------- step 3: unshare

def _proc_entry(sb, pid: int, n: int) -> str:
    """What /proc/<n>/status is in the mount namespace of process `pid` (a pid inside the
    sandbox): "proc" (a file of a proc filesystem), "absent", or "plain" (a regular file on
    a data filesystem, i.e. not proc at all). sandboxd resolves the path with the kernel in
    that process's root, from the host; it refuses to read proc files but says they exist."""
    try:
        sb.read_file(f"/proc/{n}/status", pid=pid, limit=4096)
        return "plain"
    except FileNotFoundError:
        return "absent"
    except NotFound as e:
        if e.reason == Reason.NO_SUCH_FILE:
            return "absent"
        raise
    except InvalidRequest as e:
        # sandboxd serves only files of data filesystems; /proc/N/status on a special one
        # (nothing but proc has that path) is a proc entry. Any other refusal: not proc.
        return "proc" if e.reason == Reason.SPECIAL_FILESYSTEM else "plain"


def pid_ns(sb, params):
    init = sb.init
    procs = sb.processes()
    by_ns: dict[int, list] = {}
    for p in procs:
        by_ns.setdefault(p.namespaces.get("pid"), []).append(p)
    spaces = {ns: ps for ns, ps in by_ns.items() if ns != init.namespaces["pid"]}
    if not spaces:
        raise Fail("No process runs in a PID namespace of its own. A namespace ends when its "
                   "last process exits: leave the shell of the new namespace open while you "
                   "press Check.")
    problems = []
    # The namespaces whose PID 1 has children first: their problem is the one to report.
    for ns, members in sorted(spaces.items(), key=lambda kv: not any(
            q.ppid == p.host_pid for p in kv[1] if p.nspids[-1] == 1 for q in kv[1])):
        problem = _pid_ns_problem(sb, init, ns, members, procs)
        if problem is None:
            leader = next(p for p in members if p.nspids[-1] == 1)
            return (f"Right: PID namespace pid:[{ns}] has its own PID 1 (PID {leader.pid} "
                    f"outside) with a child, its own mount namespace and a /proc that shows "
                    f"only its own processes.")
        problems.append(problem)
    raise Fail(problems[0])


def _pid_ns_problem(sb, init, ns, members, procs) -> str | None:
    leader = next((p for p in members if p.nspids and p.nspids[-1] == 1), None)
    if leader is None:
        return (f"PID namespace pid:[{ns}] has no PID 1 any more: its init exited, and a PID "
                "namespace without its init cannot start new processes. Make a new one.")
    # Facts, not names: a process's comm and argv are whatever the learner wrote there, so
    # what counts is where each process is and who started whom.
    children = [p for p in members if p.ppid == leader.host_pid]
    parent = next((p for p in procs if p.host_pid == leader.ppid), None)
    first_child = (parent is not None and parent.namespaces.get("pid") != ns
                   and parent.namespaces.get("mnt") == leader.namespaces.get("mnt")
                   and parent.comm != "unshare")
    stayed = ""
    if first_child and not children:
        stayed = (f" Note that PID 1 here is `{_cmd(leader)}`, the first child of "
                  f"`{_cmd(parent)}` (PID {parent.pid}), which stayed in the sandbox's PID "
                  "namespace: the caller of unshare(CLONE_NEWPID) never moves, only the "
                  "children it creates afterwards do.")
    if leader.namespaces.get("mnt") == init.namespaces.get("mnt"):
        return (f"PID 1 of pid:[{ns}] (PID {leader.pid} outside) shares the sandbox's mount "
                "namespace, so its /proc is the sandbox's proc and `ps` there lists every "
                "process of the sandbox. It needs a mount namespace of its own with a proc "
                "mounted from inside the new PID namespace." + stayed)
    first = _proc_entry(sb, leader.pid, 1)
    if first != "proc":
        return (f"In the mount namespace of pid:[{ns}]'s PID 1, /proc is not a proc "
                f"filesystem (/proc/1/status is {'missing' if first == 'absent' else 'a plain file'}): "
                "`ps` there has nothing real to read." + stayed)
    inside = {p.nspids[-1] for p in members}
    outside = sorted((p for p in procs if p.namespaces.get("pid") != ns
                      and p.pid not in inside), key=lambda p: -p.pid)
    if outside:
        stranger = outside[0]
        if _proc_entry(sb, leader.pid, stranger.pid) != "absent":
            return (f"PID 1 of pid:[{ns}] has its own mount namespace, but /proc in there is "
                    f"still the sandbox's: it shows process {stranger.pid} ({stranger.comm}), "
                    "which lives outside. A proc filesystem shows the PID namespace of the "
                    "process that mounted it, so it must be mounted by a process inside the "
                    "new namespace." + stayed)
    for p in members:
        if _proc_entry(sb, leader.pid, p.nspids[-1]) != "proc":
            return (f"/proc in the mount namespace of pid:[{ns}]'s PID 1 is a proc, but not "
                    f"one of the new namespace: it has no entry for `{_cmd(p)}`, PID "
                    f"{p.nspids[-1]} in there. A proc filesystem lists the PID namespace it was "
                    "mounted from; a piece of another one bind-mounted there does not count."
                    + stayed)
    others = [p for p in members if p is not leader]
    if not others:
        return (f"pid:[{ns}] has its own PID 1 and its own /proc, but its PID 1 is alone: "
                "start one more process from that shell." + stayed)
    if not children:
        p = others[0]
        return (f"pid:[{ns}] holds `{_cmd(p)}` (PID {p.nspids[-1]} in there), but PID 1 did "
                "not start it: it was started from outside the namespace (by nsenter or "
                "the like). Start it from the shell that is PID 1.")
    if len(others) > 1:
        seen = ", ".join(f"{p.nspids[-1]} {p.comm}" for p in sorted(members,
                                                                   key=lambda p: p.nspids[-1]))
        return (f"PID namespace pid:[{ns}] holds {len(members)} processes ({seen}); the task "
                "asks for exactly two: PID 1 and one process it started.")
    return None


def uts_hostname(sb, params):
    want = params["hostname"]
    init = sb.init
    base = init.namespaces["uts"]
    sandbox_name = sb.hostname_of(init)
    vault_uts = _vault_ns(sb, params, "uts")
    own = [p for p in sb.processes() if p.namespaces.get("uts") not in (base, vault_uts)]
    if sandbox_name == want:
        # Checked first: a namespace unshared after this inherits the name without setting it.
        raise Fail(f"The sandbox's own hostname is now {want}: the name was set in the "
                   "sandbox's UTS namespace, so the whole sandbox was renamed. Set it back "
                   f"with `hostname {sb.hostname}`, then set the name in a UTS namespace of "
                   "its own.")
    for p in own:
        if sb.hostname_of(p) == want:
            return (f"Right: `{_cmd(p)}` (PID {p.pid}) runs in UTS namespace "
                    f"uts:[{p.namespaces['uts']}] named {want}, while the sandbox is still "
                    f"{sandbox_name}.")
    if own:
        p = own[0]
        raise Fail(f"`{_cmd(p)}` (PID {p.pid}) runs in a UTS namespace of its own "
                   f"(uts:[{p.namespaces['uts']}]), but its hostname is "
                   f"{sb.hostname_of(p)!r}; the task asks for {want!r}.")
    raise Fail("No process of yours runs in a UTS namespace of its own, so there is none to "
               "look at: a namespace ends with its last process. Keep a process running in "
               "it while you press Check.")


# ----------------------------------------------------------------- step 4: network

def net_veth(sb, params):
    a = f"192.168.{params['net']}.1"
    b = f"192.168.{params['net']}.2"
    port = int(params["port"])
    init = sb.init
    home = init.namespaces["net"]
    spaces = {n["inode"]: n for n in sb.net_namespaces}
    if home not in spaces:
        raise Fail("The sandbox's network namespace could not be read; try again.")

    def holding(ns, ip):
        for ifc in spaces[ns]["addresses"]:
            for addr in ifc["addresses"]:
                if addr["address"] == ip:
                    return ifc, addr
        return None, None

    ifc, addr = holding(home, a)
    if holding(home, b)[0] is not None:
        raise Fail(f"{b} is on the sandbox's own network namespace; it belongs to red, "
                   f"and {a} to the sandbox's end of the veth pair.")
    if ifc is None:
        raise Fail(f"No interface of the sandbox's network namespace has the address {a}/24 "
                   "(the sandbox's end of the veth pair).")
    problem = _link_problem(ifc, addr, a, "the sandbox's end")
    if problem:
        if ifc["up"] and ifc["kind"] == "veth":
            problem += (" Set red's end up in red too: `ip netns exec red ip link set v1 up`"
                        " (or `nsenter --net=/run/netns/red ip link set v1 up`).")
        raise Fail(problem)
    others = [ns for ns in spaces if ns != home]
    vault_net = _vault_ns(sb, params, "net")
    learner = [ns for ns in others if ns != vault_net]
    peer_ns = next((ns for ns in learner if holding(ns, b)[0] is not None), None)
    if peer_ns is None:
        if not learner:
            raise Fail(f"{ifc['ifname']} has {a} and is up, but no process lives in another "
                       "network namespace, so red is out of sight: a namespace kept only by "
                       "/run/netns/red has no process in it. The web server the task asks "
                       "for is that process.")
        names = "; ".join(f"net:[{ns}] has " + (", ".join(
            f"{i['ifname']}" + "".join(f" {x['address']}" for x in i["addresses"]
                                       if x["family"] == "inet")
            for i in spaces[ns]["addresses"]) or "no interfaces") for ns in learner)
        raise Fail(f"No other network namespace has {b}: {names}.")
    pifc, paddr = holding(peer_ns, b)
    problem = _link_problem(pifc, paddr, b, "red's end")
    if problem:
        raise Fail(problem)
    # One pair, as the kernel links it (IFLA_LINK and IFLA_LINK_NETNSID, read from the
    # host): each end names the other's namespace and ifindex. Nothing inside can fake it.
    mine, theirs = ifc["peer"], pifc["peer"]
    if mine != {"netns": peer_ns, "ifindex": pifc["index"]} or \
            theirs != {"netns": home, "ifindex": ifc["index"]}:
        raise Fail(f"{ifc['ifname']} ({a}) and {pifc['ifname']} ({b}) are both veths, but not "
                   f"the two ends of one pair: {_peer_text(ifc, spaces, home)}. A packet sent "
                   f"into {ifc['ifname']} comes out of its own peer, never out of "
                   f"{pifc['ifname']}.")
    listening = [s for s in sb.sockets if s["netns"] == peer_ns and s["proto"] == "tcp"
                 and s["port"] == port and s["address"] in (b, "0.0.0.0", "::")]
    if not listening:
        elsewhere = [s for s in sb.sockets if s["proto"] == "tcp" and s["port"] == port]
        where = ""
        if elsewhere:
            s = elsewhere[0]
            owner = ("the sandbox's own namespace" if s["netns"] == home
                     else f"net:[{s['netns']}]")
            where = f" (something listens on {s['address']}:{port} in {owner})"
        raise Fail(f"red (net:[{peer_ns}]) has {b}, but no web server listens on {b}:{port} in "
                   f"it{where}.")
    return (f"Right: {ifc['ifname']} ({a}) in the sandbox and {pifc['ifname']} ({b}) in red "
            f"(net:[{peer_ns}]) are the two ends of one veth pair, both up with carrier, "
            f"and red serves on port {port}.")


def _peer_text(ifc, spaces, home) -> str:
    peer = ifc["peer"]
    if peer is None or peer["netns"] is None:
        return f"the kernel links {ifc['ifname']} to a device outside your namespaces"
    where = ("the sandbox's own namespace" if peer["netns"] == home
             else f"net:[{peer['netns']}]")
    name = next((i["ifname"] for i in spaces.get(peer["netns"], {}).get("addresses", [])
                 if i["index"] == peer["ifindex"]), f"ifindex {peer['ifindex']}")
    return f"the kernel links {ifc['ifname']} to {name} in {where}"


def _link_problem(ifc, addr, ip, which) -> str | None:
    name = ifc["ifname"]
    if ifc["kind"] != "veth":
        return f"{ip} is on {name}, which is a {ifc['kind'] or 'loopback'} device, not a veth."
    if addr["prefixlen"] != 24:
        return f"{name} has {ip}/{addr['prefixlen']}; the task asks for {ip}/24."
    if not ifc["up"]:
        return f"{name} ({which}, {ip}) is down: a device must be set up in its namespace."
    if ifc["operstate"] != "UP":
        return (f"{name} ({which}, {ip}) is up but has no carrier (operstate "
                f"{ifc['operstate']}): the other end of its pair is down.")
    return None


# ----------------------------------------------------------------- step 5: system calls

PROGRAMS = ("/root/utsns", "/root/utsns.py")
# The learner's program runs this long under the host's tracer: enough for any start-up
# (Python imports included), short enough for a check.
TRACE_SECONDS = 2.5
TRACED = ["unshare", "clone", "clone3", "setns", "sethostname", "execve"]
# Where the host keeps the programs a learner could copy instead of writing one.
HOST_BIN_DIRS = ("/usr/bin", "/usr/sbin", "/usr/local/bin", "/usr/local/sbin",
                 "/usr/libexec", "/usr/lib/systemd")
PYTHON = "/usr/bin/python3"


def _host_copy(data: bytes) -> str | None:
    """The host binary whose bytes `data` are, if any. The checks run on the host, whose
    /usr is the one the sandbox's image starts from: only files of the same size are read."""
    size, digest = len(data), None
    for folder in HOST_BIN_DIRS:
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if not stat.S_ISREG(st.st_mode) or st.st_size != size:
                continue
            digest = digest or hashlib.sha256(data).digest()
            try:
                with open(entry.path, "rb") as f:
                    if hashlib.sha256(f.read()).digest() == digest:
                        return entry.path
            except OSError:
                continue
    return None


def uts_program(sb, params):
    found = {}
    for path in PROGRAMS:
        try:
            found[path] = sb.read_file(path, limit=16 << 20)
        except FileNotFoundError:
            continue
        except (InvalidRequest, TooLarge) as e:
            raise Fail(f"{path} is not a program file I can read ({e.message}).") from None
    if not found:
        raise Fail("There is no /root/utsns (a compiled program) and no /root/utsns.py: write "
                   "your program there. The check runs it itself, as `/root/utsns NAME` or "
                   "`python3 /root/utsns.py NAME`.")
    failures = []
    for path, data in found.items():
        try:
            return _judge_program(sb, path, data)
        except Fail as e:
            failures.append(e.message)
    raise Fail(" ".join(failures))


def _judge_program(sb, path: str, data: bytes) -> str:
    copy = _host_copy(data)
    if copy:
        raise Fail(f"{path} is a byte-for-byte copy of {copy}, a program of the system, not "
                   "one of yours. The task asks for a program that calls unshare() itself.")
    name = "probe-" + secrets.token_hex(3)
    argv = [PYTHON, path, name] if path.endswith(".py") else [path, name]
    shown = " ".join(["python3", path, name] if path.endswith(".py") else argv)
    before = sb.hostname_of(sb.init)
    out = sb.run(argv, timeout=TRACE_SECONDS, trace=TRACED)
    calls = out.syscalls
    renamed = _restore_hostname(sb, before)
    # Which program image made each call: a process's latest execve (one with none is a
    # fork of the program, which the tracer followed from its first execve on). A call
    # made after an execve of another file (the unshare command, a shell) is that
    # program's, not the learner's. Processes are told apart by host pid: a pid inside is
    # unknown for processes in a PID namespace the program made.
    start = next((c for c in calls if c.name == "execve" and c.ok), None)
    if start is None:
        raise Fail(f"`{shown}` did not start: {_tail(out.stderr) or f'exit {out.exit_code}'}.")
    image: dict[int, str] = {}
    made = None          # the program's own call with CLONE_NEWUTS (a success if any)
    foreign = None       # a CLONE_NEWUTS call by another program it ran, and that program
    named = []           # (sethostname call, whether the program had its namespace then)
    for c in calls:
        if c.name == "execve":
            if c.ok:
                image[c.host_pid] = c.args
            continue
        own = image.get(c.host_pid, start.args) == start.args
        if c.name in ("unshare", "clone", "clone3") and "CLONE_NEWUTS" in c.flags:
            if not own:
                foreign = foreign or (c, _exec_path(image[c.host_pid]))
            elif made is None or not made.ok:
                made = c
        elif c.name == "sethostname" and own and c.ok:
            named.append((c, made is not None and made.ok))
    where = f"I ran `{shown}` in your sandbox for {TRACE_SECONDS:g} s under strace (the host's)"
    if made is None:
        if foreign is not None:
            call, prog = foreign
            raise Fail(f"{where}: the {call.name}(CLONE_NEWUTS) call came from {prog}, "
                       "another program yours started, not from your program. The task asks "
                       "your program to make the call itself.")
        raise Fail(f"{where}: it made no unshare(), clone() or clone3() call with "
                   "CLONE_NEWUTS, so it stayed in the sandbox's UTS namespace." + renamed)
    if not made.ok:
        raise Fail(f"{where}: its {made.name}(CLONE_NEWUTS) call failed ({made.error or made.result}"
                   f"{', ' + _tail(out.stderr) if out.stderr.strip() else ''}); check its "
                   "return value." + renamed)
    inside = [c for c, after in named if after]
    if not inside:
        raise Fail(f"{where}: it made a new UTS namespace with {made.name}(), but did not "
                   f"set that namespace's hostname to its first argument, {name}."
                   + renamed)
    if not any(f'"{name}"' in c.args for c in inside):
        raise Fail(f"{where}: it made a new UTS namespace and named it "
                   f"{inside[0].args.split(',')[0]}, not {name}: the name must come from its "
                   "first argument.")
    if not out.timed_out:
        raise Fail(f"{where}: it made its UTS namespace and named it, then exited (status "
                   f"{out.exit_code}) before the {TRACE_SECONDS:g} s were up. A namespace lives "
                   "only while something is in it: the program must stay alive (e.g. pause()).")
    result = ("it returned 0" if made.name == "unshare"
              else f"its child, PID {made.result}, was born in the new namespace")
    return (f"Right: run as `{shown}`, your program called {made.name}(CLONE_NEWUTS) itself "
            f"({result}), set the new namespace's hostname to {name}, and stayed alive in "
            "it.")


def _restore_hostname(sb, before: str | None) -> str:
    """A program that calls sethostname() without a new UTS namespace renames the whole
    sandbox; the check ran it, so the check puts the name back. Feedback for the learner."""
    sb.refresh()
    now = sb.hostname_of(sb.init)
    if before is None or now == before:
        return ""
    # The sandbox's own hostname binary may be the learner's; only the fact below counts.
    sb.run(["hostname", before], timeout=2)
    back = sb.refresh().hostname_of(sb.init) == before
    return (f" Its sethostname() renamed the whole sandbox to {now!r}"
            + (f"; I set it back to {before!r}." if back
               else f": set it back with `hostname {before}`."))


def _exec_path(args: str) -> str:
    m = re.match(r'\s*"([^"]*)"', args)
    return m.group(1) if m else "another program"


def _tail(text: str, n: int = 160) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= n else "…" + text[-n:]
