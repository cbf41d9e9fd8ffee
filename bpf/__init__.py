"""eBPF acceleration for gossip nodes: an XDP fast path, a TC broadcaster and fault injection.

What a node needs (`FastPathWriter`, `BroadcastSender`, `available`) works without bcc and never compiles; only
the loaders (`FastPath`, `Broadcaster`, `Faults`), used once per testbed, compile C with bcc. Importing this
package imports neither bcc nor pyroute2: the submodules load them when used.
"""

from __future__ import annotations

from ._sys import PIN_ROOT, remove_stale_pins
from ._compile import available
from .errors import AttachError, BpfError, BpfUsageError, CompileError, MapError, UnavailableError

_LAZY = {
    "FastPath": "fastpath", "FastPathWriter": "fastpath",
    "Broadcaster": "broadcaster", "BroadcastSender": "broadcaster",
    "Faults": "faults",
}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'bpf' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f".{module}", __name__), name)


__all__ = ["available", "remove_stale_pins", "PIN_ROOT", "FastPath", "FastPathWriter", "Broadcaster",
           "BroadcastSender", "Faults", "AttachError", "BpfError", "BpfUsageError", "CompileError", "MapError",
           "UnavailableError"]
