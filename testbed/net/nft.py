"""Network partitions by IPv4 address, enforced by one nft table in the root namespace.

`NftPartition` is the ``via: nft`` partition of a run. The hosts' traffic crosses the run's Linux bridges in the
root namespace, so a bridge-family table with a ``forward`` hook sees every frame between two hosts, whatever the
topology: matching on bridge *ports* (``iifname``/``oifname`` of the hosts' veths) misses frames whose in- or
out-port is a trunk between bridges (``line``, ``ring``, ``tree``), matching on *addresses* does not. The table::

    table bridge xg_<short>_part {
        counter dropped {}                              # every drop of this partition, kept across set()/clear()
        set ports { type ifname; ... }                  # the run's own bridge ports (host veths and trunk ends)
        set hosts { type ipv4_addr; ... }               # every address in some group
        set g0 { type ipv4_addr; ... }                  # one set per group
        chain forward {
            type filter hook forward priority filter; policy accept;
            iifname @ports ip saddr @g0 ip daddr != @g0 ip daddr @hosts counter name "dropped" drop
            ...                                         # one rule per group: O(groups) rules, O(hosts) elements
        }
    }

The rule for group A drops what goes from A to any other group's address, i.e. the same as one ``ip saddr @a ip
daddr @b drop`` per ordered pair of different groups, with fewer rules. ``ip saddr`` implies ``meta protocol ip``:
only IPv4 is matched, so ARP (and everything else that is not IPv4) keeps passing and a healed partition needs no
fresh neighbour resolution. `set` replaces the previous partition in one ``nft -f -`` transaction (the old rules
and sets go and the new ones come in the same commit, so there is no instant with no partition or with two);
`clear` removes the rules and group sets (heal); `counters` reads the ``dropped`` counter.

Several runs can share a subnet (every topology defaults to 10.77.0.0/16) while their bridges are separate, so
the addresses alone would also drop another run's traffic: the rules also require the frame to enter through one of
this run's own bridge ports (``iifname @ports``). ``meta ibrname`` would say the same more directly but is not
supported by the kernels this testbed runs on ("Operation not supported"). The ports are taken from the kernel at
each `set` (links carrying the run's names that are enslaved to a bridge), or given to the constructor.

The table is named ``names.nft_table("part")``, so `cleanup.find_leftovers` finds it if the run is killed before
its teardown; `__exit__` always deletes it, also when the block raised. This module never creates, changes or deletes
a table whose name does not carry the run id, and never matches a port of another run.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Literal, Self

from . import shell as _shell
from .topology import RunNames
from ..errors import CommandError, DeployError, TopologyError

FAMILY = "bridge"
PURPOSE = "part"
CHAIN = "forward"
COUNTER = "dropped"
PORTS_SET = "ports"
HOSTS_SET = "hosts"  # not "all": that is an nft keyword


class NftPartition:
    """A run's address partition in the root namespace's nft: ``with NftPartition(names) as p: p.set(groups)``.

    GROUPS are lists of IPv4 address strings; traffic between addresses of different groups is dropped, traffic
    inside a group and to or from addresses in no group is not. PORTS, if given, are the root-namespace links the
    rules apply to (default: the run's bridge ports, looked up at each `set`); each must carry the run's names.
    """

    def __init__(self, names: RunNames, *, ports: Sequence[str] | None = None) -> None:
        if not isinstance(names, RunNames):
            raise TopologyError("names", f"must be a RunNames, not {names!r}")
        self.names = names
        self.table = names.nft_table(PURPOSE)
        if not names.owns_nft_table(self.table):  # never touch a table that is not this run's
            raise DeployError(f"nft table {self.table!r} does not carry run id {names.run_id!r}")
        if ports is not None:
            ports = tuple(ports)
            for port in ports:
                if not isinstance(port, str) or not names.owns_link(port):
                    raise TopologyError("ports", f"{port!r} is not a link of run {names.run_id}")
            if not ports:
                raise TopologyError("ports", "must not be empty")
        self._ports = ports
        self._sets: tuple[str, ...] = ()  # the sets set() made, which the next set() or clear() deletes
        self._state: Literal["new", "open", "closed"] = "new"

    # --- lifecycle --------------------------------------------------------------------------------------------

    def __enter__(self) -> Self:
        if self._state != "new":
            raise DeployError(f"nft partition {self.table} was already used; make a new one")
        self._state = "open"
        try:
            # "table" then "delete table": replaces a leftover of this very run id (a killed earlier attempt)
            self._apply(
                f"table {FAMILY} {self.table} {{}}\n"
                f"delete table {FAMILY} {self.table}\n"
                f"table {FAMILY} {self.table} {{\n"
                f"  counter {COUNTER} {{}}\n"
                f"  chain {CHAIN} {{\n"
                f"    type filter hook forward priority filter; policy accept;\n"
                f"  }}\n"
                f"}}\n"
            )
        except BaseException as exc:
            self._close(exc)
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._close(exc)

    def close(self) -> None:
        """Delete the table (what leaving the ``with`` block does); idempotent."""
        self._close(None)

    def _close(self, exc: BaseException | None) -> None:
        if self._state == "closed":
            return
        self._state = "closed"
        self._sets = ()
        try:
            done = _shell.run(["nft", "delete", "table", FAMILY, self.table], check=False)
            if done.returncode != 0 and self._table_exists():
                raise CommandError(["nft", "delete", "table", FAMILY, self.table], done.returncode, done.stderr)
        except Exception as err:
            if exc is None:
                raise
            exc.add_note(f"deleting nft table {FAMILY} {self.table} also failed: {err}")

    # --- the partition ----------------------------------------------------------------------------------------

    def set(self, groups: Sequence[Sequence[str]]) -> None:
        """Drop IPv4 traffic between addresses of different GROUPS from now on, replacing any previous partition
        in one transaction. Fewer than two non-empty groups drop nothing."""
        canonical = check_groups(groups)
        self._require_open()
        ports = self._ports if self._ports is not None else self._discover_ports()
        groups_present = [g for g in canonical if g]
        new_sets = [PORTS_SET, HOSTS_SET, *(f"g{i}" for i in range(len(groups_present)))]
        lines = self._unset_lines()
        lines.append(f"table {FAMILY} {self.table} {{")
        lines.append(_set_decl(PORTS_SET, "ifname", (f'"{p}"' for p in ports)))
        lines.append(_set_decl(HOSTS_SET, "ipv4_addr", (a for g in groups_present for a in g)))
        for i, group in enumerate(groups_present):
            lines.append(_set_decl(f"g{i}", "ipv4_addr", group))
        lines.append(f"  chain {CHAIN} {{")
        if len(groups_present) >= 2:
            for i in range(len(groups_present)):
                lines.append(
                    f"    iifname @{PORTS_SET} ip saddr @g{i} ip daddr != @g{i} ip daddr @{HOSTS_SET}"
                    f' counter name "{COUNTER}" drop'
                )
        lines.append("  }")
        lines.append("}")
        self._apply("\n".join(lines) + "\n")
        self._sets = tuple(new_sets)

    def clear(self) -> None:
        """Remove the partition (heal): no rule drops anything afterwards. The counter keeps its value."""
        self._require_open()
        if self._sets:
            self._apply("\n".join(self._unset_lines()) + "\n")
        self._sets = ()

    def counters(self) -> int:
        """Packets this partition has dropped since the ``with`` block was entered (across `set` and `clear`)."""
        self._require_open()
        for entry in _shell.nft_json("list", "table", FAMILY, self.table):
            counter = entry.get("counter")
            if counter and counter.get("name") == COUNTER and counter.get("table") == self.table:
                return int(counter["packets"])
        raise DeployError(f"nft table {FAMILY} {self.table} has no counter {COUNTER!r}")

    # --- helpers ----------------------------------------------------------------------------------------------

    def _unset_lines(self) -> list[str]:
        # rules first: a set still referenced by a rule cannot be deleted (in the same transaction it can)
        lines = [f"flush chain {FAMILY} {self.table} {CHAIN}"]
        lines += [f"delete set {FAMILY} {self.table} {name}" for name in self._sets]
        return lines

    def _apply(self, script: str) -> None:
        assert self.names.owns_nft_table(self.table)
        _shell.nft(script=script)

    def _require_open(self) -> None:
        if self._state != "open":
            raise DeployError(f"nft partition {self.table} is {self._state}, not open: use it in a with block")

    def _table_exists(self) -> bool:
        tables = (e["table"] for e in _shell.nft_json("list", "tables", FAMILY) if "table" in e)
        return any(t.get("name") == self.table for t in tables)

    def _discover_ports(self) -> tuple[str, ...]:
        """The run's links in the root namespace that are ports of one of the run's bridges."""
        owns = self.names.owns_link
        ports = tuple(
            sorted(
                link["ifname"]
                for link in _shell.ip_json("link", "show")
                if owns(link.get("ifname", "")) and owns(link.get("master", ""))
            )
        )
        if not ports:
            raise DeployError(f"run {self.names.run_id} has no bridge ports in the root namespace to partition")
        return ports


def check_groups(groups: Sequence[Sequence[str]]) -> list[list[str]]:
    """GROUPS with each address in canonical form and duplicates inside a group dropped; raise `TopologyError`
    naming the address if one is not IPv4 or is in two groups."""
    if isinstance(groups, (str, bytes)) or not isinstance(groups, Iterable):
        raise TopologyError("groups", f"must be a list of lists of IPv4 addresses, not {groups!r}")
    where: dict[str, int] = {}
    canonical: list[list[str]] = []
    for i, group in enumerate(groups):
        if isinstance(group, (str, bytes)) or not isinstance(group, Iterable):
            raise TopologyError("groups", f"group {i} must be a list of IPv4 addresses, not {group!r}")
        members: list[str] = []
        for address in group:
            if not isinstance(address, str):
                raise TopologyError("groups", f"{address!r} (group {i}) is not an IPv4 address string")
            try:
                ip = str(ipaddress.IPv4Address(address))
            except ValueError:
                raise TopologyError("groups", f"{address!r} (group {i}) is not an IPv4 address") from None
            if ip in where:
                if where[ip] != i:
                    raise TopologyError("groups", f"{ip} is in group {where[ip]} and group {i}")
                continue
            where[ip] = i
            members.append(ip)
        canonical.append(members)
    return canonical


def _set_decl(name: str, kind: str, elements: Iterable[str]) -> str:
    items = ", ".join(elements)
    return f"  set {name} {{ type {kind};" + (f" elements = {{ {items} }}" if items else "") + " }"
