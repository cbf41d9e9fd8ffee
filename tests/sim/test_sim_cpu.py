"""The simulator's host models: messages queue for shared cores (CPU), and a delay can belong to the receiving
process (wake-up), as on an emulation host."""

import pytest

from gossip import NodeConfig
from testbed.sim import Constant, Empirical, KindCost, SimError, Simulation, first_times


def spread_ms(nodes: int, seed: int, **models) -> list[float]:
    """Milliseconds from one publish to each node's first holding of it, all nodes knowing each other."""
    config = NodeConfig(cycle_s=1.0, timeout_s=5.0)
    with Simulation(seed=seed, config=config, **models) as sim:
        names = sim.add_nodes(nodes, seeding="all")
        sim.run_until(2.5)
        version = sim.publish(names[5], b"x")
        t_pub = sim.epoch_s + sim.time_s
        sim.run_until(5.5)
        held = first_times(sim.events, "metadata_adopted", version=version.seq)
        return sorted(round((t - t_pub) * 1000, 3) for t in held.values())


def median(xs):
    return xs[len(xs) // 2]


def test_shared_cores_delay_dissemination_and_more_cores_relieve_it():
    free = spread_ms(24, 3)
    one_core = spread_ms(24, 3, cpu=(1, 0.0003))
    four_cores = spread_ms(24, 3, cpu=(4, 0.0003))
    assert len(free) == len(one_core) == len(four_cores) == 24
    # 0.3 ms of CPU per message: on one core every hop also waits behind the heartbeat traffic of 24 nodes
    assert median(one_core) > median(four_cores) > median(free)


def test_wakeup_delay_belongs_to_the_receiver():
    fast = Constant(delay_s=0.0001)
    base = spread_ms(16, 4, latency=fast)
    slow = spread_ms(16, 4, latency=fast, wakeup=Constant(delay_s=0.005))
    assert len(base) == len(slow) == 16
    # every hop now costs one 5 ms wake-up of the receiver: first receivers at 5 ms, the next hop at 10 ms
    assert slow[1] >= 5.0 and median(slow) >= 10.0 and median(base) < 1.0


def test_each_node_serves_its_messages_one_at_a_time():
    """service_s: a process handles what reaches it serially, so a node that many copies reach at once is slower
    for the last of them, while the other nodes' work does not delay it (no shared cores)."""
    fast = Constant(delay_s=0.0001)
    base = spread_ms(16, 4, latency=fast)
    served = spread_ms(16, 4, latency=fast, service_s=0.002)
    assert len(base) == len(served) == 16
    # every hop now costs at least one 2 ms service at the receiver (the publisher's own adoption is at 0)
    assert served[1] >= 2.0 and median(served) >= 4.0 and median(base) < 1.0
    with pytest.raises(SimError, match="service_s"):
        spread_ms(4, 1, service_s=-0.001)


def test_simulated_timers_are_punctual_and_say_so():
    """The stats record's timer_late_s is 0 in the simulator: its timers fire exactly when asked (the testbed's
    real ones are late by a host-dependent wait, which the host model draws from)."""
    config = NodeConfig(cycle_s=0.5, timeout_s=3.0)
    with Simulation(seed=1, config=config) as sim:
        sim.add_nodes(4, seeding="all")
        sim.run_until(3.0)
        late = [e["timer_late_s"] for e in sim.events if e["kind"] == "stats" and "timer_late_s" in e]
    assert len(late) >= 4 * 4 and set(late) == {0.0}


def test_a_forwarded_copy_leaves_after_the_receivers_handling_time():
    """handling_s: what a receiver forwards leaves that long after it starts on the message; the publisher's own
    sends are not delayed, so the first hop is the wire alone and every later hop adds the handling."""
    fast = Constant(delay_s=0.0001)
    handled = spread_ms(16, 4, latency=fast, handling_s=0.002)
    assert len(handled) == 16
    assert handled[1] < 1.0 and median(handled) >= 2.0
    with pytest.raises(SimError, match="handling_s"):
        spread_ms(4, 1, handling_s=2.0)
    with pytest.raises(SimError, match="handling_s"):
        spread_ms(4, 1, handling_s="2 ms")


def test_measured_handling_is_drawn_per_message_not_averaged():
    """handling_s as a model (what the mirror gives: the run's measured handling times): each message draws its
    own, 1 ms or 9 ms here. The first forwarded copies then land at 1 ms plus the wire, which their 5-ms mean
    never gives, and the parallel copies race, so the fast draws carry the rumor: it reaches everyone sooner than
    with every hop held to the mean."""
    fast = Constant(delay_s=0.0001)
    drawn = spread_ms(16, 4, latency=fast, handling_s=Empirical.of([0.001, 0.009]))
    mean = spread_ms(16, 4, latency=fast, handling_s=0.005)
    assert len(drawn) == len(mean) == 16
    forwarded = [t for t in drawn if t > 0.5]  # past the publisher's own sends (0.1 ms)
    assert min(forwarded) == pytest.approx(1.2, abs=0.05)  # wire + 1 ms + wire
    assert min(t for t in mean if t > 0.5) == pytest.approx(5.2, abs=0.05)
    assert max(drawn) < max(mean)


def test_by_kind_each_message_holds_a_core_for_its_kinds_cost():
    """cpu=(cores, KindCost): what the core takes (a heartbeat accepted, a rumor adopted) holds a core for TAKEN,
    anything else for OTHER, and the core starts on a message as soon as a core is free, in arrival order. On one
    core, 1 ms per message taken, or per duplicate, makes a rumor's copies wait behind the heartbeat traffic; on 64
    cores nothing waits, and the spread is the one without a CPU model."""
    fast = Constant(delay_s=0.0001)
    cheap, costly = Constant(delay_s=0.00001), Constant(delay_s=0.001)
    neither = spread_ms(16, 4, latency=fast, cpu=(1, KindCost(taken=cheap, other=cheap)))
    taken = spread_ms(16, 4, latency=fast, cpu=(1, KindCost(taken=costly, other=cheap)))
    other = spread_ms(16, 4, latency=fast, cpu=(1, KindCost(taken=cheap, other=costly)))
    wide = spread_ms(16, 4, latency=fast, cpu=(64, KindCost(taken=costly, other=costly)))
    base = spread_ms(16, 4, latency=fast)
    assert len(neither) == len(taken) == len(other) == len(wide) == len(base) == 16
    assert median(taken) > median(neither) + 0.2 and median(other) > median(neither) + 0.2
    assert wide == base
    with pytest.raises(SimError, match="cpu"):
        spread_ms(4, 1, cpu=(1, "1 ms"))


def test_a_rumor_adopted_draws_its_own_handling_and_cpu():
    """KindCost.rumor: a rumor the core adopts leaves after the rumors' handling time (and holds a core for their
    CPU), not the heartbeats'; without it, a rumor draws what a heartbeat taken does."""
    fast = Constant(delay_s=0.0001)
    hb, md = Constant(delay_s=0.0005), Constant(delay_s=0.003)
    same = spread_ms(16, 4, latency=fast, handling_s=KindCost(taken=hb, other=hb))
    own = spread_ms(16, 4, latency=fast, handling_s=KindCost(taken=hb, other=hb, rumor=md))
    assert len(same) == len(own) == 16
    forwarded = [t for t in own if t > 0.5]
    assert min(forwarded) == pytest.approx(3.2, abs=0.05)  # wire + the rumor's 3 ms + wire
    assert min(t for t in same if t > 0.5) < 0.75  # wire + 0.5 ms + wire
    slow = spread_ms(16, 4, latency=fast, cpu=(1, KindCost(taken=hb, other=Constant(delay_s=0.00001), rumor=md)))
    quick = spread_ms(16, 4, latency=fast, cpu=(1, KindCost(taken=hb, other=Constant(delay_s=0.00001))))
    assert median(slow) > median(quick)
