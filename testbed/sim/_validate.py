"""Check the dissemination model's ``"protocol"`` variant against the real protocol cores of the full engine.

Both sides spread one metadata rumor over full, fixed membership with the same fanout and latency model. The
engine runs every node's `GossipCore` with heartbeats stopped and a cycle of an hour, so membership cannot change
and no anti-entropy swap happens while the rumor spreads: what is left is exactly the forwarding rule the model
claims to reproduce. Curves are compared as the time to reach each coverage fraction, averaged over runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gossip import NodeConfig

from ._dissemination import DisseminationResult, disseminate
from ._engine import Simulation
from ._errors import SimError
from ._latency import DEFAULT_LATENCY, LatencyModel

FRACTIONS = np.round(np.arange(0.05, 0.851, 0.05), 2)  # below the ~0.94 a fanout-3 rumor reaches on its own


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class Comparison:
    """Engine and model runs of the same rumor. ``engine_informed_at[r][i]``: when node i got rumor r (seconds
    after its publish, ``inf`` if never)."""

    n: int
    fanout: int
    engine_informed_at: list[np.ndarray]
    engine_messages: list[int]
    model: list[DisseminationResult]

    def _curve(self, informed: list[np.ndarray]) -> np.ndarray:
        """Mean time to reach each of FRACTIONS (nan where a run never got there)."""
        out = []
        for times in informed:
            s = np.sort(times)
            idx = np.ceil(FRACTIONS * self.n).astype(int) - 1
            out.append(np.where(idx < np.isfinite(s).sum(), s[np.minimum(idx, s.size - 1)], np.nan))
        return np.nanmean(np.array(out), axis=0)

    def engine_curve(self) -> np.ndarray:
        return self._curve(self.engine_informed_at)

    def model_curve(self) -> np.ndarray:
        return self._curve([r.informed_at for r in self.model])

    def summary(self) -> dict:
        """Mean final coverage, messages per rumor and the time-to-fraction curves of both sides."""
        e_final = float(np.mean([np.isfinite(t).mean() for t in self.engine_informed_at]))
        m_final = float(np.mean([r.final_fraction for r in self.model]))
        e_curve, m_curve = self.engine_curve(), self.model_curve()
        return {"n": self.n, "fanout": self.fanout, "engine_runs": len(self.engine_informed_at),
                "model_runs": len(self.model), "engine_final_fraction": e_final, "model_final_fraction": m_final,
                "engine_messages": float(np.mean(self.engine_messages)),
                "model_messages": float(np.mean([r.messages_sent for r in self.model])),
                "fractions": FRACTIONS.tolist(), "engine_time_to": e_curve.tolist(),
                "model_time_to": m_curve.tolist(),
                "max_abs_diff_s": float(np.nanmax(np.abs(e_curve - m_curve)))}


def compare_with_engine(n: int, *, fanout: int = 3, latency: LatencyModel = DEFAULT_LATENCY,
                        engine_runs: int = 5, model_runs: int = 20, seed: int = 0) -> Comparison:
    """Spread ENGINE_RUNS rumors through the full engine (one cluster of N real cores, a rumor from a different
    node each time) and MODEL_RUNS through `disseminate(..., "protocol")`, and return both.

    Costs O(n^2) memory and time in the engine for the full views: at n = 2000, ~45 s and 1.4 GB for 10 engine
    and 40 model runs.
    """
    if n < 2 or engine_runs < 1 or model_runs < 1:
        raise SimError("compare_with_engine: needs n >= 2 and at least one run on each side")
    config = NodeConfig(fanout=fanout, cycle_s=3600.0, timeout_s=86400.0)
    sim = Simulation(seed=seed, config=config, latency=latency, record_kinds=("metadata_adopted",),
                     record_stats=False)
    names = sim.add_nodes(n, seeding="all")
    for name in names:  # before their first tick: membership stays exactly the seeded full views
        sim.stop_heartbeats(name)
    sim.run_until(1.0)
    horizon_s = max(1.0, 200 * latency.mean_s)
    index = {name: i for i, name in enumerate(names)}
    informed, messages = [], []
    for r in range(engine_runs):
        origin = names[(r * 7919) % n]
        sent_before = sum(sim.core(x).stats["sent_metadata"] for x in names)
        start = sim.time_s
        version = sim.publish(origin, f"rumor {r}".encode())
        sim.run_until(start + horizon_s)
        times = np.full(n, np.inf)
        for rec in sim.events:
            if rec["version"] == version.seq and rec["origin"] == version.origin:
                times[index[rec["node"]]] = rec["t"] - sim.epoch_s - start
        informed.append(times)
        messages.append(sum(sim.core(x).stats["sent_metadata"] for x in names) - sent_before)
        sim.events.clear()
    model = [disseminate(n, "protocol", fanout, latency, seed=seed * 100_003 + r) for r in range(model_runs)]
    return Comparison(n=n, fanout=fanout, engine_informed_at=informed, engine_messages=messages, model=model)
