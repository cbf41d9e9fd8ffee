"""The gossip package's error hierarchy.

Two families, as in h11: `UsageError` is raised when the caller misuses the API (a bad config value, data too big
to publish); `ProtocolError` describes garbage a *peer* sent. A `ProtocolError` never escapes to the event loop: the
core catches it, counts the packet under its `reason` and drops it.
"""

from __future__ import annotations


class GossipError(Exception):
    """Base class of every error this package raises."""


class UsageError(GossipError, ValueError):
    """The caller passed something invalid (a config field, a node, data too large)."""


class ConfigError(UsageError):
    """A configuration field is invalid; the message names the field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class ProtocolError(GossipError):
    """A peer sent bytes that are not a valid message; `reason` is the drop counter it is counted under."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
