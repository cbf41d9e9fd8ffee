"""The vectorised dissemination model: determinism, its bookkeeping, and the protocol rule against the engine."""

from __future__ import annotations

import numpy as np
import pytest

from testbed.sim import Constant, Empirical, Exponential, SimError, Uniform, compare_with_engine, disseminate


@pytest.mark.parametrize("variant", ["protocol", "infect_and_die", "push"])
def test_same_seed_same_spread(variant):
    a = disseminate(5000, variant, 3, Uniform(lo_s=0.001, hi_s=0.003), loss=0.05, seed=9)
    b = disseminate(5000, variant, 3, Uniform(lo_s=0.001, hi_s=0.003), loss=0.05, seed=9)
    c = disseminate(5000, variant, 3, Uniform(lo_s=0.001, hi_s=0.003), loss=0.05, seed=10)
    assert np.array_equal(a.informed_at, b.informed_at) and a.messages_sent == b.messages_sent
    assert not np.array_equal(a.informed_at, c.informed_at)


@pytest.mark.parametrize("variant", ["protocol", "infect_and_die"])
def test_message_bookkeeping(variant):
    r = disseminate(20_000, variant, 3, Constant(delay_s=0.001), loss=0.1, seed=1)
    received = r.messages_sent - r.messages_lost
    assert received == (r.informed - 1) + r.duplicates  # every copy that arrives is accepted once or dropped
    assert r.messages_sent == 3 * r.informed  # every holder forwards once, to 3 (plenty of peers left)
    assert r.messages_lost == pytest.approx(0.1 * r.messages_sent, rel=0.05)
    hops = np.round(r.informed_at[np.isfinite(r.informed_at)] / 0.001)
    assert np.allclose(r.informed_at[np.isfinite(r.informed_at)], hops * 0.001)  # constant latency: hop counts
    assert r.max_hops == hops.max()


def test_protocol_rule_never_sends_to_the_infected_set_it_carries():
    # 7 nodes, fanout 3: the origin sends to 3 (infected set: 4 nodes); each of those has exactly the 3 others
    # left and sends to all of them with a set covering everyone; they accept one copy each and send nothing.
    # Infect-and-die would send 21.
    for seed in range(20):
        r = disseminate(7, "protocol", 3, Constant(delay_s=0.001), seed=seed)
        assert (r.informed, r.messages_sent, r.duplicates, r.max_hops) == (7, 3 + 3 * 3, 6, 2)
        r = disseminate(5, "protocol", 3, Constant(delay_s=0.001), seed=seed)
        assert (r.informed, r.messages_sent, r.duplicates) == (5, 3 + 3 * 1, 2)


def test_views_limit_whom_a_node_can_reach():
    r = disseminate(50_000, "protocol", 3, view_size=20, seed=2)
    assert 0.9 < r.final_fraction < 0.97
    tiny = disseminate(50, "push", 1, view_size=1, seed=2, max_rounds=200)  # a random functional graph
    assert tiny.steps == 200 or tiny.final_fraction == 1.0


@pytest.mark.parametrize("latency", [Exponential(mean_extra_s=0.002), Exponential(mean_extra_s=0.002, floor_s=0.001),
                                     Empirical.of([0.0004, 0.0005, 0.0009, 0.004])])
def test_latency_models_give_the_same_coverage(latency):
    r = disseminate(20_000, "protocol", 3, latency, seed=4)
    assert 0.93 < r.final_fraction < 0.96  # coverage does not depend on timing, only who-gets-what-first
    assert r.t50 < r.t90


def test_coverage_curve_and_summary():
    r = disseminate(10_000, "protocol", 3, Constant(delay_s=0.002), seed=3)
    t, frac = r.coverage(points=50)
    assert len(t) <= 50 and np.all(np.diff(t) >= 0) and np.all(np.diff(frac) > 0)
    assert frac[-1] == pytest.approx(r.final_fraction)
    assert r.t100 is None and r.t50 <= r.t90
    rounds, frac = disseminate(10_000, "push", 1, seed=3).coverage()
    assert list(rounds) == list(range(len(rounds))) and frac[-1] == 1.0 and np.all(np.diff(frac) >= 0)
    assert set(r.summary()) >= {"t50", "t90", "t100", "messages_sent", "final_fraction"}


def test_bad_arguments():
    with pytest.raises(SimError, match="variant"):
        disseminate(10, "flood")
    with pytest.raises(SimError, match="loss"):
        disseminate(10, loss=2)


def test_protocol_rule_matches_the_real_cores():
    """The model's protocol variant against 300 real cores: same coverage, messages and timing."""
    c = compare_with_engine(300, fanout=3, latency=Uniform(lo_s=0.001, hi_s=0.003), engine_runs=8,
                            model_runs=40, seed=1)
    s = c.summary()
    assert s["engine_final_fraction"] == pytest.approx(s["model_final_fraction"], abs=0.02)
    assert s["engine_messages"] == pytest.approx(s["model_messages"], rel=0.03)
    assert s["max_abs_diff_s"] < 0.0006  # a third of a mean hop, on curves 5 .. 12 ms long


# ---- anti-entropy -------------------------------------------------------------------------------------------------

def test_anti_entropy_reaches_every_node_and_only_adds_to_the_rumor():
    lat = Uniform(lo_s=0.001, hi_s=0.003)
    off = disseminate(5000, "protocol", 3, lat, loss=0.1, seed=6)
    on = disseminate(5000, "protocol", 3, lat, loss=0.1, seed=6, anti_entropy_s=0.5)
    assert off.t100 is None and off.final_fraction < 1  # the rule alone misses nodes
    assert on.final_fraction == 1.0 and on.t100 >= on.t90 > 0
    # the same rumor first (same seed, same messages), then swaps: nobody is informed later than without them
    assert on.messages_sent == off.messages_sent and np.all(on.informed_at <= off.informed_at)
    assert on.repaired >= off.n - off.informed and on.repaired == int((on.informed_at < off.informed_at).sum())
    assert on.t100 > 0.5 * 0.1  # the missed nodes wait for a swap, not for a rumor hop
    assert on.cycles >= 1 and 0 < on.swap_requests <= on.cycles * on.n
    assert set(on.summary()) >= {"anti_entropy_s", "cycles", "swap_requests", "swap_responses", "repaired"}
    again = disseminate(5000, "protocol", 3, lat, loss=0.1, seed=6, anti_entropy_s=0.5)
    other = disseminate(5000, "protocol", 3, lat, loss=0.1, seed=7, anti_entropy_s=0.5)
    assert np.array_equal(on.informed_at, again.informed_at) and on.swap_responses == again.swap_responses
    assert not np.array_equal(on.informed_at, other.informed_at)


def test_anti_entropy_without_loss_pulls_and_pushes_in_one_or_two_cycles():
    # push-pull from ~94 % informed: a node stays uninformed through a cycle with probability ~ x^2 / e
    for seed in range(5):
        r = disseminate(20_000, "protocol", 3, seed=seed, anti_entropy_s=1.0)
        assert r.final_fraction == 1.0 and r.cycles <= 3 and r.t100 < 3.0
        assert r.swap_responses > 0  # some missed nodes pulled the rumor: the answers are counted


def test_anti_entropy_over_views_and_its_limits():
    r = disseminate(3000, "protocol", 3, seed=2, view_size=8, anti_entropy_s=1.0)
    assert r.final_fraction == 1.0
    stuck = disseminate(200, "protocol", 3, seed=2, loss=0.999, anti_entropy_s=1.0, max_cycles=5)
    assert stuck.t100 is None and stuck.cycles == 5 and stuck.swap_requests == 5 * 200
    assert disseminate(200, "protocol", 3, seed=2, anti_entropy_s=0).anti_entropy_s is None  # 0: off
    with pytest.raises(SimError, match="anti_entropy_s"):
        disseminate(100, "infect_and_die", 3, anti_entropy_s=1.0)
    with pytest.raises(SimError, match="anti_entropy_s"):
        disseminate(100, "protocol", 3, anti_entropy_s=-1.0)
    with pytest.raises(SimError, match="max_cycles"):
        disseminate(100, "protocol", 3, anti_entropy_s=1.0, max_cycles=0)


def test_anti_entropy_matches_the_real_cores_swaps():
    """t100 of the model's protocol + anti-entropy against 300 real cores that swap every second.

    The cores start one after another over a cycle (so their swap timers have spread phases, as the model
    assumes), stop their heartbeats (fixed full views), and each rumor is published at a random point of a cycle.
    """
    from gossip import NodeConfig
    from testbed.sim import Simulation

    n, lat = 300, Constant(delay_s=0.001)
    sim = Simulation(seed=5, config=NodeConfig(fanout=3, cycle_s=1.0, timeout_s=86400.0), latency=lat,
                     record_kinds=("metadata_adopted",), record_stats=False)
    names = sim.add_nodes(n, seeding="all", stagger_s=1.0)
    sim.run_until(1.2)
    for name in names:
        sim.stop_heartbeats(name)
    sim.run_until(3.0)
    index = {name: i for i, name in enumerate(names)}
    offsets = np.random.default_rng(0).random(30)
    t100, repaired = [], []
    for r, offset in enumerate(offsets):
        start = sim.time_s + offset
        sim.run_until(start)
        version = sim.publish(names[(r * 7919) % n], f"rumor {r}".encode())
        sim.run_until(start + 12)
        times = np.full(n, np.inf)
        swaps = 0
        for rec in sim.events:
            if (rec["version"], rec["origin"]) == (version.seq, version.origin):
                times[index[rec["node"]]] = rec["t"] - sim.epoch_s - start
                swaps += rec.get("via") == "swap"
        sim.events.clear()
        assert np.isfinite(times).all()
        t100.append(times.max())
        repaired.append(swaps)
    model = [disseminate(n, "protocol", 3, lat, seed=s, anti_entropy_s=1.0) for s in range(200)]
    assert np.mean(t100) == pytest.approx(np.mean([m.t100 for m in model]), abs=0.1)  # ~0.9 s on both sides
    assert np.mean(repaired) == pytest.approx(np.mean([m.repaired for m in model]), rel=0.25)
