"""Userspace baseline: codec rates, and one node's receive rate and CPU per packet under a duplicate flood.

    .venv/bin/python benchmarks/bench_node.py [--packets 200000] [--quick]

A second process floods one node on loopback with copies of one valid, signed heartbeat: the first copy is fresh,
every other one is a duplicate the node must verify and drop. This is the cost the XDP fast path removes
(see bench_xdp.py). Figures only; no pass/fail: these machines are shared and noisy.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from gossip import _wire as wire  # noqa: E402
from gossip._local import free_port  # noqa: E402

SECRET = b"bench"


def heartbeat(seq: int = 10**12) -> wire.Heartbeat:
    ident = wire.Identity(name="flooder", addr="127.0.0.1", port=9)
    return wire.Heartbeat(cluster=wire.cluster_id("gossip"), origin=ident.node_id, seq=seq, identity=ident,
                          infected=wire.Infected(ids=frozenset(range(1, 9))))


def codec_rates(n: int) -> dict:
    msg = heartbeat()
    t0 = time.perf_counter()
    for _ in range(n):
        data = wire.encode(msg, key=SECRET)
    t1 = time.perf_counter()
    for _ in range(n):
        wire.decode(data, cluster=msg.cluster, keys=(SECRET,))
    t2 = time.perf_counter()
    return {"encode_per_s": n / (t1 - t0), "decode_per_s": n / (t2 - t1), "bytes": len(data)}


def _stats(http_port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/stats", timeout=5) as r:
        return json.loads(r.read())


def flood(packets: int, rate_pps: int | None) -> dict:
    port, http_port = free_port(), free_port()
    proc = subprocess.Popen([sys.executable, "-m", "gossip", "node", "--name", "target", "--port", str(port),
                             "--http", f"127.0.0.1:{http_port}", "--secret", SECRET.decode(), "--buffer", "4096",
                             "--log-level", "warning"])
    try:
        for _ in range(200):
            try:
                _stats(http_port)
                break
            except OSError:
                time.sleep(0.05)
        ps = psutil.Process(proc.pid)
        payload = wire.encode(heartbeat(), key=SECRET)
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        cpu0 = sum(ps.cpu_times()[:2])
        in0 = _stats(http_port)["packets_in"]
        t0 = time.perf_counter()
        for i in range(packets):
            sock.sendto(payload, ("127.0.0.1", port))
            if rate_pps and i % 100 == 99:
                ahead = (i + 1) / rate_pps - (time.perf_counter() - t0)
                if ahead > 0:
                    time.sleep(ahead)
        send_s = time.perf_counter() - t0
        time.sleep(0.5)  # let the node drain its socket buffer
        cpu = sum(ps.cpu_times()[:2]) - cpu0
        st = _stats(http_port)
        received = st["packets_in"] - in0
        return {"sent": packets, "received": received, "send_s": send_s, "node_cpu_s": cpu,
                "cpu_us_per_packet": 1e6 * cpu / max(received, 1), "receive_pps": received / max(send_s, 1e-9),
                "dropped": st["dropped"], "accepted": st["counters"].get("accepted_heartbeat", 0)}
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--packets", type=int, default=200_000)
    ap.add_argument("--rate", type=int, default=None, help="pace the flood to this many packets/s")
    ap.add_argument("--quick", action="store_true", help="a small smoke run")
    args = ap.parse_args()
    packets = 5_000 if args.quick else args.packets
    c = codec_rates(2_000 if args.quick else 50_000)
    print(f"codec: encode {c['encode_per_s']:,.0f}/s  decode+verify {c['decode_per_s']:,.0f}/s "
          f"({c['bytes']}-byte heartbeat)")
    f = flood(packets, args.rate)
    print(f"flood: {f['sent']:,} duplicate heartbeats in {f['send_s']:.2f} s; node received {f['received']:,} "
          f"({f['receive_pps']:,.0f} pkt/s), accepted {f['accepted']}, dropped {f['dropped']}")
    print(f"node CPU: {f['node_cpu_s']:.2f} s = {f['cpu_us_per_packet']:.1f} us per received packet; "
          f"lost in the socket buffer: {f['sent'] - f['received']:,}")


if __name__ == "__main__":
    main()
