"""The simulator's model of the in-kernel heartbeat plane (``node: {kernel_heartbeats: true}``, `testbed.sim._plane`):
the kernel takes a fresh heartbeat of a member the node registered, with no wake-up and none of the host's CPU,
sends its copies, and the core hears of it as the node reads it back. The protocol's state is the same with the
plane on or off; what changes is what reaches the process (``packets_in``) and when."""

import json

from testbed import scenario as scenario_mod
from testbed.runner import run_scenario

SCENARIO = """\
name: plane
seed: 5
nodes: 16
node: {{fanout: 3, cycle_s: 0.5, timeout_s: 3.0, xdp: true, kernel_heartbeats: {on}}}
duration_s: 16
recovery_s: 6
timeline:
  - {{at: 2, op: publish, node: n3}}
  - {{at: 4, fault: crash, node: n5, until: 9}}
  - {{at: 6, op: publish, node: n7}}
"""


def run(tmp_path, on: bool):
    s = scenario_mod.parse(SCENARIO.format(on=str(on).lower()), "plane.yaml").with_overrides(backend="sim")
    out = tmp_path / f"plane-{on}"
    summary = run_scenario(s, out)
    return summary, json.loads((out / "stats.json").read_text())["nodes"]


def test_the_plane_changes_what_reaches_the_process_not_what_the_protocol_does(tmp_path):
    off, off_nodes = run(tmp_path, False)
    on, on_nodes = run(tmp_path, True)
    verdicts = lambda summary: {c["name"]: c["passed"] for c in summary["checks"]}  # noqa: E731
    assert verdicts(on) == verdicts(off) and on["passed"] and off["passed"], (on["checks"], off["checks"])
    assert all("hbplane" not in n for n in off_nodes.values())
    handled = sum(n["hbplane"]["handled"] for n in on_nodes.values())
    assert handled > 1000  # 16 nodes, 2 heartbeats a second each, every node taking each one: most in the kernel
    assert on["packets"]["packets_in"] * 3 < off["packets"]["packets_in"], (on["packets"], off["packets"])
    # the crashed node's heartbeats stop, in the kernel too: it was removed at the timeout, and taken back
    assert all(r["t100"] is not None for r in on["rumors"])


def test_a_paused_process_s_plane_runs_on_in_the_kernel():
    """SIGSTOP stops the node, not its TC program: on the testbed a paused node's plane goes on taking and forwarding
    its registered members' heartbeats (the testbed removes a node's plane only when the node is gone). The
    simulator's does the same, and the node reads the takes back once it runs again."""
    from gossip import NodeConfig
    from testbed.sim import Simulation

    sim = Simulation(seed=2, config=NodeConfig(cycle_s=0.5, timeout_s=3.0, kernel_heartbeats=True), xdp=True)
    sim.add_nodes(8, seeding="tree")
    sim.run_until(4)
    before = sim.plane_stats("n3")["handled"]
    sim.pause("n3")
    sim.run_until(6)
    during = sim.plane_stats("n3")["handled"]
    assert during > before + 10, (before, during)  # 7 members, 2 heartbeats a second each
    refreshed = sim.core("n3").stats.get("kernel_refreshed", 0)
    sim.resume("n3")
    sim.run_until(7)
    assert sim.core("n3").stats.get("kernel_refreshed", 0) > refreshed
