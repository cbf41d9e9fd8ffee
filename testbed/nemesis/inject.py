"""inject: scapy-crafted packets into a node (``target:``): forged, replayed, malformed, truncated, from a foreign
cluster, or a flood of duplicates. An instant, not a window; it excuses nothing: each kind must be counted under
its drop reason (`testbed.net.inject.EXPECT`) and the node must survive (the ``bad_packets_dropped`` check)."""

from __future__ import annotations

from ..net.inject import EXPECT
from ..scenario.schema import positive
from .base import Active, Fault

MAX_INJECT_COUNT = 1_000_000
KINDS = tuple(EXPECT)


class Inject(Fault):
    name = "inject"
    colour = "#bcbd22"
    windowed = False
    fields = {"target": ((str, list), False, "random", None),
              "count": (int, False, 10, lambda v: None if 1 <= v <= MAX_INJECT_COUNT else
                        f"must be 1..{MAX_INJECT_COUNT}"),
              "rate_pps": (int, False, None, positive)}

    def start(self, ctx, step) -> Active:
        kind, p = step.action, step.params
        targets = ctx.pick(p.get("target", "random"))
        t = ctx.now()
        for name in targets:
            sent = ctx.cluster.inject(kind, name, count=int(p.get("count", 10)), rate_pps=p.get("rate_pps"),
                                      rng=ctx.rng)
            ctx.record({"node": name, "kind": "injected", "what": kind, "count": sent, "expect": EXPECT[kind]})
            ctx.say(f"injected {sent} {kind} packet(s) into {name}")
        return Active(kind=self.name, name=f"inject {kind}", start=t, nodes=targets)

    def stop(self, ctx, active: Active) -> None:
        return None


INJECT = Inject()
