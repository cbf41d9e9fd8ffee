"""What the heartbeat plane (bpf/tc_hbplane.c) costs per heartbeat it handles, measured in the kernel.

A bridged testnet (offloads off): node 0 runs the plane with the other nodes as members, node 1 sends it fresh
signed heartbeats (rising seq) from its socket, each handled in the kernel (fanout copies). With
kernel.bpf_stats_enabled on, the kernel sums the entry program's run time, which includes its tail calls (MAC,
send: they show no runs of their own); per handled heartbeat that is the plane's whole cost, clones included (a
clone's transmit runs inside bpf_clone_redirect up to the veth's enqueue). Compare: a Python node spends ~180 us per heartbeat.

    sudo .venv/bin/python benchmarks/bench_hbplane.py [--quick] [--count N] [--fanout K] [--bloom]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "bpf")]  # the package, the testnet and the test's prog_info

from bpf._sys import bpf_stats_enabled  # noqa: E402
from bpf.hbplane import HeartbeatPlane  # noqa: E402
from bpf_testnet import Testnet, drain  # noqa: E402
from gossip import _wire as wire  # noqa: E402
from test_blake2b_mac import prog_info  # noqa: E402

PORT = 7946
KEY = b"bench-secret"
CLUSTER = wire.cluster_id("hb-bench")


def run(count: int, fanout: int, nodes: int, bloom: bool, keys: int) -> dict:
    with HeartbeatPlane.compile(nodes=nodes) as plane, Testnet(nodes, bridge=True, offloads=False) as net:
        node, origin = net.nodes[0], net.nodes[1]
        ids = {n.ip: wire.node_id(n.ip, PORT) for n in net.nodes}
        idents = {n.ip: wire.Identity(name=f"n{k}", addr=n.ip, port=PORT) for k, n in enumerate(net.nodes)}
        for other in net.nodes[1:]:
            net.set_neighbour(other, node)
        socks = {n.ip: net.udp_socket(n, PORT) for n in net.nodes}
        ring = [b"old-%d" % i for i in range(keys - 1)] + [KEY]  # the signer's key last: the worst case
        with plane.attach(node.ifindex, netns=node.ns):
            plane.configure(node.ifindex, ids[node.ip], CLUSTER, node.ip, PORT, node.mac, fanout, 1400, ring)
            for other in net.nodes[1:]:
                plane.set_member(node.ifindex, wire._identity_bytes(idents[other.ip]), ids[other.ip], other.ip,
                                 PORT, other.mac, 0)
            infected = wire.Infected(ids=frozenset({ids[origin.ip], ids[node.ip]}))
            if bloom:
                infected = infected.to_bloom(256)
            payloads = [wire.encode(wire.Heartbeat(cluster=CLUSTER, origin=ids[origin.ip], seq=seq,
                                                   identity=idents[origin.ip], infected=infected), key=KEY)
                        for seq in range(1, count + 1)]
            with bpf_stats_enabled():
                before = {n: prog_info(fd) for n, fd in plane.prog_fds.items()}
                start = time.perf_counter()
                for p in payloads:
                    socks[origin.ip].sendto(p, (node.ip, PORT))
                    if len(payloads) > 1000:
                        time.sleep(0)  # let softirq keep up
                wall = time.perf_counter() - start
                time.sleep(0.2)
                after = {n: prog_info(fd) for n, fd in plane.prog_fds.items()}
            stats = plane.stats(node.ifindex)
            received = sum(len(drain(s, timeout_s=0)) for ip, s in socks.items() if ip != node.ip)
            node_got = len(drain(socks[node.ip], timeout_s=0))
    per_prog = {n: {"runs": after[n].run_cnt - before[n].run_cnt,
                    "ns_per_run": (after[n].run_time_ns - before[n].run_time_ns)
                    / max(1, after[n].run_cnt - before[n].run_cnt),
                    "verified_insns": after[n].verified_insns} for n in after}
    total_ns = sum(after[n].run_time_ns - before[n].run_time_ns for n in after)
    return {"count": count, "fanout": fanout, "nodes": nodes, "bloom": bloom, "keys_in_ring": keys,
            "handled": stats["handled"], "copies": stats["copies"], "passed": stats["passed"],
            "copies_received": received, "node_socket_got": node_got,
            "us_per_handled": round(total_ns / max(1, stats["handled"]) / 1000, 2),
            "send_wall_s": round(wall, 3), "programs": per_prog}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a small run (~10 s)")
    ap.add_argument("--count", type=int, default=5000)
    ap.add_argument("--fanout", type=int, default=3)
    ap.add_argument("--nodes", type=int, default=16)
    ap.add_argument("--keys", type=int, default=1, help="keys in the ring (the signer's last)")
    ap.add_argument("--bloom", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.count, args.nodes = 500, 8
    print(json.dumps(run(args.count, args.fanout, args.nodes, args.bloom, args.keys), indent=2))


if __name__ == "__main__":
    main()
