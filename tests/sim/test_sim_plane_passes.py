"""What the simulated heartbeat plane passes to the node, and why, as the testbed's plane counts it (`hbplane`): a
member's heartbeats reach the process until the node has registered it (at its own sync points) and until its
neighbour table holds the link-layer address of every target the kernel draws; the kernel's own copies fill no
neighbour table, the node's sends do, and the table belongs to the namespace, so it outlives a crash."""

from gossip import NodeConfig
from testbed.sim import Simulation

CONFIG = NodeConfig(fanout=3, cycle_s=0.5, timeout_s=3.0, kernel_heartbeats=True)
PASSES = ("passed_not_heartbeat", "passed_unknown_origin", "passed_identity", "passed_bad_mac", "passed_few_targets",
          "passed_no_mac", "passed_too_big")


def cluster() -> tuple[Simulation, list[str]]:
    sim = Simulation(seed=4, config=CONFIG, xdp=True)
    return sim, sim.add_nodes(8, seeding="tree", stagger_s=0.5)


def test_every_datagram_reaching_the_process_is_one_the_plane_passed_under_a_reason():
    sim, names = cluster()
    sim.run_until(12)
    stats = {n: sim.plane_stats(n) for n in names}
    for n in names:
        st = stats[n]
        assert sim.core(n).stats["packets_in"] == st["passed"] == sum(st[k] for k in PASSES), (n, st)
        assert st["members"] == 7 and st["members_without_mac"] == 0, (n, st)
        # a member is the kernel's only once the node registered it: its first heartbeats reached the node
        assert st["passed_unknown_origin"] >= 1 and st["handled"] > 100, (n, st)
    # before the nodes' own sends taught their neighbour tables, drawn targets had no MAC: those heartbeats passed
    assert sum(st["passed_no_mac"] for st in stats.values()) > 0, stats
    # XDP hears of the kernel's accepts only when the node reads them back: the plane drops the echoes meanwhile
    assert all(st["dropped_stale_or_dup"] > 0 for st in stats.values()), stats
    # the core hears of the kernel's takes as a real node's does (kernel_refreshed), and the copies are the
    # kernel's: on the network, not among the process's sends
    cores = [sim.core(n).stats for n in names]
    assert all(c["kernel_refreshed"] > c["accepted_heartbeat"] for c in cores), cores
    assert sim.network_stats()["sent"] > sum(c["packets_out"] for c in cores) + sum(st["handled"] for st in
                                                                                   stats.values())

    # steady: every member registered with its MAC, so every fresh heartbeat is the kernel's
    sim.run_until(20)
    later = {n: sim.plane_stats(n) for n in names}
    for n in names:
        assert later[n]["passed_no_mac"] == stats[n]["passed_no_mac"], (n, stats[n], later[n])
        assert later[n]["passed_unknown_origin"] == stats[n]["passed_unknown_origin"], (n, stats[n], later[n])
        assert later[n]["handled"] > stats[n]["handled"] + 100, (n, stats[n], later[n])


def test_a_restarted_node_registers_its_members_again_but_its_namespace_kept_their_addresses():
    sim, names = cluster()
    sim.run_until(12)
    sim.crash("n3")
    sim.run_until(13)
    sim.restart("n3")
    sim.run_until(20)
    st = sim.plane_stats("n3")  # the new incarnation's plane
    assert st["members"] == 7 and st["passed_unknown_origin"] >= 1, st
    assert st["passed_no_mac"] == 0 and st["handled"] > 50, st
    assert sim.core("n3").stats["packets_in"] == st["passed"], st
