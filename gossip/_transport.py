"""asyncio transports: UDP datagrams (default) and TCP with length-prefixed frames.

Both hand every received datagram or frame to one callback and send one payload to one endpoint; neither knows
the protocol. A TCP peer that is down or slow never stalls the node: each peer has its own bounded send queue
and task, connects and writes under timeouts, and drops (and counts) what it cannot deliver.

No send error may close a socket or raise into the node. Every one is reported to ``on_error(reason, detail)``
with a reason naming its cause (``send_error_eperm``, ``send_error_econnrefused``, ``send_error_bad_address``,
...) and the payload is dropped. asyncio's datagram transport reports an `OSError` of ``sendto`` to
`error_received` but treats anything else (a `TypeError` for an int address) as fatal and closes the socket, so
endpoints are checked before ``sendto``; and if the UDP socket is lost anyway, it is re-opened on the same
address.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import ipaddress
import logging
import socket
import struct
from functools import lru_cache
from typing import Callable

FRAME = struct.Struct("!I")
SIOCGSTAMPNS = 0x8907  # include/uapi/asm-generic/sockios.h: the last datagram's receive time, a timespec
_TIMESPEC = struct.Struct("=qq")
MAX_FRAME_BYTES = 65535
REOPEN_RETRY_S = 1.0

log = logging.getLogger("gossip")


def errno_reason(prefix: str, exc: BaseException) -> str:
    """PREFIX_<errno name>, e.g. send_error_eperm; PREFIX_other when EXC carries no known errno."""
    name = errno.errorcode.get(getattr(exc, "errno", None) or 0)
    return f"{prefix}_{name.lower()}" if name else f"{prefix}_other"


@lru_cache(maxsize=65536)
def _checked(endpoint) -> bool:
    addr, port = endpoint
    if type(addr) is not str or type(port) is not int or not 0 < port < 65536:
        return False
    try:
        ipaddress.IPv4Address(addr)  # a host name would be resolved by sendto, blocking the loop
    except ValueError:
        return False
    return True


def valid_endpoint(endpoint) -> bool:
    """Whether ENDPOINT is an (IPv4 address string, port int) tuple that sendto and connect accept as is."""
    try:
        return type(endpoint) is tuple and len(endpoint) == 2 and _checked(endpoint)
    except TypeError:  # unhashable parts
        return False


class UdpTransport(asyncio.DatagramProtocol):
    def __init__(self, on_datagram: Callable[[bytes, str], None], on_error: Callable[[str, str], None]) -> None:
        self._on_datagram, self._on_error = on_datagram, on_error
        self.transport: asyncio.DatagramTransport | None = None
        self._where: tuple[str, int, int | None] | None = None  # addr, port, rcvbuf: what a re-open binds
        self._closing = False
        self._reopening: asyncio.Task | None = None

    @classmethod
    async def open(cls, addr: str, port: int, on_datagram, on_error, rcvbuf: int | None = None) -> "UdpTransport":
        self = cls(on_datagram, on_error)
        self._where = (addr, port, rcvbuf)
        await self._bind()
        return self

    async def _bind(self) -> None:
        addr, port, rcvbuf = self._where
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            if rcvbuf:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.bind((addr, port))
            await loop.create_datagram_endpoint(lambda: self, sock=sock)
        except BaseException:
            sock.close()
            raise

    def connection_made(self, transport) -> None:
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        if self._closing or self._reopening is not None:
            return
        addr, port, _ = self._where
        log.warning("UDP socket on %s:%d was lost (%s): re-opening it on the same address", addr, port,
                    exc or "closed")
        self._reopening = asyncio.get_running_loop().create_task(self._reopen())

    async def _reopen(self) -> None:
        try:
            while not self._closing:
                try:
                    await self._bind()
                except OSError as e:
                    self._on_error("transport_reopen_failed", str(e))
                    await asyncio.sleep(REOPEN_RETRY_S)
                    continue
                log.info("UDP socket on %s:%d re-opened", *self._where[:2])
                self._on_error("transport_reopened", "%s:%d" % self._where[:2])
                return
        finally:
            self._reopening = None

    def datagram_received(self, data: bytes, addr) -> None:
        self._on_datagram(data, "%s:%d" % addr[:2])

    def error_received(self, exc: Exception) -> None:
        # an OSError of sendto (EPERM from a firewall rule, ENOBUFS, EHOSTUNREACH, ...) or of recvfrom
        self._on_error(errno_reason("send_error", exc), str(exc))

    @property
    def socket(self) -> socket.socket | None:
        t = self.transport
        return None if t is None or t.is_closing() else t.get_extra_info("socket")

    def rx_stamp(self) -> float | None:
        """When the kernel received the datagram last read from the socket (SIOCGSTAMPNS, wall-clock seconds):
        call it from within `datagram_received`. None if the kernel has no stamp for it (the first datagram after
        the first call: the call is what turns stamping on) or the socket is gone."""
        sock = self.socket
        if sock is None:
            return None
        try:
            sec, nsec = _TIMESPEC.unpack(fcntl.ioctl(sock.fileno(), SIOCGSTAMPNS, bytes(_TIMESPEC.size)))
        except OSError:
            return None
        return sec + nsec * 1e-9

    def send(self, payload: bytes, endpoint: tuple[str, int]) -> None:
        t = self.transport
        if t is None or t.is_closing():
            self._on_error("send_error_transport_down", f"to {endpoint!r}")
        elif not valid_endpoint(endpoint):
            self._on_error("send_error_bad_address", f"to {endpoint!r}"[:200])
        else:
            t.sendto(payload, endpoint)  # an OSError comes back through error_received

    async def flush(self, timeout_s: float) -> None:
        """Wait, at most TIMEOUT_S, until what was sent has left (sendto only buffers when the socket is full)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self.transport is not None and self.transport.get_write_buffer_size() and loop.time() < deadline:
            await asyncio.sleep(0.005)

    async def close(self) -> None:
        self._closing = True
        if self._reopening is not None:
            self._reopening.cancel()
            await asyncio.gather(self._reopening, return_exceptions=True)
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
            except asyncio.TimeoutError:
                self._lost("send_error_timeout", f"connect {self.endpoint}: timeout")
                continue
            except OSError as e:  # ECONNREFUSED, EHOSTUNREACH, EPERM, ...
                self._lost(errno_reason("send_error", e), f"connect {self.endpoint}: {e}")
                continue
            # every payload taken from the queue is marked done once written or lost: flush() waits on that
            in_hand = True
            try:
                while True:
                    writer.write(FRAME.pack(len(payload)) + payload)
                    await asyncio.wait_for(writer.drain(), owner.write_timeout_s)
                    in_hand = False
                    self.queue.task_done()
                    payload = await asyncio.wait_for(self.queue.get(), owner.idle_timeout_s)
                    in_hand = True
            except asyncio.TimeoutError:
                pass  # idle: close; a later send reconnects
            except OSError as e:
                owner.on_error(errno_reason("send_error", e), f"write {self.endpoint}: {e}")
            finally:
                if in_hand:
                    self.queue.task_done()
                writer.close()

    def _lost(self, reason: str, detail: str) -> None:
        """The frame in hand could not be sent, and the peer is down: drop the queued ones too (counted under
        the same reason) rather than let them pile up."""
        self.owner.on_error(reason, detail)
        self.queue.task_done()
        while not self.queue.empty():
            self.queue.get_nowait()
            self.queue.task_done()
            self.owner.on_error(reason, f"peer {self.endpoint} unreachable")


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
        peer = self._peers.get(endpoint) if valid_endpoint(endpoint) else None
        if peer is None:
            if not valid_endpoint(endpoint):  # open_connection would raise TypeError and end the peer's task
                self.on_error("send_error_bad_address", f"to {endpoint!r}"[:200])
                return
            peer = self._peers[endpoint] = _TcpPeer(self, endpoint)
        try:
            peer.queue.put_nowait(payload)
        except asyncio.QueueFull:
            self.on_error("send_queue_full", f"peer {endpoint}")

    async def flush(self, timeout_s: float) -> None:
        """Wait, at most TIMEOUT_S, until every queued frame has been written or given up on."""
        waits = [p.queue.join() for p in self._peers.values()]
        if waits:
            try:
                await asyncio.wait_for(asyncio.gather(*waits), timeout_s)
            except asyncio.TimeoutError:
                pass  # bounded: a peer that does not take the frame in time is not waited for

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        pending = {p.task for p in self._peers.values()} | set(self._readers)
        while pending:
            # cancelled again until done: on Python 3.11 wait_for swallows a cancel that arrives as its inner
            # future completes (a frame read as a peer sends one), and the task then waits out its read timeout
            for t in pending:
                t.cancel()
            _, pending = await asyncio.wait(pending, timeout=0.1)
        if self._server is not None:
            await self._server.wait_closed()
