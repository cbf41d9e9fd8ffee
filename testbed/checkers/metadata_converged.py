"""metadata_converged: from some time within ``within_s`` of the newest publish (or of recovery beginning, if that
is later) to the end of the run, every live node holds the newest published version. A node that restarts starts
empty: it holding the value again later is what counts, not its first adoption."""

from __future__ import annotations

from typing import Mapping

from .. import analysis
from ..scenario.schema import NUM, positive
from .base import CheckResult, converged, register, within_s

NAME = "metadata_converged"


@register(NAME, {"within_s": (NUM, False, None, positive)})
def metadata_converged(history: analysis.History, params: Mapping) -> CheckResult:
    pubs = analysis.publishes(history)
    if not pubs:
        return CheckResult(name=NAME, passed=None, detail="nothing was published")
    newest = max(pubs, key=analysis.version_key)
    since = max(newest["t"], analysis.recovery_start(history))
    timeline = analysis.metadata_timeline(history, analysis.version_key(newest))
    passed, detail = converged(timeline, since, within_s(history, params),
                               what=f"every live node held version {newest['version']}",
                               lacking=f"version (the newest is {newest['version']})",
                               since="it was published or recovery began", right="held by all", broke="lost again")
    return CheckResult(name=NAME, passed=passed, detail=detail)
