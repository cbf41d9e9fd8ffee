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


def infect_and_die_curve(n: int, fanout: float, *, hops: int = 64) -> list[float]:
    """The mean-field infect-and-die rumor on N nodes: the expected fraction informed after each hop (index 0 is
    the origin alone), until no new node is informed or HOPS hops have passed.

    Every node informed at hop k sends FANOUT copies to uniformly random other nodes once; a node still
    uninformed misses all of them with probability (1 - 1/(n-1))^(fanout * new_k). Its limit for large N is
    `infect_and_die_fraction`. What the plots draw beside a measured curve, with each hop taking the run's
    measured one-hop delay: the forwarding rule alone, without the infected set's target choice or anti-entropy.
    """
    if not isinstance(n, int) or n < 2:
        raise SimError(f"n: must be an integer >= 2, got {n!r}")
    if isinstance(fanout, bool) or not isinstance(fanout, (int, float)) or fanout < 0:
        raise SimError(f"fanout: must be a number >= 0, got {fanout!r}")
    miss = 1.0 - 1.0 / (n - 1)
    informed, new = 1.0, 1.0
    out = [informed / n]
    for _ in range(hops):
        new = (n - informed) * (1.0 - miss ** (fanout * new))
        if new < 1e-9 * n:
            break
        informed += new
        out.append(informed / n)
    return out
