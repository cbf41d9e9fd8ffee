"""Replaying a node's input trace into a fresh core: the proof that the core is a pure function of its inputs.

A `Node` given ``trace=`` writes every input its core receives (datagrams, ticks, operations, with the ``now``
it passed); `replay` feeds the same inputs, in the same order, to a new core (of ``config.membership``, made
through `gossip.protocols`) with the same seed and returns the events it records. Any driver — the asyncio node,
the simulator — must produce exactly these.
"""

from __future__ import annotations

import json
import random
from typing import Iterable

from ._config import NodeConfig
from ._events import Event
from ._wire import Identity
from .protocols import Protocol, create


def replay(trace_lines: Iterable[str], *, config: NodeConfig, identity: Identity, seed: int) -> list[Event]:
    core: Protocol | None = None
    events: list[Event] = []
    for line in trace_lines:
        op = json.loads(line)
        kind, now = op["op"], op["t"]
        if kind == "init":
            core = create(config, identity, random.Random(seed), now=now)
        elif kind == "rx":
            core.receive(bytes.fromhex(op["data"]), now, op.get("src", ""))
        elif kind == "tick":
            core.tick(now)
        elif kind == "publish":
            core.publish(bytes.fromhex(op["data"]), now)
        elif kind == "set":
            core.set(Identity(name=op["name"], addr=op["addr"], port=op["port"],
                              private=bytes.fromhex(op["private"])), now)
        elif kind == "stop":
            core.stop()
        elif kind == "start":
            core.start()
        elif kind == "leave":
            core.leave(now)
        elif kind == "drop":
            core.note_drop(op["reason"], op["detail"])
        elif kind == "secrets":  # the key ring, rotated while the node ran
            core.set_secrets(tuple(bytes.fromhex(k) for k in op["keys"]))
        elif kind == "kernel":  # a heartbeat the in-kernel plane took: the node applied it at NOW (its last-seen)
            core.kernel_refreshed(op["origin"], op["seq"], now)
        else:
            raise ValueError(f"unknown trace operation {kind!r}")
        core.take_sends()
        core.take_accepted()
        events.extend(core.take_events())
    return events
