"""no_false_deaths: no node removed a member that was live and reachable throughout the timeout before the removal.

A removal is excused when either side was not live for that whole timeout (the removed node really was down,
paused or silent; an observer whose own heartbeats stopped is sent no rumors, by design), or when a fault window
overlapping it explains it — the fault modules say which removals their windows excuse
(`testbed.nemesis.excuses_removal`), so this check names no fault.
"""

from __future__ import annotations

from typing import Mapping

from .. import analysis
from .base import CheckResult, register

NAME = "no_false_deaths"


@register(NAME)
def no_false_deaths(history: analysis.History, params: Mapping) -> CheckResult:
    from ..nemesis import excuses_removal  # fault modules import the scenario schema, which reads this registry

    if not history.events:
        return CheckResult(name=NAME, passed=None, detail="the history is empty")
    removals = list(history.of_kind("member_removed"))
    timeout_s = float(history.meta.get("timeout_s", 5.0))
    live = analysis.Liveness(history)
    false = []
    for e in removals:
        removed, observer, t = e["name"], e["node"], e["t"]
        t0 = t - timeout_s
        if not live.live_throughout(removed, t0, t) or not live.live_throughout(observer, t0, t):
            continue
        if any(f.overlaps(t0, t) and excuses_removal(f, observer, removed) for f in history.faults):
            continue
        false.append(f"{observer} removed {removed} at +{t - history.t0:.2f} s")
    if false:
        return CheckResult(name=NAME, passed=False, detail=f"{len(false)} false death(s): " + "; ".join(false[:5]))
    if not removals:
        return CheckResult(name=NAME, passed=True, detail="no node removed a member")
    return CheckResult(name=NAME, passed=True,
                       detail=f"all {len(removals)} removals were of nodes that were down, paused or cut off by a "
                              "fault")
