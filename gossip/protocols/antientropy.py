"""``antientropy``: membership by gossiping the whole heartbeat table, metadata by push-pull swaps only.

The gossip-style failure detector of van Renesse, Minsky and Hayden ("A Gossip-Style Failure Detection Service",
Middleware 1998), on this package's wire format and behind the `gossip.protocols.Protocol` interface. It is the
example of a protocol that is not built into the core: one module, registered by name, selected with
``membership: antientropy``. It uses only the existing message types, so the codec, the MAC, the XDP fast path and
the simulator's fast-path model all apply to it unchanged.

- Every ``cycle_s`` a node raises its own heartbeat sequence (its clock in ms, as the heartbeat protocol does, so
  a restarted incarnation is newer) and sends its whole table -- one HEARTBEAT per member it lists, itself
  included while its heartbeats run -- to up to ``fanout`` random peers, plus one seed it has not heard from (so a
  lone node or a healed partition finds its way back). Nothing is forwarded on receipt: every entry travels only
  in the tables of the next cycles, so an entry reaches everyone in O(log N) cycles and a cycle costs
  ``fanout * N`` datagrams per node (the price of keeping no rumor state). As in the paper, ``timeout_s`` must
  outlast the cycles an entry takes to reach everyone, which grow with log N: measured on the simulator with
  ``fanout: 3`` and ``cycle_s: 1``, 5 s holds 64 nodes without a false removal but not 256 (3,605 removals in
  25 s), which need about 8 s (one removal) to 10 s (none).
- A receiver takes an entry whose sequence is higher than any it accepted for that origin (refreshing it, or
  adding a member); the rest are ``duplicate``/``stale`` drops, which is what a fast path drops too. An entry not
  raised for ``timeout_s`` is removed. The highest sequence accepted per origin is kept after removal, so the stale
  copies of a removed member still in other tables cannot bring it back; its next incarnation can.
- `leave` sends a LEAVE carrying a sequence above all its heartbeats to every member it lists (no forwarding: a
  member that misses it times the leaver out); a receiver drops the origin at once.
- Metadata: every cycle a node sends its version and value to one random member (SWAP_REQUEST); the peer adopts
  it when newer and answers with its own when that is newer -- the heartbeat protocol's anti-entropy, with the same
  (seq, origin) version order. A publish also pushes its value to ``fanout`` members at once. No rumor is ever
  sent (a METADATA rumor that arrives is taken when newer, not forwarded).
"""

from __future__ import annotations

import random

from .. import _wire as wire
from .._config import NodeConfig
from .._corebase import CoreBase, DurableState, Version, _Entry, _us
from .._events import Accepted, LeaveSent, MemberAdded, MemberLeft, MemberRefreshed, MemberRemoved, Send
from ._registry import register


@register("antientropy")
class AntiEntropyCore(CoreBase):
    """One node's state of the ``antientropy`` protocol (a `gossip.protocols.Protocol`)."""

    def __init__(self, *, config: NodeConfig, identity: wire.Identity, rng: random.Random, now: float,
                 record_refreshes: bool = False, state: DurableState | None = None) -> None:
        super().__init__(config=config, identity=identity, rng=rng, now=now, record_refreshes=record_refreshes)
        self._start_from(state)

    # ---- operations ------------------------------------------------------------------------------------------

    def set(self, identity: wire.Identity, now: float) -> None:
        if identity.node_id == self.node_id:
            return
        self._seeds[identity.endpoint] = None
        if identity.node_id not in self._entries:
            self._entries[identity.node_id] = _Entry(identity, 0, now, heard=False)

    def leave(self, now: float) -> int:
        if self._left:
            return 0
        self.stop()
        self._left = True
        self._hb_seq = max(self._hb_seq + 1, _us(now))
        targets = tuple(e.identity.endpoint for e in self._entries.values())
        if targets:
            self._emit(wire.Leave(cluster=self.cluster, origin=self.node_id, seq=self._hb_seq,
                                  identity=self.identity), targets)
        self.stats["leaves_sent"] += 1
        self._events.append(LeaveSent(seq=self._hb_seq, targets=tuple(f"{a}:{p}" for a, p in targets)))
        return len(targets)

    def publish(self, data: bytes, now: float) -> Version:
        version = self._publish_version(data, now)
        peers = self._pick(self.config.fanout)
        if peers:  # the push half of a swap, at once: the value need not wait for the next cycle
            self._emit(self._swap_request(), tuple(self._entries[n].identity.endpoint for n in peers))
        return version

    # ---- driver interface ------------------------------------------------------------------------------------

    def next_deadline(self) -> float:
        oldest = min((e.last_seen for e in self._entries.values()), default=None)
        return self._next_cycle if oldest is None else min(self._next_cycle, oldest + self.config.timeout_s)

    def tick(self, now: float) -> None:
        limit = now - self.config.timeout_s
        for nid in [n for n, e in self._entries.items() if e.last_seen <= limit]:
            entry = self._entries.pop(nid)
            if entry.heard:  # a seed never heard from was never listed
                self._events.append(MemberRemoved(node_id=nid, name=entry.identity.name, reason="timeout"))
        if self._left or now < self._next_cycle:
            return
        self._next_cycle += self.config.cycle_s
        if self._next_cycle <= now:  # fell behind (a paused process): no burst to catch up
            self._next_cycle = now + self.config.cycle_s
        self._gossip_table(now)
        peers = self._pick(1)
        if peers:
            self._emit(self._swap_request(), (self._entries[peers[0]].identity.endpoint,))

    def receive_message(self, msg: wire.Message, now: float, src: str = "") -> None:
        if self._left:
            return
        self._src = src
        t = type(msg)
        if t is wire.Heartbeat:
            self._on_heartbeat(msg, now)
        elif t is wire.SwapRequest:
            self._on_swap_request(msg)
        elif t is wire.SwapResponse:
            self._on_swap_response(msg)
        elif t is wire.MetadataRumor:
            if self._newer(Version(msg.version, msg.origin), "metadata"):
                self._adopt(Version(msg.version, msg.origin), msg.data, "rumor")
        elif t is wire.Leave:
            self._on_leave(msg)
        else:
            self.note_drop("malformed", f"message type {t.__name__} is not used by antientropy")

    # ---- handlers --------------------------------------------------------------------------------------------

    def _check_origin(self, msg, what: str) -> bool:
        """True if MSG (a heartbeat or leave) is newer than anything accepted from its origin."""
        if not self._take_origin(msg, what):
            return False
        self._accepted.append(Accepted(type=wire.MsgType.HEARTBEAT, origin=msg.origin, seq=msg.seq))
        return True

    def _on_heartbeat(self, msg: wire.Heartbeat, now: float) -> None:
        if not self._check_origin(msg, "heartbeat"):
            return
        origin, ident = msg.origin, msg.identity
        self.stats["accepted_heartbeat"] += 1
        entry = self._entries.get(origin)
        if entry is None or not entry.heard:
            self._entries[origin] = _Entry(ident, msg.seq, now, heard=True)
            self._events.append(MemberAdded(node_id=origin, name=ident.name, addr=ident.addr, port=ident.port))
            return
        entry.identity, entry.seq, entry.last_seen = ident, msg.seq, now
        if self._record_refreshes:
            self._events.append(MemberRefreshed(node_id=origin, seq=msg.seq))
        self._note_direct_hop(msg, now)

    def _on_leave(self, msg: wire.Leave) -> None:
        if not self._check_origin(msg, "leave"):
            return
        self.stats["accepted_leave"] += 1
        entry = self._entries.pop(msg.origin, None)
        if entry is not None and entry.heard:
            self.stats["members_left"] += 1
            self._events.append(MemberLeft(node_id=msg.origin, name=entry.identity.name, seq=msg.seq))

    # ---- internals -------------------------------------------------------------------------------------------

    def _pick(self, k: int) -> list[int]:
        """Up to K random ids of the table (members and seeds not yet heard from)."""
        ids = list(self._entries)
        return ids if len(ids) <= k else self._rng.sample(ids, k)

    def _gossip_table(self, now: float) -> None:
        targets = [self._entries[n].identity.endpoint for n in self._pick(self.config.fanout)]
        live = {e.identity.endpoint for e in self._entries.values()}
        lost = [s for s in self._seeds if s not in live]
        if lost:
            targets.append(lost[self._rng.randrange(len(lost))])
        if not targets:
            return
        targets = tuple(targets)
        if self._heartbeats:
            self._hb_seq = max(self._hb_seq + 1, _us(now))
            self.stats["heartbeats_sent"] += 1
            self._emit(wire.Heartbeat(cluster=self.cluster, origin=self.node_id, seq=self._hb_seq,
                                      identity=self.identity), targets)
        for nid, e in self._entries.items():
            if e.heard:
                self._emit(wire.Heartbeat(cluster=self.cluster, origin=nid, seq=e.seq, identity=e.identity), targets)
