"""Topologies are data: addresses, MACs, ifindexes, bridge placement and names, all checked without the kernel."""

from __future__ import annotations

import dataclasses
import ipaddress

import pytest

from testbed.net import shell as _shell
from testbed.net.topology import (
    IFNAMSIZ,
    MAX_BRIDGES,
    MAX_NODES,
    RunNames,
    Topology,
    TrunkSpec,
    check_run_id,
    is_project_link,
    is_project_netns,
    is_project_nft_table,
    is_testnet_link,
    is_testnet_netns,
    new_run_id,
    short_id,
)
from testbed.errors import CommandError, ScenarioError, TopologyError


def test_default_is_one_bridge_with_distinct_addresses_macs_and_ifindexes():
    topo = Topology(nodes=6)
    assert topo.shape == "bridge" and topo.bridges == 1 and topo.trunks == () and not topo.stp
    assert [h.name for h in topo.hosts] == [f"h{i}" for i in range(6)]
    assert [h.ip for h in topo.hosts] == [f"10.77.0.{i}" for i in range(1, 7)]
    assert [h.ifindex for h in topo.hosts] == list(range(1000, 1006))
    assert topo.hosts[0].mac == "02:00:0a:4d:00:01"
    assert len({h.mac for h in topo.hosts}) == 6
    assert {h.bridge for h in topo.hosts} == {0}
    assert topo.hosts[2].cidr == "10.77.0.3/16"


def test_addresses_stay_inside_the_subnet_at_the_largest_size():
    topo = Topology(nodes=MAX_NODES, subnet="10.99.0.0/21", shape="line", bridges=2)  # one bridge: 1,023 ports
    subnet = ipaddress.IPv4Network("10.99.0.0/21")
    assert all(ipaddress.IPv4Address(h.ip) in subnet for h in topo.hosts)
    assert len({h.ip for h in topo.hosts}) == len({h.mac for h in topo.hosts}) == MAX_NODES
    assert topo.hosts[-1].ip != str(subnet.broadcast_address)


def test_one_bridge_holds_1023_hosts_and_no_more():
    assert len(Topology(nodes=1023).hosts_on(0)) == 1023
    with pytest.raises(TopologyError, match="at most 1,023 ports"):
        Topology(nodes=1024)


def test_line_spreads_hosts_in_order_over_a_chain_of_bridges():
    topo = Topology(nodes=8, shape="line")
    assert topo.bridges == 3
    assert topo.trunks == (TrunkSpec(index=0, a=0, b=1), TrunkSpec(index=1, a=1, b=2))
    placement = [h.bridge for h in topo.hosts]
    assert placement == sorted(placement) and placement[0] == 0 and placement[-1] == 2
    assert all(topo.hosts_on(j) for j in range(3))


def test_ring_closes_the_chain_and_runs_stp():
    topo = Topology(nodes=12, shape="ring")
    assert topo.bridges == 3
    assert [(t.a, t.b) for t in topo.trunks] == [(0, 1), (1, 2), (2, 0)]
    assert topo.stp
    assert not Topology(nodes=2, shape="ring").stp  # two bridges cannot form a ring


def test_stp_timers_grow_with_the_ring_and_stay_within_the_kernels_limits():
    assert (Topology(nodes=2).stp_forward_delay_s, Topology(nodes=2).stp_max_age_s) == (0, 0)
    small = Topology(nodes=12, shape="ring")
    assert (small.stp_forward_delay_s, small.stp_max_age_s) == (2, 6)
    big = Topology(nodes=64, shape="ring")
    assert big.bridges == 16 and (big.stp_forward_delay_s, big.stp_max_age_s) == (6, 10)
    widest = Topology(nodes=MAX_NODES, shape="ring", bridges=64)
    assert widest.stp_forward_delay_s <= 30 and widest.stp_max_age_s <= 40
    assert 2 * (widest.stp_forward_delay_s - 1) >= widest.stp_max_age_s
    with pytest.raises(TopologyError):
        Topology(nodes=MAX_NODES, shape="ring", bridges=65)


def test_tree_links_each_bridge_to_its_parent():
    topo = Topology(nodes=14, shape="tree", bridges=7)
    assert [(t.a, t.b) for t in topo.trunks] == [(0, 1), (0, 2), (1, 3), (1, 4), (2, 5), (2, 6)]
    assert not topo.stp


def test_host_lookup_by_index_and_name():
    topo = Topology(nodes=4)
    assert topo.host(2) is topo.host("h2") is topo.hosts[2]
    for bad in (4, -1, "h4", "n1", True):
        with pytest.raises(TopologyError):
            topo.host(bad)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"nodes": 0}, "nodes"),
        ({"nodes": MAX_NODES + 1}, "nodes"),
        ({"nodes": True}, "nodes"),
        ({"nodes": 4, "shape": "star"}, "shape"),
        ({"nodes": 4, "subnet": "8.8.8.0/24"}, "subnet"),
        ({"nodes": 4, "subnet": "127.0.0.0/8"}, "subnet"),
        ({"nodes": 4, "subnet": "10.77.0.1/16"}, "subnet"),
        ({"nodes": 4, "subnet": "fd00::/64"}, "subnet"),
        ({"nodes": 3, "subnet": "10.0.0.0/30"}, "subnet"),
        ({"nodes": 4, "bridges": 2}, "bridges"),
        ({"nodes": 4, "shape": "line", "bridges": 0}, "bridges"),
        ({"nodes": 4, "shape": "line", "bridges": MAX_BRIDGES + 1}, "bridges"),
        ({"nodes": 4, "ifindex_base": 1}, "ifindex_base"),
    ],
)
def test_invalid_topologies_name_the_field(kwargs, field):
    with pytest.raises(TopologyError) as info:
        Topology(**kwargs)
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: ")


def test_topology_is_frozen_and_keyword_only():
    topo = Topology(nodes=2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        topo.nodes = 3  # type: ignore[misc]
    with pytest.raises(TypeError):
        Topology(2)  # type: ignore[misc]
    assert topo == Topology(nodes=2, bridges=1)


def test_run_names_fit_ifnamsiz_and_carry_the_run_id():
    names = RunNames("abc123")
    longest = [names.host_veth(MAX_NODES - 1), names.bridge(MAX_BRIDGES - 1), names.trunk(MAX_BRIDGES - 1, "z")]
    assert all(len(n) < IFNAMSIZ for n in longest)
    assert names.netns(7) == "xg-abc123-7"
    assert names.host_veth(3) == "xgabc123h3"
    assert names.bridge(0) == "xgabc123b0"
    assert names.trunk(1, "a") == "xgabc123t1a"
    assert names.nft_table() == "xg_abc123" and names.nft_table("part") == "xg_abc123_part"
    assert names.pin_dir.endswith("/abc123")
    assert names.owns_link("xgabc123h3") and names.owns_link("xgabc123t1z")
    assert not names.owns_link("xgabc12h3") and not names.owns_link("xgabc123h")
    assert names.owns_netns("xg-abc123-0") and not names.owns_netns("xg-abc1234-0")
    assert names.owns_nft_table("xg_abc123_part") and not names.owns_nft_table("xg_abc1234")


def test_long_run_ids_get_a_stable_short_id():
    rid = "2025-06-01-partition-64"
    assert short_id(rid) == short_id(rid) and len(short_id(rid)) == 6
    assert short_id(rid) != short_id(rid + "x")
    assert short_id("ab1") == "ab1"
    names = RunNames(rid)
    assert len(names.host_veth(MAX_NODES - 1)) < IFNAMSIZ
    assert names.netns(0) == f"xg-{rid}-0"


def names_of_a_run() -> str:
    return RunNames(new_run_id()).netns(3)


def test_project_name_patterns_match_any_run_but_nothing_else():
    names = RunNames(new_run_id())
    assert is_project_link(names.host_veth(5)) and is_project_link(names.trunk(2, "a"))
    assert is_project_netns(names.netns(5)) and is_project_nft_table(names.nft_table("x"))
    for other in ("eth0", "xgt-abc123-1", "docker0", "xgabc123br", "xgabc123r1", "xg-"):
        assert not is_project_link(other) and not is_project_netns(other)


def test_the_bpf_tests_throwaway_networks_are_known_to_clean_and_nothing_else():
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bpf"))
    from bpf_testnet import Testnet  # tests/bpf: the names it makes

    net = Testnet(2, bridge=True)  # names only: nothing is built before __enter__
    ns, host, node, bridge = f"xgt-{net.run_id}-1", f"xt{net.run_id}r1", f"xt{net.run_id}n1", f"xt{net.run_id}br"
    assert is_testnet_netns(ns) and all(is_testnet_link(x) for x in (host, node, bridge))
    for other in ("eth0", "xg-abc123-1", "xgt-abc12-1", "xtabc123", "xtabc123x1", "docker0", names_of_a_run()):
        assert not is_testnet_link(other) and not is_testnet_netns(other)


@pytest.mark.parametrize("bad", ["", "A1", "-a", "a b", "a" * 33, "a/b", 5])
def test_bad_run_ids_are_refused(bad):
    with pytest.raises(TopologyError):
        check_run_id(bad)  # type: ignore[arg-type]


def test_scenario_error_names_file_line_and_field():
    err = ScenarioError("s.yaml", 12, "timeline[3].at", "must be >= 0")
    assert str(err) == "s.yaml:12: timeline[3].at: must be >= 0"
    assert isinstance(err, ValueError)


def test_command_error_carries_the_command_and_its_stderr():
    with pytest.raises(CommandError) as info:
        _shell.ip("link", "show", "dev", "xg-no-such-link")
    assert "ip link show dev xg-no-such-link" in str(info.value)
    assert "xg-no-such-link" in info.value.stderr and info.value.returncode != 0


def test_command_error_for_a_missing_program_and_a_timeout():
    with pytest.raises(CommandError) as missing:
        _shell.run(["xg-no-such-program"])
    assert missing.value.returncode == 127
    with pytest.raises(CommandError) as slow:
        _shell.run(["sleep", "5"], timeout_s=0.2)
    assert slow.value.returncode is None and "timed out" in str(slow.value)
    assert _shell.run(["false"], check=False).returncode == 1
