"""The parity suite (`pytest -m parity`): every shipped scenario, scaled to 16-32 nodes, runs on netns and on the
simulator, and the two must tell the same story:

- the same checks pass (and the same ones are unknown);
- the rumors' median t90 agrees within two cycles, each rumor's within four;
- a partition cuts exactly the pairs across its sides on both (no heartbeat accepted across, some within);
- loss drops the configured fraction of what crossed the network during its window on both (binomial bounds),
  per direction on the testbed;
- counters add up on both: what the network delivered is what was sent minus what it lost, up to the messages
  in flight when the counters were read.

Needs root (namespaces, BPF, node processes), like the scenario suite.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from testbed import analysis
from testbed.net.cleanup import find_leftovers
from testbed.runner import run_scenario

from _shared import SIZES, parity_scenario

pytestmark = [pytest.mark.parity, pytest.mark.root, pytest.mark.netns, pytest.mark.bpf, pytest.mark.slow]


@pytest.fixture(scope="module")
def runs(shared_run):
    """NAME -> (its parity scenario, {backend: (summary, run_dir)}), each run shared with the scenario suite."""
    def get(name: str):
        base = parity_scenario(name)
        return base, {backend: shared_run(base.with_overrides(backend=backend)) for backend in ("netns", "sim")}
    return get


def _verdicts(summary: dict) -> dict:
    return {c["name"]: c["passed"] for c in summary["checks"]}


def _binomial_ok(lost: int, n: int, p: float, sigmas: float = 4.0) -> bool:
    return n > 0 and abs(lost - n * p) <= sigmas * math.sqrt(n * p * (1 - p)) + 1


def _cross_and_within(run_dir: Path, groups: list[list[str]], t0: float, t1: float) -> tuple[int, int]:
    h = analysis.load_history(run_dir)
    side = {n: i for i, g in enumerate(groups) for n in g}
    names = {e["node_id"]: e["node"] for e in h.of_kind("started")}
    cross = within = 0
    for e in h.of_kind("member_refreshed"):
        if t0 < e["t"] < t1:
            a, b = side.get(e["node"]), side.get(names.get(e["node_id"]))
            if a is not None and b is not None:
                cross += a != b
                within += a == b
    return cross, within


def _windows(run_dir: Path, kind: str) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "faults.jsonl").read_text().splitlines()
            if json.loads(line)["kind"] == kind]


@pytest.mark.parametrize("name", sorted(SIZES))
def test_same_story_on_netns_and_sim(runs, name):
    s, out = runs(name)
    (tb, tb_dir), (sim, sim_dir) = out["netns"], out["sim"]
    cycle = float(s.node["cycle_s"])
    # the same checks pass, fail or cannot judge
    assert _verdicts(tb) == _verdicts(sim), (tb["checks"], sim["checks"])
    assert tb["passed"] and sim["passed"], (tb["checks"], sim["checks"])
    # the rumors' median t90 within two cycles (plus 0.1 s: a real node's timer and wake-up are not exact, and a
    # rumor that needs anti-entropy completes on some node's swap, a cycle or two after the publish), and each
    # rumor's within four: under loss one rumor's t90 is one draw of a two-humped distribution (the push reached
    # 90 %, or a swap a few cycles later had to), so two single draws may differ by more than a median may
    assert len(tb["rumors"]) == len(sim["rumors"])
    t90s = []
    for a, b in zip(tb["rumors"], sim["rumors"]):
        assert (a["t90"] is None) == (b["t90"] is None)
        if a["t90"] is not None:
            assert abs(a["t90"] - b["t90"]) <= 4 * cycle + 0.1, (a, b)
            t90s.append((a["t90"], b["t90"]))
    if t90s:
        median = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
        tb_med, sim_med = median([a for a, _ in t90s]), median([b for _, b in t90s])
        assert abs(tb_med - sim_med) <= 2 * cycle + 0.1, (tb_med, sim_med, t90s)
    # a partition cuts the same pairs on both
    for backend, d in (("netns", tb_dir), ("sim", sim_dir)):
        for w in _windows(d, "partition"):
            cross, within = _cross_and_within(d, w["groups"], w["start"] + 0.05, w["end"])
            assert cross == 0 and within > 0, (backend, cross, within)


@pytest.mark.parametrize("name", sorted(SIZES))
def test_counters_add_up(runs, name):
    _, out = runs(name)
    (_, tb_dir), (_, sim_dir) = out["netns"], out["sim"]
    # the simulator: every message sent arrived, was dropped by the network, or is still in flight
    net = json.loads((sim_dir / "stats.json").read_text())["network"]
    accounted = net["arrived"] + sum(net.get(f"dropped_{k}", 0) for k in ("loss", "partition", "unknown"))
    assert 0 <= net["sent"] - accounted <= 0.01 * net["sent"] + 100, net
    assert net["delivered"] <= net["arrived"]
    # the testbed: what reached the nodes is what they sent minus what the network dropped, and what the nodes
    # say they sent is what left their interfaces
    stats = json.loads((tb_dir / "stats.json").read_text())
    net = stats["network"]
    sent, delivered = net["from_node_passed"], net["to_node_passed"]
    assert net["from_node_seen"] - net["from_node_dropped_loss"] == sent
    lost_on_the_way = (net["to_node_dropped_loss"] + net["to_node_dropped_partition"]
                       + net.get("bridge_dropped_partition", 0))
    injected = sum(e["count"] for e in analysis.load_history(tb_dir).of_kind(analysis.INJECTED))
    assert abs((sent + injected - lost_on_the_way) - delivered) <= 0.01 * sent + 100, net
    # each node that ran once: the datagrams it says it sent are what left its interface (a restarted node's
    # counters start again from zero, the interface's do not)
    starts: dict[str, int] = {}
    for e in analysis.load_history(tb_dir).of_kind("started"):
        starts[e["node"]] = starts.get(e["node"], 0) + 1
    once = [n for n in stats["nodes"] if starts.get(n) == 1]
    assert once
    for n in once:
        node, wire = stats["nodes"][n]["packets_out"], stats["nodes"][n]["faults"]["from_node_seen"]
        assert abs(node - wire) <= 0.01 * node + 20, (n, node, wire)


def test_loss_rate_is_the_configured_one_on_both(runs):
    s, out = runs("loss")
    (step,) = [st for st in s.timeline if st.action == "loss"]
    p = float(step.params["rate"])
    for backend in ("netns", "sim"):
        (w,) = _windows(out[backend][1], "loss")
        a, b = w["network_start"], w["network_end"]
        if backend == "sim":
            crossed = (b["sent"] - a["sent"]) - (b.get("dropped_unknown", 0) - a.get("dropped_unknown", 0))
            lost = b.get("dropped_loss", 0) - a.get("dropped_loss", 0)
            assert _binomial_ok(lost, crossed, p), (backend, lost, crossed)
        else:
            # `node: all`: each packet is judged once, on its way to the receiver; none on its way out
            crossed = b["to_node_seen"] - a["to_node_seen"]
            lost = b["to_node_dropped_loss"] - a["to_node_dropped_loss"]
            assert _binomial_ok(lost, crossed, p), (backend, lost, crossed)
            assert b["from_node_dropped_loss"] == a["from_node_dropped_loss"]


# the suite's share of the netns time; every scenario runs with swim on the simulator in test_membership.py
SWIM_PARITY = ("attack", "loss", "partition")


@pytest.mark.parametrize("name", SWIM_PARITY)
def test_swim_tells_the_same_story_on_netns_and_sim(name, tmp_path):
    base = parity_scenario(name).with_overrides(node={"membership": "swim", "options": {}})
    got = {}
    for backend in ("netns", "sim"):
        summary = run_scenario(base.with_overrides(backend=backend), tmp_path / backend)
        got[backend] = summary
        if backend == "netns":
            meta = json.loads((tmp_path / backend / "meta.json").read_text())
            assert meta["membership"] == "swim" and find_leftovers(meta["run_id"]).empty
    tb, sim = got["netns"], got["sim"]
    a, b = _verdicts(tb), _verdicts(sim)
    assert a == b and all(v is not False for v in a.values()), (tb["checks"], sim["checks"])
    assert sim["passed"], sim["checks"]
    cycle = float(base.node["cycle_s"])
    pairs = [(a["t90"], b["t90"]) for a, b in zip(tb["rumors"], sim["rumors"]) if a["t90"] is not None
             and b["t90"] is not None]
    assert len(tb["rumors"]) == len(sim["rumors"]) and len(pairs) == len(tb["rumors"])
    median = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
    assert abs(median([a for a, _ in pairs]) - median([b for _, b in pairs])) <= 2 * cycle + 0.1, pairs
