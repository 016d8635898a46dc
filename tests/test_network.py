"""The sandbox network on the real kernel: bridge, veths, nftables isolation, inspection.

Every sandbox here is a real process in a fresh user + net namespace (`unshare`), with
its root mapped to an unprivileged host uid block as the engine does. Traffic goes only
to loopback and to those namespaces; the daemon name, bridge, veths and nft tables are
unique to each test and are checked to be gone afterwards.
"""

from __future__ import annotations

import gc
import json
import os
import random
import shutil
import socket
import statistics
import struct
import subprocess
import threading
import time
from ipaddress import IPv4Address
from uuid import uuid4

import pytest

from nslab.labkit.check import SandboxView
from sandbox.config import UID_BASE, UID_BLOCK, UID_BLOCKS, HostConfig
from sandbox.errors import CapacityExhausted, Conflict, InvalidRequest, NotFound
from sandbox.network import Network
from sandbox.nsenter import in_netns
from sandbox.protocol import Reason

TIMEOUT = 1.0  # seconds a connect or ping may take before it counts as blocked
MAPPED_UID = UID_BASE + UID_BLOCK * (UID_BLOCKS - 1)  # root inside -> an unused host block


def require_privileges() -> None:
    """Fail, never skip: a privileged test that cannot run must not pass silently."""
    if os.geteuid() != 0:
        pytest.fail("tests/test_network.py needs root (it builds bridges, veths, nft tables)")
    for tool in ("nft", "unshare", "nsenter", "ip", "bridge"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed; the network tests need it")


def links() -> list[dict]:
    return json.loads(subprocess.run(["ip", "-j", "link", "show"], check=True,
                                     capture_output=True, text=True).stdout)


def nft_tables() -> str:
    return subprocess.run(["nft", "list", "tables"], check=True, capture_output=True,
                          text=True).stdout


def ip_json(pid: int, *args: str) -> list[dict]:
    out = subprocess.run(["nsenter", "-t", str(pid), "-n", "ip", "-j", *args], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out)


def bridge_json(*args: str) -> list[dict]:
    return json.loads(subprocess.run(["bridge", "-j", *args], check=True,
                                     capture_output=True, text=True).stdout)


def host_neighbours(net: Network) -> list[dict]:
    return json.loads(subprocess.run(["ip", "-j", "neigh", "show", "dev", net.bridge],
                                     check=True, capture_output=True, text=True).stdout)


def in_sandbox(pid: int, *command: str) -> None:
    """Run a command as root of the sandbox would (net namespace of `pid`)."""
    subprocess.run(["nsenter", "-t", str(pid), "-n", *command], check=True)


@pytest.fixture
def network():
    """A set-up Network with a unique name and subnet; everything it made is gone after."""
    require_privileges()
    threads = set(threading.enumerate())
    fds = set(os.listdir("/proc/self/fd"))
    for _ in range(5):
        # Other daemons (a developer's, an e2e run's) may be using a subnet nearby.
        subnet = f"10.{random.randint(213, 250)}.{random.randint(0, 255)}.0/24"
        net = Network(HostConfig(name=f"nt{uuid4().hex[:6]}", subnet=subnet))
        try:
            net.setup()
            break
        except Conflict as e:
            if e.field != "subnet":
                raise
    else:
        pytest.fail("no free test subnet found in 10.213.0.0 - 10.250.255.255")
    try:
        yield net
    finally:
        net.teardown()
        gc.collect()  # an unclosed pyroute2 event loop or socket warns here, as an error
        assert set(threading.enumerate()) == threads, "threads left running"
        assert set(os.listdir("/proc/self/fd")) == fds, "file descriptors leaked"
        left = [link["ifname"] for link in links()
                if link["ifname"].startswith((net.veth_prefix, net.bridge))]
        assert left == [], f"links left behind: {left}"
        assert net.table not in nft_tables(), f"nft table {net.table} left behind"


class Sandboxes:
    """Processes that each own a new user + net namespace, like a sandbox's init."""

    def __init__(self):
        self.procs: dict[int, subprocess.Popen] = {}
        self.ours = os.readlink("/proc/self/ns/net")

    def __call__(self) -> int:
        proc = subprocess.Popen(["unshare", "--user", "--net", "--", "sleep", "60"])
        self.procs[proc.pid] = proc
        deadline = time.monotonic() + 5
        while os.readlink(f"/proc/{proc.pid}/ns/net") == self.ours:
            assert time.monotonic() < deadline, "unshare did not make a netns"
            time.sleep(0.001)
        for kind in ("uid", "gid"):
            with open(f"/proc/{proc.pid}/{kind}_map", "w") as f:
                f.write(f"0 {MAPPED_UID} 65536\n")
        return proc.pid

    def kill(self, pid: int) -> None:
        proc = self.procs[pid]
        proc.kill()
        proc.wait()

    def close(self) -> None:
        for proc in self.procs.values():
            proc.kill()
            proc.wait()


@pytest.fixture
def make_netns():
    """Call it to start a process in a fresh user + net namespace; returns its pid."""
    sandboxes = Sandboxes()
    try:
        yield sandboxes
    finally:
        sandboxes.close()


def socket_in(pid: int, family=socket.AF_INET, kind=socket.SOCK_STREAM, proto=0):
    """A socket made inside the net namespace of `pid` (a socket keeps its netns)."""
    fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        return in_netns(fd, lambda: socket.socket(family, kind, proto))
    finally:
        os.close(fd)


def listener(sock: socket.socket, address: str) -> int:
    sock.bind((address, 0))
    sock.listen()
    return sock.getsockname()[1]


def connects(sock: socket.socket, address: str, port: int) -> bool:
    """True if a TCP connection is made; False if it is refused or times out."""
    sock.settimeout(TIMEOUT)
    try:
        sock.connect((address, port))
    except (TimeoutError, ConnectionRefusedError):
        return False
    return True


def _checksum(data: bytes) -> int:
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def pings(sock: socket.socket, address: str) -> bool:
    """Send one ICMP echo through raw socket `sock`; True if `address` answers in time."""
    ident = random.randint(1, 0xFFFF)
    header = struct.pack("!BBHHH", 8, 0, 0, ident, 1)
    payload = b"nslab-test"
    packet = struct.pack("!BBHHH", 8, 0, _checksum(header + payload), ident, 1) + payload
    sock.settimeout(TIMEOUT)
    sock.sendto(packet, (address, 0))
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        try:
            data, (source, _) = sock.recvfrom(2048)
        except TimeoutError:
            return False
        icmp = data[(data[0] & 0x0F) * 4:]
        if source == address and icmp[0] == 0 and struct.unpack("!H", icmp[4:6])[0] == ident:
            return True
    return False


def raw_icmp(pid: int | None = None) -> socket.socket:
    if pid is None:
        return socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    return socket_in(pid, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)


# -- tests ----------------------------------------------------------------------------

@pytest.mark.privileged
def test_attach_gives_the_netns_eth0_address_and_default_route(network, make_netns):
    pid = make_netns()
    address = network.allocate(set())
    info = network.attach("sbx0001aaaa", pid, address)

    assert info.veth == f"{network.veth_prefix}sbx0001aa"
    assert (info.address, info.prefixlen, info.gateway) == (
        str(address), network.network.prefixlen, str(network.gateway))
    assert info.mac is not None  # and eth0 has it (below)

    inside = {link["ifname"]: link for link in ip_json(pid, "addr")}
    eth0 = inside["eth0"]
    assert "UP" in eth0["flags"] and eth0["address"] == info.mac
    assert [(a["local"], a["prefixlen"]) for a in eth0["addr_info"] if a["family"] == "inet"] \
        == [(str(address), network.network.prefixlen)]
    assert "UP" in inside["lo"]["flags"]
    routes = ip_json(pid, "route")
    assert {"dst": "default", "gateway": str(network.gateway), "dev": "eth0"}.items() \
        <= next(r for r in routes if r["dst"] == "default").items()

    (host_end,) = [link for link in links() if link["ifname"] == info.veth]
    assert host_end["master"] == network.bridge and "UP" in host_end["flags"]
    assert network.veths() == [info.veth]

    # The bridge port is locked down: no learning or flooding, isolated, and the
    # sandbox's MAC pinned to it; the host's ARP entry for the address is permanent.
    (port,) = bridge_json("-d", "link", "show", "dev", info.veth)
    assert (port["learning"], port["flood"], port["mcast_flood"], port["bcast_flood"],
            port["isolated"]) == (False, False, False, False, True)
    assert {"mac": info.mac, "flags": ["sticky"], "master": network.bridge,
            "state": "static"} in bridge_json("fdb", "show", "dev", info.veth)
    assert {"dst": str(address), "lladdr": info.mac, "state": ["PERMANENT"]} \
        in host_neighbours(network)

    seen = {i["ifname"]: i for i in network.addresses(pid)}
    assert seen["eth0"]["up"] and seen["eth0"]["mac"] == info.mac
    assert {"family": "inet", "address": str(address),
            "prefixlen": network.network.prefixlen} in seen["eth0"]["addresses"]
    assert {"family": "inet", "address": "127.0.0.1", "prefixlen": 8} \
        in seen["lo"]["addresses"]


@pytest.mark.privileged
def test_host_reaches_a_server_inside_and_pings_it(network, make_netns):
    pid = make_netns()
    address = str(network.allocate(set()))
    network.attach("sbxhost01", pid, IPv4Address(address))
    with socket_in(pid) as server, socket.socket() as client, raw_icmp() as icmp:
        port = listener(server, "0.0.0.0")
        assert connects(client, address, port)
        conn, (peer, _) = server.accept()
        with conn:
            assert peer == str(network.gateway)  # the host talks from its bridge address
            conn.sendall(b"hello from inside")
            assert client.recv(100) == b"hello from inside"
        assert pings(icmp, address)


@pytest.mark.privileged
def test_sandbox_cannot_reach_host_services(network, make_netns):
    pid = make_netns()
    network.attach("sbxnohost", pid, network.allocate(set()))
    gateway = str(network.gateway)
    with socket.socket() as on_gateway, socket.socket() as on_loopback:
        gateway_port = listener(on_gateway, gateway)
        loopback_port = listener(on_loopback, "127.0.0.1")
        with socket_in(pid) as a, socket_in(pid) as b, raw_icmp(pid) as icmp:
            assert not connects(a, gateway, gateway_port)
            # 127.0.0.1 inside is the sandbox's own loopback, never the host's.
            assert not connects(b, "127.0.0.1", loopback_port)
            assert not pings(icmp, gateway)
        for server in (on_gateway, on_loopback):
            server.setblocking(False)
            with pytest.raises(BlockingIOError):
                server.accept()  # nothing ever arrived


@pytest.mark.privileged
def test_sandboxes_cannot_reach_each_other(network, make_netns):
    pid_a, pid_b = make_netns(), make_netns()
    addr_a = network.allocate(set())
    addr_b = network.allocate({addr_a})
    network.attach("sbxpeer0a", pid_a, addr_a)
    network.attach("sbxpeer0b", pid_b, addr_b)
    with socket_in(pid_b) as server, socket.socket() as from_host, \
            socket_in(pid_a) as from_a, raw_icmp(pid_a) as icmp_a, raw_icmp() as icmp_host:
        port = listener(server, "0.0.0.0")
        assert connects(from_host, str(addr_b), port)  # B is up and serving
        assert pings(icmp_host, str(addr_a))  # A is up
        assert not connects(from_a, str(addr_b), port)
        assert not pings(icmp_a, str(addr_b))
    neighbours = ip_json(pid_a, "neigh", "show", "dev", "eth0")
    assert not [n for n in neighbours
                if n["dst"] == str(addr_b) and "lladdr" in n], "A learned B's MAC"


@pytest.mark.privileged
def test_each_isolation_layer_alone_keeps_sandboxes_apart(network, make_netns):
    """Port isolation, the bridge table and the inet forward hook each block A -> B.

    A is handed B's MAC as a static neighbour, so ARP (which the ports never flood)
    is out of the way and only the layer under test can stop the connection.
    """
    pid_a, pid_b = make_netns(), make_netns()
    addr_a = network.allocate(set())
    addr_b = network.allocate({addr_a})
    info_a = network.attach("sbxlayer1", pid_a, addr_a)
    info_b = network.attach("sbxlayer2", pid_b, addr_b)
    in_sandbox(pid_a, "ip", "neigh", "replace", str(addr_b), "lladdr", info_b.mac,
               "dev", "eth0", "nud", "permanent")
    in_sandbox(pid_b, "ip", "neigh", "replace", str(addr_a), "lladdr", info_a.mac,
               "dev", "eth0", "nud", "permanent")

    def a_reaches_b() -> bool:
        with socket_in(pid_b) as server, socket_in(pid_a) as client:
            return connects(client, str(addr_b), listener(server, "0.0.0.0"))

    def isolated(on: bool) -> None:
        for veth in (info_a.veth, info_b.veth):
            subprocess.run(["ip", "link", "set", "dev", veth, "type", "bridge_slave",
                            "isolated", "on" if on else "off"], check=True)

    def flush(family: str) -> None:
        subprocess.run(["nft", "flush", "chain", family, network.table, "forward"],
                       check=True)

    flush("bridge")
    flush("inet")
    assert not a_reaches_b(), "port isolation alone"
    isolated(False)
    assert a_reaches_b(), "with every layer off A reaches B: the test can see a leak"
    network.setup()  # reloads both tables
    flush("inet")
    assert not a_reaches_b(), "the bridge table alone"
    with open("/proc/sys/net/bridge/bridge-nf-call-iptables") as f:
        br_netfilter = f.read().strip() == "1"
    if br_netfilter:  # bridged IPv4 then passes the inet hooks too (iifname = bridge)
        network.setup()
        flush("bridge")
        assert not a_reaches_b(), "the inet forward hook alone"


@pytest.mark.privileged
def test_a_sandbox_cannot_take_over_another_sandboxs_address(network, make_netns):
    pid_a, pid_b = make_netns(), make_netns()
    addr_a = network.allocate(set())
    addr_b = network.allocate({addr_a})
    network.attach("sbxthief1", pid_a, addr_a)
    info_b = network.attach("sbxvictim", pid_b, addr_b)
    # A's root takes B's MAC and address and talks to the host (ARP, SYN) with them.
    in_sandbox(pid_a, "ip", "link", "set", "eth0", "down")
    in_sandbox(pid_a, "ip", "link", "set", "eth0", "address", info_b.mac)
    in_sandbox(pid_a, "ip", "addr", "add", f"{addr_b}/{network.network.prefixlen}",
               "dev", "eth0")
    in_sandbox(pid_a, "ip", "link", "set", "eth0", "up")
    with socket_in(pid_a) as probe:
        probe.bind((str(addr_b), 0))
        assert not connects(probe, str(network.gateway), 9)
    with socket_in(pid_b) as victim, socket_in(pid_a) as thief, socket.socket() as client:
        port = listener(victim, "0.0.0.0")
        thief.bind(("0.0.0.0", port))
        thief.listen()
        assert connects(client, str(addr_b), port)
        victim.settimeout(TIMEOUT)
        conn, _ = victim.accept()  # B got it, not A
        conn.close()
        thief.setblocking(False)
        with pytest.raises(BlockingIOError):
            thief.accept()
    assert {"dst": str(addr_b), "lladdr": info_b.mac, "state": ["PERMANENT"]} \
        in host_neighbours(network)


@pytest.mark.privileged
def test_detach_removes_the_veth_and_tolerates_absence(network, make_netns):
    pid = make_netns()
    address = network.allocate(set())
    info = network.attach("sbxdetach", pid, address)
    network.detach("sbxdetach")
    assert info.veth not in [link["ifname"] for link in links()]
    assert "eth0" not in [link["ifname"] for link in ip_json(pid, "link")]
    assert network.veths() == []
    assert str(address) not in [n["dst"] for n in host_neighbours(network)]
    network.detach("sbxdetach")  # a second detach finds nothing and is fine


@pytest.mark.privileged
def test_detach_after_the_sandbox_exited_drops_its_neighbour_entry(network, make_netns):
    pid = make_netns()
    address = network.allocate(set())
    info = network.attach("sbxexited", pid, address)
    make_netns.kill(pid)  # its netns, and with it the veth, goes away
    deadline = time.monotonic() + 5
    while info.veth in [link["ifname"] for link in links()]:
        assert time.monotonic() < deadline, "veth outlived its netns"
        time.sleep(0.02)
    network.detach("sbxexited")
    assert str(address) not in [n["dst"] for n in host_neighbours(network)]


@pytest.mark.privileged
def test_setup_twice_is_idempotent_and_keeps_sandboxes_working(network, make_netns):
    pid = make_netns()
    address = str(network.allocate(set()))
    network.attach("sbxtwice1", pid, IPv4Address(address))
    network.setup()
    (bridge,) = [link for link in links() if link["ifname"] == network.bridge]
    addrs = json.loads(subprocess.run(["ip", "-j", "addr", "show", "dev", network.bridge],
                                      check=True, capture_output=True, text=True).stdout)
    assert [(a["local"], a["prefixlen"]) for a in addrs[0]["addr_info"]
            if a["family"] == "inet"] == [(str(network.gateway), network.network.prefixlen)]
    assert "UP" in bridge["flags"]
    tables = nft_tables().splitlines()
    assert tables.count(f"table inet {network.table}") == 1
    assert tables.count(f"table bridge {network.table}") == 1
    ruleset = subprocess.run(["nft", "list", "table", "inet", network.table], check=True,
                             capture_output=True, text=True).stdout
    assert ruleset.count("drop") == 3  # input drop, forward in and out; not doubled
    with socket_in(pid) as server, socket.socket() as client:
        port = listener(server, "0.0.0.0")
        assert connects(client, address, port)


@pytest.mark.privileged
def test_setup_refuses_a_subnet_already_in_use_and_makes_nothing(network):
    other = Network(HostConfig(name=f"nt{uuid4().hex[:6]}", subnet=str(network.network)))
    with pytest.raises(Conflict, match="overlaps") as caught:
        other.setup()
    assert caught.value.field == "subnet"
    assert other.bridge not in [link["ifname"] for link in links()]
    assert other.table not in nft_tables()
    other.teardown()  # nothing there; still fine


@pytest.mark.privileged
def test_listening_sockets_are_read_from_the_host_side(network, make_netns):
    pid = make_netns()
    address = str(network.allocate(set()))
    network.attach("sbxlisten", pid, IPv4Address(address))
    with socket_in(pid) as tcp4, socket_in(pid, socket.AF_INET6) as tcp6, \
            socket_in(pid, socket.AF_INET, socket.SOCK_DGRAM) as udp4, \
            socket_in(pid) as outgoing, socket.socket() as host_server:
        port4 = listener(tcp4, "0.0.0.0")
        port6 = listener(tcp6, "::")
        udp4.bind((address, 0))
        udp_port = udp4.getsockname()[1]
        host_port = listener(host_server, "127.0.0.1")  # a host socket must not show up
        assert connects(outgoing, "127.0.0.1", port4)  # ESTABLISHED sockets: not listed
        found = network.listening_sockets(pid)
    keyed = {(s["proto"], s["family"], s["address"], s["port"]): s for s in found}
    assert keyed[("tcp", "inet", "0.0.0.0", port4)]["state"] == "LISTEN"
    assert keyed[("tcp", "inet6", "::", port6)]["state"] == "LISTEN"
    assert keyed[("udp", "inet", address, udp_port)]["state"] == "UNCONN"
    assert all(s["inode"] > 0 for s in found)
    assert host_port not in [s["port"] for s in found]
    assert {s["state"] for s in found if s["proto"] == "tcp"} == {"LISTEN"}


@pytest.mark.privileged
def test_veth_peers_name_each_others_namespace_and_ifindex(network, make_netns):
    a, b = make_netns(), make_netns()
    info = network.attach("sbxpeers", a, network.allocate(set()))
    # A pair with one end moved into b's namespace, and a pair with both ends in a.
    in_sandbox(a, "ip", "link", "add", "pa", "type", "veth", "peer", "name", "pb",
               "netns", f"/proc/{b}/ns/net")
    in_sandbox(a, "ip", "link", "add", "s0", "type", "veth", "peer", "name", "s1")
    ino = {pid: os.stat(f"/proc/{pid}/ns/net").st_ino for pid in (a, b)}
    found = network.interfaces({ino[a]: a, ino[b]: b})
    in_a = {i["ifname"]: i for i in found[ino[a]]}
    in_b = {i["ifname"]: i for i in found[ino[b]]}
    assert in_a["pa"]["peer"] == {"netns": ino[b], "ifindex": in_b["pb"]["index"]}
    assert in_b["pb"]["peer"] == {"netns": ino[a], "ifindex": in_a["pa"]["index"]}
    assert in_a["s0"]["peer"] == {"netns": ino[a], "ifindex": in_a["s1"]["index"]}
    assert in_a["s1"]["peer"] == {"netns": ino[a], "ifindex": in_a["s0"]["index"]}
    # eth0's other end is on the host's bridge: not one of the namespaces asked about.
    assert in_a["eth0"]["peer"] == {"netns": None,
                                    "ifindex": socket.if_nametoindex(info.veth)}
    assert in_a["lo"]["peer"] is None and in_b["lo"]["peer"] is None
    # Asked about alone, b's end names no namespace: a is not among those it knows.
    (alone,) = network.interfaces({ino[b]: b}).values()
    assert {i["ifname"]: i for i in alone}["pb"]["peer"]["netns"] is None
    # A pid that is not in the namespace named (exited, or reused) is left out.
    assert network.interfaces({ino[b]: a}) == {}


@pytest.mark.privileged
def test_inspect_reports_the_veth_pair_a_sandbox_root_made(client, sandbox):
    """Through sandboxd: the learner's pair is one pair by the kernel's word, not by names."""
    sid = sandbox["id"]
    out = client.run(sid, ["sh", "-c", """set -e
        ip netns add red
        ip link add v0 type veth peer name v1
        ip link set v1 netns red
        setsid -f nsenter --net=/run/netns/red sleep 1000 </dev/null >/dev/null 2>&1"""])
    assert out["exit_code"] == 0, out["stderr"]
    deadline = time.monotonic() + 5
    while True:  # setsid -f returns before the sleep in red has started
        facts = client.inspect(sid)
        home = next(p for p in facts["processes"] if p["pid"] == 1)["namespaces"]["net"]
        red = next((n for n in facts["net_namespaces"] if n["inode"] != home), None)
        if red is not None:
            break
        assert time.monotonic() < deadline, "the sleep in red did not start"
        time.sleep(0.05)
    in_home = {i["ifname"]: i for i in facts["addresses"]}
    in_red = {i["ifname"]: i for i in red["addresses"]}
    assert in_home["v0"]["peer"] == {"netns": red["inode"], "ifindex": in_red["v1"]["index"]}
    assert in_red["v1"]["peer"] == {"netns": home, "ifindex": in_home["v0"]["index"]}
    (own,) = [n for n in facts["net_namespaces"] if n["inode"] == home]
    assert own["addresses"] == facts["addresses"]
    # eth0's peer is the host end on the daemon's bridge: no namespace of the sandbox.
    assert in_home["eth0"]["peer"]["netns"] is None
    assert in_home["eth0"]["peer"]["ifindex"] > 0 and in_home["lo"]["peer"] is None
    # What a check sees: the other end by the kernel's word.
    sb = SandboxView(client, sid)
    assert sb.peer_of(home, in_home["v0"]) == (red["inode"], in_red["v1"])
    assert sb.peer_of(red["inode"], in_red["v1"]) == (home, in_home["v0"])
    assert sb.peer_of(home, in_home["eth0"]) is None and sb.peer_of(home, in_home["lo"]) is None
    assert {ifc["ifname"] for ns, ifc in sb.interfaces(red["inode"])} == {"lo", "v1"}


@pytest.mark.privileged
def test_failed_attach_leaves_nothing_behind(network, make_netns):
    pid = make_netns()
    first = network.allocate(set())
    second = network.allocate({first})
    network.attach("sbxfail01", pid, first)

    with pytest.raises(Conflict, match="already has an eth0"):
        network.attach("sbxfail02", pid, second)
    with pytest.raises(Conflict, match="already"):
        network.attach("sbxfail01", make_netns(), second)
    with pytest.raises(InvalidRequest):
        network.attach("sbxfail03", make_netns(), network.gateway)
    with pytest.raises(InvalidRequest):
        network.attach("sbxfail04", make_netns(), IPv4Address("10.251.0.7"))
    with pytest.raises(InvalidRequest):
        network.attach("bad/id", make_netns(), second)
    dead = make_netns()
    make_netns.kill(dead)
    with pytest.raises(NotFound) as e:
        network.attach("sbxfail05", dead, second)
    assert e.value.reason == Reason.NO_SUCH_PROCESS

    assert network.veths() == [f"{network.veth_prefix}sbxfail01"]
    assert str(second) not in [n["dst"] for n in host_neighbours(network)]
    with socket_in(pid) as server, socket.socket() as client:  # the first still works
        port = listener(server, "0.0.0.0")
        assert connects(client, str(first), port)


@pytest.mark.privileged
def test_attach_timing(network, make_netns, capsys):
    """Prints the median attach time; no assertion, the machine's load varies."""
    pids = [make_netns() for _ in range(15)]
    used: set[IPv4Address] = set()
    times = []
    for n, pid in enumerate(pids):
        address = network.allocate(used)
        used.add(address)
        start = time.perf_counter()
        network.attach(f"sbxtime{n:02d}", pid, address)
        times.append((time.perf_counter() - start) * 1000)
    with capsys.disabled():
        print(f"\nattach: median {statistics.median(times):.2f} ms, "
              f"min {min(times):.2f}, max {max(times):.2f} over {len(times)} sandboxes")


def test_allocate_skips_used_addresses_and_reports_exhaustion():
    net = Network(HostConfig(name=f"nt{uuid4().hex[:6]}", subnet="10.214.7.0/28"))
    assert net.gateway == IPv4Address("10.214.7.1")
    assert net.allocate(set()) == IPv4Address("10.214.7.2")
    used = {IPv4Address("10.214.7.2"), IPv4Address("10.214.7.3"), IPv4Address("10.214.7.5")}
    assert net.allocate(used) == IPv4Address("10.214.7.4")
    everything = {IPv4Address(f"10.214.7.{n}") for n in range(2, 15)}
    assert net.allocate(everything - {IPv4Address("10.214.7.14")}) == IPv4Address("10.214.7.14")
    with pytest.raises(CapacityExhausted, match="larger subnet"):
        net.allocate(everything)


def test_names_stay_within_ifnamsiz_and_are_per_daemon():
    one = Network(HostConfig(name="alpha", subnet="10.214.8.0/24"))
    two = Network(HostConfig(name="beta", subnet="10.214.9.0/24"))
    name = one.veth_name("0123456789abcdef")
    assert name == f"nl{one.tag}012345678" and len(name) <= 15
    assert one.bridge != two.bridge and one.table != two.table
    assert not name.startswith(two.veth_prefix)
    with pytest.raises(InvalidRequest):
        one.veth_name("../eth0")
