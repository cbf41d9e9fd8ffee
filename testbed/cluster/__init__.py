"""Clusters a scenario runs on: the `Cluster` interface (`base`), real hosts (`emulated`: netns or Mininet
beneath it) and the simulator (`simulated`). `for_scenario` picks one; the interpreter drives either."""

from __future__ import annotations

from pathlib import Path

from .base import Cluster, Read

__all__ = ["Cluster", "Read", "for_scenario"]


def for_scenario(s, out: Path, *, progress) -> Cluster:
    if s.backend == "sim":
        from .simulated import SimulatedCluster
        return SimulatedCluster(s, out, progress=progress)
    from .emulated import EmulatedCluster
    return EmulatedCluster(s, out, progress=progress)
