"""The Mininet backend: same interface, same checks as the netns backend, and nothing left after teardown."""

from __future__ import annotations

import sys
import time

import pytest
from tb_netcheck import alive, echo_from, needs_root, netns_inode, start_echo_servers, stop
from test_testbed_cleanup import assert_killed_run_is_cleaned

from testbed.net import shell as _shell
from testbed.net.cleanup import find_leftovers
from testbed.net import make_network
from testbed.cluster.procs import ProcessGroup
from testbed.net.topology import Topology

pytest.importorskip("mininet.net", reason="Debian's mininet package is not installed")

pytestmark = [pytest.mark.root, pytest.mark.mininet, needs_root]


def test_mininet_bridge_full_mesh_echo_and_clean_teardown(run_id, tmp_path):
    topo = Topology(nodes=6)
    with make_network("mininet", topo, run_id) as net:
        assert net.backend == "mininet"
        hosts = net.hosts
        shells = [net.mininet.get(h.netns).pid for h in hosts]
        assert [h.netns_path for h in hosts] == [f"/proc/{pid}/ns/net" for pid in shells]
        assert len({netns_inode(h.netns_path) for h in hosts}) == 6

        ifindexes = []
        for host in hosts:
            (link,) = _shell.ip_json("link", "show", "dev", "eth0", netns_path=host.netns_path)
            (addr,) = _shell.ip_json("-4", "addr", "show", "dev", "eth0", netns_path=host.netns_path)
            assert link["ifindex"] == host.ifindex and link["address"] == host.mac
            assert [(a["local"], a["prefixlen"]) for a in addr["addr_info"]] == [(host.ip, 16)]
            assert host.run(["cat", "/proc/sys/net/ipv6/conf/all/disable_ipv6"]).stdout.strip() == "1"
            ifindexes.append(link["ifindex"])
        assert ifindexes == [spec.ifindex for spec in topo.hosts] and len(set(ifindexes)) == 6

        servers = start_echo_servers(hosts)
        try:
            for host in hosts:
                peers = [p for p in hosts if p is not host]
                assert echo_from(host, peers) == {p.name: True for p in peers}
        finally:
            stop(servers[:2])  # the rest must be killed by teardown
        with ProcessGroup(run_id, tmp_path) as group:
            code = "import time; print('up', flush=True); time.sleep(60)"
            proc = group.start("node0", [sys.executable, "-c", code], host=hosts[0])
            deadline = time.monotonic() + 10
            while "up" not in proc.stdout_path.read_text():  # until then it may still be nsenter, in the root
                assert time.monotonic() < deadline
                time.sleep(0.01)
            assert netns_inode(f"/proc/{proc.pid}/ns/net") == netns_inode(hosts[0].netns_path)
        pids = shells + [s.pid for s in servers]
    assert not any(alive(pid) for pid in pids)
    assert find_leftovers(run_id).empty


def test_mininet_line_connects_end_to_end(run_id):
    topo = Topology(nodes=6, shape="line")
    with make_network("mininet", topo, run_id) as net:
        first, last = net.host(0), net.host(5)
        assert topo.hosts[0].bridge == 0 and topo.hosts[5].bridge == 2
        servers = start_echo_servers([first, last])
        try:
            assert echo_from(first, [last]) == {"h5": True}
            assert echo_from(last, [first]) == {"h0": True}
        finally:
            stop(servers)
    assert find_leftovers(run_id).empty


def test_clean_removes_everything_a_killed_mininet_run_left(run_id, tmp_path):
    assert_killed_run_is_cleaned("mininet", run_id, tmp_path, namespaces=0)
