"""Where a hop's wait goes: the kernel's scheduler, traced while a testbed run runs (``testbed run --trace-sched``).

A node's wait for its datagram (``hb_wait_ms``, ``md_wait_ms``) is mostly its process waiting for a CPU. `record`
runs a command (the run itself, in a child process) with two BPF programs on the scheduler's tracepoints, and
writes one record per event to a JSON-lines file:

- ``wake``: a python process was woken (``sched_wakeup``) and later ran (``sched_switch``): when, how long it waited
  (``lat_us``), the task that woke it (``waker``: on a veth the sender's ``sendto`` runs the receiver's softirq,
  so the sender wakes the receiver) and the CPUs: the waker's, the one the kernel queued it on, the one it ran on.
- ``run``: a python process's burst on a CPU, from being switched in to being switched out (``asleep`` when it
  left the CPU to wait, not because it was preempted).

Only tasks named ``python*`` are traced, minus the tracer itself; `report` keeps the node processes (their pids are
in the run's ``started`` records) and relates the wake-ups to what the nodes took: how long a copy waited by how
far its wave had gone, and which processes held the CPU it waited for. The programs are attached with bcc for the
lifetime of the tracer process (nothing is pinned: they go when it exits, whatever ends it); tracefs is mounted
for the attach if it is not, and unmounted afterwards. Tracing costs CPU (a perf event per wake-up and burst,
read in Python), so a traced run is slower than an untraced one.
"""

from __future__ import annotations

import bisect
import json
import os
import signal
import statistics
import subprocess
import time
from collections import defaultdict
from pathlib import Path

from .errors import UsageError

TRACE_FILE = "sched.jsonl"
TRACEFS = "/sys/kernel/tracing"

_PROGRAM = r"""
struct pending { u64 ts; u32 waker; u32 waker_cpu; u32 target_cpu; };
struct ev { u64 a; u64 b; u32 pid; u32 waker; u32 c1; u32 c2; u32 c3; u32 kind; };
BPF_HASH(pending, u32, struct pending, 65536);
BPF_HASH(since, u32, u64, 65536);
BPF_PERF_OUTPUT(events);

static inline int traced(const char *comm) { return comm[0] == 'p' && comm[1] == 'y' && comm[2] == 't'; }

TRACEPOINT_PROBE(sched, sched_wakeup) {
    if (!traced(args->comm) || args->pid == SELF_TGID) return 0;
    struct pending p = {};
    p.ts = bpf_ktime_get_ns();
    p.waker = bpf_get_current_pid_tgid();
    p.waker_cpu = bpf_get_smp_processor_id();
    p.target_cpu = args->target_cpu;
    u32 pid = args->pid;
    pending.update(&pid, &p);
    return 0;
}

TRACEPOINT_PROBE(sched, sched_switch) {
    u64 now = bpf_ktime_get_ns();
    u32 cpu = bpf_get_smp_processor_id();
    u32 prev = args->prev_pid, next = args->next_pid;
    u64 *start = since.lookup(&prev);
    if (start) {
        struct ev e = {};
        e.a = *start; e.b = now - *start; e.pid = prev; e.c1 = cpu; e.c2 = args->prev_state != 0; e.kind = 2;
        since.delete(&prev);
        events.perf_submit(args, &e, sizeof(e));
    }
    if (!traced(args->next_comm) || next == SELF_TGID) return 0;
    since.update(&next, &now);
    struct pending *p = pending.lookup(&next);
    if (p) {
        struct ev e = {};
        e.a = p->ts; e.b = now - p->ts; e.pid = next; e.waker = p->waker;
        e.c1 = p->waker_cpu; e.c2 = p->target_cpu; e.c3 = cpu; e.kind = 1;
        pending.delete(&next);
        events.perf_submit(args, &e, sizeof(e));
    }
    return 0;
}
"""


def _mount_tracefs() -> bool:
    """Mount tracefs if it is not (bcc reads tracepoint ids there); whether this call mounted it."""
    if os.path.isdir(os.path.join(TRACEFS, "events", "sched")):
        return False
    r = subprocess.run(["mount", "-t", "tracefs", "nodev", TRACEFS], capture_output=True, text=True)
    if r.returncode != 0:
        raise UsageError(f"{TRACEFS}: cannot mount tracefs for the scheduler's tracepoints: {r.stderr.strip()}")
    return True


def record(out: Path | str, argv: list[str]) -> int:
    """Run ARGV with the scheduler traced; write the trace to OUT (JSON lines) and return ARGV's exit status.

    ARGV runs in its own child process, in this one's process group (a Ctrl-C reaches both: the child cleans up,
    this one waits for it and keeps the trace; a SIGTERM to this one is passed on). Needs root."""
    if os.geteuid() != 0:
        raise UsageError("--trace-sched needs root (BPF programs on the scheduler's tracepoints)")
    try:
        from bcc import BPF
    except ImportError as e:
        raise UsageError(f"--trace-sched needs bcc (python3-bpfcc): {e}") from None
    mounted = _mount_tracefs()
    out = Path(out)
    try:
        bpf = BPF(text=_PROGRAM, cflags=[f"-DSELF_TGID={os.getpid()}"])
        rows: list[str] = []

        def on_event(cpu, data, size):
            e = bpf["events"].event(data)
            if e.kind == 1:
                rows.append(json.dumps({"k": "wake", "ts_ns": e.a, "lat_us": round(e.b / 1000, 3), "pid": e.pid,
                                        "waker": e.waker, "waker_cpu": e.c1, "target_cpu": e.c2, "cpu": e.c3}))
            else:
                rows.append(json.dumps({"k": "run", "ts_ns": e.a, "dur_us": round(e.b / 1000, 3), "pid": e.pid,
                                        "cpu": e.c1, "asleep": bool(e.c2)}))

        lost = [0]
        bpf["events"].open_perf_buffer(on_event, page_cnt=1024, lost_cb=lambda n: lost.__setitem__(0, lost[0] + n))
        offset = time.time() - time.monotonic()  # bpf_ktime_get_ns is CLOCK_MONOTONIC
        child = subprocess.Popen(argv)
        # A Ctrl-C reaches the child too: wait for its cleanup. A SIGTERM sent to this process alone is passed on
        # to it (it stops as a terminated run does), and the trace is still written.
        previous = (signal.signal(signal.SIGINT, signal.SIG_IGN),
                    signal.signal(signal.SIGTERM, lambda *_: child.terminate()))
        try:
            while child.poll() is None:
                bpf.perf_buffer_poll(timeout=200)
            bpf.perf_buffer_poll(timeout=100)
        finally:
            signal.signal(signal.SIGINT, previous[0])
            signal.signal(signal.SIGTERM, previous[1])
            if child.poll() is None:
                child.terminate()
                child.wait()
        header = {"k": "trace", "clock": "monotonic", "wall_minus_monotonic_s": offset, "lost": lost[0],
                  "tracer_pid": os.getpid()}
        out.write_text("\n".join([json.dumps(header), *rows]) + "\n")
        bpf.cleanup()
        return child.returncode
    finally:
        if mounted:
            subprocess.run(["umount", TRACEFS], capture_output=True)


# ---- analysis ----------------------------------------------------------------------------------------------------

def _load(run_dir: Path) -> tuple[dict, list[dict], list[dict]]:
    path = run_dir / TRACE_FILE
    if not path.is_file():
        raise UsageError(f"{run_dir}: no {TRACE_FILE} (run the scenario with --trace-sched)")
    lines = path.read_text().splitlines()
    header = json.loads(lines[0])
    events = [json.loads(x) for x in lines[1:]]
    return header, [e for e in events if e["k"] == "wake"], [e for e in events if e["k"] == "run"]


def _median(xs):
    return round(statistics.median(xs), 3) if xs else None


def report(run_dir: Path | str) -> dict:
    """What the trace of RUN_DIR says about the nodes' waits: wake-ups, bursts, and for every copy a node took (a
    rumor adopted; a heartbeat refreshed, when the run recorded refreshes) the wake-up before it, by how far its
    wave had gone (since the heartbeat's sequence, or the rumor's publish), binned at the quartiles of the rumors'
    times; and for each rumor taken from a forwarder, what the CPU it waited for ran meanwhile."""
    from . import analysis
    run_dir = Path(run_dir)
    header, wakes, runs = _load(run_dir)
    off = header["wall_minus_monotonic_s"]
    history = analysis.load_history(run_dir)
    pids = {e["pid"]: e["node"] for e in history.of_kind("started") if "pid" in e}
    wakes = [w for w in wakes if w["pid"] in pids]
    runs = [r for r in runs if r["pid"] in pids]
    by_node: dict[str, list] = defaultdict(list)
    for w in wakes:
        by_node[pids[w["pid"]]].append((w["ts_ns"] / 1e9 + off, w))
    for xs in by_node.values():
        xs.sort(key=lambda x: x[0])
    starts = {n: [t for t, _ in xs] for n, xs in by_node.items()}

    def wake_before(node: str, t: float, not_before: float):
        i = bisect.bisect_right(starts.get(node, []), t) - 1
        if i < 0 or by_node[node][i][0] < not_before:
            return None
        return by_node[node][i][1]

    node_woken = [w for w in wakes if w["waker"] in pids]
    # each process's CPU between its first and last stats record, and its bursts in that window (a restarted
    # node is another process: its clock starts again)
    spans: dict[int, list[dict]] = defaultdict(list)
    current: dict[str, int] = {}
    for e in history.events:
        if e["kind"] == "started" and "pid" in e:
            current[e["node"]] = e["pid"]
        elif e["kind"] == "stats" and "cpu_s" in e and e["node"] in current:
            spans[current[e["node"]]].append(e)
    runs_of: dict[int, list[dict]] = defaultdict(list)
    for r in runs:
        runs_of[r["pid"]].append(r)
    window: list[dict] = []
    cpu_s = 0.0
    for pid, recs in spans.items():
        t0, t1 = recs[0]["t"], recs[-1]["t"]
        cpu_s += recs[-1]["cpu_s"] - recs[0]["cpu_s"]
        window.extend(r for r in runs_of[pid] if t0 <= r["ts_ns"] / 1e9 + off
                      and r["ts_ns"] / 1e9 + off + r["dur_us"] / 1e6 <= t1)
    out: dict = {
        "wakeups": len(wakes), "lost_events": header.get("lost", 0),
        "wake_median_us": _median([w["lat_us"] for w in wakes]),
        "woken_by_a_node_on_its_cpu": (round(sum(w["target_cpu"] == w["waker_cpu"] for w in node_woken)
                                             / len(node_woken), 3) if node_woken else None),
        "burst_asleep_median_us": _median([r["dur_us"] for r in window if r["asleep"]]),
        "bursts_cpu_s": round(sum(r["dur_us"] for r in window) / 1e6, 3),
        "nodes_cpu_s": round(cpu_s, 3),
    }
    # the copies taken, with how far their wave had gone
    taken: list[tuple[str, float, dict]] = []  # kind, elapsed s, wake
    published = {analysis.version_key(e): e["t"] for e in history.of_kind("metadata_adopted")
                 if e["via"] == "publish"}
    hops = analysis.rumor_hops(history)
    receivers = defaultdict(set)
    for h in hops:
        if h.won:
            receivers[h.version].add(h.receiver)
    forwarded = []
    for e in history.of_kind("metadata_adopted"):
        if e["via"] != "rumor" or analysis.version_key(e) not in published:
            continue
        start = published[analysis.version_key(e)]
        w = wake_before(e["node"], e["t"], start)
        if w is not None:
            taken.append(("rumor", e["t"] - start, w))
    for h in hops:
        if h.won and h.sender in receivers[h.version]:
            w = wake_before(h.receiver, h.sent + h.delay_s, h.sent)
            if w is not None:
                forwarded.append((h, w))
    for e in history.of_kind("member_refreshed"):
        sent = e["seq"] / 1e6
        w = wake_before(e["node"], e["t"], sent)
        if w is not None:
            taken.append(("heartbeat", e["t"] - sent, w))
    rumor_times = sorted(x for k, x, _ in taken if k == "rumor")
    if len(rumor_times) >= 8:
        edges = [rumor_times[len(rumor_times) * q // 4] for q in (1, 2, 3)]
        bins = []
        for lo, hi in zip([0.0, *edges], [*edges, float("inf")]):
            row = {"from_ms": round(lo * 1000, 2), "to_ms": None if hi == float("inf") else round(hi * 1000, 2)}
            for kind in ("heartbeat", "rumor"):
                lat = [w["lat_us"] for k, x, w in taken if k == kind and lo <= x < hi]
                row[kind] = {"taken": len(lat), "wake_median_us": _median(lat)}
            bins.append(row)
        out["by_wave_time"] = bins
    # what the CPU a forwarded rumor waited for ran meanwhile: its own wave's nodes, or others
    adopted_at = defaultdict(dict)
    for e in history.of_kind("metadata_adopted"):
        adopted_at[e["version"]][e["node"]] = e["t"]
    by_cpu = defaultdict(list)
    for r in runs:
        by_cpu[r["cpu"]].append((r["ts_ns"] / 1e9 + off, r["dur_us"] / 1e6, pids[r["pid"]]))
    for xs in by_cpu.values():
        xs.sort()
    wave = other = 0.0
    for h, w in forwarded:
        t_w = w["ts_ns"] / 1e9 + off
        end = t_w + w["lat_us"] / 1e6
        xs = by_cpu.get(w["cpu"], [])
        i = max(bisect.bisect_left(xs, (t_w - 0.05,)), 0)  # a burst under way at the wake-up began before it
        for start, dur, node in xs[i:]:
            if start >= end:
                break
            held = min(start + dur, end) - max(start, t_w)
            if held <= 0 or node == h.receiver:
                continue
            t_adopt = adopted_at[h.version].get(node)
            if t_adopt is not None and t_w - 0.003 <= t_adopt <= end + 0.003:
                wave += held
            else:
                other += held
    if forwarded:
        out["forwarded_rumor_waits"] = {"count": len(forwarded),
                                        "wake_median_us": _median([w["lat_us"] for _, w in forwarded]),
                                        "cpu_held_by_its_wave_ms": round(1000 * wave / len(forwarded), 3),
                                        "cpu_held_by_other_nodes_ms": round(1000 * other / len(forwarded), 3)}
    return out


def format_report(r: dict) -> str:
    """REPORT as lines for a terminal."""
    lines = [f"scheduler: {r['wakeups']} node wake-ups, median wait for a CPU {r['wake_median_us']} µs; woken by a "
             f"node on that node's CPU: {r['woken_by_a_node_on_its_cpu']}; lost events: {r['lost_events']}",
             f"  bursts on a CPU (to sleep) median {r['burst_asleep_median_us']} µs; all bursts {r['bursts_cpu_s']} s "
             f"of CPU against the {r['nodes_cpu_s']} s the nodes report"]
    for b in r.get("by_wave_time", []):
        to = f"{b['to_ms']} ms" if b["to_ms"] is not None else "on"
        lines.append(f"  taken {b['from_ms']} ms - {to} into the wave: heartbeats {b['heartbeat']['taken']} (median "
                     f"wake {b['heartbeat']['wake_median_us']} µs), rumors {b['rumor']['taken']} "
                     f"({b['rumor']['wake_median_us']} µs)")
    f = r.get("forwarded_rumor_waits")
    if f:
        lines.append(f"  a forwarded rumor's wait ({f['count']}; median {f['wake_median_us']} µs): its CPU ran its "
                     f"own wave's nodes {f['cpu_held_by_its_wave_ms']} ms, other nodes "
                     f"{f['cpu_held_by_other_nodes_ms']} ms")
    return "\n".join(lines)
