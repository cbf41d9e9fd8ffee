"""The netns backend against the real kernel: connectivity, addressing, ifindexes, STP, and clean teardown."""

from __future__ import annotations

import pytest
from pyroute2 import IPRoute, netns
from tb_netcheck import alive, echo_from, needs_root, netns_inode, start_echo_servers, stop

from testbed.net import shell as _shell
from testbed.net.cleanup import find_leftovers
from testbed.net import make_network
from testbed.net.netns import NetnsNetwork
from testbed.net.topology import Topology
from testbed.errors import DeployError, TopologyError

pytestmark = [pytest.mark.root, pytest.mark.netns, needs_root]


def _link(ipr: IPRoute, ifname: str):
    links = ipr.get_links(ifname=ifname)
    assert links, f"no link {ifname}"
    return links[0]


def test_bridge_network_full_mesh_echo_and_clean_teardown(run_id):
    topo = Topology(nodes=6)
    with make_network("netns", topo, run_id) as net:
        assert isinstance(net, NetnsNetwork)
        hosts = net.hosts
        assert [h.netns for h in hosts] == [f"xg-{run_id}-{i}" for i in range(6)]
        assert all(h.netns_path == f"/var/run/netns/{h.netns}" for h in hosts)
        servers = start_echo_servers(hosts)
        try:
            for host in hosts:
                peers = [p for p in hosts if p is not host]
                assert echo_from(host, peers) == {p.name: True for p in peers}
        finally:
            stop(servers[:3])  # the others are left running: teardown must kill them
        pids = [s.pid for s in servers]
        ns_ids = {netns_inode(h.netns_path) for h in hosts}
    assert not any(alive(pid) for pid in pids)
    assert len(ns_ids) == 6
    assert find_leftovers(run_id).empty
    assert not [n for n in netns.listnetns() if n.startswith(f"xg-{run_id}-")]


def test_hosts_have_the_topology_ifindex_mac_and_address_and_no_ipv6(run_id):
    topo = Topology(nodes=5, ifindex_base=4242)
    with make_network("netns", topo, run_id) as net:
        seen = []
        for host in net.hosts:
            (link,) = _shell.ip_json("link", "show", "dev", "eth0", netns_path=host.netns_path)
            (addr,) = _shell.ip_json("-4", "addr", "show", "dev", "eth0", netns_path=host.netns_path)
            assert link["ifindex"] == host.ifindex == host.spec.ifindex
            assert link["address"] == host.mac and "UP" in link["flags"]
            assert [(a["local"], a["prefixlen"]) for a in addr["addr_info"]] == [(host.ip, 16)]
            assert _shell.ip_json("-6", "addr", "show", netns_path=host.netns_path) == []
            disabled = host.run(["cat", "/proc/sys/net/ipv6/conf/all/disable_ipv6"]).stdout.strip()
            assert disabled == "1"
            routes = _shell.ip_json("-4", "route", "show", netns_path=host.netns_path)
            assert [r["dst"] for r in routes] == ["10.77.0.0/16"]  # no default route: nothing leaves the subnet
            seen.append(link["ifindex"])
        assert seen == list(range(4242, 4247))
        with IPRoute() as ipr:
            bridge = _link(ipr, net.bridges[0])
            assert not list(ipr.get_addr(index=bridge["index"]))  # the bridge has no address: nothing routes out
            for host in net.hosts:
                veth = _link(ipr, host.root_veth)
                assert veth.get("master") == bridge["index"]
                assert veth.get("group") == net.link_group
    assert find_leftovers(run_id).empty


@pytest.mark.parametrize("shape", ["line", "tree", "ring"])
def test_multi_bridge_shapes_connect_end_to_end_across_trunks(run_id, shape):
    topo = Topology(nodes=8, shape=shape)
    assert topo.bridges == 3 and topo.hosts[0].bridge != topo.hosts[-1].bridge
    with make_network("netns", topo, run_id) as net:
        first, middle, last = net.host(0), net.host(4), net.host(7)
        with IPRoute() as ipr:
            before = {end: _link(ipr, end).get("stats64")["tx_packets"] for pair in net.trunks for end in pair}
        servers = start_echo_servers([first, middle, last])
        try:
            assert echo_from(first, [middle, last]) == {"h4": True, "h7": True}
            assert echo_from(last, [first, middle]) == {"h0": True, "h4": True}
        finally:
            stop(servers)
        with IPRoute() as ipr:
            after = {end: _link(ipr, end).get("stats64")["tx_packets"] for pair in net.trunks for end in pair}
            if shape == "ring":
                states = [
                    _link(ipr, end).get_nested("IFLA_LINKINFO", "IFLA_INFO_SLAVE_DATA", "IFLA_BRPORT_STATE")
                    for pair in net.trunks
                    for end in pair
                ]
                assert states.count(4) == 1 and states.count(3) == len(states) - 1  # one port blocks the loop
        assert any(after[end] > before[end] for end in after), "no packet crossed a trunk"
    assert find_leftovers(run_id).empty


def test_failed_bring_up_removes_what_it_made(run_id):
    netns.create(f"xg-{run_id}-3")  # a leftover in the way of host 3
    net = NetnsNetwork(Topology(nodes=6, shape="line"), run_id)
    with pytest.raises(DeployError, match="already exists"):
        net.__enter__()
    left = find_leftovers(run_id)
    assert left.namespaces == (f"xg-{run_id}-3",) and left.links == () and left.processes == ()
    with pytest.raises(DeployError):
        net.hosts  # noqa: B018


def test_network_is_single_use_and_validates_its_arguments(run_id):
    net = make_network("netns", Topology(nodes=2), run_id)
    with pytest.raises(DeployError):
        net.hosts  # noqa: B018 - not up yet
    with net:
        assert len(net.hosts) == 2
    with pytest.raises(DeployError):
        net.__enter__()
    with pytest.raises(DeployError):
        net.hosts[0]  # noqa: B018
    with pytest.raises(TopologyError):
        make_network("docker", Topology(nodes=2), run_id)
    with pytest.raises(TopologyError):
        make_network("netns", Topology(nodes=2), "Bad Id")
    with pytest.raises(TopologyError):
        make_network("netns", {"nodes": 2}, run_id)  # type: ignore[arg-type]


def test_exception_inside_the_block_still_tears_down(run_id):
    with pytest.raises(RuntimeError, match="boom"):
        with make_network("netns", Topology(nodes=3), run_id) as net:
            net.host(1).popen(["sleep", "60"])
            raise RuntimeError("boom")
    assert find_leftovers(run_id).empty


def test_two_runs_side_by_side_are_isolated(run_id, other_run_id):
    with (
        make_network("netns", Topology(nodes=3), run_id) as a,
        make_network("netns", Topology(nodes=3), other_run_id) as b,
    ):
        assert a.host(0).ip == b.host(0).ip  # same addresses, separate L2 domains
        servers = start_echo_servers([b.host(1)])
        try:
            # a's h1 runs no server: b's h1, at the same address, must not answer
            assert echo_from(a.host(0), [a.host(1)], attempts=3) == {"h1": False}
            assert echo_from(b.host(0), [b.host(1)]) == {"h1": True}
        finally:
            stop(servers)
    assert find_leftovers(run_id).empty and find_leftovers(other_run_id).empty


def test_the_arp_table_fits_every_host_knowing_every_other(run_id):
    """48 hosts that each reach the 47 others need 2,256 neighbour entries, beyond the kernel's default table
    (gc_thresh3 = 1,024, one table for all namespaces): the hosts that came last used to be mute, their UDP
    datagrams dropped without an error."""
    from testbed.net.base import NEIGH_SYSCTL

    topo = Topology(nodes=48)
    with make_network("netns", topo, run_id) as net:
        hosts = net.hosts
        with open(NEIGH_SYSCTL.format(3)) as fh:
            assert int(fh.read()) >= 48 * 47
        servers = start_echo_servers(hosts)
        try:
            silent = {}
            for host in hosts:
                reached = echo_from(host, [p for p in hosts if p is not host], attempts=5)
                missed = sorted(name for name, ok in reached.items() if not ok)
                if missed:
                    silent[host.name] = missed
            assert silent == {}
        finally:
            stop(servers)
    assert find_leftovers(run_id).empty


def test_fitting_the_arp_table_raises_thresholds_and_never_lowers_them(tmp_path, monkeypatch):
    """The threshold arithmetic, on files standing in for /proc/sys (no host setting is touched)."""
    from testbed.net import base

    for level, value in ((1, "128"), (2, "512"), (3, "9999999")):
        (tmp_path / f"t{level}").write_text(value)
    monkeypatch.setattr(base, "NEIGH_SYSCTL", str(tmp_path / "t{}"))
    base.fit_neighbour_table(64)
    got = [int((tmp_path / f"t{level}").read_text()) for level in (1, 2, 3)]
    need = 64 * 63 + 1024
    assert got[0] == need and got[1] == need + need // 4 and got[2] == 9999999
