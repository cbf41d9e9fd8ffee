"""`bpf._neigh`: the neighbour-table reader of the heartbeat plane's node side and the broadcaster's sender. The
parser on /proc/net/arp text as the kernel writes it, the netlink answer parser, the cache's retry and TTL
semantics (on a fake table file), and, as root, the reader in a real namespace seeing an entry once the node's
side has sent to a peer, never an incomplete one."""

from __future__ import annotations

import json
import os
import secrets
import socket
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from bpf._neigh import NeighbourTable, getneigh_request, parse_arp, parse_neigh_reply

ROOT = Path(__file__).resolve().parents[2]

# as arp_seq_show formats it: "%-16s 0x%-10x0x%-10x%-17s     *        %s\n", a permanent entry ATF_PERM|ATF_COM
ARP = """\
IP address       HW type     Flags       HW address            Mask     Device
10.0.0.2         0x1         0x2         8a:cb:bc:0c:65:e6     *        veth3
10.0.0.9         0x1         0x0         00:00:00:00:00:00     *        veth3
10.0.0.3         0x1         0x2         02:00:00:00:00:03     *        veth30
10.0.0.4         0x1         0x6         02:00:00:00:00:04     *        veth3
192.168.1.1      0x1         0x2         02:00:00:00:01:01     *        eth0
10.0.0.5         0x1         0x2         zz:00:00:00:00:05     *        veth3
10.0.0.6         0x1
"""


def test_the_parser_keeps_complete_entries_of_its_interface_only():
    assert parse_arp(ARP, "veth3") == {"10.0.0.2": bytes.fromhex("8acbbc0c65e6"),
                                       "10.0.0.4": bytes.fromhex("020000000004")}
    assert parse_arp(ARP, "eth0") == {"192.168.1.1": bytes.fromhex("020000000101")}
    assert parse_arp(ARP, "veth30") == {"10.0.0.3": bytes.fromhex("020000000003")}
    assert parse_arp(ARP.splitlines()[0] + "\n", "veth3") == {} and parse_arp("", "veth3") == {}


def _reply(seq: int, state: int, mac: bytes | None, kind: int = 28) -> bytes:
    attrs = struct.pack("=HH", 8, 1) + socket.inet_aton("10.0.0.2")
    if mac is not None:
        attrs += struct.pack("=HH", 4 + len(mac), 2) + mac + bytes(-len(mac) % 4)
    body = struct.pack("=BxxxiHBB", socket.AF_INET, 3, state, 0, 1) + attrs
    return struct.pack("=IHHII", 16 + len(body), kind, 0, seq, 0) + body


def test_the_netlink_answer_gives_a_usable_entrys_mac_only():
    mac = bytes.fromhex("8acbbc0c65e6")
    assert parse_neigh_reply(_reply(7, 0x02, mac), 7) == mac  # reachable
    assert parse_neigh_reply(_reply(7, 0x04, mac), 7) == mac  # stale: still the peer's address
    assert parse_neigh_reply(_reply(7, 0x01, None), 7) is None  # incomplete
    assert parse_neigh_reply(_reply(7, 0x20, mac), 7) is None  # failed
    assert parse_neigh_reply(_reply(8, 0x02, mac), 7) is None  # another request's
    assert parse_neigh_reply(_reply(7, 0x02, mac, kind=2), 7) is None  # an error (no such entry)
    assert parse_neigh_reply(_reply(7, 0x02, mac)[:30], 7) is None
    req = getneigh_request(3, "10.0.0.2", 7)
    assert struct.unpack_from("=IHHII", req) == (len(req), 30, 1, 7, 0)


class _Counting(NeighbourTable):
    def __init__(self, path: Path) -> None:
        super().__init__(1, ttl_s=30.0, retry_s=1.0, path=str(path))  # ifindex 1: lo, in every namespace
        self.ifname = "veth3"
        self.asked: list[str] = []
        self.kernel: dict[str, bytes] = {}

    def get(self, ip):
        self.asked.append(ip)
        return self.kernel.get(ip)


def test_a_miss_asks_for_that_address_at_most_every_retry_and_the_ttl_rereads_the_table(tmp_path):
    table_file = tmp_path / "arp"
    table_file.write_text(ARP)
    t = _Counting(table_file)
    assert t.expired(0.0)
    t.refresh(0.0)
    assert t.mac("10.0.0.2", 0.1) == bytes.fromhex("8acbbc0c65e6") and t.asked == []
    assert t.mac("10.0.0.9", 0.5) is None and t.asked == []  # within retry_s of the table read
    assert t.mac("10.0.0.9", 1.5) is None and t.asked == ["10.0.0.9"]
    assert t.mac("10.0.0.9", 2.0) is None and t.asked == ["10.0.0.9"]  # within retry_s of that miss
    t.kernel["10.0.0.9"] = bytes.fromhex("020000000009")
    assert t.mac("10.0.0.9", 2.6) == bytes.fromhex("020000000009") and len(t.asked) == 2
    assert t.mac("10.0.0.9", 2.7) == bytes.fromhex("020000000009") and len(t.asked) == 2  # cached
    assert not t.expired(30.0) and t.expired(30.1)
    table_file.write_text(ARP.replace("10.0.0.2 ", "10.0.0.7 "))
    t.refresh(30.1)  # entries the kernel dropped go with the reread
    assert t.mac("10.0.0.2", 30.2) is None and t.mac("10.0.0.7", 30.2) is not None
    assert t.lookups == 2 and t.generation == 2


def test_an_unreadable_table_gives_no_mac(tmp_path):
    t = _Counting(tmp_path / "missing")
    t.refresh(0.0)
    assert t.mac("10.0.0.2", 0.5) is None and t.lookups == 1


_PROBE = """
import json, socket, sys, time
from bpf._neigh import NeighbourTable
ifname, peer, absent = sys.argv[1:4]
t = NeighbourTable(socket.if_nametoindex(ifname), 30.0, 1.0)
out = {}
t.refresh(0.0)
out["before"] = [t.mac(peer, 0.5), t.get(peer)]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.sendto(b"x", (peer, 9))  # the kernel resolves the peer's address (ARP) to send this
s.sendto(b"x", (absent, 9))  # nobody answers: an incomplete entry
deadline = time.monotonic() + 3
while time.monotonic() < deadline and t.get(peer) is None:
    time.sleep(0.05)
t.refresh(10.0)
out["table"] = {ip: mac.hex() for ip, mac in t._macs.items()}
out["get"] = [t.get(peer), t.get(absent)]
out["mac"] = t.mac(peer, 10.1)
out["arp"] = open("/proc/net/arp").read()
t.close()
print(json.dumps(out, default=lambda b: b.hex()))
"""


def _ip(*argv: str) -> None:
    subprocess.run(["ip", *argv], check=True, capture_output=True, text=True)


@pytest.mark.root
@pytest.mark.netns
def test_the_reader_sees_a_peer_after_a_send_to_it_and_never_an_incomplete_entry():
    if os.geteuid() != 0:
        pytest.skip("needs root")
    tag = f"{os.getpid() % 10000}{secrets.token_hex(2)}"
    ns_a, ns_b, if_a, if_b = f"gossip-neigh-a-{tag}", f"gossip-neigh-b-{tag}", f"gna{tag}", f"gnb{tag}"
    made: list[str] = []
    try:
        for ns in (ns_a, ns_b):
            _ip("netns", "add", ns)
            made.append(ns)
        _ip("link", "add", if_a, "netns", ns_a, "type", "veth", "peer", "name", if_b, "netns", ns_b)
        for ns, ifname, addr in ((ns_a, if_a, "10.213.0.1/24"), (ns_b, if_b, "10.213.0.2/24")):
            _ip("-n", ns, "addr", "add", addr, "dev", ifname)
            _ip("-n", ns, "link", "set", ifname, "up")
        mac_b = subprocess.run(["ip", "-n", ns_b, "-j", "link", "show", if_b], check=True, capture_output=True,
                               text=True).stdout
        mac_b = bytes.fromhex(json.loads(mac_b)[0]["address"].replace(":", "")).hex()
        run = subprocess.run(["ip", "netns", "exec", ns_a, sys.executable, "-c", _PROBE, if_a, "10.213.0.2",
                              "10.213.0.9"], capture_output=True, text=True, timeout=30,
                             env=dict(os.environ, PYTHONPATH=str(ROOT)))
        assert run.returncode == 0, run.stderr
        out = json.loads(run.stdout)
        assert out["before"] == [None, None]
        assert out["table"] == {"10.213.0.2": mac_b}, out["arp"]
        assert out["get"] == [mac_b, None] and out["mac"] == mac_b
        assert "10.213.0.9" in out["arp"]  # the kernel holds it, incomplete: the reader left it out
    finally:
        for ns in made:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def test_the_node_side_of_the_accelerators_never_imports_pyroute2():
    """A node opens the fast path's writer, the plane's sync and the broadcaster's sender, all of which read the
    neighbour table through this module, never through pyroute2 (the testbed's side, which attaches, does)."""
    code = "import bpf.fastpath, bpf.broadcaster, bpf.hbplane, gossip._plane, bpf._neigh"
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True,
                         cwd=ROOT, check=True).stderr
    imported = {line.rsplit("|", 1)[1].strip() for line in out.splitlines() if "|" in line}
    assert "bpf.broadcaster" in imported and "bpf._neigh" in imported
    assert not [m for m in imported if m.split(".")[0] == "pyroute2"], sorted(imported)
