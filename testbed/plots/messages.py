"""messages.png: packets per second, all nodes together, over the run's timeline: what the nodes sent and took
in, and what was dropped, split by where: by the XDP fast path in the kernel (per reason), by the node in
userspace, by the network (the loss and partition faults). Both backends record the same series (the simulator
samples its XDP model and its network as the testbed samples the kernel's counters)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

from .. import analysis
from ._common import legend, save, timeline_axis, title
from ._registry import register

# one colour per place a packet can end, one line style per family
STYLE = {"sent": ("#1f77b4", "-"), "received by the node": ("#2ca02c", "-"),
         "dropped by the node": ("#d62728", "-")}
XDP_COLOURS = ("#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf")
NET_COLOURS = {"loss": "#ff7f0e", "partition": "#7f7f7f"}


def _rates(records: list[dict], key_fn, t0: float, bin_s: float) -> dict[str, dict[int, float]]:
    """Per-series packets/s in bins, from cumulative per-node counters."""
    last: dict[tuple[str, str], tuple[float, float]] = {}
    out: dict[str, dict[int, float]] = {}
    for r in records:
        for series, value in key_fn(r).items():
            k = (r["node"], series)
            prev = last.get(k)
            last[k] = (r["t"], value)
            if prev is None or value < prev[1]:  # first sample, or a restarted node's counters
                continue
            # a long gap between samples is spread over its length, not piled into one bin
            rate = (value - prev[1]) / max(bin_s, r["t"] - prev[0])
            b = int((r["t"] - t0) // bin_s)
            out.setdefault(series, {})[b] = out.setdefault(series, {}).get(b, 0.0) + rate
    return out


def series(history: analysis.History, bin_s: float = 1.0) -> dict[str, dict[int, float]]:
    """{series label: {bin index: packets/s}} of every series the figure draws (empty series left out)."""
    t0 = history.t0
    out = _rates(list(history.of_kind("stats")),
                 lambda r: {"sent": r.get("packets_out", 0), "received by the node": r.get("packets_in", 0),
                            "dropped by the node": r.get("dropped", 0)}, t0, bin_s)
    out.update(_rates(list(history.of_kind(analysis.XDP_STATS)),
                      lambda r: {f"dropped by XDP: {k}": v for k, v in r.get("dropped", {}).items()}, t0, bin_s))
    out.update(_rates(list(history.of_kind(analysis.NET_STATS)),
                      lambda r: {f"dropped by the network: {k}": v for k, v in r.get("dropped", {}).items()},
                      t0, bin_s))
    return {k: v for k, v in out.items() if any(x > 0 for x in v.values())}


@register("messages")
def messages(history: analysis.History, summary: dict, path: Path, bin_s: float = 1.0) -> None:
    drawn = series(history, bin_s)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    xdp_i = 0
    for name in sorted(drawn, key=_order):
        bins = drawn[name]
        if name.startswith("dropped by XDP"):
            colour, ls = XDP_COLOURS[xdp_i % len(XDP_COLOURS)], "--"
            xdp_i += 1
        elif name.startswith("dropped by the network"):
            colour, ls = NET_COLOURS.get(name.rsplit(" ", 1)[-1], "#000000"), ":"
        else:
            colour, ls = STYLE[name]
        xs = sorted(bins)
        ax.plot([(x + 0.5) * bin_s for x in xs], [bins[x] for x in xs], lw=1.3, label=name, color=colour, ls=ls)
    timeline_axis(ax, history)
    ax.set_ylabel(f"packets per second (all nodes, {bin_s:g} s bins)")
    ax.set_yscale("symlog", linthresh=10)
    ax.set_ylim(bottom=0)
    ax.set_title(title("Messages", summary), fontsize=10)
    legend(ax, len(drawn) + len(history.faults), loc="center left", bbox_to_anchor=(1.0, 0.5))
    save(fig, path)


def _order(name: str) -> tuple[int, str]:
    for i, prefix in enumerate(("sent", "received", "dropped by XDP", "dropped by the node", "dropped by the net")):
        if name.startswith(prefix):
            return i, name
    return 9, name
