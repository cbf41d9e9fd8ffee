"""clean(): what a killed run left behind is found by its run id and removed, and nothing of other runs is touched."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys

import pytest
from tb_netcheck import alive, echo_from, needs_root, start_echo_servers, stop

from testbed.net import shell as _shell
from testbed.net.cleanup import clean, find_leftovers
from testbed.net import make_network
from testbed.net.topology import RunNames, Topology

pytestmark = [pytest.mark.root, pytest.mark.netns, needs_root]

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# A run that sets everything up and is then SIGKILLed by the test, so none of its `finally` blocks run.
_DOOMED_RUN = """
import os, sys, time
from testbed.net import shell as _shell
from testbed.net import make_network
from testbed.cluster.procs import ProcessGroup
from testbed.net.topology import RunNames, Topology

backend, run_id, run_dir = sys.argv[1:4]
names = RunNames(run_id)
net = make_network(backend, Topology(nodes=4, shape="line", bridges=2), run_id).__enter__()
group = ProcessGroup(run_id, run_dir).__enter__()
group.start("node1", ["sleep", "120"], host=net.host(1))
group.start("helper", ["sleep", "120"])
net.host(2).popen(["sleep", "120"], start_new_session=True)
_shell.nft("add", "table", "bridge", names.nft_table("partition"))
os.makedirs(names.pin_dir + "/maps")
_shell.run(["mount", "-t", "bpf", "bpf", names.pin_dir + "/maps"])
print("ready", flush=True)
time.sleep(120)
"""


def start_doomed_run(backend: str, run_id: str, run_dir: str) -> subprocess.Popen[str]:
    """Start the doomed run and return once it has built everything; the caller SIGKILLs it."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _DOOMED_RUN, backend, run_id, run_dir],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 60.0)
    line = proc.stdout.readline() if ready else ""
    if line.strip() != "ready":
        proc.kill()
        raise AssertionError(f"the doomed run did not come up: {proc.communicate()[1]}")
    return proc


def assert_killed_run_is_cleaned(backend: str, run_id: str, tmp_path, *, namespaces: int) -> None:
    doomed = start_doomed_run(backend, run_id, str(tmp_path))
    doomed.send_signal(signal.SIGKILL)
    doomed.wait(timeout=10)  # not communicate(): the processes it left hold its pipes open
    for pipe in (doomed.stdout, doomed.stderr):
        pipe.close()

    names = RunNames(run_id)
    left = find_leftovers(run_id)
    assert len(left.namespaces) == namespaces
    expected_links = {names.bridge(0), names.bridge(1), names.trunk(0, "a"), names.trunk(0, "z")}
    expected_links |= {names.host_veth(i) for i in range(4)}
    if namespaces:
        assert set(left.links) == expected_links
    else:  # Mininet: a host whose shell died with its parent (SIGHUP) and runs nothing else is gone already
        assert {names.host_veth(1), names.host_veth(2)} <= set(left.links) <= expected_links
    assert len(left.processes) >= 3  # node1, helper, the popen'd sleep (and Mininet's shells)
    assert left.nft_tables == (f"bridge {names.nft_table('partition')}",)
    assert left.pin_dirs == (names.pin_dir,)

    removed = clean(run_id)
    if namespaces:
        assert removed == left
    else:  # Mininet hosts may still be dying from the SIGHUP: some of their links can be gone by now
        assert set(removed.links) <= set(left.links)
        assert (removed.nft_tables, removed.pin_dirs) == (left.nft_tables, left.pin_dirs)
    assert find_leftovers(run_id).empty
    assert not any(alive(pid) for pid in left.processes)
    assert not os.path.exists(names.pin_dir)
    assert names.nft_table("partition") not in _shell.nft("list", "tables")


def test_clean_removes_everything_a_killed_netns_run_left(run_id, tmp_path):
    assert_killed_run_is_cleaned("netns", run_id, tmp_path, namespaces=4)


def test_clean_of_one_run_leaves_a_live_run_alone(run_id, other_run_id, tmp_path):
    with make_network("netns", Topology(nodes=2), other_run_id) as other:
        before = find_leftovers(other_run_id)
        assert_killed_run_is_cleaned("netns", run_id, tmp_path, namespaces=4)
        assert find_leftovers(other_run_id) == before
        servers = start_echo_servers([other.host(1)])
        try:
            assert echo_from(other.host(0), [other.host(1)]) == {"h1": True}
        finally:
            stop(servers)
    assert find_leftovers(other_run_id).empty


def test_clean_with_nothing_left_removes_nothing(run_id):
    assert clean(run_id).empty
    assert find_leftovers(run_id).summary() == "nothing"
