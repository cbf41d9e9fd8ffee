"""Every value that enters a node is typed and checked where it enters: `Identity`, the Python API, the CLI, and the
HTTP API (whose parser must answer every malformed request with a 4xx, never a traceback or a dropped connection).
"""

import asyncio
import json
import subprocess
import sys

import pytest

from gossip import Identity, NodeConfig, UsageError
from gossip._local import LocalCluster, free_port, http_exchange, parse_response
from gossip._node import Node


# ---- Identity and the Python API -----------------------------------------------------------------------------

@pytest.mark.parametrize("fields, message", [
    ({"addr": 167772161}, "addr: must be a string naming an IPv4 address, got 167772161"),
    ({"addr": b"127.0.0.1"}, "addr: must be a string"),
    ({"addr": "::1"}, "addr: must be a string naming an IPv4 address, got '::1'"),
    ({"addr": "localhost"}, "addr:"),
    ({"port": True}, "port: must be an integer in 1..65535, got True"),
    ({"port": 7.0}, "port: must be an integer"),
    ({"port": "7"}, "port: must be an integer"),
    ({"port": 0}, "port:"),
    ({"port": 65536}, "port:"),
    ({"name": "\ud800"}, "name: must be a string of at most 255 bytes of valid UTF-8"),
    ({"name": "é" * 128}, "name:"),  # 256 bytes
    ({"name": 5}, "name:"),
    ({"private": "text"}, "private: must be bytes"),
    ({"private": b"x" * 513}, "private:"),
])
def test_identity_refuses_a_wrong_type_or_value_naming_the_field(fields, message):
    with pytest.raises(UsageError, match="^" + message.replace("(", r"\(").replace(".", r"\.")):
        Identity(**{"name": "n", "addr": "127.0.0.1", "port": 7, **fields})


def test_identity_takes_the_largest_valid_values():
    i = Identity(name="é" * 127 + "x", addr="255.255.255.255", port=65535, private=b"x" * 512)
    assert len(i.name.encode()) == 255


def test_python_api_refuses_bad_seeds_and_non_identities_before_binding():
    config = NodeConfig(listen_port=free_port())
    with pytest.raises(UsageError, match=r"^seeds\[1\]: addr: must be a string naming an IPv4 address"):
        Node(config, name="a", seeds=(("127.0.0.1", 7), (167772161, 7)))
    with pytest.raises(UsageError, match=r"^seeds\[0\]: port: must be an integer in 1\.\.65535, got True"):
        Node(config, name="a", seeds=(("127.0.0.1", True),))
    with pytest.raises(UsageError, match="^name:"):
        Node(config, name="\udcff")

    async def main():
        node = Node(config, name="a")
        await node.join()
        try:
            with pytest.raises(UsageError, match="^node: must be an Identity, got tuple"):
                node.set(("127.0.0.1", 7))
            assert [m.name for m in node.get()] == ["a"]
        finally:
            await node.close()
    asyncio.run(main())


@pytest.mark.parametrize("argv, message", [
    (["--seed", "167772161:7"], "argument --seed: expected ADDR:PORT with an IPv4 ADDR"),
    (["--seed", "localhost:7"], "argument --seed: expected ADDR:PORT with an IPv4 ADDR"),
    (["--seed", "127.0.0.1:²"], "argument --seed: expected ADDR:PORT"),
    (["--seed", "127.0.0.1:0"], "argument --seed: expected ADDR:PORT"),
    (["--private", "\udcff"], "argument --private: must be valid UTF-8"),
    (["--secret", "\udcff"], "argument --secret: must be valid UTF-8"),
    (["--cluster", "\udcff"], "argument --cluster: must be valid UTF-8"),
])
def test_cli_refuses_bad_values_naming_the_argument(argv, message):
    r = subprocess.run([sys.executable, "-m", "gossip", "node", "--name", "x", *argv],
                       capture_output=True, text=True, timeout=30, errors="surrogateescape")
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, r.stderr


# ---- the HTTP API --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with LocalCluster(size=2, workdir=tmp_path_factory.mktemp("inputs"), cycle_s=0.2, timeout_s=1.5) as cl:
        assert cl.wait_for(lambda: all(n.names() == {"n0", "n1"} for n in cl.nodes), 10)
        yield cl


def _post(path, body: bytes, extra: str = "") -> bytes:
    return f"POST {path} HTTP/1.1\r\nHost: n0\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body


def _set(obj) -> bytes:
    return _post("/set", json.dumps(obj).encode())


# (request bytes, expected status, a piece of the error message); each of these failed before this was fixed
MALFORMED = [
    pytest.param(_set({"addr": 167772161, "port": 7}), 400,
                 "addr: must be a string naming an IPv4 address, got 167772161", id="int-addr"),
    pytest.param(_set({"addr": "127.0.0.1", "port": True}), 400, "port: must be an integer", id="bool-port"),
    pytest.param(_set({"addr": "127.0.0.1", "port": 7, "name": 5}), 400, "name: must be a string", id="int-name"),
    pytest.param(_set({"addr": "127.0.0.1", "port": 7, "private": [1]}), 400, "private: must be a string",
                 id="list-private"),
    pytest.param(_post("/set", b'{"addr": "127.0.0.1", "port": 7, "name": "\\ud800"}'), 400,
                 "name: must be a string of at most 255 bytes of valid UTF-8", id="surrogate-name"),
    pytest.param(_post("/set", b'{"addr": "127.0.0.1", "port": 7, "private": "\\udfff"}'), 400,
                 "private: must be valid UTF-8", id="surrogate-private"),
    pytest.param(_set({"addr": "127.0.0.1", "port": 7, "name": "x" * 256}), 400, "name:", id="long-name"),
    pytest.param(_post("/set", b"[" * 50_000), 400, "nested too deeply", id="deep-json"),
    pytest.param(_post("/set", b'{"addr": "\xff"}'), 400, "body is not UTF-8", id="latin1-body"),
    pytest.param(_post("/set", b'{"port": ' + b"9" * 5000 + b"}"), 400, "body is not JSON", id="huge-int"),
    pytest.param(b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\n\r\n", 414, "request line longer", id="long-line"),
    pytest.param(b"GET /list HTTP/1.1\r\nX-A: " + b"a" * 200_000 + b"\r\n\r\n", 431, "request head",
                 id="200kB-header"),
    pytest.param(b"GET /list HTTP/1.1\r\nHost: n0\r\n" + b"X-A: b\r\n" * 65 + b"\r\n", 431, "header lines",
                 id="many-headers"),
    pytest.param("POST /publish HTTP/1.1\r\nContent-Length: ²\r\n\r\n".encode(), 400, "bad Content-Length",
                 id="superscript-length"),
    pytest.param(b"POST /publish HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400, "bad Content-Length",
                 id="negative-length"),
    pytest.param(b"POST /publish HTTP/1.1\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n", 400,
                 "bad Content-Length", id="huge-length"),
    pytest.param(b"POST /publish HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc", 400,
                 "conflicting Content-Length", id="two-lengths"),
    pytest.param(b"POST /publish HTTP/1.1\r\nHost: n0\r\nContent-Length: 100000\r\n\r\n", 413, "exceeds",
                 id="big-body"),
    pytest.param(b"POST /publish HTTP/1.1\r\nHost: n0\r\nTransfer-Encoding: gzip\r\n\r\n", 411, "Transfer-Encoding",
                 id="gzip"),
    pytest.param(b"POST /publish HTTP/1.1\r\nHost: n0\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400,
                 "bad chunk header", id="bad-chunk"),
    pytest.param(b"POST /publish HTTP/1.1\r\nContent-Length : 3\r\n\r\nabc", 400, "bad header line",
                 id="space-before-colon"),
    pytest.param(b"GET /list HTTP/1.1\r\nX-A: a\x00b\r\n\r\n", 400, "bad header line", id="nul-in-header"),
    pytest.param(b"GET /list HTTP/2.0\r\n\r\n", 400, "bad request line", id="http2"),
    pytest.param(b"GET list HTTP/1.1\r\nHost: n0\r\n\r\n", 400, "bad request line", id="relative-target"),
    pytest.param(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400, "bad request line", id="tls-hello"),
    pytest.param(b"DELETE /list HTTP/1.1\r\nHost: n0\r\n\r\n", 405, "method not allowed", id="wrong-method"),
]


@pytest.mark.parametrize("request_bytes, status, message", MALFORMED)
def test_http_answers_every_malformed_request_with_a_4xx_naming_the_problem(cluster, request_bytes, status,
                                                                           message):
    n0 = cluster.nodes[0]
    before = n0.names()
    got_status, body = parse_response(http_exchange(n0.http_where, request_bytes, timeout=5))
    assert (got_status, message in body["error"]) == (status, True), body
    assert n0.names() == before  # nothing was added, and the node still answers


def test_http_closes_cleanly_on_a_request_cut_short_and_keeps_serving(cluster):
    n0 = cluster.nodes[0]
    for cut in (b"", b"GET /list HT", b"GET /list HTTP/1.1\r\nX-A: 1", b"POST /publish HTTP/1.1\r\n"
                b"Host: n0\r\nContent-Length: 10\r\n\r\nabc"):
        assert http_exchange(n0.http_where, cut, timeout=5) == b""
    assert n0.get("/metadata")["data"] == ""  # the cut publish published nothing


def test_http_still_accepts_valid_requests_and_the_node_keeps_gossiping(cluster):
    n0, n1 = cluster.nodes
    status, body = parse_response(http_exchange(n0.http_where, _set({"addr": "127.0.0.1", "port": 9,
                                                                     "name": "z", "private": "é"})))
    # taken (a seed to contact), but not listed: nobody listens on port 9, so it is never heard from
    assert (status, body) == (200, {"ok": True}) and "z" not in n0.names()
    status, body = parse_response(http_exchange(n0.http_where, b"GET /list?x=1 HTTP/1.0\nHost: a\n\n"))
    assert status == 200 and body[0]["name"] == "n0"  # bare LF line ends and HTTP/1.0 are fine
    v = n0.post("/publish", b"after the garbage")
    assert cluster.wait_for(lambda: n1.get("/metadata")["version"] == v["version"], 5)
    log = n0.log_path.read_text()
    assert "Traceback" not in log and "Error" not in log, log[-3000:]
    assert all(n.proc.poll() is None for n in cluster.nodes)


def test_a_restarted_node_starts_its_events_on_a_fresh_line_after_a_torn_record(tmp_path):
    """A node SIGKILLed mid-record leaves a line without its newline; the next incarnation must not glue its
    first record to that fragment (the reader would lose both)."""
    from gossip._cli import _open_events

    path = tmp_path / "n0.jsonl"
    path.write_text('{"t": 1.0, "kind": "stats"}\n{"t": 2.0, "ki')  # torn by a kill
    with _open_events(str(path)) as f:
        f.write('{"t": 3.0, "kind": "started"}\n')
    lines = path.read_text().splitlines()
    assert lines == ['{"t": 1.0, "kind": "stats"}', '{"t": 2.0, "ki', '{"t": 3.0, "kind": "started"}']
    with _open_events(str(path)) as f:  # a clean end gets no empty line
        f.write('{"t": 4.0, "kind": "started"}\n')
    assert path.read_text().splitlines()[-2:] == ['{"t": 3.0, "kind": "started"}', '{"t": 4.0, "kind": "started"}']
