"""bad_packets_dropped: each injected packet counted under its expected drop reason, from the run's counters in
history.stats (userspace ``dropped`` and ``xdp.dropped`` alike), and no node died."""

import json

from testbed import analysis as A
from testbed.checkers import REGISTRY

CHECK = REGISTRY["bad_packets_dropped"]

INJECTED = [{"t": 2.0, "node": "n1", "kind": "injected", "count": 50, "expect": "bad_mac"},
            {"t": 2.5, "node": "n2", "kind": "injected", "count": 10, "expect": "duplicate|stale"}]


def hist(events, stats, **meta):
    return A.History(events=events, faults=[], meta={"t0": 0.0, **meta}, stats=stats)


def stats(bad_mac):
    return {"nodes": {"n1": {"dropped": {"bad_mac": bad_mac}},
                      "n2": {"dropped": {}, "xdp": {"passed": 3, "dropped": {"stale": 4, "duplicate": 6}}}}}


def test_every_injected_packet_counted_under_its_reason_userspace_or_xdp():
    r = CHECK.fn(hist(INJECTED, stats(50)), {})
    assert (r.passed, r.detail) == (True, "bad_mac: injected 50, dropped 50; duplicate|stale: injected 10, "
                                          "dropped 10; every node survived")


def test_a_packet_not_counted_fails():
    r = CHECK.fn(hist(INJECTED, stats(49)), {})
    assert (r.passed, r.detail) == (False, "bad_mac: injected 50, dropped 49")
    # reasons add up across nodes and across userspace and XDP
    split = stats(20)
    split["nodes"]["n2"]["xdp"]["dropped"]["bad_mac"] = 30
    assert CHECK.fn(hist(INJECTED, split), {}).passed is True


def test_a_node_that_died_fails():
    r = CHECK.fn(hist(INJECTED, stats(50), unexpected_exits=["n2", "n10", "n2"]), {})
    assert (r.passed, r.detail) == (False, "node(s) died: n2, n10")


def test_the_counters_are_read_from_the_run_directory_and_summarize_may_override_them(tmp_path):
    (tmp_path / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in INJECTED))
    (tmp_path / "stats.json").write_text(json.dumps(stats(49)))
    h = A.load_history(tmp_path)
    assert h.stats == stats(49)
    assert CHECK.fn(h, {}).passed is False
    checks = A.summarize(h, {"bad_packets_dropped": {}}, stats(50))["checks"]
    assert checks == [{"name": "bad_packets_dropped", "passed": True,
                       "detail": "bad_mac: injected 50, dropped 50; duplicate|stale: injected 10, dropped 10; "
                                 "every node survived"}]
    assert h.stats == stats(49)  # the history itself is left alone


def test_nothing_injected_is_unknown():
    r = CHECK.fn(hist([], stats(0)), {})
    assert (r.passed, r.detail) == (None, "no packets were injected")


def test_the_heartbeat_planes_drops_count_for_a_replay_and_for_nothing_narrower():
    # the plane drops a registered member's old heartbeat in the kernel under one reason, stale_or_dup
    s = stats(50)
    s["nodes"]["n2"]["xdp"]["dropped"] = {"duplicate": 4}
    s["nodes"]["n2"]["hbplane"] = {"handled": 100, "dropped_stale_or_dup": 6}
    assert CHECK.fn(hist(INJECTED, s), {}).passed is True  # duplicate|stale: 4 by XDP + 6 by the plane
    narrow = [dict(INJECTED[1], expect="duplicate")]
    r = CHECK.fn(hist(narrow, s), {})
    assert (r.passed, r.detail) == (False, "duplicate: injected 10, dropped 4")
