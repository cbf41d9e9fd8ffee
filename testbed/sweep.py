"""Parameter sweeps: a grid of simulator runs on every local core (or a Dask cluster), one tidy table, summary plots.

A sweep file names a grid (``fanout``, ``loss``, ``nodes``, ``variant``, ...), a number of seeds, and a fidelity:

```yaml
name: fanout-vs-loss
fidelity: dissemination        # one rumor over fixed views (fast, up to 10^6 nodes) — or: full (a scenario)
grid: {nodes: [1000, 10000], fanout: [2, 3, 4], loss: [0.0, 0.2], variant: [protocol, push, infect_and_die]}
seeds: 5
engine: local                  # local (default: a process pool) or dask (the `distributed` extra)
```

With ``fidelity: full`` the file also names a ``scenario`` whose node count, fanout and loss the grid overrides.
The result directory holds ``results.csv`` (one row per run: the grid point, the seed and the measured figures),
``t90_vs_nodes.png`` and ``messages_vs_fanout.png``.

Dask rather than Ray for the distributed engine: it installs from PyPI as pure Python, runs the same code on local
processes or a cluster, and its `Client.map` is all a grid of independent runs needs.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from .errors import ScenarioError
from .scenario import _Doc, _fields, read_text

GRID_KEYS = {"nodes": int, "fanout": int, "loss": (int, float), "variant": str}
VARIANTS = ("protocol", "push", "infect_and_die")


def load(path: str) -> dict:
    p = Path(path)
    doc = _Doc(str(p), read_text(p, "sweep"))
    spec = {
        "name": (str, True, None, None),
        "fidelity": (str, False, "dissemination", lambda v: None if v in ("dissemination", "full") else
                     "must be dissemination or full"),
        "scenario": (str, False, None, None),
        "grid": (dict, True, None, None),
        "seeds": (int, False, 3, lambda v: None if 1 <= v <= 1000 else "must be 1..1000"),
        "engine": (str, False, "local", lambda v: None if v in ("local", "dask") else "must be local or dask"),
        "workers": (int, False, None, lambda v: None if v >= 1 else "must be >= 1"),
        "dask_scheduler": (str, False, None, None),
    }
    v = _fields(doc, doc.value, (), spec)
    grid = v["grid"]
    for key, values in grid.items():
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
    if v["fidelity"] == "full":
        if not v.get("scenario"):
            raise doc.error((), "fidelity full needs 'scenario' (the scenario the grid overrides)")
        if "variant" in grid:
            raise doc.error(("grid", "variant"), "variants belong to the dissemination fidelity")
    v["file"] = str(p)
    return v


def points(sweep: dict) -> list[dict]:
    grid = sweep["grid"]
    keys = sorted(grid)
    out = []
    for combo in itertools.product(*(grid[k] for k in keys)):
        for seed in range(sweep["seeds"]):
            out.append({**dict(zip(keys, combo)), "seed": seed})
    return out


def run_point(fidelity: str, point: dict, scenario_path: str | None = None) -> dict:
    """One run of the grid; returns its row (a flat dict). Runs in a worker process."""
    t = time.perf_counter()
    if fidelity == "dissemination":
        from .sim import disseminate
        r = disseminate(point.get("nodes", 1000), point.get("variant", "protocol"), fanout=point.get("fanout", 3),
                        loss=float(point.get("loss", 0.0)), seed=point["seed"])
        finite = sorted(x for x in r.informed_at.tolist() if math.isfinite(x))

        def t_at(frac):
            k = math.ceil(frac * r.n) - 1
            return finite[k] if k < len(finite) else None
        return {**point, "fraction": r.final_fraction, "t50": t_at(0.5), "t90": t_at(0.9), "t100": t_at(1.0),
                "messages": r.messages_sent, "messages_per_node": r.messages_sent / r.n,
                "duplicates": r.duplicates, "wall_s": time.perf_counter() - t}
    from . import scenario as scenario_mod
    from .sim_runner import run_sim
    from types import MappingProxyType
    s = scenario_mod.load(scenario_path).with_overrides(backend="sim", nodes=point.get("nodes"),
                                                        seed=point["seed"] + 1)
    if "fanout" in point:
        s = s.__class__(**{**{f: getattr(s, f) for f in s.__dataclass_fields__},
                           "node": MappingProxyType({**s.node, "fanout": point["fanout"]})})
    if "loss" in point and point["loss"] > 0:
        from .scenario import Step
        step = Step(at_s=0.0, kind="fault", action="loss", until_s=s.duration_s,
                    params=MappingProxyType({"rate": float(point["loss"]), "node": "all"}))
        s = s.__class__(**{**{f: getattr(s, f) for f in s.__dataclass_fields__},
                           "timeline": (step,) + tuple(x for x in s.timeline if x.action != "loss")})
    with tempfile.TemporaryDirectory(prefix="sweep-") as tmp:
        summary = run_sim(s, Path(tmp) / "run")
    rumors = summary["rumors"]
    t100 = [r["t100"] for r in rumors if r["t100"] is not None]
    return {**point, "passed": summary["passed"], "fraction": min((r["coverage"][-1][1] for r in rumors
                                                                   if r["coverage"]), default=None),
            "t50": _mean([r["t50"] for r in rumors]), "t90": _mean([r["t90"] for r in rumors]), "t100": _mean(t100),
            "messages": sum(r["messages"] for r in rumors),
            "messages_per_node": sum(r["messages"] for r in rumors) / max(1, len(rumors)) / s.nodes,
            "wall_s": time.perf_counter() - t}


def _mean(xs):
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def _progress(done: int, total: int, started: float) -> None:
    width = 30
    filled = int(width * done / total)
    elapsed = time.monotonic() - started
    eta = elapsed / done * (total - done) if done else 0.0
    sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} runs, {elapsed:5.1f} s, "
                     f"~{eta:4.0f} s left")
    sys.stderr.flush()
    if done == total:
        sys.stderr.write("\n")


def run(sweep: dict, out: Path, *, progress: bool = True):
    """Run every point of SWEEP, write the table and the plots to OUT, and return the table (a DataFrame)."""
    import pandas as pd
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    todo = points(sweep)
    scenario_path = None
    if sweep["fidelity"] == "full":
        from . import scenario as scenario_mod
        scenario_path = str(scenario_mod.find(sweep["scenario"]))
    rows = []
    started = time.monotonic()
    if sweep["engine"] == "dask":
        try:
            from dask.distributed import Client, as_completed as dask_completed
        except ImportError:
            raise ScenarioError(sweep["file"], None, "engine",
                                "dask is not installed: pip install '.[distributed]' (or use engine: local)") from None
        with Client(sweep.get("dask_scheduler") or None) as client:
            futures = client.map(lambda p: run_point(sweep["fidelity"], p, scenario_path), todo, pure=False)
            for i, fut in enumerate(dask_completed(futures), 1):
                rows.append(fut.result())
                if progress:
                    _progress(i, len(todo), started)
    else:
        workers = sweep.get("workers") or os.cpu_count() or 1
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = [pool.submit(run_point, sweep["fidelity"], p, scenario_path) for p in todo]
            for i, fut in enumerate(as_completed(futures), 1):
                rows.append(fut.result())
                if progress:
                    _progress(i, len(todo), started)
    keys = sorted(sweep["grid"]) + ["seed"]
    df = pd.DataFrame(rows).sort_values(keys).reset_index(drop=True)
    for col in ("t50", "t90", "t100", "fraction"):  # None (never reached) becomes NaN
        if col in df.columns:
            df[col] = pd.to_numeric(df[col], errors="coerce")
    df.to_csv(out / "results.csv", index=False)
    (out / "sweep.json").write_text(json.dumps({k: v for k, v in sweep.items()}, indent=1, default=str))
    plot(df, out)
    return df


def _series(df, keys: list[str], x: str, y: str):
    """Per combination of KEYS: (label, x values, mean of Y, half-width of its 95 % confidence interval)."""
    groups = df.groupby(keys) if keys else [((), df)]
    for key, g in groups:
        stats = g.groupby(x)[y].agg(["mean", "std", "count"]).reset_index()
        if stats.empty:
            continue
        half = 1.96 * stats["std"].fillna(0) / stats["count"].clip(lower=1) ** 0.5
        label = ", ".join(f"{k}={v}" for k, v in zip(keys, key if isinstance(key, tuple) else (key,)))
        yield label or y, stats[x], stats["mean"], half


def plot(df, out: Path) -> list[Path]:
    """Coverage time vs N with 95 % confidence bands (per fanout/variant), and messages per node vs fanout.

    The time plotted is t90: a single rumor under the forwarding rules alone (no anti-entropy) often informs
    98-99 % of the nodes and never 100 %, so t100 would leave most series empty.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def varying(*cols):
        return [k for k in cols if k in df.columns and df[k].nunique() > 1]

    def save(fig, ax, name: str) -> Path:
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        return out / name

    made = []
    if varying("nodes"):
        fig, ax = plt.subplots(figsize=(8, 4.5))
        # runs that never reached 90 % have no t90
        for label, xs, mean, half in _series(df.dropna(subset=["t90"]), varying("variant", "fanout", "loss"),
                                             "nodes", "t90"):
            ax.plot(xs, mean, marker="o", lw=1.3, label=label)
            ax.fill_between(xs, mean - half, mean + half, alpha=0.2)
        ax.set_xscale("log")
        ax.set_xlabel("nodes")
        ax.set_ylabel("t90: time to reach 90 % of the nodes (s; rounds for push)")
        ax.set_title("Time to 90 % coverage vs cluster size (mean, 95 % band over seeds)")
        made.append(save(fig, ax, "t90_vs_nodes.png"))
    if varying("fanout"):
        fig, ax = plt.subplots(figsize=(8, 4.5))
        for label, xs, mean, half in _series(df, varying("variant", "loss", "nodes"), "fanout", "messages_per_node"):
            ax.errorbar(xs, mean, yerr=half, marker="o", capsize=3, label=label)
        ax.set_xlabel("fanout")
        ax.set_ylabel("messages per node per update")
        ax.set_title("Message cost of one update vs fanout (mean, 95 % CI over seeds)")
        made.append(save(fig, ax, "messages_vs_fanout.png"))
    return made
