"""Node names, partition groups and node counts written relative to a scenario's size.

A scenario written for 64 nodes should run on 8 (``--nodes 8``) and mean the same thing, so a step may say "a node
in the second half" instead of naming ``n48``. The forms, all counted over the nodes the scenario starts with
(``nodes``, after any override; never the ones that join later):

- a node (``node:``, ``target:``, a name inside a partition group): ``first`` (n0), ``last`` (the last initial
  node), or ``P%``, the node at that fraction of the cluster: n⌊P·nodes/100⌋, 0 <= P < 100 (so ``50%`` is the
  first node of the second half). A list may mix these with plain names; two entries may name the same node on a
  small cluster.
- partition groups: ``groups: [50%, 50%]``, consecutive blocks of the initial nodes, each that share of them
  (block g ends at node ⌊nodes·(P_0 + ... + P_g)/100⌋); the shares add up to at most 100 %, and every block must
  hold a node. Initial nodes left over and nodes that join later form one more side, as for named groups.
- a count of nodes (``count:`` of crash and pause): ``25%``, that share of the initial nodes rounded up.

Resolution happens when the scenario's size is final (`testbed.scenario.parse` calls it after every override),
so everything downstream sees plain names and integers. Percentages are read exactly (as decimal fractions), so
``62.5%`` of 32 nodes is n20, not n19. Pure functions: a bad value raises `Invalid` with the message, and the
parser adds the file, line and field.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

_PERCENT = re.compile(r"^(\d+(?:\.\d+)?)%$")
NAMED = ("first", "last")


class Invalid(ValueError):
    """A relative value that cannot be resolved; SUB is the path below the field it was found in (a list index)."""

    def __init__(self, message: str, sub: str = "") -> None:
        super().__init__(message)
        self.sub = sub


def percent(v) -> Fraction | None:
    """The share written as ``P%`` (a fraction of 1), or None if V is not of that form."""
    m = _PERCENT.match(v) if isinstance(v, str) else None
    return Fraction(m.group(1)) / 100 if m else None


def is_relative_name(v) -> bool:
    return v in NAMED or percent(v) is not None


def is_relative(v) -> bool:
    """Whether V (a node selector, a group list or a count) holds any relative form."""
    if isinstance(v, list):
        return any(is_relative(x) for x in v)
    return is_relative_name(v)


def node(v: str, nodes: int) -> str:
    """The name V resolves to on a cluster of NODES initial nodes (plain names pass through unchanged)."""
    if v == "first":
        return "n0"
    if v == "last":
        return f"n{nodes - 1}"
    share = percent(v)
    if share is None:
        return v
    if share >= 1:
        raise Invalid(f"{v}: a node's position must be below 100% (the last node is 'last')")
    return f"n{math.floor(share * nodes)}"


def nodes_of(sel, nodes: int):
    """A ``node:``/``target:`` value resolved: a name, or a list of names."""
    if isinstance(sel, list):
        out = []
        for i, v in enumerate(sel):
            try:
                out.append(node(v, nodes))
            except Invalid as e:
                raise Invalid(str(e), f"[{i}]") from None
        return out
    return node(sel, nodes)


def groups(value: list, nodes: int) -> list[list[str]]:
    """A partition's ``groups`` resolved: lists of names (relative names resolved in them), or consecutive blocks
    of the initial nodes, one per share."""
    shares = [percent(g) for g in value]
    if all(s is None for s in shares):
        return [nodes_of(g, nodes) if isinstance(g, list) else g for g in value]
    if any(s is None for s in shares):
        bad = next(i for i, s in enumerate(shares) if s is None)
        raise Invalid("groups are either all shares (e.g. [50%, 50%]) or all lists of names, not a mix",
                      f"[{bad}]")
    if sum(shares) > 1:
        raise Invalid(f"the shares add up to {float(sum(shares)) * 100:g}%, more than 100%")
    out, start, total = [], 0, Fraction(0)
    for i, s in enumerate(shares):
        total += s
        end = math.floor(total * nodes)
        if end <= start:
            raise Invalid(f"{value[i]} of {nodes} nodes holds no node", f"[{i}]")
        out.append([f"n{k}" for k in range(start, end)])
        start = end
    return out


def count(v, nodes: int) -> int:
    """A node count resolved: an integer as given, or a share of the initial nodes rounded up."""
    share = percent(v)
    if share is None:
        return v
    if not 0 < share <= 1:
        raise Invalid(f"{v}: a share of the nodes must be above 0% and at most 100%")
    return math.ceil(share * nodes)


def count_check(v) -> str | None:
    """A field check: a positive integer, or a share ``P%``."""
    if isinstance(v, str):
        return None if percent(v) is not None else "must be a number of nodes or a share of them like 25%"
    return None if v > 0 else "must be > 0"
