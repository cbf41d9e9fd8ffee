"""`testbed run --trace-sched`: a real run with the kernel's scheduler traced (bcc on the sched tracepoints), its
trace in the run directory, and the report of where the nodes' waits for a CPU went."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from testbed import schedtrace
from testbed.errors import UsageError

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.root
@pytest.mark.netns
@pytest.mark.bpf
def test_a_traced_run_records_the_nodes_wake_ups_and_bursts_and_reports_them(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root (CI runs as root)")
    mounted_before = os.path.isdir(os.path.join(schedtrace.TRACEFS, "events", "sched"))
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "testbed", "run", "basic.yaml", "--out", str(out), "--quiet",
                        "--trace-sched"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "result: PASSED" in r.stdout and "scheduler:" in r.stdout and "Traceback" not in r.stderr
    lines = (out / schedtrace.TRACE_FILE).read_text().splitlines()
    header = json.loads(lines[0])
    assert header["k"] == "trace" and header["tracer_pid"] > 0
    events = [json.loads(x) for x in lines[1:]]
    started = {json.loads(x)["pid"] for x in (out / "events.jsonl").read_text().splitlines()
               if '"kind": "started"' in x}
    wakes = [e for e in events if e["k"] == "wake" and e["pid"] in started]
    assert len(wakes) > 100 and all(e["lat_us"] >= 0 for e in wakes)
    assert all(e["pid"] != header["tracer_pid"] for e in events)  # the tracer leaves itself out
    rep = schedtrace.report(out)
    # every burst of the node processes on a CPU, added up, is the CPU time they report (thread and process clocks
    # against the scheduler's own switches: a tracer that lost or misread switches would not add up)
    assert 0.9 * rep["nodes_cpu_s"] <= rep["bursts_cpu_s"] <= 1.1 * rep["nodes_cpu_s"], rep
    assert 0.0 <= rep["woken_by_a_node_on_its_cpu"] <= 1.0
    bins = rep["by_wave_time"]
    assert len(bins) == 4 and sum(b["rumor"]["taken"] for b in bins) >= 8
    assert bins[0]["from_ms"] == 0.0 and bins[-1]["to_ms"] is None
    f = rep["forwarded_rumor_waits"]
    assert f["count"] > 0 and f["cpu_held_by_its_wave_ms"] >= 0 and f["cpu_held_by_other_nodes_ms"] >= 0
    # nothing stays: the programs went with the tracer, and tracefs is as it was
    assert os.path.isdir(os.path.join(schedtrace.TRACEFS, "events", "sched")) == mounted_before


def test_a_trace_is_refused_where_there_are_no_real_processes(tmp_path):
    r = subprocess.run([sys.executable, "-m", "testbed", "run", "basic.yaml", "--backend", "sim", "--trace-sched",
                        "--out", str(tmp_path / "sim")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "--trace-sched" in r.stderr and "Traceback" not in r.stderr
    with pytest.raises(UsageError, match="no sched.jsonl"):
        schedtrace.report(tmp_path)


@pytest.mark.root
@pytest.mark.netns
@pytest.mark.bpf
def test_a_sigterm_to_the_tracer_stops_the_run_cleanly_and_keeps_the_trace(tmp_path):
    """SIGTERM to the tracing process alone (a supervisor's stop) is passed on to the run, which stops as a
    terminated run does, removing everything; the trace of what ran until then is written."""
    if os.geteuid() != 0:
        pytest.skip("needs root (CI runs as root)")
    import re
    import signal
    import time

    from testbed.net.cleanup import find_leftovers
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "testbed", "run", "basic.yaml", "--out", str(out),
                             "--trace-sched"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # its own group: the signal goes to the tracer alone
    run_id = None
    deadline = time.monotonic() + 120
    for line in proc.stderr:
        m = re.search(r"run ([0-9a-f]{6}):", line)
        run_id = run_id or (m and m.group(1))
        if "timeline" in line:
            break
        assert time.monotonic() < deadline
    assert run_id and not find_leftovers(run_id).empty
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-2000:]
    assert "terminated: everything the run created has been removed" in err and "Traceback" not in err
    assert find_leftovers(run_id).empty, find_leftovers(run_id).summary()
    header = json.loads((out / schedtrace.TRACE_FILE).read_text().splitlines()[0])
    assert header["k"] == "trace"
