"""The wire format's MAC (keyed BLAKE2b-128) computed in a BPF program (bpf/blake2b.h) beside Python's hashlib.

bpf/mac_test.c runs under BPF_PROG_TEST_RUN with `repeat` (the kernel times the loop and reports the mean per
run), as an XDP and as a TC program, over a packet "42-byte prefix || message || MAC" at each message length; it
computes the MAC and compares it with the packet's. "prekeyed" starts from the key's chaining value (b2b_prekey),
one compression less. "no-MAC run" is the same program refusing a packet too short to hold a MAC: the test-run
loop, the map lookups and the verdict, without BLAKE2b. Python is `hashlib.blake2b(msg, key=key,
digest_size=16).digest()`, what gossip._wire.mac calls. Also printed: the instructions the verifier processed.

    .venv/bin/python benchmarks/bench_mac.py [--repeat 10000] [--lengths 64,256,1356] [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
import timeit
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "bpf")]  # the package, and the test's harness for mac_test.c

import bpf  # noqa: E402

KEY = bytes(range(32))


def python_ns(message: bytes, number: int) -> float:
    blake2b = hashlib.blake2b
    best = min(timeit.repeat(lambda: blake2b(message, key=KEY, digest_size=16).digest(), number=number, repeat=3))
    return best / number * 1e9


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=10_000, help="runs per BPF_PROG_TEST_RUN call")
    parser.add_argument("--lengths", default="64,256,1356", help="message lengths (bytes MACed)")
    parser.add_argument("--quick", action="store_true", help="fewer repeats (smoke run)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if args.quick:
        args.repeat = 1000
    ok, why = bpf.available()
    if not ok:
        print(f"skipped: {why}")
        return 0
    from test_blake2b_mac import OFFSET, MacHarness, VERDICTS, packet

    lengths = [int(x) for x in args.lengths.split(",")]
    rng = random.Random(1)
    harness = MacHarness()
    results = []
    try:
        harness.set_key(KEY)
        verified = harness.verified_insns()
        harness.configure(OFFSET)
        baseline = {kind: min(harness.run(bytes(OFFSET), kind, args.repeat)[1] for _ in range(3))
                    for kind in ("xdp", "tc")}
        for length in lengths:
            message = rng.randbytes(length)
            data = packet(message, KEY)
            row = {"length": length, "python_ns": python_ns(message, max(args.repeat, 10_000))}
            for prekeyed in (False, True):
                harness.configure(OFFSET, prekeyed=prekeyed)
                for kind in ("xdp", "tc"):
                    runs = [harness.run(data, kind, args.repeat) for _ in range(3)]
                    if any(verdict != VERDICTS[kind]["match"] for verdict, _ in runs):
                        raise SystemExit(f"{kind} did not accept the right MAC at length {length}")
                    row[f"{kind}{'_prekeyed' if prekeyed else ''}_ns"] = min(ns for _, ns in runs)
            results.append(row)
    finally:
        harness.close()

    print(f"keyed BLAKE2b-128 (32-byte key), ns per MAC; BPF: BPF_PROG_TEST_RUN mean of {args.repeat} runs, "
          f"best of 3")
    print(f"{'bytes':>5} | {'blocks':>6} | {'XDP':>6} | {'XDP prekeyed':>12} | {'TC':>6} | {'TC prekeyed':>11} | "
          f"{'Python':>6} | {'XDP/Python':>10} | {'prekeyed XDP/Python':>19}")
    for r in results:
        blocks = 1 + max(1, -(-r["length"] // 128))
        print(f"{r['length']:>5} | {blocks:>6} | {r['xdp_ns']:>6.0f} | {r['xdp_prekeyed_ns']:>12.0f} | "
              f"{r['tc_ns']:>6.0f} | {r['tc_prekeyed_ns']:>11.0f} | {r['python_ns']:>6.0f} | "
              f"{r['xdp_ns'] / r['python_ns']:>10.2f} | {r['xdp_prekeyed_ns'] / r['python_ns']:>19.2f}")
    print(f"no-MAC run (test-run loop, map lookups, verdict): XDP {baseline['xdp']} ns, TC {baseline['tc']} ns")
    print(f"verifier: processed {verified['xdp']} insns (XDP), {verified['tc']} (TC), limit 1,000,000; "
          "mac_test.c inlines the full and the prekeyed path and b2b_prekey")
    if args.json:
        args.json.write_text(json.dumps({"results": results, "no_mac_ns": baseline, "verified_insns": verified},
                                        indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
