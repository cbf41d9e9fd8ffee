"""The simulator's host models: messages queue for shared cores (CPU), and a delay can belong to the receiving
process (wake-up), as on an emulation host."""

from gossip import NodeConfig
from testbed.sim import Constant, Simulation, first_times


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
