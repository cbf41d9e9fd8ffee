"""The simulator's validation set: run each scenario on the testbed, mirror each run, print one table.

``python -m testbed validate`` runs every scenario of the set (`SET`: ``scenarios/validation.yaml`` and
``scenarios/validation/*.yaml``, which differ in size, fanout, cycle, loss, XDP and the broadcaster) RUNS times on
the testbed, mirrors each run on the simulator with the default host model under SEEDS seeds (`mirror.mirror`),
and reports per scenario and run:

- the Kolmogorov–Smirnov distance of the infection times (every rumor pooled): against the seeds pooled, and
  against each seed alone (the median seed, what one simulator run typically gives, and the worst), beside the
  critical value at ``ALPHA`` for those sample sizes (`ks_critical`): a distance below it is one chance alone
  could give, so the bound a run is held to is the larger of the target and that value (``TARGET_POOLED`` for
  the pooled distance, ``TARGET_SEED`` for the median seed; the worst of five is reported, not held to it);
- t50 and t90 (medians over the rumors) on both sides;
- what the host model was given, all measured on the run itself and none of it on its rumor curves: the delay of
  heartbeats taken straight from their origin (median and 90th percentile, ms), the median time a node took to
  handle a heartbeat it forwarded, the marginal CPU per datagram reaching a process (µs), and how busy the node
  processes kept the host's cores; beside them, for comparison and not given to the model, the median handling
  of a rumor, the median CPU time (thread_time) a process spent on a heartbeat it took and on any other
  datagram, and the median wait of a heartbeat taken, of a rumor adopted and of a datagram that found its
  process idle (its wake-up), from the kernel's receipt to the process starting on it, and the median time from
  a direct heartbeat's making to its receipt by the kernel at the receiver (the hop's part before that wait);
- the share of duplicate drops XDP made (of all duplicate and stale drops, by XDP or by the node), both sides.

The same rows are written to ``OUT/validation.json``. Nothing here is tuned per scenario.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from .. import analysis
from .. import scenario as scenario_mod
from ..errors import UsageError

ROOT = Path(__file__).resolve().parents[2]
SET = ("validation.yaml", *sorted(f"validation/{p.name}" for p in (ROOT / "scenarios" / "validation").glob("*.yaml")))
TARGET_POOLED, TARGET_SEED = 0.15, 0.2
ALPHA = 0.01


def ks_critical(n: int, m: int, alpha: float = ALPHA) -> float:
    """The two-sample Kolmogorov–Smirnov distance chance exceeds with probability ALPHA, for N and M samples
    (the asymptotic form: c(alpha) * sqrt((n + m) / (n m)), c = sqrt(-ln(alpha / 2) / 2))."""
    if n < 1 or m < 1:
        raise ValueError(f"ks_critical: sample sizes must be >= 1, got {n} and {m}")
    return math.sqrt(-math.log(alpha / 2) / 2) * math.sqrt((n + m) / (n * m))


@dataclass(frozen=True)
class Row:
    scenario: str
    run: int
    nodes: int
    fanout: int
    cycle_s: float
    xdp: bool
    ks: float  # testbed against the seeds pooled
    ks_median_seed: float
    ks_worst_seed: float
    ks_critical: float  # for the pooled sample sizes, at ALPHA
    ks_critical_seed: float  # for one seed's sample size
    samples: tuple[int, int]
    t50_ms: tuple[float | None, float | None]  # (testbed, simulator)
    t90_ms: tuple[float | None, float | None]
    hb_hop_ms: tuple[float, float]  # direct heartbeat hops: median, 90th percentile
    cpu_us: float  # marginal, per datagram reaching a process
    handle_ms: tuple[float | None, float | None]  # medians, wall: a heartbeat's handling, a rumor's (both drawn)
    # medians, CPU time: a heartbeat taken, a rumor adopted, any other datagram (``cost: kind``; not the default)
    cpu_ms: tuple[float | None, float | None, float | None]
    # medians, kernel receipt to handling: a heartbeat taken, a rumor adopted, a datagram that found its process idle
    wait_ms: tuple[float | None, float | None, float | None]
    wire_ms: float | None  # median, a direct heartbeat's making to its kernel receipt at the receiver
    host_busy: float  # fraction of the host's cores the node processes kept busy
    xdp_share: tuple[float | None, float | None]  # of duplicate drops, testbed and simulator
    run_dir: str = ""
    sim_dirs: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        return (self.ks <= max(TARGET_POOLED, self.ks_critical)
                and self.ks_median_seed <= max(TARGET_SEED, self.ks_critical_seed))


def _median_t(summaries: list[dict], key: str) -> float | None:
    xs = [r[key] for s in summaries for r in s["rumors"] if r.get(key) is not None]
    return round(1000 * statistics.median(xs), 1) if xs else None


def _median_field(history: analysis.History, field: str) -> float | None:
    xs = analysis.stats_samples_ms(history, field)
    return round(statistics.median(xs), 3) if xs else None


def xdp_share(run_dir: Path | str) -> float | None:
    """Of a run's duplicate and stale drops, the share its XDP programs made (None without XDP drops)."""
    stats = json.loads((Path(run_dir) / "stats.json").read_text())["nodes"]
    node = sum(v.get("dropped", {}).get(k, 0) for v in stats.values() for k in ("duplicate", "stale"))
    xdp = sum(sum(v.get("xdp", {}).get("dropped", {}).values()) for v in stats.values())
    return round(xdp / (xdp + node), 3) if xdp else None


def host_busy(history: analysis.History) -> float:
    """The fraction of the host's cores a run's node processes used, from their stats records' ``cpu_s``."""
    first: dict[str, dict] = {}
    last: dict[str, dict] = {}
    for e in history.of_kind("stats"):
        if "cpu_s" in e:
            first.setdefault(e["node"], e)
            last[e["node"]] = e
    cpu = sum(max(last[n]["cpu_s"] - first[n]["cpu_s"], 0.0) for n in last)
    span = max((last[n]["t"] - first[n]["t"] for n in last), default=0.0)
    cores = int(history.meta.get("host_cpus") or 1)
    return round(cpu / (span * cores), 3) if span > 0 else 0.0


def row_for(name: str, index: int, run_dir: Path, mirror_result: dict) -> Row:
    history = analysis.load_history(run_dir)
    meta = history.meta
    hops = analysis.direct_heartbeat_hops_ms(history)
    sims = [Path(d) for d in mirror_result["runs"]]
    a = [analysis.load_summary(run_dir)]
    b = [analysis.load_summary(d) for d in sims]
    n, m = mirror_result["a"]["samples"], mirror_result["b"]["samples"]
    shares = [xdp_share(d) for d in sims]
    sim_share = round(statistics.mean(shares), 3) if all(x is not None for x in shares) and shares else None
    return Row(scenario=name, run=index, nodes=int(meta["nodes"]), fanout=int(meta.get("fanout", 0)),
               cycle_s=float(meta.get("cycle_s", 0)), xdp=bool(meta.get("xdp")),
               ks=round(mirror_result["ks"], 3), ks_median_seed=round(statistics.median(mirror_result["per_run"]), 3),
               ks_worst_seed=round(max(mirror_result["per_run"]), 3),
               ks_critical=round(ks_critical(n, m), 3),
               ks_critical_seed=round(ks_critical(n, max(m // max(len(sims), 1), 1)), 3), samples=(n, m),
               t50_ms=(_median_t(a, "t50"), _median_t(b, "t50")), t90_ms=(_median_t(a, "t90"), _median_t(b, "t90")),
               hb_hop_ms=(round(hops[len(hops) // 2], 2), round(hops[int(0.9 * len(hops))], 2)),
               cpu_us=round(1e6 * analysis.cpu_marginal_per_packet_s(history), 1),
               handle_ms=(_median_field(history, "hb_handle_ms"), _median_field(history, "md_handle_ms")),
               cpu_ms=(_median_field(history, "hb_cpu_ms"), _median_field(history, "md_cpu_ms"),
                       _median_field(history, "other_cpu_ms")),
               wait_ms=(_median_field(history, "hb_wait_ms"), _median_field(history, "md_wait_ms"),
                        _median_field(history, "wake_ms")),
               wire_ms=_median_field(history, "hb_wire_ms"),
               host_busy=host_busy(history), xdp_share=(xdp_share(run_dir), sim_share), run_dir=str(run_dir),
               sim_dirs=tuple(str(d) for d in sims))


def pooled(rows: list[Row]) -> tuple[float, float]:
    """The KS distance between every testbed run of ROWS pooled and every simulator run of theirs pooled, and the
    critical value for those sample sizes: several testbed runs of one scenario, judged together."""
    def times(d):
        s = analysis.load_summary(d)
        return [t for i in range(len(s["rumors"])) for t in analysis.infection_times(s, i)]

    a = [t for r in rows for t in times(r.run_dir)]
    b = [t for r in rows for d in r.sim_dirs for t in times(d)]
    return analysis.ks_distance(a, b), ks_critical(len(a), len(b))


def validate(out: Path | str, *, scenarios=SET, runs: int = 2, seeds: int = 5, model: str = "host",
             progress=True) -> list[Row]:
    """Run the validation set (see the module docstring); returns one `Row` per testbed run. PROGRESS (see
    `testbed.progress.as_progress`): which scenario, run and step, each run's phases, and each row when done."""
    from ..progress import as_progress
    from ..runner import run_scenario
    from . import mirror

    if runs < 1 or seeds < 1:
        raise UsageError(f"runs and seeds must be >= 1, got {runs} and {seeds}")
    out = Path(out)
    p = as_progress(progress, "validate")
    rows: list[Row] = []
    for i, name in enumerate(scenarios):
        s = scenario_mod.load(str(ROOT / "scenarios" / name) if (ROOT / "scenarios" / name).is_file() else name)
        for k in range(runs):
            d = out / s.name / f"run-{k}"
            with p.within(f"scenario {i + 1}/{len(scenarios)} {s.name} · testbed run {k + 1}/{runs}"):
                run_scenario(replace(s, seed=s.seed + 100 * k), d, progress=p)
            with p.within(f"scenario {i + 1}/{len(scenarios)} {s.name} · mirror of run {k + 1}"):
                result = mirror.mirror(d, d / f"mirror-{model}", seeds=seeds, model=model, progress=p)
            rows.append(row_for(s.name, k, d, result))
            p.say(table(rows[-1:], header=False))
    (out / "validation.json").write_text(json.dumps([asdict(r) | {"passed": r.passed} for r in rows], indent=1))
    return rows


COLUMNS = ("scenario", "run", "N", "f", "cycle", "xdp", "KS", "seed med", "worst", "crit", "t50 tb/sim ms",
           "t90 tb/sim ms", "hb hop p50/p90", "handle hb/md ms", "cpu hb/md/other ms", "wait hb/md/idle ms",
           "wire ms", "cpu us", "busy", "xdp share tb/sim", "ok")


def table(rows: list[Row], *, header: bool = True) -> str:
    def pair(p, fmt="{:g}"):
        return "/".join("-" if x is None else fmt.format(x) for x in p)

    body = [(r.scenario, str(r.run), str(r.nodes), str(r.fanout), f"{r.cycle_s:g}", "on" if r.xdp else "off",
             f"{r.ks:.3f}", f"{r.ks_median_seed:.3f}", f"{r.ks_worst_seed:.3f}", f"{r.ks_critical:.3f}",
             pair(r.t50_ms), pair(r.t90_ms), pair(r.hb_hop_ms), pair(r.handle_ms), pair(r.cpu_ms), pair(r.wait_ms),
             pair((r.wire_ms,)), f"{r.cpu_us:.0f}", f"{r.host_busy:.2f}", pair(r.xdp_share),
             "yes" if r.passed else "NO") for r in rows]
    lines = [COLUMNS] + body if header else body
    widths = [max(len(line[i]) for line in ([COLUMNS] + body)) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)) for line in lines)
