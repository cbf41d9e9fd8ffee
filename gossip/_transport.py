"""asyncio transports: UDP datagrams (default) and TCP with length-prefixed frames.

Both hand every received datagram or frame to one callback and send one payload to one endpoint; neither knows
the protocol. A TCP peer that is down or slow never stalls the node: each peer has its own bounded send queue
and task, connects and writes under timeouts, and drops (and counts) what it cannot deliver.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from typing import Callable

FRAME = struct.Struct("!I")
MAX_FRAME_BYTES = 65535


class UdpTransport(asyncio.DatagramProtocol):
    def __init__(self, on_datagram: Callable[[bytes, str], None], on_error: Callable[[str, str], None]) -> None:
        self._on_datagram, self._on_error = on_datagram, on_error
        self.transport: asyncio.DatagramTransport | None = None

    @classmethod
    async def open(cls, addr: str, port: int, on_datagram, on_error, rcvbuf: int | None = None) -> "UdpTransport":
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.bind((addr, port))
        _, proto = await loop.create_datagram_endpoint(lambda: cls(on_datagram, on_error), sock=sock)
        return proto

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        self._on_datagram(data, "%s:%d" % addr[:2])

    def error_received(self, exc: Exception) -> None:  # e.g. ICMP port unreachable from a dead peer
        self._on_error("send_error", str(exc))

    @property
    def socket(self) -> socket.socket:
        return self.transport.get_extra_info("socket")

    def send(self, payload: bytes, endpoint: tuple[str, int]) -> None:
        self.transport.sendto(payload, endpoint)

    async def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class _TcpPeer:
    """One outgoing connection: a bounded queue drained by its own task."""

    def __init__(self, owner: "TcpTransport", endpoint: tuple[str, int]) -> None:
        self.owner, self.endpoint = owner, endpoint
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=owner.queue_depth)
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        owner = self.owner
        while True:
            payload = await self.queue.get()
            try:
                _, writer = await asyncio.wait_for(asyncio.open_connection(*self.endpoint), owner.connect_timeout_s)
            except (OSError, asyncio.TimeoutError) as e:
                owner.on_error("send_error", f"connect {self.endpoint}: {e or 'timeout'}")
                self._drain()  # the peer is down: do not let old frames pile up
                continue
            try:
                while True:
                    writer.write(FRAME.pack(len(payload)) + payload)
                    await asyncio.wait_for(writer.drain(), owner.write_timeout_s)
                    payload = await asyncio.wait_for(self.queue.get(), owner.idle_timeout_s)
            except asyncio.TimeoutError:
                pass  # idle: close; a later send reconnects
            except OSError as e:
                owner.on_error("send_error", f"write {self.endpoint}: {e}")
            finally:
                writer.close()

    def _drain(self) -> None:
        while not self.queue.empty():
            self.queue.get_nowait()
            self.owner.on_error("send_error", f"peer {self.endpoint} unreachable")


class TcpTransport:
    def __init__(self, on_datagram, on_error, *, queue_depth: int = 256, connect_timeout_s: float = 1.0,
                 write_timeout_s: float = 1.0, read_timeout_s: float = 30.0, idle_timeout_s: float = 10.0) -> None:
        self.on_datagram, self.on_error = on_datagram, on_error
        self.queue_depth = queue_depth
        self.connect_timeout_s, self.write_timeout_s = connect_timeout_s, write_timeout_s
        self.read_timeout_s, self.idle_timeout_s = read_timeout_s, idle_timeout_s
        self._server: asyncio.base_events.Server | None = None
        self._peers: dict[tuple[str, int], _TcpPeer] = {}
        self._readers: set[asyncio.Task] = set()

    @classmethod
    async def open(cls, addr: str, port: int, on_datagram, on_error, **kw) -> "TcpTransport":
        self = cls(on_datagram, on_error, **kw)
        self._server = await asyncio.start_server(self._serve, addr, port, reuse_address=True)
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._readers.add(task)
        peer = writer.get_extra_info("peername")
        src = "%s:%d" % peer[:2] if peer else ""  # the connection's source port, not the peer's listen port
        try:
            while True:
                head = await asyncio.wait_for(reader.readexactly(FRAME.size), self.read_timeout_s)
                (length,) = FRAME.unpack(head)
                if length > MAX_FRAME_BYTES:
                    self.on_error("malformed", f"TCP frame of {length} bytes")
                    return  # the stream cannot be resynchronised: close it
                self.on_datagram(await asyncio.wait_for(reader.readexactly(length), self.read_timeout_s), src)
        except (asyncio.IncompleteReadError, asyncio.TimeoutError, OSError):
            pass
        finally:
            self._readers.discard(task)
            writer.close()

    def send(self, payload: bytes, endpoint: tuple[str, int]) -> None:
        peer = self._peers.get(endpoint)
        if peer is None:
            peer = self._peers[endpoint] = _TcpPeer(self, endpoint)
        try:
            peer.queue.put_nowait(payload)
        except asyncio.QueueFull:
            self.on_error("send_queue_full", f"peer {endpoint}")

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        tasks = [p.task for p in self._peers.values()] + list(self._readers)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
