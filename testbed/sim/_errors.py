"""The simulator's error: raised when the caller misuses it (an unknown node, a bad parameter, an impossible op).

A simulated peer can never raise: like a real node, the protocol core counts and drops bad input. So there is one
family only, the "you misused the API" one.
"""

from __future__ import annotations

from ..errors import TestbedError


class SimError(TestbedError, ValueError):
    """The caller asked the simulator for something invalid; the message names the argument or node."""
