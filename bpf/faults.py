"""Loader for the fault programs (faults.c): random loss and partitions, changed at run time without reloading.

This kernel has no netem; these programs are the fallback nemesis. Attach them where the faults should act:
on a node's own interface (ingress: what it receives, egress: what it sends), or on the bridge-side end of its
veth, where egress acts before the node's XDP fast path sees anything (the "network" position). Partitions
are by IPv4 address and apply on every interface the program is attached to; loss is per interface and
optionally per peer address.
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import threading

from . import _attach, _sys
from ._compile import compile_program
from ._structs import FT_MAX_RULES, FT_STAT_NAMES, FtLossKey, FtStats
from .errors import BpfUsageError

C_FILE = "faults.c"
PROGRAMS = {"ingress": "faults_ingress", "egress": "faults_egress"}
MAPS = ("ft_loss", "ft_side", "ft_stats")


def _ip_key(ip: str) -> ctypes.c_uint32:
    try:
        packed = ipaddress.IPv4Address(ip).packed
    except (ipaddress.AddressValueError, ValueError):
        raise BpfUsageError(f"not an IPv4 address: {ip!r}") from None
    return ctypes.c_uint32.from_buffer_copy(packed)  # network order, as the program reads it


def _loss_key(ifindex: int, peer: str | None) -> FtLossKey:
    key = FtLossKey(ifindex=ifindex)
    if peer is not None:
        ctypes.memmove(key.peer, bytes(_ip_key(peer)), 4)
    return key


class Faults:
    """The compiled fault programs. Use as a context manager: leaving it releases them."""

    def __init__(self, bpf, prog_fds: dict[str, int]) -> None:
        self._bpf = bpf
        self.prog_fds = {direction: prog_fds[name] for direction, name in PROGRAMS.items()}
        self.map_fds = {name: bpf[name.encode()].map_fd for name in MAPS}
        self._lock = threading.Lock()

    @classmethod
    def compile(cls) -> "Faults":
        bpf, fds = compile_program(C_FILE, {name: "sched_cls" for name in PROGRAMS.values()})
        return cls(bpf, fds)

    def __enter__(self) -> "Faults":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._bpf is not None:
            self._bpf.cleanup()
            self._bpf = None

    @contextlib.contextmanager
    def attach(self, ifindex: int, *, netns: str | None = None, direction: str = "ingress"):
        """The fault programs on IFINDEX (inside NETNS) at "ingress", "egress" or "both" for the block.

        They run after the broadcaster on a shared egress hook, so a broadcast's copies are judged one by one.
        """
        if direction not in _attach.TC_DIRECTIONS:
            raise BpfUsageError(f"direction: must be one of {sorted(_attach.TC_DIRECTIONS)}, got {direction!r}")
        _sys.percpu_update(self.map_fds["ft_stats"], ctypes.c_uint32(ifindex), FtStats())
        fds = {d: self.prog_fds[d] for d in _attach.TC_DIRECTIONS[direction]}
        with _attach.tc_attached(fds, ifindex, netns=netns, prio=_attach.PRIO_FAULTS, name="faults"):
            yield

    def set_loss(self, ifindex: int, p: float, peer: str | None = None) -> None:
        """Drop each IPv4 packet crossing IFINDEX with probability P (0 removes the rule).

        With PEER, only packets from (ingress) or to (egress) that address; such a rule takes precedence over
        the interface's rule for any peer.
        """
        if not 0.0 <= p <= 1.0:
            raise BpfUsageError(f"loss probability must be within [0, 1], got {p!r}")
        key = _loss_key(ifindex, peer)
        if p == 0.0:
            _sys.map_delete(self.map_fds["ft_loss"], key)
        else:
            _sys.map_update(self.map_fds["ft_loss"], key, ctypes.c_uint64(round(p * (1 << 32))))

    def set_partition(self, groups: list[list[str]]) -> None:
        """Cut the network into GROUPS of addresses: packets between two groups are dropped, within one pass.
        Addresses in no group are unaffected. Replaces any previous partition."""
        seen: dict[str, int] = {}
        for side, group in enumerate(groups, start=1):
            for ip in group:
                if seen.setdefault(str(ipaddress.IPv4Address(ip)), side) != side:
                    raise BpfUsageError(f"set_partition: {ip} is in two groups")
        if len(seen) > FT_MAX_RULES:
            raise BpfUsageError(f"set_partition: at most {FT_MAX_RULES} addresses")
        with self._lock:
            self._clear("ft_side", ctypes.c_uint32)
            for ip, side in seen.items():
                _sys.map_update(self.map_fds["ft_side"], _ip_key(ip), ctypes.c_uint32(side))

    def heal(self) -> None:
        """End every fault: no partition, no loss."""
        with self._lock:
            self._clear("ft_side", ctypes.c_uint32)
            self._clear("ft_loss", FtLossKey)

    def _clear(self, name: str, key_type) -> None:
        fd = self.map_fds[name]
        for key in _sys.map_keys(fd, key_type):
            _sys.map_delete(fd, key)

    def stats(self, ifindex: int | None = None) -> dict[str, int]:
        """Counters (seen, dropped_loss, dropped_partition, passed) of one interface or of all."""
        return _sys.sum_percpu_counters(self.map_fds["ft_stats"], ifindex, FtStats, FT_STAT_NAMES)
