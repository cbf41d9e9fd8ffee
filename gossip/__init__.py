"""gossip: a gossip node — membership by heartbeat rumors, metadata by rumors and anti-entropy swaps.

The protocol core (`GossipCore`) is sans-IO; `Node` drives it over asyncio UDP or TCP. See README.md and
docs/wire-format.md.
"""

from ._config import NodeConfig
from ._core import GossipCore, MemberInfo, Version
from ._events import (Accepted, Event, HeartbeatsChanged, LeaveSent, MemberAdded, MemberAlive, MemberLeft,
                      MemberRefreshed, MemberRemoved, MemberSuspected, MetadataAdopted, MetadataSent, PacketDropped,
                      Refuted, Send)
from ._wire import Identity, cluster_id, node_id
from .errors import ConfigError, GossipError, ProtocolError, UsageError

__all__ = [
    "Accepted", "Node", "ConfigError", "Event", "GossipCore", "GossipError", "HeartbeatsChanged", "Identity",
    "LeaveSent", "MemberAdded", "MemberAlive", "MemberInfo", "MemberLeft", "MemberRefreshed", "MemberRemoved",
    "MemberSuspected", "MetadataAdopted", "MetadataSent", "NodeConfig", "PacketDropped", "ProtocolError", "Refuted",
    "Send", "UsageError", "Version", "cluster_id", "node_id",
]


def __getattr__(name: str):
    # `Node` (asyncio, sockets) is loaded on first use: the testbed and the simulator import this package for the
    # protocol core and `NodeConfig` only, and should not pay for the asyncio driver they never run
    if name == "Node":
        from ._node import Node
        return Node
    raise AttributeError(f"module 'gossip' has no attribute {name!r}")
