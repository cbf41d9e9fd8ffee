"""Topologies as data, and the names a run gives to what it creates in the kernel.

A `Topology` says how many hosts there are, how they are wired (one bridge, or a line, ring or tree of bridges
joined by veth "trunks") and which address, MAC and ifindex each host's interface gets. It is a pure description:
the backends in `netns` and `mininet` turn it into namespaces, links and bridges. `RunNames` derives every kernel
name from the run id, so that `_cleanup` can find what a run left behind, even a run killed without its teardown.

This module never touches the kernel, the network or the clock.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import math
import re
import secrets
from dataclasses import dataclass, field
from typing import Literal, get_args

from ..errors import TopologyError

Shape = Literal["bridge", "line", "ring", "tree"]
SHAPES: tuple[str, ...] = get_args(Shape)

DEFAULT_SUBNET = "10.77.0.0/16"
# Interface indexes of the hosts' eth0 start here. Every namespace counts from 1 (lo), so without an explicit index
# every host's eth0 would be 2; BPF maps shared between hosts are keyed by ingress ifindex and need them distinct.
DEFAULT_IFINDEX_BASE = 1000
MAX_NODES = 1024
BRIDGE_MAX_PORTS = 1023  # a Linux bridge numbers its ports 1..1023 (BR_MAX_PORTS 1024, port 0 unused): EXCHFULL beyond
MAX_BRIDGES = 256
MAX_RING_BRIDGES = 64  # STP's max age (<= 40 s in the kernel) must outlast a BPDU's trip round the ring
IFNAMSIZ = 16  # the kernel's limit, including the terminating NUL: names are at most 15 characters
NODE_IFNAME = "eth0"

PREFIX = "xg"
RUN_ID_ENV = "XG_RUN_ID"
NETNS_RUN_DIR = "/var/run/netns"
# The project's bpffs (mounted by the BPF loaders, shared by all runs; reachable from inside namespaces because it
# is not under /sys). A run pins under PIN_ROOT/<run_id>/.
PIN_ROOT = "/run/xdp-gossip/bpffs"
# A run in progress names its owner in RUNS_ROOT/<run_id> (see `cleanup.record_owner`), so that `clean()` without a
# run id can tell a run in progress from a killed one. The throwaway test networks record theirs apart, in
# TESTNETS_ROOT/<hex6>: their ids are valid run ids too.
RUNS_ROOT = "/run/xdp-gossip/runs"
TESTNETS_ROOT = "/run/xdp-gossip/testnets"

_RFC1918 = tuple(ipaddress.IPv4Network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"))
_RUN_ID_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")
_SHORT_RE = re.compile(r"[a-z0-9]{1,6}")
_SHORT_ALPHABET = str.maketrans("", "", "=")
# Any run's names, for `clean()` without a run id. Short ids are 1-6 of [a-z0-9]; the kind letter and number follow.
_ANY_LINK_RE = re.compile(rf"{PREFIX}[a-z0-9]{{1,6}}(?:h\d+|b\d+|t\d+[az])")
_ANY_NETNS_RE = re.compile(rf"{PREFIX}-([a-z0-9][a-z0-9-]*)-(\d+)")
_ANY_NFT_RE = re.compile(rf"{PREFIX}_[a-z0-9]{{1,6}}(?:_[a-z0-9_]+)?")
# The BPF tests' and root benchmarks' throwaway networks (tests/bpf/bpf_testnet.py): namespaces xgt-<hex6>-<k>,
# root links xt<hex6>r<k> (veth ends, their peers xt<hex6>n<k>) and xt<hex6>br (the bridge)
_TESTNET_ID_RE = re.compile(r"[0-9a-f]{6}")
_TESTNET_LINK_RE = re.compile(r"xt([0-9a-f]{6})(?:r\d+|n\d+|br)")
_TESTNET_NETNS_RE = re.compile(r"xgt-([0-9a-f]{6})-\d+")


def new_run_id() -> str:
    """A fresh random run id (6 characters, so it is also its own short id)."""
    return secrets.token_hex(3)


def check_run_id(run_id: str) -> str:
    """Return RUN_ID if it is valid (1-32 of [a-z0-9-], starting alphanumeric), else raise `TopologyError`."""
    if not isinstance(run_id, str) or not _RUN_ID_RE.fullmatch(run_id):
        raise TopologyError("run_id", f"{run_id!r} is not 1-32 characters of [a-z0-9-] starting with [a-z0-9]")
    return run_id


def short_id(run_id: str) -> str:
    """The part of the run id that fits into interface names (IFNAMSIZ): itself if 1-6 of [a-z0-9], else a hash."""
    check_run_id(run_id)
    if _SHORT_RE.fullmatch(run_id):
        return run_id
    digest = hashlib.blake2b(run_id.encode(), digest_size=8).digest()
    return base64.b32encode(digest).decode().translate(_SHORT_ALPHABET).lower()[:6]


@dataclass(frozen=True, slots=True)
class RunNames:
    """Every name a run creates, derived from its id.

    Namespaces are ``xg-<run_id>-<i>``; root-side links carry ``xg<short>`` (``h<i>`` for a host's veth, ``b<j>``
    for a bridge, ``t<k>a``/``t<k>z`` for the two ends of a trunk between bridges); nft tables in the root
    namespace are ``xg_<short>`` or ``xg_<short>_<purpose>``; pinned BPF objects live under
    ``/run/xdp-gossip/bpffs/<run_id>/``; every process carries ``XG_RUN_ID=<run_id>`` in its environment; while
    the run is in progress, ``/run/xdp-gossip/runs/<run_id>`` names its owner.
    """

    run_id: str
    short: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "short", short_id(self.run_id))

    def netns(self, index: int) -> str:
        return f"{PREFIX}-{self.run_id}-{index}"

    def host_veth(self, index: int) -> str:
        return self._ifname(f"h{index}")

    def bridge(self, index: int) -> str:
        return self._ifname(f"b{index}")

    def trunk(self, index: int, end: Literal["a", "z"]) -> str:
        if end not in ("a", "z"):
            raise TopologyError("end", f"trunk end must be 'a' or 'z', not {end!r}")
        return self._ifname(f"t{index}{end}")

    def nft_table(self, purpose: str = "") -> str:
        if purpose and not re.fullmatch(r"[a-z0-9_]+", purpose):
            raise TopologyError("purpose", f"{purpose!r} is not [a-z0-9_]+")
        return f"{PREFIX}_{self.short}" + (f"_{purpose}" if purpose else "")

    @property
    def pin_dir(self) -> str:
        return f"{PIN_ROOT}/{self.run_id}"

    @property
    def owner_record(self) -> str:
        return f"{RUNS_ROOT}/{self.run_id}"

    def owns_link(self, ifname: str) -> bool:
        return re.fullmatch(rf"{PREFIX}{self.short}(?:h\d+|b\d+|t\d+[az])", ifname) is not None

    def owns_netns(self, name: str) -> bool:
        return re.fullmatch(rf"{PREFIX}-{re.escape(self.run_id)}-\d+", name) is not None

    def owns_nft_table(self, name: str) -> bool:
        return re.fullmatch(rf"{PREFIX}_{self.short}(?:_[a-z0-9_]+)?", name) is not None

    def _ifname(self, suffix: str) -> str:
        name = f"{PREFIX}{self.short}{suffix}"
        if len(name) >= IFNAMSIZ:
            raise TopologyError("index", f"interface name {name!r} is longer than {IFNAMSIZ - 1} characters")
        return name


def is_project_link(ifname: str) -> bool:
    """True if IFNAME is a root-namespace link of some run (any run id)."""
    return _ANY_LINK_RE.fullmatch(ifname) is not None


def is_project_netns(name: str) -> bool:
    """True if NAME is a namespace of some run (any run id)."""
    return _ANY_NETNS_RE.fullmatch(name) is not None


def is_testnet_link(ifname: str) -> bool:
    """True if IFNAME is a root-namespace link of a BPF test's or benchmark's throwaway network."""
    return _TESTNET_LINK_RE.fullmatch(ifname) is not None


def is_testnet_netns(name: str) -> bool:
    """True if NAME is a namespace of a BPF test's or benchmark's throwaway network."""
    return _TESTNET_NETNS_RE.fullmatch(name) is not None


def testnet_id(name: str) -> str | None:
    """The ``<hex6>`` of a throwaway test network's namespace or root link NAME, None if NAME is not one."""
    m = _TESTNET_NETNS_RE.fullmatch(name) or _TESTNET_LINK_RE.fullmatch(name)
    return m[1] if m else None


def testnet_owner_record(testnet: str) -> str:
    """Where the throwaway test network TESTNET (its ``<hex6>``) names its owner while it is up."""
    if not _TESTNET_ID_RE.fullmatch(testnet):
        raise TopologyError("testnet", f"{testnet!r} is not 6 hex digits")
    return f"{TESTNETS_ROOT}/{testnet}"


def is_project_nft_table(name: str) -> bool:
    """True if NAME is an nft table of some run (any run id)."""
    return _ANY_NFT_RE.fullmatch(name) is not None


@dataclass(frozen=True, slots=True, kw_only=True)
class HostSpec:
    """One host of a topology: its interface ``eth0`` has this address, MAC and ifindex and sits on BRIDGE."""

    index: int
    name: str
    ip: str
    prefixlen: int
    mac: str
    ifindex: int
    bridge: int

    def __post_init__(self) -> None:
        _check_int("index", self.index, 0, MAX_NODES - 1)
        _check_int("prefixlen", self.prefixlen, 1, 30)
        _check_int("ifindex", self.ifindex, 2, 2**31 - 1)
        _check_int("bridge", self.bridge, 0, MAX_BRIDGES - 1)
        try:
            ipaddress.IPv4Address(self.ip)
        except ValueError as exc:
            raise TopologyError("ip", str(exc)) from None
        if not re.fullmatch(r"[0-9a-f]{2}(?::[0-9a-f]{2}){5}", self.mac) or int(self.mac[:2], 16) & 1:
            raise TopologyError("mac", f"{self.mac!r} is not a lowercase unicast MAC address")

    @property
    def cidr(self) -> str:
        return f"{self.ip}/{self.prefixlen}"


@dataclass(frozen=True, slots=True, kw_only=True)
class TrunkSpec:
    """A veth pair joining bridge A (end ``a``) to bridge B (end ``z``)."""

    index: int
    a: int
    b: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Topology:
    """NODES hosts wired as SHAPE inside SUBNET.

    ``bridge``: every host on one Linux bridge. ``line``: BRIDGES bridges in a chain, hosts spread over them in
    order (host 0 on the first, the last host on the last). ``ring``: the same chain closed into a loop, which the
    bridges' spanning tree (STP) breaks; bring-up then waits for STP to settle (2 x `stp_forward_delay_s`: 4 s for
    up to 4 bridges, 12 s for 16). ``tree``: a binary
    tree of bridges (bridge j's parent is (j-1)//2), hosts spread over all of them. BRIDGES defaults to 1 for
    ``bridge`` and to max(min(nodes, 3), ceil(nodes / 4)) otherwise.

    Host i is named ``h<i>``, has address ``subnet + 1 + i``, MAC ``02:00:<the four address bytes>`` and
    ifindex ``ifindex_base + i``. The subnet must be private: it exists only inside the run's namespaces and the
    bridges carry no address, so nothing in it is ever routed out of the root namespace.
    """

    nodes: int
    shape: Shape = "bridge"
    subnet: str = DEFAULT_SUBNET
    bridges: int | None = None
    ifindex_base: int = DEFAULT_IFINDEX_BASE
    hosts: tuple[HostSpec, ...] = field(init=False, repr=False, compare=False)
    trunks: tuple[TrunkSpec, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_int("nodes", self.nodes, 1, MAX_NODES)
        if self.shape not in SHAPES:
            raise TopologyError("shape", f"{self.shape!r} is not one of {', '.join(SHAPES)}")
        network = _check_subnet(self.subnet, self.nodes)
        bridges = self.bridges
        if bridges is None:
            bridges = 1 if self.shape == "bridge" else max(min(self.nodes, 3), math.ceil(self.nodes / 4))
        _check_int("bridges", bridges, 1, MAX_BRIDGES)
        if self.shape == "bridge" and bridges != 1:
            raise TopologyError("bridges", f"shape 'bridge' has exactly one bridge, not {bridges}")
        if self.shape == "ring" and bridges > MAX_RING_BRIDGES:
            raise TopologyError("bridges", f"a ring of {bridges} bridges is wider than STP's timers can span "
                                f"(at most {MAX_RING_BRIDGES})")
        _check_int("ifindex_base", self.ifindex_base, 2, 2**31 - self.nodes)
        object.__setattr__(self, "bridges", bridges)

        hosts = []
        for i in range(self.nodes):
            address = network.network_address + 1 + i
            hosts.append(
                HostSpec(
                    index=i,
                    name=f"h{i}",
                    ip=str(address),
                    prefixlen=network.prefixlen,
                    mac="02:00:" + ":".join(f"{b:02x}" for b in address.packed),
                    ifindex=self.ifindex_base + i,
                    bridge=i * bridges // self.nodes,
                )
            )
        object.__setattr__(self, "hosts", tuple(hosts))
        busiest = max(sum(1 for h in hosts if h.bridge == b) for b in range(bridges)) + (2 if bridges > 1 else 0)
        if busiest > BRIDGE_MAX_PORTS:
            raise TopologyError("shape", f"a Linux bridge holds at most {BRIDGE_MAX_PORTS:,} ports and {self.nodes:,} "
                                f"hosts on one need {busiest:,}: use shape line or tree with 2 or more bridges")

        pairs: list[tuple[int, int]] = []
        if self.shape in ("line", "ring"):
            pairs = [(j, j + 1) for j in range(bridges - 1)]
            if self.shape == "ring" and bridges >= 3:
                pairs.append((bridges - 1, 0))
        elif self.shape == "tree":
            pairs = [((j - 1) // 2, j) for j in range(1, bridges)]
        object.__setattr__(self, "trunks", tuple(TrunkSpec(index=k, a=a, b=b) for k, (a, b) in enumerate(pairs)))

    @property
    def stp(self) -> bool:
        """Whether the bridges run spanning tree: only a ring has a loop to break."""
        return self.shape == "ring" and len(self.trunks) >= 3

    @property
    def stp_forward_delay_s(self) -> int:
        """STP forward delay for this ring (0 without STP): a port forwards 2 x this after it comes up.

        Until then the root's BPDUs must have gone round the ring and blocked one port, or the ring loops and
        storms. That takes about a second for 16 bridges; the delay grows with the ring to keep a wide margin.
        The kernel's minimum is 2 s.
        """
        if not self.stp:
            return 0
        bridges = self.bridges or 1
        return 2 if bridges <= 4 else math.ceil(bridges / 4) + 2

    @property
    def stp_max_age_s(self) -> int:
        """STP max age for this ring (0 without STP): how long a bridge keeps the root's information.

        Each hop adds to a BPDU's age; on a big ring the kernel's minimum (6 s) is less than the age a BPDU reaches
        at the far side, the information expires there and the blocked port starts forwarding: a loop. 802.1D's
        rule max_age <= 2 x (forward_delay - 1) gives the largest value that is still consistent.
        """
        if not self.stp:
            return 0
        return max(6, 2 * (self.stp_forward_delay_s - 1))

    def host(self, key: int | str) -> HostSpec:
        """The host with index KEY (int) or name KEY (str, e.g. ``"h3"``)."""
        if isinstance(key, int) and not isinstance(key, bool) and 0 <= key < self.nodes:
            return self.hosts[key]
        if isinstance(key, str) and key.startswith("h") and key[1:].isdigit() and int(key[1:]) < self.nodes:
            return self.hosts[int(key[1:])]
        raise TopologyError("host", f"no host {key!r} in a topology of {self.nodes}")

    def hosts_on(self, bridge: int) -> tuple[HostSpec, ...]:
        return tuple(h for h in self.hosts if h.bridge == bridge)


def _check_int(name: str, value: object, low: int, high: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TopologyError(name, f"must be an integer, not {value!r}")
    if not low <= value <= high:
        raise TopologyError(name, f"{value} is not in [{low}, {high}]")


def _check_subnet(subnet: str, nodes: int) -> ipaddress.IPv4Network:
    try:
        network = ipaddress.IPv4Network(subnet, strict=True)
    except (ValueError, TypeError) as exc:
        raise TopologyError("subnet", f"{subnet!r} is not an IPv4 network: {exc}") from None
    if not any(network.subnet_of(private) for private in _RFC1918):
        raise TopologyError("subnet", f"{subnet} is not inside an RFC 1918 private range (e.g. {DEFAULT_SUBNET})")
    if network.prefixlen > 30 or network.num_addresses - 2 < nodes:
        raise TopologyError("subnet", f"{subnet} has no room for {nodes} hosts")
    return network
