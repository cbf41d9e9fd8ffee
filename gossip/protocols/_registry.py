"""The protocol registry: membership protocol names to the factories that build their cores.

A name is either registered (``register(NAME)(factory)``, run when the module defining the protocol is imported)
or an import path ``MODULE:NAME``: MODULE is imported (so its ``register(NAME)`` runs) and NAME looked up. The
built-in protocols are modules this registry knows the path of and imports on first use, so importing the
package costs nothing until a core is made, and `gossip._config` can check a name without importing a protocol.

This module imports nothing from the rest of the package at load time: `gossip._config` (which every protocol
imports) checks names through it.
"""

from __future__ import annotations

import importlib
import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping

# built-in name -> the module that registers it when imported
BUILTIN = {
    "heartbeat": "gossip._core",
    "antientropy": "gossip.protocols.antientropy",
    "swim": "gossip.protocols.swim",
}

_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}\Z")
_MODULE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*\Z")

_factories: dict[str, Callable] = {}


@dataclass(frozen=True, slots=True)
class Option:
    """One setting of a protocol's own (``NodeConfig.options``, CLI ``--option NAME=VALUE``, a scenario's
    ``node: {options: {NAME: VALUE}}``). Its type is its DEFAULT's: a bool, an int, a float (an int is taken) or a
    string; LO/HI bound a number, CHOICES a string."""

    default: bool | int | float | str
    help: str = ""
    lo: float | None = None
    hi: float | None = None
    choices: tuple[str, ...] = ()

    def check(self, name: str, value: Any) -> Any:
        """VALUE as this option holds it, or `UnknownOption` saying what is wrong with it."""
        d = self.default
        if isinstance(d, bool):
            if not isinstance(value, bool):
                raise UnknownOption(name, f"must be true or false, got {value!r}")
            return value
        if isinstance(d, (int, float)):
            ok = isinstance(value, int) if isinstance(d, int) else isinstance(value, (int, float))
            if isinstance(value, bool) or not ok or (isinstance(value, float) and not math.isfinite(value)):
                raise UnknownOption(name, f"must be {'an integer' if isinstance(d, int) else 'a number'}, "
                                          f"got {value!r}")
            if (self.lo is not None and value < self.lo) or (self.hi is not None and value > self.hi):
                raise UnknownOption(name, f"must be in [{self.lo}, {self.hi}], got {value!r}")
            return float(value) if isinstance(d, float) else value
        if not isinstance(value, str) or (self.choices and value not in self.choices):
            want = f"one of {', '.join(self.choices)}" if self.choices else "a string"
            raise UnknownOption(name, f"must be {want}, got {value!r}")
        return value


class UnknownOption(ValueError):
    """A protocol option is not one of the protocol's, or its value is wrong; FIELD is ``options.NAME``."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.field = f"options.{name}"


def options_of(factory: Callable) -> Mapping[str, Option]:
    """The options a protocol's factory takes (its ``OPTIONS`` attribute; none if it has no such attribute)."""
    return getattr(factory, "OPTIONS", None) or {}


def check_options(factory: Callable, given: Any) -> tuple[tuple[str, Any], ...]:
    """GIVEN (a mapping, or (name, value) pairs) checked against FACTORY's options: the pairs, sorted by name.
    `UnknownOption` names the first option that is not the protocol's or has a bad value."""
    if isinstance(given, Mapping):
        pairs = list(given.items())
    else:
        try:
            pairs = [tuple(p) for p in given]
        except TypeError:
            raise UnknownOption("", f"must be a mapping of option names to values, got {given!r}") from None
        if any(len(p) != 2 for p in pairs):
            raise UnknownOption("", "must be a mapping of option names to values (or name, value pairs)")
    known = options_of(factory)
    out = {}
    for name, value in pairs:
        if not isinstance(name, str) or name not in known:
            have = ", ".join(sorted(known)) or "none"
            raise UnknownOption(str(name), f"is not an option of this protocol (its options: {have})")
        if name in out:
            raise UnknownOption(name, "is given twice")
        out[name] = known[name].check(name, value)
    return tuple(sorted(out.items()))


class UnknownProtocol(ValueError):
    """NAME is not a protocol; the message is one line saying why (`gossip._config` makes it a `ConfigError`)."""


def register(name: str) -> Callable[[Callable], Callable]:
    """Decorator: register FACTORY (a core class, or any callable taking the keyword arguments of `create`'s
    factory call) as membership protocol NAME. Registering the same factory twice is harmless (a module imported
    again); another factory under a taken name is an error."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"protocol name must be a letter then up to 63 of [A-Za-z0-9_.-], got {name!r}")

    def deco(factory: Callable) -> Callable:
        if not callable(factory):
            raise TypeError(f"protocol {name!r}: the factory must be callable, got {factory!r}")
        held = _factories.get(name)
        if held is not None and held is not factory and _qualname(held) != _qualname(factory):
            raise ValueError(f"protocol {name!r} is already registered (by {_qualname(held)})")
        _factories[name] = factory
        return factory

    return deco


def _qualname(f: Callable) -> str:
    return f"{getattr(f, '__module__', '?')}.{getattr(f, '__qualname__', repr(f))}"


def names() -> list[str]:
    """Every protocol name known now: the built-in ones and whatever has been registered, sorted."""
    return sorted(set(BUILTIN) | set(_factories))


def _known() -> str:
    return f"known: {', '.join(names())}; or MODULE:NAME for a protocol a module of yours registers"


def factory(name: str) -> Callable:
    """The factory of protocol NAME (a registered name, a built-in one, or MODULE:NAME); `UnknownProtocol` with a
    one-line reason otherwise."""
    if not isinstance(name, str):
        raise UnknownProtocol(f"must be a protocol name (a string), got {name!r}")
    f = _factories.get(name)
    if f is not None:
        return f
    if name in BUILTIN:
        importlib.import_module(BUILTIN[name])
    elif ":" in name:
        module, _, short = name.partition(":")
        if not _MODULE.match(module) or not _NAME.match(short):
            raise UnknownProtocol(f"expected MODULE:NAME (a dotted module path, a protocol name), got {name!r}")
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise UnknownProtocol(f"{name!r}: cannot import module {module!r} ({e})".splitlines()[0]) from None
        except Exception as e:  # the user's module failed while loading: say so in one line, not a traceback
            raise UnknownProtocol(f"{name!r}: importing module {module!r} failed: {type(e).__name__}: {e}"
                                  .splitlines()[0]) from None
        f = _factories.get(short)
        if f is None:
            raise UnknownProtocol(f"{name!r}: module {module!r} registers no protocol named {short!r} "
                                  f"({_known()})")
        _factories[name] = f
        return f
    f = _factories.get(name)
    if f is None:
        raise UnknownProtocol(f"unknown protocol {name!r} ({_known()})")
    return f
