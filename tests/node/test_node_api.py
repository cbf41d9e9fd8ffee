"""The in-process Python API and the HTTP API of a node, on loopback."""

import asyncio
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from gossip import Identity, NodeConfig, UsageError, ConfigError
from gossip._local import LocalCluster, free_port
from gossip._node import Node


async def _cluster(n, protocol, **cfg):
    nodes = []
    for i in range(n):
        config = NodeConfig(listen_port=free_port(), protocol=protocol, cycle_s=0.1, timeout_s=0.8, **cfg)
        seeds = ((nodes[0].config.listen_addr, nodes[0].config.listen_port),) if nodes else ()
        node = Node(config, name=f"p{i}", seeds=seeds)
        await node.join()
        nodes.append(node)
    return nodes


async def _until(pred, timeout_s):
    for _ in range(int(timeout_s / 0.05)):
        if pred():
            return True
        await asyncio.sleep(0.05)
    return pred()


@pytest.mark.parametrize("protocol", ["udp", "tcp"])
def test_python_api_join_get_set_stop_start_publish_read(protocol):
    async def main():
        nodes = await _cluster(4, protocol)
        # a seed that does not exist: on TCP its connects fail, and that must not stall anyone
        nodes[1].set(Identity(name="ghost", addr="127.0.0.1", port=free_port()))
        try:
            names = {f"p{i}" for i in range(4)}
            assert await _until(lambda: all({m.name for m in n.get()} == names for n in nodes), 10)
            assert nodes[2].get()[0].name == "p2"  # itself first
            v = nodes[3].publish(b"cfg=1")
            assert await _until(lambda: all(n.read() == (v, b"cfg=1") for n in nodes), 5)
            nodes[0].stop()
            assert await _until(lambda: all("p0" not in {m.name for m in n.get()} for n in nodes[1:]), 5)
            nodes[0].start()
            assert await _until(lambda: all("p0" in {m.name for m in n.get()} for n in nodes[1:]), 5)
            assert all("ghost" not in {m.name for m in n.get()} for n in nodes)
            with pytest.raises(UsageError):
                nodes[0].publish(b"x" * 5000)
        finally:
            for n in nodes:
                await n.close()
    asyncio.run(main())


@pytest.mark.parametrize("protocol", ["udp", "tcp"])
def test_a_key_rotation_through_the_api_keeps_the_cluster_and_shuts_out_the_old_key(protocol):
    """set_secrets in three steps on every node (new key added last, made first, old one dropped): the members stay
    listed and nothing is dropped for its MAC; then a node still on the old key is heard by nobody. A bad ring is
    refused naming the field, and the node keeps the ring it had."""
    async def main():
        nodes = await _cluster(3, protocol, secrets=(b"old",))
        try:
            names = {f"p{i}" for i in range(3)}
            assert await _until(lambda: all({m.name for m in n.get()} == names for n in nodes), 10)
            for ring in ((b"old", b"new"), (b"new", b"old"), (b"new",)):
                for n in nodes:
                    n.set_secrets(ring)
                await asyncio.sleep(0.4)  # four cycles; timeout 0.8 s: a member lost to the step would be gone
                assert all({m.name for m in n.get()} == names for n in nodes), ring
                v = nodes[0].publish(b"under " + b"+".join(ring))
                assert await _until(lambda: all(n.read()[0] == v for n in nodes), 5), ring
            assert all(n.stats().get("dropped_bad_mac", 0) == 0 for n in nodes)
            for bad, why in (((), "non-empty"), ((b"x" * 65,), "64 bytes"), (["new"], "tuple")):
                with pytest.raises(ConfigError, match="secrets"):
                    nodes[1].set_secrets(bad)
                assert nodes[1].config.secrets == (b"new",), why
            config = NodeConfig(listen_port=free_port(), protocol=protocol, cycle_s=0.1, timeout_s=0.8,
                                secrets=(b"old",))
            late = Node(config, name="late", seeds=((nodes[0].config.listen_addr, nodes[0].config.listen_port),))
            await late.join()
            try:
                assert await _until(lambda: nodes[0].stats().get("dropped_bad_mac", 0) >= 3, 5)
                assert all("late" not in {m.name for m in n.get()} for n in nodes)
            finally:
                await late.close()
        finally:
            for n in nodes:
                await n.close()
    asyncio.run(main())


def test_config_errors_name_the_field():
    with pytest.raises(ConfigError, match="fanout"):
        NodeConfig(fanout=0)
    with pytest.raises(ConfigError, match="timeout_s: must exceed cycle_s"):
        NodeConfig(cycle_s=2.0, timeout_s=1.0)
    with pytest.raises(ConfigError, match="protocol"):
        NodeConfig(protocol="sctp")
    with pytest.raises(ConfigError, match="listen_addr"):
        NodeConfig(listen_addr="::1")


def test_cli_rejects_bad_values_with_a_message_not_a_traceback():
    r = subprocess.run([sys.executable, "-m", "gossip", "node", "--name", "x", "--fanout", "0"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "fanout" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "gossip", "node", "--name", "x", "--seed", "nohost"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "ADDR:PORT" in r.stderr


def _http(node, method, path, body=None):
    req = urllib.request.Request(f"http://127.0.0.1:{node.http_port}{path}", data=body, method=method)
    try:
        with urllib.request.urlopen(req, timeout=3) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_http_api_answers_and_rejects_bad_requests_with_4xx(tmp_path):
    with LocalCluster(size=2, workdir=tmp_path, cycle_s=0.2, timeout_s=1.5) as cl:
        n = cl.nodes[0]
        assert cl.wait_for(lambda: n.names() == {"n0", "n1"}, 10)
        assert _http(n, "POST", "/set", b"not json")[0] == 400
        status, body = _http(n, "POST", "/set", b'{"addr": "127.0.0.1"}')
        assert status == 400 and "port" in body["error"]
        status, body = _http(n, "POST", "/set", b'{"addr": "nope", "port": 1}')
        assert status == 400 and "addr" in body["error"]
        status, body = _http(n, "POST", "/set", b'{"addr": "127.0.0.1", "port": 1, "colour": "red"}')
        assert status == 400 and "colour" in body["error"]
        assert _http(n, "POST", "/publish", b"x" * 3000)[0] == 413
        assert _http(n, "GET", "/nothing-here", None)[0] == 404
        status, body = _http(n, "POST", "/set", json.dumps({"addr": "127.0.0.1", "port": 9, "name": "z"}).encode())
        assert status == 200 and "z" not in n.names()  # a seed to contact: listed once heard from (never, here)
        assert _http(n, "POST", "/stop")[1] == {"heartbeats": False}
        assert _http(n, "POST", "/start")[1] == {"heartbeats": True}
        assert cl.wait_for(lambda: _http(n, "GET", "/stats")[1]["packets_out"] > 0, 5)
        status, stats = _http(n, "GET", "/stats")
        assert status == 200 and stats["packets_in"] > 0 and stats["node"] == "n0"
        status, meta = _http(n, "GET", "/metadata")
        assert meta == {"version": 0, "origin": 0, "data": ""}
        status, body = _http(n, "POST", "/secrets", b'{"secrets": ["s3cret", "next"]}')
        assert (status, body) == (200, {"keys": 2})  # how many, never the keys
        for bad, why in ((b'{"secrets": []}', "secrets: must be a non-empty"), (b'{"secrets": "k"}', "list"),
                         (b'{"secrets": [1]}', "list of strings"), (b'{"keys": ["k"]}', "one field"),
                         (b'["k"]', "one field"), (json.dumps({"secrets": ["x" * 65]}).encode(), "64 bytes")):
            status, body = _http(n, "POST", "/secrets", bad)
            assert status == 400 and why in body["error"], (bad, body)
        assert _http(n, "GET", "/secrets")[0] == 405
        assert cl.wait_for(lambda: n.names() == {"n0", "n1"}, 5)  # still verifies the other's key, "s3cret"


def test_node_without_usable_xdp_says_why_once_and_runs_in_userspace(tmp_path):
    port, http_port = free_port(), free_port()
    log = tmp_path / "node.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "gossip", "node", "--name", "x", "--port", str(port),
                                 "--http", f"127.0.0.1:{http_port}", "--xdp", "nosuchif0"],
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        for _ in range(200):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/list", timeout=1) as r:
                    assert [m["name"] for m in json.loads(r.read())] == ["x"]
                break
            except OSError:
                time.sleep(0.05)
        else:
            raise AssertionError(log.read_text())
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    text = log.read_text()
    assert text.count("XDP fast path unavailable") == 1 and "pure userspace" in text
    assert "Traceback" not in text
