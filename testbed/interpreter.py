"""The one timeline interpreter: a scenario's generator, nemesis and checker, on any `Cluster`.

It holds the truth about every node (never started, up, paused, down; who left for good), records it (`proc`
records: what the checks judge views against), drives the timeline's operations and the fault modules of
`testbed.nemesis` on the cluster, and ends every run the same way, however it went: stop every fault, resume
paused nodes and restart crashed ones, wait for recovery, read every node, stop the nodes, write the run
directory, check, plot. Real hosts and the simulator are two `Cluster`s beneath it; nothing here knows which.

It must never act on a backend directly, and never decide a fault's meaning: a fault's module does.
"""

from __future__ import annotations

import heapq
import json
import os
import random
import time
from pathlib import Path
from typing import Callable

from . import analysis, nemesis, plots
from .cluster.base import Cluster
from .errors import UsageError
from .progress import Progress
from .scenario import Scenario, select_nodes

_NEVER, _UP, _PAUSED, _DOWN = "never", "up", "paused", "down"
RECOVERY_POLL_S = 0.25


def output_dir(out: Path | str, what: str = "run directory") -> Path:
    """Create the directory OUT (and its parents) for a command's output; a `UsageError` naming it if it cannot be
    created or written."""
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"{out}: cannot create the {what}: {e.strerror}") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise UsageError(f"{out}: the {what} is not writable")
    return out


def prepare_out(out: Path) -> Path:
    """Create the run directory OUT; a `UsageError` naming it if it holds a run already or cannot be written.
    Checked before any node starts, so a bad --out costs nothing."""
    out = Path(out)
    if (out / "events.jsonl").exists() or (out / "events").exists():
        raise UsageError(f"{out} already holds a run; choose another --out")
    return output_dir(out)


class Interpreter:
    """Runs scenario S on CLUSTER (not yet entered) and writes the run directory OUT."""

    def __init__(self, s: Scenario, cluster: Cluster, out: Path, *, progress: Progress | None = None) -> None:
        self.s, self.cluster, self.out = s, cluster, Path(out)
        self.progress = progress or Progress(enabled=False)
        self.rng = random.Random(s.seed)
        self.hosts = s.hosts
        self.cycle_s = float(s.node.get("cycle_s", 1.0))
        self.timeout_s = float(s.node.get("timeout_s", 5.0))
        self.state: dict[str, str] = dict.fromkeys(self.hosts, _NEVER)
        self.left: set[str] = set()  # nodes that left for good: the ending does not bring them back
        self.ring: tuple[bytes, ...] | None = None  # the key ring of the latest `keys` step (None: the scenario's)
        self.ring_pending: set[str] = set()  # nodes a `keys` step found paused: told as they resume
        self.history: list[dict] = []
        self.windows: list[dict] = []
        self.open: dict[int, tuple[nemesis.Fault, nemesis.Active]] = {}  # step index -> its open window
        self.unexpected_exits: list[str] = []
        self._heap: list[tuple[float, int, str, Callable]] = []
        self._seq = 0
        self._next_sample = 0.0
        self.t0 = 0.0
        self.recovery_start: float | None = None
        self.stats: dict = {"nodes": {}}

    # ---- what fault modules call (the context) -------------------------------------------------------------

    def now(self) -> float:
        return self.cluster.now()

    def now_s(self) -> float:
        """Seconds since the timeline started."""
        return self.cluster.now() - self.t0

    def say(self, msg: str) -> None:
        self.progress.say(msg)

    def record(self, rec: dict) -> None:
        self.history.append({"t": round(self.cluster.now(), 6), **rec})

    def live(self) -> list[str]:
        return [n for n in self.hosts if self.state[n] == _UP]

    def pick(self, sel, count: int | None = None) -> list[str]:
        return select_nodes(sel, live=self.live(), rng=self.rng, count=count, say=self.say,
                            started=[n for n in self.hosts if self.state[n] != _NEVER])

    def at(self, t_s: float, label: str, action: Callable) -> None:
        """Run ACTION at T_S seconds of the timeline."""
        self._seq += 1
        heapq.heappush(self._heap, (t_s, self._seq, label, action))

    def _proc(self, name: str, state: str) -> None:
        self.record({"node": name, "kind": analysis.PROC, "state": state})

    def start(self, name: str, seeds: list[str] | None) -> None:
        self.cluster.start(name, seeds)
        self.state[name] = _UP
        self._proc(name, "up")

    def kill(self, name: str) -> None:
        if self.state[name] in (_UP, _PAUSED):
            self.cluster.kill(name)
            self.state[name] = _DOWN
            self._proc(name, "down")

    def restart(self, name: str) -> None:
        """Bring back a node a fault took down; not one that left, nor one that died by itself (that is a finding,
        kept visible: `unexpected_exits`)."""
        if self.state[name] == _DOWN and name not in self.left and name not in self.unexpected_exits:
            self.start(name, None)

    def pause(self, name: str) -> None:
        if self.state[name] == _UP:
            self.cluster.pause(name)
            self.state[name] = _PAUSED
            self._proc(name, "paused")

    def resume(self, name: str) -> None:
        if self.state[name] == _PAUSED:
            self.cluster.resume(name)
            self.state[name] = _UP
            if name in self.ring_pending:  # a stopped process cannot take a request: it gets the ring now
                self._set_ring([name])
            self._proc(name, "resumed")

    def join(self) -> None:
        spare = next((n for n in self.hosts if self.state[n] == _NEVER), None)
        if spare is None:
            return
        live = self.live()
        self.start(spare, self.rng.sample(live, min(int(self.s.node.get("seeds", 1)), len(live))))

    # ---- operations (the workload) -------------------------------------------------------------------------

    def _op(self, step) -> None:
        a, p = step.action, step.params
        if a == "publish":
            for name in self.pick(p.get("node", "random")):
                data = p.get("data") or f"value-{len(self.history)}-{self.rng.randrange(10**6)}"
                self.record({"node": name, "kind": analysis.PUBLISH_OP, "data": data})
                self.cluster.publish(name, data.encode())
        elif a == "join":
            for _ in range(p.get("count", 1)):
                self.join()
        elif a in ("stop", "start"):
            for name in self.pick(p["node"]):
                if self.state[name] == _UP:
                    self.cluster.heartbeats(name, a == "start")
                    self._proc(name, "heartbeats_on" if a == "start" else "heartbeats_off")
        elif a == "keys":  # running nodes switch now, paused ones as they resume, the others at their next start
            self.ring = tuple(k.encode() for k in p["secrets"])
            picked = self.pick(p.get("node", "all"))
            self.ring_pending |= {n for n in picked if self.state[n] == _PAUSED}
            self._set_ring([n for n in picked if self.state[n] == _UP])
        elif a == "leave":
            for name in self.pick(p["node"]):
                if self.state[name] in (_UP, _PAUSED):
                    self.cluster.leave(name)
                    self.left.add(name)
                    self.state[name] = _DOWN
                    self._proc(name, "down")

    def _set_ring(self, names: list[str]) -> None:
        self.ring_pending.difference_update(names)
        for name in names:
            self.record({"node": name, "kind": analysis.KEYS_OP, "keys": len(self.ring)})
        self.cluster.set_secrets(self.ring, names)

    # ---- faults ----------------------------------------------------------------------------------------------

    def _begin(self, step) -> None:
        if step.kind == "op":
            return self._op(step)
        if step.kind == "inject":
            active = nemesis.INJECT.start(self, step)
            self.windows.append(active.window(self.now()))
            return
        fault = nemesis.REGISTRY[step.action]
        network = self.cluster.network_counters()
        active = fault.start(self, step)
        active.network_start = network
        self.open[step.index] = (fault, active)

    def _finish(self, step) -> None:
        entry = self.open.pop(step.index, None)
        if entry is not None:
            fault, active = entry
            fault.stop(self, active)
            self.windows.append(active.window(self.now(), self.cluster.network_counters()))

    # ---- the run ---------------------------------------------------------------------------------------------

    def _initial_seeds(self) -> dict[str, list[str]]:
        out = {}
        for i in range(self.s.nodes):
            k = min(int(self.s.node.get("seeds", 1)), i)
            out[f"n{i}"] = [f"n{j}" for j in ([0] + self.rng.sample(range(1, i), k - 1) if k > 1 and i > 1
                                              else [0])] if i else []
        return out

    def run(self) -> dict:
        interrupted = None
        try:
            self.progress.phase("setting up the cluster")
            with self.cluster:
                seeds = self._initial_seeds()
                self.progress.phase(f"starting {len(seeds)} nodes")
                self.cluster.start_nodes(seeds)
                for name in seeds:
                    self.state[name] = _UP
                    self._proc(name, "up")
                try:
                    self._drive()
                except KeyboardInterrupt as e:
                    interrupted = e
                    self.say("interrupted: stopping faults and reading the nodes before teardown "
                             "(Ctrl-C again to skip straight to teardown)")
                self._end(wait_for_recovery=interrupted is None)
        finally:
            self._write()
        # The analysis reads the run back from its files: the cluster (a simulator's cores) and the kept records go
        # first; at 2,000 simulated nodes they hold GBs, and the history read back takes as much again.
        self.cluster, self.history = None, []
        summary = analyse(self.out, self.s, extra={"network": self.stats.get("network", {})}, progress=self.progress)
        if interrupted is not None:
            raise interrupted
        return summary

    def _on_exit(self, name: str, code) -> None:
        if self.state[name] in (_UP, _PAUSED):
            self.state[name] = _DOWN
            self._proc(name, "down")
            self.unexpected_exits.append(name)
            self.say(f"node {name} exited unexpectedly (code {code})")

    def _sample(self) -> None:
        for rec in self.cluster.sample([n for n in self.hosts if self.state[n] != _NEVER]):
            self.history.append(rec)

    def _advance(self, t_s: float) -> None:
        """Let the cluster run to timeline time T_S, sampling once per cycle on the way."""
        end = self.t0 + t_s
        while self.now() < end:
            self.cluster.advance_to(min(end, self._next_sample), self._on_exit)
            if self.now() >= self._next_sample:
                self._sample()
                self._next_sample += self.cycle_s
            self.progress.update(nodes_up=f"{len(self.live())}/{len(self.hosts)}")

    def _drive(self) -> None:
        self.t0 = self.now()
        self.progress.phase("timeline", total=self.s.duration_s, unit=" s", done=self.now_s,
                            nodes_up=f"{len(self.live())}/{len(self.hosts)}")
        self._next_sample = self.t0 + self.cycle_s
        for step in self.s.timeline:
            self.at(step.at_s, step.label, lambda step=step: self._begin(step))
            if step.until_s is not None:
                self.at(step.until_s, step.label + ":end", lambda step=step: self._finish(step))
        self._sample()
        while self._heap:
            t_s, _, _, action = heapq.heappop(self._heap)
            self._advance(t_s)
            action()
        self._advance(self.s.duration_s)

    def _end(self, *, wait_for_recovery: bool = True) -> None:
        # 1. stop every fault: close its window, resume paused nodes, restart crashed ones (not those that left)
        for index in sorted(self.open):
            step = next(st for st in self.s.timeline if st.index == index)
            self._finish(step)
        self._heap.clear()
        self.cluster.heal()
        for name in self.hosts:
            if self.state[name] == _PAUSED:
                self.resume(name)
            elif self.state[name] == _DOWN:
                self.restart(name)
        self.recovery_start = self.now()
        # 2. wait for recovery: every live node's view equals the live set and all hold one version
        limit = self.s.recovery_s if wait_for_recovery else 0.0
        self.progress.phase("recovery", total=limit, unit=" s", done=lambda: self.now() - self.recovery_start)
        recovered = False
        while self.now() - self.recovery_start < limit:
            if self.cluster.recovered(set(self.live())):
                recovered = True
                break
            self.cluster.advance_to(min(self.now() + RECOVERY_POLL_S, self.recovery_start + limit), self._on_exit)
            self._sample()
            self.progress.update(nodes_up=f"{len(self.live())}/{len(self.hosts)}")
        self.progress.end("recovered" if recovered else "not recovered" if limit else "")
        self.progress.phase("final cycle")
        self.cluster.advance_to(self.now() + min(self.cycle_s, 1.0), self._on_exit)
        self._sample()
        self.progress.phase("final reads", total=len(self.live()), done=0)
        # 3. final reads
        for name in self.live():
            r = self.cluster.read(name)
            if r is None:
                self.say(f"final read of {name} failed")
                continue
            self.record({"node": name, "kind": analysis.FINAL, "members": sorted(r.members),
                         "version": r.version, "origin": r.origin})
            self.stats["nodes"][name] = self.cluster.counters(name)
            self.progress.update(len(self.stats["nodes"]))
        self.stats["network"] = self.cluster.network_counters()
        self.progress.phase("stopping the nodes")
        self.cluster.stop_all()
        self.progress.end()
        for name in self.hosts:
            if self.state[name] in (_UP, _PAUSED):
                self.state[name] = _DOWN

    def _write(self) -> None:
        self.progress.phase("writing the run directory")
        now = self.now() if self.t0 else time.time()
        windows = self.windows + [active.window(now) for _, active in self.open.values()]
        write_run(self.out, self.s, records=self.history + self.cluster.node_records(), windows=windows,
                  stats=self.stats, meta={"t0": self.t0, "recovery_start": self.recovery_start,
                                          "unexpected_exits": self.unexpected_exits, **self.cluster.meta()})
        self.progress.end()


def write_run(out: Path, s: Scenario, *, records: list[dict], windows: list[dict], stats: dict, meta: dict) -> None:
    """The run directory's raw files, the same for every backend: events.jsonl (every record, by time),
    faults.jsonl (the fault windows), stats.json, meta.json."""
    out.mkdir(parents=True, exist_ok=True)
    order = sorted(range(len(records)), key=lambda i: records[i]["t"])  # stable: equal times keep their order
    with open(out / "events.jsonl", "w") as f:
        for i in order:
            f.write(json.dumps(records[i]) + "\n")
    with open(out / "faults.jsonl", "w") as f:
        for w in sorted(windows, key=lambda w: w["start"]):
            f.write(json.dumps(w) + "\n")
    (out / "stats.json").write_text(json.dumps(stats, indent=1))
    cfg = s.node
    base = {"scenario": s.name, "backend": s.backend, "nodes": s.nodes, "seed": s.seed, "file": s.file,
            "duration_s": s.duration_s, "recovery_s": s.recovery_s, "cycle_s": float(cfg.get("cycle_s", 1.0)),
            "timeout_s": float(cfg.get("timeout_s", 5.0)), "fanout": cfg.get("fanout", 3),
            "membership": cfg.get("membership", "heartbeat"), "options": dict(cfg.get("options") or {}),
            "host_cpus": os.cpu_count(), "fidelity": s.sim.get("fidelity", "full") if s.backend == "sim" else None}
    (out / "meta.json").write_text(json.dumps({**base, **meta}, indent=1))


def analyse(out: Path, s: Scenario, *, extra: dict | None = None, progress: Progress | None = None) -> dict:
    """Check and plot a written run directory; writes summary.json (which lists the plots it wrote)."""
    progress = progress or Progress(enabled=False)
    progress.phase("reading the history")
    history = analysis.load_history(out)
    progress.phase(f"{len(s.checks)} check{'' if len(s.checks) == 1 else 's'}")
    summary = analysis.summarize(history, dict(s.checks))
    if extra:
        summary.update(extra)
    progress.end("passed" if summary["passed"] else "FAILED")
    progress.phase(f"{len(s.plots)} plot{'' if len(s.plots) == 1 else 's'}")
    written = plots.draw_all(out, history, summary, s.plots)
    summary["plots"] = [p.name for p in written]
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    progress.end(f"{len(written)} written")
    return summary
