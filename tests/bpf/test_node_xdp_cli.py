"""`python -m gossip node --xdp IFACE` on its own: the node compiles and attaches the fast path itself, from inside
its namespace, and falls back to userspace with one line when that fails.

Two namespaces on a bridge: node A runs with --xdp on its veth, node B (no XDP) is seeded with A. A real heartbeat
from B to A is captured on A's bridge-side veth end and sent again 2,000 times: A has accepted it, so every copy
is a duplicate (or stale, once B's next one is in) that the kernel drops before A sees it, which A's /stats must
show while A keeps gossiping. Processes, namespaces and the XDP attachment are removed in `finally` (the Testnet
teardown fails the test if an XDP program is left on an interface).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from scapy.layers.inet import UDP
from scapy.layers.l2 import Ether

import bpf
from bpf._attach import xdp_prog_id
from bpf._structs import FpHbKey, FpSwim
from bpf_testnet import Testnet
from gossip import _accel, _wire
from gossip._config import NodeConfig
from testbed.cluster import control
from testbed.net.inject import Target, _frame, capture, send_frames

pytestmark = [pytest.mark.root, pytest.mark.bpf, pytest.mark.netns]

PORT = 7946
SECRET, CLUSTER = "xdp-cli-secret", "xdp-cli"
FLOOD = 2_000
ROOT = Path(bpf.__file__).resolve().parent.parent


class Proc:
    """A node started with `ip netns exec`, its output in a file; stopped (SIGTERM, then SIGKILL) by `stop`."""

    def __init__(self, ns: str, argv: list[str], log: Path) -> None:
        self.log = log
        env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
        with open(log, "w") as out:
            self.popen = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-m", "gossip", "node", *argv],
                                          stdout=out, stderr=subprocess.STDOUT, env=env)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def text(self) -> str:
        return self.log.read_text()

    def stop(self) -> int:
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                return self.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
        return self.popen.wait(timeout=15)


def node_argv(name: str, node, sock: Path, *extra: str) -> list[str]:
    return ["--name", name, "--addr", node.ip, "--port", str(PORT), "--secret", SECRET, "--cluster", CLUSTER,
            "--cycle", "0.5", "--timeout", "30", "--http", f"unix:{sock}", "--log-level", "info", *extra]


def stats(sock: Path) -> dict:
    return control.call(str(sock), "GET", "/stats")


def wait_for(predicate, timeout_s: float, what: str, proc: Proc) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(control.ControlError):
            if predicate():
                return
        if not proc.alive():
            raise AssertionError(f"the node exited while waiting for {what}:\n{proc.text()[-3000:]}")
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}:\n{proc.text()[-3000:]}")


def own_pin_dirs(pid: int) -> list[str]:
    with contextlib.suppress(FileNotFoundError):
        return [d for d in os.listdir(bpf.PIN_ROOT) if d.startswith(f"fastpath-{pid}-")]
    return []


@contextlib.contextmanager
def two_nodes(tmp_path: Path):
    """A bridge with two namespaces; yields (net, start) where start(name, node, *extra) runs a node there."""
    procs: list[Proc] = []
    net = Testnet(2, bridge=True)
    with net:
        def start(name: str, node, *extra: str) -> tuple[Proc, Path]:
            sock = tmp_path / f"{name}.sock"
            proc = Proc(node.ns, node_argv(name, node, sock, *extra), tmp_path / f"{name}.log")
            procs.append(proc)
            return proc, sock
        try:
            yield net, start
        finally:
            for proc in procs:  # before the Testnet teardown, which checks nothing is left attached
                proc.stop()
                for d in own_pin_dirs(proc.popen.pid):  # left only by a node that had to be killed
                    path = os.path.join(bpf.PIN_ROOT, d)
                    bpf._sys.unpin([os.path.join(path, f) for f in os.listdir(path)], path)


def heartbeat_frames(frames: list[bytes], origin_ip: str) -> list[bytes]:
    """The captured frames that hold a heartbeat from ORIGIN_IP's node (IPv4, no options: payload at 42)."""
    origin = _wire.node_id(origin_ip, PORT).to_bytes(4, "big")
    return [f for f in frames if f[42 + _wire.OFF_TYPE] == _wire.MsgType.HEARTBEAT
            and f[42 + _wire.OFF_ORIGIN:42 + _wire.OFF_ORIGIN + 4] == origin]


def test_node_with_xdp_from_the_cli_drops_a_duplicate_flood_in_the_kernel(tmp_path):
    with two_nodes(tmp_path) as (net, start):
        a, b = net.nodes
        proc_a, sock_a = start("a", a, "--xdp", a.ifname, "--xdp-mode", "native")
        wait_for(lambda: "xdp" in stats(sock_a), 120, "node a's fast path", proc_a)  # includes a bcc compile
        assert xdp_prog_id(a.ifindex, a.ns) != 0
        assert "XDP fast path attached" in proc_a.text() and "unavailable" not in proc_a.text()
        proc_b, sock_b = start("b", b, "--seed", f"{a.ip}:{PORT}")
        wait_for(lambda: stats(sock_a)["counters"].get("accepted_heartbeat", 0) >= 2, 30, "b's heartbeats at a",
                 proc_a)

        frames = heartbeat_frames(capture(a.host_if, a.ip, want=4, timeout_s=10), b.ip)
        assert frames, "no heartbeat from b to a was captured"
        time.sleep(0.3)  # a accepts it within a cycle: from then on each copy is a duplicate (or stale)
        before = stats(sock_a)
        send_frames(a.host_if, frames[:1], count=FLOOD, rate_pps=None)
        time.sleep(0.3)
        after = stats(sock_a)

        kernel = {k: after["xdp"][k] - before["xdp"][k] for k in ("dropped_duplicate", "dropped_stale", "dropped")}
        assert kernel["dropped_duplicate"] + kernel["dropped_stale"] >= FLOOD, (kernel, after["xdp"])
        userspace = {k: after["dropped"].get(k, 0) - before["dropped"].get(k, 0) for k in ("duplicate", "stale")}
        assert sum(userspace.values()) < FLOOD // 10, userspace  # the node never saw the flood
        assert after["xdp"]["hb_evicted"] == 0 and after["xdp"]["hb_inserted"] >= 1

        # still a working node: b's later heartbeats are accepted (they are fresh, so XDP passes them)
        accepted = after["counters"]["accepted_heartbeat"]
        wait_for(lambda: stats(sock_a)["counters"]["accepted_heartbeat"] >= accepted + 2, 10,
                 "heartbeats after the flood", proc_a)
        assert sorted(m["name"] for m in control.call(str(sock_a), "GET", "/list")) == ["a", "b"]
        assert proc_a.alive() and proc_b.alive()
        pid_a = proc_a.popen.pid
        assert proc_a.stop() == 0
        assert xdp_prog_id(a.ifindex, a.ns) == 0  # detached by the node itself on SIGTERM
        assert "Traceback" not in proc_a.text()
        assert not own_pin_dirs(pid_a)  # unpinned by the node itself


def test_a_failing_attach_falls_back_to_userspace_with_one_line(tmp_path, fastpath):
    """A's XDP slot is taken by another program: the node compiles, fails to attach, undoes its half-made fast
    path (no pins left), says so in one line and serves in pure userspace."""
    with two_nodes(tmp_path) as (net, start):
        a, _ = net.nodes
        with fastpath.attach(a.ifindex, netns=a.ns):
            taken = xdp_prog_id(a.ifindex, a.ns)
            proc, sock = start("a", a, "--xdp", a.ifname)
            wait_for(lambda: stats(sock)["node"] == "a", 120, "node a's control API", proc)
            st = stats(sock)
            assert "xdp" not in st  # no fast path behind this node
            assert control.call(str(sock), "GET", "/list")[0]["name"] == "a"
            text = proc.text()
            lines = [line for line in text.splitlines() if "XDP fast path unavailable" in line]
            assert len(lines) == 1, text
            assert "another XDP program is attached" in lines[0] and "pure userspace" in lines[0]
            assert "Traceback" not in text
            assert not own_pin_dirs(proc.popen.pid)  # the failed attempt unpinned what it had compiled
            assert xdp_prog_id(a.ifindex, a.ns) == taken  # the program that was there is still there
            assert proc.stop() == 0


def test_an_unexpected_error_while_opening_still_falls_back(caplog):
    """Not only OSError and BpfError: a ValueError from an interface name no kernel call accepts is one line too
    (such a name cannot come from a command line; in-process callers can pass one)."""
    args = argparse.Namespace(xdp="eth\x000", xdp_pin=None, xdp_mode="native", xdp_entries=64, broadcast=False,
                              broadcast_pin=None)
    with caplog.at_level(logging.WARNING, logger="gossip"):
        with _accel.accelerators(args, NodeConfig()) as (fastpath, broadcaster):
            assert (fastpath, broadcaster) == (None, None)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "\n" not in warnings[0], warnings
    assert warnings[0].startswith("XDP fast path unavailable: ValueError: ") and "pure userspace" in warnings[0]


def swim_frames(frames: list[bytes], origin_ip: str, type_: int) -> list[bytes]:
    """The captured frames that hold a SWIM message of TYPE_ with ORIGIN_IP's node as origin."""
    origin = _wire.node_id(origin_ip, PORT).to_bytes(4, "big")
    return [f for f in frames if f[42 + _wire.OFF_TYPE] == type_
            and f[42 + _wire.OFF_ORIGIN:42 + _wire.OFF_ORIGIN + 4] == origin]


def frame_seq(frame: bytes) -> int:
    return int.from_bytes(frame[42 + _wire.OFF_SEQ:42 + _wire.OFF_SEQ + 8], "big")


def taken_by_xdp(pid: int, ifindex: int, origin: int) -> FpSwim:
    """What node PID's fast path holds for ORIGIN's SWIM sequences (read from its pinned fp_swim)."""
    (pin_dir,) = own_pin_dirs(pid)
    fd = bpf._sys.obj_get(os.path.join(bpf.PIN_ROOT, pin_dir, "fp_swim"))
    try:
        value = FpSwim()
        assert bpf._sys.map_lookup(fd, FpHbKey(ifindex=ifindex, origin=origin), value), "no SWIM entry for origin"
        return value
    finally:
        os.close(fd)


def test_swim_node_with_xdp_drops_replays_in_the_kernel_and_learns_only_what_it_took(tmp_path):
    """Node A (swim, --xdp) and node B (swim): B's real PING and GOSSIP to A, captured and sent again 2,000 times
    each, are dropped by XDP; a PING forged with B's origin and a sequence far ahead reaches A (bad MAC) and does
    not stop B's next genuine PINGs; a replayed ACK passes XDP and is judged by A."""
    # many retransmissions keep B's join update queued, so B sends GOSSIPs for seconds, not only PINGs
    swim = ("--membership", "swim", "--option", "retransmit_mult=100")
    with two_nodes(tmp_path) as (net, start):
        a, b = net.nodes
        proc_a, sock_a = start("a", a, "--xdp", a.ifname, "--xdp-mode", "native", *swim)
        wait_for(lambda: "xdp" in stats(sock_a), 120, "node a's fast path", proc_a)
        proc_b, sock_b = start("b", b, "--seed", f"{a.ip}:{PORT}", *swim)
        wait_for(lambda: len(control.call(str(sock_a), "GET", "/list")) == 2, 30, "a to list b", proc_a)
        frames = capture(a.host_if, a.ip, want=60, timeout_s=10, types=frozenset(_wire.MsgType))  # ACKs too
        b_id = _wire.node_id(b.ip, PORT)
        pings, gossips = (swim_frames(frames, b.ip, t) for t in (_wire.MsgType.PING, _wire.MsgType.GOSSIP))
        acks = swim_frames(frames, b.ip, _wire.MsgType.ACK)  # B answering A's probes
        assert pings and gossips and acks, [f[42 + _wire.OFF_TYPE] for f in frames]
        time.sleep(0.3)  # A takes each within a period: from then on each copy is a duplicate (or stale)

        before = stats(sock_a)
        for frame in (pings[-1], gossips[-1]):
            send_frames(a.host_if, [frame], count=FLOOD, rate_pps=None)
        time.sleep(0.3)
        after = stats(sock_a)
        kernel = {k: after["xdp"][k] - before["xdp"][k] for k in ("dropped_duplicate", "dropped_stale")}
        assert sum(kernel.values()) >= 2 * FLOOD, (kernel, after["xdp"])
        userspace = {k: after["dropped"].get(k, 0) - before["dropped"].get(k, 0) for k in ("duplicate", "stale")}
        assert sum(userspace.values()) < FLOOD // 10, userspace  # the node never saw the flood
        assert after["xdp"]["swim_refused"] == 0

        # forged: B's origin, a PING sequence far ahead, the wrong secret; XDP passes it, A drops it (bad MAC)
        forged = _wire.encode(_wire.Ping(cluster=_wire.cluster_id(CLUSTER), origin=b_id, seq=2**62,
                                         sender=_wire.Identity(name="b", addr=b.ip, port=PORT),
                                         target=_wire.node_id(a.ip, PORT)), key=b"not-" + SECRET.encode())
        target = Target(ip=a.ip, mac=a.mac, root_veth=a.host_if)
        send_frames(a.host_if, [_frame(target, b.ip, forged)], count=5, rate_pps=None)
        wait_for(lambda: stats(sock_a)["dropped"].get("bad_mac", 0) - after["dropped"].get("bad_mac", 0) >= 5, 5,
                 "the forged pings at a", proc_a)
        mid = stats(sock_a)
        assert mid["dropped"].get("bad_mac", 0) - after["dropped"].get("bad_mac", 0) == 5
        held = taken_by_xdp(proc_a.popen.pid, a.ifindex, b_id).ping
        assert frame_seq(pings[-1]) <= held < 2**62
        # B's next PINGs (one per period) pass and are taken: the sequence XDP holds moves on
        wait_for(lambda: taken_by_xdp(proc_a.popen.pid, a.ifindex, b_id).ping > held, 10,
                 "b's next pings taken", proc_a)
        later = stats(sock_a)
        assert later["xdp"]["passed_swim"] > mid["xdp"]["passed_swim"]

        # ACK answers A's own probe (its sequence is A's): XDP leaves it to A, which drops the replays itself. A
        # frame captured on its way out carries the partial UDP checksum of the sender's offload: made whole here,
        # or the kernel would discard each copy after XDP (UdpInCsumErrors) and A would never see one
        ack = Ether(acks[0])
        del ack[UDP].chksum
        send_frames(a.host_if, [bytes(ack)], count=200, rate_pps=2000)
        time.sleep(0.3)
        end = stats(sock_a)
        assert end["xdp"]["passed_other"] - later["xdp"]["passed_other"] >= 200
        node_drops = sum(end["dropped"].get(k, 0) - later["dropped"].get(k, 0) for k in ("duplicate", "stale"))
        assert node_drops >= 200, end["dropped"]

        assert sorted(m["name"] for m in control.call(str(sock_a), "GET", "/list")) == ["a", "b"]
        assert proc_a.alive() and proc_b.alive()
        assert proc_a.stop() == 0 and proc_b.stop() == 0
        assert "Traceback" not in proc_a.text()
