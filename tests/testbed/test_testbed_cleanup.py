"""clean(): what a killed run left behind is found by its run id and removed, and nothing of other runs is touched;
without a run id, runs in progress (their owner alive) are left alone unless forced."""

from __future__ import annotations

import json
import os
import shutil
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


# --- runs in progress ------------------------------------------------------------------------------------------
#
# clean() without a run id sweeps the whole machine, where other people's runs may be going on: these tests call it
# only inside a sandbox of their own (new mount, network and pid namespaces, tmpfs over /var/run/netns and
# /run/xdp-gossip), where it sees nothing but what the test made. The sandbox's script reports what it saw as JSON.

_SANDBOX = r"""
import contextlib, io, json, os, signal, subprocess, sys
for path in ("/var/run/netns", "/run/xdp-gossip"):
    os.makedirs(path, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "xg-clean-test", path], check=True)
from pyroute2 import IPRoute, netns
from testbed.net import cleanup, shell
from testbed.net.topology import PIN_ROOT, RunNames, testnet_owner_record

def sh(*argv, env=None):
    subprocess.run(argv, check=True, env=env)

def spawn(*argv, env=None):
    return subprocess.Popen(list(argv or ("sleep", "300")), env=env)

def record(path, pid, *, start_ticks=None):
    owner = cleanup.process_owner(pid)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as fh:
        fh.write(f"{pid} {owner.start_ticks if start_ticks is None else start_ticks}\n")

def make_run(run_id):
    # what a run's network and cluster make: a namespace with a node in it, a bridge, a host veth, an nft table,
    # a pin dir, and a helper process outside the namespace that carries the run id
    names, env = RunNames(run_id), {**os.environ, "XG_RUN_ID": run_id}
    ns = names.netns(0)
    sh("ip", "netns", "add", ns)
    sh("ip", "link", "add", names.bridge(0), "type", "bridge")
    sh("ip", "link", "add", names.host_veth(0), "type", "veth", "peer", "name", "eth0", "netns", ns)
    sh("ip", "link", "set", names.host_veth(0), "master", names.bridge(0))
    shell.nft("add", "table", "bridge", names.nft_table("part"))
    os.makedirs(names.pin_dir + "/fastpath")
    return [spawn("ip", "netns", "exec", ns, "sleep", "300", env=env), spawn(env=env)]

def make_testnet(hexid):
    ns = f"xgt-{hexid}-0"
    sh("ip", "netns", "add", ns)
    sh("ip", "link", "add", f"xt{hexid}r0", "type", "veth", "peer", "name", f"xt{hexid}n0", "netns", ns)
    return [spawn("ip", "netns", "exec", ns, "sleep", "300")]

def present(procs, run_id=None, testnet=None):
    # which of a run's (or test network's) objects are still there
    with IPRoute() as ipr:
        links = {link.get("ifname") for link in ipr.get_links()}
    tables = shell.nft("list", "tables")
    for p in procs:
        p.poll()  # reap: we are pid 1 here
    state = {"processes": sum(p.returncode is None for p in procs)}
    if run_id is not None:
        names = RunNames(run_id)
        state |= {"netns": names.netns(0) in netns.listnetns(),
                  "links": sorted(links & {names.bridge(0), names.host_veth(0)}),
                  "nft": names.nft_table("part") in tables, "pins": os.path.exists(names.pin_dir),
                  "record": os.path.exists(names.owner_record)}
    if testnet is not None:
        state |= {"netns": f"xgt-{testnet}-0" in netns.listnetns(), "links": sorted(links & {f"xt{testnet}r0"}),
                  "record": os.path.exists(testnet_owner_record(testnet))}
    return state

def kill(proc):
    proc.kill()
    proc.wait()

def cli(*argv):
    from testbed._cli import main
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = main(list(argv))
    return status, out.getvalue().splitlines()

def removed(found):
    return {"namespaces": list(found.namespaces), "links": list(found.links), "processes": len(found.processes),
            "pin_dirs": list(found.pin_dirs), "nft_tables": list(found.nft_tables), "records": list(found.records),
            "in_progress": [str(r) for r in found.in_progress]}

report = {}
"""


def in_sandbox(script: str) -> dict:
    """Run _SANDBOX + SCRIPT in namespaces of their own and return the ``report`` it printed."""
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare (util-linux)")
    argv = ["unshare", "--mount", "--net", "--pid", "--fork", "--mount-proc", "--propagation", "private",
            sys.executable, "-c", _SANDBOX + script + "\nprint(json.dumps(report))\n"]
    proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


LIVE_RUN = {"processes": 2, "netns": True, "links": ["xgtlive1b0", "xgtlive1h0"], "nft": True, "pins": True,
            "record": True}
GONE_RUN = {"processes": 0, "netns": False, "links": [], "nft": False, "pins": False, "record": False}


def test_clean_leaves_runs_in_progress_alone_and_removes_them_once_their_owner_is_gone():
    got = in_sandbox(r"""
run_owner, testnet_owner = spawn(), spawn()
record(RunNames("tlive1").owner_record, run_owner.pid)
record(testnet_owner_record("a1b2c3"), testnet_owner.pid)
live, live_testnet = make_run("tlive1"), make_testnet("a1b2c3")
dead = make_run("tdead1")  # no record: a run from before owner records, or one whose record is gone
pinned = spawn()  # a live process's own bpf pin dir, named by its pid
pin_dir = f"{PIN_ROOT}/fastpath-{pinned.pid}-abc123"
os.makedirs(pin_dir)
report["cli"] = cli("clean")
report["first"] = {"live": present(live, "tlive1"), "testnet": present(live_testnet, testnet="a1b2c3"),
                   "dead": present(dead, "tdead1"), "pinned": os.path.exists(pin_dir)}
for owner in (run_owner, testnet_owner, pinned):
    kill(owner)
report["second"] = removed(cleanup.clean())
report["after"] = {"live": present(live, "tlive1"), "testnet": present(live_testnet, testnet="a1b2c3"),
                   "left": removed(cleanup.find_leftovers()), "pins": sorted(os.listdir(PIN_ROOT))}
report["pids"] = [run_owner.pid, testnet_owner.pid, pinned.pid]
""")
    run_pid, testnet_pid, pinned_pid = got["pids"]
    status, lines = got["cli"]
    assert status == 0
    assert lines[2].startswith("2 processes: ")  # the dead run's node and helper
    assert lines[:2] + lines[3:] == [
        "1 namespaces: xg-tdead1-0",
        "2 links: xgtdead1b0 xgtdead1h0",
        "1 pin dirs: /run/xdp-gossip/bpffs/tdead1",
        "1 nft tables: bridge xg_tdead1_part",
        f"skipped run tlive1: in progress (pid {run_pid})",
        f"skipped test network xgt-a1b2c3: in progress (pid {testnet_pid})",
    ]
    assert got["first"] == {
        "live": LIVE_RUN,
        "testnet": {"processes": 1, "netns": True, "links": ["xta1b2c3r0"], "record": True},
        "dead": GONE_RUN,
        "pinned": True,
    }
    assert got["second"] == {
        "namespaces": ["xg-tlive1-0", "xgt-a1b2c3-0"],
        "links": ["xgtlive1b0", "xgtlive1h0", "xta1b2c3r0"],
        "processes": 3,
        "pin_dirs": [f"/run/xdp-gossip/bpffs/fastpath-{pinned_pid}-abc123", "/run/xdp-gossip/bpffs/tlive1"],
        "nft_tables": ["bridge xg_tlive1_part"],
        "records": ["/run/xdp-gossip/runs/tlive1", "/run/xdp-gossip/testnets/a1b2c3"],
        "in_progress": [],
    }
    assert got["after"] == {
        "live": GONE_RUN,
        "testnet": {"processes": 0, "netns": False, "links": [], "record": False},
        "left": {"namespaces": [], "links": [], "processes": 0, "pin_dirs": [], "nft_tables": [], "records": [],
                 "in_progress": []},
        "pins": [],
    }


def test_a_record_whose_pid_now_names_another_process_counts_as_dead():
    got = in_sandbox(r"""
owner = spawn()
start = cleanup.process_owner(owner.pid).start_ticks
record(RunNames("tlive1").owner_record, owner.pid, start_ticks=start - 1)  # the pid was recycled since
live = make_run("tlive1")
report["removed"] = removed(cleanup.clean())
report["after"] = present(live, "tlive1")
report["owner_alive"] = owner.poll() is None
""")
    assert got["removed"]["in_progress"] == [] and got["removed"]["records"] == ["/run/xdp-gossip/runs/tlive1"]
    assert got["after"] == GONE_RUN
    assert got["owner_alive"]  # it carries no run id: not the run's, whatever the stale record says


def test_clean_force_and_clean_of_a_named_run_remove_runs_in_progress():
    got = in_sandbox(r"""
owners = {run_id: spawn() for run_id in ("tlive1", "tlive2")}
for run_id, owner in owners.items():
    record(RunNames(run_id).owner_record, owner.pid)
live = {run_id: make_run(run_id) for run_id in owners}
report["named"] = removed(cleanup.clean("tlive2"))
report["after_named"] = {run_id: present(procs, run_id) for run_id, procs in live.items()}
report["cli"] = cli("clean", "--force")
report["after_force"] = present(live["tlive1"], "tlive1")
report["left"] = removed(cleanup.find_leftovers(force=True))
""")
    assert got["named"]["namespaces"] == ["xg-tlive2-0"] and got["named"]["records"] == ["/run/xdp-gossip/runs/tlive2"]
    assert got["after_named"] == {"tlive1": LIVE_RUN, "tlive2": GONE_RUN}
    status, lines = got["cli"]
    assert status == 0 and lines[0] == "1 namespaces: xg-tlive1-0" and not any("skipped" in x for x in lines)
    assert got["after_force"] == GONE_RUN
    assert not any(got["left"].values())


def test_clean_copes_with_leftovers_that_go_while_it_works():
    got = in_sandbox(r"""
dead = make_run("tdead1")
listed = cleanup.find_leftovers()
cleanup.clean("tdead1")  # the run's own teardown gets there first
real = cleanup.find_leftovers
cleanup.find_leftovers = lambda run_id=None, **kw: listed if run_id is None else real(run_id, **kw)
report["removed"] = removed(cleanup.clean())
report["after"] = present(dead, "tdead1")
""")
    assert got["removed"]["namespaces"] == ["xg-tdead1-0"]  # what it had listed; all of it gone already
    assert got["after"] == GONE_RUN


def test_a_network_and_a_testnet_record_their_owner_while_they_are_up(run_id):
    # outside a sandbox: find_leftovers() only looks, and what else it finds on this machine is not asserted on
    sys.path.insert(0, os.path.join(REPO, "tests", "bpf"))
    from bpf_testnet import Testnet

    from testbed.net.cleanup import process_owner, read_owner
    from testbed.net.topology import testnet_owner_record

    me = process_owner(os.getpid())
    names = RunNames(run_id)
    with make_network("netns", Topology(nodes=2), run_id), Testnet(1) as testnet:
        assert read_owner(names.owner_record) == me
        assert read_owner(testnet_owner_record(testnet.run_id)) == me
        found = find_leftovers()
        assert {str(r) for r in found.in_progress} >= {
            f"skipped run {run_id}: in progress (pid {me.pid})",
            f"skipped test network xgt-{testnet.run_id}: in progress (pid {me.pid})",
        }
        assert not [n for n in found.namespaces if run_id in n or testnet.run_id in n]
        assert not [n for n in found.links if names.owns_link(n) or testnet.run_id in n]
    assert not os.path.exists(names.owner_record) and not os.path.exists(testnet_owner_record(testnet.run_id))
    assert find_leftovers(run_id).empty
