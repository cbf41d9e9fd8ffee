"""Durable metadata at the node's edges: a publish the disk refuses (``POST /publish`` answers 503 naming the state
file and the OS error, `Node.publish` raises `StateError`, the node keeps gossiping and publishes again once the
disk has room), and the state directory's lock (a second node process on it exits with code 2 and one line).

The full disk is real: a 64 KiB tmpfs mounted in a private mount namespace, so nothing outside this test sees it.
A helper process holds that namespace; this process and the nodes reach the tmpfs through the helper's
``/proc/<pid>/root``. A full disk rather than a read-only directory, because root writes into those anyway.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from gossip import NodeConfig, cluster_id
from gossip import _state
from gossip._http import HttpError, handle
from gossip._local import LocalCluster, free_port
from gossip._node import Node
from gossip._state import LOCK_NAME, StateError, decode

CLUSTER = cluster_id(NodeConfig().cluster)
ENOSPC = f"write failed: [Errno {errno.ENOSPC}] {os.strerror(errno.ENOSPC)}"


class SmallDisk:
    """A 64 KiB tmpfs in a private mount namespace; `path` reaches it from outside that namespace."""

    def __init__(self, helper: subprocess.Popen, mountpoint: Path) -> None:
        self.helper = helper
        self.path = f"/proc/{helper.pid}/root{mountpoint}"
        self._filler = os.path.join(self.path, "filler")

    def fill(self) -> None:
        """Take every free block, so the next write of a state file fails with ENOSPC."""
        with open(self._filler, "ab", buffering=0) as f:
            with contextlib.suppress(OSError):  # ENOSPC: full
                while True:
                    f.write(b"\0" * 4096)
        with pytest.raises(OSError, match="No space left"):
            with open(os.path.join(self.path, "probe"), "wb", buffering=0) as f:
                f.write(b"x")

    def free(self) -> None:
        os.unlink(self._filler)


@pytest.fixture
def small_disk(tmp_path):
    mountpoint = tmp_path / "disk"
    mountpoint.mkdir()
    name = f"gossip-test-{os.getpid()}-{secrets.token_hex(3)}"
    # the helper lives until its stdin closes: if this process dies, so do it and its namespace (and the mount)
    helper = subprocess.Popen(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c",
         'mount -t tmpfs -o size=64k,mode=0755 "$1" "$2" && echo ready && exec cat >/dev/null', "sh", name,
         str(mountpoint)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        if helper.stdout.readline() != b"ready\n":
            pytest.fail(f"cannot mount a tmpfs in a private namespace: {helper.communicate()[1].decode()}")
        yield SmallDisk(helper, mountpoint)
    finally:
        helper.stdin.close()
        try:
            helper.wait(timeout=5)
        except subprocess.TimeoutExpired:
            helper.kill()
            helper.wait()
        helper.stdout.close()
        helper.stderr.close()


def _held(state_dir: str) -> bytes:
    """The state file's data, read without a `FileStore` (whose lock the node holds)."""
    with open(os.path.join(state_dir, "metadata.state"), "rb") as f:
        return decode(f.read(), CLUSTER).data


def _records(node) -> list[dict]:
    return [json.loads(line) for line in Path(node.argv[node.argv.index("--events") + 1]).read_text().splitlines()]


@pytest.mark.root
def test_a_publish_on_a_full_disk_gets_503_and_the_node_keeps_gossiping_and_publishes_again(tmp_path, small_disk):
    full_dir = os.path.join(small_disk.path, "n0")
    with LocalCluster(size=0, workdir=tmp_path / "cluster", cycle_s=0.2, timeout_s=1.5) as cl:
        cl.extra_args = ["--state-dir", full_dir]
        n0 = cl.add("n0", seeds=[])
        cl.extra_args = ["--state-dir", str(tmp_path / "n1-state")]
        n1 = cl.add("n1", seeds=[f"127.0.0.1:{n0.port}"])
        assert cl.wait_for(lambda: n0.names() == n1.names() == {"n0", "n1"}, 15)
        v1 = n0.post("/publish", b"v1")
        assert _held(full_dir) == b"v1"

        small_disk.fill()
        status, payload = n0.request("POST", "/publish", b"v2")
        assert (status, payload) == (503, {"error": f"state file {full_dir}/metadata.state: {ENOSPC}"})
        # a value a peer publishes meanwhile cannot be made durable here either: refused without a traceback
        n1.post("/publish", b"from n1")
        assert cl.wait_for(lambda: sum(r["kind"] == "state_write_failed" for r in _records(n0)) >= 2, 5)
        assert _held(full_dir) == b"v1"
        # still alive and gossiping: its heartbeats keep arriving, its API answers
        before = n1.get("/stats")["counters"]["accepted_heartbeat"]
        assert cl.wait_for(lambda: n1.get("/stats")["counters"]["accepted_heartbeat"] >= before + 3, 5)
        assert n0.proc.poll() is None and n1.names() == {"n0", "n1"}

        small_disk.free()
        v3 = n0.post("/publish", b"v3")
        assert v3["version"] > v1["version"] and _held(full_dir) == b"v3"
        assert cl.wait_for(lambda: n1.get("/metadata") == {**v3, "data": "v3"}, 5)
        failed = [r for r in _records(n0) if r["kind"] == "state_write_failed"]
        assert {r["path"] for r in failed} == {f"{full_dir}/metadata.state"}
        assert all(r["error"] == ENOSPC.removeprefix("write failed: ") for r in failed)
    log = n0.log_path.read_text()
    assert "Traceback" not in log, log[-3000:]


@pytest.mark.root
def test_node_publish_raises_state_error_while_the_disk_is_full_and_succeeds_after(small_disk):
    config = NodeConfig(listen_port=free_port(), state_dir=os.path.join(small_disk.path, "api"))
    node = Node(config, name="a")  # not joined: publish still writes the state file before it returns
    node.publish(b"v1")
    small_disk.fill()
    with pytest.raises(StateError) as e:
        node.publish(b"v2")
    assert str(e.value) == f"state file {config.state_dir}/metadata.state: {ENOSPC}"
    assert _held(config.state_dir) == b"v1"
    small_disk.free()
    node.publish(b"v3")
    assert _held(config.state_dir) == b"v3"


def test_the_http_api_answers_503_when_the_state_file_cannot_be_written(tmp_path, monkeypatch):
    """Without root no small disk can be mounted, so this one fakes the OS's answer: `os.write` raising ENOSPC,
    only while the publish runs. The root tests above get the same answer from a full tmpfs."""
    node = Node(NodeConfig(listen_port=free_port(), state_dir=str(tmp_path)), name="a")
    assert handle(node, "POST", "/publish", b"v1")["version"] > 0

    def no_space(fd, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    with monkeypatch.context() as m:
        m.setattr(_state.os, "write", no_space)
        with pytest.raises(HttpError) as e:
            handle(node, "POST", "/publish", b"v2")
    assert (e.value.status, str(e.value)) == (503, f"state file {tmp_path}/metadata.state: {ENOSPC}")
    assert _held(str(tmp_path)) == b"v1"
    assert handle(node, "POST", "/publish", b"v3")["version"] > 0 and _held(str(tmp_path)) == b"v3"


def test_a_second_node_on_a_state_dir_in_use_exits_with_one_line_and_code_2(tmp_path):
    state_dir = tmp_path / "state"
    with LocalCluster(size=0, workdir=tmp_path / "cluster", extra_args=["--state-dir", str(state_dir)]) as cl:
        first = cl.add("n0", seeds=[])
        first.post("/publish", b"kept")
        second = subprocess.run([sys.executable, "-m", "gossip", "node", "--name", "n1", "--port", str(free_port()),
                                 "--http", f"127.0.0.1:{free_port()}", "--state-dir", str(state_dir)],
                                capture_output=True, text=True, timeout=30)
        assert second.returncode == 2 and second.stdout == ""
        assert second.stderr == (f"error: state_dir: {state_dir} is in use by another node (pid {first.proc.pid}), "
                                 f"which holds {state_dir / LOCK_NAME}; two nodes must not share a state directory\n")
        assert first.get("/metadata")["data"] == "kept"  # the first one never noticed

        # the lock lives as long as its process, however that ends: after a SIGKILL the next node takes it
        cl.kill(first)
        again = cl.add("n1", seeds=[])
        assert again.get("/metadata")["data"] == "kept"
