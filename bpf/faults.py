"""Loader for the fault programs (faults.c): random loss and partitions that act where the network is, changed at
run time without reloading.

This kernel has no netem; these programs are the fallback nemesis. The testbed attaches them to the bridge-side
(root-namespace) end of every node's veth, both TC directions: `attach(if_nametoindex(host.root_veth),
node_mac=host.mac)`, netns None since that end lives in the root namespace. There:

- egress of that end carries what goes **to the node**, judged before the node's XDP program sees it, so a packet
  the "network" loses is never judged or counted by the node;
- ingress of that end carries what comes **from the node**, judged before the bridge forwards it.

The counters and rules are named by that meaning (`to_node_*`, `from_node_*`); attached to a node's own interface
(inside its namespace) the directions are swapped and the names would lie, so don't.

The rules mean what the simulator's (testbed/sim/_engine.py `_route`) mean: a packet from X to Y is kept with
probability (1 - global)(1 - loss[X])(1 - loss[Y]) and crosses only if X and Y are on the same side of the
partition. Each factor is judged once per packet: loss[X] on the way out of X, then the partition, the global
loss and loss[Y] on the way into Y. So global loss and partitions need the programs on every node's veth. Only
unicast IPv4 is judged and counted; ARP, multicast, broadcast and the rest always pass (see faults.c for why),
as do the copies of a frame the bridge floods to ports other than its destination's.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import ipaddress
import math
import numbers
import threading

from . import _attach, _sys
from ._compile import compile_program
from ._structs import FT_GLOBAL, FT_MAX_RULES, FT_STAT_NAMES, FtMac, FtStats
from .errors import BpfUsageError

C_FILE = "faults.c"
# by TC hook of the bridge-side veth end: its egress is toward the node, its ingress from it
PROGRAMS = {"ingress": "faults_from_node", "egress": "faults_to_node"}
MAPS = ("ft_loss", "ft_side", "ft_node_mac", "ft_stats")


def _ip_key(ip) -> ctypes.c_uint32:
    try:
        packed = ipaddress.IPv4Address(ip).packed
    except (ipaddress.AddressValueError, ValueError, TypeError):
        raise BpfUsageError(f"not an IPv4 address: {ip!r}") from None
    return ctypes.c_uint32.from_buffer_copy(packed)  # network order, as the program reads it


def _mac(text) -> FtMac:
    try:
        octets = bytes.fromhex(text.replace(":", "")) if isinstance(text, str) and text.count(":") == 5 else b""
    except ValueError:
        octets = b""
    if len(octets) != 6 or octets[0] & 1:
        raise BpfUsageError(f"node_mac: not a unicast MAC address like 02:00:00:00:00:01: {text!r}")
    return FtMac(addr=(ctypes.c_uint8 * 6)(*octets))


def _check_ifindex(ifindex) -> int:
    if isinstance(ifindex, bool) or not isinstance(ifindex, int) or not 0 < ifindex < 1 << 32:
        raise BpfUsageError(f"ifindex: must be a positive interface index, got {ifindex!r}")
    return ifindex


class Faults:
    """The compiled fault programs. Use as a context manager: leaving it releases them."""

    def __init__(self, bpf, prog_fds: dict[str, int]) -> None:
        self._bpf = bpf
        self.prog_fds = {hook: prog_fds[name] for hook, name in PROGRAMS.items()}
        self.map_fds = {name: bpf[name.encode()].map_fd for name in MAPS}
        self._lock = threading.Lock()
        self._attached: collections.Counter[int] = collections.Counter()  # ifindex -> attachments in force

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
    def attach(self, ifindex: int, *, netns: str | None = None, direction: str = "both",
               node_mac: str | None = None):
        """The fault programs on IFINDEX for the block: the bridge-side end of a node's veth (NETNS None, the root
        namespace), at TC "egress" (to the node), "ingress" (from the node) or "both".

        NODE_MAC is the MAC of the node's own end. The program needs it to tell the copies of a frame the bridge
        floods (for a MAC it has not learned) from frames for this node, and learns it from the first frame the
        node sends; give it when known, and flood copies are left alone from the start.

        The interface's counters and node MAC start afresh unless it is attached already. On a hook shared with
        the broadcaster they run after it, so a broadcast's copies are judged one by one.
        """
        if direction not in _attach.TC_DIRECTIONS:
            raise BpfUsageError(f"direction: must be one of {sorted(_attach.TC_DIRECTIONS)}, got {direction!r}")
        key = ctypes.c_uint32(_check_ifindex(ifindex))
        mac = None if node_mac is None else _mac(node_mac)
        with self._lock:
            if not self._attached[ifindex]:
                # ifindexes can be reused (the testbed picks them): nothing of an earlier interface may remain
                _sys.percpu_update(self.map_fds["ft_stats"], key, FtStats())
                _sys.map_delete(self.map_fds["ft_node_mac"], key)
            if mac is not None:
                _sys.map_update(self.map_fds["ft_node_mac"], key, mac)
            self._attached[ifindex] += 1
        try:
            fds = {hook: self.prog_fds[hook] for hook in _attach.TC_DIRECTIONS[direction]}
            with _attach.tc_attached(fds, ifindex, netns=netns, prio=_attach.PRIO_FAULTS, name="faults"):
                yield
        finally:
            with self._lock:
                self._attached[ifindex] -= 1
                if not self._attached[ifindex]:
                    del self._attached[ifindex]

    def set_loss(self, p: float, *, ifindex: int | None = None) -> None:
        """Drop unicast IPv4 packets with probability P (0 removes the rule).

        Without IFINDEX, the whole network's rule: every packet to any node, judged once on its way into the
        receiver. With IFINDEX (the bridge-side veth end of a node), that node's rule: packets to it and packets
        from it. A packet meeting several rules is kept only if it survives each.
        """
        if isinstance(p, bool) or not isinstance(p, numbers.Real) or not (math.isfinite(p) and 0.0 <= p <= 1.0):
            raise BpfUsageError(f"loss probability must be a number within [0, 1], got {p!r}")
        key = ctypes.c_uint32(FT_GLOBAL if ifindex is None else _check_ifindex(ifindex))
        with self._lock:
            if p == 0.0:
                _sys.map_delete(self.map_fds["ft_loss"], key)
            else:
                # p = 1 gives 2^32, above every prandom_u32: everything is dropped
                _sys.map_update(self.map_fds["ft_loss"], key, ctypes.c_uint64(round(p * (1 << 32))))

    def set_partition(self, groups) -> None:
        """Cut the network into GROUPS of IPv4 addresses: a packet between two groups is dropped on its way into
        the receiver, one within a group passes. Addresses in no group are unaffected, so callers that want "no
        group" to be a side of its own put those addresses in a group. Replaces any previous partition; an empty
        list ends it."""
        sides: dict[int, int] = {}
        for side, group in enumerate(groups, start=1):
            if isinstance(group, (str, bytes)):
                raise BpfUsageError(f"set_partition: each group must be a list of addresses, got {group!r}")
            for ip in group:
                key = _ip_key(ip).value
                if sides.setdefault(key, side) != side:
                    raise BpfUsageError(f"set_partition: {ip} is in two groups")
        if len(sides) > FT_MAX_RULES:
            raise BpfUsageError(f"set_partition: at most {FT_MAX_RULES} addresses, got {len(sides)}")
        with self._lock:
            # cleared first: while it fills, the partition only lets through more than it will, never less
            self._clear("ft_side")
            for key, side in sides.items():
                _sys.map_update(self.map_fds["ft_side"], ctypes.c_uint32(key), ctypes.c_uint32(side))

    def heal(self) -> None:
        """End every fault: no partition, no loss anywhere."""
        with self._lock:
            self._clear("ft_side")
            self._clear("ft_loss")

    def _clear(self, name: str) -> None:
        fd = self.map_fds[name]
        for key in _sys.map_keys(fd, ctypes.c_uint32):
            _sys.map_delete(fd, key)

    def stats(self, ifindex: int | None = None) -> dict[str, int]:
        """The counters of one bridge-side interface (or summed over all), unicast IPv4 packets only:
        from_node_{seen, dropped_loss, passed} and to_node_{seen, dropped_loss, dropped_partition, passed}.
        In each direction seen = passed + the drops; to_node_passed is what reaches the node's interface (its
        XDP program, if any, judges it next)."""
        if ifindex is not None:
            _check_ifindex(ifindex)
        return _sys.sum_percpu_counters(self.map_fds["ft_stats"], ifindex, FtStats, FT_STAT_NAMES)
