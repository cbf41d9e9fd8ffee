"""A user's mistake on the command line is one line on stderr naming what is wrong, exit status 2, no traceback.

One table per command, every case a real ``python -m testbed`` / ``python -m gossip`` process. Every mistake here is
caught before anything is built (no namespace, no simulator run), so none needs root and the whole table takes a few
seconds; the cases run two at a time (this machine has two cores, and other work shares them).
"""

from __future__ import annotations

import errno
import json
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

SCENARIO = """\
name: tiny
nodes: 4
backend: sim
duration_s: 4
timeline:
  - {at: 1, op: publish, node: n0, data: "x"}
"""

OVERLAP = """\
name: overlap
nodes: 4
backend: sim
duration_s: 5
timeline:
  - {at: 1, fault: partition, groups: [[n0, n1], [n1, n2]], until: 3}
"""

MEASURED = """\
name: measured
nodes: 4
backend: sim
duration_s: 5
sim: {latency: {kind: measured, run: /nonexistent/run}}
"""

SWEEP = """\
name: tiny
grid: {nodes: [100]}
seeds: 1
"""

BAD_SWEEP = """\
name: bad
grid:
  nodes: [100]
  colour: [red]
"""


def _run_dir(d: Path, *, rumors: int = 1, backend: str = "sim") -> Path:
    """A recorded run as far as the commands look before working: its summary, meta and (empty) history."""
    d.mkdir()
    rumor = {"version": 1, "origin_node": "n0", "t50": 0.0, "t90": 0.0, "t100": 0.0, "messages": 3,
             "coverage": [[0.0, 0.25], [0.001, 1.0]]}
    (d / "summary.json").write_text(json.dumps({"scenario": "tiny", "backend": backend, "nodes": 4,
                                                "rumors": [rumor] * rumors, "checks": [], "passed": True}))
    (d / "meta.json").write_text(json.dumps({"backend": backend, "nodes": 4}))
    (d / "events.jsonl").write_text("")
    return d


def _free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# (id, argv, what the one line must name); {W} is the work directory, {UDP} / {TCP} ports held by the test
TESTBED = [
    # run
    ("run-missing-scenario", ["run", "nosuch"], ["nosuch", "no such file"]),
    ("run-overlapping-groups", ["run", "overlap.yaml"], ["overlap.yaml:6", "groups[1]", "n1"]),
    ("run-measured-run-missing", ["run", "measured.yaml"], ["measured.yaml:5", "sim.latency.run", "/nonexistent/run"]),
    ("run-nodes-zero", ["run", "tiny.yaml", "--nodes", "0"], ["tiny.yaml", "nodes", "got 0"]),
    ("run-nodes-not-int", ["run", "tiny.yaml", "--nodes", "abc"], ["--nodes", "'abc'"]),
    ("run-seed-not-int", ["run", "tiny.yaml", "--seed", "x1"], ["--seed", "'x1'"]),
    ("run-backend-unknown", ["run", "tiny.yaml", "--backend", "vm"], ["--backend", "'vm'"]),
    ("run-out-under-a-file", ["run", "tiny.yaml", "--out", "afile/run"], ["afile/run", "Not a directory"]),
    ("run-out-holds-a-run", ["run", "tiny.yaml", "--out", "runA"], ["runA", "already holds a run"]),
    # plot
    ("plot-missing-dir", ["plot", "nosuch-run"], ["nosuch-run", "no such directory"]),
    ("plot-not-a-run", ["plot", "empty"], ["empty", "no summary.json"]),
    ("plot-no-history", ["plot", "summaryonly"], ["summaryonly", "no events.jsonl"]),
    ("plot-out-under-a-file", ["plot", "runA", "--out", "afile/plots"], ["afile/plots", "Not a directory"]),
    # compare
    ("compare-rumor-out-of-range", ["compare", "runA", "runB", "--rumor", "7"], ["--rumor 7", "runA", "1 rumor"]),
    ("compare-rumor-not-a-number", ["compare", "runA", "runB", "--rumor", "abc"], ["--rumor", "'abc'"]),
    ("compare-rumor-negative", ["compare", "runA", "runB", "--rumor", "-1"], ["--rumor", "'-1'"]),
    ("compare-no-rumors", ["compare", "runA", "silent"], ["silent", "no rumor"]),
    ("compare-out-missing-dir", ["compare", "runA", "runB", "--out", "nodir/c.png"], ["nodir/c.png", "nodir"]),
    ("compare-out-under-a-file", ["compare", "runA", "runB", "--out", "afile/c.png"], ["afile/c.png", "afile"]),
    ("compare-out-a-directory", ["compare", "runA", "runB", "--out", "empty"], ["empty", "is a directory"]),
    ("compare-missing-run", ["compare", "runA", "nosuch-run"], ["nosuch-run", "no such directory"]),
    ("compare-not-a-run", ["compare", "runA", "empty"], ["empty", "no summary.json"]),
    ("compare-corrupt-summary", ["compare", "runA", "corrupt"], ["corrupt/summary.json", "invalid JSON"]),
    # mirror
    ("mirror-missing-dir", ["mirror", "nosuch-run"], ["nosuch-run", "no such directory"]),
    ("mirror-not-a-run", ["mirror", "empty"], ["empty", "no summary.json"]),
    ("mirror-no-history", ["mirror", "summaryonly"], ["summaryonly", "no events.jsonl"]),
    ("mirror-a-simulator-run", ["mirror", "runA"], ["runA", "a simulator run"]),
    ("mirror-seeds-zero", ["mirror", "runA", "--seeds", "0"], ["--seeds", "got 0"]),
    ("mirror-model-unknown", ["mirror", "runA", "--model", "exact"], ["--model", "'exact'"]),
    # sweep
    ("sweep-seeds-negative", ["sweep", "tiny-sweep.yaml", "--seeds", "-1"], ["--seeds", "got -1"]),
    ("sweep-seeds-zero", ["sweep", "tiny-sweep.yaml", "--seeds", "0"], ["--seeds", "got 0"]),
    ("sweep-seeds-not-int", ["sweep", "tiny-sweep.yaml", "--seeds", "many"], ["--seeds", "'many'"]),
    ("sweep-missing", ["sweep", "nosuch"], ["nosuch", "also looked in sweeps/"]),
    ("sweep-bad-grid-key", ["sweep", "bad-sweep.yaml"], ["bad-sweep.yaml:4", "grid.colour"]),
    ("sweep-out-under-a-file", ["sweep", "tiny-sweep.yaml", "--out", "afile/sweep"], ["afile/sweep", "Not a directory"]),
    # clean, and the command itself
    ("clean-bad-run-id", ["clean", "--run-id", "Bad Id"], ["--run-id", "'Bad Id'"]),
    ("no-command", [], ["command"]),
    ("unknown-command", ["launch"], ["'launch'"]),
]

GOSSIP = [
    ("node-udp-port-in-use", ["node", "--name", "a", "--addr", "127.0.0.1", "--port", "{UDP}"],
     ["127.0.0.1:{UDP}/udp", "Address already in use"]),
    ("node-addr-not-here", ["node", "--name", "a", "--addr", "192.0.2.1", "--port", "{FREE}"],
     ["192.0.2.1:{FREE}", "Cannot assign requested address"]),
    ("node-http-dir-missing", ["node", "--name", "a", "--http", "unix:/nonexistent/dir/x.sock"],
     ["/nonexistent/dir/x.sock", "/nonexistent/dir"]),
    ("node-http-not-a-socket", ["node", "--name", "a", "--http", "unix:{W}/afile"], ["{W}/afile", "not a socket"]),
    ("node-http-path-too-long", ["node", "--name", "a", "--http", "unix:/tmp/" + "x" * 120 + ".sock"],
     ["x" * 120, "107 bytes"]),
    # the node logs that it listens (INFO) before it tries the HTTP address: quieter, the error is the only line
    ("node-http-port-in-use", ["node", "--name", "a", "--addr", "127.0.0.1", "--port", "{FREE}", "--log-level",
                               "warning", "--http", "127.0.0.1:{TCP}"], ["--http 127.0.0.1:{TCP}", "in use"]),
    # a Unix socket another process still accepts on is not taken over (a stale one would be replaced)
    ("node-http-unix-in-use", ["node", "--name", "a", "--addr", "127.0.0.1", "--port", "{FREE2}", "--log-level",
                               "warning", "--http", "unix:{W}/live.sock"],
     ["--http unix:{W}/live.sock", "Address already in use"]),
    ("node-http-host-unknown", ["node", "--name", "a", "--addr", "127.0.0.1", "--port", "{FREE3}", "--log-level",
                                "warning", "--http", "nosuch.invalid:8001"],
     ["--http nosuch.invalid:8001: cannot listen"]),
    ("node-events-dir-missing", ["node", "--name", "a", "--addr", "127.0.0.1", "--port", "{FREE}", "--events",
                                 "/nonexistent/dir/e.jsonl"], ["/nonexistent/dir/e.jsonl"]),
    ("node-port-out-of-range", ["node", "--name", "a", "--port", "70000"], ["listen_port", "70000"]),
    ("node-port-not-int", ["node", "--name", "a", "--port", "http"], ["--port", "'http'"]),
    ("node-fanout-zero", ["node", "--name", "a", "--fanout", "0"], ["fanout", "got 0"]),
    ("node-seed-not-an-endpoint", ["node", "--name", "a", "--seed", "somehost"], ["--seed", "'somehost'"]),
    ("node-name-missing", ["node"], ["--name"]),
]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Every case of both tables, run once (two at a time) in one work directory: {id: CompletedProcess}."""
    w = tmp_path_factory.mktemp("cli-errors")
    (w / "tiny.yaml").write_text(SCENARIO)
    (w / "overlap.yaml").write_text(OVERLAP)
    (w / "measured.yaml").write_text(MEASURED)
    (w / "tiny-sweep.yaml").write_text(SWEEP)
    (w / "bad-sweep.yaml").write_text(BAD_SWEEP)
    (w / "afile").write_text("not a directory\n")
    (w / "empty").mkdir()
    _run_dir(w / "runA")
    _run_dir(w / "runB")
    _run_dir(w / "silent", rumors=0)
    (w / "summaryonly").mkdir()
    (w / "summaryonly" / "summary.json").write_text((w / "runA" / "summary.json").read_text())
    (w / "corrupt").mkdir()
    (w / "corrupt" / "summary.json").write_text('{"rumors": [')
    held_udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    held_tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    held_unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        held_unix.bind(str(w / "live.sock"))
        held_unix.listen()
        held_udp.bind(("127.0.0.1", 0))
        held_tcp.bind(("127.0.0.1", 0))
        held_tcp.listen()
        subst = {"W": str(w), "UDP": str(held_udp.getsockname()[1]), "TCP": str(held_tcp.getsockname()[1]),
                 "FREE": str(_free_port(socket.SOCK_DGRAM)), "FREE2": str(_free_port(socket.SOCK_DGRAM)),
                 "FREE3": str(_free_port(socket.SOCK_DGRAM))}
        cases = [(cid, "testbed", argv, names) for cid, argv, names in TESTBED] + \
                [(cid, "gossip", argv, names) for cid, argv, names in GOSSIP]

        def run(case):
            cid, package, argv, names = case
            argv = [a.format(**subst) for a in argv]
            r = subprocess.run([sys.executable, "-m", package, *argv], cwd=w, capture_output=True, text=True,
                               timeout=60, env=_env())
            return cid, (argv, [n.format(**subst) for n in names], r)

        with ThreadPoolExecutor(max_workers=2) as pool:
            out = dict(pool.map(run, cases))
    finally:
        held_udp.close()
        held_tcp.close()
        held_unix.close()
    return out


def _env() -> dict:
    import os
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


@pytest.mark.parametrize("cid", [c[0] for c in TESTBED + GOSSIP])
def test_a_mistake_is_one_line_naming_it_and_exit_2(results, cid):
    argv, names, r = results[cid]
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert "Traceback" not in r.stderr, r.stderr
    assert r.returncode == 2, (argv, r.returncode, r.stderr)
    assert len(lines) == 1, (argv, r.stderr)
    assert r.stdout == "", (argv, r.stdout)
    for name in names:
        assert name in lines[0], (argv, name, lines[0])


def test_a_host_name_that_does_not_resolve_gets_the_resolvers_reason(results):
    argv, names, r = results["node-http-host-unknown"]
    assert "Unknown error" not in r.stderr, r.stderr  # a resolver's error has a negative errno


def test_sweep_names_are_found_in_sweeps_as_scenarios_are_in_scenarios(tmp_path, monkeypatch):
    from testbed.experiments import sweep

    monkeypatch.chdir(tmp_path)
    assert Path(sweep.load("fanout.yaml")["file"]) == ROOT / "sweeps" / "fanout.yaml"  # the project's
    assert Path(sweep.load("fanout")["file"]) == ROOT / "sweeps" / "fanout.yaml"
    (tmp_path / "sweeps").mkdir()
    (tmp_path / "sweeps" / "fanout.yaml").write_text(SWEEP)
    assert sweep.load("fanout.yaml")["file"] == "sweeps/fanout.yaml"  # the working directory's comes first


def test_a_bug_is_not_mistaken_for_a_users_mistake(tmp_path, monkeypatch):
    """Only the package's own errors become one line: anything else keeps its traceback."""
    from testbed import _cli, analysis

    run = _run_dir(tmp_path / "run")

    def broken(run_dir):
        raise OSError(errno.EIO, "a bug of ours")

    monkeypatch.setattr(analysis, "load_history", broken)
    with pytest.raises(OSError, match="a bug of ours"):
        _cli.main(["plot", str(run)])
