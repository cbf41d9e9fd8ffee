"""What both scenario suites use to name a run: the parity suite's sizes and scaling (`scaled`), so the scenario
suite can ask `shared_run` (conftest.py) for the very run the parity suite judged, instead of making its own."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import MappingProxyType

from testbed import scenario as scenario_mod

HERE = Path(__file__).resolve().parent

SIZES = {"attack": 16, "basic": 16, "churn": 24, "delay": 16, "loss": 16, "metadata": 16, "operations": 16,
         "partition": 32, "scale": 32, "validation": 32}


def scaled(s, nodes: int):
    """S on NODES nodes: a step naming a node that no longer exists names node k mod NODES instead, and every
    heartbeat a node accepts is recorded (the parity checks read who heard whom)."""
    total = nodes + s.joins

    def fit(name):
        if isinstance(name, list):
            return [fit(n) for n in name]
        if isinstance(name, str) and name[:1] == "n" and name[1:].isdigit() and int(name[1:]) >= total:
            return f"n{int(name[1:]) % nodes}"
        return name
    steps = tuple(replace(st, params=MappingProxyType({k: fit(v) for k, v in st.params.items()}))
                  for st in s.timeline)
    s = replace(s, timeline=steps, node=MappingProxyType({**s.node, "record_refreshes": True}))
    return s.with_overrides(nodes=nodes)


def parity_scenario(name: str):
    """NAME.yaml at its parity size, scaled (the file's absolute path, so every suite names it the same way)."""
    return scaled(scenario_mod.load(str(HERE / f"{name}.yaml")), SIZES[name])
