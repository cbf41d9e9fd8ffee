"""testbed.sim: simulate gossip clusters without root, sockets or wall-clock time.

Two fidelities:

- `Simulation` drives one real `gossip.GossipCore` per node on a virtual clock and network (latency models,
  loss, partitions, crashes, pauses) and records the same events a real node writes. Exact, and O(N^2)
  messages per cycle: ~12 s per cycle at 500 nodes, ~5 min at 2000.
- `disseminate` models the spread of ONE rumor over fixed membership views with numpy: the project's forwarding
  rule and two textbook baselines, up to millions of nodes.

`theory` holds the closed forms the baselines are checked against; `compare_with_engine` checks the model's
protocol variant against the real cores.
"""

from . import theory
from ._dissemination import VARIANTS, DisseminationResult, disseminate
from ._engine import EPOCH_S, KindCost, Simulation, first_times
from ._errors import SimError
from ._latency import (DEFAULT_LATENCY, Constant, Empirical, Exponential, Latency, LatencyModel, Uniform,
                       latency_from_spec)
from ._validate import Comparison, compare_with_engine

__all__ = [
    "DEFAULT_LATENCY", "EPOCH_S", "VARIANTS", "Comparison", "Constant", "DisseminationResult", "Empirical",
    "Exponential", "KindCost", "Latency", "LatencyModel", "SimError", "Simulation", "Uniform", "compare_with_engine",
    "disseminate", "first_times", "latency_from_spec", "theory",
]
