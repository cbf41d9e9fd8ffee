"""What every membership protocol's core shares, so that the same input means the same in each of them.

Metadata (versions ordered by (seq, origin), the hybrid logical clock mark, adoption, durable state and its
roll-back), the member list as `get()` shows it (seeds not listed until heard from), the outboxes the driver
drains (sends, events, accepted state, direct hop delays), the decoding of a datagram (MAC and cluster checked,
bad input counted and dropped) and heartbeats on/off. A protocol core (`gossip._core.GossipCore`,
`gossip.protocols.antientropy.AntiEntropyCore`, a user's) subclasses `CoreBase` and adds its own membership rules:
what it sends each cycle, how it handles each message type, when a member is removed. Sans-IO, like the cores.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, replace
from typing import NamedTuple

from . import _wire as wire
from ._config import NodeConfig
from ._events import Accepted, Event, HeartbeatsChanged, MetadataAdopted, PacketDropped, Send
from .errors import ProtocolError, UsageError

MAX_REMEMBERED_ORIGINS = 65536


class Version(NamedTuple):
    """A metadata version: totally ordered by (seq, origin). (0, 0) means "no metadata yet"."""

    seq: int
    origin: int


@dataclass(frozen=True, slots=True, kw_only=True)
class DurableState:
    """What a node keeps across restarts: the metadata it holds and its hybrid logical clock's high-water mark
    (the highest version sequence it has seen or issued; a publish is always above it).

    MEMBERS, (identity, incarnation) pairs, is a member list to start from, given only when a core is made
    (``create(..., state=...)``): a core whose protocol can list members without hearing from them starts as if
    it had joined them (SWIM: alive at those incarnations), as Serf rejoins from its snapshot; one that cannot
    refuses it. The simulator's warm start gives every node of a batch the same one; state files do not hold it.
    """

    version: Version
    data: bytes
    hlc: int
    members: tuple[tuple[wire.Identity, int], ...] = ()

    def __post_init__(self) -> None:
        v = self.version
        if not (isinstance(v, Version) and isinstance(v.seq, int) and isinstance(v.origin, int)
                and 0 <= v.seq < 1 << 64 and 0 <= v.origin < 1 << 32):
            raise UsageError(f"version: must be a Version of a 64-bit seq and a 32-bit origin, got {v!r}")
        if not isinstance(self.data, bytes):
            raise UsageError("data: must be bytes")
        if isinstance(self.hlc, bool) or not isinstance(self.hlc, int) or not 0 <= self.hlc < 1 << 64:
            raise UsageError(f"hlc: must be a 64-bit unsigned integer, got {self.hlc!r}")
        m = self.members
        if m:  # checked once here, not by each of the thousands of cores a warm start shares it with
            if not isinstance(m, tuple) or not all(type(e) is tuple and len(e) == 2 for e in m) \
                    or not all(type(i) is wire.Identity and type(v) is int and 0 <= v < 1 << 64 for i, v in m):
                raise UsageError("members: must be a tuple of (Identity, 64-bit incarnation) pairs")
            if len({i.node_id for i, _ in m}) != len(m):
                raise UsageError("members: a node is listed twice")


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
    state: str = "alive"  # "alive", or (SWIM) "suspect": still a member, not yet refuted or removed
    incarnation: int | None = None  # (SWIM) the incarnation the member is known at; None where there is none

    def to_json(self) -> dict:
        out = {"id": self.node_id, "name": self.name, "addr": self.addr, "port": self.port,
               "private": self.private.decode("utf-8", "replace"), "seq": self.seq,
               "last_seen": self.last_seen, "state": self.state}
        if self.incarnation is not None:
            out["incarnation"] = self.incarnation
        return out


class _Entry:
    __slots__ = ("identity", "seq", "last_seen", "heard")

    def __init__(self, identity: wire.Identity, seq: int, last_seen: float, heard: bool) -> None:
        self.identity, self.seq, self.last_seen = identity, seq, last_seen
        self.heard = heard  # False for a seed no heartbeat has come from yet: contacted, not listed


_SENT_KEYS: dict[wire.MsgType, str] = {}  # message type -> its ``sent_<type>`` counter

MAX_DIRECT_HOPS = 16  # direct heartbeat hop delays kept per stats record (see GossipCore.take_direct_hops)


def _ms(now: float) -> int:
    return max(0, int(now * 1000))


def _us(now: float) -> int:
    """NOW in whole microseconds: a heartbeat's (and a leave's) sequence, its send time on the origin's clock."""
    return max(0, int(now * 1_000_000))


class CoreBase:
    """The state and behaviour every protocol core shares (see the module docstring). Subclasses call
    ``super().__init__`` first, set up their own state, then ``self._start_from(state)``."""

    def __init__(self, *, config: NodeConfig, identity: wire.Identity, rng: random.Random, now: float,
                 record_refreshes: bool = False) -> None:
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
        # heartbeats taken straight from their origin so far, and the last one's send time (s): see _note_direct_hop
        self.direct_taken, self.direct_sent_s = 0, 0.0
        self._entries: dict[int, _Entry] = {}  # members, and seeds not heard from yet (not listed)
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
        self._created_at = now
        self._events: list[Event] = []
        self._sends: list[Send] = []
        self._accepted: list[Accepted] = []
        self.stats: Counter[str] = Counter()

    def _start_from(self, state: DurableState | None) -> None:
        if state is None:
            return
        if state.members:
            self._start_listing(state.members, self._created_at)
            if state.version == Version(0, 0) and not state.hlc:
                return  # members only: no metadata restored (a store may still restore some)
        self.restore(state)

    def _start_listing(self, members: tuple[tuple[wire.Identity, int], ...], now: float) -> None:
        """List MEMBERS (a `DurableState`'s) as if this node had joined them; a protocol that can overrides this."""
        raise UsageError(f"state: members: the {self.config.membership} protocol cannot start with members listed")

    # ---- durable state -----------------------------------------------------------------------------------

    def restore(self, state: DurableState) -> None:
        """Start from STATE (what `durable_state()` gave a previous incarnation): once, before any metadata. (Its
        ``members`` are taken only when the core is made.)

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

    def durable_state(self) -> DurableState:
        """What must be kept for a restart: the version and value held, and the HLC mark."""
        return DurableState(version=self._version, data=self._data, hlc=self._hlc)

    @property
    def hlc_mark(self) -> int:
        return self._hlc

    # ---- public operations -------------------------------------------------------------------------------

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

    def _publish_version(self, data: bytes, now: float) -> Version:
        """Check DATA for a publish, adopt it under a version newer than any seen here and return that version
        (the protocol then spreads it its own way)."""
        if self._left:
            raise UsageError("publish: this node has left the cluster")
        if not isinstance(data, bytes):
            raise UsageError("data: must be bytes")
        limit = wire.max_data_bytes(self.config.max_packet_bytes, self.identity)
        if len(data) > limit:
            raise UsageError(f"data: {len(data)} bytes exceeds the {limit} that fit in max_packet_bytes="
                             f"{self.config.max_packet_bytes}")
        version = Version(max(self._hlc + 1, _ms(now)), self.node_id)
        self._src = ""
        self._adopt(version, data, via="publish")
        return version

    def read(self) -> tuple[Version, bytes]:
        return self._version, self._data

    def members(self) -> list[MemberInfo]:
        """The live node list, this node included (first); seeds not heard from are not listed."""
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
        raise NotImplementedError

    def note_drop(self, reason: str, detail: str = "") -> None:
        """Count a dropped packet (drivers use this for drops of their own, such as a full queue)."""
        self.stats[f"dropped_{reason}"] += 1
        self.stats["dropped"] += 1
        self._events.append(PacketDropped(reason=reason, detail=detail))

    def note_accepted(self, type: int, origin: int, seq: int) -> None:
        """The core took a message of wire TYPE from ORIGIN at SEQ and drops that type from ORIGIN at or below SEQ
        from now on: listed by `take_accepted`, so a fast path drops those too (only what the core took, never
        what a datagram merely claims). For a protocol's per-origin message sequences; heartbeats and metadata
        versions have their own entries."""
        self._accepted.append(Accepted(type=type, origin=origin, seq=seq))

    # The take_* outboxes are drained after every message a node handles, and are mostly empty: an empty one is
    # handed back as it is rather than swapped for a new list (three allocations per message, each one more object
    # for the garbage collector to look at).

    def take_sends(self) -> list[Send]:
        out = self._sends
        if out:
            self._sends = []
        return out

    def set_secrets(self, secrets: tuple[bytes, ...]) -> None:
        """See `gossip.protocols.Protocol.set_secrets`; checked by NodeConfig's own rules."""
        self.config = replace(self.config, secrets=secrets)

    _roster_reads = 0

    @property
    def roster(self) -> int:
        """See `gossip.protocols.Protocol.roster`. A core that does not count its roster changes gives a new value
        at every read: nothing ruled out, so a caller that asks whether the members changed always hears yes."""
        self._roster_reads += 1
        return -self._roster_reads

    def kernel_refreshed(self, origin: int, seq: int, last_seen: float) -> bool:
        """See `gossip.protocols.Protocol.kernel_refreshed`: only the heartbeat protocol has heartbeats to take."""
        return False

    def replay_sample(self) -> wire.Message | None:
        """A message this node accepted from a peer, for replay injections and tests: here a member's heartbeat
        at the sequence it holds (a protocol without heartbeats names its own); None when it lists no peer."""
        peer = next(iter(self.members()[1:]), None)
        if peer is None:
            return None
        return wire.Heartbeat(cluster=self.cluster, origin=peer.node_id, seq=peer.seq,
                              identity=wire.Identity(name=peer.name, addr=peer.addr, port=peer.port))

    def take_events(self) -> list[Event]:
        out = self._events
        if out:
            self._events = []
        return out

    def take_accepted(self) -> list[Accepted]:
        out = self._accepted
        if out:
            self._accepted = []
        return out

    def take_direct_hops(self) -> list[float]:
        """The delays (ms) of heartbeats taken straight from their origin since the last call, at most
        `MAX_DIRECT_HOPS`: a heartbeat's sequence is its origin's clock in microseconds when it was made, so on one
        host (the testbed, the simulator) each is one hop up to the moment the receiver starts on it -- send, wire,
        the receiver's wait for a core and for what it had queued before -- under the cluster's own load, at every
        phase of the cycle. The driver puts them in the ``stats`` record (``hb_hop_ms``)."""
        hops, self._direct_hops = self._direct_hops, []
        return hops

    def _note_direct_hop(self, msg, now: float) -> None:
        """Keep MSG's hop delay when it came straight from its origin (see `take_direct_hops`), and count it in
        ``direct_taken`` with its send time in ``direct_sent_s`` (a node with the kernel's receipt time of the
        datagram measures the hop's part before the receiver's wait from them: ``hb_wire_ms``)."""
        if self._src == "%s:%d" % msg.identity.endpoint:
            self.direct_taken += 1
            self.direct_sent_s = msg.seq / 1e6
            if len(self._direct_hops) < MAX_DIRECT_HOPS:
                self._direct_hops.append(now * 1000.0 - msg.seq / 1000.0)

    def encode(self, msg: wire.Message) -> bytes:
        return wire.encode(msg, key=self.config.secrets[0], max_packet_bytes=self.config.max_packet_bytes)

    # ---- metadata ------------------------------------------------------------------------------------------

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

    def _swap_request(self) -> wire.SwapRequest:
        """This node's half of an anti-entropy swap: its version and value, and where to answer."""
        return wire.SwapRequest(cluster=self.cluster, origin=self._version.origin, version=self._version.seq,
                                sender=self.identity, data=self._data)

    def _on_swap_request(self, msg: wire.SwapRequest, now: float = 0.0) -> None:
        """Adopt the requester's value when it is newer; answer with ours when ours is."""
        theirs = Version(msg.version, msg.origin)
        if theirs == self._version:
            return self.note_drop("duplicate", "swap request for the version held")
        if theirs > self._version:
            self._src = "%s:%d" % msg.sender.endpoint  # where it listens (a TCP peer's source port is not that)
            return self._adopt(theirs, msg.data, "swap")
        self.stats["swap_answered"] += 1
        self._emit(wire.SwapResponse(cluster=self.cluster, origin=self._version.origin, version=self._version.seq,
                                     data=self._data), (msg.sender.endpoint,))

    def _on_swap_response(self, msg: wire.SwapResponse, now: float = 0.0) -> None:
        if self._newer(Version(msg.version, msg.origin), "swap response"):
            self._adopt(Version(msg.version, msg.origin), msg.data, "swap")

    def _emit(self, msg: wire.Message, targets: tuple[tuple[str, int], ...], size: int | None = None) -> None:
        """Queue MSG (fitted to max_packet_bytes) for TARGETS, counted per type. SIZE: its `wire.datagram_size`,
        when the caller has it already (a SWIM STATE part: summing its entries again is most of its cost)."""
        msg = wire.fit(msg, self.config.max_packet_bytes)
        n = len(targets)
        stats = self.stats
        stats["packets_out"] += n
        stats["bytes_out"] += (wire.datagram_size(msg) if size is None else size) * n  # UDP payload bytes
        key = _SENT_KEYS.get(msg.type)
        if key is None:  # an enum's name, lowered and formatted, per message was a tenth of a small one's cost
            key = _SENT_KEYS[msg.type] = f"sent_{msg.type.name.lower()}"
        stats[key] += n
        self._sends.append(Send(message=msg, targets=targets, encoder=self.encode))

    def _take_origin(self, msg, what: str) -> bool:
        """True, with its sequence remembered, if MSG (a heartbeat or a leave) is newer than anything accepted from
        its origin; otherwise it is counted and dropped (our own, an identity that is not its origin, stale)."""
        origin = msg.origin
        if origin == self.node_id:
            self.note_drop("duplicate", f"own {what}")  # our own, back from a peer, or an earlier incarnation's
            return False
        if msg.identity.node_id != origin:
            self.note_drop("malformed", f"identity {msg.identity.addr}:{msg.identity.port} is not origin")
            return False
        last = self._accepted_seq.get(origin)
        if last is not None and msg.seq <= last:
            self.note_drop("duplicate" if msg.seq == last else "stale", f"{what} {origin:#010x}/{msg.seq}")
            return False
        self._remember_seq(origin, msg.seq)
        return True

    def _remember_seq(self, origin: int, seq: int) -> None:
        """Keep SEQ as the highest heartbeat sequence accepted from ORIGIN (kept after its removal, so its stale
        copies cannot bring it back), forgetting the oldest origin that is not listed once the memory is full."""
        if origin not in self._accepted_seq and len(self._accepted_seq) >= MAX_REMEMBERED_ORIGINS:
            for old in self._accepted_seq:  # forget a remembered origin that is not live (oldest first)
                if old not in self._entries:
                    del self._accepted_seq[old]
                    break
        self._accepted_seq[origin] = seq
