"""Membership protocols as plug-ins: one sans-IO interface (`Protocol`) and a registry of named factories.

Everything that runs a protocol core -- the shared driver (`gossip._driver`), the asyncio node (`gossip._node`,
and through it the HTTP API), the simulator (`testbed.sim`), the testbed's simulated cluster and the replay tool
(`gossip._replay`) -- makes it with `create` from ``config.membership`` and calls nothing on it but what
`Protocol` lists. None of them names a protocol class.

The protocol is chosen by `NodeConfig.membership` (CLI ``--membership``, a scenario's ``node: {membership: ...}``):

- a built-in name: ``heartbeat`` (`gossip._core.GossipCore`: heartbeat rumors; the default) or ``antientropy``
  (`gossip.protocols.antientropy`: the heartbeat table gossiped whole, metadata by swaps only);
- ``MODULE:NAME`` for a protocol of your own: MODULE is imported (it must be importable by every node process,
  e.g. on ``PYTHONPATH``) and must run ``register("NAME")`` on its factory; NAME is then looked up. A module
  imported some other way may register plain names too, but only an import path reaches a node started by the CLI
  or the testbed.

A factory is called with keyword arguments only: ``config`` (the `NodeConfig`), ``identity`` (this node's
`gossip.Identity`; its addr/port are the config's), ``rng`` (a seeded `random.Random`: the only source of
randomness), ``now`` (seconds), ``record_refreshes`` (also report each refresh of a member, if the protocol has
such a thing) and ``state`` (a `gossip._core.DurableState` to start from, or None).

A protocol's own settings are its factory's ``OPTIONS`` (a mapping of names to `Option`: a default of the
option's type, bounds, a help line). A node gets them in ``NodeConfig.options`` (CLI ``--option NAME=VALUE``, a
scenario's ``node: {options: {...}}``), checked against ``OPTIONS`` when the config is made, so a name that is not
the protocol's or a bad value is a one-line error naming ``options.NAME``; the core reads them with
``config.option(NAME)``, which falls back to the default.

A core usually subclasses `CoreBase` (``gossip.protocols.CoreBase``): metadata by (seq, origin) versions with the
HLC mark, durable state and roll-back, the member list (seeds unlisted until heard from), the outboxes and the
decoding of datagrams are then the same in every protocol, and the subclass adds only its membership rules.

The layout: this package holds the interface, the registry (`_registry`, which imports nothing else, so
`gossip._config` can check names with it) and the example protocol; the heartbeat protocol stays in
`gossip._core`, which registers it.
"""

from __future__ import annotations

import random
import typing
from collections import Counter
from typing import TYPE_CHECKING

from ._registry import BUILTIN, Option, UnknownOption, UnknownProtocol, factory, names, options_of, register

if TYPE_CHECKING:
    from .._config import NodeConfig
    from .._core import DurableState, MemberInfo, Version
    from .._events import Accepted, Event, Send
    from .._wire import Identity, Message

__all__ = ["BUILTIN", "CoreBase", "Option", "Protocol", "UnknownOption", "UnknownProtocol", "create", "factory", "names",
           "options_of", "register"]


@typing.runtime_checkable
class Protocol(typing.Protocol):
    """What a membership protocol's core offers: exactly what its drivers, the node, the simulator, the replay
    tool, the HTTP API and the testbed call on it (tests/node/test_protocols.py checks both ways).

    Sans-IO: datagrams (or decoded messages) and ``now`` in; sends, events, accepted state and timer deadlines
    out. A core never touches a socket, a clock, a file or the module-level random generator. Not thread-safe.

    After every input the driver takes the outputs in this order: `take_accepted` (to the fast path and the state
    store), `take_sends`, `take_events`. Metadata (`publish`/`read`) is ordered by `Version` (seq, origin) in every
    protocol, so checks and the HTTP API mean the same whichever runs.
    """

    config: NodeConfig
    node_id: int  # the node's id (`gossip.node_id` of its listen address and port)
    cluster: int  # the cluster id every packet carries (`gossip.cluster_id(config.cluster)`)
    stats: Counter[str]  # counters: packets_in, packets_out, sent_<type>, dropped, dropped_<reason>, ...
    # Moves whenever `members` may list a member more or fewer, or one under another Identity, and stays while it
    # cannot (a refresh changes only seq and last_seen): the heartbeat plane re-registers members only when it
    # moved. A core that does not count it gives a new value at every read (`CoreBase`); the heartbeat core counts.
    roster: int
    # How many messages were taken straight from their origin so far, and the last one's send time (s, from its
    # sequence; see `take_direct_hops`): the node measures the hop's part before its own wait from them
    # (``hb_wire_ms``). A protocol that cannot tell leaves both 0 (`CoreBase`).
    direct_taken: int
    direct_sent_s: float

    # ---- inputs -----------------------------------------------------------------------------------------------

    def receive(self, datagram: bytes, now: float, src: str = "") -> None:
        """One datagram from a peer ("addr:port" SRC if known). Never raises on the peer's bytes: a bad one is
        counted (``packets_in``, ``dropped_<reason>``) and dropped."""

    def receive_message(self, msg: Message, now: float, src: str = "") -> None:
        """One already-verified, decoded message (the simulator's entry point; it counts ``packets_in`` itself)."""

    def tick(self, now: float) -> None:
        """Run every timer due at NOW."""

    def next_deadline(self) -> float:
        """When `tick` next has work to do."""

    def note_drop(self, reason: str, detail: str = "") -> None:
        """Count a packet the driver dropped itself (a full queue, a bad frame)."""

    # ---- outputs ----------------------------------------------------------------------------------------------

    def take_sends(self) -> list[Send]: ...

    def take_events(self) -> list[Event]: ...

    def take_accepted(self) -> list[Accepted]:
        """What was accepted since the last call (heartbeat sequences, metadata versions): a fast path drops what
        the core would drop from it, and a metadata version in it makes the driver write `durable_state`."""

    def take_direct_hops(self) -> list[float]:
        """Delays (ms) of messages taken straight from their origin since the last call, for the ``stats`` record's
        ``hb_hop_ms``; a protocol that cannot tell returns []."""

    def encode(self, msg: Message) -> bytes:
        """MSG signed with the first secret, within ``max_packet_bytes`` (what the testbed injects as a peer)."""

    def kernel_refreshed(self, origin: int, seq: int, last_seen: float) -> bool:
        """A heartbeat of ORIGIN at SEQ that the in-kernel heartbeat plane took and forwarded itself at LAST_SEEN
        (`gossip._plane`, and the replay of a node's trace): the effect of taking that heartbeat, minus the forward.
        Returns whether it counted; a protocol without heartbeats takes none (`CoreBase` returns False)."""

    def replay_sample(self) -> Message | None:
        """A message this node accepted from a peer (the simulator's replay injection sends it again; the node
        must count the copies as duplicate or stale); None before it has one."""

    # ---- operations -------------------------------------------------------------------------------------------

    def set(self, identity: Identity, now: float) -> None:
        """A known node (a seed) to contact; listed once heard from."""

    def stop(self) -> None:
        """Stop announcing this node (it keeps receiving and answering)."""

    def start(self) -> None:
        """Announce it again (`UsageError` after a leave)."""

    def leave(self, now: float) -> int:
        """Tell the peers this node leaves, then send nothing more; returns how many peers were told."""

    def publish(self, data: bytes, now: float) -> Version:
        """Adopt DATA under a version newer than any seen here and spread it (`UsageError` if it does not fit)."""

    def set_secrets(self, secrets: tuple[bytes, ...]) -> None:
        """Use the key ring SECRETS from now on: the first signs what this node sends, any of them verifies what it
        receives (`ConfigError` naming ``secrets`` for a bad ring, which leaves the old one in use)."""

    def read(self) -> tuple[Version, bytes]: ...

    def members(self) -> list[MemberInfo]:
        """The live member list, this node first."""

    def live_ids(self) -> set[int]:
        """The ids `members` lists, this node excluded."""

    @property
    def has_left(self) -> bool:
        """True once `leave` has run: the node sends nothing more."""

    # ---- durable state ----------------------------------------------------------------------------------------

    def durable_state(self) -> DurableState: ...

    def restore(self, state: DurableState) -> None:
        """Start from STATE, once, before any metadata (`UsageError` if it cannot be trusted)."""

    def roll_back(self, version: Version, data: bytes) -> None:
        """Hold VERSION and DATA again after the driver failed to make a newer value durable."""

    @property
    def hlc_mark(self) -> int: ...


def create(config: NodeConfig, identity: Identity, rng: random.Random, *, now: float,
           record_refreshes: bool = False, state: DurableState | None = None) -> Protocol:
    """A core of protocol ``config.membership`` for the node IDENTITY (`UsageError` naming ``membership`` when
    the name is not a protocol)."""
    try:
        make = factory(config.membership)
    except UnknownProtocol as e:
        from ..errors import ConfigError
        raise ConfigError("membership", str(e)) from None
    return make(config=config, identity=identity, rng=rng, now=now, record_refreshes=record_refreshes,
                state=state)


def __getattr__(name: str):
    # `CoreBase` (the state and behaviour every core shares: metadata, durable state, the member list, the
    # outboxes, decoding) is what a protocol of one's own subclasses; loaded on first use, as `gossip._core`
    # imports this package for `register`
    if name == "CoreBase":
        from .._corebase import CoreBase
        return CoreBase
    raise AttributeError(f"module 'gossip.protocols' has no attribute {name!r}")
