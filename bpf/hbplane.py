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
from .errors import BpfError, BpfUsageError

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
              "passed_unknown_origin", "passed_stale_or_dup", "passed_identity", "passed_body", "passed_bad_mac",
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


class _Node:
    """What the loader keeps of one configured interface: the members' slots, in order."""

    def __init__(self) -> None:
        self.slots: list[int] = []
        self.pos: dict[int, int] = {}
        self.config = HbConfig()
        self.keys: list[bytes] = []


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

    C_FILE, PROGRAM, SECTION, KIND = C_FILE, "tc_hbplane", "sched_cls", "hbplane"
    MAPS = tuple(MAPS) + (RINGBUF,)

    def __init__(self, bpf, prog_fd: int, pin_dir: str) -> None:
        super().__init__(bpf, prog_fd, pin_dir)
        self._nodes: dict[int, _Node] = {}
        self._lock = threading.Lock()
        for name, (key_type, value_type) in MAPS.items():
            info = _sys.map_info(self.map_fds[name])
            if (info.key_size, info.value_size) != (ctypes.sizeof(key_type), ctypes.sizeof(value_type)):
                raise BpfError(f"map {name}: key/value of {info.key_size}/{info.value_size} bytes, expected "
                               f"{ctypes.sizeof(key_type)}/{ctypes.sizeof(value_type)}")

    @classmethod
    def compile(cls, *, pin_dir: str | None = None, nodes: int | None = None, members: int | None = None,
                defines: dict[str, int] | None = None) -> "HeartbeatPlane":
        """Compile and load the three programs (~3 s), link the tail calls, pin the maps. NODES / MEMBERS size
        the maps (`map_sizes`); DEFINES adds or overrides -D tunables (e.g. HB_SCAN_MAX)."""
        from . import _attach

        sizes = {} if nodes is None else map_sizes(nodes, nodes if members is None else members)
        sizes.update(defines or {})
        bpf, fds = compile_program(C_FILE, PROGRAMS, sizes or None)
        progs = bpf[b"hb_progs"]
        for i, name in enumerate(TAIL_CALLS):
            progs[ctypes.c_int(i)] = ctypes.c_int(fds[name])
        pin_dir = _sys.prepare_pin_dir(pin_dir, cls.KIND)
        self = cls(bpf, fds[cls.PROGRAM], pin_dir)
        self.prog_fds = fds
        try:
            self._pins = _attach.pin_maps(self.map_fds, pin_dir)
        except BaseException:
            self.close()
            raise
        return self

    # ---- attaching ----

    @contextlib.contextmanager
    def attach(self, ifindex: int, *, netns: str | None = None):
        """The plane at clsact ingress of IFINDEX (inside NETNS) for the duration of the block. It acts only once
        `configure` has enabled that interface; leaving the block disables it and forgets its node."""
        from . import _attach
        try:
            with _attach.tc_attached({"ingress": self.prog_fd}, ifindex, netns=netns, prio=PRIO_HBPLANE,
                                     name=self.PROGRAM):
                yield
        finally:
            self.unconfigure(ifindex)

    # ---- configuration ----

    def configure(self, ifindex: int, self_id: int, cluster: int, addr: str, port: int, mac, fanout: int,
                  max_packet_bytes: int, keys) -> None:
        """Enable the plane for the node on IFINDEX. CLUSTER is the 32-bit cluster id; KEYS the node's secrets,
        1..4, the first signing. Reconfiguring keeps the members and any key whose bytes did not change."""
        keys = [bytes(k) for k in keys]
        if not 1 <= len(keys) <= KEYS_MAX or any(len(k) > 64 for k in keys):
            raise BpfUsageError(f"configure: 1..{KEYS_MAX} keys of at most 64 bytes, got {[len(k) for k in keys]}")
        if not (0 <= self_id <= _U32 and 0 <= cluster <= _U32 and 0 < port < 65536):
            raise BpfUsageError(f"configure: self_id/cluster must be u32 and port 1..65535")
        if not 1 <= fanout <= FANOUT_MAX:
            raise BpfUsageError(f"configure: fanout must be 1..{FANOUT_MAX}, got {fanout}")
        if not 64 <= max_packet_bytes <= 28 + PAYLOAD_MAX:
            raise BpfUsageError(f"configure: max_packet_bytes must be 64..{28 + PAYLOAD_MAX}, got {max_packet_bytes}")
        mac_b = _packed_mac(mac)
        if mac_b is None:
            raise BpfUsageError("configure: the node's MAC is required (the copies' source)")
        with self._lock:
            node = self._nodes.get(ifindex)
            fresh = node is None
            if fresh:
                node = self._nodes[ifindex] = _Node()
                _sys.percpu_update(self.map_fds["hb_stats"], ctypes.c_uint32(ifindex), HbStats())
            cfg = node.config
            cfg.self_id, cfg.cluster_id = self_id, cluster
            cfg.addr[:] = _packed_ip(addr)
            cfg.port[:] = port.to_bytes(2, "big")
            cfg.mac[:] = mac_b
            cfg.fanout, cfg.max_packet_bytes = fanout, max_packet_bytes
            cfg.members = len(node.slots)
            cfg.enabled = 1
            # a shrinking ring: the config first, so the program never asks for a key being deleted
            if len(keys) < len(node.keys):
                cfg.nkeys = len(keys)
                self._write_config(ifindex, cfg)
            for i, key in enumerate(keys):
                if i < len(node.keys) and node.keys[i] == key:
                    continue  # unchanged: keep the chaining value the program prepared
                value = B2bKey(len=len(key))  # zeroed: bytes past len are 0, prekeyed 0
                ctypes.memmove(value.bytes, key, len(key))
                # a new element (the map does not preallocate): a program preparing the old key writes the old one
                _sys.map_update(self.map_fds["hb_keys"], HbKeyId(ifindex, i), value)
            for i in range(len(keys), len(node.keys)):
                _sys.map_delete(self.map_fds["hb_keys"], HbKeyId(ifindex, i))
            node.keys = keys
            cfg.nkeys = len(keys)
            self._write_config(ifindex, cfg)

    def _write_config(self, ifindex: int, cfg: HbConfig) -> None:
        _sys.map_update(self.map_fds["hb_config"], ctypes.c_uint32(ifindex), cfg)

    def unconfigure(self, ifindex: int) -> None:
        """Disable the plane on IFINDEX and delete its keys and members (its counters stay readable)."""
        with self._lock:
            node = self._nodes.pop(ifindex, None)
            _sys.map_delete(self.map_fds["hb_config"], ctypes.c_uint32(ifindex))
            if node is None:
                return
            for i in range(len(node.keys)):
                _sys.map_delete(self.map_fds["hb_keys"], HbKeyId(ifindex, i))
            for slot, nid in enumerate(node.slots):
                _sys.map_delete(self.map_fds["hb_slots"], HbKeyId(ifindex, slot))
                _sys.map_delete(self.map_fds["hb_members"], HbKeyId(ifindex, nid))

    def _node(self, ifindex: int) -> _Node:
        node = self._nodes.get(ifindex)
        if node is None:
            raise BpfUsageError(f"ifindex {ifindex} is not configured")
        return node

    def set_member(self, ifindex: int, identity_bytes: bytes, node_id: int, addr: str, port: int, mac,
                   seq: int) -> None:
        """Add or rewrite the member NODE_ID of the node on IFINDEX: its Identity as on the wire (longer than 64
        bytes: its heartbeats pass to userspace), where it listens, its MAC (None: unknown, a heartbeat that would
        target it passes), and the highest heartbeat sequence accepted from it."""
        if not (0 <= node_id <= _U32 and 0 < port < 65536 and 0 <= seq < 1 << 64):
            raise BpfUsageError("set_member: node_id u32, port 1..65535, seq u64")
        mac_b = _packed_mac(mac)
        with self._lock:
            node = self._node(ifindex)
            if node_id == node.config.self_id:
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
            key = HbKeyId(ifindex, node_id)
            slot = node.pos.get(node_id)
            if slot is not None:
                old = HbMember()
                if _sys.map_lookup(self.map_fds["hb_members"], key, old):
                    value.last_seen_ns = old.last_seen_ns
                value.slot = slot
                _sys.map_update(self.map_fds["hb_members"], key, value)
                return
            slot = len(node.slots)
            value.slot = slot
            _sys.map_update(self.map_fds["hb_members"], key, value)
            _sys.map_update(self.map_fds["hb_slots"], HbKeyId(ifindex, slot), ctypes.c_uint32(node_id))
            node.slots.append(node_id)
            node.pos[node_id] = slot
            node.config.members = len(node.slots)  # last: the program probes only slots below it
            self._write_config(ifindex, node.config)

    def remove_member(self, ifindex: int, node_id: int) -> bool:
        """Forget member NODE_ID of the node on IFINDEX; the last slot moves into its hole. False if unknown."""
        with self._lock:
            node = self._node(ifindex)
            slot = node.pos.pop(node_id, None)
            if slot is None:
                return False
            node.config.members = len(node.slots) - 1  # first: the program stops probing the last slot
            self._write_config(ifindex, node.config)
            # from here a probe of SLOT finds no member (passed as a race), never a removed one's address
            _sys.map_delete(self.map_fds["hb_members"], HbKeyId(ifindex, node_id))
            last = node.slots.pop()
            if last != node_id:
                node.slots[slot] = last
                node.pos[last] = slot
                moved = HbMember()
                mkey = HbKeyId(ifindex, last)
                if _sys.map_lookup(self.map_fds["hb_members"], mkey, moved):
                    moved.slot = slot
                    _sys.map_update(self.map_fds["hb_members"], mkey, moved)
                _sys.map_update(self.map_fds["hb_slots"], HbKeyId(ifindex, slot), ctypes.c_uint32(last))
            _sys.map_delete(self.map_fds["hb_slots"], HbKeyId(ifindex, len(node.slots)))
            return True

    # ---- reading ----

    def read_members(self, ifindex: int) -> dict[int, tuple[int, int]]:
        """{node_id: (seq, last_seen_ns)} of every member of the node on IFINDEX."""
        out = {}
        value = HbMember()
        with self._lock:
            ids = list(self._node(ifindex).slots)
        for nid in ids:
            if _sys.map_lookup(self.map_fds["hb_members"], HbKeyId(ifindex, nid), value):
                out[nid] = (value.seq, value.last_seen_ns)
        return out

    def member(self, ifindex: int, node_id: int) -> HbMember | None:
        value = HbMember()
        return value if _sys.map_lookup(self.map_fds["hb_members"], HbKeyId(ifindex, node_id), value) else None

    def slots(self, ifindex: int) -> list[int]:
        """The member ids in slot order, as the program sees them."""
        node = self._node(ifindex)
        out = []
        value = ctypes.c_uint32()
        for slot in range(len(node.slots)):
            if _sys.map_lookup(self.map_fds["hb_slots"], HbKeyId(ifindex, slot), value):
                out.append(value.value)
        return out

    def stats(self, ifindex: int | None = None) -> dict[str, int]:
        """Counters of one interface or summed over all: handled (accepted and forwarded), accepted_no_targets,
        copies, clone_errors, rewrite_errors, passed_<reason> for each reason a datagram went to userspace, and
        ``passed``, their sum."""
        out = _sys.sum_percpu_counters(self.map_fds["hb_stats"], ifindex, HbStats, STAT_NAMES)
        out["passed"] = sum(v for k, v in out.items() if k.startswith("passed_"))
        return out

    def events(self) -> EventReader:
        """A reader of the accepted-heartbeat ring buffer (one consumer at a time)."""
        return EventReader(self.map_fds[RINGBUF])
