"""A node under a flood of valid duplicate heartbeats, with the XDP fast path off and on.

One node (`python -m gossip node`) runs in a namespace. A raw AF_PACKET socket on the root-side end of its veth
sends a bounded flood: one heartbeat the node has already accepted, repeated (MAC valid, so without XDP the node
must verify it before dropping it as a duplicate), with a fresh metadata rumor slipped in every N frames.
Reported per mode: node CPU seconds over the flood, CPU per fresh message adopted, how many fresh messages got
through, their latency (send to the node's metadata_adopted event), and the XDP drops per second.

    .venv/bin/python benchmarks/bench_xdp.py [--flood 200000] [--fresh-every 1000] [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "bpf")]  # the package, and the tests' namespace builder

import bpf  # noqa: E402
from bpf._netns import entered  # noqa: E402
from bpf_testnet import Testnet  # noqa: E402
from gossip._wire import Heartbeat, Identity, MetadataRumor, cluster_id, encode, node_id  # noqa: E402
from scapy.layers.inet import IP, UDP  # noqa: E402
from scapy.layers.l2 import Ether  # noqa: E402
from scapy.packet import Raw  # noqa: E402

PORT = 7946
CLUSTER = "bench-xdp"
SECRET = b"bench-secret"
PEER_IP, PEER_MAC = "10.77.0.200", "02:00:00:00:00:c8"  # the flood's source: no such host (nothing answers it)
SUBJECT = Identity(name="flooded", addr="10.77.0.201", port=PORT)  # whose heartbeat is repeated
PUBLISHER = node_id("10.77.0.202", PORT)  # origin of the fresh rumors


def udp_snmp(ns: str) -> dict[str, int]:
    with entered(ns), open("/proc/thread-self/net/snmp") as f:
        lines = [line.split() for line in f if line.startswith("Udp:")]
    return dict(zip(lines[0][1:], map(int, lines[1][1:])))


def events(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def wait_for(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.05)
    raise TimeoutError(f"timed out waiting for {what}")


def run_mode(net: Testnet, fastpath, mode: str, flood: int, fresh_every: int, workdir: Path) -> dict:
    node = net.nodes[0]
    log = workdir / f"events-{mode}.jsonl"
    cmd = ["ip", "netns", "exec", node.ns, sys.executable, "-m", "gossip", "node", "--name", "bench",
           "--addr", node.ip, "--port", str(PORT), "--cluster", CLUSTER, "--secret", SECRET.decode(),
           "--timeout", "600", "--events", str(log), "--log-level", "warning"]
    if mode == "xdp":
        cmd += ["--xdp", node.ifname, "--xdp-pin", fastpath.pin_dir]
    proc = subprocess.Popen(cmd, env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: any(e["kind"] == "started" for e in events(log)), 20, "the node to start")
        node_proc = psutil.Process(proc.pid)
        raw = net.raw_socket(node.host_if)

        def frame(payload: bytes) -> bytes:
            return bytes(Ether(src=PEER_MAC, dst=node.mac) / IP(src=PEER_IP, dst=node.ip)
                         / UDP(sport=PORT, dport=PORT) / Raw(payload))

        cluster = cluster_id(CLUSTER)
        duplicate = frame(encode(Heartbeat(cluster=cluster, origin=SUBJECT.node_id, seq=1000, identity=SUBJECT),
                                 key=SECRET))
        base = int(time.time() * 1000)
        fresh = [frame(encode(MetadataRumor(cluster=cluster, origin=PUBLISHER, version=base + i, data=b"v%d" % i),
                              key=SECRET)) for i in range(flood // fresh_every)]

        raw.send(duplicate)  # first copy: accepted (and, with XDP, recorded by the node through the pinned maps)
        wait_for(lambda: any(e["kind"] == "member_added" for e in events(log)), 5, "the heartbeat's acceptance")
        time.sleep(0.2)
        xdp_before = fastpath.stats(node.ifindex) if mode == "xdp" else None
        snmp_before = udp_snmp(node.ns)
        cpu_before = sum(node_proc.cpu_times()[:2])

        sent_at: dict[int, float] = {}
        t0 = time.perf_counter()
        k = 0
        for i in range(flood):
            if i % fresh_every == fresh_every // 2 and k < len(fresh):
                sent_at[base + k] = time.time()
                raw.send(fresh[k])
                k += 1
            raw.send(duplicate)
        flood_s = time.perf_counter() - t0

        # let the node work off its queue: until its CPU time stops growing (bounded)
        last, deadline = -1.0, time.monotonic() + 20
        while time.monotonic() < deadline:
            now_cpu = sum(node_proc.cpu_times()[:2])
            if now_cpu == last:
                break
            last = now_cpu
            time.sleep(0.3)
        cpu_s = last - cpu_before
        snmp_after = udp_snmp(node.ns)
        xdp_after = fastpath.stats(node.ifindex) if mode == "xdp" else None
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    adopted = {e["version"]: e["t"] for e in events(log)
               if e["kind"] == "metadata_adopted" and e["origin"] == PUBLISHER and e["version"] in sent_at}
    latencies = sorted((adopted[v] - sent_at[v]) * 1e3 for v in adopted)
    stopped = next((e for e in events(log) if e["kind"] == "stopped"), {})
    xdp_drops = (xdp_after["dropped_duplicate"] - xdp_before["dropped_duplicate"]) if mode == "xdp" else 0
    return {
        "mode": mode, "frames": flood + len(sent_at), "flood_s": flood_s, "flood_pps": (flood + len(sent_at)) / flood_s,
        "node_cpu_s": cpu_s, "fresh_sent": len(sent_at), "fresh_adopted": len(adopted),
        "cpu_ms_per_fresh": cpu_s * 1e3 / max(len(adopted), 1),
        "latency_ms_p50": statistics.median(latencies) if latencies else None,
        "latency_ms_p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] if latencies else None,
        "xdp_drops": xdp_drops, "xdp_drops_per_s": xdp_drops / flood_s,
        "node_duplicates": stopped.get("dropped_duplicate", stopped.get("duplicate")),
        "socket_overflows": snmp_after.get("RcvbufErrors", 0) - snmp_before.get("RcvbufErrors", 0),
    }


def main() -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # so the testnet's teardown runs on a kill
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--flood", type=int, default=200_000, help="duplicate frames per mode (bounded)")
    parser.add_argument("--fresh-every", type=int, default=1000, help="one fresh rumor per this many duplicates")
    parser.add_argument("--quick", action="store_true", help="a small flood (smoke run)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if args.quick:
        args.flood, args.fresh_every = 20_000, 200
    ok, why = bpf.available()
    if not ok:
        print(f"skipped: {why}")
        return 0

    results = []
    with tempfile.TemporaryDirectory(prefix="bench-xdp-") as tmp, bpf.FastPath.compile() as fastpath, \
            Testnet(1) as net:
        node = net.nodes[0]
        fastpath.configure(node.ifindex, cluster_id(CLUSTER), PORT)
        results.append(run_mode(net, fastpath, "off", args.flood, args.fresh_every, Path(tmp)))
        with fastpath.attach(node.ifindex, netns=node.ns):
            results.append(run_mode(net, fastpath, "xdp", args.flood, args.fresh_every, Path(tmp)))
        fastpath.unconfigure(node.ifindex)

    print(f"flood of {args.flood} valid duplicate heartbeats, one fresh metadata rumor per {args.fresh_every}")
    print(f"{'mode':>4} | {'flood kpps':>10} | {'node CPU s':>10} | {'fresh in/sent':>13} | {'CPU ms/fresh':>12} | "
          f"{'lat p50 ms':>10} | {'lat p99 ms':>10} | {'XDP drops/s':>11} | {'sock overflows':>14}")
    for r in results:
        p50 = f"{r['latency_ms_p50']:.2f}" if r["latency_ms_p50"] is not None else "-"
        p99 = f"{r['latency_ms_p99']:.2f}" if r["latency_ms_p99"] is not None else "-"
        print(f"{r['mode']:>4} | {r['flood_pps'] / 1e3:>10.0f} | {r['node_cpu_s']:>10.3f} | "
              f"{r['fresh_adopted']:>6}/{r['fresh_sent']:<6} | {r['cpu_ms_per_fresh']:>12.2f} | {p50:>10} | {p99:>10} | "
              f"{r['xdp_drops_per_s']:>11.0f} | {r['socket_overflows']:>14}")
    off, on = results
    if on["cpu_ms_per_fresh"]:
        print(f"node CPU per fresh message: {off['cpu_ms_per_fresh'] / on['cpu_ms_per_fresh']:.1f}x less with XDP")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
