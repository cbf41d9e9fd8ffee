"""The typed model of a scenario: a `Scenario` holds the nodes, their `NodeConfig` and testbed options, the
timeline of `Step`s, the checks and the plots. Frozen; built only by `testbed.scenario.parse`."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

from gossip import NodeConfig

MAX_EMULATED_NODES = 1024  # real node processes in namespaces or Mininet hosts (one /22 of addresses)
MAX_SIM_NODES = 10_000_000


@dataclass(frozen=True, slots=True, kw_only=True)
class Step:
    """One timeline entry: an operation (`kind` "op"), a fault window ("fault") or a packet injection ("inject").
    PARAMS holds the fields its operation or fault module declares, validated and with defaults filled in."""

    at_s: float
    kind: str
    action: str
    until_s: float | None = None
    params: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    line: int | None = None
    index: int = 0  # its position in the file's timeline (for messages)
    # the fields written relative to the scenario's size (``node: last``, ``count: 25%``; see
    # `testbed.scenario.relative`), as written: PARAMS holds them resolved for the current size, and an override
    # of the size resolves them again from here
    relative: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def label(self) -> str:
        return f"{self.action}@{self.at_s:g}s"


@dataclass(frozen=True, slots=True, kw_only=True)
class Scenario:
    name: str
    file: str
    seed: int = 1
    nodes: int = 8
    backend: str = "netns"
    topology: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({"shape": "bridge", "bridges": 4}))
    # the `node:` block: every `NodeConfig` field it sets, plus the testbed's own options (xdp, seeds, ...)
    node: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    sim: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({"fidelity": "full"}))
    duration_s: float = 30.0
    recovery_s: float = 20.0
    timeline: tuple[Step, ...] = ()
    checks: Mapping[str, Mapping[str, Any]] = field(default_factory=lambda: MappingProxyType({}))
    plots: tuple[str, ...] = ()
    description: str = ""

    @property
    def joins(self) -> int:
        """Hosts to reserve for nodes that join during the run."""
        return sum(s.params.get("count", 1) if s.action == "join" else s.params.get("joins", 0)
                   for s in self.timeline if s.action in ("join", "churn"))

    @property
    def hosts(self) -> list[str]:
        """Every host's node name: the initial nodes, then the ones that join."""
        return [f"n{i}" for i in range(self.nodes + self.joins)]

    def with_overrides(self, **overrides) -> "Scenario":
        """The scenario with command-line overrides (nodes, backend, seed, xdp) applied and re-validated."""
        from .parse import with_overrides
        return with_overrides(self, **overrides)

    def config(self, **overrides) -> NodeConfig:
        """The `NodeConfig` every node of the scenario runs with (OVERRIDES: e.g. its own listen address)."""
        from .parse import node_config
        return node_config(self.node, **overrides)
