"""Analysis of recorded runs: pure functions of the history (events, fault windows, counters), never of live state.

A run directory holds ``events.jsonl`` (every node's records and the testbed's own, on one clock),
``faults.jsonl`` (fault windows), ``stats.json`` (per-node counters) and, once analysed, ``summary.json``. This
module turns the history into per-node views over time, infection curves per published version and convergence
timelines; the checks (`testbed.checkers`, one module each) judge from those, and `summarize` runs them. The CLI,
the plots, the checks, the tests and the notebooks all use it; none of them re-implements any of it.
"""

from __future__ import annotations

import bisect
import dataclasses
import heapq
import json
import math
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path
from typing import Iterable, Iterator, Mapping

# Records the testbed itself writes into the history (besides the nodes' own kinds).
PROC = "proc"          # a node's process changed state: state = up | down | paused | resumed | heartbeats_off/on
PUBLISH_OP = "publish_op"
KEYS_OP = "keys_op"     # the node was told a new key ring (keys: how many; never the keys)
INJECTED = "injected"  # scapy injection: what, target, count, expect (the drop reason it must be counted under)
XDP_STATS = "xdp_stats"
# A node's namespace's UDP counters (/proc/net/snmp), sampled once per cycle on real hosts: ``rcvbuf_errors`` are
# datagrams the kernel dropped because the node's socket buffer was full; the simulator's socket-buffer model counts
# the same drops under the same name.
UDP_STATS = "udp_stats"
FINAL = "final"        # final read of a node at the end of the run
NET_STATS = "net_stats"  # what the network dropped, cluster-wide, sampled once per cycle (node "network")
NETWORK_DROP_REASONS = ("loss", "partition")  # what both backends' networks count, with the same meaning
# The host's own counters, sampled once per cycle on real hosts (node "host"): /proc/stat's aggregate CPU time per
# field (``cpu_<field>_s``), the testbed process's own CPU (``testbed_cpu_s``) and the run's BPF programs' run
# time (``bpf_<program>_run_ns``, ``bpf_<program>_runs``; they grow only while the kernel's BPF statistics are on,
# `bpf._sys.bpf_stats_enabled`). Packet work in softirq is charged to whichever task was running, so the host's
# busy CPU, softirq included, is what compares kernel paths (`host_cpu`, `bpf_run`).
HOST_STATS = "host_stats"
HOST_CPU_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")  # /proc/stat's order
HOST_IDLE_FIELDS = ("idle", "iowait")


def network_drops(counters: Mapping[str, int]) -> dict[str, int]:
    """Packets the network dropped per reason (`NETWORK_DROP_REASONS`), from either backend's network counters
    (netns: the fault programs' ``from_node_dropped_loss``, ``to_node_dropped_partition``, an nft partition's
    ``bridge_dropped_partition``; simulator: ``dropped_loss``, ``dropped_partition``)."""
    out = dict.fromkeys(NETWORK_DROP_REASONS, 0)
    for k, v in counters.items():
        for reason in NETWORK_DROP_REASONS:
            if k.endswith(f"dropped_{reason}") and isinstance(v, int):
                out[reason] += v
    return out


@dataclass(frozen=True, slots=True, kw_only=True)
class FaultWindow:
    name: str
    kind: str
    start: float
    end: float
    nodes: tuple[str, ...] = ()  # empty: every node

    def covers(self, node: str) -> bool:
        return not self.nodes or node in self.nodes

    def overlaps(self, t0: float, t1: float) -> bool:
        return self.start <= t1 and t0 <= self.end


@dataclass(slots=True)
class History:
    events: list[dict]
    faults: list[FaultWindow]
    meta: dict = field(default_factory=dict)  # scenario name, run start, cycle_s, timeout_s, node names ...
    stats: dict = field(default_factory=dict)  # stats.json: {"nodes": {name: packet, drop, XDP, fault counters}}

    @property
    def t0(self) -> float:
        return self.meta.get("t0", self.events[0]["t"] if self.events else 0.0)

    def of_kind(self, *kinds: str) -> Iterable[dict]:
        return (e for e in self.events if e["kind"] in kinds)


def read_jsonl(path: Path) -> list[dict]:
    out = []
    if not path.exists():
        return out
    # A run repeats a few keys and names millions of times; json gives each record its own copies. Sharing them
    # within the file holds a run in less than half the memory (4M records at 2,000 simulated nodes) for ~20 % more
    # parse time. A memo per file, not sys.intern: interned strings outlive the run on Python 3.12 (immortal there).
    share = {}.setdefault

    def shared(pairs: list[tuple[str, object]]) -> dict:
        return {share(k, k): (share(v, v) if type(v) is str else v) for k, v in pairs}

    decode = json.JSONDecoder(object_pairs_hook=shared).decode
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                out.append(decode(line))
            except json.JSONDecodeError:
                continue  # a node killed mid-write leaves a torn last line: skip it
    return out


def load_history(run_dir: Path | str) -> History:
    run_dir = Path(run_dir)
    events = sorted(read_jsonl(run_dir / "events.jsonl"), key=lambda e: e["t"])
    faults = [FaultWindow(name=f["name"], kind=f["kind"], start=f["start"], end=f["end"],
                          nodes=tuple(f.get("nodes") or ())) for f in read_jsonl(run_dir / "faults.jsonl")]
    meta = json.loads((run_dir / "meta.json").read_text()) if (run_dir / "meta.json").exists() else {}
    stats = json.loads((run_dir / "stats.json").read_text()) if (run_dir / "stats.json").exists() else {}
    return History(events=events, faults=faults, meta=meta, stats=stats)


# ---- truth: which nodes were live when ----------------------------------------------------------------------

def _liveness_records(history: History) -> Iterator[tuple[float, str, bool]]:
    """(time, node, live) each time a node's liveness flips, in history order, from the testbed's `proc` records."""
    state: dict[str, dict] = {}
    for e in history.of_kind(PROC):
        n = e["node"]
        s = state.get(n)
        if s is None:
            s = state[n] = {"up": False, "paused": False, "hb": True, "live": None}
        st = e["state"]
        if st == "up":
            s.update(up=True, paused=False, hb=True)
        elif st == "down":
            s.update(up=False, paused=False)
        elif st in ("paused", "resumed"):
            s["paused"] = st == "paused"
        elif st in ("heartbeats_off", "heartbeats_on"):
            s["hb"] = st == "heartbeats_on"
        live = s["up"] and not s["paused"] and s["hb"]
        if s["live"] is not live:  # the first record of a node always counts, even a down one
            s["live"] = live
            yield e["t"], n, live


class Liveness:
    """The true state of every node over time, from the testbed's own `proc` records.

    A node is *live* while its process runs, is not paused and sends heartbeats: that is the set every view
    should converge to.
    """

    def __init__(self, history: History) -> None:
        self.changes: dict[str, list[tuple[float, bool]]] = {}
        for t, n, live in _liveness_records(history):
            self.changes.setdefault(n, []).append((t, live))
        self.nodes = sorted(self.changes, key=node_order)

    def is_live(self, node: str, t: float) -> bool:
        ch = self.changes.get(node, [])
        i = bisect.bisect_right(ch, (t, True)) - 1
        return i >= 0 and ch[i][1]

    def live_set(self, t: float) -> frozenset[str]:
        return frozenset(n for n in self.nodes if self.is_live(n, t))

    def live_throughout(self, node: str, t0: float, t1: float) -> bool:
        if not self.is_live(node, t0):
            return False
        return all(live for t, live in self.changes.get(node, []) if t0 < t <= t1)

    def change_times(self) -> list[float]:
        return sorted(t for ch in self.changes.values() for t, _ in ch)


def node_order(name: str) -> tuple[int, str]:
    """The sort key that puts n2 before n10."""
    return (len(name), name)


# ---- views ---------------------------------------------------------------------------------------------------

_RESET, _ADD, _REMOVE, _DOWN = range(4)  # what one record does to its node's view


def _view_records(history: History) -> Iterator[tuple[float, str, int, str]]:
    """(time, node, op, member) for every record that changes a node's own member list, in history order.

    Members are named by node id (a seed is known by address before its name is); an id no node started with is
    named ``#<hex id>``. A node's records count only while its process runs (from its `started` to its `down`).
    """
    names: dict[int, str] = {}
    for e in history.of_kind("started"):
        names[e["node_id"]] = e["node"]
    # the run ends at its final reads: what the nodes record after them is the teardown (each node leaves on
    # SIGTERM, so the others record member_left), not part of what the views are judged on
    end = max((e["t"] for e in history.of_kind(FINAL)), default=math.inf)
    running: set[str] = set()
    for e in history.events:
        if e["t"] > end:
            continue
        k, n = e["kind"], e.get("node")
        if k == "started":
            running.add(n)
            yield e["t"], n, _RESET, n
        elif k == "member_added" and n in running:
            yield e["t"], n, _ADD, names.get(e["node_id"], f"#{e['node_id']:08x}")
        elif k in ("member_removed", "member_left") and n in running:  # left: announced, not a death
            yield e["t"], n, _REMOVE, names.get(e["node_id"], f"#{e['node_id']:08x}")
        elif k == PROC and e["state"] == "down" and n in running:
            running.discard(n)
            yield e["t"], n, _DOWN, n


class Views:
    """Each node's member list over time, rebuilt from its own started / member_added / member_removed / member_left
    records.

    The records are kept as a log per node and replayed on demand: a full snapshot per record would cost O(N) each,
    and a cluster of N nodes makes O(N^2) of them. Queries at increasing times (as every caller makes them) continue
    the previous replay.
    """

    def __init__(self, history: History) -> None:
        self._times: dict[str, list[float]] = {}
        self._log: dict[str, list[tuple[int, str]]] = {}
        for t, n, op, who in _view_records(history):
            self._times.setdefault(n, []).append(t)
            self._log.setdefault(n, []).append((op, who))
        self._cursor: dict[str, tuple[int, set[str]]] = {}  # node -> (records applied, the view after them)

    def view(self, node: str, t: float) -> frozenset[str]:
        times = self._times.get(node)
        if not times:
            return frozenset()
        upto = bisect.bisect_right(times, t)
        applied, current = self._cursor.get(node, (0, set()))
        if upto < applied:  # an earlier time than the last query: replay from the start
            applied, current = 0, set()
        for op, who in self._log[node][applied:upto]:
            if op == _RESET:
                current = {who}
            elif op == _ADD:
                current.add(who)
            elif op == _REMOVE:
                current.discard(who)
            else:
                current = set()
        self._cursor[node] = (upto, current)
        return frozenset(current)

    def change_times(self) -> list[float]:
        return sorted(t for times in self._times.values() for t in times)


def convergence_curve(history: History, step_s: float = 0.25) -> list[tuple[float, float]]:
    """(seconds since t0, fraction of live nodes whose view equals the live set)."""
    live, views = Liveness(history), Views(history)
    if not history.events:
        return []
    t0, t_end = history.t0, history.events[-1]["t"]
    out = []
    t = t0
    while t <= t_end + 1e-9:
        ls = live.live_set(t)
        ok = sum(views.view(n, t) == ls for n in ls)
        out.append((round(t - t0, 3), ok / len(ls) if ls else 1.0))
        t += step_s
    return out


# ---- convergence: when a property of every live node held ----------------------------------------------------

@dataclass(frozen=True, slots=True, kw_only=True)
class Timeline:
    """When a property of the whole cluster held ("every live node's view equals the live set", "every live node
    holds version V"): a step function of time, judged after all records of each instant. It never holds while no
    node is live.

    Convergence is read off the end: `stable_from` is the time from which it held to the end of the history, which
    is what a convergence limit is about; `first` is merely when it first held, and `breaks` when it stopped again.
    """

    changes: tuple[tuple[float, bool], ...]  # (time, holds from then on), alternating, the first one True
    end: float  # the time of the history's last record
    live_at_end: int = 0  # how many nodes were live at the end
    failing: tuple[str, ...] = ()  # the live nodes it did not hold for at the end

    def holds_at(self, t: float) -> bool:
        i = bisect.bisect_right(self.changes, (t, True)) - 1
        return i >= 0 and self.changes[i][1]

    def first(self, after: float) -> float | None:
        """The first time >= AFTER at which it held."""
        if self.holds_at(after):
            return after
        return next((t for t, holds in self.changes if holds and t > after), None)

    def stable_from(self, after: float) -> float | None:
        """The earliest time >= AFTER from which it held at every instant to the end; None if it did not hold at
        the end."""
        if not self.changes or not self.changes[-1][1]:
            return None
        return max(after, self.changes[-1][0])

    def breaks(self, after: float) -> list[float]:
        """The times it stopped holding again after first holding at or after AFTER."""
        first = self.first(after)
        if first is None:
            return []
        return [t for t, holds in self.changes if not holds and t > first]


def _replay(records: Iterable[tuple], apply, holds) -> list[tuple[float, bool]]:
    """Feed time-ordered RECORDS to APPLY and judge HOLDS() after the last record of each instant: the changes."""
    changes: list[tuple[float, bool]] = []
    state, now = False, None
    for r in records:
        t = r[0]
        if t != now:
            if now is not None and holds() is not state:
                state = not state
                changes.append((now, state))
            now = t
        apply(r)
    if now is not None and holds() is not state:
        changes.append((now, not state))
    return changes


def membership_timeline(history: History) -> Timeline:
    """When every live node's view equalled the live set, in one forward pass over the history.

    Each node's distance from the truth, |view △ live set|, is kept up to date: a view record moves it by one, in
    O(1); a node becoming live or not moves every node's by one, in O(N) — O(N^2) over a run, like the views
    themselves. The property holds while no live node is at a distance, so no change costs a set comparison.
    """
    end = history.events[-1]["t"] if history.events else 0.0
    live: set[str] = set()
    view: dict[str, set[str]] = {}
    off: dict[str, int] = {}  # node -> |view △ live set|
    wrong = 0  # live nodes whose view is off

    def known(n: str) -> None:
        if n not in view:
            view[n], off[n] = set(), len(live)

    def apply(r: tuple) -> None:
        nonlocal wrong
        if len(r) == 3:  # (t, node, live): the truth changed, every node's distance moves
            _, x, up = r
            known(x)
            if up == (x in live):  # a node's first record, when it is not live: nothing changes
                return
            if up:
                live.add(x)
            else:
                live.discard(x)
            for n, v in view.items():
                off[n] += (-1 if x in v else 1) if up else (1 if x in v else -1)
            wrong = sum(1 for n in live if off[n])
            return
        _, n, op, who = r
        known(n)
        v, before = view[n], off[n]
        if op == _RESET:
            view[n] = {n}
            off[n] = len(live) - 1 if n in live else len(live) + 1
        elif op == _DOWN:
            view[n] = set()
            off[n] = len(live)
        elif op == _ADD:
            if who not in v:
                v.add(who)
                off[n] += -1 if who in live else 1
        elif who in v:
            v.discard(who)
            off[n] += 1 if who in live else -1
        if n in live:
            wrong += (off[n] != 0) - (before != 0)

    records = heapq.merge(_liveness_records(history), _view_records(history), key=itemgetter(0))
    changes = _replay(records, apply, lambda: bool(live) and wrong == 0)
    failing = tuple(sorted((n for n in live if off[n]), key=node_order))
    return Timeline(changes=tuple(changes), end=end, live_at_end=len(live), failing=failing)


def metadata_timeline(history: History, version: tuple[int, int]) -> Timeline:
    """When every live node held VERSION (a (version, origin) key) or a newer one, in one forward pass: a node
    holds what it last adopted, and a restarted node (its `started` record) holds nothing."""
    end = history.events[-1]["t"] if history.events else 0.0
    live: set[str] = set()
    held: dict[str, bool] = {}
    lacking = 0  # live nodes without it

    def apply(r: tuple) -> None:
        nonlocal lacking
        if len(r) == 3:
            _, n, up = r
            if up and n not in live:
                live.add(n)
                lacking += not held.get(n, False)
            elif not up and n in live:
                live.discard(n)
                lacking -= not held.get(n, False)
            return
        _, e = r
        n = e["node"]
        has = e["kind"] == "metadata_adopted" and version_key(e) >= version
        if n in live and has != held.get(n, False):
            lacking += -1 if has else 1
        held[n] = has

    values = ((e["t"], e) for e in history.of_kind("metadata_adopted", "started"))
    records = heapq.merge(_liveness_records(history), values, key=itemgetter(0))
    changes = _replay(records, apply, lambda: bool(live) and lacking == 0)
    failing = tuple(sorted((n for n in live if not held.get(n, False)), key=node_order))
    return Timeline(changes=tuple(changes), end=end, live_at_end=len(live), failing=failing)


def converged_at(history: History, after: float) -> float | None:
    """The earliest time >= AFTER from which every live node's view equalled the live set to the end of the
    history (absolute time); None if views were not right at the end."""
    return membership_timeline(history).stable_from(after)


def first_converged_at(history: History, after: float) -> float | None:
    """The first time >= AFTER at which every live node's view equalled the live set, whether or not it lasted."""
    return membership_timeline(history).first(after)


# ---- rumors --------------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True, kw_only=True)
class Rumor:
    version: int
    origin: int
    origin_node: str
    published_at: float
    coverage: tuple[tuple[float, float], ...]  # (seconds since publish, fraction of live nodes holding it or newer)
    t50: float | None
    t90: float | None
    t100: float | None
    messages: int

    def to_json(self) -> dict:
        return {"version": self.version, "origin": self.origin, "origin_node": self.origin_node,
                "published_at": self.published_at, "coverage": [list(p) for p in self.coverage],
                "t50": self.t50, "t90": self.t90, "t100": self.t100, "messages": self.messages}


def version_key(e: dict) -> tuple[int, int]:
    """The order of metadata versions: (version, origin), newest last."""
    return (e["version"], e["origin"])


def rumors(history: History) -> list[Rumor]:
    """One infection curve per published version: who held it (or something newer) when."""
    live = Liveness(history)
    adoptions: dict[str, list[tuple[float, tuple[int, int]]]] = {}
    for e in history.of_kind("metadata_adopted", "started"):
        if e["kind"] == "started":
            adoptions.setdefault(e["node"], []).append((e["t"], (0, 0)))  # a restarted node starts empty
        else:
            adoptions.setdefault(e["node"], []).append((e["t"], version_key(e)))
    stats = [e for e in history.of_kind("stats")]
    out = []
    for pub in (e for e in history.of_kind("metadata_adopted") if e["via"] == "publish"):
        v, t_pub = version_key(pub), pub["t"]
        population = live.live_set(t_pub) | {pub["node"]}
        first: dict[str, float] = {}
        for n in population:
            for t, held in adoptions.get(n, []):
                if t >= t_pub - 1e-9 and held >= v:
                    first[n] = t
                    break
        times = sorted(max(0.0, t - t_pub) for t in first.values())
        # the denominator: nodes of the population still live at the end of the curve (crashed ones are excused)
        t_last = t_pub + (times[-1] if times else 0.0)
        denom = [n for n in population if n in first or live.is_live(n, t_last)] or list(population)
        coverage = tuple((round(dt, 4), round((i + 1) / len(denom), 4)) for i, dt in enumerate(times))

        def t_at(frac):
            for dt, f in coverage:
                if f >= frac - 1e-9:
                    return dt
            return None
        t100 = t_at(1.0)
        end = t_pub + (t100 if t100 is not None else 60.0)
        msgs = sent_between(stats, t_pub, end, ("sent_metadata",))
        out.append(Rumor(version=v[0], origin=v[1], origin_node=pub["node"], published_at=t_pub,
                         coverage=coverage, t50=t_at(0.5), t90=t_at(0.9), t100=t100, messages=msgs))
    return out


def counter_growth(stats: list[dict], t0: float, t1: float, keys: tuple[str, ...], *,
                   throughout: bool = True) -> tuple[dict[str, float], float]:
    """Each counter of KEYS grown over [T0, T1], summed over nodes, and the node-seconds that growth covers.

    A node's growth is taken between its stats records that bracket the window: its last record at or before T0
    and its first at or after T1. Records come about once a period, so the bracket is wider than the window, by up
    to a period on each side: a rate is ``growth / node_seconds`` (the brackets' own spans), never
    ``growth / (T1 - T0)``, which over-counts by up to two periods per node.

    THROUGHOUT (rates): only nodes up throughout count: a record on both sides, and no counter lower after than
    before (a process that restarted in between starts its counters again; its bracket holds the time it was
    down). Otherwise (counts of what a window cost, such as the copies of one rumor): a node that started inside
    the window counts from zero, one that ended inside it up to its last record, and one that restarted from
    zero again; node-seconds then cover only the nodes up throughout.
    """
    per_node: dict[str, list[dict]] = {}
    for s in stats:
        per_node.setdefault(s["node"], []).append(s)
    total, node_s = dict.fromkeys(keys, 0.0), 0.0
    for recs in per_node.values():
        before = [r for r in recs if r["t"] <= t0]
        after = [r for r in recs if r["t"] >= t1]
        if not (before and after) and (throughout or recs[-1]["t"] < t0):
            continue  # not up throughout the window (or gone before it began)
        r0, r1 = (before[-1] if before else {}), (after[0] if after else recs[-1])
        restarted = any(r1.get(k, 0) < r0.get(k, 0) for k in keys)
        if before and after and not restarted:
            node_s += r1["t"] - r0["t"]
        elif throughout:
            continue
        for k in keys:
            total[k] += r1.get(k, 0) - (0 if restarted else r0.get(k, 0))
    return total, node_s


def proc_stat_cpu(text: str, ticks_per_s: float) -> dict[str, float]:
    """The aggregate ``cpu`` line of /proc/stat (TEXT) as CPU-seconds per field of `HOST_CPU_FIELDS`, keyed
    ``cpu_<field>_s``; TICKS_PER_S is USER_HZ (``os.sysconf("SC_CLK_TCK")``). Guest time is already inside user and
    nice, so it is not read. Fields an old kernel lacks are left out."""
    for line in text.splitlines():
        parts = line.split()
        if parts and parts[0] == "cpu":
            return {f"cpu_{name}_s": round(int(v) / ticks_per_s, 3) for name, v in zip(HOST_CPU_FIELDS, parts[1:])}
    raise ValueError("no aggregate 'cpu' line in /proc/stat")


def host_cpu(records: list[dict], t0: float, t1: float) -> dict[str, float] | None:
    """The host's CPU over [T0, T1] in cores (CPU-seconds per second), from its `HOST_STATS` records: each field of
    `HOST_CPU_FIELDS`, and ``busy``, every field but idle and iowait (softirq, irq and steal included). A rate over
    the records bracketing the window (`counter_growth`); None if no two records bracket it."""
    keys = tuple(f"cpu_{f}_s" for f in HOST_CPU_FIELDS)
    grown, span = counter_growth(records, t0, t1, keys)
    if span <= 0:
        return None
    cores = {f: grown[f"cpu_{f}_s"] / span for f in HOST_CPU_FIELDS}
    cores["busy"] = sum(v for f, v in cores.items() if f not in HOST_IDLE_FIELDS)
    return cores


def bpf_run(records: list[dict], t0: float, t1: float) -> dict[str, dict[str, float]]:
    """Each BPF program's runs over [T0, T1], from the `HOST_STATS` records: ``runs_per_s``, ``ns_per_run`` and
    ``cores`` (its run time per second). All zero if kernel.bpf_stats_enabled was off; {} with no two records
    bracketing the window."""
    names = sorted({k[len("bpf_"):-len("_runs")] for r in records for k in r
                    if k.startswith("bpf_") and k.endswith("_runs")})
    keys = tuple(k for n in names for k in (f"bpf_{n}_run_ns", f"bpf_{n}_runs"))
    grown, span = counter_growth(records, t0, t1, keys)
    if span <= 0:
        return {}
    return {n: {"runs_per_s": grown[f"bpf_{n}_runs"] / span,
                "ns_per_run": grown[f"bpf_{n}_run_ns"] / grown[f"bpf_{n}_runs"] if grown[f"bpf_{n}_runs"] else 0.0,
                "cores": grown[f"bpf_{n}_run_ns"] / 1e9 / span} for n in names}


def sent_between(stats: list[dict], t0: float, t1: float, keys: tuple[str, ...]) -> int:
    """What the window cost: the growth of counters KEYS over [T0, T1] summed over nodes and keys, counting nodes
    that started or stopped inside it (see `counter_growth`; for a rate use its node-seconds)."""
    return int(sum(counter_growth(stats, t0, t1, keys, throughout=False)[0].values()))


# ---- the run's verdicts --------------------------------------------------------------------------------------

def recovery_start(history: History) -> float:
    """When recovery began: the end of the last fault window (injections are instants, not windows), or, with no
    fault at all, the end of the timeline. Convergence limits (`within_s`) count from here."""
    ends = [f.end for f in history.faults if f.kind != "inject"]
    if ends:
        return max(ends)
    return history.meta.get("recovery_start") or history.t0


def publishes(history: History) -> list[dict]:
    """The `metadata_adopted` records of every publish, in time order."""
    return [e for e in history.of_kind("metadata_adopted") if e["via"] == "publish"]


def finals(history: History) -> dict[str, dict]:
    """Each node's final read (taken at the end of the run, after recovery)."""
    return {e["node"]: e for e in history.of_kind(FINAL)}


def _convergence(timeline: Timeline, after: float) -> dict:
    at, first = timeline.stable_from(after), timeline.first(after)
    return {"converged_at": at, "first_converged_at": first, "breaks": len(timeline.breaks(after))}


def summarize(history: History, checks: Mapping[str, Mapping], stats: dict | None = None) -> dict:
    """Run CHECKS ({check name: its parameters}, see `testbed.checkers.REGISTRY`) on HISTORY and summarize the run.

    STATS, when given, stands in for ``history.stats`` (callers that hold the counters already pass them).
    Membership convergence is reported per fault window: ``converged_at`` is when views were right from then on to
    the end of the run, ``first_converged_at`` when they were first right, ``breaks`` how often they broke between.
    """
    from .checkers import REGISTRY  # the checks import this module

    if stats is not None:
        history = dataclasses.replace(history, stats=stats)
    unknown = [name for name in checks if name not in REGISTRY]
    if unknown:
        raise ValueError(f"unknown check {unknown[0]!r} (known: {', '.join(REGISTRY)})")
    results = [REGISTRY[name].fn(history, checks[name] or {}) for name in checks]
    timeline = membership_timeline(history)
    windows = []
    for f in history.faults:
        c = _convergence(timeline, f.end)
        windows.append({"fault": f.name, "kind": f.kind, "end": f.end, "converged_at": c["converged_at"],
                        "seconds_after_end": None if c["converged_at"] is None else round(c["converged_at"] - f.end, 3),
                        "first_converged_at": c["first_converged_at"], "breaks": c["breaks"]})
    start = recovery_start(history)
    end = _convergence(timeline, start)
    totals = {"packets_in": 0, "packets_out": 0, "dropped": 0, "xdp_dropped": 0, "xdp_passed": 0}
    for s in history.stats.get("nodes", {}).values():
        totals["packets_in"] += s.get("packets_in", 0)
        totals["packets_out"] += s.get("packets_out", 0)
        totals["dropped"] += sum(s.get("dropped", {}).values())
        totals["xdp_dropped"] += sum(s.get("xdp", {}).get("dropped", {}).values())
        totals["xdp_passed"] += s.get("xdp", {}).get("passed", 0)
    return {
        "scenario": history.meta.get("scenario"),
        "backend": history.meta.get("backend"),
        "nodes": history.meta.get("nodes"),
        "seed": history.meta.get("seed"),
        "xdp": history.meta.get("xdp"),
        "passed": all(r.passed is not False for r in results),
        "checks": [r.to_json() for r in results],
        "rumors": [r.to_json() for r in rumors(history)],
        "membership": {"windows": windows, "converged_at": end["converged_at"],
                       "seconds_after_recovery": None if end["converged_at"] is None else
                       round(end["converged_at"] - start, 3),
                       "first_converged_at": end["first_converged_at"],
                       "first_seconds_after_recovery": None if end["first_converged_at"] is None else
                       round(end["first_converged_at"] - start, 3),
                       "breaks": end["breaks"]},
        "packets": totals,
    }


def ks_distance(a: list[float], b: list[float]) -> float:
    """Kolmogorov–Smirnov distance between two samples (e.g. infection times of two runs)."""
    if not a or not b:
        return 1.0
    a, b = sorted(a), sorted(b)
    d = 0.0
    for x in a + b:
        fa = bisect.bisect_right(a, x) / len(a)
        fb = bisect.bisect_right(b, x) / len(b)
        d = max(d, abs(fa - fb))
    return d


# ---- runs as data (the API notebooks and the CLI share) --------------------------------------------------------

def load_summary(run_dir: Path | str) -> dict:
    return json.loads((Path(run_dir) / "summary.json").read_text())


def infection_times(summary: dict, index: int = 0) -> list[float]:
    """Seconds from publish to each node's first holding of rumor INDEX (the samples its curve is made of)."""
    rumor = summary["rumors"][index]
    return [dt for dt, _ in rumor["coverage"]]


def compare_runs(run_a: Path | str, run_b, index: int | None = 0) -> dict:
    """Kolmogorov–Smirnov distance between the infection-time distributions of rumor INDEX in two runs.

    With INDEX None, every rumor's infection times are pooled (for runs that published the same number of times).
    RUN_B may be a list of runs (e.g. one scenario on the simulator under several seeds): their samples are pooled,
    which compares RUN_A with the model's expected curve rather than with one draw of it; ``per_run`` then holds
    each one's own distance.
    """
    a = load_summary(run_a)
    bs = [load_summary(d) for d in ([run_b] if isinstance(run_b, (str, Path)) else list(run_b))]

    def times(s):
        picks = range(len(s["rumors"])) if index is None else [index]
        return [t for i in picks for t in infection_times(s, i)]

    def about(ss, samples):
        rs = [r for s in ss for r in (s["rumors"] if index is None else [s["rumors"][index]])]
        return {"backend": ss[0]["backend"], "nodes": ss[0]["nodes"], "runs": len(ss), "rumors": len(rs),
                "samples": len(samples), "t50": _median([r["t50"] for r in rs]),
                "t100": _median([r["t100"] for r in rs])}
    ta = times(a)
    tbs = [times(s) for s in bs]
    tb = [t for x in tbs for t in x]
    return {"ks": ks_distance(ta, tb), "per_run": [ks_distance(ta, x) for x in tbs], "a": about([a], ta),
            "b": about(bs, tb)}


def _median(xs):
    xs = sorted(x for x in xs if x is not None)
    return xs[len(xs) // 2] if xs else None


def hop_latency_samples_ms(run_dir: Path | str) -> list[float]:
    """One-hop delivery latencies measured in a recorded run, in milliseconds.

    With heartbeat refreshes recorded (``record_refreshes``), every heartbeat rumor is a sample source: its
    sequence is the origin's send time in µs (same machine, same clock), and the first ``fanout`` nodes to accept
    it are its direct targets, so each of their delays is one hop end to end, measured under the cluster's
    ordinary load. Otherwise the first ``fanout`` adoptions after each publish give the samples.
    """
    history = load_history(run_dir)
    fanout = int(history.meta.get("fanout", 3))
    by_rumor: dict[tuple[int, int], list[float]] = {}
    for e in history.of_kind("member_refreshed"):
        by_rumor.setdefault((e["node_id"], e["seq"]), []).append(e["t"])
    out = []
    for (_, seq), times in by_rumor.items():
        out.extend(1000.0 * (t - seq / 1e6) for t in sorted(times)[:fanout])
    if out:
        return [x for x in out if x >= 0]
    for r in rumors(history):
        out.extend(1000.0 * dt for dt, _ in r.coverage[1:1 + fanout] if dt > 0)
    return out


@dataclass(frozen=True, slots=True)
class Hop:
    """One copy of a metadata rumor: SENDER sent it at SENT; RECEIVER first held that version DELAY_S later.

    WON says the receiver took it from this very copy. A copy that lost the race (the receiver had the version, or
    took it from another copy, first) still tells that this link was slower than DELAY_S: a right-censored sample.
    """

    version: int
    sender: str
    receiver: str
    sent: float
    delay_s: float
    won: bool


def rumor_hops(history: History) -> list[Hop]:
    """Every copy of every metadata rumor, from the nodes' ``metadata_sent`` records (their targets) and
    ``metadata_adopted`` ones (when, and from whom, each node took each version). Copies to nodes that never held
    the version are left out."""
    endpoint = {f"{e['addr']}:{e['port']}": e["node"] for e in history.of_kind("started")}
    adopted: dict[tuple[str, tuple[int, int]], dict] = {}
    for e in history.of_kind("metadata_adopted"):
        adopted.setdefault((e["node"], version_key(e)), e)
    out = []
    for e in history.of_kind("metadata_sent"):
        for target in e["targets"]:
            receiver = endpoint.get(target)
            got = adopted.get((receiver, version_key(e)))
            if got is None:
                continue
            won = got["via"] == "rumor" and endpoint.get(got.get("src", "")) == e["node"]
            out.append(Hop(e["version"], e["node"], receiver, e["t"], got["t"] - e["t"], won))
    return out


def kaplan_meier(samples: Iterable[tuple[float, bool]]) -> tuple[list[float], list[float], float]:
    """The product-limit estimate of a delay distribution from (delay, observed) pairs, where observed False means
    only "longer than delay" is known (right-censored). Returns the observed delays, the probability mass at each,
    and the mass left beyond the longest observed delay (copies that, as far as the data tells, never arrive)."""
    pts = sorted(samples)
    at_risk, survival = len(pts), 1.0
    times: list[float] = []
    mass: list[float] = []
    i = 0
    while i < len(pts):
        t, events, ties = pts[i][0], 0, 0
        while i < len(pts) and pts[i][0] == t:
            events += bool(pts[i][1])
            ties += 1
            i += 1
        if events:
            p = survival * events / at_risk
            times.append(t)
            mass.append(p)
            survival -= p
        at_risk -= ties
    return times, mass, max(survival, 0.0)


def rumor_hop_latency_ms(run_dir: Path | str, per: str = "copy", quantiles: int = 1000) -> list[float]:
    """One-hop latency of metadata rumors in a recorded run, as QUANTILES equally likely values in milliseconds.

    A hop runs from the sender's record (taken just before its sends go out) to the receiver's adoption record,
    so it holds everything a real hop costs: the send, the wire, the receiver's wake-up and its processing, under
    the load the rumor itself makes.

    PER "copy": the latency of any one copy. Copies that lost the race are right-censored samples (see `Hop`), and
    the Kaplan–Meier estimate uses them, so this is not biased towards the fastest of several copies. It is the
    model for a network whose delay belongs to each link (netem on every veth).

    PER "receiver": the delay of the copy each node took the rumor from. When the delay is the receiving process
    waiting to be scheduled, every copy that reaches a waiting node shares that one wait: this is then the
    distribution of the wait itself, the simulator's wake-up model.

    PER "publisher": the first hops only, from each publisher to the nodes that took its copies: the delay of a hop
    before the rumor itself loads the host (the CPU model adds that load).
    """
    history = load_history(run_dir)
    hops = rumor_hops(history)
    if per == "publisher":
        publishers = {(e["node"], e["version"]) for e in history.of_kind("metadata_adopted") if e["via"] == "publish"}
        times = sorted(h.delay_s for h in hops if h.won and (h.sender, h.version) in publishers)
        mass = [1.0] * len(times)
    elif per == "receiver":
        times = sorted(h.delay_s for h in hops if h.won)
        mass = [1.0] * len(times)
    elif per == "copy":
        times, mass, _ = kaplan_meier((h.delay_s, h.won) for h in hops if h.won or h.delay_s > 0)
    else:
        raise ValueError(f"per: must be copy, receiver or publisher, got {per!r}")
    if not times:
        return []
    total = sum(mass)  # a tail beyond the last observed delay is left out: no copy measured it
    cdf, acc = [], 0.0
    for m in mass:
        acc += m / total
        cdf.append(acc)
    out = []
    for k in range(quantiles):
        i = min(bisect.bisect_left(cdf, (k + 0.5) / quantiles), len(times) - 1)
        out.append(1000.0 * times[i])
    return out


def _history(run_dir: Path | str | History) -> History:
    """RUN_DIR's history, or RUN_DIR itself when it is one (callers that read several measures load it once)."""
    return run_dir if isinstance(run_dir, History) else load_history(run_dir)


def _quantiles(times: list[float], quantiles: int) -> list[float]:
    """QUANTILES equally likely values of the sorted TIMES (empty when there are none)."""
    if not times:
        return []
    return [times[min(int((k + 0.5) / quantiles * len(times)), len(times) - 1)] for k in range(quantiles)]


def timer_lateness_ms(run_dir: Path | str, quantiles: int = 1000) -> list[float]:
    """How late the nodes' timers ran on a recorded run, as QUANTILES equally likely values in milliseconds.

    Each ``stats`` record's ``timer_late_s`` is how long a node process that asked to be woken at a time waited
    beyond it for a core: the wake-up delay of a sleeping process on that host, under that run's load, measured
    about once per cycle per node at every phase of the cycle. It is read from the run's own timer traffic, not
    from the rumor curves the simulator is compared with.
    """
    history = _history(run_dir)
    return _quantiles(sorted(1000.0 * e["timer_late_s"] for e in history.of_kind("stats") if "timer_late_s" in e),
                      quantiles)


def direct_heartbeat_hops_ms(run_dir: Path | str, quantiles: int = 1000) -> list[float]:
    """One-hop delays of heartbeats taken straight from their origin on a recorded run (the stats records'
    ``hb_hop_ms``, see `gossip.GossipCore.take_direct_hops`), as QUANTILES equally likely values in ms.

    A heartbeat's sequence is its send time in microseconds, so each delay is the hop itself. (Until heartbeat
    sequences were microseconds they were whole milliseconds, each delay up to 1 ms long; taking the mean of that
    error, 0.5 ms, off every sample kept the median but spread the distribution over ±0.5 ms, a sixth of it at
    zero: the simulator's quickest hops ran far too fast.) This is the run's own idle traffic: every node's
    heartbeat, every cycle, at every phase, none of it a rumor.
    """
    return _quantiles(sorted(direct_heartbeat_hop_samples_ms(_history(run_dir))), quantiles)


def direct_heartbeat_hop_samples_ms(history: History) -> list[float]:
    """Every direct heartbeat hop delay the stats records of HISTORY list (``hb_hop_ms``), in record order."""
    return [max(h, 0.0) for e in history.of_kind("stats") for h in e.get("hb_hop_ms", ())]


def stats_samples_ms(run_dir: Path | str, field: str) -> list[float]:
    """Every value of the list FIELD in the stats records of a recorded run, sorted (``hb_cpu_ms``,
    ``other_cpu_ms``, ``md_handle_ms``, ...: see `gossip.Node`); empty if none has it."""
    return sorted(x for e in _history(run_dir).of_kind("stats") for x in e.get(field, ()))


# Where a simulated delay can be measured from in a recorded run: name -> (what it measures, its reader).
# The scenario format's ``source`` field takes these names.
HOP_SOURCES = {
    "heartbeats": ("heartbeat hops", hop_latency_samples_ms),
    "rumors": ("metadata rumor copies", lambda d: rumor_hop_latency_ms(d, per="copy")),
    "adoptions": ("metadata rumor adoptions", lambda d: rumor_hop_latency_ms(d, per="receiver")),
    "first_hops": ("first hops from a publisher", lambda d: rumor_hop_latency_ms(d, per="publisher")),
    "timer_lateness": ("how late the nodes' timers ran", timer_lateness_ms),
    "direct_heartbeats": ("heartbeats taken straight from their origin", direct_heartbeat_hops_ms),
    "heartbeat_waits": ("waits of heartbeats taken, from the kernel's receipt to the process starting on them",
                        lambda d: stats_samples_ms(d, "hb_wait_ms")),
    "wakeups": ("waits of datagrams that found their process idle, from the kernel's receipt to it starting on "
                "them", lambda d: stats_samples_ms(d, "wake_ms")),
    "heartbeat_wires": ("heartbeats taken straight from their origin, from its making them to the kernel's "
                        "receipt", lambda d: stats_samples_ms(d, "hb_wire_ms")),
}


def cpu_per_packet_s(run_dir: Path | str, per: str = "arrival") -> float:
    """CPU seconds a node process spent per datagram arriving at its interface, over a recorded run.

    From each node process's own stats records: the growth of ``cpu_s`` between its first and last record (so
    start-up is not counted), divided by the datagrams that arrived meanwhile — those it received plus those its
    XDP program dropped in the kernel (`xdp_stats`): the average the simulator's CPU model charges every delivered
    message when it does not model XDP. PER "userspace" divides by the datagrams the processes received only: the
    cost of one that passed the fast path, which the CPU model charges when the simulator models XDP too.
    """
    if per not in ("arrival", "userspace"):
        raise ValueError(f"per: must be arrival or userspace, got {per!r}")
    history = load_history(run_dir)
    spans: dict[tuple[str, int], list[dict]] = {}
    life: dict[str, int] = {}
    for e in history.events:
        if e["kind"] == "started":
            life[e["node"]] = life.get(e["node"], 0) + 1
        elif e["kind"] == "stats" and "cpu_s" in e:
            spans.setdefault((e["node"], life.get(e["node"], 0)), []).append(e)
    xdp: dict[str, list[dict]] = {}
    for e in history.of_kind(XDP_STATS):
        xdp.setdefault(e["node"], []).append(e)
    cpu = packets = 0.0
    for (node, _), recs in spans.items():
        first, last = recs[0], recs[-1]
        cpu += last["cpu_s"] - first["cpu_s"]
        packets += last.get("packets_in", 0) - first.get("packets_in", 0)
        kernel = [x for x in xdp.get(node, []) if first["t"] <= x["t"] <= last["t"]]
        if per == "arrival" and len(kernel) >= 2:
            packets += sum(kernel[-1]["dropped"].values()) - sum(kernel[0]["dropped"].values())
    if packets <= 0:
        raise ValueError(f"{run_dir}: no stats records with cpu_s and packets to measure from")
    return cpu / packets


def cpu_marginal_per_packet_s(run_dir: Path | str) -> float:
    """CPU seconds one more datagram reaching a node process costs it, over a recorded run.

    The least-squares slope of each stats interval's CPU time (``cpu_s`` growth) on the datagrams the process
    received in it (``packets_in`` growth), over every node process and interval: the fixed work of a cycle (its
    heartbeat, timers, the stats record itself) goes into the intercept, not into the cost of a message, which
    `cpu_per_packet_s`'s average charges every datagram.
    """
    history = _history(run_dir)
    prev: dict[str, dict] = {}
    xs: list[float] = []
    ys: list[float] = []
    for e in history.events:
        if e["kind"] == "started":
            prev.pop(e["node"], None)  # a restarted process counts from zero again
        elif e["kind"] == "stats" and "cpu_s" in e:
            p = prev.get(e["node"])
            if p is not None:
                xs.append(float(e.get("packets_in", 0) - p.get("packets_in", 0)))
                ys.append(e["cpu_s"] - p["cpu_s"])
            prev[e["node"]] = e
    n = len(xs)
    mx, my = (sum(xs) / n, sum(ys) / n) if n else (0.0, 0.0)
    sxx = sum((x - mx) ** 2 for x in xs)
    if n < 3 or sxx <= 0:
        raise ValueError(f"{run_dir}: too few stats records with cpu_s and packets to measure from")
    return max(sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx, 0.0)


def coverage_frame(run_dirs):
    """A tidy pandas DataFrame of every rumor's coverage in RUN_DIRS: run, backend, version, seconds, fraction."""
    import pandas as pd
    rows = []
    for d in run_dirs:
        s = load_summary(d)
        for i, r in enumerate(s["rumors"]):
            for dt, f in r["coverage"]:
                rows.append({"run": str(d), "backend": s["backend"], "nodes": s["nodes"], "rumor": i,
                             "version": r["version"], "seconds": dt, "fraction": f})
    return pd.DataFrame(rows)
