"""The simulator's model of the in-kernel heartbeat plane (`bpf/tc_hbplane.c`, its node side `gossip/_plane.py`):
what the kernel takes, what it drops and what it passes to the node, per reason, with the testbed's counter names.

The plane judges a datagram that XDP passed, in the program's order: another type passes (passed_not_heartbeat);
an origin the node has not registered passes (passed_unknown_origin); a sequence at or below the one the plane
holds is dropped (dropped_stale_or_dup); an Identity that differs from the registered one passes
(passed_identity); then it picks the targets as the program does (random probes over the member slots, the exact
scan only up to HB_SCAN_MAX members: passed_few_targets above that) and passes when a chosen target has no
link-layer address (passed_no_mac) or the exact list would outgrow the datagram (passed_too_big). Otherwise the
kernel takes it (handled, or accepted_no_targets).

What the plane holds follows the node's sync points, as `PlaneSync` does, not the core's state at each instant:

- members are registered (`reconcile`) after each timer step and after a drain that added or removed members,
  with the sequence the core lists, and a MAC only if the node's neighbour table holds one (looked up as
  `bpf._neigh.NeighbourTable` does: a cached read of the whole table, reread when older than NEIGH_TTL_S, and
  a missing address asked of the kernel again at most every NEIGH_RETRY_S);
- a heartbeat the core accepted itself raises the member's sequence when its drain hands it on (`accept`);
- a heartbeat the kernel took raises the sequence at once (the program's compare-and-swap) and goes out to the
  targets the plane drew; the core hears of it only when the node reads it back, through the one call the node
  uses (`kernel_refreshed`, several takes of one member arriving as the last): at the next timer step (`sync`), or
  before the core handles a heartbeat of that member (`sync_member`). XDP hears of it from the core then, so until
  then it passes the take's echoes and the plane drops them.

The neighbour table (`Neighbours`) belongs to the node's namespace, not its process: it outlives a crash. An entry
appears for both ends when a process sends a datagram to the other (ARP: the requester learns the reply, the
target learns the request), whatever the faults do to the datagram (the fault programs pass ARP); the kernel's
own copies carry the MACs the plane holds and teach nobody.

This module must never touch the core's private state: it reads `members()` as the node's `PlaneSync` does.
"""

from __future__ import annotations

import random
from collections import Counter

from gossip import _wire as gwire

# the program's and the node's constants (bpf/tc_hbplane.c, gossip/_plane.py, bpf/_neigh.py)
HB_SCAN_MAX = 32  # clusters up to this many members get the exact scan when random probes find too few targets
HB_IDENT_MAX = 64  # an Identity longer than this cannot be stored: its heartbeats pass (passed_identity)
HB_PAYLOAD_MAX = 1400 - 28  # the largest UDP payload the program MACs (gossip._plane.MAX_PACKET_BYTES)
NEIGH_TTL_S = 30.0  # the node's cached neighbour table is reread when older than this
NEIGH_RETRY_S = 1.0  # ... and a missing address asked again at most this often
_IDENT_FIXED_BYTES = gwire._IDENT_FIXED.size

COUNTERS = ("handled", "accepted_no_targets", "dropped_stale_or_dup", "passed_not_heartbeat",
            "passed_unknown_origin", "passed_identity", "passed_bad_mac", "passed_few_targets", "passed_no_mac",
            "passed_too_big")


class Neighbours:
    """One node namespace's neighbour table: the addresses whose link-layer address it holds."""

    __slots__ = ("known",)

    def __init__(self) -> None:
        self.known: set[str] = set()


class PlaneModel:
    """One node incarnation's plane: the members it registered (slot order, Identity, MAC known), the sequence it
    holds for each, the kernel's accepts the node has not read back yet, and its counters."""

    __slots__ = ("self_id", "fanout", "max_payload", "neigh", "rng", "inner", "slots", "members", "seq", "unsynced",
                 "dirty", "roster", "without_mac", "cache", "missed", "loaded_at", "counts", "chosen")

    def __init__(self, self_id: int, fanout: int, max_packet_bytes: int, neigh: Neighbours, rng: random.Random,
                 inner) -> None:
        self.self_id, self.fanout, self.neigh, self.rng = self_id, fanout, neigh, rng
        self.max_payload = min(max_packet_bytes - 28, HB_PAYLOAD_MAX)
        self.inner = inner  # the XDP fast path's accepted sink, or None
        self.slots: list[int] = []  # registered node ids, in slot order (the program's probes draw a slot)
        self.members: dict[int, tuple] = {}  # node id -> (identity fields, identity bytes, MAC known)
        self.seq: dict[int, int] = {}  # node id -> the sequence the plane holds (hb_members.seq)
        self.unsynced: dict[int, tuple[int, float]] = {}  # node id -> (seq, when) the kernel took, not read back
        self.dirty = True
        self.roster = -1  # the core's roster at the last full pass (see `changed`)
        self.without_mac: set[int] = set()
        self.cache: set[str] = set()  # the node's cached read of the neighbour table
        self.missed: dict[str, float] = {}  # address -> when the node last asked the kernel for it in vain
        self.loaded_at = -float("inf")
        self.counts: Counter[str] = Counter()
        self.chosen: list[int] = []  # the targets of the heartbeat last taken

    # ---- the kernel ----

    def judge(self, msg, mac_ok: bool = True) -> str:
        """The program's verdict on MSG (decoded; XDP passed it): one of COUNTERS, counted. ``handled`` and
        ``accepted_no_targets`` mean the kernel took it (its sequence is now the one held; its copies go to
        `targets`). MAC_OK: whether the node's key ring verifies it (the simulator's messages carry no MAC)."""
        verdict = self._judge(msg, mac_ok)
        self.counts[verdict] += 1
        return verdict

    def _judge(self, msg, mac_ok: bool) -> str:
        if type(msg) is not gwire.Heartbeat:
            return "passed_not_heartbeat"
        origin = msg.origin
        member = self.members.get(origin)
        if member is None or origin == self.self_id:
            return "passed_unknown_origin"
        if msg.seq <= self.seq[origin]:
            return "dropped_stale_or_dup"
        i = msg.identity
        if member[1] > HB_IDENT_MAX or member[0] != (i.name, i.addr, i.port, i.private):
            return "passed_identity"
        if not mac_ok:  # tc_hbplane.c verifies with every key of the ring the node gave it, after the identity
            return "passed_bad_mac"
        chosen = self._pick(origin, msg.infected)
        if chosen is None:
            return "passed_few_targets"
        members = self.members
        if any(not members[nid][2] for nid in chosen):
            return "passed_no_mac"
        infected = msg.infected
        if infected.bloom is None and chosen:
            added = len(chosen) + (0 if self.self_id in infected.ids else 1)
            payload = gwire.HEADER_BYTES + member[1] + infected.exact_size() + gwire.MAC_BYTES
            if payload + 4 * added > self.max_payload:
                return "passed_too_big"
        self.seq[origin] = msg.seq  # the compare-and-swap: the one state change
        self.chosen = chosen
        return "handled" if chosen else "accepted_no_targets"

    def copy(self, msg) -> tuple:
        """What the kernel sends for MSG, which it just took: the heartbeat with the node and its targets added to
        the infected set, and the targets' endpoints."""
        chosen, members = self.chosen, self.members
        out = gwire.Heartbeat(cluster=msg.cluster, origin=msg.origin, seq=msg.seq, identity=msg.identity,
                              infected=msg.infected.with_added([self.self_id, *chosen]))
        return out, tuple((members[nid][0][1], members[nid][0][2]) for nid in chosen)

    def _pick(self, origin: int, infected) -> list[int] | None:
        """The program's `pick`: up to fanout random registered members, not the origin, not infected; None when
        its probes found too few in a cluster too big to scan."""
        slots, fanout, rng = self.slots, self.fanout, self.rng
        n = len(slots)
        if n == 0:
            return None
        chosen: list[int] = []
        probed: set[int] = set()
        for _ in range(3 * fanout):
            if len(chosen) >= fanout:
                break
            slot = rng.randrange(n)
            if slot in probed:
                continue
            probed.add(slot)
            nid = slots[slot]
            if nid != origin and nid not in infected:
                chosen.append(nid)
        if len(chosen) < fanout:
            rest = [nid for s, nid in enumerate(slots) if s not in probed and nid != origin and nid not in infected]
            if not rest and infected.bloom is None:
                return chosen  # an exact list tells that probes found them all: nothing to scan
            if n > HB_SCAN_MAX:
                return None
            need = fanout - len(chosen)
            chosen.extend(rest if len(rest) <= need else rng.sample(rest, need))
        return chosen

    # ---- the node (PlaneSync) ----

    def accept(self, accepted) -> None:
        """The driver's accepted sink: a heartbeat the core took raises the member's sequence; all goes on to XDP."""
        seq, members = self.seq, self.members
        for a in accepted:
            if a.type == gwire.MsgType.HEARTBEAT and a.origin in members and a.seq > seq[a.origin]:
                seq[a.origin] = a.seq
        if self.inner is not None:
            self.inner.accept(accepted)

    def took(self, origin: int, seq: int, when: float) -> None:
        """The kernel took ORIGIN's heartbeat SEQ at WHEN: the node reads it back at its next sync point."""
        self.unsynced[origin] = (seq, when)

    def sync(self, core, record) -> None:
        """The node reads back what the kernel took (before a timer step): `PlaneSync.sync`, each member's newest
        take handed to CORE, the events it makes recorded (RECORD(events, t)) at the time the kernel took it."""
        if self.unsynced:
            unsynced, self.unsynced = self.unsynced, {}
            for origin, (seq, when) in unsynced.items():
                self._apply(core, record, origin, seq, when)

    def sync_member(self, core, record, origin: int) -> None:
        """A heartbeat of ORIGIN is about to reach the core: the node reads that member back first
        (`PlaneSync.before_datagram`)."""
        taken = self.unsynced.pop(origin, None)
        if taken is not None:
            self._apply(core, record, origin, *taken)

    @staticmethod
    def _apply(core, record, origin: int, seq: int, when: float) -> None:
        if core.kernel_refreshed(origin, seq, when):
            events = core.take_events()  # the drains before left none: these are the refresh's own
            if events:
                record(events, when)

    def changed(self, core) -> bool:
        """Whether CORE's members may differ from what the plane holds (`GossipCore.roster` moved since the last
        full pass), as `gossip._plane.PlaneSync.changed` asks after a drain."""
        return self.dirty or core.roster != self.roster

    def reconcile(self, core, now: float) -> None:
        """Register the members CORE lists (MAC from the neighbour table, if it has one), remove the ones it
        dropped; members registered without a MAC are looked up again."""
        if not self.changed(core):
            if self.without_mac:
                for nid in list(self.without_mac):
                    if self._mac(self.members[nid][0][1], now):
                        fields, ident, _ = self.members[nid]
                        self.members[nid] = (fields, ident, True)
                        self.without_mac.discard(nid)
            return
        self.dirty = False
        self.roster = core.roster
        listed = {m.node_id: m for m in core.members()[1:]}
        members, seq = self.members, self.seq
        for nid in [n for n in members if n not in listed]:
            del members[nid], seq[nid]
            self.unsynced.pop(nid, None)
            self.without_mac.discard(nid)
            i = self.slots.index(nid)  # the program's slot table: the last slot moves into the freed one
            last = self.slots.pop()
            if last != nid:
                self.slots[i] = last
        for nid, m in listed.items():
            fields = (m.name, m.addr, m.port, m.private)
            old = members.get(nid)
            if old is not None and old[0] == fields and old[2]:
                continue
            ident = _IDENT_FIXED_BYTES + len(m.name.encode()) + 2 + len(m.private)
            mac = self._mac(m.addr, now)
            if old is None:
                self.slots.append(nid)
            members[nid] = (fields, ident, mac)
            seq[nid] = max(seq.get(nid, -1), m.seq)  # keep_higher_seq
            if mac:
                self.without_mac.discard(nid)
            else:
                self.without_mac.add(nid)

    def _mac(self, addr: str, now: float) -> bool:
        """`NeighbourTable.mac` (after `expired` and `refresh`): the cached table, reread when stale; a missing
        address asked of the kernel alone, at most every NEIGH_RETRY_S since the table's read or its last miss."""
        if now - self.loaded_at > NEIGH_TTL_S:
            self.cache, self.loaded_at = set(self.neigh.known), now
            self.missed.clear()
        if addr in self.cache:
            return True
        if now - max(self.loaded_at, self.missed.get(addr, -float("inf"))) <= NEIGH_RETRY_S:
            return False
        if addr in self.neigh.known:
            self.cache.add(addr)
            self.missed.pop(addr, None)
            return True
        self.missed[addr] = now
        return False

    def stats(self) -> dict:
        out = {k: self.counts.get(k, 0) for k in COUNTERS}
        out["passed"] = sum(v for k, v in out.items() if k.startswith("passed_"))
        out["members"] = len(self.members)
        out["members_without_mac"] = len(self.without_mac)
        return out
