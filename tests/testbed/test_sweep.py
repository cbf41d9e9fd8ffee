"""Sweeps: a small grid runs on the local pool (or a Dask cluster) and yields one row per (grid point, seed), a
summary with 95 % bands, and the plots."""

import contextlib
import importlib.util
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pytest

from testbed.experiments import sweep
from testbed.errors import ScenarioError

ROOT = Path(__file__).resolve().parents[2]


def _sweep(tmp_path, text: str, name: str = "s.yaml") -> dict:
    f = tmp_path / name
    f.write_text(text)
    return sweep.load(str(f))


def test_a_dissemination_grid_gives_a_tidy_table_and_plots(tmp_path):
    s = _sweep(tmp_path, "name: s\nfidelity: dissemination\ngrid: {nodes: [200, 800], fanout: [2, 4], "
                         "variant: [protocol, infect_and_die]}\nseeds: 3\nworkers: 2\n")
    df = sweep.run(s, tmp_path / "out", progress=False)
    assert len(df) == 2 * 2 * 2 * 3
    table = pd.read_csv(tmp_path / "out" / "results.csv")
    assert list(table[["nodes", "fanout", "variant", "seed"]].itertuples(index=False)) == \
        list(df[["nodes", "fanout", "variant", "seed"]].itertuples(index=False))
    # more fanout, more coverage and more messages: the figures are measured, not constants
    by_f = df.groupby("fanout")[["fraction", "messages_per_node"]].mean()
    assert by_f.loc[4, "fraction"] > by_f.loc[2, "fraction"]
    assert by_f.loc[4, "messages_per_node"] > by_f.loc[2, "messages_per_node"]
    for png in ("t100_vs_nodes.png", "t90_vs_nodes.png", "messages_vs_fanout.png"):
        assert (tmp_path / "out" / png).stat().st_size > 10_000
    formats = json.loads((tmp_path / "out" / "sweep.json").read_text())["tables"]
    assert "results.csv" in formats and "summary.csv" in formats
    assert ("results.parquet" in formats) == (importlib.util.find_spec("pyarrow") is not None)


def test_parquet_tables_hold_what_the_csv_tables_hold(tmp_path):
    pytest.importorskip("pyarrow", reason="the parquet extra is not installed (scripts/install.sh installs it)")
    s = _sweep(tmp_path, "name: s\nfidelity: dissemination\ngrid: {nodes: [300, 600], fanout: [2, 3]}\nseeds: 2\n"
                         "workers: 1\n")
    sweep.run(s, tmp_path / "out", progress=False)
    tables = json.loads((tmp_path / "out" / "sweep.json").read_text())["tables"]
    assert {"results.parquet", "summary.parquet"} <= set(tables)
    for stem in ("results", "summary"):
        pq = pd.read_parquet(tmp_path / "out" / f"{stem}.parquet")
        csv = pd.read_csv(tmp_path / "out" / f"{stem}.csv")
        assert len(pq) == len(csv) > 0 and list(pq.columns) == list(csv.columns)
        # the same table: CSV round-trips floats as text, so compare numbers with a tolerance
        pd.testing.assert_frame_equal(pq, csv, check_dtype=False, rtol=1e-9)


def test_anti_entropy_makes_t100_reached_and_baselines_never_reach_it(tmp_path):
    s = _sweep(tmp_path, "name: s\ngrid: {nodes: [300, 1500], fanout: [3], variant: [protocol, infect_and_die]}\n"
                         "seeds: 4\nanti_entropy_s: 0.5\nworkers: 2\n")
    df = sweep.run(s, tmp_path / "out", progress=False)
    proto, iad = df[df["variant"] == "protocol"], df[df["variant"] == "infect_and_die"]
    assert (proto["anti_entropy_s"] == 0.5).all() and (iad["anti_entropy_s"] == 0.0).all()
    assert np.isfinite(proto["t100"]).all() and (proto["fraction"] == 1.0).all()
    assert (proto["t100"] >= proto["t90"]).all()
    assert (proto["repaired"] > 0).all()  # the rumor alone missed nodes: swaps reached them
    assert (proto["messages"] == proto["rumor_messages"] + proto["swap_responses"]).all()
    assert iad["t100"].isna().all() and (iad["fraction"] < 1).all()  # kept as NaN in the table
    assert np.isfinite(iad["t90"]).all()  # t90 stays in the table


def test_without_anti_entropy_the_protocol_never_reaches_everyone(tmp_path):
    s = _sweep(tmp_path, "name: s\ngrid: {nodes: [400, 1600], anti_entropy_s: [0, 1.0], "
                         "variant: [protocol, infect_and_die]}\nseeds: 3\nworkers: 2\n")
    df = sweep.run(s, tmp_path / "out", progress=False)
    # infect-and-die has no anti-entropy: run once per (nodes, seed), not once per anti_entropy_s value
    assert len(df[df["variant"] == "infect_and_die"]) == 2 * 3
    off = df[(df["variant"] == "protocol") & (df["anti_entropy_s"] == 0)]
    on = df[(df["variant"] == "protocol") & (df["anti_entropy_s"] == 1.0)]
    assert len(off) == len(on) == 2 * 3
    assert off["t100"].isna().all() and (off["fraction"] < 1).all() and (off["repaired"] == 0).all()
    assert np.isfinite(on["t100"]).all()
    # the same seed spreads the same rumor; the swaps come after it and only add nodes
    assert (on["rumor_messages"].to_numpy() == off["rumor_messages"].to_numpy()).all()
    summary = pd.read_csv(tmp_path / "out" / "summary.csv")
    s_off = summary[(summary["variant"] == "protocol") & (summary["anti_entropy_s"] == 0)]
    assert s_off["t100_mean"].isna().all() and (s_off["t100_seeds"] == 0).all()


def test_summary_bands_contain_the_mean_and_match_the_rows(tmp_path):
    s = _sweep(tmp_path, "name: s\ngrid: {nodes: [300, 1200], fanout: [2, 3]}\nseeds: 4\nworkers: 2\n")
    df = sweep.run(s, tmp_path / "out", progress=False)
    summary = pd.read_csv(tmp_path / "out" / "summary.csv")
    assert len(summary) == 4 and (summary["runs"] == 4).all()
    for fig in ("t90", "t100", "messages_per_node"):
        assert {f"{fig}_mean", f"{fig}_lo", f"{fig}_hi", f"{fig}_seeds"} <= set(summary.columns)
        assert (summary[f"{fig}_lo"] <= summary[f"{fig}_mean"]).all()
        assert (summary[f"{fig}_mean"] <= summary[f"{fig}_hi"]).all()
    t100_wide = summary["t100_hi"] - summary["t100_lo"]
    assert (t100_wide > 0).all()  # the seeds differ: the band has a width
    row = summary[(summary["nodes"] == 1200) & (summary["fanout"] == 3)].iloc[0]
    runs = df[(df["nodes"] == 1200) & (df["fanout"] == 3)]["t100"]
    assert row["t100_mean"] == pytest.approx(runs.mean())
    half = sweep.t975(3) * runs.std(ddof=1) / 2
    assert (row["t100_lo"], row["t100_hi"]) == pytest.approx((runs.mean() - half, runs.mean() + half))


def test_student_t_interval():
    assert sweep.t975(2) == pytest.approx(4.303, abs=1e-3)
    assert sweep.t975(31) == pytest.approx(2.040, abs=1e-3)
    assert sweep.t975(1000) == pytest.approx(1.962, abs=1e-3)
    mean, lo, hi, k = sweep.mean_ci([1.0, 2.0, 3.0])
    assert (mean, k) == (2.0, 3) and hi - mean == pytest.approx(4.303 / math.sqrt(3), abs=1e-3)
    assert math.isnan(sweep.mean_ci([1.0, float("nan"), 3.0])[0])  # a seed that never got there: no mean
    assert sweep.mean_ci([1.0, float("nan")])[3] == 1
    mean, lo, hi, k = sweep.mean_ci([5.0])
    assert mean == 5.0 and math.isnan(lo) and math.isnan(hi)


def test_dask_engine_gives_the_same_table_as_the_local_pool(tmp_path):
    pytest.importorskip("distributed")
    grid = "grid: {nodes: [300, 900], fanout: [2, 3], variant: [protocol, infect_and_die]}\nseeds: 2\nworkers: 2\n"
    local = sweep.run(_sweep(tmp_path, f"name: l\nengine: local\n{grid}", "l.yaml"), tmp_path / "l", progress=False)
    me = psutil.Process()
    before = {p.pid for p in me.children(recursive=True)}
    dask = sweep.run(_sweep(tmp_path, f"name: d\nengine: dask\n{grid}", "d.yaml"), tmp_path / "d", progress=False)
    pd.testing.assert_frame_equal(dask.drop(columns="wall_s"), local.drop(columns="wall_s"))
    assert (tmp_path / "d" / "t100_vs_nodes.png").exists()
    # the cluster the sweep started is gone with it: no nanny or worker process left behind (the standard
    # library's resource tracker, started with the first spawned process, lives as long as this process)
    def left():
        out = []
        for p in me.children(recursive=True):
            with contextlib.suppress(psutil.NoSuchProcess):
                if p.pid not in before and p.status() != psutil.STATUS_ZOMBIE and \
                        "multiprocessing.resource_tracker" not in " ".join(p.cmdline()):
                    out.append(p)
        return out
    deadline = time.monotonic() + 30  # a bound on waiting for them to exit, not a measurement
    while left() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left(), [p.cmdline() for p in left()]


def test_dask_engine_runs_on_an_existing_cluster(tmp_path):
    """A scheduler and two workers started the way a cluster's are (the `dask` command line, separate processes),
    here on loopback: the sweep connects by address, as it would to other machines, and gets the local table."""
    pytest.importorskip("distributed")
    from dask.distributed import Client
    dask_cli = str(Path(sys.executable).with_name("dask"))
    info = tmp_path / "scheduler.json"
    procs = [subprocess.Popen([dask_cli, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                               "--scheduler-file", str(info)], start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        deadline = time.monotonic() + 60  # a bound on start-up, not a measurement
        while not info.exists() and time.monotonic() < deadline:
            assert procs[0].poll() is None, "the scheduler exited"
            time.sleep(0.2)
        address = json.loads(info.read_text())["address"]
        assert address.startswith("tcp://127.0.0.1:")
        procs.append(subprocess.Popen([dask_cli, "worker", address, "--nworkers", "2", "--nthreads", "1",
                                       "--no-dashboard", "--host", "127.0.0.1"], start_new_session=True,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        with Client(address, timeout="30s") as client:
            client.wait_for_workers(2, timeout=60)
        grid = "grid: {nodes: [300, 900], fanout: [2, 3]}\nseeds: 2\nworkers: 2\n"
        local = sweep.run(_sweep(tmp_path, f"name: l\n{grid}", "l.yaml"), tmp_path / "l", progress=False)
        remote = sweep.run(_sweep(tmp_path, f"name: d\nengine: dask\ndask_scheduler: {address}\n{grid}", "d.yaml"),
                           tmp_path / "d", progress=False)
        pd.testing.assert_frame_equal(remote.drop(columns="wall_s"), local.drop(columns="wall_s"))
        with Client(address, timeout="30s") as client:  # the runs were the two workers', not this process's
            executed = client.run(lambda dask_worker: dask_worker.state.executed_count)
        assert len(executed) == 2 and sum(executed.values()) >= len(remote)
    finally:
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


def test_points_list_each_baseline_once_and_carry_the_anti_entropy_period(tmp_path):
    s = _sweep(tmp_path, "name: s\ngrid: {nodes: [100], variant: [protocol, push], anti_entropy_s: [0, 2]}\n"
                         "seeds: 2\n")
    pts = sweep.points(s)
    assert [(p["variant"], p["anti_entropy_s"], p["seed"]) for p in pts] == [
        ("protocol", 0.0, 0), ("protocol", 0.0, 1), ("push", 0.0, 0), ("push", 0.0, 1),
        ("protocol", 2.0, 0), ("protocol", 2.0, 1)]
    s = _sweep(tmp_path, "name: s\ngrid: {nodes: [100]}\nseeds: 1\n")
    assert sweep.points(s) == [{"nodes": 100, "variant": "protocol", "anti_entropy_s": sweep.DEFAULT_ANTI_ENTROPY_S,
                                "seed": 0}]


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
    ("name: s\ngrid: {nodes: [10]}\nanti_entropy_s: -1\n", 3, "anti_entropy_s"),
    ("name: s\ngrid:\n  nodes: [10]\n  anti_entropy_s: [1, -0.5]\n", 4, "grid.anti_entropy_s[1]"),
    ("name: s\nfidelity: full\nscenario: basic.yaml\ngrid: {nodes: [4]}\nanti_entropy_s: 1\n", 5,
     "anti_entropy_s"),
    ("name: s\nfidelity: full\nscenario: basic.yaml\ngrid:\n  anti_entropy_s: [1]\n", 5, "grid.anti_entropy_s"),
    ("name: s\ngrid: {nodes: [10]}\ndask_scheduler: tcp://h:8786\n", 3, "dask_scheduler"),
])
def test_bad_sweep_files_name_line_and_field(tmp_path, text, line, field):
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(ScenarioError) as e:
        sweep.load(str(f))
    assert (e.value.line, e.value.field) == (line, field)


def test_sweep_cli(tmp_path):
    r = subprocess.run([sys.executable, "-m", "testbed", "sweep", str(ROOT / "sweeps" / "fanout.yaml"),
                        "--seeds", "2", "--out", str(tmp_path / "o")], capture_output=True, text=True,
                       timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert "messages_per_node" in r.stdout and (tmp_path / "o" / "results.csv").exists()
    if importlib.util.find_spec("pyarrow") is None:
        assert "tables: results.csv, summary.csv (no Parquet: pyarrow is not installed)" in r.stderr
    else:
        assert "tables: results.csv, results.parquet, summary.csv, summary.parquet" in r.stderr
    assert (tmp_path / "o" / "t100_vs_nodes.png").exists()


@pytest.mark.parametrize("name", ["fanout.yaml", "loss.yaml"])
def test_shipped_sweep_files_load(name):
    s = sweep.load(str(ROOT / "sweeps" / name))
    assert s["anti_entropy_s"] > 0 and sweep.points(s)
