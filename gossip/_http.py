"""The JSON control API of a node (``--http ADDR:PORT`` or ``--http unix:PATH``).

GET /list, GET /metadata, GET /stats, POST /publish (body = data), POST /set (a node as JSON), POST /stop,
POST /start. A bad request gets a 4xx with a JSON ``{"error": ...}`` naming what is wrong. A publish whose value
the node could not make durable (``state_dir`` on a full or failing disk) gets 503 with the state file and the OS
error: it was not acknowledged, and the same request can succeed once the disk takes writes again.

The server is a minimal HTTP/1.1 implementation on asyncio streams (one request per connection; bodies by
Content-Length only, at most 64 KiB, so a Transfer-Encoding is refused with 411; lines of at most 8 KiB): the
testbed starts hundreds of nodes at once, and a full web framework's import cost (~0.2 s of CPU per process) would
dominate their start-up. Each step of the parse validates one thing (the request line, one header, the length)
and turns anything wrong into an `HttpError` with its status; it must never let a client's bytes raise anything
else.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
from http import HTTPStatus

from ._node import Node
from ._state import StateError
from ._wire import Identity
from .errors import UsageError

MAX_BODY_BYTES = 64 * 1024
MAX_LINE_BYTES = 8 * 1024  # the request line and each header line; the stream reader's buffer limit
MAX_HEADER_LINES = 64
READ_TIMEOUT_S = 5.0
LINGER_BYTES = 1 << 20  # after an error answer, read (and discard) at most this much of what the client still sends
LINGER_S = 1.0

log = logging.getLogger("gossip")

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 token: a method or a header name
_TARGET = re.compile(r"/[\x21-\x7e]*")  # origin-form: visible ASCII, no spaces
_FIELD_VALUE = re.compile(r"[\t\x20-\x7e\x80-\xff]*")  # no control characters (CR, LF, NUL, ...)


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
        return {"node": node.identity.name, "packets_in": s.get("packets_in", 0),
                "packets_out": s.get("packets_out", 0), "dropped": dropped, "counters": s}
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
    if route == ("POST", "/stop"):
        node.stop()
        return {"heartbeats": False}
    if route == ("POST", "/start"):
        node.start()
        return {"heartbeats": True}
    if path in ("/list", "/metadata", "/stats", "/publish", "/set", "/stop", "/start"):
        raise HttpError(405, f"{method} {path}: method not allowed")
    raise HttpError(404, f"{method} {path}: not found")


async def _read_line(reader: asyncio.StreamReader, what: str, status: int) -> str:
    """One CRLF- (or LF-) terminated line of at most MAX_LINE_BYTES, without its ending, as latin-1 text."""
    try:
        raw = await reader.readuntil(b"\n")
    except asyncio.LimitOverrunError:
        raise HttpError(status, f"{what} longer than {MAX_LINE_BYTES} bytes") from None
    return raw[:-2].decode("latin-1") if raw.endswith(b"\r\n") else raw[:-1].decode("latin-1")


def _request_line(line: str) -> tuple[str, str]:
    parts = line.split(" ")
    if (len(parts) != 3 or not _TOKEN.fullmatch(parts[0]) or parts[2] not in ("HTTP/1.0", "HTTP/1.1")
            or not _TARGET.fullmatch(parts[1])):
        raise HttpError(400, f"bad request line {line[:80]!r}")
    return parts[0], parts[1]


def _header(line: str) -> tuple[str, str]:
    """One header line as (lower-case name, value): the name a token right before the colon (RFC 9112 5.1),
    the value without surrounding whitespace and free of control characters; no obsolete line folding."""
    name, colon, value = line.partition(":")
    if not colon or not _TOKEN.fullmatch(name):
        raise HttpError(400, f"bad header line {line[:80]!r}")
    value = value.strip(" \t")
    if not _FIELD_VALUE.fullmatch(value):
        raise HttpError(400, f"bad header value in {line[:80]!r}")
    return name.lower(), value


def _content_length(value: str) -> int:
    # ASCII digits only: str.isdigit() also accepts "²" and "١", which int() then refuses or reads
    if not (0 < len(value) <= 19 and value.isascii() and value.isdigit()):
        raise HttpError(400, f"bad Content-Length {value[:40]!r}")
    return int(value)


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str, bytes]:
    method, target = _request_line(await _read_line(reader, "request line", 414))
    length: int | None = None
    for _ in range(MAX_HEADER_LINES):
        line = await _read_line(reader, "header line", 431)
        if not line:
            break
        name, value = _header(line)
        if name == "content-length":
            n = _content_length(value)
            if length is not None and n != length:
                raise HttpError(400, "conflicting Content-Length headers")
            length = n
        elif name == "transfer-encoding":  # we read bodies by Content-Length only: a chunked body would be lost
            raise HttpError(411, "Transfer-Encoding is not supported: send the body with a Content-Length")
    else:
        raise HttpError(431, f"more than {MAX_HEADER_LINES} header lines")
    length = length or 0
    if length > MAX_BODY_BYTES:
        raise HttpError(413, f"body of {length} bytes exceeds {MAX_BODY_BYTES}")
    body = await reader.readexactly(length) if length else b""
    return method, target.split("?", 1)[0], body


def _response(status: int, payload) -> bytes:
    body = json.dumps(payload).encode()
    reason = HTTPStatus(status).phrase
    return (f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            f"Connection: close\r\n\r\n").encode() + body


async def _serve_one(node: Node, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answer one request. Malformed HTTP gets a 4xx; a client that hangs up or stalls gets the connection
    closed; nothing a client sends raises out of here."""
    linger = False
    try:
        try:
            method, path, body = await asyncio.wait_for(_read_request(reader), READ_TIMEOUT_S)
            out = _response(200, handle(node, method, path, body))
        except HttpError as e:
            out, linger = _response(e.status, {"error": str(e)}), True
        except (asyncio.IncompleteReadError, asyncio.TimeoutError):
            return  # the client hung up or stalled mid-request: nothing to answer
        except Exception as e:  # a bug of ours, not the client's: answer it, keep serving, and show it once
            log.exception("HTTP handler failed")
            out = _response(500, {"error": f"internal error: {type(e).__name__}"})
        writer.write(out)
        await writer.drain()
        if linger:
            await _linger(reader, writer)
    except OSError:
        pass
    finally:
        writer.close()


async def _linger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """After an error answer, stop writing and discard what the client is still sending (bounded): closing with
    unread bytes would reset the connection, and the client might lose the answer."""
    if writer.can_write_eof():
        writer.write_eof()
    try:
        async with asyncio.timeout(LINGER_S):
            left = LINGER_BYTES
            while left > 0 and (chunk := await reader.read(min(left, 65536))):
                left -= len(chunk)
    except (TimeoutError, OSError):
        pass


async def serve(node: Node, where: tuple[str, int] | str) -> asyncio.base_events.Server:
    """Serve the API on (ADDR, PORT), or on a Unix socket path (reachable from any network namespace)."""
    cb = lambda r, w: _serve_one(node, r, w)  # noqa: E731
    if isinstance(where, str):
        return await asyncio.start_unix_server(cb, path=where, limit=MAX_LINE_BYTES)
    return await asyncio.start_server(cb, where[0], where[1], reuse_address=True, limit=MAX_LINE_BYTES)
