"""The full-fidelity simulator: real protocol cores on a virtual network, asserted on whole outcomes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gossip import MemberAdded, NodeConfig
from testbed.sim import Constant, Simulation, SimError, Uniform, first_times

ROOT = Path(__file__).resolve().parents[2]
CONFIG = NodeConfig(fanout=3, cycle_s=1.0, timeout_s=5.0)
N = 64


def converged_cluster(**kwargs) -> Simulation:
    """64 nodes, one seed each (node i knows node (i-1)//2), run until everyone lists everyone."""
    sim = Simulation(seed=kwargs.pop("seed", 7), config=kwargs.pop("config", CONFIG), **kwargs)
    sim.add_nodes(N, seeding="tree")
    sim.run_until(10.0)
    assert sim.membership_converged()
    return sim


def others(names, me):
    return [n for n in names if n != me]


def test_one_seed_each_converges_to_full_membership():
    sim = Simulation(seed=1, config=CONFIG)
    names = sim.add_nodes(N, seeding="tree")
    sim.run_until(10.0)
    assert sim.views() == {name: others(names, name) for name in names}
    added = first_times(sim.events, "member_added")
    assert set(added) == set(names)


def test_publish_reaches_every_node():
    sim = converged_cluster()
    start = sim.time_s
    version = sim.publish("n0", b"hello")
    sim.run_until(start + 5.0)
    assert sim.metadata() == {name: (version, b"hello") for name in sim.node_names}
    adopted = [r for r in sim.events if r["kind"] == "metadata_adopted" and r["version"] == version.seq]
    assert sorted(r["node"] for r in adopted) == sorted(sim.node_names)
    assert {r["via"] for r in adopted} <= {"publish", "rumor", "swap"}


def test_crashed_node_is_removed_by_all_after_the_timeout():
    sim = converged_cluster()
    crashed_at = sim.time_s
    sim.crash("n10")
    sim.run_until(crashed_at + CONFIG.timeout_s + 2 * CONFIG.cycle_s)
    rest = others(sim.node_names, "n10")
    assert sim.views() == {name: others(rest, name) for name in rest}
    removals = [r for r in sim.events if r["kind"] == "member_removed" and r["name"] == "n10"]
    assert sorted(r["node"] for r in removals) == sorted(rest)
    assert all(r["reason"] == "timeout" for r in removals)
    # last heard at most one cycle plus a few hops before the crash; removed timeout_s after that
    for r in removals:
        delay = r["t"] - sim.epoch_s - crashed_at
        assert CONFIG.timeout_s - CONFIG.cycle_s <= delay <= CONFIG.timeout_s + 0.1


def test_restarted_node_rejoins_and_catches_up_on_metadata_by_swap():
    sim = converged_cluster()
    sim.crash("n10")
    sim.run_until(sim.time_s + CONFIG.timeout_s + 2)
    version = sim.publish("n0", b"while n10 was down")
    sim.run_until(sim.time_s + 5)
    restarted_at = sim.time_s
    sim.restart("n10")
    sim.run_until(restarted_at + 10)
    assert sim.membership_converged()
    assert sim.metadata()["n10"] == (version, b"while n10 was down")
    mine = [r for r in sim.events if r["node"] == "n10" and r["kind"] == "metadata_adopted"
            and r["t"] >= sim.epoch_s + restarted_at]
    assert [(r["version"], r["via"]) for r in mine] == [(version.seq, "swap")]


def test_partition_drops_the_other_side_and_heal_reconverges():
    sim = converged_cluster()
    side_a, side_b = sim.node_names[:N // 2], sim.node_names[N // 2:]
    sim.partition(side_a, side_b)
    sim.run_until(sim.time_s + CONFIG.timeout_s + 3)
    expected = {name: others(side_a, name) for name in side_a}
    expected.update({name: others(side_b, name) for name in side_b})
    assert sim.views() == expected
    healed_at = sim.time_s
    sim.heal()
    for _ in range(30):  # node i's only seed is (i-1)//2, so every node of side b has its seed on side a
        sim.run_for(1.0)
        if sim.membership_converged():
            break
    assert sim.membership_converged(), f"not reconverged {sim.time_s - healed_at:.0f} s after heal"
    assert sim.network_stats()["dropped_partition"] > 0


def test_publish_reaches_everyone_at_30_percent_loss_through_anti_entropy():
    sim = converged_cluster()
    sim.set_loss(0.3)
    start = sim.time_s
    version = sim.publish("n3", b"lossy")
    sim.run_until(start + 15)
    assert sim.metadata() == {name: (version, b"lossy") for name in sim.node_names}
    vias = [r["via"] for r in sim.events if r["kind"] == "metadata_adopted" and r["version"] == version.seq]
    assert "swap" in vias  # the rumor alone did not make it everywhere
    assert sim.network_stats()["dropped_loss"] > 0


def test_short_pause_queues_messages_and_nothing_expires_on_resume():
    sim = converged_cluster()
    paused_at = sim.time_s
    sim.pause("n5")
    sim.run_until(paused_at + 3.0)  # shorter than the timeout
    sim.resume("n5")
    sim.run_until(paused_at + 6.0)
    assert sim.membership_converged()
    removed = [r for r in sim.events if r["kind"] == "member_removed" and r["t"] >= sim.epoch_s + paused_at]
    assert removed == []  # n5 processes its queued heartbeats before its overdue timer runs


def test_long_pause_is_a_timeout_then_a_rejoin():
    sim = converged_cluster()
    paused_at = sim.time_s
    sim.pause("n5")
    sim.run_until(paused_at + CONFIG.timeout_s + 2)
    assert all("n5" not in view for name, view in sim.views().items() if name != "n5")
    sim.resume("n5")
    sim.run_until(sim.time_s + 5)
    assert sim.membership_converged()
    assert sim.network_stats()["dropped_paused_overflow"] > 0  # ~190 arrivals a second into a 1024 queue


def test_leave_and_join():
    sim = converged_cluster()
    sim.leave("n7")  # the core's leave, as a node's on SIGTERM: heartbeats off, its LEAVE sent, stopped
    assert [r["kind"] for r in sim.events[-3:]] == ["heartbeats", "leave_sent", "stopped"]
    assert sim.events[-3] | {"t": 0} == {"t": 0, "node": "n7", "running": False, "kind": "heartbeats"}
    left_at = sim.time_s
    sim.run_until(left_at + CONFIG.cycle_s)  # far inside the timeout: everyone dropped n7 on its LEAVE
    about = [r for r in sim.events if r.get("name") == "n7" and r["kind"] in ("member_left", "member_removed")]
    assert sorted(r["node"] for r in about) == sorted(others(sim.live_nodes(), "n7"))
    assert {r["kind"] for r in about} == {"member_left"}
    sim.add_node("late", seeds=["n0"])
    sim.run_until(sim.time_s + CONFIG.timeout_s + 5)
    live = sim.live_nodes()
    assert "n7" not in live and "late" in live
    assert sim.views() == {name: others(live, name) for name in live}


def test_stopped_heartbeats_make_the_node_expire_but_it_keeps_listening():
    sim = converged_cluster()
    sim.stop_heartbeats("n9")
    sim.run_until(sim.time_s + CONFIG.timeout_s + 2)
    views = sim.views()
    assert all("n9" not in v for name, v in views.items() if name != "n9")
    assert len(views["n9"]) == N - 1  # it still hears everyone else
    sim.start_heartbeats("n9")
    sim.run_until(sim.time_s + 3)
    assert sim.membership_converged()


def run_scenario(tmp_path, seed: int, name: str, **kwargs) -> bytes:
    path = tmp_path / f"{name}.jsonl"
    with Simulation(seed=seed, config=CONFIG, latency=Uniform(lo_s=0.0005, hi_s=0.004), events_path=path,
                    **kwargs) as sim:
        sim.add_nodes(32, seeding="tree", stagger_s=0.5)
        sim.run_until(6)
        sim.publish("n1", b"v1")
        sim.set_loss(0.1)
        sim.crash("n20")
        sim.partition(sim.node_names[:10])
        sim.run_until(12)
        sim.heal()
        sim.restart("n20")
        sim.pause("n3")
        sim.run_until(14)
        sim.resume("n3")
        sim.run_until(20)
        sim.write_events(tmp_path / f"{name}.written.jsonl")
    streamed = path.read_bytes()
    assert (tmp_path / f"{name}.written.jsonl").read_bytes() == streamed
    return streamed


def test_same_seed_gives_byte_identical_events_and_another_seed_does_not(tmp_path):
    first = run_scenario(tmp_path, 42, "a")
    assert first == run_scenario(tmp_path, 42, "b")
    assert first != run_scenario(tmp_path, 43, "c")
    kinds = {json.loads(line)["kind"] for line in first.splitlines()}
    assert {"stats", "member_added", "member_removed", "metadata_adopted"} <= kinds


def test_wire_mode_gives_the_same_events_as_message_objects(tmp_path):
    assert run_scenario(tmp_path, 5, "objects") == run_scenario(tmp_path, 5, "wire", wire=True)


def test_wire_mode_drops_a_node_with_the_wrong_secret():
    sim = Simulation(seed=3, config=NodeConfig(secrets=(b"right",)), wire=True)
    names = sim.add_nodes(8, seeding="first")
    sim.add_node("intruder", seeds=["n0"], config=NodeConfig(secrets=(b"wrong",)))
    sim.run_until(8)
    assert sim.views() | {"intruder": []} == {**{n: others(names, n) for n in names}, "intruder": []}
    bad = [r for r in sim.events if r["kind"] == "packet_dropped" and r["reason"] == "bad_mac"]
    assert {r["node"] for r in bad} >= {"n0"}


def test_records_have_the_node_log_format():
    sim = Simulation(seed=1, config=CONFIG, latency=Constant(delay_s=0.002))
    sim.add_nodes(3, seeding="first")
    sim.run_until(2)
    ident = sim.identity("n1")
    expected = MemberAdded(node_id=ident.node_id, name="n1", addr=ident.addr, port=ident.port).to_json()
    rec = next(r for r in sim.events if r["kind"] == "member_added" and r["node"] == "n0" and r["name"] == "n1")
    assert list(rec) == ["t", "node", *expected]  # the node writes {"t", "node", **event.to_json()}
    assert {k: rec[k] for k in expected} == expected
    stats = [r for r in sim.events if r["kind"] == "stats" and r["node"] == "n0"]
    assert [round(r["t"] - sim.epoch_s, 6) for r in stats] == [0.0, 1.0, 2.0]  # one per cycle, from the start
    assert list(stats[-1])[:3] == ["t", "node", "kind"] and stats[-1]["packets_in"] > 0
    # what Node.join writes first (a real node adds its pid), then its seeds
    assert sim.events[:2] == [
        {"t": sim.epoch_s, "node": "n0", "kind": "started", "node_id": sim.identity("n0").node_id,
         "addr": sim.identity("n0").addr, "port": 7946},
        {"t": sim.epoch_s, "node": "n1", "kind": "started", "node_id": ident.node_id, "addr": ident.addr,
         "port": 7946}]
    assert not [r for r in sim.events if r["kind"] == "member_added" and r["name"] == ""]  # seeds: listed once heard
    sim.leave("n2")  # what Node.close writes
    stopped = sim.events[-1]
    assert list(stopped)[:6] == ["t", "node", "kind", "members", "version", "origin"]
    assert stopped["kind"] == "stopped" and stopped["members"] == ["n0", "n1", "n2"]


def test_misuse_is_a_sim_error():
    sim = Simulation(seed=1, config=CONFIG)
    sim.add_nodes(2)
    with pytest.raises(SimError, match="no node named"):
        sim.crash("nope")
    with pytest.raises(SimError, match="is up"):
        sim.restart("n0")
    with pytest.raises(SimError, match="exists"):
        sim.add_node("n0")
    sim.run_until(1)
    with pytest.raises(SimError, match="in the past"):
        sim.run_until(0.5)
    with pytest.raises(SimError, match="loss"):
        sim.set_loss(1.5)


SCRIPT = """
import sys
from gossip import NodeConfig
from testbed.sim import Simulation, Exponential
with Simulation(seed=11, config=NodeConfig(cycle_s=0.5, timeout_s=2.0), latency=Exponential(mean_extra_s=0.001),
                loss=0.05, events_path=sys.argv[1]) as sim:
    sim.add_nodes(16, seeding="first")
    sim.run_until(3)
    sim.partition(["n0", "n1", "n2"])
    sim.publish("n4", b"x")
    sim.run_until(6)
    sim.heal()
    sim.run_until(9)
"""


def test_determinism_does_not_depend_on_the_interpreter_hash_seed(tmp_path):
    out = []
    for hash_seed in ("1", "2"):
        path = tmp_path / f"events-{hash_seed}.jsonl"
        subprocess.run([sys.executable, "-c", SCRIPT, str(path)], check=True, cwd=ROOT,
                       env={**os.environ, "PYTHONHASHSEED": hash_seed})
        out.append(path.read_bytes())
    assert out[0] == out[1] and len(out[0]) > 10_000


def test_ingress_delay_slows_what_reaches_one_node():
    sim = Simulation(seed=2, config=CONFIG, latency=Constant(delay_s=0.001))
    sim.add_nodes(2, seeding="first")
    sim.run_until(3)
    sim.set_ingress_delay("n1", Constant(delay_s=0.25))
    start = sim.time_s
    version = sim.publish("n0", b"slow")
    sim.run_until(start + 0.2)
    assert sim.metadata()["n1"][0] != version
    sim.run_until(start + 0.3)
    assert first_times(sim.events, "metadata_adopted", version=version.seq)["n1"] == \
        pytest.approx(sim.epoch_s + start + 0.251, abs=1e-6)
    sim.set_ingress_delay("n1", None)


def test_fastpath_model_drops_copies_before_the_core_and_changes_no_outcome():
    """With xdp=True duplicates and stale copies stop at each node's fast path (the rules of the XDP program), as
    on a testbed with XDP: the cores see far fewer packets, and membership, metadata and removals are the same."""
    outcomes = {}
    for xdp in (False, True):
        sim = converged_cluster(xdp=xdp)
        version = sim.publish("n5", b"x")
        sim.crash("n9")
        sim.run_until(sim.time_s + CONFIG.timeout_s + 2 * CONFIG.cycle_s)
        core_in = sum(sim.core(n).stats["packets_in"] for n in sim.live_nodes())
        fp = [sim.fastpath_stats(n) for n in sim.live_nodes()]
        outcomes[xdp] = (sim.views(), sim.metadata(), version.seq > 0, core_in, fp)
    (views0, meta0, _, in0, fp0), (views1, meta1, _, in1, fp1) = outcomes[False], outcomes[True]
    assert views1 == views0 and {n: d for n, (_, d) in meta1.items()} == {n: d for n, (_, d) in meta0.items()}
    assert all(f is None for f in fp0)
    dropped = sum(sum(f["dropped"].values()) for f in fp1)
    passed = sum(f["passed"] for f in fp1)
    assert dropped > passed > 0 and {k for f in fp1 for k in f["dropped"]} <= {"duplicate", "stale"}
    assert in1 < 0.6 * in0  # most of the heartbeat traffic never reaches a core
    with pytest.raises(SimError, match="wire=True"):
        Simulation(xdp=True, wire=True)
