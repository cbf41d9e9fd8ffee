"""Bounded, seeded fuzzing (Hypothesis, derandomized: the same inputs on every run, a few seconds in all).

- The wire decoder: random bytes and mutated valid datagrams (also re-signed after the mutation, so the body
  decoders see them) into `GossipCore.receive`: it never raises, and every datagram is counted exactly once, as
  accepted or as dropped under a reason.
- The control API: random and mutated HTTP requests to a real running node: every one gets an answer that is not
  a 5xx, or a clean close; the node is alive and still gossiping afterwards, and its log has no traceback.
  The nodes run in a throwaway namespace (on its loopback, the API on a Unix socket), because a fuzzed
  ``POST /set`` can name any address and the node would then send heartbeats there.

Inputs that failed while this was written are kept as explicit examples.
"""

import json
import re
import struct

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gossip import _wire as wire
from gossip._local import LocalCluster, http_exchange
from namespaces import namespace
from fakenet import make_core
from test_wire import CLUSTER, KEYS, messages

FUZZ = settings(derandomize=True, database=None, deadline=None, max_examples=400,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
OUTCOMES = ("dropped", "accepted_heartbeat", "accepted_leave", "adopted_rumor", "adopted_swap", "swap_answered")


def _resign(data: bytes, key: bytes) -> bytes:
    """DATA with its body_len and MAC fixed up, so that only the body's own structure can reject it."""
    if len(data) < wire.HEADER_BYTES:
        return data
    signed = bytearray(data[:wire.HEADER_BYTES]) + data[wire.HEADER_BYTES:]
    struct.pack_into("!H", signed, wire.OFF_BODY_LEN, (len(signed) - wire.HEADER_BYTES) & 0xFFFF)
    return bytes(signed) + wire.mac(key, bytes(signed))


mutations = st.lists(st.tuples(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]),
                               st.integers(0, 2000), st.integers(0, 255)), min_size=1, max_size=6)


def _mutate(data: bytes, ops) -> bytes:
    buf = bytearray(data)
    for op, pos, value in ops:
        pos = pos % (len(buf) + 1)
        if op == "flip" and pos < len(buf):
            buf[pos] ^= 1 << (value & 7)
        elif op == "set" and pos < len(buf):
            buf[pos] = value
        elif op == "insert":
            buf[pos:pos] = bytes([value]) * (1 + value % 8)
        elif op == "delete":
            del buf[pos:pos + 1 + value % 8]
        elif op == "truncate":
            del buf[pos:]
    return bytes(buf)


def _receive_counted_once(data: bytes) -> None:
    core = make_core(0, cluster="test", secrets=KEYS)
    core.receive(data, 1000.0)  # must not raise
    s = core.stats
    assert s["packets_in"] == 1 and sum(s[k] for k in OUTCOMES) == 1, dict(s)
    if s["dropped"]:
        assert sum(v for k, v in s.items() if k.startswith("dropped_")) == 1


@FUZZ
@given(messages, mutations, st.booleans())
@example(wire.SwapResponse(cluster=CLUSTER, origin=1, version=1, data=b""), [("truncate", 24, 0)], True)
@example(wire.Leave(cluster=CLUSTER, origin=wire.node_id("127.0.0.1", 9005), seq=7,
                    identity=wire.Identity(name="n5", addr="127.0.0.1", port=9005)), [("set", 40, 0)], True)
def test_fuzz_wire_mutated_valid_datagrams_never_raise_and_are_counted_once(msg, ops, resign):
    data = _mutate(wire.encode(msg, key=KEYS[0]), ops)
    _receive_counted_once(_resign(data[:-wire.MAC_BYTES], KEYS[0]) if resign else data)


@FUZZ
@given(st.binary(max_size=1500), st.booleans())
def test_fuzz_wire_random_bytes_never_raise_and_are_counted_once(data, resign):
    _receive_counted_once(_resign(data, KEYS[0]) if resign else data)


# ---- the control API -----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fuzzed_cluster(tmp_path_factory):
    with namespace("gossip-fuzz") as ns, LocalCluster(size=2, workdir=tmp_path_factory.mktemp("fuzz"), netns=ns,
                                          cycle_s=0.2, timeout_s=1.5) as cl:
        assert cl.wait_for(lambda: all(n.names() == {"n0", "n1"} for n in cl.nodes), 15)
        yield cl


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=30)
    | st.sampled_from(["127.0.0.1", "127.0.0.2", "\ud800", "1.2.3.4.5", "", " 127.0.0.1"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=8)
set_bodies = st.fixed_dictionaries({}, optional={"addr": json_values, "port": json_values, "name": json_values,
                                                 "private": json_values, "colour": json_values}).map(
    lambda d: json.dumps(d).encode())
header_names = st.sampled_from(["Content-Length", "content-length", "Transfer-Encoding", "Host", "X-A",
                                "Content-Length ", "", "Bad Name", "\xff"]) | st.text(max_size=10)
header_values = st.sampled_from(["0", "5", "²", "-1", "chunked", "1e3", " 3 ", "99999999999999999999"]) \
    | st.text(max_size=20)


@st.composite
def requests(draw) -> bytes:
    method = draw(st.sampled_from(["GET", "POST", "PUT", "HEAD", "G ET", ""]) | st.text(max_size=6))
    path = draw(st.sampled_from(["/list", "/metadata", "/stats", "/publish", "/set", "/start", "/x", "*", ""])
                | st.text(max_size=12))
    version = draw(st.sampled_from(["HTTP/1.1", "HTTP/1.0", "HTTP/2", "", "http/1.1"]))
    body = draw(set_bodies | st.binary(max_size=300) | json_values.map(lambda v: json.dumps(v).encode()))
    headers = draw(st.lists(st.tuples(header_names, header_values), max_size=5))
    if draw(st.booleans()):
        headers.append(("Content-Length", str(len(body))))
    eol = draw(st.sampled_from(["\r\n", "\n", "\r"]))
    head = f"{method} {path} {version}{eol}" + "".join(f"{k}: {v}{eol}" for k, v in headers) + eol
    raw = head.encode("utf-8", "surrogatepass") + body
    return _mutate(raw, draw(mutations)) if draw(st.booleans()) else raw


def _check_answer(raw: bytes) -> None:
    # bytes past a request's body are the next request on the connection (kept alive), so one answer each
    while raw:  # b"" at the start: a clean close
        head, sep, raw = raw.partition(b"\r\n\r\n")
        assert sep and head.startswith(b"HTTP/1.1 "), head[:200]
        status = int(head.split(b" ", 2)[1])
        assert 200 <= status < 500, head[:300]
        length = int(re.search(rb"\r\nContent-Length: (\d+)", head)[1])
        payload, raw = json.loads(raw[:length]), raw[length:]
        if status >= 400:
            assert isinstance(payload["error"], str)


@pytest.mark.root
@pytest.mark.netns
@FUZZ
@given(requests() | st.binary(max_size=400))
@example(b"POST /publish HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
@example(b"POST /set HTTP/1.1\r\nContent-Length: 40\r\n\r\n" + b'{"addr": "127.0.0.1", "port": 7, "name": "\\ud800"}')
@example("POST /publish HTTP/1.1\r\nContent-Length: ²\r\n\r\n".encode())
@example(b"POST /set HTTP/1.1\r\nContent-Length: 50000\r\n\r\n" + b"[" * 50000)
@example(b"GET /list HTTP/1.1\r\nX-A: " + b"a" * 200_000 + b"\r\n\r\n")
@example(b"POST /set HTTP/1.1\r\nContent-Length: 30\r\n\r\n" + b'{"addr": 167772161, "port": 7}')
def test_fuzz_http_every_request_gets_an_answer_or_a_clean_close(fuzzed_cluster, raw):
    _check_answer(http_exchange(fuzzed_cluster.nodes[0].http_where, raw, timeout=10))


@pytest.mark.root
@pytest.mark.netns
def test_fuzz_http_node_is_alive_and_gossiping_after_the_fuzz(fuzzed_cluster):
    # runs after the fuzz test above (same module fixture): the node must have come through all of it
    n0, n1 = fuzzed_cluster.nodes
    n0.post("/start")  # a fuzzed POST /stop may have stopped its heartbeats: that is an answer, not damage
    assert all(n.proc.poll() is None for n in fuzzed_cluster.nodes)
    before = n1.get("/stats")["counters"].get("accepted_heartbeat", 0)
    assert fuzzed_cluster.wait_for(lambda: n1.get("/stats")["counters"].get("accepted_heartbeat", 0) > before + 2
                                   and "n0" in n1.names(), 10)
    v = n0.post("/publish", b"after the fuzz")
    assert fuzzed_cluster.wait_for(lambda: n1.get("/metadata")["version"] == v["version"], 5)
    log = n0.log_path.read_text()
    assert "Traceback" not in log, log[-3000:]
