"""Running a scenario: the entry point the command line, the experiments and the notebooks share.

`run_scenario` picks the scenario's `Cluster` (real hosts or the simulator) and runs the one timeline interpreter
on it; dissemination fidelity, a different model, has its own short runner. `run_subprocess` runs one in a child
process, for callers that already run an event loop.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import threading
from pathlib import Path

from .cluster import for_scenario
from .errors import TestbedError
from .interpreter import Interpreter, prepare_out
from .progress import Progress, as_progress
from .scenario import Scenario


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived during a run: handled as Ctrl-C is (faults stopped, nodes read, everything removed)."""


@contextlib.contextmanager
def _sigterm_ends_the_run_cleanly():
    """While a run is in progress in this process's main thread, SIGTERM raises `Terminated` instead of killing the
    process where it stands (which left every namespace, link, program and node process behind: a killed
    benchmark did). A further SIGTERM during the teardown is ignored, so the teardown finishes; SIGKILL still ends
    it. A handler the caller installed is left alone."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return
    fired = False

    def on_term(signum, frame):
        nonlocal fired
        if not fired:
            fired = True
            raise Terminated()

    signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def run_scenario(scenario: Scenario, out_dir: Path, *, progress: bool | Progress = False) -> dict:
    """Run SCENARIO into the new run directory OUT_DIR and return its summary. PROGRESS: shown on stderr (True),
    not (False), or on a caller's `Progress`, which the run's phases then share. SIGTERM during the run ends it as
    Ctrl-C does (`Terminated`, a KeyboardInterrupt), after removing everything it made."""
    with _sigterm_ends_the_run_cleanly():
        return _run(scenario, out_dir, progress)


def _run(scenario: Scenario, out_dir: Path, progress: bool | Progress) -> dict:
    out = prepare_out(Path(out_dir))
    p = as_progress(progress)
    if scenario.backend == "sim" and scenario.sim.get("fidelity") == "dissemination":
        from .cluster.simulated import run_dissemination
        p.phase(f"dissemination over {scenario.nodes:,} nodes")
        summary = run_dissemination(scenario, out)
        p.end()
        return summary
    try:
        return Interpreter(scenario, for_scenario(scenario, out, progress=p), out, progress=p).run()
    finally:
        p.end()  # a phase an error cut short still gets its last line


def run_subprocess(scenario: str, out_dir: Path | str, *, backend: str | None = None, nodes: int | None = None,
                   seed: int | None = None, xdp: bool = True) -> dict:
    """Run a scenario in a child ``python -m testbed run`` and return its summary.

    For callers that already run an event loop (a Jupyter kernel): the netlink library the network layer uses
    drives its own loop and cannot nest in a running one.
    """
    argv = [sys.executable, "-m", "testbed", "run", str(scenario), "--out", str(out_dir), "--quiet"]
    for flag, value in (("--backend", backend), ("--nodes", nodes), ("--seed", seed)):
        if value is not None:
            argv += [flag, str(value)]
    if not xdp:
        argv.append("--no-xdp")
    r = subprocess.run(argv, capture_output=True, text=True)
    summary = Path(out_dir) / "summary.json"
    if not summary.exists():
        raise TestbedError(f"`{' '.join(argv)}` produced no summary (exit {r.returncode}):\n{r.stderr[-2000:]}")
    return json.loads(summary.read_text())
