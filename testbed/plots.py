"""Plots of a run: infection curves, membership convergence, message rates — each a pure function of the history.

Fault windows are shaded and labelled on every plot, as in Jepsen's timelines.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from . import analysis  # noqa: E402

FAULT_COLOURS = {"crash": "#d62728", "pause": "#9467bd", "churn": "#ff7f0e", "partition": "#8c564b",
                 "loss": "#e377c2", "delay": "#7f7f7f", "inject": "#bcbd22"}


def shade_faults(ax, history: analysis.History, *, relative_to: float) -> None:
    seen = set()
    for i, f in enumerate(history.faults):
        colour = FAULT_COLOURS.get(f.kind, "#17becf")
        label = f.kind if f.kind not in seen else None
        seen.add(f.kind)
        ax.axvspan(f.start - relative_to, f.end - relative_to, color=colour, alpha=0.12, label=label, lw=0)
        ax.text(f.start - relative_to, 1.0 - 0.06 * (i % 4), f" {f.name}", transform=ax.get_xaxis_transform(),
                fontsize=7, color=colour, va="top")


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
    _legend(ax, len(summary["rumors"]))
    _save(fig, path)


def convergence(history: analysis.History, summary: dict, path: Path) -> None:
    curve = analysis.convergence_curve(history)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.plot([t for t, _ in curve], [f for _, f in curve], lw=1.4, color="#1f77b4", label="views = live set")
    shade_faults(ax, history, relative_to=history.t0)
    ax.set_xlabel("time since the timeline started (s)")
    ax.set_ylabel("fraction of live nodes with a correct view")
    ax.set_ylim(0, 1.05)
    ax.set_title(f"Membership convergence — {summary['scenario']} ({summary['nodes']} nodes)")
    _legend(ax, 1)
    _save(fig, path)


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
    _legend(ax, len(series) + len(xdp))
    _save(fig, path)


def _legend(ax, n: int) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="lower right" if n < 8 else "center left",
                  bbox_to_anchor=None if n < 8 else (1.0, 0.5))


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


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
    _save(fig, path)


PLOTTERS = {"infection": infection, "convergence": convergence, "messages": messages}


def draw_all(run_dir: Path, history: analysis.History, summary: dict, which=tuple(PLOTTERS)) -> list[Path]:
    out = []
    for name in which:
        p = Path(run_dir) / f"{name}.png"
        PLOTTERS[name](history, summary, p)
        out.append(p)
    return out
