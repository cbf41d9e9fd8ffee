"""The full-fidelity simulator: one real protocol core per node (of ``config.membership``, made through
`gossip.protocols`), a virtual clock and a virtual network.

This is the second driver of the protocol core (the asyncio node in `gossip._node` is the first). It feeds the
cores exactly what a real node feeds them -- decoded messages (or, with ``wire=True``, signed datagrams through the
real codec), the current time, a seeded `random.Random` -- and drains them and runs their timers with the node's
own `gossip._driver.CoreDriver`, so it records their events in the same JSON-lines format a node writes with
``--events`` and the testbed's checkers and plots read a simulated run like a real one.

Time is virtual: a heap of (time, sequence, action) entries, processed in order; nothing ever sleeps. Every random
choice comes from a generator derived from the run's seed (one per node incarnation, one for the network), so the
same seed gives a byte-identical events file.

This module must never touch a socket, the wall clock or the module-level random generator, and never reach into
the core's private state: anything it needs from the core goes through the driver interface a real node uses.
"""

from __future__ import annotations

import dataclasses
import functools
import heapq
import itertools
import json
import random
from collections import Counter, deque
from pathlib import Path
from typing import IO, Callable, Iterable

from gossip import Identity, NodeConfig, Version
from gossip import _wire as gwire
from gossip import node_id as wire_node_id
from gossip._driver import CoreDriver
from gossip._events import Send
from gossip._corebase import DurableState
from gossip._state import MemoryStore
from gossip.errors import UsageError
from gossip.protocols import Protocol as Core
from gossip.protocols import create as create_core

from ._errors import SimError
from ._latency import DEFAULT_LATENCY, Constant, LatencyModel
from ._plane import Neighbours, PlaneModel

EPOCH_S = 1_000_000.0  # virtual clock at simulation time 0: large enough that ms-based sequences look real

_UP, _PAUSED, _DOWN = "up", "paused", "down"
_DELIVER, _TICK, _CALL, _PROCESS, _DELIVER_CPU, _KERNEL, _PROCESS_CORE, _CORE_DONE = 0, 1, 2, 3, 4, 5, 6, 7
# the in-kernel heartbeat plane's time per heartbeat it takes (verify, record, rewrite, sign, clone), measured with
# kernel.bpf_stats_enabled by benchmarks/bench_hbplane.py: 2.2 us at fanout 3, 3.7 us with a Bloom filter
KERNEL_HEARTBEAT_S = 3e-6
_SEEDINGS = ("tree", "first", "all", "none")

# The kernel's accounting of a node's UDP socket buffer (the socket-buffer model). A node asks for SO_RCVBUF =
# ``buffer * 2048`` bytes (`gossip._node`) and the kernel doubles what it is given; every queued datagram is charged
# its skb's truesize, and one that would take the charge past the buffer is dropped (RcvbufErrors) unless the queue
# is empty. Truesize, measured on this kernel (6.18) with benchmarks/bench_rcvbuf.py for UDP payloads of 40-1472 B
# over a veth from a socket in another namespace, is the sk_buff (256 B) plus the data buffer it came in:
# - without XDP, the sender's buffer: its payload, UDP and IP headers, the device's reserved headroom (16) and 15 B
#   of alignment slack (59 B in all) rounded up to 64 B, plus skb_shared_info (320 B), from the 576-B small-head
#   cache when that fits, else the next power of two (kmalloc): 832, 1280 or 2304 B for 1-197, 198-645, 646-1472 B;
# - with XDP on the receiving veth (native), the veth copies each frame into a page-pool fragment of its length
#   (frame = payload + 42) rounded up to 64 B, plus 256 B of XDP headroom and skb_shared_info; a 4096-B page holds
#   as many as fit, its last taking the rest, so on average a datagram is charged 4096 / (fragments per page), or a
#   whole page when two do not fit: 1075, 1280, 1621, 2304 and 4352 B for 40, 182, 630, 1372 and 1472 B.
SKB_BYTES = 256
_SHINFO_BYTES = 320
_SMALL_HEAD_BYTES = 576
_PAGE_BYTES = 4096


def _align64(n: int) -> int:
    return (n + 63) & ~63


def skb_truesize(payload_bytes: int, *, xdp: bool) -> float:
    """The bytes the kernel charges a UDP socket for one queued datagram of PAYLOAD_BYTES (see above), with or
    without an XDP program on the receiving veth; for a datagram that fits one Ethernet frame."""
    if xdp:
        frag = _align64(payload_bytes + 42) + 256 + _SHINFO_BYTES
        per_page = _PAGE_BYTES // frag
        return SKB_BYTES + (_PAGE_BYTES / per_page if per_page >= 2 else _PAGE_BYTES * -(-frag // _PAGE_BYTES))
    head = _align64(payload_bytes + 59) + _SHINFO_BYTES
    return SKB_BYTES + (_SMALL_HEAD_BYTES if head <= _SMALL_HEAD_BYTES else 1 << (head - 1).bit_length())


def socket_buffer_bytes(config: NodeConfig) -> int:
    """A node's socket buffer, as the kernel sets it from what the node asks (assuming the host's rmem_max sysctl
    allows the request; the testbed's hosts allow 16 MiB)."""
    return 2 * config.buffer * 2048


@dataclasses.dataclass(frozen=True, slots=True)
class KindCost:
    """What a message costs the process that handles it, by what its core does with it: TAKEN for one it takes (a
    heartbeat it accepts; a rumor it adopts too, unless RUMOR is given), OTHER for anything else (a duplicate, a
    swap, a drop). Each is a model drawn once per message: the CPU time it holds a core (`Simulation`'s ``cpu``),
    or the time from starting on it to its sends leaving (``handling_s``, which draws only TAKEN and RUMOR)."""

    taken: LatencyModel
    other: LatencyModel
    rumor: LatencyModel | None = None  # a rumor it adopts, if not as TAKEN

    def __post_init__(self) -> None:
        if self.rumor is None:
            object.__setattr__(self, "rumor", self.taken)


class _SimNode:
    """One simulated process: its fixed address and configuration, and the core of its current incarnation."""

    __slots__ = ("index", "name", "identity", "config", "seeds", "core", "driver", "state", "incarnation",
                 "token", "queue", "loss", "delay", "pending", "awake_at", "fastpath", "store", "src", "plane",
                 "neigh", "rcvbuf_bytes", "rcvbuf_used", "rcvbuf_queue", "rcvbuf_in", "rcvbuf_errors")

    def __init__(self, index: int, name: str, identity: Identity, config: NodeConfig) -> None:
        self.index, self.name, self.identity, self.config = index, name, identity, config
        self.src = "%s:%d" % identity.endpoint  # what its messages arrive from (made once, not per send)
        self.seeds: tuple[tuple[str, int], ...] = ()
        self.core: Core | None = None
        self.driver: CoreDriver | None = None  # drains `core`; replaced with it
        self.state = _DOWN
        self.incarnation = 0
        self.token = 0  # bumped whenever the pending timer entry must be ignored (crash, pause, restart)
        self.queue: list = []  # messages that arrived while paused, in arrival order
        self.loss = 0.0
        self.delay: LatencyModel | None = None  # extra latency of every message delivered to this node
        self.pending = True  # allocated, not started yet (a staggered start)
        self.awake_at = -1.0  # wake-up model: when the process handles what has arrived so far
        self.fastpath: _FastPath | None = None  # its XDP program, when the simulation models one
        self.plane: PlaneModel | None = None  # its in-kernel heartbeat plane (``kernel_heartbeats``), with XDP
        self.neigh = Neighbours()  # its namespace's neighbour table: outlives the process
        self.store: MemoryStore | None = None  # its durable state, kept across crashes (``durable=True``)
        # its socket buffer (the socket-buffer model): capacity, bytes charged, what each datagram queued in it was
        # charged (oldest first; the process reads them in order), datagrams queued and dropped so far
        self.rcvbuf_bytes = socket_buffer_bytes(config)
        self.rcvbuf_used = 0.0
        self.rcvbuf_queue: deque[float] = deque()
        self.rcvbuf_in = self.rcvbuf_errors = 0


class _Deferred:
    """Stands in for a fast path during a drain whose drop-state writes must wait (the handling model)."""

    __slots__ = ("accepted",)

    def __init__(self) -> None:
        self.accepted: list = []

    def accept(self, accepted) -> None:
        self.accepted.extend(accepted)


# what the program judges; SWIM's ACK and NACK answer a probe's sequence, not their sender's, and pass
_SWIM_SEQUENCED = (gwire.Ping, gwire.PingReq, gwire.State, gwire.Gossip)
_JUDGED = (gwire.Heartbeat, gwire.MetadataRumor, gwire.SwapRequest, gwire.SwapResponse, *_SWIM_SEQUENCED)
_JUDGED_TYPES = frozenset({gwire.MsgType.HEARTBEAT, gwire.MsgType.METADATA, gwire.MsgType.SWAP_REQ,
                           gwire.MsgType.SWAP_RESP, gwire.MsgType.PING, gwire.MsgType.PING_REQ, gwire.MsgType.STATE,
                           gwire.MsgType.GOSSIP})


class _FastPath:
    """The XDP fast path of one node incarnation: the drop rules of `bpf/xdp_fastpath.c`, on decoded messages.

    As on the testbed, the state is written only with what the core accepted, after it handled a message; the
    verdict is taken when a message arrives, before the process wakes up. A copy that arrives while its node has not
    yet handled an earlier one passes, and the core drops it as a duplicate, as a real node's core does.
    """

    __slots__ = ("heartbeat", "swim", "version", "passed", "dropped")

    def __init__(self) -> None:
        self.heartbeat: dict[int, int] = {}  # origin -> highest accepted heartbeat sequence
        self.swim: dict[tuple[int, int], int] = {}  # (type, origin) -> the newest PING, PING_REQ, STATE, GOSSIP taken
        self.version = (0, 0)  # a node writes its initial version at start
        self.passed = 0
        self.dropped: Counter[str] = Counter()

    def drops(self, msg) -> bool:
        t = type(msg)
        if t not in _JUDGED:  # a type the program does not judge (LEAVE, ACK, NACK) passes, as passed_other
            return False
        if t is gwire.Heartbeat or t in _SWIM_SEQUENCED:
            held = (self.heartbeat.get(msg.origin) if t is gwire.Heartbeat
                    else self.swim.get((msg.type, msg.origin)))
            if held is None or msg.seq > held:
                self.passed += 1
                return False
            self.dropped["duplicate" if msg.seq == held else "stale"] += 1
            return True
        v = (msg.version, msg.origin)
        if v == self.version:
            self.dropped["duplicate"] += 1
            return True
        if v < self.version and t is not gwire.SwapRequest:  # an older request must still be answered
            self.dropped["stale"] += 1
            return True
        self.passed += 1
        return False

    def drops_frame(self, frame: bytes, cluster: int) -> bool:
        """`drops` for raw bytes, as `bpf/xdp_fastpath.c` classifies a datagram from its header alone, in its order:
        too short or a wrong magic (malformed), the version, the cluster, a type it does not judge (passed), a
        body length that disagrees (malformed), then duplicate or stale by (type, origin, seq) -- before any MAC,
        as the kernel does. For crafted datagrams (the ``inject`` faults), which would otherwise reach the core
        without meeting the fast path the testbed's copies meet."""
        if len(frame) < gwire.HEADER_BYTES + gwire.MAC_BYTES:
            return self._drop("malformed")
        magic, version, t, cid, origin, _, body_len, seq = gwire.HEADER.unpack_from(frame)
        if magic != gwire.MAGIC:
            return self._drop("malformed")
        if version != gwire.FORMAT_VERSION:
            return self._drop("unknown_version")
        if cid != cluster:
            return self._drop("foreign_cluster")
        if t not in _JUDGED_TYPES:
            self.passed += 1
            return False
        if len(frame) != gwire.HEADER_BYTES + body_len + gwire.MAC_BYTES:
            return self._drop("malformed")
        if t == gwire.MsgType.HEARTBEAT or t >= gwire.MsgType.PING:
            held = self.heartbeat.get(origin) if t == gwire.MsgType.HEARTBEAT else self.swim.get((t, origin))
            if held is None or seq > held:
                self.passed += 1
                return False
            return self._drop("duplicate" if seq == held else "stale")
        v = (seq, origin)
        if v == self.version:
            return self._drop("duplicate")
        if v < self.version and t != gwire.MsgType.SWAP_REQ:
            return self._drop("stale")
        self.passed += 1
        return False

    def _drop(self, reason: str) -> bool:
        self.dropped[reason] += 1
        return True

    def accept(self, accepted) -> None:
        for a in accepted:
            if a.type == gwire.MsgType.HEARTBEAT:
                self.heartbeat[a.origin] = a.seq
            elif a.type == gwire.MsgType.METADATA:
                self.version = (a.seq, a.origin)
            else:
                self.swim[(a.type, a.origin)] = a.seq


class Simulation:
    """A deterministic discrete-event run of many gossip nodes on one virtual network.

    Times given to and returned by the methods are seconds since the start of the simulation (`time_s`); the
    ``t`` of each event record is the virtual clock the cores see, ``epoch_s + time_s``, as a real node writes its
    wall-clock time. Nodes are named; operations take names. Operations act at the current time: to do something
    at t = 12 s, `run_until(12)` and then call it.

    Arguments:
        seed: the run's seed; every random choice derives from it.
        config: the template `NodeConfig` for every node (``listen_addr`` is replaced by the node's virtual
            address; ``listen_port`` is kept). `add_node` takes a per-node override.
        latency: the default one-way latency model of every link (`set_latency` overrides per link).
        loss: the probability that the network drops any one message.
        wire: pass signed datagrams through the real codec instead of message objects (slower; for validation).
        keep_events: keep the records in memory (`events`); turn off for very large runs.
        events_path: also stream the records to this JSON-lines file as they happen.
        record_kinds: record only these kinds (the driver's own ``started``, ``stats`` and ``stopped`` included);
            ``None`` records what a node records.
        record_stats: write a ``stats`` record per node per cycle, as a node does by default.
        record_refreshes: make the cores report every heartbeat refresh (``member_refreshed``).
        durable: give every node durable metadata, as ``NodeConfig.state_dir`` does on a real node: a store that
            outlives its crashes (written by the shared driver at the same points a node writes its state file),
            so a crashed node restarts with the version, value and HLC mark it last made durable, not empty.
        socket_buffer: with the wake-up, service or handling model, hold what waits for a process in its socket
            buffer as the kernel does (`skb_truesize`, `socket_buffer_bytes`) and drop what does not fit, counted
            in `socket_stats`; off, that queue is unbounded.
        progress: a hook called between slices of every `run_until` with (time_s, messages arrived so far); it
            returns the simulated seconds to run before its next call (`testbed.progress.sim_pacer` sizes them by
            the wall clock, which this module never reads). Also settable later as the ``progress`` attribute.
            Without it a run is one slice; slicing changes nothing a run computes.
    """

    def __init__(self, *, seed: int = 0, config: NodeConfig | None = None,
                 latency: LatencyModel = DEFAULT_LATENCY, loss: float = 0.0, wire: bool = False,
                 epoch_s: float = EPOCH_S, keep_events: bool = True, events_path: str | Path | None = None,
                 record_kinds: Iterable[str] | None = None, record_stats: bool = True,
                 record_refreshes: bool = False, cpu: tuple[int, float] | None = None,
                 wakeup: LatencyModel | None = None, service_s: float = 0.0,
                 handling_s: float | LatencyModel = 0.0,
                 xdp: bool = False, durable: bool = False, socket_buffer: bool = True,
                 progress: Callable[[float, int], float] | None = None) -> None:
        self.seed = seed
        self.progress = progress
        self._durable = durable
        # XDP model: every node's fast path drops duplicate and stale messages when they arrive, so they cost the
        # process nothing (the CPU and wake-up models charge only what reaches it) -- and the simulator skips the
        # core for them, most of the traffic. Decoded messages only: with wire=True every datagram reaches the core.
        if xdp and wire:
            raise SimError("xdp: the fast-path model judges decoded messages; it cannot be used with wire=True")
        self._xdp = xdp
        # Wake-up model: a message reaching an idle process waits for it to be scheduled (a delay drawn from
        # WAKEUP); messages arriving meanwhile are handled in the same batch. Delay is then a property of the
        # receiver, not of each link, so a slow process is slow for every copy sent to it.
        self._wakeup = wakeup
        # Service model: each node process handles what reaches it one message at a time, SERVICE_S each, in
        # arrival order (a datagram waits behind those already in its socket), after the wake-up if it was idle.
        if not (isinstance(service_s, (int, float)) and 0.0 <= service_s < 1.0):
            raise SimError(f"service_s: expected seconds per message in [0, 1), got {service_s!r}")
        self._service_s = float(service_s)
        self._rumor_handling: LatencyModel | None = None
        # Handling model: what handling a message the core forwards costs its process, from starting on it to its
        # sends leaving (decode, MAC, accept, encode and sign the copies): its sends leave that long after it
        # starts, and the process is busy until then. HANDLING_S is seconds (every message the same) or a model
        # drawn once per message handled (a run's measured handling times, ``hb_handle_ms``: `analysis.stats_samples_ms`).
        if isinstance(handling_s, (int, float)) and not isinstance(handling_s, bool):
            if not 0.0 <= handling_s < 1.0:
                raise SimError(f"handling_s: expected seconds in [0, 1), got {handling_s!r}")
            self._handling = Constant(delay_s=float(handling_s)) if handling_s > 0 else None
        elif isinstance(handling_s, LatencyModel):
            self._handling = handling_s
        elif isinstance(handling_s, KindCost):  # a rumor the core adopts draws from .rumor, any other from .taken
            self._handling = handling_s.taken
            self._rumor_handling = handling_s.rumor
        else:
            raise SimError(f"handling_s: expected seconds in [0, 1), a latency model or a KindCost, "
                           f"got {handling_s!r}")
        # Socket-buffer model (with any of the three per-process models above, which queue datagrams for a busy
        # process): what waits for its process sits in its socket buffer, charged as the kernel charges it
        # (`skb_truesize`); a datagram that does not fit is dropped and counted (``rcvbuf_errors``, as the
        # namespace's RcvbufErrors). The process frees a datagram's charge when it starts on it.
        self._socket_buffer = bool(socket_buffer)
        self._truesize: dict[int, float] = {}  # payload bytes -> truesize
        self._send_delay = 0.0  # added to the departure of what _route sends now
        # the heartbeat plane's model: its MACs come from the nodes' neighbour tables, which a process's sends fill
        # (ARP) and the kernel's copies do not; _route learns while any plane exists and the kernel is not sending
        self._planes = False
        self._kernel_sending = False
        # CPU model of the emulation host: (cores, seconds per message). Every delivered message must be processed
        # on one of `cores` shared cores, FIFO: when the cluster is busy, messages wait for a core, as the real
        # node processes of a testbed wait for the machine's CPUs.
        # With a KindCost instead of seconds, a message holds its core from the moment it gets one for the CPU time
        # its kind costs (drawn per message: one the core takes, a heartbeat accepted or a rumor adopted, or any
        # other), and the core starts on it right away: its sends leave after the handling model's time, the core
        # is free again after its CPU time, and messages that find every core busy wait in one FIFO queue.
        if cpu is not None and (not isinstance(cpu, tuple) or len(cpu) != 2 or not isinstance(cpu[0], int)
                                or cpu[0] < 1 or not (isinstance(cpu[1], KindCost)
                                                      or isinstance(cpu[1], (int, float)) and cpu[1] >= 0)):
            raise SimError(f"cpu: expected (cores >= 1, seconds per message >= 0 or a KindCost), got {cpu!r}")
        self._cpu = cpu
        self._core_free = [0.0] * cpu[0] if cpu is not None else []
        self._kind_cost = cpu[1] if cpu is not None and isinstance(cpu[1], KindCost) else None
        self._cores_busy = 0
        self._core_queue: deque = deque()
        self.config = config if config is not None else NodeConfig()
        self.wire = wire
        # Decoded messages carry no MAC: once a key ring has changed, each one carries the key its sender signed it
        # with (a third item), and a receiver whose ring lacks it drops it as `bad_mac`, as decoding would.
        self._keyed = False
        self.epoch_s = float(epoch_s)
        self._now = self.epoch_s
        self._heap: list[tuple] = []
        self._seq = itertools.count()
        self._net_rng = random.Random(f"{seed}/network")
        self._latency: LatencyModel = latency
        self._links: dict[tuple[int, int], LatencyModel] = {}
        self._nodes: list[_SimNode] = []
        self._loss = 0.0
        self._any_loss = False
        self._any_delay = False
        self.set_loss(loss)
        self._by_name: dict[str, _SimNode] = {}
        self._by_endpoint: dict[tuple[str, int], int] = {}
        self._name_by_id: dict[int, str] = {}
        self._seed_identities: dict[tuple[str, int], Identity] = {}
        self._side: list[int] = []  # partition side of each node; messages cross only between equal sides
        self._next_addr = 0
        self._net: Counter[str] = Counter()
        self._keep = keep_events
        self._records: list[dict] = []
        self._kinds = frozenset(record_kinds) if record_kinds is not None else None
        self._record_stats = record_stats and (self._kinds is None or "stats" in self._kinds)
        self._record_refreshes = record_refreshes
        self._out: IO[str] | None = open(events_path, "w", encoding="utf-8") if events_path is not None else None

    # ---- context -------------------------------------------------------------------------------------------

    def __enter__(self) -> "Simulation":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Flush and close the streamed events file, if any. Idempotent."""
        if self._out is not None:
            self._out.close()
            self._out = None

    # ---- nodes ---------------------------------------------------------------------------------------------

    def add_node(self, name: str | None = None, *, seeds: Iterable[str | tuple[str, int]] = (),
                 config: NodeConfig | None = None, private: bytes = b"") -> str:
        """Start a new node now, knowing SEEDS (node names or (addr, port) endpoints); returns its name."""
        node = self._allocate(name, config, private)
        self._start(node, self._endpoints(seeds))
        return node.name

    def add_nodes(self, count: int, *, seeding: str = "tree", prefix: str = "n",
                  config: NodeConfig | None = None, stagger_s: float = 0.0, warm: bool = False) -> list[str]:
        """Start COUNT nodes, named PREFIX + index, seeded among themselves; returns their names.

        ``seeding``: ``"tree"`` (node i knows node (i-1)//2 of this batch, one seed each, like the loopback
        cluster), ``"first"`` (all know the first), ``"all"`` (everyone knows everyone: full views at once) or
        ``"none"``. ``stagger_s``: node i starts at now + i * stagger_s / count instead of now, as processes
        launched one after another do; their cycles then do not tick in lockstep. A node not yet started is down.

        ``warm``: every node starts as if the batch had already joined (its core is made from a `DurableState`
        with ``members``): it lists every other node of the batch alive at the incarnation that node starts at, so
        a large cluster is steady from its first period instead of after an O(N^2) bring-up (10,000 SWIM nodes:
        a minute, not hours). Every node
        is up at once (each is listed, so probed, from the start); ``stagger_s`` then staggers when each one's
        timers start. The seeds are still set (a restart re-joins through them); no ``member_added`` is recorded
        for the listed members, and the ``started`` record says how many were listed (``warm_members``). A
        protocol whose core cannot start that way is a `SimError`.
        """
        if seeding not in _SEEDINGS:
            raise SimError(f"seeding: must be one of {', '.join(_SEEDINGS)}, got {seeding!r}")
        if not isinstance(count, int) or count < 0:
            raise SimError(f"count: must be an integer >= 0, got {count!r}")
        if isinstance(stagger_s, bool) or not isinstance(stagger_s, (int, float)) or not stagger_s >= 0:
            raise SimError(f"stagger_s: must be a number of seconds >= 0, got {stagger_s!r}")
        base = len(self._nodes)
        batch = [self._allocate(f"{prefix}{base + i}", config, b"") for i in range(count)]
        every = tuple(n.identity.endpoint for n in batch)
        starts = [self._now + stagger_s * i / count if stagger_s > 0 and i > 0 else self._now for i in range(count)]
        cores = self._warm_cores(batch, starts) if warm else [None] * count
        listed = count - 1 if warm else 0
        for i, node in enumerate(batch):
            if seeding == "tree":
                seeds = (batch[(i - 1) // 2].identity.endpoint,) if i else ()
            elif seeding == "first":
                seeds = (every[0],) if i else ()
            elif seeding == "all":
                seeds = every[:i] + every[i + 1:]
            else:
                seeds = ()
            if warm:  # up at once (it is listed everywhere, so probed), its timers from its own start
                self._start(node, seeds, cores[i], listed, starts[i])
            elif starts[i] > self._now:
                self._call_at(starts[i], functools.partial(self._start_pending, node, seeds))
            else:
                self._start(node, seeds)
        return [n.name for n in batch]

    def _warm_cores(self, batch: list[_SimNode], starts: list[float]) -> list[Core]:
        """The cores of a warm batch, each made for the time its node starts, from one `DurableState` that lists
        every node of the batch at the incarnation it starts at (what a fresh core of it says of itself then: the
        protocol's own choice, so one is made and asked)."""
        members = []
        for node, t in zip(batch, starts):
            me = self._new_core(node, t).members()[0]
            members.append((node.identity, me.incarnation if me.incarnation is not None else me.seq))
        try:
            state = DurableState(version=Version(0, 0), data=b"", hlc=0, members=tuple(members))
            return [self._new_core(node, t, state) for node, t in zip(batch, starts)]  # each skips its own entry
        except UsageError as e:
            raise SimError(f"warm: {e}") from None

    def crash(self, name: str) -> None:
        """Kill the node (like SIGKILL): its core and anything queued for it are discarded."""
        node = self._node(name, _UP, _PAUSED)
        node.core, node.driver, node.state, node.queue = None, None, _DOWN, []
        node.token += 1

    def restart(self, name: str) -> None:
        """Start a crashed node again on the same endpoint: a fresh core (new random stream) that re-seeds, and
        with ``durable`` starts from the state it last made durable."""
        node = self._node(name, _DOWN)
        if node.pending:
            raise SimError(f"node {name!r} has not started yet")
        node.incarnation += 1
        self._start(node, node.seeds)

    def leave(self, name: str) -> None:
        """Graceful leave, as `Node.close` on SIGTERM: the core's leave (its LEAVE rumor goes out now, through the
        shared driver), the ``stopped`` record, then the process is gone. A paused node is resumed first, as the
        testbed sends SIGCONT before SIGTERM."""
        node = self._node(name, _UP, _PAUSED)
        if node.state == _PAUSED:
            self.resume(name)
        node.driver.leave(self._now)
        node.driver.stopped(self._now)
        self.crash(name)

    def pause(self, name: str) -> None:
        """Freeze the node (like SIGSTOP): it ticks nothing; what arrives is queued, up to its ``buffer``."""
        node = self._node(name, _UP)
        node.state = _PAUSED
        node.token += 1

    def resume(self, name: str) -> None:
        """Unfreeze the node: it processes its queued messages now, then runs its overdue timer."""
        node = self._node(name, _PAUSED)
        node.state = _UP
        core, now, queue = node.core, self._now, node.queue
        node.queue = []
        for item in queue:
            self._receive(core, item, now)
        node.driver.drain(now)
        if node.plane is not None:
            node.plane.reconcile(core, now)
        node.token += 1
        self._schedule_tick(node, now)

    def publish(self, name: str, data: bytes) -> Version:
        """The node publishes DATA now; returns the version it chose."""
        node = self._node(name, _UP)
        version = node.core.publish(data, self._now)
        node.driver.drain(self._now)
        return version

    def set_secrets(self, secrets: tuple[bytes, ...], names: Iterable[str]) -> None:
        """The cluster's key ring from now on: every node started later starts with it, and the up or paused nodes
        of NAMES switch to it now (`Protocol.set_secrets`; NodeConfig's rules check it)."""
        self.config = dataclasses.replace(self.config, secrets=secrets)  # nodes added later (joins)
        for node in self._nodes:
            node.config = dataclasses.replace(node.config, secrets=secrets)
        self._keyed = not self.wire  # signed datagrams carry their own MACs
        for name in names:
            node = self._node(name)
            if node.state in (_UP, _PAUSED):
                node.core.set_secrets(secrets)

    def stop_heartbeats(self, name: str) -> None:
        node = self._node(name, _UP)
        node.core.stop()
        node.driver.drain(self._now)

    def start_heartbeats(self, name: str) -> None:
        node = self._node(name, _UP)
        node.core.start()
        node.driver.drain(self._now)

    # ---- network -------------------------------------------------------------------------------------------

    def partition(self, *groups: Iterable[str]) -> None:
        """Split the network: messages cross only between nodes of the same group. Nodes in no group (and nodes
        added later) form one more group together. Replaces any earlier partition."""
        side = [0] * len(self._nodes)
        seen: set[str] = set()
        for g, members in enumerate(groups, start=1):
            for name in members:
                if name in seen:
                    raise SimError(f"partition: node {name!r} is in two groups")
                seen.add(name)
                side[self._node(name).index] = g
        self._side = side

    def heal(self) -> None:
        """Remove the partition."""
        self._side = [0] * len(self._nodes)

    def set_loss(self, probability: float, node: str | None = None) -> None:
        """Drop each message with PROBABILITY: on every link, or (with NODE) on messages to or from that node,
        on top of the global loss."""
        if isinstance(probability, bool) or not isinstance(probability, (int, float)) \
                or not 0.0 <= probability <= 1.0:
            raise SimError(f"loss: must be a probability in [0, 1], got {probability!r}")
        if node is None:
            self._loss = float(probability)
        else:
            self._node(node).loss = float(probability)
        self._any_loss = self._loss > 0 or any(n.loss > 0 for n in self._nodes)

    def set_latency(self, latency: LatencyModel, *, src: str | None = None, dst: str | None = None) -> None:
        """Set the default latency model, or (with both SRC and DST) the model of the one link SRC -> DST."""
        if src is None and dst is None:
            self._latency = latency
            return
        if src is None or dst is None:
            raise SimError("set_latency: give both src and dst for a link, or neither for the default")
        self._links[(self._node(src).index, self._node(dst).index)] = latency

    def set_ingress_delay(self, name: str, delay: LatencyModel | None) -> None:
        """Add DELAY (a latency model) to every message delivered to node NAME, on top of the link latency, as a
        netem qdisc on the network side of the node's interface does; None removes it."""
        self._node(name).delay = delay
        self._any_delay = any(n.delay is not None for n in self._nodes)

    def fastpath_stats(self, name: str) -> dict | None:
        """What node NAME's fast path did in its current incarnation (as the testbed's ``xdp_stats`` records it:
        ``passed`` and ``dropped`` per reason), or None without the XDP model."""
        fp = self._node(name).fastpath
        return None if fp is None else {"passed": fp.passed, "dropped": dict(fp.dropped)}

    def fastpath_drops_frame(self, name: str, frame: bytes) -> bool:
        """Whether node NAME's XDP model drops the datagram FRAME (bytes; header checks, then duplicate or stale):
        False without the model. For crafted datagrams handed straight to a core."""
        node = self._node(name, _UP, _PAUSED)
        fp = node.fastpath
        return fp is not None and fp.drops_frame(frame, node.core.cluster)

    def plane_stats(self, name: str) -> dict | None:
        """What node NAME's in-kernel heartbeat plane did in its current incarnation, per reason, under the testbed's
        ``hbplane`` names (``handled``, ``dropped_stale_or_dup``, ``passed_<reason>``, ``passed``), and the members
        it holds (``members``, ``members_without_mac``); None without one. See `testbed.sim._plane`."""
        plane = self._node(name).plane
        return None if plane is None else plane.stats()

    def socket_stats(self, name: str) -> dict | None:
        """What the node's socket buffer did (the socket-buffer model; None without it): datagrams queued in it
        (``in_datagrams``) and dropped because it was full (``rcvbuf_errors``), as the testbed reads a namespace's
        UDP counters (`testbed.cluster.emulated.udp_counters`)."""
        node = self._node(name)
        if not self._socket_buffer or not (self._wakeup is not None or self._service_s or self._handling is not None):
            return None
        return {"in_datagrams": node.rcvbuf_in, "rcvbuf_errors": node.rcvbuf_errors}

    def network_stats(self) -> dict[str, int]:
        """What the network did: messages ``sent``; ``dropped_loss``, ``dropped_partition`` and ``dropped_unknown``
        (no node at that endpoint) on the way; ``arrived`` at their destination (what a testbed host's interface
        receives, before its XDP program); so sent = arrived + those drops + what is in flight. Of what arrived:
        ``delivered`` to a running core, ``dropped_down`` (the destination was not running),
        ``dropped_paused_overflow`` (it was paused and its queue full); the XDP model's drops are in
        `fastpath_stats`."""
        return dict(self._net)

    # ---- time ----------------------------------------------------------------------------------------------

    @property
    def time_s(self) -> float:
        """Seconds since the start of the simulation."""
        return self._now - self.epoch_s

    def run_until(self, t_s: float) -> None:
        """Process everything due up to simulation time T_S (seconds since the start), then stand at T_S."""
        end = self.epoch_s + t_s
        if end < self._now:
            raise SimError(f"run_until: {t_s} s is in the past (now {self.time_s} s)")
        hook = self.progress
        if hook is not None:
            # in slices, so a long run shows progress; a slice ends where the whole run would have been then
            while True:
                step = hook(self._now - self.epoch_s, self._net["arrived"])
                if not (step > 0 and self._now + step < end):  # a hook that returns no time ends the slicing
                    break
                self._run_until(self._now + step)
        self._run_until(end)

    def _run_until(self, end: float) -> None:
        heap, nodes, pop = self._heap, self._nodes, heapq.heappop
        wire = self.wire
        arrived = delivered = queued_over = down = 0
        cpu_model = self._cpu is not None
        kind_cost = self._kind_cost
        service_s = self._cpu[1] if cpu_model and kind_cost is None else 0.0
        wakeup, net_rng = self._wakeup, self._net_rng
        handling, rumor_handling = self._handling, self._rumor_handling
        count_rumors = rumor_handling is not None or kind_cost is not None  # whether a message's verdict matters
        per_node = wakeup is not None or self._service_s > 0.0 or handling is not None
        node_service_s = self._service_s
        rcvbuf = per_node and self._socket_buffer
        truesizes, xdp = self._truesize, self._xdp
        try:
            while heap and heap[0][0] <= end:
                when, _, kind, idx, item = pop(heap)
                self._now = when
                if kind == _DELIVER:
                    arrived += 1
                    fastpath = nodes[idx].fastpath
                    if fastpath is not None and nodes[idx].state is not _DOWN:
                        if fastpath.drops(item[0]):
                            continue
                        plane = nodes[idx].plane
                        if plane is not None:  # up or paused: a stopped process's plane runs on in the kernel
                            verdict = plane.judge(item[0], len(item) < 3 or item[2] in nodes[idx].core.config.secrets)
                            if verdict == "handled" or verdict == "accepted_no_targets":
                                # the kernel takes it: no wake-up, no core of the host's CPUs; its copies leave
                                # KERNEL_HEARTBEAT_S later, to the targets it drew
                                heapq.heappush(heap, (when + KERNEL_HEARTBEAT_S, next(self._seq), _KERNEL, idx,
                                                      plane.copy(item[0])))
                                continue
                            if verdict == "dropped_stale_or_dup":
                                continue
                if kind == _DELIVER and per_node:
                    node = nodes[idx]
                    if rcvbuf:
                        payload = len(item[0]) if wire else gwire.datagram_size(item[0])
                        size = truesizes.get(payload)
                        if size is None:
                            size = truesizes[payload] = skb_truesize(payload, xdp=xdp)
                        used = node.rcvbuf_used
                        if used + size > node.rcvbuf_bytes and node.rcvbuf_queue:  # full: the kernel drops it
                            node.rcvbuf_errors += 1
                            continue
                        node.rcvbuf_used = used + size
                        node.rcvbuf_queue.append(size)
                        node.rcvbuf_in += 1
                    if node.awake_at < when:  # idle: the process first waits to be scheduled
                        node.awake_at = when + (wakeup.sample(net_rng) if wakeup is not None else 0.0)
                    node.awake_at += node_service_s  # busy until this message is handled
                    heapq.heappush(heap, (node.awake_at, next(self._seq),
                                          _DELIVER_CPU if cpu_model else _PROCESS, idx, item))
                elif (kind == _DELIVER or kind == _DELIVER_CPU) and kind_cost is not None:
                    if self._cores_busy < self._cpu[0]:  # a core is free: it starts on it now
                        self._cores_busy += 1
                        heapq.heappush(heap, (when, next(self._seq), _PROCESS_CORE, idx, item))
                    else:
                        self._core_queue.append((idx, item))
                elif kind == _CORE_DONE:
                    if self._core_queue:
                        idx, item = self._core_queue.popleft()
                        heapq.heappush(heap, (when, next(self._seq), _PROCESS_CORE, idx, item))
                    else:
                        self._cores_busy -= 1
                elif (kind == _DELIVER or kind == _DELIVER_CPU) and cpu_model:
                    # the message waits for the first free core, then takes service_s of it
                    free = self._core_free
                    start = max(when, free[0])
                    heapq.heapreplace(free, start + service_s)
                    heapq.heappush(heap, (start + service_s, next(self._seq), _PROCESS, idx, item))
                elif kind == _DELIVER or kind == _PROCESS or kind == _PROCESS_CORE:
                    node = nodes[idx]
                    cost_model = None  # with costs by kind: what the core's verdict costs it (a stopped one nothing)
                    if rcvbuf:  # the process takes it out of its socket (every datagram here was charged)
                        node.rcvbuf_used -= node.rcvbuf_queue.popleft()
                        if not node.rcvbuf_queue:
                            node.rcvbuf_used = 0.0  # no float drift across millions of charges
                    state = node.state
                    if state is _UP:
                        # `_receive`, inlined: this is the simulator's innermost loop
                        delivered += 1
                        core = node.core
                        plane = node.plane
                        if plane is not None and type(item[0]) is gwire.Heartbeat:
                            # the node reads the kernel's take of that member back first
                            plane.sync_member(core, node.driver.record, item[0].origin)
                        stats = core.stats
                        rumors_before = stats["adopted_rumor"] if count_rumors else 0
                        heartbeats_before = stats["accepted_heartbeat"] if kind_cost is not None else 0
                        if wire:
                            core.receive(item[0], when, item[1])
                        elif len(item) > 2 and item[2] not in core.config.secrets:
                            core.stats["packets_in"] += 1
                            core.note_drop("bad_mac", f"from origin {item[0].origin:#010x}")
                        else:
                            core.stats["packets_in"] += 1
                            core.receive_message(item[0], when, item[1])
                        adopted = count_rumors and stats["adopted_rumor"] != rumors_before
                        if kind == _PROCESS_CORE:  # what the core takes costs more than what it drops
                            cost_model = (kind_cost.rumor if adopted else kind_cost.taken
                                          if stats["accepted_heartbeat"] != heartbeats_before else kind_cost.other)
                        if rumor_handling is not None and adopted:
                            h = rumor_handling.sample(net_rng)
                        else:
                            h = handling.sample(net_rng) if handling is not None else 0.0
                        if h:
                            sent_before = self._net["sent"]
                            self._send_delay = h
                            driver = node.driver
                            fastpath = driver.fastpath
                            if fastpath is not None:  # the real node writes the drop state when it is done
                                driver.fastpath = _Deferred()
                            try:
                                driver.drain(when)
                            finally:  # whatever the drain raised, the node keeps its real fast path
                                deferred = driver.fastpath
                                driver.fastpath = fastpath
                            if fastpath is not None:
                                accepted = deferred.accepted
                                if accepted:
                                    heapq.heappush(heap, (when + h, next(self._seq), _CALL, idx,
                                                          functools.partial(fastpath.accept, accepted)))
                            self._send_delay = 0.0
                            if self._net["sent"] != sent_before and node.awake_at < when + h:
                                node.awake_at = when + h  # busy handling it: later copies wait
                        else:
                            node.driver.drain(when)
                        if plane is not None and plane.changed(core):
                            if h:  # the node registers its new members when it is done handling
                                heapq.heappush(heap, (when + h, next(self._seq), _CALL, idx,
                                                      functools.partial(plane.reconcile, core, when + h)))
                            else:
                                plane.reconcile(core, when)
                    elif state is _PAUSED:
                        if len(node.queue) < node.config.buffer:
                            node.queue.append(item)
                        else:
                            queued_over += 1
                    else:
                        down += 1
                    if kind == _PROCESS_CORE:
                        cost = cost_model.sample(net_rng) if cost_model is not None else 0.0
                        heapq.heappush(heap, (when + cost, next(self._seq), _CORE_DONE, idx, None))
                elif kind == _KERNEL:
                    node = nodes[idx]
                    if node.state is not _DOWN:  # its copies go out (a paused process's plane runs on too); the
                        msg, targets = item      # node reads the take back later
                        node.plane.took(msg.origin, msg.seq, when)
                        if targets:
                            self._kernel_sending = True  # they carry the MACs the plane holds: no ARP
                            try:
                                self._route(idx, [Send(message=msg, targets=targets, encoder=None)])
                            finally:
                                self._kernel_sending = False
                    else:
                        down += 1  # killed since: its plane was removed with it
                elif kind == _TICK:
                    node = nodes[idx]
                    if item == node.token and node.state is _UP:
                        plane = node.plane
                        if plane is None:
                            self._schedule_tick(node, when + node.driver.timer_step(when))
                        else:  # as the node's timer: read the kernel's takes back, step, register the members
                            plane.sync(node.core, node.driver.record)
                            self._schedule_tick(node, when + node.driver.timer_step(when))
                            plane.dirty = True
                            plane.reconcile(node.core, when)
                else:
                    item()
        finally:
            net = self._net
            net["arrived"] += arrived
            net["delivered"] += delivered
            if queued_over:
                net["dropped_paused_overflow"] += queued_over
            if down:
                net["dropped_down"] += down
        self._now = end

    def run_for(self, dt_s: float) -> None:
        self.run_until(self.time_s + dt_s)

    # ---- observation ---------------------------------------------------------------------------------------

    @property
    def events(self) -> list[dict]:
        """Every record so far (with ``keep_events``), oldest first; the list is live, do not modify it."""
        return self._records

    def write_events(self, path: str | Path) -> None:
        """Write the kept records to PATH as JSON lines, byte for byte as they were streamed."""
        with open(path, "w", encoding="utf-8") as f:
            for rec in self._records:
                f.write(json.dumps(rec) + "\n")

    @property
    def node_names(self) -> list[str]:
        """Every node ever added, in the order added."""
        return [n.name for n in self._nodes]

    def node_state(self, name: str) -> str:
        """``"up"``, ``"paused"`` or ``"down"``."""
        return self._node(name).state

    def live_nodes(self) -> list[str]:
        """The nodes whose process exists (up or paused), in the order added."""
        return [n.name for n in self._nodes if n.state is not _DOWN]

    def identity(self, name: str) -> Identity:
        return self._node(name).identity

    def core(self, name: str) -> Core:
        """The running core of node NAME, for inspection (driving it directly bypasses the simulator)."""
        return self._node(name, _UP, _PAUSED).core

    def views(self) -> dict[str, list[str]]:
        """Each live node's member list (itself excluded) as node names, in the order nodes were added."""
        order = {n.name: n.index for n in self._nodes}
        out = {}
        for n in self._nodes:
            if n.state is _DOWN:
                continue
            names = [self._name_by_id.get(i, f"{i:#010x}") for i in n.core.live_ids()]
            out[n.name] = sorted(names, key=lambda x: order.get(x, len(order)))
        return out

    def metadata(self) -> dict[str, tuple[Version, bytes]]:
        """Each live node's metadata version and value."""
        return {n.name: n.core.read() for n in self._nodes if n.state is not _DOWN}

    def membership_converged(self) -> bool:
        """True when every live node lists exactly the other live nodes."""
        live = [n for n in self._nodes if n.state is not _DOWN]
        everyone = {n.identity.node_id for n in live}  # ids, not sorted names: this runs every step of a recovery
        return all(n.core.live_ids() == everyone - {n.identity.node_id} for n in live)

    # ---- internals -----------------------------------------------------------------------------------------

    def _node(self, name: str, *states: str) -> _SimNode:
        node = self._by_name.get(name)
        if node is None:
            raise SimError(f"no node named {name!r}")
        if states and node.state not in states:
            raise SimError(f"node {name!r} is {node.state}; this needs it {' or '.join(states)}")
        return node

    def _endpoints(self, seeds: Iterable[str | tuple[str, int]]) -> tuple[tuple[str, int], ...]:
        out = []
        for s in seeds:
            if isinstance(s, str):
                out.append(self._node(s).identity.endpoint)
            elif isinstance(s, tuple) and len(s) == 2:
                out.append((str(s[0]), int(s[1])))
            else:
                raise SimError(f"seeds: expected a node name or an (addr, port) pair, got {s!r}")
        return tuple(out)

    def _allocate(self, name: str | None, config: NodeConfig | None, private: bytes) -> _SimNode:
        """Reserve a name and an endpoint; the node does not run until `_start`."""
        index = len(self._nodes)
        name = f"n{index}" if name is None else name
        if not isinstance(name, str) or not name:
            raise SimError(f"name: must be a non-empty string, got {name!r}")
        if name in self._by_name:
            raise SimError(f"name: a node named {name!r} exists")
        template = config if config is not None else self.config
        if template.state_dir is not None:
            raise SimError("state_dir: every simulated node would share that directory; use durable=True (durable "
                           "state in memory, one store per node)")
        while True:  # next free 10.x.y.z whose node id collides with no other node
            self._next_addr += 1
            a = self._next_addr
            if a & 0xFF in (0, 255):
                continue
            addr = f"10.{(a >> 16) & 0xFF}.{(a >> 8) & 0xFF}.{a & 0xFF}"
            nid = wire_node_id(addr, template.listen_port)
            if nid not in self._name_by_id:
                break
        node_config = dataclasses.replace(template, listen_addr=addr)
        if node_config.secrets != self.config.secrets:  # a node on another key ring: messages carry their keys
            self._keyed = not self.wire
        try:
            identity = Identity(name=name, addr=addr, port=node_config.listen_port, private=private)
        except ValueError as e:
            raise SimError(f"node {name!r}: {e}") from None
        node = _SimNode(index, name, identity, node_config)
        if self._durable:
            node.store = MemoryStore(cluster=gwire.cluster_id(node_config.cluster), path=f"memory:{name}")
        self._nodes.append(node)
        self._by_name[name] = node
        self._by_endpoint[identity.endpoint] = index
        self._name_by_id[nid] = name
        self._side.append(0)
        return node

    def _start_pending(self, node: _SimNode, seeds: tuple[tuple[str, int], ...]) -> None:
        if node.pending:
            self._start(node, seeds)

    def _new_core(self, node: _SimNode, now: float, state: DurableState | None = None) -> Core:
        rng = random.Random(f"{self.seed}/{node.name}/{node.incarnation}")
        return create_core(node.config, node.identity, rng, now=now, record_refreshes=self._record_refreshes,
                           state=state)

    def _start(self, node: _SimNode, seeds: tuple[tuple[str, int], ...], core: Core | None = None,
               listed: int = 0, timers_at: float | None = None) -> None:
        """What `Node.join` does: a fresh core, the seeds, and the timer's first tick right away. A warm start
        passes its CORE (made for TIMERS_AT, already listing LISTED members): the node is up now, and its timer
        (the core's, the driver's ``stats``) starts at TIMERS_AT."""
        now = self._now
        timers_at = now if timers_at is None else timers_at
        node.pending = False
        node.core = core if core is not None else self._new_core(node, now)
        node.state, node.queue, node.seeds = _UP, [], seeds
        # a node resets its fast-path state at start; the heartbeat plane sits beside XDP (heartbeat protocol, UDP)
        node.fastpath = _FastPath() if self._xdp else None
        node.plane = None
        if node.fastpath is not None and node.config.kernel_heartbeats and node.config.membership == "heartbeat":
            node.plane = PlaneModel(node.identity.node_id, node.config.fanout, node.config.max_packet_bytes,
                                    node.neigh, random.Random(f"{self.seed}/{node.name}/{node.incarnation}/plane"),
                                    node.fastpath)
            self._planes = True
        plane = node.plane
        sink = plane if plane is not None else node.fastpath  # the plane hands what the core accepted on to XDP
        node.driver = CoreDriver(node.core, name=node.name, send=functools.partial(self._route, node.index),
                                 write=self._write, now=timers_at, fastpath=sink,
                                 record_stats=self._record_stats, store=node.store)
        # a real node also writes its pid; a simulated process has none
        started = {"kind": "started", "node_id": node.identity.node_id, "addr": node.identity.addr,
                   "port": node.identity.port}
        if core is not None:
            started["warm_members"] = listed
        node.driver.write_record(started, now)
        for endpoint in seeds:
            node.core.set(self._seed_identity(endpoint), now)
        node.driver.drain(now)
        if plane is not None:
            plane.reconcile(node.core, now)
        node.token += 1
        self._schedule_tick(node, timers_at)

    def _seed_identity(self, endpoint: tuple[str, int]) -> Identity:
        """What `Node.join` passes to `set` for a seed: an anonymous identity; one shared object per endpoint
        (identities are immutable, and validating a fresh one per seed per node is most of an all-knowing
        cluster's start-up time)."""
        ident = self._seed_identities.get(endpoint)
        if ident is None:
            try:
                ident = self._seed_identities[endpoint] = Identity(name="", addr=endpoint[0], port=endpoint[1])
            except ValueError as e:
                raise SimError(f"seed {endpoint}: {e}") from None
        return ident

    def _call_at(self, when: float, fn) -> None:
        heapq.heappush(self._heap, (when, next(self._seq), _CALL, -1, fn))

    def _schedule_tick(self, node: _SimNode, when: float) -> None:
        heapq.heappush(self._heap, (when, next(self._seq), _TICK, node.index, node.token))

    def _receive(self, core: Core, item, now: float) -> None:
        """ITEM is (datagram or message, the sender's "addr:port"[, the key a message was signed with])."""
        if self.wire:
            core.receive(item[0], now, item[1])
        else:
            core.stats["packets_in"] += 1  # what `receive` counts before decoding, so stats match a real node
            if len(item) > 2 and item[2] not in core.config.secrets:
                core.note_drop("bad_mac", f"from origin {item[0].origin:#010x}")
                return
            core.receive_message(item[0], now, item[1])

    def _route(self, src: int, sends: list) -> None:
        now, heap, push, seq = self._now, self._heap, heapq.heappush, self._seq
        by_endpoint, side, src_side = self._by_endpoint, self._side, self._side[src]
        rng, default, links, wire = self._net_rng, self._latency, self._links, self.wire
        loss, delay, nodes = self._any_loss, self._any_delay, self._nodes
        net = self._net
        sent = unknown = partitioned = lost = 0
        src_ep = nodes[src].src
        learn = self._planes and not self._kernel_sending
        if learn:
            src_known, src_addr = nodes[src].neigh.known, nodes[src].identity.addr
        key = nodes[src].core.config.secrets[0] if self._keyed else None  # the kernel's copies: the same ring
        for send in sends:
            item = (send.payload if wire else send.message, src_ep) if key is None else (send.message, src_ep, key)
            for endpoint in send.targets:
                sent += 1
                dst = by_endpoint.get(endpoint)
                if dst is None:
                    unknown += 1
                    continue
                if learn:  # ARP, which no fault drops: the sender learns the target's MAC and the target the sender's
                    src_known.add(endpoint[0])
                    nodes[dst].neigh.known.add(src_addr)
                if side[dst] != src_side:
                    partitioned += 1
                    continue
                if loss:
                    keep = (1.0 - self._loss) * (1.0 - nodes[src].loss) * (1.0 - nodes[dst].loss)
                    if keep < 1.0 and rng.random() >= keep:
                        lost += 1
                        continue
                model = links.get((src, dst), default) if links else default
                latency = model.sample(rng)
                if delay and nodes[dst].delay is not None:
                    latency += nodes[dst].delay.sample(rng)
                push(heap, (now + self._send_delay + latency, next(seq), _DELIVER, dst, item))
        net["sent"] += sent
        if unknown:
            net["dropped_unknown"] += unknown
        if partitioned:
            net["dropped_partition"] += partitioned
        if lost:
            net["dropped_loss"] += lost

    def _write(self, rec: dict) -> None:
        if self._kinds is not None and rec["kind"] not in self._kinds:
            return
        if self._keep:
            self._records.append(rec)
        if self._out is not None:
            self._out.write(json.dumps(rec) + "\n")


def first_times(events: Iterable[dict], kind: str, **match) -> dict[str, float]:
    """The earliest ``t`` at which each node recorded an event of KIND whose fields equal MATCH."""
    out: dict[str, float] = {}
    for rec in events:
        if rec["kind"] != kind or any(rec.get(k) != v for k, v in match.items()):
            continue
        if rec["node"] not in out or rec["t"] < out[rec["node"]]:
            out[rec["node"]] = rec["t"]
    return out


