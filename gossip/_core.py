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
from collections import Counter
from dataclasses import dataclass
from typing import NamedTuple

from . import _wire as wire
from ._config import NodeConfig
from ._events import (Accepted, Event, HeartbeatsChanged, LeaveSent, MemberAdded, MemberLeft, MemberRefreshed,
                      MemberRemoved, MetadataAdopted, MetadataSent, PacketDropped, Send)
from .errors import ProtocolError, UsageError
from .protocols import register

MAX_REMEMBERED_ORIGINS = 65536


class Version(NamedTuple):
    """A metadata version: totally ordered by (seq, origin). (0, 0) means "no metadata yet"."""

    seq: int
    origin: int


@dataclass(frozen=True, slots=True, kw_only=True)
class DurableState:
    """What a node keeps across restarts: the metadata it holds and its hybrid logical clock's high-water mark
    (the highest version sequence it has seen or issued; a publish is always above it)."""

    version: Version
    data: bytes
    hlc: int

    def __post_init__(self) -> None:
        v = self.version
        if not (isinstance(v, Version) and isinstance(v.seq, int) and isinstance(v.origin, int)
                and 0 <= v.seq < 1 << 64 and 0 <= v.origin < 1 << 32):
            raise UsageError(f"version: must be a Version of a 64-bit seq and a 32-bit origin, got {v!r}")
        if not isinstance(self.data, bytes):
            raise UsageError("data: must be bytes")
        if isinstance(self.hlc, bool) or not isinstance(self.hlc, int) or not 0 <= self.hlc < 1 << 64:
            raise UsageError(f"hlc: must be a 64-bit unsigned integer, got {self.hlc!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class MemberInfo:
    """One entry of a node's list, as `get()` returns it."""

    node_id: int
    name: str
    addr: str
    port: int
    private: bytes
    seq: int
    last_seen: float

    def to_json(self) -> dict:
        return {"id": self.node_id, "name": self.name, "addr": self.addr, "port": self.port,
                "private": self.private.decode("utf-8", "replace"), "seq": self.seq,
                "last_seen": self.last_seen}


class _Entry:
    __slots__ = ("identity", "seq", "last_seen", "heard")

    def __init__(self, identity: wire.Identity, seq: int, last_seen: float, heard: bool) -> None:
        self.identity, self.seq, self.last_seen = identity, seq, last_seen
        self.heard = heard  # False for a seed no heartbeat has come from yet: contacted, not listed


MAX_DIRECT_HOPS = 16  # direct heartbeat hop delays kept per stats record (see GossipCore.take_direct_hops)


def _ms(now: float) -> int:
    return max(0, int(now * 1000))


@register("heartbeat")  # the default protocol; drivers make cores through the registry (`gossip.protocols`)
class GossipCore:
    """One node's protocol state (a `gossip.protocols.Protocol`). Not thread-safe; drive it from one task or
    thread."""

    def __init__(self, *, config: NodeConfig, identity: wire.Identity, rng: random.Random, now: float,
                 record_refreshes: bool = False, state: DurableState | None = None) -> None:
        if identity.addr != config.listen_addr or identity.port != config.listen_port:
            raise UsageError("identity: addr/port must equal the config's listen_addr/listen_port")
        self.config = config
        self.identity = identity
        self.node_id = identity.node_id
        self.cluster = wire.cluster_id(config.cluster)
        self._rng = rng
        self._record_refreshes = record_refreshes
        self._src = ""  # where the message being handled came from (recorded only)
        self._direct_hops: list[float] = []  # see take_direct_hops
        self._entries: dict[int, _Entry] = {}  # members, and seeds not heard from yet (not listed)
        self._live_ids: list[int] = []  # same ids as _entries, for O(1) random picks
        self._live_pos: dict[int, int] = {}
        self._accepted_seq: dict[int, int] = {}  # highest heartbeat seq accepted per origin, kept after removal
        self._seeds: dict[tuple[str, int], None] = {}
        self._hb_seq = 0
        self._version = Version(0, 0)
        self._data = b""
        self._hlc = 0  # highest version seq seen or issued: every publish is above it
        self._restored = False
        self._heartbeats = True
        self._left = False
        self._next_cycle = now
        self._events: list[Event] = []
        self._sends: list[Send] = []
        self._accepted: list[Accepted] = []
        self.stats: Counter[str] = Counter()
        if state is not None:
            self.restore(state)

    # ---- durable state -----------------------------------------------------------------------------------

    def restore(self, state: DurableState) -> None:
        """Start from STATE (what `durable_state()` gave a previous incarnation): once, before any metadata.

        The node then holds STATE's version and value (recorded as a ``metadata_adopted`` with ``via="restore"``
        and listed by `take_accepted`, so a fast path learns it) and never publishes at or below its HLC mark, so
        versions stay monotonic across a restart even if the clock went back.
        """
        if self._restored or self._hlc:
            raise UsageError("state: a core can be restored only once, before it has seen any metadata")
        if not isinstance(state, DurableState):
            raise UsageError("state: must be a DurableState")
        limit = wire.max_data_bytes(self.config.max_packet_bytes, self.identity)
        if len(state.data) > limit:
            raise UsageError(f"state: its {len(state.data)} bytes of data exceed the {limit} that fit in "
                             f"max_packet_bytes={self.config.max_packet_bytes}")
        self._restored = True
        self._hlc = max(state.hlc, state.version.seq)
        if state.version != Version(0, 0):
            self._version, self._data = state.version, state.data
            self._events.append(MetadataAdopted(version=state.version.seq, origin=state.version.origin,
                                                via="restore", size=len(state.data), src=""))
            self._accepted.append(Accepted(type=wire.MsgType.METADATA, origin=state.version.origin,
                                           seq=state.version.seq))

    def roll_back(self, version: Version, data: bytes) -> None:
        """Hold VERSION and DATA again (the last durable state) after the driver could not make a newer one durable:
        a value the disk refused must not leave the node, not even in a later swap. The HLC mark stays where it
        is, so the next publish is still above the refused version. Recorded as ``metadata_adopted`` with
        ``via="rollback"``."""
        if (version, data) == (self._version, self._data):
            return
        self._version, self._data = version, data
        self.stats["adopted_rollback"] += 1
        self._events.append(MetadataAdopted(version=version.seq, origin=version.origin, via="rollback",
                                            size=len(data), src=""))

    def take_direct_hops(self) -> list[float]:
        """The delays (ms) of heartbeats taken straight from their origin since the last call, at most
        `MAX_DIRECT_HOPS`: a heartbeat's sequence is its origin's clock in whole ms when it was sent, so on one host
        (the testbed, the simulator) each is one hop up to the moment the receiver starts on it -- send, wire, the
        receiver's wait for a core and for what it had queued before -- under the cluster's own load, at every
        phase of the cycle. Each is up to 1 ms long (the
        sequence is truncated to the ms). The driver puts them in the ``stats`` record (``hb_hop_ms``)."""
        hops, self._direct_hops = self._direct_hops, []
        return hops

    def durable_state(self) -> DurableState:
        """What must be kept for a restart: the version and value held, and the HLC mark."""
        return DurableState(version=self._version, data=self._data, hlc=self._hlc)

    @property
    def hlc_mark(self) -> int:
        return self._hlc

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

    def stop(self) -> None:
        """Stop this node's own heartbeats; it keeps receiving, forwarding and swapping."""
        if self._heartbeats:
            self._heartbeats = False
            self._events.append(HeartbeatsChanged(running=False))

    def start(self) -> None:
        if self._left:
            raise UsageError("start: this node has left; a node that left cannot start again (start a new one)")
        if not self._heartbeats:
            self._heartbeats = True
            self._events.append(HeartbeatsChanged(running=True))

    @property
    def heartbeats_running(self) -> bool:
        return self._heartbeats

    @property
    def has_left(self) -> bool:
        return self._left

    def leave(self, now: float) -> int:
        """Announce that this node leaves, and stop it for good: spread a LEAVE rumor about itself to up to fanout
        live peers (its receivers forward it as they forward a heartbeat), then send nothing more -- no heartbeat,
        no swap, no forward. The LEAVE carries the sequence its next heartbeat would have had, so it outranks every
        heartbeat this incarnation sent. Returns how many peers it was sent to; a second call sends nothing."""
        if self._left:
            return 0
        self.stop()
        self._left = True
        self._hb_seq = max(self._hb_seq + 1, _ms(now))
        msg = wire.Leave(cluster=self.cluster, origin=self.node_id, seq=self._hb_seq, identity=self.identity)
        before = len(self._sends)
        self._spread(msg, wire.Infected(ids=frozenset({self.node_id})))
        targets = self._sends[before].targets if len(self._sends) > before else ()
        self.stats["leaves_sent"] += 1
        self._events.append(LeaveSent(seq=self._hb_seq, targets=tuple(f"{a}:{p}" for a, p in targets)))
        return len(targets)

    def publish(self, data: bytes, now: float) -> Version:
        """Adopt DATA under a version newer than any seen here and spread it as a rumor."""
        if self._left:
            raise UsageError("publish: this node has left the cluster")
        if not isinstance(data, bytes):
            raise UsageError("data: must be bytes")
        limit = wire.max_data_bytes(self.config.max_packet_bytes, self.identity)
        if len(data) > limit:
            raise UsageError(f"data: {len(data)} bytes exceeds the {limit} that fit in max_packet_bytes="
                             f"{self.config.max_packet_bytes}")
        version = Version(max(self._hlc + 1, _ms(now)), self.node_id)
        self._adopt(version, data, via="publish")
        self._spread(wire.MetadataRumor(cluster=self.cluster, origin=self.node_id, version=version.seq, data=data),
                     wire.Infected(ids=frozenset({self.node_id})))
        return version

    def read(self) -> tuple[Version, bytes]:
        return self._version, self._data

    def members(self) -> list[MemberInfo]:
        """The live node list, this node included (first)."""
        me = MemberInfo(node_id=self.node_id, name=self.identity.name, addr=self.identity.addr,
                        port=self.identity.port, private=self.identity.private, seq=self._hb_seq, last_seen=0.0)
        out = [me]
        for nid, e in self._entries.items():
            if not e.heard:
                continue
            i = e.identity
            out.append(MemberInfo(node_id=nid, name=i.name, addr=i.addr, port=i.port, private=i.private,
                                  seq=e.seq, last_seen=e.last_seen))
        return out

    def live_ids(self) -> set[int]:
        """The ids `members` lists, this node excluded."""
        return {nid for nid, e in self._entries.items() if e.heard}

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

    def receive(self, datagram: bytes, now: float, src: str = "") -> None:
        """Handle one datagram from a peer. Never raises on the peer's bytes: bad input is counted and dropped.

        SRC ("addr:port" the datagram came from, if the driver knows it) is only recorded, in `MetadataAdopted`:
        it is what lets the testbed rebuild a rumor's infection tree and measure its hops.
        """
        self.stats["packets_in"] += 1
        try:
            msg = wire.decode(datagram, cluster=self.cluster, keys=self.config.secrets)
        except ProtocolError as e:
            self.note_drop(e.reason, e.detail)
            return
        self.receive_message(msg, now, src)

    def receive_message(self, msg: wire.Message, now: float, src: str = "") -> None:
        """Handle one already-verified message (the simulator's entry point; `receive` ends here too)."""
        self._src = src
        if self._left:
            return  # gone: it must not forward (a forward would carry its sends past its own LEAVE)
        self._HANDLERS[type(msg)](self, msg, now)

    def note_drop(self, reason: str, detail: str = "") -> None:
        """Count a dropped packet (drivers use this for drops of their own, such as a full queue)."""
        self.stats[f"dropped_{reason}"] += 1
        self.stats["dropped"] += 1
        self._events.append(PacketDropped(reason=reason, detail=detail))

    def take_sends(self) -> list[Send]:
        out, self._sends = self._sends, []
        return out

    def take_events(self) -> list[Event]:
        out, self._events = self._events, []
        return out

    def take_accepted(self) -> list[Accepted]:
        out, self._accepted = self._accepted, []
        return out

    def encode(self, msg: wire.Message) -> bytes:
        return wire.encode(msg, key=self.config.secrets[0], max_packet_bytes=self.config.max_packet_bytes)

    # ---- handlers: one per message type ----------------------------------------------------------------------

    def _on_heartbeat(self, msg: wire.Heartbeat, now: float) -> None:
        origin = msg.origin
        if origin == self.node_id:
            return self.note_drop("duplicate", "own heartbeat")
        if msg.identity.node_id != origin:
            return self.note_drop("malformed", f"identity {msg.identity.addr}:{msg.identity.port} is not origin")
        last = self._accepted_seq.get(origin)
        if last is not None and msg.seq <= last:
            return self.note_drop("duplicate" if msg.seq == last else "stale", f"heartbeat {origin:#010x}/{msg.seq}")
        self._remember_seq(origin, msg.seq)
        entry = self._entries.get(origin)
        if entry is None:
            self._add(msg.identity, msg.seq, now)
        else:
            entry.identity, entry.seq, entry.last_seen = msg.identity, msg.seq, now
            if not entry.heard:  # a seed, heard from at last: a member from now on
                entry.heard = True
                self._events.append(MemberAdded(node_id=origin, name=msg.identity.name, addr=msg.identity.addr,
                                                port=msg.identity.port))
            elif self._record_refreshes:
                self._events.append(MemberRefreshed(node_id=origin, seq=msg.seq))
            if len(self._direct_hops) < MAX_DIRECT_HOPS and self._src == "%s:%d" % msg.identity.endpoint:
                self._direct_hops.append(now * 1000.0 - msg.seq)
        self.stats["accepted_heartbeat"] += 1
        self._accepted.append(Accepted(type=wire.MsgType.HEARTBEAT, origin=origin, seq=msg.seq))
        self._spread(msg, msg.infected.with_added((self.node_id,)))

    def _on_leave(self, msg: wire.Leave, now: float) -> None:
        origin = msg.origin
        if origin == self.node_id:
            return self.note_drop("duplicate", "own leave")  # an earlier incarnation's, replayed: this one stays
        if msg.identity.node_id != origin:
            return self.note_drop("malformed", f"identity {msg.identity.addr}:{msg.identity.port} is not origin")
        last = self._accepted_seq.get(origin)
        if last is not None and msg.seq <= last:
            return self.note_drop("duplicate" if msg.seq == last else "stale", f"leave {origin:#010x}/{msg.seq}")
        # the leave's sequence becomes the origin's: its older heartbeats, still in flight, are stale from now on
        self._remember_seq(origin, msg.seq)
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

    def _on_swap_request(self, msg: wire.SwapRequest, now: float) -> None:
        theirs = Version(msg.version, msg.origin)
        if theirs == self._version:
            return self.note_drop("duplicate", "swap request for the version held")
        if theirs > self._version:
            self._src = "%s:%d" % msg.sender.endpoint  # where it listens (a TCP peer's source port is not that)
            self._adopt(theirs, msg.data, via="swap")
            return
        self.stats["swap_answered"] += 1
        self._emit(wire.SwapResponse(cluster=self.cluster, origin=self._version.origin, version=self._version.seq,
                                     data=self._data), (msg.sender.endpoint,))

    def _on_swap_response(self, msg: wire.SwapResponse, now: float) -> None:
        if self._newer(Version(msg.version, msg.origin), "swap response"):
            self._adopt(Version(msg.version, msg.origin), msg.data, via="swap")

    _HANDLERS = {
        wire.Heartbeat: _on_heartbeat,
        wire.MetadataRumor: _on_metadata,
        wire.SwapRequest: _on_swap_request,
        wire.SwapResponse: _on_swap_response,
        wire.Leave: _on_leave,
    }

    # ---- internals -------------------------------------------------------------------------------------------

    def _newer(self, v: Version, what: str) -> bool:
        if v > self._version:
            return True
        self.note_drop("duplicate" if v == self._version else "stale", f"{what} version {v.seq}/{v.origin:#010x}")
        return False

    def _adopt(self, version: Version, data: bytes, via: str) -> None:
        self._version, self._data = version, data
        if version.seq > self._hlc:
            self._hlc = version.seq
        self.stats[f"adopted_{via}"] += 1
        self._events.append(MetadataAdopted(version=version.seq, origin=version.origin, via=via, size=len(data),
                                            src="" if via == "publish" else self._src))
        self._accepted.append(Accepted(type=wire.MsgType.METADATA, origin=version.origin, seq=version.seq))

    def _add(self, identity: wire.Identity, seq: int, now: float, heard: bool = True) -> None:
        nid = identity.node_id
        self._entries[nid] = _Entry(identity, seq, now, heard)
        self._live_pos[nid] = len(self._live_ids)
        self._live_ids.append(nid)
        if heard:
            self._events.append(MemberAdded(node_id=nid, name=identity.name, addr=identity.addr,
                                            port=identity.port))

    def _drop_entry(self, nid: int) -> _Entry:
        entry = self._entries.pop(nid)
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

    def _remember_seq(self, origin: int, seq: int) -> None:
        if origin not in self._accepted_seq and len(self._accepted_seq) >= MAX_REMEMBERED_ORIGINS:
            # forget a remembered origin that is not live (oldest first); live ones are always kept
            for old in self._accepted_seq:
                if old not in self._entries:
                    del self._accepted_seq[old]
                    break
        self._accepted_seq[origin] = seq

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
        live = {e.identity.endpoint for e in self._entries.values()}
        lost = [s for s in self._seeds if s not in live]
        return (lost[self._rng.randrange(len(lost))],) if lost else ()

    def _send_heartbeat(self, now: float) -> None:
        self._hb_seq = max(self._hb_seq + 1, _ms(now))
        hb = wire.Heartbeat(cluster=self.cluster, origin=self.node_id, seq=self._hb_seq, identity=self.identity)
        self.stats["heartbeats_sent"] += 1
        self._spread(hb, wire.Infected(ids=frozenset({self.node_id})))

    def _send_swap(self) -> None:
        ids = self._live_ids
        if not ids:
            return
        peer = self._entries[ids[self._rng.randrange(len(ids))]].identity
        self._emit(wire.SwapRequest(cluster=self.cluster, origin=self._version.origin, version=self._version.seq,
                                    sender=self.identity, data=self._data), (peer.endpoint,))

    def _emit(self, msg: wire.Message, targets: tuple[tuple[str, int], ...]) -> None:
        body_fit = wire.fit(msg, self.config.max_packet_bytes)
        self.stats["packets_out"] += len(targets)
        self.stats[f"sent_{body_fit.type.name.lower()}"] += len(targets)
        self._sends.append(Send(message=body_fit, targets=targets, encoder=self.encode))
