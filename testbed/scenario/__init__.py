"""Scenarios: `schema` (YAML validated field by field, errors with file:line), `model` (the frozen `Scenario` and
`Step`), `parse` (a file to a `Scenario`, refusing what the chosen backend cannot honour).

A scenario reads like a Jepsen test map: the nodes and their topology, the node config, a timeline of operations,
faults and packet injections, the checks, and the plots.
"""

from .model import MAX_EMULATED_NODES, MAX_SIM_NODES, Scenario, Step
from .parse import BACKENDS, NODE_FIELDS, OPS, SHAPES, find, load, parse, read_text, with_overrides

__all__ = ["BACKENDS", "MAX_EMULATED_NODES", "MAX_SIM_NODES", "NODE_FIELDS", "OPS", "SHAPES", "Scenario", "Step",
           "find", "load", "parse", "read_text", "select_nodes", "with_overrides"]


def select_nodes(sel, *, live: list[str], started: list[str], rng, count: int | None = None,
                 say=None) -> list[str]:
    """The node names a step's ``node``/``target`` selects: "random" (COUNT of the LIVE ones, one by default),
    "all" (every STARTED node), a name, or a list of names. The parser has refused a COUNT above the scenario's
    size; fewer live nodes than COUNT (others down meanwhile) picks them all, and SAY tells."""
    if sel is None or sel == "random":
        want = count or 1
        if want > len(live) and say is not None:
            say(f"asked for {want} random live node(s), {len(live)} live: taking {len(live)}")
        return rng.sample(live, min(want, len(live)))
    if sel == "all":
        return list(started)
    return [sel] if isinstance(sel, str) else list(sel)
