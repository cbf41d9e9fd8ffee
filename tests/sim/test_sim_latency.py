"""Latency models: bounds, determinism, and the scenario-file spellings."""

from __future__ import annotations

import random

import numpy as np
import pytest

from testbed.sim import Constant, Empirical, Exponential, SimError, Uniform, latency_from_spec

MODELS = [Constant(delay_s=0.002), Uniform(lo_s=0.001, hi_s=0.003), Exponential(mean_extra_s=0.001, floor_s=0.0005),
          Empirical.of([0.001, 0.002, 0.010])]


@pytest.mark.parametrize("model", MODELS)
def test_samples_respect_min_and_mean(model):
    rng, gen = random.Random(1), np.random.default_rng(1)
    one = np.array([model.sample(rng) for _ in range(20_000)])
    many = model.sample_array(gen, 20_000)
    for s in (one, many):
        assert s.min() >= model.min_s
        assert s.mean() == pytest.approx(model.mean_s, rel=0.05)


def test_from_spec_reads_the_scenario_spelling():
    assert latency_from_spec(0.002) == Constant(delay_s=0.002)
    assert latency_from_spec({"kind": "constant", "ms": 2}) == Constant(delay_s=0.002)
    assert latency_from_spec({"kind": "uniform", "low_ms": 1, "high_ms": 2}) == Uniform(lo_s=0.001, hi_s=0.002)
    assert latency_from_spec({"kind": "exponential", "mean_ms": 2, "floor_ms": 0.5}) == \
        Exponential(mean_extra_s=0.002, floor_s=0.0005)
    assert latency_from_spec({"kind": "measured", "samples_ms": [100, 200]}) == Empirical(samples_s=(0.1, 0.2))
    with pytest.raises(SimError, match="kind"):
        latency_from_spec({"kind": "normal"})
    with pytest.raises(SimError, match="samples_ms"):
        latency_from_spec({"kind": "measured", "run": "runs/x"})
    with pytest.raises(SimError, match="hi_s"):
        Uniform(lo_s=0.002, hi_s=0.001)
    with pytest.raises(SimError, match="samples_s"):
        Empirical(samples_s=())
