"""Crafted datagrams on the simulator meet the target's XDP model first, as on the testbed they meet its program: a
duplicate flood is dropped there, a foreign cluster's datagrams too, and without XDP all of it reaches the core."""

import json

from testbed import scenario as scenario_mod
from testbed.runner import run_scenario

SCENARIO = """\
name: inject
seed: 2
nodes: 8
node: {{fanout: 3, cycle_s: 0.5, timeout_s: 3.0, xdp: {xdp}}}
duration_s: 8
recovery_s: 3
timeline:
  - {{at: 3, inject: flood, target: n2, count: 2000, rate_pps: 20000}}
  - {{at: 4, inject: foreign_cluster, target: n3, count: 50}}
  - {{at: 5, inject: forged, target: n4, count: 50}}
"""


def run(tmp_path, xdp: bool) -> dict:
    s = scenario_mod.parse(SCENARIO.format(xdp=str(xdp).lower()), "inject.yaml").with_overrides(backend="sim")
    out = tmp_path / f"xdp-{xdp}"
    run_scenario(s, out)
    return json.loads((out / "stats.json").read_text())["nodes"]


def test_injected_datagrams_meet_the_xdp_model_before_the_core(tmp_path):
    on, off = run(tmp_path, True), run(tmp_path, False)
    # the flood: a datagram n2 already took, 2,000 times; XDP drops it (all but copies racing its first take)
    assert on["n2"]["xdp"]["dropped"].get("duplicate", 0) >= 1900
    assert on["n2"]["dropped"].get("duplicate", 0) < 100
    assert off["n2"]["dropped"].get("duplicate", 0) >= 2000  # without XDP the core counts every copy
    # a foreign cluster is the kernel's to drop; a forged MAC only the node can see
    assert on["n3"]["xdp"]["dropped"].get("foreign_cluster", 0) == 50 and "foreign_cluster" not in on["n3"]["dropped"]
    assert off["n3"]["dropped"].get("foreign_cluster", 0) == 50
    assert on["n4"]["dropped"].get("bad_mac", 0) == 50
