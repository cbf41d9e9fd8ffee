"""Scenarios that scale: node names, partition groups and node counts written relative to the scenario's size
(`testbed.scenario.relative`) resolve once the size is final, so every shipped scenario runs with ``--nodes``
down to a small cluster; asking for nodes that do not exist is a one-line error naming file, line and field."""

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from testbed.analysis import PUBLISH_OP
from testbed.errors import ScenarioError
from testbed.experiments import sweep
from testbed.nemesis.partition import sides
from testbed.scenario import load, parse, select_nodes

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted((ROOT / "scenarios").glob("*.yaml")) + sorted((ROOT / "scenarios" / "validation").glob("*.yaml"))
SMALL = 8

BASE = """\
name: t
nodes: {nodes}
node: {{fanout: 2, cycle_s: 0.5, timeout_s: 2}}
duration_s: 10
timeline:
{steps}
"""


def scenario(steps: str, nodes: int = 16):
    return parse(BASE.format(nodes=nodes, steps=steps), "s.yaml")


def err(steps: str, nodes: int = 16) -> ScenarioError:
    with pytest.raises(ScenarioError) as e:
        scenario(steps, nodes)
    return e.value


def names_in(s) -> set[str]:
    out = set()
    for st in s.timeline:
        for key in ("node", "target"):
            v = st.params.get(key)
            out.update([v] if isinstance(v, str) else v or [])
        out.update(n for g in st.params.get("groups") or [] for n in g)
    return out - {"random", "all"}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.relative_to(ROOT / "scenarios").as_posix())
def test_every_shipped_scenario_parses_at_its_size_and_small(path):
    s = load(str(path))
    for size in (s.nodes, SMALL):
        for backend in ("netns", "sim"):
            scaled = s.with_overrides(nodes=size, backend=backend)
            assert scaled.nodes == size
            # downstream sees plain names only, every one a host of the scaled run
            assert names_in(scaled) <= set(scaled.hosts), (path.name, size)
            for st in scaled.timeline:
                assert not isinstance(st.params.get("count"), str)


def test_every_shipped_sweep_loads():
    for path in sorted((ROOT / "sweeps").glob("*.yaml")):
        assert sweep.load(str(path))["name"] == path.stem


@pytest.mark.parametrize("written,nodes,expected", [
    ("first", 16, "n0"), ("last", 16, "n15"), ("last", 8, "n7"),
    ("50%", 32, "n16"), ("50%", 7, "n3"), ("0%", 5, "n0"), ("99%", 8, "n7"),
    ("62.5%", 32, "n20"),  # read exactly: 0.625 * 32 is 20, not 19.999...
    ("65%", 32, "n20"), ("65%", 8, "n5"), ("n3", 8, "n3"), ("random", 8, "random"),
])
def test_node_names_resolve_against_the_size(written, nodes, expected):
    s = scenario(f"  - {{at: 1, op: publish, node: {written}}}", nodes)
    assert s.timeline[0].params["node"] == expected


def test_lists_mix_relative_and_plain_names_and_may_repeat_on_small_clusters():
    s = scenario("  - {at: 1, op: publish, node: [first, 50%, last, n2]}", 16)
    assert s.timeline[0].params["node"] == ["n0", "n8", "n15", "n2"]
    assert s.with_overrides(nodes=3).timeline[0].params["node"] == ["n0", "n1", "n2", "n2"]


def test_an_override_resolves_again_from_what_was_written():
    s = scenario("  - {at: 1, op: publish, node: 75%}\n  - {at: 2, fault: pause, count: 25%, until: 4}", 16)
    small = s.with_overrides(nodes=8)
    assert [dict(st.params) for st in small.timeline] == [{"node": "n6"}, {"count": 2}]
    back = small.with_overrides(nodes=16)
    assert [dict(st.params) for st in back.timeline] == [dict(st.params) for st in s.timeline]
    assert back.timeline[0].relative == {"node": "75%"}


@pytest.mark.parametrize("written,nodes,expected", [("25%", 8, 2), ("25%", 10, 3), ("100%", 5, 5), ("1%", 8, 1),
                                                    (3, 8, 3)])
def test_counts_are_a_number_or_a_share_rounded_up(written, nodes, expected):
    s = scenario(f"  - {{at: 1, fault: crash, count: {written}, until: 3}}", nodes)
    assert s.timeline[0].params["count"] == expected


def test_partition_groups_as_shares_are_consecutive_blocks():
    s = scenario("  - {at: 1, fault: partition, groups: [50%, 50%], until: 3}", 10)
    assert s.timeline[0].params["groups"] == [[f"n{k}" for k in range(5)], [f"n{k}" for k in range(5, 10)]]
    s = scenario("  - {at: 1, fault: partition, groups: [25%, 25%], until: 3}", 8)
    assert s.timeline[0].params["groups"] == [["n0", "n1"], ["n2", "n3"]]
    # the initial nodes no share covers, and the ones that join later, are one more side
    s = scenario("  - {at: 0.5, op: join}\n  - {at: 1, fault: partition, groups: [25%, 25%], until: 3}", 8)
    assert sides(s.timeline[1].params, s.hosts)[2] == ["n4", "n5", "n6", "n7", "n8"]
    # relative names inside named groups
    s = scenario("  - {at: 1, fault: partition, groups: [[first, n1], [last]], until: 3}", 6)
    assert s.timeline[0].params["groups"] == [["n0", "n1"], ["n5"]]


@pytest.mark.parametrize("steps,nodes,line,field,words", [
    ("  - {at: 1, fault: pause, count: 20, until: 3}", 8, 6, "timeline[0].count",
     "asks for 20 nodes but the scenario has 8 nodes"),
    ("  - {at: 1, op: publish, node: n20}", 16, 6, "timeline[0].node", "unknown node 'n20' (nodes are n0..n15;"),
    ("  - {at: 1, op: publish, node: 100%}", 16, 6, "timeline[0].node", "below 100%"),
    ("  - {at: 1, op: stop, node: [n1, 150%]}", 16, 6, "timeline[0].node[1]", "below 100%"),
    ("  - {at: 1, op: publish, node: 50 %}", 16, 6, "timeline[0].node", "unknown node '50 %'"),
    ("  - {at: 1, fault: crash, count: 0%, until: 3}", 16, 6, "timeline[0].count", "above 0%"),
    ("  - {at: 1, fault: crash, count: many, until: 3}", 16, 6, "timeline[0].count", "a share of them like 25%"),
    ("  - {at: 1, fault: partition, groups: [60%, 50%], until: 3}", 16, 6, "timeline[0].groups", "110%"),
    ("  - {at: 1, fault: partition, groups: [50%, [n9]], until: 3}", 16, 6, "timeline[0].groups[1]", "not a mix"),
    ("  - {at: 1, fault: partition, groups: [50%, 10%], until: 3}", 4, 6, "timeline[0].groups[1]",
     "10% of 4 nodes holds no node"),
    ("  - {at: 1, fault: partition, split: 0.5, until: 3}", 1, 6, "timeline[0]", "at least 2 nodes"),
    ("  - {at: 1, op: publish}\n  - {at: 2, fault: crash, node: last, until: 3}\n"
     "  - {at: 3, inject: forged, target: 90%}", 16, 8, "timeline[2].target", None),
])
def test_errors_are_one_line_naming_file_line_and_field(steps, nodes, line, field, words):
    if words is None:  # a valid one: an injection target may be relative too
        assert scenario(steps, nodes).timeline[2].params["target"] == "n14"
        return
    e = err(steps, nodes)
    assert (e.file, e.line, e.field) == ("s.yaml", line, field), str(e)
    assert words in e.message and "\n" not in str(e)
    assert str(e).startswith(f"s.yaml:{line}: {field}: ")


def test_a_count_may_use_the_hosts_that_join():
    s = scenario("  - {at: 1, op: join, count: 4}\n  - {at: 2, fault: pause, count: 10, until: 3}", 8)
    assert s.timeline[1].params["count"] == 10


def test_a_scaled_down_override_that_cannot_hold_is_refused_naming_the_step():
    s = load("attack.yaml")  # names its targets n1..n7
    with pytest.raises(ScenarioError) as e:
        s.with_overrides(nodes=4)
    assert e.value.file.endswith("attack.yaml") and e.value.line is not None
    assert e.value.field.startswith("timeline[") and "unknown node" in e.value.message


def test_the_runtime_says_when_fewer_nodes_are_live_than_a_count_asks():
    said = []
    picked = select_nodes("random", live=["n1", "n2"], started=["n0", "n1", "n2"], rng=random.Random(1), count=3,
                          say=said.append)
    assert sorted(picked) == ["n1", "n2"] and said and "3" in said[0]


def test_the_cli_scales_and_refuses_in_one_line(tmp_path):
    bad = subprocess.run([sys.executable, "-m", "testbed", "run", "attack.yaml", "--nodes", "4", "--backend", "sim"],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1 and "attack.yaml:" in bad.stderr and "unknown node" in bad.stderr
    out = tmp_path / "run"
    ok = subprocess.run([sys.executable, "-m", "testbed", "run", "partition.yaml", "--nodes", str(SMALL),
                         "--backend", "sim", "--quiet", "--out", str(out)],
                        capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert ok.returncode == 0, ok.stderr[-2000:]
    meta = json.loads((out / "meta.json").read_text())
    assert meta["nodes"] == SMALL
    # the side-B publish (65%) came from the second side of the 50/50 split, as at 32 nodes
    (window,) = [json.loads(x) for x in (out / "faults.jsonl").read_text().splitlines()
                 if json.loads(x)["kind"] == "partition"]
    publishers = [e["node"] for e in map(json.loads, (out / "events.jsonl").read_text().splitlines())
                  if e["kind"] == PUBLISH_OP]
    assert publishers and publishers[-1] in window["groups"][1], (publishers, window["groups"])


def test_a_full_sweep_refuses_a_size_its_scenario_cannot_hold(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text(f"name: s\nfidelity: full\nscenario: {ROOT / 'scenarios' / 'attack.yaml'}\n"
                 "grid:\n  nodes: [16, 4]\nseeds: 1\n")
    with pytest.raises(ScenarioError) as e:
        sweep.load(str(f))
    assert (e.value.line, e.value.field) == (5, "grid.nodes[1]") and "unknown node 'n4'" in e.value.message
    f.write_text(f.read_text().replace("[16, 4]", "[16, 8]"))
    assert sweep.load(str(f))["grid"]["nodes"] == [16, 8]


def test_a_scenario_in_a_subfolder_is_found_by_its_path_under_scenarios(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # not the repository: the project's scenarios/ is searched
    s = load("validation/n16-f2-c05")
    assert s.file.endswith("scenarios/validation/n16-f2-c05.yaml") and s.with_overrides(nodes=SMALL).nodes == SMALL
