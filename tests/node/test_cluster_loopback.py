"""Real node processes on loopback (no root): convergence, publish, crash and rejoin, wrong secret, a graceful
leave on SIGTERM, seeds not listed until heard from; UDP and TCP."""

import pytest

from gossip._local import LocalCluster, free_port

pytestmark = pytest.mark.parametrize("protocol", ["udp", "tcp"])


def test_eight_nodes_converge_share_metadata_forget_the_dead_and_take_them_back(tmp_path, protocol):
    with LocalCluster(size=8, workdir=tmp_path, protocol=protocol, cycle_s=0.2, timeout_s=1.5) as cl:
        everyone = {n.name for n in cl.nodes}
        assert cl.wait_for(lambda: all(n.names() == everyone for n in cl.nodes), 20), \
            {n.name: n.names() for n in cl.nodes}

        v = cl.nodes[5].post("/publish", b"first")
        assert cl.wait_for(lambda: all(n.get("/metadata")["version"] == v["version"] for n in cl.nodes), 10)
        assert {n.get("/metadata")["data"] for n in cl.nodes} == {"first"}

        victim = cl.nodes[3]
        cl.kill(victim)
        rest = [n for n in cl.nodes if n is not victim]
        assert cl.wait_for(lambda: all(n.names() == everyone - {victim.name} for n in rest), 10)

        # while it is down the cluster moves on; restarted, it rejoins and catches up by anti-entropy swaps
        v2 = rest[0].post("/publish", b"second")
        assert cl.wait_for(lambda: all(n.get("/metadata")["version"] == v2["version"] for n in rest), 10)
        cl.start(victim)
        assert cl.wait_for(lambda: all(n.names() == everyone for n in cl.nodes), 20)
        assert cl.wait_for(lambda: victim.get("/metadata") == rest[0].get("/metadata"), 10)
        assert victim.get("/metadata")["data"] == "second"


def test_node_with_wrong_secret_never_enters_any_list(tmp_path, protocol):
    with LocalCluster(size=4, workdir=tmp_path, protocol=protocol, cycle_s=0.2, timeout_s=1.5) as cl:
        intruder = cl.add("intruder", seeds=[f"127.0.0.1:{cl.nodes[0].port}"], secret="not-the-secret")
        everyone = {n.name for n in cl.nodes[:4]}
        assert cl.wait_for(lambda: all(n.names() == everyone for n in cl.nodes[:4]), 20)
        intruder.post("/publish", b"evil")
        cl.wait_for(lambda: False, 2.0)  # let it keep trying for ten cycles
        for n in cl.nodes[:4]:
            assert "intruder" not in n.names()
            assert n.get("/metadata").get("data") != "evil"
        assert sum(n.get("/stats")["dropped"].get("bad_mac", 0) for n in cl.nodes[:4]) > 0
        assert intruder.names() == {"intruder"} | ({"n0"} & intruder.names())


def test_sigterm_makes_a_node_leave_and_the_others_drop_it_long_before_the_timeout(tmp_path, protocol):
    # a timeout far longer than the waits below: a node that disappears from every list did not time out
    with LocalCluster(size=5, workdir=tmp_path, protocol=protocol, cycle_s=0.2, timeout_s=60.0) as cl:
        everyone = {n.name for n in cl.nodes}
        assert cl.wait_for(lambda: all(n.names() == everyone for n in cl.nodes), 20)
        leaver = cl.nodes[3]
        rest = [n for n in cl.nodes if n is not leaver]
        assert cl.terminate(leaver) == 0
        assert cl.wait_for(lambda: all(n.names() == everyone - {leaver.name} for n in rest), 10), \
            {n.name: n.names() for n in rest}
        (sent,) = [e for e in cl.events(leaver) if e["kind"] == "leave_sent"]
        assert 1 <= len(sent["targets"]) <= 3  # a rumor: up to fanout peers, the others hear it from them
        assert cl.events(leaver)[-1]["kind"] == "stopped"
        for n in rest:
            about = [e for e in cl.events(n) if e.get("name") == leaver.name]
            assert [e["kind"] for e in about if e["kind"] in ("member_left", "member_removed")] == ["member_left"]
            assert all(e["seq"] == sent["seq"] for e in about if e["kind"] == "member_left")
        # SIGINT is the same leave
        second = rest[0]
        second.proc.send_signal(2)
        assert second.proc.wait(timeout=10) == 0
        assert cl.wait_for(lambda: all(second.name not in n.names() for n in rest[1:]), 10)
        # a node that left comes back under the same address: its new heartbeats outrank its leave
        cl.start(leaver)
        assert cl.wait_for(lambda: all(leaver.name in n.names() for n in rest[1:]), 20)


def test_a_seed_that_never_answered_is_not_listed(tmp_path, protocol):
    with LocalCluster(size=1, workdir=tmp_path, protocol=protocol, cycle_s=0.2, timeout_s=1.5) as cl:
        silent = free_port()  # nobody listens there
        lonely = cl.add("lonely", seeds=[f"127.0.0.1:{silent}"])
        assert cl.wait_for(lambda: lonely.get("/stats")["counters"].get("heartbeats_sent", 0) >= 5, 10)
        assert [m["name"] for m in lonely.get("/list")] == ["lonely"]  # contacted every cycle, never listed
        assert not [e for e in cl.events(lonely) if e["kind"] == "member_added"]
        # a seed that answers is listed, under its own name, once its heartbeat has arrived
        cl.nodes[0].post("/set", ('{"addr": "127.0.0.1", "port": %d}' % lonely.port).encode())
        assert cl.wait_for(lambda: lonely.names() == {"lonely", "n0"}, 10)
