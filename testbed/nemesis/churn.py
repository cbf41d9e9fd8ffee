"""churn: a Poisson process of crashes at ``rate_per_s`` (each node back after ``downtime_s``, default twice the
node timeout) plus ``joins`` new nodes spread evenly over the window. The first seed, n0, is never crashed, as
operators keep theirs."""

from __future__ import annotations

from ..scenario.schema import NUM, non_negative, positive
from .base import Active, Fault, register


@register
class Churn(Fault):
    name = "churn"
    colour = "#ff7f0e"
    fields = {"rate_per_s": (NUM, True, None, positive), "downtime_s": (NUM, False, None, positive),
              "joins": (int, False, 0, non_negative)}

    def start(self, ctx, step) -> Active:
        p, now, end = step.params, ctx.now_s(), step.until_s
        downtime = float(p.get("downtime_s") or 2 * ctx.timeout_s)
        t = now
        while True:
            t += ctx.rng.expovariate(float(p["rate_per_s"]))
            if t >= end:
                break
            ctx.at(t, "churn:crash", lambda: self._crash(ctx, downtime))
        joins = int(p.get("joins", 0))
        for k in range(joins):
            ctx.at(now + (k + 0.5) * (end - now) / joins, "churn:join", ctx.join)
        return Active(kind=self.name, name="churn", start=ctx.now())

    @staticmethod
    def _crash(ctx, downtime: float) -> None:
        live = [n for n in ctx.live() if n != "n0"]
        if len(live) < 2:
            return
        victim = ctx.rng.choice(live)
        ctx.kill(victim)
        ctx.at(ctx.now_s() + downtime, "churn:restart", lambda: ctx.restart(victim))

    def stop(self, ctx, active: Active) -> None:
        return None  # its restarts are its own scheduled steps; the run's ending restarts what is still down
