"""loss: drop messages with probability ``rate``: each message once (``node: all``, the default), or messages to
and from the chosen nodes. It acts where the network is, before the receiving node's XDP program."""

from __future__ import annotations

from ..scenario.schema import NUM, probability
from .base import Active, Fault, register


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
