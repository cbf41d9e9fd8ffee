"""bad_packets_dropped: every injected bad packet was counted under the drop reason it must be dropped for (in
userspace, by XDP, or by the in-kernel heartbeat plane, from the run's per-node counters, ``history.stats``), and no
node died unexpectedly. The plane counts a registered member's old heartbeat as one reason, ``stale_or_dup``: it
counts for an expectation that takes either (``duplicate|stale``, a replay), never for one of the two alone."""

from __future__ import annotations

from typing import Mapping

from .. import analysis
from .base import CheckResult, register

NAME = "bad_packets_dropped"


@register(NAME)
def bad_packets_dropped(history: analysis.History, params: Mapping) -> CheckResult:
    injected: dict[str, int] = {}
    for e in history.of_kind(analysis.INJECTED):
        injected[e["expect"]] = injected.get(e["expect"], 0) + e["count"]
    if not injected:
        return CheckResult(name=NAME, passed=None, detail="no packets were injected")
    dropped: dict[str, int] = {}
    for node_stats in history.stats.get("nodes", {}).values():
        for reason, n in node_stats.get("dropped", {}).items():
            dropped[reason] = dropped.get(reason, 0) + n
        for reason, n in node_stats.get("xdp", {}).get("dropped", {}).items():
            dropped[reason] = dropped.get(reason, 0) + n
    plane = sum(n.get("hbplane", {}).get("dropped_stale_or_dup", 0) for n in history.stats.get("nodes", {}).values())

    def count(expect: str) -> int:  # "a|b": either reason counts
        reasons = expect.split("|")
        return sum(dropped.get(r, 0) for r in reasons) + (plane if {"duplicate", "stale"} <= set(reasons) else 0)
    short = {r: (n, count(r)) for r, n in sorted(injected.items()) if count(r) < n}
    dead = sorted(set(history.meta.get("unexpected_exits", [])), key=analysis.node_order)
    if short or dead:
        parts = [f"{r}: injected {n}, dropped {d}" for r, (n, d) in short.items()]
        if dead:
            parts.append(f"node(s) died: {', '.join(dead)}")
        return CheckResult(name=NAME, passed=False, detail="; ".join(parts))
    return CheckResult(name=NAME, passed=True,
                       detail="; ".join(f"{r}: injected {n}, dropped {count(r)}" for r, n in sorted(injected.items()))
                       + "; every node survived")
