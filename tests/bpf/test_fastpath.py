"""The XDP fast path on a real veth: every drop reason, what passes, and that nothing is recorded on first sight.

Frames are crafted with scapy around datagrams from gossip._wire and injected on the root-side end of a node's
veth; a UDP socket inside the node's namespace shows what got through. Each exchange ends with a sentinel on
another port: frames on one veth are processed in order, so once the sentinel is in, every earlier frame has been
either delivered or dropped.
"""

from __future__ import annotations

import ctypes
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

import bpf
from bpf import AttachError, FastPathWriter, _sys
from bpf._attach import xdp_prog_id
from bpf._structs import FpHbKey
from bpf_testnet import Testnet, drain
from gossip._wire import (HEADER_BYTES, MAC_BYTES, MAGIC, Ack, Gossip, Heartbeat, Identity, Leave, MetadataRumor,
                          MsgType, Nack, Ping, PingReq, State, SwapRequest, SwapResponse, cluster_id, decode, encode)
from gossip.errors import ProtocolError

pytestmark = [pytest.mark.root, pytest.mark.bpf, pytest.mark.netns]

PORT = 7946
KEY = b"k"
CLUSTER = cluster_id("xdp-test")
PEER_IP, PEER_MAC = "10.77.0.200", "02:00:00:00:00:c8"
IDENT = Identity(name="peer", addr=PEER_IP, port=PORT)


def heartbeat(origin: int, seq: int, cluster: int = CLUSTER) -> bytes:
    return encode(Heartbeat(cluster=cluster, origin=origin, seq=seq, identity=IDENT), key=KEY)


def metadata(version: int, origin: int) -> bytes:
    return encode(MetadataRumor(cluster=CLUSTER, origin=origin, version=version, data=b"v"), key=KEY)


def swap_req(version: int, origin: int) -> bytes:
    return encode(SwapRequest(cluster=CLUSTER, origin=origin, version=version, sender=IDENT, data=b"v"), key=KEY)


def swap_resp(version: int, origin: int) -> bytes:
    return encode(SwapResponse(cluster=CLUSTER, origin=origin, version=version, data=b"v"), key=KEY)


def leave(origin: int, seq: int) -> bytes:
    return encode(Leave(cluster=CLUSTER, origin=origin, seq=seq, identity=IDENT), key=KEY)


# SWIM's sequenced types (the sender's message sequence), one builder each; ACK and NACK answer a probe's
def ping(origin: int, seq: int, key: bytes = KEY) -> bytes:
    return encode(Ping(cluster=CLUSTER, origin=origin, seq=seq, sender=IDENT, target=7), key=key)


def ping_req(origin: int, seq: int) -> bytes:
    return encode(PingReq(cluster=CLUSTER, origin=origin, seq=seq, sender=IDENT, target=IDENT), key=KEY)


def state(origin: int, seq: int, part: int = 0, parts: int = 1) -> bytes:
    return encode(State(cluster=CLUSTER, origin=origin, seq=seq, sender=IDENT, reply=False, part=part, parts=parts,
                        entries=()), key=KEY)


def gossip(origin: int, seq: int) -> bytes:
    return encode(Gossip(cluster=CLUSTER, origin=origin, seq=seq), key=KEY)


def ack(origin: int, seq: int) -> bytes:
    return encode(Ack(cluster=CLUSTER, origin=origin, seq=seq), key=KEY)


def nack(origin: int, seq: int) -> bytes:
    return encode(Nack(cluster=CLUSTER, origin=origin, seq=seq, target=7), key=KEY)


SWIM_SEQUENCED = {MsgType.PING: ping, MsgType.PING_REQ: ping_req, MsgType.STATE: state, MsgType.GOSSIP: gossip}


def judged_by_xdp(d: bytes) -> bool:
    """Whether the program rules on D's header to the end: a sound header up to a type it does not judge
    (LEAVE, ACK, NACK, an unknown one) is passed to the node, whose decoder is the authority."""
    sound = (len(d) >= HEADER_BYTES + MAC_BYTES and int.from_bytes(d[:2], "big") == MAGIC and d[2] == 1
             and int.from_bytes(d[4:8], "big") == CLUSTER)
    return not sound or d[3] in (1, 2, 3, 4, 6, 8, 10, 11)


class Node:
    """One node's namespace with the fast path attached: inject frames, see what arrives and what was counted."""

    def __init__(self, net, node, fastpath) -> None:
        self.node, self.fastpath = node, fastpath
        self.sock = net.udp_socket(node, PORT)
        self.sentinel = net.udp_socket(node, PORT + 1)
        self.raw = net.raw_socket(node.host_if)

    def frame(self, payload: bytes, *, dport: int = PORT, **ip_fields) -> bytes:
        return bytes(Ether(src=PEER_MAC, dst=self.node.mac) / IP(src=PEER_IP, dst=self.node.ip, **ip_fields)
                     / UDP(sport=40000, dport=dport) / Raw(payload))

    def exchange(self, *payloads: bytes, frames: tuple[bytes, ...] = ()) -> tuple[list[bytes], dict[str, int]]:
        """Inject PAYLOADS (and raw FRAMES); return what the node's socket received and the counters' change."""
        before = self.fastpath.stats(self.node.ifindex)
        for frame in [self.frame(p) for p in payloads] + list(frames):
            self.raw.send(frame)
        self.raw.send(self.frame(b"sentinel", dport=PORT + 1))
        on_sentinel_port = [d for d, _ in drain(self.sentinel, expect=1, quiet_s=0)]
        while on_sentinel_port[-1:] != [b"sentinel"]:
            more = [d for d, _ in drain(self.sentinel, expect=1, quiet_s=0)]
            assert more, f"the sentinel did not arrive (got {on_sentinel_port})"
            on_sentinel_port += more
        self.other_port = on_sentinel_port[:-1]
        got = [d for d, _ in drain(self.sock, timeout_s=0.05)]
        after = self.fastpath.stats(self.node.ifindex)
        delta = {k: after[k] - before[k] for k in after if after[k] != before[k]}
        delta["passed_other"] -= 1  # the sentinel
        return got, {k: v for k, v in delta.items() if v}


@pytest.fixture
def one_node(fastpath, testnet_factory):
    net = testnet_factory(1)
    node = net.nodes[0]
    fastpath.configure(node.ifindex, CLUSTER, PORT)
    try:
        with fastpath.attach(node.ifindex, netns=node.ns):
            yield Node(net, node, fastpath)
    finally:
        fastpath.unconfigure(node.ifindex)


def test_first_copies_and_retransmissions_pass_without_an_accepted_write(one_node, fastpath):
    sent = [heartbeat(1, 100), metadata(10, 1), swap_req(10, 1), swap_resp(10, 1)]
    got, counted = one_node.exchange(*sent, *sent)  # every message twice: nothing is recorded on first sight
    assert got == sent + sent
    assert counted == {"passed_heartbeat": 2, "passed_metadata": 2, "passed_swap_req": 2, "passed_swap_resp": 2,
                       "passed": 8}
    hb_keys = _sys.map_keys(fastpath.map_fds["fp_heartbeat"], FpHbKey)
    assert [k for k in hb_keys if k.ifindex == one_node.node.ifindex] == []
    assert not _sys.map_lookup(fastpath.map_fds["fp_metadata"], ctypes.c_uint32(one_node.node.ifindex),
                               (ctypes.c_uint8 * 16)())


def test_heartbeat_duplicate_and_stale_are_dropped_once_accepted(one_node, fastpath):
    with fastpath.writer(one_node.node.ifindex) as writer:
        writer.heartbeat_accepted(origin=1, seq=100)
        got, counted = one_node.exchange(heartbeat(1, 100), heartbeat(1, 99), heartbeat(1, 101), heartbeat(2, 50))
        assert got == [heartbeat(1, 101), heartbeat(2, 50)]
        assert counted == {"dropped_duplicate": 1, "dropped_stale": 1, "dropped": 2, "passed_heartbeat": 2,
                           "passed": 2}
        assert writer.stats()["dropped_duplicate"] == 1


@pytest.mark.parametrize("make", [metadata, swap_resp], ids=["metadata", "swap_resp"])
def test_versions_not_newer_than_held_are_dropped(one_node, fastpath, make):
    with fastpath.writer(one_node.node.ifindex) as writer:
        writer.metadata_accepted(version=100, origin=5)
        # (seq, origin) order: equal -> duplicate; lower origin on a seq tie, or lower seq -> stale
        got, counted = one_node.exchange(make(100, 5), make(100, 4), make(99, 9), make(100, 6), make(101, 0))
    assert got == [make(100, 6), make(101, 0)]
    kind = "passed_metadata" if make is metadata else "passed_swap_resp"
    assert counted == {"dropped_duplicate": 1, "dropped_stale": 2, "dropped": 3, kind: 2, "passed": 2}


def test_swap_request_dropped_only_when_equal(one_node, fastpath):
    with fastpath.writer(one_node.node.ifindex) as writer:
        writer.metadata_accepted(version=100, origin=5)
        got, counted = one_node.exchange(swap_req(100, 5), swap_req(99, 5), swap_req(100, 4), swap_req(101, 5))
    assert got == [swap_req(99, 5), swap_req(100, 4), swap_req(101, 5)]  # older requests must be answered
    assert counted == {"dropped_duplicate": 1, "dropped": 1, "passed_swap_req": 3, "passed": 3}


def test_swim_sequences_pass_until_the_node_took_one(one_node, fastpath):
    sent = [make(1, 100) for make in SWIM_SEQUENCED.values()]
    got, counted = one_node.exchange(*sent, *sent)  # nothing is recorded on first sight
    assert got == sent + sent
    assert counted == {"passed_swim": 8, "passed": 8}


@pytest.mark.parametrize("type_", list(SWIM_SEQUENCED), ids=lambda t: t.name.lower())
def test_swim_sequence_not_newer_than_taken_is_dropped_per_type_and_origin(one_node, fastpath, type_):
    make = SWIM_SEQUENCED[type_]
    others = [m(1, 100) for t, m in SWIM_SEQUENCED.items() if t != type_]  # the same origin and seq, other types
    with fastpath.writer(one_node.node.ifindex) as writer:
        writer.sequence_accepted(type_, origin=1, seq=100)
        got, counted = one_node.exchange(make(1, 100), make(1, 99), make(1, 101), make(2, 100), *others)
    assert got == [make(1, 101), make(2, 100), *others]
    assert counted == {"dropped_duplicate": 1, "dropped_stale": 1, "dropped": 2, "passed_swim": 5, "passed": 5}


def test_ack_and_nack_pass_whatever_was_taken(one_node, fastpath):
    """They carry the sequence of the probe they answer (the receiver's own), not their sender's: a later ACK
    may answer an earlier probe, so only the node can judge them."""
    with fastpath.writer(one_node.node.ifindex) as writer:
        for type_ in SWIM_SEQUENCED:
            writer.sequence_accepted(type_, origin=1, seq=100)
        writer.heartbeat_accepted(origin=1, seq=100)
        sent = [ack(1, 100), ack(1, 99), nack(1, 100), nack(1, 50)]
        got, counted = one_node.exchange(*sent)
    assert got == sent
    assert counted == {"passed_other": 4}


def test_a_forged_swim_sequence_reaches_the_node_and_moves_nothing(one_node, fastpath):
    """XDP does not check the MAC, so it must never learn from a packet: a forged PING far ahead passes (the node
    drops it as bad_mac), and the genuine next PING still passes after it."""
    with fastpath.writer(one_node.node.ifindex) as writer:
        writer.sequence_accepted(MsgType.PING, origin=1, seq=100)
        forged = ping(1, 2**62, key=b"not-the-key")
        with pytest.raises(ProtocolError, match="bad_mac"):
            decode(forged, cluster=CLUSTER, keys=(KEY,))
        got, counted = one_node.exchange(forged, forged, ping(1, 101), ping(1, 100))
        assert got == [forged, forged, ping(1, 101)]
        assert counted == {"passed_swim": 3, "passed": 3, "dropped_duplicate": 1, "dropped": 1}


def test_swim_sequences_are_kept_per_type_in_one_entry_and_forgotten_on_reset(one_node, fastpath):
    with fastpath.writer(one_node.node.ifindex) as writer:
        writer.sequence_accepted(MsgType.PING, origin=1, seq=100)
        writer.sequence_accepted(MsgType.GOSSIP, origin=1, seq=200)
        writer.sequence_accepted(MsgType.PING, origin=1, seq=300)  # overwrites PING only
        writer.sequence_accepted(MsgType.ACK, origin=1, seq=400)  # not judged: nothing to keep
        got, _ = one_node.exchange(ping(1, 300), ping(1, 250), gossip(1, 200), gossip(1, 201), ack(1, 400))
        assert got == [gossip(1, 201), ack(1, 400)]
        assert writer.stats()["swim_refused"] == 0
        writer.reset()
        got, _ = one_node.exchange(ping(1, 300), gossip(1, 200))
        assert got == [ping(1, 300), gossip(1, 200)]
    keys = _sys.map_keys(fastpath.map_fds["fp_swim"], FpHbKey)
    assert [k for k in keys if k.ifindex == one_node.node.ifindex] == []


def _with(datagram: bytes, offset: int, value: bytes) -> bytes:
    return datagram[:offset] + value + datagram[offset + len(value):]


BAD = {
    "truncated_header": (heartbeat(1, 1)[:20], "malformed"),
    "shorter_than_header_and_mac": (heartbeat(1, 1)[:39], "malformed"),
    "bad_magic": (_with(heartbeat(1, 1), 0, b"XX"), "malformed"),
    "body_len_too_big": (_with(heartbeat(1, 1), 14, (len(heartbeat(1, 1)) - 39).to_bytes(2, "big")), "malformed"),
    "trailing_byte": (heartbeat(1, 1) + b"\x00", "malformed"),
    "unknown_version": (_with(heartbeat(1, 1), 2, b"\x02"), "unknown_version"),
    "foreign_cluster": (heartbeat(1, 1, cluster=CLUSTER ^ 1), "foreign_cluster"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_each_drop_reason_is_counted_and_matches_the_decoder(one_node, name):
    datagram, reason = BAD[name]
    with pytest.raises(ProtocolError) as e:  # the node's own decoder gives the same reason
        decode(datagram, cluster=CLUSTER, keys=(KEY,))
    assert e.value.reason == reason
    got, counted = one_node.exchange(datagram)
    assert got == []
    assert counted == {f"dropped_{reason}": 1, "dropped": 1}


def test_types_the_program_does_not_judge_go_to_the_node(one_node, fastpath):
    with fastpath.writer(one_node.node.ifindex) as writer:
        writer.heartbeat_accepted(origin=1, seq=100)
        unknown = _with(heartbeat(1, 1), 3, b"\xc8")  # type 200: no protocol's
        got, counted = one_node.exchange(leave(1, 50), leave(1, 101), unknown)
    assert got == [leave(1, 50), leave(1, 101), unknown]  # the node judges them: a stale leave, a malformed type
    assert counted == {"passed_other": 3}
    with pytest.raises(ProtocolError) as e:
        decode(unknown, cluster=CLUSTER, keys=(KEY,))
    assert e.value.reason == "malformed"


def test_non_gossip_traffic_passes_untouched(one_node):
    other_port = one_node.frame(b"not gossip", dport=PORT + 1)
    fragment = one_node.frame(heartbeat(1, 1), flags="MF")  # a first fragment: left to the stack
    got, counted = one_node.exchange(frames=(other_port, fragment))
    assert counted == {"passed_other": 2}
    assert one_node.other_port == [b"not gossip"]
    assert got == []  # the fragment waits for the rest of its datagram in the stack


def test_counters_and_state_are_per_node(fastpath, testnet_factory):
    net = testnet_factory(2)
    nodes = []
    try:
        for n in net.nodes:
            fastpath.configure(n.ifindex, CLUSTER, PORT)
        with fastpath.attach(net.nodes[0].ifindex, netns=net.nodes[0].ns), \
                fastpath.attach(net.nodes[1].ifindex, netns=net.nodes[1].ns, mode="generic"):
            nodes = [Node(net, n, fastpath) for n in net.nodes]
            with fastpath.writer(net.nodes[0].ifindex) as writer:
                writer.heartbeat_accepted(origin=1, seq=100)
            got_a, counted_a = nodes[0].exchange(heartbeat(1, 100))
            got_b, counted_b = nodes[1].exchange(heartbeat(1, 100))
        assert (got_a, counted_a) == ([], {"dropped_duplicate": 1, "dropped": 1})
        assert (got_b, counted_b) == ([heartbeat(1, 100)], {"passed_heartbeat": 1, "passed": 1})
        assert fastpath.stats()["dropped_duplicate"] >= 1
    finally:
        for n in net.nodes:
            fastpath.unconfigure(n.ifindex)


def test_writer_from_pins_inside_the_node_namespace(one_node, fastpath):
    """A node started with `ip netns exec` (which hides /sys/fs/bpf) opens the pins under /run and writes."""
    node = one_node.node
    script = ("import sys; from bpf import FastPathWriter\n"
              "w = FastPathWriter(sys.argv[1], int(sys.argv[2]))\n"
              "w.reset(); w.heartbeat_accepted(7, 500); w.metadata_accepted(900, 3); w.close()\n")
    env = dict(os.environ, PYTHONPATH=str(Path(bpf.__file__).resolve().parent.parent))
    subprocess.run(["ip", "netns", "exec", node.ns, sys.executable, "-c", script, fastpath.pin_dir,
                    str(node.ifindex)], check=True, env=env, capture_output=True)
    got, counted = one_node.exchange(heartbeat(7, 500), metadata(900, 3), heartbeat(7, 501))
    assert got == [heartbeat(7, 501)]
    assert counted["dropped_duplicate"] == 2
    with FastPathWriter(fastpath.pin_dir, node.ifindex) as writer:
        writer.reset()  # a restarted node forgets: the same datagrams pass again
        assert writer.stats()["dropped_duplicate"] == 2
    got, _ = one_node.exchange(heartbeat(7, 500), metadata(900, 3))
    assert got == [heartbeat(7, 500), metadata(900, 3)]


def test_attach_refuses_a_taken_interface_and_restores_it(one_node, fastpath):
    node = one_node.node
    assert xdp_prog_id(node.ifindex, node.ns) != 0
    with pytest.raises(AttachError, match="another XDP program"):
        with fastpath.attach(node.ifindex, netns=node.ns, mode="native"):
            pass
    assert xdp_prog_id(node.ifindex, node.ns) != 0  # the refused attach did not remove the first one


def test_testnet_reports_a_program_left_attached_and_still_cleans_up(fastpath):
    net = Testnet(1)
    with pytest.raises(AssertionError, match="XDP"):
        with net:
            node = net.nodes[0]
            left = fastpath.attach(node.ifindex, netns=node.ns)
            left.__enter__()  # deliberately never exited
    assert not os.path.exists(f"/var/run/netns/{node.ns}")
    assert not os.path.exists(f"/sys/class/net/{node.host_if}")
    left.__exit__(None, None, None)  # the interface is gone: detaching is a no-op


def test_verdicts_on_mutated_datagrams_agree_with_the_decoder(one_node):
    """Seeded random damage to valid datagrams: XDP drops exactly those the decoder rejects on the header
    (with the same reason), and passes the rest (the node then rejects them on the MAC or the body)."""
    rng = random.Random(1234)
    valid = [heartbeat(9, 5), metadata(5, 9), swap_req(5, 9), swap_resp(5, 9), leave(9, 6), ping(9, 5),
             gossip(9, 5), state(9, 5), ack(9, 5)]
    mutated = []
    for _ in range(300):
        d = bytearray(rng.choice(valid))
        how = rng.randrange(4)
        if how == 0:
            d[rng.randrange(24)] = rng.randrange(256)  # anywhere in the header
        elif how == 1:
            d = d[:rng.randrange(len(d))]  # truncated
        elif how == 2:
            d += bytes(rng.randrange(256) for _ in range(rng.randrange(1, 8)))  # trailing bytes
        else:
            d[rng.choice([2, 3])] = rng.choice([0, 1, 2, 4, 5, 6, 7, 10, 255])  # version or type
        mutated.append(bytes(d))
    expected: dict[str, int] = {}
    passes = []
    for d in mutated:
        try:
            decode(d, cluster=CLUSTER, keys=(KEY,))
            passes.append(d)
        except ProtocolError as e:
            if e.reason in ("malformed", "unknown_version", "foreign_cluster") and judged_by_xdp(d):
                expected[f"dropped_{e.reason}"] = expected.get(f"dropped_{e.reason}", 0) + 1
            else:
                passes.append(d)
    got, counted = one_node.exchange(*mutated)
    assert sorted(got) == sorted(passes)
    assert {k: v for k, v in counted.items() if k.startswith("dropped_")} == expected
