"""resources_flat: no node's resident memory or open descriptors grow over a long run.

Every node's per-cycle ``stats`` records carry ``rss_bytes`` and ``open_fds`` (`gossip._node._process_stats`).
For each process lifetime (a node restarted by a crash or churn is a new process, from its ``started`` record to
the next), the records from ``warmup_s`` after its start onward are fitted with a least-squares line; a lifetime
shorter than ``min_span_s`` after warm-up, or with fewer than 10 records, is too short to show a trend and is not
judged. The check reports the largest and the median slope over the judged lifetimes, in KiB/min and fds/min, and
passes when every RSS slope is below ``max_rss_kib_per_min`` (default 64) and every descriptor slope below
``max_fds_per_min`` (default 0.5: no descriptor trend at all).
"""

from __future__ import annotations

import statistics
from typing import Mapping

from .. import analysis
from ..scenario.schema import NUM, non_negative, positive
from .base import CheckResult, register

NAME = "resources_flat"
MIN_RECORDS = 10


def slope_per_min(points: list[tuple[float, float]]) -> float:
    """The least-squares slope of (seconds, value) POINTS, per minute."""
    n = len(points)
    mt = sum(t for t, _ in points) / n
    mv = sum(v for _, v in points) / n
    var = sum((t - mt) ** 2 for t, _ in points)
    if var == 0:
        return 0.0
    return 60.0 * sum((t - mt) * (v - mv) for t, v in points) / var


def lifetimes(history: analysis.History, warmup_s: float, min_span_s: float) -> dict[str, list[dict]]:
    """{node: [one series per judged process lifetime: {"start", "rss", "fds"} with (t, value) lists]}."""
    out: dict[str, list[dict]] = {}
    current: dict[str, dict] = {}
    for e in history.of_kind("started", "stats"):
        n = e["node"]
        if e["kind"] == "started":
            current[n] = {"start": e["t"], "rss": [], "fds": []}
            out.setdefault(n, []).append(current[n])
            continue
        life = current.get(n)
        if life is None or e["t"] < life["start"] + warmup_s:
            continue
        if "rss_bytes" in e:
            life["rss"].append((e["t"], e["rss_bytes"] / 1024))
        if "open_fds" in e:
            life["fds"].append((e["t"], float(e["open_fds"])))

    def long_enough(series):
        return len(series) >= MIN_RECORDS and series[-1][0] - series[0][0] >= min_span_s
    return {n: [lf for lf in lives if long_enough(lf["rss"]) and long_enough(lf["fds"])]
            for n, lives in out.items()}


def slopes(lives: dict[str, list[dict]]) -> tuple[list[tuple[float, str]], list[tuple[float, str]]]:
    """([(RSS slope in KiB/min, node)], [(descriptor slope per min, node)]), one pair per judged lifetime."""
    rss, fds = [], []
    for n, series in lives.items():
        for lf in series:
            rss.append((slope_per_min(lf["rss"]), n))
            fds.append((slope_per_min(lf["fds"]), n))
    return rss, fds


@register(NAME, {"max_rss_kib_per_min": (NUM, False, 64, positive), "max_fds_per_min": (NUM, False, 0.5, positive),
                 "warmup_s": (NUM, False, 30, non_negative), "min_span_s": (NUM, False, 120, positive)})
def resources_flat(history: analysis.History, params: Mapping) -> CheckResult:
    max_rss, max_fds = float(params.get("max_rss_kib_per_min", 64)), float(params.get("max_fds_per_min", 0.5))
    lives = lifetimes(history, float(params.get("warmup_s", 30)), float(params.get("min_span_s", 120)))
    rss, fds = slopes(lives)
    if not rss:
        return CheckResult(name=NAME, passed=None,
                           detail="no process lived long enough past warm-up with rss_bytes and open_fds records")
    top_rss, top_fds = max(rss), max(fds)
    figures = (f"{len(rss)} process lifetime(s) on {sum(1 for s in lives.values() if s)} node(s): RSS slope max "
               f"{top_rss[0]:.1f} KiB/min ({top_rss[1]}), median {statistics.median(s for s, _ in rss):.1f}; "
               f"descriptors max {top_fds[0]:.2f}/min ({top_fds[1]}), median {statistics.median(s for s, _ in fds):.2f}")
    bad = [f"{n} RSS {s:.1f} KiB/min" for s, n in sorted(rss, reverse=True) if s >= max_rss]
    bad += [f"{n} {s:.2f} fds/min" for s, n in sorted(fds, reverse=True) if s >= max_fds]
    limits = f"limits {max_rss:g} KiB/min, {max_fds:g} fds/min"
    if bad:
        return CheckResult(name=NAME, passed=False,
                           detail=f"{len(bad)} growing: {', '.join(bad[:5])}; {figures} ({limits})")
    return CheckResult(name=NAME, passed=True, detail=f"{figures} ({limits})")
