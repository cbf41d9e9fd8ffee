"""no_false_suspicions: at most ``max`` (default 0) suspicions of a member that was live and reachable throughout
the ``window_s`` before it (default two protocol periods, ``2 * cycle_s``) -- SWIM's false positives, counted
apart from removals (`no_false_deaths`), since Lifeguard's point is that a suspicion need not become one.

A suspicion (``member_suspected``) is excused as a removal is: when the suspected node or the observer was not live
for the whole window (down, paused, silent), or when a fault window overlapping it explains it
(`testbed.nemesis.excuses_removal`). Every observer's record counts, so one suspicion spread to N members counts
up to N times: the number a member list would show. Unknown (not passed) when the run's protocol records no
suspicions at all (the heartbeat protocol has none: a member is removed at its timeout).
"""

from __future__ import annotations

from typing import Mapping

from .. import analysis
from ..scenario.schema import NUM, non_negative, positive
from .base import CheckResult, register
from .no_false_deaths import false_records

NAME = "no_false_suspicions"
SUSPECTING = ("swim",)  # the built-in protocols that record member_suspected


def false_suspicions(history: analysis.History, window_s: float) -> list[dict]:
    """The ``member_suspected`` records of live, reachable members (see the module docstring)."""
    return false_records(history, "member_suspected", window_s)


@register(NAME, {"max": (int, False, 0, non_negative), "window_s": (NUM, False, None, positive)})
def no_false_suspicions(history: analysis.History, params: Mapping) -> CheckResult:
    if not history.events:
        return CheckResult(name=NAME, passed=None, detail="the history is empty")
    membership = history.meta.get("membership", "heartbeat")
    suspicions = list(history.of_kind("member_suspected"))
    if not suspicions and membership not in SUSPECTING:
        return CheckResult(name=NAME, passed=None,
                           detail=f"membership {membership} records no suspicions (nothing to count)")
    window_s = float(params.get("window_s") or 2 * float(history.meta.get("cycle_s", 1.0)))
    limit = int(params.get("max") or 0)
    false = false_suspicions(history, window_s)
    shown = "; ".join(f"{e['node']} suspected {e['name']} at +{e['t'] - history.t0:.2f} s" for e in false[:5])
    detail = (f"{len(false)} false suspicion(s) of {len(suspicions)} (limit {limit})" + (f": {shown}" if false else
                                                                                      ""))
    return CheckResult(name=NAME, passed=len(false) <= limit, detail=detail)
