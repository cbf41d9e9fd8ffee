"""One broadcast of fanout f: the TC broadcaster (one sendto) against one sendto per target.

For f in {3, 8, 16}, a sender namespace and f receiver namespaces on a bridge; each mode sends a bounded number
of broadcasts of one gossip datagram, the two modes in turn, ROUNDS times, so both see the same machine. Reported
per broadcast: syscalls (counted by strace over a short window), send-side CPU (user+system from getrusage around
the send loop only; receivers are drained outside it, and their delivery is steered to the other CPU), wall time,
and the kernel's own run time of the broadcaster program: per broadcast and per invocation (each broadcast runs it
once for the original and once per clone). The run time comes from one more TC round per fanout with the kernel's
BPF statistics on; the timed rounds run without them, since they cost each invocation two clock reads (measured
≈6 % of the broadcast's kernel time at f = 16) and only the TC mode would pay that. If something else on the host
has them on (kernel.bpf_stats_enabled), the report says so. Every copy is checked to have arrived, so a mode cannot
win by losing datagrams. Needs root and bcc.

    .venv/bin/python benchmarks/bench_broadcast.py [--broadcasts 2000] [--rounds 3] [--perf] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "bpf")]  # the package, and the tests' namespace builder

import bpf  # noqa: E402
from bpf._sys import BPF_STATS_SYSCTL, bpf_stats_enabled, prog_run_stats  # noqa: E402
from bpf_testnet import Testnet, drain  # noqa: E402
from gossip._wire import MetadataRumor, cluster_id, encode  # noqa: E402

PORT = 7946
FANOUTS = (3, 8, 16)
PAYLOAD = encode(MetadataRumor(cluster=cluster_id("bench"), origin=1, version=1, data=b"x" * 64), key=b"k")
BACKLOG_FRAMES = 160  # copies in flight between two drains: well below the kernel's per-CPU backlog (1000)
SO_SNDBUFFORCE = 32


def count_syscalls(send_once, broadcasts: int, bsend) -> dict[str, float]:
    """Syscalls per broadcast, by name, seen by strace attached to this process around BROADCASTS sends.

    Without strace, the sender's own count of its sendto calls (it makes no other syscall once warmed up).
    """
    if shutil.which("strace") is None:
        before = bsend.sendto_calls
        for _ in range(broadcasts):
            send_once()
        return {"sendto (counted, no strace)": (bsend.sendto_calls - before) / broadcasts}
    tracer = subprocess.Popen(["strace", "-c", "-f", "-p", str(os.getpid())], stderr=subprocess.PIPE, text=True)
    tracer.stderr.readline()  # "Process N attached": tracing has started
    for _ in range(broadcasts):
        send_once()
    tracer.send_signal(signal.SIGINT)
    report = tracer.communicate()[1]
    calls: dict[str, int] = {}
    for m in re.finditer(r"^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)$", report, re.M):
        calls[m[2]] = calls.get(m[2], 0) + int(m[1])
    calls.pop("total", None)
    for control in ("kill", "read", "wait4"):  # stopping strace: our SIGINT, then waiting for its report
        if calls.get(control):
            calls[control] -= 1
    return {name: n / broadcasts for name, n in calls.items() if n}


def settle(socks, wait_s: float = 0.2) -> None:
    """Let copies still in flight land (WAIT_S once, for all the sockets together), then empty every socket."""
    time.sleep(wait_s)
    for s in socks:
        drain(s, timeout_s=0)


def run_mode(net: Testnet, sender_sock, bsend, targets, socks, broadcasts: int, prog_fd: int | None = None,
             strace: bool = True) -> dict:
    """Send BROADCASTS broadcasts in batches small enough to be delivered without loss; time the sends only.
    With PROG_FD, also the program's own run time (bpf stats must be on)."""
    def send_once():
        bsend.send(sender_sock, PAYLOAD, targets)

    batch = max(1, BACKLOG_FRAMES // len(targets))

    for _ in range(20):  # warm up: neighbour cache, slot lookup, code paths
        send_once()
    settle(socks)

    cpu = wall = user = system = 0.0
    received = 0
    calls_before = bsend.sendto_calls
    run_before = prog_run_stats(prog_fd) if prog_fd is not None else (0, 0)
    done = 0
    while done < broadcasts:
        n = min(batch, broadcasts - done)
        r0, c0, w0 = resource.getrusage(resource.RUSAGE_SELF), time.process_time(), time.perf_counter()
        for _ in range(n):
            send_once()
        cpu += time.process_time() - c0
        wall += time.perf_counter() - w0
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        user += r1.ru_utime - r0.ru_utime
        system += r1.ru_stime - r0.ru_stime
        done += n
        for s in socks:
            received += len(drain(s, expect=n, timeout_s=0.3, quiet_s=0))
    sendto_per = (bsend.sendto_calls - calls_before) / broadcasts
    run_after = prog_run_stats(prog_fd) if prog_fd is not None else (0, 0)
    run_ns, runs = run_after[0] - run_before[0], run_after[1] - run_before[1]
    syscalls = count_syscalls(send_once, batch, bsend) if strace else {}
    settle(socks)
    return {"cpu_us": cpu / broadcasts * 1e6, "user_us": user / broadcasts * 1e6,
            "system_us": system / broadcasts * 1e6, "wall_us": wall / broadcasts * 1e6, "sendto": sendto_per,
            "syscalls": sum(syscalls.values()), "syscalls_by_name": syscalls,
            "delivered": received / (broadcasts * len(targets)), "bpf_us": run_ns / broadcasts / 1e3,
            "bpf_ns_per_run": run_ns / runs if runs else 0.0, "bpf_runs": runs / broadcasts}


# Stages of the kernel's send path, for --perf: a sample goes to the first stage whose frame is on its stack
# (frames leaf first); "the clone's TC pass" is tc_run nested below bpf_clone_redirect.
PERF_STAGES = [("IPI waking the RPS CPU", "net_rps_send_ipi"), ("enqueue to the RPS CPU's backlog", "enqueue_to_backlog"),
               ("RPS flow hash", "get_rps_cpu"), ("skb_clone", "skb_clone"), ("unshare (pskb_expand_head)",
               "pskb_expand_head"), ("the clone's TC pass", None), ("the clone's xmit (dev_queue_xmit, veth)",
               "bpf_clone_redirect"), ("program and helpers", "bpf_prog_"), ("UDP/IP of the sendto itself", "")]


def perf_profile(run, broadcasts: int, frequency: int = 4999) -> dict[str, float]:
    """RUN() under `perf record -g` of this process: the sendto syscall's kernel time per broadcast, by stage (us).
    Sampled (cpu-clock), so approximate; the profiler itself adds a little to each stage."""
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "perf.data")
        perf = subprocess.Popen(["perf", "record", "-q", "-g", "-F", str(frequency), "-p", str(os.getpid()),
                                 "-o", data], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)  # perf attaches
        try:
            run()
        finally:
            perf.send_signal(signal.SIGINT)
            perf.wait()
        script = subprocess.run(["perf", "script", "-i", data, "-F", "ip,sym"], capture_output=True, text=True,
                                check=True).stdout
    counts = {name: 0 for name, _ in PERF_STAGES}
    for sample in script.split("\n\n"):
        frames = [line.split(None, 1)[-1] for line in sample.strip().splitlines()]  # "address symbol+offset"
        if not any(f.startswith("__sys_sendto") for f in frames):
            continue
        clone = next((i for i, f in enumerate(frames) if f.startswith("bpf_clone_redirect")), None)
        for name, frame in PERF_STAGES:
            if frame is None:
                hit = clone is not None and any(f.startswith("tc_run") for f in frames[:clone])
            else:
                hit = any(f.startswith(frame) for f in frames)
            if hit:
                counts[name] += 1
                break
    return {name: n / frequency / broadcasts * 1e6 for name, n in counts.items()}


def merge(rounds: list[dict]) -> dict:
    """Rounds of one mode as one: medians of the timings, the first round's syscall counts, the worst delivery."""
    out = dict(rounds[0])
    for key in ("cpu_us", "user_us", "system_us", "wall_us", "bpf_us", "bpf_ns_per_run"):
        out[key] = statistics.median(r[key] for r in rounds)
    out["delivered"] = min(r["delivered"] for r in rounds)
    out["rounds"] = [{k: r[k] for k in ("cpu_us", "user_us", "system_us", "bpf_us")} for r in rounds]
    return out


def main() -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # so the testnet's teardown runs on a kill
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--broadcasts", type=int, default=2000, help="broadcasts per mode and fanout (bounded)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of both modes, in turn; medians reported")
    parser.add_argument("--no-bpf-stats", action="store_true",
                        help="skip the round with bpf stats on (no run-time figures)")
    parser.add_argument("--perf", action="store_true",
                        help="also profile one more round of each mode at the largest fanout with perf: where the "
                             "sendto's kernel time goes, by stage")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if args.broadcasts < 1 or args.rounds < 1:
        parser.error("--broadcasts and --rounds must be at least 1")
    ok, why = bpf.available()
    if not ok:
        print(f"skipped: {why}")
        return 0

    results = []
    stats_on: set[str] = set()  # kernel.bpf_stats_enabled as found before each timed round
    with bpf.Broadcaster.compile() as broadcaster, Testnet(1 + max(FANOUTS), bridge=True) as net:
        sender = net.nodes[0]
        for peer in net.nodes[1:]:
            net.set_neighbour(sender, peer)
        if len(os.sched_getaffinity(0)) > 1:
            # keep the copies' delivery (bridge, receivers' sockets) off the sender's CPU: the sender runs on the
            # first CPU, and the root-side end of its veth steers what it receives (RPS) to the second one
            cpus = sorted(os.sched_getaffinity(0))
            os.sched_setaffinity(0, {cpus[0]})
            Path(f"/sys/class/net/{sender.host_if}/queues/rx-0/rps_cpus").write_text(f"{1 << cpus[1]:x}")
            print(f"sender on CPU {cpus[0]}, delivery steered to CPU {cpus[1]}")
        sender_sock = net.udp_socket(sender, PORT)
        sender_sock.setblocking(True)  # with delivery on another CPU the sender outruns it: wait for buffer space
        sender_sock.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, 4 << 20)
        socks = {n.ip: net.udp_socket(n, PORT, rcvbuf=16 << 20) for n in net.nodes[1:]}
        for fanout in FANOUTS:
            targets = [(n.ip, PORT) for n in net.nodes[1:1 + fanout]]
            mine = [socks[ip] for ip, _ in targets]
            by_sendto, by_tc = [], []
            for r in range(args.rounds):
                stats_on.add(stats_sysctl())
                with bpf.BroadcastSender(None, sender.ifindex) as plain:
                    by_sendto.append(run_mode(net, sender_sock, plain, targets, mine, args.broadcasts,
                                              strace=r == 0))
                with broadcaster.attach(sender.ifindex, netns=sender.ns), \
                        broadcaster.sender(sender.ifindex, netns=sender.ns) as bsend:
                    by_tc.append(run_mode(net, sender_sock, bsend, targets, mine, args.broadcasts, strace=r == 0))
            result = {"fanout": fanout, "sendto": merge(by_sendto), "tc": merge(by_tc)}
            if not args.no_bpf_stats:
                with broadcaster.attach(sender.ifindex, netns=sender.ns), \
                        broadcaster.sender(sender.ifindex, netns=sender.ns) as bsend, bpf_stats_enabled():
                    result["tc_with_stats"] = run_mode(net, sender_sock, bsend, targets, mine, args.broadcasts,
                                                       prog_fd=broadcaster.prog_fd, strace=False)
            result["tc_stats"] = broadcaster.stats(sender.ifindex)
            if args.perf and fanout == max(FANOUTS):
                many = 10 * args.broadcasts  # thousands of samples per mode, not hundreds
                with bpf.BroadcastSender(None, sender.ifindex) as plain:
                    result["perf_sendto"] = perf_profile(lambda: run_mode(
                        net, sender_sock, plain, targets, mine, many, strace=False), many + 20)
                with broadcaster.attach(sender.ifindex, netns=sender.ns), \
                        broadcaster.sender(sender.ifindex, netns=sender.ns) as bsend:
                    result["perf_tc"] = perf_profile(lambda: run_mode(
                        net, sender_sock, bsend, targets, mine, many, strace=False), many + 20)
            results.append(result)

    print(f"{args.broadcasts} broadcasts per mode and round, {args.rounds} rounds in turn (medians), per broadcast: "
          "syscalls (strace), send-side CPU (user+system, then each), wall time")
    cols = [("syscalls", "syscalls", "{:.2f}"), ("CPU us", "cpu_us", "{:.1f}"), ("user us", "user_us", "{:.1f}"),
            ("system us", "system_us", "{:.1f}"), ("wall us", "wall_us", "{:.1f}")]
    print(f"{'fanout':>6} " + " ".join(f"| {title:^22}" for title, _, _ in cols) + " | delivered")
    print(f"{'':>6} " + " ".join(f"| {'sendto':>7} {'tc':>7} {'ratio':>6}" for _ in cols) + " | sendto / tc")
    for r in results:
        s, t = r["sendto"], r["tc"]
        row = f"{r['fanout']:>6} "
        for _, key, fmt in cols:
            ratio = s[key] / t[key] if t[key] else float("inf")
            row += f"| {fmt.format(s[key]):>7} {fmt.format(t[key]):>7} {ratio:>5.2f}x "
        print(row + f"| {s['delivered']:.3f} / {t['delivered']:.3f}")
    if stats_on - {"0", ""}:
        print("note: kernel.bpf_stats_enabled was on during timed rounds (set outside this benchmark): the TC "
              "mode's CPU includes the statistics' cost")
    for r in results:
        if "perf_tc" in r:
            print(f"where the sendto syscall's kernel time goes at f = {r['fanout']} (perf, us per broadcast; "
                  f"warm-up included): sendto | tc")
            for name, _ in PERF_STAGES:
                print(f"  {name:<42} {r['perf_sendto'][name]:6.2f} | {r['perf_tc'][name]:6.2f}")
            print(f"  {'total':<42} {sum(r['perf_sendto'].values()):6.2f} | {sum(r['perf_tc'].values()):6.2f}")
    if args.no_bpf_stats:
        return write_json(args.json, results)
    print("the broadcaster program's own run time, from one more TC round with bpf stats on: per broadcast, per "
          "invocation, invocations per broadcast, that round's send-side CPU; the program's counters in that round "
          "(warm-up included)")
    for r in results:
        t, st = r["tc_with_stats"], r["tc_stats"]
        print(f"{r['fanout']:>6} | {t['bpf_us']:6.2f} us | {t['bpf_ns_per_run']:6.0f} ns | {t['bpf_runs']:5.2f} | "
              f"CPU {t['cpu_us']:5.1f} us | " + " ".join(f"{k}={v}" for k, v in st.items() if v))
    return write_json(args.json, results)


def stats_sysctl() -> str:
    try:
        return Path(BPF_STATS_SYSCTL).read_text().strip()
    except OSError:
        return ""


def write_json(path: Path | None, results: list[dict]) -> int:
    if path:
        path.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
