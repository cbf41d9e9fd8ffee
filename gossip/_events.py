"""Events the protocol core records, and the outputs it asks its driver to perform.

All are frozen, keyword-only dataclasses. Drivers turn events into JSON lines (`to_json`) for the testbed, which
builds its infection and convergence curves from them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    kind = "event"

    def to_json(self) -> dict:
        d = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}  # as JSON reads back
        d["kind"] = self.kind
        return d


@dataclass(frozen=True, slots=True, kw_only=True)
class MemberAdded(Event):
    kind = "member_added"
    node_id: int
    name: str
    addr: str
    port: int


@dataclass(frozen=True, slots=True, kw_only=True)
class MemberRefreshed(Event):
    kind = "member_refreshed"
    node_id: int
    seq: int


@dataclass(frozen=True, slots=True, kw_only=True)
class MemberRemoved(Event):
    kind = "member_removed"
    node_id: int
    name: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class MemberLeft(Event):
    """The member announced its leave (a LEAVE of sequence SEQ) and was dropped at once: a departure, not a
    failure, so it is a kind of its own and never a ``member_removed`` (which checks read as deaths)."""

    kind = "member_left"
    node_id: int
    name: str
    seq: int


@dataclass(frozen=True, slots=True, kw_only=True)
class MemberSuspected(Event):
    """(SWIM) The member, at INCARNATION, is suspected of having failed, first by BY (a node id: this node when its
    own probe failed). Still a member: a suspicion not refuted in time becomes a ``member_removed``."""

    kind = "member_suspected"
    node_id: int
    name: str
    incarnation: int
    by: int


@dataclass(frozen=True, slots=True, kw_only=True)
class MemberAlive(Event):
    """(SWIM) A suspected member refuted the suspicion: it is alive at the higher INCARNATION."""

    kind = "member_alive"
    node_id: int
    name: str
    incarnation: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Refuted(Event):
    """(SWIM) This node heard it was suspected (or declared dead) at INCARNATION and raised its own to NEW."""

    kind = "refuted"
    incarnation: int
    new: int


@dataclass(frozen=True, slots=True, kw_only=True)
class LeaveSent(Event):
    """This node left: it announced its leave (sequence SEQ) to TARGETS ("addr:port" each) and stopped."""

    kind = "leave_sent"
    seq: int
    targets: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class MetadataAdopted(Event):
    """This node now holds metadata VERSION (published by ORIGIN); VIA is publish, rumor or swap, and SRC the
    "addr:port" it came from (empty for a publish, or when the driver does not know)."""

    kind = "metadata_adopted"
    version: int
    origin: int
    via: str
    size: int
    src: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class MetadataSent(Event):
    """This node sent metadata VERSION as a rumor to TARGETS ("addr:port" each): one hop of its spread.

    With `MetadataAdopted.src` this is the whole infection tree, copies that lost the race included, which is what
    the testbed measures one-hop latency from.
    """

    kind = "metadata_sent"
    version: int
    origin: int
    targets: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class PacketDropped(Event):
    kind = "packet_dropped"
    reason: str
    detail: str


@dataclass(frozen=True, slots=True, kw_only=True)
class HeartbeatsChanged(Event):
    """The node's own heartbeats were stopped or started."""

    kind = "heartbeats"
    running: bool


# What the core asks its driver to do.

class Send:
    """Send one message, unchanged, to every endpoint in TARGETS (one rumor hop: a broadcast when len > 1).

    The datagram (`payload`) is encoded on first use, so a driver that passes `message` objects directly (the
    simulator) never pays for encoding and signing.
    """

    __slots__ = ("message", "targets", "_encoder", "_payload")

    def __init__(self, *, message, targets: tuple[tuple[str, int], ...], encoder) -> None:
        self.message, self.targets, self._encoder, self._payload = message, targets, encoder, None

    @property
    def payload(self) -> bytes:
        if self._payload is None:
            self._payload = self._encoder(self.message)
        return self._payload

    def __repr__(self) -> str:
        return f"Send({type(self.message).__name__}, targets={self.targets})"


@dataclass(frozen=True, slots=True, kw_only=True)
class Accepted:
    """The node accepted (verified and applied) a message: fast-path state may now drop its duplicates.

    For HEARTBEAT, SEQ is the origin's heartbeat sequence (an accepted LEAVE is listed as a HEARTBEAT of its
    sequence: it moves the origin's sequence, so a fast path drops the older heartbeats the core now drops); for
    METADATA, SEQ is the metadata version the node now holds; for any other type, the core drops that type from
    ORIGIN at or below SEQ from now on (SWIM's PING, PING_REQ, STATE and GOSSIP: `CoreBase.note_accepted`).
    """

    type: int
    origin: int
    seq: int
