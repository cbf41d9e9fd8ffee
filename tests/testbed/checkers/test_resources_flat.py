"""resources_flat: a least-squares slope of every process lifetime's RSS and descriptors after warm-up, under a
bound; a restarted node is a new lifetime, and a lifetime too short to show a trend is not judged."""

from testbed.checkers import REGISTRY
from testbed.checkers.resources_flat import slope_per_min
from histories import hist, stats, up

CHECK = REGISTRY["resources_flat"]
MIB = 2**20


def series(node, rss_kib_per_min=0.0, fds_per_min=0.0, start=0.0, end=300.0, base_fds=13):
    out = []
    t = start + 1.0
    while t <= end:
        minutes = (t - start) / 60
        out.append(stats(t, node, int(20 * MIB + rss_kib_per_min * 1024 * minutes), base_fds + int(fds_per_min * minutes)))
        t += 1.0
    return out


def test_slope_per_min():
    assert slope_per_min([(0, 1.0), (60, 2.0), (120, 3.0)]) == 1.0
    assert slope_per_min([(5, 7.0), (5, 9.0)]) == 0.0


def test_flat_nodes_pass():
    ev = up(0, "n0", 10) + up(0, "n1", 11) + series("n0") + series("n1", rss_kib_per_min=10)
    r = CHECK.fn(hist(ev), {})
    assert r.passed is True
    assert r.detail == ("2 process lifetime(s) on 2 node(s): RSS slope max 10.0 KiB/min (n1), median 5.0; "
                        "descriptors max 0.00/min (n1), median 0.00 (limits 64 KiB/min, 0.5 fds/min)")


def test_a_growing_node_fails():
    ev = up(0, "n0", 10) + up(0, "n1", 11) + series("n0", rss_kib_per_min=200) + series("n1", fds_per_min=2)
    r = CHECK.fn(hist(ev), {})
    assert r.passed is False
    assert r.detail.startswith("2 growing: n0 RSS 200.0 KiB/min, n1 1.98 fds/min; ")
    # a looser bound passes it
    assert CHECK.fn(hist(ev), {"max_rss_kib_per_min": 256, "max_fds_per_min": 3}).passed is True


def test_warm_up_and_restarts_are_not_trends():
    # n0 grows fast in its first 30 s only, then stays flat
    warm = [stats(t, "n0", 10 * MIB + int(t * MIB), 13) if t < 30 else stats(t, "n0", 40 * MIB, 13)
            for t in range(1, 301)]
    # n1 restarts at 200 s: a fresh process with less memory is not a fall, nor its growth back a leak
    ev = up(0, "n0", 10) + up(0, "n1", 11) + warm + series("n1", end=199) + up(200, "n1", 11) \
        + series("n1", start=200, end=400)
    r = CHECK.fn(hist(ev), {})
    assert r.passed is True
    assert r.detail.startswith("3 process lifetime(s) on 2 node(s): RSS slope max 0.0 KiB/min")
    # without the warm-up skip, n0's first 30 s show as growth
    assert CHECK.fn(hist(ev), {"warmup_s": 0}).passed is False


def test_too_short_or_no_records_is_unknown():
    r = CHECK.fn(hist(up(0, "n0", 10) + series("n0", end=100)), {})
    assert (r.passed, r.detail) == (None, "no process lived long enough past warm-up with rss_bytes and open_fds "
                                          "records")
    old = [{"t": float(t), "node": "n0", "kind": "stats", "cpu_s": 0.0} for t in range(1, 300)]
    assert CHECK.fn(hist(up(0, "n0", 10) + old), {}).passed is None
