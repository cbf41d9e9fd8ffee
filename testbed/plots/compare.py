"""compare.png: infection-time distributions of several runs on one figure (what `testbed compare` and `mirror`
draw; not a per-run plot)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

from .. import analysis
from ._common import save

FLOOR_S = 1e-4


def compare(runs, path: Path, *, index: int | None = 0, title: str = "") -> None:
    """Infection curves of several runs on one figure (seconds since each publish).

    Each element of RUNS is a run directory or a list of them (one scenario under several seeds, drawn as one
    pooled curve). With INDEX None every rumor's infection times are pooled: the distributions `compare_runs`
    measures its distance between.
    """
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for group in runs:
        dirs = [group] if isinstance(group, (str, Path)) else list(group)
        summaries = [analysis.load_summary(d) for d in dirs]
        times = sorted(t for s in summaries
                       for i in (range(len(s["rumors"])) if index is None else [index])
                       for t in analysis.infection_times(s, i))
        if not times:
            continue
        xs = [max(t, FLOOR_S) for t in times]  # the publisher's own 0 s, drawn at the log axis' floor
        ys = [(k + 1) / len(times) for k in range(len(times))]
        s = summaries[0]
        what = Path(dirs[0]).name if len(dirs) == 1 else f"{len(dirs)} runs pooled"
        ax.step(xs, ys, where="post", lw=1.4, label=f"{s['backend']} — {what} ({s['nodes']} nodes)")
    ax.set_xscale("log")  # the bulk spreads in milliseconds; the anti-entropy tail takes up to seconds
    ax.set_xlabel("seconds since publish (log scale)")
    ax.set_ylabel("fraction of infections (empirical CDF)")
    ax.set_ylim(0, 1.05)
    ax.set_title(("Infection-time distributions, every rumor pooled" if index is None else "Infection curves")
                 + (f" — {title}" if title else ""))
    ax.legend(fontsize=8, loc="lower right")
    save(fig, path)
