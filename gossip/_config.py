"""Node configuration: every knob with its unit in the name, validated on construction.

A bad value raises `ConfigError` naming the field, so a CLI flag, an HTTP call or a scenario file can report
exactly what is wrong.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError

PROTOCOLS = ("udp", "tcp")
LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeConfig:
    """How a node gossips. Times are seconds; sizes are bytes or entries as named."""

    fanout: int = 3
    cycle_s: float = 1.0
    timeout_s: float = 5.0
    buffer: int = 1024
    max_packet_bytes: int = 1400
    secrets: tuple[bytes, ...] = (b"",)
    cluster: str = "gossip"
    protocol: str = "udp"  # the transport
    membership: str = "heartbeat"  # the membership protocol: a name in `gossip.protocols`, or MODULE:NAME
    listen_addr: str = "127.0.0.1"
    listen_port: int = 7946
    log_level: str = "info"
    state_dir: str | None = None  # where the adopted metadata and the HLC mark are kept durably (None: memory)
    # the membership protocol's own settings, checked against its OPTIONS (a mapping is taken; kept as sorted pairs)
    options: tuple[tuple[str, Any], ...] = ()
    # let the kernel's heartbeat plane (bpf/tc_hbplane.c) take fresh heartbeats: needs the XDP fast path, membership
    # heartbeat and UDP; where it cannot be had the node says so once and handles them itself, with the same result
    kernel_heartbeats: bool = False

    def __post_init__(self) -> None:
        _check(self.fanout, "fanout", int, 1, 1024)
        _check(self.cycle_s, "cycle_s", (int, float), 0.001, 3600.0)
        _check(self.timeout_s, "timeout_s", (int, float), 0.001, 86400.0)
        if self.timeout_s <= self.cycle_s:
            raise ConfigError("timeout_s", f"must exceed cycle_s ({self.cycle_s}), got {self.timeout_s}")
        _check(self.buffer, "buffer", int, 1, 1 << 20)
        _check(self.max_packet_bytes, "max_packet_bytes", int, 576, 65507)
        if not isinstance(self.secrets, tuple) or not self.secrets or \
                not all(isinstance(s, bytes) and len(s) <= 64 for s in self.secrets):
            raise ConfigError("secrets", "must be a non-empty tuple of byte strings of at most 64 bytes each")
        if not isinstance(self.cluster, str) or not self.cluster:
            raise ConfigError("cluster", "must be a non-empty string")
        if self.protocol not in PROTOCOLS:
            raise ConfigError("protocol", f"must be one of {', '.join(PROTOCOLS)}, got {self.protocol!r}")
        # imported here: the registry's built-in protocols import this module
        from .protocols import _registry
        try:
            factory = _registry.factory(self.membership)
        except _registry.UnknownProtocol as e:
            raise ConfigError("membership", str(e)) from None
        try:
            object.__setattr__(self, "options", _registry.check_options(factory, self.options))
        except _registry.UnknownOption as e:
            raise ConfigError(e.field if e.field != "options." else "options",
                              f"{e} (membership {self.membership})") from None
        try:
            ipaddress.IPv4Address(self.listen_addr)
        except (ipaddress.AddressValueError, ValueError):
            raise ConfigError("listen_addr", f"must be an IPv4 address, got {self.listen_addr!r}") from None
        _check(self.listen_port, "listen_port", int, 1, 65535)
        if self.log_level not in LOG_LEVELS:
            raise ConfigError("log_level", f"must be one of {', '.join(LOG_LEVELS)}, got {self.log_level!r}")
        if self.state_dir is not None and (not isinstance(self.state_dir, str) or not self.state_dir
                                           or "\0" in self.state_dir):
            raise ConfigError("state_dir", f"must be a directory path (a non-empty string), got {self.state_dir!r}")

        if not isinstance(self.kernel_heartbeats, bool):
            raise ConfigError("kernel_heartbeats", f"must be true or false, got {self.kernel_heartbeats!r}")

    def option(self, name: str) -> Any:
        """The value of the membership protocol's option NAME: the one given, else the protocol's default."""
        for key, value in self.options:
            if key == name:
                return value
        from .protocols import _registry
        known = _registry.options_of(_registry.factory(self.membership))
        if name not in known:
            raise KeyError(f"{name!r} is not an option of membership {self.membership!r}")
        return known[name].default


def _check(value, field: str, types, lo, hi) -> None:
    if isinstance(value, bool) or not isinstance(value, types):
        raise ConfigError(field, f"must be a number, got {value!r}")
    if not lo <= value <= hi:
        raise ConfigError(field, f"must be in [{lo}, {hi}], got {value!r}")
