"""Measuring hop delays from a run's rumors, checked where the truth is known: simulator runs with a given model.

The testbed's `mirror` stands on these estimators; here they must give back the delay the simulator was told.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from testbed import analysis
from testbed.experiments import mirror
from testbed.errors import TestbedError
from testbed.scenario import load
from testbed.runner import run_scenario as run_sim

PUBLISHES = "\n".join(f"  - {{at: {2 + 1.3 * k:.2f}, op: publish, node: n{k}, data: d{k}}}" for k in range(12))


def sim_run(tmp_path: Path, sim_block: str, name: str) -> Path:
    f = tmp_path / f"{name}.yaml"
    f.write_text(f"name: {name}\nseed: 5\nnodes: 48\nbackend: sim\nnode: {{fanout: 3, cycle_s: 1.0, timeout_s: 5.0}}\n"
                 f"duration_s: 20\nrecovery_s: 4\ntimeline:\n{PUBLISHES}\nsim:\n{sim_block}\n")
    out = tmp_path / name
    run_sim(load(str(f)), out)
    return out


def test_per_copy_estimate_gives_back_the_link_latency_where_winners_alone_are_biased(tmp_path):
    run = sim_run(tmp_path, "  latency: {kind: exponential, mean_ms: 5, floor_ms: 1}", "links")
    hops = analysis.rumor_hops(analysis.load_history(run))
    assert sum(h.won for h in hops) > 300 and sum(not h.won for h in hops) > 100  # races were lost
    true_median = 1 + 5 * math.log(2)
    per_copy = np.median(analysis.rumor_hop_latency_ms(run, per="copy"))
    winners = np.median(analysis.rumor_hop_latency_ms(run, per="receiver"))
    assert per_copy == pytest.approx(true_median, rel=0.12)
    assert winners < 0.85 * true_median  # the fastest of several copies: why censoring must be used


def test_per_receiver_estimate_gives_back_the_wakeup_delay(tmp_path):
    run = sim_run(tmp_path, "  latency: {kind: constant, ms: 0.1}\n  wakeup: {kind: constant, ms: 5}", "wakeups")
    d = np.array(analysis.rumor_hop_latency_ms(run, per="receiver"))
    # a copy that starts a wait is adopted after wire + wake-up; one that finds the node already waiting, sooner
    assert d.max() == pytest.approx(5.1, abs=0.01)
    assert np.median(d) == pytest.approx(5.1, abs=0.01)
    assert d.min() >= 0.1 - 1e-6
    first = analysis.rumor_hop_latency_ms(run, per="publisher", quantiles=12 * 3)
    assert max(first) == pytest.approx(5.1, abs=0.01) and min(first) >= 0.1 - 1e-6


def test_mirror_refuses_what_it_cannot_mirror(tmp_path):
    run = sim_run(tmp_path, "  latency: {kind: constant, ms: 1}", "simrun")
    with pytest.raises(TestbedError, match="simulator run"):
        mirror.sim_scenario(run)
    with pytest.raises(ValueError, match="per"):
        analysis.rumor_hop_latency_ms(run, per="link")


def test_compare_and_mirror_on_the_command_line(tmp_path):
    import subprocess
    import sys

    a = sim_run(tmp_path, "  latency: {kind: constant, ms: 1}", "a")
    b = sim_run(tmp_path, "  latency: {kind: constant, ms: 3}", "b")
    c = sim_run(tmp_path, "  latency: {kind: constant, ms: 3}", "c")

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "testbed", *map(str, args)], capture_output=True, text=True,
                              cwd=Path(__file__).resolve().parents[2])
    r = cli("compare", a, b, c, "--rumor", "all", "--out", tmp_path / "cmp.png")
    assert r.returncode == 0, r.stderr
    ks = float(r.stdout.split("infection curves: ")[1].split()[0])
    assert ks == pytest.approx(analysis.compare_runs(a, [b, c], index=None)["ks"], abs=1e-3) and ks > 0.3
    assert "2 run(s)" in r.stdout and (tmp_path / "cmp.png").stat().st_size > 10_000
    r = cli("compare", a, tmp_path / "nothing")
    assert r.returncode == 2 and "not an analysed run directory" in r.stderr and "Traceback" not in r.stderr
    r = cli("mirror", a, "--out", tmp_path / "m")
    assert r.returncode != 0 and "a simulator run" in r.stderr and "Traceback" not in r.stderr
