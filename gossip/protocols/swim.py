"""``swim``: SWIM membership with the Lifeguard extensions, behind the `gossip.protocols.Protocol` interface.

SWIM is Das, Gupta and Motivala, "SWIM: Scalable Weakly-consistent Infection-style Process Group Membership
Protocol" (DSN 2002); Lifeguard is Dadgar, Phillips and Currey, "Lifeguard: Local Health Awareness for More
Accurate Failure Detection" (arXiv 1707.00788), as HashiCorp's memberlist runs them. Selected with
``membership: swim``; its settings are `SwimCore.OPTIONS` (``--option NAME=VALUE``, a scenario's
``node: {options: ...}``). The wire messages (PING, ACK, PING_REQ, NACK, STATE) are in ``docs/wire-format.md``.

Failure detection, one probe per protocol period T (``cycle_s``, scaled by the local health multiplier):

- the target is the next member of a list shuffled anew each round (a new member goes to a random place in it);
  it gets a PING and must ACK within the probe timeout (``probe_timeout_ratio`` of T, scaled the same way);
- no ACK in time: ``indirect_checks`` other members get a PING_REQ, probe the target themselves and pass its ACK
  on; a relay that hears nothing within 80 % of its probe timeout sends a NACK (Lifeguard), which tells the asker
  the relay at least is reachable;
- no ACK by the end of the period: the target becomes *suspect*, and the suspicion is spread. A suspect that hears
  of it raises its incarnation and spreads *alive* at the new incarnation, which overrides the suspicion
  everywhere. A suspicion not refuted within the suspicion timeout makes the member *dead*: it is removed
  (``member_removed``, reason ``suspect_timeout`` where the timer ran out, ``dead`` where a peer's declaration
  arrived) and *dead* is spread. The incarnation a member was removed at is remembered, so its old packets and
  updates (at or below it) cannot bring it back; a restarted node starts at its clock in ms, above them all.
- Every update (alive, suspect, dead) rides on the PINGs, ACKs and PING_REQs a node sends anyway, fewest
  transmissions first, each sent at most ``retransmit_mult`` * ceil(log10(N + 1)) times, as many as fit in
  ``max_packet_bytes``. A newer update about a member replaces the queued one. While updates are queued, a node
  also sends them (a GOSSIP) to ``gossip_nodes`` random members every ``gossip_ratio`` of a period, as
  memberlist does (its GossipInterval and GossipNodes): dissemination then does not slow down when the local
  health multiplier stretches the probe period, which is what lets a suspect hear of its suspicion and refute it
  in time. ``gossip_nodes: 0`` is the paper's piggyback-only dissemination.

Lifeguard, each part switchable so the paper's comparison can be run:

- ``lifeguard_lhm``: the local health multiplier, a score in [0, ``awareness_max``): a failed probe raises it by
  the NACKs that did not come (by 1 when no relay could be asked), a refutation raises it by 1, a direct ACK lowers
  it by 1; the probe period and timeout are multiplied by score + 1. Relays send NACKs only with it on.
- ``lifeguard_suspicion``: dynamic suspicion timeouts: a suspicion starts at ``suspicion_max_mult`` times the
  minimum and falls, as independent confirmations (other members suspecting the same incarnation) arrive, towards
  the minimum ``suspicion_mult`` * max(1, log10(N)) * T, reached at ``suspicion_mult`` - 2 confirmations
  (timeout = max(min, max - (max - min) * log(C + 1) / log(K + 1))). Off: every suspicion lasts the minimum.
- ``lifeguard_buddy``: a PING to a suspect carries that suspicion first, so the suspect hears of it at once.

Joining and anti-entropy: a node sends its member list (STATE, in as many datagrams as it needs, at most 255) to
one seed it does not list each period until it lists them all (once it lists anyone, a brief STATE: itself, and the
seed's death if it removed the seed, so the seed refutes it), and to one random member every
``push_pull_cycles`` periods, scaled with the cluster as memberlist's pushPullScale does: above 32 members (N, this
node included) the interval is multiplied by ceil(log2(N) - log2(32)) + 1, re-read at each push-pull (x2 at 33-64
members, x6 at 1,000, x10 at 10,000), since every push-pull carries all N entries; a STATE asking for a reply gets
the receiver's own, up to ``state_replies`` a period (more are taken, not answered: a seed's shield against a
join storm, as memberlist bounds its concurrent push-pulls). Entries are merged as updates (a remote *dead* is taken as a *suspect*, as memberlist does,
so a healed partition's members refute it rather than stay removed). Metadata is the heartbeat protocol's:
``publish`` spreads a METADATA rumor to ``fanout`` uninfected members, each receiver forwarding it once, and every
period a node swaps its version with one random member (SWAP_REQ/SWAP_RESP) -- the same versions, order and checks
as every protocol here.

A graceful `leave` spreads *dead* about itself (its sender is itself: receivers record ``member_left``), sent in
PINGs to ``fanout`` members and piggybacked on from there. `stop` makes the node stop answering probes, probing
and refuting, so its peers suspect and remove it, as a stopped heartbeat lets it time out.
"""

from __future__ import annotations

import math
import random
from array import array
from dataclasses import replace

from .. import _wire as wire
from .._config import NodeConfig
from .._corebase import CoreBase, DurableState, MemberInfo, Version, _ms
from .._events import (LeaveSent, MemberAdded, MemberAlive, MemberLeft, MemberRemoved, MemberSuspected,
                       MetadataSent, Refuted)
from ._registry import Option, register

ALIVE, SUSPECT, DEAD = wire.ALIVE, wire.SUSPECT, wire.DEAD
_STATE_NAMES = {ALIVE: "alive", SUSPECT: "suspect"}
NACK_RATIO = 0.8  # a relay sends its NACK after this share of its probe timeout (memberlist's value)
MAX_DEAD_IN_STATE = 64  # the most recently removed members a STATE carries (so a healed partition refutes them)
MAX_REMEMBERED_DEAD = 65536


_SLOT_NUMBERS: list[int] = []  # one int object per slot number, shared by every core of the process


def _slot_number(i: int) -> int:
    """I as an int object every core shares: a slot number above 256 is otherwise a 32-byte object of its own in
    each core's table, 4x the table's own bytes per entry when every node lists every other."""
    numbers = _SLOT_NUMBERS
    if i >= len(numbers):
        numbers.extend(range(len(numbers), 2 * i + 256))
    return numbers[i]


# (member, incarnation, state) -> (its STATE entry, the entry's size), shared by every core of the process: every
# node's push-pull lists the same members at the same incarnations, so one entry object serves them all instead of
# each STATE making (and sizing) one per member
_STATE_ENTRIES: dict[tuple[int, int, int], tuple[wire.StateEntry, int]] = {}
MAX_SHARED_STATE_ENTRIES = 1 << 18


def _state_entry(nid: int, state: int, incarnation: int, identity: wire.Identity) -> tuple[wire.StateEntry, int]:
    key = (nid, incarnation, state)
    hit = _STATE_ENTRIES.get(key)
    if hit is None or hit[0].identity is not identity:  # (a member may come back under another name)
        if len(_STATE_ENTRIES) >= MAX_SHARED_STATE_ENTRIES:
            _STATE_ENTRIES.clear()
        e = wire.StateEntry(state=state, incarnation=incarnation, identity=identity)
        hit = _STATE_ENTRIES[key] = (e, e.encoded_size())
    return hit


PUSH_PULL_SCALE_THRESHOLD = 32  # memberlist's pushPullScaleThreshold


def push_pull_scale(n: int) -> int:
    """How many times ``push_pull_cycles`` a node of an N-member cluster (itself included) waits between
    push-pulls: 1 up to 32 members, then ceil(log2(N) - log2(32)) + 1 (memberlist's pushPullScale), so the
    entries a cluster exchanges per period grow as N^2 / log N instead of N^2."""
    if n <= PUSH_PULL_SCALE_THRESHOLD:
        return 1
    return math.ceil(math.log2(n) - math.log2(PUSH_PULL_SCALE_THRESHOLD)) + 1


class _Suspicion:
    __slots__ = ("incarnation", "start", "k", "min_s", "max_s", "confirmers", "deadline")

    def __init__(self, incarnation: int, start: float, k: int, min_s: float, max_s: float, by: int) -> None:
        self.incarnation, self.start, self.k, self.min_s, self.max_s = incarnation, start, k, min_s, max_s
        self.confirmers = {by}  # who suspects it; the first is not a confirmation (memberlist's rule)
        self.deadline = 0.0


class _Probe:
    __slots__ = ("target", "seq", "ack_by", "end", "indirect", "acked", "nacks", "expected")

    def __init__(self, target: int, seq: int, ack_by: float, end: float) -> None:
        self.target, self.seq, self.ack_by, self.end = target, seq, ack_by, end
        self.indirect = False  # PING_REQs sent
        self.acked = False
        self.nacks: set[int] = set()
        self.expected = 0  # NACKs that can come (relays asked, with Lifeguard's LHM on)


class _Relay:
    __slots__ = ("asker", "asker_seq", "target", "nack_at", "until")

    def __init__(self, asker: tuple[str, int], asker_seq: int, target: int, nack_at: float, until: float) -> None:
        self.asker, self.asker_seq, self.target, self.nack_at, self.until = asker, asker_seq, target, nack_at, until


# What an update does, h11-style: (what this node knows of the member, the update's kind, the update's incarnation
# against the known one) -> (the member's state after it, the action). "self": the update is about this node;
# "removed": removed at the remembered incarnation; "unknown": never listed (or forgotten): it has no incarnation,
# so every update about it counts as "newer". The whole protocol's acceptance rule is this table; `SwimCore._apply` only
# looks it up, and tests/node/test_swim.py drives a core through every row.
_A, _S, _D = ALIVE, SUSPECT, DEAD
TRANSITIONS: dict[tuple[str, int, str], tuple[str, str]] = {}
for _rel in ("older", "same", "newer"):
    _new = _rel == "newer"
    _current = _rel != "older"
    TRANSITIONS.update({
        # about itself: an alive is never newer than what it knows; a current accusation is refuted; an older one
        # (refuted already, but its sender has not heard) has the current alive sent again, first to the sender
        ("self", _A, _rel): ("self", "ignore"),
        ("self", _S, _rel): ("self", "refute" if _current else "reassert"),
        ("self", _D, _rel): ("self", "refute" if _current else "reassert"),
        # removed: only a newer incarnation (a restart or a refutation) brings it back
        ("removed", _A, _rel): ("alive", "add") if _new else ("removed", "stale"),
        ("removed", _S, _rel): ("removed", "old"),
        ("removed", _D, _rel): ("removed", "old"),
        # listed alive
        ("alive", _A, _rel): ("alive", "renew") if _new else ("alive", "old"),
        ("alive", _S, _rel): ("suspect", "suspect") if _current else ("alive", "old"),
        ("alive", _D, _rel): ("removed", "remove") if _current else ("alive", "old"),
        # listed suspect: a newer alive refutes; another suspicion (at or above it) confirms
        ("suspect", _A, _rel): ("alive", "refuted") if _new else ("suspect", "old"),
        ("suspect", _S, _rel): ("suspect", "confirm") if _current else ("suspect", "old"),
        ("suspect", _D, _rel): ("removed", "remove") if _current else ("suspect", "old"),
    })
TRANSITIONS.update({  # never listed: an alive adds it; a suspicion or death of a stranger means nothing
    ("unknown", _A, "newer"): ("alive", "add"),
    ("unknown", _S, "newer"): ("unknown", "old"),
    ("unknown", _D, "newer"): ("unknown", "old"),
})
_SEQUENCED = (wire.Ping, wire.PingReq, wire.Gossip, wire.State)  # per-origin sequences: replays are dropped
_NO_UPDATE = frozenset({"ignore", "old", "stale"})  # actions that use no update (a STATE makes none for them)
# a STATE's entry for an alive member at the incarnation it is listed at: `_on_state` counts those in bulk
assert TRANSITIONS[("alive", ALIVE, "same")] == ("alive", "old")
_ACTIONS = {a: f"_do_{a}" for a in ("ignore", "old", "stale", "refute", "reassert", "add", "renew", "refuted",
                                    "suspect", "confirm", "remove")}


@register("swim")
class SwimCore(CoreBase):
    """One node's state of the ``swim`` protocol (a `gossip.protocols.Protocol`)."""

    OPTIONS = {
        "probe_timeout_ratio": Option(0.5, "the probe's ACK timeout, as a share of the protocol period",
                                      lo=0.01, hi=0.95),
        "indirect_checks": Option(3, "members asked to probe a target that did not ACK (k)", lo=0, hi=16),
        "suspicion_mult": Option(4, "minimum suspicion timeout: this * max(1, log10(N)) protocol periods",
                                 lo=1, hi=1000),
        "suspicion_max_mult": Option(6, "the dynamic suspicion timeout starts at this * the minimum", lo=1, hi=1000),
        "retransmit_mult": Option(4, "each update is sent at most this * ceil(log10(N + 1)) times", lo=1, hi=1000),
        "push_pull_cycles": Option(30, "a full state exchange with one random member every this many periods, "
                                       "times ceil(log2(N) - 5) + 1 above 32 members (memberlist's pushPullScale)",
                                   lo=1, hi=1_000_000),
        "state_replies": Option(8, "push-pull requests (STATE asking for a reply) answered per period; more are taken "
                                   "but not answered, so a seed is not buried under joiners", lo=1, hi=1_000_000),
        "awareness_max": Option(8, "the local health multiplier's bound (probe period and timeout scale by at "
                                   "most this)", lo=1, hi=64),
        "gossip_nodes": Option(3, "members sent the queued updates each gossip interval, apart from the probes "
                                  "(0: piggybacked on probes only, as in the SWIM paper)", lo=0, hi=64),
        "gossip_ratio": Option(0.2, "the gossip interval, as a share of the (unscaled) protocol period",
                               lo=0.01, hi=10.0),
        "lifeguard_lhm": Option(True, "Lifeguard's local health multiplier (and NACKs)"),
        "lifeguard_suspicion": Option(True, "Lifeguard's dynamic suspicion timeouts"),
        "lifeguard_buddy": Option(True, "Lifeguard's buddy system: a PING to a suspect says so first"),
    }

    def __init__(self, *, config: NodeConfig, identity: wire.Identity, rng: random.Random, now: float,
                 record_refreshes: bool = False, state: DurableState | None = None) -> None:
        super().__init__(config=config, identity=identity, rng=rng, now=now, record_refreshes=record_refreshes)
        opt = config.option
        self._probe_ratio = opt("probe_timeout_ratio")
        self._k = opt("indirect_checks")
        self._susp_mult = opt("suspicion_mult")
        self._susp_max_mult = opt("suspicion_max_mult")
        self._retransmit_mult = opt("retransmit_mult")
        self._push_pull_cycles = opt("push_pull_cycles")
        self._state_replies = opt("state_replies")
        self._replies_left = self._state_replies  # this period's
        self._awareness_max = opt("awareness_max")
        self._lhm = opt("lifeguard_lhm")
        self._dynamic = opt("lifeguard_suspicion")
        self._buddy = opt("lifeguard_buddy")
        self._gossip_nodes = opt("gossip_nodes")
        self._gossip_every = opt("gossip_ratio") * config.cycle_s
        self._next_gossip = now
        self._inc = max(1, _ms(now))  # this node's incarnation: its clock in ms at start, so a restart is newer
        # The member table (alive and suspect members), one slot per member: a dict from id to slot and parallel
        # columns, with a removed member's slot filled by the last one (so a random slot is a random member).
        # Every node lists every other, so this is N^2 entries cluster-wide: columns of machine values cost 8 bytes
        # or less per field where an object per member cost ~180, and identities are shared with the messages.
        self._slot: dict[int, int] = {}
        self._ident: list[wire.Identity] = []
        self._col_inc = array("Q")  # incarnation
        self._col_state = array("b")  # ALIVE or SUSPECT
        self._col_seen = array("d")  # when last heard from directly
        # the newest PING and GOSSIP sequences taken from it (a replay is not newer); 0: none yet (a sender's
        # sequences start at its clock in us, and the wire's are unsigned 64-bit)
        self._col_ping = array("Q")
        self._col_gossip = array("Q")
        self._dead: dict[int, int] = {}  # removed member -> the incarnation it was removed at
        self._dead_ident: dict[int, wire.Identity] = {}  # the most recently removed, for STATE
        self._suspicions: dict[int, _Suspicion] = {}
        self._queue: dict[int, list] = {}  # member -> [update, transmissions, order]: at most one per member
        self._order = 0
        self._awareness = 0
        # the probe order: member ids (32-bit, from their addresses), shuffled each round; an array, not a list, so
        # the garbage collector does not walk N^2 references in every full collection
        self._probe_list = array("I")
        self._probe_at = 0
        self._probe: _Probe | None = None
        # the sequence of every PING, PING_REQ, GOSSIP and STATE this node sends: it starts at the clock in us, so a
        # restarted node's are above anything it sent before, and receivers drop what is not newer (replays)
        self._seq = int(now * 1e6)
        self._strangers: dict[tuple[int, int], int] = {}  # (type, origin) -> newest seq, for non-members (bounded)
        self._states: dict[int, tuple[int, set]] = {}  # origin -> (newest STATE seq, its parts taken) (bounded)
        self._next_probe = now
        self._relays: dict[int, _Relay] = {}
        self._cycles = 0
        self._next_push_pull = self._push_pull_cycles  # the cycle of the next push-pull (see push_pull_scale)
        self._from: int | None = None  # the member whose message is being handled (not for a PING)
        self._asked: dict[int, float] = {}  # unlisted probers sent a push-pull, and when
        self._last_taken = None
        self._start_from(state)

    # ---- operations ------------------------------------------------------------------------------------------

    def set(self, identity: wire.Identity, now: float) -> None:
        if identity.node_id != self.node_id:
            self._seeds[identity.endpoint] = None

    def leave(self, now: float) -> int:
        if self._left:
            return 0
        self.stop()
        self._left = True
        self._queue.clear()
        self._enqueue(wire.Update(kind=DEAD, incarnation=self._inc, node=self.node_id, sender=self.node_id))
        targets = tuple(self._ident[i].endpoint for i in self._pick(self.config.fanout))
        for ep in targets:
            nid = wire.node_id(*ep)
            self._send_updates(wire.Ping(cluster=self.cluster, origin=self.node_id, seq=self._next_seq(),
                                         sender=self.identity, target=nid), (ep,))
        self.stats["leaves_sent"] += 1
        self._events.append(LeaveSent(seq=self._inc, targets=tuple(f"{a}:{p}" for a, p in targets)))
        return len(targets)

    def publish(self, data: bytes, now: float) -> Version:
        version = self._publish_version(data, now)
        self._spread(wire.MetadataRumor(cluster=self.cluster, origin=self.node_id, version=version.seq, data=data),
                     wire.Infected(ids=frozenset({self.node_id})))
        return version

    def members(self) -> list[MemberInfo]:
        i = self.identity
        out = [MemberInfo(node_id=self.node_id, name=i.name, addr=i.addr, port=i.port, private=i.private,
                          seq=self._inc, last_seen=0.0, state="alive", incarnation=self._inc)]
        idents, incs, states, seen = self._ident, self._col_inc, self._col_state, self._col_seen
        for nid, slot in self._slot.items():
            i, inc = idents[slot], incs[slot]
            out.append(MemberInfo(node_id=nid, name=i.name, addr=i.addr, port=i.port, private=i.private,
                                  seq=inc, last_seen=seen[slot], state=_STATE_NAMES[states[slot]],
                                  incarnation=inc))
        return out

    def live_ids(self) -> set[int]:
        return set(self._slot)

    def _start_listing(self, members: tuple[tuple[wire.Identity, int], ...], now: float) -> None:
        """A warm start (a `DurableState` with members): list MEMBERS (this node's own entry skipped) as a completed
        join leaves them -- alive at the incarnation each announced, heard from now, in a random probe order,
        nothing left to disseminate -- without the join's O(N^2) exchanges. It records no ``member_added``."""
        # in bulk, column by column: a warm cluster of N nodes fills N^2 entries
        # (DurableState checked the pairs and that no node is listed twice, once for every core it is given to)
        idents = [m[0] for m in members]
        incs = [m[1] for m in members]
        nids = [i.node_id for i in idents]
        if self.node_id in nids:
            k = nids.index(self.node_id)
            del idents[k], incs[k], nids[k]
        n = len(nids)
        _slot_number(n)
        self._slot = dict(zip(nids, _SLOT_NUMBERS[:n]))
        self._ident = idents
        self._col_inc = array("Q", incs)
        self._col_state = array("b", [ALIVE]) * n
        self._col_seen = array("d", [now]) * n
        self._col_ping = array("Q", [0]) * n
        self._col_gossip = array("Q", [0]) * n
        self._probe_list = array("I", nids)
        self._rng.shuffle(self._probe_list)
        self._probe_at = 0
        # the first push-pull at a random cycle of the first interval, as memberlist staggers it: a cluster that
        # starts at once would otherwise push-pull at once
        self._next_push_pull = 1 + self._rng.randrange(self._push_pull_cycles * push_pull_scale(n + 1))

    @property
    def incarnation(self) -> int:
        return self._inc

    @property
    def awareness(self) -> int:
        """The local health multiplier's score (0: healthy)."""
        return self._awareness

    # ---- driver interface ------------------------------------------------------------------------------------

    def next_deadline(self) -> float:
        if self._left:
            return math.inf
        t = self._next_cycle
        p = self._probe
        if p is None:
            if self._heartbeats:
                t = min(t, self._next_probe)
        else:
            t = min(t, p.end if (p.indirect or p.acked) else p.ack_by)
        for r in self._relays.values():
            t = min(t, r.until, r.nack_at if r.nack_at else r.until)
        for s in self._suspicions.values():
            t = min(t, s.deadline)
        if self._queue and self._gossip_nodes:
            t = min(t, self._next_gossip)
        return t

    def tick(self, now: float) -> None:
        if self._left:
            return
        if self._relays:  # (mostly empty: a tick per node twice a period should not build lists for nothing)
            self._tick_relays(now)
        if self._suspicions:
            for nid in [n for n, s in self._suspicions.items() if s.deadline <= now]:
                s = self._suspicions[nid]
                self._declare_dead(nid, s.incarnation, self.node_id, now, reason="suspect_timeout")
        self._tick_probe(now)
        if now >= self._next_gossip:
            self._next_gossip += self._gossip_every
            if self._next_gossip <= now:
                self._next_gossip = now + self._gossip_every
            if self._queue and self._gossip_nodes:
                for slot in self._pick(self._gossip_nodes):
                    self._send_updates(wire.Gossip(cluster=self.cluster, origin=self.node_id, seq=self._next_seq()),
                                       (self._ident[slot].endpoint,))
        if now >= self._next_cycle:
            self._next_cycle += self.config.cycle_s
            if self._next_cycle <= now:
                self._next_cycle = now + self.config.cycle_s
            self._cycle(now)

    def receive_message(self, msg: wire.Message, now: float, src: str = "") -> None:
        if self._left:
            return
        self._src = src
        self._from = None if type(msg) is wire.Ping else msg.origin  # who told it (a PING's ACK answers anyway)
        handler = self._HANDLERS.get(type(msg))
        if handler is None:
            return self.note_drop("malformed", f"message type {type(msg).__name__} is not used by swim")
        if type(msg) in _SEQUENCED and not self._fresh(msg):
            return
        handler(self, msg, now)

    def _fresh(self, msg) -> bool:
        """True, with its sequence remembered, if MSG (a PING, PING_REQ, GOSSIP or STATE part) is newer than what
        was taken from its origin; a replay (or a copy) is counted and dropped as ``duplicate`` or ``stale``. A
        member's newest PING and GOSSIP sequences live in its slot; the rest in small bounded tables."""
        t, origin, seq = type(msg), msg.origin, msg.seq
        if t is wire.State:
            last, parts = self._states.get(origin, (-1, None))
            if seq < last or (seq == last and msg.part in parts):
                self.note_drop("duplicate" if seq == last else "stale", f"state {seq} part {msg.part} again")
                return False
            if seq > last:
                if len(self._states) >= 4096:
                    self._states.clear()
                parts = set()
                self._states[origin] = (seq, parts)
            parts.add(msg.part)
            if len(parts) == msg.parts:  # a fast path may drop this STATE's copies once no part of it is missing
                self.note_accepted(msg.type, origin, seq)
            return True
        slot = self._slot.get(origin)
        column = None
        if slot is not None and t is not wire.PingReq:
            column = self._col_ping if t is wire.Ping else self._col_gossip
            last = column[slot]
        else:
            last = self._strangers.get((msg.type, origin), -1)
        if seq <= last:
            self.note_drop("duplicate" if seq == last else "stale", f"{t.__name__.lower()} {seq} again")
            return False
        if column is not None:
            column[slot] = seq
        else:
            if len(self._strangers) >= 4096:
                self._strangers.clear()
            self._strangers[(msg.type, origin)] = seq
        self.note_accepted(msg.type, origin, seq)
        return True

    def _next_seq(self) -> int:
        """The sequence of the next PING, PING_REQ, GOSSIP or STATE this node sends (see `_fresh`)."""
        self._seq += 1
        return self._seq

    def replay_sample(self):
        """A message this node took from a peer (its newest PING or GOSSIP), for replay tests and injections."""
        return self._last_taken

    # ---- handlers --------------------------------------------------------------------------------------------

    def _on_ping(self, msg: wire.Ping, now: float) -> None:
        if msg.sender.node_id != msg.origin:
            return self.note_drop("malformed", f"ping sender {msg.sender.addr}:{msg.sender.port} is not origin")
        if msg.target != self.node_id:
            return self.note_drop("malformed", f"ping for {msg.target:#010x}, not this node")
        self._last_taken = msg
        self._heard(msg.origin, now)
        self._apply_all(msg.updates, now)
        if self._heartbeats and not self._left:
            self._send_updates(wire.Ack(cluster=self.cluster, origin=self.node_id, seq=msg.seq),
                               (msg.sender.endpoint,))
            self._met(msg.sender, now)

    def _on_ack(self, msg: wire.Ack, now: float) -> None:
        self._apply_all(msg.updates, now)
        p = self._probe
        if p is not None and msg.seq == p.seq and msg.origin == p.target:
            if p.acked:
                return self.note_drop("duplicate", f"ack {msg.seq} from {msg.origin:#010x}")
            p.acked = True
            self.stats["probes_acked"] += 1
            if not p.indirect:
                self._health(-1)
            self._heard(msg.origin, now)
            return
        r = self._relays.get(msg.seq)
        if r is not None and msg.origin == r.target:
            del self._relays[msg.seq]
            self._heard(msg.origin, now)
            self.stats["acks_relayed"] += 1
            self._send_updates(wire.Ack(cluster=self.cluster, origin=msg.origin, seq=r.asker_seq), (r.asker,))
            return
        self.note_drop("stale", f"ack {msg.seq} from {msg.origin:#010x} answers no pending probe")

    def _on_ping_req(self, msg: wire.PingReq, now: float) -> None:
        if msg.sender.node_id != msg.origin:
            return self.note_drop("malformed", f"ping-req sender {msg.sender.addr}:{msg.sender.port} is not origin")
        self._heard(msg.origin, now)
        self._apply_all(msg.updates, now)
        if not self._heartbeats:
            return
        self._met(msg.sender, now)
        if msg.target.node_id == self.node_id:  # asked to probe ourselves: we are the answer
            self._send_updates(wire.Ack(cluster=self.cluster, origin=self.node_id, seq=msg.seq),
                               (msg.sender.endpoint,))
            return
        seq = self._next_seq()
        timeout = self._scaled(self.config.cycle_s * self._probe_ratio)
        self._relays[seq] = _Relay(msg.sender.endpoint, msg.seq, msg.target.node_id,
                                               now + NACK_RATIO * timeout if self._lhm else 0.0,
                                               now + self._scaled(self.config.cycle_s))
        self.stats["probes_relayed"] += 1
        self._send_updates(wire.Ping(cluster=self.cluster, origin=self.node_id, seq=seq,
                                     sender=self.identity, target=msg.target.node_id), (msg.target.endpoint,))

    def _on_gossip(self, msg: wire.Gossip, now: float) -> None:
        self._last_taken = msg
        self._heard(msg.origin, now)
        self._apply_all(msg.updates, now)

    def _on_nack(self, msg: wire.Nack, now: float) -> None:
        p = self._probe
        if p is None or msg.seq != p.seq or msg.target != p.target:
            return self.note_drop("stale", f"nack {msg.seq} from {msg.origin:#010x} answers no pending probe")
        if msg.origin in p.nacks:
            return self.note_drop("duplicate", f"nack {msg.seq} from {msg.origin:#010x}")
        p.nacks.add(msg.origin)
        self.stats["nacks_received"] += 1

    def _on_state(self, msg: wire.State, now: float) -> None:
        if msg.sender.node_id != msg.origin:
            return self.note_drop("malformed", f"state sender {msg.sender.addr}:{msg.sender.port} is not origin")
        self.stats["states_received"] += 1
        action_of, slot_of, incs, states, node_id = self._action, self._slot.get, self._col_inc, self._col_state, \
            wire.node_id
        same = 0
        for e in msg.entries:
            identity, incarnation = e.identity, e.incarnation
            nid = node_id(identity.addr, identity.port)
            slot = slot_of(nid)
            if slot is not None and e.state == ALIVE and incarnation == incs[slot] and states[slot] == ALIVE:
                same += 1  # nearly every entry of a steady cluster's push-pull: the table's (alive, ALIVE, same)
                continue
            # a remote suspect or dead is suspected here (a live one refutes it; memberlist's rule)
            kind = ALIVE if e.state == ALIVE else SUSPECT
            action, slot = action_of(nid, kind, incarnation)
            if action in _NO_UPDATE:  # no Update made for it
                getattr(self, _ACTIONS[action])(None, slot, now)
                continue
            u = (wire.Update(kind=ALIVE, incarnation=incarnation, node=nid, identity=identity) if kind == ALIVE
                 else wire.Update(kind=SUSPECT, incarnation=incarnation, node=nid, sender=msg.origin))
            getattr(self, _ACTIONS[action])(u, slot, now)
        if same:
            self.stats["updates_old"] += same  # what `_do_old` counts, in bulk
        self._heard(msg.origin, now)
        if msg.reply and msg.part == 0 and not self._left:
            if self._replies_left > 0:
                self._replies_left -= 1
                self._send_state(msg.sender.endpoint, reply=False)
            else:  # taken, not answered: the asker tries again, and hears of everyone by gossip meanwhile
                self.stats["state_replies_shed"] += 1

    def _on_metadata(self, msg: wire.MetadataRumor, now: float) -> None:
        if not self._newer(Version(msg.version, msg.origin), "metadata"):
            return
        self._adopt(Version(msg.version, msg.origin), msg.data, via="rumor")
        self._spread(msg, msg.infected.with_added((self.node_id,)))

    _HANDLERS = {
        wire.Ping: _on_ping,
        wire.Ack: _on_ack,
        wire.PingReq: _on_ping_req,
        wire.Nack: _on_nack,
        wire.Gossip: _on_gossip,
        wire.State: _on_state,
        wire.MetadataRumor: _on_metadata,
        wire.SwapRequest: CoreBase._on_swap_request,
        wire.SwapResponse: CoreBase._on_swap_response,
    }

    # ---- membership updates ----------------------------------------------------------------------------------

    def _apply_all(self, updates, now: float) -> None:
        for u in updates:
            self._apply(u, now)

    def _apply(self, u: wire.Update, now: float) -> None:
        """One update, as `TRANSITIONS` says: what this node knows of the member, the update's kind and how its
        incarnation compares with the known one give the action."""
        action, slot = self._action(u.node, u.kind, u.incarnation)
        getattr(self, _ACTIONS[action])(u, slot, now)

    def _action(self, nid: int, kind: int, incarnation: int) -> tuple[str, int | None]:
        """`TRANSITIONS`' action for an update of KIND about NID at INCARNATION, and NID's slot (None: not listed)."""
        slot = None
        if nid == self.node_id:
            view, known = "self", self._inc
        elif (slot := self._slot.get(nid)) is not None:
            view, known = _STATE_NAMES[self._col_state[slot]], self._col_inc[slot]
        elif nid in self._dead:
            view, known = "removed", self._dead[nid]
        else:
            view, known = "unknown", -1
        rel = "older" if incarnation < known else "same" if incarnation == known else "newer"
        return TRANSITIONS[(view, kind, rel)][1], slot

    def _do_ignore(self, u: wire.Update, slot: int | None, now: float) -> None:
        pass

    def _do_old(self, u: wire.Update, slot: int | None, now: float) -> None:
        self.stats["updates_old"] += 1

    def _do_stale(self, u: wire.Update, slot: int | None, now: float) -> None:
        self.stats["updates_stale"] += 1  # a removed member's old alive cannot bring it back

    def _do_refute(self, u: wire.Update, slot: int | None, now: float) -> None:
        self._refute(u.incarnation)

    def _do_reassert(self, u: wire.Update, slot: int | None, now: float) -> None:
        """A peer still holds an accusation this node refuted (its refutation's transmissions were used up before
        it reached that peer): the current alive is queued afresh, so the reply (an ACK to a buddy PING) and the
        next gossip carry it. Without it, a reachable node can be removed by a peer that missed its refutation."""
        if self._heartbeats and not self._left:
            self.stats["reasserted"] += 1
            self._enqueue(self._alive_self())
            self._answer_accuser()

    def _answer_accuser(self) -> None:
        """The member whose message accused this node gets the alive at once (a GOSSIP; the reply to a PING is its
        ACK): whoever passes an accusation on to its subject hears the answer, whatever the retransmit budget."""
        nid, self._from = self._from, None
        slot = self._slot.get(nid) if nid is not None else None
        if slot is not None:
            self.stats["answered_accusers"] += 1
            self._send_updates(wire.Gossip(cluster=self.cluster, origin=self.node_id, seq=self._next_seq()),
                               (self._ident[slot].endpoint,), first=self._alive_self())

    def _do_add(self, u: wire.Update, slot: int | None, now: float) -> None:
        nid = u.node
        self._dead.pop(nid, None)
        self._dead_ident.pop(nid, None)
        self._add_member(nid, u.identity, u.incarnation, now)
        self._probe_list.append(nid)  # to a random place in the probe order (memberlist's swap)
        j = self._rng.randrange(len(self._probe_list))
        self._probe_list[j], self._probe_list[-1] = self._probe_list[-1], self._probe_list[j]
        i = u.identity
        self._events.append(MemberAdded(node_id=nid, name=i.name, addr=i.addr, port=i.port))
        self._enqueue(u)

    def _do_renew(self, u: wire.Update, slot: int | None, now: float) -> None:
        self._col_inc[slot], self._ident[slot], self._col_seen[slot] = u.incarnation, u.identity, now
        self._enqueue(u)

    def _do_refuted(self, u: wire.Update, slot: int | None, now: float) -> None:
        self._col_inc[slot], self._ident[slot], self._col_seen[slot] = u.incarnation, u.identity, now
        self._col_state[slot] = ALIVE
        self._suspicions.pop(u.node, None)
        self.stats["suspicions_refuted"] += 1
        self._events.append(MemberAlive(node_id=u.node, name=u.identity.name, incarnation=u.incarnation))
        self._enqueue(u)

    def _do_suspect(self, u: wire.Update, slot: int | None, now: float) -> None:
        self._suspect(u.node, slot, u.incarnation, u.sender, now)

    def _do_confirm(self, u: wire.Update, slot: int | None, now: float) -> None:
        s = self._suspicions[u.node]  # another node's suspicion confirms this one's (memberlist's rule: the
        if u.sender not in s.confirmers:  # incarnation stays the suspicion's; a refutation must beat it anyway)
            s.confirmers.add(u.sender)
            self._set_deadline(s)
            self.stats["suspicions_confirmed"] += 1
            self._enqueue(u)

    def _do_remove(self, u: wire.Update, slot: int | None, now: float) -> None:
        self._declare_dead(u.node, u.incarnation, u.sender, now, reason="dead")

    def _suspect(self, nid: int, slot: int, incarnation: int, by: int, now: float) -> None:
        self._col_state[slot], self._col_inc[slot] = SUSPECT, incarnation
        n = len(self._slot) + 1
        k = self._susp_mult - 2 if n - 2 >= self._susp_mult - 2 else 0
        min_s = self._susp_mult * max(1.0, math.log10(max(1, n))) * self.config.cycle_s
        max_s = (self._susp_max_mult if self._dynamic else 1) * min_s
        s = self._suspicions[nid] = _Suspicion(incarnation, now, k, min_s, max_s, by)
        self._set_deadline(s)
        self.stats["suspicions"] += 1
        self._events.append(MemberSuspected(node_id=nid, name=self._ident[slot].name, incarnation=incarnation,
                                            by=by))
        self._enqueue(wire.Update(kind=SUSPECT, incarnation=incarnation, node=nid, sender=by))

    def _set_deadline(self, s: _Suspicion) -> None:
        confirmations = len(s.confirmers) - 1
        if not self._dynamic or s.k < 1:
            s.deadline = s.start + s.min_s
            return
        frac = math.log(confirmations + 1) / math.log(s.k + 1)
        s.deadline = s.start + max(s.min_s, s.max_s - (s.max_s - s.min_s) * frac)

    def _declare_dead(self, nid: int, incarnation: int, by: int, now: float, *, reason: str) -> None:
        identity = self._remove_member(nid)
        self._suspicions.pop(nid, None)
        if len(self._dead) >= MAX_REMEMBERED_DEAD:
            self._dead.pop(next(iter(self._dead)))
        self._dead[nid] = incarnation
        self._dead_ident.pop(nid, None)
        self._dead_ident[nid] = identity
        while len(self._dead_ident) > MAX_DEAD_IN_STATE:
            self._dead_ident.pop(next(iter(self._dead_ident)))
        if by == nid:
            self.stats["members_left"] += 1
            self._events.append(MemberLeft(node_id=nid, name=identity.name, seq=incarnation))
        else:
            self.stats[f"removed_{reason}"] += 1
            self._events.append(MemberRemoved(node_id=nid, name=identity.name, reason=reason))
        self._enqueue(wire.Update(kind=DEAD, incarnation=incarnation, node=nid, sender=by))

    def _refute(self, incarnation: int) -> None:
        """Someone suspects this node (or declared it dead) at INCARNATION: spread alive at a higher one."""
        if not self._heartbeats or self._left or incarnation < self._inc:
            return  # a stopped node does not defend itself; an older accusation is answered already
        old = self._inc
        self._inc = max(self._inc + 1, incarnation + 1)
        self.stats["refutations"] += 1
        self._health(+1)
        self._events.append(Refuted(incarnation=old, new=self._inc))
        self._enqueue(self._alive_self())
        self._answer_accuser()

    def _alive_self(self) -> wire.Update:
        return wire.Update(kind=ALIVE, incarnation=self._inc, node=self.node_id, identity=self.identity)

    def _heard(self, nid: int, now: float) -> None:
        slot = self._slot.get(nid)
        if slot is not None:
            self._col_seen[slot] = now

    # ---- the member table ------------------------------------------------------------------------------------

    def _add_member(self, nid: int, identity: wire.Identity, incarnation: int, now: float) -> None:
        self._slot[nid] = _slot_number(len(self._ident))
        self._ident.append(identity)
        self._col_inc.append(incarnation)
        self._col_state.append(ALIVE)
        self._col_seen.append(now)
        self._col_ping.append(0)
        self._col_gossip.append(0)

    def _remove_member(self, nid: int) -> wire.Identity:
        """Take NID out of the table (the last slot moves into its place); returns its identity."""
        slot = self._slot.pop(nid)
        identity = self._ident[slot]
        last = len(self._ident) - 1
        columns = (self._ident, self._col_inc, self._col_state, self._col_seen, self._col_ping, self._col_gossip)
        if slot != last:
            self._slot[self._ident[last].node_id] = slot
            for c in columns:
                c[slot] = c[last]
        for c in columns:
            c.pop()
        return identity

    # ---- dissemination ---------------------------------------------------------------------------------------

    def _enqueue(self, u: wire.Update) -> None:
        self._order += 1
        self._queue[u.node] = [u, 0, self._order]

    def _take_updates(self, room: int, first: wire.Update | None = None) -> tuple[wire.Update, ...]:
        """Updates to piggyback in ROOM bytes: FIRST (the buddy system's), then the least sent, newest first."""
        out = []
        if first is not None and first.encoded_size() <= room:
            out.append(first)
            room -= first.encoded_size()
        if not self._queue:
            return tuple(out)
        limit = self._retransmit_mult * math.ceil(math.log10(len(self._slot) + 2))
        for entry in sorted(self._queue.values(), key=lambda e: (e[1], -e[2])):
            if len(out) == 255:
                break
            u = entry[0]
            size = u.encoded_size()
            if size > room or u == first:
                continue
            out.append(u)
            room -= size
            entry[1] += 1
            if entry[1] >= limit:
                del self._queue[u.node]
        return tuple(out)

    def _send_updates(self, msg, targets: tuple[tuple[str, int], ...], first: wire.Update | None = None) -> None:
        """Send MSG (a PING, ACK or PING_REQ without updates) to TARGETS with as many updates as fit."""
        if first is None and not self._queue:  # a steady cluster's probes: nothing to add, nothing to size
            return self._emit(msg, targets)
        room = self.config.max_packet_bytes - wire.SWIM_FIXED_BYTES - wire.swim_prefix_size(msg)
        updates = self._take_updates(room, first)
        self._emit(replace(msg, updates=updates) if updates else msg, targets)

    def _pick(self, k: int, exclude: int | None = None) -> list[int]:
        """The slots of up to K random members other than member EXCLUDE, in O(K) (a PING_REQ's relays are picked
        every failed probe; a list of the other members would be O(N))."""
        n = len(self._ident)
        skip = self._slot.get(exclude, -1) if exclude is not None else -1
        if skip < 0:
            return list(range(n)) if n <= k else self._rng.sample(range(n), k)
        if n - 1 <= k:
            return [s for s in range(n) if s != skip]
        return [s for s in self._rng.sample(range(n), k + 1) if s != skip][:k]  # uniform over the others

    def _spread(self, msg: wire.MetadataRumor, infected: wire.Infected) -> None:
        """Send metadata rumor MSG to up to fanout uninfected members, with them added to its infected set."""
        idents, rng, k = self._ident, self._rng, self.config.fanout
        chosen: list[int] = []
        for _ in range(3 * k):  # random probes first, a scan when they run dry (as the heartbeat core picks)
            if not idents or len(chosen) == k:
                break
            nid = idents[rng.randrange(len(idents))].node_id
            if nid != msg.origin and nid not in chosen and nid not in infected:
                chosen.append(nid)
        if len(chosen) < k:
            rest = [n for n in (i.node_id for i in idents) if n != msg.origin and n not in chosen and n not in infected]
            need = k - len(chosen)
            chosen.extend(rest if len(rest) <= need else rng.sample(rest, need))
        if not chosen:
            return
        msg = wire.MetadataRumor(cluster=msg.cluster, origin=msg.origin, version=msg.version, data=msg.data,
                                 infected=infected.with_added(chosen))
        endpoints = tuple(idents[self._slot[n]].endpoint for n in chosen)
        self._events.append(MetadataSent(version=msg.version, origin=msg.origin,
                                         targets=tuple(f"{a}:{p}" for a, p in endpoints)))
        self._emit(msg, endpoints)

    # ---- timers ----------------------------------------------------------------------------------------------

    def _scaled(self, t: float) -> float:
        return t * (self._awareness + 1) if self._lhm else t

    def _health(self, delta: int) -> None:
        if self._lhm:
            self._awareness = min(self._awareness_max - 1, max(0, self._awareness + delta))

    def _next_target(self) -> int | None:
        for _ in range(2):
            while self._probe_at < len(self._probe_list):
                nid = self._probe_list[self._probe_at]
                self._probe_at += 1
                if nid in self._slot:
                    return nid
            self._probe_list = array("I", [i.node_id for i in self._ident])  # a new round, in a new order
            self._rng.shuffle(self._probe_list)
            self._probe_at = 0
        return None

    def _tick_probe(self, now: float) -> None:
        p = self._probe
        if p is not None and not p.acked and not p.indirect and now >= p.ack_by:
            p.indirect = True
            slot = self._slot.get(p.target)
            relays = self._pick(self._k, p.target) if slot is not None else []
            p.expected = len(relays) if self._lhm else 0
            for relay in relays:
                self._send_updates(wire.PingReq(cluster=self.cluster, origin=self.node_id, seq=p.seq,
                                                sender=self.identity, target=self._ident[slot]),
                                   (self._ident[relay].endpoint,))
        if p is not None and now >= p.end:
            self._probe = None
            if not p.acked:
                self.stats["probes_failed"] += 1
                self._health(p.expected - len(p.nacks) if p.expected else 1)
                slot = self._slot.get(p.target)
                if slot is not None:  # suspected here, or (already suspect) confirmed by this node's own probe
                    self._apply(wire.Update(kind=SUSPECT, incarnation=self._col_inc[slot], node=p.target,
                                            sender=self.node_id), now)
        if self._probe is None and now >= self._next_probe and self._heartbeats:
            period = self._scaled(self.config.cycle_s)
            self._next_probe = now + period
            target = self._next_target()
            if target is None:
                return
            seq = self._next_seq()
            slot = self._slot[target]
            self._probe = _Probe(target, seq, now + self._scaled(self.config.cycle_s * self._probe_ratio),
                                 now + period)
            self.stats["probes"] += 1
            buddy = None
            if self._buddy and self._col_state[slot] == SUSPECT:
                buddy = wire.Update(kind=SUSPECT, incarnation=self._col_inc[slot], node=target, sender=self.node_id)
            self._send_updates(wire.Ping(cluster=self.cluster, origin=self.node_id, seq=seq,
                                         sender=self.identity, target=target), (self._ident[slot].endpoint,),
                               first=buddy)

    def _tick_relays(self, now: float) -> None:
        for seq in [s for s, r in self._relays.items() if r.until <= now or (r.nack_at and r.nack_at <= now)]:
            r = self._relays[seq]
            if r.nack_at and r.nack_at <= now:
                r.nack_at = 0.0
                self.stats["nacks_sent"] += 1
                self._emit(wire.Nack(cluster=self.cluster, origin=self.node_id, seq=r.asker_seq, target=r.target),
                           (r.asker,))
            if r.until <= now:
                del self._relays[seq]

    def _cycle(self, now: float) -> None:
        """Once per period (unscaled): the metadata swap, a STATE to a seed not listed, the periodic push-pull."""
        self._cycles += 1
        idents = self._ident
        if idents:
            peer = idents[self._rng.randrange(len(idents))]
            self._emit(self._swap_request(), (peer.endpoint,))
        if not self._heartbeats:
            return
        due = self._cycles >= self._next_push_pull
        if due:  # the interval grows with the cluster, re-read at each push-pull (memberlist's pushPullScale)
            self._next_push_pull = self._cycles + self._push_pull_cycles * push_pull_scale(len(idents) + 1)
        self._replies_left = self._state_replies
        lost = [s for s in self._seeds if wire.node_id(*s) not in self._slot]  # seeds are few: no O(N) scan
        if lost:
            self._send_state(lost[self._rng.randrange(len(lost))], reply=True, brief=bool(idents))
        elif idents and due:
            peer = idents[self._rng.randrange(len(idents))]
            self._send_state(peer.endpoint, reply=True)

    def _met(self, sender: wire.Identity, now: float) -> None:
        """A member this node does not list (it missed the alive, whose transmissions were used up elsewhere, or
        removed it) probes it: a push-pull with it, at most once a period per sender, brings its current state
        (an unlisted prober would otherwise wait for the periodic push-pull). Its PING alone cannot list it: a PING
        carries no incarnation, and a replayed one must not bring back a removed member."""
        nid = sender.node_id
        if nid in self._slot or nid == self.node_id or self._left:
            return
        if self._asked.get(nid, -math.inf) + self.config.cycle_s > now:
            return
        if len(self._asked) >= 4096:
            self._asked.clear()
        self._asked[nid] = now
        self.stats["unlisted_probers"] += 1
        self._send_state(sender.endpoint, reply=True)

    def _send_state(self, endpoint: tuple[str, int], *, reply: bool, brief: bool = False) -> None:
        """This node's member list to ENDPOINT, in as many datagrams as it takes (at most 255). BRIEF: only this
        node and, if it removed the receiver, the receiver's death (one datagram): what a joined node sends a seed
        it does not list, each period. The seed takes it as a suspicion of itself and refutes it, and its reply
        brings its whole list. Sending the whole list instead made every node that had removed a seed send it
        dozens of datagrams a period: 512 nodes on two cores melted down around the seed (thousands of
        suspicions and removals a second, never recovering)."""
        seq = self._next_seq()
        if brief:
            entries = [_state_entry(self.node_id, ALIVE, self._inc, self.identity)[0]]
            nid = wire.node_id(*endpoint)
            if nid in self._dead_ident:
                entries.append(_state_entry(nid, DEAD, self._dead[nid], self._dead_ident[nid])[0])
            self.stats["states_sent"] += 1
            self._emit(wire.State(cluster=self.cluster, origin=self.node_id, seq=seq, sender=self.identity,
                                  reply=reply, part=0, parts=1, entries=tuple(entries)), (endpoint,))
            return
        prefix = wire.swim_prefix_size(wire.State(cluster=self.cluster, origin=self.node_id, seq=seq,
                                                  sender=self.identity, reply=reply, part=0, parts=1))
        room = self.config.max_packet_bytes - wire.SWIM_FIXED_BYTES - prefix
        parts: list[list] = []
        sizes: list[int] = []
        chunk: list = []
        used = 0
        truncated = False

        def put(hit) -> bool:  # False once 255 parts are full
            nonlocal chunk, used
            e, size = hit
            if used + size > room:
                parts.append(chunk)
                sizes.append(used)
                if len(parts) == 255:
                    return False
                chunk, used = [], 0
            chunk.append(e)
            used += size
            return True

        put(_state_entry(self.node_id, ALIVE, self._inc, self.identity))
        idents, incs, states, shared_get = self._ident, self._col_inc, self._col_state, _STATE_ENTRIES.get
        for nid, i in self._slot.items():  # `put` and `_state_entry`, inlined: this runs for every member
            hit = shared_get((nid, incs[i], states[i]))
            if hit is None or hit[0].identity is not idents[i]:
                hit = _state_entry(nid, states[i], incs[i], idents[i])
            e, size = hit
            if used + size > room:
                parts.append(chunk)
                sizes.append(used)
                if len(parts) == 255:
                    truncated = True
                    break
                chunk, used = [], 0
            chunk.append(e)
            used += size
        if not truncated:
            for nid, ident in reversed(self._dead_ident.items()):
                if not put(_state_entry(nid, DEAD, self._dead[nid], ident)):
                    truncated = True
                    break
        if not truncated:
            parts.append(chunk)
            sizes.append(used)
        else:
            self.stats["state_truncated"] += 1
        self.stats["states_sent"] += 1
        fixed = wire.HEADER_BYTES + prefix + wire.MAC_BYTES
        n = len(parts)
        for i, chunk in enumerate(parts):
            self._emit(wire.State(cluster=self.cluster, origin=self.node_id, seq=seq, sender=self.identity,
                                  reply=reply and i == 0, part=i, parts=n, entries=tuple(chunk)),
                       (endpoint,), size=fixed + sizes[i])
