"""A client for a node's JSON control API served on a Unix socket (reachable from the root namespace even though
the node lives in another network namespace)."""

from __future__ import annotations

import http.client
import json
import socket


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._path)


class ControlError(Exception):
    pass


def call(path: str, method: str, route: str, body: bytes | None = None, timeout_s: float = 3.0):
    """One request to the node whose control socket is PATH; the decoded JSON answer, or ControlError."""
    conn = _UnixConnection(path, timeout_s)
    try:
        conn.request(method, route, body=body)
        resp = conn.getresponse()
        data = resp.read()
        if resp.status >= 400:
            raise ControlError(f"{method} {route}: {resp.status} {data.decode(errors='replace')}")
        return json.loads(data)
    except (OSError, http.client.HTTPException, json.JSONDecodeError) as e:
        raise ControlError(f"{method} {route} via {path}: {e}") from None
    finally:
        conn.close()
