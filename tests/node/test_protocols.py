"""Protocols as plug-ins: the registry, the `Protocol` interface its callers keep to, ``membership`` from the
config, the CLI and a scenario's ``node:`` block, and the example protocol (``antientropy``) and a protocol of the
test's own (``MODULE:NAME``) run on the simulator, on loopback node processes and on the netns testbed."""

from __future__ import annotations

import asyncio
import io
import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

from gossip import ConfigError, GossipCore, Identity, NodeConfig, protocols
from gossip._local import LocalCluster, free_port
from gossip._node import Node
from gossip._replay import replay
from gossip.protocols import _registry
from gossip.protocols.antientropy import AntiEntropyCore
from testbed.errors import ScenarioError
from testbed.scenario import parse
from testbed.sim import Simulation

ROOT = Path(__file__).resolve().parents[2]

# a protocol of a user's own, in a module of its own: antientropy whose table goes to one peer a cycle
THIRD_PARTY = '''\
from gossip.protocols import register
from gossip.protocols.antientropy import AntiEntropyCore


@register("onepeer")
class OnePeerCore(AntiEntropyCore):
    """antientropy, its table gossiped to one random peer a cycle whatever the fanout."""

    def _pick(self, k):
        return super()._pick(min(k, 1))
'''


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """A module ``xg_user_proto`` registering ``onepeer``, importable here and by child processes."""
    (tmp_path / "xg_user_proto.py").write_text(THIRD_PARTY)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])))
    yield "xg_user_proto:onepeer"
    sys.modules.pop("xg_user_proto", None)
    for name in ("onepeer", "xg_user_proto:onepeer"):
        _registry._factories.pop(name, None)


def _core(membership: str, port: int = 9000):
    cfg = NodeConfig(listen_port=port, membership=membership)
    return protocols.create(cfg, Identity(name="a", addr=cfg.listen_addr, port=port), random.Random(1), now=1000.0)


# ---- the registry ------------------------------------------------------------------------------------------------

def test_the_builtin_protocols_are_registered_and_made_by_name():
    assert {"heartbeat", "antientropy", "swim"} <= set(protocols.names())
    assert NodeConfig().membership == "heartbeat"
    assert protocols.factory("heartbeat") is GossipCore
    assert protocols.factory("antientropy") is AntiEntropyCore
    hb, ae = _core("heartbeat"), _core("antientropy")
    assert type(hb) is GossipCore and type(ae) is AntiEntropyCore
    for core in (hb, ae):
        assert isinstance(core, protocols.Protocol)
        assert core.members()[0].name == "a" and core.read()[1] == b""


def test_register_refuses_a_taken_name_and_a_bad_one():
    with pytest.raises(ValueError, match="already registered"):
        protocols.register("heartbeat")(AntiEntropyCore)
    protocols.register("heartbeat")(GossipCore)  # the same factory again (a module imported twice): harmless
    for bad in ("", "9lives", "a b", "x" * 65, None):
        with pytest.raises(ValueError, match="protocol name"):
            protocols.register(bad)
    try:
        protocols.register("xg-test-proto")(AntiEntropyCore)
        assert "xg-test-proto" in protocols.names()
        assert type(_core("xg-test-proto")) is AntiEntropyCore
    finally:
        _registry._factories.pop("xg-test-proto", None)
    assert "xg-test-proto" not in protocols.names()


@pytest.mark.parametrize("name, says", [
    ("nope", "unknown protocol 'nope' (known: antientropy, heartbeat"),
    ("xg_no_such_module:x", "cannot import module 'xg_no_such_module'"),
    ("os:x", "module 'os' registers no protocol named 'x'"),
    ("a b:c", "expected MODULE:NAME"),
    (3, "must be a protocol name (a string), got 3"),
])
def test_a_bad_membership_is_a_one_line_config_error_naming_the_field(name, says):
    with pytest.raises(ConfigError) as e:
        NodeConfig(membership=name)
    assert e.value.field == "membership"
    assert str(e.value).startswith("membership: ") and says in str(e.value) and "\n" not in str(e.value)


def test_a_user_module_that_fails_to_import_is_one_line(tmp_path, monkeypatch):
    (tmp_path / "xg_broken_proto.py").write_text("raise RuntimeError('bad\\nworse')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError) as e:
        NodeConfig(membership="xg_broken_proto:x")
    assert str(e.value) == ("membership: 'xg_broken_proto:x': importing module 'xg_broken_proto' failed: "
                            "RuntimeError: bad")


def test_a_module_path_finds_what_the_module_registers(user_module):
    core = _core(user_module)
    assert type(core).__name__ == "OnePeerCore" and isinstance(core, protocols.Protocol)
    assert user_module in protocols.names() and "onepeer" in protocols.names()


# ---- the interface is all its callers use ---------------------------------------------------------------------

CALLERS = ["gossip/_driver.py", "gossip/_node.py", "gossip/_replay.py", "gossip/_http.py", "gossip/_plane.py",
           "testbed/sim/_engine.py",
           "testbed/sim/_validate.py", "testbed/cluster/simulated.py"]


def _interface() -> set[str]:
    cls = protocols.Protocol
    return {n for n in vars(cls) if not n.startswith("_")} | set(cls.__annotations__)


def test_both_cores_share_one_meaning_for_metadata_durable_state_and_seeds():
    """What `CoreBase` holds means the same in every built-in protocol: a restored state, a publish above its HLC
    mark, a refused value rolled back, an unheard seed not listed, garbage counted and dropped."""
    from gossip._core import DurableState, Version
    seen = {}
    for name in ("heartbeat", "antientropy", "swim"):
        cfg = NodeConfig(listen_port=9000, membership=name)
        state = DurableState(version=Version(5_000_000, 7), data=b"kept", hlc=9_000_000)
        core = protocols.create(cfg, Identity(name="a", addr=cfg.listen_addr, port=9000), random.Random(1),
                                now=1000.0, state=state)
        assert isinstance(core, protocols.CoreBase)
        core.set(Identity(name="s", addr="127.0.0.1", port=9001), 1000.0)
        restored = [e.kind for e in core.take_events()]
        v = core.publish(b"new", 1000.0)
        core.roll_back(state.version, state.data)
        core.receive(b"\x00garbage", 1000.0)
        seen[name] = (restored, v, core.read(), [m.name for m in core.members()],
                      core.stats["dropped"], core.durable_state())
    assert seen["heartbeat"] == seen["antientropy"] == seen["swim"]
    restored, v, read, listed, dropped, durable = seen["heartbeat"]
    assert restored == ["metadata_adopted"] and v.seq == 9_000_001 and read == (Version(5_000_000, 7), b"kept")
    assert listed == ["a"] and dropped == 1 and durable.hlc == 9_000_001


def test_every_member_of_the_interface_is_implemented_by_both_cores():
    for core in (_core("heartbeat"), _core("antientropy"), _core("swim")):
        missing = [n for n in sorted(_interface()) if not hasattr(core, n)]
        assert not missing, (type(core).__name__, missing)


def test_the_drivers_node_simulator_replay_and_testbed_call_nothing_outside_the_interface():
    # `core.x`, `self.core.x`, `node.core.x`, `sim.core(name).x`: whatever they call on a core is in `Protocol`
    pattern = re.compile(r"\bcore(?:\([^()]*\))?\.([A-Za-z_]\w*)")
    used: dict[str, set[str]] = {}
    for rel in CALLERS:
        text = (ROOT / rel).read_text()
        for name in pattern.findall(text):
            used.setdefault(name, set()).add(rel)
    assert {"receive", "tick", "take_sends", "publish"} <= set(used)  # the pattern does find the call sites
    outside = {n: sorted(files) for n, files in used.items() if n not in _interface()}
    assert not outside
    assert set(used) == _interface()  # exactly: nothing in it that no caller needs
    for rel in CALLERS:  # and none of them names a protocol class
        assert "GossipCore(" not in (ROOT / rel).read_text(), rel


# ---- config, CLI and scenario plumbing -----------------------------------------------------------------------

def test_the_cli_takes_membership_and_refuses_a_bad_one_in_one_line():
    run = subprocess.run([sys.executable, "-m", "gossip", "node", "--name", "x", "--membership", "nope"],
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert run.returncode == 2 and run.stdout == ""
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: membership: unknown protocol 'nope'"), run.stderr
    assert "heartbeat" in lines[0] and "antientropy" in lines[0]
    helptext = subprocess.run([sys.executable, "-m", "gossip", "node", "--help"], capture_output=True, text=True,
                              timeout=60, cwd=ROOT).stdout
    assert "--membership" in helptext and "--protocol" in helptext


SCENARIO = """\
name: ae
seed: 3
nodes: 8
backend: sim
node:
  membership: {membership}
  fanout: 3
  cycle_s: 0.5
  timeout_s: 4
  xdp: true
duration_s: 12
recovery_s: 10
timeline:
  - {{at: 2, op: publish, node: n3, data: "config v1"}}
  - {{at: 4, fault: crash, node: n5, until: 8}}
  - {{at: 9, op: publish, node: random}}
checks:
  - membership_converged: {{within_s: 8}}
  - metadata_converged: {{within_s: 8}}
  - no_false_deaths
  - no_lost_update
"""


def test_a_scenario_node_block_sets_membership_and_a_bad_one_is_a_file_line_error():
    s = parse(SCENARIO.format(membership="antientropy"), "ae.yaml")
    assert s.node["membership"] == "antientropy" and s.config().membership == "antientropy"
    assert parse(SCENARIO.replace("  membership: {membership}\n", "").format(), "ae.yaml").config().membership \
        == "heartbeat"
    with pytest.raises(ScenarioError) as e:
        parse(SCENARIO.format(membership="nope"), "ae.yaml")
    msg = str(e.value)
    assert msg.startswith("ae.yaml:6: node.membership: unknown protocol 'nope'") and "\n" not in msg, msg


def test_the_dissemination_model_refuses_another_protocol():
    text = SCENARIO.format(membership="antientropy").replace("backend: sim\n",
                                                             "backend: sim\nsim: {fidelity: dissemination}\n")
    text = text.replace("  - {at: 4, fault: crash, node: n5, until: 8}\n  - {at: 9, op: publish, node: random}\n", "")
    text = re.sub(r"checks:\n(  - .*\n)+", "checks: [metadata_converged]\nplots: [infection]\n", text)
    assert parse(text.replace("antientropy", "heartbeat"), "ae.yaml").sim["fidelity"] == "dissemination"
    with pytest.raises(ScenarioError) as e:
        parse(text, "ae.yaml")
    assert str(e.value) == ("ae.yaml: node.membership: membership 'antientropy' is not modelled at dissemination "
                            "fidelity (one rumor over fixed full views): it models the heartbeat protocol only")


# ---- the example protocol runs -------------------------------------------------------------------------------

def _events(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines() if line.strip()]


def _assert_antientropy_ran(events: list[dict]) -> None:
    """What only antientropy does: metadata moves by swaps (never a rumor), and tables carry others' heartbeats."""
    adopted = [e for e in events if e["kind"] == "metadata_adopted"]
    assert adopted and {e["via"] for e in adopted} <= {"publish", "swap"}, {e["via"] for e in adopted}
    assert not [e for e in events if e["kind"] == "metadata_sent"]
    last: dict[str, dict] = {}  # each node's last counters (its stats records; stopped, where a node stops)
    for e in events:
        if e["kind"] in ("stats", "stopped"):
            last[e["node"]] = e
    counters = list(last.values())
    assert counters and all(c.get("sent_metadata", 0) == 0 for c in counters)
    # a table holds one heartbeat per member: far more heartbeats sent than the node's own
    assert sum(c.get("sent_heartbeat", 0) for c in counters) > 3 * sum(c.get("heartbeats_sent", 0) for c in counters)


def test_antientropy_runs_a_scenario_on_the_simulator(tmp_path):
    path = tmp_path / "ae.yaml"
    path.write_text(SCENARIO.format(membership="antientropy"))
    run = subprocess.run([sys.executable, "-m", "testbed", "run", str(path), "--backend", "sim", "--out",
                          str(tmp_path / "run"), "--quiet"], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert run.returncode == 0, run.stdout + run.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["passed"] and {c["name"] for c in summary["checks"] if c["passed"]} == {
        "membership_converged", "metadata_converged", "no_false_deaths", "no_lost_update"}
    _assert_antientropy_ran(_events(tmp_path / "run"))


def test_a_user_protocol_by_module_path_runs_on_the_simulator(user_module):
    config = NodeConfig(membership=user_module, cycle_s=0.5, timeout_s=4.0, fanout=3)
    with Simulation(seed=5, config=config) as sim:
        names = sim.add_nodes(12, seeding="tree", stagger_s=0.5)
        sim.run_until(10.0)
        assert sim.membership_converged(), sim.views()
        assert {type(sim.core(n)).__name__ for n in names} == {"OnePeerCore"}
        version = sim.publish("n7", b"from a plug-in")
        sim.run_until(16.0)
        assert set(sim.metadata().values()) == {(version, b"from a plug-in")}
        # one peer a cycle (plus a silent seed at the start): the table goes to far fewer targets than fanout 3's
        own = sum(sim.core(n).stats["heartbeats_sent"] for n in names)
        assert sum(sim.core(n).stats["sent_heartbeat"] for n in names) < 2 * 12 * own


def test_replaying_an_antientropy_nodes_trace_gives_its_events():
    # the replay tool makes its core from the config's membership, as the node does
    async def main():
        nodes, traces, logs = [], [], []
        for i in range(3):
            cfg = NodeConfig(listen_port=free_port(), cycle_s=0.1, timeout_s=0.6, membership="antientropy")
            seeds = ((nodes[0].config.listen_addr, nodes[0].config.listen_port),) if nodes else ()
            trace, log = io.StringIO(), io.StringIO()
            node = Node(cfg, name=f"r{i}", seeds=seeds, rng=random.Random(7 + i), trace=trace, events=log,
                        stats_every_cycle=False)
            await node.join()
            nodes.append(node)
            traces.append(trace)
            logs.append(log)
        await asyncio.sleep(0.6)
        nodes[1].publish(b"traced")
        await asyncio.sleep(0.6)
        for n in nodes:
            await n.close()
        return nodes, traces, logs

    nodes, traces, logs = asyncio.run(main())
    for i, (node, trace, log) in enumerate(zip(nodes, traces, logs)):
        assert type(node.core) is AntiEntropyCore
        live = [json.loads(line) for line in log.getvalue().splitlines()]
        live = [{k: v for k, v in e.items() if k not in ("t", "node")} for e in live
                if e["kind"] not in ("started", "stopped", "stats")]
        replayed = [e.to_json() for e in replay(trace.getvalue().splitlines(), config=node.config,
                                                identity=node.identity, seed=7 + i)]
        replayed = [e for e in replayed
                    if not (e["kind"] == "packet_dropped" and e["reason"] in ("duplicate", "stale"))]
        assert replayed == live, f"node r{i}"
        assert {"member_added", "metadata_adopted", "leave_sent"} <= {e["kind"] for e in live}


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_antientropy_on_loopback_processes_converges_publishes_and_forgets_the_dead(tmp_path, transport):
    with LocalCluster(size=6, workdir=tmp_path, protocol=transport, cycle_s=0.2, timeout_s=2.0,
                      extra_args=["--membership", "antientropy"]) as cl:
        everyone = {n.name for n in cl.nodes}
        assert cl.wait_for(lambda: all(n.names() == everyone for n in cl.nodes), 20), \
            {n.name: n.names() for n in cl.nodes}
        v = cl.nodes[4].post("/publish", b"by swaps")
        assert cl.wait_for(lambda: all(n.get("/metadata")["version"] == v["version"] for n in cl.nodes), 15)
        victim = cl.nodes[2]
        cl.kill(victim)
        rest = [n for n in cl.nodes if n is not victim]
        assert cl.wait_for(lambda: all(n.names() == everyone - {victim.name} for n in rest), 15)
        cl.start(victim)  # a new incarnation: its clock-based sequences are newer, so it is taken back
        assert cl.wait_for(lambda: all(n.names() == everyone for n in cl.nodes), 20)
        assert cl.wait_for(lambda: victim.get("/metadata").get("data") == "by swaps", 10)
        leaver = cl.nodes[5]
        assert cl.terminate(leaver) == 0  # SIGTERM: a LEAVE to every member, dropped at once
        rest = [n for n in cl.nodes if n is not leaver]
        assert cl.wait_for(lambda: all(n.names() == everyone - {leaver.name} for n in rest), 10)
        events = [e for n in rest for e in cl.events(n)]
    assert any(e["kind"] == "member_left" and e["name"] == leaver.name for e in events)
    _assert_antientropy_ran(events)


def test_a_user_protocol_by_module_path_runs_in_node_processes(tmp_path, user_module):
    with LocalCluster(size=4, workdir=tmp_path, cycle_s=0.2, timeout_s=2.0,
                      extra_args=["--membership", user_module]) as cl:
        everyone = {n.name for n in cl.nodes}
        assert cl.wait_for(lambda: all(n.names() == everyone for n in cl.nodes), 20), \
            {n.name: n.names() for n in cl.nodes}
        v = cl.nodes[3].post("/publish", b"plug-in")
        assert cl.wait_for(lambda: all(n.get("/metadata")["version"] == v["version"] for n in cl.nodes), 15)


@pytest.mark.root
@pytest.mark.netns
@pytest.mark.bpf
@pytest.mark.slow
def test_antientropy_runs_a_scenario_on_the_netns_testbed(tmp_path):
    from testbed.net.cleanup import find_leftovers
    from testbed.runner import run_scenario

    s = parse(SCENARIO.format(membership="antientropy"), "ae.yaml").with_overrides(backend="netns")
    summary = run_scenario(s, tmp_path / "run")
    meta = json.loads((tmp_path / "run" / "meta.json").read_text())
    assert find_leftovers(meta["run_id"]).empty
    assert summary["passed"], summary["checks"]
    _assert_antientropy_ran(_events(tmp_path / "run"))

