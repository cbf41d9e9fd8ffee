"""gossip: a gossip node — membership by heartbeat rumors, metadata by rumors and anti-entropy swaps.

The protocol core (`GossipCore`) is sans-IO; `Node` drives it over asyncio UDP or TCP. See README.md and
docs/wire-format.md.
"""

from ._config import NodeConfig
from ._core import GossipCore, MemberInfo, Version
from ._events import (Accepted, Event, HeartbeatsChanged, LeaveSent, MemberAdded, MemberLeft, MemberRefreshed,
                      MemberRemoved, MetadataAdopted, MetadataSent, PacketDropped, Send)
from ._wire import Identity, cluster_id, node_id
from .errors import ConfigError, GossipError, ProtocolError, UsageError

__all__ = [
    "Accepted", "ConfigError", "Event", "GossipCore", "GossipError", "HeartbeatsChanged", "Identity",
    "LeaveSent", "MemberAdded", "MemberInfo", "MemberLeft", "MemberRefreshed", "MemberRemoved", "MetadataAdopted",
    "MetadataSent", "NodeConfig", "PacketDropped", "ProtocolError", "Send", "UsageError", "Version", "cluster_id",
    "node_id",
]
