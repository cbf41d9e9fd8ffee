"""`UdpTransport.rx_stamp`: the kernel's receive time of the datagram being delivered (SIOCGSTAMPNS), on loopback:
the node's wait samples (``hb_wait_ms``, ``md_wait_ms``) are the time from it to the process starting on a
datagram, so it must be that datagram's, before the callback ran, and on the wall clock the node stamps with."""

import asyncio
import socket
import time

from gossip._transport import UdpTransport


def test_the_stamp_is_the_delivered_datagrams_kernel_receipt_on_the_wall_clock():
    async def main():
        got = []
        holder = {}

        def on_datagram(data, src):
            got.append((data, holder["t"].rx_stamp(), time.time()))

        t = holder["t"] = await UdpTransport.open("127.0.0.1", 0, on_datagram, lambda r, d: None)
        port = t.socket.getsockname()[1]
        out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            for i in range(5):
                before = time.time()
                out.sendto(b"x%d" % i, ("127.0.0.1", port))
                await asyncio.sleep(0.02)  # the datagram waits in the socket while the loop sleeps
                got.append(("sent", before))
        finally:
            out.close()
            await t.close()
        return got

    events = asyncio.run(main())
    stamped = [(d, s, at) for d, s, at in (e for e in events if len(e) == 3)]
    sent = [e[1] for e in events if len(e) == 2]
    assert [d for d, _, _ in stamped] == [b"x%d" % i for i in range(5)]
    # the first call turns stamping on (it may find none); every later datagram has its own stamp, taken after it
    # was sent and before the callback saw it
    for (data, stamp, at), before in list(zip(stamped, sent))[1:]:
        assert stamp is not None and before - 0.001 <= stamp <= at, (data, before, stamp, at)


def test_a_node_samples_its_wake_up_only_from_datagrams_that_found_it_idle():
    """``wake_ms`` (the simulator's ``wakeups`` source): the wait of a datagram that reached the node while it was
    idle. Datagrams sent one at a time, each after the node has handled the last, all found it idle; of a burst that
    is in the socket before the node reads any, only the first did (the others waited behind it)."""
    from gossip import NodeConfig
    from gossip._local import free_port
    from gossip._node import Node

    async def main():
        node = Node(NodeConfig(listen_port=free_port(), cycle_s=60.0, timeout_s=180.0), name="w0")
        await node.join()
        out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            where = ("127.0.0.1", node.config.listen_port)
            out.sendto(b"\x00", where)  # the first call turns the socket's stamping on: it may find no stamp
            await asyncio.sleep(0.05)
            node._stats_extra()  # empties the samples
            for _ in range(6):
                out.sendto(b"not gossip", where)
                await asyncio.sleep(0.03)
            spaced = node._stats_extra().get("wake_ms", [])
            for _ in range(10):  # the loop does not run between these: all ten wait in the socket
                out.sendto(b"not gossip either", where)
            await asyncio.sleep(0.1)
            burst = node._stats_extra().get("wake_ms", [])
            return spaced, burst
        finally:
            out.close()
            await node.close(leave=False)

    spaced, burst = asyncio.run(main())
    assert len(spaced) == 6 and all(0.0 <= w < 30.0 for w in spaced), spaced
    assert len(burst) == 1, burst


def test_the_samples_are_drawn_evenly_over_the_interval_not_from_its_start():
    """About MAX_HANDLE_SAMPLES of each kind per record, each event of an interval as likely to be measured as any
    other: the first ones after a record all fall at one phase of the node's cycle (the record is written at its
    timer step), so keeping the first sixteen would measure that phase only."""
    import random

    from gossip import NodeConfig
    from gossip._node import MAX_HANDLE_SAMPLES, MAX_SAMPLES_KEPT, Node

    node = Node(NodeConfig(listen_port=7946, cycle_s=1.0, timeout_s=5.0), name="s0")
    node._sampler = random.Random(4)
    assert all(node._pick("took", "hb_handle_ms") for _ in range(100))  # no rate known yet: every event
    node._seen["took"] = 10 * MAX_HANDLE_SAMPLES  # an interval with ten times as many events as samples
    node._seen["first"] = MAX_HANDLE_SAMPLES  # and one with no more than that
    node._stats_extra()
    assert node._seen["took"] == 0 and node._rate["first"] == 1.0
    picks = [node._pick("took", "hb_handle_ms") for _ in range(20 * MAX_HANDLE_SAMPLES)]  # two intervals' worth
    early, late = sum(picks[:len(picks) // 2]), sum(picks[len(picks) // 2:])
    assert 0.6 * MAX_HANDLE_SAMPLES < early < 1.5 * MAX_HANDLE_SAMPLES and 0.6 * MAX_HANDLE_SAMPLES < late
    for _ in range(5 * MAX_HANDLE_SAMPLES):  # a burst beyond the rate: bounded
        node._sample("hb_handle_ms", 0.001)
    # and once a field is full nothing is measured for it (no syscall or clock read for a sample it would drop),
    # while an event that also feeds a field with room still is
    node._rate["took"] = 1.0
    assert not node._pick("took", "hb_handle_ms") and node._pick("took", "hb_handle_ms", "hb_wait_ms")
    assert node._stats_extra()["hb_handle_ms"] == [1.0] * MAX_SAMPLES_KEPT == [1.0] * (2 * MAX_HANDLE_SAMPLES)


def test_a_node_measures_the_cpu_of_every_rumor_it_adopts_and_of_no_duplicate():
    """``md_cpu_ms`` (the simulator's CPU cost of a rumor with ``cost: kind``): the process's CPU time on each
    rumor it adopted, one sample per adoption, each at most the handling's wall time plus a little; a copy of a
    version it already holds is a duplicate, not a rumor adopted, and gives none."""
    from gossip import NodeConfig
    from gossip._local import free_port
    from gossip._node import Node

    async def main():
        a = Node(NodeConfig(listen_port=free_port(), cycle_s=0.2, timeout_s=5.0, fanout=1), name="a")
        await a.join()
        b = Node(NodeConfig(listen_port=free_port(), cycle_s=0.2, timeout_s=5.0, fanout=1), name="b",
                 seeds=(("127.0.0.1", a.config.listen_port),), stats_every_cycle=False)  # the test reads them
        await b.join()
        try:
            for _ in range(50):  # until each lists the other
                if len(a.get()) == 2 and len(b.get()) == 2:
                    break
                await asyncio.sleep(0.05)
            b._stats_extra()  # empties the samples
            for i in range(4):
                a.publish(b"v%d" % i)
                await asyncio.sleep(0.1)
            got = b._stats_extra()
            return got, b.core.stats["adopted_rumor"]
        finally:
            await b.close(leave=False)
            await a.close(leave=False)

    got, adopted = asyncio.run(main())
    cpu, handle = got.get("md_cpu_ms", []), got.get("md_handle_ms", [])
    assert adopted >= 1 and 1 <= len(cpu) <= adopted, (got, adopted)
    assert all(0.0 < x < 1000.0 for x in cpu)
    assert sorted(cpu)[len(cpu) // 2] <= sorted(handle)[len(handle) // 2] + 0.5
