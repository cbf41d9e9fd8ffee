"""The `Cluster` of simulated nodes: the same `GossipCore`s on the discrete-event simulator (`testbed.sim`), on a
virtual clock and network, deterministic for a seed. Needs no root.

Network faults mean here what they mean on real hosts (`testbed.cluster.base`): the simulator's network drops
before delivery, so its XDP model and the cores see only what the network delivered.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np

from gossip import _wire as wire

from .. import analysis
from ..errors import ScenarioError
from ..sim import Constant, Empirical, KindCost, Simulation, disseminate, latency_from_spec
from .base import Cluster, Read

GOSSIP_PORT = 7946


def _latency(s, key: str = "latency"):
    spec = s.sim.get(key)
    if spec is None:
        return None
    spec = dict(spec)
    if spec["kind"] == "measured":
        samples = measured_latency_ms(spec["run"], spec.get("source", "heartbeats"), file=s.file,
                                      field=f"sim.{key}.run")
        spec = {"kind": "measured", "samples_ms": samples}
    return latency_from_spec(spec)


def _cpu(s) -> tuple[int, float | KindCost]:
    """(cores, seconds per message or a `KindCost`) from ``sim.cpu``: given, or measured on a recorded testbed run
    (per datagram reaching the process when the simulator models XDP too, else per datagram arriving; with
    ``cost: kind``, drawn per datagram from the CPU times the processes measured on their datagrams by kind)."""
    spec = s.sim["cpu"]
    if "run" in spec:
        if spec["cost"] == "marginal":
            return spec["cores"], analysis.cpu_marginal_per_packet_s(spec["run"])
        if spec["cost"] == "kind":
            taken, other = (_samples_s(s, spec["run"], f, "sim.cpu.cost") for f in ("hb_cpu_ms", "other_cpu_ms"))
            rumor = analysis.stats_samples_ms(spec["run"], "md_cpu_ms")  # a run recorded before them: as taken
            return spec["cores"], KindCost(taken=taken, other=other,
                                           rumor=Empirical.of([x / 1000.0 for x in rumor]) if rumor else None)
        return spec["cores"], analysis.cpu_per_packet_s(spec["run"], "userspace" if s.node["xdp"] else "arrival")
    return spec["cores"], float(spec["service_us"]) / 1e6


def _samples_s(s, run_dir: str, field: str, where: str) -> Empirical:
    """The run's stats-record samples of FIELD (ms) as a model drawn in seconds; a run without them is a
    `ScenarioError` naming the scenario's field WHERE that asked for them."""
    xs = analysis.stats_samples_ms(run_dir, field)
    if not xs:
        raise ScenarioError(s.file, None, where, f"{run_dir}: no {field} in its stats records (recorded by an "
                            "older version)")
    return Empirical.of([x / 1000.0 for x in xs])


def measured_latency_ms(run_dir: str, source: str = "heartbeats", *, file: str = "<scenario>",
                        field: str = "sim.latency.run") -> list[float]:
    """Per-hop latencies measured on a recorded testbed run, from SOURCE (see `analysis.HOP_SOURCES`); a run with
    none is a `ScenarioError` naming the scenario FILE and FIELD that chose it."""
    what, read = analysis.HOP_SOURCES[source]
    samples = read(run_dir)
    if not samples:
        raise ScenarioError(file, None, field, f"{run_dir}: no {what} recorded to measure latency from")
    return sorted(samples)


class SimulatedCluster(Cluster):
    backend = "sim"

    def __init__(self, s, out: Path, *, progress=None) -> None:
        self.s, self.out = s, Path(out)
        self.config = s.config(listen_port=GOSSIP_PORT)
        kw = {"latency": _latency(s)} if s.sim.get("latency") else {}
        if s.sim.get("cpu"):
            cores, service_s = _cpu(s)
            if s.sim["cpu"]["shared"]:
                kw["cpu"] = (cores, service_s)
            else:  # each node process serves what reaches it by itself; the wake-up model holds the waiting
                kw["service_s"] = service_s
        if s.sim.get("handling"):
            spec = s.sim["handling"]
            # measured: each message handled draws one of the run's handling times (their spread matters: the
            # mean of a skewed sample holds every hop to a time most of them beat)
            kw["handling_s"] = (_samples_s(s, spec["run"], "hb_handle_ms", "sim.handling.run")
                                if "run" in spec else float(spec["ms"]) / 1000.0)
            if spec.get("rumors"):  # a rumor adopted draws from the rumors' own handling times
                kw["handling_s"] = KindCost(taken=kw["handling_s"], other=kw["handling_s"],
                                            rumor=_samples_s(s, spec["run"], "md_handle_ms", "sim.handling.rumors"))
        if s.sim.get("wakeup"):
            kw["wakeup"] = _latency(s, "wakeup")
        self.sim = Simulation(seed=s.seed, config=self.config, xdp=bool(s.node["xdp"]),
                              record_refreshes=bool(s.node.get("record_refreshes")),
                              durable=bool(s.node.get("durable")), **kw)
        if progress is not None and progress.enabled:  # the simulator's speed on the run's display, as it runs
            from ..progress import sim_pacer
            self.sim.progress = sim_pacer(progress)
        self._groups: list[list[str]] | None = None
        self._views_at: tuple[float, dict, dict] | None = None

    # ---- time ------------------------------------------------------------------------------------------------

    def now(self) -> float:
        return self.sim.epoch_s + self.sim.time_s

    def advance_to(self, t: float, on_exit: Callable) -> None:
        self.sim.run_until(t - self.sim.epoch_s)  # simulated processes never die by themselves

    # ---- nodes -----------------------------------------------------------------------------------------------

    def start_nodes(self, seeds: dict[str, list[str]]) -> None:
        names = list(seeds)
        for i, name in enumerate(names):
            # processes launched one after another: their cycles do not tick in lockstep (as on the testbed)
            self.sim.run_until(i * self.config.cycle_s / len(names))
            self.sim.add_node(name, seeds=seeds[name])

    def start(self, name: str, seeds: list[str] | None) -> None:
        if name in self.sim.node_names:
            self.sim.restart(name)
            return
        self.sim.add_node(name, seeds=seeds or [])
        if self._groups is not None:
            self._apply_partition()

    def kill(self, name: str) -> None:
        self.sim.crash(name)

    def pause(self, name: str) -> None:
        self.sim.pause(name)

    def resume(self, name: str) -> None:
        self.sim.resume(name)

    def leave(self, name: str) -> None:
        self.sim.leave(name)

    def heartbeats(self, name: str, on: bool) -> None:
        (self.sim.start_heartbeats if on else self.sim.stop_heartbeats)(name)

    def publish(self, name: str, data: bytes) -> None:
        self.sim.publish(name, data)

    def set_secrets(self, secrets: tuple[bytes, ...], names: list[str]) -> None:
        self.sim.set_secrets(secrets, names)
        self.config = replace(self.config, secrets=secrets)  # what injected packets are signed with

    def _state(self) -> tuple[dict, dict]:
        """Every live node's view and value, computed once per instant (a read of all N nodes is one pass)."""
        t = self.sim.time_s
        if self._views_at is None or self._views_at[0] != t:
            self._views_at = (t, self.sim.views(), self.sim.metadata())
        return self._views_at[1], self._views_at[2]

    def read(self, name: str) -> Read | None:
        views, meta = self._state()
        if name not in views:
            return None
        version, _ = meta[name]
        return Read(members=tuple([name] + views[name]), version=version.seq, origin=version.origin)

    def recovered(self, live: set[str]) -> bool:
        # ids, not names: this runs every poll of a recovery at up to 10^4 nodes
        if set(self.sim.live_nodes()) != live or not self.sim.membership_converged():
            return False
        return len({v for v, _ in self.sim.metadata().values()}) <= 1

    # ---- network ---------------------------------------------------------------------------------------------

    def partition(self, groups: list[list[str]], *, via: str = "bpf") -> None:
        if not groups:
            self._groups = None
            self.sim.heal()
            return
        self._groups = [list(g) for g in groups]
        self._apply_partition()

    def _apply_partition(self) -> None:
        known = set(self.sim.node_names)
        groups = self._groups
        # Nodes the simulator does not know yet join its "no group" side when they start: leave the one side that
        # holds such hosts ungrouped, so a node that joins mid-partition is on its side from its first message.
        pending = [i for i, g in enumerate(groups) if any(n not in known for n in g)]
        if len(pending) == 1:
            groups = [g for i, g in enumerate(groups) if i != pending[0]]
        self.sim.partition(*[[n for n in g if n in known] for g in groups])

    def set_loss(self, rate: float, node: str | None = None) -> None:
        self.sim.set_loss(rate, node=node)

    def heal(self) -> None:
        self.partition([])
        self.sim.set_loss(0.0)
        for n in self.sim.node_names:
            self.sim.set_loss(0.0, node=n)

    def add_delay(self, names: list[str], ms: float, jitter_ms: float) -> object:
        from ..sim import Uniform
        model = Constant(delay_s=ms / 1000.0) if not jitter_ms else Uniform(
            lo_s=max(0.0, ms - jitter_ms) / 1000.0, hi_s=(ms + jitter_ms) / 1000.0)
        for n in names:
            self.sim.set_ingress_delay(n, model)
        return list(names)

    def remove_delay(self, handle) -> None:
        for n in handle:
            self.sim.set_ingress_delay(n, None)

    def inject(self, kind: str, target: str, *, count: int, rate_pps: int | None, rng) -> int:
        """Crafted datagrams into the target: through its XDP model (if the scenario has XDP), then its core, as a
        real node's program and socket would take them. Handed straight to the core they skipped the model, and a
        duplicate flood the testbed's XDP drops reached the simulated core whole."""
        from ..net.inject import payloads
        core = self.sim.core(target)
        now = self.now()
        if kind in ("replay", "flood"):
            taken = core.replay_sample()  # what the protocol took from a peer (heartbeat; swim: a PING or GOSSIP)
            if taken is None:
                return 0
            frames = [core.encode(taken)]
        else:
            src = rng.choice([n for n in self.sim.node_names if n != target] or [target])
            frames = payloads(kind, src_ip=self.sim.identity(src).addr, cluster=self.config.cluster,
                              secret=self.config.secrets[0], count=min(count, 256), rng=rng)
        for i in range(count):  # through the target's XDP model first, as the testbed's frames meet its program
            frame = frames[i % len(frames)]
            if not self.sim.fastpath_drops_frame(target, frame):
                core.receive(frame, now)
        core.take_events()
        return count

    # ---- what happened ---------------------------------------------------------------------------------------

    def counters(self, name: str) -> dict:
        st = self.sim.core(name).stats
        entry = {"packets_in": st.get("packets_in", 0), "packets_out": st.get("packets_out", 0),
                 "dropped": {k[8:]: v for k, v in st.items() if k.startswith("dropped_")}}
        fastpath = self.sim.fastpath_stats(name)
        if fastpath is not None:
            entry["xdp"] = fastpath
        plane = self.sim.plane_stats(name)
        if plane is not None:
            entry["hbplane"] = plane
        udp = self.sim.socket_stats(name)
        if udp is not None:
            entry["udp"] = udp
        return entry

    def network_counters(self) -> dict:
        return self.sim.network_stats()

    def sample(self, names: list[str]) -> list[dict]:
        """The XDP and socket-buffer models' counters per node and the network's drops, as the emulated cluster
        samples them."""
        t = self.now()
        out = []
        for n in names:
            fastpath = self.sim.fastpath_stats(n)
            if fastpath is not None:
                out.append({"t": t, "node": n, "kind": analysis.XDP_STATS, **fastpath})
            udp = self.sim.socket_stats(n)
            if udp is not None:
                out.append({"t": t, "node": n, "kind": analysis.UDP_STATS, **udp})
        out.append({"t": t, "node": "network", "kind": analysis.NET_STATS,
                    "dropped": analysis.network_drops(self.sim.network_stats())})
        return out

    def stop_all(self) -> None:
        return None

    def node_records(self) -> list[dict]:
        return self.sim.events

    def meta(self) -> dict:
        return {"xdp": bool(self.s.node["xdp"]), "broadcaster": False, "fidelity": "full"}


# What dissemination fidelity (one rumor over fixed, full views) can honour: the parser refuses everything else.
DISSEMINATION_CHECKS = ("metadata_converged",)
DISSEMINATION_PLOTS = ("infection",)


def dissemination_refusal(s) -> tuple[int | None, str, str] | None:
    """(line, field, message) of the first element of scenario S the dissemination model cannot honour."""
    why = "is not modelled at dissemination fidelity (one rumor over fixed full views)"
    membership = s.node.get("membership", "heartbeat")
    if membership != "heartbeat":  # the model is the heartbeat protocol's rumor rule, not another protocol's
        return None, "node.membership", f"membership {membership!r} {why}: it models the heartbeat protocol only"
    publishes = 0
    for st in s.timeline:
        where = f"timeline[{st.index}]"
        if st.action == "publish":
            publishes += 1
            if publishes > 1:
                return st.line, where, f"a second publish {why}"
            continue
        if st.action == "loss" and st.params.get("node", "all") == "all":
            continue
        what = f"fault '{st.action}'" if st.kind == "fault" else f"{st.kind} '{st.action}'"
        return st.line, where, f"{what} {why}"
    for name in s.checks:
        if name not in DISSEMINATION_CHECKS:
            return None, f"checks.{name}", f"check '{name}' {why}"
    for name in s.plots:
        if name not in DISSEMINATION_PLOTS:
            return None, f"plots.{name}", f"plot '{name}' {why}"
    return None


def run_dissemination(s, out: Path) -> dict:
    """One rumor over fixed full views (the dissemination model, up to 10^7 nodes): the project's forwarding rule
    and its anti-entropy swaps (one per node per cycle), with the scenario's fanout, loss and latency. The parser
    has refused everything else the scenario could say."""
    from ..interpreter import write_run
    from .. import plots
    out = Path(out)
    loss = max((float(st.params["rate"]) for st in s.timeline if st.action == "loss"), default=0.0)
    pub = next((st for st in s.timeline if st.action == "publish"), None)
    kw = {"latency": _latency(s)} if s.sim.get("latency") else {}
    res = disseminate(s.nodes, "protocol", fanout=s.node["fanout"], loss=loss, seed=s.seed,
                      anti_entropy_s=float(s.node["cycle_s"]), **kw)
    times = np.sort(res.informed_at[np.isfinite(res.informed_at)])
    step = max(1, len(times) // 500)
    idx = list(range(0, len(times), step)) + ([len(times) - 1] if len(times) else [])
    coverage = [(round(float(times[i]), 6), round((i + 1) / s.nodes, 6)) for i in sorted(set(idx))]

    def t_at(frac):
        k = int(np.ceil(frac * s.nodes)) - 1
        return round(float(times[k]), 6) if k < len(times) else None
    at = pub.at_s if pub is not None else 0.0
    # every node holds the same full view: which one publishes changes nothing but the name
    origin = pub.params.get("node") if pub is not None and isinstance(pub.params.get("node"), str) else "random"
    rumor = {"version": 1, "origin": 0, "origin_node": "n0" if origin == "random" else origin, "published_at": at, "coverage": coverage,
             "t50": t_at(0.5), "t90": t_at(0.9), "t100": t_at(1.0), "messages": int(res.messages_sent)}
    complete = res.informed == s.nodes
    checks = [{"name": "metadata_converged", "passed": complete,
               "detail": f"{res.informed} of {s.nodes} nodes informed"}] if "metadata_converged" in s.checks else []
    write_run(out, s, records=[], windows=[], stats={"nodes": {}}, meta={"t0": 0.0, "fidelity": "dissemination",
                                                                         "xdp": False})
    summary = {"scenario": s.name, "backend": "sim", "fidelity": "dissemination", "nodes": s.nodes, "seed": s.seed,
               "xdp": False, "passed": all(c["passed"] for c in checks), "checks": checks,
               "rumors": [rumor], "membership": {}, "duplicates": int(res.duplicates),
               "packets": {"packets_in": 0, "packets_out": int(res.messages_sent), "dropped": int(res.messages_lost),
                           "xdp_dropped": 0, "xdp_passed": 0}, "wall_s": res.wall_s}
    written = plots.draw_all(out, analysis.History(events=[], faults=[], meta={"t0": 0.0}), summary, s.plots)
    summary["plots"] = [p.name for p in written]
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary
