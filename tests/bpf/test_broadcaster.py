"""The TC broadcaster on a bridge of namespaces: exactly one copy per target, valid checksums, same bytes as sendto.

Offloads are off on every veth so the stack computes full checksums and a wrong incremental update by the program
would show. Frames leaving the sender are captured on the root-side end of its veth and checked with scapy.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import socket
import time
from pathlib import Path

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from bpf import BroadcastSender
from bpf._netns import entered
from bpf._structs import BcTarget
from bpf_testnet import Capture, Testnet, broadcast_testnet, drain, sh
from bpf_testnet import assert_valid_checksums as assert_checksums_match
from gossip._wire import MetadataRumor, cluster_id, encode

pytestmark = [pytest.mark.root, pytest.mark.bpf, pytest.mark.netns]

PORT = 7946
RECEIVERS = 16
OUTSIDERS = 2  # never targeted: must never receive anything
PAYLOAD = encode(MetadataRumor(cluster=cluster_id("bc-test"), origin=1, version=7, data=b"hello"), key=b"k")
# datagrams that are not PAYLOAD, each with what the program must count it as while the slot is armed for PAYLOAD
OLDER = encode(MetadataRumor(cluster=cluster_id("bc-test"), origin=1, version=6, data=b"hello"), key=b"k")
FORGED = encode(MetadataRumor(cluster=cluster_id("bc-test"), origin=1, version=7, data=b"hellO"), key=b"k")
assert len(FORGED) == len(PAYLOAD) and FORGED[:24] == PAYLOAD[:24]  # only the content (and so the MAC) differs


@pytest.fixture(scope="module")
def bridged():
    with broadcast_testnet(RECEIVERS + OUTSIDERS, PORT) as net:
        yield net


@pytest.fixture
def net(bridged, no_leftovers):
    no_leftovers(bridged)
    for sock in bridged.socks.values():
        drain(sock, timeout_s=0)
    return bridged


def received(net: Testnet, expected: list[str] | tuple = ()) -> dict[str, list[bytes]]:
    """What each receiver got: wait for a datagram per occurrence in EXPECTED, then collect any extras."""
    got = {ip: [d for d, _ in drain(net.socks[ip], expect=list(expected).count(ip), quiet_s=0)]
           for ip in set(expected)}
    time.sleep(0.05)  # every copy leaves in the same syscall: extras would be in by now
    for ip, sock in net.socks.items():
        got.setdefault(ip, []).extend(d for d, _ in drain(sock, timeout_s=0))
    return got


def without_ip_id(frame: bytes) -> bytes:
    """FRAME with the IPv4 identification and header checksum zeroed.

    The kernel draws a new IP ID for every datagram it builds (these carry DF, so the ID has no meaning, RFC
    6864); copies made by the broadcaster share the first one's. Everything else must be byte-identical.
    """
    return frame[:18] + b"\0\0" + frame[20:24] + b"\0\0" + frame[26:]


def assert_valid_checksums(frame: bytes) -> None:
    assert_checksums_match(frame)
    assert Ether(frame)[UDP].chksum != 0  # the broadcaster writes a full one, never "none"


@pytest.mark.parametrize("fanout", [1, 3, 8, 16])
def test_exactly_one_copy_per_target_with_valid_checksums(net, broadcaster, fanout):
    sender = net.nodes[0]
    targets = net.nodes[1:1 + fanout]
    with broadcaster.attach(sender.ifindex, netns=sender.ns), \
            broadcaster.sender(sender.ifindex, netns=sender.ns) as bsend:
        before = broadcaster.stats(sender.ifindex)
        capture = Capture(net)
        bsend.send(net.sender_sock, PAYLOAD, [(t.ip, PORT) for t in targets])
        got = received(net, [t.ip for t in targets])
        frames = capture.udp_frames()
        after = broadcaster.stats(sender.ifindex)

    assert bsend.sendto_calls == 1  # one syscall, whatever the fanout
    for t in targets:
        assert [d for d in got.pop(t.ip)] == [PAYLOAD], f"{t.ip} did not get exactly one copy"
    assert all(v == [] for v in got.values()), "a non-target received a copy"
    assert len(frames) == fanout
    assert sorted((Ether(f)[IP].dst, Ether(f).dst) for f in frames) == sorted((t.ip, t.mac) for t in targets)
    for frame in frames:
        assert_valid_checksums(frame)
    if fanout > 1:
        assert after["broadcasts"] - before["broadcasts"] == 1
        assert after["copies"] - before["copies"] == fanout
        assert after["clone_errors"] == before["clone_errors"]


def test_same_bytes_on_the_wire_as_one_sendto_per_target(net, broadcaster):
    sender = net.nodes[0]
    targets = [(t.ip, PORT) for t in net.nodes[1:1 + 8]]

    def wire(bsend) -> list[bytes]:
        capture = Capture(net)
        bsend.send(net.sender_sock, PAYLOAD, targets)
        received(net)
        return sorted(capture.udp_frames(), key=lambda f: Ether(f)[IP].dst)

    with BroadcastSender(None, sender.ifindex) as plain:
        by_sendto = wire(plain)
    assert plain.sendto_calls == 8
    with broadcaster.attach(sender.ifindex, netns=sender.ns), \
            broadcaster.sender(sender.ifindex, netns=sender.ns) as bsend:
        by_broadcaster = wire(bsend)
    assert bsend.sendto_calls == 1
    assert len(by_sendto) == 8
    for frame in by_broadcaster + by_sendto:
        assert_valid_checksums(frame)
    assert [without_ip_id(f) for f in by_broadcaster] == [without_ip_id(f) for f in by_sendto]


def test_more_targets_than_a_slot_holds_go_in_batches(net, broadcaster):
    """48 targets (each receiver three times) need two broadcasts of at most 32 copies."""
    sender = net.nodes[0]
    targets = [(t.ip, PORT) for t in net.nodes[1:1 + RECEIVERS]] * 3
    with broadcaster.attach(sender.ifindex, netns=sender.ns), \
            broadcaster.sender(sender.ifindex, netns=sender.ns) as bsend:
        before = broadcaster.stats(sender.ifindex)
        bsend.send(net.sender_sock, PAYLOAD, targets)
        got = received(net, [ip for ip, _ in targets])
        after = broadcaster.stats(sender.ifindex)
    assert bsend.sendto_calls == 2
    assert after["copies"] - before["copies"] == 48
    assert {ip: len(d) for ip, d in got.items()} == {t.ip: 3 if t in net.nodes[1:1 + RECEIVERS] else 0
                                                      for t in net.nodes[1:]}
    assert all(got[t.ip] == [] for t in net.nodes[1 + RECEIVERS:])


def test_unknown_mac_is_sent_plainly_and_detached_falls_back(net, broadcaster):
    sender = net.nodes[0]
    stranger = net.nodes[-1]  # no neighbour entry yet: the sender falls back to sendto (the kernel ARPs)
    sh("ip", "-n", sender.ns, "neigh", "del", stranger.ip, "dev", sender.ifname)
    targets = [(t.ip, PORT) for t in net.nodes[1:4]] + [(stranger.ip, PORT)]
    try:
        with broadcaster.sender(sender.ifindex, netns=sender.ns) as bsend:
            with broadcaster.attach(sender.ifindex, netns=sender.ns):
                assert bsend.accelerated
                bsend.send(net.sender_sock, PAYLOAD, targets)
                got = received(net, [ip for ip, _ in targets])
                assert bsend.sendto_calls == 2  # one for the broadcast, one for the stranger
                assert all(len(got[ip]) == 1 for ip, _ in targets)
            assert not bsend.accelerated
            bsend.send(net.sender_sock, PAYLOAD, targets)  # detached: one sendto per target
            got = received(net, [ip for ip, _ in targets])
            assert bsend.sendto_calls == 2 + 4
            assert all(len(got[ip]) == 1 for ip, _ in targets)
    finally:
        net.set_neighbour(sender, stranger)


def test_the_sender_works_from_the_pins_alone(net, broadcaster):
    sender = net.nodes[0]
    targets = [(t.ip, PORT) for t in net.nodes[1:6]]
    with broadcaster.attach(sender.ifindex, netns=sender.ns), \
            BroadcastSender(broadcaster.pin_dir, sender.ifindex, netns=sender.ns) as bsend:
        bsend.send(net.sender_sock, PAYLOAD, targets)
        got = received(net, [ip for ip, _ in targets])
    assert bsend.sendto_calls == 1
    assert all(len(got[ip]) == 1 for ip, _ in targets)


SO_INCOMING_CPU = 49


def test_receive_steering_keeps_each_flow_on_one_cpu_and_spreads_the_flows(net, broadcaster):
    """The program gives every copy the flow hash RPS steers by (so the kernel need not dissect each one): with RPS
    on the sender's link over two CPUs, every datagram of one flow is delivered on one CPU, and the 16 flows use
    both. SO_INCOMING_CPU says where a receiver's last datagram was delivered (for connected sockets only: the
    receivers here are connected to the sender, on a port of their own)."""
    online = sorted(os.sched_getaffinity(0))
    if len(online) < 2:
        pytest.skip("needs two CPUs")
    sender = net.nodes[0]
    targets = net.nodes[1:1 + RECEIVERS]
    rps = Path(f"/sys/class/net/{sender.host_if}/queues/rx-0/rps_cpus")
    before = rps.read_text().strip()
    rps.write_text(f"{1 << online[0] | 1 << online[1]:x}")
    seen: dict[str, set[int]] = {t.ip: set() for t in targets}
    socks = {t.ip: net.udp_socket(t, PORT + 1) for t in targets}
    for sock in socks.values():
        sock.connect((sender.ip, PORT))
    try:
        with broadcaster.attach(sender.ifindex, netns=sender.ns), \
                broadcaster.sender(sender.ifindex, netns=sender.ns) as bsend:
            for _ in range(6):
                bsend.send(net.sender_sock, PAYLOAD, [(t.ip, PORT + 1) for t in targets])
                for t in targets:
                    assert [d for d, _ in drain(socks[t.ip], expect=1, quiet_s=0)] == [PAYLOAD]
                    seen[t.ip].add(socks[t.ip].getsockopt(socket.SOL_SOCKET, SO_INCOMING_CPU))
    finally:
        rps.write_text(before)
        for sock in socks.values():
            sock.close()
    assert bsend.sendto_calls == 6
    assert all(len(cpus) == 1 for cpus in seen.values()), seen
    assert set().union(*seen.values()) == set(online[:2]), seen


def test_faults_after_the_broadcaster_judge_each_copy(net, broadcaster, faults):
    """Loss of 100 % on one peer's link drops that copy only: the network (the fault program on the bridge-side end
    of the peer's veth) judges each of the broadcaster's copies on its own."""
    sender = net.nodes[0]
    targets = net.nodes[1:6]
    lossy = targets[2]
    with broadcaster.attach(sender.ifindex, netns=sender.ns), \
            faults.attach(lossy.host_ifindex, node_mac=lossy.mac), \
            broadcaster.sender(sender.ifindex, netns=sender.ns) as bsend:
        faults.set_loss(1.0, ifindex=lossy.host_ifindex)
        try:
            bsend.send(net.sender_sock, PAYLOAD, [(t.ip, PORT) for t in targets])
            got = received(net, [t.ip for i, t in enumerate(targets) if i != 2])
        finally:
            faults.heal()
    assert bsend.sendto_calls == 1
    assert [len(got[t.ip]) for t in targets] == [1, 1, 0, 1, 1]
    assert faults.stats(lossy.host_ifindex)["to_node_dropped_loss"] == 1
    assert broadcaster.stats(sender.ifindex)["egress_drops"] == 0  # every copy left the sender: lost in the network


def test_send_from_a_running_asyncio_loop_through_its_transport_socket(net, broadcaster):
    """What a node does: the neighbour lookup (netlink) and the send happen inside a running event loop, on the
    wrapper asyncio hands out for a datagram transport's socket."""
    sender = net.nodes[0]
    targets = [(t.ip, PORT) for t in net.nodes[1:6]]

    async def node_sends(bsend) -> None:
        with entered(sender.ns):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((sender.ip, PORT + 1))
        transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(asyncio.DatagramProtocol,
                                                                                 sock=sock)
        try:
            bsend.send(transport.get_extra_info("socket"), PAYLOAD, targets)
        finally:
            transport.close()

    with broadcaster.attach(sender.ifindex, netns=sender.ns), \
            broadcaster.sender(sender.ifindex, netns=sender.ns) as bsend:
        asyncio.run(node_sends(bsend))
        got = received(net, [ip for ip, _ in targets])
    assert bsend.sendto_calls == 1
    assert all(got[ip] == [PAYLOAD] for ip, _ in targets)


def arm(broadcaster, ifindex: int, sock: socket.socket, payload: bytes, targets) -> int:
    """Arm IFINDEX's slot for PAYLOAD from SOCK to TARGETS (nodes) the way a sender does (the seqlock described
    at struct bc_slot), without sending anything. Returns the generation armed."""
    slot = next(s for s in broadcaster._slots.slots if s.ifindex == ifindex)
    gen = (slot.generation + 2) & 0xFFFFFFFE or 2
    slot.generation = gen - 1
    slot.sport[:] = sock.getsockname()[1].to_bytes(2, "big")
    slot.count, slot.udp_len = len(targets), 8 + len(payload)
    slot.head[:], slot.tag[:] = payload[:24], payload[-16:]
    for i, t in enumerate(targets):
        slot.targets[i] = BcTarget(addr=(ctypes.c_uint8 * 4)(*socket.inet_aton(t.ip)),
                                   port=(ctypes.c_uint8 * 2)(*PORT.to_bytes(2, "big")),
                                   mac=(ctypes.c_uint8 * 6)(*bytes.fromhex(t.mac.replace(":", ""))))
    slot.generation = gen
    slot.armed = gen
    return gen


def slot_of(broadcaster, ifindex: int):
    return next(s for s in broadcaster._slots.slots if s.ifindex == ifindex)


@pytest.mark.parametrize("other, reason", [(OLDER, "stale"), (FORGED, "stale"), (PAYLOAD, "mismatches")])
def test_a_datagram_that_is_not_the_armed_one_goes_to_its_own_destination_only(net, broadcaster, other, reason):
    """The slot armed for PAYLOAD: an older version of it, one with the same header but other content (so another
    MAC), or PAYLOAD itself from another socket, is sent unchanged to its own destination only and counted; the
    slot stays armed, and PAYLOAD from the armed socket then takes it."""
    sender = net.nodes[0]
    targets = net.nodes[1:5]
    with broadcaster.attach(sender.ifindex, netns=sender.ns):
        other_sock = net.udp_socket(sender, PORT + 2) if reason == "mismatches" else net.sender_sock
        before = broadcaster.stats(sender.ifindex)
        gen = arm(broadcaster, sender.ifindex, net.sender_sock, PAYLOAD, targets)
        capture = Capture(net)
        other_sock.sendto(other, (targets[0].ip, PORT))
        got = received(net, [targets[0].ip])
        frames = capture.udp_frames()
        middle = broadcaster.stats(sender.ifindex)
        slot = slot_of(broadcaster, sender.ifindex)
        still_armed = slot.armed
        done_before = slot.done

        net.sender_sock.sendto(PAYLOAD, (targets[0].ip, PORT))  # the armed datagram, by a plain sendto
        got_armed = received(net, [t.ip for t in targets])
        after = broadcaster.stats(sender.ifindex)
        done_after = slot_of(broadcaster, sender.ifindex).done

    assert got.pop(targets[0].ip) == [other]
    assert all(v == [] for v in got.values()), "a datagram that was not armed reached another target"
    assert len(frames) == 1 and Ether(frames[0])[IP].dst == targets[0].ip
    assert_valid_checksums(frames[0])
    assert middle[reason] - before[reason] == 1
    assert middle["broadcasts"] == before["broadcasts"]
    assert still_armed == gen and done_before != gen
    assert all(got_armed.pop(t.ip) == [PAYLOAD] for t in targets)
    assert all(v == [] for v in got_armed.values())
    assert after["broadcasts"] - middle["broadcasts"] == 1 and done_after == gen


def test_a_datagram_delayed_past_a_re_arm_cannot_take_the_new_list(net, broadcaster):
    """The slot armed for OLDER, given up (as the sender does when its datagram did not pass) and re-armed for
    PAYLOAD to other targets: OLDER arriving late goes to its own destination only."""
    sender = net.nodes[0]
    with broadcaster.attach(sender.ifindex, netns=sender.ns):
        first = arm(broadcaster, sender.ifindex, net.sender_sock, OLDER, net.nodes[1:4])
        slot_of(broadcaster, sender.ifindex).armed = 0  # given up
        second = arm(broadcaster, sender.ifindex, net.sender_sock, PAYLOAD, [net.nodes[1], *net.nodes[5:9]])
        before = broadcaster.stats(sender.ifindex)
        net.sender_sock.sendto(OLDER, (net.nodes[1].ip, PORT))
        got = received(net, [net.nodes[1].ip])
        after = broadcaster.stats(sender.ifindex)
        slot_of(broadcaster, sender.ifindex).armed = 0
    assert second != first
    assert got.pop(net.nodes[1].ip) == [OLDER]
    assert all(v == [] for v in got.values())
    assert after["stale"] - before["stale"] == 1 and after["broadcasts"] == before["broadcasts"]


def test_a_payload_too_short_to_carry_an_identity_is_sent_plainly(net, broadcaster):
    sender = net.nodes[0]
    targets = [(t.ip, PORT) for t in net.nodes[1:4]]
    with broadcaster.attach(sender.ifindex, netns=sender.ns), \
            broadcaster.sender(sender.ifindex, netns=sender.ns) as bsend:
        bsend.send(net.sender_sock, b"short", targets)
        got = received(net, [ip for ip, _ in targets])
    assert bsend.sendto_calls == 3
    assert all(got[ip] == [b"short"] for ip, _ in targets)
