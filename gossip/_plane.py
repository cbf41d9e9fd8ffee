"""The node's side of the kernel heartbeat plane (bpf/tc_hbplane.c, `--kernel-heartbeats`): keeps the plane's view
of this node in step with the core, and hands what the kernel accepted back to the core.

The kernel takes a fresh heartbeat of a member the node registered, records its sequence and time in the member
map, forwards it as the core would and drops the original: the node's socket never wakes. The core stays the
authority: the plane only holds what the core gave it, and what the kernel did reaches the core through ONE call,
`GossipCore.kernel_refreshed` (the effect of accepting that heartbeat, minus the forwarding).

When `PlaneSync` reads and writes (all of it plain bpf(2) calls on the plane's maps, `bpf.hbplane.PlaneWriter`):

- `start`: deletes what an earlier process left on the interface and configures the node (id, cluster, address,
  port, its interface's MAC, fanout, max_packet_bytes, its key ring: the first key signs).
- `sync(now)`, before each timer step (expiry, the cycle, the stats record), `get()` and ``/stats``: reads every
  member's (seq, last_seen) and applies the ones above what it knew. last_seen is CLOCK_MONOTONIC: it is moved to
  the node's clock with the offset between the two taken at the read.
- `before_datagram(data, now)`, before the core handles a datagram that is a HEARTBEAT of a registered member: looks
  up that member only. A heartbeat can reach the core after the kernel took a newer one of that member (the plane
  drops the stale and duplicate ones it sees, but one can pass before the kernel's take, or while its member was
  being rewritten), so the core must hold the kernel's sequence before it judges it, as it would have without the
  plane.
- `accept(accepted)`, the driver's accepted sink (wrapping the fast path's): a heartbeat or leave the core accepted
  itself raises the member's sequence in the plane, so the kernel takes its copies as duplicates too; a sequence
  taken from the kernel goes on to the XDP fast path like any other.
- `reconcile()`, after each timer step and after a drain that moved the core's ``roster`` (a member listed or
  unlisted, or one under another Identity); a pass is skipped while the roster has not moved, every member is
  registered with its MAC and the MACs are not due for their recheck (every MAC_RECHECK_S), so a steady node does
  nothing here. A pass registers each member the core lists (its Identity as the wire encodes it, address, port,
  MAC from the namespace's neighbour table -- `bpf._neigh`, no pyroute2 --, accepted seq), rewrites one whose
  Identity or MAC changed, removes the ones the core dropped. A member whose MAC is not known yet is registered
  without one: a heartbeat the kernel would send to it passes to the node.

It must never decide anything the core decides, nor write a sequence the core has not accepted or the kernel has
not recorded. It never compiles or attaches anything (`gossip._accel` does).
"""

from __future__ import annotations

import fcntl
import socket
import struct
import time
from typing import Callable

from . import _wire as wire
from ._events import Accepted, Event

SIOCGIFHWADDR = 0x8927
FANOUT_MAX = 8  # bpf/hbplane.py's FANOUT_MAX (imported there only when the plane is used)
KEYS_MAX = 4
MAX_PACKET_BYTES = 1400  # 28 + the largest UDP payload the program MACs: bigger datagrams pass to the node
_HEARTBEAT = int(wire.MsgType.HEARTBEAT)


def refusal(config) -> str | None:
    """Why CONFIG's node cannot use the plane, or None. The one authority: a node says it and runs without the
    plane; a scenario is refused with it (`testbed.scenario.parse.kernel_heartbeats_refusal`)."""
    if config.membership != "heartbeat":
        return f"it takes heartbeats: membership must be heartbeat, not {config.membership}"
    if config.protocol != "udp":
        return f"it works with protocol udp only, not {config.protocol}"
    if config.fanout > FANOUT_MAX:
        return f"it forwards to at most {FANOUT_MAX} targets, fanout is {config.fanout}"
    if len(config.secrets) > KEYS_MAX:
        return f"it holds at most {KEYS_MAX} keys, the node has {len(config.secrets)} secrets"
    return None


def interface_mac(ifindex: int) -> bytes:
    """The link-layer address of this namespace's interface IFINDEX (the copies' source)."""
    name = socket.if_indextoname(ifindex)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        raw = fcntl.ioctl(s.fileno(), SIOCGIFHWADDR, struct.pack("256s", name.encode()[:15]))
    return raw[18:24]


class PlaneSync:
    """Keeps one node's plane (a `bpf.hbplane.PlaneWriter` on its interface) and its core in step (see the module
    docstring). RECORD writes events with the time they happened (the kernel's, converted); INNER is the fast
    path's accepted sink, or None; TRACE, if given, gets each kernel refresh as a core input."""

    def __init__(self, writer, core, *, clock: Callable[[], float], record: Callable[[list[Event], float], None],
                 inner=None, trace: Callable[..., None] | None = None, neighbours=None) -> None:
        if core.config.membership != "heartbeat":
            raise ValueError("the heartbeat plane serves the heartbeat protocol only")
        self.writer, self.core = writer, core
        self._clock, self._record, self._inner, self._trace = clock, record, inner, trace
        self._registered: dict[int, tuple] = {}  # node id -> (member fields, identity bytes, mac)
        self._known: dict[int, int] = {}  # node id -> the highest seq known to be in the plane's map
        self._neigh = neighbours
        self._value = None
        self.dirty = True  # members may have changed: reconcile
        self.refreshed = 0

    def start(self) -> None:
        from bpf.hbplane import HbMember

        self._value = HbMember()
        if self._neigh is None:  # the namespace's neighbour table, read without pyroute2 (see bpf._neigh)
            from bpf._neigh import NeighbourTable

            self._neigh = NeighbourTable(self.writer.ifindex, NEIGH_TTL_S, NEIGH_RETRY_S)
        self.writer.reset()
        self.configure()
        self.reconcile()

    def configure(self) -> None:
        """Write the node's configuration, its key ring included, to the plane (again after `set_secrets`: the
        writer changes only what differs, the keys before their count when the ring grows, after when it
        shrinks)."""
        core, cfg = self.core, self.core.config
        self.writer.configure(core.node_id, core.cluster, cfg.listen_addr, cfg.listen_port,
                              interface_mac(self.writer.ifindex), cfg.fanout,
                              min(cfg.max_packet_bytes, MAX_PACKET_BYTES), cfg.secrets)

    def close(self) -> None:
        """Take the node out of the plane (everything passes to the socket again) and close the maps."""
        try:
            self.writer.reset()
        finally:
            self.writer.close()
            if self._neigh is not None and hasattr(self._neigh, "close"):
                self._neigh.close()

    # ---- kernel -> core ----

    def sync(self) -> int:
        """Apply every sequence the kernel took since the last read; returns how many members were refreshed."""
        members = self.writer.read_members()
        if not members:
            return 0
        now = self._clock()
        offset = now - time.monotonic_ns() * 1e-9
        n = 0
        known = self._known
        for nid, (seq, last_seen_ns) in members.items():
            if seq > known.get(nid, -1):
                known[nid] = seq
                n += self._apply(nid, seq, last_seen_ns, offset, now)
        return n

    def before_datagram(self, data: bytes) -> None:
        """DATA is about to reach the core: if it is a heartbeat of a registered member, take that member's
        sequence from the kernel first."""
        if len(data) < wire.HEADER_BYTES or data[wire.OFF_TYPE] != _HEARTBEAT:
            return
        nid = int.from_bytes(data[wire.OFF_ORIGIN:wire.OFF_ORIGIN + 4], "big")
        if nid not in self._registered:
            return
        value = self.writer.member(nid, self._value)
        if value is None or value.seq <= self._known.get(nid, -1):
            return
        seq, last_seen_ns = value.seq, value.last_seen_ns
        now = self._clock()
        self._known[nid] = seq
        self._apply(nid, seq, last_seen_ns, now - time.monotonic_ns() * 1e-9, now)

    def _apply(self, nid: int, seq: int, last_seen_ns: int, offset: float, now: float) -> int:
        # last_seen 0: read between the program's compare-and-swap and its time write (or a seq we wrote)
        t = min(last_seen_ns * 1e-9 + offset, now) if last_seen_ns else now
        if self._trace is not None:
            self._trace("kernel", t, origin=nid, seq=seq)
        core = self.core
        if not core.kernel_refreshed(nid, seq, t):
            return 0
        self.refreshed += 1
        events = core.take_events()  # the drains before left none: these are the refresh's own
        if events:
            self._record(events, t)
        return 1

    # ---- core -> kernel ----

    def accept(self, accepted: list[Accepted]) -> None:
        known, registered = self._known, self._registered
        for a in accepted:
            if a.type == _HEARTBEAT and a.origin in registered and a.seq > known.get(a.origin, -1):
                self.writer.raise_seq(a.origin, a.seq)
                known[a.origin] = a.seq
        if self._inner is not None:
            self._inner.accept(accepted)

    def reconcile(self) -> None:
        """Register the members the core lists, rewrite changed ones, remove the ones it dropped. Nothing to do
        -- and nothing done -- while the core's roster has not moved since the last pass that registered all of
        them with their MACs, and the MACs are not due for their recheck."""
        core = self.core
        mono = time.monotonic()
        if not self.changed and self._complete and mono <= self._mac_checked:
            return
        self.dirty = False
        self._roster = core.roster
        writer, registered, known = self.writer, self._registered, self._known
        listed = {m.node_id: m for m in core.members()[1:]}
        for nid in [n for n in registered if n not in listed]:
            writer.remove_member(nid)
            del registered[nid]
            known.pop(nid, None)
        complete = True  # every listed member registered, with its MAC
        for nid, m in listed.items():
            fields = (m.name, m.addr, m.port, m.private)
            old = registered.get(nid)
            mac = self._mac(m.addr, mono) if old is None or old[2] is None or mono > self._mac_checked else old[2]
            if mac is None:
                complete = False
            if old is not None and old[0] == fields and old[2] == mac:
                continue
            ident = old[1] if old is not None and old[0] == fields else wire._identity_bytes(
                wire.Identity(name=m.name, addr=m.addr, port=m.port, private=m.private))
            try:
                writer.set_member(ident, nid, m.addr, m.port, mac, m.seq, keep_higher_seq=True)
            except OSError:  # the map is full (a cluster bigger than the plane was sized for): its heartbeats pass
                complete = False
                continue
            registered[nid] = (fields, ident, mac)
            known[nid] = max(known.get(nid, -1), m.seq)
        if mono > self._mac_checked:
            self._mac_checked = mono + MAC_RECHECK_S
        self._complete = complete  # if not, the next timer step's pass asks again

    @property
    def changed(self) -> bool:
        """Whether the core's members may differ from what the plane holds (its roster moved since the last
        pass): a drain that made it so reconciles at once, as a timer step does."""
        return self.dirty or self.core.roster != self._roster

    _mac_checked = 0.0
    _roster = -1
    _complete = False

    def _mac(self, ip: str, mono: float) -> bytes | None:
        try:
            if self._neigh.expired(mono):
                self._neigh.refresh(mono)
            return self._neigh.mac(ip, mono)
        except Exception:  # the table could not be read: no MAC, the kernel passes what would go to it
            return None

    def stats(self) -> dict | None:
        try:
            out = self.writer.stats()
        except (OSError, ValueError):
            return None
        out["refreshed"] = self.refreshed
        out["members"] = len(self._registered)
        out["members_without_mac"] = sum(1 for r in self._registered.values() if r[2] is None)
        return out


MAC_RECHECK_S = 10.0  # how often registered members' MACs are compared with the neighbour table
NEIGH_TTL_S, NEIGH_RETRY_S = 30.0, 1.0  # the whole table reread after; a missing MAC asked again after
