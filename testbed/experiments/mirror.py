"""Mirroring a testbed run on the simulator: the same scenario, with the host measured on that run.

This is how the simulator is validated against the real testbed. A recorded run holds every node's CPU time and
packet counts, and, for every copy of every metadata rumor, who sent it, when, and whether (and from whom) its
receiver took the version (`analysis.rumor_hops`). From that, `mirror` builds the simulator's model of the
emulation host and runs the scenario under several seeds. Three models:

- ``host`` (the default): every parameter is read from the run's own heartbeat traffic and CPU accounting, none
  from the rumor curves it is compared with. An idle process that a datagram reaches first waits for a core (the
  wake-up model; copies that reach it meanwhile are handled with the first), for a delay drawn from the delays of
  the heartbeats the nodes took straight from their origin (`analysis.direct_heartbeat_hops_ms`: a heartbeat's
  sequence is its send time, so each is one hop under the run's load, at every phase of the cycle). Then each
  datagram takes the marginal CPU time one more datagram cost a process on the run
  (`analysis.cpu_marginal_per_packet_s`) on one of the host's cores, shared by every node: that is where the
  load a spreading rumor adds comes from. A copy the receiver forwards leaves after a time drawn, per message,
  from those the nodes took to handle that kind of message: the heartbeats they accepted (``hb_handle_ms``: from
  starting on it to its forwards being sent; drawn, not their mean, which a few slow ones pull up), or, for a
  rumor, the rumors they adopted (``md_handle_ms``: a rumor's state is written before its forwards leave, so it
  takes longer; the time each node spent, not when anything arrived), and the receiver is busy meanwhile.
  The simulator drops what the XDP program would (if the run had XDP); copies that arrive before their process
  has taken the first pass it, as on the host.
- ``wakeup``: the whole delay belongs to the receiving process, drawn from the delays of the copies the nodes took
  (``source: adoptions``); no CPU model.
- ``link``: the delay belongs to each copy, drawn from the Kaplan–Meier estimate over all copies
  (``source: rumors``) — the model for a network whose delay is per link (netem on every veth).

The testbed curve is compared with the seeds' pooled curve (the model's expected curve, not one draw of it), by the
Kolmogorov–Smirnov distance of infection times over every rumor of the run.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import MappingProxyType

from .. import analysis
from .. import scenario as scenario_mod
from ..errors import UsageError

MODELS = ("host", "wakeup", "link")
WIRE_MS = 0.05  # one veth hop and the bridge, without the processes at either end


def _measured(run_dir: Path, source: str) -> MappingProxyType:
    return MappingProxyType({"kind": "measured", "run": str(run_dir), "source": source})


def sim_scenario(run_dir: Path | str, *, model: str = "host", wire_ms: float = WIRE_MS):
    """The scenario of the recorded run RUN_DIR, set to run on the simulator with the host measured on that run."""
    run_dir = Path(run_dir)
    history = analysis.load_history(run_dir)
    meta = history.meta
    if meta.get("backend") == "sim":
        raise UsageError(f"{run_dir}: a simulator run; mirror a testbed (netns or mininet) run")
    if model not in MODELS:
        raise UsageError(f"model: must be one of {', '.join(MODELS)}, got {model!r}")
    if not meta.get("file") or not Path(meta["file"]).exists():
        raise UsageError(f"{run_dir}: its scenario file {meta.get('file')!r} is gone; mirror needs it")
    if not analysis.rumor_hops(history):
        raise UsageError(f"{run_dir}: no metadata rumor hops recorded (the scenario must publish, and the nodes "
                           "record metadata_sent)")
    s = scenario_mod.load(meta["file"])
    wire = MappingProxyType({"kind": "constant", "ms": wire_ms})
    if model == "host":
        if not analysis.direct_heartbeat_hops_ms(history, quantiles=1):
            raise UsageError(f"{run_dir}: its stats records carry no hb_hop_ms (recorded by an older version); "
                             "run it again, or mirror it with --model wakeup")
        cores = int(meta.get("host_cpus") or 1)
        sim = {"latency": wire, "wakeup": _measured(run_dir, "direct_heartbeats"),
               "handling": MappingProxyType({"run": str(run_dir), "rumors": True}),
               "cpu": MappingProxyType({"cores": cores, "run": str(run_dir), "cost": "marginal", "shared": True})}
        xdp = bool(meta.get("xdp"))
    elif model == "wakeup":
        sim = {"latency": wire, "wakeup": _measured(run_dir, "adoptions")}
        xdp = False  # the adoption delays already hold every wake-up, including those duplicates caused
    else:
        sim = {"latency": _measured(run_dir, "rumors")}
        xdp = bool(meta.get("xdp"))
    s = s.with_overrides(nodes=int(meta["nodes"]), backend="sim", xdp=xdp)
    return replace(s, sim=MappingProxyType({"fidelity": "full", **sim}))


def mirror(run_dir: Path | str, out: Path | str, *, seeds: int = 5, model: str = "host",
           wire_ms: float = WIRE_MS, progress=False) -> dict:
    """Run the scenario of RUN_DIR on the simulator under SEEDS seeds (into OUT/seed-K), with the host model
    measured on RUN_DIR; return the comparison (`analysis.compare_runs` over every rumor, seeds pooled).
    The seeds' runs are checked but not plotted: what a mirror is read by is the comparison (``testbed mirror``
    draws it), and ``testbed plot OUT/seed-K`` draws one seed's plots from its history.
    PROGRESS (see `testbed.progress.as_progress`): each simulator run's phases, labelled with its seed."""
    from ..progress import as_progress
    from ..runner import run_scenario as run_sim

    if seeds < 1:
        raise UsageError(f"seeds: must be >= 1, got {seeds}")
    p = as_progress(progress, "mirror")
    p.phase("measuring the host model on the run")
    s = replace(sim_scenario(run_dir, model=model, wire_ms=wire_ms), plots=())
    p.end()
    out = Path(out)
    runs = []
    for k in range(seeds):
        d = out / f"seed-{k}"
        with p.within(f"seed {k + 1}/{seeds}"):
            run_sim(replace(s, seed=s.seed + k), d, progress=p)
        runs.append(d)
    p.phase(f"comparing with {len(runs)} simulator run(s)")
    result = analysis.compare_runs(run_dir, runs, index=None)
    p.end()
    result.update(model=model, runs=[str(d) for d in runs])
    return result
