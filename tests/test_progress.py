"""Progress: plain, self-contained lines at a bounded rate when piped, one line redrawn in place on a terminal, and
every long operation (the simulator, a testbed run, a sweep) shows its progress through the one helper.

The rate tests drive a fake clock, so they count lines, not seconds; the terminal tests use a real pty.
"""

from __future__ import annotations

import fcntl
import io
import os
import re
import select
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from gossip import NodeConfig
from testbed.experiments import sweep
from testbed.progress import LINE_INTERVAL_S, Progress, as_progress, sim_pacer
from testbed.sim import Simulation

ROOT = Path(__file__).resolve().parents[1]

SCENARIO = """\
name: tiny
nodes: 6
backend: sim
node: {cycle_s: 0.5, timeout_s: 2.5}
duration_s: 6
recovery_s: 5
timeline:
  - {at: 1, op: publish, node: n0, data: "x"}
  - {at: 2, fault: crash, node: n3, until: 4}
checks: [membership_converged, metadata_converged]
plots: []
"""


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _drive(p: Progress, clock: FakeClock, seconds: float, step_s: float) -> None:
    """A phase of SECONDS, updated every STEP_S of (fake) time."""
    p.phase("timeline", total=seconds, unit=" s", done=0.0, nodes_up="4/4")
    t = 0.0
    while t < seconds:
        t += step_s
        clock.t += step_s
        p.update(min(t, seconds), nodes_up="3/4" if t > seconds / 2 else "4/4")
    p.end("recovered")


def test_piped_output_is_plain_self_contained_lines_at_a_bounded_rate():
    clock, out = FakeClock(), io.StringIO()
    p = Progress("testbed", stream=out, tty=False, clock=clock)
    _drive(p, clock, seconds=120.0, step_s=0.01)  # 12,000 updates
    text = out.getvalue()
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    # one per interval between start and end, plus the end line: not one per update
    assert len(lines) <= 120.0 / LINE_INTERVAL_S + 2
    assert len(lines) >= 120.0 / LINE_INTERVAL_S - 1
    for line in lines:  # each names what it is about, with where it is
        assert line.startswith("[testbed] timeline ") and "/120.0 s" in line
    assert "nodes up 3/4" in lines[-1] and "recovered" in lines[-1] and "100%" in lines[-1]
    middle = [ln for ln in lines if "left" in ln]
    assert middle and all("%" in ln for ln in middle)
    done = [float(ln.split()[2].split("/")[0]) for ln in lines]
    assert done == sorted(done) and done[-1] == 120.0


def test_a_short_piped_phase_logs_its_end_only_and_say_is_immediate():
    clock, out = FakeClock(), io.StringIO()
    p = Progress("sweep", stream=out, tty=False, clock=clock)
    p.phase("reading the history")
    clock.t += 0.2
    p.say("tables: results.csv")
    p.end()
    assert out.getvalue().splitlines() == ["[sweep] tables: results.csv", "[sweep] reading the history (0.2 s)"]


def test_quiet_writes_nothing_and_a_broken_stream_never_raises():
    out = io.StringIO()
    p = Progress(enabled=False, stream=out)
    p.phase("timeline", total=5.0, done=1.0)
    p.update(2.0)
    p.say("x")
    p.end()
    assert out.getvalue() == ""
    closed = io.StringIO()
    closed.close()
    q = Progress(stream=closed, tty=False)
    q.say("x")  # ValueError from the closed stream: the display turns itself off
    assert not q.enabled
    q.phase("timeline")
    q.end()


def test_as_progress_takes_a_callable_for_lines_and_shares_a_progress():
    got = []
    p = as_progress(got.append, "validate")
    with p.within("n16 run 1/2"):
        p.phase("timeline")
    p.say("row")
    assert len(got) == 2 and got[1] == "[validate] row"
    assert re.fullmatch(r"\[validate\] n16 run 1/2 · timeline \(\d+\.\d s\)", got[0])
    assert as_progress(p) is p
    assert not as_progress(False).enabled


def _pty(columns: int = 200):
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    return master, slave


def _read_all(fd: int) -> str:
    chunks = []
    while select.select([fd], [], [], 0.2)[0]:
        try:
            data = os.read(fd, 65536)
        except OSError:  # EIO: the other end is closed
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks).decode()


def test_on_a_terminal_one_line_is_redrawn_in_place():
    master, slave = _pty(columns=60)
    stream = os.fdopen(slave, "w")
    try:
        clock = FakeClock()
        p = Progress("testbed", stream=stream, clock=clock)  # a tty found by itself
        assert p.tty
        p.phase("timeline", total=10.0, unit=" s", done=0.0, nodes_up="8/8")
        for i in range(1, 101):
            clock.t += 0.05
            p.update(i / 10)
        drawn = _read_all(master)
        p.say("node n3 exited unexpectedly")
        p.end()
        rest = _read_all(master)
    finally:
        stream.close()
        os.close(master)
    # the pty turns \n into \r\n; before the end no line was finished, only redrawn
    assert "\n" not in drawn
    frames = [f.replace("\x1b[K", "") for f in drawn.split("\r") if f]
    assert 25 <= len(frames) <= 52  # at most every 0.1 s of the 5 s, not at each of the 100 updates
    assert all(len(f) < 60 for f in frames)  # cut to the terminal's width, so it never wraps
    assert "[####" in frames[-1] and frames[-1].startswith("[testbed] timeline")
    # a message clears the line, prints, and the line comes back beneath; the end leaves the last state
    assert "\r\x1b[K[testbed] node n3 exited unexpectedly\r\n" in rest
    assert rest.count("\n") == 2  # the message and the phase's last state, kept
    assert "10.0/10.0 s 100%" in rest.split("\r\n")[1]


def test_the_simulator_calls_its_hook_within_one_run_and_slicing_changes_nothing():
    def run(hook):
        with Simulation(seed=3, config=NodeConfig(fanout=3, cycle_s=0.5, timeout_s=2.5), progress=hook) as sim:
            sim.add_nodes(12, seeding="tree")
            sim.run_until(1.0)
            sim.publish("n4", b"v1")
            sim.run_until(8.0)
            return sim.events, sim.network_stats()

    calls = []

    def hook(time_s, arrived):
        calls.append((time_s, arrived))
        return 0.25

    plain = run(None)
    assert run(hook) == plain
    times = [t for t, _ in calls]
    assert times == sorted(times) and len(times) >= 28  # every 0.25 simulated s, inside the one run_until(8)
    assert calls[-1][1] > calls[0][1]  # the messages so far grow as it runs
    out = io.StringIO()
    p = Progress(stream=out, tty=False, interval_s=0.0)
    p.phase("timeline")
    assert run(sim_pacer(p)) == plain  # slices sized by the wall clock: still the same run
    p.end()
    assert "msg/s" in out.getvalue() and "x real time" in out.getvalue()


def _cli(*args, cwd, **kw):
    return subprocess.run([sys.executable, "-m", "testbed", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)}, **kw)


def test_a_piped_testbed_run_on_the_simulator_shows_its_phases_in_plain_lines(tmp_path):
    (tmp_path / "tiny.yaml").write_text(SCENARIO)
    r = _cli("run", "tiny.yaml", "--backend", "sim", "--out", str(tmp_path / "run"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "\r" not in r.stderr
    lines = r.stderr.splitlines()
    assert all(ln.startswith("[testbed] ") for ln in lines)
    phases = [ln.split()[1] for ln in lines]
    for phase in ("starting", "timeline", "recovery", "final", "writing", "reading"):
        assert phase in phases
    timeline = next(ln for ln in lines if ln.startswith("[testbed] timeline 6.0/6.0 s 100%"))
    assert "nodes up 6/6" in timeline and "msg/s" in timeline  # the simulator's own speed, through its hook
    assert "result: PASSED" in r.stdout and "[testbed]" not in r.stdout
    q = _cli("run", "tiny.yaml", "--backend", "sim", "--out", str(tmp_path / "quiet"), "--quiet", cwd=tmp_path)
    assert q.returncode == 0 and q.stderr == ""


def test_a_testbed_run_on_a_terminal_redraws_its_line(tmp_path):
    (tmp_path / "tiny.yaml").write_text(SCENARIO)
    master, slave = _pty()
    proc = None
    try:
        proc = subprocess.Popen([sys.executable, "-m", "testbed", "run", "tiny.yaml", "--backend", "sim",
                                 "--out", str(tmp_path / "run")], cwd=tmp_path, stdout=subprocess.DEVNULL,
                                stderr=slave, env={**os.environ, "PYTHONPATH": str(ROOT)})
        os.close(slave)
        slave = None
        chunks = []
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed its end
                break
            if not data:
                break
            chunks.append(data)
        assert proc.wait(timeout=300) == 0
    finally:
        if slave is not None:
            os.close(slave)
        os.close(master)
        if proc is not None and proc.poll() is None:
            proc.kill()
    text = b"".join(chunks).decode()
    assert "\r[testbed] timeline [" in text and "\x1b[K" in text
    finished = text.split("\r\n")[:-1]
    # one finished line per phase (each the last frame of its in-place line), however many frames came before
    assert 6 <= len(finished) < 15
    assert any(ln.rsplit("\r", 1)[-1].startswith("[testbed] timeline [####################] 6.0/6.0 s 100%")
               for ln in finished)


def test_a_sweep_shows_runs_done_of_all_and_quiet_shows_nothing(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text("name: s\nfidelity: dissemination\ngrid: {nodes: [200], fanout: [2, 3]}\nseeds: 3\nworkers: 2\n")
    out = io.StringIO()
    df = sweep.run(sweep.load(str(f)), tmp_path / "out", progress=Progress("sweep", stream=out, tty=False))
    assert len(df) == 6
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert any(ln.startswith("[sweep] s on 2 local worker(s) 6/6 runs 100%") for ln in lines)
    assert lines[-1].startswith("[sweep] tables: results.csv")
    r = _cli("sweep", str(f), "--out", str(tmp_path / "q"), "--quiet", cwd=tmp_path)
    assert r.returncode == 0 and r.stderr == ""
