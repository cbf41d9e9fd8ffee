"""The binary wire format (version 1): encode and decode gossip messages.

The byte layout is specified in ``docs/wire-format.md``; this module is its only implementation, and the BPF
programs in ``bpf/`` read the fixed header it writes. Decoding never raises anything but `ProtocolError`, whose
``reason`` is the drop counter the packet is counted under. This module does no I/O.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import ipaddress
import math
import struct
from dataclasses import dataclass, field
from functools import lru_cache

from .errors import ProtocolError, UsageError

MAGIC = 0x4750  # "GP"
FORMAT_VERSION = 1
HEADER = struct.Struct("!HBBIIHHQ")  # magic, version, type, cluster, origin, flags, body_len, seq
HEADER_BYTES = HEADER.size  # 24
MAC_BYTES = 16
IPV4_UDP_OVERHEAD = 28  # 20-byte IPv4 header + 8-byte UDP header: counted against max_packet_bytes
MIN_BLOOM_BYTES = 64
MAX_BLOOM_HASHES = 8
_U32 = 0xFFFFFFFF
_GOLDEN = 0x9E3779B1

_IDENT_FIXED = struct.Struct("!4sHB")  # addr, port, name_len
_U16 = struct.Struct("!H")
_U32S = struct.Struct("!I")


class MsgType(enum.IntEnum):
    HEARTBEAT = 1
    METADATA = 2
    SWAP_REQ = 3
    SWAP_RESP = 4
    LEAVE = 5
    # SWIM (gossip.protocols.swim): probes, their answers, and the push-pull state exchange
    PING = 6
    ACK = 7
    PING_REQ = 8
    NACK = 9
    STATE = 10
    GOSSIP = 11


# Offsets of the header fields, for code that reads them without decoding (BPF mirrors these in C).
OFF_MAGIC, OFF_VERSION, OFF_TYPE, OFF_CLUSTER, OFF_ORIGIN, OFF_FLAGS, OFF_BODY_LEN, OFF_SEQ = 0, 2, 3, 4, 8, 12, 14, 16


@lru_cache(maxsize=4096)
def cluster_id(cluster_name: str) -> int:
    """The 32-bit cluster id carried in every header, derived from the cluster's name."""
    return int.from_bytes(hashlib.blake2b(cluster_name.encode(), digest_size=32).digest()[:4], "big")


@lru_cache(maxsize=65536)
def node_id(addr: str, port: int) -> int:
    """The 32-bit id of the node listening on ADDR:PORT; stable across restarts on the same address."""
    return int.from_bytes(hashlib.blake2b(f"{addr}:{port}".encode(), digest_size=32).digest()[:4], "big")


MAX_NAME_BYTES = 255  # the identity's name length is one byte on the wire
MAX_PRIVATE_BYTES = 512  # the wire allows 65535; 512 keeps a heartbeat well inside one packet


def _utf8_len(text: str) -> int | None:
    """len(TEXT) in UTF-8, or None if it cannot be encoded (a lone surrogate, e.g. from JSON "\\ud800")."""
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError:
        return None


def _is_ipv4(text: str) -> bool:
    try:
        return str(ipaddress.IPv4Address(text)) == text  # canonical only: the node id hashes this string
    except ValueError:
        return False


def _short(value) -> str:
    """VALUE for an error message, cut to a readable length."""
    text = repr(value) if not isinstance(value, int) or isinstance(value, bool) else str(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _len(value) -> str:
    try:
        return str(len(value))
    except TypeError:
        return "-"



@dataclass(frozen=True, slots=True, kw_only=True)
class Identity:
    """Who a node is: its name, where it listens, and a small free-form private field."""

    name: str
    addr: str
    port: int
    private: bytes = b""

    def __post_init__(self) -> None:
        # Every value that names a node passes here (CLI, HTTP, Python API, the decoder), so this is where a
        # value of the wrong type is stopped: an int address would reach sendto() and close the node's socket.
        name_bytes = _utf8_len(self.name) if isinstance(self.name, str) else None
        if name_bytes is None or name_bytes > MAX_NAME_BYTES:
            raise UsageError(f"name: must be a string of at most {MAX_NAME_BYTES} bytes of valid UTF-8, "
                             f"got {_short(self.name)}")
        if not isinstance(self.addr, str) or not _is_ipv4(self.addr):
            raise UsageError(f"addr: must be a string naming an IPv4 address, got {_short(self.addr)}")
        if isinstance(self.port, bool) or not isinstance(self.port, int) or not 0 < self.port < 65536:
            raise UsageError(f"port: must be an integer in 1..65535, got {_short(self.port)}")
        if not isinstance(self.private, bytes) or len(self.private) > MAX_PRIVATE_BYTES:
            raise UsageError(f"private: must be bytes, at most {MAX_PRIVATE_BYTES}, got "
                             f"{type(self.private).__name__} of length {_len(self.private)}")

    @property
    def node_id(self) -> int:
        return node_id(self.addr, self.port)

    @property
    def endpoint(self) -> tuple[str, int]:
        return (self.addr, self.port)

    def encoded_size(self) -> int:
        return _IDENT_FIXED.size + len(self.name.encode()) + 2 + len(self.private)  # must match _identity_bytes


def _bloom_positions(x: int, nbits: int, hashes: int) -> list[int]:
    h2 = ((x * _GOLDEN) & _U32) | 1
    return [(x + j * h2) % nbits for j in range(hashes)]


@dataclass(frozen=True, slots=True, kw_only=True)
class Infected:
    """The set of nodes a rumor has reached or been sent to: an exact set, or a Bloom filter once it is too big.

    A Bloom filter may answer "infected" for a node that is not (so that node misses this copy of the rumor); it
    never answers "not infected" for one that is.
    """

    ids: frozenset[int] = frozenset()
    bloom: bytes | None = None
    hashes: int = 0

    def __post_init__(self) -> None:
        if self.bloom is not None and (len(self.bloom) == 0 or not 1 <= self.hashes <= MAX_BLOOM_HASHES):
            raise UsageError("infected: a Bloom filter needs bytes and 1..8 hashes")

    def __contains__(self, x: int) -> bool:
        if self.bloom is None:
            return x in self.ids
        bits = self.bloom
        return all(bits[p >> 3] >> (p & 7) & 1 for p in _bloom_positions(x, len(bits) * 8, self.hashes))

    def with_added(self, new_ids) -> "Infected":
        if self.bloom is None:
            return Infected(ids=self.ids | frozenset(new_ids))
        bits = bytearray(self.bloom)
        nbits = len(bits) * 8
        for x in new_ids:
            for p in _bloom_positions(x, nbits, self.hashes):
                bits[p >> 3] |= 1 << (p & 7)
        return Infected(bloom=bytes(bits), hashes=self.hashes)

    def to_bloom(self, nbytes: int) -> "Infected":
        """This set as a Bloom filter of NBYTES bytes (hashes chosen for the current size)."""
        if self.bloom is not None:
            return self
        n = max(len(self.ids), 1)
        hashes = max(1, min(MAX_BLOOM_HASHES, round(nbytes * 8 / n * math.log(2))))
        return Infected(bloom=bytes(nbytes), hashes=hashes).with_added(self.ids)

    def exact_size(self) -> int:
        return 1 + 2 + 4 * len(self.ids) if self.bloom is None else 1 + 1 + 2 + len(self.bloom)


@dataclass(frozen=True, slots=True, kw_only=True)
class Heartbeat:
    cluster: int
    origin: int
    seq: int
    identity: Identity
    infected: Infected = field(default_factory=Infected)
    type = MsgType.HEARTBEAT


@dataclass(frozen=True, slots=True, kw_only=True)
class MetadataRumor:
    cluster: int
    origin: int
    version: int
    data: bytes
    infected: Infected = field(default_factory=Infected)
    type = MsgType.METADATA


@dataclass(frozen=True, slots=True, kw_only=True)
class SwapRequest:
    cluster: int
    origin: int
    version: int
    sender: Identity
    data: bytes
    type = MsgType.SWAP_REQ


@dataclass(frozen=True, slots=True, kw_only=True)
class SwapResponse:
    cluster: int
    origin: int
    version: int
    data: bytes
    type = MsgType.SWAP_RESP


@dataclass(frozen=True, slots=True, kw_only=True)
class Leave:
    """ORIGIN announces that it leaves the cluster; SEQ is in its heartbeat sequence space, above every heartbeat
    it sent (the sequence its next heartbeat would have had), so the leave outranks them and a newer incarnation's
    heartbeats outrank the leave. Spread as a rumor, like a heartbeat."""

    cluster: int
    origin: int
    seq: int
    identity: Identity
    infected: Infected = field(default_factory=Infected)
    type = MsgType.LEAVE


# ---- SWIM's messages (types 6..10; see docs/wire-format.md) -----------------------------------------------------

ALIVE, SUSPECT, DEAD = 1, 2, 3  # the kinds of a membership update, and of a STATE entry


@dataclass(frozen=True, slots=True, kw_only=True)
class Update:
    """A membership update piggybacked on SWIM messages: KIND (ALIVE, SUSPECT, DEAD) of NODE at INCARNATION.
    ALIVE carries the member's IDENTITY (how to reach it); SUSPECT and DEAD carry SENDER, the node that suspects or
    declares it (a DEAD whose sender is the node itself is a graceful leave)."""

    kind: int
    incarnation: int
    node: int
    identity: Identity | None = None
    sender: int = 0

    def encoded_size(self) -> int:
        return 1 + 8 + (self.identity.encoded_size() if self.kind == ALIVE else 8)


@dataclass(frozen=True, slots=True, kw_only=True)
class Ping:
    """ORIGIN (listening at SENDER) probes TARGET with probe number SEQ; the answer is an ACK of the same SEQ."""

    cluster: int
    origin: int
    seq: int
    sender: Identity
    target: int
    updates: tuple[Update, ...] = ()
    type = MsgType.PING


@dataclass(frozen=True, slots=True, kw_only=True)
class Ack:
    """The answer to probe SEQ of ORIGIN, the probed member (also when a relay passes it on)."""

    cluster: int
    origin: int
    seq: int
    updates: tuple[Update, ...] = ()
    type = MsgType.ACK


@dataclass(frozen=True, slots=True, kw_only=True)
class PingReq:
    """ORIGIN (at SENDER) asks the receiver to probe TARGET for it and pass on the ACK of its probe SEQ."""

    cluster: int
    origin: int
    seq: int
    sender: Identity
    target: Identity
    updates: tuple[Update, ...] = ()
    type = MsgType.PING_REQ


@dataclass(frozen=True, slots=True, kw_only=True)
class Nack:
    """ORIGIN, asked to probe TARGET for probe SEQ, got no ACK in time (Lifeguard: tells the asker it is alive)."""

    cluster: int
    origin: int
    seq: int
    target: int
    type = MsgType.NACK


@dataclass(frozen=True, slots=True, kw_only=True)
class StateEntry:
    """One member in a push-pull STATE: its state (ALIVE, SUSPECT, DEAD), incarnation and identity."""

    state: int
    incarnation: int
    identity: Identity

    def encoded_size(self) -> int:
        return 1 + 8 + self.identity.encoded_size()


@dataclass(frozen=True, slots=True, kw_only=True)
class State:
    """Part PART of PARTS of ORIGIN's member list (ORIGIN at incarnation SEQ, listening at SENDER); REPLY asks the
    receiver to answer with its own."""

    cluster: int
    origin: int
    seq: int
    sender: Identity
    reply: bool
    part: int
    parts: int
    entries: tuple[StateEntry, ...] = ()
    type = MsgType.STATE


@dataclass(frozen=True, slots=True, kw_only=True)
class Gossip:
    """Updates ORIGIN (at incarnation SEQ) sends apart from its probes, every gossip interval while it has some."""

    cluster: int
    origin: int
    seq: int
    updates: tuple[Update, ...] = ()
    type = MsgType.GOSSIP


Message = (Heartbeat | MetadataRumor | SwapRequest | SwapResponse | Leave | Ping | Ack | PingReq | Nack | State
           | Gossip)
SWIM_MESSAGES = (Ping, Ack, PingReq, Nack, State, Gossip)
SWIM_FIXED_BYTES = IPV4_UDP_OVERHEAD + HEADER_BYTES + MAC_BYTES  # what every datagram spends outside its body
_ABOUT_ORIGIN = (Heartbeat, Leave)  # the two rumors whose body is the origin's identity and whose seq is its sequence


def mac(key: bytes, signed: bytes) -> bytes:
    return hashlib.blake2b(signed, key=key, digest_size=MAC_BYTES).digest()


def _identity_bytes(ident: Identity) -> bytes:
    name = ident.name.encode()
    return (_IDENT_FIXED.pack(ipaddress.IPv4Address(ident.addr).packed, ident.port, len(name)) + name
            + _U16.pack(len(ident.private)) + ident.private)


def _infected_bytes(inf: Infected) -> bytes:
    if inf.bloom is None:
        ids = sorted(inf.ids)
        return b"\x00" + _U16.pack(len(ids)) + b"".join(_U32S.pack(x) for x in ids)
    return b"\x01" + bytes([inf.hashes]) + _U16.pack(len(inf.bloom)) + inf.bloom


def _data_bytes(data: bytes) -> bytes:
    return _U16.pack(len(data)) + data


def _fit_infected(prefix_len: int, inf: Infected, max_packet_bytes: int) -> Infected:
    """Keep the exact set if the datagram fits, else a Bloom filter filling the space left."""
    room = max_packet_bytes - IPV4_UDP_OVERHEAD - HEADER_BYTES - MAC_BYTES - prefix_len
    if inf.exact_size() <= room:
        return inf
    nbytes = room - 4
    if nbytes < MIN_BLOOM_BYTES:
        raise UsageError(f"message does not fit in max_packet_bytes={max_packet_bytes}: "
                         f"{prefix_len} body bytes leave {room} for the infected set")
    return inf.to_bloom(nbytes)


def max_data_bytes(max_packet_bytes: int, identity: Identity | None = None) -> int:
    """The largest metadata value that fits in every message type under MAX_PACKET_BYTES."""
    room = max_packet_bytes - IPV4_UDP_OVERHEAD - HEADER_BYTES - MAC_BYTES - 2
    rumor_room = room - (1 + 1 + 2 + MIN_BLOOM_BYTES)
    swap_room = room - (identity.encoded_size() if identity else 255 + 2 + 7 + 512)
    return max(0, min(rumor_room, swap_room))


_U64 = struct.Struct("!Q")
_UPDATE_HEAD = struct.Struct("!BQ")  # kind, incarnation
_NODE_FROM = struct.Struct("!II")


def _updates_bytes(updates: tuple[Update, ...]) -> bytes:
    if len(updates) > 255:
        raise UsageError(f"at most 255 updates fit a message, got {len(updates)}")
    out = [bytes([len(updates)])]
    for u in updates:
        out.append(_UPDATE_HEAD.pack(u.kind, u.incarnation))
        if u.kind == ALIVE:
            if u.identity is None or u.identity.node_id != u.node:
                raise UsageError("an ALIVE update needs the identity of its node")
            out.append(_identity_bytes(u.identity))
        elif u.kind in (SUSPECT, DEAD):
            out.append(_NODE_FROM.pack(u.node, u.sender))
        else:
            raise UsageError(f"update kind must be ALIVE, SUSPECT or DEAD, got {u.kind!r}")
    return b"".join(out)


def _swim_body(msg) -> bytes:
    t = type(msg)
    if t is Ping:
        return _identity_bytes(msg.sender) + _U32S.pack(msg.target) + _updates_bytes(msg.updates)
    if t is Ack or t is Gossip:
        return _updates_bytes(msg.updates)
    if t is PingReq:
        return _identity_bytes(msg.sender) + _identity_bytes(msg.target) + _updates_bytes(msg.updates)
    if t is Nack:
        return _U32S.pack(msg.target)
    if not (0 <= msg.part < msg.parts <= 255) or len(msg.entries) > 65535:
        raise UsageError(f"STATE part {msg.part} of {msg.parts}: must be 0 <= part < parts <= 255")
    out = [_identity_bytes(msg.sender), bytes([1 if msg.reply else 0, msg.part, msg.parts]),
           _U16.pack(len(msg.entries))]
    for e in msg.entries:
        if e.state not in (ALIVE, SUSPECT, DEAD):
            raise UsageError(f"STATE entry state must be ALIVE, SUSPECT or DEAD, got {e.state!r}")
        out.append(_UPDATE_HEAD.pack(e.state, e.incarnation) + _identity_bytes(e.identity))
    return b"".join(out)


def swim_prefix_size(msg) -> int:
    """The body bytes of a SWIM message before its updates (a sender fills the rest of the datagram with them)."""
    t = type(msg)
    if t is Ping:
        return msg.sender.encoded_size() + 4 + 1
    if t is PingReq:
        return msg.sender.encoded_size() + msg.target.encoded_size() + 1
    if t is Ack or t is Gossip:
        return 1
    if t is Nack:
        return 4
    return msg.sender.encoded_size() + 3 + 2


def datagram_size(msg: Message) -> int:
    """The UDP payload bytes of MSG as `fit` returns it (header, body and MAC), from sizes alone: what a node
    counts as ``bytes_out`` without encoding (the simulator never encodes)."""
    t = type(msg)
    if t is State:
        body = swim_prefix_size(msg) + sum(e.encoded_size() for e in msg.entries)
    elif t is Nack:
        body = 4
    elif isinstance(msg, SWIM_MESSAGES):
        body = swim_prefix_size(msg) + sum(u.encoded_size() for u in msg.updates)
    elif isinstance(msg, _ABOUT_ORIGIN):
        body = msg.identity.encoded_size() + msg.infected.exact_size()
    elif t is MetadataRumor:
        body = 2 + len(msg.data) + msg.infected.exact_size()
    elif t is SwapRequest:
        body = msg.sender.encoded_size() + 2 + len(msg.data)
    elif t is SwapResponse:
        body = 2 + len(msg.data)
    else:
        raise UsageError(f"not a message: {msg!r}")
    return HEADER_BYTES + body + MAC_BYTES


def encode_body(msg: Message, max_packet_bytes: int) -> tuple[bytes, Message]:
    """The body bytes of MSG, and MSG as encoded (its infected set may have become a Bloom filter)."""
    if isinstance(msg, SWIM_MESSAGES):
        return _swim_body(msg), msg
    if isinstance(msg, _ABOUT_ORIGIN):
        prefix = _identity_bytes(msg.identity)
        inf = _fit_infected(len(prefix), msg.infected, max_packet_bytes)
        if inf is not msg.infected:
            msg = type(msg)(cluster=msg.cluster, origin=msg.origin, seq=msg.seq, identity=msg.identity, infected=inf)
        return prefix + _infected_bytes(inf), msg
    if isinstance(msg, MetadataRumor):
        prefix = _data_bytes(msg.data)
        inf = _fit_infected(len(prefix), msg.infected, max_packet_bytes)
        if inf is not msg.infected:
            msg = MetadataRumor(cluster=msg.cluster, origin=msg.origin, version=msg.version, data=msg.data,
                                infected=inf)
        return prefix + _infected_bytes(inf), msg
    if isinstance(msg, SwapRequest):
        return _identity_bytes(msg.sender) + _data_bytes(msg.data), msg
    if isinstance(msg, SwapResponse):
        return _data_bytes(msg.data), msg
    raise UsageError(f"not a message: {msg!r}")


def fit(msg: Message, max_packet_bytes: int) -> Message:
    """MSG as it will be encoded under MAX_PACKET_BYTES: its infected set may become a Bloom filter.

    Computed from sizes alone (no encoding): this runs for every message a node sends.
    """
    if isinstance(msg, _ABOUT_ORIGIN):
        prefix = msg.identity.encoded_size()
    elif isinstance(msg, MetadataRumor):
        prefix = 2 + len(msg.data)
    else:
        return msg
    inf = _fit_infected(prefix, msg.infected, max_packet_bytes)
    if inf is msg.infected:
        return msg
    if isinstance(msg, _ABOUT_ORIGIN):
        return type(msg)(cluster=msg.cluster, origin=msg.origin, seq=msg.seq, identity=msg.identity, infected=inf)
    return MetadataRumor(cluster=msg.cluster, origin=msg.origin, version=msg.version, data=msg.data, infected=inf)


def encode(msg: Message, *, key: bytes, max_packet_bytes: int = 1400, flags: int = 0) -> bytes:
    """The datagram for MSG, signed with KEY. Raises `UsageError` if it cannot fit in MAX_PACKET_BYTES."""
    body, msg = encode_body(msg, max_packet_bytes)
    seq = msg.seq if isinstance(msg, _ABOUT_ORIGIN + SWIM_MESSAGES) else msg.version
    if not 0 <= seq < 1 << 64:
        raise UsageError(f"seq/version out of range: {seq}")
    head = HEADER.pack(MAGIC, FORMAT_VERSION, msg.type, msg.cluster, msg.origin, flags, len(body), seq)
    signed = head + body
    out = signed + mac(key, signed)
    if len(out) + IPV4_UDP_OVERHEAD > max_packet_bytes:
        raise UsageError(f"message of {len(out)} bytes exceeds max_packet_bytes={max_packet_bytes}")
    return out


class _Reader:
    """A cursor over a body; every read checks bounds and raises ProtocolError('malformed') past the end."""

    __slots__ = ("buf", "pos")

    def __init__(self, buf: bytes) -> None:
        self.buf, self.pos = buf, 0

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.buf):
            raise ProtocolError("malformed", f"body truncated at byte {self.pos} (need {n})")
        out = self.buf[self.pos:end]
        self.pos = end
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return _U16.unpack(self.take(2))[0]

    def identity(self) -> Identity:
        addr, port, name_len = _IDENT_FIXED.unpack(self.take(_IDENT_FIXED.size))
        try:
            name = self.take(name_len).decode()
            private = self.take(self.u16())
            return Identity(name=name, addr=str(ipaddress.IPv4Address(addr)), port=port, private=private)
        except (UnicodeDecodeError, UsageError) as e:
            raise ProtocolError("malformed", f"bad identity: {e}") from None

    def data(self) -> bytes:
        return self.take(self.u16())

    def infected(self) -> Infected:
        kind = self.u8()
        if kind == 0:
            count = self.u16()
            raw = self.take(4 * count)
            return Infected(ids=frozenset(x for (x,) in struct.iter_unpack("!I", raw)))
        if kind == 1:
            hashes, nbytes = self.u8(), self.u16()
            if not 1 <= hashes <= MAX_BLOOM_HASHES or nbytes == 0:
                raise ProtocolError("malformed", f"bad Bloom filter ({hashes} hashes, {nbytes} bytes)")
            return Infected(bloom=self.take(nbytes), hashes=hashes)
        raise ProtocolError("malformed", f"unknown infected-set kind {kind}")

    def updates(self) -> tuple[Update, ...]:
        out = []
        for _ in range(self.u8()):
            kind, inc = _UPDATE_HEAD.unpack(self.take(_UPDATE_HEAD.size))
            if kind == ALIVE:
                ident = self.identity()
                out.append(Update(kind=kind, incarnation=inc, node=ident.node_id, identity=ident))
            elif kind in (SUSPECT, DEAD):
                node, sender = _NODE_FROM.unpack(self.take(_NODE_FROM.size))
                out.append(Update(kind=kind, incarnation=inc, node=node, sender=sender))
            else:
                raise ProtocolError("malformed", f"unknown update kind {kind}")
        return tuple(out)

    def state(self, c: int, o: int, s: int) -> "State":
        sender = self.identity()
        reply, part, parts = self.take(3)
        if reply > 1 or not part < parts:
            raise ProtocolError("malformed", f"STATE flags {reply}, part {part} of {parts}")
        entries = []
        for _ in range(self.u16()):
            st, inc = _UPDATE_HEAD.unpack(self.take(_UPDATE_HEAD.size))
            if st not in (ALIVE, SUSPECT, DEAD):
                raise ProtocolError("malformed", f"unknown STATE entry state {st}")
            entries.append(StateEntry(state=st, incarnation=inc, identity=self.identity()))
        return State(cluster=c, origin=o, seq=s, sender=sender, reply=bool(reply), part=part, parts=parts,
                     entries=tuple(entries))

    def u32(self) -> int:
        return _U32S.unpack(self.take(4))[0]

    def end(self) -> None:
        if self.pos != len(self.buf):
            raise ProtocolError("malformed", f"{len(self.buf) - self.pos} trailing body bytes")


def peek_header(datagram: bytes) -> tuple[int, int, int, int, int, int, int, int]:
    """The raw header fields (magic, version, type, cluster, origin, flags, body_len, seq), unverified."""
    if len(datagram) < HEADER_BYTES:
        raise ProtocolError("malformed", f"{len(datagram)} bytes is shorter than the header")
    return HEADER.unpack_from(datagram)


def decode(datagram: bytes, *, cluster: int, keys: tuple[bytes, ...]) -> Message:
    """Verify and decode one datagram; raises `ProtocolError` (with the drop reason) for anything invalid."""
    if len(datagram) < HEADER_BYTES + MAC_BYTES:
        raise ProtocolError("malformed", f"{len(datagram)} bytes is shorter than header + MAC")
    magic, version, mtype, clus, origin, _flags, body_len, seq = HEADER.unpack_from(datagram)
    if magic != MAGIC:
        raise ProtocolError("malformed", f"bad magic {magic:#06x}")
    if version != FORMAT_VERSION:
        raise ProtocolError("unknown_version", f"format version {version}")
    if clus != cluster:
        raise ProtocolError("foreign_cluster", f"cluster id {clus:#010x}")
    if mtype not in _DECODERS:
        raise ProtocolError("malformed", f"unknown message type {mtype}")
    if HEADER_BYTES + body_len + MAC_BYTES != len(datagram):
        raise ProtocolError("malformed", f"body_len {body_len} disagrees with datagram length {len(datagram)}")
    signed, tag = datagram[:-MAC_BYTES], datagram[-MAC_BYTES:]
    if not any(hmac.compare_digest(mac(k, signed), tag) for k in keys):
        raise ProtocolError("bad_mac", f"from origin {origin:#010x}")
    r = _Reader(signed[HEADER_BYTES:])
    msg = _DECODERS[mtype](r, clus, origin, seq)
    r.end()
    return msg


_DECODERS = {
    MsgType.HEARTBEAT: lambda r, c, o, s: Heartbeat(cluster=c, origin=o, seq=s, identity=r.identity(),
                                                    infected=r.infected()),
    MsgType.METADATA: lambda r, c, o, s: MetadataRumor(cluster=c, origin=o, version=s, data=r.data(),
                                                       infected=r.infected()),
    MsgType.SWAP_REQ: lambda r, c, o, s: SwapRequest(cluster=c, origin=o, version=s, sender=r.identity(),
                                                     data=r.data()),
    MsgType.SWAP_RESP: lambda r, c, o, s: SwapResponse(cluster=c, origin=o, version=s, data=r.data()),
    MsgType.LEAVE: lambda r, c, o, s: Leave(cluster=c, origin=o, seq=s, identity=r.identity(), infected=r.infected()),
    MsgType.PING: lambda r, c, o, s: Ping(cluster=c, origin=o, seq=s, sender=r.identity(), target=r.u32(),
                                          updates=r.updates()),
    MsgType.ACK: lambda r, c, o, s: Ack(cluster=c, origin=o, seq=s, updates=r.updates()),
    MsgType.PING_REQ: lambda r, c, o, s: PingReq(cluster=c, origin=o, seq=s, sender=r.identity(), target=r.identity(),
                                                 updates=r.updates()),
    MsgType.NACK: lambda r, c, o, s: Nack(cluster=c, origin=o, seq=s, target=r.u32()),
    MsgType.STATE: lambda r, c, o, s: r.state(c, o, s),
    MsgType.GOSSIP: lambda r, c, o, s: Gossip(cluster=c, origin=o, seq=s, updates=r.updates()),
}
