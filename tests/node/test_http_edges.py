"""The control API at the edges of HTTP/1.1, over real sockets to a real node: chunked bodies, heads and bodies over
their bounds, malformed Content-Length, slow and idle clients cut off by the whole-request deadline, keep-alive,
pipelining, ``Expect: 100-continue``, the connection limit, and a Unix socket that is still in use.

Most tests run a `Node` and its API in this process (an asyncio loop in a thread), so a test can shorten the
deadline and the connection limit through `serve`'s parameters and talk to it with plain blocking sockets; one runs
the node as its own process, as the testbed does.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import errno
import json
import logging
import os
import select
import socket
import threading
import time

import pytest

from gossip import NodeConfig
from gossip._http import MAX_BODY_BYTES, MAX_CONNECTIONS, MAX_HEAD_BYTES, REQUEST_TIMEOUT_S, serve
from gossip._local import LocalCluster, free_port, http_exchange, parse_response
from gossip._node import Node


@contextlib.contextmanager
def api(where, *, request_timeout_s: float = REQUEST_TIMEOUT_S, max_connections: int = MAX_CONNECTIONS):
    """A node named h0 with its API on WHERE (a Unix socket path or (ADDR, PORT)), served from a thread."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    state: dict = {}

    async def main():
        node = Node(NodeConfig(listen_port=free_port(), cycle_s=0.2, timeout_s=1.5), name="h0")
        await node.join()
        try:
            server = await serve(node, where, request_timeout_s=request_timeout_s, max_connections=max_connections)
            try:
                state["stop"] = asyncio.Event()
                ready.set()
                await state["stop"].wait()
            finally:
                server.close()
                await server.wait_closed()
        finally:
            await node.close()

    def run():
        try:
            loop.run_until_complete(main())
        except BaseException as e:  # shown by the test, not lost in the thread
            state["error"] = e
        finally:
            ready.set()

    thread = threading.Thread(target=run, name="http-api", daemon=True)
    thread.start()
    try:
        assert ready.wait(15) and "error" not in state, state.get("error")
        yield where
    finally:
        if "stop" in state:
            loop.call_soon_threadsafe(state["stop"].set)
        thread.join(15)
        loop.close()


@pytest.fixture
def unix_api(tmp_path):
    with api(str(tmp_path / "api.sock")) as where:
        yield where


def _connect(where, timeout_s: float = 10.0) -> socket.socket:
    s = socket.socket(socket.AF_UNIX if isinstance(where, str) else socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout_s)
    s.connect(where)
    return s


class Answers:
    """The answers read from one connection, one at a time (framed by their Content-Length)."""

    def __init__(self, s: socket.socket) -> None:
        self.s, self.buf = s, b""

    def _fill(self) -> bool:
        chunk = self.s.recv(65536)
        self.buf += chunk
        return bool(chunk)

    def next(self) -> tuple[int, dict, object]:
        """(status, headers with lower-case names, JSON payload)."""
        while b"\r\n\r\n" not in self.buf:
            assert self._fill(), f"closed after {self.buf[:200]!r}"
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        length = int(headers.get("content-length", 0))
        while len(self.buf) < length:
            assert self._fill(), "closed mid-body"
        body, self.buf = self.buf[:length], self.buf[length:]
        return status, headers, json.loads(body) if body else None

    def closed(self) -> bool:
        """True if the server closed the connection (after anything still unread, which must be nothing)."""
        try:
            more = self._fill()
        except ConnectionResetError:
            return True
        assert not more or self.buf == b"", self.buf[:200]
        return not more


def _request(method: str, path: str, body: bytes | None = None, headers: str = "Host: h0\r\n") -> bytes:
    length = f"Content-Length: {len(body)}\r\n" if body is not None else ""
    return f"{method} {path} HTTP/1.1\r\n{headers}{length}\r\n".encode() + (body or b"")


def _chunked(*chunks: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"


def _exchange(where, raw: bytes) -> tuple[int, object]:
    return parse_response(http_exchange(where, raw, timeout=10))


def test_a_chunked_body_publishes_the_decoded_data(unix_api):
    head = b"POST /publish HTTP/1.1\r\nHost: h0\r\nTransfer-Encoding: chunked\r\n\r\n"
    status, published = _exchange(unix_api, head + _chunked(b"config ", b"v", b"2"))
    assert status == 200
    assert _exchange(unix_api, _request("GET", "/metadata")) == (200, {**published, "data": "config v2"})
    # data that is not UTF-8 comes back as data_b64
    status, published = _exchange(unix_api, head + _chunked(b"\xff\xfe", b"\x00raw"))
    assert status == 200
    status, meta = _exchange(unix_api, _request("GET", "/metadata"))
    assert "data" not in meta and base64.b64decode(meta["data_b64"]) == b"\xff\xfe\x00raw"


def test_a_chunked_publish_reaches_a_peer_from_a_node_process(tmp_path):
    with LocalCluster(size=2, workdir=tmp_path, cycle_s=0.2, timeout_s=1.5) as cl:
        n0, n1 = cl.nodes
        assert cl.wait_for(lambda: n0.names() == n1.names() == {"n0", "n1"}, 15)
        raw = b"POST /publish HTTP/1.1\r\nHost: n0\r\nTransfer-Encoding: chunked\r\n\r\n" + _chunked(b"a" * 700, b"b")
        status, published = _exchange(n0.http_where, raw)
        assert status == 200
        assert cl.wait_for(lambda: n1.get("/metadata") == {**published, "data": "a" * 700 + "b"}, 10)
        assert "Traceback" not in n0.log_path.read_text()


def test_a_200kB_header_line_gets_431_and_the_node_answers_the_next_request(unix_api):
    status, payload = _exchange(unix_api, b"GET /list HTTP/1.1\r\nHost: h0\r\nX-A: " + b"a" * 200_000 + b"\r\n\r\n")
    assert (status, f"longer than {MAX_HEAD_BYTES} bytes" in payload["error"]) == (431, True), payload
    status, payload = _exchange(unix_api, b"GET /" + b"a" * 200_000 + b" HTTP/1.1\r\nHost: h0\r\n\r\n")
    assert status == 414 and "request line" in payload["error"]
    # a head that arrives whole in one read is held to the same bound as one that trickles in
    status, _ = _exchange(unix_api, b"GET /list HTTP/1.1\r\nHost: h0\r\nX-A: " + b"a" * (MAX_HEAD_BYTES + 10)
                          + b"\r\n\r\n")
    assert status == 431
    status, members = _exchange(unix_api, _request("GET", "/list"))
    assert status == 200 and members[0]["name"] == "h0"


@pytest.mark.parametrize("value", ["²", "-1", "+3", "1e3", "0x10", "3 3", "3, 4", "9" * 5000, ""])
def test_a_wrong_content_length_gets_400_naming_it(unix_api, value):
    raw = f"POST /publish HTTP/1.1\r\nHost: h0\r\nContent-Length: {value}\r\n\r\nabc".encode()
    status, payload = _exchange(unix_api, raw)
    assert (status, "Content-Length" in payload["error"]) == (400, True), payload


def test_two_different_content_lengths_or_one_with_a_transfer_encoding_get_400(unix_api):
    status, payload = _exchange(unix_api, _request("POST", "/publish", b"abc", "Host: h0\r\nContent-Length: 2\r\n"))
    assert status == 400 and "conflicting Content-Length" in payload["error"]
    raw = b"POST /publish HTTP/1.1\r\nHost: h0\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
    status, payload = _exchange(unix_api, raw + _chunked(b"abc"))
    assert status == 400 and "Transfer-Encoding and Content-Length" in payload["error"]
    assert _exchange(unix_api, _request("GET", "/metadata"))[1]["data"] == ""  # nothing was published


def test_a_body_over_64KiB_gets_413_declared_or_chunked(unix_api):
    big = b"x" * (MAX_BODY_BYTES + 1)
    status, payload = _exchange(unix_api, _request("POST", "/publish", big))
    assert status == 413 and "exceeds" in payload["error"]
    raw = b"POST /publish HTTP/1.1\r\nHost: h0\r\nTransfer-Encoding: chunked\r\n\r\n"
    status, payload = _exchange(unix_api, raw + _chunked(*[b"y" * 8192] * 9))
    assert status == 413 and "exceeds" in payload["error"]
    # within 64 KiB but more than a packet holds: the node's own refusal, still 413
    status, payload = _exchange(unix_api, _request("POST", "/publish", b"z" * 5000))
    assert status == 413
    assert _exchange(unix_api, _request("GET", "/metadata"))[1]["data"] == ""


@pytest.mark.parametrize("raw", [
    b"\x00\x01\x02\r\n\r\n", b"GET\r\n\r\n", b"GET / HTTP/1.1 extra\r\n\r\n", b"GET /list HTTP/1.1\r\n\r\n",
    b"GET /list HTTP/1.1\r\nHost: h0\r\nHost: h1\r\n\r\n", b"GET /list HTTP/1.1\r\nHost: h0\r\n: v\r\n\r\n",
    b"POST /publish HTTP/1.1\r\nHost: h0\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n",
    b"GET http://h0/list HTTP/1.1\r\nHost: h0\r\n\r\n", b"GET /list HTTP/9.9\r\n\r\n",
], ids=["binary", "no-target", "extra-field", "no-host", "two-hosts", "empty-name", "bad-chunk-end",
        "absolute-target", "http-9"])
def test_garbage_gets_400_and_nothing_is_logged(unix_api, raw, caplog):
    with caplog.at_level(logging.DEBUG):
        status, payload = _exchange(unix_api, raw)
        assert status == 400 and isinstance(payload["error"], str)
        assert _exchange(unix_api, _request("GET", "/list"))[0] == 200
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_a_slow_sender_and_an_idle_client_are_cut_off_by_the_whole_request_deadline(tmp_path):
    with api(str(tmp_path / "api.sock"), request_timeout_s=1.0) as where:
        # one byte every 0.1 s: each read is quick, so only a deadline on the whole request ends it
        request = _request("POST", "/publish", b"s" * 200)
        with _connect(where) as s:
            sent = 0
            while sent < len(request):
                if select.select([s], [], [], 0)[0]:  # readable: the server closed (no answer is due)
                    break
                try:
                    s.send(request[sent:sent + 1])
                except (BrokenPipeError, ConnectionResetError):
                    break
                sent += 1
                time.sleep(0.1)
            assert sent < len(request)
            assert Answers(s).closed()
        with _connect(where) as s:  # connected, sends nothing
            assert Answers(s).closed()
        # and between two requests on a kept-alive connection
        with _connect(where) as s:
            s.sendall(_request("GET", "/stats"))
            answers = Answers(s)
            assert answers.next()[0] == 200
            assert answers.closed()
        assert _exchange(where, _request("GET", "/metadata"))[1]["data"] == ""


def test_keep_alive_and_pipelined_requests_are_answered_in_order_on_one_connection(unix_api):
    with _connect(unix_api) as s:
        answers = Answers(s)
        s.sendall(_request("POST", "/publish", b"one"))
        status, headers, v1 = answers.next()
        assert status == 200 and "connection" not in headers
        s.sendall(_request("GET", "/metadata"))
        assert answers.next()[2] == {**v1, "data": "one"}
        # three at once, the last asking to close: three answers in order, then the close
        s.sendall(_request("POST", "/publish", b"two") + _request("GET", "/metadata")
                  + _request("GET", "/list", headers="Host: h0\r\nConnection: close\r\n"))
        status, _, v2 = answers.next()
        assert status == 200 and v2["version"] > v1["version"]
        assert answers.next()[2] == {**v2, "data": "two"}
        status, headers, members = answers.next()
        assert status == 200 and headers["connection"] == "close" and members[0]["name"] == "h0"
        assert answers.closed()
    # HTTP/1.0 gets one answer and the close
    with _connect(unix_api) as s:
        s.sendall(b"GET /stats HTTP/1.0\r\n\r\n")
        answers = Answers(s)
        status, headers, stats = answers.next()
        assert status == 200 and stats["node"] == "h0"
        assert answers.closed()
    # an error answer ends the connection: what was pipelined behind it is not served
    with _connect(unix_api) as s:
        s.sendall(_request("GET", "/nothing") + _request("POST", "/publish", b"three"))
        answers = Answers(s)
        assert answers.next()[0] == 404
        assert answers.closed()
    assert _exchange(unix_api, _request("GET", "/metadata"))[1]["data"] == "two"


def test_expect_100_continue_is_answered_before_the_body_is_sent(unix_api):
    with _connect(unix_api) as s:
        s.sendall(b"POST /publish HTTP/1.1\r\nHost: h0\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
        interim = b""
        while b"\r\n\r\n" not in interim:
            chunk = s.recv(1)
            assert chunk, interim
            interim += chunk
        assert interim.startswith(b"HTTP/1.1 100 ")
        s.sendall(b"later")
        status, _, published = Answers(s).next()
    assert status == 200
    assert _exchange(unix_api, _request("GET", "/metadata")) == (200, {**published, "data": "later"})


def test_connections_over_the_limit_get_503_and_many_concurrent_ones_are_served(tmp_path):
    with api(("127.0.0.1", free_port()), max_connections=4) as where:
        held = [_connect(where) for _ in range(4)]
        try:
            # each is counted as soon as it is accepted, in order, so the fifth is over the limit
            with _connect(where) as extra:
                answers = Answers(extra)
                status, _, payload = answers.next()
                assert status == 503 and "4 connections open" in payload["error"]
                assert answers.closed()
        finally:
            for s in held:
                s.close()
        # the four are closed: their slots come back
        for _ in range(50):
            status, _ = _exchange(where, _request("GET", "/stats"))
            if status == 200:
                break
            time.sleep(0.05)
        assert status == 200
    with api(("127.0.0.1", free_port())) as where:
        # 100 connections open at once, each with a request sent before any answer is read
        socks = [_connect(where) for _ in range(100)]
        try:
            for i, s in enumerate(socks):
                s.sendall(_request("POST", "/set", json.dumps({"addr": "127.0.0.1", "port": 20000 + i}).encode()))
            assert [Answers(s).next()[:3:2] for s in socks] == [(200, {"ok": True})] * 100
        finally:
            for s in socks:
                s.close()
        status, members = _exchange(where, _request("GET", "/list"))
        assert status == 200


def test_a_unix_socket_in_use_is_refused_and_a_stale_one_replaced(tmp_path):
    path = str(tmp_path / "api.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as other:
        other.bind(path)
        other.listen()
        with pytest.raises(AssertionError, match="Address already in use"):
            with api(path):
                pass
        assert os.path.exists(path)  # still the other's
    # the other has gone (its socket file stays, as a killed process leaves it): the node takes the path
    with api(path) as where:
        assert _exchange(where, _request("GET", "/stats"))[1]["node"] == "h0"


def test_the_refusal_of_a_socket_in_use_is_an_address_in_use_error(tmp_path):
    path = str(tmp_path / "api.sock")

    async def main():
        node = Node(NodeConfig(listen_port=free_port()), name="h0")
        await node.join()
        try:
            with pytest.raises(OSError) as e:
                await serve(node, path)
            return e.value.errno
        finally:
            await node.close()

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as other:
        other.bind(path)
        other.listen()
        assert asyncio.run(main()) == errno.EADDRINUSE
