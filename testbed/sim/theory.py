"""Closed forms for the textbook dissemination baselines, to check the simulator against.

Pure functions of their arguments; no randomness, no numpy needed.
"""

from __future__ import annotations

import math

from ._errors import SimError


def push_rounds(n: int) -> float:
    """Expected rounds for round-based push with fanout 1 to inform all N nodes: log2(n) + ln(n) + O(1).

    Pittel (1987), "On spreading a rumor": every informed node calls one uniformly random other node per round;
    the number of rounds until everyone is informed is log2(n) + ln(n) + O(1) with high probability. The O(1) term
    is left out (it is about 1 in simulations at n = 10^4 .. 10^6).
    """
    if not isinstance(n, int) or n < 2:
        raise SimError(f"n: must be an integer >= 2, got {n!r}")
    return math.log2(n) + math.log(n)


def infect_and_die_fraction(fanout: float, *, tol: float = 1e-12) -> float:
    """The fraction pi of nodes an infect-and-die rumor reaches when every node forwards once to FANOUT random
    nodes: the positive root of pi = 1 - exp(-fanout * pi) (0 when fanout <= 1).

    Each node is hit by a Poisson(fanout * pi) number of copies in the large-n limit, so it is missed with
    probability exp(-fanout * pi). Solved by Newton's method from pi = 1, where the function is convex and the
    iteration decreases monotonically to the positive root.
    """
    if isinstance(fanout, bool) or not isinstance(fanout, (int, float)) or fanout < 0:
        raise SimError(f"fanout: must be a number >= 0, got {fanout!r}")
    if fanout <= 1:
        return 0.0
    pi = 1.0
    for _ in range(100):
        e = math.exp(-fanout * pi)
        g = pi - 1 + e  # root of g
        step = g / (1 - fanout * e)
        pi -= step
        if abs(step) < tol:
            break
    return pi
