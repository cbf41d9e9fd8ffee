"""The contract of a fault ("nemesis", as Jepsen calls it): one module per fault, registered by name.

A fault module defines a `Fault` subclass with
- ``name`` (the scenario's ``fault:`` value), its typed schema ``fields`` (see `testbed.scenario.schema.Field`),
- ``start(ctx, step)`` -> an `Active` window and ``stop(ctx, active)``, acting on a `testbed.cluster.Cluster`
  through the interpreter's context ``ctx`` (never on a backend directly),
- ``colour`` and ``label(...)`` for the plots' shaded windows,
- ``excuses_removal(window, observer, removed)``: whether this fault window explains that OBSERVER removed
  REMOVED from its view (the ``no_false_deaths`` check asks every window),
- ``unsupported(scenario)``: why a backend or fidelity cannot honour it, or None,
- ``node_counts`` (optional): the fields that count nodes; a scenario may write them as a share (``count: 25%``),
  and the parser refuses a count above the scenario's size.

Adding a fault is one module in this package and its test; nothing else names it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Mapping

from ..scenario.relative import count_check

if TYPE_CHECKING:
    from ..analysis import FaultWindow


@dataclass(slots=True)
class Active:
    """An open fault window: what it acts on, and whatever its module needs to stop it."""

    kind: str
    name: str
    start: float
    nodes: list[str] = field(default_factory=list)  # empty: every node
    groups: list[list[str]] | None = None  # a partition's sides
    state: Any = None
    network_start: dict | None = None  # the network's counters when the window opened

    def window(self, end: float, network_end: dict | None = None) -> dict:
        """The faults.jsonl record of this window (with the network's counters at both ends, where it counts)."""
        out = {"name": self.name, "kind": self.kind, "start": self.start, "end": end, "nodes": list(self.nodes)}
        if self.groups is not None:
            out["groups"] = [list(g) for g in self.groups]
        if self.network_start:
            out["network_start"], out["network_end"] = self.network_start, network_end or {}
        return out


class Fault:
    name: ClassVar[str] = ""
    colour: ClassVar[str] = "#17becf"
    fields: ClassVar[Mapping[str, Any]] = {}
    windowed: ClassVar[bool] = True  # has an `until`; injections are instants

    def start(self, ctx, step) -> Active:  # pragma: no cover - the contract
        raise NotImplementedError

    def stop(self, ctx, active: Active) -> None:  # pragma: no cover - the contract
        raise NotImplementedError

    def excuses_removal(self, window: "FaultWindow", observer: str, removed: str) -> bool:
        """By default a window excuses removals by or of the nodes it covers (all nodes when it names none)."""
        return window.covers(observer) or window.covers(removed)

    def unsupported(self, scenario, step) -> str | None:
        return None


class NodesFault(Fault):
    """A fault that acts on chosen nodes (``node:`` names, or ``count:`` random live ones): the context's ACT on
    each when the window opens, its UNDO when it closes (e.g. kill / restart)."""

    act: ClassVar[str] = ""
    undo: ClassVar[str] = ""
    fields = {"node": ((str, list), False, None, None),
              "count": ((int, str), False, None, count_check)}  # a number of nodes, or a share: 25%
    node_counts = ("count",)  # resolved against the scenario's size and bounded by it (`testbed.scenario.relative`)
    exclusive = ("node", "count")

    def start(self, ctx, step) -> Active:
        victims = ctx.pick(step.params.get("node"), step.params.get("count"))
        for v in victims:
            getattr(ctx, self.act)(v)
        return Active(kind=self.name, name=f"{self.name} {','.join(victims[:3])}", start=ctx.now(), nodes=victims)

    def stop(self, ctx, active: Active) -> None:
        for v in active.nodes:
            getattr(ctx, self.undo)(v)


REGISTRY: dict[str, Fault] = {}


def register(cls: type[Fault]) -> type[Fault]:
    if cls.name in REGISTRY:
        raise ValueError(f"fault {cls.name!r} registered twice")
    REGISTRY[cls.name] = cls()
    return cls


def excuses_removal(window: "FaultWindow", observer: str, removed: str) -> bool:
    """Whether WINDOW (a recorded fault window) explains that OBSERVER removed REMOVED. Windows of kinds no module
    knows (an older run's) excuse nothing; injections never do."""
    fault = REGISTRY.get(window.kind)
    return fault is not None and fault.windowed and fault.excuses_removal(window, observer, removed)


def colour(kind: str) -> str:
    fault = REGISTRY.get(kind)
    return fault.colour if fault is not None else Fault.colour
