"""Faults, one module each (Jepsen's nemesis): crash, pause, churn, partition, loss, delay, and packet injections.

`REGISTRY` maps a scenario's ``fault:`` name to its module's `Fault`; importing this package registers them all.
See `base` for the contract. Injections (``inject:`` steps) are `inject.INJECT`, one instant per step.
"""

from .base import REGISTRY, Active, Fault, colour, excuses_removal, register
from . import churn, crash, delay, loss, partition, pause  # noqa: F401,E402  (registers them)
from .inject import INJECT, KINDS as INJECTIONS, MAX_INJECT_COUNT  # noqa: E402

__all__ = ["REGISTRY", "Active", "Fault", "INJECT", "INJECTIONS", "MAX_INJECT_COUNT", "colour", "excuses_removal",
           "register"]
