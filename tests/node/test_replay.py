"""The asyncio node and a bare core fed the node's recorded inputs produce the same events: the core is sans-IO."""

import asyncio
import io
import json
import random

from gossip import NodeConfig
from gossip._local import free_port
from gossip._node import Node
from gossip._replay import replay

ROUTINE = ("duplicate", "stale")


def test_replaying_a_live_nodes_trace_into_a_fresh_core_gives_the_same_events():
    async def main():
        nodes, traces, logs = [], [], []
        for i in range(4):
            cfg = NodeConfig(listen_port=free_port(), cycle_s=0.1, timeout_s=0.5)
            seeds = ((nodes[0].config.listen_addr, nodes[0].config.listen_port),) if nodes else ()
            trace, log = io.StringIO(), io.StringIO()
            node = Node(cfg, name=f"r{i}", seeds=seeds, rng=random.Random(100 + i), trace=trace, events=log,
                        stats_every_cycle=False)
            await node.join()
            nodes.append(node)
            traces.append(trace)
            logs.append(log)
        await asyncio.sleep(0.6)
        nodes[2].publish(b"traced")
        for n in nodes:  # a key rotated mid-run: the replay must verify with the ring the node had at each input
            n.set_secrets((b"", b"next"))
        for n in nodes:
            n.set_secrets((b"next", b""))
        nodes[3].stop()  # its entry expires everywhere: removals are part of the trace too
        await asyncio.sleep(1.0)
        for n in nodes:
            await n.close()
        return nodes, traces, logs

    nodes, traces, logs = asyncio.run(main())
    for i, (node, trace, log) in enumerate(zip(nodes, traces, logs)):
        live = [json.loads(line) for line in log.getvalue().splitlines()]
        live = [{k: v for k, v in e.items() if k not in ("t", "node")} for e in live
                if e["kind"] not in ("started", "stopped", "stats")]
        replayed = [e.to_json() for e in replay(trace.getvalue().splitlines(), config=node.config,
                                                identity=node.identity, seed=100 + i)]
        replayed = [e for e in replayed if not (e["kind"] == "packet_dropped" and e["reason"] in ROUTINE)]
        assert replayed == live, f"node r{i}"
        kinds = {e["kind"] for e in live}
        assert {"member_added", "metadata_adopted"} <= kinds
        if i != 3:
            assert "member_removed" in kinds


def test_a_heartbeat_the_kernel_took_replays_as_the_node_applied_it():
    """A node with the in-kernel heartbeat plane traces each kernel refresh as a ``kernel`` operation; the replay
    applies it through the same core method, so a member the kernel kept fresh is not expired in the replay."""
    from gossip import _wire as wire
    from gossip._wire import Identity

    cfg = NodeConfig(cycle_s=1.0, timeout_s=3.0, secrets=(b"s",), listen_addr="10.0.0.1", listen_port=7000)
    me, peer = Identity(name="a", addr="10.0.0.1", port=7000), Identity(name="b", addr="10.0.0.2", port=7000)
    hb = wire.encode(wire.Heartbeat(cluster=wire.cluster_id(cfg.cluster), origin=peer.node_id, seq=1000,
                                    identity=peer, infected=wire.Infected(ids=frozenset({peer.node_id}))), key=b"s")
    ops = [{"op": "init", "t": 0.0}, {"op": "rx", "t": 0.5, "data": hb.hex()},
           {"op": "kernel", "t": 2.5, "origin": peer.node_id, "seq": 2000},
           {"op": "tick", "t": 4.0}]
    events = replay((json.dumps(o) for o in ops), config=cfg, identity=me, seed=1)
    kinds = [type(e).__name__ for e in events]
    assert "MemberAdded" in kinds
    assert "MemberRemoved" not in kinds  # last seen at 2.5 by the kernel: alive at 4.0 with a 3 s timeout
    without = replay((json.dumps(o) for o in ops if o["op"] != "kernel"), config=cfg, identity=me, seed=1)
    assert "MemberRemoved" in [type(e).__name__ for e in without]  # and the test can tell
