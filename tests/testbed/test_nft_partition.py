"""The nft address partition against the real kernel: on every topology shape, cross-group pairs are cut (also
across trunks between bridges), same-group pairs are not, ARP still passes, drops are counted, clear() heals, and
nothing is left behind; another run on the same subnet is never touched."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from tb_netcheck import echo_from, needs_root, start_echo_servers, stop

from testbed.errors import DeployError, TopologyError
from testbed.net import make_network
from testbed.net import shell as _shell
from testbed.net.cleanup import find_leftovers
from testbed.net.nft import NftPartition, check_groups
from testbed.net.topology import RunNames, Topology

BLOCKED_ATTEMPTS = 2  # a cut pair is tried twice (0.3 s each); a working pair answers the first try


def _tables() -> set[str]:
    return {f"{e['table']['family']} {e['table']['name']}" for e in _shell.nft_json("list", "tables") if "table" in e}


def _check(hosts, groups: list[list[int]]) -> int:
    """Echo from every host to every other, all hosts at once: same group answers, other groups do not.
    Returns how many datagrams were sent across groups (each should have been dropped)."""
    group_of = {i: g for g, members in enumerate(groups) for i in members}

    def one(host):
        same = [p for p in hosts if p is not host and group_of[p.index] == group_of[host.index]]
        cross = [p for p in hosts if group_of[p.index] != group_of[host.index]]
        reached = echo_from(host, same) if same else {}
        reached |= echo_from(host, cross, attempts=BLOCKED_ATTEMPTS) if cross else {}
        return host.name, reached, len(cross) * BLOCKED_ATTEMPTS

    with ThreadPoolExecutor(len(hosts)) as pool:
        results = list(pool.map(one, hosts))
    want = {
        h.name: {p.name: group_of[p.index] == group_of[h.index] for p in hosts if p is not h} for h in hosts
    }
    assert {name: reached for name, reached, _ in results} == want
    return sum(sent for _, _, sent in results)


def _ips(net, indexes):
    return [net.host(i).ip for i in indexes]


@pytest.mark.root
@pytest.mark.netns
@needs_root
@pytest.mark.parametrize("shape", ["bridge", "line", "ring", "tree"])
def test_partition_by_address_cuts_exactly_the_cross_group_pairs_on_every_shape(run_id, shape):
    topo = Topology(nodes=6, shape=shape, bridges=None if shape == "bridge" else 3)
    odd_even = [[0, 2, 4], [1, 3, 5]]  # every group on every bridge: cross pairs on the same and other bridges
    halves = [[0, 1, 2], [3, 4, 5]]  # cut along a trunk (line/ring/tree) instead
    if shape != "bridge":
        assert [h.bridge for h in topo.hosts] == [0, 0, 1, 1, 2, 2]
    table = f"bridge {RunNames(run_id).nft_table('part')}"
    with make_network("netns", topo, run_id) as net:
        hosts = net.hosts
        servers = start_echo_servers(hosts, duration_s=45.0)
        try:
            with NftPartition(net.names) as part:
                assert part.table == net.names.nft_table("part")
                assert table in _tables() and table in find_leftovers(run_id).nft_tables
                assert part.counters() == 0

                part.set([_ips(net, g) for g in odd_even])
                h0 = net.host(0)
                _shell.ip("neigh", "flush", "dev", "eth0", netns_path=h0.netns_path)
                sent = _check(hosts, odd_even)
                dropped = part.counters()
                assert dropped >= sent
                neigh = {n["dst"]: n for n in _shell.ip_json("-4", "neigh", "show", netns_path=h0.netns_path)}
                h1 = net.host(1)  # cut off by IPv4, yet ARP resolved it
                assert neigh[h1.ip].get("lladdr") == h1.mac and "FAILED" not in neigh[h1.ip].get("state", [])

                part.set([_ips(net, g) for g in halves])  # replaces the partition, no union with the old one
                sent = _check(hosts, halves)
                assert part.counters() >= dropped + sent
                sets = {e["set"]["name"] for e in _shell.nft_json("list", "table", *table.split()) if "set" in e}
                assert sets == {"ports", "hosts", "g0", "g1"}

                part.clear()
                before = part.counters()
                _check(hosts, [list(range(6))])
                assert part.counters() == before
            assert table not in _tables()
        finally:
            stop(servers)
    assert table not in _tables()
    assert find_leftovers(run_id).empty


@pytest.mark.root
@pytest.mark.netns
@needs_root
def test_another_run_on_the_same_subnet_is_not_cut(run_id, other_run_id):
    topo = Topology(nodes=2)  # both runs use 10.77.0.1 and 10.77.0.2, on their own bridges
    with make_network("netns", topo, run_id) as ours, make_network("netns", topo, other_run_id) as theirs:
        servers = start_echo_servers([*ours.hosts, *theirs.hosts])
        try:
            with NftPartition(ours.names) as part:
                part.set([[ours.host(0).ip], [ours.host(1).ip]])
                assert echo_from(ours.host(0), [ours.host(1)], attempts=BLOCKED_ATTEMPTS) == {"h1": False}
                assert echo_from(theirs.host(0), [theirs.host(1)]) == {"h1": True}
                assert part.counters() == BLOCKED_ATTEMPTS
                assert not find_leftovers(other_run_id).nft_tables
        finally:
            stop(servers)
    assert find_leftovers(run_id).empty and find_leftovers(other_run_id).empty


@pytest.mark.root
@needs_root
def test_table_is_deleted_when_the_block_raises(run_id):
    names = RunNames(run_id)
    table = f"bridge {names.nft_table('part')}"
    with pytest.raises(RuntimeError, match="boom"):
        with NftPartition(names, ports=[names.host_veth(0)]) as part:  # a port that need not exist
            part.set([["10.77.0.1"], ["10.77.0.2", "10.77.0.3"]])
            assert table in _tables()
            raise RuntimeError("boom")
    assert table not in _tables()
    assert find_leftovers(run_id).empty
    with pytest.raises(DeployError, match="already used"):
        part.__enter__()
    with pytest.raises(DeployError, match="not open"):
        part.set([["10.77.0.1"]])


@pytest.mark.root
@needs_root
def test_set_without_the_runs_network_says_so(run_id):
    with NftPartition(RunNames(run_id)) as part:
        with pytest.raises(DeployError, match="no bridge ports"):
            part.set([["10.77.0.1"], ["10.77.0.2"]])
        part.clear()  # nothing set: nothing to do
        assert part.counters() == 0
    assert find_leftovers(run_id).empty


def test_groups_are_validated_before_anything_touches_the_kernel():
    assert check_groups([["10.0.0.2", "10.0.0.1", "10.0.0.2"], [], ["10.0.0.3"]]) == [
        ["10.0.0.2", "10.0.0.1"], [], ["10.0.0.3"]
    ]
    part = NftPartition(RunNames("tvalid"))  # never entered: set() must fail on the groups, not on the state
    for groups, match in [
        ([["10.0.0.1"], ["10.0.0.1"]], r"^groups: 10\.0\.0\.1 is in group 0 and group 1$"),
        ([["10.0.0.1", "fe80::1"]], r"^groups: 'fe80::1' \(group 0\) is not an IPv4 address$"),
        ([["10.0.0.300"]], r"'10\.0\.0\.300'"),
        ([["10.0.0.1/32"]], r"'10\.0\.0\.1/32'"),
        ([[167772161]], r"167772161"),
        (["10.0.0.1"], r"group 0 must be a list"),
        ("10.0.0.1", r"must be a list of lists"),
    ]:
        with pytest.raises(TopologyError, match=match) as info:
            part.set(groups)  # type: ignore[arg-type]
        assert "\n" not in str(info.value)
        assert isinstance(info.value, ValueError)
    with pytest.raises(TopologyError, match="ports"):
        NftPartition(RunNames("tvalid"), ports=["eth0"])
    with pytest.raises(TopologyError, match="ports"):
        NftPartition(RunNames("tvalid"), ports=[RunNames("tother").host_veth(0)])
