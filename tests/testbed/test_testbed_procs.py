"""ProcessGroup: processes inside hosts, their logs and environment, faults by signal, and a clean stop."""

from __future__ import annotations

import signal
import sys
import time

import pytest
from tb_netcheck import alive, needs_root, netns_inode, proc_state

from testbed.net.cleanup import find_leftovers
from testbed.net import make_network
from testbed.cluster.procs import ProcessGroup
from testbed.net.topology import RUN_ID_ENV, Topology
from testbed.errors import DeployError, TopologyError

pytestmark = [pytest.mark.root, pytest.mark.netns, needs_root]

# Prints a line per start, then sleeps; with "stubborn" it ignores SIGTERM.
_SLEEPER = """
import os, signal, sys, time
if sys.argv[1] == "stubborn":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("started", os.getpid(), flush=True)
print("to stderr", file=sys.stderr, flush=True)
time.sleep(120)
"""


def _wait_for(predicate, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def _environ(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/environ", "rb") as fh:
        entries = [e.decode() for e in fh.read().split(b"\0") if b"=" in e]
    return dict(e.split("=", 1) for e in entries)


def test_processes_run_inside_their_host_and_obey_signals(run_id, tmp_path):
    with make_network("netns", Topology(nodes=3), run_id) as net, ProcessGroup(run_id, tmp_path) as group:
        node = group.start("node1", [sys.executable, "-c", _SLEEPER, "polite"], host=net.host(1), env={"X": "1"})
        stubborn = group.start("node2", [sys.executable, "-c", _SLEEPER, "stubborn"], host=net.host(2))
        local = group.start("helper", ["sleep", "120"])
        _wait_for(lambda: "started" in node.stdout_path.read_text() and "started" in stubborn.stdout_path.read_text())

        assert netns_inode(f"/proc/{node.pid}/ns/net") == netns_inode(net.host(1).netns_path)
        assert netns_inode(f"/proc/{local.pid}/ns/net") == netns_inode("/proc/self/ns/net")
        env = _environ(node.pid)
        assert env[RUN_ID_ENV] == run_id and env["XG_PROC_NAME"] == "node1" and env["X"] == "1"
        assert "to stderr" in node.stderr_path.read_text()
        assert [p.name for p in group] == ["node1", "node2", "helper"] and "node1" in group and len(group) == 3

        group.pause("node1")
        _wait_for(lambda: proc_state(node.pid) == "T")
        group.resume("node1")
        _wait_for(lambda: proc_state(node.pid) in ("S", "R"))

        first_pid = node.pid
        assert group.kill("node1") == -signal.SIGKILL and not node.running
        with pytest.raises(DeployError):
            group.pause("node1")  # not running
        group.restart("node1")
        assert node.running and node.pid != first_pid and node.starts == 2
        _wait_for(lambda: node.stdout_path.read_text().count("started") == 2)  # the log goes on across restarts

        assert group.terminate("node2", timeout_s=0.3) == -signal.SIGKILL  # SIGTERM ignored: killed after the bound
        assert group.terminate("node1") == -signal.SIGTERM

        group.restart("node2")
        group.pause("node2")
        pids = [p.pid for p in group]
    # leaving the block stopped everything, the paused process too
    assert not any(alive(pid) for pid in pids)
    assert all(not p.running for p in group)
    assert find_leftovers(run_id).empty


def test_bad_requests_are_refused(run_id, other_run_id, tmp_path):
    with make_network("netns", Topology(nodes=1), other_run_id) as net, ProcessGroup(run_id, tmp_path) as group:
        with pytest.raises(TopologyError):
            group.start("../x", ["true"])
        with pytest.raises(TopologyError):
            group.start("ok", [])
        with pytest.raises(TopologyError):
            group.start("ok", ["sleep", "1"], host=net.host(0))  # a host of another run
        with pytest.raises(DeployError):
            group.start("missing", ["xg-no-such-program"])
        group.start("once", ["true"])
        with pytest.raises(TopologyError):
            group.start("once", ["true"])
        assert group.wait("once", timeout_s=5) == 0
        with pytest.raises(TopologyError):
            group["nobody"]  # noqa: B018
    with pytest.raises(DeployError):
        group.start("late", ["true"])
