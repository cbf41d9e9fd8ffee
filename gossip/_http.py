"""The JSON control API of a node (``--http ADDR:PORT`` or ``--http unix:PATH``).

GET /list, GET /metadata, GET /stats, POST /publish (body = data), POST /set (a node as JSON), POST /stop,
POST /start. A bad request gets a 4xx with a JSON ``{"error": ...}`` naming what is wrong.

The server is a minimal HTTP/1.1 implementation on asyncio streams (one request per connection, bodies by
Content-Length, at most 64 KiB): the testbed starts hundreds of nodes at once, and a full web framework's import
cost (~0.2 s of CPU per process) would dominate their start-up.
"""

from __future__ import annotations

import asyncio
import base64
import json
from http import HTTPStatus

from ._node import Node
from ._wire import Identity
from .errors import UsageError

MAX_BODY_BYTES = 64 * 1024
MAX_HEADER_LINES = 64
READ_TIMEOUT_S = 5.0


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
    try:
        obj = json.loads(body)
    except ValueError as e:
        raise HttpError(400, f"body is not JSON: {e}") from None
    if not isinstance(obj, dict):
        raise HttpError(400, "body must be a JSON object with addr, port and optionally name, private")
    unknown = set(obj) - {"name", "addr", "port", "private"}
    if unknown:
        raise HttpError(400, f"unknown field(s): {', '.join(sorted(unknown))}")
    if "addr" not in obj or "port" not in obj:
        raise HttpError(400, "fields addr and port are required")
    try:
        return Identity(name=str(obj.get("name", "")), addr=obj["addr"], port=obj["port"],
                        private=str(obj.get("private", "")).encode())
    except UsageError as e:
        raise HttpError(400, str(e)) from None


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


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str, bytes]:
    line = (await reader.readline()).decode("latin-1").rstrip("\r\n")
    parts = line.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise HttpError(400, f"bad request line {line[:80]!r}")
    method, target, _ = parts
    length = 0
    for _ in range(MAX_HEADER_LINES):
        header = (await reader.readline()).decode("latin-1").rstrip("\r\n")
        if not header:
            break
        name, _, value = header.partition(":")
        if name.strip().lower() == "content-length":
            if not value.strip().isdigit():
                raise HttpError(400, "bad Content-Length")
            length = int(value)
    else:
        raise HttpError(431, "too many header lines")
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
    try:
        try:
            method, path, body = await asyncio.wait_for(_read_request(reader), READ_TIMEOUT_S)
            out = _response(200, handle(node, method, path, body))
        except HttpError as e:
            out = _response(e.status, {"error": str(e)})
        except (asyncio.IncompleteReadError, asyncio.TimeoutError, UnicodeDecodeError):
            return
        writer.write(out)
        await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()


async def serve(node: Node, where: tuple[str, int] | str) -> asyncio.base_events.Server:
    """Serve the API on (ADDR, PORT), or on a Unix socket path (reachable from any network namespace)."""
    cb = lambda r, w: _serve_one(node, r, w)  # noqa: E731
    if isinstance(where, str):
        return await asyncio.start_unix_server(cb, path=where)
    return await asyncio.start_server(cb, where[0], where[1], reuse_address=True)
