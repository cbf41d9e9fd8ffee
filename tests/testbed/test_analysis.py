"""Checks and curves are pure functions of a history: here, small hand-written histories with known answers."""

import pytest

from testbed import analysis as A


def hist(events, faults=(), **meta):
    return A.History(events=sorted(events, key=lambda e: e["t"]),
                     faults=[A.FaultWindow(**f) for f in faults], meta={"t0": 0.0, **meta})


def started(t, node, nid):
    return [{"t": t, "node": node, "kind": "proc", "state": "up"},
            {"t": t + 0.01, "node": node, "kind": "started", "node_id": nid}]


def added(t, node, nid):
    return {"t": t, "node": node, "kind": "member_added", "node_id": nid, "name": "", "addr": "x", "port": 1}


def removed(t, node, nid, name):
    return {"t": t, "node": node, "kind": "member_removed", "node_id": nid, "name": name, "reason": "timeout"}


def three_nodes():
    ev = started(0, "n0", 10) + started(0, "n1", 11) + started(0, "n2", 12)
    for n in ("n0", "n1", "n2"):
        for other, nid in (("n0", 10), ("n1", 11), ("n2", 12)):
            if other != n:
                ev.append(added(1.0 + nid / 100, n, nid))
    return ev


def test_convergence_time_and_curve():
    h = hist(three_nodes() + [{"t": 2.0, "node": "n0", "kind": "stats"}])
    assert A.converged_at(h, 0.0) == 1.12  # the last member_added completes every view
    curve = dict(A.convergence_curve(h, step_s=0.5))
    assert curve[0.5] == 0.0 and curve[1.0] == 0.0 and curve[1.5] == 1.0


def test_a_crashed_node_must_leave_every_view():
    ev = three_nodes() + [{"t": 5.0, "node": "n2", "kind": "proc", "state": "down"},
                          removed(9.0, "n0", 12, "n2"), removed(9.5, "n1", 12, "n2")]
    h = hist(ev, [dict(name="crash n2", kind="crash", start=4.0, end=5.0, nodes=("n2",))])
    assert A.converged_at(h, 5.0) == 9.5
    tl = A.membership_timeline(h)
    assert tl.changes == ((1.12, True), (5.0, False), (9.5, True)) and tl.live_at_end == 2 and tl.failing == ()


def test_a_leave_removes_the_leaver_from_views_and_the_teardown_after_the_final_reads_does_not_count():
    left = [{"t": 3.0, "node": "n2", "kind": "proc", "state": "down"}] + [
        {"t": 2.9, "node": n, "kind": "member_left", "node_id": 12, "name": "n2", "seq": 7} for n in ("n0", "n1")]
    finals = [{"t": 4.0, "node": n, "kind": "final", "members": ["n0", "n1"]} for n in ("n0", "n1")]
    teardown = [{"t": 4.5, "node": "n1", "kind": "member_left", "node_id": 10, "name": "n0", "seq": 8}]
    h = hist(three_nodes() + left + finals + teardown)
    assert A.Views(h).view("n0", 3.5) == {"n0", "n1"}  # member_left removes, as a removal does
    tl = A.membership_timeline(h)
    assert tl.changes == ((1.12, True), (2.9, False), (3.0, True)) and tl.failing == ()  # n1 leaving at 4.5: teardown
    assert A.Views(h).view("n1", 5.0) == {"n0", "n1"}


def test_convergence_is_when_views_stayed_right_not_when_they_first_were():
    ev = three_nodes() + [removed(3.0, "n0", 11, "n1"), added(6.0, "n0", 11)]
    h = hist(ev)
    assert (A.first_converged_at(h, 2.0), A.converged_at(h, 2.0)) == (2.0, 6.0)
    assert A.membership_timeline(h).breaks(2.0) == [3.0]
    # wrong at the end: never converged, whatever it was before
    h = hist(three_nodes() + [removed(3.0, "n0", 11, "n1")])
    assert (A.first_converged_at(h, 2.0), A.converged_at(h, 2.0)) == (2.0, None)
    assert A.membership_timeline(h).failing == ("n0",)


def test_rumor_coverage_counts_newer_versions():
    ev = three_nodes() + [
        {"t": 3.0, "node": "n0", "kind": "metadata_adopted", "version": 100, "origin": 10, "via": "publish", "size": 1},
        {"t": 3.2, "node": "n1", "kind": "metadata_adopted", "version": 100, "origin": 10, "via": "rumor", "size": 1},
        {"t": 3.5, "node": "n2", "kind": "metadata_adopted", "version": 200, "origin": 12, "via": "publish", "size": 1},
    ]
    rs = A.rumors(hist(ev))
    first = next(r for r in rs if r.version == 100)
    assert [f for _, f in first.coverage] == [0.3333, 0.6667, 1.0]  # n2 holds a newer version: covered
    assert (first.t50, first.t100) == (0.2, 0.5)


def test_summarize_runs_the_registered_checks_by_name():
    from testbed.checkers import REGISTRY
    assert list(REGISTRY) == ["membership_converged", "metadata_converged", "no_false_deaths",
                              "bad_packets_dropped", "no_lost_update", "every_update_delivered",
                              "no_false_deaths_under_light_loss", "resources_flat", "no_false_suspicions"]
    h = hist(three_nodes() + [{"t": 2.0, "node": "n0", "kind": "stats"}], recovery_s=5.0)
    s = A.summarize(h, {"no_lost_update": {}, "membership_converged": {"within_s": 1.0}})
    assert s["checks"] == [
        {"name": "no_lost_update", "passed": None, "detail": "nothing was published"},
        {"name": "membership_converged", "passed": False,
         "detail": "every live node's view equalled the live set from 1.12 s after recovery began to the end "
                   "(limit 1 s)"}]
    assert s["passed"] is False  # unknown is not a failure; a failure is
    assert A.summarize(h, {"no_lost_update": {}})["passed"] is True
    with pytest.raises(ValueError, match="unknown check 'no_such_check'"):
        A.summarize(h, {"no_such_check": {}})


def test_ks_distance():
    assert A.ks_distance([1, 2, 3], [1, 2, 3]) == 0.0
    assert A.ks_distance([1, 2], [10, 20]) == 1.0
    assert abs(A.ks_distance([1, 2, 3, 4], [3, 4, 5, 6]) - 0.5) < 1e-9


def test_kaplan_meier_uses_censored_samples():
    # observed 1, 3; censored at 2 (only "longer than 2" is known); observed 4
    times, mass, rest = A.kaplan_meier([(1.0, True), (2.0, False), (3.0, True), (4.0, True)])
    assert times == [1.0, 3.0, 4.0]
    # S(1) = 3/4; at 3 two are at risk: S(3) = 3/4 * 1/2; at 4 one is at risk: S(4) = 0
    assert mass == [0.25, 0.375, 0.375] and rest == 0.0
    # a censored sample beyond every observed one leaves mass the data cannot place
    _, mass, rest = A.kaplan_meier([(1.0, True), (5.0, False)])
    assert mass == [0.5] and rest == 0.5


def test_rumor_hops_rebuild_who_took_the_version_from_whom():
    ev = []
    for i, node in enumerate(("a", "b", "c")):
        ev.append({"t": 0.0, "node": node, "kind": "started", "node_id": i, "addr": f"10.0.0.{i}", "port": 7})
    adopt = lambda t, node, via, src: {"t": t, "node": node, "kind": "metadata_adopted", "version": 5,  # noqa
                                       "origin": 0, "via": via, "size": 1, "src": src}
    sent = lambda t, node, targets: {"t": t, "node": node, "kind": "metadata_sent", "version": 5,  # noqa
                                     "origin": 0, "targets": targets}
    ev += [adopt(1.0, "a", "publish", ""), sent(1.0, "a", ["10.0.0.1:7", "10.0.0.2:7"]),
           adopt(1.004, "b", "rumor", "10.0.0.0:7"), sent(1.004, "b", ["10.0.0.2:7"]),
           adopt(1.006, "c", "rumor", "10.0.0.1:7")]  # c took b's copy; a's copy to c lost the race
    hops = {(h.sender, h.receiver): h for h in A.rumor_hops(hist(ev))}
    assert set(hops) == {("a", "b"), ("a", "c"), ("b", "c")}
    assert hops["a", "b"].won and hops["b", "c"].won and not hops["a", "c"].won
    assert abs(hops["a", "c"].delay_s - 0.006) < 1e-9 and abs(hops["b", "c"].delay_s - 0.002) < 1e-9


def test_cpu_per_packet_counts_kernel_drops_only_per_arrival(tmp_path):
    import json
    ev = [{"t": 0.0, "node": "a", "kind": "started", "node_id": 1, "addr": "10.0.0.1", "port": 7},
          {"t": 1.0, "node": "a", "kind": "stats", "packets_in": 100, "cpu_s": 0.5},
          {"t": 1.0, "node": "a", "kind": "xdp_stats", "passed": 100, "dropped": {"duplicate": 50}},
          {"t": 5.0, "node": "a", "kind": "stats", "packets_in": 1100, "cpu_s": 0.7},
          {"t": 5.0, "node": "a", "kind": "xdp_stats", "passed": 1100, "dropped": {"duplicate": 850, "stale": 200}}]
    (tmp_path / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in ev))
    (tmp_path / "faults.jsonl").write_text("")
    # start-up (the first record's 0.5 s) is left out: 0.2 s over 1000 datagrams received, 2000 arrived
    assert abs(A.cpu_per_packet_s(tmp_path, "userspace") - 0.2 / 1000) < 1e-12
    assert abs(A.cpu_per_packet_s(tmp_path) - 0.2 / 2000) < 1e-12


def test_load_history_reads_records_back_sorted_and_skips_a_torn_line(tmp_path):
    import json
    ev = [{"t": 2.0, "node": "n1", "kind": "member_added", "node_id": 7, "name": "", "addr": "10.0.0.1",
           "port": 7946, "nested": {"a": [1, "x"]}},
          {"t": 1.0, "node": "n0", "kind": "proc", "state": "up", "unicode": "é", "addr": "10.0.0.1"}]
    (tmp_path / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in ev) + "\n" + '{"t": 3.0, "no')
    h = A.load_history(tmp_path)
    assert h.events == [ev[1], ev[0]]  # sorted by time, the torn last line dropped, values unchanged
    assert h.faults == [] and h.meta == {} and h.stats == {}  # no stats.json: no counters
    # a string repeated across records is one object, not one per record (what keeps a large run small)
    first, second = h.events
    assert second["addr"] is first["addr"] and list(second)[2] is list(first)[2]  # a value, and the key "kind"


def test_the_marginal_cpu_per_datagram_leaves_the_fixed_work_of_a_cycle_out():
    """Each interval costs 12 ms of fixed work plus 150 us per datagram: the slope is the per-datagram cost, while
    the average (what cpu_per_packet_s charges) would also spread the fixed work over the datagrams."""
    ev, cpu = [], {"n0": 0.0, "n1": 0.0}
    for k, pkts in enumerate((10, 40, 25, 80, 5, 60)):
        for node, scale in (("n0", 1), ("n1", 2)):
            n = pkts * scale
            cpu[node] += 0.012 + 0.000150 * n
            ev.append({"t": float(k), "node": node, "kind": "stats", "cpu_s": cpu[node],
                       "packets_in": sum(p * scale for p in (10, 40, 25, 80, 5, 60)[:k + 1])})
    h = hist(ev)
    assert A.cpu_marginal_per_packet_s(h) == pytest.approx(0.000150, rel=1e-6)
    with pytest.raises(ValueError, match="too few"):
        A.cpu_marginal_per_packet_s(hist(ev[:2]))


def test_direct_heartbeat_hops_are_the_recorded_delays_themselves():
    h = hist([{"t": 1.0, "node": "n0", "kind": "stats", "hb_hop_ms": [0.2, 1.5, 3.0]},
              {"t": 2.0, "node": "n1", "kind": "stats", "hb_hop_ms": [10.5]},
              {"t": 2.0, "node": "n2", "kind": "stats"}])
    q = A.direct_heartbeat_hops_ms(h, quantiles=4)
    assert q == [0.2, 1.5, 3.0, 10.5]  # sequences are µs: nothing to correct (they were truncated ms once)
    assert A.direct_heartbeat_hop_samples_ms(h) == [0.2, 1.5, 3.0, 10.5]
    assert A.direct_heartbeat_hops_ms(hist([{"t": 1.0, "node": "n0", "kind": "stats"}])) == []


def test_the_ks_critical_value_shrinks_with_the_samples():
    from testbed.experiments.validate import ks_critical

    assert ks_critical(100, 100, alpha=0.05) == pytest.approx(1.3581 * (2 / 100) ** 0.5, rel=1e-3)
    assert ks_critical(640, 3200) < ks_critical(160, 800) < ks_critical(160, 160)
    with pytest.raises(ValueError):
        ks_critical(0, 10)


def stats_every(node, period, until, per_s, start=0.0):
    """Stats records of NODE once a PERIOD from START, its counter growing PER_S a second."""
    t, out = start, []
    while t <= until + 1e-9:
        out.append({"t": t, "node": node, "kind": "stats", "packets_out": round(per_s * (t - start))})
        t += period
    return out


def test_a_rate_divides_by_the_bracketing_records_span_not_the_window():
    # records at 0, 1, 2, ...; a window [0.5, 2.5] is bracketed by 0 and 3: three seconds of growth, not two
    stats = stats_every("n0", 1.0, 5.0, 10) + stats_every("n1", 1.0, 5.0, 20)
    grown, node_s = A.counter_growth(stats, 0.5, 2.5, ("packets_out",))
    assert grown["packets_out"] == 90 and node_s == pytest.approx(6.0)
    assert grown["packets_out"] / node_s == pytest.approx(15.0)  # the nodes' mean rate, exactly
    assert 90 / 2 / 2.0 == 22.5  # what dividing by the window said: half again too much


def test_a_rate_counts_only_nodes_up_throughout_and_a_count_counts_every_node():
    stats = stats_every("n0", 1.0, 5.0, 10) + stats_every("late", 1.0, 5.0, 10, start=2.0) \
        + stats_every("gone", 1.0, 1.0, 10)
    grown, node_s = A.counter_growth(stats, 0.5, 3.5, ("packets_out",))
    assert grown["packets_out"] == 40 and node_s == pytest.approx(4.0)  # n0 only
    # what the window cost: n0's 40, the late node's 20 (from its start), and the gone node's 10 up to its last record
    assert A.sent_between(stats, 0.5, 3.5, ("packets_out",)) == 70
    assert A.sent_between(stats, 1.5, 3.5, ("packets_out",)) == 30 + 20  # the gone node ended before it began


PROC_STAT = """\
cpu  {user} 20 {system} {idle} 30 0 {softirq} 5 7 0
cpu0 1 2 3 4 5 6 7 8 9 10
intr 12345 0 0
"""


def host_record(t, user, system, idle, softirq, **bpf):
    text = PROC_STAT.format(user=user, system=system, idle=idle, softirq=softirq)
    return {"t": t, "node": "host", "kind": A.HOST_STATS, **A.proc_stat_cpu(text, ticks_per_s=100), **bpf}


def test_proc_stat_is_read_as_seconds_per_field_without_the_guest_time():
    rec = A.proc_stat_cpu(PROC_STAT.format(user=150, system=50, idle=1000, softirq=25), ticks_per_s=100)
    assert rec == {"cpu_user_s": 1.5, "cpu_nice_s": 0.2, "cpu_system_s": 0.5, "cpu_idle_s": 10.0,
                   "cpu_iowait_s": 0.3, "cpu_irq_s": 0.0, "cpu_softirq_s": 0.25, "cpu_steal_s": 0.05}
    with pytest.raises(ValueError):
        A.proc_stat_cpu("intr 1 2 3\n", ticks_per_s=100)


def test_host_busy_cpu_counts_softirq_and_divides_by_the_bracketing_records_span():
    # two cores, records once a second: 0.6 cores user, 0.2 system, 0.4 softirq, the rest idle (0.8)
    recs = [host_record(t, user=60 * t, system=20 * t, idle=80 * t, softirq=40 * t) for t in range(6)]
    cpu = A.host_cpu(recs, 1.5, 3.5)  # bracketed by the records at 1 and 4
    assert cpu["busy"] == pytest.approx(1.2) and cpu["softirq"] == pytest.approx(0.4)
    assert cpu["user"] == pytest.approx(0.6) and cpu["idle"] == pytest.approx(0.8) and cpu["nice"] == 0
    assert A.host_cpu(recs, 1.5, 9.0) is None  # no record after the window


def test_bpf_run_time_per_run_and_per_second_from_the_host_records():
    recs = [host_record(t, 0, 0, 0, 0, bpf_xdp_run_ns=int(500 * 4000 * t), bpf_xdp_runs=4000 * t,
                        bpf_hbplane_run_ns=0, bpf_hbplane_runs=0) for t in range(4)]
    run = A.bpf_run(recs, 0.5, 2.5)
    assert run["xdp"] == pytest.approx({"runs_per_s": 4000, "ns_per_run": 500, "cores": 0.002})
    assert run["hbplane"] == {"runs_per_s": 0, "ns_per_run": 0.0, "cores": 0}  # bpf stats were off

def test_a_node_that_restarted_inside_the_window_is_not_up_throughout_it():
    # crashed at 2.5 s, back at 3.5 s: its counter starts again, and its bracket [2, 4] holds a second it was down
    crashed = [r for r in stats_every("c", 1.0, 2.0, 10)] + stats_every("c", 1.0, 5.0, 10, start=3.5)
    stats = stats_every("n0", 1.0, 5.0, 10) + crashed
    grown, node_s = A.counter_growth(stats, 2.1, 3.9, ("packets_out",))
    assert grown["packets_out"] == 20 and node_s == pytest.approx(2.0)  # n0 alone: 10 a second
    # counted: n0's 20, and the restarted node's 10 from its restart to its record at 4.5 (what it sent between
    # its record at 2 and the crash is not seen)
    assert A.sent_between(stats, 2.1, 3.9, ("packets_out",)) == 30
