"""crash: SIGKILL the chosen nodes (``node:`` names, or ``count:`` random live ones); restart them at ``until``."""

from __future__ import annotations

from ..scenario.schema import positive
from .base import Active, Fault, register


@register
class Crash(Fault):
    name = "crash"
    colour = "#d62728"
    fields = {"node": ((str, list), False, None, None), "count": (int, False, None, positive)}
    exclusive = ("node", "count")

    def start(self, ctx, step) -> Active:
        victims = ctx.pick(step.params.get("node"), step.params.get("count"))
        for v in victims:
            ctx.kill(v)
        return Active(kind=self.name, name=f"crash {','.join(victims[:3])}", start=ctx.now(), nodes=victims)

    def stop(self, ctx, active: Active) -> None:
        for v in active.nodes:
            ctx.restart(v)
