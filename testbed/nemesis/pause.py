"""pause: SIGSTOP the chosen nodes (``node:`` or ``count:``); SIGCONT at ``until``. A paused node keeps its state
and sockets, queues what arrives and answers nothing."""

from __future__ import annotations

from ..scenario.schema import positive
from .base import Active, Fault, register


@register
class Pause(Fault):
    name = "pause"
    colour = "#9467bd"
    fields = {"node": ((str, list), False, None, None), "count": (int, False, None, positive)}
    exclusive = ("node", "count")

    def start(self, ctx, step) -> Active:
        victims = ctx.pick(step.params.get("node"), step.params.get("count"))
        for v in victims:
            ctx.pause(v)
        return Active(kind=self.name, name=f"pause {','.join(victims[:3])}", start=ctx.now(), nodes=victims)

    def stop(self, ctx, active: Active) -> None:
        for v in active.nodes:
            ctx.resume(v)
