"""One test per fault module (testbed/nemesis): each fault, run by the interpreter on the simulated cluster (real
cores, virtual network), opens its window, does what its module says to the nodes or the network, and stops.
The same modules on real hosts are exercised by the scenario and parity suites."""

from __future__ import annotations

import json

import pytest

from testbed import analysis, nemesis
from testbed.runner import run_scenario
from testbed.scenario import parse

BASE = """\
name: f
nodes: {nodes}
backend: sim
node: {{fanout: 3, cycle_s: 0.5, timeout_s: 2.0, record_refreshes: true}}
duration_s: {duration}
recovery_s: 10
timeline:
{steps}
"""


def run(tmp_path, steps: str, *, nodes: int = 8, duration: float = 8) -> tuple[dict, analysis.History]:
    s = parse(BASE.format(nodes=nodes, duration=duration, steps=steps), "f.yaml")
    summary = run_scenario(s, tmp_path / "run")
    return summary, analysis.load_history(tmp_path / "run")


def windows(h: analysis.History, kind: str) -> list[analysis.FaultWindow]:
    return [w for w in h.faults if w.kind == kind]


def states(h: analysis.History, node: str) -> list[str]:
    return [e["state"] for e in h.of_kind(analysis.PROC) if e["node"] == node]


def test_every_fault_is_one_registered_module():
    assert set(nemesis.REGISTRY) == {"crash", "pause", "churn", "partition", "loss", "delay"}
    assert all(f.colour.startswith("#") and f.fields for f in nemesis.REGISTRY.values())


def test_crash_kills_and_restarts_its_nodes(tmp_path):
    summary, h = run(tmp_path, "  - {at: 2, fault: crash, node: [n3, n4], until: 5}")
    (w,) = windows(h, "crash")
    assert w.nodes == ("n3", "n4") and round(w.end - w.start, 3) == 3.0
    assert states(h, "n3") == ["up", "down", "up"]
    assert summary["passed"], summary["checks"]


def test_pause_freezes_and_resumes(tmp_path):
    _, h = run(tmp_path, "  - {at: 2, fault: pause, count: 2, until: 5}")
    (w,) = windows(h, "pause")
    assert len(w.nodes) == 2
    for n in w.nodes:
        assert states(h, n) == ["up", "paused", "resumed"]
        # a paused node refreshes no heartbeat: its core did not run
        refreshed = [e["t"] for e in h.of_kind("member_refreshed") if e["node"] == n]
        assert not [t for t in refreshed if w.start + 0.01 < t < w.end - 0.01]


def test_churn_crashes_restarts_and_joins(tmp_path):
    _, h = run(tmp_path, "  - {at: 1, fault: churn, rate_per_s: 2, downtime_s: 1, joins: 2, until: 6}", duration=8)
    (w,) = windows(h, "churn")
    downs = [e for e in h.of_kind(analysis.PROC) if e["state"] == "down"]
    assert len(downs) >= 3 and all(w.start <= e["t"] <= w.end for e in downs)
    assert "n0" not in {e["node"] for e in downs}  # the first seed is kept
    assert {"n8", "n9"} <= {e["node"] for e in h.of_kind("started")}  # the two joins


def _cross(h: analysis.History, groups, t0: float, t1: float) -> int:
    """Heartbeats accepted across GROUPS between T0 and T1."""
    side = {n: i for i, g in enumerate(groups) for n in g}
    names = {e["node_id"]: e["node"] for e in h.of_kind("started")}
    return sum(1 for e in h.of_kind("member_refreshed") if t0 < e["t"] < t1
               and side.get(e["node"]) != side.get(names.get(e["node_id"])))


def test_partition_groups_put_ungrouped_nodes_on_one_more_side(tmp_path):
    _, h = run(tmp_path, "  - {at: 2, fault: partition, groups: [[n0, n1, n2], [n3, n4]], until: 6}")
    (w,) = windows(h, "partition")
    raw = json.loads((tmp_path / "run" / "faults.jsonl").read_text().splitlines()[0])
    assert raw["groups"] == [["n0", "n1", "n2"], ["n3", "n4"], ["n5", "n6", "n7"]]
    assert _cross(h, raw["groups"], w.start + 0.05, w.end) == 0
    assert _cross(h, raw["groups"], w.end + 1.0, w.end + 3.0) > 0  # healed


def test_loss_on_one_node_acts_both_ways(tmp_path):
    summary, h = run(tmp_path, "  - {at: 1, fault: loss, rate: 1.0, node: n2, until: 5}")
    (w,) = windows(h, "loss")
    assert w.nodes == ("n2",)
    names = {e["node_id"]: e["node"] for e in h.of_kind("started")}
    inside = [e for e in h.of_kind("member_refreshed") if w.start + 0.05 < e["t"] < w.end]
    assert not [e for e in inside if e["node"] == "n2"]  # nothing reaches n2
    assert not [e for e in inside if names[e["node_id"]] == "n2"]  # nothing from n2 reaches anyone
    assert [e for e in inside if e["node"] != "n2"]  # the others still gossip
    assert summary["passed"], summary["checks"]


def test_delay_slows_every_delivery_to_its_nodes(tmp_path):
    _, h = run(tmp_path, "  - {at: 1, fault: delay, ms: 200, node: n1, until: 6}\n"
                         "  - {at: 3, op: publish, node: n0, data: x}")
    (pub,) = [e for e in h.of_kind("metadata_adopted") if e["via"] == "publish"]
    got = {e["node"]: e["t"] - pub["t"] for e in h.of_kind("metadata_adopted") if e["via"] != "publish"}
    assert got["n1"] >= 0.2 and max(v for n, v in got.items() if n != "n1") < 0.2


@pytest.mark.parametrize("kind", ["forged", "malformed", "foreign_cluster", "replay"])
def test_injection_is_an_instant_counted_under_its_reason(tmp_path, kind):
    summary, h = run(tmp_path, f"  - {{at: 2, inject: {kind}, target: n1, count: 20}}")
    (w,) = windows(h, "inject")
    assert w.nodes == ("n1",) and w.start == w.end
    (rec,) = h.of_kind(analysis.INJECTED)
    assert rec["count"] == 20
    assert not nemesis.excuses_removal(w, "n1", "n2")  # an injection excuses nothing


def test_overlapping_network_faults_end_one_at_a_time(tmp_path):
    """A window that closes removes its own rule only: n2's loss outlives the global loss and the partition."""
    _, h = run(tmp_path, "  - {at: 1, fault: loss, rate: 1.0, node: n2, until: 6}\n"
                         "  - {at: 2, fault: loss, rate: 0.2, until: 4}\n"
                         "  - {at: 2, fault: partition, split: 0.5, until: 3}")
    names = {e["node_id"]: e["node"] for e in h.of_kind("started")}
    n2 = [e for e in h.of_kind("member_refreshed") if 4.05 + h.t0 < e["t"] < 5.95 + h.t0
          and "n2" in (e["node"], names[e["node_id"]])]
    assert not n2
    assert [e for e in h.of_kind("member_refreshed") if e["t"] > 6.5 + h.t0 and e["node"] == "n2"]
