"""no_lost_update: every node read at the end holds the newest published version."""

from testbed import analysis as A
from testbed.checkers import REGISTRY

CHECK = REGISTRY["no_lost_update"]

PUBLISHES = [
    {"t": 3.0, "node": "n0", "kind": "metadata_adopted", "version": 100, "origin": 10, "via": "publish", "size": 1},
    {"t": 3.2, "node": "n1", "kind": "metadata_adopted", "version": 100, "origin": 10, "via": "rumor", "size": 1},
    {"t": 3.5, "node": "n2", "kind": "metadata_adopted", "version": 200, "origin": 12, "via": "publish", "size": 1},
]


def hist(events):
    return A.History(events=sorted(events, key=lambda e: e["t"]), faults=[], meta={"t0": 0.0})


def finals(*held):
    return [{"t": 9.0, "node": f"n{i}", "kind": "final", "version": v, "origin": o} for i, (v, o) in enumerate(held)]


def test_a_node_ending_on_an_older_version_is_a_lost_update():
    r = CHECK.fn(hist(PUBLISHES + finals((200, 12), (100, 10), (200, 12))), {})
    assert (r.passed, r.detail) == (False, "1 node(s) ended on an older version than the newest published 200: n1")
    # the same version number from another origin is another version
    r = CHECK.fn(hist(PUBLISHES + finals((200, 12), (200, 11), (200, 12))), {})
    assert r.passed is False


def test_every_node_on_the_newest():
    r = CHECK.fn(hist(PUBLISHES + finals((200, 12), (200, 12), (200, 12))), {})
    assert (r.passed, r.detail) == (True, "2 publish(es); all 3 live nodes ended on the newest, version 200")


def test_nothing_to_judge_is_unknown():
    r = CHECK.fn(hist(finals((0, 0))), {})
    assert (r.passed, r.detail) == (None, "nothing was published")
    r = CHECK.fn(hist(PUBLISHES), {})
    assert (r.passed, r.detail) == (None, "no final reads")
