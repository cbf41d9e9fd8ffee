"""Scenario files: YAML in, a validated `Scenario` out, or a `ScenarioError` naming file, line and field.

The schema is assembled from its owners: the node block from `gossip.NodeConfig` (the one definition of node
options) plus the testbed's own options, each fault's fields from its module in `testbed.nemesis`, each check's
from `testbed.checkers`, the plots from `testbed.plots`. A scenario element that the chosen backend or fidelity
cannot honour is an error here, never dropped at run time.
"""

from __future__ import annotations

import dataclasses
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

from gossip import NodeConfig
from gossip.errors import ConfigError

from ..errors import ScenarioError
from . import relative
from .model import MAX_EMULATED_NODES, MAX_SIM_NODES, Scenario, Step
from .schema import NUM, Doc, fields, in_range, non_negative, one_of, positive

BACKENDS = ("netns", "mininet", "sim")
SHAPES = ("bridge", "line", "ring", "tree")

# `NodeConfig` fields a scenario may set (the testbed chooses each node's address, port and log level itself)
CONFIG_FIELDS = ("fanout", "cycle_s", "timeout_s", "buffer", "max_packet_bytes", "protocol", "membership",
                 "cluster", "options", "kernel_heartbeats")
_TYPES = {"int": int, "float": NUM, "str": str, "bool": bool, "tuple[tuple[str, Any], ...]": dict}
# the testbed's own node options: how it runs the node, not how the node gossips
TESTBED_NODE_FIELDS = {
    "secret": (str, False, "testbed", None),  # the cluster key (`NodeConfig.secrets` holds its bytes)
    "xdp": (bool, False, True, None),
    "xdp_mode": (str, False, "native", one_of("native", "generic")),
    "broadcaster": (bool, False, False, None),
    "seeds": (int, False, 1, in_range(1, 8)),
    "record_refreshes": (bool, False, False, None),
    "durable": (bool, False, False, None),  # each node keeps its metadata in <out>/state/<name> across restarts
}


def _node_fields() -> dict:
    spec = {}
    for f in dataclasses.fields(NodeConfig):
        if f.name in CONFIG_FIELDS:
            default = {} if f.name == "options" else f.default
            spec[f.name] = (_TYPES[f.type], False, default, None)  # NodeConfig itself checks the values
    return {**spec, **TESTBED_NODE_FIELDS}


NODE_FIELDS = _node_fields()


def node_config(node: Mapping[str, Any], **overrides) -> NodeConfig:
    """The `NodeConfig` of a scenario's node block (a `ConfigError` names a bad field)."""
    kw = {k: node[k] for k in CONFIG_FIELDS if k in node}
    for k in ("cycle_s", "timeout_s"):
        if k in kw:
            kw[k] = float(kw[k])
    return NodeConfig(**kw, secrets=(str(node.get("secret", "testbed")).encode(),), **overrides)


TOPOLOGY_FIELDS = {
    "shape": (str, False, "bridge", one_of(*SHAPES)),
    "bridges": (int, False, 4, in_range(1, 64)),
}

SIM_FIELDS = {
    "fidelity": (str, False, "full", one_of("full", "dissemination")),
    "latency": (dict, False, None, None),
    "cpu": (dict, False, None, None),
    "wakeup": (dict, False, None, None),
    "handling": (dict, False, None, None),
}

HANDLING_FIELDS = {
    "ms": (NUM, False, None, non_negative),
    "run": (str, False, None, None),
    "rumors": (bool, False, False, None),
}

CPU_FIELDS = {
    "cores": (int, False, 2, in_range(1, 1024)),
    "service_us": (NUM, False, None, positive),
    "run": (str, False, None, None),
    "shared": (bool, False, True, None),
    "cost": (str, False, "average", one_of("average", "marginal", "kind")),
}


def _latency_fields() -> dict:
    from ..analysis import HOP_SOURCES
    return {
        "kind": (str, True, None, one_of("constant", "uniform", "exponential", "measured")),
        "ms": (NUM, False, None, non_negative),
        "low_ms": (NUM, False, None, non_negative),
        "high_ms": (NUM, False, None, non_negative),
        "mean_ms": (NUM, False, None, positive),
        "floor_ms": (NUM, False, 0.0, non_negative),
        "run": (str, False, None, None),
        "source": (str, False, "heartbeats", one_of(*HOP_SOURCES)),
    }


# what each latency kind must be given (`measured` needs its run, checked with it)
LATENCY_NEEDS = {"constant": ("ms",), "uniform": ("low_ms", "high_ms"), "exponential": ("mean_ms",), "measured": ()}

def _key_ring(v) -> str | None:
    if v and all(isinstance(k, str) and len(k.encode()) <= 64 for k in v):
        return None
    return "must be a non-empty list of keys (strings of at most 64 bytes; the first signs, all verify)"


# Operations: the workload the interpreter itself performs (faults live in `testbed.nemesis`)
OPS = {
    "publish": {"node": ((str, list), False, "random", None), "data": (str, False, None, None)},
    "join": {"count": (int, False, 1, in_range(1, 1024))},
    "stop": {"node": ((str, list), True, None, None)},
    "start": {"node": ((str, list), True, None, None)},
    "leave": {"node": ((str, list), True, None, None)},
    # the cluster's key ring from now on: every node started later gets it, the nodes named switch now
    "keys": {"secrets": (list, True, None, _key_ring), "node": ((str, list), False, "all", None)},
}


def _registries():
    from .. import checkers, nemesis, plots
    return nemesis, checkers, plots


def _step(doc: Doc, raw, i: int, duration: float) -> Step:
    nemesis, _, _ = _registries()
    path = ("timeline", i)
    if not isinstance(raw, dict):
        raise doc.error(path, "must be a mapping with 'at' and one of op/fault/inject")
    kinds = [k for k in ("op", "fault", "inject") if k in raw]
    if len(kinds) != 1:
        raise doc.error(path, "needs exactly one of 'op', 'fault' or 'inject'")
    kind = kinds[0]
    action = raw[kind]
    table = {"op": OPS, "fault": {n: f.fields for n, f in nemesis.REGISTRY.items()},
             "inject": dict.fromkeys(nemesis.INJECTIONS, nemesis.INJECT.fields)}[kind]
    if not isinstance(action, str) or action not in table:
        raise doc.error(path + (kind,), f"unknown {kind} {action!r} (known: {', '.join(table)})")
    spec = {"at": (NUM, True, None, non_negative), kind: (str, True, None, None), **table[action]}
    if kind == "fault":
        spec["until"] = (NUM, True, None, positive)
    values = fields(doc, raw, path, spec)
    at, until = float(values.pop("at")), values.pop("until", None)
    values.pop(kind)
    if at > duration:
        raise doc.error(path + ("at",), f"{at:g} is after the end of the timeline (duration_s {duration:g})")
    if until is not None and not at < until <= duration:
        raise doc.error(path + ("until",), f"must be after at ({at:g}) and at most duration_s ({duration:g})")
    if kind == "fault":
        fault = nemesis.REGISTRY[action]
        pair = getattr(fault, "one_required", None)
        if pair and (pair[0] in values) == (pair[1] in values):
            raise doc.error(path, f"{action} needs exactly one of '{pair[0]}' or '{pair[1]}'")
        pair = getattr(fault, "exclusive", None)
        if pair and pair[0] in values and pair[1] in values:
            raise doc.error(path, f"{action} takes '{pair[0]}' or '{pair[1]}', not both")
    rel = {k: values[k] for k in _relative_keys(kind, action) if k in values and relative.is_relative(values[k])}
    return Step(at_s=at, kind=kind, action=action, until_s=None if until is None else float(until),
                params=MappingProxyType(values), line=doc.lines.get(path), index=i, relative=MappingProxyType(rel))


def _count_keys(st_kind: str, action: str) -> tuple[str, ...]:
    """The fields of a step that count nodes (a fault module's ``node_counts``; an injection's count is packets)."""
    if st_kind != "fault":
        return ()
    nemesis, _, _ = _registries()
    return tuple(getattr(nemesis.REGISTRY[action], "node_counts", ()))


def _relative_keys(st_kind: str, action: str) -> tuple[str, ...]:
    return ("node", "target", "groups") + _count_keys(st_kind, action)


def _resolve(s: Scenario) -> Scenario:
    """S with every size-relative field of its timeline resolved for its current number of nodes."""
    steps = []
    for st in s.timeline:
        if not st.relative:
            steps.append(st)
            continue
        counts = _count_keys(st.kind, st.action)
        resolved = {}
        for key, v in st.relative.items():
            try:
                resolved[key] = (relative.groups(v, s.nodes) if key == "groups" else
                                 relative.count(v, s.nodes) if key in counts else relative.nodes_of(v, s.nodes))
            except relative.Invalid as e:
                raise ScenarioError(s.file, st.line, f"timeline[{st.index}].{key}{e.sub}", str(e)) from None
        steps.append(replace(st, params=MappingProxyType({**st.params, **resolved})))
    return replace(s, timeline=tuple(steps))


def _node_name_ok(name, total: int) -> bool:
    return isinstance(name, str) and name.startswith("n") and name[1:].isdigit() and int(name[1:]) < total


def _unknown(name, s: Scenario, total: int) -> str:
    joining = ("" if total == s.nodes else f", n{s.nodes} joins later" if total == s.nodes + 1 else
               f", n{s.nodes}..n{total - 1} join later")
    return f"unknown node {name!r} (nodes are n0..n{s.nodes - 1}{joining}; first, last or P% scale with the size)"


def _check_names(s: Scenario) -> None:
    """Every node name a step uses must exist by the time the step runs, a node count must not ask for more nodes
    than there are (a scenario scaled down is refused, never clamped); partition groups may not overlap."""
    total = s.nodes + s.joins
    for st in s.timeline:
        i = st.index
        for key in ("node", "target"):
            v = st.params.get(key)
            for name in ([v] if isinstance(v, str) else v or []):
                if name in ("random", "all"):
                    continue
                if not _node_name_ok(name, total):
                    raise ScenarioError(s.file, st.line, f"timeline[{i}].{key}", _unknown(name, s, total))
        for key in _count_keys(st.kind, st.action):
            c = st.params.get(key)
            if c is not None and c > total:
                has = f"{s.nodes} nodes" + (f" and {total - s.nodes} that join later" if total > s.nodes else "")
                raise ScenarioError(s.file, st.line, f"timeline[{i}].{key}",
                                    f"asks for {c} nodes but the scenario has {has} (a share such as 25% scales "
                                    f"with the size)")
        seen: dict[str, int] = {}
        for g, group in enumerate(st.params.get("groups") or []):
            if not isinstance(group, list) or not group:
                raise ScenarioError(s.file, st.line, f"timeline[{i}].groups[{g}]", "must be a non-empty list of names")
            for name in group:
                if not _node_name_ok(name, total):
                    raise ScenarioError(s.file, st.line, f"timeline[{i}].groups[{g}]", _unknown(name, s, total))
                if name in seen:
                    raise ScenarioError(s.file, st.line, f"timeline[{i}].groups[{g}]",
                                        f"{name} is already in groups[{seen[name]}]")
                seen[name] = g


def _check_supported(s: Scenario) -> None:
    """A scenario element the backend or fidelity cannot honour is an error naming it."""
    if s.backend == "sim" and s.sim.get("fidelity") == "dissemination":
        from ..cluster.simulated import dissemination_refusal
        problem = dissemination_refusal(s)
        if problem:
            line, where, message = problem
            raise ScenarioError(s.file, line, where, message)
    nemesis, _, _ = _registries()
    for st in s.timeline:
        if st.kind == "fault":
            problem = nemesis.REGISTRY[st.action].unsupported(s, st)
            if problem:
                raise ScenarioError(s.file, st.line, f"timeline[{st.index}]", problem)


def kernel_heartbeats_refusal(node: Mapping) -> str | None:
    """Why a node block cannot have the in-kernel heartbeat plane (None: it can): it sits beside the XDP fast path,
    and the node's own rules (`gossip._plane.refusal`: the heartbeat protocol, UDP, fanout and key ring within the
    program's bounds) decide the rest -- refused here, where the node would only warn and run without it."""
    if not node.get("xdp", True):
        return "the in-kernel heartbeat plane needs xdp: true (it keeps the fast path's drop state)"
    from gossip._plane import refusal

    why = refusal(node_config(node))
    return None if why is None else f"the in-kernel heartbeat plane {why.removeprefix('it ')}"


def _check_key_rings(s: Scenario) -> None:
    """A ``keys`` step's ring must be one the nodes can hold (`gossip._plane.refusal` with the plane on: at most
    four keys), refused at its line rather than by every node at run time."""
    if not s.node.get("kernel_heartbeats"):
        return
    from gossip._plane import refusal

    config = node_config(s.node)
    for st in s.timeline:
        if st.kind == "op" and st.action == "keys":
            why = refusal(replace(config, secrets=tuple(k.encode() for k in st.params["secrets"])))
            if why:
                raise ScenarioError(s.file, st.line, f"timeline[{st.index}].secrets",
                                    f"the in-kernel heartbeat plane {why.removeprefix('it ')}")


def _check_topology(s: Scenario) -> None:
    """An emulated network that cannot be built is refused here, before anything is made (a Linux bridge holds
    at most 1,023 ports: 1,024 hosts need two bridges or more)."""
    if s.backend == "sim":
        return
    from ..net.topology import BRIDGE_MAX_PORTS
    if s.topology.get("shape", "bridge") == "bridge" and BRIDGE_MAX_PORTS < s.nodes <= MAX_EMULATED_NODES:
        raise ScenarioError(s.file, None, "topology.shape",
                            f"one Linux bridge holds at most {BRIDGE_MAX_PORTS:,} ports, and {s.nodes:,} nodes on "
                            f"the {s.backend} backend need one each: use shape line or tree (bridges: 2 or more)")


def _final(s: Scenario) -> Scenario:
    s = _resolve(s)
    _check_names(s)
    _check_supported(s)
    _check_key_rings(s)
    _check_topology(s)
    return s


def parse(text: str, file: str = "<scenario>") -> Scenario:
    _, checkers, plots = _registries()
    doc = Doc(file, text)
    dissemination = False
    top = {
        "name": (str, True, None, lambda v: None if v and "/" not in v else "must be a non-empty name without '/'"),
        "description": (str, False, "", None),
        "seed": (int, False, 1, None),
        "nodes": (int, True, None, in_range(1, MAX_SIM_NODES)),
        "backend": (str, False, "netns", one_of(*BACKENDS)),
        "topology": (dict, False, {}, None),
        "node": (dict, False, {}, None),
        "sim": (dict, False, {}, None),
        "duration_s": (NUM, False, 30.0, positive),
        "recovery_s": (NUM, False, 20.0, non_negative),
        "timeline": (list, False, [], None),
        "checks": ((list, dict), False, None, None),
        "plots": (list, False, None, None),
    }
    v = fields(doc, doc.value, (), top)
    node = fields(doc, v["node"], ("node",), NODE_FIELDS)
    try:
        node_config(node)
    except ConfigError as e:
        where = ("node", e.field) if e.field in node else ("node", "secret")
        if e.field.startswith("options."):
            name = e.field.split(".", 1)[1]
            where = ("node", "options", name) if name in node.get("options", {}) else ("node", "options")
        raise doc.error(where, str(e).split(": ", 1)[-1]) from None
    if node["broadcaster"] and node["protocol"] != "udp":
        raise doc.error(("node", "broadcaster"), "the in-kernel broadcaster works with protocol udp only")
    if node["kernel_heartbeats"]:
        why = kernel_heartbeats_refusal(node)
        if why:
            raise doc.error(("node", "kernel_heartbeats"), why)
    topology = fields(doc, v["topology"], ("topology",), TOPOLOGY_FIELDS)
    sim = fields(doc, v["sim"], ("sim",), SIM_FIELDS)
    for key in ("latency", "wakeup"):
        if key in sim:
            sim[key] = MappingProxyType(fields(doc, sim[key], ("sim", key), _latency_fields()))
            spec = sim[key]
            need = [k for k in LATENCY_NEEDS[spec["kind"]] if k not in spec]
            if need:
                raise doc.error(("sim", key), f"kind {spec['kind']} needs {' and '.join(need)}")
            if spec["kind"] == "uniform" and spec["high_ms"] < spec["low_ms"]:
                raise doc.error(("sim", key, "high_ms"), f"must be >= low_ms ({spec['low_ms']}), got "
                                                         f"{spec['high_ms']}")
            if sim[key]["kind"] == "measured":
                if "run" not in sim[key]:
                    raise doc.error(("sim", key), "kind measured needs 'run' (a testbed run to measure)")
                _check_run(doc, ("sim", key, "run"), sim[key]["run"])
    for key, spec, given in (("handling", HANDLING_FIELDS, "ms"), ("cpu", CPU_FIELDS, "service_us")):
        if key in sim:  # a value given, or measured on a recorded testbed run
            sim[key] = MappingProxyType(fields(doc, sim[key], ("sim", key), spec))
            if (given in sim[key]) == ("run" in sim[key]):
                raise doc.error(("sim", key), f"needs exactly one of {given} or run (a testbed run to measure)")
            if "run" in sim[key]:
                _check_run(doc, ("sim", key, "run"), sim[key]["run"])
    if "handling" in sim and sim["handling"]["rumors"] and "run" not in sim["handling"]:
        raise doc.error(("sim", "handling", "rumors"), "the rumors' handling times are measured on a run: give run")
    cpu = sim.get("cpu")
    if cpu is not None and cpu["cost"] != "average" and "run" not in cpu:
        raise doc.error(("sim", "cpu", "cost"), f"cost {cpu['cost']} is measured on a run: give run, not service_us")
    if cpu is not None and cpu["cost"] == "kind" and not cpu["shared"]:
        raise doc.error(("sim", "cpu", "cost"), "cost kind charges the host's shared cores: it needs shared: true")
    dissemination = v["backend"] == "sim" and sim.get("fidelity") == "dissemination"
    duration = float(v["duration_s"])
    timeline = tuple(sorted((_step(doc, raw, i, duration) for i, raw in enumerate(v["timeline"])),
                            key=lambda s: s.at_s))
    if dissemination:
        from ..cluster.simulated import DISSEMINATION_CHECKS, DISSEMINATION_PLOTS
    raw_checks = v["checks"] if v.get("checks") is not None else (
        list(DISSEMINATION_CHECKS) if dissemination else list(checkers.REGISTRY))
    checks = _parse_checks(doc, raw_checks, checkers.REGISTRY)
    raw_plots = v["plots"] if v.get("plots") is not None else (
        list(DISSEMINATION_PLOTS) if dissemination else list(plots.REGISTRY))
    for i, p in enumerate(raw_plots):
        if p not in plots.REGISTRY:
            raise doc.error(("plots", i), f"unknown plot {p!r} (known: {', '.join(plots.REGISTRY)})")
    s = Scenario(name=v["name"], file=file, seed=v["seed"], nodes=v["nodes"], backend=v["backend"],
                 topology=MappingProxyType(topology), node=MappingProxyType(node), sim=MappingProxyType(sim),
                 duration_s=duration, recovery_s=float(v["recovery_s"]), timeline=timeline,
                 checks=MappingProxyType(checks), plots=tuple(raw_plots), description=v["description"])
    return _final(s)  # the emulated backends' own size limit is checked once the backend is final (`with_overrides`)


def _check_run(doc: Doc, path: tuple, run: str) -> None:
    """A ``run:`` the simulator measures must be a recorded run directory (paths relative to the working directory,
    where the run is read from): refused at parse time, not once the simulator is being built."""
    if not (Path(run) / "events.jsonl").is_file():
        raise doc.error(path, f"{run} is not a recorded run directory (no events.jsonl)")


def _parse_checks(doc: Doc, raw, registry) -> dict:
    if isinstance(raw, dict):
        items = [((name,), name, params) for name, params in raw.items()]
    else:
        items = []
        for i, c in enumerate(raw):
            if isinstance(c, dict) and len(c) == 1:
                (name, params), = c.items()
            else:
                name, params = c, None
            items.append(((i,), name, params))
    out = {}
    for where, name, params in items:
        path = ("checks",) + where
        if not isinstance(name, str) or name not in registry:
            raise doc.error(path, f"unknown check {name!r} (known: {', '.join(registry)})")
        out[name] = MappingProxyType(fields(doc, params or {}, path, registry[name].fields))
    return out


def with_overrides(s: Scenario, *, nodes: int | None = None, backend: str | None = None, seed: int | None = None,
                   xdp: bool | None = None, node: Mapping | None = None) -> Scenario:
    """The scenario with command-line overrides applied (and re-validated). NODE: fields of the scenario's
    ``node:`` section to set (``{"membership": "swim", "options": {...}}``), checked as the file's would be."""
    orig = s
    if nodes is not None:
        s = replace(s, nodes=nodes)
    if backend is not None:
        s = replace(s, backend=backend)
    limit = MAX_SIM_NODES if s.backend == "sim" else MAX_EMULATED_NODES
    if not 1 <= s.nodes <= limit:
        raise ScenarioError(orig.file, None, "nodes", f"must be 1..{limit:,} on the {s.backend} backend, got "
                                                      f"{s.nodes}")
    if seed is not None:
        s = replace(s, seed=seed)
    if xdp is not None:
        s = replace(s, node=MappingProxyType({**s.node, "xdp": xdp}))
    if node:
        for k in node:
            if k not in NODE_FIELDS:
                raise ScenarioError(orig.file, None, f"node.{k}", f"unknown field (known: {', '.join(NODE_FIELDS)})")
        merged = {**s.node, **node}
        try:
            node_config(merged)
        except ConfigError as e:
            raise ScenarioError(orig.file, None, f"node.{e.field}", str(e).split(": ", 1)[-1]) from None
        s = replace(s, node=MappingProxyType(merged))
    if s.node.get("kernel_heartbeats"):
        why = kernel_heartbeats_refusal(s.node)
        if why:
            raise ScenarioError(orig.file, None, "node.kernel_heartbeats", why)
    return _final(s)


def find(name_or_path: str, *, folder: str = "scenarios", what: str = "scenario") -> Path:
    """A scenario path: as given, or, for a name not found here, that path or file name in FOLDER/ (here, then
    the project's: ``validation/n16-f2-c05`` is found too); ``.yaml`` may be left off. Sweep files are found the same way, in sweeps/."""
    p = Path(name_or_path)
    if p.exists():
        return p
    project = Path(__file__).resolve().parents[2] / folder
    for candidate in (Path(folder) / p, project / p, Path(folder) / p.name, project / p.name):  # validation/x too
        for c in (candidate, candidate.with_suffix(".yaml")):
            if c.is_file():
                return c
    raise ScenarioError(str(p), None, what, f"no such file (also looked in {folder}/)")


def read_text(path: Path, what: str) -> str:
    """The text of a scenario or sweep file; a `ScenarioError` naming it if it cannot be read."""
    try:
        return path.read_text()
    except OSError as e:
        raise ScenarioError(str(path), None, what, f"cannot read: {e.strerror}") from None


def load(name_or_path: str) -> Scenario:
    path = find(name_or_path)
    return parse(read_text(path, "scenario"), str(path))
