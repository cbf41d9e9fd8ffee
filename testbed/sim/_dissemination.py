"""Dissemination-only simulation of ONE rumor over fixed membership views, vectorised with numpy.

Where the full engine (`Simulation`) runs every node's real protocol core, this module models only how one rumor
spreads, for 10^5 .. 10^6 nodes in seconds. Membership is fixed: every node knows every other node, or each node
knows a fixed random view of ``view_size`` others. Variants:

``"protocol"`` -- the project's rule, as `GossipCore` implements it. The origin sends the rumor to ``fanout``
    peers with the infected set {origin} + those targets. A node that receives it for the first time accepts it
    and forwards it once, right away, to up to ``fanout`` peers of its view that are not in the message's infected
    set; the copies carry that set plus the chosen targets. Later copies are dropped as duplicates. The rumor ends
    where a holder finds no uninfected peer.

    The infected set is represented exactly, without storing one set per message: a message sent by node x
    carries {origin} united with the target sets chosen by x and by every ancestor of x on the path the rumor took
    to reach x (its first-arrival path), because each hop adds exactly its own targets to the set it received.
    So each node stores its parent and its own ``fanout`` targets (O(n * fanout) memory), and choosing targets
    walks the ancestor chain: O(hops * fanout) per node, with hops ~ log_fanout(n). The set stays small
    (1 + fanout * hops ids), which is also why the real wire keeps it an exact list rather than a Bloom filter:
    a 1400-byte datagram holds ~330 ids, fewer by a quarter of the metadata value's size (``max_hops`` in the
    result lets you check; past that the real set becomes a Bloom filter whose false positives this model does
    not reproduce). What else the model leaves out: views changing while the rumor spreads and node failures.
    `compare_with_engine` measures the difference against the real cores (at n = 2000 the coverage curves agree
    within 0.2 ms on 8 .. 16 ms).

    The rule alone informs ~94 % of the nodes (fanout 3) and never all of them; the real protocol repairs the rest
    by anti-entropy, which ``anti_entropy_s`` adds (see below). Without it, t100 of this variant is undefined.

Anti-entropy (``anti_entropy_s``, ``"protocol"`` only) -- the swap the real node makes every cycle: each node, at
    its own phase (uniform in the cycle, as independently started nodes have), sends a swap request carrying its
    version to one uniformly random peer of its view. A peer holding an older version adopts the requester's
    (push); a peer holding a newer one answers with it, and the requester adopts it one more latency later
    (pull). Requests and answers take the same latency model and loss as the rumor. A node that adopts by a swap
    does not start forwarding the rumor itself (as in `GossipCore`). Cycles run until every node holds the rumor
    and no message still in flight could inform one earlier, or ``max_cycles`` (then t100 stays undefined).

    The swaps are exact, vectorised per cycle: a cycle's requests (and those of earlier cycles still in flight)
    are applied until nothing changes -- an exchange only ever makes a node informed earlier, so this fixed point
    is the causal order, however a swap chain runs through the cycle. The one approximation: the rumor is
    simulated first, so a node that a swap informs before the rumor's copy reaches it still forwards that copy,
    where the real node would drop it as not newer. The rumor lasts a few latencies and a cycle is ~1000 of them,
    so this is rare: 0.04-0.07 % of the nodes at 1,000-100,000 nodes, fanout 3, 1 ms and a 1 s cycle. Against
    300 real cores swapping every second, the model's mean t100 is within 0.01 s of theirs (0.90 s).

``"infect_and_die"`` -- each node forwards once, on first receipt, to ``fanout`` distinct random peers of its view,
    knowing nothing about who already has the rumor. Reaches a fraction pi = 1 - exp(-fanout * pi) of the nodes.

``"push"`` -- round-based push: in every round each informed node pushes to ``fanout`` distinct random peers of its
    view; latency is not used (time is the round number). With fanout 1 it informs everyone in
    log2(n) + ln(n) + O(1) rounds (Pittel).

Event-driven variants ("protocol", "infect_and_die") are exact discrete-event simulations processed in time
windows as wide as the latency model's minimum ``min_s`` (the lookahead): a message sent in one window cannot
arrive in the same window, so every window's arrivals are known when it starts, and each receiver accepts its
earliest copy (ties broken uniformly at random). When the minimum latency is 0 (an exponential without floor) the
window is mean/100 and a copy can be accepted up to one window after an earlier-timestamped copy that was
generated inside the same window: an ordering error bounded by ``window_s``.

This module must never import the protocol core or touch the full engine: it is a model, checked against the
engine by `compare_with_engine`, not a driver.
"""

from __future__ import annotations

import heapq
import math
import time
from dataclasses import dataclass

import numpy as np

from ._errors import SimError
from ._latency import DEFAULT_LATENCY, LatencyModel

VARIANTS = ("protocol", "infect_and_die", "push")
_SMALL_POOL = 16  # pools of at most this many + 4 * fanout peers are shuffled whole instead of sampled


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class DisseminationResult:
    """One rumor's spread. ``informed_at[i]`` is when node i first received it (seconds after the origin
    published; rounds for ``"push"``), ``inf`` if never."""

    variant: str
    n: int
    fanout: int
    loss: float
    seed: int
    view_size: int | None
    origin: int
    informed_at: np.ndarray
    messages_sent: int
    messages_lost: int
    duplicates: int
    max_hops: int
    steps: int  # windows processed (event-driven variants) or rounds run ("push")
    wall_s: float
    anti_entropy_s: float | None = None  # swap cycle, None without anti-entropy
    cycles: int = 0  # anti-entropy cycles run
    swap_requests: int = 0  # requests sent until the last node held the rumor (all of them if it never did)
    swap_responses: int = 0  # answers that carried the rumor to a requester holding the older version
    repaired: int = 0  # nodes that got the rumor first by a swap (pushed to them or pulled by them)

    @property
    def informed(self) -> int:
        return int(np.isfinite(self.informed_at).sum())

    @property
    def final_fraction(self) -> float:
        return self.informed / self.n

    def time_to(self, fraction: float) -> float | None:
        """When at least FRACTION of all nodes held the rumor; None if that never happened."""
        need = max(1, math.ceil(fraction * self.n - 1e-9))
        if need > self.informed:
            return None
        return float(np.partition(self.informed_at, need - 1)[need - 1])

    @property
    def t50(self) -> float | None:
        return self.time_to(0.5)

    @property
    def t90(self) -> float | None:
        return self.time_to(0.9)

    @property
    def t100(self) -> float | None:
        return self.time_to(1.0)

    def coverage(self, points: int | None = 200) -> tuple[np.ndarray, np.ndarray]:
        """The coverage curve: times (or rounds) and the fraction of all nodes informed by then.

        With POINTS, at most that many points, evenly spaced in fraction; None gives one point per node (or per
        round for ``"push"``).
        """
        times = np.sort(self.informed_at[np.isfinite(self.informed_at)])
        if self.variant == "push":
            rounds = np.arange(self.steps + 1, dtype=float)
            return rounds, np.searchsorted(times, rounds, side="right") / self.n
        fractions = np.arange(1, times.size + 1) / self.n
        if points is not None and times.size > points:
            idx = np.unique(np.linspace(0, times.size - 1, points).round().astype(np.int64))
            return times[idx], fractions[idx]
        return times, fractions

    def summary(self) -> dict:
        """The figures of this run as a JSON-ready dict."""
        return {"variant": self.variant, "n": self.n, "fanout": self.fanout, "loss": self.loss, "seed": self.seed,
                "view_size": self.view_size, "informed": self.informed, "final_fraction": self.final_fraction,
                "t50": self.t50, "t90": self.t90, "t100": self.t100, "messages_sent": self.messages_sent,
                "messages_lost": self.messages_lost, "duplicates": self.duplicates, "max_hops": self.max_hops,
                "steps": self.steps, "anti_entropy_s": self.anti_entropy_s, "cycles": self.cycles,
                "swap_requests": self.swap_requests, "swap_responses": self.swap_responses,
                "repaired": self.repaired, "wall_s": self.wall_s}


def disseminate(n: int, variant: str = "protocol", fanout: int = 3, latency: LatencyModel = DEFAULT_LATENCY,
                loss: float = 0.0, seed: int = 0, *, view_size: int | None = None, origin: int = 0,
                window_s: float | None = None, max_rounds: int | None = None, anti_entropy_s: float | None = None,
                max_cycles: int = 1000) -> DisseminationResult:
    """Spread one rumor from node ORIGIN over N nodes and return its coverage, times and message counts.

    Arguments:
        variant: ``"protocol"``, ``"infect_and_die"`` or ``"push"`` (see the module docstring).
        fanout: targets per forward (per round for ``"push"``).
        latency: one-way latency model of every message (not used by ``"push"``).
        loss: probability that any one message is lost.
        seed: seeds the numpy generator that makes every random choice (same seed, same result).
        view_size: each node knows this many random other nodes (fixed); None means everyone knows everyone.
        window_s: override the event window (default: the latency model's minimum, see the module docstring).
        max_rounds: ``"push"`` only: give up after this many rounds (default: 20 * (log2 n + ln n) + 100).
        anti_entropy_s: ``"protocol"`` only: every node swaps with one random peer every this many seconds after
            the rumor (see the module docstring); None or 0: no anti-entropy.
        max_cycles: with anti-entropy, give up after this many cycles (only heavy loss needs more than ~10).
    """
    if variant not in VARIANTS:
        raise SimError(f"variant: must be one of {', '.join(VARIANTS)}, got {variant!r}")
    if not isinstance(n, int) or n < 2:
        raise SimError(f"n: must be an integer >= 2, got {n!r}")
    if not isinstance(fanout, int) or fanout < 1:
        raise SimError(f"fanout: must be an integer >= 1, got {fanout!r}")
    if isinstance(loss, bool) or not isinstance(loss, (int, float)) or not 0.0 <= loss <= 1.0:
        raise SimError(f"loss: must be a probability in [0, 1], got {loss!r}")
    if view_size is not None and (not isinstance(view_size, int) or view_size < 1):
        raise SimError(f"view_size: must be an integer >= 1 or None, got {view_size!r}")
    if not isinstance(origin, int) or not 0 <= origin < n:
        raise SimError(f"origin: must be a node index in [0, {n}), got {origin!r}")
    ae = anti_entropy_s
    if ae is not None and (isinstance(ae, bool) or not isinstance(ae, (int, float)) or not math.isfinite(ae)
                           or ae < 0):
        raise SimError(f"anti_entropy_s: must be a number of seconds >= 0 or None, got {anti_entropy_s!r}")
    anti_entropy_s = float(anti_entropy_s) if anti_entropy_s else None
    if anti_entropy_s is not None and variant != "protocol":
        raise SimError(f"anti_entropy_s: only the protocol variant repairs by anti-entropy, not {variant!r}")
    if isinstance(max_cycles, bool) or not isinstance(max_cycles, int) or max_cycles < 1:
        raise SimError(f"max_cycles: must be an integer >= 1, got {max_cycles!r}")
    if view_size is not None and view_size >= n - 1:
        view_size = None  # a view of everyone else is the full view
    started = time.perf_counter()
    gen = np.random.default_rng(seed)
    views = _random_views(gen, n, view_size) if view_size is not None else None
    spread = _Spread(gen=gen, n=n, fanout=fanout, views=views, origin=origin)
    if variant == "push":
        steps = spread.push_rounds(loss, max_rounds if max_rounds is not None else
                                   int(20 * (math.log2(n) + math.log(n))) + 100)
    else:
        steps = spread.events(variant == "protocol", latency, loss, window_s)
    swaps = _AntiEntropy(spread, anti_entropy_s, latency, loss).run(max_cycles) if anti_entropy_s else None
    return DisseminationResult(variant=variant, n=n, fanout=fanout, loss=float(loss), seed=seed,
                               view_size=view_size, origin=origin, informed_at=spread.informed_at,
                               messages_sent=spread.sent, messages_lost=spread.lost, duplicates=spread.duplicates,
                               max_hops=spread.max_hops, steps=steps, wall_s=time.perf_counter() - started,
                               anti_entropy_s=anti_entropy_s, **(swaps or {}))


def _random_views(gen: np.random.Generator, n: int, k: int) -> np.ndarray:
    """Row i: K distinct nodes other than i, uniformly at random."""
    views = gen.integers(0, n - 1, (n, k), dtype=np.int64)
    views += views >= np.arange(n)[:, None]  # skip self
    views = views.astype(np.int32)
    while True:
        views.sort(axis=1)
        dup = np.zeros(views.shape, dtype=bool)
        dup[:, 1:] = views[:, 1:] == views[:, :-1]
        rows, cols = np.nonzero(dup)
        if rows.size == 0:
            return views
        redraw = gen.integers(0, n - 1, rows.size, dtype=np.int64)
        redraw += redraw >= rows
        views[rows, cols] = redraw


class _Spread:
    """The state of one rumor: who holds it since when, from whom, and whom each holder sent it to."""

    def __init__(self, *, gen: np.random.Generator, n: int, fanout: int, views: np.ndarray | None,
                 origin: int) -> None:
        self.gen, self.n, self.fanout, self.views, self.origin = gen, n, fanout, views, origin
        self.pool = n - 1 if views is None else views.shape[1]
        self.informed_at = np.full(n, np.inf)
        self.parent = np.full(n, -1, dtype=np.int32)
        self.depth = np.zeros(n, dtype=np.int32)
        self.targets = np.full((n, fanout), -1, dtype=np.int32)
        self.sent = self.lost = self.duplicates = self.max_hops = 0

    # ---- choosing targets ----------------------------------------------------------------------------------

    def pick(self, x: np.ndarray, walk: bool) -> np.ndarray:
        """For each node in X: up to fanout distinct random peers of its view, excluding itself, the origin and
        (with WALK) every node in the infected set it received. Returns (len(x), fanout), -1 where none."""
        f = self.fanout
        out = np.full((x.size, f), -1, dtype=np.int32)
        filled = np.zeros(x.size, dtype=np.int64)
        pending = np.arange(x.size)
        whole = self.pool <= _SMALL_POOL + 4 * f
        for attempt in range(4):
            if pending.size == 0:
                break
            last = whole or attempt == 3
            xs = x[pending]
            cands = self._shuffled_pool(xs) if last else self._draw(xs, 2 * f + 4)
            bad = (cands == xs[:, None]) | (cands == self.origin)
            bad |= (cands[:, :, None] == out[pending][:, None, :]).any(2)  # chosen in an earlier attempt
            if not last:
                for j in range(1, cands.shape[1]):  # a repeat of an earlier candidate of the same row
                    bad[:, j] |= (cands[:, :j] == cands[:, j:j + 1]).any(1)
            if walk:
                self._exclude_infected(xs, cands, bad)
            valid = ~bad
            rank = np.cumsum(valid, axis=1)
            take = valid & (rank <= (f - filled[pending])[:, None])
            r, c = np.nonzero(take)
            out[pending[r], filled[pending][r] + rank[r, c] - 1] = cands[r, c]
            filled[pending] += take.sum(1)
            if last:
                break
            pending = pending[filled[pending] < f]
        return out

    def _draw(self, xs: np.ndarray, m: int) -> np.ndarray:
        if self.views is None:
            return self.gen.integers(0, self.n, (xs.size, m), dtype=np.int32)
        return self.views[xs[:, None], self.gen.integers(0, self.pool, (xs.size, m))]

    def _shuffled_pool(self, xs: np.ndarray) -> np.ndarray:
        """Every peer of each row's pool in random order (the last resort, and the way for tiny pools)."""
        if self.views is None:
            out = np.empty((xs.size, self.n), dtype=np.int32)
            for lo in range(0, xs.size, max(1, 2_000_000 // self.n)):  # bounded memory when n is large
                hi = min(xs.size, lo + max(1, 2_000_000 // self.n))
                out[lo:hi] = np.argsort(self.gen.random((hi - lo, self.n)), axis=1)
            return out
        order = np.argsort(self.gen.random((xs.size, self.pool)), axis=1)
        return self.views[xs[:, None], order]

    def _exclude_infected(self, xs: np.ndarray, cands: np.ndarray, bad: np.ndarray) -> None:
        """Mark candidates in the infected set each X received: its ancestors' target sets (see the module
        docstring; the origin and X itself are excluded by the caller)."""
        rows = np.arange(xs.size)
        a = self.parent[xs]
        while True:
            live = a >= 0
            if not live.all():
                rows, a = rows[live], a[live]
            if rows.size == 0:
                return
            hit = (cands[rows][:, :, None] == self.targets[a][:, None, :]).any(2)
            bad[rows] |= hit
            a = self.parent[a]

    # ---- round-based push ------------------------------------------------------------------------------------

    def push_rounds(self, loss: float, max_rounds: int) -> int:
        gen, n, f = self.gen, self.n, self.fanout
        informed = np.zeros(n, dtype=bool)
        informed[self.origin] = True
        self.informed_at[self.origin] = 0
        count, rounds = 1, 0
        while count < n and rounds < max_rounds:
            rounds += 1
            senders = np.flatnonzero(informed)
            if f == 1:
                if self.views is None:
                    tg = gen.integers(0, n - 1, senders.size)
                    tg += tg >= senders
                else:
                    tg = self.views[senders, gen.integers(0, self.pool, senders.size)]
            else:
                tg = self.pick(senders, walk=False).ravel()
                tg = tg[tg >= 0]
            self.sent += tg.size
            if loss > 0:
                kept = gen.random(tg.size) >= loss
                self.lost += int(tg.size - kept.sum())
                tg = tg[kept]
            new = np.unique(tg[~informed[tg]])
            self.duplicates += int(tg.size - new.size)
            informed[new] = True
            self.informed_at[new] = rounds
            count += new.size
        self.max_hops = rounds
        return rounds

    # ---- event-driven variants -------------------------------------------------------------------------------

    def events(self, walk: bool, latency: LatencyModel, loss: float, window_s: float | None) -> int:
        gen = self.gen
        exact = window_s is None and latency.min_s > 0
        width = window_s if window_s is not None else latency.min_s
        if not width > 0:
            width = latency.mean_s / 100 if latency.mean_s > 0 else 1.0
        buckets: dict[int, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}
        pending: list[int] = []

        def send(senders: np.ndarray, at: np.ndarray, window: int) -> None:
            tg = self.pick(senders, walk)
            self.targets[senders] = tg
            rows, cols = np.nonzero(tg >= 0)
            src, dst = senders[rows], tg[rows, cols]
            self.sent += dst.size
            if loss > 0:
                kept = gen.random(dst.size) >= loss
                self.lost += int(dst.size - kept.sum())
                src, dst, rows = src[kept], dst[kept], rows[kept]
            if dst.size == 0:
                return
            arrive = at[rows] + latency.sample_array(gen, dst.size)
            win = np.floor(arrive / width).astype(np.int64)
            np.maximum(win, window + 1 if exact else window, out=win)  # causality, whatever the rounding
            order = np.argsort(win, kind="stable")
            win, arrive, src, dst = win[order], arrive[order], src[order], dst[order]
            keys, starts = np.unique(win, return_index=True)
            bounds = list(starts[1:]) + [win.size]
            for key, lo, hi in zip(keys.tolist(), starts.tolist(), bounds):
                if key not in buckets:
                    buckets[key] = []
                    heapq.heappush(pending, key)
                buckets[key].append((arrive[lo:hi], dst[lo:hi], src[lo:hi]))

        origin = np.array([self.origin], dtype=np.int32)
        self.informed_at[self.origin] = 0.0
        send(origin, np.zeros(1), 0)
        steps = 0
        while pending:
            window = heapq.heappop(pending)
            chunks = buckets.pop(window)
            steps += 1
            arrive = np.concatenate([c[0] for c in chunks])
            dst = np.concatenate([c[1] for c in chunks])
            src = np.concatenate([c[2] for c in chunks])
            fresh = ~np.isfinite(self.informed_at[dst])
            arrive, dst, src = arrive[fresh], dst[fresh], src[fresh]
            order = np.lexsort((gen.random(arrive.size), arrive))  # earliest first, ties at random
            dst_sorted = dst[order]
            new, first = np.unique(dst_sorted, return_index=True)
            self.duplicates += int(fresh.size - new.size)
            pick = order[first]
            at = arrive[pick]
            self.informed_at[new] = at
            self.parent[new] = src[pick]
            self.depth[new] = self.depth[src[pick]] + 1
            if new.size:
                self.max_hops = max(self.max_hops, int(self.depth[new].max()))
                send(new.astype(np.int32), at, window)
        return steps


class _Swaps:
    """Swap exchanges, one per entry: requester ``i`` sends at ``s`` to peer ``p``; the request arrives at ``a``,
    an answer would arrive back at ``b``; ``ok_req`` / ``ok_resp``: the request / the answer is not lost."""

    __slots__ = ("i", "p", "s", "a", "b", "ok_req", "ok_resp")

    def __init__(self, i, p, s, a, b, ok_req, ok_resp) -> None:
        self.i, self.p, self.s, self.a, self.b, self.ok_req, self.ok_resp = i, p, s, a, b, ok_req, ok_resp

    def __len__(self) -> int:
        return self.i.size

    def take(self, mask: np.ndarray) -> "_Swaps":
        return _Swaps(*(getattr(self, k)[mask] for k in self.__slots__))

    def join(self, other: "_Swaps") -> "_Swaps":
        return _Swaps(*(np.concatenate([getattr(self, k), getattr(other, k)]) for k in self.__slots__))


class _AntiEntropy:
    """Push-pull anti-entropy after the rumor, one cycle at a time (see the module docstring).

    It lowers ``spread.informed_at`` in place. Only exchanges that can still matter are kept: one between two
    nodes that both hold the rumor by then changes nothing now and never will (informed times only decrease).
    """

    def __init__(self, spread: _Spread, cycle_s: float, latency: LatencyModel, loss: float) -> None:
        self.spread, self.cycle_s, self.latency, self.loss = spread, cycle_s, latency, loss
        self.at = spread.informed_at
        self.phase = spread.gen.random(spread.n) * cycle_s
        self.responses = 0

    def run(self, max_cycles: int) -> dict:
        rumor_at = self.at.copy()
        none_i, none_t, none_ok = np.empty(0, dtype=np.int64), np.empty(0), np.empty(0, dtype=bool)
        in_flight = _Swaps(none_i, none_i, none_t, none_t, none_t, none_ok, none_ok)
        cycles = 0
        while cycles < max_cycles:
            swaps = in_flight.join(self._cycle_swaps(cycles))
            cycles += 1
            self._settle(swaps)
            end = cycles * self.cycle_s  # later cycles' requests are all sent after this
            done = swaps.a < end
            self._count(swaps.take(done))
            in_flight = swaps.take(~done)
            if np.isfinite(self.at).all() and self.at.max() <= end:
                break
        self._count(in_flight)
        return {"cycles": cycles, "swap_requests": self._requests_until(cycles),
                "swap_responses": self.responses, "repaired": int((self.at < rumor_at).sum())}

    def _cycle_swaps(self, k: int) -> _Swaps:
        """Cycle K's requests, one per node, minus those that can no longer change anything."""
        sp, n = self.spread, self.spread.n
        gen, nodes = sp.gen, np.arange(n)
        if sp.views is None:
            p = gen.integers(0, n - 1, n)
            p += p >= nodes
        else:
            p = sp.views[nodes, gen.integers(0, sp.pool, n)].astype(np.int64)
        s = self.phase + k * self.cycle_s
        a = s + self.latency.sample_array(gen, n)
        b = a + self.latency.sample_array(gen, n)
        if self.loss > 0:
            ok_req, ok_resp = gen.random(n) >= self.loss, gen.random(n) >= self.loss
        else:
            ok_req = ok_resp = np.ones(n, dtype=bool)
        idle = ~ok_req | ((self.at <= s) & (self.at[p] <= a))
        return _Swaps(nodes, p, s, a, b, ok_req, ok_resp).take(~idle)

    def _settle(self, w: _Swaps) -> None:
        """Apply the exchanges until nothing changes: a push informs the peer when the request arrives, a pull
        informs the requester when the answer arrives. Each pass extends every swap chain by one exchange."""
        at = self.at
        while True:
            holds_i, holds_p = at[w.i] <= w.s, at[w.p] <= w.a
            push = w.ok_req & holds_i & ~holds_p
            pull = w.ok_req & w.ok_resp & ~holds_i & holds_p & (w.b < at[w.i])
            if not push.any() and not pull.any():
                return
            np.minimum.at(at, w.p[push], w.a[push])
            np.minimum.at(at, w.i[pull], w.b[pull])

    def _count(self, w: _Swaps) -> None:
        """Answers sent by the exchanges W, now final: the peer held the rumor and the requester did not."""
        self.responses += int((w.ok_req & (self.at[w.i] > w.s) & (self.at[w.p] <= w.a)).sum())

    def _requests_until(self, cycles: int) -> int:
        """Requests sent until the last node got the rumor, or in all CYCLES if one never did."""
        last = self.at.max()
        if not np.isfinite(last):
            return cycles * self.spread.n
        sent = np.floor((last - self.phase) / self.cycle_s) + 1
        return int(np.clip(sent, 0, cycles).sum())
