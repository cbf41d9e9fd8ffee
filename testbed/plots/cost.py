"""cost.png: what each update cost the cluster: the metadata rumor copies the nodes sent from its publish until
every live node held it (or 60 s), per node, beside what the forwarding rule costs in theory (each informed node
forwards FANOUT copies once: fanout x the infect-and-die fraction per node). Anti-entropy swaps run every cycle
whether or not there is an update, so they are drawn as what they cost per node over the same interval, not
counted as the update's cost."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from .. import analysis
from ..sim import theory
from ._common import save, title
from ._registry import register

SWAP_KEYS = ("sent_swap_req", "sent_swap_resp")


@register("cost")
def cost(history: analysis.History, summary: dict, path: Path) -> None:
    rumors = summary["rumors"]
    n = max(int(summary.get("nodes") or 1), 1)
    stats = list(history.of_kind("stats"))
    per_node, swaps = [], []
    for r in rumors:
        per_node.append(r["messages"] / n)
        end = r["published_at"] + (r["t100"] if r["t100"] is not None else 60.0)
        swaps.append(analysis.sent_between(stats, r["published_at"], end, SWAP_KEYS) / n)
    fig, ax = plt.subplots(figsize=(8, 4.2))
    xs = np.arange(len(rumors))
    w = 0.38
    ax.bar(xs - w / 2, per_node, w, color="#1f77b4", label="rumor copies sent per node, publish to t100")
    ax.bar(xs + w / 2, swaps, w, color="#c7c7c7", hatch="//", edgecolor="#7f7f7f", lw=0,
           label="anti-entropy swap messages per node, same interval (periodic, not the update's)")
    fanout = history.meta.get("fanout")
    if fanout:
        ref = float(fanout) * theory.infect_and_die_fraction(float(fanout))
        ax.axhline(ref, ls="--", color="black", lw=1,
                   label=f"forwarding rule in theory: f·π = {ref:.2f} copies per node (f={fanout})")
    ax.set_xticks(xs, [f"#{i + 1}\n{r['origin_node']}" for i, r in enumerate(rumors)], fontsize=7)
    ax.set_xlabel("update (publish number, publishing node)")
    ax.set_ylabel("messages per node")
    if not rumors:
        ax.text(0.5, 0.5, "no publish in this run", ha="center", transform=ax.transAxes)
    ax.legend(fontsize=7, loc="upper right")
    ax.set_ylim(0, max([1.0] + per_node + swaps + [float(fanout or 0)]) * 1.45)
    ax.set_title(title("Message cost per update", summary), fontsize=10)
    save(fig, path)
