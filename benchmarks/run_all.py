"""Run every benchmark and print its figures: ``python benchmarks/run_all.py [--quick]``.

Benchmarks print numbers and ratios; they never pass or fail on timing (these machines are shared and noisy).
``--quick`` is the bounded smoke run CI does; without it each benchmark runs at full size.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# script, arguments for a full run, arguments for a smoke run, needs root
BENCHMARKS = [
    ("bench_node.py", [], ["--quick"], False),
    ("bench_sim.py", [], ["--quick"], False),
    ("bench_swim.py", [], ["--quick"], False),
    ("bench_swim_testbed.py", [], ["--quick"], True),
    ("bench_http.py", [], ["--quick"], False),
    ("bench_xdp.py", [], ["--quick"], True),
    ("bench_mac.py", [], ["--quick"], True),
    ("bench_hbplane.py", [], ["--quick"], True),
    ("bench_hbplane_cluster.py", [], ["--quick"], True),
    ("bench_broadcast.py", [], ["--broadcasts", "200", "--rounds", "1"], True),
    ("bench_rcvbuf.py", [], ["--sizes", "182,1372", "--rcvbuf", "262144"], True),
    ("bench_bringup.py", [], ["--repeat", "1", "--cases", "netns:16,netns:64"], True),
    ("bench_testbed.py", [], ["--quick"], True),
    ("bench_soak.py", [], ["--quick"], True),
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="bounded smoke runs")
    ap.add_argument("--only", help="comma-separated script names")
    args = ap.parse_args()
    failed = []
    for script, full, quick, needs_root in BENCHMARKS:
        if args.only and script not in args.only.split(","):
            continue
        if not (HERE / script).exists():
            continue
        if needs_root and os.geteuid() != 0:
            print(f"== {script}: skipped (needs root)\n", flush=True)
            continue
        print(f"== {script} {' '.join(quick if args.quick else full)}", flush=True)
        t = time.monotonic()
        r = subprocess.run([sys.executable, str(HERE / script), *(quick if args.quick else full)])
        print(f"== {script}: exit {r.returncode} after {time.monotonic() - t:.1f} s\n", flush=True)
        if r.returncode != 0:
            failed.append(script)
    if failed:
        print(f"benchmarks that did not run to completion: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
