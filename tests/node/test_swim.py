"""SWIM with Lifeguard (`gossip.protocols.swim`): the protocol's rules, one core at a time and on the simulator's
network of real cores (deterministic, so a failure replays), plus its wire messages and its options.

Nothing is mocked: a lone core gets real signed datagrams or decoded messages, and the simulator runs one real
`SwimCore` per node behind the shared driver, as a node process does."""

from __future__ import annotations

import itertools
import math
import random
from collections import Counter
from dataclasses import replace

import pytest

from gossip import NodeConfig
from gossip import _wire as wire
from gossip.errors import ConfigError, UsageError
from gossip.protocols import create
from gossip.protocols.swim import SwimCore
from testbed.sim import Simulation

T0 = 1000.0


def _cfg(**kw) -> NodeConfig:
    options = kw.pop("options", {})
    return NodeConfig(membership="swim", cycle_s=kw.pop("cycle_s", 1.0), timeout_s=5.0, options=options, **kw)


def _core(port=9000, **kw) -> SwimCore:
    cfg = _cfg(listen_port=port, **kw)
    core = create(cfg, wire.Identity(name=f"p{port}", addr=cfg.listen_addr, port=port), random.Random(port),
                  now=T0)
    assert isinstance(core, SwimCore)
    return core


def _ident(port: int) -> wire.Identity:
    return wire.Identity(name=f"p{port}", addr="127.0.0.1", port=port)


def _alive(port: int, inc: int = 5) -> wire.Update:
    i = _ident(port)
    return wire.Update(kind=wire.ALIVE, incarnation=inc, node=i.node_id, identity=i)


_SEQ = itertools.count(1)  # every fed PING is a new one (a receiver drops a replayed PING)


def _feed(core: SwimCore, *updates: wire.Update, sender: int = 9100, now: float = T0) -> None:
    """UPDATES as they arrive on a real node: piggybacked on a signed PING from SENDER, through the decoder."""
    s = _ident(sender)
    ping = wire.Ping(cluster=core.cluster, origin=s.node_id, seq=next(_SEQ), sender=s, target=core.node_id,
                     updates=tuple(updates))
    core.receive(core.encode(ping), now)


def _sent(core: SwimCore) -> list:
    return [(s.message, s.targets) for s in core.take_sends()]


# ---- wire ----------------------------------------------------------------------------------------------------

def test_every_swim_message_round_trips_and_a_bad_body_is_malformed():
    i, j = _ident(1), _ident(2)
    ups = (_alive(2, 7), wire.Update(kind=wire.SUSPECT, incarnation=3, node=j.node_id, sender=i.node_id),
           wire.Update(kind=wire.DEAD, incarnation=4, node=j.node_id, sender=j.node_id))
    msgs = [wire.Ping(cluster=9, origin=i.node_id, seq=2, sender=i, target=j.node_id, updates=ups),
            wire.Ack(cluster=9, origin=j.node_id, seq=2, updates=ups[:1]),
            wire.PingReq(cluster=9, origin=i.node_id, seq=3, sender=i, target=j),
            wire.Nack(cluster=9, origin=j.node_id, seq=3, target=i.node_id),
            wire.State(cluster=9, origin=i.node_id, seq=11, sender=i, reply=True, part=1, parts=3,
                       entries=(wire.StateEntry(state=wire.SUSPECT, incarnation=8, identity=j),))]
    for m in msgs:
        raw = wire.encode(m, key=b"k")
        assert wire.decode(raw, cluster=9, keys=(b"k",)) == m
        # the sizes a sender fills a datagram by are the encoder's
        body = len(raw) - wire.HEADER_BYTES - wire.MAC_BYTES
        extra = sum(u.encoded_size() for u in getattr(m, "updates", ())) + \
            sum(e.encoded_size() for e in getattr(m, "entries", ()))
        assert body == wire.swim_prefix_size(m) + extra, type(m).__name__
    # an update kind or STATE flags that are not in the spec: malformed, counted, never an exception
    core = _core()
    raw = bytearray(wire.encode(msgs[0], key=b""))
    bad = wire.HEADER_BYTES + wire.swim_prefix_size(msgs[0])  # the first update's kind byte
    raw[bad] = 9
    body = bytes(raw[:-wire.MAC_BYTES])
    forged = wire.HEADER.pack(*wire.HEADER.unpack_from(body)[:3], core.cluster, *wire.HEADER.unpack_from(body)[4:])
    signed = forged + body[wire.HEADER_BYTES:]
    core.receive(signed + wire.mac(b"", signed), T0)
    assert core.stats["dropped_malformed"] == 1 and core.stats["packets_in"] == 1


def test_a_core_survives_random_bodies_under_a_valid_mac_for_every_swim_type():
    core, rng = _core(), random.Random(4)
    for n in range(3000):
        mtype = rng.choice([6, 7, 8, 9, 10])
        body = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 60)))
        if n % 3 == 0:  # a plausible start: a real identity, then noise
            body = wire._identity_bytes(_ident(9100)) + body
        head = wire.HEADER.pack(wire.MAGIC, wire.FORMAT_VERSION, mtype, core.cluster, rng.getrandbits(32), 0,
                                len(body), rng.getrandbits(64))
        core.receive(head + body + wire.mac(b"", head + body), T0 + n * 1e-3)
        core.tick(T0 + n * 1e-3)
    assert core.stats["packets_in"] == 3000
    assert core.stats["dropped"] > 2000  # most are malformed; none raised


# ---- one core -------------------------------------------------------------------------------------------------

def test_alive_adds_a_member_with_its_incarnation_and_a_removed_members_old_alive_cannot_bring_it_back():
    core = _core()
    _feed(core, _alive(9001, 5))
    info = {m.port: m for m in core.members()}
    assert info[9001].state == "alive" and info[9001].incarnation == 5
    assert info[9001].to_json()["state"] == "alive" and info[9001].to_json()["incarnation"] == 5
    nid = _ident(9001).node_id
    _feed(core, wire.Update(kind=wire.DEAD, incarnation=5, node=nid, sender=_ident(9100).node_id))
    kinds = [e.kind for e in core.take_events()]
    assert "member_removed" in kinds and nid not in core.live_ids()
    _feed(core, _alive(9001, 5), _alive(9001, 4))  # replays of its old alive
    assert nid not in core.live_ids() and core.stats["updates_stale"] == 2
    _feed(core, _alive(9001, 6))  # a new incarnation (a restart, or a refutation): back
    assert nid in core.live_ids()


def test_a_suspected_node_refutes_with_a_higher_incarnation_and_its_peers_take_it():
    accused, peer = _core(9000), _core(9001)
    _feed(peer, _alive(9000, accused.incarnation))
    suspect = wire.Update(kind=wire.SUSPECT, incarnation=accused.incarnation, node=accused.node_id,
                          sender=_ident(9100).node_id)
    _feed(peer, suspect)
    assert [m.state for m in peer.members() if m.port == 9000] == ["suspect"]
    old = accused.incarnation
    _feed(accused, suspect)
    assert accused.incarnation == old + 1 and accused.stats["refutations"] == 1
    refuted = [e for e in accused.take_events() if e.kind == "refuted"]
    assert refuted and refuted[0].new == old + 1
    assert accused.awareness == 1  # being suspected is a sign of its own ill health (LHM)
    # the refutation rides on the next message it sends: an ACK to the next PING
    _feed(accused, sender=9001)
    sent = _sent(accused)
    ack = next(m for m, _ in sent if isinstance(m, wire.Ack))
    # it does not list 9001 yet, so the unlisted prober also gets a push-pull (its STATE, asking for 9001's)
    assert [m.reply for m, to in sent if isinstance(m, wire.State) and to == (("127.0.0.1", 9001),)] == [True]
    assert isinstance(ack, wire.Ack) and any(u.kind == wire.ALIVE and u.incarnation == old + 1 for u in ack.updates)
    peer.receive(accused.encode(ack), T0)
    assert [(m.state, m.incarnation) for m in peer.members() if m.port == 9000] == [("alive", old + 1)]
    assert "member_alive" in [e.kind for e in peer.take_events()]


def test_a_stopped_node_neither_answers_nor_refutes():
    core = _core()
    core.stop()
    _feed(core, wire.Update(kind=wire.SUSPECT, incarnation=core.incarnation, node=core.node_id, sender=1))
    assert core.stats["refutations"] == 0 and not [m for m, _ in _sent(core) if isinstance(m, wire.Ack)]


@pytest.mark.parametrize("dynamic", [True, False])
def test_the_suspicion_timeout_falls_with_independent_confirmations_only_with_lifeguard(dynamic):
    core = _core(options={"lifeguard_suspicion": dynamic})
    for port in range(9001, 9011):  # N = 11: min = 4 * log10(11) s, K = 2
        _feed(core, _alive(port, 3))
    nid = _ident(9001).node_id
    _feed(core, wire.Update(kind=wire.SUSPECT, incarnation=3, node=nid, sender=_ident(9002).node_id))
    s = core._suspicions[nid]
    lo = 4 * math.log10(11)
    assert s.deadline - T0 == pytest.approx(6 * lo if dynamic else lo)
    deadlines = [s.deadline]
    for by in (9002, 9003, 9004):  # the first suspector again (no confirmation), then two others
        _feed(core, wire.Update(kind=wire.SUSPECT, incarnation=3, node=nid, sender=_ident(by).node_id))
        deadlines.append(s.deadline)
    if dynamic:
        mid = 6 * lo - 5 * lo * math.log(2) / math.log(3)
        assert [d - T0 for d in deadlines] == pytest.approx([6 * lo, 6 * lo, mid, lo])
    else:
        assert set(deadlines) == {T0 + lo}
    core.tick(T0 + lo - 0.01)
    assert nid in core.live_ids()
    core.tick(deadlines[-1] + 0.001)
    assert nid not in core.live_ids()
    removed = [e for e in core.take_events() if e.kind == "member_removed"]
    assert [(e.node_id, e.reason) for e in removed] == [(nid, "suspect_timeout")]


def test_a_failed_probe_asks_k_relays_then_suspects_and_missing_nacks_raise_the_health_multiplier():
    core = _core(options={"indirect_checks": 2})
    for port in (9001, 9002, 9003):
        _feed(core, _alive(port, 3))
    _sent(core)
    core.tick(T0)  # the first probe
    ping = [m for m, _ in _sent(core) if isinstance(m, wire.Ping)]
    assert len(ping) == 1
    target = ping[0].target
    core.tick(T0 + 0.5)  # no ACK within the probe timeout: two PING_REQs to the others
    reqs = [(m, t) for m, t in _sent(core) if isinstance(m, wire.PingReq)]
    assert len(reqs) == 2 and {m.target.node_id for m, _ in reqs} == {target}
    relay = wire.node_id(*reqs[0][1][0])
    core.receive_message(wire.Nack(cluster=core.cluster, origin=relay, seq=ping[0].seq, target=target), T0 + 0.9)
    core.tick(T0 + 1.0)  # end of the period: suspected; one of two NACKs missing -> health +1
    assert [m.state for m in core.members() if m.node_id == target] == ["suspect"]
    assert core.awareness == 1 and core.stats["probes_failed"] == 1
    # the next period is twice as long, and a PING to a suspect carries the suspicion first (buddy system)
    assert core.next_deadline() == pytest.approx(T0 + 2.0)
    for _ in range(30):  # a round of three targets, two deadlines each
        core.tick(core.next_deadline())
        for m, _ in _sent(core):
            if isinstance(m, wire.Ping) and m.target == target:
                assert m.updates[0].kind == wire.SUSPECT and m.updates[0].node == target
                return
    pytest.fail("the suspect was never probed")


def test_a_direct_ack_lowers_the_health_multiplier_and_a_relay_passes_an_ack_on():
    core = _core()
    _feed(core, _alive(9001, 3))
    core._awareness = 3
    core.tick(T0)
    ping = [m for m, _ in _sent(core) if isinstance(m, wire.Ping)][0]
    core.receive_message(wire.Ack(cluster=core.cluster, origin=ping.target, seq=ping.seq), T0 + 0.01)
    assert core.awareness == 2 and core.stats["probes_acked"] == 1
    # as a relay: a PING_REQ makes it probe the target and pass the target's ACK on, under the asker's seq
    relay = _core(9002)
    asker, target = _ident(9000), _ident(9001)
    relay.receive_message(wire.PingReq(cluster=relay.cluster, origin=asker.node_id, seq=77, sender=asker,
                                       target=target), T0)
    (probe, to), = [(m, t) for m, t in _sent(relay) if isinstance(m, wire.Ping)]
    assert to == (target.endpoint,) and probe.target == target.node_id
    relay.receive_message(wire.Ack(cluster=relay.cluster, origin=target.node_id, seq=probe.seq), T0 + 0.01)
    (ack, to), = _sent(relay)
    assert isinstance(ack, wire.Ack) and (ack.origin, ack.seq) == (target.node_id, 77) and to == (asker.endpoint,)
    # without the target's ACK, a NACK goes to the asker at 80 % of the probe timeout
    relay.receive_message(wire.PingReq(cluster=relay.cluster, origin=asker.node_id, seq=78, sender=asker,
                                       target=target), T0 + 1)
    _sent(relay)
    relay.tick(T0 + 1 + 0.8 * 0.5 + 1e-6)
    nacks = [m for m, _ in _sent(relay) if isinstance(m, wire.Nack)]
    assert [(m.seq, m.target) for m in nacks] == [(78, target.node_id)]


def test_updates_fill_the_datagram_and_each_is_retransmitted_a_bounded_number_of_times():
    core = _core(max_packet_bytes=576)
    for port in range(9001, 9101):
        _feed(core, _alive(port, 3))
    limit = 4 * math.ceil(math.log10(101 + 1))
    sends, before = 0, core.stats["sent_ack"]
    while core._queue and sends < 1000:
        _feed(core, sender=9001)
        ack = _sent(core)[-1][0]
        assert len(core.encode(ack)) + wire.IPV4_UDP_OVERHEAD <= 576
        sends += 1
    assert not core._queue and sends > 1
    # every update was sent `limit` times: 100 members' alives, each `limit` times, over `sends` ACKs
    assert core.stats["sent_ack"] - before == sends
    assert 100 * limit / sends > 10  # many updates per datagram


def test_options_are_checked_against_the_protocol_and_named_in_the_error():
    assert _cfg(options={"indirect_checks": 5}).option("indirect_checks") == 5
    assert _cfg().option("suspicion_mult") == 4
    for bad, says in [({"nope": 1}, "options.nope: is not an option"),
                      ({"indirect_checks": 99}, "options.indirect_checks: must be in [0, 16]"),
                      ({"lifeguard_lhm": 1}, "options.lifeguard_lhm: must be true or false"),
                      ({"probe_timeout_ratio": "x"}, "options.probe_timeout_ratio: must be a number")]:
        with pytest.raises(ConfigError) as e:
            _cfg(options=bad)
        assert str(e.value).startswith(says) and "\n" not in str(e.value), str(e.value)
    with pytest.raises(ConfigError) as e:
        NodeConfig(options={"indirect_checks": 2})  # the heartbeat protocol has no options
    assert str(e.value).startswith("options.indirect_checks: is not an option of this protocol")


# ---- a cluster of cores on the simulator ------------------------------------------------------------------------

def _sim(n: int, seed: int = 1, **kw) -> tuple[Simulation, list[str]]:
    sim = Simulation(seed=seed, config=_cfg(**kw))
    return sim, sim.add_nodes(n, seeding="tree", stagger_s=1.0)


def _kinds(sim: Simulation, kind: str, after: float = 0.0) -> list[dict]:
    return [e for e in sim.events if e["kind"] == kind and e["t"] - sim.epoch_s >= after]


def test_a_cluster_joins_through_seeds_and_spreads_and_swaps_metadata():
    sim, names = _sim(48)
    with sim:
        # an alive is sent a bounded number of times (4 * log10(N + 1) per holder), so now and then a member misses
        # one at bring-up (about 0.8 member-pairs expected at N = 48); the prober it does not list gets a
        # push-pull at once, and the periodic push-pull (30 periods) repairs the rest
        for t in range(1, 36):
            sim.run_until(t)
            if sim.membership_converged():
                break
        assert sim.membership_converged(), {k: len(v) for k, v in sim.views().items()}
        version = sim.publish("n17", b"swim config")
        sim.run_until(t + 4)
        assert set(sim.metadata().values()) == {(version, b"swim config")}
        assert _kinds(sim, "metadata_sent")  # by rumor, as the heartbeat protocol spreads it
        assert not _kinds(sim, "member_suspected")  # a quiet network: no suspicion at all
        # SWIM's load does not grow with N: about one PING and one ACK per member per period
        sim.run_until(t + 14)
        stats = [sim.core(n).stats for n in names]
        pings = sum(s["sent_ping"] for s in stats) / len(names) / (t + 14)
        assert 0.6 < pings < 1.6, pings


def test_a_crashed_member_is_suspected_then_removed_everywhere_and_a_restart_is_taken_back():
    sim, names = _sim(32, seed=3)
    with sim:
        sim.run_until(12)
        assert sim.membership_converged()
        sim.crash("n9")
        sim.run_until(40)
        rest = set(names) - {"n9"}
        assert all(set(v) == rest - {k} for k, v in sim.views().items() if k != "n9")
        sus = [e for e in _kinds(sim, "member_suspected", 12) if e["name"] == "n9"]
        removed = [e for e in _kinds(sim, "member_removed", 12)]
        assert sus and min(e["t"] for e in sus) - sim.epoch_s - 12 < 4  # a few periods at most
        assert {e["name"] for e in removed} == {"n9"} and len(removed) == 31
        # nobody else was suspected: no false positive
        assert {e["name"] for e in _kinds(sim, "member_suspected")} == {"n9"}
        sim.restart("n9")
        sim.run_until(55)
        assert sim.membership_converged()


def test_a_paused_member_is_suspected_refutes_and_is_never_removed_with_lifeguard():
    sim, names = _sim(24, seed=5)
    with sim:
        sim.run_until(12)
        sim.pause("n4")
        sim.run_until(16)  # several probe periods, shorter than any suspicion timeout (4 log10(24) s at least)
        sim.resume("n4")
        sim.run_until(30)
        assert sim.membership_converged()
        assert [e["name"] for e in _kinds(sim, "member_suspected") if e["name"] == "n4"]
        assert not _kinds(sim, "member_removed")
        assert _kinds(sim, "refuted") and _kinds(sim, "member_alive")


def test_a_graceful_leave_is_member_left_everywhere_not_a_removal():
    sim, names = _sim(24, seed=7)
    with sim:
        sim.run_until(12)
        sim.leave("n6")
        sim.run_until(20)
        left = _kinds(sim, "member_left")
        assert len({e["node"] for e in left}) == 23 and {e["name"] for e in left} == {"n6"}
        # a peer whose probe of the leaver failed before the news came may suspect it, never remove it
        assert not _kinds(sim, "member_removed")
        assert {e["name"] for e in _kinds(sim, "member_suspected", 12)} <= {"n6"}


def test_a_healed_partition_converges_again():
    sim, names = _sim(16, seed=9)
    with sim:
        sim.run_until(12)
        sim.partition(names[:8], names[8:])
        sim.run_until(60)
        views = sim.views()
        assert all(len(views[n]) == 7 for n in names), {k: len(v) for k, v in views.items()}
        sim.heal()
        sim.run_until(100)
        assert sim.membership_converged(), {k: len(v) for k, v in sim.views().items()}


def test_under_loss_lifeguard_suspects_fewer_live_nodes_than_plain_swim():
    counts = {}
    for lifeguard in (True, False):
        opts = {"lifeguard_lhm": lifeguard, "lifeguard_suspicion": lifeguard, "lifeguard_buddy": lifeguard}
        sim, names = _sim(32, seed=11, options=opts)
        with sim:
            sim.run_until(12)
            sim.set_loss(0.3)
            sim.run_until(72)
            counts[lifeguard] = Counter(e["kind"] for e in sim.events if e["t"] - sim.epoch_s >= 12)
    assert counts[False]["member_removed"] > counts[True]["member_removed"], counts


# ---- node processes and the testbed ----------------------------------------------------------------------------

@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_swim_node_processes_join_list_states_detect_a_kill_take_a_restart_and_a_leave(tmp_path, transport):
    from gossip._local import LocalCluster

    with LocalCluster(size=6, workdir=tmp_path, protocol=transport, cycle_s=0.2, timeout_s=2.0,
                      extra_args=["--membership", "swim", "--option", "suspicion_mult=3"]) as cl:
        everyone = {n.name for n in cl.nodes}
        assert cl.wait_for(lambda: all(n.names() == everyone for n in cl.nodes), 20), \
            {n.name: n.names() for n in cl.nodes}
        listed = cl.nodes[0].get("/list")
        assert {m["state"] for m in listed} == {"alive"} and all(m["incarnation"] > 0 for m in listed)
        v = cl.nodes[4].post("/publish", b"swim over " + transport.encode())
        assert cl.wait_for(lambda: all(n.get("/metadata")["version"] == v["version"] for n in cl.nodes), 15)
        victim = cl.nodes[2]
        cl.kill(victim)
        rest = [n for n in cl.nodes if n is not victim]
        assert cl.wait_for(lambda: all(n.names() == everyone - {victim.name} for n in rest), 20)
        cl.start(victim)  # a new incarnation (its clock in ms), above the one it was removed at
        assert cl.wait_for(lambda: all(n.names() == everyone for n in cl.nodes), 20)
        leaver = cl.nodes[5]
        assert cl.terminate(leaver) == 0  # SIGTERM: dead about itself, spread as a leave
        rest = [n for n in cl.nodes if n is not leaver]
        assert cl.wait_for(lambda: all(n.names() == everyone - {leaver.name} for n in rest), 15)
        events = [e for n in rest for e in cl.events(n)]
    kinds = Counter(e["kind"] for e in events)
    assert kinds["member_suspected"] >= 1 and kinds["member_removed"] >= 4  # the kill: suspected, then removed
    assert {e["name"] for e in events if e["kind"] == "member_removed"} == {victim.name}
    assert {e["name"] for e in events if e["kind"] == "member_left"} == {leaver.name}


SCENARIO = """\
name: swim-crash
seed: 3
nodes: 12
backend: sim
node:
  membership: swim
  cycle_s: 0.5
  timeout_s: 4
  xdp: true
  options: {{suspicion_mult: 3}}
duration_s: 20
recovery_s: 12
timeline:
  - {{at: 3, op: publish, node: n3, data: "config v1"}}
  - {{at: 4, fault: crash, node: n5, until: 16}}
  - {{at: 17, op: publish, node: random}}
checks:
  - membership_converged: {{within_s: 10}}
  - metadata_converged: {{within_s: 8}}
  - no_false_deaths
  - no_false_suspicions
  - no_lost_update
"""


def _run_scenario(tmp_path, backend: str) -> tuple[dict, list[dict]]:
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    path = tmp_path / "swim.yaml"
    path.write_text(SCENARIO.format())
    run = subprocess.run([sys.executable, "-m", "testbed", "run", str(path), "--backend", backend, "--out",
                          str(tmp_path / "run"), "--quiet"], capture_output=True, text=True, timeout=600, cwd=root)
    assert run.returncode in (0, 1), run.stdout + run.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    events = [json.loads(line) for line in (tmp_path / "run" / "events.jsonl").read_text().splitlines()
              if line.strip()]
    return summary, events


def _assert_swim_ran(summary: dict, events: list[dict]) -> None:
    assert summary["passed"], summary["checks"]
    assert {c["name"] for c in summary["checks"] if c["passed"]} == {
        "membership_converged", "metadata_converged", "no_false_deaths", "no_false_suspicions", "no_lost_update"}
    kinds = Counter(e["kind"] for e in events)
    # the crash was found by probing: suspected, then removed; probes and acks, never a heartbeat
    assert kinds["member_suspected"] and kinds["member_removed"]
    assert {e["name"] for e in events if e["kind"] == "member_suspected"} == {"n5"}
    last = {}
    for e in events:
        if e["kind"] in ("stats", "stopped"):
            last[e["node"]] = e
    assert sum(c.get("sent_ping", 0) for c in last.values()) > 0
    assert sum(c.get("sent_heartbeat", 0) for c in last.values()) == 0


def test_swim_runs_a_scenario_with_options_on_the_simulator(tmp_path):
    _assert_swim_ran(*_run_scenario(tmp_path, "sim"))


@pytest.mark.root
@pytest.mark.netns
@pytest.mark.bpf
@pytest.mark.slow
def test_swim_runs_the_same_scenario_on_the_netns_testbed_with_xdp(tmp_path):
    summary, events = _run_scenario(tmp_path, "netns")
    _assert_swim_ran(summary, events)
    # XDP judged none of SWIM's messages, and the nodes took every one: nothing dropped as foreign or malformed
    last = {}
    for e in events:
        if e["kind"] in ("stats", "stopped"):
            last[e["node"]] = e
    assert sum(c.get("dropped_malformed", 0) for c in last.values()) == 0


def test_no_false_suspicions_counts_suspicions_of_live_members_and_excuses_the_crashed(tmp_path):
    """The check on a run with suspicions of a crashed node (excused) and, under heavy loss, of live ones."""
    summary, events = _run_scenario(tmp_path, "sim")
    check = {c["name"]: c for c in summary["checks"]}["no_false_suspicions"]
    assert check["passed"] and check["detail"].startswith("0 false suspicion(s) of ")
    lossy = SCENARIO.replace("  - {{at: 17, op: publish, node: random}}\n",
                             "  - {{at: 17, op: publish, node: random}}\n  - {{at: 1, fault: loss, rate: 0.4, until: 12}}\n")
    lossy = lossy.replace("  - no_false_suspicions\n", "  - no_false_suspicions: {{window_s: 1}}\n")
    from testbed.analysis import load_history
    from testbed.checkers import REGISTRY
    from testbed.scenario import parse
    assert parse(lossy.format(), "x.yaml").checks  # the parameters are accepted by the schema
    history = load_history(tmp_path / "run")
    assert REGISTRY["no_false_suspicions"].fn(history, {"window_s": 1.0}).passed
    # the same history, as if n5 had never crashed: every suspicion of it is now of a live node
    from testbed.analysis import PROC
    n5 = [e for e in history.events if e["kind"] == PROC and e["node"] == "n5"]
    history.faults = [f for f in history.faults if f.kind != "crash"]
    history.events = [e for e in history.events if e not in n5[1:]]  # its first "up" only: live throughout
    got = REGISTRY["no_false_suspicions"].fn(history, {"window_s": 1.0})
    assert got.passed is False and "false suspicion" in got.detail
    heartbeat = REGISTRY["no_false_suspicions"].fn(
        type(history)(events=[e for e in history.events if e["kind"] != "member_suspected"],
                      faults=[], meta={**history.meta, "membership": "heartbeat"}), {})
    assert heartbeat.passed is None


# ---- the transition table ------------------------------------------------------------------------------------

def _view(core: SwimCore, nid: int) -> str:
    if nid == core.node_id:
        return "self"
    states = [m.state for m in core.members() if m.node_id == nid]
    if states:
        return states[0]
    return "removed" if nid in core._dead else "unknown"


def _in(view: str, known: int = 5) -> tuple[SwimCore, int]:
    """A core that knows member 9001 as VIEW at incarnation KNOWN (or, for "self", is 9001 itself)."""
    if view == "self":
        core = _core(9001)
        return core, core.incarnation
    core = _core()
    nid = _ident(9001).node_id
    if view != "unknown":
        _feed(core, _alive(9001, known))
    if view == "suspect":
        _feed(core, wire.Update(kind=wire.SUSPECT, incarnation=known, node=nid, sender=_ident(9100).node_id))
    if view == "removed":
        _feed(core, wire.Update(kind=wire.DEAD, incarnation=known, node=nid, sender=_ident(9100).node_id))
    assert _view(core, nid) == view
    return core, known


def test_the_transition_table_is_complete_and_every_row_is_what_a_core_does():
    from gossip.protocols.swim import TRANSITIONS
    views = ("self", "unknown", "removed", "alive", "suspect")
    expected = {(v, k, r) for v in views for k in (wire.ALIVE, wire.SUSPECT, wire.DEAD)
                for r in ("older", "same", "newer") if v != "unknown" or r == "newer"}
    assert set(TRANSITIONS) == expected  # an unknown member has no incarnation: every update about it is newer
    A = wire.ALIVE
    for (view, kind, rel), (after, action) in TRANSITIONS.items():
        core, known = _in(view)
        nid = _ident(9001).node_id
        inc = known + {"older": -1, "same": 0, "newer": 1}[rel]
        before = dict(core.stats)
        ident = core.identity if view == "self" else _ident(9001)
        sender = _ident(9002 if kind != wire.SUSPECT or action != "confirm" else 9003).node_id
        core.take_events()
        _feed(core, wire.Update(kind=kind, incarnation=inc, node=nid, sender=sender,
                                **({"identity": ident} if kind == wire.ALIVE else {})), sender=9200)
        row = (view, kind, rel)
        assert _view(core, nid) == after, row
        kinds = [e.kind for e in core.take_events()]
        counted = {k for k in core.stats if core.stats[k] != before.get(k, 0)} - {"packets_in", "messages_in"}
        listed = {m.node_id: m.incarnation for m in core.members()}
        if action in ("add", "renew", "refuted", "suspect"):
            assert listed[nid] == inc, row
        elif action in ("old", "stale"):
            assert f"updates_{action}" in counted, row
            assert nid not in listed or listed[nid] == known, row
        elif action == "refute":
            assert core.incarnation == inc + 1 and "refuted" in kinds, row
        elif action == "reassert":
            assert core.incarnation == known and "reasserted" in counted and not kinds, row
            ack = next(m for m, _ in _sent(core) if isinstance(m, wire.Ack))  # the reply to the PING that carried
            assert (ack.updates[0].kind, ack.updates[0].incarnation) == (A, known)  # the stale accusation: the alive
        elif action == "ignore":
            assert core.incarnation == known and not kinds, row
        elif action == "confirm":
            assert "suspicions_confirmed" in counted, row
        elif action == "remove":
            assert "member_removed" in kinds and core._dead[nid] == inc, row
        assert {"added": "member_added", "refuted": "member_alive", "suspect": "member_suspected"}.get(
            action, "none") in kinds + ["none"], row
    # the rules the papers fix, spelled out apart from the table (the loop above checks the table against the code)
    S, D = wire.SUSPECT, wire.DEAD
    assert {TRANSITIONS[("self", k, "older")] for k in (S, D)} == {("self", "reassert")}
    assert TRANSITIONS[("removed", A, "same")] == ("removed", "stale")  # an old alive cannot revive the removed
    assert TRANSITIONS[("removed", A, "newer")] == ("alive", "add")  # a restart (a higher incarnation) can
    assert TRANSITIONS[("suspect", A, "same")] == ("suspect", "old")  # refuting takes a higher incarnation
    assert TRANSITIONS[("suspect", A, "newer")] == ("alive", "refuted")
    assert TRANSITIONS[("alive", S, "same")] == ("suspect", "suspect")
    assert TRANSITIONS[("alive", S, "older")] == ("alive", "old")  # an old suspicion cannot touch a refuted member
    assert TRANSITIONS[("suspect", D, "same")] == ("removed", "remove")
    assert {TRANSITIONS[("self", k, r)][1] for k in (S, D) for r in ("same", "newer")} == {"refute"}
    assert {TRANSITIONS[("self", A, r)] for r in ("older", "same", "newer")} == {("self", "ignore")}


def test_replayed_pings_gossip_and_state_parts_are_dropped_and_a_restart_is_newer():
    core, peer = _core(9000), _core(9001)
    _feed(core, _alive(9001, peer.incarnation))
    peer.tick(T0)  # its first probe: a PING to the only member it will know
    _feed(peer, _alive(9000, core.incarnation))
    peer.tick(T0 + 1.0)
    ping = next(m for m, _ in _sent(peer) if isinstance(m, wire.Ping))
    raw = peer.encode(ping)
    _sent(core)
    core.receive(raw, T0 + 1.0)
    acks = [m for m, _ in _sent(core) if isinstance(m, wire.Ack)]
    assert len(acks) == 1
    for _ in range(3):
        core.receive(raw, T0 + 1.1)  # the same PING again: no second ACK, counted
    assert not [m for m, _ in _sent(core) if isinstance(m, wire.Ack)] and core.stats["dropped_duplicate"] == 3
    gossip = wire.Gossip(cluster=core.cluster, origin=peer.node_id, seq=ping.seq + 1, updates=(_alive(9002, 3),))
    core.receive(peer.encode(gossip), T0 + 1.2)
    core.receive(peer.encode(gossip), T0 + 1.2)
    state = wire.State(cluster=core.cluster, origin=peer.node_id, seq=ping.seq + 2, sender=peer.identity,
                       reply=False, part=0, parts=2)
    core.receive(peer.encode(state), T0 + 1.3)
    core.receive(peer.encode(replace(state, part=1)), T0 + 1.3)  # the other part of the same exchange: taken
    core.receive(peer.encode(state), T0 + 1.3)
    assert core.stats["dropped_duplicate"] == 5 and core.stats["states_received"] == 2
    assert core.replay_sample() == gossip  # what the simulator's replay injection sends again
    # a restarted peer: its clock in us is past every sequence it used before, so its PINGs are taken
    again = create(peer.config, peer.identity, random.Random(7), now=T0 + 5.0)
    _feed(again, _alive(9000, core.incarnation), now=T0 + 5.0)
    again.tick(T0 + 5.0)
    ping2 = next(m for m, _ in _sent(again) if isinstance(m, wire.Ping))
    assert ping2.seq > ping.seq + 2
    core.receive(again.encode(ping2), T0 + 5.0)
    assert [m for m, _ in _sent(core) if isinstance(m, wire.Ack)]


# ---- scale: the member table, the push-pull interval, a warm start ---------------------------------------------

def test_the_push_pull_interval_is_scaled_with_the_cluster_as_memberlists_push_pull_scale():
    from gossip.protocols.swim import push_pull_scale
    assert [push_pull_scale(n) for n in (1, 2, 32, 33, 64, 65, 128, 1000, 10_000)] == [1, 1, 1, 2, 2, 3, 3, 6, 10]

    def cycles_with_push_pull(members: int) -> list[int]:
        core = _core(options={"push_pull_cycles": 2})
        for first in range(0, members, 20):  # from a member (an unlisted sender would get a push-pull)
            _feed(core, *[_alive(10_000 + i, 3) for i in range(first, min(first + 20, members))], sender=10_000)
        out = []
        for c in range(1, 16):
            core.tick(T0 + c - 1)  # the c-th period
            if any(isinstance(m, wire.State) for m, _ in _sent(core)):
                out.append(c)
        return out

    assert cycles_with_push_pull(10) == [2, 4, 6, 8, 10, 12, 14]  # N = 11: every push_pull_cycles periods
    assert cycles_with_push_pull(40) == [2, 6, 10, 14]  # N = 41: x2
    assert cycles_with_push_pull(64) == [2, 8, 14]  # N = 65: x3


def test_a_core_made_from_a_member_list_lists_every_member_alive_at_its_incarnation():
    from gossip._corebase import DurableState, Version
    members = tuple((_ident(p), 100 + p) for p in range(9000, 9010))  # its own entry among them is skipped
    state = DurableState(version=Version(0, 0), data=b"", hlc=0, members=members)
    core = create(_cfg(listen_port=9000), _ident(9000), random.Random(1), now=T0, state=state)
    assert sorted((m.port, m.state, m.incarnation, m.last_seen) for m in core.members()[1:]) == \
        [(p, "alive", 100 + p, T0) for p in range(9001, 9010)]
    assert core.read() == (Version(0, 0), b"") and not core.take_events() and not core.take_sends()
    targets = set()  # the probe order is a round over every member
    for c in range(9):
        core.tick(T0 + c)
        targets |= {m.target for m, _ in _sent(core) if isinstance(m, wire.Ping)}
        core._probe = None  # as if acked: the next period probes the next member
    assert targets == {_ident(p).node_id for p in range(9001, 9010)}
    kept = DurableState(version=Version(7, 1), data=b"v", hlc=9, members=members)  # metadata is restored as ever
    assert create(_cfg(listen_port=9000), _ident(9000), random.Random(1), now=T0, state=kept).read() == \
        (Version(7, 1), b"v")
    with pytest.raises(UsageError, match="64-bit incarnation"):
        DurableState(version=Version(0, 0), data=b"", hlc=0, members=((_ident(1), -1),))
    with pytest.raises(UsageError, match="listed twice"):
        DurableState(version=Version(0, 0), data=b"", hlc=0, members=((_ident(1), 1), (_ident(1), 2)))
    with pytest.raises(UsageError, match="heartbeat protocol cannot start with members"):
        create(NodeConfig(listen_port=9002), _ident(9002), random.Random(1), now=T0, state=state)


def test_the_member_table_keeps_its_columns_together_through_removals():
    core = _core(9000)
    _feed(core, *[_alive(p, p) for p in range(9001, 9041)])
    core.take_events()
    for p in range(9001, 9041, 3):  # removed from the middle: the last slot moves into each hole
        _feed(core, wire.Update(kind=wire.DEAD, incarnation=p, node=_ident(p).node_id, sender=_ident(9100).node_id))
    left = [p for p in range(9001, 9041) if (p - 9001) % 3]
    assert sorted((m.port, m.incarnation, m.name) for m in core.members()[1:]) == [(p, p, f"p{p}") for p in left]
    assert core.live_ids() == {_ident(p).node_id for p in left}
    _feed(core, wire.Update(kind=wire.SUSPECT, incarnation=9002, node=_ident(9002).node_id, sender=1))
    assert {m.port: m.state for m in core.members()[1:]}[9002] == "suspect"


def test_a_warm_started_cluster_is_in_the_steady_state_a_joined_one_reaches():
    """32 nodes that join through seeds and 32 started warm: after the joined cluster has settled, both list every
    member alive at its start incarnation, and per period they send the same probe, gossip and swap messages."""
    def run(warm: bool) -> tuple[dict, dict, dict]:
        with Simulation(seed=4, config=_cfg()) as sim:
            names = sim.add_nodes(32, seeding="tree", stagger_s=1.0, warm=warm)
            sim.run_until(1.5)  # every node started (a joined one at its staggered start)
            start = {n: sim.core(n).incarnation for n in names}
            sim.run_until(25)  # the joined cluster has converged and spent its updates' transmissions
            assert sim.membership_converged()
            before = {n: Counter(sim.core(n).stats) for n in names}
            sim.run_until(45)
            sent = Counter()
            for n in names:
                sent.update(Counter(sim.core(n).stats) - before[n])
            per = {k: round(sent[k] / (32 * 20), 2) for k in ("sent_ping", "sent_ack", "sent_ping_req",
                                                             "sent_gossip", "sent_swap_req")}
            listed = {n: {(m.name, m.state, m.incarnation) for m in sim.core(n).members()[1:]} for n in names}
            started = [e for e in sim.events if e["kind"] == "started"]
            assert all(e.get("warm_members") == (31 if warm else None) for e in started)
            return start, listed, per

    joined_start, joined, joined_per = run(False)
    warm_start, warm, warm_per = run(True)
    assert joined_start == warm_start  # the same incarnations: each node's start
    expect = {n: {(m, "alive", warm_start[m]) for m in warm_start if m != n} for n in warm_start}
    assert joined == expect and warm == expect
    assert joined_per == warm_per == {"sent_ping": 1.0, "sent_ack": 1.0, "sent_ping_req": 0.0, "sent_gossip": 0.0,
                                      "sent_swap_req": 1.0}


def _state_request(core: SwimCore, port: int, *entries: wire.StateEntry, reply: bool = True) -> bytes:
    s = _ident(port)
    own = wire.StateEntry(state=wire.ALIVE, incarnation=5, identity=s)
    return core.encode(wire.State(cluster=core.cluster, origin=s.node_id, seq=next(_SEQ), sender=s, reply=reply,
                                  part=0, parts=1, entries=(own, *entries)))


def test_a_node_answers_at_most_state_replies_push_pulls_a_period_and_still_takes_the_rest():
    seed = _core(9000, options={"state_replies": 2})
    _feed(seed, *(_alive(p) for p in range(9300, 9340)))  # a list worth sending
    seed.take_sends()
    for p in range(9100, 9105):  # five joiners ask in one period
        seed.receive(_state_request(seed, p), T0 + 0.1)
    answered = [t for m, ts in _sent(seed) if isinstance(m, wire.State) for t in ts]
    assert sorted({ep[1] for ep in answered}) == [9100, 9101]  # the first two, each its whole list
    assert seed.stats["state_replies_shed"] == 3
    assert {_ident(p).node_id for p in range(9100, 9105)} <= seed.live_ids()  # every asker is listed
    seed.tick(T0 + 1.0)  # a new period: a new budget
    seed.take_sends()
    seed.receive(_state_request(seed, 9105), T0 + 1.1)
    assert [ts for m, ts in _sent(seed) if isinstance(m, wire.State)] and seed.stats["state_replies_shed"] == 3


def test_a_joined_node_sends_a_seed_it_removed_one_datagram_a_period_and_the_seed_refutes_and_answers():
    node, seed = _core(9000), _core(9001)
    node.set(seed.identity, T0)
    own = wire.Update(kind=wire.ALIVE, incarnation=seed.incarnation, node=seed.node_id, identity=seed.identity)
    _feed(node, own, *(_alive(p) for p in range(9300, 9340)))
    _feed(node, wire.Update(kind=wire.DEAD, incarnation=seed.incarnation, node=seed.node_id, sender=_ident(9300).node_id))
    assert seed.node_id not in node.live_ids()
    node.take_sends()
    for k in range(1, 4):  # each period: one brief STATE to the lost seed, never the 40-member list
        node.tick(T0 + k)
        states = [(m, ts) for m, ts in _sent(node) if isinstance(m, wire.State) and ts == (seed.identity.endpoint,)]
        assert len(states) == 1, states
        msg = states[0][0]
        assert msg.reply and msg.parts == 1
        assert [(e.identity.node_id, e.state) for e in msg.entries] == [(node.node_id, wire.ALIVE),
                                                                        (seed.node_id, wire.DEAD)]
    before = seed.incarnation
    seed.receive(node.encode(msg), T0 + 3.1)
    assert seed.incarnation > before  # it heard it was removed, and refuted
    replies = [m for m, ts in _sent(seed) if isinstance(m, wire.State) and ts == (node.identity.endpoint,)]
    assert replies and not replies[0].reply
    for m in replies:
        node.receive(seed.encode(m), T0 + 3.2)
    assert seed.node_id in node.live_ids()
    assert [m.incarnation for m in node.members() if m.node_id == seed.node_id] == [seed.incarnation]
