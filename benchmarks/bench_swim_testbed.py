"""SWIM on real nodes: N `python -m gossip node --membership swim` processes with XDP on the netns testbed, held
steady, and the same scenario on the simulator beside it.

    .venv/bin/python benchmarks/bench_swim_testbed.py [--sizes 16,64,256] [--steady-s 30] [--backends netns,sim]
                                                      [--timing lan|wan] [--cycle-s 1.0] [--keep DIR]
                                                      [--json FILE] [--quick]   (root)

For each N and backend, one run of a scenario with no fault: the nodes join through the testbed's seeds, then the
run goes on for ``--steady-s`` seconds after the first moment every live node listed every other. Figures, all from
the run's own records (`testbed.analysis`):

- bring-up: the network, the BPF programs, the node processes up, and the first full membership (seconds from
  the first node's start); memory per node (USS, as the testbed reads it at the end);
- per member per protocol period in the steady window, from the nodes' own counters: the probe messages
  (PING + ACK + PING_REQ + NACK sent; the SWIM paper's analysis of a failure-free group gives 1 ping and 1 ack,
  2.0), the membership total (with GOSSIP and the push-pull STATE), and the metadata swaps;
- the node processes' CPU (cores busy, from each node's ``cpu_s``) in the steady window;
- the verdicts: membership converged, no false death, no false suspicion (a live, reachable member suspected),
  and how many suspicions were raised at all.

``--timing`` picks memberlist's timing profile, through SWIM's own options: ``lan`` (the defaults: a 1 s period,
probe timeout 0.5 s, gossip to 3 members every 0.2 s, suspicion timeout 4 periods scaled by log N) or ``wan``
(memberlist's DefaultWANConfig: a 5 s period, probe timeout 3 s, gossip to 4 members every 0.5 s, suspicion
multiplier 6, a push-pull every 60 s). ``--cycle-s`` overrides the period of either.

The probe messages per member per period are compared with the paper's 2.0 on the testbed and the simulator alike
(the issue's target: within 20 % at N = 16...256). Figures only, no pass/fail on them: these machines are shared
and noisy. ``--quick`` (the CI smoke run): N = 8, 8 steady seconds, both backends.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _steady import join_allowance_s, node_growth, steady_window  # noqa: E402
from testbed import analysis  # noqa: E402
from testbed.net.topology import BRIDGE_MAX_PORTS  # noqa: E402
from testbed.runner import run_scenario  # noqa: E402
from testbed.scenario import parse  # noqa: E402

PROBE = ("sent_ping", "sent_ack", "sent_ping_req", "sent_nack")
MEMBERSHIP = PROBE + ("sent_gossip", "sent_state")
SWAPS = ("sent_swap_req", "sent_swap_resp")
PAPER_PROBE = 2.0

SCENARIO = """\
name: swim-steady-{n}
description: {n} SWIM nodes, no fault, held steady after they converge
seed: 1
nodes: {n}
node: {{membership: swim, cycle_s: {cycle}, timeout_s: {timeout}, xdp: true, options: {options}}}
duration_s: {duration}
recovery_s: {recovery}{topology}
checks:
  - membership_converged: {{within_s: {recovery}}}
  - no_false_deaths
  - no_false_suspicions
"""


# memberlist's timing profiles (config.go: DefaultLANConfig, DefaultWANConfig) as (period, SWIM options)
TIMINGS = {
    "lan": (1.0, {}),
    "wan": (5.0, {"probe_timeout_ratio": 0.6, "gossip_nodes": 4, "gossip_ratio": 0.1, "suspicion_mult": 6,
                  "push_pull_cycles": 12}),
}


def scenario_text(n: int, cycle_s: float, steady_s: float, options: dict | None = None) -> tuple[str, float]:
    # the join, then the steady window on top, and two periods more, so every node's stats record after the window
    # comes before the run ends
    join_s = join_allowance_s(n, cycle_s)
    duration = round(join_s + steady_s + 2 * cycle_s, 1)
    opts = "{" + ", ".join(f"{k}: {v}" for k, v in (options or {}).items()) + "}"
    # one Linux bridge holds 1,023 ports: above that, two bridges in a line (one trunk between them)
    topology = "\ntopology: {shape: line, bridges: 2}" if n > BRIDGE_MAX_PORTS else ""
    return SCENARIO.format(n=n, cycle=cycle_s, timeout=5 * cycle_s, duration=duration, recovery=max(30, 6 * cycle_s),
                           options=opts, topology=topology), join_s


def _suspicions(h: analysis.History, a: float, b: float) -> dict:
    """Suspicions raised in [A, B], and those of them that stood: neither refuted (a ``member_alive`` of that
    member at that observer) nor ended by its removal (counted apart) before the run's end."""
    refuted: dict[tuple[str, int], list[float]] = {}
    for e in h.of_kind("member_alive", "member_removed"):
        refuted.setdefault((e["node"], e["node_id"]), []).append(e["t"])
    raised = [e for e in h.of_kind("member_suspected") if a <= e["t"] <= b]
    standing = [e for e in raised if not any(t > e["t"] for t in refuted.get((e["node"], e["node_id"]), ()))]
    return {"steady_suspicions": len(raised), "steady_standing": len(standing),
            "steady_removals": sum(1 for e in h.of_kind("member_removed") if a <= e["t"] <= b)}


def measure(run_dir: Path, summary: dict, cycle_s: float, steady_s: float, join_s: float) -> dict:
    h = analysis.load_history(run_dir)
    meta = h.meta
    n = int(meta.get("nodes") or 1)
    a, b, converged_after = steady_window(h, cycle_s, join_s, steady_s)
    sent, span = node_growth(h, a, b, MEMBERSHIP + SWAPS + ("cpu_s",))
    per = span * n / cycle_s  # member-periods the counted growth covers
    cpu = sent.pop("cpu_s")
    mem = list(meta.get("node_memory_bytes", {}).values())
    timings = meta.get("timings", {})
    checks = {c["name"]: c["passed"] for c in summary["checks"]}
    return {
        "nodes": n, "backend": meta.get("backend"), "cycle_s": cycle_s,
        "network_s": timings.get("network_s"), "bpf_s": timings.get("bpf_s"), "nodes_up_s": timings.get("nodes_up_s"),
        "converged_after_s": converged_after,
        "steady_s": span,
        "probe_per_member_period": sum(sent[k] for k in PROBE) / per,
        "membership_per_member_period": sum(sent[k] for k in MEMBERSHIP) / per,
        "swaps_per_member_period": sum(sent[k] for k in SWAPS) / per,
        "by_type_per_member_period": {k: sent[k] / per for k in MEMBERSHIP + SWAPS},
        "node_cores_busy": cpu / span if meta.get("backend") != "sim" else None,  # the simulator runs no process
        "uss_mib_mean": statistics.mean(mem) / 2**20 if mem else None,
        "suspicions": sum(1 for _ in h.of_kind("member_suspected")),
        "removals": sum(1 for _ in h.of_kind("member_removed")),
        **_suspicions(h, a, b),
        "checks": checks, "passed": summary["passed"],
    }


def run_case(n: int, backend: str, cycle_s: float, steady_s: float, keep: Path | None,
             options: dict | None = None) -> dict:
    text, join_s = scenario_text(n, cycle_s, steady_s, options)
    s = parse(text, f"swim-steady-{n}").with_overrides(backend=backend)
    with tempfile.TemporaryDirectory(prefix="bench-swim-tb-") as tmp:
        run_dir = (keep or Path(tmp)) / f"swim-{backend}-n{n}"
        t = time.monotonic()
        summary = run_scenario(s, run_dir)
        r = measure(run_dir, summary, cycle_s, steady_s, join_s)
        r["wall_s"] = time.monotonic() - t
    return r


def show(r: dict) -> str:
    def f(x, fmt):
        return "-" if x is None else format(x, fmt)
    dev = (r["probe_per_member_period"] / PAPER_PROBE - 1) * 100
    failed = [k for k, ok in r["checks"].items() if not ok]
    return (f"{r['backend']:<6} N={r['nodes']:<5} {r.get('timing', 'lan')} period {r['cycle_s']:g} s; up: net {f(r['network_s'], '.1f')} s, bpf {f(r['bpf_s'], '.1f')} s,"
            f" nodes {f(r['nodes_up_s'], '.1f')} s, full membership {f(r['converged_after_s'], '.1f')} s after the "
            f"first start; USS {f(r['uss_mib_mean'], '.1f')} MiB/node\n"
            f"{'':<13} per member per period over {r['steady_s']:.0f} s: probe {r['probe_per_member_period']:.2f} "
            f"(paper {PAPER_PROBE:.2f}, {dev:+.0f} %), membership {r['membership_per_member_period']:.2f}, "
            f"swaps {r['swaps_per_member_period']:.2f}; nodes busy {f(r['node_cores_busy'], '.2f')} cores\n"
            f"{'':<13} steady window: {r['steady_suspicions']} suspicions ({r['steady_standing']} not refuted), "
            f"{r['steady_removals']} removals; whole run: {r['suspicions']} suspicions, {r['removals']} removals; checks {'all passed' if not failed else 'FAILED ' + ','.join(failed)}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="16,64,256")
    ap.add_argument("--backends", default="netns,sim")
    ap.add_argument("--timing", choices=sorted(TIMINGS), default="lan", help="memberlist's timing profile")
    ap.add_argument("--cycle-s", type=float, help="the protocol period (default: the timing profile's)")
    ap.add_argument("--steady-s", type=float, default=30.0)
    ap.add_argument("--keep", type=Path, help="keep the run directories under this directory")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--quick", action="store_true", help="the bounded smoke run")
    args = ap.parse_args()
    sizes = [8] if args.quick else [int(x) for x in args.sizes.split(",") if x]
    steady = 8.0 if args.quick else args.steady_s
    backends = [b for b in args.backends.split(",") if b]
    cycle_s, options = TIMINGS[args.timing]
    cycle_s = args.cycle_s or cycle_s
    results = []
    for n in sizes:
        for backend in backends:
            r = run_case(n, backend, cycle_s, steady, args.keep, options)
            r["timing"] = args.timing
            results.append(r)
            print(show(r), flush=True)
    by = {(r["backend"], r["nodes"]): r for r in results}
    if len(backends) > 1:
        print("\nprobe messages per member per period, side by side (paper: 2.00):")
        for n in sizes:
            print(f"  N={n:<5} " + "   ".join(f"{b} {by[(b, n)]['probe_per_member_period']:.2f}" for b in backends))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
