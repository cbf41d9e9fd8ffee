"""infection.png: one infection curve per published version, fault windows shaded."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

from .. import analysis
from ._common import legend, save, shade_faults
from ._registry import register


@register("infection")
def infection(history: analysis.History, summary: dict, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(8, 4.5))
    t0 = history.t0
    for i, r in enumerate(summary["rumors"]):
        xs = [r["published_at"] - t0] + [r["published_at"] - t0 + dt for dt, _ in r["coverage"]]
        ys = [0.0] + [f for _, f in r["coverage"]]
        ax.step(xs, ys, where="post", lw=1.4, label=f"publish #{i + 1} on {r['origin_node']}"
                + (f" (t100 {r['t100']:.2f} s)" if r["t100"] is not None else " (incomplete)"))
    shade_faults(ax, history, relative_to=t0)
    ax.set_xlabel("time since the timeline started (s)")
    ax.set_ylabel("fraction of live nodes holding the version")
    ax.set_ylim(0, 1.05)
    ax.set_title(f"Metadata infection — {summary['scenario']} ({summary['nodes']} nodes, {summary['backend']})")
    legend(ax, len(summary["rumors"]))
    save(fig, path)
