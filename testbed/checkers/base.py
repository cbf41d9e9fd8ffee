"""The contract of a check (Jepsen's checker): a pure function of the recorded history, registered by name.

A check module defines one function ``fn(history, params) -> CheckResult`` and registers it with
``@register(name, fields)``: NAME is what a scenario's ``checks:`` lists, FIELDS its typed parameters in the
scenario schema's format (`testbed.scenario.schema`), ``{field: (types, required, default, validate)}`` where ``validate(value)`` returns an
error message or None. PARAMS holds the scenario's values for those fields (defaults filled in by the parser; a
field whose default is None may be absent). The function reads only the history (its events, fault windows, meta
and counters) and never raises on what a run recorded: a verdict it cannot reach is ``passed=None`` (unknown).

Adding a check is one module in this package (imported by ``__init__``) and its test; nothing else names it.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Callable, Mapping

if TYPE_CHECKING:
    from ..analysis import History

@dataclass(frozen=True, slots=True, kw_only=True)
class CheckResult:
    name: str
    passed: bool | None  # None: unknown (nothing to judge)
    detail: str

    def to_json(self) -> dict:
        return {"name": self.name, "passed": self.passed, "detail": self.detail}


@dataclass(frozen=True, slots=True, kw_only=True)
class Check:
    name: str
    fields: Mapping[str, tuple]  # field -> (types, required, default, validate), as the scenario schema reads them
    fn: Callable[["History", Mapping], CheckResult]


REGISTRY: dict[str, Check] = {}


def register(name: str, fields: Mapping[str, tuple] | None = None):
    """Register the decorated ``fn(history, params)`` as check NAME with parameter FIELDS."""
    def add(fn: Callable[["History", Mapping], CheckResult]):
        if name in REGISTRY:
            raise ValueError(f"check {name!r} registered twice")
        REGISTRY[name] = Check(name=name, fields=MappingProxyType(dict(fields or {})), fn=fn)
        return fn
    return add


def within_s(history: "History", params: Mapping) -> float:
    """A convergence limit: the check's ``within_s``, or the scenario's recovery time when it gives none."""
    v = params.get("within_s")
    return float(v) if v is not None else float(history.meta.get("recovery_s", 20.0))


def converged(timeline, start: float, limit: float, *, what: str, lacking: str, since: str = "recovery began",
              right: str = "right", broke: str = "broke again") -> tuple[bool | None, str]:
    """The verdict on an `analysis.Timeline` property that must hold from within LIMIT seconds of START to the end
    of the run: (passed, detail). SINCE names START; WHAT says what held ("every live node's view equalled the live
    set"), LACKING what the nodes it failed for lacked at the end ("view"); RIGHT and BROKE word how it got there
    ("first right at +1.20 s, broke again at +2.00 s, right from +5.10 s to the end")."""
    if timeline.live_at_end == 0:
        return None, "no node was live at the end of the run"
    at, first, breaks = timeline.stable_from(start), timeline.first(start), timeline.breaks(start)
    story = ""
    if first is not None and breaks:
        story = f"first {right} at +{first - start:.2f} s, {broke} at +{breaks[0] - start:.2f} s"
        if len(breaks) > 1:
            story += f" ({len(breaks)} times, last at +{breaks[-1] - start:.2f} s)"
        if at is not None:
            story += f", {right} from +{at - start:.2f} s to the end"
    if at is None:
        shown = ", ".join(timeline.failing[:10]) + (", ..." if len(timeline.failing) > 10 else "")
        detail = f"{len(timeline.failing)} live node(s) ended without the right {lacking}: {shown}"
        return False, detail + (f" ({story})" if story else "")
    took = at - start
    detail = f"{what} from {took:.2f} s after {since} to the end (limit {limit:g} s)"
    return took <= limit, detail + (f"; {story}" if story else "")
