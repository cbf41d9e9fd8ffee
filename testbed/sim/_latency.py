"""One-way network latency models shared by the full engine and the vectorised dissemination model.

Every model is a frozen description that samples one latency (seconds) from a seeded `random.Random` (the full
engine, one message at a time) or many at once from a `numpy.random.Generator` (the dissemination model).
``min_s`` is the smallest latency the model can produce: the dissemination model uses it as its lookahead, so it
must be a true lower bound. Nothing here keeps state between samples.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np

from ._errors import SimError


class Latency(Protocol):
    """What the engines need from a latency model."""

    @property
    def min_s(self) -> float: ...

    @property
    def mean_s(self) -> float: ...

    def sample(self, rng: random.Random) -> float: ...

    def sample_array(self, gen: np.random.Generator, size: int) -> np.ndarray: ...


def _check_s(value, field: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise SimError(f"{field}: must be a finite number of seconds >= 0, got {value!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Constant:
    """Every message takes exactly ``delay_s``."""

    delay_s: float

    def __post_init__(self) -> None:
        _check_s(self.delay_s, "delay_s")

    @property
    def min_s(self) -> float:
        return float(self.delay_s)

    @property
    def mean_s(self) -> float:
        return float(self.delay_s)

    def sample(self, rng: random.Random) -> float:
        return self.delay_s

    def sample_array(self, gen: np.random.Generator, size: int) -> np.ndarray:
        return np.full(size, float(self.delay_s))


@dataclass(frozen=True, slots=True, kw_only=True)
class Uniform:
    """Uniform on [lo_s, hi_s]."""

    lo_s: float
    hi_s: float

    def __post_init__(self) -> None:
        _check_s(self.lo_s, "lo_s")
        _check_s(self.hi_s, "hi_s")
        if self.hi_s < self.lo_s:
            raise SimError(f"hi_s: must be >= lo_s ({self.lo_s}), got {self.hi_s}")

    @property
    def min_s(self) -> float:
        return float(self.lo_s)

    @property
    def mean_s(self) -> float:
        return (self.lo_s + self.hi_s) / 2

    def sample(self, rng: random.Random) -> float:
        return rng.uniform(self.lo_s, self.hi_s)

    def sample_array(self, gen: np.random.Generator, size: int) -> np.ndarray:
        return gen.uniform(self.lo_s, self.hi_s, size)


@dataclass(frozen=True, slots=True, kw_only=True)
class Exponential:
    """``floor_s`` plus an exponential of mean ``mean_extra_s``: a propagation floor and a queueing tail."""

    mean_extra_s: float
    floor_s: float = 0.0

    def __post_init__(self) -> None:
        _check_s(self.mean_extra_s, "mean_extra_s")
        _check_s(self.floor_s, "floor_s")
        if self.mean_extra_s == 0:
            raise SimError("mean_extra_s: must be > 0 (use Constant for a fixed latency)")

    @property
    def min_s(self) -> float:
        return float(self.floor_s)

    @property
    def mean_s(self) -> float:
        return self.floor_s + self.mean_extra_s

    def sample(self, rng: random.Random) -> float:
        return self.floor_s + rng.expovariate(1.0 / self.mean_extra_s)

    def sample_array(self, gen: np.random.Generator, size: int) -> np.ndarray:
        return self.floor_s + gen.exponential(self.mean_extra_s, size)


@dataclass(frozen=True, slots=True, kw_only=True)
class Empirical:
    """Measured one-way latencies (seconds), drawn uniformly with replacement.

    Feed it the latencies of a testbed run to replay that network's distribution, tail included.
    """

    samples_s: tuple[float, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.samples_s, tuple) or not self.samples_s:
            raise SimError("samples_s: must be a non-empty tuple of seconds")
        for i, s in enumerate(self.samples_s):
            _check_s(s, f"samples_s[{i}]")

    @classmethod
    def of(cls, samples_s: Sequence[float]) -> "Empirical":
        return cls(samples_s=tuple(float(s) for s in samples_s))

    @property
    def min_s(self) -> float:
        return float(min(self.samples_s))

    @property
    def mean_s(self) -> float:
        return math.fsum(self.samples_s) / len(self.samples_s)

    def sample(self, rng: random.Random) -> float:
        s = self.samples_s
        return s[rng.randrange(len(s))]

    def sample_array(self, gen: np.random.Generator, size: int) -> np.ndarray:
        return np.asarray(self.samples_s, dtype=float)[gen.integers(0, len(self.samples_s), size)]


LatencyModel = Constant | Uniform | Exponential | Empirical
DEFAULT_LATENCY = Constant(delay_s=0.001)  # a LAN hop: what both engines use unless told otherwise


def latency_from_spec(spec) -> LatencyModel:
    """A latency model from a scenario file's ``sim.latency`` mapping (milliseconds, as the scenario format spells
    it), a number of seconds (constant), or a model (returned as is).

    Mappings: ``{kind: constant, ms}``, ``{kind: uniform, low_ms, high_ms}``, ``{kind: exponential, mean_ms,
    floor_ms}`` and ``{kind: measured, samples_ms: [...]}``; reading the samples out of a recorded run
    (``run: DIR``) is the caller's job.
    """
    if isinstance(spec, (Constant, Uniform, Exponential, Empirical)):
        return spec
    if isinstance(spec, (int, float)) and not isinstance(spec, bool):
        return Constant(delay_s=float(spec))
    if not hasattr(spec, "get") or "kind" not in spec:
        raise SimError(f"latency: expected seconds or a mapping with 'kind', got {spec!r}")
    kind = spec["kind"]

    def ms(field: str, default=None) -> float:
        value = spec.get(field, default)
        if value is None:
            raise SimError(f"latency ({kind}): {field} is required")
        _check_s(value, field)
        return value / 1000.0

    if kind == "constant":
        return Constant(delay_s=ms("ms"))
    if kind == "uniform":
        return Uniform(lo_s=ms("low_ms"), hi_s=ms("high_ms"))
    if kind == "exponential":
        return Exponential(mean_extra_s=ms("mean_ms"), floor_s=ms("floor_ms", 0.0))
    if kind == "measured":
        samples = spec.get("samples_ms")
        if not samples:
            raise SimError("latency (measured): give samples_ms (load them from the recorded run first)")
        return Empirical.of([x / 1000.0 for x in samples])
    raise SimError(f"latency.kind: must be constant, uniform, exponential or measured, got {kind!r}")
