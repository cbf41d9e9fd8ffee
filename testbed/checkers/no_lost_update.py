"""no_lost_update: every node read at the end of the run holds the newest published version."""

from __future__ import annotations

from typing import Mapping

from .. import analysis
from .base import CheckResult, register

NAME = "no_lost_update"


@register(NAME)
def no_lost_update(history: analysis.History, params: Mapping) -> CheckResult:
    pubs, finals = analysis.publishes(history), analysis.finals(history)
    if not pubs or not finals:
        return CheckResult(name=NAME, passed=None, detail="nothing was published" if not pubs else "no final reads")
    top = max(analysis.version_key(e) for e in pubs)
    wrong = sorted((n for n, f in finals.items() if analysis.version_key(f) != top), key=analysis.node_order)
    if wrong:
        return CheckResult(name=NAME, passed=False,
                           detail=f"{len(wrong)} node(s) ended on an older version than the newest published "
                                  f"{top[0]}: {', '.join(wrong[:10])}")
    return CheckResult(name=NAME, passed=True,
                       detail=f"{len(pubs)} publish(es); all {len(finals)} live nodes ended on the newest, "
                              f"version {top[0]}")
