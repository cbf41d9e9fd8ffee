"""A fake network for core tests: delivers every Send to the addressed cores, in FIFO order, instantly.

The core is sans-IO, so this is not a mock of anything it uses: it is a third driver, like the node and the
simulator, with the clock in the test's hands.
"""

from __future__ import annotations

import random

from gossip import GossipCore, Identity, NodeConfig, protocols


def make_core(i: int, *, now: float = 1000.0, seed: int | None = None, **cfg) -> GossipCore:
    """A core of ``cfg["membership"]`` (default heartbeat), made through the registry as drivers make them."""
    port = 9000 + i
    config = NodeConfig(listen_addr="127.0.0.1", listen_port=port, **cfg)
    return protocols.create(config, Identity(name=f"n{i}", addr="127.0.0.1", port=port),
                            random.Random(i if seed is None else seed), now=now)


class FakeNet:
    def __init__(self, cores: list[GossipCore]) -> None:
        self.cores = {c.identity.endpoint: c for c in cores}
        self.delivered: list[tuple[str, str, str]] = []  # (type, from, to)
        self.down: set[tuple[str, int]] = set()

    def pump(self, now: float, sources: list[GossipCore] | None = None) -> None:
        queue = [(c, s) for c in (sources or self.cores.values()) for s in c.take_sends()]
        while queue:
            src, send = queue.pop(0)
            for ep in send.targets:
                dst = self.cores.get(ep)
                if dst is None or ep in self.down:
                    continue
                self.delivered.append((type(send.message).__name__, src.identity.name, dst.identity.name))
                dst.receive(send.payload, now)
                queue.extend((dst, s) for s in dst.take_sends())

    def run(self, start: float, end: float, step: float) -> float:
        now = start
        while now < end:
            now = round(now + step, 9)
            for ep, c in self.cores.items():
                if ep not in self.down:
                    c.tick(now)
            self.pump(now)
        return now
