"""``python -m gossip demo``: five nodes on loopback converge, share a published value, and forget a killed node."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from ._local import LocalCluster


def demo(size: int = 5) -> int:
    with tempfile.TemporaryDirectory(prefix="gossip-demo-") as tmp, \
            LocalCluster(size=size, workdir=Path(tmp), cycle_s=0.5, timeout_s=3.0) as cluster:
        t0 = time.monotonic()
        say = lambda msg: print(f"[{time.monotonic() - t0:5.1f}s] {msg}", flush=True)  # noqa: E731
        say(f"started {size} nodes on 127.0.0.1 (UDP, cycle 0.5 s, timeout 3 s), each with one seed")
        everyone = {n.name for n in cluster.nodes}
        ok = cluster.wait_for(lambda: all(n.names() == everyone for n in cluster.nodes), 20)
        say("membership converged: every node lists all " + str(size) if ok else "membership did NOT converge")
        v = cluster.nodes[0].post("/publish", b"hello from n0")
        say(f"n0 published 'hello from n0' as version {v['version']}")
        ok = cluster.wait_for(lambda: all(n.get("/metadata").get("version") == v["version"] for n in cluster.nodes), 10)
        say("every node holds it" if ok else "metadata did NOT reach every node")
        victim = cluster.nodes[-1]
        cluster.kill(victim)
        say(f"killed {victim.name} with SIGKILL")
        rest = [n for n in cluster.nodes if n is not victim]
        ok = cluster.wait_for(lambda: all(victim.name not in n.names() for n in rest), 15)
        say(f"every other node removed {victim.name} after the timeout" if ok else "removal did NOT happen")
        for n in cluster.nodes[:-1]:
            s = n.get("/stats")
            print(f"    {n.name}: in {s['packets_in']:5d}  out {s['packets_out']:5d}  dropped {s['dropped']}")
        return 0
