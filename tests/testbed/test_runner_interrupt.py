"""Ctrl-C (or SIGTERM, as a supervisor or a timeout stops a process) in the middle of a run: the run still stops its
faults and reads the nodes, then removes everything. Before SIGTERM was handled, a benchmark stopped with it left a
1,024-node run's namespaces, links and owner record behind."""

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from testbed.net.cleanup import find_leftovers

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.root, pytest.mark.netns, pytest.mark.bpf]


@pytest.mark.parametrize("sig,code,word", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")],
                         ids=["SIGINT", "SIGTERM"])
def test_a_signal_mid_timeline_leaves_nothing_behind(tmp_path, sig, code, word):
    proc = subprocess.Popen([sys.executable, "-m", "testbed", "run", "basic.yaml", "--out", str(tmp_path / "run")],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run_id = None
    deadline = time.monotonic() + 120
    for line in proc.stderr:
        m = re.search(r"run ([0-9a-f]{6}):", line)
        run_id = run_id or (m and m.group(1))
        if "timeline" in line:  # nodes are up, the crash fault is about to start
            break
        assert time.monotonic() < deadline
    assert run_id and not find_leftovers(run_id).empty  # the run really holds kernel resources now
    time.sleep(3.0)  # inside the crash window: n5 is down
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err[-2000:]
    assert f"{word}: everything the run created has been removed" in err and "Traceback" not in err
    assert find_leftovers(run_id).empty, find_leftovers(run_id).summary()
    # the history is still written: the run ended the same way, with final reads of every node
    events = (tmp_path / "run" / "events.jsonl").read_text()
    assert '"kind": "final"' in events
