"""infection.png: each published version's infection curve against the time since its publish, on a log axis
(the rumor spreads in milliseconds, anti-entropy finishes in cycles), t50/t90/t100 marked, and the mean-field
infect-and-die curve drawn beside it with each hop taking this run's measured median one-hop delay."""

from __future__ import annotations

import statistics
from pathlib import Path

import matplotlib.pyplot as plt

from .. import analysis
from ..sim import theory
from ._common import legend, save, title
from ._registry import register

FLOOR_S = 1e-4  # the log axis' left end: the publisher's own 0 s is drawn here
MAX_LABELLED = 8  # more rumors than this: thin unlabelled curves, the quantile marks on the pooled median only
MARKS = (("t50", "o"), ("t90", "s"), ("t100", "^"))


def hop_delay_s(history: analysis.History) -> float | None:
    """The median delay of a rumor copy that informed its receiver (sent to adopted), over every rumor of the run."""
    won = [h.delay_s for h in analysis.rumor_hops(history) if h.won and h.delay_s > 0]
    return statistics.median(won) if won else None


def theory_curve(history: analysis.History, summary: dict) -> tuple[list[float], list[float], float] | None:
    """(seconds, fraction, hop delay) of the mean-field infect-and-die rumor at this run's size and fanout, or None
    when the run measured no hop (no rumor copy informed anyone)."""
    d = hop_delay_s(history)
    n, fanout = summary.get("nodes"), history.meta.get("fanout")
    if d is None or not n or n < 2 or not fanout:
        return None
    ys = theory.infect_and_die_curve(int(n), float(fanout))
    return [max(k * d, FLOOR_S) for k in range(len(ys))], ys, d


@register("infection")
def infection(history: analysis.History, summary: dict, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(8, 4.5))
    rumors = summary["rumors"]
    many = len(rumors) > MAX_LABELLED
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, r in enumerate(rumors):
        xs = [FLOOR_S] + [max(dt, FLOOR_S) for dt, _ in r["coverage"]]
        ys = [0.0] + [f for _, f in r["coverage"]]
        c = "#7f7f7f" if many else colours[i % len(colours)]
        done = f"t100 {_fmt(r['t100'])}" if r["t100"] is not None else "incomplete"
        ax.step(xs, ys, where="post", lw=0.8 if many else 1.4, color=c, alpha=0.5 if many else 1.0,
                label=None if many else f"publish #{i + 1} on {r['origin_node']} ({done})")
        if not many:
            for key, m in MARKS:
                if r[key] is not None:
                    ax.plot(max(r[key], FLOOR_S), float(key[1:]) / 100, m, color=c, ms=5, mfc="white")
    if many:
        for key, m in MARKS:
            vals = [r[key] for r in rumors if r[key] is not None]
            if vals:
                med = statistics.median(vals)
                ax.plot(max(med, FLOOR_S), float(key[1:]) / 100, m, color="black", ms=6, mfc="white",
                        label=f"median {key} over {len(vals)} rumors: {_fmt(med)}")
        ax.plot([], [], color="#7f7f7f", lw=0.8, label=f"{len(rumors)} rumors, one curve each")
    th = theory_curve(history, summary)
    if th is not None:
        xs, ys, d = th
        ax.step(xs, ys, where="post", ls="--", lw=1.2, color="black", alpha=0.7,
                label=f"theory: infect-and-die, f={history.meta.get('fanout')}, hop {_fmt(d)} (measured median)")
        ax.axhline(theory.infect_and_die_fraction(float(history.meta["fanout"])), ls=":", lw=0.8,
                   color="black", alpha=0.5)
    for key, m in MARKS:  # the marks' legend: which symbol is which quantile
        ax.plot([], [], m, color="black", mfc="white", ms=5, label=f"{key} mark" if not many else None)
    ax.set_xscale("log")
    ax.set_xlim(left=FLOOR_S * 0.8)
    ax.set_xlabel("time since the publish (s, log scale)")
    ax.set_ylabel("fraction of live nodes holding the version")
    ax.set_ylim(0, 1.05)
    ax.set_title(title("Metadata infection", summary), fontsize=10)
    legend(ax, 0, loc="best")
    save(fig, path)


def _fmt(s: float) -> str:
    return f"{s * 1000:.1f} ms" if s < 1 else f"{s:.2f} s"
