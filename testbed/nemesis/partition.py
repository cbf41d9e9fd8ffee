"""partition: cut the network into sides: ``groups`` (lists of node names, or shares of the initial nodes such as
``[50%, 50%]``, resolved by `testbed.scenario.relative`) or ``split`` (the first fraction of the hosts against the
rest). Hosts in no group, nodes that join later included, form one more side together: every
host is on exactly one side, and a message crosses only between nodes of one side. ``via: bpf`` (the fault
program on each host's bridge-side veth end) or ``via: nft`` (a bridge-family table matching addresses, on every
topology shape)."""

from __future__ import annotations

from ..scenario.schema import NUM, one_of
from .base import Active, Fault, register


def sides(params, hosts: list[str]) -> list[list[str]]:
    """The partition's sides over HOSTS (every host, in order): its groups plus the ungrouped ones, or the split."""
    if "groups" in params:
        groups = [list(g) for g in params["groups"]]
        grouped = {n for g in groups for n in g}
        rest = [h for h in hosts if h not in grouped]
        return groups + ([rest] if rest else [])
    cut = max(1, min(len(hosts) - 1, round(len(hosts) * float(params["split"]))))
    return [hosts[:cut], hosts[cut:]]


@register
class Partition(Fault):
    name = "partition"
    colour = "#8c564b"
    fields = {"groups": (list, False, None, None),
              "split": (NUM, False, None, lambda v: None if 0 < v < 1 else "must be in (0, 1)"),
              "via": (str, False, "bpf", one_of("bpf", "nft"))}
    one_required = ("groups", "split")

    def start(self, ctx, step) -> Active:
        groups = sides(step.params, ctx.hosts)
        ctx.cluster.partition(groups, via=step.params.get("via", "bpf"))
        return Active(kind=self.name, name=f"partition {'/'.join(str(len(g)) for g in groups)}", start=ctx.now(),
                      groups=groups)

    def unsupported(self, scenario, step) -> str | None:
        if len(scenario.hosts) < 2:
            return f"a partition needs at least 2 nodes, the scenario has {len(scenario.hosts)}"
        return None

    def stop(self, ctx, active: Active) -> None:
        ctx.cluster.partition([])  # only the partition: a loss window open beside it stays

    def excuses_removal(self, window, observer: str, removed: str) -> bool:
        return True  # a side may lose the other side's heartbeats, and a rumor routed across the cut dies there
