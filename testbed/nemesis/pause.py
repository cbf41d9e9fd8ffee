"""pause: SIGSTOP the chosen nodes (``node:`` or ``count:``); SIGCONT at ``until``. A paused node keeps its state
and sockets, queues what arrives and answers nothing."""

from __future__ import annotations

from .base import NodesFault, register


@register
class Pause(NodesFault):
    name = "pause"
    colour = "#9467bd"
    act, undo = "pause", "resume"
