"""Fault programs on the bridge-side veth ends: loss and partitions mean what the simulator's mean.

Every test builds its own namespaces on a bridge, attaches the programs to the root-side end of every node's veth
(both directions, as the testbed does) and sends a bounded number of UDP datagrams between its own nodes. The
simulator keeps a packet from X to Y with probability (1 - global)(1 - loss[X])(1 - loss[Y]); the counters say
where each factor was judged, and the receiving sockets say what the network delivered.

Rates are checked against binomial bounds of 4 sigma: with seven such checks in the file a correct program
fails one about once in two thousand runs (3 sigma would be one in seventy).
"""

from __future__ import annotations

import contextlib
import itertools
import math
import time

import pytest

from bpf import BpfUsageError
from bpf_testnet import drain, sh

pytestmark = [pytest.mark.root, pytest.mark.bpf, pytest.mark.netns]

PORT = 9000
DATAGRAMS = 4000  # per measured flow: a rate of 0.3 within +-2.9 % at 4 sigma
SIGMAS = 4


def bridged(testnet_factory, n: int):
    """N nodes on one bridge with static neighbours, so no ARP interferes with the counts."""
    net = testnet_factory(n, bridge=True)
    for x, y in itertools.permutations(net.nodes, 2):
        net.set_neighbour(x, y)
    net.socks = {node.ip: net.udp_socket(node, PORT, rcvbuf=64 << 20) for node in net.nodes}
    return net


@contextlib.contextmanager
def on_the_network(faults, net, *, macs_given: bool = True):
    """The fault programs on every node's bridge-side veth end, both directions, as the testbed attaches them;
    healed, then detached. Without MACS_GIVEN the program learns each node's MAC from what the node sends."""
    with contextlib.ExitStack() as stack:
        for node in net.nodes:
            stack.enter_context(faults.attach(node.host_ifindex, node_mac=node.mac if macs_given else None))
        stack.callback(faults.heal)
        yield


def all_stats(faults, net) -> dict[str, dict[str, int]]:
    return {node.ip: faults.stats(node.host_ifindex) for node in net.nodes}


def minus(after, before) -> dict[str, dict[str, int]]:
    return {ip: {k: v - before[ip][k] for k, v in counters.items()} for ip, counters in after.items()}


def flow(faults, net, src, dst, count: int = DATAGRAMS):
    """COUNT datagrams from SRC to DST. Returns (every node's counter changes, datagrams DST's socket got)."""
    before = all_stats(faults, net)
    for i in range(count):
        net.socks[src.ip].sendto(i.to_bytes(4, "big"), (dst.ip, PORT))
    deadline = time.monotonic() + 5
    while True:  # the packets are judged in softirq, nearly always before sendto returns
        d = minus(all_stats(faults, net), before)
        settled = d[src.ip]["from_node_seen"] >= count and d[dst.ip]["to_node_seen"] >= d[src.ip]["from_node_passed"]
        if settled or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    got = drain(net.socks[dst.ip], expect=d[dst.ip]["to_node_passed"], timeout_s=2)
    return d, len(got)


def within_binomial(k: int, n: int, p: float) -> bool:
    return abs(k - n * p) <= SIGMAS * math.sqrt(n * p * (1 - p))


def report(what: str, k: int, n: int, p: float) -> None:
    print(f"{what}: {k}/{n} = {k / n:.4f} (expected {p})")


def exchange(net) -> set[tuple[str, str]]:
    """Every node sends one datagram to every other; returns the (from, to) pairs that arrived."""
    for x, y in itertools.permutations(net.nodes, 2):
        net.socks[x.ip].sendto(x.ip.encode(), (y.ip, PORT))
    arrived = set()
    for node in net.nodes:
        got = drain(net.socks[node.ip], expect=len(net.nodes) - 1, timeout_s=0.3)
        arrived |= {(data.decode(), node.ip) for data, _ in got}
    return arrived


def pairs(nodes) -> set[tuple[str, str]]:
    return {(x.ip, y.ip) for x, y in itertools.permutations(nodes, 2)}


def test_global_loss_is_judged_once_on_the_way_into_the_receiver(faults, testnet_factory):
    net = bridged(testnet_factory, 2)
    a, b = net.nodes
    p = 0.3
    with on_the_network(faults, net):
        faults.set_loss(p)
        for src, dst in ((a, b), (b, a)):
            d, received = flow(faults, net, src, dst)
            out, into = d[src.ip], d[dst.ip]
            report(f"global loss {src.ip} -> {dst.ip}", into["to_node_dropped_loss"], DATAGRAMS, p)
            # judged once: nothing on the way out, everything on the way in
            assert out["from_node_seen"] == out["from_node_passed"] == DATAGRAMS, out
            assert out["from_node_dropped_loss"] == 0 and out["to_node_seen"] == 0, out
            assert into["to_node_seen"] == DATAGRAMS and into["from_node_seen"] == 0, into
            assert into["to_node_dropped_partition"] == 0
            assert into["to_node_passed"] + into["to_node_dropped_loss"] == DATAGRAMS
            assert within_binomial(into["to_node_dropped_loss"], DATAGRAMS, p), into
            assert received == into["to_node_passed"]
        faults.heal()
        d, received = flow(faults, net, a, b, 500)
        assert received == 500 and d[b.ip]["to_node_passed"] == 500 and d[b.ip]["to_node_dropped_loss"] == 0


def test_node_loss_acts_on_packets_to_and_from_that_node_only(faults, testnet_factory):
    net = bridged(testnet_factory, 3)
    a, b, c = net.nodes
    p = 0.3
    with on_the_network(faults, net):
        faults.set_loss(p, ifindex=b.host_ifindex)

        d, received = flow(faults, net, a, b)  # into the lossy node: judged on its way in
        report(f"loss of {b.ip}, packets to it", d[b.ip]["to_node_dropped_loss"], DATAGRAMS, p)
        assert d[a.ip]["from_node_passed"] == DATAGRAMS
        assert d[b.ip]["to_node_seen"] == DATAGRAMS
        assert within_binomial(d[b.ip]["to_node_dropped_loss"], DATAGRAMS, p), d[b.ip]
        assert received == d[b.ip]["to_node_passed"] == DATAGRAMS - d[b.ip]["to_node_dropped_loss"]

        d, received = flow(faults, net, b, a)  # out of the lossy node: judged on its way out, not again
        report(f"loss of {b.ip}, packets from it", d[b.ip]["from_node_dropped_loss"], DATAGRAMS, p)
        assert d[b.ip]["from_node_seen"] == DATAGRAMS
        assert within_binomial(d[b.ip]["from_node_dropped_loss"], DATAGRAMS, p), d[b.ip]
        assert d[a.ip]["to_node_seen"] == d[a.ip]["to_node_passed"] == d[b.ip]["from_node_passed"]
        assert received == d[b.ip]["from_node_passed"]

        d, received = flow(faults, net, a, c, 500)  # neither end lossy
        assert received == 500 and d[c.ip]["to_node_dropped_loss"] == 0

        faults.set_loss(0.0, ifindex=b.host_ifindex)  # 0 removes the rule
        for src, dst in ((a, b), (b, a)):
            assert flow(faults, net, src, dst, 500)[1] == 500


def test_loss_rules_compose_like_the_simulator(faults, testnet_factory):
    """global 0.1, sender 0.2, receiver 0.3: kept with (1 - 0.1)(1 - 0.2)(1 - 0.3) = 0.504, each factor judged
    where the counters say."""
    net = bridged(testnet_factory, 2)
    x, y = net.nodes
    g, px, py = 0.1, 0.2, 0.3
    with on_the_network(faults, net):
        faults.set_loss(g)
        faults.set_loss(px, ifindex=x.host_ifindex)
        faults.set_loss(py, ifindex=y.host_ifindex)
        d, received = flow(faults, net, x, y)
    out, into = d[x.ip], d[y.ip]
    report("sender's loss, on its way out", out["from_node_dropped_loss"], DATAGRAMS, px)
    report("global and receiver's loss, on its way in", into["to_node_dropped_loss"], into["to_node_seen"],
           1 - (1 - g) * (1 - py))
    report("kept end to end", received, DATAGRAMS, (1 - g) * (1 - px) * (1 - py))
    assert out["from_node_seen"] == DATAGRAMS
    assert within_binomial(out["from_node_dropped_loss"], DATAGRAMS, px), out
    assert into["to_node_seen"] == out["from_node_passed"]
    assert within_binomial(into["to_node_dropped_loss"], into["to_node_seen"], 1 - (1 - g) * (1 - py)), into
    assert received == into["to_node_passed"]
    assert within_binomial(received, DATAGRAMS, (1 - g) * (1 - px) * (1 - py))


def test_partition_drops_across_sides_and_passes_within_one(faults, testnet_factory):
    net = bridged(testnet_factory, 4)
    a, b, c, d = net.nodes
    everything = pairs(net.nodes)
    assert exchange(net) == everything  # also teaches the bridge every MAC, so nothing is flooded below
    with on_the_network(faults, net):
        faults.set_partition([[a.ip, b.ip], [c.ip]])  # d in no group: the caller's choice, unaffected
        before = all_stats(faults, net)
        cross = {(s, t) for s, t in pairs([a, b, c]) if (s == c.ip) != (t == c.ip)}
        assert exchange(net) == everything - cross
        counts = minus(all_stats(faults, net), before)
        for node in net.nodes:  # judged once, on the way into the receiver
            assert counts[node.ip]["to_node_dropped_partition"] == sum(t == node.ip for _, t in cross), counts
            assert counts[node.ip]["from_node_passed"] == counts[node.ip]["from_node_seen"] == 3
        assert sum(c["to_node_seen"] for c in counts.values()) == len(everything)

        faults.set_partition([[a.ip], [b.ip, c.ip], [d.ip]])  # replaces the previous one
        assert exchange(net) == pairs([b, c])
        faults.set_partition([])
        assert exchange(net) == everything
        faults.set_partition([[a.ip], [b.ip]])
        assert exchange(net) == everything - {(a.ip, b.ip), (b.ip, a.ip)}
        faults.heal()
        assert exchange(net) == everything


def test_heal_ends_every_fault_at_once(faults, testnet_factory):
    net = bridged(testnet_factory, 3)
    a, b, c = net.nodes
    with on_the_network(faults, net):
        faults.set_loss(1.0)
        faults.set_loss(1.0, ifindex=a.host_ifindex)
        faults.set_partition([[a.ip], [b.ip], [c.ip]])
        assert exchange(net) == set()
        before = all_stats(faults, net)
        faults.heal()
        assert exchange(net) == pairs(net.nodes)
        counts = minus(all_stats(faults, net), before)
        for node in net.nodes:
            assert counts[node.ip]["to_node_seen"] == counts[node.ip]["to_node_passed"] == 2
            assert counts[node.ip]["from_node_seen"] == counts[node.ip]["from_node_passed"] == 2


def tx_packets(ifname: str) -> int:
    with open(f"/sys/class/net/{ifname}/statistics/tx_packets") as f:
        return int(f.read())


@pytest.mark.parametrize("mac", ["given", "learned"])
def test_flood_copies_for_another_node_are_neither_judged_nor_counted(faults, testnet_factory, mac):
    """The bridge floods frames for a MAC it has not learned to every port; the copy on a third node's port is
    not for that node, which the program tells by the node's MAC: given at attach, or learned from what the node
    sent."""
    net = bridged(testnet_factory, 3)
    a, b, c = net.nodes
    count = 50
    with on_the_network(faults, net, macs_given=mac == "given"):
        faults.set_loss(1.0, ifindex=c.host_ifindex)
        if mac == "learned":
            net.socks[c.ip].sendto(b"hello", (a.ip, PORT))  # lost, but c's MAC is known from now on
            assert faults.stats(c.host_ifindex)["from_node_dropped_loss"] == 1
        flooded_before = tx_packets(c.host_if)
        d, received = flow(faults, net, a, b, count)  # b has sent nothing: the bridge floods a -> b
    assert tx_packets(c.host_if) - flooded_before >= count  # the copies did reach c's port
    assert d[c.ip]["to_node_seen"] == 0, d[c.ip]
    assert received == d[b.ip]["to_node_passed"] == d[b.ip]["to_node_seen"] == count


def test_arp_always_passes_and_is_not_counted(faults, testnet_factory):
    net = testnet_factory(2, bridge=True)  # no static neighbours: a must resolve b through ARP
    a, b = net.nodes
    socks = {n.ip: net.udp_socket(n, PORT) for n in net.nodes}
    with on_the_network(faults, net):
        faults.set_loss(1.0)
        faults.set_loss(1.0, ifindex=a.host_ifindex)
        faults.set_loss(1.0, ifindex=b.host_ifindex)
        socks[a.ip].sendto(b"x", (b.ip, PORT))
        deadline = time.monotonic() + 3
        while faults.stats(a.host_ifindex)["from_node_seen"] == 0 and time.monotonic() < deadline:
            time.sleep(0.01)  # the datagram waits for the ARP reply
        assert b.mac in sh("ip", "-n", a.ns, "neigh", "show", b.ip)  # request and reply both crossed
        sa, sb = faults.stats(a.host_ifindex), faults.stats(b.host_ifindex)
        assert sa["from_node_seen"] == sa["from_node_dropped_loss"] == 1, sa  # the datagram, not the request
        assert sa["to_node_seen"] == 0, sa  # not the reply
        assert sb["to_node_seen"] == sb["from_node_seen"] == 0, sb
        faults.heal()
        socks[a.ip].sendto(b"y", (b.ip, PORT))
        assert [data for data, _ in drain(socks[b.ip], expect=1)] == [b"y"]


BAD_CALLS = {
    "loss above 1": lambda ft: ft.set_loss(1.5),
    "loss below 0": lambda ft: ft.set_loss(-0.1),
    "loss not a number": lambda ft: ft.set_loss(float("nan")),
    "loss a string": lambda ft: ft.set_loss("0.3"),
    "ifindex 0": lambda ft: ft.set_loss(0.3, ifindex=0),
    "ifindex a string": lambda ft: ft.set_loss(0.3, ifindex="eth0"),
    "IPv6 address": lambda ft: ft.set_partition([["10.77.0.2"], ["fe80::1"]]),
    "not an address": lambda ft: ft.set_partition([["10.77.0.2", "node-b"]]),
    "group not a list": lambda ft: ft.set_partition(["10.77.0.2"]),
    "address in two groups": lambda ft: ft.set_partition([["10.77.0.2", "10.77.0.3"], ["10.77.0.3"]]),
    "unknown direction": lambda ft: ft.attach(1, direction="sideways").__enter__(),
    "node MAC malformed": lambda ft: ft.attach(1, node_mac="02:00:00:00:01").__enter__(),
    "node MAC multicast": lambda ft: ft.attach(1, node_mac="01:00:5e:00:00:16").__enter__(),
}


@pytest.mark.parametrize("call", BAD_CALLS.values(), ids=BAD_CALLS.keys())
def test_bad_input_is_a_usage_error_and_changes_nothing(faults, call):
    with pytest.raises(BpfUsageError):
        call(faults)
    assert not any(True for _ in faults._bpf[b"ft_loss"].keys())
    assert not any(True for _ in faults._bpf[b"ft_side"].keys())


def test_usage_errors_say_what_is_wrong(faults):
    with pytest.raises(BpfUsageError, match=r"within \[0, 1\], got 1.5"):
        faults.set_loss(1.5)
    with pytest.raises(BpfUsageError, match="10.77.0.3 is in two groups"):
        faults.set_partition([["10.77.0.3"], ["10.77.0.3"]])
    with pytest.raises(BpfUsageError, match="not an IPv4 address: 'fe80::1'"):
        faults.set_partition([["fe80::1"]])
