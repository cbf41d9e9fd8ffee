"""The fast path's maps are sized at load time from the node count, and a map too small for its run says so.

One program serving N nodes holds N x N heartbeat pairs. Here 512 nodes' worth is written the way a steady
cluster writes them (every node accepts a heartbeat from every origin, round after round, interleaved): 511 of the
nodes are map keys only (ifindexes no interface has), the 512th is a real veth, and copies of the heartbeats it
accepted are then sent to it. With maps sized for 512 nodes every copy is dropped and no eviction is counted; with
the old fixed size (131,072 pairs, half of 512²) the LRU thrashes: evictions are counted and copies reach the node.
"""

from __future__ import annotations

import resource

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

import bpf
from bpf.fastpath import map_sizes
from bpf_testnet import drain
from gossip._wire import Heartbeat, Identity, cluster_id, encode

pytestmark = [pytest.mark.root, pytest.mark.bpf, pytest.mark.netns]

NODES = 512
PORT = 7946
KEY = b"k"
CLUSTER = cluster_id("xdp-sizing")
PEER_IP, PEER_MAC = "10.77.0.200", "02:00:00:00:00:c8"
IDENT = Identity(name="peer", addr=PEER_IP, port=PORT)
FAKE_IFINDEX = 1_000_000  # + k: keys of the map that no interface has (the kernel's ifindexes are far below)
ROUNDS = 2


def test_map_sizes_hold_every_pair_with_the_lru_slack():
    for n in (1, 128, 512, 1024):
        sizes = map_sizes(n, n)
        assert sizes["FP_MAX_HEARTBEATS"] >= n * n + 2 * 128 * bpf._sys.possible_cpus()
        assert sizes["FP_MAX_NODES"] >= n
    assert map_sizes(1, 4096)["FP_MAX_HEARTBEATS"] < map_sizes(2, 4096)["FP_MAX_HEARTBEATS"]
    with pytest.raises(bpf.BpfUsageError, match="nodes and members"):
        map_sizes(0, 10)
    with pytest.raises(bpf.BpfUsageError, match="heartbeat entries"):
        map_sizes(100_000, 100_000)


def _steady_cluster(fastpath, real_ifindex: int) -> list:
    """ROUNDS rounds in which each of NODES nodes accepts heartbeat `round` from each of NODES origins (the map
    starts empty: the program was just loaded)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4 * NODES + 256:  # each writer holds four map fds
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(4 * NODES + 256, hard), hard))
    ifindexes = [real_ifindex] + [FAKE_IFINDEX + k for k in range(1, NODES)]
    writers = [fastpath.writer(i) for i in ifindexes]
    for seq in range(1, ROUNDS + 1):
        for origin in range(1, NODES + 1):
            for w in writers:
                w.heartbeat_accepted(origin, seq)
    return writers


def _frame(node, origin: int, seq: int) -> bytes:
    payload = encode(Heartbeat(cluster=CLUSTER, origin=origin, seq=seq, identity=IDENT), key=KEY)
    return bytes(Ether(src=PEER_MAC, dst=node.mac) / IP(src=PEER_IP, dst=node.ip) / UDP(sport=40000, dport=PORT)
                 / Raw(payload))


def _copies_reaching_the_node(fastpath, net) -> tuple[int, dict]:
    """Run the steady cluster, then send the real node a copy of every heartbeat it accepted last."""
    node = net.nodes[0]
    sock = net.udp_socket(node, PORT, rcvbuf=1 << 24)
    sentinel = net.udp_socket(node, PORT + 1)
    raw = net.raw_socket(node.host_if)
    fastpath.configure(node.ifindex, CLUSTER, PORT)
    writers = []
    try:
        with fastpath.attach(node.ifindex, netns=node.ns):
            writers = _steady_cluster(fastpath, node.ifindex)
            for origin in range(1, NODES + 1):
                raw.send(_frame(node, origin, ROUNDS))
            # frames on one veth are handled in order: once this one is in, every copy was dropped or delivered
            raw.send(bytes(Ether(src=PEER_MAC, dst=node.mac) / IP(src=PEER_IP, dst=node.ip)
                           / UDP(sport=40000, dport=PORT + 1) / Raw(b"sentinel")))
            assert [d for d, _ in drain(sentinel, expect=1, timeout_s=5)] == [b"sentinel"]
            got = drain(sock, timeout_s=0)
            return len(got), {"node": fastpath.stats(node.ifindex), "all": fastpath.stats()}
    finally:
        for w in writers:  # no reset: the program and its maps go when the caller closes the FastPath
            w.close()
        fastpath.unconfigure(node.ifindex)


def test_512_nodes_worth_of_pairs_still_drop_every_duplicate(testnet_factory):
    net = testnet_factory(1)
    with bpf.FastPath.compile(nodes=NODES) as fastpath:
        assert fastpath.sizes["fp_heartbeat"] == map_sizes(NODES, NODES)["FP_MAX_HEARTBEATS"]
        passed, st = _copies_reaching_the_node(fastpath, net)
        # unconfiguring the real node reset its writer: its pairs are gone, every other node's are still there
        keys = memoryview(bpf._sys.map_keys_bytes(fastpath.map_fds["fp_heartbeat"], 8, 8)).cast("I")
        assert len(keys) // 2 == (NODES - 1) * NODES
        assert net.nodes[0].ifindex not in set(keys[0::2])
    assert passed == 0
    assert st["node"]["dropped_duplicate"] == NODES
    assert st["all"]["hb_inserted"] == NODES * NODES  # each pair created once, in the first round
    assert st["all"]["hb_evicted"] == 0


def test_the_old_fixed_size_thrashes_at_512_nodes_and_counts_it(testnet_factory):
    with bpf.FastPath.compile() as fastpath:  # the header's default: 131,072 pairs for every interface together
        assert fastpath.sizes["fp_heartbeat"] < NODES * NODES
        passed, st = _copies_reaching_the_node(fastpath, testnet_factory(1))
    assert passed > 0 and passed == st["node"]["passed_heartbeat"]
    assert st["node"]["dropped_duplicate"] == NODES - passed
    assert st["all"]["hb_evicted"] > 0
    assert st["all"]["hb_inserted"] == NODES * NODES + st["all"]["hb_evicted"]  # each eviction re-created a pair
