"""delay: every message delivered to the chosen nodes (``node: all`` by default) waits ``ms`` more (± ``jitter_ms``
uniformly), on the network side of the node's interface: netem where the kernel has it, else an NFQUEUE handler
per host (`testbed.net.delay`); the simulator adds it to each delivery."""

from __future__ import annotations

from ..scenario.schema import NUM, non_negative, positive
from .base import Active, Fault, register


@register
class Delay(Fault):
    name = "delay"
    colour = "#7f7f7f"
    fields = {"ms": (NUM, True, None, positive), "jitter_ms": (NUM, False, 0.0, non_negative),
              "node": ((str, list), False, "all", None)}

    def start(self, ctx, step) -> Active:
        p = step.params
        sel = p.get("node", "all")
        nodes = ctx.pick(sel)
        handle = ctx.cluster.add_delay(nodes, float(p["ms"]), float(p.get("jitter_ms", 0.0)))
        return Active(kind=self.name, name=f"delay {p['ms']:g} ms", start=ctx.now(),
                      nodes=[] if sel == "all" else nodes, state=handle)

    def stop(self, ctx, active: Active) -> None:
        ctx.cluster.remove_delay(active.state)
