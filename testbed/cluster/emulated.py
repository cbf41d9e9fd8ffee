"""The `Cluster` of real hosts: one ``python -m gossip node`` process per host, in network namespaces (default)
or Mininet hosts, with the BPF programs compiled once and attached to every host.

Everything it creates is owned by one `ExitStack`: the network (`testbed.net`), the BPF programs and their
attachments, the nft tables and delay handlers, and the node processes (`procs.ProcessGroup`, the one process
manager). Leaving the cluster unwinds the stack in ``finally``, also on an error or Ctrl-C.

Network faults act where the network is: the fault programs sit on the bridge-side end of every host's veth
(both directions), so a node and its XDP program see only what the network delivered.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Callable

from gossip import _wire as wire

from .. import analysis
from ..errors import DeployError
from ..net import make_network
from ..net.topology import Topology, new_run_id
from . import control
from .base import Cluster, Read
from .procs import ProcessGroup

GOSSIP_PORT = 7946
_WATCH_S = 0.1
_TICKS_PER_S = os.sysconf("SC_CLK_TCK")  # /proc/stat's unit
START_WAVE = 4 * (os.cpu_count() or 1)  # node processes starting at once (see `EmulatedCluster.start_nodes`)
WAVES_ABOVE = 128  # node counts up to this start all at once


class EmulatedCluster(Cluster):
    def __init__(self, s, out: Path, *, progress, python: str = sys.executable) -> None:
        self.s, self.out, self.progress, self.python = s, Path(out), progress, python
        self.backend = s.backend
        self.run_id = new_run_id()
        self.cfg = dict(s.node)
        self.secrets = (str(self.cfg["secret"]).encode(),)  # the key ring nodes start with (`set_secrets`)
        self.names = s.hosts
        self.timings: dict[str, float] = {}
        self.memory: dict[str, int] = {}
        self.fastpath = self.faults = self.broadcaster = self.plane = None
        self._nft = None
        self._root_ifindex: dict[str, int] = {}
        self._programs: dict[str, int] = {}  # name -> fd of every BPF program the run loaded (host_stats records)
        self._hosts: dict[str, object] = {}
        self._seeds: dict[str, list[str]] = {}
        self._ended: set = set()
        self._stack = contextlib.ExitStack()
        self._teardown_started = 0.0

    # ---- deployment ------------------------------------------------------------------------------------------

    def __enter__(self) -> "EmulatedCluster":
        try:
            self._deploy(self._stack)
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()

    def _deploy(self, stack: contextlib.ExitStack) -> None:
        s = self.s
        shape = s.topology.get("shape", "bridge")
        topo = Topology(nodes=len(self.names), shape=shape, bridges=None if shape == "bridge" else
                        s.topology.get("bridges"))
        t = time.monotonic()
        self.progress.say(f"run {self.run_id}: building {s.backend} network of {len(self.names)} hosts ({shape})")
        self.net = stack.enter_context(make_network(s.backend, topo, self.run_id))
        stack.callback(self._time_teardown)  # runs last: after the network itself is gone
        self.timings["network_s"] = round(time.monotonic() - t, 3)
        self.progress.say(f"network up in {time.monotonic() - t:.1f} s")
        self._hosts = {f"n{i}": h for i, h in enumerate(self.net.hosts)}
        self._setup_bpf(stack)
        (self.out / "events").mkdir(parents=True, exist_ok=True)
        (self.out / "control").mkdir(exist_ok=True)
        self.procs = stack.enter_context(ProcessGroup(self.run_id, self.out, log_dir=self.out / "events"))

    def _setup_bpf(self, stack: contextlib.ExitStack) -> None:
        s, cfg = self.s, self.cfg
        needs_faults = any(st.action == "loss" or (st.action == "partition" and st.params.get("via") == "bpf")
                           for st in s.timeline)
        wants_xdp = cfg.get("xdp", False) and cfg.get("protocol") == "udp"
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
        hosts = self.net.hosts
        if wants_xdp:
            # one program for every node: its maps hold each node's state about every node (N x N pairs)
            self.fastpath = stack.enter_context(bpf.FastPath.compile(pin_dir=f"{pin_root}/fastpath",
                                                                     nodes=len(hosts)))
            cid = wire.cluster_id(cfg["cluster"])
            for h in hosts:
                stack.enter_context(self.fastpath.attach(h.ifindex, netns=h.netns_path, mode=cfg["xdp_mode"]))
                self.fastpath.configure(h.ifindex, cid, GOSSIP_PORT)
        if wants_xdp and cfg.get("kernel_heartbeats"):
            # the in-kernel heartbeat plane, compiled once for every node (TC ingress, after the faults); each node
            # configures its own interface's entries through the pinned maps (--hbplane-pin)
            from bpf.hbplane import HeartbeatPlane
            self.plane = stack.enter_context(HeartbeatPlane.compile(pin_dir=f"{pin_root}/hbplane", nodes=len(hosts)))
            for h in hosts:
                stack.enter_context(self.plane.attach(h.ifindex, netns=h.netns_path))
        if cfg.get("broadcaster"):
            self.broadcaster = stack.enter_context(bpf.Broadcaster.compile(pin_dir=f"{pin_root}/broadcast"))
            for h in hosts:
                stack.enter_context(self.broadcaster.attach(h.ifindex, netns=h.netns_path))
        # On the bridge-side end of each veth, both ways: where the network is, before the node's XDP. Loaded on
        # every run where BPF works: besides loss and partitions, it is the network's packet meter.
        self.faults = stack.enter_context(bpf.Faults.compile())
        self._root_ifindex = {n: socket.if_nametoindex(h.root_veth) for n, h in self._hosts.items()}
        for n, ifindex in self._root_ifindex.items():
            stack.enter_context(self.faults.attach(ifindex, netns=None, direction="both", node_mac=self._hosts[n].mac))
        self._programs = {name: fd for name, fd in (
            ("xdp", self.fastpath and self.fastpath.prog_fd), ("hbplane", self.plane and self.plane.prog_fd),
            ("broadcast", self.broadcaster and self.broadcaster.prog_fd),
            ("faults_from_node", self.faults.prog_fds["ingress"]), ("faults_to_node", self.faults.prog_fds["egress"]))
            if fd is not None}
        self.timings["bpf_s"] = round(time.monotonic() - t, 3)
        self.progress.say(f"BPF compiled once and attached to {len(hosts)} interfaces in "
                          f"{time.monotonic() - t:.1f} s")

    def _time_teardown(self) -> None:
        if self._teardown_started:
            self.timings["teardown_s"] = round(time.monotonic() - self._teardown_started, 3)

    # ---- nodes -----------------------------------------------------------------------------------------------

    def _control(self, name: str) -> str:
        return str(self.out / "control" / f"{name}.sock")

    def _argv(self, name: str, seeds: list[str]) -> list[str]:
        c, host = self.cfg, self._hosts[name]
        index = int(name[1:])
        argv = [self.python, "-m", "gossip", "node", "--name", name, "--addr", host.ip,
                "--port", str(GOSSIP_PORT), "--protocol", c["protocol"],
                "--membership", c.get("membership", "heartbeat"),
                *(arg for key in self.secrets for arg in ("--secret", key.decode())),
                "--cluster", c["cluster"], "--fanout", str(c["fanout"]), "--cycle", str(c["cycle_s"]),
                "--timeout", str(c["timeout_s"]), "--buffer", str(c["buffer"]),
                "--max-packet", str(c["max_packet_bytes"]),
                "--events", str(self.out / "events" / f"{name}.jsonl"),
                "--http", f"unix:{self._control(name)}", "--rng-seed", str(self.s.seed * 100003 + index),
                "--log-level", "warning"]
        for key, value in sorted((c.get("options") or {}).items()):  # NodeConfig checked them when the file was read
            argv += ["--option", f"{key}={str(value).lower() if isinstance(value, bool) else value}"]
        for seed in seeds:
            argv += ["--seed", f"{self._hosts[seed].ip}:{GOSSIP_PORT}"]
        if self.fastpath is not None:
            argv += ["--xdp", "eth0", "--xdp-pin", self.fastpath.pin_dir]
        if self.broadcaster is not None:
            argv += ["--broadcast", "--broadcast-pin", self.broadcaster.pin_dir]
        if self.plane is not None:
            argv += ["--kernel-heartbeats", "--hbplane-pin", self.plane.pin_dir]
        if c.get("record_refreshes"):
            argv.append("--record-refreshes")
        if c.get("durable"):  # one directory per node, kept across its restarts (the simulator keeps it in memory)
            argv += ["--state-dir", str(self.out / "state" / name)]
        return argv

    def start(self, name: str, seeds: list[str] | None) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._control(name))
        if seeds is not None or name not in self.procs:
            self._seeds[name] = list(seeds or [])
        env = {"PYTHONUNBUFFERED": "1"}
        if name in self.procs:
            proc = self.procs[name]
            proc.argv = tuple(self._argv(name, self._seeds[name]))
            self.procs.restart(name)
        else:
            self.procs.start(name, self._argv(name, self._seeds[name]), host=self._hosts[name], env=env)

    def start_nodes(self, seeds: dict[str, list[str]]) -> None:
        """Start the nodes in waves of `START_WAVE`, each up (serving its control socket) before the next starts.
        A node's start-up (interpreter, imports, sockets) costs ~0.13 CPU-s; launched all at once, 512 of them kept
        the two cores saturated for minutes, and the nodes already running, starved, suspected one another (SWIM
        at a 0.5 s probe timeout) into a storm of refutations that outlived the start-up. In waves the running
        nodes keep their share of the CPU, and every node's seeds are up before it starts.

        Up to `WAVES_ABOVE` nodes all are launched at once, as the simulator's start spreads them over one cycle
        (its validation set, 16-128 nodes, was measured that way): in waves, two 16-node validation runs' rumors
        were ~0.3 ms slower at t50 and their KS distance to the simulator rose from 0.07-0.13 to 0.16-0.19, while
        launching at once starves nobody at that size."""
        t = time.monotonic()
        names = list(seeds)
        deadline_s = 60 + len(self.names) * 0.5
        step = START_WAVE if len(names) > WAVES_ABOVE else max(1, len(names))
        for i in range(0, len(names), step):
            wave = names[i:i + step]
            for name in wave:
                self.start(name, seeds[name])
            self._wait_up(wave, timeout_s=max(1.0, deadline_s - (time.monotonic() - t)))
        self.timings["nodes_up_s"] = round(time.monotonic() - t, 3)
        self.progress.say(f"{len(seeds)} nodes up in {time.monotonic() - t:.1f} s")

    def _wait_up(self, names: list[str], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        pending = set(names)
        while pending:
            for name in list(pending):
                proc = self.procs[name]
                if not proc.running:
                    log = (proc.stdout_path.read_text() + proc.stderr_path.read_text())[-1500:]
                    raise DeployError(f"node {name} exited during start-up (code {proc.returncode}):\n{log}")
                if os.path.exists(self._control(name)):
                    pending.discard(name)
            if pending and time.monotonic() > deadline:
                raise DeployError(f"{len(pending)} node(s) did not come up within {timeout_s:.0f} s: "
                                  f"{', '.join(sorted(pending)[:8])}")
            time.sleep(0.05)

    def kill(self, name: str) -> None:
        self.procs.kill(name)
        self._plane_off(name)

    def _plane_off(self, name: str) -> None:
        """A node that is gone takes its heartbeat plane with it: left configured, the kernel would go on taking and
        forwarding heartbeats for a dead node. A restarted node configures it again."""
        if self.plane is not None:
            self.plane.unconfigure(self._hosts[name].ifindex)

    def pause(self, name: str) -> None:
        self.procs.pause(name)

    def resume(self, name: str) -> None:
        if self.procs[name].running:
            self.procs.resume(name)

    def leave(self, name: str) -> None:
        # SIGTERM is the node's own leave (a LEAVE rumor, a bounded flush, exit): the path a user's node takes
        self.procs.terminate(name)
        self._plane_off(name)

    def heartbeats(self, name: str, on: bool) -> None:
        with contextlib.suppress(control.ControlError):
            control.call(self._control(name), "POST", "/start" if on else "/stop")

    def publish(self, name: str, data: bytes) -> None:
        try:
            control.call(self._control(name), "POST", "/publish", data)
        except control.ControlError as e:
            self.progress.say(f"publish on {name} failed: {e}")

    def set_secrets(self, secrets: tuple[bytes, ...], names: list[str]) -> None:
        self.secrets = secrets
        body = json.dumps({"secrets": [k.decode() for k in secrets]}).encode()
        for name in names:
            try:
                control.call(self._control(name), "POST", "/secrets", body)
            except control.ControlError as e:
                self.progress.say(f"key ring on {name} failed: {e}")

    def read(self, name: str) -> Read | None:
        try:
            members = control.call(self._control(name), "GET", "/list", timeout_s=1.0)
            meta = control.call(self._control(name), "GET", "/metadata", timeout_s=1.0)
        except control.ControlError:
            return None
        return Read(members=tuple(m["name"] for m in members), version=meta["version"], origin=meta["origin"])

    # ---- time ------------------------------------------------------------------------------------------------

    def now(self) -> float:
        return time.time()

    def advance_to(self, t: float, on_exit: Callable[[str, int | None], None]) -> None:
        while True:
            for proc in self.procs:
                if proc.popen is not None and not proc.running and proc.popen not in self._ended:
                    self._ended.add(proc.popen)  # reported once per incarnation; deliberate stops included,
                    on_exit(proc.name, proc.returncode)  # the interpreter knows which nodes it stopped
            left = t - time.time()
            if left <= 0:
                return
            time.sleep(min(_WATCH_S, left))

    # ---- network ---------------------------------------------------------------------------------------------

    def _ips(self, names: list[str]) -> list[str]:
        return [self._hosts[n].ip for n in names]

    def partition(self, groups: list[list[str]], *, via: str = "bpf") -> None:
        if not groups:
            if self.faults is not None:
                self.faults.set_partition([])
            if self._nft is not None:
                self._nft.clear()
            return
        if via == "bpf":
            self.faults.set_partition([self._ips(g) for g in groups])
            return
        if self._nft is None:
            from ..net.nft import NftPartition
            self._nft = self._stack.enter_context(NftPartition(self.net.names))
        self._nft.set([self._ips(g) for g in groups])

    def set_loss(self, rate: float, node: str | None = None) -> None:
        if self.faults is None:
            if rate:
                raise DeployError("loss needs the BPF fault programs")
            return
        if node is None:
            self.faults.set_loss(rate)
        else:
            self.faults.set_loss(rate, ifindex=self._root_ifindex[node])

    def heal(self) -> None:
        self.partition([])
        if self.faults is not None:
            self.faults.heal()

    def add_delay(self, names: list[str], ms: float, jitter_ms: float) -> object:
        from ..net.delay import Delay
        d = self._stack.enter_context(Delay([self._hosts[n] for n in names], run_id=self.run_id,
                                            log_dir=self.out / "events"))
        d.set(ms, jitter_ms=jitter_ms)
        return d

    def remove_delay(self, handle) -> None:
        handle.clear()

    def inject(self, kind: str, target: str, *, count: int, rate_pps: int | None, rng) -> int:
        from ..net import inject
        host = self._hosts[target]
        others = [n for n in self.names if n != target]
        src = self._hosts[rng.choice(others)].ip if others else host.ip
        return inject.inject(kind, inject.Target(ip=host.ip, mac=host.mac, root_veth=host.root_veth), src_ip=src,
                             cluster=self.cfg["cluster"], secret=self.secrets[0], count=count,
                             rate_pps=rate_pps, rng=rng)

    # ---- what happened ---------------------------------------------------------------------------------------

    def _xdp(self, name: str) -> dict:
        st = self.fastpath.stats(self._hosts[name].ifindex)
        return {"passed": st.get("passed", 0),
                "dropped": {k[len("dropped_"):]: v for k, v in st.items() if k.startswith("dropped_") and v},
                "evicted": st.get("hb_evicted", 0)}  # nonzero: the heartbeat map was too small for the run

    def _udp(self, name: str) -> dict:
        """The node's namespace's UDP counters (`udp_counters`); empty if the namespace cannot be read."""
        from bpf._netns import entered
        from bpf.errors import BpfError
        try:
            with entered(self._hosts[name].netns_path):
                with open("/proc/thread-self/net/snmp") as f:  # the calling thread's namespace's counters
                    return udp_counters(f.read())
        except (OSError, ValueError, KeyError, IndexError, BpfError):
            return {}

    def sample(self, names: list[str]) -> list[dict]:
        t = round(time.time(), 6)
        out = [] if self.fastpath is None else [{"t": t, "node": n, "kind": "xdp_stats", **self._xdp(n)}
                                                 for n in names]
        for n in names:
            udp = self._udp(n)
            if udp:
                out.append({"t": t, "node": n, "kind": analysis.UDP_STATS, **udp})
        if self.faults is not None:
            out.append({"t": t, "node": "network", "kind": analysis.NET_STATS,
                        "dropped": analysis.network_drops(self.network_counters())})
        out.append(self._host_stats(t))
        return out

    def _host_stats(self, t: float) -> dict:
        """The host's CPU counters, this process's own CPU (``testbed_cpu_s``: the testbed's share of the host's)
        and the run's BPF programs' run time (`analysis.HOST_STATS`): the nodes' own ``cpu_s`` misses the packet
        work softirq charges to whichever task was running, and the programs' time."""
        rec = {"t": t, "node": "host", "kind": analysis.HOST_STATS, "testbed_cpu_s": round(time.process_time(), 4)}
        with contextlib.suppress(OSError, ValueError):  # no /proc/stat: no CPU fields
            with open("/proc/stat") as f:
                rec.update(analysis.proc_stat_cpu(f.read(), _TICKS_PER_S))
        from bpf._sys import prog_run_stats
        for name, fd in self._programs.items():
            with contextlib.suppress(OSError):
                rec[f"bpf_{name}_run_ns"], rec[f"bpf_{name}_runs"] = prog_run_stats(fd)
        return rec

    def counters(self, name: str) -> dict:
        try:
            st = control.call(self._control(name), "GET", "/stats")
        except control.ControlError:
            st = {}
        entry = {"packets_in": st.get("packets_in", 0), "packets_out": st.get("packets_out", 0),
                 "dropped": st.get("dropped", {})}
        if self.fastpath is not None:
            entry["xdp"] = self._xdp(name)
        udp = self._udp(name)
        if udp:
            entry["udp"] = udp
        if self.faults is not None:
            entry["faults"] = self.faults.stats(self._root_ifindex[name])  # what the network did to its packets
        if self.broadcaster is not None:
            entry["broadcast"] = self.broadcaster.stats(self._hosts[name].ifindex)
        if self.plane is not None:
            entry["hbplane"] = self.plane.stats(self._hosts[name].ifindex)
        return entry

    def network_counters(self) -> dict:
        if self.faults is None:
            return {}
        total = self.faults.stats()  # every interface, summed
        if self._nft is not None:
            total["bridge_dropped_partition"] = self._nft.counters()  # an nft partition drops inside the bridge
        return total

    def stop_all(self) -> None:
        import psutil
        for proc in self.procs:
            if proc.running:
                with contextlib.suppress(psutil.Error):  # nsenter execs the node: same pid
                    self.memory[proc.name] = psutil.Process(proc.pid).memory_full_info().uss
        self._teardown_started = time.monotonic()
        self.procs.close()

    def node_records(self) -> list[dict]:
        from .. import analysis
        out = []
        for f in sorted((self.out / "events").glob("*.jsonl")):
            out.extend(analysis.read_jsonl(f))
        return out

    def meta(self) -> dict:
        return {"run_id": self.run_id, "xdp": bool(self.fastpath), "broadcaster": bool(self.broadcaster),
                "kernel_heartbeats": bool(self.plane),
                "timings": self.timings, "node_memory_bytes": self.memory}


def udp_counters(snmp: str) -> dict:
    """The UDP counters of a /proc/net/snmp text: ``in_datagrams`` (delivered to sockets), ``rcvbuf_errors``
    (dropped because the socket's receive buffer was full), ``in_errors`` (those and the other receive errors),
    ``mem_errors`` (dropped because UDP's memory across the host was exhausted, net.ipv4.udp_mem) and ``no_ports``
    (no socket bound to the port: the node was not running)."""
    rows = [line.split() for line in snmp.splitlines() if line.startswith("Udp:")]
    fields = dict(zip(rows[0][1:], map(int, rows[1][1:])))
    return {"in_datagrams": fields["InDatagrams"], "rcvbuf_errors": fields["RcvbufErrors"],
            "in_errors": fields["InErrors"], "mem_errors": fields.get("MemErrors", 0), "no_ports": fields["NoPorts"]}


def _remove_empty_tree(path: str) -> None:
    for root, dirs, _files in os.walk(path, topdown=False):
        for d in dirs:
            with contextlib.suppress(OSError):
                os.rmdir(os.path.join(root, d))
    with contextlib.suppress(OSError):
        os.rmdir(path)
