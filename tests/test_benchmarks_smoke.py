"""Every benchmark runs to completion in its bounded smoke mode and prints its figures (no timing assertions)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH))
from run_all import BENCHMARKS  # noqa: E402

# figures a benchmark's smoke run must print (a line starting with the name and holding a number)
FIGURES = {"bench_http.py": ("import h11", "import gossip._http", "GET /stats, keep-alive"),
           "bench_swim_testbed.py": ("netns", "sim"),
           "bench_hbplane_cluster.py": ("off", "on", "off/on")}


# below pytest's own 600 s timeout, so a benchmark that overruns is stopped here, by SIGTERM, not SIGKILL'd
SMOKE_TIMEOUT_S = 540


def run_bounded(argv: list[str], timeout_s: float = SMOKE_TIMEOUT_S) -> subprocess.CompletedProcess:
    """ARGV's output. On a timeout, a Ctrl-C or pytest's own timeout the benchmark gets SIGTERM and a minute to
    tear down what it made (its namespaces, links and programs: the root benchmarks exit through their `finally`
    on SIGTERM), and only then SIGKILL -- subprocess.run's timeout kills at once and left a testnet behind."""
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = p.communicate(timeout=timeout_s)
    except BaseException:
        p.terminate()
        try:
            p.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
            p.communicate()
        raise
    return subprocess.CompletedProcess(argv, p.returncode, out, err)


# the soak benchmark has its own test below, which also checks each of its figures
@pytest.mark.parametrize("script,quick,needs_root", [(s, q, r) for s, _, q, r in BENCHMARKS if s != "bench_soak.py"],
                         ids=lambda v: str(v))
def test_benchmark_smoke_run(script, quick, needs_root):
    if needs_root and os.geteuid() != 0:
        pytest.skip("needs root (CI runs as root)")
    if not (BENCH / script).exists():
        pytest.fail(f"{script} is listed in run_all.py but missing")
    r = run_bounded([sys.executable, str(BENCH / script), *quick])
    assert r.returncode == 0, r.stderr[-3000:]
    assert re.search(r"\d", r.stdout), "a benchmark must print figures"
    for figure in FIGURES.get(script, ()):
        assert re.search(rf"^{re.escape(figure)}\s.*\d", r.stdout, re.M), f"no {figure!r} figure:\n{r.stdout}"


def test_every_benchmark_is_run_by_run_all_and_listed_in_the_readme():
    """A benchmark nobody runs goes stale unseen: each script is in run_all.py (so `make bench` and this suite's smoke
    runs take it) and in the README's table of benchmarks."""
    scripts = {p.name for p in BENCH.glob("bench_*.py")}
    assert scripts == {s for s, *_ in BENCHMARKS}, scripts ^ {s for s, *_ in BENCHMARKS}
    readme = (BENCH.parent / "README.md").read_text()
    assert not [s for s in sorted(scripts) if f"| `benchmarks/{s}` |" not in readme]


def test_soak_benchmark_smoke_run():
    """bench_soak.py --quick: the soak campaign shortened to 16 nodes, 40 s and 40 publishes (the full one is 10
    minutes on 64 nodes, never part of the suite)."""
    if os.geteuid() != 0:
        pytest.skip("needs root (CI runs as root)")
    assert ("bench_soak.py", [], ["--quick"], True) in BENCHMARKS  # `make bench` runs it too
    r = run_bounded([sys.executable, str(BENCH / "bench_soak.py"), "--quick"])
    assert r.returncode == 0, r.stderr[-3000:]
    for figure in ("publishes", "lost updates", "false deaths <=10%", "RSS slope KiB/min", "fd slope /min",
                   "rumors inside faults", "rumors outside faults"):
        assert re.search(rf"^{re.escape(figure)}\s.*\d", r.stdout, re.M), f"no {figure!r} figure:\n{r.stdout}"
