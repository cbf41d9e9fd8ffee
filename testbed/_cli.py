"""``python -m testbed``: run a scenario, redraw a run's plots, or clean up what killed runs left behind.

A mistake the user can make (a bad value, a path that is not a run or cannot be written, a bad scenario file) is
reported in one line on stderr, naming what is wrong, with exit status 2: argument values are checked by their
argparse types, paths and run directories before any work starts, and the package's `ScenarioError` and
`UsageError` are turned into that line here. Nothing else is caught: a bug of ours still shows its traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from . import scenario as scenario_mod
from .errors import ScenarioError, TestbedError, TopologyError, UsageError

# analysis, plots and the interpreter are imported by the commands that use them: with matplotlib and the fault
# modules they take a second, which a mistaken argument should not wait for


class _Parser(argparse.ArgumentParser):
    """argparse, its errors in one line: ``prog: error: message`` (the usage it would print first is --help's)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _int_in(low: int, high: int):
    """An argparse type: an integer in LOW..HIGH."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be {low}..{high}, got {value}")
        return value
    return parse


def rumor_choice(text: str) -> int | None:
    """``--rumor``: the index of a published version (0: the first), or ``all`` (None: every rumor pooled)."""
    if text == "all":
        return None
    if not (text.isascii() and text.isdigit()):
        raise argparse.ArgumentTypeError(f"expected a rumor index (0, 1, ...) or all, got {text!r}")
    return int(text)


def _unwritable(p: Path) -> str | None:
    """Why the file P cannot be written (its directory must exist: a plot is not worth a directory tree), or None."""
    parent = p.parent
    if p.is_dir():
        return f"{p} is a directory; name the plot file (e.g. {p / 'compare.png'})"
    if not parent.exists():
        return f"{p}: the directory {parent} does not exist"
    if not parent.is_dir():
        return f"{p}: {parent} is not a directory"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"{p}: the directory {parent} is not writable"
    return None


def plot_file(text: str) -> Path:
    """An output file in a writable directory: checked before the comparison is computed."""
    problem = _unwritable(Path(text))
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return Path(text)


def run_id(text: str) -> str:
    from .net.topology import check_run_id
    try:
        return check_run_id(text)
    except TopologyError as e:
        raise argparse.ArgumentTypeError(str(e).split(": ", 1)[-1]) from None


def _table(summary: dict) -> str:
    lines = [f"scenario {summary['scenario']}  backend {summary['backend']}  nodes {summary['nodes']}  "
             f"xdp {'on' if summary.get('xdp') else 'off'}", ""]
    width = max((len(c["name"]) for c in summary["checks"]), default=10)
    for c in summary["checks"]:
        verdict = {True: "PASS", False: "FAIL", None: "----"}[c["passed"]]
        lines.append(f"  {verdict}  {c['name']:<{width}}  {c['detail']}")
    if summary["rumors"]:
        lines.append("")
        lines.append(f"  {'version':>15} {'origin':>6} {'t50 s':>7} {'t90 s':>7} {'t100 s':>7} {'msgs':>6}")
        fmt = lambda v: f"{v:7.3f}" if v is not None else "      -"  # noqa: E731
        for r in summary["rumors"]:
            lines.append(f"  {r['version']:>15} {r['origin_node']:>6} {fmt(r['t50'])} {fmt(r['t90'])} "
                         f"{fmt(r['t100'])} {r['messages']:>6}")
    p = summary["packets"]
    lines.append("")
    lines.append(f"  packets: in {p['packets_in']}  out {p['packets_out']}  dropped by nodes {p['dropped']}  "
                 f"dropped by XDP {p['xdp_dropped']}")
    lines.append(f"  result: {'PASSED' if summary['passed'] else 'FAILED'}")
    return "\n".join(lines)


def cmd_run(args) -> int:
    s = scenario_mod.load(args.scenario)
    s = s.with_overrides(nodes=args.nodes, backend=args.backend, seed=args.seed,
                         xdp=False if args.no_xdp else None)
    if s.backend != "sim" and os.geteuid() != 0:
        raise UsageError(f"the {s.backend} backend needs root (namespaces, veth, BPF); try --backend sim")
    out = Path(args.out) if args.out else Path("runs") / f"{s.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    if args.trace_sched:
        return _run_traced(args, s, out)
    from .runner import run_scenario
    summary = run_scenario(s, out, progress=not args.quiet)
    print(_table(summary))
    written = summary.get("plots", [])
    print(f"\nrun directory: {out}  (plots: {', '.join(written) if written else 'none'})")
    return 0 if summary["passed"] else 1


def _run_traced(args, s, out: Path) -> int:
    """`run --trace-sched`: the same run in a child process, with the scheduler traced from this one (see
    `testbed.schedtrace`); the trace goes into the run directory and its report is printed after the run's."""
    if s.backend == "sim":
        raise UsageError("--trace-sched traces real node processes: not with the sim backend")
    from . import schedtrace
    from .interpreter import prepare_out
    prepare_out(out)  # refused here if it holds a run, before anything is traced
    argv = [sys.executable, "-m", "testbed", "run", args.scenario, "--out", str(out)]
    for flag, value in (("--backend", args.backend), ("--nodes", args.nodes), ("--seed", args.seed)):
        if value is not None:
            argv += [flag, str(value)]
    argv += ["--no-xdp"] * bool(args.no_xdp) + ["--quiet"] * bool(args.quiet)
    rc = schedtrace.record(out / schedtrace.TRACE_FILE, argv)
    if (out / "events.jsonl").is_file():
        print()
        print(schedtrace.format_report(schedtrace.report(out)))
    return rc


def cmd_plot(args) -> int:
    run_dir = Path(args.run_dir)
    summary = _summary(run_dir)
    if not (run_dir / "events.jsonl").is_file():
        raise UsageError(f"{run_dir} is not a run directory (no events.jsonl)")
    from . import analysis, plots
    from .interpreter import output_dir
    out = output_dir(args.out, "plot directory") if args.out else run_dir
    history = analysis.load_history(run_dir)
    # the run's own plots; all of them for a run that drew none (a mirror's seeds: `experiments.mirror`)
    for p in plots.draw_all(out, history, summary, [Path(n).stem for n in summary["plots"]]
                            if summary.get("plots") else None):
        print(p)
    return 0


def _summary(run_dir: Path | str) -> dict:
    """The summary of an analysed run directory, or a `UsageError` saying why RUN_DIR is not one."""
    path = Path(run_dir) / "summary.json"
    if not Path(run_dir).is_dir():
        raise UsageError(f"{run_dir} is not an analysed run directory (no such directory)")
    if not path.is_file():
        raise UsageError(f"{run_dir} is not an analysed run directory (no summary.json)")
    try:
        summary = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise UsageError(f"{path}: not a run summary (invalid JSON at line {e.lineno})") from None
    if not isinstance(summary, dict) or not isinstance(summary.get("rumors"), list):
        raise UsageError(f"{path}: not a run summary (no rumors)")
    return summary


def _print_comparison(result: dict, a_label: str, b_label: str) -> None:
    for tag, d, r in (("A", a_label, result["a"]), ("B", b_label, result["b"])):
        print(f"{tag}: {d} ({r['backend']}, {r['nodes']} nodes, {r['runs']} run(s), {r['rumors']} rumor(s), "
              f"{r['samples']} samples, median t50 {r['t50']} s, t100 {r['t100']} s)")
    print(f"Kolmogorov-Smirnov distance between the infection curves: {result['ks']:.3f}")
    if len(result["per_run"]) > 1:
        print("  each B run on its own: " + " ".join(f"{k:.3f}" for k in result["per_run"]))


def cmd_compare(args) -> int:
    index = args.rumor
    for d in (args.run_a, *args.run_b):
        rumors = len(_summary(d)["rumors"])
        if not rumors:
            raise UsageError(f"{d}: no rumor to compare (its scenario published nothing)")
        if index is not None and index >= rumors:
            raise UsageError(f"--rumor {index}: {d} has {rumors} rumor(s) (0..{rumors - 1}, or all)")
    out = args.out or Path(args.run_b[0]) / "compare.png"
    if problem := _unwritable(out):
        raise UsageError(problem)
    from . import analysis, plots
    run_b = args.run_b[0] if len(args.run_b) == 1 else args.run_b
    result = analysis.compare_runs(args.run_a, run_b, index)
    _print_comparison(result, args.run_a, " + ".join(args.run_b))
    plots.compare([args.run_a, args.run_b], out, index=index, title=f"KS distance {result['ks']:.3f}")
    print(f"plot: {out}")
    return 0


def cmd_validate(args) -> int:
    from .experiments import validate
    names = validate.SET
    if args.only:
        known = {Path(n).stem: n for n in names}
        for name in args.only:
            if name not in known:
                raise UsageError(f"--only {name}: not in the validation set ({', '.join(known)})")
        names = tuple(known[n] for n in args.only)
    if os.geteuid() != 0:
        raise UsageError("validate runs the testbed, which needs root (namespaces, veth, BPF)")
    from .interpreter import output_dir
    out = output_dir(args.out or f"runs/validate-{time.strftime('%Y%m%d-%H%M%S')}", "--out")
    rows = validate.validate(out, scenarios=names, runs=args.runs, seeds=args.seeds, progress=not args.quiet)
    print(validate.table(rows))
    print(f"\nrows: {out / 'validation.json'}")
    return 0 if all(r.passed for r in rows) else 1


def cmd_mirror(args) -> int:
    _summary(args.run_dir)
    if not (Path(args.run_dir) / "events.jsonl").is_file():
        raise UsageError(f"{args.run_dir} is not a run directory (no events.jsonl)")
    out = Path(args.out) if args.out else Path(args.run_dir) / f"mirror-{args.model}"
    if out.is_dir() and any(out.iterdir()):
        raise UsageError(f"{out} is not empty; choose another --out")
    from . import plots
    from .experiments import mirror
    result = mirror.mirror(args.run_dir, out, seeds=args.seeds, model=args.model, progress=not args.quiet)
    _print_comparison(result, args.run_dir, f"{out} (simulator, {args.model} model)")
    plots.compare([args.run_dir, result["runs"]], out / "compare.png", index=None,
                  title=f"KS distance {result['ks']:.3f}")
    print(f"plot: {out / 'compare.png'}")
    return 0


def cmd_sweep(args) -> int:
    from .experiments import sweep as sweep_mod
    from .interpreter import output_dir
    spec = sweep_mod.load(args.sweep)
    if args.seeds is not None:
        spec["seeds"] = args.seeds
    out = Path(args.out) if args.out else Path("runs") / f"sweep-{spec['name']}-{time.strftime('%Y%m%d-%H%M%S')}"
    output_dir(out, "result directory")
    df = sweep_mod.run(spec, out, progress=not args.quiet)
    cols = sweep_mod.point_keys(df)
    print(df.groupby(cols)[["t50", "t90", "t100", "messages_per_node", "fraction"]].mean().round(3).to_string())
    print(f"\nresults: {out / 'results.csv'}  plots: {out}")
    return 0


def cmd_clean(args) -> int:
    from .net.cleanup import clean, find_leftovers
    if args.dry_run:
        found = find_leftovers(args.run_id, force=args.force)
    else:
        found = clean(args.run_id, force=args.force)
    print(found.summary() if found else "nothing left over")
    for run in found.in_progress:
        print(run)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m testbed", description="Run gossip scenarios on real nodes.")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run a scenario and check it")
    r.add_argument("scenario", help="a YAML file, or the name of one in scenarios/")
    r.add_argument("--backend", choices=scenario_mod.BACKENDS)
    r.add_argument("--nodes", type=int)
    r.add_argument("--out", help="run directory (default runs/<scenario>-<timestamp>)")
    r.add_argument("--seed", type=int)
    r.add_argument("--no-xdp", action="store_true", help="run the nodes without the XDP fast path")
    r.add_argument("--quiet", action="store_true", help="no progress on stderr")
    r.add_argument("--trace-sched", action="store_true",
                   help="trace the kernel's scheduler while the nodes run (root, bcc): RUN_DIR/sched.jsonl, and "
                        "where their waits for a CPU went")
    r.set_defaults(fn=cmd_run)
    pl = sub.add_parser("plot", help="redraw the plots of a run directory")
    pl.add_argument("run_dir")
    pl.add_argument("--out", metavar="DIR", help="draw into DIR, created if need be (default RUN_DIR)")
    pl.set_defaults(fn=cmd_plot)
    cp = sub.add_parser("compare", help="KS distance between two runs' infection curves, and both on one plot")
    cp.add_argument("run_a")
    cp.add_argument("run_b", nargs="+", help="one run, or several (e.g. seeds of one scenario) pooled")
    cp.add_argument("--rumor", type=rumor_choice, default=0,
                    help="which published version (0: the first; all: pool them)")
    cp.add_argument("--out", type=plot_file, help="plot file, in an existing directory (default RUN_B/compare.png)")
    cp.set_defaults(fn=cmd_compare)
    mp = sub.add_parser("mirror", help="run a recorded testbed run's scenario on the simulator, with the host "
                                       "measured on that run, and compare the two")
    mp.add_argument("run_dir")
    mp.add_argument("--seeds", type=_int_in(1, 1000), default=5, help="simulator runs to pool (default 5)")
    mp.add_argument("--model", choices=("host", "wakeup", "link"), default="host",
                    help="host: each process's wait for a core drawn from how late the run's timers ran, with "
                         "the XDP model (default); wakeup: each node's measured rumor wait; link: a measured "
                         "delay per copy")
    mp.add_argument("--out", help="directory for the simulator runs (default RUN_DIR/mirror-MODEL)")
    mp.add_argument("--quiet", action="store_true", help="no progress on stderr")
    mp.set_defaults(fn=cmd_mirror)
    va = sub.add_parser("validate", help="run the simulator's validation set on the testbed, mirror every run "
                                         "with the host model and print one table (needs root)")
    va.add_argument("--out", help="result directory (default runs/validate-<timestamp>)")
    va.add_argument("--runs", type=_int_in(1, 100), default=2, help="testbed runs per scenario (default 2)")
    va.add_argument("--seeds", type=_int_in(1, 1000), default=5, help="simulator seeds per run (default 5)")
    va.add_argument("--only", action="append", metavar="NAME",
                    help="run only this scenario of the set (repeatable; see testbed/experiments/validate.py)")
    va.add_argument("--quiet", action="store_true", help="no progress on stderr")
    va.set_defaults(fn=cmd_validate)
    sw = sub.add_parser("sweep", help="run a grid of simulator runs on all cores and tabulate them")
    sw.add_argument("sweep", help="a sweep YAML file, or the name of one in sweeps/")
    sw.add_argument("--out", help="result directory (default runs/sweep-<name>-<timestamp>)")
    sw.add_argument("--seeds", type=_int_in(1, 1000), help="override the number of seeds (1..1000)")
    sw.add_argument("--quiet", action="store_true", help="no progress on stderr")
    sw.set_defaults(fn=cmd_sweep)
    c = sub.add_parser("clean", help="remove namespaces, links, BPF pins and processes left by killed runs",
                       description="Remove what runs whose owner is gone (killed, crashed) left behind. Runs still "
                       "in progress are left alone and listed, unless --force or --run-id names them.")
    c.add_argument("--run-id", type=run_id, help="only this run's leftovers, even if the run is in progress")
    c.add_argument("--force", action="store_true", help="every run's, runs in progress too (stops them)")
    c.add_argument("--dry-run", action="store_true", help="list, do not remove")
    c.set_defaults(fn=cmd_clean)
    return p


def main(argv: list[str] | None = None) -> int:
    import matplotlib
    matplotlib.use("Agg")  # the command line draws files only; the plots module leaves notebooks their backend
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except (ScenarioError, UsageError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except TestbedError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:
        from .runner import Terminated
        print(f"{'terminated' if isinstance(e, Terminated) else 'interrupted'}: everything the run created has been "
              "removed", file=sys.stderr)
        return 143 if isinstance(e, Terminated) else 130
