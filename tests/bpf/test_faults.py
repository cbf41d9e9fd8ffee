"""Fault programs: loss lands within binomial bounds, per-peer loss, partitions drop only cross-side traffic.

Floods are a fixed number of frames, sent on the root-side end of a test veth to an address inside the test's
own namespace.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import time

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from bpf import BpfUsageError
from bpf_testnet import drain

pytestmark = [pytest.mark.root, pytest.mark.bpf, pytest.mark.netns]

PORT = 9000
FLOOD = 10_000


def frames(node, src_ip: str, count: int) -> list[bytes]:
    base = Ether(src="02:00:00:00:00:c8", dst=node.mac) / IP(src=src_ip, dst=node.ip) / UDP(sport=40000, dport=PORT)
    return [bytes(base / Raw(i.to_bytes(4, "big"))) for i in range(count)]


@pytest.mark.parametrize("p", [0.2])
def test_loss_within_binomial_bounds(faults, testnet_factory, p):
    net = testnet_factory(1)
    node = net.nodes[0]
    sock = net.udp_socket(node, PORT, rcvbuf=64 << 20)
    raw = net.raw_socket(node.host_if)
    flood = frames(node, "10.77.0.200", FLOOD)
    with faults.attach(node.ifindex, netns=node.ns, direction="ingress"):
        faults.set_loss(node.ifindex, p)
        try:
            for frame in flood:
                raw.send(frame)
            deadline = time.monotonic() + 5
            while (stats := faults.stats(node.ifindex))["seen"] < FLOOD and time.monotonic() < deadline:
                time.sleep(0.01)  # frames still in the veth's backlog
            delivered = len(drain(sock, expect=stats["passed"], timeout_s=2))
        finally:
            faults.heal()
    sigma = math.sqrt(FLOOD * p * (1 - p))
    assert stats["seen"] == FLOOD
    assert abs(stats["dropped_loss"] - FLOOD * p) <= 4.5 * sigma, stats
    assert stats["passed"] + stats["dropped_loss"] == FLOOD
    assert delivered == stats["passed"]


def test_loss_for_one_peer_only_and_zero_removes_it(faults, testnet_factory):
    net = testnet_factory(1)
    node = net.nodes[0]
    sock = net.udp_socket(node, PORT)
    raw = net.raw_socket(node.host_if)
    with faults.attach(node.ifindex, netns=node.ns):
        faults.set_loss(node.ifindex, 1.0, peer="10.77.0.201")
        for frame in frames(node, "10.77.0.201", 50) + frames(node, "10.77.0.202", 50):
            raw.send(frame)
        assert len(drain(sock, expect=50)) == 50
        assert faults.stats(node.ifindex)["dropped_loss"] == 50
        faults.set_loss(node.ifindex, 0.0, peer="10.77.0.201")
        for frame in frames(node, "10.77.0.201", 10):
            raw.send(frame)
        assert len(drain(sock, expect=10)) == 10
    with pytest.raises(BpfUsageError):
        faults.set_loss(node.ifindex, 1.5)


@pytest.mark.parametrize("where", ["node ingress", "bridge port egress"])
def test_partition_drops_only_cross_side_traffic(faults, testnet_factory, where):
    net = testnet_factory(4, bridge=True)
    a, b, c, d = net.nodes  # sides: {a, b} | {c}; d is in no group
    for x, y in itertools.permutations(net.nodes, 2):
        net.set_neighbour(x, y)
    socks = {n.ip: net.udp_socket(n, PORT) for n in net.nodes}

    def exchange() -> set[tuple[str, str]]:
        """Every node sends one datagram to every other; returns the (from, to) pairs that arrived."""
        for x, y in itertools.permutations(net.nodes, 2):
            socks[x.ip].sendto(x.ip.encode(), (y.ip, PORT))
        arrived = set()
        for n in net.nodes:
            arrived |= {(data.decode(), n.ip) for data, _ in drain(socks[n.ip], expect=3, timeout_s=0.3)}
        return arrived

    everything = {(x.ip, y.ip) for x, y in itertools.permutations(net.nodes, 2)}
    cross = {(x.ip, y.ip) for x, y in itertools.permutations([a, b, c], 2) if (x is c) != (y is c)}
    hooks = [(n.ifindex, n.ns, "ingress") if where == "node ingress" else (n.host_ifindex, None, "egress")
             for n in net.nodes]
    assert exchange() == everything  # also teaches the bridge every MAC, so nothing is flooded below
    with contextlib.ExitStack() as stack:
        for ifindex, ns, direction in hooks:
            stack.enter_context(faults.attach(ifindex, netns=ns, direction=direction))
        stack.callback(faults.heal)
        before = sum(faults.stats(i)["dropped_partition"] for i, _, _ in hooks)
        faults.set_partition([[a.ip, b.ip], [c.ip]])
        assert exchange() == everything - cross
        dropped = sum(faults.stats(i)["dropped_partition"] for i, _, _ in hooks) - before
        assert dropped == len(cross)
        faults.heal()
        assert exchange() == everything
    with pytest.raises(BpfUsageError, match="two groups"):
        faults.set_partition([[a.ip], [a.ip]])
