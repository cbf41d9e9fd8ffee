"""Loader for the TC egress broadcaster (tc_broadcast.c) and the node-side sender that uses it.

- `Broadcaster`, in the process that owns the testbed: compiles the program once, pins its maps, and attaches it
  at clsact egress of each node's interface, giving that interface a slot in the shared, mmap-able slot array.
- `BroadcastSender`, in a node: `send(sock, payload, targets)` writes the target list and the datagram's identity
  into the slot and makes ONE sendto; the program emits the other copies. Without the program (not attached,
  not available, a target whose MAC is not known yet) it falls back to one sendto per target; both paths put
  identical datagrams on the wire. It never compiles anything and needs no bcc. The targets' MACs come from the
  namespace's neighbour table through `bpf._neigh`, the heartbeat plane's reader too, so a node that sends
  through the broadcaster does not import pyroute2 (~11 MiB).

Arming is one slice assignment into the mmap'd slot and three word stores, whatever the fanout; the only work
per target is one dict lookup inside `bytes.join` (in C, no Python object made): the targets are kept packed
(12 bytes each, MAC included) per (ip, port). Arming through bpf(2) instead (one BPF_MAP_UPDATE_ELEM of the
whole slot from a preallocated ctypes buffer) measured 2.7-3.7 us per broadcast here, against 0.18 us for the
block and the three words written into the mapping, so the mmap stays (the kernel has BPF_F_MMAPABLE since 5.5).
"""

from __future__ import annotations

import contextlib
import ctypes
import mmap
import os
import socket
import struct
import sys
import threading
import time

from . import _sys  # _attach (netlink) is imported where used: a node's sender never needs it
from ._neigh import NeighbourTable
from ._compile import PinnedProgram
from ._structs import BC_ID_HEAD, BC_ID_TAG, BC_MAX_SLOTS, BC_MAX_TARGETS, BC_STAT_NAMES, BcSlot, BcStats, BcTarget
from .errors import AttachError, BpfError

PIN_ROOT = _sys.PIN_ROOT
C_FILE = "tc_broadcast.c"
PROGRAM = "tc_broadcast"
MAPS = ("bc_slots", "bc_ifslot", "bc_stats")
_SLOT_BYTES = ctypes.sizeof(BcSlot)
_MMAP_BYTES = -(-BC_MAX_SLOTS * _SLOT_BYTES // mmap.PAGESIZE) * mmap.PAGESIZE
_BLOCK_OFFSET = BcSlot.sport.offset  # the arm block: sport, count, udp_len, head, tag, pad, targets
_BLOCK_HEAD = struct.Struct("=2sHH")  # sport (network order), count, udp_len
_PAD = bytes(BcSlot.pad.size)
assert (BcSlot.count.offset, BcSlot.udp_len.offset, BcSlot.head.offset, BcSlot.tag.offset, BcSlot.pad.offset,
        BcSlot.targets.offset) == (_BLOCK_OFFSET + 2, _BLOCK_OFFSET + 4, _BLOCK_OFFSET + 6,
                                   _BLOCK_OFFSET + 6 + BC_ID_HEAD, _BLOCK_OFFSET + 6 + BC_ID_HEAD + BC_ID_TAG,
                                   _BLOCK_OFFSET + 10 + BC_ID_HEAD + BC_ID_TAG)
_MIN_PAYLOAD = BC_ID_HEAD + BC_ID_TAG  # shorter datagrams have no identity: sent plainly
# ifindex and enabled read as one 64-bit word (with sport, masked off): the fast path's ownership check is one read
assert BcSlot.ifindex.offset % 8 == 0 and BcSlot.enabled.offset == BcSlot.ifindex.offset + 4


def _owner_word(ifindex: int, enabled: int) -> int:
    return int.from_bytes(struct.pack("=IHH", ifindex, enabled, 0), sys.byteorder)


_OWNER_MASK = _owner_word(0xFFFFFFFF, 0xFFFF)

assert _SLOT_BYTES % 8 == 0, "array map values are 8-byte aligned in the mmap: BcSlot must be a multiple of 8"


def read_stats(stats_fd: int, ifindex: int | None = None) -> dict[str, int]:
    return _sys.sum_percpu_counters(stats_fd, ifindex, BcStats, BC_STAT_NAMES)


class _SlotArray:
    """The bc_slots map mapped into this process: slot i is a BcSlot living in shared memory."""

    def __init__(self, map_fd: int) -> None:
        self._mm = mmap.mmap(map_fd, _MMAP_BYTES, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self.slots = (BcSlot * BC_MAX_SLOTS).from_buffer(self._mm)
        # the same memory as bytes, 32- and 64-bit words: indexing these costs a third of a ctypes field access,
        # and a slice assignment a sixth of ctypes.memmove
        self.bytes = memoryview(self._mm)
        self.u32, self.u64 = self.bytes.cast("I"), self.bytes.cast("Q")

    def close(self) -> None:
        self.slots = None  # release the buffer exports before unmapping
        for view in (self.u32, self.u64, self.bytes):
            view.release()
        self._mm.close()


class Broadcaster(PinnedProgram):
    """The compiled broadcaster. Use as a context manager: leaving it unpins the maps and releases the program."""

    C_FILE, PROGRAM, SECTION, KIND, MAPS = C_FILE, PROGRAM, "sched_cls", "broadcast", MAPS

    def __init__(self, bpf, prog_fd: int, pin_dir: str) -> None:
        super().__init__(bpf, prog_fd, pin_dir)
        self._slots = _SlotArray(self.map_fds["bc_slots"])
        self._lock = threading.Lock()

    def _release(self) -> None:
        if self._slots is not None:
            self._slots.close()
            self._slots = None

    @contextlib.contextmanager
    def attach(self, ifindex: int, *, netns: str | None = None, link: bool = False):
        """The broadcaster on egress of IFINDEX (inside NETNS) for the duration of the block; with LINK by a tcx
        link, which the kernel removes when this process ends (`bpf._attach.tc_attached`)."""
        index = self._claim_slot(ifindex)
        slot = self._slots.slots[index]
        key = ctypes.c_uint32(ifindex)
        try:
            _sys.percpu_update(self.map_fds["bc_stats"], key, BcStats())
            _sys.map_update(self.map_fds["bc_ifslot"], key, ctypes.c_uint32(index))
            from . import _attach

            with _attach.tc_attached({"egress": self.prog_fd}, ifindex, netns=netns,
                                     prio=_attach.PRIO_BROADCAST, name=PROGRAM, link=link):
                slot.enabled = 1
                try:
                    yield index
                finally:
                    slot.enabled = 0
        finally:
            _sys.map_delete(self.map_fds["bc_ifslot"], key)
            with self._lock:
                slot.armed = 0
                slot.ifindex = 0

    def _claim_slot(self, ifindex: int) -> int:
        with self._lock:
            free = None
            for i, slot in enumerate(self._slots.slots):
                if slot.ifindex == ifindex:
                    raise AttachError(f"the broadcaster is already attached to ifindex {ifindex}")
                if slot.ifindex == 0 and free is None:
                    free = i
            if free is None:
                raise AttachError(f"no free broadcaster slot ({BC_MAX_SLOTS} interfaces at most)")
            ctypes.memset(ctypes.addressof(self._slots.slots[free]), 0, _SLOT_BYTES)
            self._slots.slots[free].ifindex = ifindex
            return free

    def stats(self, ifindex: int | None = None) -> dict[str, int]:
        """Counters of one interface or of all: broadcasts; copies that left (originals included); clone_errors
        (copies the program could not make, resent by the sender); egress_drops (copies dropped after leaving the
        program, e.g. by a fault filter, not resent: a sendto would have been dropped the same way); mismatches
        (an armed slot saw a datagram from another port or to another destination); stale (same port and destination
        but another identity: an older or delayed datagram, passed unchanged to its own destination); torn (the slot
        was re-armed during a broadcast or its check: the copies left out were sent by the sender); passed
        (everything else)."""
        return read_stats(self.map_fds["bc_stats"], ifindex)

    def sender(self, ifindex: int, *, netns: str | None = None, **options) -> "BroadcastSender":
        """A sender for a node running in this process, on this process's map fds."""
        return BroadcastSender.from_fds(ifindex, slots_fd=self.map_fds["bc_slots"],
                                        ifslot_fd=self.map_fds["bc_ifslot"], netns=netns, **options)


class BroadcastSender:
    """Sends one payload to many UDP targets with one syscall when the broadcaster is attached to IFINDEX.

    Open it from the broadcaster's pin directory (`BroadcastSender(pin_dir, ifindex)`), or with pin_dir None for
    plain sendto only. One sender per interface and one thread sending through it: the slot holds one pending
    broadcast at a time. `sendto_calls` and `broadcasts` count what it did.
    """

    def __init__(self, pin_dir: str | None, ifindex: int, *, netns: str | None = None, mac_ttl_s: float = 30.0,
                 mac_retry_s: float = 1.0) -> None:
        slots_fd = ifslot_fd = None
        if pin_dir is not None:
            slots_fd = _sys.obj_get(os.path.join(pin_dir, "bc_slots"))
            try:
                ifslot_fd = _sys.obj_get(os.path.join(pin_dir, "bc_ifslot"))
                info = _sys.map_info(slots_fd)
                if info.value_size != _SLOT_BYTES or info.max_entries != BC_MAX_SLOTS:
                    raise BpfError(f"{pin_dir}/bc_slots does not hold {BC_MAX_SLOTS} slots of {_SLOT_BYTES} bytes")
            except BaseException:
                os.close(slots_fd)
                if ifslot_fd is not None:
                    os.close(ifslot_fd)
                raise
        self._init(ifindex, slots_fd, ifslot_fd, netns, mac_ttl_s, mac_retry_s)

    @classmethod
    def from_fds(cls, ifindex: int, *, slots_fd: int, ifslot_fd: int, netns: str | None = None,
                 mac_ttl_s: float = 30.0, mac_retry_s: float = 1.0) -> "BroadcastSender":
        self = cls.__new__(cls)
        self._init(ifindex, os.dup(slots_fd), os.dup(ifslot_fd), netns, mac_ttl_s, mac_retry_s)
        return self

    def _init(self, ifindex, slots_fd, ifslot_fd, netns, mac_ttl_s, mac_retry_s) -> None:
        self.ifindex = ifindex
        self._owner = _owner_word(ifindex, 1)
        self._slots_fd, self._ifslot_fd = slots_fd, ifslot_fd
        self._array = _SlotArray(slots_fd) if slots_fd is not None else None
        self._slot: BcSlot | None = None
        self._fast = None  # what the fast path needs of the slot (see _usable_slot), or None
        self._slot_checked_at = -float("inf")
        self._fresh_until = -float("inf")  # the packed records are good until the neighbour table expires
        self._neigh = NeighbourTable(ifindex, mac_ttl_s, mac_retry_s, netns=netns)
        self._records: dict[tuple[str, int], bytes] = {}  # (ip, port) -> packed BcTarget, for the current MACs
        self._records_gen = None
        self._sports: dict[int, bytes] = {}  # socket fd -> its bound port, packed
        self._dups: dict[int, socket.socket] = {}  # fd of a wrapped socket -> our duplicate of it
        self.sendto_calls = 0
        self.broadcasts = 0

    def close(self) -> None:
        self._slot = self._fast = None
        for dup in self._dups.values():
            dup.close()
        self._dups.clear()
        self._neigh.close()
        if self._array is not None:
            self._array.close()
            self._array = None
        for fd in (self._slots_fd, self._ifslot_fd):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._slots_fd = self._ifslot_fd = None

    def __enter__(self) -> "BroadcastSender":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def accelerated(self) -> bool:
        """Whether the broadcaster is attached to this sender's interface right now."""
        return self._usable_slot(time.monotonic()) is not None

    def refresh(self) -> None:
        """Reload the neighbour table now (e.g. after the caller resolved addresses)."""
        self._neigh.refresh(time.monotonic())
        self._fresh_until = -float("inf")  # the next send repacks its records from the new table

    def _usable_slot(self, now: float) -> BcSlot | None:
        slot = self._slot
        if slot is not None and slot.ifindex == self.ifindex and slot.enabled:
            return slot
        self._slot = self._fast = None
        if self._array is None or now - self._slot_checked_at < 1.0:
            return None
        # the slot may be assigned after this sender was made: look again, at most once a second
        self._slot_checked_at = now
        index = ctypes.c_uint32()
        if _sys.map_lookup(self._ifslot_fd, ctypes.c_uint32(self.ifindex), index) and index.value < BC_MAX_SLOTS:
            slot = self._array.slots[index.value]
            if slot.ifindex == self.ifindex and slot.enabled:
                self._slot = slot
                base = index.value * _SLOT_BYTES
                a = self._array
                self._fast = (a.u64, a.u32, a.bytes, (base + BcSlot.armed.offset) // 8,
                              (base + BcSlot.generation.offset) // 8, (base + BcSlot.done.offset) // 4,
                              (base + BcSlot.failed.offset) // 4, base + _BLOCK_OFFSET,
                              (base + BcSlot.ifindex.offset) // 8)
        return self._slot

    def _record(self, target: tuple[str, int], now: float) -> bytes | None:
        """TARGET packed as a BcTarget with its MAC, or None while its MAC is unknown."""
        if self._neigh.expired(now):
            self._neigh.refresh(now)
        if self._records_gen != self._neigh.generation:
            self._records.clear()
            self._records_gen = self._neigh.generation
        record = self._records.get(target)
        if record is None:
            mac = self._neigh.mac(target[0], now)
            if mac is None:
                return None
            self._fresh_until = self._neigh.loaded_at + self._neigh.ttl_s
            record = self._records[target] = bytes(BcTarget(
                addr=(ctypes.c_uint8 * 4)(*socket.inet_aton(target[0])),
                port=(ctypes.c_uint8 * 2)(*target[1].to_bytes(2, "big")),
                mac=(ctypes.c_uint8 * 6)(*mac)))
        return record

    def _sport(self, sock: socket.socket) -> bytes | None:
        fd = sock.fileno()
        sport = self._sports.get(fd)
        if sport is None:
            port = sock.getsockname()[1]
            if port == 0:
                return None  # not bound yet: the first sendto binds it
            sport = self._sports[fd] = port.to_bytes(2, "big")
        return sport

    def _socket(self, sock) -> socket.socket:
        """SOCK itself, or for a socket-like wrapper without sendto (asyncio's TransportSocket) a duplicate of its
        descriptor: the same socket, written to directly, bypassing the transport's buffer."""
        if isinstance(sock, socket.socket):
            return sock
        fd = sock.fileno()
        dup = self._dups.get(fd)
        if dup is None:
            dup = self._dups[fd] = socket.fromfd(fd, sock.family, sock.type)
            dup.setblocking(False)
        return dup

    def _sendto(self, sock: socket.socket, payload: bytes, target: tuple[str, int]) -> None:
        self.sendto_calls += 1
        sock.sendto(payload, target)

    def send(self, sock: socket.socket, payload: bytes, targets: list[tuple[str, int]]) -> None:
        """Send PAYLOAD from SOCK (a bound UDP socket on this interface, or asyncio's wrapper of one) to every
        (ip, port) in TARGETS. Errors of sendto (e.g. BlockingIOError) propagate; the slot is left disarmed."""
        # The common case first, with nothing made per target: every record packed, the table fresh.
        fast = self._fast
        if fast is not None and 1 < len(targets) <= BC_MAX_TARGETS and len(payload) >= _MIN_PAYLOAD \
                and time.monotonic() < self._fresh_until \
                and fast[0][fast[8]] & _OWNER_MASK == self._owner:  # still this interface's slot, attached
            if type(sock) is not socket.socket:
                sock = self._socket(sock)
            sport = self._sports.get(sock.fileno())
            if sport is not None:
                try:
                    packed = b"".join(map(self._records.__getitem__, targets))
                except (KeyError, TypeError):  # a target not packed yet (or not a hashable pair): the long way
                    pass
                else:
                    self._broadcast(fast, sock, sport, payload, packed, targets)
                    return
        self._send_slowly(sock, payload, targets)

    def _send_slowly(self, sock, payload: bytes, targets) -> None:
        sock = self._socket(sock)
        if len(targets) < 2 or len(payload) < _MIN_PAYLOAD:
            for target in targets:
                self._sendto(sock, payload, target)
            return
        now = time.monotonic()
        slot = self._usable_slot(now)
        sport = self._sport(sock) if slot is not None else None
        if sport is None:
            for target in targets:
                self._sendto(sock, payload, target)
            return
        records, targeted = [], []
        for target in targets:
            record = self._record(tuple(target), now)
            if record is None:
                self._sendto(sock, payload, target)  # MAC unknown: the kernel resolves it (ARP) for next time
                continue
            records.append(record)
            targeted.append(target)
        for start in range(0, len(records), BC_MAX_TARGETS):
            batch = targeted[start:start + BC_MAX_TARGETS]
            if len(batch) == 1:
                self._sendto(sock, payload, batch[0])
            else:
                self._broadcast(self._fast, sock, sport, payload, b"".join(records[start:start + BC_MAX_TARGETS]),
                                batch)

    def _broadcast(self, fast, sock, sport: bytes, payload: bytes, packed: bytes, targets) -> None:
        u64, u32, mem, armed, generation, done, failed, block_at, _ = fast
        gen = (u64[generation] + 2) & 0xFFFFFFFE or 2  # even, never 0 (0: not armed), fits "done" (32 bits)
        u64[generation] = gen - 1  # odd: the block is being written (a broadcast still reading it stops)
        block = b"".join((_BLOCK_HEAD.pack(sport, len(targets), len(payload) + 8), payload[:BC_ID_HEAD],
                          payload[-BC_ID_TAG:], _PAD, packed))
        mem[block_at:block_at + len(block)] = block
        u64[generation] = gen
        u64[armed] = gen  # last: the program ignores the slot until now
        try:
            self.sendto_calls += 1
            sock.sendto(payload, targets[0])
        except BaseException:
            u64[armed] = 0
            raise
        if u32[done] == gen:
            self.broadcasts += 1
            missed = u32[failed]
            if missed:
                for i, target in enumerate(targets):
                    if missed >> i & 1:
                        self._sendto(sock, payload, target)
        else:
            # not taken (detached meanwhile, the datagram waits for ARP, or a re-arm raced it): send the rest.
            # Should the waiting datagram pass the program later it finds the slot disarmed or re-armed for
            # another identity, and goes to targets[0] alone.
            u64[armed] = 0
            for target in targets[1:]:
                self._sendto(sock, payload, target)
