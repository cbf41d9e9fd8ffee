"""The shared driver (`gossip._driver.CoreDriver`) on a real core, with a fake send function, fast path and log.

The node and the simulator both drain their cores through it, so what these tests pin down is what both write.
"""

from dataclasses import dataclass

import pytest

import gossip._events
from gossip import (Event, HeartbeatsChanged, LeaveSent, MemberAdded, MemberAlive, MemberLeft, MemberRefreshed,
                    MemberRemoved, MemberSuspected, MetadataAdopted, MetadataSent, PacketDropped, Refuted)
from gossip import _wire as wire
from gossip._driver import ROUTINE_DROPS, CoreDriver, event_json

from fakenet import make_core


class Journal:
    """The fast path and the network of one driver, writing what reaches them to one list, in order."""

    def __init__(self) -> None:
        self.entries: list[tuple] = []

    def accept(self, accepted) -> None:
        self.entries.append(("accept", [(a.type, a.origin, a.seq) for a in accepted]))

    def send(self, sends) -> None:
        self.entries.append(("send", [(type(s.message).__name__, s.targets) for s in sends]))


def test_a_drain_hands_on_accepted_state_then_sends_then_records_without_routine_drops():
    a, b, c = (make_core(i, fanout=1) for i in range(3))
    records, seen, journal = [], [], Journal()
    driver = CoreDriver(a, name="n0", send=journal.send, write=records.append, now=1000.0, fastpath=journal,
                        on_event=seen.append)
    a.set(b.identity, 1000.0)
    a.set(c.identity, 1000.0)
    driver.drain(1000.0)
    b.set(a.identity, 1000.0)
    version = b.publish(b"v1", 1000.1)
    (rumor,) = b.take_sends()  # b knows only a: a is its one target, and a forwards to c
    b.tick(1000.1)
    b.tick(1001.1)
    hb1, hb2 = (s for s in b.take_sends() if isinstance(s.message, wire.Heartbeat))
    assert hb1.message.seq < hb2.message.seq
    src = "127.0.0.1:9001"
    a.receive(rumor.payload, 1000.25, src)
    a.receive(rumor.payload, 1000.25, src)  # a duplicate
    a.receive(b"junk", 1000.25, src)  # malformed: not routine, so it is logged
    driver.drain(1000.25)
    a.receive(hb2.payload, 1001.2, src)
    a.receive(hb1.payload, 1001.2, src)  # stale: older than the one just accepted
    driver.drain(1001.2)
    driver.drain(1001.3)  # nothing new: nothing reaches the fast path, the network or the log

    ep_c = c.identity.endpoint
    assert journal.entries == [
        ("accept", [(wire.MsgType.METADATA, version.origin, version.seq)]),
        ("send", [("MetadataRumor", (ep_c,))]),
        ("accept", [(wire.MsgType.HEARTBEAT, b.node_id, hb2.message.seq)]),
        ("send", [("Heartbeat", (ep_c,))]),
    ]
    assert records == [  # the seeds set at 1000.0 are no members yet: b is added when its heartbeat arrives
        {"t": 1000.25, "node": "n0", "version": version.seq, "origin": version.origin, "via": "rumor", "size": 2,
         "src": src, "kind": "metadata_adopted"},
        {"t": 1000.25, "node": "n0", "version": version.seq, "origin": version.origin,
         "targets": ["127.0.0.1:9002"], "kind": "metadata_sent"},
        {"t": 1000.25, "node": "n0", "reason": "malformed", "detail": "4 bytes is shorter than header + MAC",
         "kind": "packet_dropped"},
        {"t": 1001.2, "node": "n0", "node_id": b.node_id, "name": "n1", "addr": "127.0.0.1", "port": 9001,
         "kind": "member_added"},
    ]
    # the routine drops are left out of the log, not lost: the stats count them, and `on_event` saw them
    assert (a.stats["dropped_duplicate"], a.stats["dropped_stale"], a.stats["dropped_malformed"]) == (1, 1, 1)
    assert a.stats["dropped"] == 3
    assert [e.reason for e in seen if isinstance(e, PacketDropped)] == ["duplicate", "malformed", "stale"]
    assert {"duplicate", "stale"} == ROUTINE_DROPS
    assert (a.take_sends(), a.take_events(), a.take_accepted()) == ([], [], [])


def test_a_timer_step_ticks_writes_stats_once_a_cycle_and_says_when_to_wake():
    a, b = make_core(0, cycle_s=1.0, timeout_s=2.5), make_core(1)
    records, journal = [], Journal()
    driver = CoreDriver(a, name="n0", send=journal.send, write=records.append, now=1000.0,
                        stats_extra=lambda: {"cpu_s": 0.5})
    a.set(b.identity, 1000.0)  # a seed: b's entry expires at 1002.5 unless b is heard from
    driver.drain(1000.0)
    records.clear()

    def step(now, late=None):
        delay = driver.timer_step(now)
        stats = {"t": now, "node": "n0", "kind": "stats", **a.stats, "cpu_s": 0.5}  # drains do not count
        if late is not None:  # how late this step ran after the time the previous one asked to be woken
            stats["timer_late_s"] = late
        return delay, stats

    delay, stats = step(1000.0)  # the first stats record is due at once (`now` given to the driver)
    assert delay == 1.0 and records == [stats]
    assert journal.entries == [("send", [("Heartbeat", (b.identity.endpoint,)),
                                         ("SwapRequest", (b.identity.endpoint,))])]
    assert step(1000.4)[0] == pytest.approx(0.6) and records == [stats]  # no tick due, no stats: sleep the rest
    delay, stats = step(1001.0, late=0.0)
    assert delay == 1.0 and records[-1] == stats and len(records) == 2
    assert step(1001.9995)[0] == 0.001  # never less than 1 ms: a timer loop must not spin
    delay, stats = step(1002.25, late=0.2495)  # woken 249.5 ms after the 1002.0005 it asked for
    assert delay == pytest.approx(0.25) and records[-1] == stats  # b's expiry comes before the next cycle
    assert step(1002.5)[0] == pytest.approx(0.5)  # b's entry expired: the next cycle is the next deadline
    # a seed never heard from was never listed, so its expiry records no removal
    assert not [r for r in records if r["kind"] in ("member_added", "member_removed")]
    assert [r["t"] for r in records if r["kind"] == "stats"] == [1000.0, 1001.0, 1002.25]


def test_without_stats_records_the_cycle_still_bounds_the_sleep():
    a = make_core(0, cycle_s=1.0)
    records = []
    driver = CoreDriver(a, name="n0", send=lambda sends: None, write=records.append, now=1000.0,
                        record_stats=False)
    assert [driver.timer_step(t) for t in (1000.0, 1000.25, 1001.0)] == [1.0, 0.75, 1.0]
    assert records == []


def test_the_drivers_own_records_have_the_same_head():
    records = []
    driver = CoreDriver(make_core(0), name="n0", send=lambda sends: None, write=records.append, now=1000.0)
    driver.write_record({"kind": "started", "node_id": 7}, 1000.1234567)
    assert records == [{"t": 1000.123457, "node": "n0", "kind": "started", "node_id": 7}]


EVERY_EVENT = [
    MemberAdded(node_id=1, name="a", addr="10.0.0.1", port=7946),
    MemberRefreshed(node_id=1, seq=5),
    MemberRemoved(node_id=1, name="a", reason="timeout"),
    MemberLeft(node_id=1, name="a", seq=6),
    LeaveSent(seq=7, targets=("10.0.0.2:7946",)),
    MetadataAdopted(version=3, origin=1, via="rumor", size=2, src="10.0.0.1:7946"),
    MetadataSent(version=3, origin=1, targets=("10.0.0.2:7946", "10.0.0.3:7946")),
    PacketDropped(reason="bad_mac", detail="x"),
    HeartbeatsChanged(running=False),
    MemberSuspected(node_id=1, name="a", incarnation=4, by=2),
    MemberAlive(node_id=1, name="a", incarnation=5),
    Refuted(incarnation=4, new=5),
]


def test_records_are_what_event_to_json_gives_for_every_event():
    # (a slots dataclass replaces its class: the replaced ones linger in __subclasses__)
    kinds = {c for c in Event.__subclasses__() if getattr(gossip._events, c.__name__, None) is c}
    assert {type(e) for e in EVERY_EVENT} == kinds
    for ev in EVERY_EVENT:
        assert list(event_json(ev).items()) == list(ev.to_json().items())  # same fields, same order
    records = []
    driver = CoreDriver(make_core(0), name="n0", send=lambda sends: None, write=records.append, now=0.0)
    driver.record(EVERY_EVENT, 1000.0000004)
    assert records == [{"t": 1000.0, "node": "n0", **ev.to_json()} for ev in EVERY_EVENT]


def test_an_event_with_its_own_to_json_is_recorded_with_it():
    @dataclass(frozen=True, slots=True, kw_only=True)
    class Custom(Event):
        kind = "custom"
        secret: str

        def to_json(self) -> dict:
            return {"kind": self.kind, "secret": "***"}

    assert event_json(Custom(secret="s")) == {"kind": "custom", "secret": "***"}
