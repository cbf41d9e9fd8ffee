"""Codec round trips and decoder robustness (Hypothesis)."""

from hypothesis import given, settings
from hypothesis import strategies as st

from gossip import _wire as wire
from gossip.errors import ProtocolError
from fakenet import make_core

CLUSTER = wire.cluster_id("test")
KEYS = (b"k1", b"k0")

u32 = st.integers(0, 2**32 - 1)
ipv4 = st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: ".".join(map(str, t)))
identities = st.builds(lambda n, a, p, priv: wire.Identity(name=n, addr=a, port=p, private=priv),
                       st.text(max_size=20), ipv4, st.integers(1, 65535), st.binary(max_size=40))
infected = st.one_of(
    st.frozensets(u32, max_size=40).map(lambda s: wire.Infected(ids=s)),
    st.tuples(st.binary(min_size=1, max_size=200), st.integers(1, 8)).map(
        lambda t: wire.Infected(bloom=t[0], hashes=t[1])),
)
seqs = st.integers(0, 2**64 - 1)
messages = st.one_of(
    st.builds(lambda o, s, i, inf: wire.Heartbeat(cluster=CLUSTER, origin=o, seq=s, identity=i, infected=inf),
              u32, seqs, identities, infected),
    st.builds(lambda o, s, d, inf: wire.MetadataRumor(cluster=CLUSTER, origin=o, version=s, data=d, infected=inf),
              u32, seqs, st.binary(max_size=300), infected),
    st.builds(lambda o, s, i, d: wire.SwapRequest(cluster=CLUSTER, origin=o, version=s, sender=i, data=d),
              u32, seqs, identities, st.binary(max_size=300)),
    st.builds(lambda o, s, d: wire.SwapResponse(cluster=CLUSTER, origin=o, version=s, data=d),
              u32, seqs, st.binary(max_size=300)),
    st.builds(lambda o, s, i, inf: wire.Leave(cluster=CLUSTER, origin=o, seq=s, identity=i, infected=inf),
              u32, seqs, identities, infected),
)
updates = st.one_of(
    st.builds(lambda inc, i: wire.Update(kind=wire.ALIVE, incarnation=inc, node=i.node_id, identity=i),
              seqs, identities),
    st.builds(lambda k, inc, n, by: wire.Update(kind=k, incarnation=inc, node=n, sender=by),
              st.sampled_from([wire.SUSPECT, wire.DEAD]), seqs, u32, u32))
ups = st.lists(updates, max_size=6).map(tuple)
swim_messages = st.one_of(
    st.builds(lambda o, s, i, t, u: wire.Ping(cluster=CLUSTER, origin=o, seq=s, sender=i, target=t, updates=u),
              u32, seqs, identities, u32, ups),
    st.builds(lambda o, s, u: wire.Ack(cluster=CLUSTER, origin=o, seq=s, updates=u), u32, seqs, ups),
    st.builds(lambda o, s, u: wire.Gossip(cluster=CLUSTER, origin=o, seq=s, updates=u), u32, seqs, ups),
    st.builds(lambda o, s, i, t, u: wire.PingReq(cluster=CLUSTER, origin=o, seq=s, sender=i, target=t, updates=u),
              u32, seqs, identities, identities, ups),
    st.builds(lambda o, s, t: wire.Nack(cluster=CLUSTER, origin=o, seq=s, target=t), u32, seqs, u32),
    st.builds(lambda o, s, i, r, e: wire.State(cluster=CLUSTER, origin=o, seq=s, sender=i, reply=r, part=0, parts=1,
                                               entries=tuple(wire.StateEntry(state=k, incarnation=n, identity=x)
                                                             for k, n, x in e)),
              u32, seqs, identities, st.booleans(),
              st.lists(st.tuples(st.sampled_from([wire.ALIVE, wire.SUSPECT, wire.DEAD]), seqs, identities),
                       max_size=5)),
)
every_message = st.one_of(messages, swim_messages)


@given(every_message, st.integers(600, 1400))
def test_datagram_size_from_sizes_is_the_encoded_length(msg, max_packet):
    fitted = wire.fit(msg, max_packet)
    try:
        raw = wire.encode(fitted, key=b"k1", max_packet_bytes=max_packet)
    except wire.UsageError:
        return  # does not fit: never sent
    assert wire.datagram_size(fitted) == len(raw)


@given(swim_messages, st.sampled_from(KEYS))
def test_swim_messages_round_trip(msg, key):
    try:
        raw = wire.encode(msg, key=key)
    except wire.UsageError:
        return
    assert wire.decode(raw, cluster=CLUSTER, keys=KEYS) == msg


@given(messages, st.sampled_from(KEYS))
def test_round_trip(msg, key):
    data = wire.encode(msg, key=key, max_packet_bytes=1400)
    assert len(data) + wire.IPV4_UDP_OVERHEAD <= 1400
    assert wire.decode(data, cluster=CLUSTER, keys=KEYS) == msg
    head = wire.peek_header(data)
    assert head[0] == wire.MAGIC and head[2] == msg.type and head[4] == msg.origin


@settings(max_examples=500)
@given(st.binary(max_size=1500))
def test_arbitrary_bytes_never_raise_and_are_counted_as_dropped(data):
    core = make_core(0)
    before = core.members()
    core.receive(data, 1000.0)
    assert core.stats["dropped"] == 1 and core.stats["packets_in"] == 1
    assert core.members() == before and core.take_sends() == []


@settings(max_examples=300)
@given(messages, st.integers(0, 1500), st.integers(0, 255))
def test_single_byte_corruption_of_a_valid_packet_is_rejected(msg, pos, value):
    data = bytearray(wire.encode(msg, key=KEYS[0]))
    pos %= len(data)
    if data[pos] == value:
        return
    data[pos] = value
    try:
        wire.decode(bytes(data), cluster=CLUSTER, keys=KEYS)
    except ProtocolError as e:
        assert e.reason in ("malformed", "unknown_version", "foreign_cluster", "bad_mac")
    else:
        raise AssertionError("a corrupted packet was accepted")


@given(messages, st.integers(600, 1400))
def test_fit_from_sizes_agrees_with_encoding(msg, max_packet):
    try:
        by_encoding = wire.encode_body(msg, max_packet)[1]
    except wire.UsageError:
        return
    assert wire.fit(msg, max_packet) == by_encoding


def test_a_leave_carries_its_sequence_in_the_header_and_its_identity_in_the_body():
    ident = wire.Identity(name="n7", addr="10.0.0.7", port=7946, private=b"rack=3")
    leave = wire.Leave(cluster=CLUSTER, origin=ident.node_id, seq=1_700_000_000_123, identity=ident,
                       infected=wire.Infected(ids=frozenset({ident.node_id, 5})))
    data = wire.encode(leave, key=KEYS[0])
    magic, version, mtype, cluster, origin, flags, body_len, seq = wire.peek_header(data)
    assert (mtype, origin, seq) == (5, ident.node_id, 1_700_000_000_123)
    assert wire.decode(data, cluster=CLUSTER, keys=KEYS) == leave
    # the body is a heartbeat's: the same bytes under the other type
    hb = wire.Heartbeat(cluster=CLUSTER, origin=leave.origin, seq=leave.seq, identity=ident, infected=leave.infected)
    assert wire.encode(hb, key=KEYS[0])[wire.HEADER_BYTES:-wire.MAC_BYTES] == data[wire.HEADER_BYTES:-wire.MAC_BYTES]
    # a big infected set becomes a Bloom filter, as a heartbeat's does
    big = wire.Leave(cluster=CLUSTER, origin=1, seq=2, identity=ident, infected=wire.Infected(ids=frozenset(range(400))))
    fitted = wire.fit(big, 600)
    assert fitted.infected.bloom is not None and isinstance(fitted, wire.Leave)
    assert len(wire.encode(big, key=KEYS[0], max_packet_bytes=600)) + wire.IPV4_UDP_OVERHEAD <= 600
