"""The JSON control API of a node (``--http ADDR:PORT`` or ``--http unix:PATH``).

GET /list, GET /metadata, GET /stats, POST /publish (body = data), POST /set (a node as JSON), POST /stop,
POST /start, POST /secrets (the key ring as JSON, ``{"secrets": ["new", "old"]}``: the first signs, all verify;
the answer tells only how many keys are in use). A bad request gets a 4xx with a JSON ``{"error": ...}`` naming
what is wrong. A publish whose value the node could not make durable (``state_dir`` on a full or failing disk) gets
503 with the state file and the OS error: it was not acknowledged, and the same request can succeed once the disk
takes writes again.

HTTP/1.1 is parsed by h11, a sans-IO state machine (bytes in, events out): request framing (Content-Length or
chunked bodies, pipelining, keep-alive, ``Expect: 100-continue``) is where a hand-written parser goes wrong, and h11
validates every line and header the RFC way, including that an HTTP/1.1 request names its ``Host``. Its import
costs 9-13 ms on top of the node (benchmarks/bench_http.py: the least and the median of fresh interpreters), paid
only by a node started with ``--http``: more than a few ms, but a web framework would cost ~0.2 s of CPU per
process, which dominates when the testbed starts hundreds of nodes at once. This module does the I/O and the
bounds, which h11 leaves to its caller:

- the request head (request line and headers) at most MAX_HEAD_BYTES (414 if the request line alone is longer,
  else 431), at most MAX_HEADER_LINES headers (431), a body at most MAX_BODY_BYTES (413);
- a whole request, from the first byte awaited (so also the idle time of a kept-alive connection) to the end of its
  body, within ``request_timeout_s``: a slow sender (one byte a second) is cut off, not only a silent one; an
  answer must be taken by the client within WRITE_TIMEOUT_S;
- at most ``max_connections`` connections at once (the next ones get 503), MAX_REQUESTS_PER_CONNECTION requests on
  one connection.

An error answer closes the connection. Nothing a client sends may raise anything out of the connection handler:
h11's `RemoteProtocolError` and our `HttpError` become answers, a client that hangs up or stalls gets the
connection closed, and only a bug of ours is logged (with its traceback) and answered 500.
"""

from __future__ import annotations

import asyncio
import base64
import errno
import json
import logging
import os
import re
import socket
import stat
from http import HTTPStatus

import h11

from ._node import Node
from ._state import StateError
from ._wire import Identity
from .errors import UsageError

MAX_BODY_BYTES = 64 * 1024
MAX_HEAD_BYTES = 16 * 1024  # the request line and all header lines; h11's max_incomplete_event_size
MAX_HEADER_LINES = 64
REQUEST_TIMEOUT_S = 5.0
WRITE_TIMEOUT_S = 5.0
MAX_CONNECTIONS = 256
MAX_REQUESTS_PER_CONNECTION = 1000
READ_BYTES = 65536
LINGER_BYTES = 1 << 20  # after an error answer, read (and discard) at most this much of what the client still sends
LINGER_S = 1.0

log = logging.getLogger("gossip")

_BYTEARRAY = re.compile(r"bytearray\((b(['\"]).*\2)\)", re.S)


class HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def metadata_json(version, data: bytes) -> dict:
    out = {"version": version.seq, "origin": version.origin}
    try:
        out["data"] = data.decode("utf-8")
    except UnicodeDecodeError:
        out["data_b64"] = base64.b64encode(data).decode()
    return out


def _set_body(body: bytes) -> Identity:
    obj = _json_body(body)
    if not isinstance(obj, dict):
        raise HttpError(400, "body must be a JSON object with addr, port and optionally name, private")
    unknown = set(obj) - {"name", "addr", "port", "private"}
    if unknown:
        raise HttpError(400, f"unknown field(s): {', '.join(sorted(unknown))}")
    if "addr" not in obj or "port" not in obj:
        raise HttpError(400, "fields addr and port are required")
    for name in ("name", "private"):  # strings, not anything str() can print: {"name": 5} is a mistake
        if not isinstance(obj.get(name, ""), str):
            raise HttpError(400, f"{name}: must be a string, got {json.dumps(obj[name])[:80]}")
    try:
        private = obj.get("private", "").encode("utf-8")
    except UnicodeEncodeError:
        raise HttpError(400, f"private: must be valid UTF-8, got {obj['private'][:80]!r}") from None
    try:
        return Identity(name=obj.get("name", ""), addr=obj["addr"], port=obj["port"], private=private)
    except UsageError as e:
        raise HttpError(400, str(e)) from None


def _json_body(body: bytes):
    try:
        return json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise HttpError(400, f"body is not UTF-8: {e}") from None
    except RecursionError:  # e.g. "[" * 50000: the decoder recurses once per level
        raise HttpError(400, "body is not JSON: nested too deeply") from None
    except ValueError as e:  # also an integer of more than 4300 digits
        raise HttpError(400, f"body is not JSON: {e}") from None


def _secrets_body(body: bytes) -> tuple[bytes, ...]:
    obj = _json_body(body)
    if not isinstance(obj, dict) or set(obj) != {"secrets"}:
        raise HttpError(400, 'body must be a JSON object with one field, secrets: {"secrets": ["key", ...]}')
    ring = obj["secrets"]
    if not isinstance(ring, list) or not all(isinstance(k, str) for k in ring):
        raise HttpError(400, "secrets: must be a list of strings (the first signs, all verify)")
    try:
        return tuple(k.encode("utf-8") for k in ring)
    except UnicodeEncodeError:
        raise HttpError(400, "secrets: must be valid UTF-8") from None


def handle(node: Node, method: str, path: str, body: bytes):
    """The answer (a JSON-able value) to one request; raises HttpError for a bad one."""
    route = (method, path)
    if route == ("GET", "/list"):
        return [m.to_json() for m in node.get()]
    if route == ("GET", "/metadata"):
        return metadata_json(*node.read())
    if route == ("GET", "/stats"):
        s = node.stats()
        dropped = {k[len("dropped_"):]: v for k, v in s.items() if k.startswith("dropped_")}
        out = {"node": node.identity.name, "packets_in": s.get("packets_in", 0),
               "packets_out": s.get("packets_out", 0), "dropped": dropped, "counters": s}
        xdp = node.fastpath_stats()
        if xdp is not None:  # what the kernel dropped before the node saw it, and the fast path's map use
            out["xdp"] = xdp
        plane = node.plane_stats()
        if plane is not None:  # the heartbeats the kernel took (handled) and why the others reached the node
            out["hbplane"] = plane
        return out
    if route == ("POST", "/publish"):
        try:
            version = node.publish(body)
        except UsageError as e:
            raise HttpError(413 if "exceeds" in str(e) else 400, str(e)) from None
        except StateError as e:  # the disk's fault, not the client's nor ours: a 500 would say "bug"
            raise HttpError(503, str(e)) from None
        return {"version": version.seq, "origin": version.origin}
    if route == ("POST", "/set"):
        node.set(_set_body(body))
        return {"ok": True}
    if route == ("POST", "/secrets"):
        try:
            node.set_secrets(_secrets_body(body))
        except UsageError as e:  # ConfigError names the field; the old ring stays in use
            raise HttpError(400, str(e)) from None
        return {"keys": len(node.config.secrets)}
    if route == ("POST", "/stop"):
        node.stop()
        return {"heartbeats": False}
    if route == ("POST", "/start"):
        node.start()
        return {"heartbeats": True}
    if path in ("/list", "/metadata", "/stats", "/publish", "/set", "/stop", "/start", "/secrets"):
        raise HttpError(405, f"{method} {path}: method not allowed")
    raise HttpError(404, f"{method} {path}: not found")


class _ClientGone(Exception):
    """The client hung up mid-request: nothing to answer."""


def _protocol_error(e: h11.RemoteProtocolError, conn: h11.Connection, in_head: bool) -> HttpError:
    """h11's complaint about the client's bytes as the answer to give, in this API's words."""
    if e.error_status_hint == 431 and in_head:  # h11's buffer outgrew MAX_HEAD_BYTES before the head ended
        if b"\n" not in conn.trailing_data[0]:
            return HttpError(414, f"request line longer than {MAX_HEAD_BYTES} bytes")
        return HttpError(431, f"request head (request line and header lines) longer than {MAX_HEAD_BYTES} bytes")
    if e.error_status_hint == 501:  # a transfer coding other than chunked
        return HttpError(411, f"{e}: send the body chunked or with a Content-Length")
    message = _BYTEARRAY.sub(r"\1", str(e))  # "illegal header line: bytearray(b'X-A: a\x00b')"
    if message.startswith("illegal "):  # one vocabulary with our own errors
        message = "bad " + message[len("illegal "):]
    return HttpError(400, message[:200])


def _check_request(event: h11.Request) -> tuple[str, str]:
    """(method, path) of a request h11 parsed, or the HttpError for what h11 leaves to us to refuse."""
    target = event.target.decode("latin-1")
    if event.http_version not in (b"1.0", b"1.1"):
        raise HttpError(400, f"bad request line: HTTP/{event.http_version.decode('latin-1')} is not served "
                             f"(HTTP/1.0 and HTTP/1.1 are)")
    if not target.startswith("/"):
        raise HttpError(400, f"bad request line: target {target[:80]!r} is not a path")
    if len(event.headers) > MAX_HEADER_LINES:
        raise HttpError(431, f"more than {MAX_HEADER_LINES} header lines")
    names = [name for name, _ in event.headers]
    if b"transfer-encoding" in names and b"content-length" in names:  # RFC 9112 6.3: a smuggling attempt
        raise HttpError(400, "both Transfer-Encoding and Content-Length: send one")
    for name, value in event.headers:
        if name == b"content-length" and int(value) > MAX_BODY_BYTES:  # h11 checked: ASCII digits, one value
            raise HttpError(413, f"body of {int(value)} bytes exceeds {MAX_BODY_BYTES}")
    return event.method.decode("ascii"), target.split("?", 1)[0]


async def _read_request(conn: h11.Connection, reader: asyncio.StreamReader,
                        writer: asyncio.StreamWriter) -> tuple[str, str, bytes] | None:
    """The next request on the connection as (method, path, body); None if the client closed between requests."""
    route = None
    body = bytearray()
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as e:
            if conn.trailing_data[1]:  # raised on the client's EOF: it left mid-request
                raise _ClientGone() from None
            raise _protocol_error(e, conn, in_head=route is None) from None
        if event is h11.NEED_DATA:
            if conn.they_are_waiting_for_100_continue:
                writer.write(conn.send(h11.InformationalResponse(status_code=100, headers=[])))
            # h11 bounds only an event still incomplete: read no more than would take a head past MAX_HEAD_BYTES,
            # or a longer head arriving in one read would be parsed whole
            room = MAX_HEAD_BYTES + 1 - len(conn.trailing_data[0]) if route is None else READ_BYTES
            conn.receive_data(await reader.read(max(room, 1)))  # b"" is the client's EOF
        elif isinstance(event, h11.Request):
            route = _check_request(event)
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > MAX_BODY_BYTES:  # a chunked body: its length is known only as it arrives
                raise HttpError(413, f"body of more than {MAX_BODY_BYTES} bytes exceeds {MAX_BODY_BYTES}")
        elif isinstance(event, h11.EndOfMessage):
            return route[0], route[1], bytes(body)
        elif isinstance(event, h11.ConnectionClosed):
            return None
        else:  # PAUSED cannot come before EndOfMessage
            raise AssertionError(f"unexpected h11 event {event!r}")


def _response(status: int, payload) -> bytes:
    """An answer that closes the connection, formatted here rather than by h11: after the client's bytes put h11's
    state in ERROR (or the request was a HEAD) h11 would refuse to send a body, and the body is the error."""
    body = json.dumps(payload).encode()
    reason = HTTPStatus(status).phrase
    return (f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            f"Connection: close\r\n\r\n").encode() + body


def _ok(conn: h11.Connection, payload, close: bool) -> bytes:
    body = json.dumps(payload).encode()
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    if close:
        headers.append(("Connection", "close"))
    return (conn.send(h11.Response(status_code=200, headers=headers, reason=b"OK"))
            + conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage()))


async def _serve_connection(node: Node, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                            request_timeout_s: float) -> None:
    """Answer the requests of one connection, until the client closes, an error answer, or a limit."""
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
    out = b""
    for served in range(1, MAX_REQUESTS_PER_CONNECTION + 1):
        try:
            async with asyncio.timeout(request_timeout_s):
                request = await _read_request(conn, reader, writer)
            if request is None:
                return
            payload = handle(node, *request)
        except (_ClientGone, TimeoutError):
            return  # hung up or stalled mid-request: nothing to answer
        except HttpError as e:
            out = _response(e.status, {"error": str(e)})
            break
        except Exception as e:  # a bug of ours, not the client's: answer it, keep serving, and show it once
            log.exception("HTTP handler failed")
            out = _response(500, {"error": f"internal error: {type(e).__name__}"})
            break
        last = served == MAX_REQUESTS_PER_CONNECTION
        async with asyncio.timeout(WRITE_TIMEOUT_S):
            writer.write(_ok(conn, payload, close=last))
            await writer.drain()
        if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:  # MUST_CLOSE: HTTP/1.0, close
            break
        conn.start_next_cycle()
    async with asyncio.timeout(WRITE_TIMEOUT_S):
        writer.write(out)
        await writer.drain()
    await _linger(reader, writer)


async def _linger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Before closing, stop writing and discard what the client is still sending (bounded): closing with unread
    bytes would reset the connection, and the client might lose the answer."""
    if writer.can_write_eof():
        writer.write_eof()
    try:
        async with asyncio.timeout(LINGER_S):
            left = LINGER_BYTES
            while left > 0 and (chunk := await reader.read(min(left, READ_BYTES))):
                left -= len(chunk)
    except TimeoutError:
        pass


def _refuse_a_live_unix_socket(path: str) -> None:
    """asyncio replaces a socket file it finds at PATH (a killed node's is stale): refuse one that a process still
    accepts on, as a TCP bind would, rather than take its address."""
    try:
        if not stat.S_ISSOCK(os.stat(path).st_mode):
            return
    except OSError:
        return
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(path)
        except OSError:
            return  # nobody listens: stale
    raise OSError(errno.EADDRINUSE, os.strerror(errno.EADDRINUSE), path)


async def serve(node: Node, where: tuple[str, int] | str, *, request_timeout_s: float = REQUEST_TIMEOUT_S,
                max_connections: int = MAX_CONNECTIONS) -> asyncio.base_events.Server:
    """Serve the API on (ADDR, PORT), or on a Unix socket path (reachable from any network namespace)."""
    open_connections = 0

    async def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal open_connections
        try:
            if open_connections >= max_connections:
                writer.write(_response(503, {"error": f"{max_connections} connections open: try again later"}))
                return
            open_connections += 1
            try:
                await _serve_connection(node, reader, writer, request_timeout_s)
            finally:
                open_connections -= 1
        except (OSError, TimeoutError):
            pass  # the client went away, or would not take its answer
        except Exception:  # a bug of ours: shown once, and the server keeps accepting
            log.exception("HTTP connection failed")
        finally:
            writer.close()

    if isinstance(where, str):
        _refuse_a_live_unix_socket(where)
        return await asyncio.start_unix_server(connected, path=where, limit=READ_BYTES)
    return await asyncio.start_server(connected, where[0], where[1], reuse_address=True, limit=READ_BYTES)
