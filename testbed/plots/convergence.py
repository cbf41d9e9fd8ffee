"""convergence.png: membership convergence over the run's timeline (the fraction of live nodes whose view equals
the live set), with a lane beneath that shows, per fault window, the window and how long views took to be right
for good after it ended (the summary's per-window ``seconds_after_end``)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

from .. import analysis, nemesis
from ._common import RECOVERY_COLOUR, legend, run_span, save, timeline_axis, title
from ._registry import register


@register("convergence")
def convergence(history: analysis.History, summary: dict, path: Path) -> None:
    curve = analysis.convergence_curve(history)
    windows = summary.get("membership", {}).get("windows", [])
    lanes = len(windows) + 1  # one per fault window, and the run's final recovery
    fig, (ax, lane) = plt.subplots(2, 1, figsize=(8, 4.5 + 0.22 * lanes), sharex=True,
                                   gridspec_kw={"height_ratios": [4, 0.6 + 0.3 * lanes]})
    ax.plot([t for t, _ in curve], [f for _, f in curve], lw=1.4, color="#1f77b4", label="views = live set")
    timeline_axis(ax, history)
    ax.set_ylabel("fraction of live nodes\nwith a correct view")
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("")
    ax.set_title(title("Membership convergence", summary), fontsize=10)
    legend(ax, 1)

    t0 = history.t0
    _, end = run_span(history)
    rows = [(f"{w['fault']}", nemesis.colour(w["kind"]), _start(history, w) - t0, w["end"] - t0,
             w["seconds_after_end"]) for w in windows]
    rec = analysis.recovery_start(history) - t0
    m = summary.get("membership", {})
    rows.append(("recovery", RECOVERY_COLOUR, rec, rec, m.get("seconds_after_recovery")))
    for y, (name, colour, start, stop, after) in enumerate(reversed(rows)):
        if stop > start:
            lane.barh(y, stop - start, left=start, height=0.6, color=colour, alpha=0.35, lw=0)
        if after is None:
            lane.barh(y, end - stop, left=stop, height=0.6, color="none", edgecolor="#d62728", hatch="xx", lw=0.5)
            text = "never converged for good"
        else:
            lane.barh(y, after, left=stop, height=0.6, color="none", edgecolor=colour, hatch="///", lw=0.5)
            text = f"+{after:.2f} s"
        lane.text(stop + (after or 0), y, f" {text}", va="center", fontsize=7)
        lane.text(start, y, f"{name} ", va="center", ha="right", fontsize=7)
    lane.set_yticks([])
    lane.set_ylim(-0.6, len(rows) - 0.4)
    timeline_axis(lane, history, label_faults=False)
    lane.set_title("per window: the fault (shaded), then the time until views were right for good (hatched)",
                   fontsize=8, loc="left")
    save(fig, path)


def _start(history: analysis.History, w: dict) -> float:
    for f in history.faults:
        if f.name == w["fault"] and abs(f.end - w["end"]) < 1e-6:
            return f.start
    return w["end"]
