"""Builders of small hand-written histories for the check tests (records as nodes and the interpreter write them)."""

from testbed import analysis as A


def hist(events, faults=(), stats=None, **meta):
    return A.History(events=sorted(events, key=lambda e: e["t"]), faults=[A.FaultWindow(**f) for f in faults],
                     meta={"t0": 0.0, **meta}, stats=stats or {})


def up(t, node, nid):
    return [{"t": t, "node": node, "kind": "proc", "state": "up"},
            {"t": t + 0.01, "node": node, "kind": "started", "node_id": nid}]


def down(t, node):
    return {"t": t, "node": node, "kind": "proc", "state": "down"}


def added(t, node, nid):
    return {"t": t, "node": node, "kind": "member_added", "node_id": nid, "name": "", "addr": "x", "port": 1}


def removed(t, node, nid, name):
    return {"t": t, "node": node, "kind": "member_removed", "node_id": nid, "name": name, "reason": "timeout"}


def adopted(t, node, version, origin=10, via="rumor"):
    return {"t": t, "node": node, "kind": "metadata_adopted", "version": version, "origin": origin, "via": via,
            "size": 1}


def final(t, node, version, origin=10):
    return {"t": t, "node": node, "kind": "final", "version": version, "origin": origin}


def stats(t, node, rss_bytes, open_fds):
    return {"t": t, "node": node, "kind": "stats", "cpu_s": 0.0, "rss_bytes": rss_bytes, "open_fds": open_fds}
