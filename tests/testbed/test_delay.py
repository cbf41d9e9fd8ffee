"""The delay fault: the holding queue on its own, then real hosts (UDP round trips with and without the delay,
bursts that must not be serialised, runtime changes, and nothing left behind after clear() or the ``with``)."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import time

import pytest
from tb_netcheck import ECHO_PORT, alive, needs_root, start_echo_servers, stop

from testbed.net import delay as _delay, shell as _shell
from testbed.net.cleanup import find_leftovers
from testbed.net.delay import Delay, HoldQueue, delay_rules, find_handlers, netem_available, rule_spec
from testbed.net import make_network
from testbed.net.topology import Topology
from testbed.errors import CommandError, DeployError, TopologyError

# From ME to PEER's echo server: COUNT round trips one after the other, then BURST datagrams sent back to back.
# Prints the round-trip times in ms, for the burst each reply's time since the first send, and any other reply.
_CLIENT = """
import json, socket, sys, time
me, peer, port, count, burst = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
sock.bind((me, 0))
sock.settimeout(2.0)
rtts = []
for i in range(count):
    message = b"rtt %d" % i
    start = time.monotonic()
    sock.sendto(message, (peer, port))
    try:
        while sock.recv(2048) != message:
            pass
    except socket.timeout:
        continue
    rtts.append((time.monotonic() - start) * 1000)
start = time.monotonic()
for i in range(burst):
    sock.sendto(b"burst %d" % i, (peer, port))
sent_ms = (time.monotonic() - start) * 1000
arrivals, strays = {}, []
try:
    while len(arrivals) < burst:
        data = sock.recv(2048).decode()
        if data.startswith("burst "):
            arrivals[data] = (time.monotonic() - start) * 1000
        else:
            strays.append([data, (time.monotonic() - start) * 1000])
except socket.timeout:
    pass
print(json.dumps({"rtts": rtts, "burst": sorted(arrivals.values()), "sent_ms": sent_ms, "strays": strays}))
"""


def _probe(src, dst, *, count: int = 15, burst: int = 0) -> dict:
    argv = [sys.executable, "-c", _CLIENT, src.ip, dst.ip, str(ECHO_PORT), str(count), str(burst)]
    return json.loads(src.run(argv, timeout_s=60).stdout)


def _ping_avg_ms(src, dst) -> float:
    out = src.run(["ping", "-n", "-q", "-c", "3", "-i", "0.2", "-W", "2", dst.ip]).stdout
    return float(re.search(r"= [\d.]+/([\d.]+)/", out).group(1))


def _assert_gone(hosts, run_id: str) -> None:
    for host in hosts:
        assert delay_rules(host.netns_path, run_id) == []
        assert "netem" not in _shell.tc("qdisc", "show", "dev", host.root_veth)
    assert find_handlers(run_id) == []


# --- the holding queue: no kernel, no clock ---------------------------------------------------------------------


class _Packet:
    def __init__(self, n: int) -> None:
        self.n = n

    def accept(self) -> None:  # the queue never verdicts itself: its caller does
        raise AssertionError("HoldQueue must not accept packets")


def test_a_burst_is_due_together_not_one_delay_after_another():
    hold = HoldQueue(ms=50, jitter_ms=0, max_held=1000, rng=random.Random(1))
    packets = [_Packet(i) for i in range(100)]
    assert all(hold.arrive(p, now=10.0) for p in packets)
    assert hold.next_due() == pytest.approx(10.05)
    assert hold.pop_due(10.0499) == []
    assert hold.pop_due(10.05) == packets  # all of them, in arrival order
    assert len(hold) == 0 and hold.next_due() is None
    assert (hold.received, hold.delayed, hold.overflowed, hold.max_seen) == (100, 100, 0, 100)


def test_past_max_held_packets_are_not_held_and_are_counted():
    hold = HoldQueue(ms=50, jitter_ms=0, max_held=3, rng=random.Random(1))
    held = [hold.arrive(_Packet(i), now=0.0) for i in range(5)]
    assert held == [True, True, True, False, False]
    assert (len(hold), hold.received, hold.delayed, hold.overflowed) == (3, 5, 3, 2)
    assert len(hold.pop_due(1.0)) == 3
    assert hold.arrive(_Packet(5), now=1.0)  # room again


def test_jitter_is_uniform_around_the_delay_and_never_negative():
    hold = HoldQueue(ms=50, jitter_ms=20, max_held=10, rng=random.Random(7))
    draws = [hold.draw_s() * 1000 for _ in range(5000)]
    assert 30 <= min(draws) < 31 and 69 < max(draws) <= 70
    assert statistics.mean(draws) == pytest.approx(50, abs=1)
    hold.set(5, 20)
    draws = [hold.draw_s() for _ in range(2000)]
    assert min(draws) == 0.0 and max(draws) <= 0.025
    hold.set(0, 0)
    assert not hold.arrive(_Packet(0), now=0.0)  # no delay: let it through at once


def test_a_new_delay_applies_to_later_arrivals_and_release_follows_due_time():
    hold = HoldQueue(ms=100, jitter_ms=0, max_held=10, rng=random.Random(1))
    first, second = _Packet(1), _Packet(2)
    hold.arrive(first, now=0.0)
    hold.set(10, 0)
    hold.arrive(second, now=0.0)
    assert hold.pop_due(0.01) == [second]
    assert hold.pop_all() == [first]


def test_bad_arguments_are_refused_before_anything_runs():
    with pytest.raises(TopologyError, match="ms"):
        HoldQueue(ms=-1, jitter_ms=0, max_held=10, rng=random.Random(1))
    with pytest.raises(TopologyError, match="backend"):
        Delay([], run_id="t1", backend="tbf")
    with pytest.raises(TopologyError, match="max_held"):
        Delay([], run_id="t1", max_held=0)
    with pytest.raises(DeployError, match="not open"):
        Delay([], run_id="t1").set(50)
    with Delay([], run_id="t1", backend="nfqueue") as delay:
        for bad in (float("nan"), -5, True, "50"):
            with pytest.raises(TopologyError):
                delay.set(bad)


def test_the_rule_queues_only_udp_arriving_on_eth0_and_bypasses_without_a_handler():
    spec = rule_spec("t1", 7700)
    assert spec[0] == "INPUT"
    assert " ".join(spec[1:5]) == "-i eth0 -p udp"
    assert spec[-4:] == ["NFQUEUE", "--queue-num", "7700", "--queue-bypass"]
    assert "xg-t1-delay" in spec


def test_the_netem_command_matches_the_nfqueue_semantics():
    assert _delay._netem_argv("xgabch1", 50, 0, 4096) == [
        "tc", "qdisc", "replace", "dev", "xgabch1", "root", "netem", "delay", "50000us", "limit", "4096"]
    assert _delay._netem_argv("xgabch1", 12.5, 2.25, 10)[8:10] == ["12500us", "2250us"]  # uniform +- jitter


def test_the_handler_command_line():
    seen = {}
    assert _delay.main(["handler", "--queue-num", "9", "--ms", "50", "--jitter-ms", "5", "--parent-pid", "1"],
                       serve_fn=lambda **kw: seen.update(kw) or 0) == 0
    assert seen == {"queue_num": 9, "ms": 50.0, "jitter_ms": 5.0, "max_held": _delay.DEFAULT_MAX_HELD,
                    "parent_pid": 1, "seed": None}


# --- real hosts ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["nfqueue", "netem"])
@pytest.mark.root
@pytest.mark.netns
@needs_root
def test_delay_adds_50_ms_to_udp_arriving_at_one_host_and_leaves_nothing(run_id, backend, tmp_path):
    if backend == "netem" and not netem_available():
        pytest.skip("this kernel has no netem")
    with make_network("netns", Topology(nodes=3), run_id) as net:
        h0, h1, h2 = net.hosts
        servers = start_echo_servers([h1, h2])
        try:
            base = _probe(h0, h1, count=15)["rtts"]
            with Delay([h1], run_id=run_id, log_dir=tmp_path, backend=backend) as delay:
                assert delay.backend == backend and not delay.active
                delay.set(50)
                assert delay.active and delay.ms == 50
                if backend == "nfqueue":
                    assert len(delay_rules(h1.netns_path, run_id)) == 1
                    assert delay_rules(h0.netns_path, run_id) == []
                    assert len(find_handlers(run_id)) == 1
                slow = _probe(h0, h1, count=20, burst=100)
                # only h1's ingress is delayed: the request, not the reply, so the round trip grows by one delay
                added = statistics.mean(slow["rtts"]) - statistics.mean(base)
                assert len(slow["rtts"]) == 20 and 40 <= added <= 90, slow["rtts"]
                assert 40 <= min(slow["rtts"]) and max(slow["rtts"]) <= 120
                burst = slow["burst"]
                assert len(burst) == 100 and slow["strays"] == [], slow  # every datagram arrived, once
                assert 40 <= burst[0] and burst[-1] <= 200 and burst[-1] - burst[0] <= 60, slow
                if backend == "nfqueue":
                    assert _ping_avg_ms(h0, h1) < 20  # ICMP is not queued: only UDP is delayed
                assert statistics.mean(_probe(h0, h2, count=5)["rtts"]) < 20  # h2 is not delayed

                delay.set(80, jitter_ms=10)  # a change while running
                changed = _probe(h0, h1, count=15)["rtts"]
                assert 60 <= statistics.mean(changed) - statistics.mean(base) <= 120, changed

                delay.clear()
                assert not delay.active and delay.ms == 0
                _assert_gone(net.hosts, run_id)
                if backend == "nfqueue":
                    stats = delay.stats["h1"]
                    assert stats.delayed >= 135 and stats.overflowed == 0 and stats.max_held >= 100
                assert statistics.mean(_probe(h0, h1, count=5)["rtts"]) < 20

                delay.set(50)  # once more, and leave it on for __exit__ to remove
                assert statistics.mean(_probe(h0, h1, count=5)["rtts"]) >= 40
            _assert_gone(net.hosts, run_id)
        finally:
            stop(servers)
    assert find_leftovers(run_id).empty


@pytest.mark.root
@pytest.mark.netns
@needs_root
def test_exit_removes_everything_when_the_block_fails(run_id):
    with make_network("netns", Topology(nodes=2), run_id) as net:
        with pytest.raises(RuntimeError, match="boom"):
            with Delay(net.hosts, run_id=run_id, backend="nfqueue") as delay:
                delay.set(30, 5)
                assert len(find_handlers(run_id)) == 2
                raise RuntimeError("boom")
        _assert_gone(net.hosts, run_id)
        with pytest.raises(DeployError, match="closed"):
            delay.set(10)


@pytest.mark.root
@pytest.mark.netns
@needs_root
def test_sigterm_lets_held_packets_go_at_once_and_clear_copes(run_id):
    with make_network("netns", Topology(nodes=2), run_id) as net:
        h0, h1 = net.hosts
        servers = start_echo_servers([h1])
        try:
            with Delay([h1], run_id=run_id, backend="nfqueue") as delay:
                delay.set(3000)
                client = h0.popen(
                    [sys.executable, "-c", _CLIENT, h0.ip, h1.ip, str(ECHO_PORT), "0", "20"],
                    stdout=subprocess.PIPE,
                    text=True,
                )
                time.sleep(0.3)  # the burst is held now, 2.7 s from its due time
                (pid,) = find_handlers(run_id)
                start = time.monotonic()
                os.kill(pid, signal.SIGTERM)
                out, _ = client.communicate(timeout=10)
                assert len(json.loads(out)["burst"]) == 20
                assert time.monotonic() - start < 2.0  # released by the handler, not by the delay
                delay.clear()
                assert delay.stats["h1"].delayed == 20
            _assert_gone(net.hosts, run_id)
        finally:
            stop(servers)


@pytest.mark.root
@pytest.mark.netns
@needs_root
def test_a_handler_exits_when_its_parent_dies(run_id):
    # a parent inside the host that starts a handler and then is killed, as a crashed test runner would be
    parent = (
        "import subprocess, sys, time\n"
        f"h = subprocess.Popen([sys.executable, '-m', '{_delay.HANDLER_MODULE}', 'handler', '--ms', '50'],"
        " stdin=subprocess.PIPE, stdout=subprocess.PIPE)\n"
        "print(h.pid, flush=True)\n"
        "h.stdout.readline()\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    with make_network("netns", Topology(nodes=1), run_id) as net:
        (h0,) = net.hosts
        proc = h0.popen([sys.executable, "-c", parent], stdout=subprocess.PIPE, text=True)
        handler_pid = int(proc.stdout.readline())
        assert proc.stdout.readline().strip() == "ready"
        assert find_handlers(run_id) == [handler_pid]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=5)
        deadline = time.monotonic() + 3.0
        while alive(handler_pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not alive(handler_pid)
        assert find_handlers(run_id) == []


@pytest.mark.root
@pytest.mark.netns
@needs_root
def test_netem_on_a_kernel_without_it_fails_cleanly(run_id):
    if netem_available():
        pytest.skip("this kernel has netem")
    with make_network("netns", Topology(nodes=2), run_id) as net:
        with Delay(net.hosts, run_id=run_id, backend="netem") as delay:
            with pytest.raises(CommandError, match="netem"):
                delay.set(50)
            assert not delay.active
        _assert_gone(net.hosts, run_id)


@pytest.mark.root
@needs_root
def test_netem_probe_is_a_cached_bool():
    first = netem_available()
    assert isinstance(first, bool) and netem_available() is first
    has_netem = _shell.run(["unshare", "--net", "--", "tc", "qdisc", "add", "dev", "lo", "root", "netem",
                            "delay", "1ms"], check=False).returncode == 0
    assert first is has_netem
