"""no_false_deaths_under_light_loss: a removal of a live node while only loss <= 10 % was active is a false death;
heavier loss or any other fault overlapping the timeout takes it out of this check's hands."""

from testbed.checkers import REGISTRY
from histories import hist, removed, up

CHECK = REGISTRY["no_false_deaths_under_light_loss"]
NFD = REGISTRY["no_false_deaths"]


def window(name, kind="loss", start=5.0, end=12.0, nodes=()):
    return dict(name=name, kind=kind, start=start, end=end, nodes=nodes)


EV = up(0, "n0", 10) + up(0, "n1", 11) + up(0, "n2", 12) + [removed(10.0, "n0", 11, "n1")]


def test_a_removal_under_light_loss_is_a_false_death_for_both_checks():
    for rate in ("10%", "5%"):
        h = hist(EV, [window(f"loss {rate}")], timeout_s=3.0)
        r = CHECK.fn(h, {})
        assert (r.passed, r.detail) == (False, "1 false death(s) under light loss (1 window(s) of loss <= 10%, 7 s, "
                                               "timeout 3 s): n0 removed n1 at +10.00 s")
        assert NFD.fn(h, {}).passed is False  # a light loss window excuses nothing (testbed.nemesis.loss)


def test_heavier_loss_or_another_fault_answers_for_the_removal():
    h = hist(EV, [window("loss 30%")], timeout_s=3.0)
    assert CHECK.fn(h, {}).passed is None  # no light window at all
    assert NFD.fn(h, {}).passed is True  # 30 % loss still excuses it (scenarios/loss.yaml relies on it)
    for other in (window("loss 30%", start=8.0), window("partition", "partition", start=9.0)):
        r = CHECK.fn(hist(EV, [window("loss 10%"), other], timeout_s=3.0), {})
        assert (r.passed, r.detail) == (True, "no live node was removed under light loss (1 window(s) of loss <= "
                                              "10%, 7 s, timeout 3 s)")


def test_only_removals_of_live_nodes_inside_a_covering_window_count():
    # the window ended before the timeout preceding the removal (10 - 3 = 7 s)
    assert CHECK.fn(hist(EV, [window("loss 10%", start=1.0, end=6.0)], timeout_s=3.0), {}).passed is True
    # a light window on a third node only
    assert CHECK.fn(hist(EV, [window("loss 10%", nodes=("n2",))], timeout_s=3.0), {}).passed is True
    assert CHECK.fn(hist(EV, [window("loss 10%", nodes=("n1",))], timeout_s=3.0), {}).passed is False
    # n1 really was down within the timeout
    down = [{"t": 8.0, "node": "n1", "kind": "proc", "state": "down"}]
    assert CHECK.fn(hist(EV + down, [window("loss 10%")], timeout_s=3.0), {}).passed is True
