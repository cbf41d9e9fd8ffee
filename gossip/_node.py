"""The asyncio gossip node: drives a protocol core (`gossip.protocols`, chosen by
``NodeConfig.membership``) with a UDP or TCP transport, a timer and an event log.

Everything protocol-related lives in the core, and what to do with its outputs (in which order, what the log
records) in `gossip._driver`, which the simulator shares; this module only moves bytes and time. Received datagrams
go into a bounded queue of ``buffer`` entries (a full queue counts and drops) that one callback drains in batches.
Optional accelerators (the XDP fast-path state writer, the TC broadcaster and the heartbeat plane's writer, from
``bpf/``) are plain objects passed in; without them the node behaves identically in pure userspace. With the plane
(``plane=``, `gossip._plane`) the kernel takes fresh heartbeats itself; what it took is read back into the core
before each timer step, each heartbeat datagram of a registered member, `get` and `stats`.
"""

from __future__ import annotations

import asyncio
import collections
import errno
import json
import logging
import math
import os
import random
import time
from dataclasses import replace
from typing import IO, Callable, Protocol

from ._config import NodeConfig
from ._core import MemberInfo, Version
from ._driver import CoreDriver
from ._plane import PlaneSync
from ._plane import refusal as plane_refusal
from ._events import Accepted, Event, Send
from ._state import StateError
from ._transport import TcpTransport, UdpTransport, errno_reason
from ._wire import OFF_TYPE, Identity, MsgType
from .protocols import create as create_core
from .errors import ConfigError, UsageError

log = logging.getLogger("gossip")

LEAVE_FLUSH_S = 0.5  # how long close() waits for its LEAVE to leave (UDP: at once; TCP: a connect or a write)


class FastPathSink(Protocol):
    """Receives the node's accepted state so a kernel fast path can drop what the node would drop."""

    def heartbeat_accepted(self, origin: int, seq: int) -> None: ...

    def metadata_accepted(self, version: int, origin: int) -> None: ...

    def sequence_accepted(self, type: int, origin: int, seq: int) -> None: ...


class _FastPathAccepted:
    """A `FastPathSink` as the driver's `AcceptedSink`: one call per accepted heartbeat, version or other
    sequenced message, as the BPF map writer takes them."""

    __slots__ = ("sink",)

    def __init__(self, sink: FastPathSink) -> None:
        self.sink = sink

    def accept(self, accepted: list[Accepted]) -> None:
        sink = self.sink
        for a in accepted:
            if a.type == MsgType.HEARTBEAT:
                sink.heartbeat_accepted(a.origin, a.seq)
            elif a.type == MsgType.METADATA:
                sink.metadata_accepted(a.seq, a.origin)
            else:
                sink.sequence_accepted(a.type, a.origin, a.seq)


class BroadcastSink(Protocol):
    def send(self, sock, payload: bytes, targets: list[tuple[str, int]]) -> None: ...


class Node:
    """A gossip node. ``await join()`` binds and starts it; ``await close()`` (or ``await leave()``) announces its
    leave to its peers, so they drop it at once, and shuts it down; ``await close(leave=False)`` stops it without a
    word, as a crash would, and peers forget it after timeout_s.

    The other operations (`get`, `set`, `stop`, `start`, `publish`, `read`) are synchronous: they act on the
    core at once and hand any resulting datagrams to the transport.
    """

    def __init__(self, config: NodeConfig, *, name: str, private: bytes = b"",
                 seeds: tuple[tuple[str, int], ...] = (), rng: random.Random | None = None,
                 clock: Callable[[], float] = time.time, events: IO[str] | None = None,
                 record_refreshes: bool = False, fastpath: FastPathSink | None = None,
                 broadcaster: BroadcastSink | None = None, stats_every_cycle: bool = True,
                 trace: IO[str] | None = None, plane=None) -> None:
        if broadcaster is not None and config.protocol != "udp":
            raise UsageError("broadcaster: the in-kernel broadcaster works with protocol udp only")
        if plane is not None and (config.protocol != "udp" or config.membership != "heartbeat"):
            raise UsageError("plane: the kernel heartbeat plane works with protocol udp and membership heartbeat only")
        self.config = config
        self.identity = Identity(name=name, addr=config.listen_addr, port=config.listen_port, private=private)
        self._clock = clock
        now = clock()
        self.core = create_core(config, self.identity, rng or random.Random(), now=now,
                                record_refreshes=record_refreshes)
        # every input the core gets, in order: replaying it into a core with the same seed gives the same events
        self._trace = trace
        self._trace_op("init", now)
        self._seeds = _seed_identities(seeds)  # refused here, before join() binds anything
        self._events_out = events
        self._fastpath = fastpath
        self._broadcaster = broadcaster
        sink = _FastPathAccepted(fastpath) if fastpath is not None else None
        self._plane: PlaneSync | None = None
        if plane is not None:  # between the core and the fast path's sink: see gossip._plane
            self._plane = sink = PlaneSync(plane, self.core, clock=clock, record=self._record_at, inner=sink,
                                           trace=self._trace_op if trace is not None else None)
        self._driver = CoreDriver(self.core, name=name, send=self._send, write=self._write, now=now,
                                  fastpath=sink, on_event=_log_event,
                                  record_stats=stats_every_cycle, stats_extra=self._stats_extra)
        # (datagram, source, when the kernel received it or None): see _on_datagram
        self._queue: collections.deque[tuple[bytes, str, float | None]] = collections.deque()
        self._samples: dict[str, list[float]] = {f: [] for f in SAMPLED}  # see _stats_extra
        # events of each kind since the last record, and the probability of measuring one: see _pick
        self._seen = dict.fromkeys(("took", "adopted", "drained", "first"), 0)
        self._rate = dict.fromkeys(self._seen, 1.0)
        self._sampler = random.Random()  # not the core's: what is measured must not change what the core draws
        self._drain_scheduled = False
        self._idle_since = 0.0  # when the last drain ended
        self._wake_stamp: float | None = None  # the kernel's receipt of a datagram that found the process idle
        self._transport: UdpTransport | TcpTransport | None = None
        self._timer: asyncio.Task | None = None
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._logged_reasons: set[str] = set()

    # ---- the API ---------------------------------------------------------------------------------------------

    async def join(self) -> None:
        """Bind the listening socket, contact the seeds and start the background tasks."""
        if self._transport is not None:
            return
        self._loop = asyncio.get_running_loop()
        cfg = self.config
        if cfg.protocol == "udp":
            self._transport = await UdpTransport.open(cfg.listen_addr, cfg.listen_port, self._on_datagram,
                                                      self._on_transport_error, rcvbuf=cfg.buffer * 2048)
        else:
            self._transport = await TcpTransport.open(cfg.listen_addr, cfg.listen_port, self._on_datagram,
                                                      self._on_transport_error, queue_depth=cfg.buffer)
        if self._plane is not None:
            self._start_plane()
        if self._fastpath is not None:  # the version held at start (none: 0/0) lets XDP drop equal swap requests
            version = self.core.read()[0]
            self._fastpath.metadata_accepted(version.seq, version.origin)
        self._driver.write_record({"kind": "started", "node_id": self.core.node_id, "addr": cfg.listen_addr,
                                   "port": cfg.listen_port, "pid": os.getpid()}, self._clock())
        for seed in self._seeds:
            self.set(seed)
        events = self.core.take_events()
        if events:
            self._driver.record(events, self._clock())
        self._timer = self._loop.create_task(self._run_timer())
        log.info("node %s (%08x) listening on %s:%d/%s", self.identity.name, self.core.node_id,
                 cfg.listen_addr, cfg.listen_port, cfg.protocol)

    async def close(self, *, leave: bool = True) -> None:
        """Stop the timer and the transport; with LEAVE (the default) announce the leave first (see `leave`).
        Idempotent."""
        if self._timer is not None:
            self._timer.cancel()
            await asyncio.gather(self._timer, return_exceptions=True)
            self._timer = None
        if self._transport is not None:
            if leave and not self.core.has_left:
                now = self._clock()
                self._trace_op("leave", now)
                sent = self._driver.leave(now)
                await self._transport.flush(LEAVE_FLUSH_S)  # bounded: the process is about to end
                log.info("left: LEAVE sent to %d peer(s)", sent)
            await self._transport.close()
            self._transport = None
            if self._plane is not None:
                self._stop_plane()
            self._driver.stopped(self._clock())
        if self._events_out is not None:
            self._events_out.flush()

    async def leave(self) -> None:
        """Leave the cluster: a LEAVE rumor to up to fanout peers (they drop this node at once and pass it on),
        a flush of at most `LEAVE_FLUSH_S` for it to go out, then `close`. What SIGTERM and SIGINT do."""
        await self.close(leave=True)

    def get(self) -> list[MemberInfo]:
        """The live node list, this node first."""
        self._sync_plane()
        return self.core.members()

    def set(self, node: Identity) -> None:
        """Add a known node (a seed): contacted at once, listed by `get` once it has been heard from."""
        if not isinstance(node, Identity):
            raise UsageError(f"node: must be an Identity, got {type(node).__name__}")
        now = self._clock()
        self._trace_op("set", now, name=node.name, addr=node.addr, port=node.port, private=node.private.hex())
        self.core.set(node, now)
        self._flush()

    def stop(self) -> None:
        """Stop sending heartbeats (the node keeps listening, forwarding and swapping)."""
        self._trace_op("stop", 0.0)
        self.core.stop()
        self._flush()

    def start(self) -> None:
        """Resume heartbeats (not after a leave: `UsageError`)."""
        self.core.start()
        self._trace_op("start", 0.0)
        self._flush()

    def publish(self, data: bytes) -> Version:
        """Adopt DATA under a new version and spread it; returns the version once it is durable (with
        ``state_dir``: written before this returns and before its rumor goes out).

        Raises `UsageError` when DATA does not fit in a packet, and `StateError` (naming the state file and the
        OS error) when the state file cannot be written: the publish is not acknowledged and its rumor is withheld,
        and the node keeps running, holding its last durable value again (the refused one is never sent, not even
        in a later swap); a later publish succeeds once the disk takes writes again.
        """
        now = self._clock()
        self._trace_op("publish", now, data=data.hex())
        version = self.core.publish(data, now)
        self._flush()
        return version

    def set_secrets(self, secrets: tuple[bytes, ...]) -> None:
        """Use the key ring SECRETS from now on (rotation without a restart): the first signs, every one verifies.
        Rotate in three steps, each on every node before the next: add the new key last (``(old, new)``), make it
        first (``(new, old)``), drop the old one (``(new,)``). A bad ring is refused with `ConfigError` naming
        ``secrets``, and the old one stays in use; the kernel heartbeat plane, if on, gets the same ring."""
        config = replace(self.config, secrets=secrets)  # NodeConfig's rules, as for the ring it started with
        why = plane_refusal(config) if self._plane is not None else None  # the plane's own rules: its key count
        if why is not None:
            raise ConfigError("secrets", f"the kernel heartbeat plane {why.removeprefix('it ')}")
        self._trace_op("secrets", 0.0, keys=[k.hex() for k in secrets])
        self.core.set_secrets(secrets)
        self.config = config
        if self._plane is not None:  # the kernel must not go on with the old ring: failing, the node takes over
            self._plane_step(self._plane.configure, "lost (the new key ring could not be written)")

    def read(self) -> tuple[Version, bytes]:
        return self.core.read()

    def stats(self) -> dict:
        self._sync_plane()
        return dict(self.core.stats)

    def plane_stats(self) -> dict | None:
        """The kernel heartbeat plane's counters for this node's interface (`bpf.hbplane.PlaneWriter.stats`, and
        the sync's own: refreshed, members, members_without_mac), or None without a plane."""
        return self._plane.stats() if self._plane is not None else None

    def fastpath_stats(self) -> dict | None:
        """The kernel fast path's counters for this node's interface (`bpf.FastPathWriter.stats`), or None without
        a fast path that counts; a map that cannot be read (the program went away) is None too, not an error."""
        stats = getattr(self._fastpath, "stats", None)
        if stats is None:
            return None
        try:
            return stats()
        except (OSError, ValueError):  # bpf's MapError / BpfUsageError
            return None

    # ---- plumbing --------------------------------------------------------------------------------------------

    def _start_plane(self) -> None:
        self._plane_step(self._plane.start, "unavailable")

    def _plane_step(self, step: Callable[[], None], failure: str) -> None:
        """STEP on the plane; should it fail, the node runs on without it, heartbeats handled here as with the plane
        off, after one warning line (FAILURE, and the error's first line)."""
        try:
            step()
        except Exception as e:
            log.warning("kernel heartbeat plane %s: %s; heartbeats handled in userspace", failure,
                        (str(e).strip().splitlines() or [type(e).__name__])[0])
            log.debug("the heartbeat plane failed", exc_info=True)
            self._stop_plane()

    def _stop_plane(self) -> None:
        plane, self._plane = self._plane, None
        self._driver.fastpath = plane._inner
        try:
            plane.close()
        except Exception:
            log.debug("closing the heartbeat plane failed", exc_info=True)

    def _sync_plane(self) -> None:
        """Take what the kernel's heartbeat plane accepted into the core and hand the result on (no-op without)."""
        plane = self._plane
        if plane is not None and self._transport is not None:
            plane.sync()
            self._flush()
            if plane.changed:
                plane.reconcile()

    def _record_at(self, events: list[Event], t: float) -> None:
        self._driver.record(events, t)

    def _stats_extra(self) -> dict:
        """The process's own fields of a stats record (`_process_stats`), and samples of what its datagrams cost it
        since the last record, in ms, about `MAX_HANDLE_SAMPLES` of each, drawn evenly over the interval (see
        `_pick`):

        - ``hb_handle_ms``: handling a heartbeat it accepted, from starting on the datagram to its forwards being
          sent (the simulator's handling model reads them: work a hop costs besides the wait); ``md_handle_ms``, the
          same for a metadata rumor it adopted;
        - ``hb_cpu_ms``, ``md_cpu_ms`` and ``other_cpu_ms``: the process's CPU time (thread_time) on a heartbeat it
          took, on a rumor it adopted (its state file written, when it has one) and on any other datagram
          (duplicates and stale copies mostly; swaps, leaves, bad ones): what each kind holds a core for in the
          simulator's CPU model with ``cost: kind``;
        - ``hb_wait_ms`` and ``md_wait_ms``: how long a heartbeat it took and a rumor it adopted waited from the
          kernel's receipt (SIOCGSTAMPNS, UDP) to the process starting on it; ``wake_ms``, the same wait for a
          datagram of any kind that found the process idle (arrived after it had last finished handling, with
          nothing queued): its wake-up, the simulator's wake-up model, without waiting behind its own backlog;
        - ``hb_wire_ms``: for a heartbeat taken straight from its origin (``hb_hop_ms``) whose wait was sampled, the
          hop's part before that wait: from the origin making it (its sequence) to the kernel's receipt here --
          signing, the origin's sends before this copy's, the veths and the bridge."""
        out = _process_stats()
        samples = self._samples
        for field, xs in samples.items():
            if xs:
                out[field], samples[field] = xs, []
        # the next interval measures each kind of event with the probability that gives about MAX_HANDLE_SAMPLES at
        # this interval's count of them
        seen, rate = self._seen, self._rate
        for kind, n in seen.items():
            rate[kind], seen[kind] = (MAX_HANDLE_SAMPLES / n if n > MAX_HANDLE_SAMPLES else 1.0), 0
        return out

    def _pick(self, kind: str, field: str, *fields: str) -> bool:
        """Whether to measure this event of KIND (``took``, ``adopted``, ``drained``, ``first``) for FIELD (or any of
        FIELDS): with the probability that gives about MAX_HANDLE_SAMPLES of them per record at the last record's
        rate. Every event is as likely to be measured as any other of its interval, wherever in the cycle it falls
        (the first few after a record, which is written at the node's timer step, all fall at one phase of its
        cycle). Never while all of them are full: a sample `_sample` would drop costs no syscall or clock read (a
        node that writes no stats records keeps the first rate, and fills them once)."""
        samples = self._samples
        if all(len(samples[f]) >= MAX_SAMPLES_KEPT for f in (field, *fields)):
            return False
        r = self._rate[kind]
        return r >= 1.0 or self._sampler.random() < r

    def _sample(self, field: str, seconds: float) -> None:
        """One more SECONDS-long sample of FIELD for the next stats record, in ms, if it holds fewer than
        MAX_SAMPLES_KEPT (the probabilities are set from the last interval's rate: a busier one gives more)."""
        xs = self._samples[field]
        if len(xs) < MAX_SAMPLES_KEPT:
            xs.append(round(seconds * 1000.0, 3))


    def _on_datagram(self, data: bytes, src: str = "") -> None:
        if len(self._queue) >= self.config.buffer:
            self._trace_op("drop", 0.0, reason="queue_full", detail=f"{len(data)} bytes")
            self.core.note_drop("queue_full", f"{len(data)} bytes")
            return
        stamp = None
        if isinstance(self._transport, UdpTransport):
            # the first datagram since the process last finished handling (a wake-up if it came after that: see
            # _stats_extra), or a heartbeat or a rumor (a wait, if the process takes it)
            first = not self._queue and not self._drain_scheduled
            if first:
                self._seen["first"] += 1
            wake = first and self._pick("first", "wake_ms")
            kind = data[OFF_TYPE] if len(data) > OFF_TYPE else -1
            wait = kind in _STAMPED and (self._pick("took", "hb_wait_ms") if kind == MsgType.HEARTBEAT
                                         else self._pick("adopted", "md_wait_ms"))
            if wake or wait:
                stamp = self._transport.rx_stamp()
                if wake and stamp is not None and stamp > self._idle_since:  # it found the process idle
                    self._wake_stamp = stamp
                if not wait:
                    stamp = None
        self._queue.append((data, src, stamp))
        if not self._drain_scheduled:
            self._drain_scheduled = True
            self._loop.call_soon(self._drain)

    def _drain(self) -> None:
        """Handle what has queued up, one datagram at a time: each is stamped with the time it is handled and its
        sends go out before the next is read, as the simulator drains a core after every message (a batch would
        hold a rumor's forwards back until everything queued behind it had been handled)."""
        self._drain_scheduled = False
        queue, core, driver, clock, plane = self._queue, self.core, self._driver, self._clock, self._plane
        seen, pick = self._seen, self._pick
        if self._wake_stamp is not None:
            self._sample("wake_ms", max(clock() - self._wake_stamp, 0.0))
            self._wake_stamp = None
        while queue:
            data, src, stamp = queue.popleft()
            now = clock()
            seen["drained"] += 1
            sample = pick("drained", "hb_cpu_ms", "other_cpu_ms")
            # a rumor is measured apart, every one while its field has room: a node adopts a few per interval
            rumor = len(data) > OFF_TYPE and data[OFF_TYPE] == _METADATA and pick("adopted", "md_cpu_ms")
            cpu0 = time.thread_time() if sample or rumor else 0.0
            if self._trace is not None:
                self._trace_op("rx", now, data=data.hex(), src=src)
            accepted, rumors = core.stats["accepted_heartbeat"], core.stats["adopted_rumor"]
            direct = core.direct_taken
            if plane is not None:  # the kernel may have taken this heartbeat's origin further: the core first
                plane.before_datagram(data)
            core.receive(data, now, src)
            try:
                driver.drain(now)
            except StateError:
                # a peer's value could not be made durable: the driver withheld its sends and logged and recorded
                # the failure; there is no caller to tell, and raising into the event loop would only add a
                # traceback
                pass
            took = core.stats["accepted_heartbeat"] != accepted
            adopted = not took and core.stats["adopted_rumor"] != rumors
            if stamp is not None and (took or adopted):  # from the kernel's receipt to starting on it
                self._sample("hb_wait_ms" if took else "md_wait_ms", max(now - stamp, 0.0))
                if took and core.direct_taken != direct:  # straight from its origin
                    self._sample("hb_wire_ms", max(stamp - core.direct_sent_s, 0.0))  # its send time to the receipt
            if took:
                seen["took"] += 1
                if pick("took", "hb_handle_ms"):
                    self._sample("hb_handle_ms", clock() - now)
            elif adopted:
                seen["adopted"] += 1
                if pick("adopted", "md_handle_ms"):
                    self._sample("md_handle_ms", clock() - now)
                if rumor:
                    self._sample("md_cpu_ms", time.thread_time() - cpu0)
                continue
            if sample:  # this process's CPU time on it: a heartbeat it took, or any other datagram but a rumor
                self._sample("hb_cpu_ms" if took else "other_cpu_ms", time.thread_time() - cpu0)
        if plane is not None and self._plane is not None and plane.changed:
            plane.reconcile()
        self._idle_since = clock()

    def _on_transport_error(self, reason: str, detail: str) -> None:
        """A transport's error: a send error (``send_error_<cause>``, ``send_queue_full``: the payload is gone),
        a transport event (``transport_reopened``, ``transport_reopen_failed``), or a bad frame (a drop)."""
        if reason.startswith(("send_", "transport_")):
            stats = self.core.stats
            stats[reason] += 1
            if reason.startswith("send_error_"):
                stats["send_error"] += 1
            if reason not in self._logged_reasons and reason != "transport_reopened":  # the transport logs that
                # once per reason: a firewall rule can fail every send
                self._logged_reasons.add(reason)
                log.warning("%s: %s (counted in /stats under %s; not logged again)", reason, detail, reason)
        else:
            self._trace_op("drop", 0.0, reason=reason, detail=detail)
            self.core.note_drop(reason, detail)

    async def _run_timer(self) -> None:
        driver = self._driver
        clock = self._clock
        while True:
            plane = self._plane
            if plane is not None:  # before expiry and the stats record: what the kernel accepted counts
                plane.sync()
            now = clock()
            self._trace_op("tick", now)
            target = now + driver.timer_step(now)
            if plane is not None and self._plane is not None:
                plane.reconcile()
            # Sleep until the driver's deadline itself, not for its delay after this step's own work, and for whole
            # milliseconds: the loop's epoll waits in milliseconds, rounded up, so any other sleep wakes up to 1 ms
            # late. The timer is then on time, and what the driver measures as lateness is the process's wait for a
            # core (the simulator's wake-up model reads it).
            start = clock()
            delay = math.ceil(max(target - start, 0.001) * 1000.0) / 1000.0
            driver.wake_at = start + delay
            await asyncio.sleep(delay)

    def _flush(self) -> None:
        """Hand the core's outputs on (accepted state, sends, events: see `CoreDriver.drain`)."""
        self._driver.drain(self._clock())  # events are stamped before their sends go out, so causes precede effects

    def _send(self, sends: list[Send]) -> None:
        transport = self._transport
        if transport is None:  # not joined yet, or closed: what the core sends now is lost, as on a dead socket
            return
        broadcaster = self._broadcaster
        for send in sends:
            payload = send.payload
            if broadcaster is not None and len(send.targets) > 1:
                sock = transport.socket
                try:
                    if sock is None:
                        raise ConnectionError(errno.ENOTCONN, "the UDP socket is being re-opened")
                    broadcaster.send(sock, payload, list(send.targets))
                except OSError as e:  # its sendto is a plain socket call: nothing in asyncio catches it
                    for _ in send.targets:
                        self._on_transport_error(errno_reason("send_error", e), f"broadcast: {e}")
            else:
                for endpoint in send.targets:
                    transport.send(payload, endpoint)

    def _trace_op(self, op: str, now: float, **fields) -> None:
        if self._trace is not None:
            self._trace.write(json.dumps({"op": op, "t": now, **fields}) + "\n")

    def _write(self, record: dict) -> None:
        if self._events_out is not None:
            self._events_out.write(json.dumps(record) + "\n")


def _seed_identities(seeds) -> tuple[Identity, ...]:
    out = []
    for i, seed in enumerate(seeds):
        if not isinstance(seed, (tuple, list)) or len(seed) != 2:
            raise UsageError(f"seeds[{i}]: must be an (addr, port) tuple, got {seed!r}"[:160])
        try:
            out.append(Identity(name="", addr=seed[0], port=seed[1]))
        except UsageError as e:
            raise UsageError(f"seeds[{i}]: {e}") from None
    return tuple(out)


def _log_event(ev: Event) -> None:
    if ev.kind == "packet_dropped":
        log.debug("dropped packet: %s %s", ev.reason, ev.detail)
    elif ev.kind in ("member_added", "member_removed", "member_left", "metadata_adopted"):
        log.info("%s", ev)


_PAGE = os.sysconf("SC_PAGE_SIZE")


MAX_HANDLE_SAMPLES = 16  # per stats record, about: see Node._pick
MAX_SAMPLES_KEPT = 2 * MAX_HANDLE_SAMPLES  # at most (the rate is the last record's: a busier interval gives more)
SAMPLED = ("hb_handle_ms", "md_handle_ms", "hb_cpu_ms", "md_cpu_ms", "other_cpu_ms", "hb_wait_ms", "md_wait_ms",
           "wake_ms", "hb_wire_ms")  # _stats_extra
_METADATA = int(MsgType.METADATA)
_STAMPED = frozenset({int(MsgType.HEARTBEAT), int(MsgType.METADATA)})  # kinds whose wait from the kernel is sampled


def _process_stats() -> dict:
    """What each stats record says about the process itself: CPU seconds (the testbed measures what one packet
    costs a node from them: the simulator's CPU model), resident memory and open descriptors (a long run's leak
    check reads their slope)."""
    out = {"cpu_s": round(time.process_time(), 4)}
    try:
        with open("/proc/self/statm") as f:
            out["rss_bytes"] = int(f.read().split()[1]) * _PAGE
        out["open_fds"] = len(os.listdir("/proc/self/fd"))
    except (OSError, ValueError, IndexError):
        pass  # not Linux, or /proc not mounted: the fields are left out
    return out
