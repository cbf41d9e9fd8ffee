"""The heartbeat plane (bpf/tc_hbplane.c) on a bridge of namespaces: the kernel takes fresh heartbeats and forwards
them as the node's core would; a registered member's stale or duplicate heartbeat is dropped, as XDP drops what the
node accepted; everything else reaches the node's socket unchanged.

Node 0 runs the plane; node 1 is the origin that sends real signed heartbeats (gossip._wire) from its own socket;
nodes 2..7 are the other members, each with a socket that decodes what it gets. Offloads are off on every veth, so
the stack computes and checks full checksums; the copies are also captured on the root-side end of node 0's veth
and their IPv4 and UDP checksums recomputed with scapy. Compiled once for the module (~3 s).
"""

from __future__ import annotations

import os
import random
import socket
import time

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from bpf.hbplane import B2bKey, HbConfig, HbEvent, HbMember, HeartbeatPlane
from bpf_testnet import Capture, Testnet, assert_valid_checksums, drain, entered
from gossip import _wire as wire

pytestmark = [pytest.mark.root, pytest.mark.bpf, pytest.mark.netns]

PORT = 7946
NODES = 8
CLUSTER = wire.cluster_id("hb-test")
KEY, NEW_KEY, OTHER_KEY = b"cluster-secret", b"rotated-secret", b"not-our-secret"
FANOUT = 3


def ident(node) -> wire.Identity:
    return wire.Identity(name=f"n-{node.ip}", addr=node.ip, port=PORT)


def nid(node) -> int:
    return wire.node_id(node.ip, PORT)


@pytest.fixture(scope="module")
def plane():
    with HeartbeatPlane.compile(nodes=NODES) as p:
        yield p
    assert not os.path.exists(p.pin_dir), "pins left behind"


@pytest.fixture(scope="module")
def bridged(plane):
    with Testnet(NODES, bridge=True, offloads=False) as net:
        node = net.nodes[0]
        for other in net.nodes[1:]:
            net.set_neighbour(other, node)
            net.set_neighbour(node, other)
        net.socks = {n.ip: net.udp_socket(n, PORT) for n in net.nodes}
        with plane.attach(node.ifindex, netns=node.ns):
            yield net


@pytest.fixture
def net(bridged, plane):
    """The plane configured afresh for node 0, with nodes 1..7 as members at seq 0."""
    node = bridged.nodes[0]
    plane.unconfigure(node.ifindex)
    configure(plane, bridged, [KEY])
    for other in bridged.nodes[1:]:
        plane.set_member(node.ifindex, wire._identity_bytes(ident(other)), nid(other), other.ip, PORT, other.mac, 0)
    for sock in bridged.socks.values():
        drain(sock, timeout_s=0)
    return bridged


def configure(plane, net, keys, fanout=FANOUT, max_packet_bytes=1400):
    node = net.nodes[0]
    plane.configure(node.ifindex, nid(node), CLUSTER, node.ip, PORT, node.mac, fanout, max_packet_bytes, keys)


def heartbeat(origin, seq, infected, *, key=KEY, cluster=CLUSTER, identity=None) -> bytes:
    msg = wire.Heartbeat(cluster=cluster, origin=nid(origin), seq=seq, identity=identity or ident(origin),
                         infected=infected)
    return wire.encode(msg, key=key)


def send(net, payload: bytes, frm: int = 1) -> None:
    net.socks[net.nodes[frm].ip].sendto(payload, (net.nodes[0].ip, PORT))


def collect(net, expect: int) -> dict[str, list[bytes]]:
    """What each node's socket got: wait until EXPECT datagrams came in all, then a little more for extras."""
    got: dict[str, list[bytes]] = {n.ip: [] for n in net.nodes}
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline and sum(map(len, got.values())) < expect:
        for ip, sock in net.socks.items():
            got[ip].extend(d for d, _ in drain(sock, timeout_s=0))
        time.sleep(0.005)
    time.sleep(0.05)
    for ip, sock in net.socks.items():
        got[ip].extend(d for d, _ in drain(sock, timeout_s=0))
    return got


def forwarded(net, got) -> dict[str, list[bytes]]:
    return {ip: d for ip, d in got.items() if d and ip not in (net.nodes[0].ip, net.nodes[1].ip)}


def test_structs_mirror_the_maps(plane):
    bpf = plane._bpf
    for name, mirror in (("hb_config", HbConfig), ("hb_keys", B2bKey), ("hb_members", HbMember)):
        assert ctypes_size(bpf[name.encode()].Leaf) == ctypes_size(mirror), name
    assert plane.stats()["handled"] >= 0


def ctypes_size(t) -> int:
    import ctypes
    return ctypes.sizeof(t)


def test_a_fresh_heartbeat_is_forwarded_by_the_kernel_to_fanout_targets(net, plane):
    node, origin = net.nodes[0], net.nodes[1]
    before = plane.stats(node.ifindex)
    capture = Capture(net)
    t0 = time.monotonic_ns()
    with plane.events() as events:
        events.read()
        send(net, heartbeat(origin, 1000, wire.Infected(ids=frozenset({nid(origin), nid(node)}))))
        got = collect(net, FANOUT)
        accepted = events.read()
    frames = capture.udp_frames()
    t1 = time.monotonic_ns()

    assert got[node.ip] == [], "the node's own socket woke for a heartbeat the kernel handled"
    targets = forwarded(net, got)
    assert len(targets) == FANOUT and all(len(d) == 1 for d in targets.values()), got
    target_ids = {wire.node_id(ip, PORT) for ip in targets}
    for ip, (datagram,) in targets.items():
        msg = wire.decode(datagram, cluster=CLUSTER, keys=(KEY,))
        assert isinstance(msg, wire.Heartbeat) and (msg.origin, msg.seq) == (nid(origin), 1000)
        assert msg.identity == ident(origin)
        assert msg.infected.bloom is None
        assert msg.infected.ids == {nid(origin), nid(node)} | target_ids
    assert len(frames) == FANOUT
    for frame in frames:
        assert_valid_checksums(frame)
        pkt = Ether(frame)
        assert (pkt.src, pkt[UDP].sport) == (node.mac, PORT)
        assert pkt.dst == next(n.mac for n in net.nodes if n.ip == pkt[IP].dst)
    seq, last_seen = plane.read_members(node.ifindex)[nid(origin)]
    assert seq == 1000 and t0 <= last_seen <= t1
    after = plane.stats(node.ifindex)
    assert after["handled"] - before["handled"] == 1
    assert after["copies"] - before["copies"] == FANOUT
    assert after["clone_errors"] == before["clone_errors"]
    assert [(e.origin, e.seq, e.targets, e.ifindex) for e in accepted] == [(nid(origin), 1000, FANOUT, node.ifindex)]


def test_every_member_infected_is_accepted_and_sends_nothing(net, plane):
    node, origin = net.nodes[0], net.nodes[1]
    everyone = frozenset(nid(n) for n in net.nodes)
    send(net, heartbeat(origin, 2000, wire.Infected(ids=everyone)))
    got = collect(net, 0)
    assert all(d == [] for d in got.values())
    assert plane.read_members(node.ifindex)[nid(origin)][0] == 2000
    assert plane.stats(node.ifindex)["accepted_no_targets"] >= 1


@pytest.mark.parametrize("case", ["forged", "foreign_cluster", "removed_key", "unknown_origin", "identity_change",
                                  "too_big"])
def test_what_the_program_does_not_handle_reaches_the_node_unchanged(net, plane, case):
    node, origin = net.nodes[0], net.nodes[1]
    infected = wire.Infected(ids=frozenset({nid(origin), nid(node)}))
    reason = {"forged": "passed_bad_mac", "foreign_cluster": "passed_foreign_cluster", "removed_key": "passed_bad_mac",
              "unknown_origin": "passed_unknown_origin", "identity_change": "passed_identity",
              "too_big": "passed_too_big"}[case]
    plane.set_member(node.ifindex, wire._identity_bytes(ident(origin)), nid(origin), origin.ip, PORT, origin.mac, 500)
    frm, seq = 1, 900
    if case == "forged":
        payload = heartbeat(origin, seq, infected, key=OTHER_KEY)
    elif case == "foreign_cluster":
        payload = heartbeat(origin, seq, infected, cluster=wire.cluster_id("elsewhere"))
    elif case == "removed_key":
        configure(plane, net, [NEW_KEY, KEY])
        configure(plane, net, [NEW_KEY])  # KEY rotated out of the ring
        payload = heartbeat(origin, seq, infected)
    elif case == "unknown_origin":
        plane.remove_member(node.ifindex, nid(origin))
        payload = heartbeat(origin, seq, infected)
    elif case == "identity_change":
        payload = heartbeat(origin, seq, infected, identity=wire.Identity(name="renamed", addr=origin.ip, port=PORT))
    else:  # an exact list that would outgrow max_packet_bytes once the node and its targets are added
        payload = heartbeat(origin, seq, infected)
        configure(plane, net, [KEY], max_packet_bytes=len(payload) + 28 + 4)
    before = plane.stats(node.ifindex)
    send(net, payload, frm)
    got = collect(net, 1)
    assert got[node.ip] == [payload], "not passed to the node unchanged"
    assert all(d == [] for ip, d in got.items() if ip != node.ip), "forwarded anyway"
    after = plane.stats(node.ifindex)
    assert after[reason] - before[reason] == 1, {k: after[k] - before[k] for k in after if after[k] != before[k]}
    assert after["handled"] == before["handled"]
    if case != "unknown_origin":
        assert plane.read_members(node.ifindex)[nid(origin)][0] == 500  # nothing accepted


def test_a_key_rotation_accepts_both_keys_and_signs_with_the_new_one(net, plane):
    node, origin = net.nodes[0], net.nodes[1]
    configure(plane, net, [NEW_KEY, KEY])
    for seq, key in ((3000, KEY), (3001, NEW_KEY)):
        send(net, heartbeat(origin, seq, wire.Infected(ids=frozenset({nid(origin)})), key=key))
        got = collect(net, FANOUT)
        assert got[node.ip] == []
        targets = forwarded(net, got)
        assert len(targets) == FANOUT
        for (datagram,) in targets.values():
            msg = wire.decode(datagram, cluster=CLUSTER, keys=(NEW_KEY,))  # signed with key 0 only
            assert msg.seq == seq
            with pytest.raises(wire.ProtocolError):
                wire.decode(datagram, cluster=CLUSTER, keys=(KEY,))
            # the node was not listed: it is added, with its targets
            assert msg.infected.ids == {nid(origin), nid(node)} | {wire.node_id(ip, PORT) for ip in targets}
    assert plane.read_members(node.ifindex)[nid(origin)][0] == 3001


def test_a_bloom_heartbeat_gets_the_node_and_its_targets_set(net, plane):
    node, origin = net.nodes[0], net.nodes[1]
    bloom = wire.Infected(ids=frozenset({nid(origin), nid(node)})).to_bloom(64)
    capture = Capture(net)
    send(net, heartbeat(origin, 4000, bloom))
    got = collect(net, FANOUT)
    frames = capture.udp_frames()
    targets = forwarded(net, got)
    assert len(targets) == FANOUT and got[node.ip] == []
    for ip, (datagram,) in targets.items():
        msg = wire.decode(datagram, cluster=CLUSTER, keys=(KEY,))
        assert msg.infected.bloom is not None and len(msg.infected.bloom) == 64
        assert msg.infected.hashes == bloom.hashes
        expected = bloom.with_added([nid(node)] + [wire.node_id(t, PORT) for t in targets])
        assert msg.infected == expected
    for frame in frames:
        assert_valid_checksums(frame)


def test_members_are_removed_by_moving_the_last_slot(net, plane):
    node = net.nodes[0]
    ids = plane.slots(node.ifindex)
    assert ids == [nid(n) for n in net.nodes[1:]]
    assert plane.remove_member(node.ifindex, ids[1])
    assert plane.slots(node.ifindex) == [ids[0], ids[-1]] + ids[2:-1]
    assert plane.member(node.ifindex, ids[-1]).slot == 1
    assert set(plane.read_members(node.ifindex)) == set(ids) - {ids[1]}
    assert not plane.remove_member(node.ifindex, ids[1])


def test_with_offloads_on_the_copies_still_reach_the_targets(plane):
    """veth with tx offload: the origin's UDP checksum field holds only the pseudo header's sum (CHECKSUM_PARTIAL,
    never verified on the way); the program accepts that kind and gives its copies the same kind of field."""
    with Testnet(5, bridge=True, offloads=True) as net:
        node, origin = net.nodes[0], net.nodes[1]
        for other in net.nodes[1:]:
            net.set_neighbour(other, node)
        net.socks = {n.ip: net.udp_socket(n, PORT) for n in net.nodes}
        with plane.attach(node.ifindex, netns=node.ns):
            configure(plane, net, [KEY])
            for other in net.nodes[1:]:
                plane.set_member(node.ifindex, wire._identity_bytes(ident(other)), nid(other), other.ip, PORT,
                                 other.mac, 0)
            send(net, heartbeat(origin, 5000, wire.Infected(ids=frozenset({nid(origin), nid(node)}))))
            got = collect(net, FANOUT)
            stats = plane.stats(node.ifindex)
        assert got[node.ip] == [] and stats["handled"] == 1, stats
        targets = forwarded(net, got)
        assert len(targets) == FANOUT
        for (datagram,) in targets.values():
            assert wire.decode(datagram, cluster=CLUSTER, keys=(KEY,)).seq == 5000


@pytest.mark.parametrize("seq", [400, 500], ids=["stale", "duplicate"])
def test_a_registered_members_old_heartbeat_is_dropped_in_the_kernel(net, plane, seq):
    """At or below the sequence accepted (500: the node's, raised in the map; or one the kernel took itself) the
    heartbeat is dropped, as XDP drops what the node told it: neither the node nor anyone else gets it, and the
    accepted sequence stays."""
    node, origin = net.nodes[0], net.nodes[1]
    infected = wire.Infected(ids=frozenset({nid(origin), nid(node)}))
    plane.set_member(node.ifindex, wire._identity_bytes(ident(origin)), nid(origin), origin.ip, PORT, origin.mac, 500)
    before = plane.stats(node.ifindex)
    send(net, heartbeat(origin, seq, infected), 1)
    got = collect(net, 1)
    assert all(d == [] for d in got.values()), "an old heartbeat got through"
    after = plane.stats(node.ifindex)
    assert after["dropped_stale_or_dup"] - before["dropped_stale_or_dup"] == 1
    assert after["handled"] == before["handled"] and after["passed"] == before["passed"]
    assert plane.read_members(node.ifindex)[nid(origin)][0] == 500


def test_the_node_rewrites_the_plane_only_when_its_core_roster_moves(bridged, plane):
    """`gossip._plane.PlaneSync` on node 0's interface, with a real core: a pass registers every listed member in
    the kernel's map; a timer step's pass while nothing changed reads no member list and writes nothing (the
    node's steady state); a rename, an expiry or a member without a MAC yet makes the next pass do the work. The
    neighbour table is a stand-in holding the testnet's MACs, so the test controls when one is known."""
    from gossip import NodeConfig, protocols
    from gossip._plane import PlaneSync

    node = bridged.nodes[0]
    others = bridged.nodes[1:5]
    plane.unconfigure(node.ifindex)
    macs = {n.ip: n.mac for n in others}

    class Neighbours:  # NeighbourTable's three calls, over a dict the test changes
        known = dict(macs)

        def expired(self, now):
            return False

        def refresh(self, now):
            pass

        def mac(self, ip, now):
            return self.known.get(ip)

    neigh = Neighbours()
    del neigh.known[others[3].ip]  # its MAC is not known yet
    config = NodeConfig(listen_addr=node.ip, listen_port=PORT, cluster="hb-test", secrets=(KEY,), fanout=FANOUT,
                        cycle_s=0.5, timeout_s=2.0, kernel_heartbeats=True)
    core = protocols.create(config, ident(node), random.Random(1), now=100.0)
    for n in others:
        core.receive_message(wire.Heartbeat(cluster=CLUSTER, origin=nid(n), seq=1, identity=ident(n)), 100.0)
    core.take_events(), core.take_sends()
    sync = PlaneSync(plane.writer(node.ifindex), core, clock=lambda: 100.0, record=lambda ev, t: None,
                     neighbours=neigh)
    calls = {"members": 0, "set_member": 0}

    def counted(name, fn):
        def call(*a, **kw):
            calls[name] += 1
            return fn(*a, **kw)
        return call
    core.members = counted("members", core.members)
    sync.writer.set_member = counted("set_member", sync.writer.set_member)
    with entered(node.ns):  # where the node's interface is (PlaneSync reads its MAC there)
        try:
            sync.start()
            assert set(sync.writer.read_members()) == {nid(n) for n in others}
            assert [sync.writer.member(nid(n)).has_mac for n in others] == [1, 1, 1, 0]
            assert calls == {"members": 1, "set_member": 4}
            sync.reconcile()  # one member still has no MAC: the pass is done again, and writes nothing new
            assert calls == {"members": 2, "set_member": 4}
            neigh.known[others[3].ip] = macs[others[3].ip]
            sync.reconcile()  # its MAC is in the table now: rewritten with it
            assert calls == {"members": 3, "set_member": 5} and not sync.changed
            assert sync.writer.member(nid(others[3])).has_mac == 1
            for _ in range(5):  # steady: every member registered with its MAC, the roster still
                core.receive_message(wire.Heartbeat(cluster=CLUSTER, origin=nid(others[0]), seq=2 + _,
                                                    identity=ident(others[0])), 100.1)
                sync.reconcile()
            assert calls == {"members": 3, "set_member": 5}
            renamed = wire.Identity(name="renamed", addr=others[1].ip, port=PORT)
            core.receive_message(wire.Heartbeat(cluster=CLUSTER, origin=nid(others[1]), seq=5, identity=renamed), 100.2)
            assert sync.changed
            sync.reconcile()
            assert calls == {"members": 4, "set_member": 6}
            m = sync.writer.member(nid(others[1]))
            assert bytes(m.ident)[:m.ident_len] == wire._identity_bytes(renamed)
            core.tick(100.3)  # refreshes others[0] and others[1] only since 100.0 ...
            core.receive_message(wire.Heartbeat(cluster=CLUSTER, origin=nid(others[0]), seq=9,
                                                identity=ident(others[0])), 101.5)
            core.receive_message(wire.Heartbeat(cluster=CLUSTER, origin=nid(others[1]), seq=9, identity=renamed), 101.5)
            core.tick(102.5)  # ... so the other two expire
            assert sync.changed
            sync.reconcile()
            assert set(sync.writer.read_members()) == {nid(others[0]), nid(others[1])}
            assert calls["set_member"] == 6
        finally:
            sync.close()
