"""The sans-IO gossip protocol core: membership by heartbeat rumors, metadata by rumors and anti-entropy swaps.

The core takes datagrams and the current time in and gives datagrams to send, events and timer deadlines out.
It never touches a socket, a clock or the module-level random generator: drivers pass ``now`` (seconds on a clock
that keeps running across restarts: wall-clock time in a real node, virtual time in the simulator) and a seeded
`random.Random`. The asyncio node (`gossip._node`) and the simulator (`testbed.sim`) are two drivers of this class.

Protocol, in one place (see README and docs/wire-format.md):

- Every ``cycle_s`` a node whose heartbeats run sends a heartbeat rumor about itself to up to ``fanout`` live
  peers not in the rumor's infected set, adding them (and itself) to it. A receiver that accepts it (sequence newer
  than any it accepted from that origin) refreshes the origin's entry and forwards it the same way. A rumor ends
  when a holder finds no uninfected live peer.
- Entries not refreshed for ``timeout_s`` are removed. Seeds that are not live get the heartbeat as well, so a
  node that knows nobody (or a healed partition) finds its way back. A seed (`set`) is only a target to contact
  until a heartbeat from it arrives: it takes part in the spread like a member, but is not listed (`members`)
  and makes no ``member_added`` until it is heard from.
- `leave(now)` ends the node for good: it spreads a LEAVE rumor about itself (as a heartbeat: up to ``fanout``
  peers, each receiver forwarding it to up to ``fanout`` uninfected peers) carrying the sequence its next heartbeat
  would have had, and sends nothing afterwards. A receiver drops the origin at once (``member_left``) and takes the
  leave's sequence as the origin's accepted heartbeat sequence, so the leaver's older heartbeats still in flight
  are stale and cannot bring it back, a replayed LEAVE is a duplicate or stale, and a restarted incarnation (whose
  heartbeat sequences start at its clock in ms) is taken back by its first heartbeat.
- ``publish(data)`` makes a version newer than every version the node has seen and spreads it as a rumor; a node
  keeps the highest version, ordered by (seq, origin).
- Every cycle a node sends its version (and value) to one random live peer; the peer answers with its own value
  when that is newer, and adopts the requester's when the requester's is newer.
- What must survive a restart (`DurableState`: the adopted version and value and the HLC mark) is read with
  `durable_state()` whenever `take_accepted()` lists a metadata version, and handed back at construction
  (``state=``) or through `restore()` before any input. Keeping it is the driver's job (`gossip._driver`,
  `gossip._state`): the core never touches a file.
"""

from __future__ import annotations

import random

from . import _wire as wire
from ._config import NodeConfig
# the shared state and types live in _corebase; they are re-exported here, where they were defined first
from ._corebase import (MAX_DIRECT_HOPS, MAX_REMEMBERED_ORIGINS, CoreBase, DurableState, MemberInfo,  # noqa: F401
                        Version, _Entry, _us)
from ._events import (Accepted, LeaveSent, MemberAdded, MemberLeft, MemberRefreshed, MemberRemoved, MetadataSent,
                      Send)
from .protocols import register


@register("heartbeat")  # the default protocol; drivers make cores through the registry (`gossip.protocols`)
class GossipCore(CoreBase):
    """One node's protocol state (a `gossip.protocols.Protocol`). Not thread-safe; drive it from one task or
    thread."""

    def __init__(self, *, config: NodeConfig, identity: wire.Identity, rng: random.Random, now: float,
                 record_refreshes: bool = False, state: DurableState | None = None) -> None:
        super().__init__(config=config, identity=identity, rng=rng, now=now, record_refreshes=record_refreshes)
        self._live_ids: list[int] = []  # same ids as _entries, for O(1) random picks
        self._live_pos: dict[int, int] = {}
        self._roster = 0  # see `roster`
        self._start_from(state)

    @property
    def roster(self) -> int:
        """See `gossip.protocols.Protocol.roster`: counted here, so a refresh (which changes only a member's seq
        and last_seen) leaves it, and the heartbeat plane re-registers members only when it moved."""
        return self._roster

    # ---- public operations -------------------------------------------------------------------------------

    def set(self, identity: wire.Identity, now: float) -> None:
        """Add a known node (a seed): a target to contact, listed as a member only once a heartbeat from it arrives.
        Until then it gets rumors and swaps as a member does, for timeout_s; after that, while it stays silent,
        only the heartbeats sent to seeds that are not live."""
        if identity.node_id == self.node_id:
            return
        self._seeds[identity.endpoint] = None
        if identity.node_id not in self._entries:
            self._add(identity, 0, now, heard=False)

    def leave(self, now: float) -> int:
        """Announce that this node leaves, and stop it for good: spread a LEAVE rumor about itself to up to fanout
        live peers (its receivers forward it as they forward a heartbeat), then send nothing more -- no heartbeat,
        no swap, no forward. The LEAVE carries the sequence its next heartbeat would have had, so it outranks every
        heartbeat this incarnation sent. Returns how many peers it was sent to; a second call sends nothing."""
        if self._left:
            return 0
        self.stop()
        self._left = True
        self._hb_seq = max(self._hb_seq + 1, _us(now))
        msg = wire.Leave(cluster=self.cluster, origin=self.node_id, seq=self._hb_seq, identity=self.identity)
        before = len(self._sends)
        self._spread(msg, wire.Infected(ids=frozenset({self.node_id})))
        targets = self._sends[before].targets if len(self._sends) > before else ()
        self.stats["leaves_sent"] += 1
        self._events.append(LeaveSent(seq=self._hb_seq, targets=tuple(f"{a}:{p}" for a, p in targets)))
        return len(targets)

    def publish(self, data: bytes, now: float) -> Version:
        """Adopt DATA under a version newer than any seen here and spread it as a rumor."""
        version = self._publish_version(data, now)
        self._spread(wire.MetadataRumor(cluster=self.cluster, origin=self.node_id, version=version.seq, data=data),
                     wire.Infected(ids=frozenset({self.node_id})))
        return version

    # ---- driver interface --------------------------------------------------------------------------------

    def next_deadline(self) -> float:
        """When `tick` next has work to do."""
        oldest = min((e.last_seen for e in self._entries.values()), default=None)
        if oldest is None:
            return self._next_cycle
        return min(self._next_cycle, oldest + self.config.timeout_s)

    def tick(self, now: float) -> None:
        """Run every timer due at NOW: expiry, then the cycle's heartbeat and swap."""
        self._expire(now)
        if self._left:
            return  # a node that left sends nothing: its driver is about to stop it
        if now >= self._next_cycle:
            cycle = self.config.cycle_s
            self._next_cycle += cycle
            if self._next_cycle <= now:  # fell behind (paused process, slow loop): do not burst to catch up
                self._next_cycle = now + cycle
            if self._heartbeats:
                self._send_heartbeat(now)
            self._send_swap()

    def receive_message(self, msg: wire.Message, now: float, src: str = "") -> None:
        """Handle one already-verified message (the simulator's entry point; `receive` ends here too)."""
        self._src = src
        if self._left:
            return  # gone: it must not forward (a forward would carry its sends past its own LEAVE)
        self._HANDLERS[type(msg)](self, msg, now)

    def kernel_refreshed(self, origin: int, seq: int, last_seen: float) -> bool:
        """A heartbeat of ORIGIN at SEQ that the kernel's heartbeat plane accepted and forwarded itself at LAST_SEEN
        (this core's clock): the same effect as `_on_heartbeat` accepting it, minus the forwarding, which the
        kernel did -- the entry refreshed (last_seen never moves back), SEQ remembered so later copies are
        duplicates or stale, a ``member_refreshed`` when refreshes are recorded, and the sequence listed by
        `take_accepted` so the XDP fast path drops the copies the kernel's forwards cause.

        Only a listed member whose SEQ is above the one accepted counts (the plane holds only members the node
        registered; one removed or left meanwhile is the node's to take back from its next heartbeat). Several
        heartbeats the kernel took between two reads arrive as the last one. Returns whether it counted."""
        entry = self._entries.get(origin)
        if entry is None or not entry.heard or self._left or origin == self.node_id:
            return False
        last = self._accepted_seq.get(origin)
        if last is not None and seq <= last:
            return False
        self._remember_seq(origin, seq)
        entry.seq = seq
        if last_seen > entry.last_seen:
            entry.last_seen = last_seen
        if self._record_refreshes:
            self._events.append(MemberRefreshed(node_id=origin, seq=seq))
        self.stats["kernel_refreshed"] += 1
        self._accepted.append(Accepted(type=wire.MsgType.HEARTBEAT, origin=origin, seq=seq))
        return True

    # ---- handlers: one per message type ----------------------------------------------------------------------

    def _on_heartbeat(self, msg: wire.Heartbeat, now: float) -> None:
        if not self._take_origin(msg, "heartbeat"):
            return
        origin = msg.origin
        entry = self._entries.get(origin)
        if entry is None:
            self._add(msg.identity, msg.seq, now)
        else:
            if entry.identity != msg.identity:  # the same address and port, another name or private field
                self._roster += 1
            entry.identity, entry.seq, entry.last_seen = msg.identity, msg.seq, now
            if not entry.heard:  # a seed, heard from at last: a member from now on
                entry.heard = True
                self._roster += 1
                self._events.append(MemberAdded(node_id=origin, name=msg.identity.name, addr=msg.identity.addr,
                                                port=msg.identity.port))
            elif self._record_refreshes:
                self._events.append(MemberRefreshed(node_id=origin, seq=msg.seq))
            self._note_direct_hop(msg, now)
        self.stats["accepted_heartbeat"] += 1
        self._accepted.append(Accepted(type=wire.MsgType.HEARTBEAT, origin=origin, seq=msg.seq))
        self._spread(msg, msg.infected.with_added((self.node_id,)))

    def _on_leave(self, msg: wire.Leave, now: float) -> None:
        # the leave's sequence becomes the origin's: its older heartbeats, still in flight, are stale from now on
        if not self._take_origin(msg, "leave"):
            return
        origin = msg.origin
        entry = self._entries.get(origin)
        if entry is not None:
            self._drop_entry(origin)
            if entry.heard:
                self.stats["members_left"] += 1
                self._events.append(MemberLeft(node_id=origin, name=entry.identity.name, seq=msg.seq))
        self.stats["accepted_leave"] += 1
        self._accepted.append(Accepted(type=wire.MsgType.HEARTBEAT, origin=origin, seq=msg.seq))
        self._spread(msg, msg.infected.with_added((self.node_id,)))

    def _on_metadata(self, msg: wire.MetadataRumor, now: float) -> None:
        if not self._newer(Version(msg.version, msg.origin), "metadata"):
            return
        self._adopt(Version(msg.version, msg.origin), msg.data, via="rumor")
        self._spread(msg, msg.infected.with_added((self.node_id,)))

    _HANDLERS = {
        wire.Heartbeat: _on_heartbeat,
        wire.MetadataRumor: _on_metadata,
        wire.SwapRequest: CoreBase._on_swap_request,
        wire.SwapResponse: CoreBase._on_swap_response,
        wire.Leave: _on_leave,
    }

    # ---- internals -------------------------------------------------------------------------------------------

    def _add(self, identity: wire.Identity, seq: int, now: float, heard: bool = True) -> None:
        nid = identity.node_id
        self._entries[nid] = _Entry(identity, seq, now, heard)
        self._live_pos[nid] = len(self._live_ids)
        self._live_ids.append(nid)
        if heard:
            self._roster += 1
            self._events.append(MemberAdded(node_id=nid, name=identity.name, addr=identity.addr,
                                            port=identity.port))

    def _drop_entry(self, nid: int) -> _Entry:
        entry = self._entries.pop(nid)
        if entry.heard:
            self._roster += 1
        pos = self._live_pos.pop(nid)
        last = self._live_ids.pop()
        if last != nid:
            self._live_ids[pos] = last
            self._live_pos[last] = pos
        return entry

    def _remove(self, nid: int, reason: str) -> None:
        entry = self._drop_entry(nid)
        if entry.heard:  # a seed never heard from was never listed: nothing to remove from anyone's view
            self._events.append(MemberRemoved(node_id=nid, name=entry.identity.name, reason=reason))

    def _expire(self, now: float) -> None:
        limit = now - self.config.timeout_s
        for nid in [n for n, e in self._entries.items() if e.last_seen <= limit]:
            self._remove(nid, "timeout")

    def _pick(self, k: int, infected: wire.Infected, exclude: int) -> list[int]:
        """Up to K random live peers that are not in INFECTED (nor EXCLUDE nor this node)."""
        ids = self._live_ids
        if k <= 0 or not ids:
            return []
        rng = self._rng
        chosen: list[int] = []
        # Random probes first: cheap while most peers are uninfected; a full scan when probes run dry.
        for _ in range(3 * k):
            nid = ids[rng.randrange(len(ids))]
            if nid != exclude and nid not in chosen and nid not in infected:
                chosen.append(nid)
                if len(chosen) == k:
                    return chosen
        rest = [n for n in ids if n != exclude and n not in chosen and n not in infected]
        need = k - len(chosen)
        chosen.extend(rest if len(rest) <= need else rng.sample(rest, need))
        return chosen

    def _spread(self, msg, infected: wire.Infected) -> None:
        """Send rumor MSG to up to fanout uninfected live peers, with them added to its infected set."""
        targets = self._pick(self.config.fanout, infected, msg.origin)
        extra = ()
        if isinstance(msg, wire.Heartbeat) and msg.origin == self.node_id:
            extra = self._lost_seed()
        if not targets and not extra:
            return
        infected = infected.with_added(targets + [wire.node_id(*e) for e in extra])
        if isinstance(msg, (wire.Heartbeat, wire.Leave)):
            msg = type(msg)(cluster=msg.cluster, origin=msg.origin, seq=msg.seq, identity=msg.identity,
                            infected=infected)
        else:
            msg = wire.MetadataRumor(cluster=msg.cluster, origin=msg.origin, version=msg.version, data=msg.data,
                                     infected=infected)
        endpoints = tuple(self._entries[n].identity.endpoint for n in targets) + extra
        if isinstance(msg, wire.MetadataRumor):
            self._events.append(MetadataSent(version=msg.version, origin=msg.origin,
                                             targets=tuple(f"{a}:{p}" for a, p in endpoints)))
        self._emit(msg, endpoints)

    def _lost_seed(self) -> tuple[tuple[str, int], ...]:
        """One seed that is not live, if any: it gets our heartbeat too, so partitions and lone nodes rejoin."""
        entries = self._entries  # keyed by node id, the hash of the endpoint (_take_origin holds them equal)
        lost = [s for s in self._seeds if wire.node_id(*s) not in entries]
        return (lost[self._rng.randrange(len(lost))],) if lost else ()

    def _send_heartbeat(self, now: float) -> None:
        self._hb_seq = max(self._hb_seq + 1, _us(now))
        hb = wire.Heartbeat(cluster=self.cluster, origin=self.node_id, seq=self._hb_seq, identity=self.identity)
        self.stats["heartbeats_sent"] += 1
        self._spread(hb, wire.Infected(ids=frozenset({self.node_id})))

    def _send_swap(self) -> None:
        ids = self._live_ids
        if not ids:
            return
        peer = self._entries[ids[self._rng.randrange(len(ids))]].identity
        self._emit(self._swap_request(), (peer.endpoint,))
