"""The protocol core, driven by hand: an injected clock, seeded RNGs, a fake instant network."""

import pytest

from gossip import (Identity, LeaveSent, MemberAdded, MemberLeft, MemberRemoved, MetadataAdopted, MetadataSent,
                    PacketDropped, UsageError, Version)
from gossip import _wire as wire

from fakenet import FakeNet, make_core


def names(core):
    return sorted(m.name for m in core.members())


def test_heartbeat_rumor_carries_infected_set_and_is_forwarded_only_to_uninfected():
    cores = [make_core(i, fanout=2) for i in range(6)]
    for c in cores:
        for o in cores:
            c.set(o.identity, 1000.0)
    a = cores[0]
    a.tick(1000.0)
    sends = [s for s in a.take_sends() if isinstance(s.message, wire.Heartbeat)]
    assert len(sends) == 1 and len(sends[0].targets) == 2
    hb = sends[0].message
    target_ids = {wire.node_id(*t) for t in sends[0].targets}
    assert set(hb.infected.ids) == target_ids | {a.node_id}
    # a receiver forwards to 2 peers outside the infected set, and adds itself and them
    b = next(c for c in cores if c.identity.endpoint == sends[0].targets[0])
    b.receive(sends[0].payload, 1000.0)
    fwd = b.take_sends()
    assert len(fwd) == 1
    fwd_ids = {wire.node_id(*t) for t in fwd[0].targets}
    assert fwd_ids.isdisjoint(hb.infected.ids)
    assert set(fwd[0].message.infected.ids) == set(hb.infected.ids) | {b.node_id} | fwd_ids
    assert fwd[0].message.seq == hb.seq and fwd[0].message.origin == a.node_id


def test_rumor_ends_when_everyone_is_infected_and_reaches_all():
    cores = [make_core(i, fanout=2) for i in range(10)]
    for c in cores:
        for o in cores:
            c.set(o.identity, 1000.0)
    net = FakeNet(cores)
    cores[3].tick(1000.0)
    for c in cores:  # only node 3's heartbeat and swap: discard the others' cycle output
        if c is not cores[3]:
            c.take_sends()
    net.pump(1000.0, [cores[3]])
    hb_deliveries = [d for d in net.delivered if d[0] == "Heartbeat"]
    receivers = {to for _, _, to in hb_deliveries}
    assert receivers == {f"n{i}" for i in range(10)} - {"n3"}
    # each holder forwards once, to at most fanout peers: the rumor ends after at most fanout * n deliveries,
    # and every delivery beyond the first per node is dropped as a duplicate
    assert len(hb_deliveries) <= 2 * 10
    for c in cores:
        if c is not cores[3]:
            assert c.stats["accepted_heartbeat"] == 1
    dup_heartbeats = [e for c in cores for e in c.take_events()
                      if isinstance(e, PacketDropped) and e.detail.startswith("heartbeat")]
    assert len(dup_heartbeats) == len(hb_deliveries) - 9


def test_single_seed_cluster_converges_and_expires_a_silent_node_at_the_timeout():
    cores = [make_core(i, cycle_s=1.0, timeout_s=3.0) for i in range(8)]
    for c in cores[1:]:
        c.set(cores[0].identity, 1000.0)
    net = FakeNet(cores)
    now = net.run(1000.0, 1005.0, 0.5)
    assert all(names(c) == [f"n{i}" for i in range(8)] for c in cores)
    dead = cores[7]
    net.down.add(dead.identity.endpoint)
    last_seen = max(m.last_seen for c in cores[:7] for m in c.members() if m.name == "n7")
    now = net.run(now, last_seen + 3.0 - 0.25, 0.25)
    assert all("n7" in names(c) for c in cores[:7])  # not yet: just before the timeout
    net.run(now, last_seen + 3.0 + 0.25, 0.25)
    for c in cores[:7]:
        assert "n7" not in names(c)
        assert any(isinstance(e, MemberRemoved) and e.name == "n7" and e.reason == "timeout"
                   for e in c.take_events())


def test_stop_halts_own_heartbeats_but_node_keeps_forwarding():
    cores = [make_core(i, fanout=1, cycle_s=1.0, timeout_s=3.0) for i in range(3)]
    for c in cores:
        for o in cores:
            c.set(o.identity, 1000.0)
    net = FakeNet(cores)
    cores[1].stop()
    # the stopped node still accepts and forwards a rumor handed to it
    hb = wire.Heartbeat(cluster=cores[0].cluster, origin=cores[0].node_id, seq=5, identity=cores[0].identity,
                        infected=wire.Infected(ids=frozenset({cores[0].node_id, cores[1].node_id})))
    cores[1].receive(cores[0].encode(hb), 1000.0)
    assert [s.targets for s in cores[1].take_sends()] == [(cores[2].identity.endpoint,)]
    now = net.run(1000.0, 1010.0, 0.5)
    assert cores[1].stats["heartbeats_sent"] == 0
    assert "n1" not in names(cores[0]) and "n1" not in names(cores[2])
    cores[1].start()
    net.run(now, now + 2.0, 0.5)
    assert "n1" in names(cores[0]) and "n1" in names(cores[2])


def test_concurrent_publishes_are_totally_ordered_and_the_highest_wins_everywhere():
    cores = [make_core(i) for i in range(5)]
    for c in cores:
        for o in cores:
            c.set(o.identity, 1000.0)
    net = FakeNet(cores)
    v1 = cores[1].publish(b"one", 1000.0)  # same instant, different nodes
    v2 = cores[2].publish(b"two", 1000.0)
    assert v1 != v2 and v1.seq == v2.seq == 1000000  # tie on time, broken by origin
    net.pump(1000.0)
    winner = max(v1, v2)
    assert all(c.read()[0] == winner for c in cores)
    # two publishes in the same millisecond on one node never tie either
    a = cores[0].publish(b"x", 1000.0)
    b = cores[0].publish(b"y", 1000.0)
    assert b > a > winner


def test_swap_request_moves_metadata_in_both_directions():
    old, new = make_core(0), make_core(1)
    for c, o in ((old, new), (new, old)):
        c.set(o.identity, 1000.0)
    new.publish(b"v2", 1000.0)
    new.take_sends()  # the rumor is lost
    # direction 1: the stale node asks; the newer node answers with its value
    old.tick(1001.0)
    req = [s for s in old.take_sends() if isinstance(s.message, wire.SwapRequest)][0]
    new.receive(req.payload, 1001.0)
    resp = new.take_sends()
    assert [type(s.message) for s in resp] == [wire.SwapResponse]
    old.receive(resp[0].payload, 1001.0)
    assert old.read() == new.read()
    assert any(isinstance(e, MetadataAdopted) and e.via == "swap" for e in old.take_events())
    # direction 2: the newer node asks; the stale one adopts from the request and sends nothing
    third = make_core(2)
    third.set(new.identity, 1000.0)
    new.set(third.identity, 1000.0)
    third.publish(b"v3", 1002.0)
    third.take_sends()
    for s in new.take_sends():
        pass
    third.tick(1003.0)
    req = [s for s in third.take_sends() if isinstance(s.message, wire.SwapRequest)][0]
    new.receive(req.payload, 1003.0)
    assert new.read()[1] == b"v3" and new.take_sends() == []


def _drops(core):
    return [(e.reason) for e in core.take_events() if isinstance(e, PacketDropped)]


def test_every_drop_reason_is_counted_and_state_is_unchanged():
    a, b = make_core(0, secrets=(b"k",)), make_core(1, secrets=(b"k",))
    a.set(b.identity, 1000.0)
    b.set(a.identity, 1000.0)
    a.tick(1000.0)
    hb = next(s for s in a.take_sends() if isinstance(s.message, wire.Heartbeat)).payload
    before = b.members()
    cases = {
        "malformed": [b"", b"\x00" * 10, b"garbage" * 10, hb[:-1], hb[:30] + hb[31:]],
        "unknown_version": [hb[:2] + b"\x07" + hb[3:]],
        "foreign_cluster": [hb[:4] + b"\xde\xad\xbe\xef" + hb[8:]],
        "bad_mac": [hb[:-1] + bytes([hb[-1] ^ 1]), wire.encode(wire.Heartbeat(
            cluster=a.cluster, origin=a.node_id, seq=10 ** 13, identity=a.identity), key=b"wrong")],
    }
    for reason, packets in cases.items():
        for p in packets:
            b.receive(p, 1000.0)
        assert _drops(b) == [reason] * len(packets), reason
        assert b.stats[f"dropped_{reason}"] == len(packets)
    assert [m.seq for m in b.members()] == [m.seq for m in before]
    b.receive(hb, 1000.0)
    b.take_events()
    b.receive(hb, 1000.0)  # the same packet again
    assert _drops(b) == ["duplicate"]
    a.tick(1001.0)
    hb2 = next(s for s in a.take_sends() if isinstance(s.message, wire.Heartbeat)).payload
    b.receive(hb2, 1001.0)
    b.take_events()
    b.receive(hb, 1002.0)  # a replayed older heartbeat
    assert _drops(b) == ["stale"]
    assert b.stats["dropped"] == sum(len(p) for p in cases.values()) + 2


def test_replayed_heartbeat_of_a_removed_node_does_not_resurrect_it():
    a, b = make_core(0, cycle_s=1.0, timeout_s=2.0), make_core(1, cycle_s=1.0, timeout_s=2.0)
    a.set(b.identity, 1000.0)
    a.tick(1000.0)
    hb = next(s for s in a.take_sends() if isinstance(s.message, wire.Heartbeat)).payload
    b.receive(hb, 1000.0)
    b.tick(1005.0)
    assert "n0" not in names(b)
    b.receive(hb, 1006.0)
    assert "n0" not in names(b) and b.stats["dropped_stale"] + b.stats["dropped_duplicate"] == 1


def test_secret_rotation_first_key_signs_all_keys_verify():
    old = make_core(0, secrets=(b"old",))
    rotated = make_core(1, secrets=(b"new", b"old"))
    outsider = make_core(2, secrets=(b"new",))
    old.set(rotated.identity, 1000.0)
    old.tick(1000.0)
    hb = next(s for s in old.take_sends() if isinstance(s.message, wire.Heartbeat)).payload
    rotated.receive(hb, 1000.0)
    outsider.receive(hb, 1000.0)
    assert "n0" in names(rotated)
    assert "n0" not in names(outsider) and outsider.stats["dropped_bad_mac"] == 1


def test_big_cluster_switches_infected_set_to_bloom_and_never_exceeds_max_packet():
    cores = [make_core(i, fanout=4, max_packet_bytes=600) for i in range(300)]
    for c in cores[1:]:
        cores[0].set(c.identity, 1000.0)
    for c in cores[1:]:
        c.set(cores[0].identity, 1000.0)
    hb = wire.Heartbeat(cluster=cores[0].cluster, origin=cores[0].node_id, seq=5, identity=cores[0].identity,
                        infected=wire.Infected(ids=frozenset(c.node_id for c in cores[:200])))
    fitted = wire.fit(hb, 600)
    assert fitted.infected.bloom is not None
    assert all(c.node_id in fitted.infected for c in cores[:200])
    payload = wire.encode(hb, key=b"", max_packet_bytes=600)
    assert len(payload) + wire.IPV4_UDP_OVERHEAD <= 600
    false_pos = sum(c.node_id in fitted.infected for c in cores[200:])
    assert false_pos <= 10  # a Bloom filter sized to the space left stays selective


def test_publish_rejects_data_that_cannot_fit():
    c = make_core(0, max_packet_bytes=600)
    with pytest.raises(UsageError, match="data: .* exceeds"):
        c.publish(b"x" * 600, 1000.0)
    assert c.read() == (Version(0, 0), b"")


def test_restarted_node_continues_above_its_old_heartbeat_sequence():
    a, b = make_core(0), make_core(1)
    a.set(b.identity, 1000.0)
    for t in (1000.0, 1001.0):
        a.tick(t)
        for s in a.take_sends():
            if isinstance(s.message, wire.Heartbeat):
                b.receive(s.payload, t)
    fresh = make_core(0, now=1002.0)  # same address, new process
    fresh.set(b.identity, 1002.0)
    fresh.tick(1002.0)
    hb = next(s for s in fresh.take_sends() if isinstance(s.message, wire.Heartbeat))
    b.receive(hb.payload, 1002.0)
    assert b.stats["accepted_heartbeat"] == 3


def test_a_seed_is_contacted_but_listed_only_once_heard_from():
    a, b = make_core(0), make_core(1)
    a.set(a.identity, 1000.0)
    assert names(a) == ["n0"]
    a.set(Identity(name="", addr=b.identity.addr, port=b.identity.port), 1000.0)  # a seed: known by address
    a.set(Identity(name="", addr="127.0.0.1", port=9100), 1000.0)  # a seed nobody listens on
    assert names(a) == ["n0"] and a.live_ids() == set()
    assert not [e for e in a.take_events() if isinstance(e, MemberAdded)]
    a.tick(1000.0)  # the seeds are contacted all the same: a's heartbeat goes to them
    hb = next(s for s in a.take_sends() if isinstance(s.message, wire.Heartbeat))
    assert b.identity.endpoint in hb.targets
    b.receive(hb.payload, 1000.0)
    b.tick(1000.0)
    for s in b.take_sends():
        if isinstance(s.message, wire.Heartbeat):
            a.receive(s.payload, 1000.0)
    assert names(a) == ["n0", "n1"]  # heard from: listed, under its own name
    assert [(e.name, e.port) for e in a.take_events() if isinstance(e, MemberAdded)] == [("n1", b.identity.port)]
    # the silent seed is never listed, and expiring it removes nothing anyone saw
    a.tick(1000.0 + a.config.timeout_s + 1)
    assert not [e for e in a.take_events() if isinstance(e, (MemberAdded, MemberRemoved)) and e.name == ""]


def _joined(n, **cfg):
    """N cores that have all heard from each other (full views), and the fake network between them."""
    cores = [make_core(i, cycle_s=1.0, timeout_s=5.0, **cfg) for i in range(n)]
    for c in cores:
        for o in cores:
            c.set(o.identity, 1000.0)
    net = FakeNet(cores)
    now = net.run(1000.0, 1002.0, 0.5)
    assert all(names(c) == sorted(f"n{i}" for i in range(n)) for c in cores)
    for c in cores:
        c.take_events()
    return cores, net, now


def test_a_leave_reaches_every_peer_which_drops_the_leaver_at_once_as_left_not_removed():
    cores, net, now = _joined(10, fanout=2)
    leaver = cores[4]
    last_hb = next(m.seq for m in leaver.members() if m.name == "n4")
    assert leaver.leave(now) == 2  # fanout peers
    (announced,) = [e for e in leaver.take_events() if isinstance(e, LeaveSent)]
    assert announced.seq > last_hb and len(announced.targets) == 2
    before = len(net.delivered)
    net.pump(now, [leaver])
    leaves = [d for d in net.delivered[before:] if d[0] == "Leave"]
    assert sorted(to for _, frm, to in leaves if frm == "n4") == sorted(
        c.identity.name for c in cores if "%s:%d" % c.identity.endpoint in announced.targets)
    assert len(leaves) <= 2 * 10  # a rumor: each holder forwards it once, to at most fanout peers
    for c in cores:
        if c is leaver:
            continue
        assert "n4" not in names(c)
        events = c.take_events()
        assert [(e.name, e.seq) for e in events if isinstance(e, MemberLeft)] == [("n4", announced.seq)]
        assert not [e for e in events if isinstance(e, MemberRemoved)]
        assert c.stats["accepted_leave"] == 1 and c.stats["members_left"] == 1
    # the leaver sends nothing more, and cannot be started again
    leaver.tick(now + 1.0)
    assert leaver.take_sends() == []
    with pytest.raises(UsageError, match="left"):
        leaver.start()
    with pytest.raises(UsageError, match="left"):
        leaver.publish(b"x", now + 1.0)
    assert leaver.leave(now + 1.0) == 0


def test_heartbeats_of_a_leaver_still_in_flight_do_not_bring_it_back():
    cores, net, now = _joined(3)
    a, b = cores[0], cores[1]
    a.tick(now + 1.0)
    old_hb = next(s for s in a.take_sends() if isinstance(s.message, wire.Heartbeat))
    for c in cores[1:]:
        c.take_sends()
    a.leave(now + 1.0)
    (leave,) = a.take_sends()
    b.receive(leave.payload, now + 1.0)
    b.take_events()
    b.receive(old_hb.payload, now + 1.0)  # sent before the leave, arriving after it
    assert "n0" not in names(b)
    assert _drops(b) == ["stale"]


def test_a_replayed_leave_after_the_node_came_back_does_nothing():
    cores, net, now = _joined(3)
    a, b = cores[0], cores[1]
    a.leave(now)
    (leave,) = a.take_sends()
    b.receive(leave.payload, now)
    assert "n0" not in names(b)
    b.receive(leave.payload, now)  # the same copy again
    assert _drops(b) == ["duplicate"]
    fresh = make_core(0, now=now + 3.0, cycle_s=1.0, timeout_s=5.0)  # same address, a new incarnation
    fresh.set(b.identity, now + 3.0)
    fresh.tick(now + 3.0)
    hb = next(s for s in fresh.take_sends() if isinstance(s.message, wire.Heartbeat))
    b.receive(hb.payload, now + 3.0)
    assert "n0" in names(b)
    b.take_events()
    b.receive(leave.payload, now + 3.5)  # the old incarnation's leave, replayed
    assert "n0" in names(b)
    assert _drops(b) == ["stale"]
    assert b.stats["accepted_leave"] == 1


def test_a_forged_or_misaddressed_leave_is_dropped_and_counted():
    cores, net, now = _joined(3, secrets=(b"k",))
    a, b = cores[0], cores[1]
    seq = 10 ** 13
    forged = wire.encode(wire.Leave(cluster=a.cluster, origin=a.node_id, seq=seq, identity=a.identity),
                         key=b"not-the-key")
    not_its_own = b.encode(wire.Leave(cluster=a.cluster, origin=a.node_id, seq=seq, identity=cores[2].identity))
    about_me = b.encode(wire.Leave(cluster=b.cluster, origin=b.node_id, seq=seq, identity=b.identity))
    for p in (forged, not_its_own, about_me):
        b.receive(p, now)
    assert _drops(b) == ["bad_mac", "malformed", "duplicate"]
    assert b.stats["dropped_bad_mac"] == 1 and b.stats["dropped_malformed"] == 1
    assert names(b) == ["n0", "n1", "n2"] and b.stats["accepted_leave"] == 0
    assert b.take_sends() == []


def test_adoptions_name_their_source_and_rumor_sends_name_their_targets():
    """What the testbed rebuilds infection trees from: MetadataSent lists a hop's targets, MetadataAdopted the
    address the adopted copy came from."""
    cores = [make_core(i, fanout=2) for i in range(5)]
    for c in cores:
        for o in cores:
            c.set(o.identity, 1000.0)
    a = cores[0]
    a.publish(b"v1", 1000.0)
    events = a.take_events()
    adopted = next(e for e in events if isinstance(e, MetadataAdopted))
    assert adopted.via == "publish" and adopted.src == ""
    sent = next(e for e in events if isinstance(e, MetadataSent))
    (send,) = a.take_sends()
    assert sent.targets == tuple(f"{h}:{p}" for h, p in send.targets) and len(sent.targets) == 2
    assert (sent.version, sent.origin) == (adopted.version, a.node_id)
    b = next(c for c in cores if c.identity.endpoint == send.targets[0])
    src = "%s:%d" % a.identity.endpoint
    b.receive(send.payload, 1000.001, src)
    got = [e for e in b.take_events() if isinstance(e, MetadataAdopted)]
    assert [(e.via, e.src, e.version) for e in got] == [("rumor", src, adopted.version)]
    # a heartbeat spread is not a metadata hop
    a.tick(1001.0)
    assert not [e for e in a.take_events() if isinstance(e, MetadataSent)]


def test_a_heartbeat_taken_straight_from_its_origin_is_a_hop_sample_and_a_forwarded_one_is_not():
    a, b, c = make_core(0), make_core(1), make_core(2)
    for x in (a, b, c):
        for y in (a, b, c):
            x.set(y.identity, 1000.0)
    b.tick(1000.0004)  # b's heartbeat: sequence 1000000400 (its clock in µs)
    hb = [s for s in b.take_sends() if isinstance(s.message, wire.Heartbeat)][0]
    assert hb.message.seq == 1_000_000_400
    a.receive(hb.payload, 1000.0034, "%s:%d" % b.identity.endpoint)  # straight from b: 3.0 ms after it was sent
    c.receive(hb.payload, 1000.0050, "%s:%d" % a.identity.endpoint)  # forwarded by a: not one hop of b's
    assert a.take_direct_hops() == [pytest.approx(3.0)] and a.take_direct_hops() == []
    assert c.take_direct_hops() == []


def _listed(core) -> dict:
    return {m.node_id: (m.name, m.addr, m.port, m.private) for m in core.members()[1:]}


def test_the_roster_moves_exactly_when_the_listed_members_change():
    """`GossipCore.roster` (what the heartbeat plane re-registers members on) moves on an added, heard, renamed,
    left or expired member, and not on a refresh, a seed or a duplicate: over a random run of heartbeats, leaves,
    renames and expiries, the listed identities changed if and only if the roster moved."""
    import random

    core = make_core(0, timeout_s=2.0, cycle_s=0.5)
    rng = random.Random(7)
    seqs: dict[int, int] = {}

    def ident(i, name=None):
        return Identity(name=name or f"n{i}", addr="127.0.0.1", port=9000 + i)

    def hb(i, name=None):
        seqs[i] = seqs.get(i, 0) + rng.choice([0, 1, 1, 2])  # sometimes a duplicate
        return wire.Heartbeat(cluster=core.cluster, origin=ident(i).node_id, seq=seqs[i], identity=ident(i, name))

    core.set(ident(5), 1000.0)  # a seed: contacted, not listed
    assert core.roster == 0 and _listed(core) == {}
    now, moved = 1000.0, 0
    for _ in range(400):
        now += rng.uniform(0.0, 0.3)
        before, roster = _listed(core), core.roster
        kind = rng.random()
        i = rng.randrange(1, 7)
        if kind < 0.75:
            core.receive_message(hb(i), now)
        elif kind < 0.85:
            core.receive_message(hb(i, name=rng.choice([f"n{i}", f"renamed-{i}"])), now)
        elif kind < 0.92:
            seqs[i] = seqs.get(i, 0) + 1
            core.receive_message(wire.Leave(cluster=core.cluster, origin=ident(i).node_id, seq=seqs[i],
                                            identity=ident(i)), now)
        else:
            core.tick(now)
        core.take_events(), core.take_sends()
        changed = _listed(core) != before
        assert (core.roster != roster) == changed, (kind, i, before, _listed(core))
        moved += changed
    assert moved > 20  # the run exercised it
