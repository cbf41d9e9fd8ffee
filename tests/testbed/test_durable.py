"""Durable metadata across whole-cluster crashes: on the simulator through a scenario (``node: {durable: true}``),
and on real node processes SIGKILLed at random moments during a burst of publishes."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from tb_netcheck import needs_root

from testbed import scenario as scenario_mod
from testbed.cluster import control
from testbed.runner import run_scenario

SCENARIO = """
name: durable
seed: 3
nodes: 6
backend: sim
node: {fanout: 3, cycle_s: 0.5, timeout_s: 2.5, durable: DURABLE}
duration_s: 8
recovery_s: 10
timeline:
  - {at: 1, op: publish, node: n2, data: "config v1"}
  - {at: 3, fault: crash, node: all, until: 5}
checks: [metadata_converged, no_lost_update, membership_converged]
"""


def _run_sim(tmp_path: Path, durable: bool) -> tuple[dict, list[dict]]:
    s = scenario_mod.parse(SCENARIO.replace("DURABLE", "true" if durable else "false"), "durable.yaml")
    out = tmp_path / ("durable" if durable else "memory")
    summary = run_scenario(s, out)
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    return summary, events


def test_on_the_simulator_durable_metadata_survives_every_node_crashing(tmp_path):
    summary, events = _run_sim(tmp_path, durable=True)
    checks = {c["name"]: c for c in summary["checks"]}
    assert all(c["passed"] is True for c in checks.values()), checks
    (pub,) = [e for e in events if e["kind"] == "metadata_adopted" and e["via"] == "publish"]
    restored = [e for e in events if e["kind"] == "metadata_adopted" and e["via"] == "restore"]
    # every node restarted from its own store, holding the published version before any message reached it
    assert sorted(e["node"] for e in restored) == [f"n{i}" for i in range(6)]
    assert {(e["version"], e["origin"]) for e in restored} == {(pub["version"], pub["origin"])}
    assert not [e for e in events if e["kind"] == "state_refused"]

    summary, events = _run_sim(tmp_path, durable=False)  # in memory: the value is gone with the last process
    checks = {c["name"]: c for c in summary["checks"]}
    assert checks["no_lost_update"]["passed"] is False and checks["metadata_converged"]["passed"] is False
    assert not [e for e in events if e.get("via") == "restore"]


def test_the_durable_option_is_a_validated_boolean():
    with pytest.raises(Exception, match="node.durable"):
        scenario_mod.parse(SCENARIO.replace("DURABLE", "3"), "durable.yaml")


# ---- real nodes --------------------------------------------------------------------------------------------


class _Cluster:
    """N `python -m gossip node` processes on the loopback of one namespace (``xg-<run_id>-0``, so the testbed's
    cleanup finds it and them), each with its own state directory and control socket."""

    def __init__(self, run_id: str, root: Path, n: int) -> None:
        self.ns = f"xg-{run_id}-0"
        self.run_id, self.root, self.n = run_id, root, n
        self.procs: list[subprocess.Popen | None] = [None] * n

    def __enter__(self) -> "_Cluster":
        subprocess.run(["ip", "netns", "add", self.ns], check=True, capture_output=True)
        subprocess.run(["ip", "-n", self.ns, "link", "set", "lo", "up"], check=True, capture_output=True)
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.kill_all()
        finally:
            subprocess.run(["ip", "netns", "del", self.ns], capture_output=True)

    def sock(self, i: int) -> str:
        return str(self.root / f"n{i}.sock")

    def start(self, i: int) -> None:
        with_suppress_unlink(self.sock(i))
        argv = ["ip", "netns", "exec", self.ns, sys.executable, "-m", "gossip", "node", "--name", f"n{i}",
                "--addr", "127.0.0.1", "--port", str(7100 + i), "--cycle", "0.2", "--timeout", "1.5",
                "--http", f"unix:{self.sock(i)}", "--state-dir", str(self.root / "state" / f"n{i}"),
                "--events", str(self.root / f"n{i}.jsonl"), "--log-level", "warning"]
        if i:
            argv += ["--seed", "127.0.0.1:7100"]
        log = open(self.root / f"n{i}.log", "ab")
        env = {**os.environ, "XG_RUN_ID": self.run_id, "PYTHONUNBUFFERED": "1"}
        self.procs[i] = subprocess.Popen(argv, stdout=log, stderr=log, env=env,
                                         cwd=Path(__file__).resolve().parents[2])
        log.close()

    def start_all(self) -> None:
        for i in range(self.n):
            self.start(i)
        deadline = time.monotonic() + 30
        while not all(os.path.exists(self.sock(i)) for i in range(self.n)):
            assert time.monotonic() < deadline, "nodes did not come up"
            assert all(p.poll() is None for p in self.procs), "a node exited during start-up"
            time.sleep(0.05)

    def kill_all(self) -> None:
        for p in self.procs:
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGKILL)  # `ip netns exec` execs the node: this is the node itself
        for p in self.procs:
            if p is not None:
                p.wait(timeout=10)

    def metadata(self, i: int) -> dict | None:
        try:
            return control.call(self.sock(i), "GET", "/metadata", timeout_s=1.0)
        except control.ControlError:
            return None


def with_suppress_unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


@pytest.mark.root
@pytest.mark.netns
@needs_root
def test_real_nodes_keep_every_acknowledged_publish_across_whole_cluster_sigkills(run_id, tmp_path):
    rng = random.Random(20240611)
    n = 4
    with _Cluster(run_id, tmp_path, n) as cluster:
        for round_ in range(4):
            cluster.start_all()
            acked: list[tuple[int, int]] = []
            stop = threading.Event()

            def publish_burst():
                k = 0
                while not stop.is_set():
                    i = rng.randrange(n)
                    try:
                        got = control.call(cluster.sock(i), "POST", "/publish", f"r{round_} p{k}".encode(),
                                           timeout_s=1.0)
                    except control.ControlError:
                        continue  # killed mid-request: not acknowledged
                    acked.append((got["version"], got["origin"]))
                    k += 1
            burst = threading.Thread(target=publish_burst)
            burst.start()
            time.sleep(rng.uniform(0.2, 1.0))  # a random moment of the burst
            cluster.kill_all()
            stop.set()
            burst.join(timeout=10)
            assert acked, "no publish was acknowledged before the kill"
            newest = max(acked)

            cluster.start_all()
            deadline = time.monotonic() + 20
            while True:
                reads = [cluster.metadata(i) for i in range(n)]
                versions = {(r["version"], r["origin"]) for r in reads if r is not None}
                if len(versions) == 1 and None not in reads and max(versions) >= newest:
                    break
                assert time.monotonic() < deadline, f"round {round_}: {reads} never held {newest} on all"
                time.sleep(0.1)
            cluster.kill_all()
        # no state file was ever torn by a SIGKILL: nothing was refused in any incarnation
        for i in range(n):
            records, torn = [], 0
            for line in (tmp_path / f"n{i}.jsonl").read_text().splitlines():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:  # a record cut short by a SIGKILL, on a line of its own
                    torn += 1
            assert torn <= 8, (i, torn)  # at most one per kill (two a round)
            assert not [r for r in records if r["kind"] == "state_refused"], i
            assert [r for r in records if r.get("via") == "restore"], f"n{i} never restarted from its state"
