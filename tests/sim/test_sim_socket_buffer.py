"""The simulator's socket-buffer model: what waits for a busy process sits in its socket buffer, charged as this
kernel charges it, and what does not fit is dropped and counted (as a namespace's RcvbufErrors)."""

import functools
import json
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType

import pytest

from gossip import NodeConfig
from testbed import scenario as scenario_mod
from testbed.cluster import simulated
from testbed.runner import run_scenario
from testbed.sim import Constant, Simulation
from testbed.sim._engine import skb_truesize, socket_buffer_bytes

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("payload, plain, xdp", [
    # measured with benchmarks/bench_rcvbuf.py (SO_MEMINFO over the datagrams queued), with and without --xdp
    (40, 832, 1075.2), (100, 832, 1075.2), (182, 832, 1280), (197, 832, 1280), (198, 1280, 1280),
    (630, 1280, 1621.3), (645, 1280, 1621.3), (646, 2304, 1621.3), (1372, 2304, 2304), (1430, 2304, 2304),
    (1431, 2304, 4352), (1472, 2304, 4352),
])
def test_truesize_is_what_the_kernel_charged(payload, plain, xdp):
    assert skb_truesize(payload, xdp=False) == plain
    assert skb_truesize(payload, xdp=True) == pytest.approx(xdp, abs=0.1)


def test_a_node_that_cannot_keep_up_overflows_its_buffer_and_the_rest_are_dropped_and_counted():
    # buffer=1: the node asks 2 KiB, the kernel makes it 4 KiB, four heartbeats of 832 B (the fifth would pass it);
    # every process waits 0.2 s to run once idle, while 15 peers send it 4 heartbeats a second each
    config = NodeConfig(cycle_s=0.25, timeout_s=5.0, fanout=3, buffer=1)
    assert socket_buffer_bytes(config) == 4096
    with Simulation(seed=5, config=config, wakeup=Constant(delay_s=0.2)) as sim:
        names = sim.add_nodes(16, seeding="all")
        sim.run_until(6.0)
        stats = {n: sim.socket_stats(n) for n in names}
        arrived = sim.network_stats()["arrived"]
        taken = {n: sim.core(n).stats["packets_in"] for n in names}
    assert all(s["rcvbuf_errors"] > 0 for s in stats.values()), stats
    # every datagram that arrived was either queued in the buffer or dropped at it (no XDP, nobody down)
    assert sum(s["in_datagrams"] + s["rcvbuf_errors"] for s in stats.values()) == arrived
    for n in names:  # what the process read is what was queued, but for the at most four still in the buffer
        assert 0 <= stats[n]["in_datagrams"] - taken[n] <= 4
        # a 0.2 s sleep per batch of at most four: at most ~4 / 0.2 s taken, far fewer than arrived
        assert taken[n] <= 4 * (6.0 / 0.2 + 1)


def _taken(socket_buffer: bool) -> tuple[int, dict | None]:
    config = NodeConfig(cycle_s=0.25, timeout_s=5.0, fanout=3, buffer=1)
    with Simulation(seed=5, config=config, wakeup=Constant(delay_s=0.2), socket_buffer=socket_buffer) as sim:
        names = sim.add_nodes(16, seeding="all")
        sim.run_until(3.0)
        return sum(sim.core(n).stats["packets_in"] for n in names), sim.socket_stats(names[0])


def test_without_the_model_the_queue_is_unbounded():
    (taken, stats), (taken_unbounded, none) = _taken(True), _taken(False)
    assert stats["rcvbuf_errors"] > 0 and none is None
    assert taken_unbounded > 2 * taken


def _events(run_dir: Path) -> list[dict]:
    return [r for r in map(json.loads, (run_dir / "events.jsonl").read_text().splitlines())
            if r["kind"] != "udp_stats"]


def test_a_mirror_of_n16_whose_buffers_never_fill_gives_the_same_events_with_and_without_the_model(
        tmp_path, monkeypatch):
    # the host model as a mirror sets it up (wake-up, shared CPU, handling, XDP), with a run's typical figures
    s = scenario_mod.load(ROOT / "scenarios" / "validation" / "n16-f2-c05.yaml").with_overrides(backend="sim")
    s = replace(s, sim=MappingProxyType({
        "fidelity": "full", "latency": {"kind": "constant", "ms": 0.05},
        "wakeup": {"kind": "exponential", "mean_ms": 0.6, "floor_ms": 0.2},
        "cpu": {"cores": 2, "service_us": 140, "shared": True}, "handling": {"ms": 0.3}}))
    run_scenario(s, tmp_path / "with")
    monkeypatch.setattr(simulated, "Simulation", functools.partial(Simulation, socket_buffer=False))
    run_scenario(s, tmp_path / "without")
    stats = json.loads((tmp_path / "with" / "stats.json").read_text())["nodes"]
    assert all(n["udp"]["rcvbuf_errors"] == 0 and n["udp"]["in_datagrams"] > 0 for n in stats.values())
    assert all("udp" not in n for n in json.loads((tmp_path / "without" / "stats.json").read_text())["nodes"].values())
    with_model, without = _events(tmp_path / "with"), _events(tmp_path / "without")
    assert len(with_model) > 1000
    assert with_model == without
