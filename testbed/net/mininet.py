"""The Mininet backend: the same `Network` interface, built by Debian's Mininet with Linux bridges, no controller.

Mininet creates the hosts (a shell per host, each in its own unnamed namespace, reached through
``/proc/<pid>/ns/net``), the links and the switches, and configures the hosts' addresses; this module only
narrows it to what the testbed needs:

- hosts are named ``xg-<run_id>-<i>`` and their shells carry ``XG_RUN_ID``, so `_cleanup` finds them;
- each host's ``eth0`` is created inside its namespace with the topology's ifindex and MAC (Mininet cannot set
  an ifindex), its root-side peer named ``xg<short>h<i>`` as in the netns backend;
- the switch is `LinuxBridge` with ``brctl`` replaced by netlink (bridge-utils is not installed, and ``brctl``
  would only add ports whose names contain the bridge's name).

Teardown runs in ``finally``: the processes left in the hosts, then ``net.stop()``, then a sweep of Mininet's
shells and of the root links that carry the run id, and a check that nothing stayed.
"""

from __future__ import annotations

import functools
import os
from typing import Any

from mininet.link import Link
from mininet.net import Mininet
from mininet.node import Host as MnHost
from mininet.node import Switch
from mininet.nodelib import LinuxBridge
from mininet.topo import Topo
from pyroute2 import IPRoute

from . import cleanup as _cleanup
from .base import (
    Host,
    Network,
    add_bridge,
    attach_port,
    call_in_netns,
    configure_node,
    delete_links,
    disable_bridge_netfilter,
    link_group,
    stp_priority,
    wait_gone,
    wait_stp_settled,
)
from .topology import NODE_IFNAME, RUN_ID_ENV, HostSpec, RunNames, Topology
from ..errors import DeployError


class _RunIdShell:
    """Mixin: the node's shell (and so everything Mininet starts through it) carries ``XG_RUN_ID``."""

    xg_run_id: str

    def _popen(self, cmd: list[str], **params: Any) -> Any:
        params["env"] = {**(params.get("env") or os.environ), RUN_ID_ENV: self.xg_run_id}
        return super()._popen(cmd, **params)  # type: ignore[misc]


class _RunHost(_RunIdShell, MnHost):
    def __init__(self, name: str, *, xg_run_id: str, xg_spec: HostSpec, **params: Any) -> None:
        self.xg_run_id = xg_run_id
        self.xg_spec = xg_spec
        super().__init__(name, **params)

    @property
    def netns_path(self) -> str:
        return f"/proc/{self.pid}/ns/net"


class _RunBridge(_RunIdShell, LinuxBridge):
    """A Linux bridge configured over netlink; ``stp``/``prio`` keep LinuxBridge's meaning."""

    def __init__(self, name: str, *, xg_run_id: str, xg_group: int, xg_topology: Topology, **params: Any) -> None:
        self.xg_run_id = xg_run_id
        self.xg_group = xg_group
        self.xg_topology = xg_topology
        super().__init__(name, **params)

    @classmethod
    def setup(cls) -> None:
        pass  # LinuxBridge.setup only checks for brctl, which is not used here

    def connected(self) -> bool:
        return True  # STP convergence is awaited by the network as a whole (`wait_stp_settled`)

    def start(self, _controllers: Any) -> None:
        with IPRoute() as ipr:
            index = add_bridge(
                ipr,
                self.name,
                forward_delay_s=self.xg_topology.stp_forward_delay_s if self.stp else 0,
                max_age_s=self.xg_topology.stp_max_age_s,
                priority=self.prio,
                group=self.xg_group,
            )
            for intf in self.intfList():
                if intf.name != "lo":
                    attach_port(ipr, intf.name, index, group=self.xg_group)

    def stop(self, deleteIntfs: bool = True) -> None:
        with IPRoute() as ipr:
            for index in ipr.link_lookup(ifname=self.name):
                ipr.link("del", index=index)
        Switch.stop(self, deleteIntfs)


class _RunLink(Link):
    """A Mininet link whose host end is created inside the host with the topology's ifindex and MAC."""

    @classmethod
    def makeIntfPair(
        cls,
        intfname1: str,
        intfname2: str,
        addr1: str | None = None,
        addr2: str | None = None,
        node1: Any = None,
        node2: Any = None,
        deleteIntfs: bool = True,
    ) -> None:
        if not isinstance(node1, _RunHost):  # a trunk between two bridges: Mininet's own veth pair will do
            return super().makeIntfPair(intfname1, intfname2, addr1, addr2, node1, node2, deleteIntfs)
        if intfname1 != NODE_IFNAME:
            raise DeployError(f"host interface must be {NODE_IFNAME}, not {intfname1}")
        peer_fd = os.open(f"/proc/{node2.pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            call_in_netns(
                node1.netns_path, functools.partial(configure_node, node1.xg_spec, intfname2, peer_fd, address=False)
            )
        finally:
            os.close(peer_fd)
        return None


def _mininet_topo(topology: Topology, names: RunNames) -> Topo:
    topo = Topo()
    for j in range(topology.bridges or 1):
        # a dpid only because Switch insists on one; a Linux bridge has no use for it
        topo.addSwitch(names.bridge(j), dpid=f"{j + 1:016x}", stp=topology.stp, prio=stp_priority(j))
    for spec in topology.hosts:
        host = names.netns(spec.index)
        topo.addHost(host, ip=spec.cidr, mac=spec.mac, xg_spec=spec)
        topo.addLink(
            host,
            names.bridge(spec.bridge),
            intfName1=NODE_IFNAME,
            intfName2=names.host_veth(spec.index),
            addr1=spec.mac,
        )
    for trunk in topology.trunks:
        topo.addLink(
            names.bridge(trunk.a),
            names.bridge(trunk.b),
            intfName1=names.trunk(trunk.index, "a"),
            intfName2=names.trunk(trunk.index, "z"),
        )
    return topo


class MininetNetwork(Network):
    """The topology built by Mininet (hosts in namespaces, `LinuxBridge` switches over netlink, no controller)."""

    backend = "mininet"

    def __init__(self, topology: Topology, run_id: str, *, settle_timeout_s: float | None = None) -> None:
        super().__init__(topology, run_id, settle_timeout_s=settle_timeout_s)
        self._net: Mininet | None = None
        self._ns_ids: set[tuple[int, int]] = set()
        self._shell_pids: set[int] = set()

    @property
    def mininet(self) -> Mininet:
        """The underlying Mininet object, for Mininet-specific work (``net.mininet.pingAll()``)."""
        self._require_up()
        assert self._net is not None
        return self._net

    def _bring_up(self) -> None:
        disable_bridge_netfilter()
        group = link_group(self.run_id)
        self._net = net = Mininet(
            topo=_mininet_topo(self.topology, self.names),
            switch=functools.partial(
                _RunBridge,
                xg_run_id=self.run_id,
                xg_group=group,
                xg_topology=self.topology,
            ),
            host=functools.partial(_RunHost, xg_run_id=self.run_id),
            link=_RunLink,
            controller=None,
            ipBase=self.topology.subnet,
            build=False,
            waitConnected=False,
        )
        try:
            net.build()
        finally:  # even half-built: remember what teardown must sweep
            self._shell_pids.update(node.pid for node in net.hosts + net.switches if node.pid)
            for node in net.hosts:
                ns_id = _cleanup.netns_id(node.netns_path)
                if ns_id is not None:
                    self._ns_ids.add(ns_id)
        net.start()
        hosts = []
        for spec in self.topology.hosts:
            node = net.get(self.names.netns(spec.index))
            root_veth = self.names.host_veth(spec.index)
            host = Host(spec=spec, netns=node.name, netns_path=node.netns_path, root_veth=root_veth, network=self)
            hosts.append(host)
        self._hosts = tuple(hosts)
        if self.topology.stp:
            with IPRoute() as ipr:
                wait_stp_settled(ipr, self, timeout_s=self.settle_timeout_s)

    def _tear_down(self) -> None:
        names = self.names
        try:
            # processes started in the hosts, but not Mininet's own shells: net.stop() still talks to those
            strays = set(_cleanup.processes_in_netns(self._ns_ids)) - self._shell_pids
            _cleanup.kill_processes(strays)
        finally:
            try:
                if self._net is not None:
                    self._net.stop()
            finally:
                # Mininet's shells that outlived net.stop(); not by namespace: the hosts' namespaces are gone now and
                # their ids may already name someone else's
                shells = [pid for pid in self._shell_pids if _cleanup.environ_run_id(pid) == self.run_id]
                _cleanup.kill_processes(shells)
                links = [name for name in _cleanup.find_leftovers(self.run_id).links if names.owns_link(name)]
                if links:
                    with IPRoute() as ipr:
                        delete_links(ipr, links, group=link_group(self.run_id), owns=names.owns_link)
                wait_gone(self._expected_links(), (), timeout_s=10.0)
                self._net = None

    def _expected_links(self) -> list[str]:
        names, topo = self.names, self.topology
        links = [names.bridge(j) for j in range(topo.bridges or 1)]
        links += [names.host_veth(spec.index) for spec in topo.hosts]
        links += [names.trunk(t.index, end) for t in topo.trunks for end in ("a", "z")]
        return links
