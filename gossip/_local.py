"""A cluster of real node processes on loopback, for the demo and the tests (no root needed).

Each node is a ``python -m gossip node`` process with its HTTP API on; `LocalCluster` owns them and kills every
one of them when it exits, also on error. With ``netns`` the nodes run inside that (existing) network namespace,
on its loopback, and serve HTTP on Unix sockets in the work directory, which are reachable from any namespace.
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


def http_exchange(where: tuple[str, int] | str, request: bytes, timeout: float = 2.0) -> bytes:
    """Send REQUEST (raw bytes) to a node's HTTP API at (ADDR, PORT) or a Unix socket path, half-close, and
    return everything it answers until it closes (b"" if it closed without an answer)."""
    family = socket.AF_UNIX if isinstance(where, str) else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(where)
        try:
            s.sendall(request)
            s.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # it answered (and closed) before reading all of it: the answer is still there to read
        out = bytearray()
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                return bytes(out)
            out += chunk
        return bytes(out)


def parse_response(raw: bytes) -> tuple[int, object]:
    """(status, JSON body) of one answer of the node's HTTP API."""
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body)


class HttpStatusError(OSError):
    def __init__(self, status: int, payload) -> None:
        super().__init__(f"HTTP {status}: {payload}")
        self.status, self.payload = status, payload


@dataclass
class LocalNode:
    name: str
    port: int
    http_port: int
    argv: list[str]
    log_path: Path
    proc: subprocess.Popen | None = None
    http_path: str | None = None  # the API's Unix socket, when it has one (nodes in a namespace)

    @property
    def http_where(self) -> tuple[str, int] | str:
        return self.http_path if self.http_path is not None else ("127.0.0.1", self.http_port)

    def request(self, method: str, path: str, body: bytes = b"", timeout: float = 2.0) -> tuple[int, object]:
        raw = (f"{method} {path} HTTP/1.1\r\nHost: node\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
        answer = http_exchange(self.http_where, raw, timeout)
        if not answer:
            raise ConnectionError(f"{self.name}: the HTTP API closed without an answer")
        return parse_response(answer)

    def get(self, path: str, timeout: float = 2.0):
        if self.http_path is None:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=timeout) as r:
                return json.loads(r.read())
        return self._ok(*self.request("GET", path, timeout=timeout))

    def post(self, path: str, body: bytes = b"", timeout: float = 2.0):
        if self.http_path is None:
            req = urllib.request.Request(f"http://127.0.0.1:{self.http_port}{path}", data=body, method="POST")
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return json.loads(r.read())
        return self._ok(*self.request("POST", path, body, timeout=timeout))

    @staticmethod
    def _ok(status: int, payload):
        if status >= 400:
            raise HttpStatusError(status, payload)
        return payload

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
    netns: str | None = None  # run the nodes inside this network namespace (needs root; the caller owns it)
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
        port, http_port = free_port(), free_port()  # in a namespace, any port is free: these are merely unique
        http_path = str(self.workdir / f"{name}.http.sock") if self.netns else None
        prefix = ["ip", "netns", "exec", self.netns] if self.netns else []
        argv = [*prefix, sys.executable, "-m", "gossip", "node", "--name", name, "--port", str(port),
                "--http", f"unix:{http_path}" if http_path else f"127.0.0.1:{http_port}",
                "--protocol", self.protocol, "--cycle", str(self.cycle_s),
                "--timeout", str(self.timeout_s), "--fanout", str(self.fanout),
                "--secret", secret if secret is not None else self.secret,
                "--events", str(self.workdir / f"{name}.events.jsonl"), *self.extra_args]
        for s in seeds:
            argv += ["--seed", s]
        node = LocalNode(name=name, port=port, http_port=http_port, argv=argv,
                         log_path=self.workdir / f"{name}.log", http_path=http_path)
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

    def terminate(self, node: LocalNode, timeout_s: float = 10.0) -> int:
        """SIGTERM: the node announces its leave and exits; returns its exit status (SIGKILL after TIMEOUT_S)."""
        node.proc.send_signal(signal.SIGTERM)
        try:
            return node.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            node.proc.kill()
            node.proc.wait()
            raise

    def events(self, node: LocalNode) -> list[dict]:
        """The records in NODE's events file (a line torn by a SIGKILL is skipped)."""
        out = []
        for line in (self.workdir / f"{node.name}.events.jsonl").read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
        return out

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
