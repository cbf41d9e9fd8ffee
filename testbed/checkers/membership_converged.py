"""membership_converged: from some time within ``within_s`` of recovery beginning to the end of the run, every live
node's view equals the live set. Views that were right, broke again and were right later count from the later
time: a limit is about when the cluster settled, not when it first looked settled."""

from __future__ import annotations

from typing import Mapping

from .. import analysis
from ..scenario.schema import NUM, positive
from .base import CheckResult, converged, register, within_s

NAME = "membership_converged"


@register(NAME, {"within_s": (NUM, False, None, positive)})
def membership_converged(history: analysis.History, params: Mapping) -> CheckResult:
    if not history.events:
        return CheckResult(name=NAME, passed=None, detail="the history is empty")
    passed, detail = converged(analysis.membership_timeline(history), analysis.recovery_start(history),
                               within_s(history, params), what="every live node's view equalled the live set",
                               lacking="view")
    return CheckResult(name=NAME, passed=passed, detail=detail)
