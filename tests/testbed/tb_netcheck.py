"""Connectivity checks for testbed tests: UDP echo servers and clients run as real processes inside hosts.

Traffic stays between the test's own hosts; servers stop by themselves after a bounded time, clients after a
bounded number of tries.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
from collections.abc import Iterable, Sequence

import pytest

from testbed.net import Host

ECHO_PORT = 7007
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create namespaces, links and bridges")

_SERVER = """
import socket, sys, time
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind((sys.argv[1], int(sys.argv[2])))
sock.settimeout(0.2)
print("ready", flush=True)
deadline = time.monotonic() + float(sys.argv[3])
while time.monotonic() < deadline:
    try:
        data, peer = sock.recvfrom(2048)
    except socket.timeout:
        continue
    sock.sendto(data, peer)
"""

_CLIENT = """
import json, socket, sys
me, port, attempts, peers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind((me, 0))
sock.settimeout(0.3)
reached = {}
for peer in peers:
    message = f"{me}->{peer}".encode()
    reached[peer] = False
    for attempt in range(attempts):
        sock.sendto(message, (peer, port))
        try:
            while True:
                data, source = sock.recvfrom(2048)
                if data == message and source[0] == peer:
                    reached[peer] = True
                    break
        except socket.timeout:
            continue
        break
print(json.dumps(reached))
"""


def start_echo_servers(hosts: Iterable[Host], *, duration_s: float = 30.0) -> list[subprocess.Popen[str]]:
    """An echo server on each of HOSTS (bound to its address), returned once all of them listen."""
    servers = [
        host.popen(
            [sys.executable, "-c", _SERVER, host.ip, str(ECHO_PORT), str(duration_s)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for host in hosts
    ]
    for server in servers:
        assert server.stdout is not None
        ready, _, _ = select.select([server.stdout], [], [], 20.0)
        line = server.stdout.readline() if ready else ""
        if line.strip() != "ready":
            server.kill()
            raise AssertionError(f"echo server did not start: {server.stderr.read() if server.stderr else ''}")
    return servers


def echo_from(host: Host, peers: Sequence[Host], *, attempts: int = 20) -> dict[str, bool]:
    """Which of PEERS answered a UDP echo sent from HOST (by the peers' topology names); 0.3 s per attempt."""
    argv = [sys.executable, "-c", _CLIENT, host.ip, str(ECHO_PORT), str(attempts), *(p.ip for p in peers)]
    done = host.run(argv, timeout_s=120)
    reached = json.loads(done.stdout)
    return {p.name: reached[p.ip] for p in peers}


def stop(servers: Iterable[subprocess.Popen[str]]) -> None:
    for server in servers:
        if server.poll() is None:
            server.kill()
        server.communicate(timeout=5)


def netns_inode(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return (st.st_dev, st.st_ino)


def alive(pid: int) -> bool:
    """True unless PID is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")
    except OSError:
        return False


def proc_state(pid: int) -> str:
    with open(f"/proc/{pid}/stat", "rb") as fh:
        return fh.read().rsplit(b")", 1)[1].split()[0].decode()
