"""Scenario files: YAML in, a validated `Scenario` out — or a `ScenarioError` naming file, line and field.

A scenario reads like a Jepsen test map: the nodes and their topology, the node config, a timeline of operations,
faults and packet injections, the checks, and the plots. Everything is validated before anything starts: an
unknown key, a wrong type or an impossible value is reported as ``file:line: field: message``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

import yaml

from .analysis import HOP_SOURCES
from .errors import ScenarioError

BACKENDS = ("netns", "mininet", "sim")
SHAPES = ("bridge", "line", "ring", "tree")
CHECKS = ("membership_converged", "metadata_converged", "no_false_deaths", "bad_packets_dropped", "no_lost_update")
PLOTS = ("infection", "convergence", "messages")
INJECTIONS = ("forged", "replay", "malformed", "truncated", "foreign_cluster", "flood")
MAX_INJECT_COUNT = 1_000_000

_NUM = (int, float)


def _positive(v):
    return None if v > 0 else "must be > 0"


def _non_negative(v):
    return None if v >= 0 else "must be >= 0"


def _probability(v):
    return None if 0 <= v <= 1 else "must be between 0 and 1"


def _fanout(v):
    return None if 1 <= v <= 1024 else "must be 1..1024"


# field: (types, required, default, check). A check returns an error message or None.
NODE_FIELDS: dict[str, tuple] = {
    "fanout": (int, False, 3, _fanout),
    "cycle_s": (_NUM, False, 1.0, _positive),
    "timeout_s": (_NUM, False, 5.0, _positive),
    "buffer": (int, False, 1024, _positive),
    "max_packet_bytes": (int, False, 1400, lambda v: None if 576 <= v <= 65507 else "must be 576..65507"),
    "protocol": (str, False, "udp", lambda v: None if v in ("udp", "tcp") else "must be udp or tcp"),
    "secret": (str, False, "testbed", None),
    "cluster": (str, False, "gossip", lambda v: None if v else "must not be empty"),
    "xdp": (bool, False, True, None),
    "xdp_mode": (str, False, "native", lambda v: None if v in ("native", "generic") else "must be native or generic"),
    "broadcaster": (bool, False, False, None),
    "seeds": (int, False, 1, lambda v: None if 1 <= v <= 8 else "must be 1..8"),
    "record_refreshes": (bool, False, False, None),
}

TOPOLOGY_FIELDS = {
    "shape": (str, False, "bridge", lambda v: None if v in SHAPES else f"must be one of {', '.join(SHAPES)}"),
    "bridges": (int, False, 4, lambda v: None if 1 <= v <= 64 else "must be 1..64"),
}

SIM_FIELDS = {
    "fidelity": (str, False, "full", lambda v: None if v in ("full", "dissemination") else
                 "must be full or dissemination"),
    "latency": (dict, False, None, None),
    "cpu": (dict, False, None, None),
    "wakeup": (dict, False, None, None),
}

CPU_FIELDS = {
    "cores": (int, False, 2, lambda v: None if 1 <= v <= 1024 else "must be 1..1024"),
    "service_us": (_NUM, False, None, _positive),
    "run": (str, False, None, None),
}

LATENCY_FIELDS = {
    "kind": (str, True, None, lambda v: None if v in ("constant", "uniform", "exponential", "measured") else
             "must be constant, uniform, exponential or measured"),
    "ms": (_NUM, False, None, _non_negative),
    "low_ms": (_NUM, False, None, _non_negative),
    "high_ms": (_NUM, False, None, _non_negative),
    "mean_ms": (_NUM, False, None, _positive),
    "floor_ms": (_NUM, False, 0.0, _non_negative),
    "run": (str, False, None, None),
    "source": (str, False, "heartbeats", lambda v: None if v in HOP_SOURCES else
               f"must be one of {', '.join(HOP_SOURCES)}"),
}

# Timeline steps: for each action its own fields (besides `at`, and `until` for faults).
OPS = {
    "publish": {"node": ((str, list), False, "random", None), "data": (str, False, None, None)},
    "join": {"count": (int, False, 1, lambda v: None if 1 <= v <= 1024 else "must be 1..1024")},
    "stop": {"node": ((str, list), True, None, None)},
    "start": {"node": ((str, list), True, None, None)},
    "leave": {"node": ((str, list), True, None, None)},
}
FAULTS = {
    "crash": {"node": ((str, list), False, None, None), "count": (int, False, None, _positive)},
    "pause": {"node": ((str, list), False, None, None), "count": (int, False, None, _positive)},
    "churn": {"rate_per_s": (_NUM, True, None, _positive), "downtime_s": (_NUM, False, None, _positive),
              "joins": (int, False, 0, _non_negative)},
    "partition": {"groups": (list, False, None, None), "split": (_NUM, False, None,
                                                                  lambda v: None if 0 < v < 1 else "must be in (0, 1)"),
                  "via": (str, False, "bpf", lambda v: None if v in ("bpf", "nft") else "must be bpf or nft")},
    "loss": {"rate": (_NUM, True, None, _probability), "node": ((str, list), False, "all", None)},
    "delay": {"ms": (_NUM, True, None, _positive), "jitter_ms": (_NUM, False, 0.0, _non_negative),
              "node": ((str, list), False, "all", None)},
}
INJECT_FIELDS = {
    "target": ((str, list), False, "random", None),
    "count": (int, False, 10, lambda v: None if 1 <= v <= MAX_INJECT_COUNT else f"must be 1..{MAX_INJECT_COUNT}"),
    "rate_pps": (int, False, None, _positive),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Step:
    """One timeline entry: an operation (`kind` "op"), a fault window ("fault") or a packet injection ("inject")."""

    at_s: float
    kind: str
    action: str
    until_s: float | None = None
    params: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    line: int | None = None

    @property
    def label(self) -> str:
        return f"{self.action}@{self.at_s:g}s"


MAX_EMULATED_NODES = 1024  # real node processes in namespaces or Mininet hosts (one /22 of addresses)
MAX_SIM_NODES = 10_000_000


@dataclass(frozen=True, slots=True, kw_only=True)
class Scenario:
    name: str
    file: str
    seed: int = 1
    nodes: int = 8
    backend: str = "netns"
    topology: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({"shape": "bridge", "bridges": 4}))
    node: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    sim: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({"fidelity": "full"}))
    duration_s: float = 30.0
    recovery_s: float = 20.0
    timeline: tuple[Step, ...] = ()
    checks: Mapping[str, Mapping[str, Any]] = field(default_factory=lambda: MappingProxyType({}))
    plots: tuple[str, ...] = PLOTS
    description: str = ""

    @property
    def joins(self) -> int:
        """Hosts to reserve for nodes that join during the run."""
        return sum(s.params.get("count", 1) if s.action == "join" else s.params.get("joins", 0)
                   for s in self.timeline if s.action in ("join", "churn"))

    def with_overrides(self, *, nodes: int | None = None, backend: str | None = None, seed: int | None = None,
                       xdp: bool | None = None, duration_scale: float | None = None) -> "Scenario":
        """The scenario with command-line overrides applied (and re-validated)."""
        s = self
        if nodes is not None:
            s = replace(s, nodes=nodes)
        if backend is not None:
            s = replace(s, backend=backend)
        limit = MAX_SIM_NODES if s.backend == "sim" else MAX_EMULATED_NODES
        if not 1 <= s.nodes <= limit:
            raise ScenarioError(self.file, None, "nodes", f"must be 1..{limit:,} on the {s.backend} backend, got "
                                                          f"{s.nodes}")
        if seed is not None:
            s = replace(s, seed=seed)
        if xdp is not None:
            s = replace(s, node=MappingProxyType({**s.node, "xdp": xdp}))
        _check_names(s)
        return s


class _Doc:
    """A YAML document converted to plain values, remembering the line of every key."""

    def __init__(self, file: str, text: str) -> None:
        self.file = file
        self.lines: dict[tuple, int] = {}
        try:
            node = yaml.compose(text)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            raise ScenarioError(file, mark.line + 1 if mark else None, "yaml",
                                f"not valid YAML: {getattr(e, 'problem', e)}") from None
        if node is None:
            raise ScenarioError(file, 1, "scenario", "the file is empty")
        self.value = self._convert(node, ())

    def _convert(self, node, path):
        self.lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            out = {}
            for k, v in node.value:
                key = k.value
                if key in out:
                    raise ScenarioError(self.file, k.start_mark.line + 1, ".".join(map(str, path + (key,))),
                                        "duplicate key")
                self.lines[path + (key,)] = k.start_mark.line + 1
                out[key] = self._convert(v, path + (key,))
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self._convert(v, path + (i,)) for i, v in enumerate(node.value)]
        return yaml.safe_load(yaml.serialize(node))

    def error(self, path: tuple, message: str) -> ScenarioError:
        line = None
        for n in range(len(path), -1, -1):
            if path[:n] in self.lines:
                line = self.lines[path[:n]]
                break
        name = "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if i else p) for i, p in enumerate(path))
        return ScenarioError(self.file, line, name or "scenario", message)


def _type_name(types) -> str:
    types = types if isinstance(types, tuple) else (types,)
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false", list: "a list",
             dict: "a mapping"}
    return " or ".join(dict.fromkeys(names[t] for t in types))


def _fields(doc: _Doc, value, path: tuple, spec: dict) -> dict:
    """Validate mapping VALUE at PATH against SPEC; returns it with defaults filled in."""
    if not isinstance(value, dict):
        raise doc.error(path, "must be a mapping")
    unknown = [k for k in value if k not in spec]
    if unknown:
        raise doc.error(path + (unknown[0],), f"unknown key (allowed: {', '.join(spec)})")
    out = {}
    for name, (types, required, default, check) in spec.items():
        if name not in value:
            if required:
                raise doc.error(path, f"missing required key '{name}'")
            if default is not None:
                out[name] = default
            continue
        v = value[name]
        ok = isinstance(v, types) and not (isinstance(v, bool) and bool not in (
            types if isinstance(types, tuple) else (types,)))
        if not ok or (isinstance(v, float) and not math.isfinite(v)):
            raise doc.error(path + (name,), f"must be {_type_name(types)}, got {v!r}")
        problem = check(v) if check else None
        if problem:
            raise doc.error(path + (name,), f"{problem}, got {v!r}")
        out[name] = v
    return out


def _step(doc: _Doc, raw, i: int, duration: float) -> Step:
    path = ("timeline", i)
    if not isinstance(raw, dict):
        raise doc.error(path, "must be a mapping with 'at' and one of op/fault/inject")
    kinds = [k for k in ("op", "fault", "inject") if k in raw]
    if len(kinds) != 1:
        raise doc.error(path, "needs exactly one of 'op', 'fault' or 'inject'")
    kind = kinds[0]
    action = raw[kind]
    table = {"op": OPS, "fault": FAULTS, "inject": dict.fromkeys(INJECTIONS, INJECT_FIELDS)}[kind]
    if action not in table:
        raise doc.error(path + (kind,), f"unknown {kind} {action!r} (known: {', '.join(table)})")
    spec = {"at": (_NUM, True, None, _non_negative), kind: (str, True, None, None), **table[action]}
    if kind == "fault":
        spec["until"] = (_NUM, True, None, _positive)
    values = _fields(doc, raw, path, spec)
    at, until = float(values.pop("at")), values.pop("until", None)
    values.pop(kind)
    if at > duration:
        raise doc.error(path + ("at",), f"{at:g} is after the end of the timeline (duration_s {duration:g})")
    if until is not None and not at < until <= duration:
        raise doc.error(path + ("until",), f"must be after at ({at:g}) and at most duration_s ({duration:g})")
    if action == "partition" and ("groups" in values) == ("split" in values):
        raise doc.error(path, "partition needs exactly one of 'groups' (lists of node names) or 'split' (a fraction)")
    if action in ("crash", "pause") and "node" in values and "count" in values:
        raise doc.error(path, f"{action} takes 'node' or 'count', not both")
    return Step(at_s=at, kind=kind, action=action, until_s=None if until is None else float(until),
                params=MappingProxyType(values), line=doc.lines.get(path))


def _check_names(s: Scenario) -> None:
    """Every node name a step uses must exist by the time the step runs."""
    total = s.nodes + s.joins
    for i, st in enumerate(s.timeline):
        for key in ("node", "target"):
            v = st.params.get(key)
            for name in ([v] if isinstance(v, str) else v or []):
                if name in ("random", "all"):
                    continue
                if not isinstance(name, str) or not name.startswith("n") or not name[1:].isdigit() \
                        or int(name[1:]) >= total:
                    raise ScenarioError(s.file, st.line, f"timeline[{i}].{key}",
                                        f"unknown node {name!r} (nodes are n0..n{total - 1})")
        for g, group in enumerate(st.params.get("groups") or []):
            if not isinstance(group, list) or not group:
                raise ScenarioError(s.file, st.line, f"timeline[{i}].groups[{g}]", "must be a non-empty list of names")
            for name in group:
                if not (isinstance(name, str) and name[1:].isdigit() and int(name[1:]) < total):
                    raise ScenarioError(s.file, st.line, f"timeline[{i}].groups[{g}]", f"unknown node {name!r}")


def parse(text: str, file: str = "<scenario>") -> Scenario:
    doc = _Doc(file, text)
    top = {
        "name": (str, True, None, lambda v: None if v and "/" not in v else "must be a non-empty name without '/'"),
        "description": (str, False, "", None),
        "seed": (int, False, 1, None),
        "nodes": (int, True, None, lambda v: None if 1 <= v <= MAX_SIM_NODES else f"must be 1..{MAX_SIM_NODES:,}"),
        "backend": (str, False, "netns", lambda v: None if v in BACKENDS else f"must be one of {', '.join(BACKENDS)}"),
        "topology": (dict, False, {}, None),
        "node": (dict, False, {}, None),
        "sim": (dict, False, {}, None),
        "duration_s": (_NUM, False, 30.0, _positive),
        "recovery_s": (_NUM, False, 20.0, _non_negative),
        "timeline": (list, False, [], None),
        "checks": ((list, dict), False, list(CHECKS), None),
        "plots": (list, False, list(PLOTS), None),
    }
    v = _fields(doc, doc.value, (), top)
    node = _fields(doc, v["node"], ("node",), NODE_FIELDS)
    if node["timeout_s"] <= node["cycle_s"]:
        raise doc.error(("node", "timeout_s"), f"must exceed cycle_s ({node['cycle_s']:g}), got {node['timeout_s']:g}")
    if node["broadcaster"] and node["protocol"] != "udp":
        raise doc.error(("node", "broadcaster"), "the in-kernel broadcaster works with protocol udp only")
    topology = _fields(doc, v["topology"], ("topology",), TOPOLOGY_FIELDS)
    sim = _fields(doc, v["sim"], ("sim",), SIM_FIELDS)
    if "latency" in sim:
        sim["latency"] = MappingProxyType(_fields(doc, sim["latency"], ("sim", "latency"), LATENCY_FIELDS))
    if "wakeup" in sim:
        sim["wakeup"] = MappingProxyType(_fields(doc, sim["wakeup"], ("sim", "wakeup"), LATENCY_FIELDS))
    if "cpu" in sim:
        sim["cpu"] = MappingProxyType(_fields(doc, sim["cpu"], ("sim", "cpu"), CPU_FIELDS))
        if ("service_us" in sim["cpu"]) == ("run" in sim["cpu"]):
            raise doc.error(("sim", "cpu"), "needs exactly one of service_us or run (a testbed run to measure)")
    duration = float(v["duration_s"])
    timeline = tuple(sorted((_step(doc, raw, i, duration) for i, raw in enumerate(v["timeline"])),
                            key=lambda s: s.at_s))
    checks = _parse_checks(doc, v["checks"])
    for i, p in enumerate(v["plots"]):
        if p not in PLOTS:
            raise doc.error(("plots", i), f"unknown plot {p!r} (known: {', '.join(PLOTS)})")
    s = Scenario(name=v["name"], file=file, seed=v["seed"], nodes=v["nodes"], backend=v["backend"],
                 topology=MappingProxyType(topology), node=MappingProxyType(node), sim=MappingProxyType(sim),
                 duration_s=duration, recovery_s=float(v["recovery_s"]), timeline=timeline,
                 checks=MappingProxyType(checks), plots=tuple(v["plots"]), description=v["description"])
    _check_names(s)  # the emulated backends' own limit is checked once the backend is final (`with_overrides`)
    return s


CHECK_FIELDS = {
    "membership_converged": {"within_s": (_NUM, False, None, _positive)},
    "metadata_converged": {"within_s": (_NUM, False, None, _positive)},
    "no_false_deaths": {},
    "bad_packets_dropped": {},
    "no_lost_update": {},
}


def _parse_checks(doc: _Doc, raw) -> dict:
    items = raw.items() if isinstance(raw, dict) else [(c, {}) if isinstance(c, str) else
                                                       (next(iter(c)) if isinstance(c, dict) and len(c) == 1 else c,
                                                        next(iter(c.values())) if isinstance(c, dict) and len(c) == 1
                                                        else None) for c in raw]
    out = {}
    for i, (name, params) in enumerate(items):
        path = ("checks", name if isinstance(raw, dict) else i)
        if name not in CHECK_FIELDS:
            raise doc.error(path, f"unknown check {name!r} (known: {', '.join(CHECKS)})")
        out[name] = MappingProxyType(_fields(doc, params or {}, path, CHECK_FIELDS[name]))
    return out


def find(name_or_path: str) -> Path:
    """A scenario path: as given, or, for a bare name not found here, the file of that name in scenarios/."""
    p = Path(name_or_path)
    if p.exists():
        return p
    for candidate in (Path("scenarios") / p.name, Path(__file__).resolve().parent.parent / "scenarios" / p.name):
        for c in (candidate, candidate.with_suffix(".yaml")):
            if c.exists():
                return c
    raise ScenarioError(str(p), None, "scenario", "no such file (also looked in scenarios/)")


def select_nodes(sel, *, live: list[str], started: list[str], rng, count: int | None = None) -> list[str]:
    """The node names a step's ``node``/``target`` selects: "random" (COUNT of the LIVE ones, one by default),
    "all" (every STARTED node), a name, or a list of names. Both backends interpret steps through this."""
    if sel is None or sel == "random":
        return rng.sample(live, min(count or 1, len(live)))
    if sel == "all":
        return list(started)
    return [sel] if isinstance(sel, str) else list(sel)


def partition_groups(params, names: list[str]) -> list[list[str]]:
    """A partition step's sides: its ``groups``, or NAMES (every host, in order) cut at the ``split`` fraction."""
    if "groups" in params:
        return [list(g) for g in params["groups"]]
    cut = max(1, min(len(names) - 1, round(len(names) * float(params["split"]))))
    return [names[:cut], names[cut:]]


def read_text(path: Path, what: str) -> str:
    """The text of a scenario or sweep file; a `ScenarioError` naming it if it cannot be read."""
    try:
        return path.read_text()
    except OSError as e:
        raise ScenarioError(str(path), None, what, f"cannot read: {e.strerror}") from None


def load(name_or_path: str) -> Scenario:
    path = find(name_or_path)
    return parse(read_text(path, "scenario"), str(path))
