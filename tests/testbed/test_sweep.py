"""Sweeps: a small grid runs on the local pool and yields one row per (grid point, seed) and the plots."""

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from testbed import sweep
from testbed.errors import ScenarioError

ROOT = Path(__file__).resolve().parents[2]


def test_a_dissemination_grid_gives_a_tidy_table_and_plots(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text("name: s\nfidelity: dissemination\ngrid: {nodes: [200, 800], fanout: [2, 4], "
                 "variant: [protocol, infect_and_die]}\nseeds: 2\nworkers: 2\n")
    df = sweep.run(sweep.load(str(f)), tmp_path / "out", progress=False)
    assert len(df) == 2 * 2 * 2 * 2
    table = pd.read_csv(tmp_path / "out" / "results.csv")
    assert list(table[["nodes", "fanout", "variant", "seed"]].itertuples(index=False)) == \
        list(df[["nodes", "fanout", "variant", "seed"]].itertuples(index=False))
    # more fanout, more coverage and more messages: the figures are measured, not constants
    by_f = df.groupby("fanout")[["fraction", "messages_per_node"]].mean()
    assert by_f.loc[4, "fraction"] > by_f.loc[2, "fraction"]
    assert by_f.loc[4, "messages_per_node"] > by_f.loc[2, "messages_per_node"]
    assert (tmp_path / "out" / "t90_vs_nodes.png").stat().st_size > 10_000
    assert (tmp_path / "out" / "messages_vs_fanout.png").stat().st_size > 10_000


def test_a_full_fidelity_grid_runs_the_scenario_on_the_simulator(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text(f"name: s\nfidelity: full\nscenario: {ROOT / 'scenarios' / 'basic.yaml'}\n"
                 "grid: {nodes: [6, 10]}\nseeds: 1\nworkers: 2\n")
    df = sweep.run(sweep.load(str(f)), tmp_path / "out", progress=False)
    assert list(df["nodes"]) == [6, 10] and df["passed"].all()


@pytest.mark.parametrize("text,line,field", [
    ("name: s\ngrid: {fanout: [2, x]}\n", 2, "grid.fanout[1]"),
    ("name: s\ngrid: {colour: [1]}\n", 2, "grid.colour"),
    ("name: s\ngrid: {variant: [gossipy]}\n", 2, "grid.variant[0]"),
    ("name: s\nfidelity: full\ngrid: {nodes: [4]}\n", 1, "scenario"),
])
def test_bad_sweep_files_name_line_and_field(tmp_path, text, line, field):
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(ScenarioError) as e:
        sweep.load(str(f))
    assert (e.value.line, e.value.field) == (line, field)


def test_sweep_cli(tmp_path):
    r = subprocess.run([sys.executable, "-m", "testbed", "sweep", str(ROOT / "sweeps" / "fanout.yaml"),
                        "--seeds", "1", "--out", str(tmp_path / "o"), "--quiet"], capture_output=True, text=True,
                       timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert "messages_per_node" in r.stdout and (tmp_path / "o" / "results.csv").exists()
