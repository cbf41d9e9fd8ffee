"""Running a scenario on real nodes: deploy, drive the timeline, end the same way every time, record, analyse.

One `ScenarioRun` owns everything it creates through one `ExitStack`: the network (namespaces or Mininet hosts),
the compiled BPF programs and their attachments, and the node processes. Whatever happens — a check failing, an
exception, Ctrl-C — the stack unwinds in ``finally`` and removes all of it. Every run, however it went, ends the
same way: stop all faults, wait for recovery, read every node, stop the nodes, write the history, analyse it.
"""

from __future__ import annotations

import contextlib
import heapq
import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from gossip import _wire as wire

from . import _control, analysis, plots
from .net import inject as _inject, shell as _shell
from .net import make_network
from .net.topology import Topology, new_run_id
from .errors import DeployError, TestbedError
from .scenario import Scenario, partition_groups, select_nodes

GOSSIP_PORT = 7946


@dataclass
class NodeProc:
    name: str
    index: int
    host: object
    argv: list[str]
    control: str
    proc: subprocess.Popen | None = None
    state: str = "never"  # never | up | down | paused
    deliberately_down: bool = False


class Progress:
    """Prints what the run is doing: the phase, time left, nodes up."""

    def __init__(self, enabled: bool, out=sys.stderr) -> None:
        self.enabled, self.out = enabled, out
        self._last = 0.0

    def say(self, msg: str) -> None:
        if self.enabled:
            print(f"[testbed] {msg}", file=self.out, flush=True)

    def tick(self, phase: str, left_s: float, up: int, total: int, force: bool = False) -> None:
        now = time.monotonic()
        if self.enabled and (force or now - self._last >= 2.0):
            self._last = now
            print(f"[testbed] {phase:<10} {left_s:6.1f} s left   nodes up {up}/{total}", file=self.out, flush=True)


class ScenarioRun:
    def __init__(self, scenario: Scenario, out_dir: Path, *, progress: Progress | None = None,
                 python: str = sys.executable) -> None:
        self.s = scenario
        self.out = Path(out_dir)
        self.progress = progress or Progress(False)
        self.python = python
        self.run_id = new_run_id()
        self.rng = random.Random(scenario.seed)
        self.cfg = dict(scenario.node)
        self.nodes: dict[str, NodeProc] = {}
        self.history: list[dict] = []
        self.faults: list[dict] = []
        self.open_faults: dict[str, dict] = {}
        self.injected: list[dict] = []
        self.unexpected_exits: list[str] = []
        self._events: list[tuple[float, int, str, Callable]] = []  # (time, seq, label, action)
        self._seq = 0
        self._fault_nodes: dict[str, list] = {}  # open fault key -> the nodes (or groups) it acts on
        self._step_keys: dict[int, str] = {}  # id(step) -> open fault key
        self._nft_tables: set[str] = set()
        self._leavers: set[str] = set()
        self._delays: dict[str, object] = {}  # open delay fault key -> its Delay (owned by the run's stack)
        self._stack: contextlib.ExitStack | None = None
        self.recovery_start: float | None = None
        self.start_mono = 0.0
        self.timings: dict[str, float] = {}  # bring-up and teardown phases, seconds
        self.memory: dict[str, int] = {}  # node -> unique set size (bytes), read at the end of the timeline
        self._teardown_started = 0.0
        self.fastpath = self.faults_prog = self.broadcaster = None
        self.net = None
        self.t0 = 0.0

    # ---- public -------------------------------------------------------------------------------------------

    def run(self) -> dict:
        if (self.out / "events.jsonl").exists() or (self.out / "events").exists():
            raise TestbedError(f"{self.out} already holds a run; choose another --out")
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "events").mkdir(exist_ok=True)
        (self.out / "control").mkdir(exist_ok=True)
        stats: dict = {"nodes": {}}
        stack = contextlib.ExitStack()
        interrupted = None
        try:
            with stack:
                self._stack = stack
                self._deploy(stack)
                try:
                    self._drive()
                except KeyboardInterrupt as e:
                    interrupted = e
                    self.progress.say("interrupted: stopping faults and reading the nodes before teardown "
                                      "(Ctrl-C again to skip straight to teardown)")
                self._end(stats, wait_for_recovery=interrupted is None)
        finally:
            self._write_files(stats)
        summary = self._analyse(stats)
        if interrupted is not None:
            raise interrupted
        return summary

    # ---- deployment -------------------------------------------------------------------------------------------

    def _deploy(self, stack: contextlib.ExitStack) -> None:
        s = self.s
        total = s.nodes + s.joins
        shape = s.topology.get("shape", "bridge")
        topo = Topology(nodes=total, shape=shape,
                        bridges=None if shape == "bridge" else s.topology.get("bridges"))
        t = time.monotonic()
        self.progress.say(f"run {self.run_id}: building {s.backend} network of {total} hosts ({shape})")
        self.net = stack.enter_context(make_network(s.backend, topo, self.run_id))
        stack.callback(self._time_teardown)  # runs last: after the network itself is gone
        self.timings["network_s"] = round(time.monotonic() - t, 3)
        self.progress.say(f"network up in {time.monotonic() - t:.1f} s")
        self._setup_bpf(stack)
        for i, host in enumerate(self.net.hosts):
            name = f"n{i}"
            self.nodes[name] = NodeProc(name=name, index=i, host=host, argv=[], control=str(
                self.out / "control" / f"{name}.sock"))
        stack.callback(self._stop_all_processes)
        t = time.monotonic()
        for i in range(s.nodes):
            self._start_node(f"n{i}", seeds=self._initial_seeds(i))
        self._wait_up([f"n{i}" for i in range(s.nodes)], timeout_s=60 + total * 0.5)
        self.timings["nodes_up_s"] = round(time.monotonic() - t, 3)
        self.progress.say(f"{s.nodes} nodes up in {time.monotonic() - t:.1f} s")

    def _setup_bpf(self, stack: contextlib.ExitStack) -> None:
        s, cfg = self.s, self.cfg
        needs_faults = any(st.action in ("loss",) or (st.action == "partition" and st.params.get("via") == "bpf")
                           for st in s.timeline)
        wants_xdp = cfg.get("xdp", False) and cfg.get("protocol") == "udp"
        if not (wants_xdp or needs_faults or cfg.get("broadcaster")):
            return
        import bpf
        ok, why = bpf.available()
        if not ok:
            if needs_faults:
                raise DeployError(f"the scenario's loss/partition faults need the BPF fault programs: {why}")
            self.progress.say(f"XDP unavailable ({why}): nodes run in pure userspace")
            self.cfg["xdp"] = False
            self.cfg["broadcaster"] = False
            return
        pin_root = self.net.names.pin_dir
        stack.callback(_remove_empty_tree, pin_root)  # runs after every program below has unpinned its maps
        t = time.monotonic()
        if wants_xdp:
            self.fastpath = stack.enter_context(bpf.FastPath.compile(pin_dir=f"{pin_root}/fastpath"))
            cid = wire.cluster_id(cfg["cluster"])
            for h in self.net.hosts:
                stack.enter_context(self.fastpath.attach(h.ifindex, netns=h.netns_path, mode=cfg["xdp_mode"]))
                self.fastpath.configure(h.ifindex, cid, GOSSIP_PORT)
        if cfg.get("broadcaster"):
            self.broadcaster = stack.enter_context(bpf.Broadcaster.compile(pin_dir=f"{pin_root}/broadcast"))
            for h in self.net.hosts:
                stack.enter_context(self.broadcaster.attach(h.ifindex, netns=h.netns_path))
        if needs_faults:
            self.faults_prog = stack.enter_context(bpf.Faults.compile())
            for h in self.net.hosts:
                stack.enter_context(self.faults_prog.attach(h.ifindex, netns=h.netns_path, direction="ingress"))
        self.timings["bpf_s"] = round(time.monotonic() - t, 3)
        self.progress.say(f"BPF compiled once and attached to {len(self.net.hosts)} interfaces in "
                          f"{time.monotonic() - t:.1f} s")

    def _initial_seeds(self, i: int) -> list[str]:
        if i == 0:
            return []
        k = min(self.cfg.get("seeds", 1), i)
        return [f"n{j}" for j in ([0] + self.rng.sample(range(1, i), k - 1) if k > 1 and i > 1 else [0])]

    def _argv(self, node: NodeProc, seeds: list[str]) -> list[str]:
        c = self.cfg
        argv = [self.python, "-m", "gossip", "node", "--name", node.name, "--addr", node.host.ip,
                "--port", str(GOSSIP_PORT), "--protocol", c["protocol"], "--secret", c["secret"],
                "--cluster", c["cluster"], "--fanout", str(c["fanout"]), "--cycle", str(c["cycle_s"]),
                "--timeout", str(c["timeout_s"]), "--buffer", str(c["buffer"]),
                "--max-packet", str(c["max_packet_bytes"]),
                "--events", str(self.out / "events" / f"{node.name}.jsonl"),
                "--http", f"unix:{node.control}", "--rng-seed", str(self.s.seed * 100003 + node.index),
                "--log-level", "warning"]
        for name in seeds:
            argv += ["--seed", f"{self.nodes[name].host.ip}:{GOSSIP_PORT}"]
        if self.fastpath is not None:
            argv += ["--xdp", "eth0", "--xdp-pin", self.fastpath.pin_dir]
        if self.broadcaster is not None:
            argv += ["--broadcast", "--broadcast-pin", self.broadcaster.pin_dir]
        if c.get("record_refreshes"):
            argv.append("--record-refreshes")
        return argv

    def _start_node(self, name: str, seeds: list[str] | None = None) -> None:
        node = self.nodes[name]
        if seeds is not None:
            node.argv = self._argv(node, seeds)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(node.control)
        log = open(self.out / "events" / f"{name}.log", "ab")
        try:
            node.proc = node.host.popen(node.argv, stdout=log, stderr=subprocess.STDOUT,
                                        env={**os.environ, "PYTHONUNBUFFERED": "1"})
        finally:
            log.close()
        node.state, node.deliberately_down = "up", False
        self._proc_record(name, "up")

    def _wait_up(self, names: list[str], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        pending = set(names)
        while pending:
            for name in list(pending):
                node = self.nodes[name]
                if node.proc.poll() is not None:
                    log = (self.out / "events" / f"{name}.log").read_text()[-1500:]
                    raise DeployError(f"node {name} exited during start-up (code {node.proc.returncode}):\n{log}")
                if os.path.exists(node.control):
                    pending.discard(name)
            if pending and time.monotonic() > deadline:
                raise DeployError(f"{len(pending)} node(s) did not come up within {timeout_s:.0f} s: "
                                  f"{', '.join(sorted(pending)[:8])}")
            time.sleep(0.05)

    def _stop_all_processes(self) -> None:
        for node in self.nodes.values():
            if node.proc is not None and node.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    if node.state == "paused":
                        node.proc.send_signal(signal.SIGCONT)
                    node.proc.terminate()
        deadline = time.monotonic() + 10
        for node in self.nodes.values():
            if node.proc is None:
                continue
            try:
                node.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                node.proc.kill()
                node.proc.wait()

    # ---- records ---------------------------------------------------------------------------------------------

    def _record(self, rec: dict) -> None:
        self.history.append({"t": round(time.time(), 6), **rec})

    def _proc_record(self, name: str, state: str) -> None:
        self._record({"node": name, "kind": analysis.PROC, "state": state})

    def _open_fault(self, key: str, kind: str, name: str, nodes: list[str] | None) -> None:
        self.open_faults[key] = {"name": name, "kind": kind, "start": time.time(), "nodes": nodes or []}

    def _close_fault(self, key: str) -> None:
        f = self.open_faults.pop(key, None)
        if f is not None:
            f["end"] = time.time()
            self.faults.append(f)

    # ---- the timeline ----------------------------------------------------------------------------------------

    def _at(self, t: float, label: str, action: Callable) -> None:
        self._seq += 1
        heapq.heappush(self._events, (t, self._seq, label, action))

    def _live_names(self) -> list[str]:
        return [n.name for n in self.nodes.values() if n.state == "up"]

    def _pick(self, sel, count: int | None = None) -> list[str]:
        return select_nodes(sel, live=self._live_names(), rng=self.rng, count=count,
                            started=[n.name for n in self.nodes.values() if n.state != "never"])

    def _drive(self) -> None:
        s = self.s
        start = time.monotonic()
        self.start_mono = start
        self.t0 = time.time()  # the timeline's zero: a step "at: 8" happens at t0 + 8 s
        for step in s.timeline:
            self._at(step.at_s, step.label, lambda step=step: self._begin(step))
            if step.until_s is not None and step.action != "churn":
                self._at(step.until_s, step.label + ":end", lambda step=step: self._finish(step))
        self._sample_xdp()
        next_sample = time.monotonic() + self.cfg["cycle_s"]
        while True:
            now = time.monotonic() - start
            while self._events and self._events[0][0] <= now:
                _, _, label, action = heapq.heappop(self._events)
                action()
            self._watch_processes()
            if time.monotonic() >= next_sample:
                self._sample_xdp()
                next_sample += self.cfg["cycle_s"]
            if now >= s.duration_s and not self._events:
                break
            self.progress.tick("timeline", s.duration_s - now, len(self._live_names()), len(self.nodes))
            nxt = self._events[0][0] if self._events else s.duration_s
            time.sleep(max(0.0, min(0.1, nxt - now)))

    def _watch_processes(self) -> None:
        for node in self.nodes.values():
            if node.state in ("up", "paused") and node.proc.poll() is not None:
                node.state = "down"
                self._proc_record(node.name, "down")
                self.unexpected_exits.append(node.name)
                self.progress.say(f"node {node.name} exited unexpectedly (code {node.proc.returncode})")

    def _begin(self, step) -> None:
        a, p = step.action, step.params
        key = f"{step.label}#{id(step)}"
        if step.kind == "op":
            return self._op(a, p)
        if step.kind == "inject":
            return self._inject(step)
        if a == "crash":
            victims = self._pick(p.get("node"), p.get("count"))
            self._fault_nodes[key] = victims
            self._open_fault(key, "crash", f"crash {','.join(victims[:3])}", victims)
            for v in victims:
                self._kill(v)
        elif a == "pause":
            victims = self._pick(p.get("node"), p.get("count"))
            self._fault_nodes[key] = victims
            self._open_fault(key, "pause", f"pause {','.join(victims[:3])}", victims)
            for v in victims:
                self._signal(v, signal.SIGSTOP, "paused")
        elif a == "churn":
            self._open_fault(key, "churn", "churn", None)
            self._schedule_churn(step, key)
        elif a == "partition":
            groups = partition_groups(p, list(self.nodes))
            self._open_fault(key, "partition", f"partition {'/'.join(str(len(g)) for g in groups)}", None)
            self._fault_nodes[key] = groups
            self._partition(groups, p.get("via", "bpf"), key)
        elif a == "loss":
            names = self._pick(p.get("node", "all"))
            self._open_fault(key, "loss", f"loss {p['rate']:.0%}", [] if p.get("node", "all") == "all" else names)
            for n in names:
                self.faults_prog.set_loss(self.nodes[n].host.ifindex, float(p["rate"]))
            self._fault_nodes[key] = names
        elif a == "delay":
            names = self._pick(p.get("node", "all"))
            self._open_fault(key, "delay", f"delay {p['ms']:g} ms", [] if p.get("node", "all") == "all" else names)
            self._fault_nodes[key] = names
            self._delay(key, names, p)
        self._step_keys[id(step)] = key

    def _finish(self, step) -> None:
        key = self._step_keys.get(id(step))
        if key is None or key not in self.open_faults:
            return
        a = step.action
        targets = self._fault_nodes.pop(key, [])
        if a == "crash":
            for v in targets:
                if self.nodes[v].state == "down":
                    self._restart(v)
        elif a == "pause":
            for v in targets:
                self._signal(v, signal.SIGCONT, "resumed")
        elif a == "partition":
            self._heal_partition(key)
        elif a == "loss":
            for n in targets:
                self.faults_prog.set_loss(self.nodes[n].host.ifindex, 0.0)
        elif a == "delay":
            self._undelay(key)
        self._close_fault(key)

    # -- operations

    def _op(self, a: str, p) -> None:
        if a == "publish":
            for name in self._pick(p.get("node", "random")):
                data = p.get("data") or f"value-{len(self.history)}-{self.rng.randrange(10**6)}"
                self._record({"node": name, "kind": analysis.PUBLISH_OP, "data": data})
                try:
                    _control.call(self.nodes[name].control, "POST", "/publish", data.encode())
                except _control.ControlError as e:
                    self.progress.say(f"publish on {name} failed: {e}")
        elif a == "join":
            spare = [n for n in self.nodes.values() if n.state == "never"][:p.get("count", 1)]
            for node in spare:
                live = self._live_names()
                seeds = self.rng.sample(live, min(self.cfg.get("seeds", 1), len(live)))
                self._start_node(node.name, seeds=seeds)
        elif a in ("stop", "start"):
            for name in self._pick(p["node"]):
                with contextlib.suppress(_control.ControlError):
                    _control.call(self.nodes[name].control, "POST", f"/{a}")
                    self._proc_record(name, "heartbeats_off" if a == "stop" else "heartbeats_on")
        elif a == "leave":
            for name in self._pick(p["node"]):
                node = self.nodes[name]
                with contextlib.suppress(_control.ControlError):
                    _control.call(node.control, "POST", "/stop")
                node.deliberately_down = True
                self._leavers.add(name)
                node.proc.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    node.proc.wait(timeout=5)
                node.state = "down"
                self._proc_record(name, "down")

    def _kill(self, name: str) -> None:
        node = self.nodes[name]
        if node.state not in ("up", "paused"):
            return
        node.deliberately_down = True
        with contextlib.suppress(ProcessLookupError):
            node.proc.send_signal(signal.SIGKILL)
        node.proc.wait()
        node.state = "down"
        self._proc_record(name, "down")

    def _restart(self, name: str) -> None:
        if self.nodes[name].state == "down":
            self._start_node(name)

    def _signal(self, name: str, sig: int, state: str) -> None:
        node = self.nodes[name]
        if node.state not in ("up", "paused") or node.proc.poll() is not None:
            return
        node.proc.send_signal(sig)
        node.state = "paused" if state == "paused" else "up"
        self._proc_record(name, state)

    def _schedule_churn(self, step, key: str) -> None:
        """A Poisson process of crashes (each restarted after downtime_s) plus evenly spread joins."""
        p, now = step.params, time.monotonic() - self.start_mono
        end = step.until_s
        downtime = float(p.get("downtime_s") or 2 * self.cfg["timeout_s"])
        t = now
        while True:
            t += self.rng.expovariate(float(p["rate_per_s"]))
            if t >= end:
                break
            self._at(t, "churn:crash", lambda: self._churn_crash(downtime))
        joins = int(p.get("joins", 0))
        for k in range(joins):
            self._at(now + (k + 0.5) * (end - now) / joins, "churn:join", lambda: self._op("join", {"count": 1}))
        self._at(end, "churn:end", lambda: self._end_churn(key))

    def _churn_crash(self, downtime: float) -> None:
        live = [n for n in self._live_names() if n != "n0"]  # keep the first seed, as operators keep theirs
        if len(live) < 2:
            return
        victim = self.rng.choice(live)
        self._kill(victim)
        self._at(time.monotonic() - self.start_mono + downtime, "churn:restart", lambda: self._restart(victim))

    def _end_churn(self, key: str) -> None:
        self._close_fault(key)

    def _partition(self, groups: list[list[str]], via: str, key: str) -> None:
        if via == "bpf":
            self.faults_prog.set_partition([[self.nodes[n].host.ip for n in g] for g in groups])
            return
        table = self.net.names.nft_table("part")
        sets = [[self.nodes[n].host.root_veth for n in g] for g in groups]
        rules = []
        for i, a in enumerate(sets):
            for j, b in enumerate(sets):
                if i != j:
                    rules.append(f"iifname {{ {', '.join(a)} }} oifname {{ {', '.join(b)} }} drop")
        script = (f"table bridge {table} {{\n chain forward {{\n  type filter hook forward priority 0;\n"
                  + "".join(f"  {r}\n" for r in rules) + " }\n}\n")
        _shell.run(["nft", "-f", "-"], input=script)
        self._nft_tables.add(table)

    def _heal_partition(self, key: str) -> None:
        if self.faults_prog is not None:
            self.faults_prog.set_partition([])
        for table in list(self._nft_tables):
            _shell.run(["nft", "delete", "table", "bridge", table], check=False)
            self._nft_tables.discard(table)

    def _delay(self, key: str, names: list[str], p) -> None:
        """Delay every packet arriving at NAMES: netem where the kernel has it, else an NFQUEUE handler per host."""
        from .net.delay import Delay
        d = self._stack.enter_context(Delay([self.nodes[n].host for n in names], run_id=self.run_id,
                                            log_dir=self.out / "events"))
        d.set(float(p["ms"]), jitter_ms=float(p.get("jitter_ms", 0.0)))
        self._delays[key] = d

    def _undelay(self, key: str) -> None:
        d = self._delays.pop(key, None)
        if d is not None:
            d.clear()

    def _inject(self, step) -> None:
        p = step.params
        kind = step.action
        for name in self._pick(p.get("target", "random")):
            node = self.nodes[name]
            target = _inject.Target(ip=node.host.ip, mac=node.host.mac, root_veth=node.host.root_veth)
            others = [n for n in self.nodes.values() if n.name != name]
            src = (self.rng.choice(others).host.ip if others else node.host.ip)
            t = time.time()
            sent = _inject.inject(kind, target, src_ip=src, cluster=self.cfg["cluster"],
                                  secret=self.cfg["secret"].encode(), count=int(p.get("count", 10)),
                                  rate_pps=p.get("rate_pps"), rng=self.rng)
            self.faults.append({"name": f"inject {kind}", "kind": "inject", "start": t, "end": time.time(),
                                "nodes": [name]})
            self._record({"node": name, "kind": analysis.INJECTED, "what": kind, "count": sent,
                          "expect": _inject.EXPECT[kind]})
            self.progress.say(f"injected {sent} {kind} packet(s) into {name}")

    def _sample_xdp(self) -> None:
        if self.fastpath is None:
            return
        for node in self.nodes.values():
            if node.state == "never":
                continue
            st = self.fastpath.stats(node.host.ifindex)
            self._record({"node": node.name, "kind": analysis.XDP_STATS, "passed": st.get("passed", 0),
                          "dropped": {k[len("dropped_"):]: v for k, v in st.items()
                                      if k.startswith("dropped_") and v}})

    # ---- the end -------------------------------------------------------------------------------------------

    def _end(self, stats: dict, *, wait_for_recovery: bool = True) -> None:
        # 1. stop all faults: heal partitions and loss, resume paused nodes, restart crashed ones
        for key in list(self.open_faults):
            step_id = next((sid for sid, k in self._step_keys.items() if k == key), None)
            step = next((st for st in self.s.timeline if id(st) == step_id), None)
            if step is not None:
                self._finish(step)
            else:
                self._close_fault(key)
        if self.faults_prog is not None:
            self.faults_prog.heal()
        self._events.clear()
        for node in self.nodes.values():
            if node.state == "paused":
                self._signal(node.name, signal.SIGCONT, "resumed")
            elif node.state == "down" and node.deliberately_down and node.name not in self._leavers:
                self._start_node(node.name)
        self.recovery_start = time.time()
        # 2. wait for recovery: every live node's view equals the live set and holds the newest version
        deadline = time.monotonic() + (self.s.recovery_s if wait_for_recovery else 0.0)
        while time.monotonic() < deadline:
            self._watch_processes()
            if self._recovered():
                break
            self._sample_xdp()
            self.progress.tick("recovery", deadline - time.monotonic(), len(self._live_names()), len(self.nodes))
            time.sleep(0.25)
        time.sleep(min(self.cfg["cycle_s"], 1.0))
        self._sample_xdp()
        self._measure_memory()
        # 3. final reads
        for node in self.nodes.values():
            if node.state != "up":
                continue
            try:
                members = _control.call(node.control, "GET", "/list")
                meta = _control.call(node.control, "GET", "/metadata")
                st = _control.call(node.control, "GET", "/stats")
            except _control.ControlError as e:
                self.progress.say(f"final read of {node.name} failed: {e}")
                continue
            self._record({"node": node.name, "kind": analysis.FINAL, "members": sorted(m["name"] for m in members),
                          "version": meta["version"], "origin": meta["origin"]})
            entry = {"packets_in": st["packets_in"], "packets_out": st["packets_out"], "dropped": st["dropped"]}
            if self.fastpath is not None:
                xs = self.fastpath.stats(node.host.ifindex)
                entry["xdp"] = {"passed": xs.get("passed", 0),
                                "dropped": {k[len("dropped_"):]: v for k, v in xs.items()
                                            if k.startswith("dropped_") and v}}
            if self.faults_prog is not None:
                entry["faults"] = self.faults_prog.stats(node.host.ifindex)
            if self.broadcaster is not None:
                entry["broadcast"] = self.broadcaster.stats(node.host.ifindex)
            stats["nodes"][node.name] = entry
        self._teardown_started = time.monotonic()
        self._stop_all_processes()
        for node in self.nodes.values():
            if node.state in ("up", "paused"):
                node.state = "down"

    def _time_teardown(self) -> None:
        if self._teardown_started:
            self.timings["teardown_s"] = round(time.monotonic() - self._teardown_started, 3)

    def _measure_memory(self) -> None:
        import psutil
        for node in self.nodes.values():
            if node.state == "up":
                # the process is nsenter's child: measure the node itself (nsenter execs it, same pid)
                with contextlib.suppress(psutil.Error):
                    self.memory[node.name] = psutil.Process(node.proc.pid).memory_full_info().uss

    def _recovered(self) -> bool:
        live = set(self._live_names())
        versions = set()
        for name in live:
            try:
                members = _control.call(self.nodes[name].control, "GET", "/list", timeout_s=1.0)
                meta = _control.call(self.nodes[name].control, "GET", "/metadata", timeout_s=1.0)
            except _control.ControlError:
                return False
            if {m["name"] for m in members} != live:
                return False
            versions.add((meta["version"], meta["origin"]))
        return len(versions) <= 1

    # ---- files and analysis ---------------------------------------------------------------------------------

    def _write_files(self, stats: dict) -> None:
        events = list(self.history)
        for f in sorted((self.out / "events").glob("*.jsonl")):
            events.extend(analysis.read_jsonl(f))
        events.sort(key=lambda e: e["t"])
        with open(self.out / "events.jsonl", "w") as f:
            for e in events:
                f.write(json.dumps(e) + "\n")
        with open(self.out / "faults.jsonl", "w") as f:
            for w in sorted(self.faults + [dict(v, end=time.time()) for v in self.open_faults.values()],
                            key=lambda w: w["start"]):
                f.write(json.dumps(w) + "\n")
        (self.out / "stats.json").write_text(json.dumps(stats, indent=1))
        meta = {"scenario": self.s.name, "backend": self.s.backend, "nodes": self.s.nodes, "seed": self.s.seed,
                "run_id": self.run_id, "t0": self.t0, "recovery_start": self.recovery_start,
                "recovery_s": self.s.recovery_s, "cycle_s": self.cfg["cycle_s"], "timeout_s": self.cfg["timeout_s"],
                "fanout": self.cfg["fanout"], "host_cpus": os.cpu_count(),
                "xdp": bool(self.fastpath), "broadcaster": bool(self.broadcaster),
                "unexpected_exits": self.unexpected_exits, "file": self.s.file, "timings": self.timings,
                "node_memory_bytes": self.memory}
        (self.out / "meta.json").write_text(json.dumps(meta, indent=1))

    def _analyse(self, stats: dict) -> dict:
        history = analysis.load_history(self.out)
        summary = analysis.summarize(history, dict(self.s.checks), stats)
        (self.out / "summary.json").write_text(json.dumps(summary, indent=1))
        plots.draw_all(self.out, history, summary, self.s.plots)
        return summary


def _remove_empty_tree(path: str) -> None:
    for root, dirs, _files in os.walk(path, topdown=False):
        for d in dirs:
            with contextlib.suppress(OSError):
                os.rmdir(os.path.join(root, d))
    with contextlib.suppress(OSError):
        os.rmdir(path)


def run_scenario(scenario: Scenario, out_dir: Path, *, progress: bool = False) -> dict:
    if scenario.backend == "sim":
        from .sim_runner import run_sim
        return run_sim(scenario, out_dir)
    return ScenarioRun(scenario, out_dir, progress=Progress(progress)).run()


def run_subprocess(scenario: str, out_dir: Path | str, *, backend: str | None = None, nodes: int | None = None,
                   seed: int | None = None, xdp: bool = True) -> dict:
    """Run a scenario in a child ``python -m testbed run`` and return its summary.

    For callers that already run an event loop (a Jupyter kernel): the netlink library the network layer uses
    drives its own loop and cannot nest in a running one.
    """
    argv = [sys.executable, "-m", "testbed", "run", str(scenario), "--out", str(out_dir), "--quiet"]
    for flag, value in (("--backend", backend), ("--nodes", nodes), ("--seed", seed)):
        if value is not None:
            argv += [flag, str(value)]
    if not xdp:
        argv.append("--no-xdp")
    r = subprocess.run(argv, capture_output=True, text=True)
    summary = Path(out_dir) / "summary.json"
    if not summary.exists():
        raise TestbedError(f"`{' '.join(argv)}` produced no summary (exit {r.returncode}):\n{r.stderr[-2000:]}")
    return json.loads(summary.read_text())
