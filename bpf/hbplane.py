"""Loader and map access for the TC ingress heartbeat plane (tc_hbplane.c).

`HeartbeatPlane`, in the process that owns the testbed: compiles the three programs once (judge, MAC, send:
chained by tail calls through ``hb_progs``), pins the maps, attaches the judge at clsact ingress of each node's
interface (any namespace), and is the one writer of each node's configuration, key ring and member table:

- `configure(ifindex, ...)`: the node's id, cluster, address, port, MAC, fanout, max_packet_bytes and key ring
  (key 0 signs, any verifies);
- `set_member` / `remove_member`: the members the program may take heartbeats from and send to. Each member has a
  slot, dense 0..count-1 (a removal moves the last member into the hole), for the program's random choice;
- `read_members(ifindex)`: ``{node_id: (seq, last_seen_ns)}`` as the program (or userspace) left them; last_seen is
  CLOCK_MONOTONIC in ns (`time.monotonic_ns()`), 0 until the program accepts a heartbeat of that member;
- `stats(ifindex)`: what the program did, per reason; `events()`: an `EventReader` over the ring buffer of accepted
  heartbeats (origin, seq, time, who sent the copy), read through mmap without bcc.

`PlaneWriter` is one node's side of the same maps (configure, members, counters), opened from the pins without bcc
(`PlaneWriter.from_pin(pin_dir, ifindex)`) by a node whose interface a testbed attached, or taken from a
`HeartbeatPlane` of the same process (`writer(ifindex)`): compile once, attach to many interfaces, and each node
writes its own. `HeartbeatPlane`'s own configure / set_member / ... go through a writer per interface.

Userspace stays the authority: the program only takes what it would handle exactly as the node does and passes
everything else unchanged. The sequence the program accepted is in the members map, not in the node's core: a
node that runs beside the program must take it from there (or from the events) before judging what reaches it.
`set_member` writes the seq it is given, so pass the one `read_members` shows.

This module must never be imported by a node that only reads the maps without bcc: everything but `compile`
works on map fds with plain bpf(2) calls (bpf._sys).
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import mmap
import os
import struct
import threading

from . import _sys
from ._compile import PinnedProgram, compile_program
from .errors import BpfUsageError, MapError

PIN_ROOT = _sys.PIN_ROOT
C_FILE = "tc_hbplane.c"
PROGRAMS = {"tc_hbplane": "sched_cls", "tc_hbplane_mac": "sched_cls", "tc_hbplane_send": "sched_cls"}
TAIL_CALLS = ("tc_hbplane_mac", "tc_hbplane_send")  # hb_progs[0], hb_progs[1] (HB_PROG_MAC, HB_PROG_SEND)

# After everything else that may sit on a node's ingress (the broadcaster is on egress at 10, fault programs at
# 20): a fault filter there judges a heartbeat before the plane acts on it. _attach.py keeps the other PRIO_*s.
PRIO_HBPLANE = 30

KEYS_MAX = 4
IDENT_MAX = 64
IDENT_TOO_LONG = 0xFFFF
FANOUT_MAX = 8  # HB_FANOUT_MAX's default
PAYLOAD_MAX = 1356 + 16  # B2B_MSG_MAX + MAC: the largest UDP payload the program MACs
_U32 = 0xFFFFFFFF

STAT_NAMES = ("handled", "accepted_no_targets", "copies", "clone_errors", "rewrite_errors", "passed_other",
              "passed_malformed", "passed_foreign_cluster", "passed_not_heartbeat", "passed_bad_checksum",
              "passed_unknown_origin", "dropped_stale_or_dup", "passed_identity", "passed_body", "passed_bad_mac",
              "passed_too_big", "passed_few_targets", "passed_no_mac", "passed_race", "passed_disabled",
              "passed_internal")


# ---- ctypes mirrors of tc_hbplane.c's shared structs (sizes checked against the map and bcc in the tests) ----

class HbConfig(ctypes.Structure):
    _fields_ = [("self_id", ctypes.c_uint32), ("cluster_id", ctypes.c_uint32), ("addr", ctypes.c_uint8 * 4),
                ("port", ctypes.c_uint8 * 2), ("mac", ctypes.c_uint8 * 6), ("fanout", ctypes.c_uint16),
                ("max_packet_bytes", ctypes.c_uint16), ("nkeys", ctypes.c_uint16), ("enabled", ctypes.c_uint16),
                ("members", ctypes.c_uint32)]


class HbKeyId(ctypes.Structure):
    _fields_ = [("ifindex", ctypes.c_uint32), ("index", ctypes.c_uint32)]


class B2bKey(ctypes.Structure):
    """blake2b.h's struct b2b_key: bytes past len zero, prekeyed 0 (the program prepares it on first use)."""
    _fields_ = [("bytes", ctypes.c_uint8 * 64), ("len", ctypes.c_uint32), ("prekeyed", ctypes.c_uint32),
                ("h", ctypes.c_uint64 * 8)]


class HbMember(ctypes.Structure):
    _fields_ = [("seq", ctypes.c_uint64), ("last_seen_ns", ctypes.c_uint64), ("addr", ctypes.c_uint8 * 4),
                ("port", ctypes.c_uint8 * 2), ("mac", ctypes.c_uint8 * 6), ("slot", ctypes.c_uint32),
                ("ident_len", ctypes.c_uint16), ("has_mac", ctypes.c_uint8), ("pad0", ctypes.c_uint8),
                ("pad1", ctypes.c_uint32), ("ident", ctypes.c_uint8 * IDENT_MAX)]


class HbStats(ctypes.Structure):
    _fields_ = [("count", ctypes.c_uint64 * len(STAT_NAMES))]


class HbEvent(ctypes.Structure):
    _fields_ = [("seq", ctypes.c_uint64), ("time_ns", ctypes.c_uint64), ("ifindex", ctypes.c_uint32),
                ("origin", ctypes.c_uint32), ("src_addr", ctypes.c_uint8 * 4), ("src_port", ctypes.c_uint8 * 2),
                ("targets", ctypes.c_uint16)]


assert (ctypes.sizeof(HbConfig), ctypes.sizeof(B2bKey), ctypes.sizeof(HbMember), ctypes.sizeof(HbEvent)) == \
    (32, 136, 104, 32)

MAPS = {"hb_config": (ctypes.c_uint32, HbConfig), "hb_keys": (HbKeyId, B2bKey), "hb_members": (HbKeyId, HbMember),
        "hb_slots": (HbKeyId, ctypes.c_uint32), "hb_stats": (ctypes.c_uint32, HbStats)}
RINGBUF = "hb_events"


WRITER_MAPS = tuple(MAPS)  # what a node's `PlaneWriter` opens: everything but the ring buffer (one consumer)


def read_stats(stats_fd: int, ifindex: int | None = None) -> dict[str, int]:
    """The plane's counters for one interface, or summed over all (see `HeartbeatPlane.stats`)."""
    out = _sys.sum_percpu_counters(stats_fd, ifindex, HbStats, STAT_NAMES)
    out["passed"] = sum(v for k, v in out.items() if k.startswith("passed_"))
    return out


def map_sizes(nodes: int, members: int) -> dict[str, int]:
    """-D sizes for one program serving NODES interfaces whose nodes each have up to MEMBERS members."""
    if not (isinstance(nodes, int) and isinstance(members, int) and nodes >= 1 and members >= 1):
        raise BpfUsageError(f"map_sizes: nodes and members must be integers >= 1, got {nodes!r}, {members!r}")
    per_node = 64
    while per_node < members:
        per_node *= 2
    return {"HB_MAX_NODES": max(nodes, 16), "HB_MAX_MEMBERS": max(per_node, 1024),
            "HB_MAX_ENTRIES": nodes * members + nodes * members // 16 + 64}


def _packed_ip(addr: str) -> bytes:
    try:
        return ipaddress.IPv4Address(addr).packed
    except ValueError:
        raise BpfUsageError(f"not an IPv4 address: {addr!r}") from None


def _packed_mac(mac) -> bytes | None:
    if mac is None:
        return None
    if isinstance(mac, str):
        mac = bytes.fromhex(mac.replace(":", ""))
    if not isinstance(mac, (bytes, bytearray)) or len(mac) != 6:
        raise BpfUsageError(f"a MAC is 6 bytes or 'aa:bb:cc:dd:ee:ff', got {mac!r}")
    return bytes(mac)


class EventReader:
    """The ring buffer of accepted heartbeats, mapped into this process (no bcc): `read()` returns what is there.

    Layout (kernel/bpf/ringbuf.c): a page with the consumer position (ours to write), a page with the producer
    position, then the data pages, mapped twice in a row so a record never wraps. Each record has an 8-byte header
    (length with a busy and a discard bit, page offset) and is padded to 8 bytes.
    """

    _BUSY, _DISCARD = 1 << 31, 1 << 30

    def __init__(self, fd: int) -> None:
        self._fd = os.dup(fd)
        self.size = _sys.map_info(self._fd).max_entries
        page = mmap.PAGESIZE
        self._cons = mmap.mmap(self._fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        self._prod = mmap.mmap(self._fd, page + 2 * self.size, mmap.MAP_SHARED, mmap.PROT_READ, offset=page)
        self._page = page

    def read(self, limit: int = 1 << 20) -> list[HbEvent]:
        out = []
        cons = struct.unpack_from("=Q", self._cons, 0)[0]
        prod = struct.unpack_from("=Q", self._prod, 0)[0]
        mask = self.size - 1
        while cons < prod and len(out) < limit:
            at = self._page + (cons & mask)
            length = struct.unpack_from("=I", self._prod, at)[0]
            if length & self._BUSY:
                break
            n = length & ~(self._BUSY | self._DISCARD)
            if not length & self._DISCARD and n >= ctypes.sizeof(HbEvent):
                out.append(HbEvent.from_buffer_copy(self._prod[at + 8:at + 8 + ctypes.sizeof(HbEvent)]))
            cons += (n + 8 + 7) & ~7
            struct.pack_into("=Q", self._cons, 0, cons)
        return out

    def close(self) -> None:
        for m in (self._cons, self._prod):
            m.close()
        os.close(self._fd)

    def __enter__(self) -> "EventReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class HeartbeatPlane(PinnedProgram):
    """The compiled heartbeat plane. Use as a context manager: leaving it unpins the maps and releases the
    programs (attachments, made with `attach`, must end first)."""

    C_FILE, PROGRAM, SECTION, KIND, PROGRAMS = C_FILE, "tc_hbplane", "sched_cls", "hbplane", PROGRAMS
    MAPS = tuple(MAPS) + (RINGBUF,)

    def __init__(self, bpf, prog_fd: int, pin_dir: str) -> None:
        super().__init__(bpf, prog_fd, pin_dir)
        self._nodes: dict[int, PlaneWriter] = {}
        self._lock = threading.Lock()
        for name in MAPS:
            _sys.check_map(self.map_fds[name], name, MAPS[name])

    @classmethod
    def compile(cls, *, pin_dir: str | None = None, nodes: int | None = None, members: int | None = None,
                defines: dict[str, int] | None = None) -> "HeartbeatPlane":
        """Compile and load the three programs (~3 s), link the tail calls, pin the maps. NODES / MEMBERS size
        the maps (`map_sizes`); DEFINES adds or overrides -D tunables (e.g. HB_SCAN_MAX)."""
        sizes = {} if nodes is None else map_sizes(nodes, nodes if members is None else members)
        sizes.update(defines or {})
        return super().compile(pin_dir=pin_dir, defines=sizes or None)

    def _link(self, fds: dict[str, int]) -> None:
        progs = self._bpf[b"hb_progs"]
        for i, name in enumerate(TAIL_CALLS):
            progs[ctypes.c_int(i)] = ctypes.c_int(fds[name])
        self.prog_fds = fds

    # ---- attaching ----

    @contextlib.contextmanager
    def attach(self, ifindex: int, *, netns: str | None = None, link: bool = False):
        """The plane at clsact ingress of IFINDEX (inside NETNS) for the duration of the block. It acts only once
        `configure` has enabled that interface; leaving the block disables it and forgets its node. With LINK, by a
        tcx ingress link, which the kernel removes also when this process dies (`bpf._attach`)."""
        from . import _attach
        try:
            with _attach.tc_attached({"ingress": self.prog_fd}, ifindex, netns=netns, prio=PRIO_HBPLANE,
                                     name=self.PROGRAM, link=link):
                yield
        finally:
            self.unconfigure(ifindex)

    # ---- configuration: each interface's node through its own `PlaneWriter` on this process's map fds ----

    def writer(self, ifindex: int) -> "PlaneWriter":
        """A writer of the node on IFINDEX sharing this process's map fds (for a node run in this process). The
        writer owns that interface's configuration and members from then on: it and this object must not both
        write them."""
        return PlaneWriter.from_fds(ifindex, {name: self.map_fds[name] for name in WRITER_MAPS})

    def _writer(self, ifindex: int, *, create: bool = False) -> "PlaneWriter | None":
        with self._lock:
            w = self._nodes.get(ifindex)
            if w is None and create:
                w = self._nodes[ifindex] = PlaneWriter.from_fds(ifindex, {n: self.map_fds[n] for n in WRITER_MAPS})
            return w

    def _node(self, ifindex: int) -> "PlaneWriter":
        w = self._writer(ifindex)
        if w is None:
            raise BpfUsageError(f"ifindex {ifindex} is not configured")
        return w

    def configure(self, ifindex: int, self_id: int, cluster: int, addr: str, port: int, mac, fanout: int,
                  max_packet_bytes: int, keys) -> None:
        """Enable the plane for the node on IFINDEX (see `PlaneWriter.configure`)."""
        self._writer(ifindex, create=True).configure(self_id, cluster, addr, port, mac, fanout, max_packet_bytes,
                                                     keys)

    def unconfigure(self, ifindex: int) -> None:
        """Disable the plane on IFINDEX and delete its keys and members, whoever wrote them (its counters stay
        readable)."""
        with self._lock:
            w = self._nodes.pop(ifindex, None)
        if w is None:
            w = PlaneWriter.from_fds(ifindex, {n: self.map_fds[n] for n in WRITER_MAPS})
        try:
            w.reset()
        finally:
            w.close()

    def set_member(self, ifindex: int, identity_bytes: bytes, node_id: int, addr: str, port: int, mac,
                   seq: int) -> None:
        """Add or rewrite member NODE_ID of the node on IFINDEX (see `PlaneWriter.set_member`)."""
        self._node(ifindex).set_member(identity_bytes, node_id, addr, port, mac, seq)

    def remove_member(self, ifindex: int, node_id: int) -> bool:
        """Forget member NODE_ID of the node on IFINDEX; the last slot moves into its hole. False if unknown."""
        return self._node(ifindex).remove_member(node_id)

    # ---- reading ----

    def read_members(self, ifindex: int) -> dict[int, tuple[int, int]]:
        """{node_id: (seq, last_seen_ns)} of every member of the node on IFINDEX."""
        return self._node(ifindex).read_members()

    def member(self, ifindex: int, node_id: int) -> HbMember | None:
        value = HbMember()
        return value if _sys.map_lookup(self.map_fds["hb_members"], HbKeyId(ifindex, node_id), value) else None

    def slots(self, ifindex: int) -> list[int]:
        """The member ids in slot order, as the program sees them."""
        return self._node(ifindex).slots()

    def stats(self, ifindex: int | None = None) -> dict[str, int]:
        """Counters of one interface or summed over all: handled (accepted and forwarded), accepted_no_targets,
        copies, clone_errors, rewrite_errors, dropped_stale_or_dup (a registered member's heartbeat at or below the
        sequence accepted, dropped as XDP would), passed_<reason> for each reason a datagram went to userspace, and
        ``passed``, their sum."""
        return read_stats(self.map_fds["hb_stats"], ifindex)

    def _release(self) -> None:
        with self._lock:
            writers, self._nodes = list(self._nodes.values()), {}
        for w in writers:
            w.close()

    def events(self) -> EventReader:
        """A reader of the accepted-heartbeat ring buffer (one consumer at a time)."""
        return EventReader(self.map_fds[RINGBUF])


class PlaneWriter:
    """One node's side of the plane: its configuration, key ring and member table on one interface, and its
    counters. Plain bpf(2) calls on map fds: no bcc, no compile, no netlink.

    Open it from the pin directory the testbed hands the node (`PlaneWriter.from_pin(pin_dir, ifindex)`, IFINDEX
    the node's own interface inside its namespace), or get one from the `HeartbeatPlane` of this process
    (`HeartbeatPlane.writer`). One writer per interface: it keeps the members' slots (dense 0..count-1, the
    program's random choice) in this process, so nothing else may write that interface's members meanwhile. A
    node starting afresh calls `reset()` first: what an earlier process on this interface left is deleted.
    """

    def __init__(self, fds: dict[str, int], ifindex: int) -> None:
        """Takes ownership of FDS (name -> fd of each of `WRITER_MAPS`); use `from_pin` or `from_fds`."""
        self.ifindex = ifindex
        self._fds = fds
        self._slots: list[int] = []  # member ids in slot order
        self._pos: dict[int, int] = {}
        self.config = HbConfig()
        self._keys: list[bytes] = []
        self._configured = False
        self._lock = threading.Lock()

    @classmethod
    def from_pin(cls, pin_dir: str, ifindex: int) -> "PlaneWriter":
        """A writer on the maps pinned in PIN_DIR (by a `HeartbeatPlane` in another process)."""
        return cls(_sys.open_pinned_maps(pin_dir, WRITER_MAPS, MAPS), ifindex)

    @classmethod
    def from_fds(cls, ifindex: int, fds: dict[str, int]) -> "PlaneWriter":
        """A writer on map fds this process holds (duplicated: the caller keeps its own)."""
        return cls({name: os.dup(fds[name]) for name in WRITER_MAPS}, ifindex)

    # ---- configuration ----

    def configure(self, self_id: int, cluster: int, addr: str, port: int, mac, fanout: int,
                  max_packet_bytes: int, keys) -> None:
        """Enable the plane for this node. CLUSTER is the 32-bit cluster id; KEYS the node's secrets, 1..4, the
        first signing. The first call zeroes the interface's counters; reconfiguring keeps the members and any key
        whose bytes did not change."""
        keys = [bytes(k) for k in keys]
        if not 1 <= len(keys) <= KEYS_MAX or any(len(k) > 64 for k in keys):
            raise BpfUsageError(f"configure: 1..{KEYS_MAX} keys of at most 64 bytes, got {[len(k) for k in keys]}")
        if not (0 <= self_id <= _U32 and 0 <= cluster <= _U32 and 0 < port < 65536):
            raise BpfUsageError("configure: self_id/cluster must be u32 and port 1..65535")
        if not 1 <= fanout <= FANOUT_MAX:
            raise BpfUsageError(f"configure: fanout must be 1..{FANOUT_MAX}, got {fanout}")
        if not 64 <= max_packet_bytes <= 28 + PAYLOAD_MAX:
            raise BpfUsageError(f"configure: max_packet_bytes must be 64..{28 + PAYLOAD_MAX}, got {max_packet_bytes}")
        mac_b = _packed_mac(mac)
        if mac_b is None:
            raise BpfUsageError("configure: the node's MAC is required (the copies' source)")
        fds = self._fds
        with self._lock:
            if not self._configured:
                _sys.percpu_update(fds["hb_stats"], ctypes.c_uint32(self.ifindex), HbStats())
                self._configured = True
            cfg = self.config
            cfg.self_id, cfg.cluster_id = self_id, cluster
            cfg.addr[:] = _packed_ip(addr)
            cfg.port[:] = port.to_bytes(2, "big")
            cfg.mac[:] = mac_b
            cfg.fanout, cfg.max_packet_bytes = fanout, max_packet_bytes
            cfg.members = len(self._slots)
            cfg.enabled = 1
            # a shrinking ring: the config first, so the program never asks for a key being deleted
            if len(keys) < len(self._keys):
                cfg.nkeys = len(keys)
                self._write_config()
            for i, key in enumerate(keys):
                if i < len(self._keys) and self._keys[i] == key:
                    continue  # unchanged: keep the chaining value the program prepared
                value = B2bKey(len=len(key))  # zeroed: bytes past len are 0, prekeyed 0
                ctypes.memmove(value.bytes, key, len(key))
                # a new element (the map does not preallocate): a program preparing the old key writes the old one
                _sys.map_update(fds["hb_keys"], HbKeyId(self.ifindex, i), value)
            for i in range(len(keys), len(self._keys)):
                _sys.map_delete(fds["hb_keys"], HbKeyId(self.ifindex, i))
            self._keys = keys
            cfg.nkeys = len(keys)
            self._write_config()

    def _write_config(self) -> None:
        _sys.map_update(self._fds["hb_config"], ctypes.c_uint32(self.ifindex), self.config)

    def reset(self) -> None:
        """Disable the plane on this interface and delete its configuration, keys, members and slots, whoever
        wrote them (a walk of the member and slot maps; its counters stay readable)."""
        fds, ifindex = self._fds, self.ifindex
        with self._lock:
            _sys.map_delete(fds["hb_config"], ctypes.c_uint32(ifindex))
            for i in range(KEYS_MAX):
                _sys.map_delete(fds["hb_keys"], HbKeyId(ifindex, i))
            for name, value_size in (("hb_slots", 4), ("hb_members", ctypes.sizeof(HbMember))):
                pairs = memoryview(_sys.map_keys_bytes(fds[name], ctypes.sizeof(HbKeyId), value_size)).cast("I")
                for i, owner in enumerate(pairs[0::2]):  # (ifindex, index) in host order, as HbKeyId lays them out
                    if owner == ifindex:
                        _sys.map_delete(fds[name], HbKeyId(ifindex, pairs[2 * i + 1]))
            self._slots, self._pos, self._keys = [], {}, []
            self.config = HbConfig()
            self._configured = False

    def set_member(self, identity_bytes: bytes, node_id: int, addr: str, port: int, mac, seq: int, *,
                   keep_higher_seq: bool = False) -> None:
        """Add or rewrite member NODE_ID: its Identity as on the wire (longer than 64 bytes: its heartbeats pass to
        userspace), where it listens, its MAC (None: unknown, a heartbeat that would target it passes), and the
        highest heartbeat sequence accepted from it. With KEEP_HIGHER_SEQ a member already there keeps a higher
        sequence the program (or an earlier call) wrote. A rewrite keeps last_seen."""
        if not (0 <= node_id <= _U32 and 0 < port < 65536 and 0 <= seq < 1 << 64):
            raise BpfUsageError("set_member: node_id u32, port 1..65535, seq u64")
        mac_b = _packed_mac(mac)
        fds = self._fds
        with self._lock:
            if not self._configured:
                raise BpfUsageError(f"ifindex {self.ifindex} is not configured")
            if node_id == self.config.self_id:
                raise BpfUsageError("set_member: a node is not its own member")
            value = HbMember(seq=seq, has_mac=mac_b is not None)
            value.addr[:] = _packed_ip(addr)
            value.port[:] = port.to_bytes(2, "big")
            if mac_b is not None:
                value.mac[:] = mac_b
            if len(identity_bytes) <= IDENT_MAX:
                value.ident_len = len(identity_bytes)
                ctypes.memmove(value.ident, bytes(identity_bytes), len(identity_bytes))
            else:
                value.ident_len = IDENT_TOO_LONG
            key = HbKeyId(self.ifindex, node_id)
            slot = self._pos.get(node_id)
            if slot is not None:
                old = HbMember()
                if _sys.map_lookup(fds["hb_members"], key, old):
                    value.last_seen_ns = old.last_seen_ns
                    if keep_higher_seq and old.seq > seq:
                        value.seq = old.seq
                value.slot = slot
                _sys.map_update(fds["hb_members"], key, value)
                return
            slot = len(self._slots)
            value.slot = slot
            _sys.map_update(fds["hb_members"], key, value)
            try:
                _sys.map_update(fds["hb_slots"], HbKeyId(self.ifindex, slot), ctypes.c_uint32(node_id))
            except BaseException:
                _sys.map_delete(fds["hb_members"], key)
                raise
            self._slots.append(node_id)
            self._pos[node_id] = slot
            self.config.members = len(self._slots)  # last: the program probes only slots below it
            self._write_config()

    def raise_seq(self, node_id: int, seq: int) -> bool:
        """Make SEQ member NODE_ID's accepted sequence unless the map holds a higher one already (what the node
        accepted itself, so the program takes the copies as duplicates too). False for an unknown member or a
        sequence not above the one held.

        Not atomic with the program's compare-and-swap: a heartbeat the program accepts between this lookup and
        update (the origin's NEXT heartbeat, within microseconds) would be overwritten by the lower SEQ, and a copy
        of it could then be taken a second time."""
        if node_id not in self._pos:
            return False
        value = HbMember()
        key = HbKeyId(self.ifindex, node_id)
        fd = self._fds["hb_members"]
        if not _sys.map_lookup(fd, key, value) or value.seq >= seq:
            return False
        value.seq = seq
        try:
            _sys.map_update(fd, key, value, _sys.BPF_EXIST)
        except MapError:  # removed meanwhile
            return False
        return True

    def remove_member(self, node_id: int) -> bool:
        """Forget member NODE_ID; the last slot moves into its hole. False if unknown."""
        fds, ifindex = self._fds, self.ifindex
        with self._lock:
            slot = self._pos.pop(node_id, None)
            if slot is None:
                return False
            self.config.members = len(self._slots) - 1  # first: the program stops probing the last slot
            self._write_config()
            # from here a probe of SLOT finds no member (passed as a race), never a removed one's address
            _sys.map_delete(fds["hb_members"], HbKeyId(ifindex, node_id))
            last = self._slots.pop()
            if last != node_id:
                self._slots[slot] = last
                self._pos[last] = slot
                moved = HbMember()
                mkey = HbKeyId(ifindex, last)
                if _sys.map_lookup(fds["hb_members"], mkey, moved):
                    moved.slot = slot
                    _sys.map_update(fds["hb_members"], mkey, moved)
                _sys.map_update(fds["hb_slots"], HbKeyId(ifindex, slot), ctypes.c_uint32(last))
            _sys.map_delete(fds["hb_slots"], HbKeyId(ifindex, len(self._slots)))
            return True

    # ---- reading ----

    @property
    def members(self) -> list[int]:
        """The member ids this writer registered, in slot order."""
        return list(self._slots)

    def member(self, node_id: int, into: HbMember | None = None) -> HbMember | None:
        """Member NODE_ID's map value (read into INTO when given: no allocation), or None."""
        value = into if into is not None else HbMember()
        return value if _sys.map_lookup(self._fds["hb_members"], HbKeyId(self.ifindex, node_id), value) else None

    def read_members(self) -> dict[int, tuple[int, int]]:
        """{node_id: (seq, last_seen_ns)} of every member: one lookup each."""
        out = {}
        value = HbMember()
        key = HbKeyId(self.ifindex, 0)
        fd = self._fds["hb_members"]
        with self._lock:
            ids = list(self._slots)
        for nid in ids:
            key.index = nid
            if _sys.map_lookup(fd, key, value):
                out[nid] = (value.seq, value.last_seen_ns)
        return out

    def slots(self) -> list[int]:
        """The member ids in slot order, as the program sees them."""
        out = []
        value = ctypes.c_uint32()
        for slot in range(len(self._slots)):
            if _sys.map_lookup(self._fds["hb_slots"], HbKeyId(self.ifindex, slot), value):
                out.append(value.value)
        return out

    def stats(self) -> dict[str, int]:
        """This interface's counters (see `HeartbeatPlane.stats`)."""
        return read_stats(self._fds["hb_stats"], self.ifindex)

    def close(self) -> None:
        """Close the map fds (the maps keep what was written: `reset` first to take this node out)."""
        fds, self._fds = self._fds, {}
        for fd in fds.values():
            with contextlib.suppress(OSError):
                os.close(fd)

    def __enter__(self) -> "PlaneWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
