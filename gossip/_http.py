"""The JSON control API of a node (``--http ADDR:PORT``), served with aiohttp.

GET /list, GET /metadata, GET /stats, POST /publish (body = data), POST /set (a node as JSON), POST /stop,
POST /start. A bad request gets a 4xx with a JSON ``{"error": ...}`` naming what is wrong.
"""

from __future__ import annotations

import base64
import json

from aiohttp import web

from ._node import Node
from ._wire import Identity
from .errors import UsageError


def metadata_json(version, data: bytes) -> dict:
    out = {"version": version.seq, "origin": version.origin}
    try:
        out["data"] = data.decode("utf-8")
    except UnicodeDecodeError:
        out["data_b64"] = base64.b64encode(data).decode()
    return out


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def make_app(node: Node) -> web.Application:
    routes = web.RouteTableDef()

    @routes.get("/list")
    async def list_nodes(_req):
        return web.json_response([m.to_json() for m in node.get()])

    @routes.get("/metadata")
    async def metadata(_req):
        return web.json_response(metadata_json(*node.read()))

    @routes.get("/stats")
    async def stats(_req):
        s = node.stats()
        dropped = {k[len("dropped_"):]: v for k, v in s.items() if k.startswith("dropped_")}
        return web.json_response({"node": node.identity.name, "packets_in": s.get("packets_in", 0),
                                  "packets_out": s.get("packets_out", 0), "dropped": dropped, "counters": s})

    @routes.post("/publish")
    async def publish(req):
        data = await req.read()
        try:
            version = node.publish(data)
        except UsageError as e:
            return _error(413 if "exceeds" in str(e) else 400, str(e))
        return web.json_response({"version": version.seq, "origin": version.origin})

    @routes.post("/set")
    async def set_node(req):
        try:
            body = json.loads(await req.read())
        except ValueError as e:
            return _error(400, f"body is not JSON: {e}")
        if not isinstance(body, dict):
            return _error(400, "body must be a JSON object with addr, port and optionally name, private")
        unknown = set(body) - {"name", "addr", "port", "private"}
        if unknown:
            return _error(400, f"unknown field(s): {', '.join(sorted(unknown))}")
        if "addr" not in body or "port" not in body:
            return _error(400, "fields addr and port are required")
        try:
            ident = Identity(name=str(body.get("name", "")), addr=body["addr"], port=body["port"],
                             private=str(body.get("private", "")).encode())
        except UsageError as e:
            return _error(400, str(e))
        node.set(ident)
        return web.json_response({"ok": True})

    @routes.post("/stop")
    async def stop(_req):
        node.stop()
        return web.json_response({"heartbeats": False})

    @routes.post("/start")
    async def start(_req):
        node.start()
        return web.json_response({"heartbeats": True})

    @web.middleware
    async def json_errors(req, handler):
        try:
            return await handler(req)
        except web.HTTPException as e:  # unknown path, wrong method, body too large: same JSON shape
            if e.status < 400:
                raise
            return _error(e.status, f"{req.method} {req.path}: {e.reason}")

    app = web.Application(client_max_size=64 * 1024, middlewares=[json_errors])
    app.add_routes(routes)
    return app


async def serve(node: Node, where: tuple[str, int] | str) -> web.AppRunner:
    """Serve the API on (ADDR, PORT), or on a Unix socket path (reachable from any network namespace)."""
    runner = web.AppRunner(make_app(node), access_log=None)
    await runner.setup()
    site = web.UnixSite(runner, where) if isinstance(where, str) else web.TCPSite(runner, *where)
    await site.start()
    return runner
