"""What the steady-cluster benchmarks share (bench_swim_testbed.py, bench_hbplane_cluster.py): how long a scenario
allows the join, where its steady window lies in the recorded run, and the node processes' CPU in that window.

Pure functions of a run's history (`testbed.analysis`); they never touch a live cluster.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from testbed import analysis  # noqa: E402


def join_allowance_s(n: int, cycle_s: float) -> float:
    """Seconds of timeline a steady scenario of N nodes gives the join before its steady window: the join's share
    grows with N (seeds, then push-pull or rumors of every member)."""
    return max(10.0, 4 * cycle_s + n / 32)


def steady_window(h: analysis.History, cycle_s: float, join_s: float, steady_s: float) -> tuple[float, float,
                                                                                                 float | None]:
    """(A, B, first full membership) of the run H: STEADY_S from the join allowance's end (the timeline starts once
    every process is up), or from two periods after the first full membership if that came later, and ending two
    periods before the timeline's end, so every node's stats record after the window comes before the run ends.
    The first full membership is in seconds after the first node's start (None if never)."""
    starts = [e["t"] for e in h.of_kind("started")]
    t_start = min(starts) if starts else h.t0
    first = analysis.first_converged_at(h, t_start)
    a = h.t0 + join_s
    if first is not None:
        a = max(a, first + 2 * cycle_s)
    b = min(h.t0 + float(h.meta.get("duration_s") or 0) - 2 * cycle_s, a + steady_s)
    return a, b, None if first is None else first - t_start


def node_growth(h: analysis.History, a: float, b: float, keys: tuple[str, ...]) -> tuple[dict[str, float], float]:
    """The node processes' counters KEYS (``cpu_s`` among them for their CPU) grown over [A, B], summed over the
    nodes up throughout, and the window's span as their records saw it (node-seconds over nodes: a per-second rate
    of the whole cluster is ``growth / span``)."""
    grown, node_s = analysis.counter_growth(list(h.of_kind("stats")), a, b, keys)
    n = int(h.meta.get("nodes") or 1)
    return grown, (node_s / n) or 1e-9  # no node up throughout the window: every rate reads 0
