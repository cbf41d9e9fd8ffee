"""latency.png: how long an update takes to reach a node, and what one hop costs.

Left: the empirical CDF of the time from a publish until a node holds the version, every (rumor, node) pair
pooled (the publisher itself left out), one thin curve per rumor behind it. Right: the per-hop delay histogram on
log bins (what is below 0.1 ms in the first): metadata copies that informed their receiver (sent to adopted) and, where the nodes reported them,
heartbeats taken straight from their origin (the run's own idle traffic, `analysis.direct_heartbeat_hops_ms`).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from .. import analysis
from ._common import save, title
from ._registry import register

FLOOR_S = 1e-4
HIST_FLOOR_MS = 0.1  # delays below it share the first bin (heartbeat delays are known to the ms only)


@register("latency")
def latency(history: analysis.History, summary: dict, path: Path) -> None:
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.2))
    pooled: list[float] = []
    for r in summary["rumors"]:
        times = [dt for dt, _ in r["coverage"][1:]]  # the first entry is the publisher at 0 s
        pooled += times
        if len(summary["rumors"]) > 1 and times:
            left.step([max(t, FLOOR_S) for t in times], np.arange(1, len(times) + 1) / len(times), where="post",
                      lw=0.7, color="#aec7e8")
    if pooled:
        pooled.sort()
        left.step([max(t, FLOOR_S) for t in pooled], np.arange(1, len(pooled) + 1) / len(pooled), where="post",
                  lw=1.6, color="#1f77b4", label=f"{len(pooled)} node infections, {len(summary['rumors'])} rumor(s)")
        for q, ls in ((0.5, "-"), (0.9, "--"), (0.99, ":")):
            v = pooled[min(len(pooled) - 1, int(q * len(pooled)))]
            left.axvline(max(v, FLOOR_S), color="#1f77b4", ls=ls, lw=0.8, alpha=0.7,
                         label=f"p{int(q * 100)} {_fmt(v)}")
        if len(summary["rumors"]) > 1:
            left.plot([], [], lw=0.7, color="#aec7e8", label="each rumor")
        left.legend(fontsize=7, loc="upper left")
    else:
        left.text(0.5, 0.5, "no rumor reached another node", ha="center", transform=left.transAxes)
    left.set_xscale("log")
    left.set_xlabel("time from publish until the node holds it (s, log scale)")
    left.set_ylabel("fraction of node infections (CDF)")
    left.set_ylim(0, 1.02)
    left.set_title("per node", fontsize=9)

    meta_ms = [1000 * h.delay_s for h in analysis.rumor_hops(history) if h.won and h.delay_s > 0]
    hb_ms = analysis.direct_heartbeat_hop_samples_ms(history)
    every = meta_ms + hb_ms
    if every:
        lo = HIST_FLOOR_MS
        hi = max(max(every), 10 * lo)
        bins = np.logspace(np.log10(lo), np.log10(hi) + 0.02, 36)
        if hb_ms:
            xs = np.maximum(hb_ms, lo)
            right.hist(xs, bins=bins, weights=np.full(len(xs), 1 / len(xs)), histtype="step", lw=1.4,
                       color="#ff7f0e", label=f"heartbeats taken straight from their origin ({len(xs)}; "
                       f"median {_fmt(np.median(hb_ms) / 1000)}; ±0.5 ms)")
        if meta_ms:
            xs = np.maximum(meta_ms, lo)
            right.hist(xs, bins=bins, weights=np.full(len(xs), 1 / len(xs)), alpha=0.45, color="#1f77b4",
                       label=f"metadata copies that informed ({len(xs)}; median {_fmt(np.median(meta_ms) / 1000)})")
        right.set_xscale("log")
        right.legend(fontsize=7, loc="upper right")
    else:
        right.text(0.5, 0.5, "no hop measured", ha="center", transform=right.transAxes)
    right.set_xlabel("one-hop delay, send to accept (ms, log bins)")
    right.set_ylabel("fraction of hops per bin")
    right.set_ylim(top=right.get_ylim()[1] * 1.25)  # room for the legend
    right.set_title("per hop", fontsize=9)
    fig.suptitle(title("Update latency", summary), fontsize=10)
    save(fig, path)


def _fmt(s: float) -> str:
    return f"{s * 1000:.2f} ms" if s < 1 else f"{s:.2f} s"
