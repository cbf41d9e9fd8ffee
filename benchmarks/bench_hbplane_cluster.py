"""A steady heartbeat cluster on the netns testbed with the in-kernel heartbeat plane off and on, side by side: where
the host's CPU goes in each mode.

    .venv/bin/python benchmarks/bench_hbplane_cluster.py [--sizes 64,128] [--modes off,on] [--rounds 1]
        [--cycle 1] [--timeout 10] [--steady-s 30] [--baseline-s 5] [--keep DIR] [--json FILE] [--quick]   (root)

For each size, the same scenario with no fault (cycle ``--cycle``, timeout ``--timeout``, XDP on) is run once per
mode and round, the modes alternating, so each sees the same machine: ``off`` is today's XDP fast path
(``node: {xdp: true}``), ``on`` adds the plane (``node: {xdp: true, kernel_heartbeats: true}``). Each run is
measured over a steady window of ``--steady-s`` seconds once every node lists every other (`_steady`), from the
run's own records (`testbed.analysis`):

- the node processes' CPU (cores, from each node's ``cpu_s``);
- the whole host's busy CPU (cores, from /proc/stat as the testbed records it: every field but idle and iowait),
  softirq apart -- packet work in softirq is charged to whichever task was running, so the nodes' own CPU misses
  it. The machine is shared and /proc/stat counts everyone's work, so also: the host's user and system time that
  is neither the nodes' nor the testbed process's (``others~``), the busy time less that (``run busy~``, the run's
  estimate: its processes, all softirq and irq), and the host's busy CPU in the ``--baseline-s`` seconds before and
  after the run, with no cluster;
- the datagrams reaching the nodes' sockets per second (``packets_in``), the heartbeats the nodes took themselves
  (``accepted_heartbeat``) and those the kernel took for them (``kernel_refreshed``: read back from the plane);
- the kernel's own cost (kernel.bpf_stats_enabled on for the run, restored after): each program's runs per second,
  ns per run and cores -- the plane's entry program (its tail calls included), the XDP fast path, and the
  testbed's fault programs on the bridge side of every veth, whose runs count the datagrams crossing the bridge --
  and the plane's run time per heartbeat it handled;
- false deaths (the ``no_false_deaths`` check, and removals in the window), bring-up time and USS per node;
- with the plane, the members a node has registered without a MAC (its neighbour table had none: the kernel passes
  a heartbeat it would send to them), from every node's ``GET /stats`` polled every ``MAC_POLL_S`` during the run,
  the polls inside the window averaged.

Then the ratios off / on. Figures only, no pass/fail on them: the machine is shared and noisy. ``--quick`` (the CI
smoke run): 8 nodes, a 3-s window, both modes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _steady import join_allowance_s, node_growth, steady_window  # noqa: E402
from bpf._sys import bpf_stats_enabled  # noqa: E402
from testbed import analysis  # noqa: E402
from testbed.cluster import control  # noqa: E402
from testbed.runner import run_scenario  # noqa: E402
from testbed.scenario import parse  # noqa: E402

MODES = {"off": "xdp: true", "on": "xdp: true, kernel_heartbeats: true"}
NODE_KEYS = ("cpu_s", "packets_in", "accepted_heartbeat", "kernel_refreshed")

SCENARIO = """\
name: hb-steady-{n}-{mode}
description: {n} heartbeat nodes, no fault, held steady after they converge (kernel plane {mode})
seed: 1
nodes: {n}
node: {{cycle_s: {cycle}, timeout_s: {timeout}, {node}}}
duration_s: {duration}
recovery_s: {recovery}
checks:
  - membership_converged: {{within_s: {recovery}}}
  - no_false_deaths
"""


def scenario_text(n: int, mode: str, cycle_s: float, timeout_s: float, join_s: float, steady_s: float) -> str:
    duration = round(join_s + steady_s + 2 * cycle_s, 1)  # two periods after the window: records that close it
    return SCENARIO.format(n=n, mode=mode, cycle=cycle_s, timeout=timeout_s, node=MODES[mode], duration=duration,
                           recovery=max(30, 6 * cycle_s))


def host_busy_now(seconds: float) -> float | None:
    """The host's busy cores over the next SECONDS, nothing of ours running: what the rest of the machine does."""
    def record(t: float) -> dict:
        with open("/proc/stat") as f:
            return {"t": t, "node": "host", **analysis.proc_stat_cpu(f.read(), os.sysconf("SC_CLK_TCK"))}
    first = record(time.time())
    time.sleep(seconds)
    cpu = analysis.host_cpu([first, record(time.time())], first["t"], first["t"] + seconds / 2)
    return cpu and cpu["busy"]


MAC_POLL_S = 10.0  # 64 nodes answering /stats every 10 s: ~0.1 % of a core


@contextlib.contextmanager
def polling_macs(run_dir: Path):
    """Poll every node's control socket under RUN_DIR for its plane's members with and without a MAC while the run
    lasts; yields the list of (wall time, nodes answering, members, members without a MAC) it fills."""
    samples: list[tuple[float, int, int, int]] = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.wait(MAC_POLL_S):
            answered = members = without = 0
            for sock in sorted((run_dir / "control").glob("*.sock")):
                with contextlib.suppress(control.ControlError):
                    plane = control.call(str(sock), "GET", "/stats", timeout_s=1.0).get("hbplane")
                    if plane and "members" in plane:
                        answered += 1
                        members += plane["members"]
                        without += plane["members_without_mac"]
            if answered:
                samples.append((time.time(), answered, members, without))

    t = threading.Thread(target=poll, name="mac-poll", daemon=True)
    t.start()
    try:
        yield samples
    finally:
        stop.set()
        t.join()


def measure(run_dir: Path, summary: dict, cycle_s: float, steady_s: float, join_s: float,
            mac_samples: list | None = None) -> dict:
    h = analysis.load_history(run_dir)
    meta = h.meta
    a, b, converged_after = steady_window(h, cycle_s, join_s, steady_s)
    grown, span = node_growth(h, a, b, NODE_KEYS)
    host = list(h.of_kind(analysis.HOST_STATS))
    cpu = analysis.host_cpu(host, a, b) or {}
    testbed_cpu, host_span = analysis.counter_growth(host, a, b, ("testbed_cpu_s",))
    testbed_cores = testbed_cpu["testbed_cpu_s"] / host_span if host_span else None
    node_cores = grown["cpu_s"] / span
    # /proc/stat counts every task on the host: the user and system time that is neither the nodes' nor the
    # testbed's is other work's (this machine is shared); the rest of the busy time is the run's estimate
    others = None
    if cpu and testbed_cores is not None:
        others = max(0.0, cpu["user"] + cpu["nice"] + cpu["system"] - node_cores - testbed_cores)
    progs = analysis.bpf_run(host, a, b)
    plane = progs.get("hbplane", {})
    handled = grown["kernel_refreshed"] / span
    mem = list(meta.get("node_memory_bytes", {}).values())
    t = meta.get("timings", {})
    checks = {c["name"]: c["passed"] for c in summary["checks"]}
    polled = [(n, m, w) for t, n, m, w in (mac_samples or ()) if a <= t <= b]
    return {
        "nodes": int(meta.get("nodes") or 0), "kernel_heartbeats": meta.get("kernel_heartbeats"),
        "window_s": b - a, "counted_s": span,
        "node_cores": node_cores, "testbed_cores": testbed_cores,
        "host_busy_cores": cpu.get("busy"), "host_softirq_cores": cpu.get("softirq"),
        "others_cores": others, "run_cores": None if others is None else cpu["busy"] - others,
        "host_cores": {k: v for k, v in cpu.items() if k != "busy"},
        "socket_datagrams_per_s": grown["packets_in"] / span,
        "user_heartbeats_per_s": grown["accepted_heartbeat"] / span,
        "kernel_heartbeats_per_s": handled,
        "bpf": progs,
        "bpf_cores": sum(p["cores"] for p in progs.values()),
        "hbplane_us_per_handled": plane["cores"] / handled * 1e6 if handled and plane else None,
        "bridge_datagrams_per_s": progs.get("faults_from_node", {}).get("runs_per_s"),
        "removals_in_window": sum(1 for e in h.of_kind("member_removed") if a <= e["t"] <= b),
        "removals": sum(1 for _ in h.of_kind("member_removed")),
        "checks": checks, "passed": summary["passed"],
        "network_s": t.get("network_s"), "bpf_s": t.get("bpf_s"), "nodes_up_s": t.get("nodes_up_s"),
        "converged_after_s": converged_after, "teardown_s": t.get("teardown_s"),
        "uss_mib_mean": statistics.mean(mem) / 2**20 if mem else None,
        "members_without_mac_per_node": statistics.mean(w / n for n, _, w in polled) if polled else None,
        "members_per_node": statistics.mean(m / n for n, m, _ in polled) if polled else None,
    }


def run_case(n: int, mode: str, cycle_s: float, timeout_s: float, join_s: float, steady_s: float,
             baseline_s: float, keep: Path | None) -> dict:
    s = parse(scenario_text(n, mode, cycle_s, timeout_s, join_s, steady_s), f"hb-steady-{n}-{mode}")
    before = host_busy_now(baseline_s) if baseline_s > 0 else None
    with tempfile.TemporaryDirectory(prefix="bench-hbplane-cluster-") as tmp:
        run_dir = (keep or Path(tmp)) / f"hb-{mode}-n{n}-{int(time.time())}"
        t = time.monotonic()
        with bpf_stats_enabled(), polling_macs(run_dir) as mac_samples:
            summary = run_scenario(s, run_dir)
        r = measure(run_dir, summary, cycle_s, steady_s, join_s, mac_samples)
        r.update(mode=mode, cycle_s=cycle_s, timeout_s=timeout_s, wall_s=time.monotonic() - t)
    after = host_busy_now(baseline_s) if baseline_s > 0 else None
    r.update(baseline_before_cores=before, baseline_after_cores=after)
    return r


def merge(rounds: list[dict]) -> dict:
    """Rounds of one mode and size as one: medians of the rates, the worst of the verdicts and removals."""
    out = dict(rounds[0])
    for k, v in out.items():
        if isinstance(v, float) and all(isinstance(r.get(k), (int, float)) for r in rounds):
            out[k] = statistics.median(r[k] for r in rounds)
    out["passed"] = all(r["passed"] for r in rounds)
    out["checks"] = {k: all(r["checks"].get(k, False) for r in rounds) for k in rounds[0]["checks"]}
    out["removals"] = max(r["removals"] for r in rounds)
    out["removals_in_window"] = max(r["removals_in_window"] for r in rounds)
    out["rounds"] = len(rounds)
    return out


def _f(x, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def _ratio(a, b) -> str:
    return "-" if not a or not b else f"{a / b:.1f}x"


COLUMNS = [("node cores", "node_cores", ".3f"), ("host busy", "host_busy_cores", ".3f"),
           ("softirq", "host_softirq_cores", ".3f"), ("bpf cores", "bpf_cores", ".3f"),
           ("run busy~", "run_cores", ".3f"), ("others~", "others_cores", ".3f"),
           ("testbed", "testbed_cores", ".3f"), ("bg before", "baseline_before_cores", ".2f"),
           ("bg after", "baseline_after_cores", ".2f"), ("socket dg/s", "socket_datagrams_per_s", ",.0f"),
           ("user hb/s", "user_heartbeats_per_s", ",.0f"), ("kernel hb/s", "kernel_heartbeats_per_s", ",.0f"),
           ("bridge dg/s", "bridge_datagrams_per_s", ",.0f")]


NO_RATIO = ("others_cores", "testbed_cores", "baseline_before_cores", "baseline_after_cores")


def show(n: int, results: dict[str, dict]) -> str:
    r0 = next(iter(results.values()))
    lines = [f"N={n}, cycle {r0['cycle_s']:g} s, timeout {r0['timeout_s']:g} s, steady window "
             f"{r0['counted_s']:.0f} s, {r0['rounds']} round(s); cores are CPU-seconds per second of the window; "
             "others~ = the host's user+system time that is neither the nodes' nor the testbed's (a shared "
             "machine), run busy~ = host busy - others~; bg before/after = the host's busy cores with no run, just before and after it",
             f"{'mode':<7}" + "".join(f"{title:>13}" for title, _, _ in COLUMNS)]
    for mode, r in results.items():
        lines.append(f"{mode:<7}" + "".join(f"{_f(r[k], fmt):>13}" for _, k, fmt in COLUMNS))
    if {"off", "on"} <= set(results):
        off, on = results["off"], results["on"]
        lines.append(f"{'off/on':<7}" + "".join(f"{_ratio(off[k], on[k]) if k not in NO_RATIO else '':>13}"
                                                for _, k, _ in COLUMNS[:10]))
    for mode, r in results.items():
        progs = ", ".join(f"{name} {p['runs_per_s']:,.0f}/s x {p['ns_per_run']:,.0f} ns = {p['cores']:.3f} cores"
                          for name, p in r["bpf"].items())
        cpu = ", ".join(f"{k} {v:.3f}" for k, v in r["host_cores"].items() if k not in analysis.HOST_IDLE_FIELDS)
        failed = [k for k, ok in r["checks"].items() if not ok]
        lines.append(f"  {mode}: bpf: {progs or '-'}; plane per handled heartbeat "
                     f"{_f(r['hbplane_us_per_handled'], '.2f')} us")
        lines.append(f"  {mode}: host cores by field: {cpu or '-'}")
        lines.append(f"  {mode}: up: net {_f(r['network_s'], '.1f')} s, bpf {_f(r['bpf_s'], '.1f')} s, nodes "
                     f"{_f(r['nodes_up_s'], '.1f')} s, full membership {_f(r['converged_after_s'], '.1f')} s after "
                     f"the first start; USS {_f(r['uss_mib_mean'], '.1f')} MiB/node; members without a MAC "
                     f"{_f(r['members_without_mac_per_node'], '.1f')} of {_f(r['members_per_node'], '.1f')} per node; removals (most in a round) {r['removals']} "
                     f"({r['removals_in_window']} in the window); checks "
                     f"{'all passed' if not failed else 'FAILED ' + ','.join(failed)}")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="64,128")
    ap.add_argument("--modes", default="off,on", help="off (XDP fast path only), on (with the kernel plane)")
    ap.add_argument("--rounds", type=int, default=1, help="runs per mode and size, the modes alternating")
    ap.add_argument("--cycle", type=float, default=1.0, help="the heartbeat period, s")
    ap.add_argument("--timeout", type=float, default=10.0, help="the failure timeout, s")
    ap.add_argument("--steady-s", type=float, default=30.0)
    ap.add_argument("--baseline-s", type=float, default=5.0, help="host CPU measured before and after each run, s (0: none)")
    ap.add_argument("--keep", type=Path, help="keep the run directories under this directory")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--quick", action="store_true", help="the bounded smoke run (8 nodes, a 3-s window)")
    args = ap.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    if not modes or set(modes) - set(MODES) or args.rounds < 1:
        ap.error(f"--modes: a comma-separated subset of {','.join(MODES)}; --rounds at least 1")
    if os.geteuid() != 0:
        print("skipped: needs root (namespaces, BPF)")
        return 0
    import bpf
    ok, why = bpf.available()
    if not ok:
        print(f"skipped: {why}")
        return 0
    sizes = [8] if args.quick else [int(x) for x in args.sizes.split(",") if x]
    steady_s, baseline_s = (3.0, 1.0) if args.quick else (args.steady_s, args.baseline_s)
    cycle_s, timeout_s = (0.5, 5.0) if args.quick else (args.cycle, args.timeout)
    results = []
    for n in sizes:
        join_s = 2.0 if args.quick else join_allowance_s(n, cycle_s)
        runs: dict[str, list[dict]] = {m: [] for m in modes}
        for k in range(args.rounds):
            for mode in (modes if k % 2 == 0 else modes[::-1]):
                runs[mode].append(run_case(n, mode, cycle_s, timeout_s, join_s, steady_s, baseline_s, args.keep))
        merged = {m: merge(rs) for m, rs in runs.items()}
        results.append({"nodes": n, "modes": merged, "runs": runs})
        print(show(n, merged), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
