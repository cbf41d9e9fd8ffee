"""Testbed bring-up and teardown with real nodes and XDP, and per-node memory.

    .venv/bin/python benchmarks/bench_testbed.py [--nodes 64,128] [--quick]      (root)

For each size: build the network, compile the BPF programs once and attach them to every node, start a real
`python -m gossip node` per host, wait until every node serves its control socket; then tear everything down.
Prints the phases' seconds and each node's unique memory (USS). Target: 128 nodes with XDP up in under 30 s.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from testbed.runner import run_scenario  # noqa: E402
from testbed.scenario import parse  # noqa: E402

SCENARIO = """\
name: bringup-{n}
nodes: {n}
node: {{cycle_s: 2.0, timeout_s: 12.0, xdp: true}}
duration_s: 2
recovery_s: 60
checks: [membership_converged]
"""


def measure(n: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-testbed-") as tmp:
        summary = run_scenario(parse(SCENARIO.format(n=n), f"bringup-{n}"), Path(tmp) / "run")
        meta = json.loads((Path(tmp) / "run" / "meta.json").read_text())
    mem = list(meta["node_memory_bytes"].values())
    return {"nodes": n, **meta["timings"], "converged": summary["passed"],
            "uss_mib_mean": statistics.mean(mem) / 2**20 if mem else None,
            "uss_mib_max": max(mem) / 2**20 if mem else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", default="64,128")
    ap.add_argument("--quick", action="store_true", help="one small size (CI smoke run)")
    args = ap.parse_args()
    sizes = [16] if args.quick else [int(x) for x in args.nodes.split(",")]
    print(f"{'nodes':>5} {'network s':>9} {'bpf s':>6} {'nodes up s':>10} {'bring-up s':>10} {'teardown s':>10} "
          f"{'USS MiB/node':>12} {'converged':>9}")
    for n in sizes:
        r = measure(n)
        total = r.get("network_s", 0) + r.get("bpf_s", 0) + r.get("nodes_up_s", 0)
        print(f"{n:>5} {r.get('network_s', 0):>9.2f} {r.get('bpf_s', 0):>6.2f} {r.get('nodes_up_s', 0):>10.2f} "
              f"{total:>10.2f} {r.get('teardown_s', 0):>10.2f} {r['uss_mib_mean'] or 0:>12.1f} "
              f"{str(r['converged']):>9}", flush=True)


if __name__ == "__main__":
    main()
