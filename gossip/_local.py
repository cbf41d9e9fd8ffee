"""A cluster of real node processes on loopback, for the demo and the tests (no root needed).

Each node is a ``python -m gossip node`` process with its HTTP API on; `LocalCluster` owns them and kills every
one of them when it exits, also on error.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
            t.bind(("127.0.0.1", 0))
            port = t.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                try:
                    u.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port


@dataclass
class LocalNode:
    name: str
    port: int
    http_port: int
    argv: list[str]
    log_path: Path
    proc: subprocess.Popen | None = None

    def get(self, path: str, timeout: float = 2.0):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=timeout) as r:
            return json.loads(r.read())

    def post(self, path: str, body: bytes = b"", timeout: float = 2.0):
        req = urllib.request.Request(f"http://127.0.0.1:{self.http_port}{path}", data=body, method="POST")
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read())

    def names(self) -> set[str]:
        return {m["name"] for m in self.get("/list")}

    def ids(self) -> set[int]:
        return {m["id"] for m in self.get("/list")}


@dataclass
class LocalCluster:
    """N nodes on 127.0.0.1; node i > 0 seeds from node (i - 1) // 2 (one seed each, a tree)."""

    size: int
    workdir: Path
    protocol: str = "udp"
    cycle_s: float = 0.2
    timeout_s: float = 1.5
    fanout: int = 3
    secret: str = "s3cret"
    extra_args: list[str] = field(default_factory=list)
    nodes: list[LocalNode] = field(default_factory=list)

    def __enter__(self) -> "LocalCluster":
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            for i in range(self.size):
                seed = [f"127.0.0.1:{self.nodes[(i - 1) // 2].port}"] if i else []
                self.add(f"n{i}", seeds=seed)
            return self
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc) -> None:
        self.close()

    def add(self, name: str, *, seeds: list[str], secret: str | None = None) -> LocalNode:
        port, http_port = free_port(), free_port()
        argv = [sys.executable, "-m", "gossip", "node", "--name", name, "--port", str(port),
                "--http", f"127.0.0.1:{http_port}", "--protocol", self.protocol, "--cycle", str(self.cycle_s),
                "--timeout", str(self.timeout_s), "--fanout", str(self.fanout),
                "--secret", secret if secret is not None else self.secret,
                "--events", str(self.workdir / f"{name}.events.jsonl"), *self.extra_args]
        for s in seeds:
            argv += ["--seed", s]
        node = LocalNode(name=name, port=port, http_port=http_port, argv=argv,
                         log_path=self.workdir / f"{name}.log")
        self.nodes.append(node)
        self.start(node)
        return node

    def start(self, node: LocalNode) -> None:
        with open(node.log_path, "ab") as logf:
            node.proc = subprocess.Popen(node.argv, stdout=logf, stderr=subprocess.STDOUT,
                                         env={**os.environ, "PYTHONUNBUFFERED": "1"})
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                node.get("/list", timeout=0.5)
                return
            except (urllib.error.URLError, ConnectionError, OSError):
                if node.proc.poll() is not None:
                    raise RuntimeError(f"node {node.name} exited: {node.log_path.read_text()[-2000:]}")
                time.sleep(0.05)
        raise RuntimeError(f"node {node.name} did not come up within 15 s")

    def kill(self, node: LocalNode) -> None:
        node.proc.send_signal(signal.SIGKILL)
        node.proc.wait()

    def live(self) -> list[LocalNode]:
        return [n for n in self.nodes if n.proc is not None and n.proc.poll() is None]

    def wait_for(self, predicate, timeout_s: float, interval_s: float = 0.1):
        """Poll PREDICATE until it returns a truthy value or TIMEOUT_S passes; returns its last value."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                value = predicate()
            except (urllib.error.URLError, ConnectionError, OSError):
                value = None
            if value or time.monotonic() > deadline:
                return value
            time.sleep(interval_s)

    def close(self) -> None:
        for n in self.nodes:
            if n.proc is not None and n.proc.poll() is None:
                n.proc.terminate()
        for n in self.nodes:
            if n.proc is None:
                continue
            try:
                n.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                n.proc.kill()
                n.proc.wait()
