"""What every plot shares: fault windows shaded and labelled (as in Jepsen's timelines), legends, saving."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

from .. import analysis, nemesis


def shade_faults(ax, history: analysis.History, *, relative_to: float) -> None:
    seen = set()
    for i, f in enumerate(history.faults):
        colour = nemesis.colour(f.kind)
        label = f.kind if f.kind not in seen else None
        seen.add(f.kind)
        ax.axvspan(f.start - relative_to, f.end - relative_to, color=colour, alpha=0.12, label=label, lw=0)
        ax.text(f.start - relative_to, 1.0 - 0.06 * (i % 4), f" {f.name}", transform=ax.get_xaxis_transform(),
                fontsize=7, color=colour, va="top")


def legend(ax, n: int) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="lower right" if n < 8 else "center left",
                  bbox_to_anchor=None if n < 8 else (1.0, 0.5))


def save(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
