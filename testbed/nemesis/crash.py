"""crash: SIGKILL the chosen nodes (``node:`` names, or ``count:`` random live ones); restart them at ``until``
with fresh state and the same seeds."""

from __future__ import annotations

from .base import NodesFault, register


@register
class Crash(NodesFault):
    name = "crash"
    colour = "#d62728"
    act, undo = "kill", "restart"
