"""Membership protocols compared under the same faults: one scenario, run once per protocol variant (the heartbeat
protocol, SWIM with Lifeguard, SWIM without each Lifeguard part, plain SWIM), on any backend, each run measured the
same way from its run directory.

`measure(run_dir)` gives one run's figures, all from the run's own records:

- ``first_suspicion_s`` / ``first_removal_s`` / ``all_removed_s``: after each crash (a ``crash`` fault window's
  start), when the first live member suspected the crashed node, when the first one removed it, and when the last
  live member that listed it did (medians over the run's crashes; ``None`` where it never happened, and the heartbeat
  protocol has no suspicions);
- ``messages_per_member_s`` / ``bytes_per_member_s``: datagrams and UDP payload bytes each member sent per second
  over the run's steady window (from a third of the way in to the first fault, or to the end);
- ``false_suspicions``: suspicions (``member_suspected``) of members live throughout the two protocol periods
  before, by observers live throughout them too. Unlike the checks, a loss window excuses nothing here: what loss
  makes a protocol believe is what is being compared. A stopped (CPU-starved) node is not live while stopped, so
  suspicions of it, and its own, are excused; what its stale view spreads to live members is not;
- ``false_removals``: removals of members whose process ran throughout the window before (the timeout, at least
  two periods), by observers live at the time: here a stop excuses nothing, since a starved process that comes
  back was never gone, and removing it is the false positive Lifeguard is about;
- ``t50_s`` / ``t100_s``: the median over the run's rumors of the time from a publish to half and to all of the live
  nodes holding it.

`compare(scenario, variants, nodes=..., seeds=..., out_dir=...)` runs the grid and returns one row per run.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Iterable, Mapping

from .. import analysis
from ..checkers.no_false_deaths import false_records

# each variant: the scenario's ``node:`` fields it sets
VARIANTS: dict[str, dict] = {
    "heartbeat": {"membership": "heartbeat", "options": {}},
    "swim": {"membership": "swim", "options": {}},
    "swim, no LHM": {"membership": "swim", "options": {"lifeguard_lhm": False}},
    "swim, no dynamic suspicion": {"membership": "swim", "options": {"lifeguard_suspicion": False}},
    "swim, no buddy": {"membership": "swim", "options": {"lifeguard_buddy": False}},
    "swim, no Lifeguard": {"membership": "swim", "options": {"lifeguard_lhm": False, "lifeguard_suspicion": False,
                                                             "lifeguard_buddy": False}},
}


def _median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def _false(history: analysis.History, kind: str, window_s: float, *, pauses_excuse: bool = True) -> list[dict]:
    """KIND records (about member ``name``, by ``node``) of members live throughout the WINDOW_S before, by
    observers live throughout it too, no fault window excusing them (`false_records`); with PAUSES_EXCUSE false, a
    member whose process ran throughout counts even if it was stopped for a while (removing a starved process is a
    false removal), and the observer need only be live at the time."""
    if pauses_excuse:
        return false_records(history, kind, window_s, faults_excuse=False)
    live = analysis.Liveness(history)
    up: dict[str, list[tuple[float, bool]]] = {}
    for e in history.of_kind(analysis.PROC):
        if e["state"] in ("up", "down"):
            up.setdefault(e["node"], []).append((e["t"], e["state"] == "up"))

    def running_throughout(n: str, t0: float, t1: float) -> bool:
        changes = up.get(n, [])
        before = [u for t, u in changes if t <= t0]
        return bool(before and before[-1]) and all(u for t, u in changes if t0 < t <= t1)
    return [e for e in history.of_kind(kind)
            if running_throughout(e["name"], e["t"] - window_s, e["t"]) and live.is_live(e["node"], e["t"])]


def _crash_times(history: analysis.History) -> dict:
    live = analysis.Liveness(history)
    first_s, first_r, all_r = [], [], []
    for f in history.faults:
        if f.kind != "crash":
            continue
        for victim in f.nodes:
            def times(kind):
                return sorted(e["t"] - f.start for e in history.of_kind(kind)
                              if e["name"] == victim and f.start <= e["t"] <= f.end and live.is_live(e["node"], e["t"]))
            s, r = times("member_suspected"), times("member_removed")
            if s:
                first_s.append(s[0])
            if r:
                first_r.append(r[0])
                # everyone live throughout who is not the victim must have removed it
                observers = {e["node"] for e in history.of_kind("member_removed")
                             if e["name"] == victim and f.start <= e["t"] <= f.end}
                expected = {n for n in live.changes if n != victim and live.live_throughout(n, f.start, f.end)}
                if expected <= observers:
                    all_r.append(r[-1])
    return {"crashes": sum(len(f.nodes) for f in history.faults if f.kind == "crash"),
            "first_suspicion_s": _median(first_s), "first_removal_s": _median(first_r),
            "all_removed_s": _median(all_r)}


def steady_window(history: analysis.History) -> tuple[float, float]:
    """Where traffic is measured: from three periods in to the first fault, if that leaves at least three
    periods; otherwise the last two thirds of the run."""
    t0, cycle = history.t0, float(history.meta.get("cycle_s", 1.0))
    end = t0 + float(history.meta.get("duration_s") or (history.events[-1]["t"] - t0 if history.events else 0))
    first = min([f.start for f in history.faults] + [end])
    if first - (t0 + 3 * cycle) >= 3 * cycle:
        return t0 + 3 * cycle, first
    return t0 + (end - t0) / 3, end


def with_fault(scenario, fault: str, **params):
    """SCENARIO with PARAMS set on every step of FAULT (``with_fault(s, "loss", rate=0.1)``), re-validated."""
    from dataclasses import replace
    from types import MappingProxyType

    steps = tuple(replace(st, params=MappingProxyType({**st.params, **params}))
                  if st.kind == "fault" and st.action == fault else st for st in scenario.timeline)
    return replace(scenario, timeline=steps).with_overrides()


def measure(run_dir: Path | str) -> dict:
    """One run's figures (see the module docstring)."""
    h = analysis.load_history(run_dir)
    meta = h.meta
    n = int(meta.get("nodes") or 1)
    cycle = float(meta.get("cycle_s", 1.0))
    a, b = steady_window(h)
    sent, node_s = analysis.counter_growth(list(h.of_kind("stats")), a, b, ("packets_out", "bytes_out"))
    node_s = node_s or 1e-9  # no node was up throughout the window: the rates read 0
    rumors = analysis.rumors(h)
    suspicion_window = 2 * cycle
    removal_window = max(float(meta.get("timeout_s", 5.0)), 2 * cycle)
    return {
        "membership": meta.get("membership", "heartbeat"), "options": meta.get("options", {}), "nodes": n,
        "seed": meta.get("seed"), "backend": meta.get("backend"), "cycle_s": cycle,
        **_crash_times(h),
        "messages_per_member_s": sent["packets_out"] / node_s,
        "bytes_per_member_s": sent["bytes_out"] / node_s,
        "suspicions": sum(1 for _ in h.of_kind("member_suspected")),
        "false_suspicions": len(_false(h, "member_suspected", suspicion_window)),
        "false_removals": len(_false(h, "member_removed", removal_window, pauses_excuse=False)),
        "t50_s": _median([r.t50 for r in rumors if r.t50 is not None]),
        "t100_s": _median([r.t100 for r in rumors if r.t100 is not None]),
        "rumors": len(rumors), "rumors_complete": sum(1 for r in rumors if r.t100 is not None),
    }


def compare(scenario, variants: Iterable[str] | Mapping[str, dict] = ("heartbeat", "swim"), *,
            nodes: Iterable[int | None] = (None,), seeds: Iterable[int | None] = (None,), backend: str | None = None,
            out_dir: Path | str, progress: bool = False) -> list[dict]:
    """Run SCENARIO (a `Scenario`) once per variant (names in `VARIANTS`, or a mapping name -> ``node:`` fields),
    node count and seed; one `measure` row per run, with ``variant`` and ``run_dir`` added."""
    from ..runner import run_scenario

    chosen = dict(variants) if isinstance(variants, Mapping) else {v: VARIANTS[v] for v in variants}
    rows = []
    out_dir = Path(out_dir)
    for name, node in chosen.items():
        for n in nodes:
            for seed in seeds:
                s = scenario.with_overrides(nodes=n, seed=seed, backend=backend, node=node)
                tag = f"{name.replace(', ', '-').replace(' ', '_')}-n{s.nodes}-s{s.seed}"
                summary = run_scenario(s, out_dir / tag, progress=progress)
                row = measure(out_dir / tag)
                rows.append({"variant": name, **row, "passed": summary["passed"], "run_dir": str(out_dir / tag)})
    return rows
