"""SWIM on the simulator at full fidelity: bring-up, steady speed, memory, and messages per member per period
beside the SWIM paper's analysis and beside the heartbeat protocol.

    .venv/bin/python benchmarks/bench_swim.py [--quick] [--sizes 1000,10000] [--join-max 1000] [--steady-s 10]
                                              [--compare-sizes 16,64,256] [--json FILE]

For each N in ``--sizes``: N real `SwimCore`s (one per node, behind the shared driver, as a node process runs one),
started over one period. Up to ``--join-max`` nodes they join through a tree of seeds and the run goes on until
every member lists every other (bring-up: wall and simulated seconds; push-pull joins are O(N^2)); above it they
start warm (`Simulation.add_nodes(warm=True)`: every node already lists every other alive, the steady state a join
reaches; the wall time to build it is reported instead). Then ``--steady-s`` simulated seconds are timed
(simulated seconds per wall second: >= 1 is real time; the cluster is first moved out of the garbage collector's
sight with `gc.freeze`, and no per-node ``stats`` records are made, since nothing reads them). Memory: the case's
peak RSS and the growth per member entry (RSS after bring-up or warm start over N^2 entries, every node holding
every other; the simulator's own per-node state included).

Messages per member per protocol period in the steady window, by kind: the probe messages (PING, ACK, PING_REQ,
NACK; the SWIM paper's analysis of a failure-free group: 1 ping and 1 ack sent per member per period, 2.0), the
membership total (plus GOSSIP and the push-pull STATE), and the metadata swaps every protocol sends (a SWAP_REQ
per member per period, and a SWAP_RESP where the versions differ). For ``--compare-sizes`` the heartbeat protocol
runs the same way and the ratio of datagrams (and bytes) per member per second is printed.

Each case runs in its own process so its peak RSS is its own. ``--quick`` (the CI smoke run, < 60 s): N = 100 and
200 joined and 300 warm, 3 steady seconds, compare at 16 and 64. Figures only, no pass/fail: these machines are
shared and noisy.
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PROBE = ("sent_ping", "sent_ack", "sent_ping_req", "sent_nack")
MEMBERSHIP = PROBE + ("sent_gossip", "sent_state")
SWAPS = ("sent_swap_req", "sent_swap_resp")


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _totals(sim, keys) -> dict[str, int]:
    out = {k: 0 for k in keys}
    for name in sim.node_names:
        stats = sim.core(name).stats
        for k in keys:
            out[k] += stats.get(k, 0)
    return out


def case(n: int, membership: str, steady_s: float, bringup_limit_s: float, warm: bool = False) -> dict:
    from gossip import NodeConfig
    from testbed.sim import Simulation, Uniform

    config = NodeConfig(membership=membership, fanout=3, cycle_s=1.0, timeout_s=5.0)
    rss0 = _rss_mb()
    keys = MEMBERSHIP + SWAPS + ("packets_out", "bytes_out", "sent_heartbeat")
    with Simulation(seed=1, config=config, latency=Uniform(lo_s=0.0005, hi_s=0.002), keep_events=False,
                    record_stats=False) as sim:  # nothing here reads records: the counters are read from the cores
        t0 = time.perf_counter()
        sim.add_nodes(n, seeding="tree", stagger_s=config.cycle_s, warm=warm)
        converged = warm
        while not warm and sim.time_s < bringup_limit_s:
            sim.run_until(sim.time_s + 1.0)
            if sim.membership_converged():
                converged = True
                break
        bringup_wall, bringup_sim = time.perf_counter() - t0, sim.time_s
        rss1 = _rss_mb()
        # the cluster's tables live as long as the run: out of the collector's sight, a full collection does not
        # walk their N^2 references again and again (a tenth of a 10,000-node run's time)
        gc.collect()
        gc.freeze()
        before = _totals(sim, keys)
        t1 = time.perf_counter()
        sim.run_until(sim.time_s + steady_s)
        wall = time.perf_counter() - t1
        after = _totals(sim, keys)
        steady_converged = sim.membership_converged()
    d = {k: after[k] - before[k] for k in keys}
    per = n * steady_s / config.cycle_s  # member-periods
    return {"case": f"{membership} N={n}{' warm' if warm else ''}", "membership": membership, "n": n,
            "warm": warm, "converged": converged,
            "steady_converged": steady_converged, "bringup_wall_s": bringup_wall, "bringup_sim_s": bringup_sim,
            "steady_s": steady_s, "steady_wall_s": wall, "sim_s_per_wall_s": steady_s / wall,
            "probe_per_member_period": sum(d[k] for k in PROBE) / per,
            "membership_per_member_period": sum(d[k] for k in MEMBERSHIP) / per,
            "heartbeats_per_member_period": d["sent_heartbeat"] / per,
            "swaps_per_member_period": sum(d[k] for k in SWAPS) / per,
            "datagrams_per_member_s": d["packets_out"] / (n * steady_s),
            "bytes_per_member_s": d["bytes_out"] / (n * steady_s),
            "rss_after_bringup_mb": rss1, "bytes_per_member_entry": (rss1 - rss0) * 2**20 / (n * n)}


def run_spec(spec: dict) -> dict:
    out = case(spec["n"], spec["membership"], spec["steady_s"], spec["bringup_limit_s"], spec.get("warm", False))
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def show(r: dict) -> str:
    start = (f"warm start {r['bringup_wall_s']:6.1f} s wall" + " " * 30 if r.get("warm") else
             f"bring-up {r['bringup_wall_s']:7.1f} s wall / {r['bringup_sim_s']:4.0f} s sim "
             f"(converged {r['converged']})")
    line = (f"{r['case']:<18} {start}  steady {r['sim_s_per_wall_s']:6.2f} sim-s/wall-s  "
            f"{r['datagrams_per_member_s']:6.1f} dgrams/member/s  {r['bytes_per_member_s']:8.0f} B/member/s  "
            f"peak {r['peak_rss_mb']:6.0f} MB  {r['bytes_per_member_entry']:5.0f} B/member entry")
    if r["membership"] == "swim":
        line += (f"\n{'':<18} per member per period: probe {r['probe_per_member_period']:.2f} (paper 2.00, "
                 f"{(r['probe_per_member_period'] / 2 - 1) * 100:+.0f} %), membership "
                 f"{r['membership_per_member_period']:.2f}, metadata swaps {r['swaps_per_member_period']:.2f}")
    return line


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="the bounded smoke run")
    ap.add_argument("--sizes", default="1000,10000")
    ap.add_argument("--join-max", type=int, default=1000, help="larger clusters start warm instead of joining")
    ap.add_argument("--compare-sizes", default="16,64,256")
    ap.add_argument("--steady-s", type=float, default=10.0)
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--case", help=argparse.SUPPRESS)  # internal: one case, in its own process
    args = ap.parse_args()
    if args.case:
        print(json.dumps(run_spec(json.loads(args.case))))
        return 0
    sizes = [100, 200, 300] if args.quick else [int(x) for x in args.sizes.split(",") if x]
    join_max = 200 if args.quick else args.join_max
    compare = [16, 64] if args.quick else [int(x) for x in args.compare_sizes.split(",") if x]
    steady = 3.0 if args.quick else args.steady_s
    specs = [{"n": n, "membership": "swim", "steady_s": steady, "bringup_limit_s": 120.0, "warm": n > join_max}
             for n in sizes]
    specs += [{"n": n, "membership": m, "steady_s": steady, "bringup_limit_s": 60.0}
              for n in compare for m in ("heartbeat", "swim")]
    results = []
    for spec in specs:
        p = subprocess.run([sys.executable, __file__, "--case", json.dumps(spec)], capture_output=True, text=True)
        if p.returncode != 0:
            print(f"{spec}: failed: {p.stderr.strip().splitlines()[-1] if p.stderr.strip() else p.returncode}")
            return 1
        r = json.loads(p.stdout.strip().splitlines()[-1])
        results.append(r)
        print(show(r), flush=True)
    print("\nheartbeat / swim, per member per second, same N (side by side in this run):")
    by = {(r["membership"], r["n"]): r for r in results}
    for n in compare:
        h, s = by[("heartbeat", n)], by[("swim", n)]
        print(f"  N={n:<5} datagrams {h['datagrams_per_member_s']:8.1f} / {s['datagrams_per_member_s']:6.1f} = "
              f"{h['datagrams_per_member_s'] / s['datagrams_per_member_s']:6.1f}x   bytes "
              f"{h['bytes_per_member_s']:9.0f} / {s['bytes_per_member_s']:7.0f} = "
              f"{h['bytes_per_member_s'] / s['bytes_per_member_s']:6.1f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
