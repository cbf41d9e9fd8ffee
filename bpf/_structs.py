"""ctypes mirrors of the structs and constants in gossip_common.h.

Kept by hand beside the header; tests/bpf/test_structs.py compiles every program and compares each mirror's size
and field offsets with the types bcc derives from the C, so the two cannot drift apart unnoticed.
"""

from __future__ import annotations

import ctypes

# wire format v1 (docs/wire-format.md); gossip._wire is the codec, these are what the C sees
GOSSIP_MAGIC = 0x4750
GOSSIP_FORMAT_VERSION = 1
GOSSIP_HEADER_BYTES = 24
GOSSIP_MAC_BYTES = 16


class GossipHdr(ctypes.BigEndianStructure):
    _fields_ = [("magic", ctypes.c_uint16), ("version", ctypes.c_uint8), ("type", ctypes.c_uint8),
                ("cluster", ctypes.c_uint32), ("origin", ctypes.c_uint32), ("flags", ctypes.c_uint16),
                ("body_len", ctypes.c_uint16), ("seq", ctypes.c_uint64)]


# ---- XDP fast path ----
FP_MAX_NODES = 4096  # the defaults of a load that names no size (bpf/fastpath.py sizes the maps per run)
FP_MAX_HEARTBEATS = 131072
FP_MAX_SWIM = 131072


class FpConfig(ctypes.Structure):
    _fields_ = [("cluster_id", ctypes.c_uint32), ("port", ctypes.c_uint16), ("pad", ctypes.c_uint16)]


class FpHbKey(ctypes.Structure):
    _fields_ = [("ifindex", ctypes.c_uint32), ("origin", ctypes.c_uint32)]


class FpSwim(ctypes.Structure):
    _fields_ = [("ping", ctypes.c_uint64), ("ping_req", ctypes.c_uint64), ("state", ctypes.c_uint64),
                ("gossip", ctypes.c_uint64)]


class FpWrites(ctypes.Structure):
    _fields_ = [("inserted", ctypes.c_uint64), ("evicted", ctypes.c_uint64), ("swim_refused", ctypes.c_uint64)]


class FpVersion(ctypes.Structure):
    _fields_ = [("seq", ctypes.c_uint64), ("origin", ctypes.c_uint32), ("pad", ctypes.c_uint32)]


FP_STAT_NAMES = ("dropped_foreign_cluster", "dropped_unknown_version", "dropped_malformed", "dropped_duplicate",
                 "dropped_stale", "passed_heartbeat", "passed_metadata", "passed_swap_req", "passed_swap_resp",
                 "passed_swim", "passed_other")


class FpStats(ctypes.Structure):
    _fields_ = [("count", ctypes.c_uint64 * len(FP_STAT_NAMES))]


# ---- TC broadcaster ----
BC_MAX_TARGETS = 32
BC_MAX_SLOTS = 1024
BC_MARK = 0x42430001
BC_ID_HEAD, BC_ID_TAG = 24, 16  # a datagram's identity: its gossip header and its MAC


class BcTarget(ctypes.Structure):
    _fields_ = [("addr", ctypes.c_uint8 * 4), ("port", ctypes.c_uint8 * 2), ("mac", ctypes.c_uint8 * 6)]


class BcSlot(ctypes.Structure):
    _fields_ = [("armed", ctypes.c_uint64), ("generation", ctypes.c_uint64), ("done", ctypes.c_uint32),
                ("failed", ctypes.c_uint32), ("ifindex", ctypes.c_uint32), ("enabled", ctypes.c_uint16),
                ("sport", ctypes.c_uint8 * 2), ("count", ctypes.c_uint16), ("udp_len", ctypes.c_uint16),
                ("head", ctypes.c_uint8 * BC_ID_HEAD), ("tag", ctypes.c_uint8 * BC_ID_TAG), ("pad", ctypes.c_uint32),
                ("targets", BcTarget * BC_MAX_TARGETS)]


BC_STAT_NAMES = ("broadcasts", "copies", "clone_errors", "egress_drops", "mismatches", "stale", "torn", "passed")


class BcStats(ctypes.Structure):
    _fields_ = [("count", ctypes.c_uint64 * len(BC_STAT_NAMES))]


# ---- faults ----
FT_MAX_RULES = 16384
FT_GLOBAL = 0  # the ft_loss key of the whole network's rule


class FtMac(ctypes.Structure):
    _fields_ = [("addr", ctypes.c_uint8 * 6), ("pad", ctypes.c_uint16)]


FT_STAT_NAMES = ("from_node_seen", "from_node_dropped_loss", "from_node_passed", "to_node_seen",
                 "to_node_dropped_loss", "to_node_dropped_partition", "to_node_passed")


class FtStats(ctypes.Structure):
    _fields_ = [("count", ctypes.c_uint64 * len(FT_STAT_NAMES))]


# what each program's maps hold: (key type, value type), by map name; the struct test walks this
MAP_TYPES = {
    "xdp_fastpath.c": {"fp_config": (ctypes.c_uint32, FpConfig), "fp_heartbeat": (FpHbKey, ctypes.c_uint64),
                       "fp_metadata": (ctypes.c_uint32, FpVersion), "fp_stats": (ctypes.c_uint32, FpStats),
                       "fp_writes": (ctypes.c_uint32, FpWrites), "fp_swim": (FpHbKey, FpSwim)},
    "tc_broadcast.c": {"bc_slots": (ctypes.c_uint32, BcSlot), "bc_ifslot": (ctypes.c_uint32, ctypes.c_uint32),
                       "bc_stats": (ctypes.c_uint32, BcStats)},
    "faults.c": {"ft_loss": (ctypes.c_uint32, ctypes.c_uint64), "ft_side": (ctypes.c_uint32, ctypes.c_uint32),
                 "ft_node_mac": (ctypes.c_uint32, FtMac), "ft_stats": (ctypes.c_uint32, FtStats)},
}
