"""SWIM under any schedule: a Hypothesis state machine drives four real `SwimCore`s through deliveries, losses,
delays, replays of anything ever sent, forged datagrams and restarts, with an injected clock.

What must hold after every step:

- no node ever lists a member that only forged datagrams (a wrong key, a foreign cluster, flipped bits) spoke of;
- no node accepts stale state: the incarnation it lists a member at never goes down, and a member it removed at
  incarnation d comes back only above d (a replayed alive of a removed or restarted member changes nothing);
- a live, reachable node that answers probes is never confirmed dead: node R's datagrams, both ways, are never lost
  and are delivered before the clock moves on (steps of at most half a period), while every other datagram may be
  lost, delayed or replayed, and any node may suspect R at any time (as if its probe had failed).

Nothing is mocked: the cores get signed datagrams through their decoder, as on a real node.
"""

from __future__ import annotations

import random

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from gossip import NodeConfig
from gossip import _wire as wire
from gossip.protocols import create
from gossip.protocols.swim import SwimCore

T0 = 1000.0
PORTS = (9000, 9001, 9002, 9003)
R = 9000  # the reachable node
INTRUDER = wire.Identity(name="intruder", addr="127.0.0.1", port=9666)
# suspicions expire after 2-4 periods, so removals (and replays of the removed) happen within a short schedule
CFG = dict(membership="swim", cycle_s=1.0, timeout_s=5.0, secrets=(b"k1",), fanout=2,
           options={"suspicion_mult": 2, "suspicion_max_mult": 2})


def _core(port: int, now: float, seed: int) -> SwimCore:
    cfg = NodeConfig(listen_port=port, **CFG)
    core = create(cfg, wire.Identity(name=f"n{port}", addr="127.0.0.1", port=port), random.Random(seed), now=now)
    for p in PORTS:
        core.set(wire.Identity(name=f"n{p}", addr="127.0.0.1", port=p), now)
    return core


class SwimSchedules(RuleBasedStateMachine):
    @initialize(seed=st.integers(0, 2**16))
    def start(self, seed):
        self.now = T0
        self.rng = random.Random(seed)
        self.cores = {p: _core(p, T0, seed + p) for p in PORTS}
        self.pending: list[tuple[int, int, bytes]] = []  # (src port, dst port, datagram)
        self.history: list[bytes] = []
        self.highest: dict[tuple[int, int], int] = {}  # (observer, member) -> highest incarnation listed
        self.removed_at: dict[tuple[int, int], int] = {}  # (observer, member) -> incarnation removed at
        self.r_removals = 0
        self._collect()

    # ---- the network -----------------------------------------------------------------------------------------

    def _collect(self) -> None:
        for port, core in self.cores.items():
            for s in core.take_sends():
                for _addr, dst in s.targets:
                    if dst in self.cores:
                        self.pending.append((port, dst, s.payload))
                        if len(self.history) < 400:
                            self.history.append(s.payload)
            for e in core.take_events():
                if e.kind == "member_removed":
                    if e.node_id == self.cores[R].node_id:
                        self.r_removals += 1
                    self.removed_at[(port, e.node_id)] = core._dead[e.node_id]

    def _deliver(self, i: int) -> None:
        src, dst, data = self.pending.pop(i)
        self.cores[dst].receive(data, self.now, src=f"127.0.0.1:{src}")
        self._collect()

    def _flush_reachable(self) -> None:
        """R's datagrams, and what they cause, are delivered before the clock moves."""
        for _ in range(10_000):
            mine = [i for i, (s, d, _) in enumerate(self.pending) if R in (s, d)]
            if not mine:
                return
            self._deliver(mine[0])
        raise AssertionError("R's datagrams never settle")

    @precondition(lambda self: self.pending)
    @rule(i=st.integers(0, 10_000))
    def deliver(self, i):
        self._deliver(i % len(self.pending))

    @precondition(lambda self: any(R not in (s, d) for s, d, _ in self.pending))
    @rule(i=st.integers(0, 10_000))
    def lose(self, i):
        lossy = [j for j, (s, d, _) in enumerate(self.pending) if R not in (s, d)]
        self.pending.pop(lossy[i % len(lossy)])

    @rule(at=st.sampled_from(PORTS[1:]))
    def accuse(self, at):  # AT's probe of R failed (for a cause outside the model): AT suspects R, and R refutes
        core, r = self.cores[at], self.cores[R]
        if r.node_id not in core.live_ids():
            return
        suspect = wire.Update(kind=wire.SUSPECT, incarnation=r.incarnation, node=r.node_id, sender=core.node_id)
        core._apply(suspect, self.now)
        self._collect()

    @rule(dt=st.floats(0.01, 0.5))
    def advance(self, dt):  # what is pending and not R's is delayed by this much
        self._flush_reachable()
        self.now += dt
        for core in self.cores.values():
            core.tick(self.now)
        self._collect()

    @precondition(lambda self: self.history)
    @rule(i=st.integers(0, 10_000), to=st.sampled_from(PORTS))
    def replay(self, i, to):
        self.cores[to].receive(self.history[i % len(self.history)], self.now)
        self._collect()

    @rule(how=st.sampled_from(["wrong_key", "foreign", "bitflip"]), to=st.sampled_from(PORTS),
          bit=st.integers(0, 10_000))
    def forge(self, how, to, bit):
        core = self.cores[to]
        alive = wire.Update(kind=wire.ALIVE, incarnation=10**12, node=INTRUDER.node_id, identity=INTRUDER)
        cluster = wire.cluster_id("elsewhere") if how == "foreign" else core.cluster
        ping = wire.Ping(cluster=cluster, origin=INTRUDER.node_id, seq=1, sender=INTRUDER, target=core.node_id,
                         updates=(alive,))
        data = bytearray(wire.encode(ping, key=b"k2" if how == "wrong_key" else b"k1"))
        if how == "bitflip":
            data[(bit // 8) % len(data)] ^= 1 << (bit % 8)  # under the right key and cluster: any single bit wrong
        before = core.stats["packets_in"]
        core.receive(bytes(data), self.now)
        assert core.stats["packets_in"] == before + 1
        self._collect()

    @precondition(lambda self: self.now > T0 + 2)
    @rule(port=st.sampled_from(PORTS[1:]))
    def restart(self, port):  # a crashed process comes back: a new incarnation (its clock in ms), seeds again
        self.pending = [(s, d, x) for s, d, x in self.pending if d != port]
        self.cores[port] = _core(port, self.now, self.rng.randrange(2**16))
        for key in [k for k in (*self.highest, *self.removed_at) if k[0] == port]:  # what it knew is gone
            self.highest.pop(key, None)
            self.removed_at.pop(key, None)
        self._collect()

    # ---- what must hold --------------------------------------------------------------------------------------

    @invariant()
    def nothing_forged_or_stale_is_listed(self):
        for port, core in self.cores.items():
            listed = {m.node_id: m.incarnation for m in core.members() if m.node_id != core.node_id}
            assert INTRUDER.node_id not in listed, f"n{port} lists the intruder"
            for nid, inc in listed.items():
                key = (port, nid)
                assert inc >= self.highest.get(key, -1), f"n{port} lists {nid} at an older incarnation {inc}"
                self.highest[key] = inc
                if key in self.removed_at:
                    assert inc > self.removed_at[key], f"n{port} took back {nid} at a stale incarnation {inc}"

    @invariant()
    def the_reachable_node_is_never_removed(self):
        assert self.r_removals == 0


SwimSchedules.TestCase.settings = settings(max_examples=100, stateful_step_count=200, deadline=None,
                                           suppress_health_check=[HealthCheck.too_slow, HealthCheck.large_base_example, HealthCheck.data_too_large])
test_swim_under_any_schedule = SwimSchedules.TestCase
