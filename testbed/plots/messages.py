"""messages.png: packets per second sent, received and dropped (by the node and by XDP, per reason)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

from .. import analysis
from ._common import legend, save, shade_faults
from ._registry import register


def _rates(records: list[dict], key_fn, t0: float, bin_s: float) -> dict[str, dict[int, float]]:
    """Per-series packets/s in bins, from cumulative per-node counters."""
    last: dict[tuple[str, str], tuple[float, float]] = {}
    out: dict[str, dict[int, float]] = {}
    for r in records:
        for series, value in key_fn(r).items():
            k = (r["node"], series)
            prev = last.get(k)
            last[k] = (r["t"], value)
            if prev is None or value < prev[1]:  # first sample, or a restarted node's counters
                continue
            # a long gap between samples is spread over its length, not piled into one bin
            rate = (value - prev[1]) / max(bin_s, r["t"] - prev[0])
            b = int((r["t"] - t0) // bin_s)
            out.setdefault(series, {})[b] = out.setdefault(series, {}).get(b, 0.0) + rate
    return out


@register("messages")
def messages(history: analysis.History, summary: dict, path: Path, bin_s: float = 1.0) -> None:
    t0 = history.t0
    node_stats = list(history.of_kind("stats"))
    series = _rates(node_stats, lambda r: {"sent": r.get("packets_out", 0), "received": r.get("packets_in", 0),
                                           "dropped by node": r.get("dropped", 0)}, t0, bin_s)
    xdp = _rates(list(history.of_kind(analysis.XDP_STATS)),
                 lambda r: {f"XDP drop: {k}": v for k, v in r.get("dropped", {}).items()}, t0, bin_s)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name, bins in list(series.items()) + sorted(xdp.items()):
        if not bins:
            continue
        xs = sorted(bins)
        ax.plot([x * bin_s for x in xs], [bins[x] for x in xs], lw=1.2, label=name,
                ls="--" if name.startswith("XDP") else "-")
    shade_faults(ax, history, relative_to=t0)
    ax.set_xlabel("time since the timeline started (s)")
    ax.set_ylabel("packets per second (all nodes)")
    ax.set_yscale("symlog", linthresh=10)
    ax.set_title(f"Messages — {summary['scenario']} ({summary['nodes']} nodes, XDP {'on' if summary.get('xdp') else 'off'})")
    legend(ax, len(series) + len(xdp))
    save(fig, path)
