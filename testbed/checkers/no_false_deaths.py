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


def false_records(history: analysis.History, kind: str, window_s: float, *,
                  faults_excuse: bool = True) -> list[dict]:
    """The KIND records (about member ``name``, by observer ``node``) of members live and reachable throughout the
    WINDOW_S before them, by observers live throughout it too, that no fault window excuses: what
    `no_false_deaths` judges for removals and `no_false_suspicions` for suspicions. With FAULTS_EXCUSE false,
    liveness alone decides (a loss window excuses nothing: `testbed.experiments.protocols`)."""
    from ..nemesis import excuses_removal  # fault modules import the scenario schema, which reads this registry

    live = analysis.Liveness(history)
    out = []
    for e in history.of_kind(kind):
        member, observer, t = e["name"], e["node"], e["t"]
        t0 = t - window_s
        if not live.live_throughout(member, t0, t) or not live.live_throughout(observer, t0, t):
            continue
        if faults_excuse and any(f.overlaps(t0, t) and excuses_removal(f, observer, member)
                                 for f in history.faults):
            continue
        out.append(e)
    return out


def false_deaths(history: analysis.History, window_s: float | None = None) -> list[dict]:
    """The false removals: `false_records` of ``member_removed`` over WINDOW_S (default the run's ``timeout_s``)."""
    window_s = float(history.meta.get("timeout_s", 5.0)) if window_s is None else window_s
    return false_records(history, "member_removed", window_s)


@register(NAME)
def no_false_deaths(history: analysis.History, params: Mapping) -> CheckResult:
    if not history.events:
        return CheckResult(name=NAME, passed=None, detail="the history is empty")
    removals = list(history.of_kind("member_removed"))
    false = [f"{e['node']} removed {e['name']} at +{e['t'] - history.t0:.2f} s" for e in false_deaths(history)]
    if false:
        return CheckResult(name=NAME, passed=False, detail=f"{len(false)} false death(s): " + "; ".join(false[:5]))
    if not removals:
        return CheckResult(name=NAME, passed=True, detail="no node removed a member")
    return CheckResult(name=NAME, passed=True,
                       detail=f"all {len(removals)} removals were of nodes that were down, paused or cut off by a "
                              "fault")
