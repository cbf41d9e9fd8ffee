"""Running networks: the `Network` interface both backends share, and the helpers they build hosts with.

`NetnsNetwork` turns a `Topology` into kernel objects with pyroute2: one named namespace per host
(``/var/run/netns/xg-<run_id>-<i>``), a veth pair per host (``eth0`` inside, with the topology's ifindex, MAC and
address; ``xg<short>h<i>`` in the root namespace, on the host's bridge) and the bridges and trunks of the shape.
Both backends (`netns`, `mininet`) build their hosts with the helpers below.

Configuring a namespace happens in a short-lived thread that `setns()`-es into it, so the netlink socket and the
``/proc/sys/net`` writes land there; the calling thread never leaves the root namespace. Every root-side link of a
run is put in one interface group, so teardown deletes them all in one kernel batch.

A network is a context manager and owns what it creates: `__exit__` (and a failed `__enter__`) kills the
processes left in its namespaces, deletes its links and namespaces, waits until they are gone, and raises
`DeployError` if something stayed. It never touches objects whose names do not carry its run id. From before it
creates anything until after its teardown, its run's owner record names this process, so ``python -m testbed
clean`` leaves the run alone while it is in progress.
"""

from __future__ import annotations

import abc
import errno
import functools
import hashlib
import ipaddress
import os
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, ClassVar, Literal, Self, TypeVar

from pyroute2 import IPRoute, netns
from pyroute2.netlink.exceptions import NetlinkError

from . import cleanup as _cleanup, shell as _shell
from .topology import NETNS_RUN_DIR, NODE_IFNAME, RUN_ID_ENV, HostSpec, RunNames, Topology, check_run_id
from ..errors import DeployError, TopologyError

T = TypeVar("T")
Backend = Literal["netns", "mininet"]
BACKENDS: tuple[str, ...] = ("netns", "mininet")

_CLOCK_T_PER_S = 100  # the kernel's bridge timers are in clock_t
_STP_HELLO_TIME_S = 1  # the kernel's minimum; forward delay and max age come from the topology
_BRPORT_FORWARDING, _BRPORT_BLOCKING = 3, 4
_BRIDGE_NF_SYSCTLS = ("bridge-nf-call-iptables", "bridge-nf-call-ip6tables", "bridge-nf-call-arptables")


class Host:
    """One host of a running network: its address data, its namespace, and a way to run processes in it.

    Processes run through ``nsenter --net``: they see the host's network, but the root's mounts (so ``/sys`` is
    the root's view and ``/sys/fs/bpf`` stays reachable; read interface data through netlink or
    ``socket.if_nametoindex``, not ``/sys/class/net``). Every process gets ``XG_RUN_ID`` in its environment, and
    the network kills whatever is still running at teardown.
    """

    __slots__ = ("spec", "netns", "netns_path", "root_veth", "_network")

    def __init__(self, *, spec: HostSpec, netns: str, netns_path: str, root_veth: str, network: Network) -> None:
        self.spec = spec
        self.netns = netns  # the namespace's name (netns backend) or the Mininet node's name
        self.netns_path = netns_path  # /var/run/netns/NAME or /proc/PID/ns/net
        self.root_veth = root_veth
        self._network = network

    name = property(lambda self: self.spec.name, doc="the topology's name, e.g. 'h3'")
    index = property(lambda self: self.spec.index)
    ip = property(lambda self: self.spec.ip)
    prefixlen = property(lambda self: self.spec.prefixlen)
    mac = property(lambda self: self.spec.mac)
    ifindex = property(lambda self: self.spec.ifindex, doc="ifindex of eth0 inside the namespace (unique per run)")
    intf = property(lambda self: NODE_IFNAME)

    @property
    def run_id(self) -> str:
        return self._network.run_id

    def argv(self, argv: Sequence[str]) -> list[str]:
        """ARGV wrapped to run inside this host."""
        return _shell.in_netns(self.netns_path, argv)

    def popen(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start ARGV inside this host; KWARGS go to `subprocess.Popen` (``env`` gets ``XG_RUN_ID`` added).

        The pid is ARGV's from the start, but for a moment it is still ``nsenter`` in the root namespace: wait for
        the process to show a sign of life before reading its ``/proc/PID/ns/net``.
        """
        self._network._require_up()
        env = dict(kwargs.pop("env", None) or os.environ)
        env[RUN_ID_ENV] = self.run_id
        proc = subprocess.Popen(self.argv(argv), env=env, **kwargs)
        self._network._track(proc)
        return proc

    def run(
        self, argv: Sequence[str], *, input: str | None = None, timeout_s: float = 30.0, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run a short command inside this host and return its result; `CommandError` if it fails."""
        self._network._require_up()
        return _shell.run(argv, netns_path=self.netns_path, input=input, timeout_s=timeout_s, check=check)

    def __repr__(self) -> str:
        return f"<Host {self.name} {self.spec.cidr} ifindex={self.ifindex} netns={self.netns}>"


class Network(abc.ABC):
    """A topology brought to life for one run; use as a context manager, once.

    ``with make_network("netns", Topology(nodes=8), run_id) as net: net.hosts[0].popen([...])``
    """

    backend: ClassVar[str]

    def __init__(self, topology: Topology, run_id: str, *, settle_timeout_s: float | None = None) -> None:
        if not isinstance(topology, Topology):
            raise TopologyError("topology", f"expected a Topology, not {type(topology).__name__}")
        self.topology = topology
        self.run_id = check_run_id(run_id)
        self.names = RunNames(run_id)
        # STP needs 2 x forward delay; past that plus a margin, something is wrong (maybe a storming loop): give up
        self.settle_timeout_s = settle_timeout_s or 2 * topology.stp_forward_delay_s + 10.0
        self._hosts: tuple[Host, ...] = ()
        self._state: Literal["new", "starting", "up", "down"] = "new"
        self._procs: list[subprocess.Popen[Any]] = []

    @property
    def hosts(self) -> tuple[Host, ...]:
        self._require_up()
        return self._hosts

    def host(self, key: int | str) -> Host:
        """The host with index KEY or topology name KEY (``"h3"``)."""
        return self.hosts[self.topology.host(key).index]

    @property
    def bridges(self) -> tuple[str, ...]:
        """Root-namespace names of the bridges, in topology order."""
        return tuple(self.names.bridge(j) for j in range(self.topology.bridges or 1))

    @property
    def trunks(self) -> tuple[tuple[str, str], ...]:
        """Root-namespace names of both ends of each trunk, in topology order."""
        return tuple((self.names.trunk(t.index, "a"), self.names.trunk(t.index, "z")) for t in self.topology.trunks)

    @property
    def link_group(self) -> int:
        return link_group(self.run_id)

    def __enter__(self) -> Self:
        if self._state != "new":
            raise DeployError(f"network {self.run_id} was already brought up; make a new one")
        self._state = "starting"
        try:
            # before anything exists, so `clean()` never finds a part of this run without finding it in progress
            _cleanup.record_owner(self.names.owner_record)
            fit_neighbour_table(len(self.topology.hosts))
            self._bring_up()
        except BaseException as exc:
            self._close(exc)
            raise
        self._state = "up"
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._close(exc)

    @abc.abstractmethod
    def _bring_up(self) -> None:
        """Create everything and fill ``self._hosts``; may stop half-way: `_tear_down` copes with that."""

    @abc.abstractmethod
    def _tear_down(self) -> None:
        """Remove everything this network created (and only that); raise `DeployError` if something stays."""

    def _close(self, exc: BaseException | None) -> None:
        if self._state == "down":
            return
        self._state = "down"
        try:
            try:
                self._kill_tracked()
            finally:
                try:
                    self._tear_down()
                finally:  # even if something stayed: from now on it is a leftover for `clean()` to remove
                    _cleanup.drop_owner_record(self.names.owner_record)
        except Exception as err:
            if exc is None:
                raise
            exc.add_note(f"teardown of network {self.run_id} also failed: {err}")

    def _require_up(self) -> None:
        if self._state != "up":
            raise DeployError(f"network {self.run_id} is {self._state}, not up")

    def _track(self, proc: subprocess.Popen[Any]) -> None:
        self._procs = [p for p in self._procs if p.returncode is None]
        self._procs.append(proc)

    def _kill_tracked(self) -> None:
        running = [p for p in self._procs if p.poll() is None]
        _cleanup.kill_processes([p.pid for p in running])  # the one kill helper: SIGCONT, SIGKILL, bounded wait
        for proc in running:
            proc.wait()  # reap: they are our children
        self._procs.clear()


# --- helpers shared with the Mininet backend --------------------------------------------------------------------


def link_group(run_id: str) -> int:
    """The interface group of RUN_ID's root-side links: a hash, well away from the small numbers people use."""
    digest = int.from_bytes(hashlib.blake2b(run_id.encode(), digest_size=4).digest(), "big")
    return 0x10000 + digest % (2**31 - 0x10000)


def call_in_netns(ns: str, fn: Callable[[], T], *, timeout_s: float = 30.0) -> T:
    """Run FN in a fresh thread that has joined namespace NS (a name or a path) and return its result.

    A thread's network namespace is its own, so the caller stays where it is, and the thread ends with FN.
    """
    outcome: list[tuple[bool, Any]] = []

    def target() -> None:
        try:
            netns.setns(ns, flags=0)
            outcome.append((True, fn()))
        except BaseException as exc:  # handed to the caller, re-raised there
            outcome.append((False, exc))

    thread = threading.Thread(target=target, name=f"in-netns-{ns}", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if not outcome:
        raise DeployError(f"configuring namespace {ns} took more than {timeout_s} s")
    ok, value = outcome[0]
    if not ok:
        raise value
    return value


def create_netns(name: str) -> None:
    """Create the named namespace; `DeployError` if it exists (a leftover: run ``python -m testbed clean``)."""
    try:
        netns.create(name)
    except FileExistsError:
        raise DeployError(f"namespace {name} already exists (leftover of a run? `python -m testbed clean`)") from None


def disable_bridge_netfilter() -> None:
    """Keep bridged frames out of the root namespace's iptables/arptables (``bridge-nf-call-*=0``)."""
    for name in _BRIDGE_NF_SYSCTLS:
        _write_sysctl(f"/proc/sys/net/bridge/{name}", "0")


NEIGH_SYSCTL = "/proc/sys/net/ipv4/neigh/default/gc_thresh{}"


def fit_neighbour_table(hosts: int) -> None:
    """Make the kernel's ARP table hold every host's view of every other host, never lowering a threshold.

    The table is one for all namespaces and, by default, full at 1,024 entries (``gc_thresh3``); 64 hosts that each
    know 63 peers need 4,032. Beyond the limit the kernel refuses new neighbours and a UDP ``sendto`` is dropped
    without an error (it counts as ``SndbufErrors``): the hosts started last were mute although their nodes ran.
    Garbage collection starts at ``gc_thresh1``, so that is raised to the need too (an entry collected in the
    middle of a run would cost an ARP round trip the simulator does not model).
    """
    need = hosts * max(hosts - 1, 0) + 1024  # one entry per ordered pair, and room for the machine's own
    for level, value in ((1, need), (2, need + need // 4), (3, need + need // 2)):
        path = NEIGH_SYSCTL.format(level)
        try:
            with open(path) as fh:
                current = int(fh.read())
        except (FileNotFoundError, ValueError):  # not the root namespace, or no IPv4: nothing to fit
            return
        if current < value:
            _write_sysctl(path, str(value))


def disable_ipv6(ifname: str = "all") -> None:
    """Disable IPv6 on IFNAME (or all and default) in the calling thread's namespace: no MLD/DAD noise."""
    for conf in ("all", "default") if ifname == "all" else (ifname,):
        _write_sysctl(f"/proc/sys/net/ipv6/conf/{conf}/disable_ipv6", "1")


def configure_node(spec: HostSpec, root_veth: str, root_fd: int, *, address: bool) -> None:
    """Inside a host's namespace: IPv6 off, lo up, ``eth0`` created with the spec's ifindex and MAC, its peer
    ROOT_VETH created in the namespace ROOT_FD refers to, and (if ADDRESS) eth0 addressed and up."""
    disable_ipv6()
    with IPRoute() as ipr:
        ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
        try:
            ipr.link(
                "add",
                ifname=NODE_IFNAME,
                index=spec.ifindex,
                address=spec.mac,
                kind="veth",
                peer={"ifname": root_veth, "net_ns_fd": root_fd},
            )
        except NetlinkError as exc:
            hint = " (leftover of a run? `python -m testbed clean`)" if exc.code == errno.EEXIST else ""
            raise DeployError(f"cannot create veth {NODE_IFNAME}/{root_veth} for {spec.name}: {exc}{hint}") from exc
        if address:
            network = ipaddress.IPv4Network(spec.cidr, strict=False)
            ipr.addr(
                "add",
                index=spec.ifindex,
                address=spec.ip,
                prefixlen=spec.prefixlen,
                broadcast=str(network.broadcast_address),
            )
            ipr.link("set", index=spec.ifindex, state="up")


def stp_priority(bridge: int) -> int:
    """STP priority of the topology's bridge number BRIDGE: the lowest wins the root election, so bridge 0 is the
    root, deterministically (by default the bridges' random MACs would decide)."""
    return 0x1000 + bridge


def add_bridge(
    ipr: IPRoute, name: str, *, forward_delay_s: int, max_age_s: int, priority: int, group: int
) -> int:
    """Create and bring up bridge NAME (no address, IPv6 off); returns its ifindex.

    With FORWARD_DELAY_S > 0 it runs spanning tree with these timers and bridge priority PRIORITY.
    """
    options: dict[str, Any] = {"br_stp_state": 0}
    if forward_delay_s > 0:
        options = {
            "br_stp_state": 1,
            "br_priority": priority,
            "br_forward_delay": forward_delay_s * _CLOCK_T_PER_S,
            "br_hello_time": _STP_HELLO_TIME_S * _CLOCK_T_PER_S,
            "br_max_age": max_age_s * _CLOCK_T_PER_S,
        }
    _link_add(ipr, ifname=name, kind="bridge", group=group, **options)
    index = ipr.link_lookup(ifname=name)[0]
    disable_ipv6(name)
    ipr.link("set", index=index, state="up")
    return index


def add_trunk(ipr: IPRoute, a: str, z: str, bridge_a: int, bridge_z: int, *, group: int) -> None:
    """A veth pair A-Z in the root namespace, A on BRIDGE_A and Z on BRIDGE_Z, both up."""
    _link_add(ipr, ifname=a, kind="veth", peer={"ifname": z}, group=group)
    attach_port(ipr, a, bridge_a, group=group)
    attach_port(ipr, z, bridge_z, group=group)


def attach_port(ipr: IPRoute, ifname: str, bridge: int, *, group: int) -> None:
    """Put root-namespace link IFNAME on BRIDGE (an ifindex), in GROUP, IPv6 off, up."""
    index = ipr.link_lookup(ifname=ifname)
    if not index:
        raise DeployError(f"link {ifname} did not appear in the root namespace")
    disable_ipv6(ifname)
    ipr.link("set", index=index[0], master=bridge, group=group, state="up")


def wait_stp_settled(ipr: IPRoute, net: Network, *, timeout_s: float) -> None:
    """Wait until spanning tree has blocked the ring's loop and every host port forwards."""
    host_ports = [net.names.host_veth(spec.index) for spec in net.topology.hosts]
    trunk_ports = [end for pair in net.trunks for end in pair]
    deadline = time.monotonic() + timeout_s
    while True:
        # one dump per round: a lookup per port would cost more CPU than the bridges have to spare
        states = {
            link.get("ifname"): link.get_nested("IFLA_LINKINFO", "IFLA_INFO_SLAVE_DATA", "IFLA_BRPORT_STATE")
            for link in ipr.get_links()
            if net.names.owns_link(link.get("ifname") or "")
        }
        hosts_ok = all(states.get(p) == _BRPORT_FORWARDING for p in host_ports)
        trunk_states = [states.get(p) for p in trunk_ports]
        trunks_ok = all(s in (_BRPORT_FORWARDING, _BRPORT_BLOCKING) for s in trunk_states)
        if hosts_ok and trunks_ok and _BRPORT_BLOCKING in trunk_states:
            return
        if time.monotonic() > deadline:
            raise DeployError(
                f"spanning tree did not settle in {timeout_s} s: trunk port states "
                + ", ".join(f"{p}={states.get(p)}" for p in trunk_ports)
            )
        time.sleep(0.2)


def delete_links(ipr: IPRoute, ifnames: Sequence[str], *, group: int, owns: Callable[[str], bool]) -> None:
    """Delete IFNAMES (with their veth peers) from the root namespace.

    When every member of GROUP is ours, one group delete removes them all in a single kernel batch (one RCU grace
    period instead of one per link); otherwise they go one by one.
    """
    members = [link.get("ifname") for link in ipr.get_links() if link.get("group") == group]
    if members and all(owns(name) for name in members):
        try:
            ipr.link("del", group=group)
        except NetlinkError as exc:
            raise DeployError(f"cannot delete link group {group:#x}: {exc}") from exc
    for name in ifnames:
        for index in ipr.link_lookup(ifname=name):
            try:
                ipr.link("del", index=index)
            except NetlinkError as exc:
                if exc.code != errno.ENODEV:
                    raise DeployError(f"cannot delete link {name}: {exc}") from exc


def wait_gone(ifnames: Sequence[str], namespaces: Sequence[str], *, timeout_s: float) -> None:
    """Wait until none of IFNAMES is in the root namespace and none of NAMESPACES is mounted; else `DeployError`."""
    wanted = set(ifnames)
    deadline = time.monotonic() + timeout_s
    with IPRoute() as ipr:
        while True:
            links = sorted(wanted.intersection(link.get("ifname") for link in ipr.get_links()))
            mounts = [ns for ns in namespaces if os.path.lexists(f"{NETNS_RUN_DIR}/{ns}")]
            if not links and not mounts:
                return
            if time.monotonic() > deadline:
                raise DeployError(f"still present {timeout_s} s after teardown: links {links}, namespaces {mounts}")
            time.sleep(0.02)


def _link_add(ipr: IPRoute, **kwargs: Any) -> None:
    try:
        ipr.link("add", **kwargs)
    except NetlinkError as exc:
        hint = " (leftover of a run? `python -m testbed clean`)" if exc.code == errno.EEXIST else ""
        raise DeployError(f"cannot create {kwargs.get('kind')} {kwargs.get('ifname')}: {exc}{hint}") from exc


def _write_sysctl(path: str, value: str) -> None:
    try:
        with open(path, "w") as fh:
            fh.write(value)
    except FileNotFoundError:  # the feature is not built into this kernel (or IPv6 is off): nothing to disable
        pass
    except OSError as exc:
        raise DeployError(f"cannot write {value} to {path}: {exc}") from exc

