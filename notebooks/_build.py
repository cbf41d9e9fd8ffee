"""Writes the notebooks in this folder from the cells below (run it after editing them; the .ipynb files are
what users open and what the tests execute)."""

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook



def parameters(source: str):
    """The notebook's parameter cell: plain assignments, tagged ``parameters`` as papermill expects, so
    ``papermill -p NODES 16`` (or a harness injecting a cell after it, as tests/test_notebooks.py does) overrides
    them."""
    return new_code_cell("# parameters: papermill (or any harness) may override these in a cell after this one\n"
                         + source, metadata={"tags": ["parameters"]})


NOTEBOOKS = {
    "quickstart.ipynb": [
        new_markdown_cell("# Quickstart: a scenario on the simulator\n\nRuns `scenarios/basic.yaml` on the "
                          "discrete-event simulator (no root needed), loads the run directory into pandas and "
                          "plots the infection curve of one rumor, next to the theory for a single rumor "
                          "(infect-and-die's final fraction)."),
        parameters("NODES = 64  # basic.yaml scaled to this many simulated nodes"),
        new_code_cell("""import tempfile, pathlib
from testbed import scenario, analysis
from testbed.runner import run_scenario

s = scenario.load("basic.yaml").with_overrides(backend="sim", nodes=NODES)
out = pathlib.Path(tempfile.mkdtemp(prefix="quickstart-")) / "run"
summary = run_scenario(s, out)
print("passed:", summary["passed"])
for c in summary["checks"]:
    print(f"  {c['name']:<22} {c['passed']}  {c['detail']}")"""),
        new_code_cell("""df = analysis.coverage_frame([out])
df.head()"""),
        new_code_cell("""from IPython.display import Image, display
from testbed import plots

# the run's own figures, as `python -m testbed run` draws them: the infection curve against the time since the
# publish, with the mean-field infect-and-die curve at this run's measured hop delay beside it, and the latency
history = analysis.load_history(out)
for name in ("infection", "latency"):
    display(Image(filename=str(plots.draw_all(out, history, summary, [name])[0])))
assert summary["passed"] and df["fraction"].max() == 1.0"""),
        new_code_cell("""import matplotlib.pyplot as plt
import numpy as np
from testbed.sim import Constant, disseminate, theory

# the forwarding rule alone, hop by hop (every hop 1 ms), on 10,000 simulated nodes, against the mean-field curve
fig, ax = plt.subplots(figsize=(7, 4))
for f, c in ((2, "C0"), (3, "C1"), (4, "C2")):
    ys = theory.infect_and_die_curve(10_000, f)
    ax.plot(range(len(ys)), ys, "--", color=c, lw=1, label=f"mean field, f={f} (limit {theory.infect_and_die_fraction(f):.3f})")
    hops = [np.round(disseminate(10_000, "infect_and_die", fanout=f, seed=s,
                                 latency=Constant(delay_s=0.001)).informed_at / 0.001) for s in range(3)]
    measured = np.mean([[np.mean(h <= k) for k in range(len(ys))] for h in hops], axis=0)
    ax.plot(range(len(ys)), measured, "o", color=c, ms=4, label=f"simulated, f={f} (3 seeds)")
ax.set_xlabel("hop"); ax.set_ylabel("fraction of nodes informed"); ax.set_ylim(0, 1.02)
ax.set_title("Infect-and-die on 10,000 nodes: simulation against the mean-field curve", fontsize=10)
ax.legend(fontsize=7, loc="lower right")
plt.show()"""),
    ],
    "testbed.ipynb": [
        new_markdown_cell("# The real testbed: churn with XDP on and off\n\nRuns `scenarios/churn.yaml` on "
                          "real nodes in network namespaces (needs root), once with the XDP fast path and once "
                          "without, then compares their infection curves and the CPU the nodes spent."),
        parameters("NODES = 64  # churn.yaml's size (each run takes about a minute at 64)"),
        new_code_cell("""import tempfile, pathlib, json
from testbed import analysis
from testbed.runner import run_subprocess

base = pathlib.Path(tempfile.mkdtemp(prefix="testbed-nb-"))
runs = {}
for xdp in (True, False):
    out = base / ("xdp-on" if xdp else "xdp-off")
    runs[xdp] = run_subprocess("churn.yaml", out, nodes=NODES, xdp=xdp)
    print(f"XDP {'on ' if xdp else 'off'}: passed={runs[xdp]['passed']}  packets={runs[xdp]['packets']}")"""),
        new_code_cell("""import matplotlib.pyplot as plt
fig, ax = plt.subplots(figsize=(7, 4))
for xdp, summary in runs.items():
    r = summary["rumors"][0]
    ax.step([1e-4] + [max(dt, 1e-4) for dt, _ in r["coverage"]], [0] + [f for _, f in r["coverage"]], where="post",
            label=f"XDP {'on' if xdp else 'off'} (t100 {r['t100']} s)")
ax.set_xscale("log"); ax.set_xlabel("seconds since publish (log scale)"); ax.set_ylabel("fraction of live nodes")
ax.set_title("First publish during churn, XDP on and off", fontsize=10); ax.legend()
print("KS distance between the two first rumors:", round(analysis.compare_runs(base / "xdp-on", base / "xdp-off")["ks"], 3))
plt.show()"""),
        new_code_cell("""from IPython.display import Image, display
# the figures the run itself drew (python -m testbed run draws the same): one time axis, fault windows shaded
for name in ("convergence", "messages"):
    display(Image(filename=str(base / "xdp-on" / f"{name}.png")))"""),
        new_code_cell("""def node_cpu(run_dir):
    # userspace work per node: packets that reached the node (the rest XDP dropped in the kernel)
    stats = json.loads((run_dir / "stats.json").read_text())["nodes"]
    return sum(n["packets_in"] for n in stats.values()), sum(sum(n.get("xdp", {}).get("dropped", {}).values()) for n in stats.values())

for name in ("xdp-on", "xdp-off"):
    into_userspace, xdp_dropped = node_cpu(base / name)
    print(f"{name}: packets reaching userspace {into_userspace}, dropped in the kernel {xdp_dropped}")
assert runs[True]["packets"]["xdp_dropped"] > 0 and runs[False]["packets"]["xdp_dropped"] == 0"""),
    ],
    "validation.ipynb": [
        new_markdown_cell("# Validation: the simulator against theory and against the testbed\n\n"
                          "1. Round-based push with fanout 1 needs log2(n) + ln(n) rounds on average (Pittel).\n"
                          "2. Infect-and-die with fanout f reaches the fraction π solving π = 1 − e^(−fπ).\n"
                          "3. `validation.yaml` (`NODES` nodes, ten publishes) on the testbed (needs root), mirrored on the "
                          "simulator with the host measured on that run (`testbed.experiments.mirror`): KS distance of the "
                          "infection-time distributions, every rumor pooled."),
        parameters("SEEDS = 50        # simulated runs per closed-form check\n"
                   "NODES = 64        # validation.yaml's size on the testbed\n"
                   "MIRROR_SEEDS = 5  # simulator seeds pooled against the testbed run"),
        new_code_cell("""import numpy as np
from testbed.sim import disseminate, theory

n, seeds = 10_000, SEEDS
rounds = [disseminate(n, "push", fanout=1, seed=s).informed_at.max() for s in range(seeds)]
print(f"push, f=1, n={n}: mean rounds {np.mean(rounds):.2f}  theory {theory.push_rounds(n):.2f}")
for f in (2, 3, 4):
    frac = np.mean([disseminate(n, "infect_and_die", fanout=f, seed=s).final_fraction for s in range(seeds)])
    print(f"infect-and-die, f={f}: {frac:.4f}  theory {theory.infect_and_die_fraction(f):.4f}")
assert abs(np.mean(rounds) - theory.push_rounds(n)) <= 2

import matplotlib.pyplot as plt
fig, ax = plt.subplots(figsize=(6, 3.2))
ax.hist(rounds, bins=np.arange(min(rounds) - 0.5, max(rounds) + 1.5), color="C0", alpha=0.6,
        label=f"simulated push, f=1, n={n:,} ({seeds} seeds)")
ax.axvline(theory.push_rounds(n), color="black", ls="--", label="log2(n) + ln(n) (Pittel, without its O(1) term)")
ax.set_xlabel("rounds until every node is informed"); ax.set_ylabel("seeds"); ax.legend(fontsize=7)
ax.set_title("Round-based push against its closed form", fontsize=10)
plt.show()"""),
        new_code_cell("""import os, tempfile, pathlib
from IPython.display import Image, display
from testbed import plots
from testbed.experiments import mirror
from testbed.runner import run_subprocess

if os.geteuid() != 0:
    print("the testbed half needs root: skipped")
else:
    base = pathlib.Path(tempfile.mkdtemp(prefix="validation-nb-"))
    run_subprocess("validation.yaml", base / "netns", nodes=NODES)
    # the same scenario on the simulator, with the host measured on the netns run: shared cores, CPU per packet,
    # XDP drops, and the wake-up delay of its first hops
    result = mirror.mirror(base / "netns", base / "sim", seeds=MIRROR_SEEDS)
    print(f"netns: median t50 {result['a']['t50']} s over {result['a']['rumors']} rumors")
    print(f"sim:   median t50 {result['b']['t50']} s over {result['b']['rumors']} rumors ({result['b']['runs']} seeds)")
    print(f"KS distance, every rumor pooled: {result['ks']:.3f} (goal <= 0.15); "
          f"each seed alone: {', '.join(f'{k:.3f}' for k in result['per_run'])}")
    plots.compare([base / "netns", result["runs"]], base / "compare.png", index=None,
                  title=f"KS {result['ks']:.3f}")
    display(Image(str(base / "compare.png")))"""),
    ],
    "protocols.ipynb": [
        new_markdown_cell("# Membership protocols compared under the same faults\n\n"
                          "The heartbeat protocol (every heartbeat infects the cluster every cycle) and SWIM with "
                          "Lifeguard (one probe per member per period), and SWIM without each Lifeguard part, run "
                          "the same `scenarios/protocols-*.yaml` files on the same backend (the simulator here; set "
                          "`BACKEND = \"netns\"` as root for the testbed). Every figure comes from the runs' own "
                          "records through `testbed.experiments.protocols.measure`; nothing is a constant except the "
                          "SWIM paper's expected first detection time, drawn for reference."),
        parameters("NODES = [16, 32, 64, 128]  # cluster sizes for crash detection and traffic\n"
                   "SEEDS = 2  # runs per point\n"
                   "FAULT_NODES = 32  # cluster size for the loss, starvation and churn comparisons\n"
                   "BACKEND = \"sim\""),
        new_code_cell("""import math, tempfile, pathlib
import pandas as pd
import matplotlib.pyplot as plt
from testbed import scenario
from testbed.experiments import protocols as P

base = pathlib.Path(tempfile.mkdtemp(prefix="protocols-nb-"))
crash = scenario.load("protocols-crash.yaml").with_overrides(backend=BACKEND)
rows = P.compare(crash, ["heartbeat", "swim"], nodes=NODES, seeds=range(1, SEEDS + 1), out_dir=base / "crash")
df = pd.DataFrame(rows)
df[["variant", "nodes", "seed", "first_suspicion_s", "first_removal_s", "all_removed_s", "messages_per_member_s",
    "bytes_per_member_s", "false_removals", "passed"]]"""),
        new_markdown_cell("## Crash detection vs N\n\nTwo nodes are SIGKILLed; the time from the kill to the first "
                          "suspicion, and to the removal by every live member. The heartbeat protocol has no "
                          "suspicion: it removes at its timeout. The SWIM paper's e/(e-1) T is the expected time "
                          "until some member first probes a failed one when targets are drawn at random; here "
                          "targets are taken round-robin over a shuffled list, and the suspicion is raised when the "
                          "probe's period ends."),
        new_code_cell("""T = crash.node["cycle_s"]
g = df.groupby(["variant", "nodes"]).mean(numeric_only=True).reset_index()
fig, ax = plt.subplots(figsize=(7, 4))
for variant, colour in (("heartbeat", "#1f77b4"), ("swim", "#d62728")):
    d = g[g.variant == variant]
    ax.plot(d.nodes, d.all_removed_s, "o-", color=colour, label=f"{variant}: removed everywhere")
    if d.first_suspicion_s.notna().any():
        ax.plot(d.nodes, d.first_suspicion_s, "s--", color=colour, label=f"{variant}: first suspicion")
ax.axhline(math.e / (math.e - 1) * T, color="grey", lw=1, ls=":", label="SWIM paper: e/(e-1) T")
ax.set_xscale("log", base=2)
ax.set_xlabel("nodes")
ax.set_ylabel("seconds after the kill")
ax.set_title(f"crash detection ({BACKEND}, protocol period {T:g} s, mean of {SEEDS} seed(s))")
ax.legend(fontsize=8)
plt.show()"""),
        new_markdown_cell("## Traffic per member vs N\n\nDatagrams and UDP payload bytes each member sends per "
                          "second before the crash (metadata swaps included, the same for both): the heartbeat "
                          "protocol's grows with N, SWIM's stays near constant."),
        new_code_cell("""fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
for ax, col, label in ((axes[0], "messages_per_member_s", "datagrams / member / s"),
                       (axes[1], "bytes_per_member_s", "bytes / member / s")):
    for variant, colour in (("heartbeat", "#1f77b4"), ("swim", "#d62728")):
        d = g[g.variant == variant]
        ax.plot(d.nodes, d[col], "o-", color=colour, label=variant)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("nodes")
    ax.set_ylabel(label)
    ax.legend(fontsize=8)
fig.suptitle(f"steady traffic per member ({BACKEND})")
fig.tight_layout()
plt.show()"""),
        new_markdown_cell("## False positives under loss and CPU starvation\n\nEvery variant under 10 % and 30 % "
                          "loss on every node (`protocols-loss.yaml`) and with three nodes stopped in turns "
                          "(`protocols-starve.yaml`). A false suspicion is a suspicion of a member that was live "
                          "throughout the two periods before it; a false removal is a removal of a member whose "
                          "process ran throughout (a stop excuses nothing there). Lifeguard's claim is many fewer of "
                          "both."),
        new_code_cell("""variants = list(P.VARIANTS)
loss = scenario.load("protocols-loss.yaml").with_overrides(backend=BACKEND, nodes=FAULT_NODES)
starve = scenario.load("protocols-starve.yaml").with_overrides(backend=BACKEND, nodes=FAULT_NODES)
fp = []
for label, s in (("10 % loss", P.with_fault(loss, "loss", rate=0.1)), ("30 % loss", P.with_fault(loss, "loss", rate=0.3)),
                 ("starvation", starve)):
    for r in P.compare(s, variants, seeds=range(1, SEEDS + 1), out_dir=base / label.replace(" ", "").replace("%", "")):
        fp.append({"fault": label, **r})
fp = pd.DataFrame(fp)
table = fp.groupby(["fault", "variant"], sort=False)[["suspicions", "false_suspicions", "false_removals",
                                                      "messages_per_member_s"]].mean()
table"""),
        new_code_cell("""import numpy as np
faults = list(dict.fromkeys(fp.fault))
fig, axes = plt.subplots(1, 2, figsize=(11, 4))
w = 0.8 / len(variants)
for ax, col in ((axes[0], "false_suspicions"), (axes[1], "false_removals")):
    for i, v in enumerate(variants):
        ys = [table.loc[(f, v), col] for f in faults]
        ax.bar(np.arange(len(faults)) + (i - (len(variants) - 1) / 2) * w, ys, w, label=v)
    ax.set_xticks(np.arange(len(faults)), faults)
    ax.set_ylabel(col.replace("_", " ") + " (records, mean per run)")
    ax.set_yscale("symlog", linthresh=1)
handles, labels = axes[0].get_legend_handles_labels()
fig.legend(handles, labels, loc="lower center", ncol=len(variants), fontsize=8, frameon=False)
fig.suptitle(f"false positives, {FAULT_NODES} nodes ({BACKEND}, mean of {SEEDS} seed(s))")
fig.tight_layout(rect=(0, 0.07, 1, 1))
plt.show()"""),
        new_markdown_cell("## Metadata under churn\n\nNodes crash, restart and join while four values are "
                          "published (`protocols-churn.yaml`): the median time from a publish to half and to all of "
                          "the live nodes, per protocol. Both spread metadata the same way (a rumor to `fanout` "
                          "uninfected members, a swap with one random member each period); what differs is the "
                          "member list the rumor is sent over."),
        new_code_cell("""churn = scenario.load("protocols-churn.yaml").with_overrides(backend=BACKEND, nodes=FAULT_NODES)
ch = pd.DataFrame(P.compare(churn, ["heartbeat", "swim"], seeds=range(1, SEEDS + 1), out_dir=base / "churn"))
print(ch[["variant", "seed", "t50_s", "t100_s", "rumors", "rumors_complete", "passed"]].to_string(index=False))
m = ch.groupby("variant", sort=False)[["t50_s", "t100_s"]].mean()
ax = m.plot.bar(figsize=(6, 3.6), rot=0, color=["#9ecae1", "#08519c"])
ax.set_ylabel("seconds after the publish")
ax.set_title(f"metadata under churn, {FAULT_NODES} nodes ({BACKEND})")
plt.show()"""),
    ],
}

for name, cells in NOTEBOOKS.items():
    nb = new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                            "language": "python"}})
    nbformat.write(nb, name)
    print("wrote", name)
