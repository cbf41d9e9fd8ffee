"""every_update_delivered: every publish whose origin lived through its spread window is held, or superseded, by
every node read at the end; one whose origin died or paused within it is not due."""

from testbed.checkers import REGISTRY
from histories import adopted, down, final, hist, up

CHECK = REGISTRY["every_update_delivered"]


def cluster():
    return up(0, "n0", 10) + up(0, "n1", 11) + up(0, "n2", 12)


# n0 publishes 100 at 3 s, n2 publishes 200 at 5 s; everyone adopts both
PUBS = [adopted(3.0, "n0", 100, 10, "publish"), adopted(3.1, "n1", 100, 10), adopted(3.1, "n2", 100, 10),
        adopted(5.0, "n2", 200, 12, "publish"), adopted(5.1, "n0", 200, 12), adopted(5.1, "n1", 200, 12)]


def test_every_update_reached_or_superseded():
    r = CHECK.fn(hist(cluster() + PUBS + [final(20, n, 200, 12) for n in ("n0", "n1", "n2")], cycle_s=1.0), {})
    assert (r.passed, r.detail) == (True, "all 2 due update(s) reached or were superseded at every one of the 3 nodes "
                                          "live at the end")


def test_a_node_ending_behind_a_due_update_counts_it_lost():
    # n1 crashed at 10 s and came back empty: it never saw either update again
    ev = cluster() + PUBS + [down(10.0, "n1")] + up(12.0, "n1", 11)
    ev += [final(20, "n0", 200, 12), final(20, "n1", 0, 0), final(20, "n2", 200, 12)]
    r = CHECK.fn(hist(ev, cycle_s=1.0), {})
    assert (r.passed, r.detail) == (False, "2 of 2 due update(s) lost: version 100 from n0 at +3.00 s missing at 1 "
                                           "node(s): n1; version 200 from n2 at +5.00 s missing at 1 node(s): n1")
    # one that holds the older update only has lost the newer one
    ev[-2] = final(20, "n1", 100, 10)
    r = CHECK.fn(hist(ev, cycle_s=1.0), {})
    assert (r.passed, r.detail) == (False, "1 of 2 due update(s) lost: version 200 from n2 at +5.00 s missing at 1 "
                                           "node(s): n1")


def test_an_update_whose_origin_died_within_its_spread_window_is_not_due():
    # n2 publishes 200 and is killed 1.5 s later (spread window 2 cycles of 1 s): nobody got it, and that is no loss
    ev = cluster() + PUBS[:3] + [adopted(5.0, "n2", 200, 12, "publish"), down(6.5, "n2")]
    ev += [final(20, "n0", 100, 10), final(20, "n1", 100, 10)]
    r = CHECK.fn(hist(ev, cycle_s=1.0), {})
    assert (r.passed, r.detail) == (True, "all 1 due update(s) reached or were superseded at every one of the 2 nodes "
                                          "live at the end (1 not due: origin down or paused within 2 s of its "
                                          "publish)")
    # with a shorter spread window (1 cycle) it was due, and it is lost at both
    r = CHECK.fn(hist(ev, cycle_s=1.0), {"spread_cycles": 1})
    assert (r.passed, r.detail) == (False, "1 of 2 due update(s) lost: version 200 from n2 at +5.00 s missing at 2 "
                                           "node(s): n0, n1")


def test_nothing_to_judge_is_unknown():
    assert CHECK.fn(hist(cluster() + [final(20, "n0", 0, 0)]), {}).passed is None
    assert CHECK.fn(hist(cluster() + PUBS), {}).passed is None
