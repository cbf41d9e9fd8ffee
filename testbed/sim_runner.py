"""Running a scenario on the simulator (``--backend sim``): the same YAML, the same run directory, virtual time.

Full fidelity drives one real `GossipCore` per node through `testbed.sim.Simulation` with the scenario's timeline
(operations, faults, injections) and writes the same records the testbed writes, so `analysis` and `plots` read
a simulated run exactly as a real one. Dissemination fidelity spreads one rumor over fixed views with
`testbed.sim.disseminate` (for 10^5–10^6 nodes) and writes its infection curve. Deterministic: the same seed
gives the same files, byte for byte. Needs no root.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np

from gossip import NodeConfig
from gossip import _wire as wire

from . import analysis, plots
from .scenario import Scenario, partition_groups, select_nodes
from .sim import Constant, Simulation, disseminate, latency_from_spec

GOSSIP_PORT = 7946


def _latency(s: Scenario, key: str = "latency"):
    spec = s.sim.get(key)
    if spec is None:
        return None
    spec = dict(spec)
    if spec["kind"] == "measured":
        spec = {"kind": "measured", "samples_ms": measured_latency_ms(spec["run"], spec.get("source", "heartbeats"))}
    return latency_from_spec(spec)


def _cpu(s: Scenario) -> tuple[int, float]:
    """(cores, seconds per message) from ``sim.cpu``: given, or measured on a recorded testbed run (per datagram
    reaching the process when the simulator models XDP too, else per datagram arriving)."""
    spec = s.sim["cpu"]
    if "run" in spec:
        return spec["cores"], analysis.cpu_per_packet_s(spec["run"], "userspace" if s.node["xdp"] else "arrival")
    return spec["cores"], float(spec["service_us"]) / 1e6


def measured_latency_ms(run_dir: str, source: str = "heartbeats") -> list[float]:
    """Per-hop latencies measured on a recorded testbed run, from SOURCE (see `analysis.HOP_SOURCES`)."""
    what, read = analysis.HOP_SOURCES[source]
    samples = read(run_dir)
    if not samples:
        raise ValueError(f"{run_dir}: no {what} recorded to measure latency from")
    return sorted(samples)


class SimRun:
    def __init__(self, s: Scenario, out: Path) -> None:
        self.s, self.out = s, Path(out)
        self.rng = random.Random(s.seed)
        n = s.node
        self.config = NodeConfig(fanout=n["fanout"], cycle_s=float(n["cycle_s"]), timeout_s=float(n["timeout_s"]),
                                 buffer=n["buffer"], max_packet_bytes=n["max_packet_bytes"],
                                 secrets=(n["secret"].encode(),), cluster=n["cluster"], protocol=n["protocol"],
                                 listen_port=GOSSIP_PORT)
        kw = {"latency": _latency(s)} if s.sim.get("latency") else {}
        if s.sim.get("cpu"):
            kw["cpu"] = _cpu(s)
        if s.sim.get("wakeup"):
            kw["wakeup"] = _latency(s, "wakeup")
        self.sim = Simulation(seed=s.seed, config=self.config, xdp=bool(n["xdp"]), **kw)
        self.records: list[dict] = []
        self.faults: list[dict] = []
        self.open: dict[int, dict] = {}
        self.spare = [f"n{i}" for i in range(s.nodes, s.nodes + s.joins)]
        self.removed_for_good: set[str] = set()
        self._pending: list[tuple[float, int, object]] = []  # churn's own (time, order, action), kept sorted
        self._fault_nodes: dict[int, list[str]] = {}  # id(step) -> the nodes an open fault acts on

    # -- records in the testbed's vocabulary, on the simulator's clock

    def _rec(self, node: str, kind: str, **fields) -> None:
        self.records.append({"t": round(self.sim.epoch_s + self.sim.time_s, 6), "node": node, "kind": kind,
                             **fields})

    def _up(self, name: str) -> None:
        self._rec(name, analysis.PROC, state="up")  # the engine writes the node's own `started` record

    def _live(self) -> list[str]:
        return [n for n in self.sim.live_nodes() if self.sim.node_state(n) == "up"]

    def _pick(self, sel, count=None) -> list[str]:
        return select_nodes(sel, live=self._live(), started=list(self.sim.node_names), rng=self.rng, count=count)

    # -- the timeline

    def run(self) -> dict:
        s, sim = self.s, self.sim
        names = [f"n{i}" for i in range(s.nodes)]
        for i, name in enumerate(names):
            # processes launched one after another: their cycles do not tick in lockstep (as on the testbed)
            sim.run_until(i * self.config.cycle_s / len(names))
            sim.add_node(name, seeds=[names[0]] if i else [])
            self._up(name)
        actions: list[tuple[float, int, object]] = []
        for k, st in enumerate(s.timeline):
            actions.append((st.at_s, k, ("begin", st)))
            if st.until_s is not None:
                actions.append((st.until_s, k, ("end", st)))
        for t, _, (what, st) in sorted(actions, key=lambda a: (a[0], a[1])):
            self._advance_to(t)
            (self._begin if what == "begin" else self._end)(st)
        self._advance_to(s.duration_s)
        del sim  # `_finish` lets the simulation go before the analysis
        return self._finish()

    def _advance_to(self, t: float) -> None:
        # churn crashes and restarts are scheduled as (time, action) pairs of their own
        while self._pending and self._pending[0][0] <= t:
            when, _, fn = self._pending.pop(0)
            self.sim.run_until(when)
            fn()
        self.sim.run_until(t)

    def _schedule(self, t: float, fn) -> None:
        self._pending.append((t, len(self._pending) + len(self.records), fn))
        self._pending.sort(key=lambda p: (p[0], p[1]))

    def _open_fault(self, st, kind: str, name: str, nodes) -> None:
        self.open[id(st)] = {"name": name, "kind": kind, "start": self.sim.epoch_s + self.sim.time_s,
                             "nodes": list(nodes or [])}

    def _close_fault(self, st) -> None:
        f = self.open.pop(id(st), None)
        if f is not None:
            f["end"] = self.sim.epoch_s + self.sim.time_s
            self.faults.append(f)

    def _begin(self, st) -> None:
        a, p, sim = st.action, st.params, self.sim
        if st.kind == "op":
            if a == "publish":
                for name in self._pick(p.get("node", "random")):
                    data = p.get("data") or f"value-{len(self.records)}-{self.rng.randrange(10**6)}"
                    self._rec(name, analysis.PUBLISH_OP, data=data)
                    sim.publish(name, data.encode())
            elif a == "join":
                for _ in range(p.get("count", 1)):
                    self._join()
            elif a in ("stop", "start"):
                for name in self._pick(p["node"]):
                    (sim.stop_heartbeats if a == "stop" else sim.start_heartbeats)(name)
                    self._rec(name, analysis.PROC, state="heartbeats_off" if a == "stop" else "heartbeats_on")
            elif a == "leave":
                for name in self._pick(p["node"]):
                    sim.leave(name)
                    self.removed_for_good.add(name)
                    self._rec(name, analysis.PROC, state="down")
            return
        if st.kind == "inject":
            return self._inject(st)
        if a == "crash":
            victims = self._pick(p.get("node"), p.get("count"))
            st_nodes = victims
            self._open_fault(st, "crash", f"crash {','.join(victims[:3])}", victims)
            for v in victims:
                self._crash(v)
        elif a == "pause":
            st_nodes = self._pick(p.get("node"), p.get("count"))
            self._open_fault(st, "pause", f"pause {','.join(st_nodes[:3])}", st_nodes)
            for v in st_nodes:
                if sim.node_state(v) == "up":
                    sim.pause(v)
                    self._rec(v, analysis.PROC, state="paused")
        elif a == "churn":
            st_nodes = []
            self._open_fault(st, "churn", "churn", None)
            downtime = float(p.get("downtime_s") or 2 * self.config.timeout_s)
            t = sim.time_s
            while True:
                t += self.rng.expovariate(float(p["rate_per_s"]))
                if t >= st.until_s:
                    break
                self._schedule(t, lambda d=downtime: self._churn_crash(d))
            joins = int(p.get("joins", 0))
            for k in range(joins):
                self._schedule(sim.time_s + (k + 0.5) * (st.until_s - sim.time_s) / joins, self._join)
        elif a == "partition":
            groups = partition_groups(p, list(sim.node_names) + self.spare)
            known = set(sim.node_names)
            sim.partition(*[[n for n in g if n in known] for g in groups])
            st_nodes = []
            self._open_fault(st, "partition", f"partition {'/'.join(str(len(g)) for g in groups)}", None)
        elif a == "loss":
            sel = p.get("node", "all")
            st_nodes = self._pick(sel)
            self._open_fault(st, "loss", f"loss {p['rate']:.0%}", [] if sel == "all" else st_nodes)
            if sel == "all":
                sim.set_loss(float(p["rate"]))
            else:
                for n in st_nodes:
                    sim.set_loss(float(p["rate"]), node=n)
        elif a == "delay":
            sel = p.get("node", "all")
            st_nodes = self._pick(sel)
            self._open_fault(st, "delay", f"delay {p['ms']:g} ms", [] if sel == "all" else st_nodes)
            for n in st_nodes:
                sim.set_ingress_delay(n, Constant(delay_s=float(p["ms"]) / 1000.0))
        else:
            st_nodes = []
        self._fault_nodes[id(st)] = st_nodes

    def _end(self, st) -> None:
        a, sim = st.action, self.sim
        nodes = self._fault_nodes.pop(id(st), [])
        if a == "crash":
            for v in nodes:
                if sim.node_state(v) == "down" and v not in self.removed_for_good:
                    sim.restart(v)
                    self._up(v)
        elif a == "pause":
            for v in nodes:
                if sim.node_state(v) == "paused":
                    sim.resume(v)
                    self._rec(v, analysis.PROC, state="resumed")
        elif a == "partition":
            sim.heal()
        elif a == "loss":
            if st.params.get("node", "all") == "all":
                sim.set_loss(0.0)
            else:
                for n in nodes:
                    sim.set_loss(0.0, node=n)
        elif a == "delay":
            for n in nodes:
                sim.set_ingress_delay(n, None)
        self._close_fault(st)

    def _crash(self, name: str) -> None:
        if self.sim.node_state(name) in ("up", "paused"):
            self.sim.crash(name)
            self._rec(name, analysis.PROC, state="down")

    def _churn_crash(self, downtime: float) -> None:
        live = [n for n in self._live() if n != "n0"]
        if len(live) < 2:
            return
        victim = self.rng.choice(live)
        self._crash(victim)

        def back(v=victim):
            if self.sim.node_state(v) == "down":
                self.sim.restart(v)
                self._up(v)
        self._schedule(self.sim.time_s + downtime, back)

    def _join(self) -> None:
        if not self.spare:
            return
        name = self.spare.pop(0)
        live = self._live()
        seeds = self.rng.sample(live, min(self.s.node.get("seeds", 1), len(live)))
        self.sim.add_node(name, seeds=seeds)
        self._up(name)

    def _inject(self, st) -> None:
        """Hand crafted datagrams straight to the target's core (there is no kernel, so no XDP, in the sim)."""
        from .net.inject import EXPECT, payloads
        p = st.params
        for name in self._pick(p.get("target", "random")):
            core = self.sim.core(name)
            now = self.sim.epoch_s + self.sim.time_s
            count = int(p.get("count", 10))
            if st.action in ("replay", "flood"):
                peer = next((m for m in core.members()[1:]), None)
                if peer is None:
                    continue
                hb = wire.Heartbeat(cluster=core.cluster, origin=peer.node_id, seq=peer.seq,
                                    identity=wire.Identity(name=peer.name, addr=peer.addr, port=peer.port))
                frames = [core.encode(hb)]
            else:
                src = self.rng.choice([n for n in self.sim.node_names if n != name] or [name])
                frames = payloads(st.action, src_ip=self.sim.identity(src).addr, cluster=self.config.cluster,
                                  secret=self.config.secrets[0], count=min(count, 256), rng=self.rng)
            for i in range(count):
                core.receive(frames[i % len(frames)], now)
            core.take_events()
            self.faults.append({"name": f"inject {st.action}", "kind": "inject", "start": now, "end": now,
                                "nodes": [name]})
            self._rec(name, analysis.INJECTED, what=st.action, count=count, expect=EXPECT[st.action])

    # -- the end

    def _finish(self) -> dict:
        s, sim = self.s, self.sim
        for st in [st for st in s.timeline if id(st) in self.open]:
            self._end(st)
        self._pending.clear()
        sim.heal()
        sim.set_loss(0.0)
        for n in sim.node_names:
            state = sim.node_state(n)
            if state == "paused":
                sim.resume(n)
                self._rec(n, analysis.PROC, state="resumed")
            elif state == "down" and n not in self.removed_for_good and n not in self.spare:
                sim.restart(n)
                self._up(n)
        recovery_start = sim.epoch_s + sim.time_s
        end = sim.time_s + s.recovery_s
        while sim.time_s < end:
            sim.run_until(min(end, sim.time_s + 0.25))
            meta = sim.metadata()
            if sim.membership_converged() and len({v for v, _ in meta.values()}) <= 1:
                break
        sim.run_until(sim.time_s + self.config.cycle_s)
        stats = {"nodes": {}}
        views = sim.views()
        for n, (version, _) in sim.metadata().items():
            self._rec(n, analysis.FINAL, members=sorted([n] + views[n]), version=version.seq,
                      origin=version.origin)
            st = sim.core(n).stats
            stats["nodes"][n] = {"packets_in": st.get("packets_in", 0), "packets_out": st.get("packets_out", 0),
                                 "dropped": {k[8:]: v for k, v in st.items() if k.startswith("dropped_")}}
            fastpath = sim.fastpath_stats(n)
            if fastpath is not None:
                stats["nodes"][n]["xdp"] = fastpath
        self._write(stats, recovery_start)
        network = sim.network_stats()
        # The analysis reads the run back from its files. The cores and the kept records go first: at 2,000 nodes
        # they hold GBs, and the history read back takes as much again.
        self.sim = sim = None
        self.records = []
        history = analysis.load_history(self.out)
        summary = analysis.summarize(history, dict(s.checks), stats)
        summary["network"] = network
        (self.out / "summary.json").write_text(json.dumps(summary, indent=1))
        plots.draw_all(self.out, history, summary, s.plots)
        return summary

    def _write(self, stats: dict, recovery_start: float) -> None:
        s = self.s
        self.out.mkdir(parents=True, exist_ok=True)
        merged = sorted([(r["t"], 0, i, r) for i, r in enumerate(self.records)]
                        + [(r["t"], 1, i, r) for i, r in enumerate(self.sim.events)])
        with open(self.out / "events.jsonl", "w") as f:
            for *_, r in merged:
                f.write(json.dumps(r) + "\n")
        with open(self.out / "faults.jsonl", "w") as f:
            for w in sorted(self.faults, key=lambda w: w["start"]):
                f.write(json.dumps(w) + "\n")
        (self.out / "stats.json").write_text(json.dumps(stats, indent=1))
        meta = {"scenario": s.name, "backend": "sim", "nodes": s.nodes, "seed": s.seed, "t0": self.sim.epoch_s,
                "recovery_start": recovery_start, "recovery_s": s.recovery_s, "cycle_s": self.config.cycle_s,
                "timeout_s": self.config.timeout_s, "fanout": self.config.fanout, "xdp": bool(s.node["xdp"]), "broadcaster": False,
                "unexpected_exits": [], "file": s.file, "fidelity": "full"}
        (self.out / "meta.json").write_text(json.dumps(meta, indent=1))


def run_dissemination(s: Scenario, out: Path) -> dict:
    """One rumor over fixed full views: the project's forwarding rule and its anti-entropy swaps (one per node per
    cycle), with the scenario's fanout, loss and latency."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    loss = max((float(st.params["rate"]) for st in s.timeline if st.action == "loss"), default=0.0)
    kw = {"latency": _latency(s)} if s.sim.get("latency") else {}
    # every node swaps with one random peer per cycle, as a real node does: what repairs the rumor's misses
    res = disseminate(s.nodes, "protocol", fanout=s.node["fanout"], loss=loss, seed=s.seed,
                      anti_entropy_s=float(s.node["cycle_s"]), **kw)
    times = np.sort(res.informed_at[np.isfinite(res.informed_at)])
    step = max(1, len(times) // 500)
    idx = list(range(0, len(times), step)) + ([len(times) - 1] if len(times) else [])
    coverage = [(round(float(times[i]), 6), round((i + 1) / s.nodes, 6)) for i in sorted(set(idx))]

    def t_at(frac):
        k = int(np.ceil(frac * s.nodes)) - 1
        return round(float(times[k]), 6) if k < len(times) else None
    rumor = {"version": 1, "origin": 0, "origin_node": "n0", "published_at": 0.0, "coverage": coverage,
             "t50": t_at(0.5), "t90": t_at(0.9), "t100": t_at(1.0), "messages": int(res.messages_sent)}
    complete = res.informed == s.nodes
    summary = {"scenario": s.name, "backend": "sim", "fidelity": "dissemination", "nodes": s.nodes, "seed": s.seed,
               "xdp": False, "passed": complete,
               "checks": [{"name": "metadata_converged", "passed": complete,
                           "detail": f"{res.informed} of {s.nodes} nodes informed"}],
               "rumors": [rumor], "membership": {}, "duplicates": int(res.duplicates),
               "packets": {"packets_in": 0, "packets_out": int(res.messages_sent), "dropped": int(res.messages_lost),
                           "xdp_dropped": 0, "xdp_passed": 0}, "wall_s": res.wall_s}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    (out / "events.jsonl").write_text("")
    (out / "faults.jsonl").write_text("")
    (out / "meta.json").write_text(json.dumps({"scenario": s.name, "backend": "sim", "nodes": s.nodes,
                                               "fidelity": "dissemination", "t0": 0.0}))
    if "infection" in s.plots:
        plots.infection(analysis.History(events=[], faults=[], meta={"t0": 0.0}), summary, out / "infection.png")
    return summary


def run_sim(s: Scenario, out: Path) -> dict:
    out = Path(out)
    if (out / "events.jsonl").exists():
        from .errors import TestbedError
        raise TestbedError(f"{out} already holds a run; choose another --out")
    if s.sim.get("fidelity") == "dissemination":
        return run_dissemination(s, out)
    return SimRun(s, out).run()
