"""Plots of a run, each a registered pure function of the history (and the summary made from it), each in its
own module: `infection`, `convergence`, `messages`, `latency`, `cost`. `compare` draws several runs. Adding a plot is one module
that registers itself here. Never switches the matplotlib backend: a notebook keeps showing its figures; the
command line uses a non-interactive one (see `testbed._cli`).
"""

from __future__ import annotations

from pathlib import Path

from ._registry import REGISTRY, register
from . import infection, convergence, messages, latency, cost  # noqa: F401,E402,I001  (register themselves, in this order)
from .compare import compare  # noqa: E402

__all__ = ["REGISTRY", "compare", "draw_all", "register"]


def draw_all(run_dir: Path, history, summary: dict, which=None) -> list[Path]:
    """Draw the plots named in WHICH (all by default) into RUN_DIR; returns the files written."""
    out = []
    for name in (tuple(REGISTRY) if which is None else which):
        p = Path(run_dir) / f"{name}.png"
        REGISTRY[name](history, summary, p)
        out.append(p)
    return out
