"""What every plot shares: one title format (what, scenario, backend, size, seed), the run's time axis with fault
windows shaded and labelled and the recovery phase marked (as in Jepsen's timelines), legends, saving.

Every timeline figure of a run draws on `timeline_axis`, so their x-ranges and shading line up when the figures
are read side by side.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

from .. import analysis, nemesis

RECOVERY_COLOUR = "#4d4d4d"


def title(what: str, summary: dict) -> str:
    """``WHAT — scenario · backend (XDP on/off) · N nodes · seed S``: every figure says which run it is."""
    backend = summary.get("backend") or "?"
    if summary.get("xdp") is not None:
        backend += f", XDP {'on' if summary['xdp'] else 'off'}"
    bits = [str(summary.get("scenario") or "?"), backend, f"{summary.get('nodes')} nodes"]
    if summary.get("seed") is not None:
        bits.append(f"seed {summary['seed']}")
    return f"{what} — {' · '.join(bits)}"


def run_span(history: analysis.History) -> tuple[float, float]:
    """The run's time axis in seconds since the timeline started: from 0 to the final reads (what nodes record
    while they are being stopped after those is teardown, not the run), or to the last record without them."""
    t0 = history.t0
    finals = [e["t"] for e in history.of_kind(analysis.FINAL)]
    end = max(finals) if finals else max((e["t"] for e in history.events), default=t0)
    end = max([end] + [f.end for f in history.faults])
    return 0.0, max(end - t0, 1e-3)


def timeline_axis(ax, history: analysis.History, *, label_faults: bool = True) -> None:
    """The shared time axis of a run's timeline figures: the same x-range, the fault windows shaded, and the
    recovery phase (from the end of the last fault, or of the timeline, to the end of the run) marked."""
    t0 = history.t0
    seen = set()
    for i, f in enumerate(history.faults):
        colour = nemesis.colour(f.kind)
        label = f.kind if f.kind not in seen else None
        seen.add(f.kind)
        if f.end - f.start < 1e-3:  # an instant (an injection): a line, not an invisible span
            ax.axvline(f.start - t0, color=colour, alpha=0.5, lw=1, label=label)
        else:
            ax.axvspan(f.start - t0, f.end - t0, color=colour, alpha=0.12, label=label, lw=0)
        if label_faults:
            ax.text(f.start - t0, 1.0 - 0.06 * (i % 4), f" {f.name}", transform=ax.get_xaxis_transform(),
                    fontsize=7, color=colour, va="top")
    lo, hi = run_span(history)
    rec = analysis.recovery_start(history) - t0
    if lo < rec < hi:
        ax.axvline(rec, color=RECOVERY_COLOUR, ls=":", lw=1)
        if label_faults:
            ax.text(rec, 0.02, " recovery →", transform=ax.get_xaxis_transform(), fontsize=7,
                    color=RECOVERY_COLOUR, va="bottom")
    ax.set_xlim(lo, hi)
    ax.set_xlabel("time since the timeline started (s)")


def shade_faults(ax, history: analysis.History, *, relative_to: float) -> None:
    """Fault windows only, on an axis whose zero is RELATIVE_TO (for figures that are not a run's timeline)."""
    seen = set()
    for f in history.faults:
        colour = nemesis.colour(f.kind)
        ax.axvspan(f.start - relative_to, f.end - relative_to, color=colour, alpha=0.12, lw=0,
                   label=f.kind if f.kind not in seen else None)
        seen.add(f.kind)


def legend(ax, n: int, **kw) -> None:
    """A legend inside the axes for a few entries, outside on the right for N of 8 or more (or as KW says)."""
    if ax.get_legend_handles_labels()[0]:
        kw.setdefault("loc", "lower right" if n < 8 else "center left")
        kw.setdefault("bbox_to_anchor", None if n < 8 else (1.0, 0.5))
        ax.legend(fontsize=7, **kw)


def save(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
