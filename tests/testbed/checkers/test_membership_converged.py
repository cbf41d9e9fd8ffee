"""membership_converged on hand-built histories: the time from which views stay right to the end, not the first
time they were right."""

import random

from testbed import analysis as A
from testbed.checkers import REGISTRY
from histories import added, down, hist, removed, up

CHECK = REGISTRY["membership_converged"]


IDS = {"n0": 10, "n1": 11, "n2": 12}


def three_nodes():
    """n0..n2 up at 0; every view complete at 1.12 (the last member_added)."""
    ev = up(0, "n0", 10) + up(0, "n1", 11) + up(0, "n2", 12)
    for n in IDS:
        for other, nid in IDS.items():
            if other != n:
                ev.append(added(1.0 + nid / 100, n, nid))
    return ev


def test_views_right_then_broken_then_right_count_from_the_later_time():
    # recovery begins at 2.0 with every view right; n0 drops n1 at 3.0 and takes it back at 6.0
    ev = three_nodes() + [removed(3.0, "n0", 11, "n1"), added(6.0, "n0", 11), {"t": 10.0, "node": "n0",
                                                                                 "kind": "stats"}]
    h = hist(ev, [dict(name="loss", kind="loss", start=0.5, end=2.0)])
    r = CHECK.fn(h, {"within_s": 3.0})
    assert r.passed is False
    assert r.detail == ("every live node's view equalled the live set from 4.00 s after recovery began to the end "
                        "(limit 3 s); first right at +0.00 s, broke again at +1.00 s, right from +4.00 s to the end")
    assert CHECK.fn(h, {"within_s": 5.0}).passed is True
    assert A.converged_at(h, 2.0) == 6.0 and A.first_converged_at(h, 2.0) == 2.0
    # the limit defaults to the scenario's recovery time
    assert CHECK.fn(hist(ev, [dict(name="loss", kind="loss", start=0.5, end=2.0)], recovery_s=3.0), {}).passed is False


def test_a_crashed_node_must_leave_every_view():
    ev = three_nodes() + [down(5.0, "n2"), removed(9.0, "n0", 12, "n2"), removed(9.5, "n1", 12, "n2")]
    h = hist(ev, [dict(name="crash n2", kind="crash", start=4.0, end=5.0, nodes=("n2",))])
    r = CHECK.fn(h, {"within_s": 4.0})
    assert (r.passed, r.detail) == (False, "every live node's view equalled the live set from 4.50 s after recovery "
                                           "began to the end (limit 4 s)")
    assert CHECK.fn(h, {"within_s": 5.0}).passed is True


def test_views_wrong_at_the_end_fail_and_name_the_nodes():
    ev = three_nodes() + [down(5.0, "n2"), removed(9.0, "n0", 12, "n2")]  # n1 still lists n2
    h = hist(ev, [dict(name="crash n2", kind="crash", start=4.0, end=5.0, nodes=("n2",))])
    r = CHECK.fn(h, {"within_s": 30.0})
    assert (r.passed, r.detail) == (False, "1 live node(s) ended without the right view: n1")
    # right once after recovery began, then broken for good: the story is told
    ev = three_nodes() + [removed(6.0, "n0", 11, "n1")]
    r = CHECK.fn(hist(ev, [dict(name="loss", kind="loss", start=0.5, end=2.0)]), {"within_s": 30.0})
    assert (r.passed, r.detail) == (False, "1 live node(s) ended without the right view: n0 "
                                           "(first right at +0.00 s, broke again at +4.00 s)")


def test_nothing_to_judge_is_unknown():
    assert CHECK.fn(hist([]), {"within_s": 1.0}).passed is None
    everyone_down = three_nodes() + [down(5.0, n) for n in IDS]
    r = CHECK.fn(hist(everyone_down), {"within_s": 1.0})
    assert (r.passed, r.detail) == (None, "no node was live at the end of the run")


def test_summary_reports_stable_and_first_convergence_per_window():
    ev = three_nodes() + [removed(3.0, "n0", 11, "n1"), added(6.0, "n0", 11), removed(7.0, "n0", 11, "n1"),
                          added(8.0, "n0", 11)]
    h = hist(ev, [dict(name="loss", kind="loss", start=0.5, end=2.0)])
    m = A.summarize(h, {"membership_converged": {"within_s": 5.0}})["membership"]
    assert m == {"windows": [{"fault": "loss", "kind": "loss", "end": 2.0, "converged_at": 8.0,
                              "seconds_after_end": 6.0, "first_converged_at": 2.0, "breaks": 2}],
                 "converged_at": 8.0, "seconds_after_recovery": 6.0, "first_converged_at": 2.0,
                 "first_seconds_after_recovery": 0.0, "breaks": 2}


def _brute_force(h, after):
    """The definition, evaluated at every change time: the earliest T >= after right at every change to the end."""
    live, views = A.Liveness(h), A.Views(h)
    times = [after] + sorted({t for t in views.change_times() + live.change_times() if t > after})
    right = []
    for t in times:
        ls = live.live_set(t)
        right.append(bool(ls) and all(views.view(n, t) == ls for n in ls))
    if not right or not right[-1]:
        return None, next((t for t, ok in zip(times, right) if ok), None)
    i = len(right) - 1
    while i > 0 and right[i - 1]:
        i -= 1
    return times[i], next(t for t, ok in zip(times, right) if ok)


def random_history(rng, names):
    """Full views at 0.5, then random adds, removes and process changes, biased towards views that are right
    often enough to break and recover."""
    ev, t = [], 0.5
    for i, n in enumerate(names):
        if rng.random() < 0.85:  # the others' first record is a random one below (it may say "down")
            ev += up(0.0, n, i)
            ev += [added(t, n, j) for j, other in enumerate(names) if other != n]
    for _ in range(rng.randrange(5, 30)):
        t = round(t + rng.choice([0.0, 0.1, 0.5]), 2)  # ties: records of one instant are judged together
        n, other = rng.choice(names), rng.randrange(len(names) + 1)  # an id no node started with, too
        k = rng.random()
        if k < 0.55:
            ev.append(added(t, n, other if other < len(names) else rng.randrange(len(names))))
        elif k < 0.75:
            ev.append(removed(t, n, other, f"n{other}"))
        else:
            state = rng.choice(["up", "down", "paused", "resumed", "heartbeats_off", "heartbeats_on"])
            ev.append({"t": t, "node": n, "kind": "proc", "state": state})
            if state == "up":
                ev.append({"t": t, "node": n, "kind": "started", "node_id": names.index(n)})
    return hist(ev), t


def test_the_single_pass_agrees_with_the_definition_on_random_histories():
    rng = random.Random(7)
    seen = {"stable": 0, "never": 0, "broke": 0}
    for _ in range(400):
        h, t_end = random_history(rng, ["n0", "n1", "n2"])
        tl = A.membership_timeline(h)
        for after in (0.0, 0.6, t_end / 2, t_end):
            assert (tl.stable_from(after), tl.first(after)) == _brute_force(h, after)
        seen["stable" if tl.stable_from(0.0) is not None else "never"] += 1
        seen["broke"] += bool(tl.breaks(0.0))
    assert min(seen.values()) >= 20, seen  # the histories exercise every outcome
