"""every_update_delivered: no published update is lost, counted per update (not only the newest, as
`no_lost_update` judges).

An update is *due* when its origin lived through its spread window: the origin was live (running, not paused,
sending heartbeats) from the publish until ``spread_cycles`` cycles after it (default 2: the rumor's first hop goes
out at once and the origin's next swaps within a cycle or two; an origin killed or paused before then may take its
update with it, and that is no loss). A due update is *delivered* when every node read at the end of the run holds
it or a newer version (the update reached it, or a newer one superseded it there); otherwise it is *lost*, at each
node that ended on an older version. What a node holds at the end is its final read.
"""

from __future__ import annotations

from typing import Mapping

from .. import analysis
from ..scenario.schema import NUM, non_negative
from .base import CheckResult, register

NAME = "every_update_delivered"


def lost_updates(history: analysis.History, spread_s: float) -> tuple[list[dict], list[tuple[dict, list[str]]]]:
    """(the due publishes, [(each lost one, the nodes that ended on an older version)]), as the module says."""
    live = analysis.Liveness(history)
    due = [p for p in analysis.publishes(history) if live.live_throughout(p["node"], p["t"], p["t"] + spread_s)]
    held = {n: analysis.version_key(f) for n, f in analysis.finals(history).items()}
    lost = []
    for p in due:
        v = analysis.version_key(p)
        behind = sorted((n for n, h in held.items() if h < v), key=analysis.node_order)
        if behind:
            lost.append((p, behind))
    return due, lost


@register(NAME, {"spread_cycles": (NUM, False, 2, non_negative)})
def every_update_delivered(history: analysis.History, params: Mapping) -> CheckResult:
    pubs, finals = analysis.publishes(history), analysis.finals(history)
    if not pubs or not finals:
        return CheckResult(name=NAME, passed=None, detail="nothing was published" if not pubs else "no final reads")
    spread_s = float(params.get("spread_cycles", 2)) * float(history.meta.get("cycle_s", 1.0))
    due, lost = lost_updates(history, spread_s)
    excused = len(pubs) - len(due)
    tail = f" ({excused} not due: origin down or paused within {spread_s:g} s of its publish)" if excused else ""
    if lost:
        shown = "; ".join(f"version {p['version']} from {p['node']} at +{p['t'] - history.t0:.2f} s missing at "
                          f"{len(b)} node(s): {', '.join(b[:5])}" for p, b in lost[:5])
        return CheckResult(name=NAME, passed=False,
                           detail=f"{len(lost)} of {len(due)} due update(s) lost{tail}: {shown}")
    return CheckResult(name=NAME, passed=True,
                       detail=f"all {len(due)} due update(s) reached or were superseded at every one of the "
                              f"{len(finals)} nodes live at the end{tail}")
