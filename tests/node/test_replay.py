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
