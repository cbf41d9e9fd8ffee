"""Draining a protocol core (`gossip.protocols.Protocol`): the one place that says what a driver does with what
the core produced.

The core is sans-IO: it only queues sends, events and accepted state. Something must take them out after every
input and hand them on, and must run the core's timer. Both drivers -- the asyncio node (`gossip._node`) and the
simulator (`testbed.sim._engine`) -- do it through a `CoreDriver`, so the rules live here once:

- a drain hands accepted state to the fast-path sink first (so a fast path drops a rumor's duplicates before its
  forwarded copies can come back), then the sends to the send function, then the events to the log;
- routine drops (``duplicate``, ``stale``) are counted in the core's stats but left out of the log: one line per
  duplicate would swamp it;
- a record is ``{"t": round(now, 6), "node": name, **event.to_json()}``; the driver's own records (``started``,
  ``stats``, ``stopped``) have the same ``t`` and ``node`` first;
- a timer step ticks the core, writes the ``stats`` record once per cycle, drains, and says how long to sleep;
  the ``stats`` record's ``timer_late_s`` is how late that step ran after the time the previous one asked for
  (on a real host: the wait of a sleeping process for a core; 0 in the simulator, whose timers are exact); its ``hb_hop_ms`` lists the delays of heartbeats taken straight from their origin
  (`Protocol.take_direct_hops`);
- with a state store (``NodeConfig.state_dir`` on a node, a `gossip._state.MemoryStore` in the simulator) the
  driver starts the core from the stored state (a refused file is one ``state_refused`` record and one log line,
  and the node starts empty), and a drain whose accepted state lists a new metadata version writes the core's
  `DurableState` before anything else: before its sends go out and before the publish that caused it returns. If
  that write fails, the drain's sends are withheld, the core rolls back to the last durable value (so no later
  swap carries the refused one), a ``state_write_failed`` record is written and `StateError` is raised (a publish
  is then not acknowledged). Only metadata adoptions write; heartbeats never do.
- a graceful leave is `leave`: the core's leave (its LEAVE rumor and ``leave_sent`` event), drained at once so the
  rumor is handed to the send function before the driver's caller stops sending; then `stopped` writes the
  ``stopped`` record a node writes when it closes.

That is what makes a simulated run's records match a real node's and the same seed give the same file.

This module must never open a socket, import asyncio, read a clock (wall or process) or draw a random number:
callers pass ``now``, and anything clock-like a record needs (the node's ``cpu_s``) comes from a callable they
pass in. It reaches the core only through its driver interface, and the disk only through a state store.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Callable, Protocol, Sequence

from ._events import Accepted, Event, Send
from ._state import FileStore, StateError, StateStore
from ._wire import MsgType
from .protocols import Protocol as Core
from .errors import UsageError

log = logging.getLogger("gossip")

ROUTINE_DROPS = frozenset({"duplicate", "stale"})


class AcceptedSink(Protocol):
    """Where accepted state goes so that a fast path can drop what the core would drop (the XDP map writer on a
    node, the fast-path model in the simulator)."""

    def accept(self, accepted: list[Accepted]) -> None: ...


_FIELDS: dict[type, tuple[str, ...] | None] = {}


def _fields(cls: type) -> tuple[str, ...] | None:
    """The field names `Event.to_json` writes for CLS, or None when CLS has its own `to_json`."""
    try:
        return _FIELDS[cls]
    except KeyError:
        names = tuple(f.name for f in dataclasses.fields(cls)) if cls.to_json is Event.to_json else None
        _FIELDS[cls] = names
        return names


def event_json(event: Event) -> dict:
    """``event.to_json()``, without `dataclasses.asdict`'s deep copy (most of its cost; events hold only scalars
    and tuples of scalars). The simulator writes millions of these."""
    return _put_event({}, event)


def _put_event(rec: dict, event: Event) -> dict:
    """Add EVENT's ``to_json()`` fields to REC, in their order."""
    names = _fields(type(event))
    if names is None:
        rec.update(event.to_json())
        return rec
    for name in names:
        v = getattr(event, name)
        rec[name] = list(v) if isinstance(v, tuple) else v
    rec["kind"] = event.kind
    return rec


class CoreDriver:
    """Drains one core and runs its timer; what happens to the outputs is up to the functions passed in.

    Arguments:
        core: the core to drive.
        name: the node's name, in every record.
        send: called with the list of `Send` of one drain, when there are any.
        write: called with each record (a dict), in order.
        now: when the driver starts; the first ``stats`` record is due then.
        fastpath: gets each drain's accepted state, when there is any.
        on_event: sees every event, routine drops included, before it is recorded or left out (the node logs).
        record_stats: write the per-cycle ``stats`` record (the cycle is kept either way).
        stats_extra: called for fields to add to each ``stats`` record (the node's ``cpu_s``).
        store: where the core's durable state is kept; by default a `FileStore` in the core's
            ``config.state_dir`` when it has one, else none (memory only). A `StateError` here means the state
            directory cannot be created.
    """

    __slots__ = ("core", "name", "send", "write", "fastpath", "on_event", "record_stats", "stats_extra",
                 "next_stats", "store", "saved", "saved_data", "wake_at")

    def __init__(self, core: Core, *, name: str, send: Callable[[list[Send]], None],
                 write: Callable[[dict], None], now: float, fastpath: AcceptedSink | None = None,
                 on_event: Callable[[Event], None] | None = None, record_stats: bool = True,
                 stats_extra: Callable[[], dict] | None = None, store: StateStore | None = None) -> None:
        self.core, self.name, self.send, self.write = core, name, send, write
        self.fastpath, self.on_event = fastpath, on_event
        self.record_stats, self.stats_extra = record_stats, stats_extra
        self.next_stats = now
        self.wake_at: float | None = None  # when the last timer step asked to be woken
        if store is None and core.config.state_dir is not None:
            store = FileStore(core.config.state_dir, cluster=core.cluster)
        self.store = store
        self.saved = None  # the version last made durable
        self.saved_data = b""
        if store is not None:
            self._restore(now)

    def _restore(self, now: float) -> None:
        """Start the core from the store's state; a state that cannot be trusted is reported and ignored."""
        store, core = self.store, self.core
        loaded = store.load()
        problem = loaded.problem
        if loaded.state is not None:
            try:
                core.restore(loaded.state)
            except UsageError as e:
                problem = str(e)
        if problem is not None:
            log.warning("state file %s refused (%s): starting with no metadata", store.path, problem)
            self.write_record({"kind": "state_refused", "path": store.path, "error": problem}, now)
        elif loaded.state is not None:
            v = loaded.state.version
            log.info("state file %s: version %d/%08x, HLC mark %d", store.path, v.seq, v.origin, core.hlc_mark)
        self.saved, self.saved_data = core.read()

    def drain(self, now: float) -> None:
        """Hand on everything the core produced since the last drain: accepted state, sends, then events."""
        core = self.core
        accepted = core.take_accepted()
        if accepted:
            if self.store is not None:
                self._persist(accepted, now)
            if self.fastpath is not None:
                self.fastpath.accept(accepted)
        sends = core.take_sends()
        if sends:
            self.send(sends)
        events = core.take_events()
        if events:
            self.record(events, now)

    def _persist(self, accepted: list[Accepted], now: float) -> None:
        """Make the core's metadata durable if ACCEPTED lists a version not yet written (before any send)."""
        core = self.core
        if not any(a.type == MsgType.METADATA for a in accepted):
            return
        state = core.durable_state()
        if state.version == self.saved:
            return  # the restored version itself
        try:
            self.store.save(state)
        except OSError as e:
            withheld = core.take_sends()  # an adopted value must not leave before it is durable
            core.roll_back(self.saved, self.saved_data)  # nor later, in a swap: the node holds what its disk holds
            log.error("state file %s: write failed (%s): %d send(s) withheld", self.store.path, e, len(withheld))
            self.write_record({"kind": "state_write_failed", "path": self.store.path, "error": str(e),
                               "version": state.version.seq, "origin": state.version.origin,
                               "withheld": len(withheld)}, now)
            events = core.take_events()
            if events:
                self.record(events, now)
            raise StateError(f"state file {self.store.path}: write failed: {e}") from e
        self.saved, self.saved_data = state.version, state.data

    def record(self, events: Sequence[Event], now: float) -> None:
        """Write one record per event, stamped NOW, except routine drops."""
        on_event = self.on_event
        for ev in events:
            if on_event is not None:
                on_event(ev)
            if ev.kind == "packet_dropped" and ev.reason in ROUTINE_DROPS:
                continue  # most of a simulation's events: nothing else is done for them
            self.write(_put_event({"t": round(now, 6), "node": self.name}, ev))

    def leave(self, now: float) -> int:
        """The core leaves (see `Protocol.leave`) and its LEAVE goes to the send function now; returns to how
        many peers it went."""
        sent = self.core.leave(now)
        self.drain(now)
        return sent

    def stopped(self, now: float) -> None:
        """Write the ``stopped`` record: the members listed at the end, the version held and the core's counters."""
        core = self.core
        version, _ = core.read()
        self.write_record({"kind": "stopped", "members": sorted(m.name for m in core.members()),
                           "version": version.seq, "origin": version.origin, **core.stats}, now)

    def write_record(self, fields: dict, now: float) -> None:
        """Write one of the driver's own records (FIELDS starts with ``kind``), stamped NOW."""
        self.write({"t": round(now, 6), "node": self.name, **fields})

    def timer_step(self, now: float) -> float:
        """One pass of the timer: tick, the ``stats`` record when a cycle has passed since the last, drain.

        Returns how long to sleep: until the core's next deadline or the next ``stats`` record, at least 1 ms
        (never spin) and at most one cycle.
        """
        core = self.core
        cycle = core.config.cycle_s
        core.tick(now)
        if now >= self.next_stats:
            self.next_stats = now + cycle
            if self.record_stats:
                extra = self.stats_extra
                rec = {"kind": "stats", **core.stats, **(extra() if extra is not None else {})}
                if self.wake_at is not None:
                    rec["timer_late_s"] = round(max(now - self.wake_at, 0.0), 6)
                hops = core.take_direct_hops()
                if hops:
                    rec["hb_hop_ms"] = [round(h, 3) for h in hops]
                self.write_record(rec, now)
        self.drain(now)
        sleep = min(max(min(core.next_deadline(), self.next_stats) - now, 0.001), cycle)
        self.wake_at = now + sleep
        return sleep
