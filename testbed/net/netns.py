"""The network-namespace backend: `NetnsNetwork` turns a `Topology` into kernel objects with pyroute2.

One named namespace per host (``/var/run/netns/xg-<run_id>-<i>``), a veth pair per host (``eth0`` inside, with the
topology's ifindex, MAC and address; ``xg<short>h<i>`` in the root namespace, on the host's bridge) and the bridges
and trunks of the shape. It is the reference backend; `mininet` builds the same thing through Mininet. Both share
`base`; neither imports the other.
"""

from __future__ import annotations

import functools
import os

from pyroute2 import IPRoute

from . import cleanup as _cleanup
from .base import (Host, Network, add_bridge, add_trunk, attach_port, call_in_netns, configure_node, create_netns,
                   delete_links, disable_bridge_netfilter, stp_priority, wait_gone, wait_stp_settled)
from .topology import NETNS_RUN_DIR, Topology


class NetnsNetwork(Network):
    """The topology as named network namespaces, veth pairs and Linux bridges, built with pyroute2."""

    backend = "netns"

    def __init__(self, topology: Topology, run_id: str, *, settle_timeout_s: float | None = None) -> None:
        super().__init__(topology, run_id, settle_timeout_s=settle_timeout_s)
        self._ipr: IPRoute | None = None
        self._root_fd: int | None = None
        self._namespaces: list[str] = []
        self._links: list[str] = []  # root-side links created (one end of each veth pair suffices)

    def _bring_up(self) -> None:
        topo, names = self.topology, self.names
        disable_bridge_netfilter()
        self._ipr = ipr = IPRoute()
        self._root_fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        group = self.link_group
        bridge_index = []
        for j in range(topo.bridges or 1):
            self._links.append(names.bridge(j))
            bridge_index.append(
                add_bridge(
                    ipr,
                    names.bridge(j),
                    forward_delay_s=topo.stp_forward_delay_s,
                    max_age_s=topo.stp_max_age_s,
                    priority=stp_priority(j),
                    group=group,
                )
            )
        for trunk in topo.trunks:
            a, z = names.trunk(trunk.index, "a"), names.trunk(trunk.index, "z")
            self._links.append(a)
            add_trunk(ipr, a, z, bridge_index[trunk.a], bridge_index[trunk.b], group=group)
        hosts = []
        for spec in topo.hosts:
            ns, root_veth = names.netns(spec.index), names.host_veth(spec.index)
            create_netns(ns)
            self._namespaces.append(ns)
            self._links.append(root_veth)
            call_in_netns(ns, functools.partial(configure_node, spec, root_veth, self._root_fd, address=True))
            attach_port(ipr, root_veth, bridge_index[spec.bridge], group=group)
            hosts.append(
                Host(spec=spec, netns=ns, netns_path=f"{NETNS_RUN_DIR}/{ns}", root_veth=root_veth, network=self)
            )
        self._hosts = tuple(hosts)
        if topo.stp:
            wait_stp_settled(ipr, self, timeout_s=self.settle_timeout_s)

    def _tear_down(self) -> None:
        try:
            ns_ids = [_cleanup.netns_id(f"{NETNS_RUN_DIR}/{ns}") for ns in self._namespaces]
            _cleanup.kill_processes(_cleanup.processes_in_netns({i for i in ns_ids if i is not None}))
            if self._ipr is not None and self._links:
                delete_links(self._ipr, self._links, group=self.link_group, owns=self.names.owns_link)
            for ns in self._namespaces:
                _cleanup.remove_netns(ns)
            wait_gone(self._links, self._namespaces, timeout_s=10.0)
        finally:
            if self._ipr is not None:
                self._ipr.close()
            if self._root_fd is not None:
                os.close(self._root_fd)
            self._ipr, self._root_fd = None, None
