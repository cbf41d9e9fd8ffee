"""Scenario validation: every mistake is an error naming file, line and field — before anything starts."""

import subprocess
import sys
from pathlib import Path

import pytest

from testbed.errors import ScenarioError
from testbed.scenario import load, parse

ROOT = Path(__file__).resolve().parents[2]

GOOD = """\
name: t
nodes: 4
node:
  fanout: 2
  cycle_s: 0.5
  timeout_s: 2
duration_s: 10
timeline:
  - {at: 1, op: publish, node: n1, data: x}
  - at: 2
    fault: crash
    node: n2
    until: 5
checks:
  - membership_converged: {within_s: 5}
  - no_lost_update
"""


def err(text: str, file: str = "s.yaml") -> ScenarioError:
    with pytest.raises(ScenarioError) as e:
        parse(text, file)
    return e.value


def test_a_good_scenario_parses_with_defaults():
    s = parse(GOOD, "s.yaml")
    assert (s.name, s.nodes, s.backend, s.node["fanout"], s.node["protocol"]) == ("t", 4, "netns", 2, "udp")
    assert [st.action for st in s.timeline] == ["publish", "crash"]
    assert s.timeline[1].until_s == 5 and s.timeline[1].line == 10
    assert dict(s.checks) == {"membership_converged": {"within_s": 5}, "no_lost_update": {}}


@pytest.mark.parametrize("old,new,line,field,words", [
    ("  fanout: 2", "  fanout: two", 4, "node.fanout", "must be an integer"),
    ("  fanout: 2", "  fanot: 2", 4, "node.fanot", "unknown key"),
    ("  fanout: 2", "  fanout: 0", 4, "node.fanout", "must be in [1, 1024]"),  # NodeConfig says it
    ("  fanout: 2", "  fanout: 2\n  kernel_heartbeats: yes please", 5, "node.kernel_heartbeats", "must be true or false"),
    ("  fanout: 2", "  fanout: 2\n  kernel_heartbeats: true\n  membership: swim", 5, "node.kernel_heartbeats",
     "membership must be heartbeat"),
    ("  fanout: 2", "  fanout: 2\n  kernel_heartbeats: true\n  xdp: false", 5, "node.kernel_heartbeats",
     "needs xdp: true"),
    # the node's own limits, refused here rather than warned about by every node (which then ran without the plane)
    ("  fanout: 2", "  fanout: 12\n  kernel_heartbeats: true", 5, "node.kernel_heartbeats",
     "forwards to at most 8 targets, fanout is 12"),
    # a key ring step: a ring of keys, one the plane (when on) can hold
    ("  - {at: 1, op: publish, node: n1, data: x}", "  - {at: 1, op: keys, secrets: []}", 9, "timeline[0].secrets",
     "must be a non-empty list of keys"),
    ("  - {at: 1, op: publish, node: n1, data: x}", "  - {at: 1, op: keys, secrets: new}", 9, "timeline[0].secrets",
     "must be a list"),
    ("  - {at: 1, op: publish, node: n1, data: x}", "  - {at: 1, op: keys, secrets: [a, 7]}", 9,
     "timeline[0].secrets", "strings of at most 64 bytes"),
    ("  - {at: 1, op: publish, node: n1, data: x}", "  - {at: 1, op: keys, secrets: [%s]}" % ("k" * 65), 9,
     "timeline[0].secrets", "strings of at most 64 bytes"),
    ("  - {at: 1, op: publish, node: n1, data: x}", "  - {at: 1, op: keys, secrets: [a], node: n7}", 9,
     "timeline[0].node", "unknown node 'n7'"),
    ("  timeout_s: 2", "  timeout_s: 0.25", 6, "node.timeout_s", "must exceed cycle_s"),
    ("nodes: 4", "nodes: -1", 2, "nodes", "1..10,000,000"),
    ("nodes: 4", "nodes: true", 2, "nodes", "must be an integer"),
    ("    node: n2", "    node: n9", 10, "timeline[1].node", "unknown node 'n9'"),
    ("    until: 5", "    until: 1", 13, "timeline[1].until", "must be after at"),
    ("    until: 5", "    until: 50", 13, "timeline[1].until", "at most duration_s"),
    ("    fault: crash", "    fault: meteor", 11, "timeline[1].fault", "unknown fault 'meteor'"),
    ("  - no_lost_update", "  - no_bugs", 16, "checks[1]", "unknown check"),
    ("name: t", "name: t\nname: u", 2, "name", "duplicate key"),
    ("nodes: 4", "nodes: 4\n{{x: 1}}: 2", 3, "scenario", "a key must be a plain name"),
])
def test_errors_name_file_line_and_field(old, new, line, field, words):
    e = err(GOOD.replace(old, new))
    assert (e.file, e.line, e.field) == ("s.yaml", line, field), str(e)
    assert words in e.message
    assert str(e).startswith(f"s.yaml:{line}: {field}: ")


def test_a_key_ring_the_heartbeat_plane_cannot_hold_is_refused_at_its_line():
    text = GOOD.replace("  fanout: 2", "  fanout: 2\n  kernel_heartbeats: true").replace(
        "  - {at: 1, op: publish, node: n1, data: x}", "  - {at: 1, op: keys, secrets: [a, b, c, d, e]}")
    e = err(text)
    assert (e.line, e.field) == (10, "timeline[0].secrets") and "holds at most 4 keys" in e.message, str(e)
    assert parse(text.replace("[a, b, c, d, e]", "[a, b, c, d]")).timeline[0].params["secrets"] == ["a", "b", "c", "d"]
    assert parse(GOOD.replace("  - {at: 1, op: publish, node: n1, data: x}",
                              "  - {at: 1, op: keys, secrets: [a, b, c, d, e]}")).timeline[0].params["node"] == "all"


def test_missing_required_keys_and_bad_yaml():
    assert err("nodes: 3\n").field == "scenario" and "'name'" in err("nodes: 3\n").message
    e = err("name: t\nnodes: [1,\n")
    assert e.field == "yaml" and e.line is not None
    assert err("").message == "the file is empty"
    e = err(GOOD.replace("  - {at: 1, op: publish, node: n1, data: x}", "  - {at: 1}"))
    assert (e.line, e.field) == (9, "timeline[0]") and "exactly one of" in e.message


def test_partition_needs_groups_or_split_and_injection_counts_are_bounded():
    base = "name: t\nnodes: 4\nduration_s: 9\ntimeline:\n"
    e = err(base + "  - {at: 1, fault: partition, until: 3}\n")
    assert e.line == 5 and "exactly one of 'groups'" in e.message
    e = err(base + "  - {at: 1, inject: flood, count: 100000000}\n")
    assert e.field == "timeline[0].count" and "1..1000000" in e.message


def test_every_shipped_scenario_is_valid():
    files = sorted((ROOT / "scenarios").glob("*.yaml"))
    assert {f.stem for f in files} >= {"churn", "partition", "loss", "attack", "metadata", "scale"}
    for f in files:
        s = load(str(f))
        assert s.name == f.stem and s.nodes >= 1


def test_cli_reports_a_bad_file_without_a_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(GOOD.replace("  fanout: 2", "  fanout: lots"))
    r = subprocess.run([sys.executable, "-m", "testbed", "run", str(bad), "--backend", "sim"],
                       capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert r.returncode == 2
    assert f"{bad}:4: node.fanout: must be an integer" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "testbed", "run", "no-such-scenario.yaml"],
                       capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert r.returncode == 2 and "no such file" in r.stderr


def test_node_count_limit_depends_on_the_backend():
    s = parse(GOOD.replace("nodes: 4", "nodes: 100000"), "s.yaml")
    assert s.with_overrides(backend="sim").nodes == 100_000
    with pytest.raises(ScenarioError) as e:
        s.with_overrides(backend="netns")
    assert str(e.value) == "s.yaml: nodes: must be 1..1,024 on the netns backend, got 100000"
    with pytest.raises(ScenarioError, match="1..1,024 on the mininet backend"):
        parse(GOOD, "s.yaml").with_overrides(nodes=2000, backend="mininet")


def test_1024_nodes_on_one_bridge_are_refused_before_anything_is_built():
    # a Linux bridge has ports 1..1023: the 1,024th port failed deep in bring-up with EXCHFULL ("Exchange full")
    s = parse(GOOD, "s.yaml")
    assert s.with_overrides(nodes=1023, backend="netns").nodes == 1023
    for backend in ("netns", "mininet"):
        with pytest.raises(ScenarioError) as e:
            s.with_overrides(nodes=1024, backend=backend)
        assert str(e.value).startswith("s.yaml: topology.shape: one Linux bridge holds at most 1,023 ports")
    assert s.with_overrides(nodes=1024, backend="sim").nodes == 1024  # the simulator has no bridge
    two = parse(GOOD.replace("nodes: 4", "nodes: 4\ntopology: {shape: line, bridges: 2}"), "s.yaml")
    assert two.with_overrides(nodes=1024, backend="netns").nodes == 1024


def test_dissemination_fidelity_refuses_what_it_cannot_model():
    base = ("name: t\nnodes: 100\nbackend: sim\nsim: {fidelity: dissemination}\nduration_s: 9\n"
            "checks: [metadata_converged]\nplots: [infection]\ntimeline:\n  - {at: 1, op: publish, node: n0}\n")
    s = parse(base, "d.yaml")
    assert list(s.checks) == ["metadata_converged"] and s.plots == ("infection",)
    e = err(base + "  - {at: 2, fault: partition, split: 0.5, until: 5}\n", "d.yaml")
    assert (e.line, e.field) == (10, "timeline[1]")
    assert e.message == "fault 'partition' is not modelled at dissemination fidelity (one rumor over fixed full views)"
    assert "a second publish" in err(base + "  - {at: 2, op: publish}\n", "d.yaml").message
    assert "fault 'crash'" in err(base + "  - {at: 2, fault: crash, node: n3, until: 4}\n", "d.yaml").message
    assert "check 'no_false_deaths'" in err(base.replace("[metadata_converged]", "[no_false_deaths]"),
                                             "d.yaml").message
    assert "plot 'messages'" in err(base.replace("[infection]", "[messages]"), "d.yaml").message
    # without checks or plots given, the dissemination defaults are the ones it can honour
    s = parse(base.replace("checks: [metadata_converged]\nplots: [infection]\n", ""), "d.yaml")
    assert list(s.checks) == ["metadata_converged"] and s.plots == ("infection",)
    # and a full-fidelity scenario cannot be switched to it with something it would drop
    full = parse(GOOD, "s.yaml")
    assert full.with_overrides(backend="sim").backend == "sim"


def test_partition_groups_may_not_overlap():
    base = "name: t\nnodes: 4\nduration_s: 9\ntimeline:\n"
    e = err(base + "  - {at: 1, fault: partition, groups: [[n0, n1], [n1, n2]], until: 3}\n")
    assert (e.line, e.field) == (5, "timeline[0].groups[1]") and "n1 is already in groups[0]" in e.message


def test_the_node_block_is_a_node_config_plus_testbed_options():
    from gossip import NodeConfig
    s = parse(GOOD, "s.yaml")
    c = s.config(listen_port=7946)
    assert isinstance(c, NodeConfig) and c.fanout == 2 and c.secrets == (b"testbed",) and c.listen_port == 7946
    e = err(GOOD.replace("  fanout: 2", "  fanout: 2\n  listen_port: 9"))  # the testbed chooses it
    assert e.field == "node.listen_port" and "unknown key" in e.message


@pytest.mark.parametrize("latency,field,words", [
    ("{kind: constant}", "sim.latency", "kind constant needs ms"),
    ("{kind: uniform, low_ms: 1}", "sim.latency", "needs high_ms"),
    ("{kind: uniform, low_ms: 5, high_ms: 1}", "sim.latency.high_ms", "must be >= low_ms (5)"),
    ("{kind: exponential, floor_ms: 1}", "sim.latency", "needs mean_ms"),
    ("{kind: exponential, mean_ms: 0}", "sim.latency.mean_ms", "must be > 0"),
    ("{kind: constant, ms: -1}", "sim.latency.ms", "must be >= 0"),
])
def test_latency_keys_are_checked_per_kind(latency, field, words):
    e = err(GOOD + f"backend: sim\nsim: {{latency: {latency}}}\n")
    assert (e.line, e.field) == (18, field) and words in e.message, str(e)
    ok = parse(GOOD + "backend: sim\nsim: {latency: {kind: uniform, low_ms: 1, high_ms: 5}}\n", "s.yaml")
    assert dict(ok.sim["latency"]) == {"kind": "uniform", "low_ms": 1, "high_ms": 5, "floor_ms": 0.0,
                                       "source": "heartbeats"}


@pytest.mark.parametrize("cpu,words", [
    ("{service_us: 80, cost: kind}", "cost kind is measured on a run: give run, not service_us"),
    ("{service_us: 80, cost: marginal}", "cost marginal is measured on a run"),
    ("{run: RUN, cost: kind, shared: false}", "cost kind charges the host's shared cores: it needs shared: true"),
    ("{run: RUN, cost: by_kind}", "must be one of average, marginal, kind"),
])
def test_a_cpu_cost_the_simulator_cannot_measure_is_refused_at_its_line(cpu, words, tmp_path):
    """``sim.cpu.cost`` other than average is measured on a recorded run, and ``kind`` needs the shared cores; the
    rumors' own handling times, too, come from a run."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "events.jsonl").write_text("")
    (run / "meta.json").write_text("{}")
    e = err(GOOD + f"backend: sim\nsim: {{cpu: {cpu.replace('RUN', str(run))}}}\n")
    assert e.line == 18 and e.field.startswith("sim.cpu") and words in e.message, str(e)


def test_the_rumors_handling_needs_a_run_to_measure_it_on():
    e = err(GOOD + "backend: sim\nsim: {handling: {ms: 0.2, rumors: true}}\n")
    assert (e.line, e.field) == (18, "sim.handling.rumors") and "give run" in e.message, str(e)
