"""What a node's UDP socket buffer holds on this kernel: the truesize the kernel charges per datagram, by size, and
where it starts dropping (RcvbufErrors). The simulator's socket-buffer model (`testbed.sim._engine.skb_truesize`)
is fitted to this.

A bridged testnet of two namespaces, as the testbed's: node 1 binds a socket that asks for SO_RCVBUF = RCVBUF bytes
as a node does (``buffer * 2048``; the kernel doubles it) and never reads it; node 0 sends COUNT datagrams of each
size to it, paced so that nothing is lost before the socket. Then SO_MEMINFO gives the bytes charged to the socket,
the datagrams queued are read out, and the namespace's RcvbufErrors say how many the kernel refused. With ``--xdp``
the fast path (bpf/xdp_fastpath.c) is attached to node 1's veth, as on a testbed run with XDP: the veth then
receives through its XDP path, which may copy each packet into a buffer of its own (another truesize).

    sudo .venv/bin/python benchmarks/bench_rcvbuf.py [--xdp] [--rcvbuf BYTES] [--sizes 100,500,1372]
"""

from __future__ import annotations

import argparse
import json
import socket
import struct
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "bpf")]

from bpf._netns import entered  # noqa: E402
from bpf_testnet import Testnet, drain  # noqa: E402
from testbed.cluster.emulated import udp_counters  # noqa: E402

SO_MEMINFO = 55  # not exported by the socket module; struct of SK_MEMINFO_VARS u32s, rmem_alloc first
PORT = 7946


def _snmp(ns: str) -> dict:
    with entered(ns), open("/proc/thread-self/net/snmp") as f:
        return udp_counters(f.read())


def measure(net: Testnet, size: int, rcvbuf: int, count: int) -> dict:
    tx_node, rx_node = net.nodes
    with entered(rx_node.ns):
        rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    rx.bind((rx_node.ip, PORT))
    rx.setblocking(False)
    with entered(tx_node.ns):
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        before = _snmp(rx_node.ns)
        payload = bytes(size)
        for k in range(count):
            tx.sendto(payload, (rx_node.ip, PORT))
            if k % 64 == 63:
                time.sleep(0.001)  # let softirq keep up: nothing must be lost before the socket
        time.sleep(0.2)
        mem = struct.unpack("9I", rx.getsockopt(socket.SOL_SOCKET, SO_MEMINFO, 36))
        queued = len(drain(rx, timeout_s=0))
        after = _snmp(rx_node.ns)
    finally:
        rx.close()
        tx.close()
    refused = after["rcvbuf_errors"] - before["rcvbuf_errors"]
    return {"size": size, "rcvbuf": mem[1], "queued": queued, "rcvbuf_errors": refused,
            "lost_elsewhere": count - queued - refused, "rmem_alloc": mem[0],
            "truesize": round(mem[0] / queued, 1) if queued else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--xdp", action="store_true", help="attach the fast path to the receiver's veth")
    ap.add_argument("--rcvbuf", type=int, default=1024 * 2048, help="SO_RCVBUF asked (default: a node's)")
    ap.add_argument("--sizes", default="40,100,200,400,600,800,1000,1200,1372,1472")
    ap.add_argument("--count", type=int, default=0, help="datagrams per size (default: enough to overflow)")
    args = ap.parse_args()
    sizes = [int(x) for x in args.sizes.split(",")]
    with Testnet(2, bridge=True) as net:
        for node, peer in ((net.nodes[0], net.nodes[1]), (net.nodes[1], net.nodes[0])):
            net.set_neighbour(node, peer)
        fastpath = attach = None
        if args.xdp:
            from bpf.fastpath import FastPath
            fastpath = FastPath.compile(nodes=4)
            attach = fastpath.attach(net.nodes[1].ifindex, netns=net.nodes[1].ns)
            attach.__enter__()
        try:
            for size in sizes:
                count = args.count or int(2 * args.rcvbuf * 1.5 / (size + 256)) + 100
                print(json.dumps({"xdp": args.xdp, **measure(net, size, args.rcvbuf, count)}), flush=True)
        finally:
            if attach is not None:
                attach.__exit__(None, None, None)
            if fastpath is not None:
                fastpath.close()


if __name__ == "__main__":
    main()
