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
