"""Loader and map access for the XDP fast path (xdp_fastpath.c).

Two sides, usually in two processes:

- `FastPath`, in the process that owns the testbed: compiles the program once, pins its maps to a bpffs, attaches
  the same program to every node's veth (each in its namespace) and tells it each node's cluster and port.
- `FastPathWriter`, in a node: opens the pinned maps with plain bpf(2) calls (no bcc, no compile) and records
  what the node accepted after verifying the MAC. The program never records anything on first sight, so nothing
  reaches the drop maps that the node has not accepted itself: a forged datagram with a sequence far ahead (XDP
  does not check the MAC) cannot make the kernel drop a member's genuine traffic.

The maps are sized when the program is loaded (`map_sizes`): one program serving N nodes holds a heartbeat pair
per (node, origin), N x N of them, in an LRU that must never be full (see `map_sizes` for why). Each writer counts
the pairs it created and the ones it found evicted (`fp_writes`), so a map too small for its run shows up in the
stats as ``hb_evicted`` instead of as duplicates quietly reaching the nodes. SWIM's sequenced types (PING,
PING_REQ, STATE, GOSSIP) are kept per (node, origin) in ``fp_swim``, a hash allocated as it is written, sized the
same: a heartbeat run leaves it empty.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import os

from . import _sys  # _attach (netlink) is imported where used: a node's writer never needs it
from ._compile import PinnedProgram
from ._structs import FP_STAT_NAMES, FpConfig, FpHbKey, FpStats, FpSwim, FpVersion, FpWrites
from .errors import BpfUsageError, MapError

PIN_ROOT = _sys.PIN_ROOT
C_FILE = "xdp_fastpath.c"
PROGRAM = "xdp_fastpath"
# pinned file name -> (key type, value type)
MAPS = {"fp_config": (ctypes.c_uint32, FpConfig), "fp_heartbeat": (FpHbKey, ctypes.c_uint64),
        "fp_metadata": (ctypes.c_uint32, FpVersion), "fp_stats": (ctypes.c_uint32, FpStats),
        "fp_writes": (ctypes.c_uint32, FpWrites), "fp_swim": (FpHbKey, FpSwim)}
WRITER_MAPS = ("fp_heartbeat", "fp_metadata", "fp_stats", "fp_writes", "fp_swim")
# the wire types fp_swim judges (gossip._wire.MsgType), and their field in it
SWIM_FIELDS = {6: "ping", 8: "ping_req", 10: "state", 11: "gossip"}
_U64 = (1 << 64) - 1
_U32 = (1 << 32) - 1

# The LRU hash (common LRU) keeps up to LRU_LOCAL_FREE_TARGET free elements on each CPU that updates it, and a CPU
# refilling its own list evicts when the shared free list holds fewer: measured here (2 CPUs, 64 nodes' pairs
# rewritten round-robin), 128 free elements left every pair evicted between two rounds, 256 none.
LRU_LOCAL_FREE_TARGET = 128
MAX_HEARTBEAT_ENTRIES = 1 << 26  # ~5 GB of kernel memory: far beyond any run here, refused as a likely mistake


def map_sizes(nodes: int, members: int) -> dict[str, int]:
    """The -D sizes of the fast path's maps for one program serving NODES interfaces whose nodes each hear from up
    to MEMBERS origins (a testbed of N nodes: N and N; a lone node: 1 and the cluster size it expects).

    The heartbeat LRU gets every pair plus 1/16 and two CPUs' worth of LRU free lists per possible CPU: an LRU
    hash evicts before it is full (`LRU_LOCAL_FREE_TARGET`) and, once full, every write of an existing pair takes a
    free element first and so evicts another pair: a map exactly the size of its pairs drops almost nothing.
    The SWIM map is a plain hash (it never evicts, and a full one refuses the write): every pair plus 1/16.
    """
    if not (isinstance(nodes, int) and isinstance(members, int) and nodes >= 1 and members >= 1):
        raise BpfUsageError(f"map_sizes: nodes and members must be integers >= 1, got {nodes!r}, {members!r}")
    pairs = nodes * members
    heartbeats = pairs + pairs // 16 + 2 * LRU_LOCAL_FREE_TARGET * _sys.possible_cpus()
    if heartbeats > MAX_HEARTBEAT_ENTRIES:
        raise BpfUsageError(f"map_sizes: {nodes} nodes x {members} members need {heartbeats} heartbeat entries, "
                            f"more than {MAX_HEARTBEAT_ENTRIES}")
    return {"FP_MAX_NODES": max(nodes, 16), "FP_MAX_HEARTBEATS": heartbeats, "FP_MAX_SWIM": pairs + pairs // 16}


def read_stats(stats_fd: int, ifindex: int | None = None, writes_fd: int | None = None) -> dict[str, int]:
    """The fast path's counters for one interface, or summed over all of them (ifindex None); with WRITES_FD
    also the writers' ``hb_inserted``, ``hb_evicted`` and ``swim_refused`` (see `FastPathWriter`)."""
    out = _sys.sum_percpu_counters(stats_fd, ifindex, FpStats, FP_STAT_NAMES)
    out["passed"] = sum(v for k, v in out.items() if k.startswith("passed_") and k != "passed_other")
    out["dropped"] = sum(v for k, v in out.items() if k.startswith("dropped_"))
    if writes_fd is not None:
        keys = [ctypes.c_uint32(ifindex)] if ifindex is not None else _sys.map_keys(writes_fd, ctypes.c_uint32)
        out["hb_inserted"] = out["hb_evicted"] = out["swim_refused"] = 0
        writes = FpWrites()
        for key in keys:
            if _sys.map_lookup(writes_fd, key, writes):
                out["hb_inserted"] += writes.inserted
                out["hb_evicted"] += writes.evicted
                out["swim_refused"] += writes.swim_refused
    return out


class FastPath(PinnedProgram):
    """The compiled fast path. Use as a context manager: leaving it unpins the maps and unloads the program.

    Attachments made with `attach` must end before the FastPath is closed (they are nested context managers).
    """

    C_FILE, PROGRAM, SECTION, KIND, MAPS = C_FILE, PROGRAM, "xdp", "fastpath", tuple(MAPS)

    @classmethod
    def compile(cls, *, pin_dir: str | None = None, nodes: int | None = None,
                members: int | None = None) -> "FastPath":
        """Compile and load the fast path with maps sized for NODES interfaces whose nodes hear from up to MEMBERS
        origins each (`map_sizes`; MEMBERS defaults to NODES), and pin its maps. Without NODES: the header's
        defaults (4096 interfaces, 131,072 heartbeat pairs)."""
        defines = None if nodes is None else map_sizes(nodes, nodes if members is None else members)
        return super().compile(pin_dir=pin_dir, defines=defines)

    @property
    def sizes(self) -> dict[str, int]:
        """Each map's max_entries, as the kernel reports it."""
        return {name: _sys.map_info(fd).max_entries for name, fd in self.map_fds.items()}

    @property
    def memory(self) -> dict[str, int]:
        """Each map's kernel memory in bytes, as the kernel accounts it (``memlock`` in the map fd's fdinfo)."""
        return {name: _sys.map_memlock(fd) for name, fd in self.map_fds.items()}

    def attach(self, ifindex: int, *, netns: str | None = None, mode: str = "native", link: bool = False):
        """Context manager: the program on IFINDEX (inside NETNS, a name or a path) in "native" or "generic" mode.

        Refuses an interface that already has an XDP program; on exit removes ours and nothing else. With LINK, by
        a BPF link, which the kernel removes also when this process dies (`bpf._attach`).
        """
        from . import _attach
        return _attach.xdp_attached(self.prog_fd, ifindex, netns=netns, mode=mode, link=link)

    def configure(self, ifindex: int, cluster_id: int, port: int) -> None:
        """Start filtering for the node on IFINDEX: gossip of CLUSTER_ID to UDP PORT. Zeroes its counters."""
        if not 0 <= cluster_id <= _U32 or not 0 < port < 65536:
            raise BpfUsageError(f"configure: cluster_id must be a u32 and port 1..65535, got {cluster_id}, {port}")
        key = ctypes.c_uint32(ifindex)
        _sys.percpu_update(self.map_fds["fp_stats"], key, FpStats())
        _sys.map_update(self.map_fds["fp_writes"], key, FpWrites())
        _sys.map_update(self.map_fds["fp_config"], key, FpConfig(cluster_id=cluster_id, port=port))

    def unconfigure(self, ifindex: int) -> None:
        """Stop filtering for IFINDEX and forget what its node accepted (counters are kept for reading)."""
        key = ctypes.c_uint32(ifindex)
        _sys.map_delete(self.map_fds["fp_config"], key)
        writer = self.writer(ifindex)
        try:
            writer.reset()
        finally:
            writer.close()

    def stats(self, ifindex: int | None = None) -> dict[str, int]:
        """Counters of one node's interface, or summed over every configured interface.

        Keys: the drop reasons (dropped_foreign_cluster, dropped_unknown_version, dropped_malformed,
        dropped_duplicate, dropped_stale), passed_<type> for each judged message type (passed_swim: SWIM's
        PING, PING_REQ, STATE and GOSSIP), passed_other (not judged: not gossip for the node, or a type the program
        leaves to it), the totals passed (judged gossip passed) and dropped, and the writers' counters:
        hb_inserted, hb_evicted (pairs the LRU evicted that a node needed again: nonzero means the map is too
        small for the run), hb_capacity (the map's size, for every interface together) and swim_refused (SWIM
        sequences not written because fp_swim was full).
        """
        out = read_stats(self.map_fds["fp_stats"], ifindex, self.map_fds["fp_writes"])
        out["hb_capacity"] = self._hb_capacity
        return out

    @functools.cached_property
    def _hb_capacity(self) -> int:
        return _sys.map_info(self.map_fds["fp_heartbeat"]).max_entries

    def writer(self, ifindex: int) -> "FastPathWriter":
        """A writer sharing this process's map fds (for a node running in this process)."""
        return FastPathWriter.from_fds(ifindex, **{f"{name[3:]}_fd": self.map_fds[name] for name in WRITER_MAPS})


class FastPathWriter:
    """What a node uses to tell the fast path which versions it accepted. Cheap: one bpf(2) call per write.

    Open it from the pin directory the testbed hands the node (`FastPathWriter(pin_dir, ifindex)`), with IFINDEX
    the index of the node's own interface (`socket.if_nametoindex(iface)` inside the node's namespace). A node
    starting with empty state calls `reset()` first, so versions a previous run accepted do not drop its traffic.

    A heartbeat is written as an update of an existing pair (BPF_EXIST: one call, the usual case); when the pair is
    missing, it is created and counted in ``fp_writes``: as ``inserted``, and as ``evicted`` too when this writer
    had created that pair before, since only the LRU removes a running node's pairs. That counts each evicted pair
    the node needed again, at the origin's next accepted heartbeat: the evictions that let copies through. A pair
    evicted whose origin never sends again is not counted, and costs nothing.
    """

    def __init__(self, pin_dir: str, ifindex: int) -> None:
        fds = _sys.open_pinned_maps(pin_dir, WRITER_MAPS, MAPS)
        self._init(ifindex, fds["fp_heartbeat"], fds["fp_metadata"], fds["fp_stats"], fds["fp_writes"],
                   fds["fp_swim"])

    @classmethod
    def from_fds(cls, ifindex: int, *, heartbeat_fd: int, metadata_fd: int, swim_fd: int,
                 stats_fd: int | None = None, writes_fd: int | None = None) -> "FastPathWriter":
        """A writer on map fds this process already holds (they are duplicated: the caller keeps its own)."""
        self = cls.__new__(cls)
        self._init(ifindex, os.dup(heartbeat_fd), os.dup(metadata_fd),
                   os.dup(stats_fd) if stats_fd is not None else None,
                   os.dup(writes_fd) if writes_fd is not None else None, os.dup(swim_fd))
        return self

    def _init(self, ifindex: int, hb_fd: int, md_fd: int, stats_fd: int | None, writes_fd: int | None,
              swim_fd: int) -> None:
        self.ifindex = ifindex
        self._hb_fd, self._md_fd, self._stats_fd, self._writes_fd = hb_fd, md_fd, stats_fd, writes_fd
        self._swim_fd = swim_fd
        self._swim = FpSwim()
        # reused for every write: the hot path allocates nothing
        self._hb_key = FpHbKey(ifindex=ifindex)
        self._hb_seq = ctypes.c_uint64()
        self._md_key = ctypes.c_uint32(ifindex)
        self._md_version = FpVersion()
        self._writes = FpWrites()  # counted on from what an earlier process on this interface left
        if writes_fd is not None:
            _sys.map_lookup(writes_fd, self._md_key, self._writes)
        self._created: set[int] = set()  # origins whose pair this writer created
        self.hb_capacity = _sys.map_info(hb_fd).max_entries

    def heartbeat_accepted(self, origin: int, seq: int) -> None:
        """The node accepted ORIGIN's heartbeat SEQ: from now on the fast path drops copies of it and older ones."""
        if not 0 <= origin <= _U32 or not 0 <= seq <= _U64:
            raise BpfUsageError(f"heartbeat_accepted: origin {origin} / seq {seq} out of range")
        self._hb_key.origin = origin
        self._hb_seq.value = seq
        try:
            _sys.map_update(self._hb_fd, self._hb_key, self._hb_seq, _sys.BPF_EXIST)
        except MapError as e:
            if e.errno != errno.ENOENT:
                raise
            self._create(origin)

    def _create(self, origin: int) -> None:
        _sys.map_update(self._hb_fd, self._hb_key, self._hb_seq)
        self._writes.inserted += 1
        if origin in self._created:
            self._writes.evicted += 1
        else:
            self._created.add(origin)
        if self._writes_fd is not None:
            _sys.map_update(self._writes_fd, self._md_key, self._writes)

    def sequence_accepted(self, type: int, origin: int, seq: int) -> None:
        """The node took a message of wire TYPE from ORIGIN at SEQ and drops that type from ORIGIN at or below it
        from now on: so does the fast path. A type the program does not judge needs no state and is ignored."""
        field = SWIM_FIELDS.get(type)
        if field is None:
            return
        if not 0 <= origin <= _U32 or not 0 < seq <= _U64:
            raise BpfUsageError(f"sequence_accepted: origin {origin} / seq {seq} out of range")
        self._hb_key.origin = origin
        if not _sys.map_lookup(self._swim_fd, self._hb_key, self._swim):  # the value holds all four types
            ctypes.memset(ctypes.byref(self._swim), 0, ctypes.sizeof(FpSwim))
        setattr(self._swim, field, seq)
        try:
            _sys.map_update(self._swim_fd, self._hb_key, self._swim)
        except MapError as e:
            if e.errno != errno.E2BIG:
                raise
            self._writes.swim_refused += 1  # full: this origin's copies go on reaching the node, which drops them
            if self._writes_fd is not None:
                _sys.map_update(self._writes_fd, self._md_key, self._writes)

    def metadata_accepted(self, version: int, origin: int) -> None:
        """The node now holds metadata version (VERSION, ORIGIN): rumors and swap responses not newer are dropped,
        and swap requests carrying exactly this version."""
        if not 0 <= origin <= _U32 or not 0 <= version <= _U64:
            raise BpfUsageError(f"metadata_accepted: version {version} / origin {origin} out of range")
        self._md_version.seq = version
        self._md_version.origin = origin
        _sys.map_update(self._md_fd, self._md_key, self._md_version)

    def reset(self) -> None:
        """Forget every version and sequence recorded for this node (a walk of the heartbeat and SWIM maps, ~0.1 s
        each at 512 nodes' pairs: call it once, at start)."""
        _sys.map_delete(self._md_fd, self._md_key)
        key = FpHbKey(ifindex=self.ifindex)
        for fd, value_size in ((self._hb_fd, 8), (self._swim_fd, ctypes.sizeof(FpSwim))):
            pairs = memoryview(_sys.map_keys_bytes(fd, ctypes.sizeof(FpHbKey), value_size)).cast("I")
            for i, ifindex in enumerate(pairs[0::2]):  # (ifindex, origin) in host order, as FpHbKey lays them out
                if ifindex == self.ifindex:
                    key.origin = pairs[2 * i + 1]
                    _sys.map_delete(fd, key)
        self._created.clear()  # pairs gone by our own hand are not evictions

    def stats(self) -> dict[str, int]:
        """This node's fast-path counters (see `FastPath.stats`)."""
        if self._stats_fd is None:
            raise BpfUsageError("this writer was made without the stats map")
        out = read_stats(self._stats_fd, self.ifindex, self._writes_fd)
        out["hb_capacity"] = self.hb_capacity
        return out

    def close(self) -> None:
        for fd in (self._hb_fd, self._md_fd, self._stats_fd, self._writes_fd, self._swim_fd):
            if fd is not None and fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._hb_fd = self._md_fd = self._stats_fd = self._writes_fd = self._swim_fd = -1

    def __enter__(self) -> "FastPathWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


__all__ = ["FastPath", "FastPathWriter", "MapError", "map_sizes", "read_stats"]
