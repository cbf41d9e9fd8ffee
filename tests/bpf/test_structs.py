"""The ctypes mirrors in bpf/_structs.py match the C in gossip_common.h, and every program passed the verifier.

bcc derives a ctypes type for each map's key and value from the compiled C; comparing those with the mirrors
(size and every field offset) catches a struct edited on one side only. Constants are compared by reading the
header's #defines and enums.
"""

from __future__ import annotations

import ctypes
import re
from pathlib import Path

import pytest

import bpf
from bpf import _structs as S
from gossip import _wire

pytestmark = [pytest.mark.root, pytest.mark.bpf]

HEADER = (Path(bpf.__file__).parent / "gossip_common.h").read_text()


def layout(t) -> list[tuple[int, int]]:
    """(offset, size) of every leaf field, depth first: names may differ, the bytes may not."""
    if not hasattr(t, "_fields_"):
        if issubclass(t, ctypes.Array):
            return [(0, ctypes.sizeof(t))]
        return [(0, ctypes.sizeof(t))]
    out = []
    for name, ftype, *_ in t._fields_:
        off = getattr(t, name).offset
        out += [(off + o, s) for o, s in layout(ftype)]
    return out


def defines() -> dict[str, int]:
    return {m[1]: int(m[2], 0) for m in re.finditer(r"^#define (\w+)\s+(0x[0-9a-fA-F]+|\d+)\b", HEADER, re.M)}


def enum_names(prefix: str) -> list[str]:
    body = re.search(r"enum %s \{(.*?)\};" % prefix, HEADER, re.S)[1]
    return [m[1] for m in re.finditer(r"^\s*(\w+)", re.sub(r"/\*.*?\*/", "", body, flags=re.S), re.M)]


@pytest.mark.parametrize("program", ["fastpath", "broadcaster", "faults"])
def test_map_types_match_the_mirrors(request, program):
    loaded = request.getfixturevalue(program)
    c_file = {"fastpath": "xdp_fastpath.c", "broadcaster": "tc_broadcast.c", "faults": "faults.c"}[program]
    for name, (key_type, value_type) in S.MAP_TYPES[c_file].items():
        table = loaded._bpf[name.encode()]
        leaf = getattr(table, "sLeaf", table.Leaf)  # per-CPU maps: bcc's Leaf is one value per CPU
        assert ctypes.sizeof(table.Key) == ctypes.sizeof(key_type), f"{c_file} {name} key size"
        assert ctypes.sizeof(leaf) == ctypes.sizeof(value_type), f"{c_file} {name} value size"
        assert layout(leaf) == layout(value_type), f"{c_file} {name} value layout"
        assert layout(table.Key) == layout(key_type), f"{c_file} {name} key layout"


def test_every_program_passed_the_verifier(fastpath, broadcaster, faults):
    for fd in [fastpath.prog_fd, broadcaster.prog_fd, *faults.prog_fds.values()]:
        assert bpf._sys.prog_id(fd) > 0


def test_constants_match_the_header_and_the_wire_codec():
    d = defines()
    assert d["GOSSIP_MAGIC"] == S.GOSSIP_MAGIC == _wire.MAGIC
    assert d["GOSSIP_FORMAT_VERSION"] == S.GOSSIP_FORMAT_VERSION == _wire.FORMAT_VERSION
    assert d["GOSSIP_HEADER_BYTES"] == S.GOSSIP_HEADER_BYTES == _wire.HEADER_BYTES == ctypes.sizeof(S.GossipHdr)
    assert d["GOSSIP_MAC_BYTES"] == S.GOSSIP_MAC_BYTES == _wire.MAC_BYTES
    for field in ("magic", "version", "type", "cluster", "origin", "flags", "body_len", "seq"):
        off = getattr(_wire, f"OFF_{field.upper()}")
        assert d[f"GOSSIP_OFF_{field.upper()}"] == off == getattr(S.GossipHdr, field).offset
    for name in ("FP_MAX_NODES", "FP_MAX_HEARTBEATS", "FP_MAX_SWIM", "BC_MAX_TARGETS", "BC_MAX_SLOTS", "BC_MARK", "FT_MAX_RULES",
                 "FT_GLOBAL"):
        assert d[name] == getattr(S, name), name
    assert {t.name: int(t) for t in _wire.MsgType} == {
        "HEARTBEAT": 1, "METADATA": 2, "SWAP_REQ": 3, "SWAP_RESP": 4, "LEAVE": 5,
        "PING": 6, "ACK": 7, "PING_REQ": 8, "NACK": 9, "STATE": 10, "GOSSIP": 11}
    assert enum_names("gossip_type") == [f"GOSSIP_{t.name}" for t in _wire.MsgType]


def test_stat_names_follow_the_enums():
    assert enum_names("fp_stat")[:-1] == ["FP_" + n.upper().replace("PASSED_", "PASS_").replace("DROPPED_", "DROP_")
                                          for n in S.FP_STAT_NAMES]
    assert enum_names("bc_stat")[:-1] == ["BC_" + n.upper() for n in S.BC_STAT_NAMES]
    assert enum_names("ft_stat")[:-1] == ["FT_" + n.upper().replace("DROPPED_", "DROP_") for n in S.FT_STAT_NAMES]
