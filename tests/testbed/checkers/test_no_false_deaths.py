"""no_false_deaths: a removal of a node that was live and reachable is a false death, unless a fault window that
overlaps it excuses it (the fault modules say which ones do)."""

from testbed import analysis as A
from testbed.checkers import REGISTRY
from histories import removed, up

CHECK = REGISTRY["no_false_deaths"]


def hist(events, faults=(), **meta):
    return A.History(events=sorted(events, key=lambda e: e["t"]),
                     faults=[A.FaultWindow(**f) for f in faults], meta={"t0": 0.0, "timeout_s": 3.0, **meta})


def three_nodes():
    return up(0, "n0", 10) + up(0, "n1", 11) + up(0, "n2", 12)


FALSE = three_nodes() + [removed(9.0, "n0", 11, "n1")]  # n1 was live and nobody cut it off


def test_a_removal_of_a_live_reachable_node_is_a_false_death():
    r = CHECK.fn(hist(FALSE), {})
    assert (r.passed, r.detail) == (False, "1 false death(s): n0 removed n1 at +9.00 s")


def test_a_removal_of_a_node_that_was_down_is_no_false_death():
    ev = three_nodes() + [{"t": 5.0, "node": "n1", "kind": "proc", "state": "down"}, removed(9.0, "n0", 11, "n1")]
    r = CHECK.fn(hist(ev), {})
    assert (r.passed, r.detail) == (True, "all 1 removals were of nodes that were down, paused or cut off by a fault")
    # nor one by an observer whose own heartbeats were stopped (nobody sends it rumors any more)
    stopped = [{"t": 5.0, "node": "n0", "kind": "proc", "state": "heartbeats_off"}]
    assert CHECK.fn(hist(FALSE + stopped), {}).passed is True
    # a node down for less than the timeout before the removal was not live throughout it: excused too
    assert CHECK.fn(hist(FALSE + [{"t": 7.0, "node": "n1", "kind": "proc", "state": "paused"}]), {}).passed is True


def test_fault_windows_excuse_what_their_modules_say():
    window = lambda kind, start=7.0, end=12.0, nodes=(): dict(name=kind, kind=kind, start=start, end=end,  # noqa
                                                              nodes=nodes)
    for kind in ("crash", "pause", "churn", "partition", "loss", "delay"):
        assert CHECK.fn(hist(FALSE, [window(kind)]), {}).passed is True, kind  # covering every node
    assert CHECK.fn(hist(FALSE, [window("loss", nodes=("n1",))]), {}).passed is True  # of the removed node
    assert CHECK.fn(hist(FALSE, [window("loss", nodes=("n0",))]), {}).passed is True  # of the observer
    assert CHECK.fn(hist(FALSE, [window("loss", nodes=("n2",))]), {}).passed is False  # of someone else
    # the window must overlap the timeout before the removal (9.0 - 3.0 .. 9.0)
    assert CHECK.fn(hist(FALSE, [window("loss", start=1.0, end=5.0)]), {}).passed is False
    assert CHECK.fn(hist(FALSE, [window("loss", start=1.0, end=6.5)]), {}).passed is True
    # injections are instants that excuse nothing; neither does a window of a kind no fault module knows
    assert CHECK.fn(hist(FALSE, [window("inject")]), {}).passed is False
    assert CHECK.fn(hist(FALSE, [window("meteor")]), {}).passed is False


def test_the_timeout_comes_from_the_run():
    # with a 10-s timeout n1 was not live throughout it (it came up at 0): the removal is excused
    assert CHECK.fn(hist(FALSE, timeout_s=10.0), {}).passed is True


def test_nothing_to_judge():
    assert CHECK.fn(hist([]), {}).passed is None
    r = CHECK.fn(hist(three_nodes()), {})
    assert (r.passed, r.detail) == (True, "no node removed a member")
