"""no_false_deaths_under_light_loss: no member was removed, with the run's timeout, while the only fault active
was loss at a rate of at most `testbed.nemesis.loss.LIGHT_RATE` (10 %).

A removal is judged when its observer and the removed node were both live throughout the timeout before it (as
`no_false_deaths` judges), a light loss window overlapped that timeout, and no other fault window did (windows of
any other kind, or heavier loss, answer for removals themselves). Such a removal is a false death: heartbeats
every cycle must outlast light loss. The check counts them; it passes with none, and is unknown when no light loss
window was recorded.
"""

from __future__ import annotations

from typing import Mapping

from .. import analysis
from .base import CheckResult, register

NAME = "no_false_deaths_under_light_loss"


def light_windows(history: analysis.History) -> list[analysis.FaultWindow]:
    """The recorded loss windows at a rate of at most `LIGHT_RATE`."""
    from ..nemesis.loss import LIGHT_RATE, window_rate  # fault modules import the scenario schema, which reads this

    def light(f: analysis.FaultWindow) -> bool:
        rate = window_rate(f) if f.kind == "loss" else None
        return rate is not None and rate <= LIGHT_RATE + 1e-9
    return [f for f in history.faults if light(f)]


def false_deaths(history: analysis.History) -> list[dict]:
    """The ``member_removed`` records this check counts as false deaths under light loss."""
    windows = light_windows(history)
    others = [f for f in history.faults if f not in windows and f.kind != "inject"]
    timeout_s = float(history.meta.get("timeout_s", 5.0))
    live = analysis.Liveness(history)
    out = []
    for e in history.of_kind("member_removed"):
        removed, observer, t = e["name"], e["node"], e["t"]
        t0 = t - timeout_s
        if any(f.overlaps(t0, t) for f in others):
            continue
        if not any(f.overlaps(t0, t) and (f.covers(observer) or f.covers(removed)) for f in windows):
            continue
        if live.live_throughout(removed, t0, t) and live.live_throughout(observer, t0, t):
            out.append(e)
    return out


@register(NAME)
def no_false_deaths_under_light_loss(history: analysis.History, params: Mapping) -> CheckResult:
    from ..nemesis.loss import LIGHT_RATE

    windows = light_windows(history)
    if not windows:
        return CheckResult(name=NAME, passed=None, detail=f"no loss window at or below {LIGHT_RATE:.0%}")
    timeout_s = float(history.meta.get("timeout_s", 5.0))
    false = [f"{e['node']} removed {e['name']} at +{e['t'] - history.t0:.2f} s" for e in false_deaths(history)]
    span = sum(f.end - f.start for f in windows)
    about = f"{len(windows)} window(s) of loss <= {LIGHT_RATE:.0%}, {span:.0f} s, timeout {timeout_s:g} s"
    if false:
        return CheckResult(name=NAME, passed=False,
                           detail=f"{len(false)} false death(s) under light loss ({about}): " + "; ".join(false[:5]))
    return CheckResult(name=NAME, passed=True, detail=f"no live node was removed under light loss ({about})")
