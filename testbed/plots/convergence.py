"""convergence.png: the fraction of live nodes whose view equals the live set, over time."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

from .. import analysis
from ._common import legend, save, shade_faults
from ._registry import register


@register("convergence")
def convergence(history: analysis.History, summary: dict, path: Path) -> None:
    curve = analysis.convergence_curve(history)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.plot([t for t, _ in curve], [f for _, f in curve], lw=1.4, color="#1f77b4", label="views = live set")
    shade_faults(ax, history, relative_to=history.t0)
    ax.set_xlabel("time since the timeline started (s)")
    ax.set_ylabel("fraction of live nodes with a correct view")
    ax.set_ylim(0, 1.05)
    ax.set_title(f"Membership convergence — {summary['scenario']} ({summary['nodes']} nodes)")
    legend(ax, 1)
    save(fig, path)
