"""The sandbox network: one bridge per daemon, one veth per sandbox, nftables isolation.

What a sandbox may do, and what enforces it:

- The host reaches every sandbox address (the web app opens published ports that way).
- A sandbox reaches nothing on the host (loopback, the gateway, the host's other
  addresses): the `inet` table's input hook accepts from the bridge only packets of
  connections the host opened, and new TCP connections from a sandbox address to the
  gateway address on the host services' ports (`config.service_ports`: the read-only
  image registry and the package proxy of sandbox/services.py, which listen on that
  address only). Nothing else of the host: no other port, no UDP or ICMP to it.
- A sandbox reaches nothing beyond the host: forwarding to or from the bridge is dropped.
- A sandbox reaches no other sandbox, not even on layer 2 (ARP included): the `bridge`
  table drops every frame a port of ours would forward to another port, and each port
  is also marked `isolated`. (Where br_netfilter is loaded, the inet forward drop
  catches bridged IPv4 too.) Each of these alone is enough; the tests check that.
- A sandbox cannot take over another sandbox's address towards the host: the host keeps
  a permanent neighbour entry per sandbox address, each port has learning off and a
  sticky static FDB entry for its sandbox's MAC, and never floods unknown traffic.

The firewall is loaded once, atomically, with `nft -f -` in `setup()`; `attach()` runs
no subprocess, only netlink (pyroute2).

MAC addresses are derived from the sandbox address (`02:6e:<ip>` inside, `02:6f:<ip>`
on the host end), so the host ends of the live veths tell `detach()` which neighbour
entries are still in use, without any state kept in memory.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import re
import shutil
import socket
import struct
import subprocess
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

from pyroute2 import IPRoute, IPRSocket
from pyroute2.netlink import (
    NLM_F_ACK,
    NLM_F_CREATE,
    NLM_F_EXCL,
    NLM_F_REPLACE,
    NLM_F_REQUEST,
    nlmsg,
)
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl import RTM_NEWADDR, RTM_NEWLINK, RTM_NEWNEIGH, RTM_NEWROUTE
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import IFF_UP, ifinfmsg
from pyroute2.netlink.rtnl.ndmsg import NTF_MASTER, NTF_STICKY, NUD_NOARP, NUD_PERMANENT, ndmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from .config import HostConfig
from .errors import (
    CapacityExhausted,
    Conflict,
    HostUnsupported,
    InvalidRequest,
    NotFound,
    SandboxError,
    explain_oserror,
)
from .nsenter import in_netns
from .protocol import InterfaceFacts, Reason, VethPeer

SYSFS_NET = Path("/sys/class/net")

# linux/netlink.h, linux/rtnetlink.h
_REQUEST = NLM_F_REQUEST | NLM_F_ACK
_CREATE = _REQUEST | NLM_F_CREATE | NLM_F_EXCL
_REPLACE = _REQUEST | NLM_F_CREATE | NLM_F_REPLACE
RT_TABLE_MAIN = 254
RTPROT_BOOT = 3  # what `ip route add` uses
RT_SCOPE_UNIVERSE = 0
RTN_UNICAST = 1
LOOPBACK_IFINDEX = 1  # include/net/flow.h: lo is index 1 in every netns

# include/net/tcp_states.h
_TCP_LISTEN = 0x0A
_UDP_STATES = {0x07: "UNCONN", 0x01: "ESTAB"}

SANDBOX_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
SANDBOX_MAC_PREFIX = "02:6e"  # 'n'; locally administered, unicast
HOST_END_MAC_PREFIX = "02:6f"
BRIDGE_MAC_PREFIX = "02:62"  # 'b'


@dataclass
class NetInfo:
    """How one sandbox is wired: its host-side veth and what its eth0 got."""

    veth: str
    address: str
    prefixlen: int
    gateway: str
    mac: str | None = None


def _mac(prefix: str, address: IPv4Address) -> str:
    return prefix + "".join(f":{b:02x}" for b in address.packed)


def _address_from_mac(mac: str) -> IPv4Address | None:
    parts = mac.lower().split(":")
    if len(parts) != 6 or ":".join(parts[:2]) != HOST_END_MAC_PREFIX:
        return None
    return IPv4Address(bytes(int(p, 16) for p in parts[2:]))


class NetlinkFailure(SandboxError):
    """A netlink request the kernel refused; `errno` says why."""

    def __init__(self, what: str, code: int):
        name = errno.errorcode.get(code, str(code))
        super().__init__(f"{what} failed: {os.strerror(code)} [{name}]")
        self.errno = code


def _netlink_failure(what: str, err: NetlinkError) -> NetlinkFailure:
    return NetlinkFailure(what, err.code)


def _request(sock: IPRSocket, requests: list[tuple[str, nlmsg]]) -> None:
    """Send rtnetlink requests in one datagram, wait for every ack, raise the first error.

    This is `attach()`'s path. pyroute2's keyword API (`IPRoute.link(...)`) runs each
    request through its argument filters and an asyncio round trip: about 0.3 ms of
    Python per request, plus 0.3-0.6 ms to open. `IPRSocket` is pyroute2's plain
    synchronous socket; the messages are built with pyroute2's own classes and sent
    together. The kernel handles them in order before `send` returns and acks each.
    """
    pid = sock.epid or os.getpid()
    data = []
    for seq, (_, msg) in enumerate(requests, 1):
        msg["header"]["sequence_number"] = seq
        msg["header"]["pid"] = pid
        msg.encode()
        data.append(msg.data)
    # Every request asks for an ack, so the kernel always answers; the timeout only
    # turns a kernel bug into an error instead of a hung daemon thread.
    sock.socket.settimeout(10)
    sock.send(b"".join(data))
    pending = dict(enumerate((what for what, _ in requests), 1))
    failure = None
    while pending:
        for reply in sock.get():
            what = pending.pop(reply["header"]["sequence_number"], None)
            error = reply["header"]["error"]
            if what is not None and error is not None and failure is None:
                failure = (what, error)
    if failure is not None:
        what, error = failure
        if isinstance(error, NetlinkError):
            raise _netlink_failure(what, error)
        raise SandboxError(f"{what} failed: {error}")


def _veth_pair(name: str, host_mac: str, bridge_index: int, ns_fd: int,
               peer_mac: str) -> ifinfmsg:
    # `ip link add NAME address HOST_MAC master BRIDGE up type veth
    #  peer name eth0 address PEER_MAC netns NS_FD`
    msg = ifinfmsg()
    msg["flags"] = IFF_UP
    msg["change"] = IFF_UP
    msg["attrs"] = [
        ["IFLA_IFNAME", name],
        ["IFLA_ADDRESS", host_mac],
        ["IFLA_MASTER", bridge_index],
        ["IFLA_LINKINFO", {"attrs": [
            ["IFLA_INFO_KIND", "veth"],
            ["IFLA_INFO_DATA", {"attrs": [
                ["VETH_INFO_PEER", {"attrs": [
                    ["IFLA_IFNAME", "eth0"],
                    ["IFLA_ADDRESS", peer_mac],
                    ["IFLA_NET_NS_FD", ns_fd],
                ]}],
            ]}],
        ]}],
    ]
    msg["header"]["type"] = RTM_NEWLINK
    msg["header"]["flags"] = _CREATE
    return msg


def _link_up(index: int) -> ifinfmsg:
    msg = ifinfmsg()
    msg["index"] = index
    msg["flags"] = IFF_UP
    msg["change"] = IFF_UP
    msg["header"]["type"] = RTM_NEWLINK
    msg["header"]["flags"] = _REQUEST
    return msg


def _addr_add(index: int, iface: ipaddress.IPv4Interface) -> ifaddrmsg:
    msg = ifaddrmsg()
    msg["family"] = socket.AF_INET
    msg["prefixlen"] = iface.network.prefixlen
    msg["index"] = index
    address = str(iface.ip)
    msg["attrs"] = [
        ["IFA_LOCAL", address],
        ["IFA_ADDRESS", address],
        ["IFA_BROADCAST", str(iface.network.broadcast_address)],
    ]
    msg["header"]["type"] = RTM_NEWADDR
    msg["header"]["flags"] = _CREATE
    return msg


def _default_route(index: int, gateway: IPv4Address) -> rtmsg:
    msg = rtmsg()
    msg["family"] = socket.AF_INET
    msg["table"] = RT_TABLE_MAIN
    msg["proto"] = RTPROT_BOOT
    msg["scope"] = RT_SCOPE_UNIVERSE
    msg["type"] = RTN_UNICAST
    msg["attrs"] = [["RTA_GATEWAY", str(gateway)], ["RTA_OIF", index]]
    msg["header"]["type"] = RTM_NEWROUTE
    msg["header"]["flags"] = _CREATE
    return msg


def _permanent_neighbour(bridge_index: int, address: IPv4Address, mac: str) -> ndmsg:
    msg = ndmsg()
    msg["family"] = socket.AF_INET
    msg["ifindex"] = bridge_index
    msg["state"] = NUD_PERMANENT
    msg["attrs"] = [["NDA_DST", str(address)], ["NDA_LLADDR", mac]]
    msg["header"]["type"] = RTM_NEWNEIGH
    msg["header"]["flags"] = _REPLACE
    return msg


def _static_fdb(port_index: int, mac: str) -> ndmsg:
    # `bridge fdb replace MAC dev PORT master static sticky`: sticky keeps the entry
    # on this port even if another port sends frames from the same MAC.
    msg = ndmsg()
    msg["family"] = socket.AF_BRIDGE
    msg["ifindex"] = port_index
    msg["state"] = NUD_NOARP
    msg["flags"] = NTF_MASTER | NTF_STICKY
    msg["attrs"] = [["NDA_LLADDR", mac]]
    msg["header"]["type"] = RTM_NEWNEIGH
    msg["header"]["flags"] = _REPLACE
    return msg


def _locked_port(port_index: int) -> ifinfmsg:
    # `ip link set PORT type bridge_slave learning off flood off mcast_flood off
    #  bcast_flood off isolated on`
    msg = ifinfmsg()
    msg["index"] = port_index
    msg["attrs"] = [
        ["IFLA_LINKINFO", {"attrs": [
            ["IFLA_INFO_SLAVE_KIND", "bridge"],
            ["IFLA_INFO_SLAVE_DATA", {"attrs": [
                ["IFLA_BRPORT_LEARNING", 0],
                ["IFLA_BRPORT_UNICAST_FLOOD", 0],
                ["IFLA_BRPORT_MCAST_FLOOD", 0],
                ["IFLA_BRPORT_BCAST_FLOOD", 0],
                ["IFLA_BRPORT_ISOLATED", 1],
            ]}],
        ]}],
    ]
    msg["header"]["type"] = RTM_NEWLINK
    msg["header"]["flags"] = _REQUEST
    return msg


class Network:
    """One daemon's bridge, its sandboxes' veths, and the firewall around them."""

    def __init__(self, config: HostConfig):
        self.config = config
        self.tag = config.tag
        self.network: IPv4Network = config.network
        self.bridge = f"nlbr{self.tag}"
        # Every veth name starts with this; "nl" + 4 hex digits can never be a
        # prefix of another daemon's bridge ("nlbr...") or of another tag's veths.
        self.veth_prefix = f"nl{self.tag}"
        self.table = f"nslab_{self.tag}"
        self.gateway = config.gateway
        self.bridge_mac = f"{BRIDGE_MAC_PREFIX}:00:00:{self.tag[:2]}:{self.tag[2:]}"

    # -- naming -------------------------------------------------------------------

    def veth_name(self, sandbox_id: str) -> str:
        if not SANDBOX_ID_RE.match(sandbox_id):
            raise InvalidRequest(
                f"sandbox id {sandbox_id!r} must be letters, digits, '_' and '-'",
                field="sandbox_id",
            )
        return f"{self.veth_prefix}{sandbox_id[:9]}"

    # -- host side: bridge and firewall ---------------------------------------------

    def ruleset(self) -> str:
        """The nftables script `setup()` loads: replaces our two tables atomically."""
        br = self.bridge
        t = self.table
        ports = ", ".join(str(p) for p in self.config.service_ports)
        services = f"ip saddr {self.network} ip daddr {self.gateway} tcp dport {{ {ports} }}"
        # In the bridge family iifname is the port. Matching our veths by name rather
        # than with `meta ibrname` keeps this working on kernels built without
        # CONFIG_NFT_BRIDGE_META (the development VM's 6.18 kernel is one).
        # "table X {}" then "delete table X" makes the delete safe when X is absent;
        # the whole script is one transaction, so there is no moment without rules.
        return f"""
table inet {t} {{}}
delete table inet {t}
table inet {t} {{
    chain input {{
        type filter hook input priority filter - 1; policy accept;
        iifname "{br}" ct state established,related accept
        iifname "{br}" {services} accept
        iifname "{br}" drop
    }}
    chain forward {{
        type filter hook forward priority filter - 1; policy accept;
        iifname "{br}" drop
        oifname "{br}" drop
    }}
}}
table bridge {t} {{}}
delete table bridge {t}
table bridge {t} {{
    chain forward {{
        type filter hook forward priority filter - 1; policy accept;
        iifname "{self.veth_prefix}*" drop
    }}
}}
"""

    def _nft(self, script: str, what: str) -> None:
        nft = shutil.which("nft")
        if nft is None:
            raise HostUnsupported(
                "the 'nft' command was not found: install nftables "
                "(apt install nftables / dnf install nftables)"
            )
        try:
            proc = subprocess.run([nft, "-f", "-"], input=script, capture_output=True,
                                  text=True, timeout=60, check=False)
        except subprocess.TimeoutExpired:
            raise SandboxError(f"{what} failed: nft did not finish within 60 s") from None
        if proc.returncode != 0:
            raise HostUnsupported(
                f"{what} failed: nft said: {proc.stderr.strip() or proc.returncode} "
                "(the kernel needs nf_tables with the inet and bridge families and nft_ct)"
            )

    def setup(self) -> None:
        """Create or repair the bridge and load the firewall; safe to call again."""
        gateway = ipaddress.IPv4Interface(f"{self.gateway}/{self.network.prefixlen}")
        try:
            with IPRoute() as ipr:
                self._check_subnet_free(ipr)
            # Firewall before bridge, so the bridge never exists without it.
            self._nft(self.ruleset(), f"loading the firewall table {self.table}")
            with IPRoute() as ipr:
                index = self._ensure_bridge(ipr)
                current = set()
                for msg in ipr.get_addr(family=socket.AF_INET, index=index):
                    iface = ipaddress.IPv4Interface(
                        f"{msg.get('IFA_ADDRESS')}/{msg['prefixlen']}")
                    if iface != gateway:
                        # left over from an older subnet setting of this daemon
                        ipr.addr("del", index=index, address=str(iface.ip),
                                 prefixlen=iface.network.prefixlen)
                    current.add(iface)
                if gateway not in current:
                    ipr.addr("add", index=index, address=str(gateway.ip),
                             prefixlen=gateway.network.prefixlen,
                             broadcast=str(gateway.network.broadcast_address))
                ipr.link("set", index=index, state="up")
        except NetlinkError as e:
            raise _netlink_failure(f"setting up bridge {self.bridge}", e) from None

    def _ensure_bridge(self, ipr: IPRoute) -> int:
        found = ipr.link_lookup(ifname=self.bridge)
        if not found:
            try:
                # STP off and no forward delay: a port forwards as soon as it is up.
                # A fixed MAC keeps the bridge from taking a port's MAC (which would
                # change it under the sandboxes' ARP caches whenever ports come and go).
                ipr.link("add", ifname=self.bridge, kind="bridge", address=self.bridge_mac,
                         br_stp_state=0, br_forward_delay=0)
            except NetlinkError as e:
                if e.code != errno.EEXIST:  # a concurrent setup() made it first
                    raise
            found = ipr.link_lookup(ifname=self.bridge)
        (index,) = found
        (link,) = ipr.link("get", index=index)
        kind = link.get(("linkinfo", "kind"))
        if kind != "bridge":
            raise Conflict(f"{self.bridge} exists but is a {kind or 'plain'} device, "
                           "not a bridge: remove it or give the daemon another name")
        return index

    def _check_subnet_free(self, ipr: IPRoute) -> None:
        ours = ipr.link_lookup(ifname=self.bridge)
        for msg in ipr.get_addr(family=socket.AF_INET):
            if msg["index"] in ours:
                continue
            other = ipaddress.IPv4Interface(f"{msg.get('IFA_ADDRESS')}/{msg['prefixlen']}")
            if other.network.overlaps(self.network):
                label = msg.get("IFA_LABEL") or f"interface {msg['index']}"
                raise Conflict(
                    f"subnet {self.network} overlaps {other} on {label}: choose another "
                    "subnet for this daemon", field="subnet")

    def teardown(self) -> None:
        """Remove our veths, the bridge and both nft tables; whatever is absent is fine."""
        for name in self.veths():
            self.delete_veth(name, prune=False)  # the neighbours go with the bridge
        try:
            with IPRoute() as ipr:
                ipr.link("del", ifname=self.bridge)
        except NetlinkError as e:
            if e.code != errno.ENODEV:
                raise _netlink_failure(f"removing bridge {self.bridge}", e) from None
        if shutil.which("nft") is None:
            # setup() refuses to run without nft, so no table of ours can exist.
            return
        t = self.table
        self._nft(f"table inet {t} {{}}\ndelete table inet {t}\n"
                  f"table bridge {t} {{}}\ndelete table bridge {t}\n",
                  f"removing the firewall tables {t}")

    def veths(self) -> list[str]:
        """Host ends of our veths now present; `delete_veth(name)` removes one."""
        with IPRoute() as ipr:
            links = ipr.get_links()
        names = []
        for link in links:
            name = link.get("IFLA_IFNAME")
            if name.startswith(self.veth_prefix) and link.get(("linkinfo", "kind")) == "veth":
                names.append(name)
        return sorted(names)

    def allocate(self, used: set[IPv4Address]) -> IPv4Address:
        """The lowest address after the gateway that is not in `used`."""
        taken = {int(a) for a in used}
        first = int(self.gateway) + 1
        last = int(self.network.broadcast_address)  # exclusive
        for n in range(first, last):
            if n not in taken:
                return IPv4Address(n)
        raise CapacityExhausted(
            f"no free address left in {self.network} ({last - first} sandboxes): give "
            "the daemon a larger subnet")

    # -- one sandbox --------------------------------------------------------------

    def _check_address(self, address) -> IPv4Address:
        try:
            address = IPv4Address(address)
        except ValueError as e:
            raise InvalidRequest(f"address: {e}", field="address") from None
        if (address not in self.network or address == self.gateway
                or address in (self.network.network_address,
                               self.network.broadcast_address)):
            raise InvalidRequest(
                f"address {address} is not a sandbox address of {self.network} "
                f"(gateway {self.gateway})", field="address")
        return address

    @staticmethod
    def _open_netns(pid: int) -> int:
        try:
            return os.open(f"/proc/{int(pid)}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise NotFound(f"process {pid} does not exist (the sandbox has exited)",
                           reason=Reason.NO_SUCH_PROCESS) from None
        except OSError as e:
            raise explain_oserror(f"opening the network namespace of process {pid}", e) from None

    def _bridge_index(self) -> int:
        try:
            return socket.if_nametoindex(self.bridge)
        except OSError:
            raise SandboxError(f"bridge {self.bridge} does not exist: Network.setup() "
                               "must run before sandboxes are attached") from None

    def attach(self, sandbox_id: str, pid: int, address: IPv4Address) -> NetInfo:
        """Give the net namespace of `pid` an eth0 on our bridge with `address`."""
        name = self.veth_name(sandbox_id)
        address = self._check_address(address)
        iface = ipaddress.IPv4Interface(f"{address}/{self.network.prefixlen}")
        mac = _mac(SANDBOX_MAC_PREFIX, address)
        bridge_index = self._bridge_index()
        ns_fd = self._open_netns(pid)
        created = False
        try:
            with IPRSocket(groups=0) as sock:
                try:
                    # The peer is born inside the sandbox's netns (by fd, so a recycled
                    # pid can't redirect it), already named eth0 with its final MAC.
                    _request(sock, [(f"creating veth {name} for process {pid}", _veth_pair(
                        name, _mac(HOST_END_MAC_PREFIX, address), bridge_index, ns_fd, mac))])
                except NetlinkFailure as e:
                    if e.errno != errno.EEXIST:
                        raise
                    if (SYSFS_NET / name).exists():
                        raise Conflict(f"veth {name} already exists: sandbox {sandbox_id!r} "
                                       "is attached already",
                                       reason=Reason.ALREADY_EXISTS) from None
                    raise Conflict(f"the network namespace of process {pid} already has "
                                   "an eth0", reason=Reason.ALREADY_EXISTS) from None
                created = True
                # if_nametoindex() is one ioctl, cheaper than a netlink get or sysfs.
                port_index = socket.if_nametoindex(name)
                _request(sock, [
                    (f"pinning {address} to {mac} on {self.bridge}",
                     _permanent_neighbour(bridge_index, address, mac)),
                    (f"adding the static FDB entry of {name}", _static_fdb(port_index, mac)),
                    (f"locking bridge port {name}", _locked_port(port_index)),
                ])

            def configure_inside():
                try:
                    # asks the netns of the calling thread: the sandbox's
                    eth0_index = socket.if_nametoindex("eth0")
                except OSError:
                    raise SandboxError("eth0 vanished right after it was created") from None
                with IPRSocket(groups=0) as sock:
                    _request(sock, [
                        ("bringing up lo", _link_up(LOOPBACK_IFINDEX)),
                        (f"adding {iface} to eth0", _addr_add(eth0_index, iface)),
                        ("bringing up eth0", _link_up(eth0_index)),
                        (f"adding the default route via {self.gateway}",
                         _default_route(eth0_index, self.gateway)),
                    ])

            try:
                in_netns(ns_fd, configure_inside)
            except SandboxError as e:
                raise SandboxError(f"inside the network namespace of process {pid}: "
                                   f"{e.message}") from None
            except OSError as e:
                raise explain_oserror(f"entering the network namespace of process {pid}",
                                      e) from None
        except BaseException:
            if created:
                self.delete_veth(name)
            raise
        finally:
            os.close(ns_fd)
        return NetInfo(veth=name, address=str(address), prefixlen=self.network.prefixlen,
                       gateway=str(self.gateway), mac=mac)

    def detach(self, sandbox_id: str) -> None:
        """Remove the sandbox's veth (its eth0 goes with it); absent is fine."""
        self.delete_veth(self.veth_name(sandbox_id))

    def delete_veth(self, name: str, prune: bool = True) -> None:
        """Remove the veth whose host end is `name` (one `veths()` lists); absent is fine.
        `prune` also drops the neighbour entries no live veth needs any more."""
        try:
            with IPRoute() as ipr:
                try:
                    ipr.link("del", ifname=name)
                except NetlinkError as e:
                    # Gone already: a veth dies with its peer's netns when the sandbox ends.
                    if e.code != errno.ENODEV:
                        raise
                if prune:
                    self._prune_neighbours(ipr)
        except NetlinkError as e:
            raise _netlink_failure(f"removing veth {name}", e) from None

    def _prune_neighbours(self, ipr: IPRoute) -> None:
        """Drop the permanent neighbour entries of sandboxes whose veth is gone.

        The veth usually vanishes with the sandbox's netns before `detach()` runs, so
        the address is taken from what is left: every live veth's host end has the MAC
        02:6f:<address>. Neighbours are listed before links: an entry that `attach()`
        adds after the first listing belongs to a veth the second listing sees.
        """
        try:
            bridge_index = socket.if_nametoindex(self.bridge)
        except OSError:
            return  # no bridge, so no entries on it
        entries = ipr.get_neighbours(family=socket.AF_INET, ifindex=bridge_index)
        live = set()
        for link in ipr.get_links():
            if link.get("IFLA_IFNAME", "").startswith(self.veth_prefix):
                live.add(_address_from_mac(link.get("IFLA_ADDRESS") or ""))
        for entry in entries:
            mac = entry.get("NDA_LLADDR") or ""
            dst = entry.get("NDA_DST")
            if (entry["state"] & NUD_PERMANENT and mac.startswith(SANDBOX_MAC_PREFIX)
                    and IPv4Address(dst) not in live):
                try:
                    ipr.neigh("del", dst=dst, ifindex=bridge_index)
                except NetlinkError as e:
                    if e.code != errno.ENOENT:  # a concurrent detach() was first
                        raise

    # -- host-side inspection (grading) ------------------------------------------------

    def listening_sockets(self, pid: int) -> list[dict]:
        """Sockets bound in the net namespace of `pid`: TCP in LISTEN, every UDP socket.

        Read from /proc/<pid>/net on the host side, so nothing the sandbox's root does
        inside can change what is reported.
        """
        result = []
        for proto, family, fname in (("tcp", 4, "tcp"), ("tcp", 6, "tcp6"),
                                     ("udp", 4, "udp"), ("udp", 6, "udp6")):
            path = Path(f"/proc/{int(pid)}/net/{fname}")
            try:
                lines = path.read_text().splitlines()[1:]
            except FileNotFoundError:
                if not Path(f"/proc/{int(pid)}").exists():
                    raise NotFound(f"process {pid} does not exist",
                                   reason=Reason.NO_SUCH_PROCESS) from None
                continue  # kernel without IPv6: there is no tcp6/udp6 file
            for line in lines:
                fields = line.split()
                local, state, inode = fields[1], int(fields[3], 16), int(fields[9])
                if proto == "tcp":
                    if state != _TCP_LISTEN:
                        continue
                    state_name = "LISTEN"
                else:
                    state_name = _UDP_STATES.get(state, f"{state:02X}")
                host, port = local.split(":")
                result.append({"proto": proto, "family": f"inet{'6' if family == 6 else ''}",
                               "address": _proc_net_address(host), "port": int(port, 16),
                               "state": state_name, "inode": inode})
        return result

    def addresses(self, pid: int) -> list[InterfaceFacts]:
        """Interfaces of the net namespace of `pid` with their IP addresses (a veth's peer
        elsewhere has `netns` None: only this namespace is known here)."""
        ns_fd = self._open_netns(pid)
        try:
            return self._interfaces(os.fstat(ns_fd).st_ino, ns_fd, {}, pid)
        finally:
            os.close(ns_fd)

    def interfaces(self, namespaces: dict[int, int]) -> dict[int, list[InterfaceFacts]]:
        """The interfaces of each network namespace in `namespaces` (inode -> the host pid
        of a process in it), by inode; a namespace whose process has gone is left out.

        Each veth's `peer` names the namespace of its other end by inode when that is one
        of `namespaces`. The kernel tells a veth's peer as IFLA_LINK (its ifindex) and
        IFLA_LINK_NETNSID (an id of the peer's namespace that is local to the namespace
        read, absent when the peer is in that same namespace). To turn the id into an
        inode, the reader asks the kernel (RTM_GETNSID, inside the namespace read) for
        the id of each of the other namespaces, by the fds opened here: the kernel's own
        mapping, which nothing inside can forge (an id names one namespace, and the
        link dump has just assigned one to every peer's namespace).
        """
        fds: dict[int, int] = {}
        try:
            for inode, pid in namespaces.items():
                try:
                    fd = self._open_netns(pid)
                except NotFound:
                    continue  # the process exited meanwhile
                # The pid may have been reused by a process elsewhere: keep the fd only
                # if it is the namespace the caller named.
                if os.fstat(fd).st_ino != inode:
                    os.close(fd)
                    continue
                fds[inode] = fd
            out = {}
            for inode, fd in fds.items():
                out[inode] = self._interfaces(inode, fd, fds, namespaces[inode])
            return out
        finally:
            for fd in fds.values():
                os.close(fd)

    def _interfaces(self, inode: int, ns_fd: int, others: dict[int, int],
                    pid: int) -> list[InterfaceFacts]:
        def read():
            with IPRoute() as ipr:
                links, addrs = ipr.get_links(), ipr.get_addr()
                # After the link dump: it assigns the ids that peers' namespaces lack.
                ids = {}
                for other, fd in others.items():
                    if other == inode:
                        continue
                    nsid = _signed32((ipr.get_netnsid(fd=fd) or {}).get("nsid"))
                    if nsid is not None and nsid >= 0:
                        ids[nsid] = other
                return links, addrs, ids

        try:
            links, addrs, ids = in_netns(ns_fd, read)
        except NetlinkError as e:
            raise _netlink_failure(f"reading the interfaces of process {pid}", e) from None
        except OSError as e:
            raise explain_oserror(f"entering the network namespace of process {pid}", e) from None
        result: dict[int, InterfaceFacts] = {}
        for link in links:
            kind = link.get(("linkinfo", "kind"))
            peer: VethPeer | None = None
            peer_index = link.get("IFLA_LINK")
            if kind == "veth" and peer_index is not None:
                nsid = _signed32(link.get("IFLA_LINK_NETNSID"))
                # No IFLA_LINK_NETNSID: the peer is in this same namespace.
                peer = {"netns": inode if nsid is None else ids.get(nsid),
                        "ifindex": peer_index}
            result[link["index"]] = {
                "ifname": link.get("IFLA_IFNAME"),
                "index": link["index"],
                "mac": link.get("IFLA_ADDRESS"),
                "up": bool(link["flags"] & IFF_UP),
                "operstate": link.get("IFLA_OPERSTATE"),
                "kind": kind,
                "addresses": [],
                "peer": peer,
            }
        for addr in addrs:
            entry = result.get(addr["index"])
            if entry is None:
                continue
            family = {socket.AF_INET: "inet", socket.AF_INET6: "inet6"}.get(addr["family"])
            address = addr.get("IFA_LOCAL") or addr.get("IFA_ADDRESS")
            entry["addresses"].append({"family": family, "address": address,
                                       "prefixlen": addr["prefixlen"]})
        return list(result.values())


def _signed32(value: int | None) -> int | None:
    """A netns id as the kernel means it: an s32 (-1, not assigned, may come back as
    4294967295)."""
    if value is None:
        return None
    return value - (1 << 32) if value >= 1 << 31 else value


def _proc_net_address(hexed: str) -> str:
    # /proc/net/{tcp,udp}{,6} print each 32-bit word of the address in host byte order.
    raw = b"".join(struct.pack("=I", int(hexed[i:i + 8], 16)) for i in range(0, len(hexed), 8))
    return socket.inet_ntop(socket.AF_INET if len(raw) == 4 else socket.AF_INET6, raw)
