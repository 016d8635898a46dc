"""Checks of the namespaces lab (docs/authoring.md).

Every check grades kernel facts the host reads: the namespace inodes of each process
(/proc/PID/ns on the host), the hostname of each UTS namespace (read by sandboxd from inside
that namespace, with uname), the interfaces of each network namespace a process is in
(netlink, from the host), listening sockets, and files resolved by the kernel in a
process's own mount namespace. A learner who is root inside the sandbox can bind-mount,
rename or echo whatever they like: none of it changes these facts.
"""

from __future__ import annotations

import re

from nslab.labkit.check import Fail
from sandbox.errors import InvalidRequest, NotFound
from sandbox.protocol import Reason

TYPES = ("cgroup", "ipc", "mnt", "net", "pid", "user", "uts")
ALIASES = {"mount": "mnt", "mounts": "mnt", "ns": "mnt", "newns": "mnt", "network": "net",
           "hostname": "uts", "users": "user", "cgroups": "cgroup", "process": "pid",
           "processes": "pid", "pids": "pid"}
# The net and user namespace numbers printed in the course document's example: another machine.
DOC_NUMBERS = {4026532281, 4026531837, 4026532278, 4026532276, 4026532279, 4026532277}


def _cmd(p) -> str:
    return " ".join(p.cmdline)[:70] or p.comm


def _vault(sb):
    """vaultd, the service the lab's setup.sh started (None if it is gone)."""
    found = sb.processes(comm="vaultd")
    return found[0] if found else None


def _vault_ns(sb, kind: str) -> int | None:
    v = _vault(sb)
    return v.namespaces.get(kind) if v else None


# ----------------------------------------------------------------- step 1: /proc/PID/ns

def ns_inode(sb, params, answer):
    init = sb.init
    truth = init.namespaces["net"]
    m = re.search(r"\d+", answer)
    if not m:
        raise Fail(f"{answer!r} has no number in it: the answer is the number between the "
                   "brackets of `net:[...]`.")
    n = int(m.group())
    if n == truth:
        return (f"Right: PID 1 is in network namespace net:[{truth}]. Every process that "
                f"shows this number shares PID 1's network stack.")
    same = [t for t, i in init.namespaces.items() if i == n]
    if same:
        raise Fail(f"{n} is PID 1's {same[0]} namespace, not its net namespace "
                   f"(look at the `net` link).")
    if n in DOC_NUMBERS:
        raise Fail(f"{n} is a number from the course document's example, printed on another "
                   "machine: namespace numbers differ from machine to machine. Read "
                   "/proc/1/ns/net in your own sandbox.")
    owner = next((p for p in sb.processes() if n in p.namespaces.values()), None)
    if owner is not None:
        kind = next(t for t, i in owner.namespaces.items() if i == n)
        raise Fail(f"{n} is the {kind} namespace of PID {owner.pid} ({_cmd(owner)}), not the "
                   "net namespace of PID 1.")
    raise Fail(f"{n} is not the inode number of PID 1's net namespace: `readlink "
               "/proc/1/ns/net` prints it.")


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
    init, vault = sb.init, _vault(sb)
    if vault is None:
        raise Fail("vaultd is not running any more (did you kill it?). Reset the sandbox from "
                   "the lab page to get it back.")
    truth = {t for t in TYPES if vault.namespaces.get(t) != init.namespaces.get(t)}
    given, unknown = _types(answer)
    if unknown:
        raise Fail(f"{', '.join(map(repr, unknown))} is not a namespace type; the types in "
                   f"/proc/PID/ns are {', '.join(TYPES)}.")
    if given == truth:
        return (f"Right: vaultd (PID {vault.pid}) has its own {', '.join(sorted(truth))} "
                "namespaces and shares every other one with PID 1.")
    wrong, missed = given - truth, truth - given
    parts = []
    if wrong:
        parts.append(f"vaultd shares its {', '.join(sorted(wrong))} namespace"
                     f"{'s' if len(wrong) > 1 else ''} with PID 1 (same inode number)")
    if missed:
        parts.append(f"you missed {len(missed)} type{'s' if len(missed) > 1 else ''} in which "
                     "they differ")
    raise Fail("Not quite: " + "; ".join(parts) + ". Compare `ls -l /proc/1/ns` with "
               f"`ls -l /proc/{vault.pid}/ns` link by link.")


# ----------------------------------------------------------------- step 2: nsenter

def vault_secret(sb, params, answer):
    given = answer.strip()
    if given == params["secret"]:
        return ("Right: that is the secret on vaultd's private tmpfs, which exists only in "
                "vaultd's mount namespace.")
    if given == params["decoy"]:
        raise Fail("That is the decoy: /run/vault/secret as the sandbox's own mount namespace "
                   "shows it. vaultd mounted a tmpfs over /run/vault in its own mount "
                   "namespace; read the file from in there (nsenter --target PID --mount).")
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
        raise Fail("No process runs in a PID namespace of its own. Run `unshare --pid --fork "
                   "--mount-proc bash`, start `sleep 1000 &` in that bash, and leave it open "
                   "(a namespace ends when its last process exits).")
    problems = []
    # Namespaces led by a bash first: their problem is the one to report.
    for ns, members in sorted(spaces.items(), key=lambda kv: not any(
            p.comm == "bash" and p.nspids[-1] == 1 for p in kv[1])):
        problem = _pid_ns_problem(sb, init, ns, members, procs)
        if problem is None:
            leader = next(p for p in members if p.nspids[-1] == 1)
            return (f"Right: PID namespace pid:[{ns}] has bash as its PID 1 (PID {leader.pid} "
                    f"outside) and a sleep, its own mount namespace and a /proc that shows "
                    f"only them.")
        problems.append(problem)
    raise Fail(problems[0])


def _pid_ns_problem(sb, init, ns, members, procs) -> str | None:
    leader = next((p for p in members if p.nspids and p.nspids[-1] == 1), None)
    if leader is None:
        return (f"PID namespace pid:[{ns}] has no PID 1 any more; start a new one with "
                "`unshare --pid --fork --mount-proc bash`.")
    if leader.comm != "bash":
        hint = ""
        parent = next((p for p in procs if p.host_pid == leader.ppid), None)
        if parent is not None and parent.comm == "bash" and parent.namespaces.get("pid") != ns:
            hint = (" Its parent bash stayed in the sandbox's PID namespace: without --fork, "
                    "unshare runs bash in the OLD namespace and bash's first child becomes "
                    "PID 1 of the new one.")
        return (f"PID 1 of the new PID namespace pid:[{ns}] is `{_cmd(leader)}`, not bash."
                + (hint or " Start it as `unshare --pid --fork --mount-proc bash`."))
    if leader.namespaces.get("mnt") == init.namespaces.get("mnt"):
        return (f"bash (PID {leader.pid}) is PID 1 of pid:[{ns}] but shares the sandbox's "
                "mount namespace, so its /proc is still the sandbox's and `ps` there lists "
                "every process of the sandbox. Add --mount-proc (it implies --mount).")
    inside = {p.nspids[-1] for p in members}
    outside = sorted((p for p in procs if p.namespaces.get("pid") != ns
                      and p.pid not in inside), key=lambda p: -p.pid)
    first = _proc_entry(sb, leader.pid, 1)
    if first != "proc":
        return (f"In bash's mount namespace /proc is not a proc filesystem (/proc/1/status "
                f"is {'missing' if first == 'absent' else 'a plain file'}). Mount a fresh "
                "one: --mount-proc.")
    if outside:
        stranger = outside[0]
        if _proc_entry(sb, leader.pid, stranger.pid) != "absent":
            return (f"bash is PID 1 of pid:[{ns}] with its own mount namespace, but /proc in "
                    f"there is still the sandbox's: it shows process {stranger.pid} "
                    f"({stranger.comm}), which lives outside. Mount a proc of the new "
                    "namespace: use --mount-proc.")
    others = [p for p in members if p is not leader]
    sleeps = [p for p in others if p.comm == "sleep"]
    if not others:
        return (f"bash is PID 1 of pid:[{ns}] with its own /proc, but it is alone: start "
                "`sleep 1000 &` in that bash.")
    if len(others) > 1 or not sleeps:
        seen = ", ".join(f"{p.nspids[-1]} {p.comm}" for p in sorted(members,
                                                                   key=lambda p: p.nspids[-1]))
        return (f"PID namespace pid:[{ns}] holds {len(members)} processes ({seen}); the task "
                "asks for exactly two: bash as PID 1 and one sleep.")
    return None


def uts_hostname(sb, params):
    want = params["hostname"]
    init = sb.init
    base = init.namespaces["uts"]
    sandbox_name = sb.hostname_of(init)
    vault_uts = _vault_ns(sb, "uts")
    own = [p for p in sb.processes() if p.namespaces.get("uts") not in (base, vault_uts)]
    if sandbox_name == want:
        # Checked first: a namespace unshared after this inherits the name without setting it.
        raise Fail(f"The sandbox's own hostname is now {want}: `hostname` ran in the sandbox's "
                   "UTS namespace and renamed the whole sandbox. Set it back with `hostname "
                   f"{sb.hostname}`, then make a new UTS namespace (`unshare --uts`) and set "
                   "the name in there.")
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
               "look at: a namespace ends with its last process. Keep one running in it, e.g. "
               "`sleep 1000 &` inside the unshared bash.")


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
            problem += (" In red, run commands with `nsenter --net=/run/netns/red ...`: "
                        "`ip netns exec` cannot work in a container.")
        raise Fail(problem)
    others = [ns for ns in spaces if ns != home]
    vault_net = _vault_ns(sb, "net")
    learner = [ns for ns in others if ns != vault_net]
    peer_ns = next((ns for ns in learner if holding(ns, b)[0] is not None), None)
    if peer_ns is None:
        if not learner:
            raise Fail(f"{ifc['ifname']} has {a} and is up, but no process lives in another "
                       "network namespace, so red is out of sight: a namespace kept only by "
                       "/run/netns/red has no process in it. Start the web server in red as "
                       "the task says.")
        names = "; ".join(f"net:[{ns}] has " + (", ".join(
            f"{i['ifname']}" + "".join(f" {x['address']}" for x in i["addresses"]
                                       if x["family"] == "inet")
            for i in spaces[ns]["addresses"]) or "no interfaces") for ns in learner)
        raise Fail(f"No other network namespace has {b}: {names}.")
    pifc, paddr = holding(peer_ns, b)
    problem = _link_problem(pifc, paddr, b, "red's end")
    if problem:
        raise Fail(problem)
    listening = [s for s in sb.sockets if s["netns"] == peer_ns and s["proto"] == "tcp"
                 and s["port"] == port and s["address"] in (b, "0.0.0.0", "::")]
    if not listening:
        elsewhere = [s for s in sb.sockets if s["proto"] == "tcp" and s["port"] == port]
        where = ""
        if elsewhere:
            s = elsewhere[0]
            where = (f" (something listens on {s['address']}:{port} in "
                     f"{'the sandbox' + chr(39) + 's own namespace' if s['netns'] == home else 'net:[%d]' % s['netns']})")
        raise Fail(f"red (net:[{peer_ns}]) has {b}, but no web server listens on {b}:{port} in "
                   f"it{where}. Start it with nsenter --net=/run/netns/red.")
    # The kernel facts above are read from the host. That the two veths are the two ends of
    # ONE pair is not in them, so the grader pings across too (this ping runs inside).
    out = sb.run(["ping", "-c", "1", "-W", "2", b], timeout=4)
    if out.exit_code != 0:
        raise Fail(f"The addresses are right, but {b} does not answer a ping from the sandbox: "
                   f"are {ifc['ifname']} and {pifc['ifname']} the two ends of one veth pair?")
    return (f"Right: {ifc['ifname']} ({a}) in the sandbox and {pifc['ifname']} ({b}) in red "
            f"(net:[{peer_ns}]) are up, a ping crosses, and red serves on port {port}.")


def _link_problem(ifc, addr, ip, which) -> str | None:
    name = ifc["ifname"]
    if ifc["kind"] != "veth":
        return f"{ip} is on {name}, which is a {ifc['kind'] or 'loopback'} device, not a veth."
    if addr["prefixlen"] != 24:
        return f"{name} has {ip}/{addr['prefixlen']}; the task asks for {ip}/24."
    if not ifc["up"]:
        return f"{name} ({which}, {ip}) is down: `ip link set {name} up` in its namespace."
    if ifc["operstate"] != "UP":
        return (f"{name} ({which}, {ip}) is up but has no carrier (operstate "
                f"{ifc['operstate']}): the other end of the pair is down. Bring it up too.")
    return None


# ----------------------------------------------------------------- step 5: system calls

TOOLS = ("/usr/bin/unshare", "/usr/bin/nsenter", "/usr/bin/sleep", "/usr/bin/bash",
         "/usr/bin/dash")
NS_CALLS = (b"\0unshare\0", b"\0setns\0", b"\0clone\0", b"\0clone3\0", b"\0syscall\0")


def _program_file(p) -> str | None:
    """The file of the learner's program: the executable, or the Python script."""
    python = p.comm.startswith("python")
    args = p.cmdline[1:] if python else p.cmdline[:1]
    if python:
        args = [a for a in args if not a.startswith("-")][:1]
    if not args:
        return None
    path = args[0]
    return path if path.startswith("/") else "/root/" + path.removeprefix("./")


def _is_program(p) -> bool:
    if p.comm == "utsns":
        return bool(p.cmdline) and p.cmdline[0].rsplit("/", 1)[-1] == "utsns"
    if p.comm.startswith("python"):
        path = _program_file(p)
        return bool(path) and path.rsplit("/", 1)[-1] == "utsns.py"
    return False


def uts_program(sb, params):
    want = params["progname"]
    init = sb.init
    base = init.namespaces["uts"]
    vault_uts = _vault_ns(sb, "uts")
    procs = sb.processes()
    programs = [p for p in procs if _is_program(p)]
    own = [p for p in procs if p.namespaces.get("uts") not in (base, vault_uts)]
    named = [p for p in own if sb.hostname_of(p) == want]
    for p in named:
        if _is_program(p):
            _verify_program(sb, p)
            return (f"Right: your program `{_cmd(p)}` (PID {p.pid}) made UTS namespace "
                    f"uts:[{p.namespaces['uts']}] itself and named it {want}.")
    if named:
        def argv0(p):
            return p.cmdline[0].rsplit("/", 1)[-1] if p.cmdline else ""
        # The one posing as the program first (a renamed process has helpers beside it).
        p = min(named, key=lambda p: (p.comm != "utsns" and argv0(p) != "utsns", p.pid))
        if p.comm == "utsns" or argv0(p) == "utsns":
            raise Fail(f"The process in UTS namespace uts:[{p.namespaces['uts']}] named {want} "
                       f"is `{_cmd(p)}`, and the kernel knows it as {p.comm!r}: its name was "
                       "changed, but it is not your program.")
        raise Fail(f"The process in UTS namespace uts:[{p.namespaces['uts']}] named {want} is "
                   f"`{_cmd(p)}` (the kernel calls it {p.comm!r}): the unshare command made "
                   "that namespace. This task wants your own program to call unshare().")
    for p in programs:
        if p.namespaces.get("uts") in (base, vault_uts):
            renamed = ""
            if sb.hostname_of(init) != sb.hostname:
                renamed = (f" Its sethostname() renamed the whole sandbox to "
                           f"{sb.hostname_of(init)!r}; set it back with `hostname "
                           f"{sb.hostname}`.")
            raise Fail(f"Your program `{_cmd(p)}` (PID {p.pid}) runs in the sandbox's own UTS "
                       "namespace: it has not called unshare(CLONE_NEWUTS), or the call failed "
                       "(check its return value)." + renamed)
        raise Fail(f"Your program `{_cmd(p)}` (PID {p.pid}) has a UTS namespace of its own, "
                   f"but its hostname is {sb.hostname_of(p)!r}; the task asks for {want!r}.")
    raise Fail("Your program is not running: start it in the background (`/root/utsns "
               f"{want} &` or `python3 /root/utsns.py {want} &`) and leave it running.")


def _verify_program(sb, p) -> None:
    path = _program_file(p)
    try:
        data = sb.read_file(path, pid=p.pid, limit=8 << 20)
    except (FileNotFoundError, NotFound):
        raise Fail(f"I cannot find your program's file at {path}: start it with its full path "
                   "(/root/utsns or /root/utsns.py).") from None
    for tool in TOOLS:
        try:
            if sb.read_file(tool, limit=8 << 20) == data:
                raise Fail(f"{path} is a copy of {tool}, not a program of yours.")
        except (FileNotFoundError, NotFound, InvalidRequest):
            continue
    if p.comm.startswith("python"):
        if not re.search(rb"unshare|setns|clone", data):
            raise Fail(f"{path} does not call unshare(), setns() or clone(): the namespace "
                       "must come from your program.")
    elif not any(call in data for call in NS_CALLS):
        raise Fail(f"{path} does not call unshare(), setns() or clone(): the namespace must "
                   "come from your program.")
