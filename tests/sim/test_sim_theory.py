"""The textbook baselines of the dissemination model against their closed forms, over many seeds."""

from __future__ import annotations

import math

import numpy as np
import pytest

from testbed.sim import SimError, disseminate, theory

N = 10_000
SEEDS = range(50)


def test_round_based_push_with_fanout_1_takes_log2_plus_ln_rounds():
    rounds = [disseminate(N, "push", 1, seed=s).t100 for s in SEEDS]
    assert abs(np.mean(rounds) - theory.push_rounds(N)) < 2


@pytest.mark.parametrize("fanout", [2, 3, 4])
def test_infect_and_die_reaches_the_fixed_point_fraction(fanout):
    fractions = [disseminate(N, "infect_and_die", fanout, seed=s).final_fraction for s in SEEDS]
    assert abs(np.mean(fractions) - theory.infect_and_die_fraction(fanout)) < 0.01


def test_closed_forms():
    assert theory.push_rounds(1024) == pytest.approx(10 + math.log(1024))
    for f in (1.5, 2, 3, 4, 10):
        pi = theory.infect_and_die_fraction(f)
        assert 0 < pi < 1 and pi == pytest.approx(1 - math.exp(-f * pi), abs=1e-12)
    assert theory.infect_and_die_fraction(2) == pytest.approx(0.7968121300200199)
    assert theory.infect_and_die_fraction(1) == 0.0
    with pytest.raises(SimError):
        theory.push_rounds(1)


def test_simulated_infect_and_die_follows_the_mean_field_curve_hop_by_hop():
    """The dissemination simulator's forwarding rule, every hop 1 ms, against `theory.infect_and_die_curve`: the
    fraction informed after each hop, averaged over three seeds, within 0.03 of the closed form at every hop."""
    import numpy as np

    from testbed.sim import Constant, disseminate, theory

    for f in (2, 3, 4):
        curve = theory.infect_and_die_curve(10_000, f)
        hops = [np.round(disseminate(10_000, "infect_and_die", fanout=f, seed=s,
                                     latency=Constant(delay_s=0.001)).informed_at / 0.001) for s in range(3)]
        for k, expected in enumerate(curve):
            assert np.mean([np.mean(h <= k) for h in hops]) == pytest.approx(expected, abs=0.03), (f, k)
