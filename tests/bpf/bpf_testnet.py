"""Throwaway network topologies for the BPF tests: namespaces (xgt-RUNID-K), veth pairs and a bridge (xtRUNID...).

`Testnet` is a context manager: its teardown (in `finally`) first checks that no XDP program or tc filter is left
on any interface it made, then deletes everything, so a failing test still leaves nothing behind. While it is up,
an owner record (/run/xdp-gossip/testnets/RUNID) names the process that made it, so ``python -m testbed clean``
leaves it alone; a testnet whose process was killed is a leftover that clean removes. The shell
commands live here, each raising with its command line and stderr. Traffic stays inside these namespaces:
the root-side veth ends carry no address and the bridge routes nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import os
import re
import secrets
import select
import socket
import subprocess
import time

from bpf._attach import tcx_prog_ids
from bpf._netns import entered
from testbed.net.cleanup import drop_owner_record, record_owner
from testbed.net.topology import testnet_owner_record

SO_RCVBUFFORCE = 33  # not exported by the socket module
SUBNET = ipaddress.IPv4Network("10.77.0.0/24")


class CommandError(RuntimeError):
    pass


def sh(*argv: str, check: bool = True) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise CommandError(f"{' '.join(argv)}: exit {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout


def write_sysctl(netns: str | None, name: str, value: str) -> None:
    """Write a sysctl as seen from NETNS (opening /proc/sys/net from a thread inside it)."""
    with entered(netns), open("/proc/sys/" + name.replace(".", "/"), "w") as f:
        f.write(value)


@dataclasses.dataclass
class Node:
    ns: str
    ifname: str  # inside ns
    ifindex: int  # inside ns, unique across the testnet
    host_if: str  # root-side end of the veth
    host_ifindex: int
    ip: str
    mac: str


class Testnet:
    __test__ = False  # not a test class, whatever pytest guesses from the name

    """N namespaces, each with one veth to the root namespace; with BRIDGE, the root ends join one bridge."""

    def __init__(self, n: int, *, bridge: bool = False, offloads: bool = True) -> None:
        self.run_id = secrets.token_hex(3)
        self.n, self.with_bridge, self.offloads = n, bridge, offloads
        self.nodes: list[Node] = []
        self.bridge: str | None = None
        self._sockets: list[socket.socket] = []
        self._namespaces: list[str] = []
        self._links: list[str] = []

    def __enter__(self) -> "Testnet":
        try:
            record_owner(testnet_owner_record(self.run_id))  # before anything exists, removed last in _destroy
            self._build()
        except BaseException:
            self._destroy()
            raise
        return self

    def __exit__(self, *exc) -> None:
        try:
            leftovers = self.attached_programs()
        finally:
            self._destroy()
        assert not leftovers, f"programs left attached: {leftovers}"

    def _build(self) -> None:
        if self.with_bridge:
            self.bridge = f"xt{self.run_id}br"
            sh("ip", "link", "add", self.bridge, "type", "bridge")
            self._links.append(self.bridge)
            write_sysctl(None, f"net.ipv6.conf.{self.bridge}.disable_ipv6", "1")
            with contextlib.suppress(OSError):
                write_sysctl(None, "net.bridge.bridge-nf-call-iptables", "0")
            sh("ip", "link", "set", self.bridge, "up")
        hosts = list(SUBNET.hosts())
        for k in range(self.n):
            ns = f"xgt-{self.run_id}-{k}"
            host_if, node_if = f"xt{self.run_id}r{k}", f"xt{self.run_id}n{k}"
            sh("ip", "netns", "add", ns)
            self._namespaces.append(ns)
            for key in ("all", "default"):
                write_sysctl(ns, f"net.ipv6.conf.{key}.disable_ipv6", "1")
            # made in the root namespace, where ifindexes are unique, then moved: the node end keeps its index
            sh("ip", "link", "add", host_if, "type", "veth", "peer", "name", node_if)
            self._links.append(host_if)
            write_sysctl(None, f"net.ipv6.conf.{host_if}.disable_ipv6", "1")
            ifindex = socket.if_nametoindex(node_if)
            sh("ip", "link", "set", node_if, "netns", ns)
            ip = str(hosts[k + 1])
            sh("ip", "-n", ns, "addr", "add", f"{ip}/{SUBNET.prefixlen}", "dev", node_if)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "-n", ns, "link", "set", node_if, "up")
            if self.bridge:
                sh("ip", "link", "set", host_if, "master", self.bridge)
            sh("ip", "link", "set", host_if, "up")
            if not self.offloads:
                sh("ip", "netns", "exec", ns, "ethtool", "-K", node_if, "tx", "off", "rx", "off")
                sh("ethtool", "-K", host_if, "tx", "off", "rx", "off")
            with entered(ns):
                moved_index = socket.if_nametoindex(node_if)
            assert moved_index == ifindex, f"{node_if} changed ifindex when moved ({ifindex} -> {moved_index})"
            mac = sh("ip", "-n", ns, "-o", "link", "show", node_if).split("link/ether ")[1].split()[0]
            self.nodes.append(Node(ns=ns, ifname=node_if, ifindex=ifindex, host_if=host_if,
                                   host_ifindex=socket.if_nametoindex(host_if), ip=ip, mac=mac))
        assert len({node.ifindex for node in self.nodes}) == self.n

    def attached_programs(self) -> list[str]:
        """Every XDP program, tcx link or tc filter still on an interface of this testnet, as readable strings."""
        found = []
        for node in self.nodes:
            for netns, dev, ifindex in ((node.ns, node.ifname, node.ifindex), (None, node.host_if, node.host_ifindex)):
                for hook, ids in tcx_prog_ids(ifindex, netns).items():
                    if ids:
                        found.append(f"{netns or 'root'}/{dev}: tcx {hook} {ids}")
                pre = ["ip", "-n", netns] if netns else ["ip"]
                tc = ["tc", "-n", netns] if netns else ["tc"]
                out = sh(*pre, "-d", "link", "show", "dev", dev, check=False)
                if re.search(r"\bxdp(generic|drv|offload)?\b|prog/xdp", out):
                    found.append(f"{netns or 'root'}/{dev}: XDP")
                for hook in ("ingress", "egress"):
                    if sh(*tc, "filter", "show", "dev", dev, hook, check=False).strip():
                        found.append(f"{netns or 'root'}/{dev}: tc {hook} filter")
                if "clsact" in sh(*tc, "qdisc", "show", "dev", dev, check=False):
                    found.append(f"{netns or 'root'}/{dev}: clsact qdisc")
        return found

    def _destroy(self) -> None:
        try:
            for s in self._sockets:
                s.close()
            self._sockets.clear()
            for link in self._links:
                sh("ip", "link", "del", link, check=False)
            for ns in self._namespaces:
                sh("ip", "netns", "del", ns, check=False)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:  # namespace teardown finishes asynchronously
                if not any(os.path.exists(f"/sys/class/net/{link}") for link in self._links):
                    break
                time.sleep(0.02)
            self._links.clear()
            self._namespaces.clear()
        finally:  # whatever stayed is now a leftover for `python -m testbed clean`
            drop_owner_record(testnet_owner_record(self.run_id))

    # ---- traffic helpers ----
    def udp_socket(self, node: Node, port: int, *, rcvbuf: int = 1 << 22) -> socket.socket:
        """A non-blocking UDP socket bound to NODE's address, living in NODE's namespace; closed at teardown."""
        with entered(node.ns):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sockets.append(s)
        s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
        s.bind((node.ip, port))
        s.setblocking(False)
        return s

    def raw_socket(self, ifname: str) -> socket.socket:
        """An AF_PACKET socket on a root-namespace interface: frames sent there enter the attached namespace."""
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
        self._sockets.append(s)
        s.bind((ifname, 0))
        return s

    def set_neighbour(self, node: Node, peer: Node) -> None:
        sh("ip", "-n", node.ns, "neigh", "replace", peer.ip, "lladdr", peer.mac, "dev", node.ifname,
           "nud", "permanent")


@contextlib.contextmanager
def broadcast_testnet(receivers: int, port: int):
    """A bridged testnet (offloads off) of a sender, node 0, that knows every other node's MAC, and RECEIVERS more
    nodes: ``sender_sock`` is a UDP socket on PORT of node 0, ``socks`` one on PORT of each other node, by address."""
    with Testnet(1 + receivers, bridge=True, offloads=False) as net:
        sender = net.nodes[0]
        for peer in net.nodes[1:]:
            net.set_neighbour(sender, peer)
        net.sender_sock = net.udp_socket(sender, port)
        net.socks = {n.ip: net.udp_socket(n, port) for n in net.nodes[1:]}
        yield net


def drain(sock: socket.socket, *, expect: int | None = None, timeout_s: float = 1.0,
          quiet_s: float = 0.05) -> list[tuple[bytes, tuple[str, int]]]:
    """Read what is queued, then keep reading until EXPECT have come (and QUIET_S more for extras), or nothing
    came for TIMEOUT_S. With TIMEOUT_S 0: just what is queued now."""
    got = []
    deadline = time.monotonic() + timeout_s
    while True:
        while True:
            try:
                got.append(sock.recvfrom(65535))
            except BlockingIOError:
                break
        wait = deadline - time.monotonic()
        if expect is not None and len(got) >= expect:
            wait = quiet_s
        if wait <= 0 or not select.select([sock], [], [], wait)[0]:
            return got


class Capture:
    """UDP frames node 0 puts on the wire, read on the root-side end of its veth (open it before the sending)."""

    def __init__(self, net: Testnet) -> None:
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
        self.sock.bind((net.nodes[0].host_if, 0))
        self.sock.setblocking(False)
        self.src = net.nodes[0].ip

    def udp_frames(self) -> list[bytes]:
        """What was captured (after a short settle), then the capture is closed."""
        from scapy.layers.inet import IP, UDP
        from scapy.layers.l2 import Ether

        frames = []
        time.sleep(0.05)
        while True:
            try:
                frame = self.sock.recv(65535)
            except BlockingIOError:
                break
            pkt = Ether(frame)
            if UDP in pkt and pkt[IP].src == self.src:
                frames.append(frame)
        self.sock.close()
        return frames


def assert_valid_checksums(frame: bytes) -> None:
    """FRAME's IPv4 and UDP checksums are the ones scapy computes afresh (offloads must be off to mean anything)."""
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether

    pkt = Ether(frame)
    again = pkt.copy()
    del again[IP].chksum
    del again[UDP].chksum
    again = Ether(bytes(again))
    assert pkt[IP].chksum == again[IP].chksum, f"bad IP checksum to {pkt[IP].dst}"
    assert pkt[UDP].chksum == again[UDP].chksum, f"bad UDP checksum to {pkt[IP].dst}"
