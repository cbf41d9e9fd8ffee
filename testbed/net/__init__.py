"""The emulated network beneath the real-host cluster: topologies, namespaces or Mininet hosts, and cleanup.

`topology` describes a network (pure data), `base` holds the `Network` interface and the helpers both backends
build hosts with, `netns` and `mininet` are the two backends (neither imports the other), `shell` runs the few
commands netlink does not cover, `cleanup` finds and removes what a killed run left behind, `delay` and `inject`
are the packet-level fault mechanisms real hosts need.
"""

from __future__ import annotations

from typing import Any

from ..errors import DeployError, TopologyError
from .topology import Topology, new_run_id

__all__ = ["Host", "Network", "Topology", "make_network", "new_run_id"]


def __getattr__(name: str) -> Any:
    # `base` imports pyroute2; the delay handler process (`python -m testbed.net.delay`) never needs it
    if name in ("Host", "Network"):
        from . import base
        return getattr(base, name)
    raise AttributeError(name)


def make_network(backend: str, topology: Topology, run_id: str, **kwargs: Any) -> "Network":
    """A not-yet-started network of BACKEND ("netns" or "mininet") for TOPOLOGY; enter it to bring it up."""
    from .base import BACKENDS
    if backend == "netns":
        from .netns import NetnsNetwork
        return NetnsNetwork(topology, run_id, **kwargs)
    if backend == "mininet":
        try:
            from .mininet import MininetNetwork  # imports Mininet: only when asked for
        except ModuleNotFoundError as exc:
            raise DeployError(f"the mininet backend needs Debian's mininet package: {exc}") from exc
        return MininetNetwork(topology, run_id, **kwargs)
    raise TopologyError("backend", f"{backend!r} is not one of {', '.join(BACKENDS)}")
