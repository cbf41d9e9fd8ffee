"""loss: drop messages with probability ``rate``: each message once (``node: all``, the default), or messages to
and from the chosen nodes. It acts where the network is, before the receiving node's XDP program.

A window at a rate of at most `LIGHT_RATE` excuses no removal: a heartbeat cluster must ride out light loss with
its configured timeout (a member is refreshed by several heartbeats per timeout, each lost with that rate), so a
removal then is a false death. Heavier loss excuses removals by or of the nodes it covers, as other faults do.
"""

from __future__ import annotations

import re

from ..scenario.schema import NUM, probability
from .base import Active, Fault, register

LIGHT_RATE = 0.1  # loss at or below this excuses no removal

_NAME = re.compile(r"^loss (\d+(?:\.\d+)?)%$")


def window_rate(window) -> float | None:
    """The loss rate of a recorded loss WINDOW, read back from the name `Loss.start` gives it ("loss 10%"; the
    recorded window carries no other field for it, so the rate is known to the percent), or None if it has none."""
    m = _NAME.match(window.name)
    return float(m.group(1)) / 100 if m else None


@register
class Loss(Fault):
    name = "loss"
    colour = "#e377c2"
    fields = {"rate": (NUM, True, None, probability), "node": ((str, list), False, "all", None)}

    def start(self, ctx, step) -> Active:
        rate, sel = float(step.params["rate"]), step.params.get("node", "all")
        if sel == "all":
            ctx.cluster.set_loss(rate)
            nodes = []
        else:
            nodes = ctx.pick(sel)
            for n in nodes:
                ctx.cluster.set_loss(rate, node=n)
        return Active(kind=self.name, name=f"loss {rate:.0%}", start=ctx.now(), nodes=nodes)

    def stop(self, ctx, active: Active) -> None:
        if not active.nodes:
            ctx.cluster.set_loss(0.0)
        for n in active.nodes:
            ctx.cluster.set_loss(0.0, node=n)

    def excuses_removal(self, window, observer: str, removed: str) -> bool:
        rate = window_rate(window)
        if rate is not None and rate <= LIGHT_RATE + 1e-9:
            return False
        return super().excuses_removal(window, observer, removed)
