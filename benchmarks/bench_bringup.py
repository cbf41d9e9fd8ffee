"""Bring-up and teardown time of testbed networks (needs root).

Measures, for each case, the wall time of entering the network context (namespaces, veths, bridges, addresses, and
for rings the wait for spanning tree) and of leaving it (until every link and namespace is gone). Each case runs
REPEAT times under a fresh run id; the median and the range are printed, and with ``--json`` the raw figures too.
Every run id is cleaned at the end, whatever happened.

    .venv/bin/python benchmarks/bench_bringup.py [--repeat 3] [--cases netns:64,netns:128,mininet:64] [--json F]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from testbed.net.cleanup import clean, find_leftovers  # noqa: E402
from testbed.net import make_network  # noqa: E402
from testbed.net.topology import Topology, new_run_id  # noqa: E402

DEFAULT_CASES = "netns:64,netns:128,netns:64:line,mininet:64"


def measure(backend: str, nodes: int, shape: str) -> dict[str, float]:
    run_id = new_run_id()
    try:
        topology = Topology(nodes=nodes, shape=shape)
        net = make_network(backend, topology, run_id)
        start = time.perf_counter()
        net.__enter__()
        up = time.perf_counter()
        try:
            assert len(net.hosts) == nodes
        finally:
            down_start = time.perf_counter()
            net.__exit__(None, None, None)
        down = time.perf_counter()
        left = find_leftovers(run_id)
        if left:
            raise SystemExit(f"leftovers after teardown of {backend}:{nodes}: {left.summary()}")
        return {"up_s": up - start, "down_s": down - down_start}
    finally:
        clean(run_id)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cases", default=DEFAULT_CASES, help="comma-separated backend:nodes[:shape]")
    parser.add_argument("--json", help="also write the raw figures to this file")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("bench_bringup: needs root (namespaces, links, bridges)", file=sys.stderr)
        return 2

    results = {}
    print(f"{'case':<22} {'bring-up s (median, min-max)':<32} {'teardown s (median, min-max)':<32}")
    for case in args.cases.split(","):
        backend, nodes, *rest = case.split(":")
        shape = rest[0] if rest else "bridge"
        runs = [measure(backend, int(nodes), shape) for _ in range(args.repeat)]
        results[case] = runs
        cells = []
        for key in ("up_s", "down_s"):
            values = [r[key] for r in runs]
            cells.append(f"{statistics.median(values):6.2f}  ({min(values):.2f}-{max(values):.2f})")
        print(f"{case:<22} {cells[0]:<32} {cells[1]:<32}", flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
