"""`python -m gossip node --kernel-heartbeats`: real node processes in namespaces on a bridge, the heartbeat plane
(bpf/tc_hbplane.c) taking fresh heartbeats in the kernel, the nodes' membership the same as without it.

The XDP fast path and the plane are compiled once here and attached to every node's veth, as the testbed does; the
nodes open the pinned maps (--xdp-pin, --hbplane-pin) and write their own entries (gossip._plane). Six nodes, cycle
0.5 s, timeout 3 s. The plane-on run's figures (the plane's ``handled``, the nodes' ``packets_in``) are compared with
the same cluster's plane-off run. Processes, attachments, pins and namespaces are removed in `finally`.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bpf"))

import bpf  # noqa: E402
from bpf.hbplane import HeartbeatPlane  # noqa: E402
from bpf_testnet import Testnet  # noqa: E402
from gossip import _wire  # noqa: E402
from test_node_xdp_cli import Proc  # noqa: E402
from testbed.cluster import control  # noqa: E402

pytestmark = [pytest.mark.root, pytest.mark.bpf, pytest.mark.netns]

PORT = 7946
SECRET, CLUSTER = "hb-plane-secret", "hb-plane"
NODES = 6
CYCLE_S, TIMEOUT_S = 0.5, 3.0
WINDOW_S = 4.0
FIGURES: dict[str, dict] = {}  # "on" / "off" -> what the run measured, for the comparison


@pytest.fixture(scope="module")
def net():
    ok, why = bpf.available()
    if not ok:
        pytest.skip(f"eBPF unavailable: {why}")
    with bpf.FastPath.compile(nodes=NODES + 1) as fp, HeartbeatPlane.compile(nodes=NODES + 1) as plane, \
            Testnet(NODES + 1, bridge=True) as tn, contextlib.ExitStack() as attached:
        for n in tn.nodes:
            attached.enter_context(fp.attach(n.ifindex, netns=n.ns))
            fp.configure(n.ifindex, _wire.cluster_id(CLUSTER), PORT)
            attached.enter_context(plane.attach(n.ifindex, netns=n.ns))
        tn.fastpath, tn.plane = fp, plane
        yield tn


class Cluster:
    def __init__(self, net, tmp_path: Path) -> None:
        self.net, self.tmp = net, tmp_path
        self.procs: dict[int, Proc] = {}

    def sock(self, i: int) -> str:
        return str(self.tmp / f"n{i}.sock")

    def start(self, i: int, *extra: str) -> Proc:
        n = self.net.nodes[i]
        seed = self.net.nodes[1 if i == 0 else 0]
        argv = ["--name", f"n{i}", "--addr", n.ip, "--port", str(PORT), "--secret", SECRET, "--cluster", CLUSTER,
                "--cycle", str(CYCLE_S), "--timeout", str(TIMEOUT_S), "--http", f"unix:{self.sock(i)}",
                "--seed", f"{seed.ip}:{PORT}", "--log-level", "info", *extra]
        proc = self.procs[i] = Proc(n.ns, argv, self.tmp / f"n{i}.{time.monotonic_ns()}.log")
        return proc

    def plane_args(self, i: int) -> tuple[str, ...]:
        n = self.net.nodes[i]
        return ("--xdp", n.ifname, "--xdp-pin", self.net.fastpath.pin_dir, "--kernel-heartbeats",
                "--hbplane-pin", self.net.plane.pin_dir)

    def call(self, i: int, path: str):
        return control.call(self.sock(i), "GET", path)

    def names(self, i: int) -> set[str]:
        return {m["name"] for m in self.call(i, "/list")}

    def wait(self, predicate, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with contextlib.suppress(control.ControlError, OSError):
                if predicate():
                    return
            for i, p in self.procs.items():
                if not p.alive() and getattr(p, "expected_dead", False) is False:
                    raise AssertionError(f"n{i} exited while waiting for {what}:\n{p.text()[-3000:]}")
            time.sleep(0.1)
        logs = "\n".join(f"--- n{i}\n{p.text()[-1500:]}" for i, p in self.procs.items())
        raise AssertionError(f"timed out waiting for {what}\n{logs}")

    def stop(self) -> None:
        for p in self.procs.values():
            p.stop()


def everyone(nodes) -> set[str]:
    return {f"n{i}" for i in nodes}


def converge(c: Cluster, nodes) -> None:
    c.wait(lambda: all(c.names(i) == everyone(nodes) for i in nodes), 60, "every node to list every other")


def measure(c: Cluster, nodes) -> dict:
    """packets_in of every node, and the plane's handled, over WINDOW_S of steady state."""
    cpu_before = {i: cpu_s(c.procs[i].popen.pid) for i in nodes}
    before = {i: c.call(i, "/stats") for i in nodes}
    time.sleep(WINDOW_S)
    after = {i: c.call(i, "/stats") for i in nodes}
    cpu_after = {i: cpu_s(c.procs[i].popen.pid) for i in nodes}
    out = {"packets_in": sum(after[i]["packets_in"] - before[i]["packets_in"] for i in nodes),
           "accepted_heartbeat": sum(after[i]["counters"].get("accepted_heartbeat", 0)
                                     - before[i]["counters"].get("accepted_heartbeat", 0) for i in nodes)}
    if "hbplane" in after[nodes[0]]:
        for key in ("handled", "accepted_no_targets", "passed", "dropped_stale_or_dup", "passed_not_heartbeat",
                    "passed_no_mac", "passed_unknown_origin"):
            out[key] = sum(after[i]["hbplane"][key] - before[i]["hbplane"][key] for i in nodes)
    out["xdp_dropped"] = sum(after[i]["xdp"]["dropped"] - before[i]["xdp"]["dropped"] for i in nodes)
    out["node_cpu_s"] = round(sum(cpu_after[i] - cpu_before[i] for i in nodes), 3)
    return out


def cpu_s(pid: int) -> float:
    """The process's user + system CPU seconds (`ip netns exec` execs the node: same pid)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def assert_fresh(c: Cluster, nodes) -> None:
    now = time.time()
    for i in nodes:
        listed = c.call(i, "/list")
        assert {m["name"] for m in listed} == everyone(nodes)
        for m in listed[1:]:
            assert now - m["last_seen"] < 4 * CYCLE_S, (i, m)


def kill_and_restart(c: Cluster, nodes, victim: int, *extra: str) -> None:
    rest = [i for i in nodes if i != victim]
    c.procs[victim].expected_dead = True
    c.procs[victim].popen.kill()
    killed = time.monotonic()
    c.procs[victim].popen.wait(10)
    c.wait(lambda: all(f"n{victim}" not in c.names(i) for i in rest), TIMEOUT_S + 10,
           f"n{victim} removed by every other node")
    gone = time.monotonic() - killed
    assert gone >= TIMEOUT_S - 2 * CYCLE_S, f"removed after {gone:.2f} s, before the timeout"
    c.start(victim, *extra)
    converge(c, nodes)


def test_a_cluster_with_kernel_heartbeats_converges_with_the_kernel_taking_most_heartbeats(net, tmp_path):
    nodes = list(range(NODES))
    c = Cluster(net, tmp_path)
    try:
        for i in nodes:
            c.start(i, *c.plane_args(i))
        converge(c, nodes)
        time.sleep(4 * CYCLE_S)  # MACs learned, members registered
        figures = FIGURES["on"] = measure(c, nodes)
        # most taken by the kernel: accepted there (forwarded, or with nobody left to infect) against here
        assert figures["handled"] + figures["accepted_no_targets"] > 3 * figures["accepted_heartbeat"], figures
        assert_fresh(c, nodes)
        st = c.call(0, "/stats")
        assert st["hbplane"]["members"] == NODES - 1 and st["counters"]["kernel_refreshed"] > 0, st
        assert st["xdp"]["dropped"] >= 0
        kill_and_restart(c, nodes, NODES - 1, *c.plane_args(NODES - 1))
        assert_fresh(c, nodes)
        text = "".join(p.text() for p in c.procs.values())
        assert "unavailable" not in text and "Traceback" not in text, text[-3000:]
    finally:
        c.stop()


def test_the_same_cluster_with_the_plane_off_behaves_the_same(net, tmp_path):
    nodes = list(range(NODES))
    c = Cluster(net, tmp_path)
    try:
        for i in nodes:
            n = net.nodes[i]
            c.start(i, "--xdp", n.ifname, "--xdp-pin", net.fastpath.pin_dir)
        converge(c, nodes)
        time.sleep(4 * CYCLE_S)
        figures = FIGURES["off"] = measure(c, nodes)
        assert "hbplane" not in c.call(0, "/stats")
        assert_fresh(c, nodes)
        kill_and_restart(c, nodes, NODES - 1, "--xdp", net.nodes[NODES - 1].ifname, "--xdp-pin",
                         net.fastpath.pin_dir)
    finally:
        c.stop()
    on = FIGURES.get("on")
    if on is not None:  # the node's socket woke far less often with the plane on
        print(f"\nplane on: {on}\nplane off: {figures}")
        assert on["packets_in"] < 0.6 * figures["packets_in"], (on, figures)


def test_a_plane_node_reads_its_neighbour_table_without_pyroute2(net, tmp_path, monkeypatch):
    """Two nodes started as the testbed starts them (--xdp-pin, --hbplane-pin) register each other with a MAC,
    and neither imports pyroute2 (~11 MiB a node): the import log of the whole run (PYTHONPROFILEIMPORTTIME) names
    the plane's neighbour reader and no pyroute2 module."""
    monkeypatch.setenv("PYTHONPROFILEIMPORTTIME", "1")  # Proc passes the environment on
    nodes = [0, 1]
    c = Cluster(net, tmp_path)
    try:
        for i in nodes:
            c.start(i, *c.plane_args(i))
        converge(c, nodes)
        c.wait(lambda: all(c.call(i, "/stats")["hbplane"]["members"] == 1 and
                           c.call(i, "/stats")["hbplane"]["members_without_mac"] == 0 for i in nodes), 20,
               "each node to register the other with its MAC")
        time.sleep(2 * CYCLE_S)
        assert all(c.call(i, "/stats")["counters"].get("kernel_refreshed", 0) > 0 for i in nodes)  # the kernel took
    finally:
        c.stop()
    for i in nodes:
        imported = {line.rsplit("|", 1)[1].strip() for line in c.procs[i].text().splitlines()
                    if line.startswith("import time:") and "|" in line}
        assert "bpf._neigh" in imported and "gossip._plane" in imported, sorted(imported)
        assert not [m for m in imported if m.split(".")[0] == "pyroute2"], sorted(imported)


def test_a_node_that_cannot_have_the_plane_runs_on_with_one_line(net, tmp_path):
    c = Cluster(net, tmp_path)
    a, b = NODES, 0  # the spare namespace, and one for a node without --xdp
    try:
        pa = c.start(a, "--xdp", net.nodes[a].ifname, "--xdp-pin", net.fastpath.pin_dir, "--kernel-heartbeats",
                     "--hbplane-pin", str(tmp_path / "no-such-pin-dir"))
        pb = c.start(b, "--kernel-heartbeats")
        c.wait(lambda: c.names(a) == {"n6", "n0"} and c.names(b) == {"n6", "n0"}, 60, "both nodes listed")
        assert "xdp" in c.call(a, "/stats") and "hbplane" not in c.call(a, "/stats")
        for proc, why in ((pa, "no-such-pin-dir"), (pb, "needs the XDP fast path")):
            lines = [line for line in proc.text().splitlines() if "unavailable" in line]
            assert len(lines) == 1 and "kernel heartbeat plane unavailable" in lines[0] and why in lines[0], lines
            assert "Traceback" not in proc.text()
    finally:
        c.stop()


def test_a_key_rotation_mid_run_keeps_the_cluster_converged(net, tmp_path):
    """The three steps of a rotation (new key added last, made first, old one dropped), each sent to every node
    through POST /secrets while the cluster runs with the plane on: no step loses a member or a heartbeat to a MAC
    the receiver cannot check, the kernel goes on taking heartbeats after each step (signed with the new key once it
    is first), and at the end a node that holds only the old key is heard by nobody, in the kernel or the node."""
    nodes = list(range(NODES))
    c = Cluster(net, tmp_path)
    rotation = ([SECRET, "rotated-secret"], ["rotated-secret", SECRET], ["rotated-secret"])
    try:
        for i in nodes:
            c.start(i, *c.plane_args(i))
        converge(c, nodes)
        time.sleep(4 * CYCLE_S)
        for ring in rotation:
            for i in nodes:
                assert control.call(c.sock(i), "POST", "/secrets", json.dumps({"secrets": ring}).encode()) == \
                    {"keys": len(ring)}
            time.sleep(2 * CYCLE_S)  # every node on the new ring, and heartbeats signed by it in flight
            figures = measure(c, nodes)
            assert figures["handled"] > 0, (ring, figures)  # the kernel still verifies and forwards
            assert_fresh(c, nodes)
        stats = [c.call(i, "/stats") for i in nodes]
        assert all(s["dropped"].get("bad_mac", 0) == 0 and s["hbplane"]["passed_bad_mac"] == 0 for s in stats), \
            [(s["dropped"], s["hbplane"]) for s in stats]
        # the old key is gone everywhere: a node signing with it is dropped as forged by every node
        stale = NODES
        c.start(stale, *c.plane_args(stale))  # started with the old secret (Cluster.start passes SECRET)
        c.wait(lambda: sum(c.call(i, "/stats")["dropped"].get("bad_mac", 0) for i in nodes) >= 3, 30,
               "heartbeats signed with the removed key dropped as bad_mac")
        assert all(f"n{stale}" not in c.names(i) for i in nodes)
        assert_fresh(c, nodes)
        text = "".join(p.text() for p in c.procs.values())
        assert "unavailable" not in text and "Traceback" not in text, text[-3000:]
    finally:
        c.stop()
