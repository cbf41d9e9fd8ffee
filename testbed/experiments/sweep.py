"""Parameter sweeps: a grid of simulator runs on every local core (or a Dask cluster), one tidy table, summary plots.

A sweep file names a grid (``nodes``, ``fanout``, ``loss``, ``variant``, ``anti_entropy_s``), a number of seeds, and
a fidelity:

```yaml
name: fanout-vs-loss
fidelity: dissemination        # one rumor over fixed views (fast, up to 10^6 nodes) — or: full (a scenario)
grid: {nodes: [1000, 10000], fanout: [2, 3, 4], loss: [0.0, 0.2], variant: [protocol, push, infect_and_die]}
seeds: 5
anti_entropy_s: 1.0            # the protocol variant's swap cycle (default 1.0, the node's cycle_s); 0: none
engine: local                  # local (default: a process pool) or dask (the `distributed` extra)
workers: 2                     # processes (local, or the Dask cluster the sweep starts); default: every core
# dask_scheduler: tcp://host:8786   (engine dask only) an existing cluster; without it the sweep starts one here
```

Anti-entropy is on by default for the ``protocol`` variant because the real node always swaps, and without it a
lone rumor informs ~94 % of the nodes and never all of them: t100 would be undefined. The baselines
(``push``, ``infect_and_die``) have no anti-entropy; their rows carry ``anti_entropy_s`` 0. ``anti_entropy_s`` may
also be a grid key (e.g. ``[0, 1.0]`` to compare); baseline rows are then run once, not once per value.

With ``fidelity: full`` the file also names a ``scenario`` whose node count, fanout and loss the grid overrides; the
real cores run there, with the scenario's own swap period (``node.cycle_s``).

The result directory holds:

- ``results.csv``: one row per run (the grid point, the seed, and what was measured: ``fraction`` informed,
  ``t50`` / ``t90`` / ``t100`` in seconds (rounds for ``push``; empty where never reached), ``messages`` the
  update caused (rumor copies plus swap answers that carried it; the swap requests every node sends each cycle
  anyway are in ``swap_requests``), ``messages_per_node``, ``repaired`` (nodes reached by anti-entropy), ...);
- ``summary.csv``: one row per grid point: for each figure its mean over the seeds, the bounds of its 95 %
  confidence interval (``<figure>_lo`` / ``<figure>_hi``) and ``<figure>_seeds``, the seeds it was measured in.
  The interval is Student's t (mean ± t(0.975, k-1) · s / √k over k seeds): the seeds are few, so the normal
  1.96 would make it too narrow. A figure some seed never reached (t100 of a rumor that missed a node) has no
  mean: the mean time to reach everyone is not defined when one run never did;
- ``t100_vs_nodes.png`` and ``t90_vs_nodes.png`` (time to 100 % / 90 % of the nodes vs N, mean and band) and
  ``messages_vs_fanout.png`` (messages per node per update vs fanout, mean and band);
- ``sweep.json``: the sweep as run, and which table formats were written.

Both tables are also written as Parquet when pyarrow is importable (the ``parquet`` extra, which
`scripts/install.sh` installs). CSV is always written and is what pandas reads without anything more
(`pandas.read_csv`): pyarrow is a large binary wheel the project needs nowhere else, so it is an extra, not a
dependency.

Dask rather than Ray for the distributed engine: it installs from PyPI as pure Python, the same code runs on a
`LocalCluster` of processes here or on a cluster, and its `Client.map` is all a grid of independent runs needs.
The workers must have this project installed (the runs import it). The local cluster's workers are spawned
processes, so a script that calls `run` with ``engine: dask`` needs the usual ``if __name__ == "__main__":`` guard
(``python -m testbed sweep`` needs none: a package's ``__main__`` is not re-run in spawned processes).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import itertools
import json
import math
import os
import textwrap
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

from ..errors import ScenarioError
from ..progress import Progress, as_progress
from ..scenario import find, load as load_scenario, read_text
from ..scenario.schema import Doc as _Doc, fields as _fields

GRID_KEYS = {"nodes": int, "fanout": int, "loss": (int, float), "variant": str, "anti_entropy_s": (int, float)}
VARIANTS = ("protocol", "push", "infect_and_die")
DEFAULT_ANTI_ENTROPY_S = 1.0  # NodeConfig.cycle_s's default: a real node swaps once per cycle
FIGURES = ("fraction", "t50", "t90", "t100", "messages_per_node", "repaired")


def load(path: str) -> dict:
    """Read and validate a sweep file (a path, or the name of one in sweeps/, as scenarios are found in
    scenarios/); a mistake is a `ScenarioError` naming file, line and field."""
    p = find(path, folder="sweeps", what="sweep")
    doc = _Doc(str(p), read_text(p, "sweep"))
    spec = {
        "name": (str, True, None, None),
        "fidelity": (str, False, "dissemination", lambda v: None if v in ("dissemination", "full") else
                     "must be dissemination or full"),
        "scenario": (str, False, None, None),
        "grid": (dict, True, None, None),
        "seeds": (int, False, 3, lambda v: None if 1 <= v <= 1000 else "must be 1..1000"),
        "anti_entropy_s": ((int, float), False, DEFAULT_ANTI_ENTROPY_S,
                           lambda v: None if v >= 0 else "must be >= 0 seconds (0: no anti-entropy)"),
        "engine": (str, False, "local", lambda v: None if v in ("local", "dask") else "must be local or dask"),
        "workers": (int, False, None, lambda v: None if v >= 1 else "must be >= 1"),
        "dask_scheduler": (str, False, None, None),
    }
    v = _fields(doc, doc.value, (), spec)
    for key, values in v["grid"].items():
        _check_grid(doc, key, values)
    if v["fidelity"] == "full":
        if not v.get("scenario"):
            raise doc.error((), "fidelity full needs 'scenario' (the scenario the grid overrides)")
        try:
            base = load_scenario(v["scenario"])  # refused here, not in every worker once the grid runs
        except ScenarioError as e:
            raise doc.error(("scenario",), str(e)) from None
        for key in ("variant", "anti_entropy_s"):
            if key in v["grid"]:
                raise doc.error(("grid", key), "belongs to the dissemination fidelity (full runs the real cores)")
        if "anti_entropy_s" in doc.value:
            raise doc.error(("anti_entropy_s",), "the full fidelity swaps every node.cycle_s of its scenario")
        for i, n in enumerate(v["grid"].get("nodes", [])):  # and so is a size of the grid it cannot hold
            try:
                base.with_overrides(nodes=n, backend="sim")
            except ScenarioError as e:
                raise doc.error(("grid", "nodes", i), str(e)) from None
    if v["engine"] == "dask" and importlib.util.find_spec("distributed") is None:
        raise doc.error(("engine",), "dask is not installed: pip install -e '.[distributed]' (or engine: local)")
    if v.get("dask_scheduler") and v["engine"] != "dask":
        raise doc.error(("dask_scheduler",), "only used with engine: dask")
    v["file"] = str(p)
    v["lines"] = {k: doc.lines.get((k,)) for k in spec if (k,) in doc.lines}
    return v


def _check_grid(doc: _Doc, key: str, values) -> None:
    if key not in GRID_KEYS:
        raise doc.error(("grid", key), f"unknown grid key (allowed: {', '.join(GRID_KEYS)})")
    if not isinstance(values, list) or not values:
        raise doc.error(("grid", key), "must be a non-empty list")
    for i, x in enumerate(values):
        if isinstance(x, bool) or not isinstance(x, GRID_KEYS[key]):
            raise doc.error(("grid", key, i), f"must be {GRID_KEYS[key]}, got {x!r}")
        if key == "variant" and x not in VARIANTS:
            raise doc.error(("grid", key, i), f"unknown variant {x!r} (known: {', '.join(VARIANTS)})")
        if key == "loss" and not 0 <= x < 1:
            raise doc.error(("grid", key, i), f"must be in [0, 1), got {x!r}")
        if key in ("nodes", "fanout") and x < (2 if key == "nodes" else 1):
            raise doc.error(("grid", key, i), f"too small: {x!r}")
        if key == "anti_entropy_s" and not (math.isfinite(x) and x >= 0):
            raise doc.error(("grid", key, i), f"must be >= 0 seconds (0: no anti-entropy), got {x!r}")


def points(sweep: dict) -> list[dict]:
    """Every (grid point, seed) to run, in a fixed order. Dissemination points always carry ``variant`` and
    ``anti_entropy_s`` (0 for the baselines, which have none; a baseline point is listed once, whatever the grid's
    values)."""
    grid = sweep["grid"]
    keys = sorted(grid)
    out, seen = [], set()
    for combo in itertools.product(*(grid[k] for k in keys)):
        point = dict(zip(keys, combo))
        if sweep["fidelity"] == "dissemination":
            point.setdefault("variant", "protocol")
            ae = float(point.get("anti_entropy_s", sweep.get("anti_entropy_s", DEFAULT_ANTI_ENTROPY_S)))
            point["anti_entropy_s"] = ae if point.get("variant", "protocol") == "protocol" else 0.0
        key = tuple(sorted(point.items()))
        if key in seen:
            continue
        seen.add(key)
        out.extend({**point, "seed": seed} for seed in range(sweep["seeds"]))
    return out


def run_point(fidelity: str, point: dict, scenario_path: str | None = None) -> dict:
    """One run of the grid; returns its row (a flat dict). Runs in a worker process."""
    if fidelity == "dissemination":
        return _run_dissemination(point)
    return _run_full(point, scenario_path)


def _run_dissemination(point: dict) -> dict:
    from ..sim import disseminate
    t = time.perf_counter()
    r = disseminate(point.get("nodes", 1000), point.get("variant", "protocol"), fanout=point.get("fanout", 3),
                    loss=float(point.get("loss", 0.0)), seed=point["seed"],
                    anti_entropy_s=point.get("anti_entropy_s") or None)
    messages = r.messages_sent + r.swap_responses
    return {**point, "fraction": r.final_fraction, "t50": r.t50, "t90": r.t90, "t100": r.t100,
            "messages": messages, "messages_per_node": messages / r.n, "rumor_messages": r.messages_sent,
            "swap_responses": r.swap_responses, "swap_requests": r.swap_requests, "repaired": r.repaired,
            "cycles": r.cycles, "duplicates": r.duplicates, "wall_s": time.perf_counter() - t}


def _run_full(point: dict, scenario_path: str) -> dict:
    import tempfile
    from dataclasses import replace
    from types import MappingProxyType

    from .. import scenario as scenario_mod
    from ..scenario import Step
    from ..runner import run_scenario as run_sim
    t = time.perf_counter()
    s = scenario_mod.load(scenario_path).with_overrides(backend="sim", nodes=point.get("nodes"),
                                                        seed=point["seed"] + 1)
    if "fanout" in point:
        s = replace(s, node=MappingProxyType({**s.node, "fanout": point["fanout"]}))
    if "loss" in point and point["loss"] > 0:
        step = Step(at_s=0.0, kind="fault", action="loss", until_s=s.duration_s,
                    params=MappingProxyType({"rate": float(point["loss"]), "node": "all"}))
        s = replace(s, timeline=(step,) + tuple(x for x in s.timeline if x.action != "loss"))
    with tempfile.TemporaryDirectory(prefix="sweep-") as tmp:
        summary = run_sim(s, Path(tmp) / "run")
    rumors = summary["rumors"]
    t100 = [r["t100"] for r in rumors]
    return {**point, "passed": summary["passed"], "fraction": min((r["coverage"][-1][1] for r in rumors
                                                                   if r["coverage"]), default=None),
            "t50": _mean([r["t50"] for r in rumors]), "t90": _mean([r["t90"] for r in rumors]),
            "t100": None if None in t100 else _mean(t100),  # one rumor that never got everywhere: no t100
            "messages": sum(r["messages"] for r in rumors),
            "messages_per_node": sum(r["messages"] for r in rumors) / max(1, len(rumors)) / s.nodes,
            "wall_s": time.perf_counter() - t}


def _mean(xs):
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


# ---- engines ---------------------------------------------------------------------------------------------------

def _run_local(task, todo: list[dict], workers: int, progress: Progress) -> list[dict]:
    rows = []
    with ProcessPoolExecutor(max_workers=workers) as pool:
        pending = {pool.submit(task, p) for p in todo}
        while pending:  # woken every second too, so the elapsed time and the estimate move between finished runs
            done, pending = wait(pending, timeout=1.0, return_when=FIRST_COMPLETED)
            rows.extend(fut.result() for fut in done)
            progress.update(len(rows))
    return rows


def _run_dask(sweep: dict, task, todo: list[dict], workers: int, progress: Progress) -> list[dict]:
    """On the cluster at ``dask_scheduler``, or on a `LocalCluster` of WORKERS single-threaded processes that
    lives as long as the sweep (the runs are numpy and Python: threads would share one interpreter lock)."""
    import logging

    from dask.distributed import Client, LocalCluster, as_completed as completed
    address = sweep.get("dask_scheduler")
    with contextlib.ExitStack() as stack:
        if address:
            try:
                client = stack.enter_context(Client(address, timeout="20s"))
            except (OSError, TimeoutError) as e:
                raise ScenarioError(sweep["file"], sweep.get("lines", {}).get("dask_scheduler"), "dask_scheduler",
                                    f"cannot reach the Dask scheduler at {address}: {e}") from None
        else:
            cluster = stack.enter_context(LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                                       dashboard_address=None, silence_logs=logging.ERROR))
            client = stack.enter_context(Client(cluster))
        rows = []
        for fut in completed(client.map(task, todo, pure=False)):
            rows.append(fut.result())
            progress.update(len(rows))
    return rows


# ---- the run ---------------------------------------------------------------------------------------------------

def run(sweep: dict, out: Path, *, progress: bool | Progress = True):
    """Run every point of SWEEP, write the tables and the plots to OUT, and return the table (a DataFrame).
    PROGRESS: runs done of all, with the time left, on stderr (True), not (False), or on a caller's `Progress`."""
    import pandas as pd
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    todo = points(sweep)
    scenario_path = None
    if sweep["fidelity"] == "full":
        from .. import scenario as scenario_mod
        scenario_path = str(scenario_mod.find(sweep["scenario"]))
    task = functools.partial(run_point, sweep["fidelity"], scenario_path=scenario_path)
    workers = sweep.get("workers") or os.cpu_count() or 1
    bar = as_progress(progress, "sweep")
    bar.phase(f"{sweep['name']} on {workers} {sweep['engine']} worker(s)", total=len(todo), unit=" runs", done=0)
    if sweep["engine"] == "dask":
        rows = _run_dask(sweep, task, todo, workers, bar)
    else:
        rows = _run_local(task, todo, workers, bar)
    bar.end()
    df = pd.DataFrame(rows)
    df = df.sort_values(point_keys(df) + ["seed"]).reset_index(drop=True)
    for col in ("t50", "t90", "t100", "fraction"):  # None (never reached) becomes NaN
        if col in df.columns:
            df[col] = pd.to_numeric(df[col], errors="coerce")
    summary = summarize(df)
    formats = _write_table(df, out / "results") + _write_table(summary, out / "summary")
    record = {k: v for k, v in sweep.items() if k != "lines"}
    (out / "sweep.json").write_text(json.dumps({**record, "tables": formats}, indent=1, default=str))
    plot(summary, out)
    note = "" if any(f.endswith(".parquet") for f in formats) else " (no Parquet: pyarrow is not installed)"
    bar.say(f"tables: {', '.join(formats)}{note}")
    return df


def point_keys(df) -> list[str]:
    """The columns that name a grid point (everything that identifies a run but the seed)."""
    return [k for k in GRID_KEYS if k in df.columns]


def _write_table(df, stem: Path) -> list[str]:
    """STEM.csv, and STEM.parquet when pyarrow is importable; returns the file names written."""
    df.to_csv(stem.with_suffix(".csv"), index=False)
    written = [stem.with_suffix(".csv").name]
    if importlib.util.find_spec("pyarrow") is not None:
        df.to_parquet(stem.with_suffix(".parquet"), index=False)
        written.append(stem.with_suffix(".parquet").name)
    return written


# ---- statistics ------------------------------------------------------------------------------------------------

# Student's t, 0.975 quantile, for 1..30 degrees of freedom; beyond, the Cornish-Fisher expansion (error < 1e-3)
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t975(df: int) -> float:
    """The 0.975 quantile of Student's t with DF degrees of freedom (the half-width factor of a 95 % interval)."""
    if df < 1:
        return math.nan
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959964
    return z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2)


def mean_ci(values) -> tuple[float, float, float, int]:
    """(mean, lower, upper, k) of the 95 % Student-t interval of the mean of VALUES (k of them finite).

    NaN mean if any value is missing (a seed that never got there); NaN bounds with fewer than two values.
    """
    import numpy as np
    x = np.asarray(values, dtype=float)
    k = int(np.isfinite(x).sum())
    if k == 0 or k < x.size:
        return math.nan, math.nan, math.nan, k
    mean = float(x.mean())
    if k < 2:
        return mean, math.nan, math.nan, k
    half = t975(k - 1) * float(x.std(ddof=1)) / math.sqrt(k)
    return mean, mean - half, mean + half, k


def summarize(df):
    """One row per grid point: for each of FIGURES its mean, 95 % interval bounds and number of seeds."""
    import pandas as pd
    keys = point_keys(df)
    rows = []
    for key, g in (df.groupby(keys, sort=True) if keys else [((), df)]):
        row = dict(zip(keys, key if isinstance(key, tuple) else (key,)))
        row["runs"] = len(g)
        for fig in FIGURES:
            if fig in g.columns:
                m, lo, hi, k = mean_ci(pd.to_numeric(g[fig], errors="coerce"))
                row.update({f"{fig}_mean": m, f"{fig}_lo": lo, f"{fig}_hi": hi, f"{fig}_seeds": k})
        rows.append(row)
    return pd.DataFrame(rows)


# ---- plots -----------------------------------------------------------------------------------------------------

_LABEL = {"variant": "{}", "fanout": "fanout {}", "nodes": "N={}", "loss": "loss {:.0%}",
          "anti_entropy_s": "anti-entropy {:g} s"}
_LABEL_ORDER = ("variant", "anti_entropy_s", "fanout", "loss", "nodes")
_LINESTYLES = ("-", "--", ":", "-.")
_MARKERS = ("o", "s", "^", "D", "v")


def _label(keys, values) -> str:
    return ", ".join("no anti-entropy" if k == "anti_entropy_s" and not v else _LABEL[k].format(v)
                     for k, v in zip(keys, values))


def _series(summary, x: str, fig: str) -> list[dict]:
    """One series per combination of the other varying grid keys: its key values, label, variant and the points
    (x, mean, lo, hi) that have a mean (a series may end up with none)."""
    others = [k for k in _LABEL_ORDER if k in summary.columns and k != x and summary[k].nunique() > 1]
    groups = summary.groupby(others, sort=True) if others else [((), summary)]
    out = []
    for key, g in groups:
        key = key if isinstance(key, tuple) else (key,)
        g = g.sort_values(x)
        ok = g[f"{fig}_mean"].notna()
        out.append({"keys": others, "values": key, "label": _label(others, key) or fig,
                    "variant": g["variant"].iloc[0] if "variant" in g.columns else "protocol",
                    "xs": g[x][ok], "mean": g[f"{fig}_mean"][ok], "lo": g[f"{fig}_lo"][ok],
                    "hi": g[f"{fig}_hi"][ok]})
    return out


def _styles(series: list[dict]) -> None:
    """Colour by variant and line style by the rest when several variants are drawn (the variant is what the
    reader compares); otherwise one colour per series."""
    variants = sorted({s["variant"] for s in series})
    if len(variants) < 2:
        for i, s in enumerate(series):
            s["style"] = {"color": f"C{i % 10}", "marker": _MARKERS[i // 10 % len(_MARKERS)]}
        return
    def rest(s: dict) -> tuple:
        return tuple(v for k, v in zip(s["keys"], s["values"]) if k not in ("variant", "anti_entropy_s"))
    order = sorted({rest(s) for s in series})
    for s in series:
        j = order.index(rest(s))
        s["style"] = {"color": f"C{variants.index(s['variant']) % 10}", "ls": _LINESTYLES[j % len(_LINESTYLES)],
                      "marker": _MARKERS[j % len(_MARKERS)]}


DODGE = 0.045  # the sideways shift between neighbouring series: a fraction of a linear x unit, or of a decade


def _dodge(series: list[dict], *, log: bool) -> None:
    """Shift each series' points sideways a little, symmetrically around the true x, so that series with equal
    values (the same cost at every N, say) do not hide under each other: every legend entry stays visible."""
    k = len(series)
    for i, s in enumerate(series):
        off = (i - (k - 1) / 2) * DODGE / max(1, k // 4 + 1)
        s["dx"] = (lambda xs, f=10 ** off: xs * f) if log else (lambda xs, o=off: xs + o)


def _draw(ax, s: dict, scale: float = 1.0, label: str | None = None):
    xs = s["dx"](s["xs"]) if "dx" in s else s["xs"]
    line, = ax.plot(xs, s["mean"] * scale, lw=1.3, label=label or s["label"], **s.get("style", {}))
    band = (s["lo"].notna() & s["hi"].notna()).to_numpy()
    if band.any():
        ax.fill_between(xs[band], s["lo"][band] * scale, s["hi"][band] * scale, color=line.get_color(),
                        alpha=0.22, lw=0)
    return line


def _missing_note(series: list[dict]) -> str:
    """The series that have no point, grouped by all but their last key: 'infect_and_die: fanout 2, 3, 4'."""
    groups: dict = {}
    for s in series:
        head = _label(s["keys"][:-1], s["values"][:-1])
        tail = _label(s["keys"][-1:], s["values"][-1:])
        groups.setdefault(head, []).append(tail)
    parts = []
    for head, tails in groups.items():
        last = series[0]["keys"][-1:] if series[0]["keys"] else []
        if last and last[0] in ("fanout", "nodes", "loss") and len(tails) > 1:
            prefix = _LABEL[last[0]].split("{")[0]
            tails = [tails[0]] + [t[len(prefix):] for t in tails[1:]]
        parts.append(f"{head}: {', '.join(tails)}" if head else ", ".join(tails))
    return "; ".join(parts)


def _time_plot(plt, summary, fig: str, what: str, path: Path) -> Path:
    """FIG (t100 / t90) vs N: event-driven variants in seconds (or ms) on the left axis, push in rounds on the
    right; series with no point at all are named in a note under the plot instead of being drawn."""
    series = _series(summary, "nodes", fig)
    drawn = [s for s in series if len(s["xs"])]
    _styles(drawn)
    _dodge(drawn, log=True)
    timed = [s for s in drawn if s["variant"] != "push"]
    rounds = [s for s in drawn if s["variant"] == "push"]
    missing = [s for s in series if not len(s["xs"])]
    values = [v for s in timed for v in (*s["mean"], *s["hi"].dropna())]
    unit, scale = ("ms", 1000.0) if values and max(values) < 1.0 else ("s", 1.0)
    figure, ax = plt.subplots(figsize=(8.5, 5))
    handles = [_draw(ax, s, scale) for s in timed]
    ax.set_xscale("log")
    positive = [v for v in values if v > 0]
    if positive and max(positive) / min(positive) > 20:  # rumor (ms) and anti-entropy (s) times on one plot
        ax.set_yscale("log")
    ax.set_xlabel("nodes N (log scale)")
    ax.set_ylabel(f"{fig}: time to reach {what} of the nodes ({unit}"
                  f"{', log scale' if ax.get_yscale() == 'log' else ''})")
    if rounds:
        rax = ax.twinx() if timed else ax
        handles += [_draw(rax, s, label=f"{s['label']} (rounds, right axis)" if timed else None) for s in rounds]
        rax.set_ylabel(f"{fig} of push (rounds)")
    ax.set_title(f"Time to {what} coverage vs cluster size\n(mean over seeds, band: 95 % Student-t interval; "
                 "series shifted sideways a little so none hides another)", fontsize=10)
    if handles:
        ax.legend(handles=handles, fontsize=7, loc="best")
    else:
        ax.text(0.5, 0.5, f"no series reached {what} of the nodes in every seed", transform=ax.transAxes,
                ha="center", va="center")
    if missing:
        note = textwrap.fill(f"Not drawn: {fig} is undefined (some seed never reached {what} of the nodes) for "
                             f"{_missing_note(missing)}", 150)
        figure.text(0.01, 0.01, note, fontsize=7.5, va="bottom")
        figure.tight_layout(rect=(0, 0.025 * (1 + note.count(chr(10))) + 0.01, 1, 1))
    else:
        figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _messages_plot(plt, summary, path: Path) -> Path:
    """Messages per node per update vs fanout, one series per combination of the other varying keys."""
    figure, ax = plt.subplots(figsize=(8.5, 5))
    drawn = [s for s in _series(summary, "fanout", "messages_per_node") if len(s["xs"])]
    _styles(drawn)
    _dodge(drawn, log=False)
    for s in drawn:
        _draw(ax, s)
    ax.set_xlabel("fanout (peers per rumor hop)")
    ax.set_xticks(sorted(summary["fanout"].unique()))
    ax.set_ylabel("messages per node for one update\n(rumor copies + swap answers carrying it)")
    ax.set_title("Message cost of one update vs fanout\n(mean over seeds, band: 95 % Student-t interval, narrower "
                 "than the line where none shows;\nseries shifted sideways a little so none hides another)",
                 fontsize=10)
    ax.legend(fontsize=7, loc="best")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def plot(summary, out: Path) -> list[Path]:
    """From the summary table: t100 and t90 vs N (when N varies) and messages per node vs fanout (when the
    fanout varies), each a mean line with its 95 % band. Returns the files written."""
    import matplotlib.pyplot as plt  # the backend is the caller's: the CLI chose a file-only one, a notebook its own
    out = Path(out)
    made = []
    if "nodes" in summary.columns and summary["nodes"].nunique() > 1:
        made.append(_time_plot(plt, summary, "t100", "100 %", out / "t100_vs_nodes.png"))
        made.append(_time_plot(plt, summary, "t90", "90 %", out / "t90_vs_nodes.png"))
    if "fanout" in summary.columns and summary["fanout"].nunique() > 1:
        made.append(_messages_plot(plt, summary, out / "messages_vs_fanout.png"))
    return made
