"""A run on real hosts records the host's CPU (/proc/stat) and its BPF programs' run time once per cycle, so an
analysis can tell the host's busy CPU, softirq included, and the kernel's own cost over any window."""

from __future__ import annotations

import json
import os

import pytest
from tb_netcheck import needs_root

from testbed import analysis as A
from testbed.runner import run_scenario
from testbed.scenario import parse

SCENARIO = """\
name: host-stats
seed: 2
nodes: 4
node: {cycle_s: 0.5, timeout_s: 5, xdp: true, kernel_heartbeats: true}
duration_s: 5
recovery_s: 10
checks: [membership_converged]
"""


@pytest.mark.root
@pytest.mark.netns
@pytest.mark.bpf
@needs_root
def test_a_netns_run_records_the_hosts_cpu_and_its_bpf_programs_run_time(tmp_path):
    import bpf
    from bpf._sys import bpf_stats_enabled

    ok, why = bpf.available()
    if not ok:
        pytest.skip(why)
    with bpf_stats_enabled():
        summary = run_scenario(parse(SCENARIO, "host-stats.yaml"), tmp_path / "run")
    assert summary["passed"], summary["checks"]
    h = A.load_history(tmp_path / "run")
    recs = list(h.of_kind(A.HOST_STATS))
    assert len(recs) >= 10 and all(r["node"] == "host" for r in recs)  # one a cycle over 5 s, and the recovery's
    a, b = recs[1]["t"], recs[-2]["t"]
    cpu = A.host_cpu(recs, a, b)
    cpus = json.loads((tmp_path / "run" / "meta.json").read_text())["host_cpus"] or os.cpu_count()
    assert 0 < cpu["busy"] <= cpus * 1.05 and 0 <= cpu["softirq"] <= cpu["busy"]
    assert cpu["busy"] + cpu["idle"] + cpu["iowait"] == pytest.approx(cpus, rel=0.1)  # every core accounted for
    run = A.bpf_run(recs, a, b)
    assert {"xdp", "hbplane", "faults_from_node", "faults_to_node"} <= set(run)
    for name in ("xdp", "hbplane"):  # the nodes' heartbeats pass both, every cycle
        assert run[name]["runs_per_s"] > 0 and 0 < run[name]["ns_per_run"] < 1e6, (name, run[name])
