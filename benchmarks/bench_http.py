"""The control API's costs: what importing h11 adds to a node started with ``--http``, and requests per second.

    .venv/bin/python benchmarks/bench_http.py [--requests 3000] [--imports 15] [--quick]

Import times are the cumulative figures of ``python -X importtime``, the least and the median over fresh
interpreters: h11 as gossip._http imports it (what it adds on top of what the node loads anyway), the whole
gossip._http, and the gossip package (which does not import h11). Requests per second are those of one node process
answering one client on a Unix socket, a bounded number of requests each: a new connection per request (as urllib
does), and keep-alive on one connection for GET /stats, POST /publish with a Content-Length, and POST /publish with
a chunked body. Figures only; no pass/fail: these machines are shared and noisy.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from gossip._local import free_port  # noqa: E402


def import_ms(module: str, runs: int) -> dict[str, tuple[float, float]]:
    """(least, median) cumulative import time in ms of each of h11, gossip._http and gossip when importing MODULE:
    the least is the cost itself, the median what a busy machine adds to it."""
    samples: dict[str, list[float]] = {"h11": [], "gossip._http": [], "gossip": []}
    for _ in range(runs):
        r = subprocess.run([sys.executable, "-X", "importtime", "-c", f"import {module}"], capture_output=True,
                           text=True, cwd=ROOT, check=True)
        for line in r.stderr.splitlines():
            m = re.match(r"import time:\s+\d+ \|\s+(\d+) \|( *)(\S+)$", line)
            if m and m[3] in samples:
                samples[m[3]].append(int(m[1]) / 1000)
    return {name: (min(v), statistics.median(v)) for name, v in samples.items() if v}


def _answer(s: socket.socket, buf: bytearray) -> tuple[int, bool]:
    """Read one answer (framed by its Content-Length) from S: its status, and whether the server closes after it.
    BUF keeps what follows it."""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed after {bytes(buf[:200])!r}")
        buf += chunk
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    length = int(re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)[1])
    while len(rest) < length:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError("closed mid-body")
        rest += chunk
    buf[:] = rest[length:]
    return int(head.split(b" ", 2)[1]), re.search(rb"(?i)\r\nconnection: *close", head) is not None


def _connect(path: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(path)
    return s


def rate(path: str, request: bytes, n: int, keep_alive: bool) -> float:
    """Requests per second for N copies of REQUEST, each answered 200."""
    t0 = time.perf_counter()
    s = _connect(path)
    try:
        buf = bytearray()
        for _ in range(n):
            s.sendall(request)
            status, closing = _answer(s, buf)
            assert status == 200
            if closing or not keep_alive:  # the server ends a connection after MAX_REQUESTS_PER_CONNECTION
                s.close()
                s, buf = _connect(path), bytearray()
    finally:
        s.close()
    return n / (time.perf_counter() - t0)


def request_rates(n: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="bench-http-") as d:
        path = os.path.join(d, "api.sock")
        proc = subprocess.Popen([sys.executable, "-m", "gossip", "node", "--name", "h", "--addr", "127.0.0.1",
                                 "--port", str(free_port()), "--http", f"unix:{path}", "--log-level", "warning"],
                                cwd=ROOT)
        try:
            for _ in range(200):
                if os.path.exists(path):
                    break
                time.sleep(0.05)
            else:
                raise SystemExit("the node did not open its API socket")
            stats = b"GET /stats HTTP/1.1\r\nHost: h\r\n\r\n"
            publish = b"POST /publish HTTP/1.1\r\nHost: h\r\nContent-Length: 9\r\n\r\nconfig v1"
            chunked = (b"POST /publish HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                       b"6\r\nconfig\r\n3\r\n v1\r\n0\r\n\r\n")
            return {
                "GET /stats, a connection each": rate(path, stats, n, keep_alive=False),
                "GET /stats, keep-alive": rate(path, stats, n, keep_alive=True),
                "POST /publish, keep-alive": rate(path, publish, n, keep_alive=True),
                "POST /publish chunked, keep-alive": rate(path, chunked, n, keep_alive=True),
            }
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=3000, help="requests per measured case")
    ap.add_argument("--imports", type=int, default=15, help="fresh interpreters per import measurement")
    ap.add_argument("--quick", action="store_true", help="300 requests per case, 3 interpreters")
    args = ap.parse_args()
    if args.quick:
        args.requests, args.imports = 300, 3
    ms = import_ms("gossip._http", args.imports)
    ms["gossip"] = import_ms("gossip", args.imports)["gossip"]
    for name, label in (("h11", "import h11 (as gossip._http imports it)"), ("gossip._http", "import gossip._http "
                        "(cumulative)"), ("gossip", "import gossip (the package, without h11)")):
        print(f"{label:<40} {ms[name][0]:8.1f} ms least, {ms[name][1]:.1f} ms median of {args.imports}")
    for case, per_s in request_rates(args.requests).items():
        print(f"{case:<40} {per_s:8.0f} requests/s  ({args.requests} requests)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
