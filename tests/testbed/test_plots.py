"""The registered plots read a real run's history (here a simulated one: the same records the testbed writes) and
draw what they promise: the theory beside the measured curve, drops split by where they happened, one time axis
across a run's timeline figures, and the run named in every title."""

import math

import matplotlib
import matplotlib.pyplot as plt
import pytest

from testbed import analysis, plots, scenario
from testbed.plots import messages as messages_plot
from testbed.runner import run_scenario
from testbed.sim import theory

matplotlib.use("Agg")


@pytest.fixture(scope="module")
def loss_run(tmp_path_factory):
    """scenarios/loss.yaml on the simulator: a loss window, twenty publishes, XDP modelled."""
    out = tmp_path_factory.mktemp("plots") / "loss"
    s = scenario.load("loss.yaml").with_overrides(backend="sim")
    summary = run_scenario(s, out)
    return out, analysis.load_history(out), summary


@pytest.fixture()
def figures(monkeypatch):
    """Call a drawing function and get the figures it made, kept open (the plots close theirs after saving)."""
    monkeypatch.setattr(plt, "close", lambda fig=None: None)
    made = []

    def draw(fn, *args):
        before = set(plt.get_fignums())
        fn(*args)
        new = [plt.figure(n) for n in sorted(set(plt.get_fignums()) - before)]
        made.extend(new)
        return new
    yield draw
    for fig in made:
        fig.clear()
    monkeypatch.undo()
    for fig in made:
        plt.close(fig)


def test_infect_and_die_curve_rises_to_its_closed_form_limit():
    for f in (2, 3, 4):
        ys = theory.infect_and_die_curve(200_000, f)
        assert ys[0] == pytest.approx(1 / 200_000)
        assert all(b > a for a, b in zip(ys, ys[1:]))
        assert ys[-1] == pytest.approx(theory.infect_and_die_fraction(f), abs=2e-3)
    assert theory.infect_and_die_curve(100, 1)[-1] < 0.5  # below the threshold the rumor dies out
    with pytest.raises(theory.SimError):
        theory.infect_and_die_curve(1, 3)


def test_every_registered_plot_draws_a_png(loss_run, tmp_path):
    out, history, summary = loss_run
    written = plots.draw_all(tmp_path, history, summary)
    assert {p.name for p in written} == {f"{n}.png" for n in plots.REGISTRY}
    assert {"infection", "convergence", "messages", "latency", "cost"} <= set(plots.REGISTRY)
    for p in written:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 10_000


def test_titles_name_scenario_backend_size_and_seed(loss_run, tmp_path, figures):
    _, history, summary = loss_run
    titles = []
    for fig in figures(plots.draw_all, tmp_path, history, summary):
        titles.append(fig._suptitle.get_text() if fig._suptitle else fig.axes[0].get_title())
    assert len(titles) == len(plots.REGISTRY)
    for t in titles:
        assert "loss" in t and "sim" in t and "16 nodes" in t and f"seed {summary['seed']}" in t, t


def test_infection_is_against_time_since_publish_with_theory(loss_run, tmp_path, figures):
    _, history, summary = loss_run
    ax = figures(plots.REGISTRY["infection"], history, summary, tmp_path / "i.png")[0].axes[0]
    assert ax.get_xscale() == "log"
    labels = [line.get_label() for line in ax.get_lines()]
    assert any(lbl.startswith("theory: infect-and-die") for lbl in labels)
    # 20 rumors: one unlabelled curve each, the quantiles marked at their medians
    assert any("median t90 over" in lbl for lbl in labels)
    theory_line = next(line for line in ax.get_lines() if line.get_label().startswith("theory"))
    assert max(theory_line.get_ydata()) == pytest.approx(theory.infect_and_die_curve(16, 3)[-1])


def test_messages_split_drops_by_where_they_happened(loss_run):
    _, history, summary = loss_run
    drawn = messages_plot.series(history)
    assert "dropped by XDP: duplicate" in drawn
    assert "dropped by the network: loss" in drawn
    # the network's loss drops fall inside the loss window (bins are 1 s; the window is 2..22 s)
    window = history.faults[0]
    lo, hi = window.start - history.t0, window.end - history.t0
    bins = drawn["dropped by the network: loss"]
    assert all(lo - 1 <= b <= hi + 1 for b, rate in bins.items() if rate > 0)
    # and they add up to what the network counted over the whole run
    total = analysis.network_drops(history.stats["network"])["loss"]
    assert total > 0 and sum(bins.values()) == pytest.approx(total, rel=0.2)


def test_timeline_figures_share_one_time_axis(loss_run, tmp_path, figures):
    _, history, summary = loss_run
    made = figures(plots.REGISTRY["convergence"], history, summary, tmp_path / "c.png")
    made += figures(plots.REGISTRY["messages"], history, summary, tmp_path / "m.png")
    assert len(made) == 2
    limits = {tuple(round(x, 6) for x in ax.get_xlim()) for fig in made for ax in fig.axes}
    assert len(limits) == 1
    lo, hi = limits.pop()
    assert lo == 0 and math.isclose(hi, plots._common.run_span(history)[1])
