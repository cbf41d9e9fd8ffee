"""Key rings on the simulator mean what they mean on real nodes. The simulator hands cores decoded messages, which
carry no MAC; once nodes' rings differ, each message carries the key its sender signed it with, and a receiver
whose ring lacks it drops it as ``bad_mac`` (in the plane's model: passes it to the node, ``passed_bad_mac``), as
decoding a signed datagram does (``wire=True``)."""

import json

import pytest

from gossip import NodeConfig
from testbed import scenario as scenario_mod
from testbed.runner import run_scenario
from testbed.sim import Simulation

SCENARIO = """\
name: keys
seed: 9
nodes: 12
node: {{fanout: 3, cycle_s: 0.5, timeout_s: 2.5, xdp: {xdp}, kernel_heartbeats: {plane}, secret: k1}}
duration_s: 12
recovery_s: 6
timeline:
  - {{at: 1, op: publish, node: n1}}
{steps}
  - {{at: 8, op: publish, node: n7}}
checks:
  - membership_converged: {{within_s: 5}}
  - metadata_converged: {{within_s: 5}}
  - no_lost_update
"""
ROTATION = """\
  - {at: 3, fault: crash, node: n4, until: 5}
  - {at: 4, op: keys, secrets: [k1, k2]}
  - {at: 5.5, op: keys, secrets: [k2, k1]}
  - {at: 7, op: keys, secrets: [k2]}"""
# n0-n3 sign with a key nobody else holds, and drop k1: the cluster splits in two along the rings
BOTCHED = "  - {at: 4, op: keys, secrets: [k2], node: [n0, n1, n2, n3]}"
MODES = {"plain": ("false", "false"), "xdp": ("true", "false"), "plane": ("true", "true")}


def run(tmp_path, steps: str, mode: str):
    xdp, plane = MODES[mode]
    text = SCENARIO.format(xdp=xdp, plane=plane, steps=steps)
    s = scenario_mod.parse(text, "keys.yaml").with_overrides(backend="sim")
    out = tmp_path / f"{mode}-{len(steps)}"
    summary = run_scenario(s, out)
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    return summary, json.loads((out / "stats.json").read_text())["nodes"], events


def bad_mac(nodes: dict) -> dict[str, int]:
    return {n: v["dropped"].get("bad_mac", 0) for n, v in nodes.items() if v["dropped"].get("bad_mac", 0)}


@pytest.mark.parametrize("mode", sorted(MODES))
def test_a_rotation_in_three_steps_keeps_the_cluster_whole(tmp_path, mode):
    summary, nodes, events = run(tmp_path, ROTATION, mode)
    assert summary["passed"], summary["checks"]
    assert bad_mac(nodes) == {}
    told = [e for e in events if e["kind"] == "keys_op"]
    assert len(told) == 11 + 12 + 12  # n4 was down for the first step: it restarted on the cluster's ring
    if mode == "plane":
        assert sum(v["hbplane"]["handled"] for v in nodes.values()) > 0
        assert sum(v["hbplane"]["passed_bad_mac"] for v in nodes.values()) == 0


@pytest.mark.parametrize("mode", sorted(MODES))
def test_a_botched_rotation_splits_the_cluster_along_the_rings(tmp_path, mode):
    summary, nodes, events = run(tmp_path, BOTCHED, mode)
    verdicts = {c["name"]: c["passed"] for c in summary["checks"]}
    assert verdicts["membership_converged"] is False
    finals = {e["node"]: set(e["members"]) for e in events if e["kind"] == "final"}
    early = {f"n{i}" for i in range(4)}
    assert all(finals[n] == early for n in early), finals
    assert all(finals[n] == set(finals) - early for n in set(finals) - early), finals
    dropping = set(bad_mac(nodes))
    assert dropping & early and dropping - early, bad_mac(nodes)  # both sides drop the other's MACs
    if mode == "plane":  # the kernel passes what it cannot verify to the node, which drops it
        assert sum(v["hbplane"]["passed_bad_mac"] for v in nodes.values()) > 0


def test_messages_and_signed_datagrams_split_the_same_way():
    """The same botched ring change, with decoded messages and with signed datagrams through the real codec."""
    views = {}
    for wire in (False, True):
        sim = Simulation(seed=4, config=NodeConfig(cycle_s=0.5, timeout_s=2.5, secrets=(b"k1",)), wire=wire)
        names = sim.add_nodes(8, seeding="tree")
        sim.run_until(3)
        sim.set_secrets((b"k2",), names[:3])
        sim.run_until(8)
        views[wire] = {n: set(v) for n, v in sim.views().items()}
        drops = [r for r in sim.events if r["kind"] == "packet_dropped" and r["reason"] == "bad_mac"]
        assert {r["node"] for r in drops} & set(names[:3]) and {r["node"] for r in drops} - set(names[:3])
    assert views[False] == views[True]
    assert views[False]["n0"] == {"n1", "n2"} and views[False]["n7"] == {f"n{i}" for i in range(3, 7)}


def test_a_node_that_joins_after_a_rotation_starts_on_the_new_ring(tmp_path):
    steps = ("  - {at: 4, op: keys, secrets: [k1, k2]}\n  - {at: 5, op: keys, secrets: [k2, k1]}\n"
             "  - {at: 6, op: keys, secrets: [k2]}\n  - {at: 7, op: join}")
    text = SCENARIO.format(xdp="true", plane="false", steps=steps)
    s = scenario_mod.parse(text, "keys.yaml").with_overrides(backend="sim")
    summary = run_scenario(s, tmp_path / "join")
    nodes = json.loads((tmp_path / "join" / "stats.json").read_text())["nodes"]
    assert "n12" in nodes and summary["passed"], summary["checks"]
    assert bad_mac(nodes) == {}
