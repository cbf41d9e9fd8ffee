"""Loader and map access for the XDP fast path (xdp_fastpath.c).

Two sides, usually in two processes:

- `FastPath`, in the process that owns the testbed: compiles the program once, pins its maps to a bpffs, attaches
  the same program to every node's veth (each in its namespace) and tells it each node's cluster and port.
- `FastPathWriter`, in a node: opens the pinned maps with plain bpf(2) calls (no bcc, no compile) and records
  what the node accepted after verifying the MAC. The program never records anything on first sight, so nothing
  reaches the drop maps that the node has not accepted itself.
"""

from __future__ import annotations

import contextlib
import ctypes
import os

from . import _sys  # _attach (netlink) is imported where used: a node's writer never needs it
from ._compile import PinnedProgram
from ._structs import FP_STAT_NAMES, FpConfig, FpHbKey, FpStats, FpVersion
from .errors import BpfError, BpfUsageError, MapError

PIN_ROOT = _sys.PIN_ROOT
C_FILE = "xdp_fastpath.c"
PROGRAM = "xdp_fastpath"
# pinned file name -> (key type, value type)
MAPS = {"fp_config": (ctypes.c_uint32, FpConfig), "fp_heartbeat": (FpHbKey, ctypes.c_uint64),
        "fp_metadata": (ctypes.c_uint32, FpVersion), "fp_stats": (ctypes.c_uint32, FpStats)}
_U64 = (1 << 64) - 1
_U32 = (1 << 32) - 1


def read_stats(stats_fd: int, ifindex: int | None = None) -> dict[str, int]:
    """The fast path's counters for one interface, or summed over all of them (ifindex None)."""
    out = _sys.sum_percpu_counters(stats_fd, ifindex, FpStats, FP_STAT_NAMES)
    out["passed"] = sum(v for k, v in out.items() if k.startswith("passed_") and k != "passed_other")
    out["dropped"] = sum(v for k, v in out.items() if k.startswith("dropped_"))
    return out


def _check_map(fd: int, name: str) -> None:
    key_type, value_type = MAPS[name]
    info = _sys.map_info(fd)
    if (info.key_size, info.value_size) != (ctypes.sizeof(key_type), ctypes.sizeof(value_type)):
        raise BpfError(f"map {name}: key/value of {info.key_size}/{info.value_size} bytes, expected "
                       f"{ctypes.sizeof(key_type)}/{ctypes.sizeof(value_type)} (a pin from another version?)")


class FastPath(PinnedProgram):
    """The compiled fast path. Use as a context manager: leaving it unpins the maps and unloads the program.

    Attachments made with `attach` must end before the FastPath is closed (they are nested context managers).
    """

    C_FILE, PROGRAM, SECTION, KIND, MAPS = C_FILE, PROGRAM, "xdp", "fastpath", tuple(MAPS)

    def attach(self, ifindex: int, *, netns: str | None = None, mode: str = "native"):
        """Context manager: the program on IFINDEX (inside NETNS, a name or a path) in "native" or "generic" mode.

        Refuses an interface that already has an XDP program; on exit removes ours and nothing else.
        """
        from . import _attach
        return _attach.xdp_attached(self.prog_fd, ifindex, netns=netns, mode=mode)

    def configure(self, ifindex: int, cluster_id: int, port: int) -> None:
        """Start filtering for the node on IFINDEX: gossip of CLUSTER_ID to UDP PORT. Zeroes its counters."""
        if not 0 <= cluster_id <= _U32 or not 0 < port < 65536:
            raise BpfUsageError(f"configure: cluster_id must be a u32 and port 1..65535, got {cluster_id}, {port}")
        key = ctypes.c_uint32(ifindex)
        _sys.percpu_update(self.map_fds["fp_stats"], key, FpStats())
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
        dropped_duplicate, dropped_stale), passed_<type> for each message type, passed_other (not gossip for the
        node), and the totals passed (gossip passed) and dropped.
        """
        return read_stats(self.map_fds["fp_stats"], ifindex)

    def writer(self, ifindex: int) -> "FastPathWriter":
        """A writer sharing this process's map fds (for a node running in this process)."""
        return FastPathWriter.from_fds(ifindex, **{f"{name[3:]}_fd": self.map_fds[name]
                                                   for name in ("fp_heartbeat", "fp_metadata", "fp_stats")})


class FastPathWriter:
    """What a node uses to tell the fast path which versions it accepted. Cheap: one bpf(2) call per write.

    Open it from the pin directory the testbed hands the node (`FastPathWriter(pin_dir, ifindex)`), with IFINDEX
    the index of the node's own interface (`socket.if_nametoindex(iface)` inside the node's namespace). A node
    starting with empty state calls `reset()` first, so versions a previous run accepted do not drop its traffic.
    """

    def __init__(self, pin_dir: str, ifindex: int) -> None:
        fds: dict[str, int] = {}
        try:
            for name in ("fp_heartbeat", "fp_metadata", "fp_stats"):
                fds[name] = _sys.obj_get(os.path.join(pin_dir, name))
                _check_map(fds[name], name)
        except BaseException:
            for fd in fds.values():
                os.close(fd)
            raise
        self._init(ifindex, fds["fp_heartbeat"], fds["fp_metadata"], fds["fp_stats"])

    @classmethod
    def from_fds(cls, ifindex: int, *, heartbeat_fd: int, metadata_fd: int,
                 stats_fd: int | None = None) -> "FastPathWriter":
        """A writer on map fds this process already holds (they are duplicated: the caller keeps its own)."""
        self = cls.__new__(cls)
        self._init(ifindex, os.dup(heartbeat_fd), os.dup(metadata_fd),
                   os.dup(stats_fd) if stats_fd is not None else None)
        return self

    def _init(self, ifindex: int, hb_fd: int, md_fd: int, stats_fd: int | None) -> None:
        self.ifindex = ifindex
        self._hb_fd, self._md_fd, self._stats_fd = hb_fd, md_fd, stats_fd
        # reused for every write: the hot path allocates nothing
        self._hb_key = FpHbKey(ifindex=ifindex)
        self._hb_seq = ctypes.c_uint64()
        self._md_key = ctypes.c_uint32(ifindex)
        self._md_version = FpVersion()

    def heartbeat_accepted(self, origin: int, seq: int) -> None:
        """The node accepted ORIGIN's heartbeat SEQ: from now on the fast path drops copies of it and older ones."""
        if not 0 <= origin <= _U32 or not 0 <= seq <= _U64:
            raise BpfUsageError(f"heartbeat_accepted: origin {origin} / seq {seq} out of range")
        self._hb_key.origin = origin
        self._hb_seq.value = seq
        _sys.map_update(self._hb_fd, self._hb_key, self._hb_seq)

    def metadata_accepted(self, version: int, origin: int) -> None:
        """The node now holds metadata version (VERSION, ORIGIN): rumors and swap responses not newer are dropped,
        and swap requests carrying exactly this version."""
        if not 0 <= origin <= _U32 or not 0 <= version <= _U64:
            raise BpfUsageError(f"metadata_accepted: version {version} / origin {origin} out of range")
        self._md_version.seq = version
        self._md_version.origin = origin
        _sys.map_update(self._md_fd, self._md_key, self._md_version)

    def reset(self) -> None:
        """Forget every version recorded for this node (a walk of the heartbeat map: call it once, at start)."""
        _sys.map_delete(self._md_fd, self._md_key)
        for key in _sys.map_keys(self._hb_fd, FpHbKey):
            if key.ifindex == self.ifindex:
                _sys.map_delete(self._hb_fd, key)

    def stats(self) -> dict[str, int]:
        """This node's fast-path counters (see `FastPath.stats`)."""
        if self._stats_fd is None:
            raise BpfUsageError("this writer was made without the stats map")
        return read_stats(self._stats_fd, self.ifindex)

    def close(self) -> None:
        for fd in (self._hb_fd, self._md_fd, self._stats_fd):
            if fd is not None and fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._hb_fd = self._md_fd = self._stats_fd = -1

    def __enter__(self) -> "FastPathWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


__all__ = ["FastPath", "FastPathWriter", "MapError", "read_stats"]
