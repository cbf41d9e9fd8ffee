"""Real node processes on loopback (no root): convergence, publish, crash and rejoin, wrong secret; UDP and TCP."""

import pytest

from gossip._local import LocalCluster

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
