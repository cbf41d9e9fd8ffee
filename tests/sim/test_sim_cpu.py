"""The simulator's CPU model: messages queue for a fixed number of shared cores, as on an emulation host."""

from gossip import NodeConfig
from testbed.sim import Simulation, first_times


def spread_time(cpu):
    config = NodeConfig(cycle_s=1.0, timeout_s=5.0)
    with Simulation(seed=3, config=config, cpu=cpu) as sim:
        names = sim.add_nodes(24, seeding="all")
        sim.run_until(3.0)
        version = sim.publish(names[5], b"x")
        t_pub = sim.epoch_s + sim.time_s
        sim.run_until(6.0)
        held = first_times(sim.events, "metadata_adopted", version=version.seq)
        return sorted(t - t_pub for t in held.values())


def test_shared_cores_delay_dissemination_and_more_cores_relieve_it():
    free = spread_time(None)
    one_core = spread_time((1, 0.0003))
    four_cores = spread_time((4, 0.0003))
    assert len(free) == len(one_core) == len(four_cores) == 24
    median = lambda xs: xs[len(xs) // 2]  # noqa: E731
    # 0.3 ms of CPU per message: on one core every hop also waits behind the heartbeat traffic of 24 nodes
    assert median(one_core) > median(four_cores) > median(free)


def test_wakeup_delay_belongs_to_the_receiver():
    from testbed.sim import Constant

    def spread(wakeup):
        config = NodeConfig(cycle_s=1.0, timeout_s=5.0)
        with Simulation(seed=4, config=config, latency=Constant(delay_s=0.0001), wakeup=wakeup) as sim:
            names = sim.add_nodes(16, seeding="all")
            sim.run_until(2.5)
            version = sim.publish(names[0], b"x")
            t_pub = sim.epoch_s + sim.time_s
            sim.run_until(4.0)
            held = first_times(sim.events, "metadata_adopted", version=version.seq)
            return sorted(round((t - t_pub) * 1000, 3) for t in held.values())

    base, slow = spread(None), spread(Constant(delay_s=0.005))
    assert len(base) == len(slow) == 16
    # every hop now costs one 5 ms wake-up of the receiver: first receivers at 5 ms, the next hop at 10 ms
    assert slow[1] >= 5.0 and slow[len(slow) // 2] >= 10.0 and base[len(base) // 2] < 1.0
