"""Simulator scaling: wall time, peak memory and event rate of both fidelities.

    .venv/bin/python benchmarks/bench_sim.py [--quick] [--cycles 2] [--full-sizes 500,1000,2000]
                                             [--scenario-sizes 400,1000] [--json FILE]

Full fidelity: N real protocol cores that all know each other from the start (so every cycle costs the
steady-state O(N^2) heartbeat traffic), started over one cycle as processes launched one after another are, then
``--cycles`` measured cycles, with the events streamed to a file; each N without and with the XDP fast-path
model. Its event rate is messages delivered per second in the measured cycles; the wall time includes the start-up
cycle.

Scenario: a whole ``--backend sim`` run of a 4-s scenario (nodes join through one seed, one publish, then
recovery, analysis and plot), for ``--scenario-sizes`` (200 with ``--quick``; 2,000 takes about 40 min).

Dissemination only: one rumor over 10^4, 10^5 and 10^6 nodes, for the project's forwarding rule and the two
baselines. Its event rate is messages sent per second.

Each case runs in its own process so that its peak RSS is its own. ``--quick`` (a CI smoke run, < 60 s) runs one
small full case and skips 10^6. Figures only; no pass/fail: these machines are shared and noisy.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

DISSEMINATION = (("protocol", 3), ("infect_and_die", 3), ("push", 1), ("push", 3))


def full_case(n: int, cycles: int, xdp: bool) -> dict:
    from gossip import NodeConfig
    from testbed.sim import Simulation, Uniform

    config = NodeConfig(fanout=3, cycle_s=1.0, timeout_s=5.0)
    with tempfile.TemporaryDirectory(prefix="bench-sim-") as tmp, \
            Simulation(seed=1, config=config, latency=Uniform(lo_s=0.0005, hi_s=0.002), keep_events=False,
                       events_path=Path(tmp) / "events.jsonl", xdp=xdp) as sim:
        t0 = time.perf_counter()
        sim.add_nodes(n, seeding="all", stagger_s=config.cycle_s)
        sim.run_until(config.cycle_s)  # start-up: every node starts, adds its N-1 seeds, and first heartbeats
        startup_s = time.perf_counter() - t0
        before = sim.network_stats()["delivered"]
        t1 = time.perf_counter()
        sim.run_until((cycles + 1) * config.cycle_s)
        run_s = time.perf_counter() - t1
        delivered = sim.network_stats()["delivered"] - before
        sim.close()
        events_mb = (Path(tmp) / "events.jsonl").stat().st_size / 1e6
        converged = sim.membership_converged()
    return {"case": f"full N={n}{' xdp' if xdp else ''}", "cycles": cycles, "startup_s": startup_s, "wall_s": startup_s + run_s,
            "s_per_cycle": run_s / cycles, "events": delivered, "events_per_s": delivered / run_s,
            "us_per_event": run_s / delivered * 1e6, "events_file_mb": events_mb, "converged": converged}


SCENARIO = """name: bench-scenario
seed: 3
nodes: {n}
backend: sim
node: {{fanout: 3, cycle_s: 1.0, timeout_s: 5.0}}
duration_s: 4
recovery_s: 6
timeline:
  - {{at: 2.5, op: publish, node: n7, data: x}}
checks:
  - membership_converged: {{within_s: 6}}
  - metadata_converged: {{within_s: 3}}
plots: [infection]
"""


def scenario_case(n: int) -> dict:
    """A whole `--backend sim` run, as a user makes it: N nodes joining through one seed, a publish, recovery,
    then the analysis and the plot. What the protocol costs plus everything around it."""
    from testbed.scenario import parse
    from testbed.runner import run_scenario as run_sim

    with tempfile.TemporaryDirectory(prefix="bench-sim-") as tmp:
        s = parse(SCENARIO.format(n=n), "bench-scenario.yaml")
        t0 = time.perf_counter()
        summary = run_sim(s, Path(tmp) / "run")
        wall = time.perf_counter() - t0
        events = sum(1 for _ in open(Path(tmp) / "run" / "events.jsonl"))
    return {"case": f"scenario N={n}", "wall_s": wall, "events": events, "events_per_s": events / wall,
            "passed": summary["passed"], "simulated_s": s.duration_s}


def dissemination_case(n: int, variant: str, fanout: int) -> dict:
    from testbed.sim import Uniform, disseminate

    t0 = time.perf_counter()
    r = disseminate(n, variant, fanout, Uniform(lo_s=0.001, hi_s=0.003), seed=1)
    wall = time.perf_counter() - t0
    return {"case": f"{variant} f={fanout} n={n}", "wall_s": wall, "events": r.messages_sent,
            "events_per_s": r.messages_sent / wall, "final_fraction": r.final_fraction, "t50": r.t50,
            "t90": r.t90, "t100": r.t100, "steps": r.steps}


def run_one(spec: dict) -> dict:
    if spec["kind"] == "full":
        out = full_case(spec["n"], spec["cycles"], spec["xdp"])
    elif spec["kind"] == "scenario":
        out = scenario_case(spec["n"])
    else:
        out = dissemination_case(spec["n"], spec["variant"], spec["fanout"])
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def cases(args) -> list[dict]:
    full_sizes = [300] if args.quick else [int(x) for x in args.full_sizes.split(",") if x]
    cycles = 1 if args.quick else args.cycles
    sizes = (10_000, 100_000) if args.quick else (10_000, 100_000, 1_000_000)
    # each size without and with the fast-path model (duplicates dropped before the core, as XDP does)
    out = [{"kind": "full", "n": n, "cycles": cycles, "xdp": xdp} for n in full_sizes for xdp in (False, True)]
    scenario_sizes = [200] if args.quick else [int(x) for x in args.scenario_sizes.split(",") if x]
    out += [{"kind": "scenario", "n": n} for n in scenario_sizes]
    out += [{"kind": "dissemination", "n": n, "variant": v, "fanout": f} for n in sizes for v, f in DISSEMINATION]
    return out


def show(r: dict) -> str:
    if "s_per_cycle" in r:
        extra = f"{r['s_per_cycle']:8.1f} s/cycle  {r['us_per_event']:5.1f} us/msg  converged={r['converged']}"
    elif "simulated_s" in r:
        extra = f"{r['simulated_s']:g} simulated s + recovery, analysis and plot; passed={r['passed']}"
    else:
        extra = f"coverage {r['final_fraction']:.3f}  t50 {r['t50']:.4g}  t90 {r['t90']:.4g}"
    unit = "records" if "simulated_s" in r else "msgs"  # a scenario counts the lines of its history
    return (f"{r['case']:<28} {r['wall_s']:8.2f} s  {r['peak_rss_mb']:7.0f} MB  {r['events']:>10d} {unit}  "
            f"{r['events_per_s']:>11,.0f} {unit}/s  {extra}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="CI smoke run: one small full size, no 10^6 (< 60 s)")
    p.add_argument("--cycles", type=int, default=2, help="measured cycles per full-fidelity case (default 2)")
    p.add_argument("--full-sizes", default="500,1000,2000", help="comma-separated N for full fidelity")
    p.add_argument("--scenario-sizes", default="400,1000", help="comma-separated N for the whole-scenario case")
    p.add_argument("--timeout-s", type=float, default=3600, help="give up on a case after this long")
    p.add_argument("--json", metavar="FILE", help="also write the results here")
    p.add_argument("--case", help=argparse.SUPPRESS)  # internal: run one case in this process
    args = p.parse_args()
    if args.case:
        print(json.dumps(run_one(json.loads(args.case))))
        return 0
    results = []
    for spec in cases(args):
        try:
            proc = subprocess.run([sys.executable, __file__, "--case", json.dumps(spec)], capture_output=True,
                                  text=True, timeout=args.timeout_s, check=True)
        except subprocess.TimeoutExpired:
            print(f"{spec}: gave up after {args.timeout_s:.0f} s", flush=True)
            continue
        except subprocess.CalledProcessError as e:
            print(f"{spec}: failed:\n{e.stderr[-2000:]}", flush=True)
            return 1
        r = json.loads(proc.stdout.splitlines()[-1])
        results.append(r)
        print(show(r), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
