"""The plot registry: a plot is one function ``(history, summary, path)`` registered under its scenario name."""

from __future__ import annotations

from typing import Callable

REGISTRY: dict[str, Callable] = {}


def register(name: str):
    def deco(fn: Callable) -> Callable:
        if name in REGISTRY:
            raise ValueError(f"plot {name!r} registered twice")
        REGISTRY[name] = fn
        return fn
    return deco
