"""The "delay" fault: every UDP packet arriving at a set of hosts is held for a while before the host sees it.

Two mechanisms, the same semantics (a delay of ``ms``, drawn uniformly from ``[ms - jitter_ms, ms + jitter_ms]``
and never below zero, per packet, on the host's ingress):

- ``netem``, when the kernel has it: a netem qdisc on the root-side end of each host's veth. That end's egress is
  the host's ingress. It delays every packet, not only UDP.
- ``nfqueue`` otherwise (kernels without netem, fq or etf): inside each host's namespace one iptables rule sends
  the UDP packets arriving on ``eth0`` to an NFQUEUE, and a small handler process bound to that queue
  (``python -m testbed.net.delay handler ...``) gives each packet its ACCEPT verdict once its delay has passed.
  ``--queue-bypass`` lets packets through untouched whenever no handler is bound, so a dead handler never
  blackholes a host.

The handler keeps held packets in a heap ordered by due time and never sleeps on one packet: a burst of N packets
leaves together about ``ms`` later, not N x ``ms``. It holds at most ``max_held`` packets; beyond that a packet is
accepted at once and counted. It is driven through its stdin (one JSON object per line: a new delay; end of file:
let the held packets go when due, then exit) and answers on stdout (one JSON object per line). It exits when its
parent dies (stdin closes, and the parent pid changes) and on SIGTERM/SIGINT, accepting what it still holds first.

`Delay` owns all of it: leaving the ``with`` block removes the rules and stops the handlers (or removes the
qdiscs) in ``finally``. Handlers carry the run id in their environment, so `_cleanup` finds them after a crash;
the rules live inside the run's namespaces and go with them.

This module never touches hosts it was not given, and the handler never drops a packet nor changes one.
"""

from __future__ import annotations

import argparse
import functools
import heapq
import json
import math
import os
import random
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, Literal, Protocol, Self

from . import shell as _shell
from .topology import NODE_IFNAME, PREFIX, check_run_id
from ..errors import CommandError, DeployError, TopologyError

if TYPE_CHECKING:
    from .base import Host

Backend = Literal["auto", "netem", "nfqueue"]
BACKENDS: tuple[str, ...] = ("auto", "netem", "nfqueue")

DEFAULT_QUEUE_NUM = 7700  # queues are per namespace: every host can use the same number
DEFAULT_MAX_HELD = 4096  # ~80k packets/s per host at 50 ms: far more than one handler can take anyway
HANDLER_MODULE = "testbed.net.delay"
HANDLER_PROC_NAME = "delay-{host}"  # XG_PROC_NAME of a host's handler
_PROC_NAME_ENV = "XG_PROC_NAME"
_POLL_S = 0.2  # the handler's longest sleep: how soon it notices a dead parent
_START_TIMEOUT_S = 10.0
_REPLY_TIMEOUT_S = 5.0
_STOP_MARGIN_S = 2.0  # on top of the longest delay, for held packets to drain at exit


def netem_available() -> bool:
    """Whether this kernel has the netem qdisc; probed once, in a throwaway namespace, and cached.

    The probe is the very command the netem path runs, on ``lo`` of a namespace that lives only as long as the
    ``tc`` process (``unshare --net``): nothing is left behind even if this process is killed half-way.
    """
    return _probe_netem()


@functools.cache
def _probe_netem() -> bool:
    done = _shell.run(["unshare", "--net", "--", *_netem_argv("lo", 1.0, 0.0, 1000)], check=False)
    if done.returncode == 0:
        return True
    if done.stderr.lstrip().startswith("unshare:"):  # could not even make the namespace: not an answer
        raise CommandError(["unshare", "--net", "--", "tc", "..."], done.returncode, done.stderr)
    return False


def _netem_argv(dev: str, ms: float, jitter_ms: float, limit: int) -> list[str]:
    # microseconds: tc reads them exactly, where "12.5ms" depends on its float parsing
    argv = ["tc", "qdisc", "replace", "dev", dev, "root", "netem", "delay", f"{round(ms * 1000)}us"]
    if jitter_ms > 0:
        argv.append(f"{round(jitter_ms * 1000)}us")  # netem's jitter without a distribution is uniform
    return [*argv, "limit", str(limit)]


def rule_comment(run_id: str) -> str:
    """The comment on RUN_ID's NFQUEUE rules, which is how they are found again."""
    return f"{PREFIX}-{check_run_id(run_id)}-delay"


def rule_spec(run_id: str, queue_num: int) -> list[str]:
    """The iptables rule (after ``-A``/``-D``/``-C``) that queues UDP arriving on eth0 to QUEUE_NUM."""
    return [
        "INPUT",
        "-i",
        NODE_IFNAME,  # not lo: a host talking to itself is not network traffic
        "-p",
        "udp",
        "-m",
        "comment",
        "--comment",
        rule_comment(run_id),
        "-j",
        "NFQUEUE",
        "--queue-num",
        str(queue_num),
        "--queue-bypass",
    ]


def delay_rules(netns_path: str, run_id: str) -> list[str]:
    """RUN_ID's delay rules in the namespace at NETNS_PATH, as ``iptables -S`` lines (none: an empty list)."""
    out = _shell.run(["iptables", "-w", "-S", "INPUT"], netns_path=netns_path).stdout
    return [line for line in out.splitlines() if rule_comment(run_id) in line]


def find_handlers(run_id: str) -> list[int]:
    """PIDs of RUN_ID's live handler processes (by environment and command line)."""
    from .cleanup import environ_run_id  # import here: the handler process never needs pyroute2

    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or environ_run_id(int(entry)) != run_id:
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                argv = fh.read().split(b"\0")
            with open(f"/proc/{entry}/stat", "rb") as fh:
                state = fh.read().rsplit(b")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if HANDLER_MODULE.encode() in argv and b"handler" in argv and state not in (b"Z", b"X"):
            found.append(int(entry))
    return found


# --- the fault, as seen by the caller ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class HandlerStats:
    """What one handler did in its life: packets queued to it, held, let through at once because ``max_held``
    were already held (``overflowed``) or because it was draining, and the most it held at one time."""

    received: int = 0
    delayed: int = 0
    overflowed: int = 0
    passed: int = 0
    max_held: int = 0

    @classmethod
    def from_event(cls, event: dict[str, Any]) -> HandlerStats:
        return cls(**{k: int(event.get(k, 0)) for k in ("received", "delayed", "overflowed", "passed", "max_held")})


class Delay:
    """A switchable delay on the ingress of HOSTS; use as a context manager, once.

    ``with Delay(net.hosts[:2], run_id=net.run_id) as delay: delay.set(50); ...; delay.clear()``

    ``set(ms, jitter_ms)`` starts the delay or changes it (held packets keep their due time); ``clear()`` removes
    it, letting held packets go when due; ``set(0)`` is ``clear()``. BACKEND ``"auto"`` picks netem when the
    kernel has it, else NFQUEUE. Handlers' stderr goes to ``LOG_DIR/delay-<host>.stderr.log`` (without LOG_DIR: to
    ours). ``stats`` holds each host's `HandlerStats` from its last stopped handler (NFQUEUE only).
    """

    def __init__(
        self,
        hosts: Sequence[Host],
        *,
        run_id: str,
        log_dir: str | os.PathLike[str] | None = None,
        backend: Backend | str = "auto",
        queue_num: int = DEFAULT_QUEUE_NUM,
        max_held: int = DEFAULT_MAX_HELD,
        seed: int | None = None,
    ) -> None:
        self.run_id = check_run_id(run_id)
        self.hosts = tuple(hosts)
        names = [h.name for h in self.hosts]
        if len(set(names)) != len(names):
            raise TopologyError("hosts", f"a host appears twice: {names}")
        for host in self.hosts:
            if getattr(host, "run_id", run_id) != run_id:
                raise TopologyError("hosts", f"host {host.name} belongs to run {host.run_id}, not {run_id}")
        if backend not in BACKENDS:
            raise TopologyError("backend", f"{backend!r} is not one of {', '.join(BACKENDS)}")
        _check_int("queue_num", queue_num, 0, 65535)
        _check_int("max_held", max_held, 1, 1_000_000)
        self.log_dir = Path(log_dir) if log_dir is not None else None
        self.queue_num = queue_num
        self.max_held = max_held
        self.seed = seed
        self.stats: dict[str, HandlerStats] = {}
        self._requested_backend = backend
        self._backend: Literal["netem", "nfqueue"] | None = None
        self._state: Literal["new", "open", "closed"] = "new"
        self._ms = 0.0
        self._jitter_ms = 0.0
        self._handlers: dict[str, _Handler] = {}  # host name -> running handler
        self._ruled: list[Host] = []  # hosts whose iptables rule (or qdisc) is in place

    @property
    def backend(self) -> str | None:
        """``"netem"`` or ``"nfqueue"`` once entered."""
        return self._backend

    @property
    def ms(self) -> float:
        return self._ms

    @property
    def jitter_ms(self) -> float:
        return self._jitter_ms

    @property
    def active(self) -> bool:
        return bool(self._ruled or self._handlers)

    def __enter__(self) -> Self:
        if self._state != "new":
            raise DeployError("a Delay can be entered once; make a new one")
        backend = self._requested_backend
        if backend == "auto":
            backend = "netem" if netem_available() else "nfqueue"
        self._backend = backend  # type: ignore[assignment]
        self._state = "open"
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._state = "closed"
        try:
            self._remove()
        except Exception as err:
            if exc is None:
                raise
            exc.add_note(f"removing the delay of run {self.run_id} also failed: {err}")

    def set(self, ms: float, jitter_ms: float = 0.0) -> None:
        """Delay every packet arriving at the hosts by MS (+- uniform JITTER_MS) milliseconds from now on."""
        if self._state != "open":
            raise DeployError(f"the delay of run {self.run_id} is {self._state}, not open (use it in a `with`)")
        ms, jitter_ms = _check_ms("ms", ms), _check_ms("jitter_ms", jitter_ms)
        if ms == 0 and jitter_ms == 0:
            self.clear()
            return
        try:
            if self._backend == "netem":
                self._set_netem(ms, jitter_ms)
            elif self._handlers:
                for handler in self._handlers.values():
                    handler.send({"ms": ms, "jitter_ms": jitter_ms})
                for handler in self._handlers.values():
                    handler.expect("set", _REPLY_TIMEOUT_S)
            else:
                self._start_nfqueue(ms, jitter_ms)
        except BaseException as exc:
            try:  # half a fault is worse than none: take it all back, and say so
                self._remove()
            except Exception as err:
                exc.add_note(f"removing the partial delay also failed: {err}")
            raise
        self._ms, self._jitter_ms = ms, jitter_ms

    def clear(self) -> None:
        """Remove the delay; packets already held still leave when due. Idempotent."""
        if self._state != "open":
            raise DeployError(f"the delay of run {self.run_id} is {self._state}, not open (use it in a `with`)")
        self._remove()

    # --- netem ---

    def _set_netem(self, ms: float, jitter_ms: float) -> None:
        for host in self.hosts:
            if host not in self._ruled:
                self._ruled.append(host)  # before: a failed replace may still have left a qdisc
            _shell.run(_netem_argv(host.root_veth, ms, jitter_ms, self.max_held))

    # --- nfqueue ---

    def _start_nfqueue(self, ms: float, jitter_ms: float) -> None:
        # handlers first, then rules: a rule without a bound handler would let packets through undelayed
        for host in self.hosts:
            self._handlers[host.name] = self._spawn(host, ms, jitter_ms)
        for handler in self._handlers.values():
            handler.expect("ready", _START_TIMEOUT_S)
        for host in self.hosts:
            self._ruled.append(host)
            # -A, not -I: rules already in INPUT (a loss fault's DROP) act first; an ACCEPT verdict from the queue
            # ends the chain, so a rule after ours would never see the packet
            _shell.run(["iptables", "-w", "-A", *rule_spec(self.run_id, self.queue_num)], netns_path=host.netns_path)

    def _spawn(self, host: Host, ms: float, jitter_ms: float) -> _Handler:
        argv = [
            sys.executable,
            "-m",
            HANDLER_MODULE,
            "handler",
            "--queue-num",
            str(self.queue_num),
            "--ms",
            repr(ms),
            "--jitter-ms",
            repr(jitter_ms),
            "--max-held",
            str(self.max_held),
            "--parent-pid",
            str(os.getpid()),
        ]
        if self.seed is not None:
            argv += ["--seed", str(self.seed + host.index)]
        stderr: IO[bytes] | None = None
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            stderr = open(self.log_dir / f"delay-{host.name}.stderr.log", "ab")  # the child keeps its own copy
        try:
            env = {**os.environ, _PROC_NAME_ENV: HANDLER_PROC_NAME.format(host=host.name)}
            proc = host.popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                bufsize=0,
                env=env,
                start_new_session=True,  # a Ctrl-C at the terminal is for us: we stop the handlers in order
            )
        finally:
            if stderr is not None:
                stderr.close()
        return _Handler(host.name, proc)

    def _remove(self) -> None:
        """Rules (or qdiscs) first, so no new packet is queued; then the handlers, after their held packets left.

        Every step is tried even if an earlier one failed; the first failure is raised at the end.
        """
        errors: list[Exception] = []
        for host in list(self._ruled):
            try:
                if self._backend == "netem":
                    if _link_exists(host.root_veth):  # a link already gone took its qdisc along
                        _shell.run(["tc", "qdisc", "del", "dev", host.root_veth, "root"], check=False)
                        _check_no_netem(host.root_veth)
                elif os.path.exists(host.netns_path):  # a namespace already gone took its rules along
                    self._delete_rule(host)
                self._ruled.remove(host)
            except Exception as exc:
                errors.append(exc)
        handlers, self._handlers = list(self._handlers.values()), {}
        deadline = time.monotonic() + (self._ms + self._jitter_ms) / 1000.0 + _STOP_MARGIN_S
        for handler in handlers:
            handler.close_control()
        for handler in handlers:
            try:
                stats = handler.stop(deadline)
                if stats is not None:
                    self.stats[handler.name] = stats
            except Exception as exc:
                errors.append(exc)
        self._ms = self._jitter_ms = 0.0
        if errors:
            for extra in errors[1:]:
                errors[0].add_note(f"also: {extra}")
            raise errors[0]

    def _delete_rule(self, host: Host) -> None:
        spec = rule_spec(self.run_id, self.queue_num)
        done = _shell.run(["iptables", "-w", "-D", *spec], netns_path=host.netns_path, check=False)
        if done.returncode != 0 and delay_rules(host.netns_path, self.run_id):
            raise CommandError(_shell.in_netns(host.netns_path, ["iptables", "-D", *spec]), done.returncode,
                               done.stderr)


def _link_exists(ifname: str) -> bool:
    try:
        socket.if_nametoindex(ifname)
    except OSError:
        return False
    return True


def _check_no_netem(dev: str) -> None:
    out = _shell.tc("qdisc", "show", "dev", dev)
    if " netem " in out:
        raise DeployError(f"netem qdisc still on {dev} after deleting it: {out.strip()}")


def _check_ms(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise TopologyError(name, f"must be a finite number of milliseconds >= 0, not {value!r}")
    if value > 3_600_000:
        raise TopologyError(name, f"{value} ms is more than an hour")
    return float(value)


def _check_int(name: str, value: object, low: int, high: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise TopologyError(name, f"must be an integer in [{low}, {high}], not {value!r}")


class _Handler:
    """The parent's end of one handler process: JSON lines to its stdin, JSON lines from its stdout."""

    def __init__(self, name: str, proc: subprocess.Popen[bytes]) -> None:
        self.name = name
        self.proc = proc
        self._buffer = b""

    def send(self, message: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps(message).encode() + b"\n")
        except BrokenPipeError:
            raise DeployError(f"delay handler of {self.name} is gone (exit {self.proc.poll()})") from None

    def expect(self, event: str, timeout_s: float) -> dict[str, Any]:
        """Read lines until one with EVENT; `DeployError` if the handler exits or says nothing for TIMEOUT_S."""
        deadline = time.monotonic() + timeout_s
        while True:
            line = self._read_line(deadline)
            if line is None:
                raise DeployError(f"delay handler of {self.name} sent no {event!r} within {timeout_s} s "
                                  f"(exit {self.proc.poll()}; its stderr says why)")
            try:
                message = json.loads(line)
            except ValueError:
                raise DeployError(f"delay handler of {self.name} said {line[:200]!r}, not a JSON line") from None
            if message.get("event") == "error":
                raise DeployError(f"delay handler of {self.name}: {message.get('message')}")
            if message.get("event") == event:
                return message

    def close_control(self) -> None:
        """End of file on the handler's stdin: it lets its held packets go when due, then exits."""
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            try:
                self.proc.stdin.close()
            except BrokenPipeError:
                pass

    def stop(self, deadline: float) -> HandlerStats | None:
        """Wait for the handler to exit by DEADLINE, then SIGTERM, then SIGKILL; its final stats if it said them."""
        self.close_control()
        stats = None
        try:
            exit_event = self.expect("exit", max(0.0, deadline - time.monotonic()))
            stats = HandlerStats.from_event(exit_event)
        except DeployError:  # it died without a word: its stderr says why
            pass
        for sig, grace_s in ((None, max(0.0, deadline - time.monotonic())), (signal.SIGTERM, 2.0),
                             (signal.SIGKILL, 5.0)):
            if sig is not None and self.proc.poll() is None:
                self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=grace_s)
                break
            except subprocess.TimeoutExpired:
                continue
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        if self.proc.poll() is None:
            raise DeployError(f"delay handler of {self.name} (pid {self.proc.pid}) survived SIGKILL")
        return stats

    def _read_line(self, deadline: float) -> bytes | None:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.proc.stdout.closed:
                return None
            ready, _, _ = select.select([fd], [], [], remaining)
            if not ready:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                return None
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line


# --- the handler: a pure holding queue, and the process that drives it -----------------------------------------


class Verdictable(Protocol):
    """What the holding queue needs of a packet: a way to let it through."""

    def accept(self) -> None: ...


class HoldQueue:
    """Packets waiting for their due time, in a heap: no clock, no sockets (callers pass ``now`` in seconds).

    Each arrival draws its own delay, so packets arriving together are due together. At most MAX_HELD are held;
    `arrive` returns False for a packet that was not held (the caller accepts it at once).
    """

    def __init__(self, *, ms: float, jitter_ms: float, max_held: int, rng: random.Random) -> None:
        self.max_held = max_held
        self._rng = rng
        self._heap: list[tuple[float, int, Verdictable]] = []
        self._seq = 0
        self.ms = self.jitter_ms = 0.0
        self.set(ms, jitter_ms)
        self.received = self.delayed = self.overflowed = self.max_seen = 0

    def set(self, ms: float, jitter_ms: float) -> None:
        self.ms, self.jitter_ms = _check_ms("ms", ms), _check_ms("jitter_ms", jitter_ms)

    def draw_s(self) -> float:
        """One packet's delay in seconds: uniform in [ms - jitter, ms + jitter], never negative."""
        ms = self.ms + (self._rng.uniform(-self.jitter_ms, self.jitter_ms) if self.jitter_ms else 0.0)
        return max(0.0, ms) / 1000.0

    def arrive(self, packet: Verdictable, now: float) -> bool:
        self.received += 1
        if len(self._heap) >= self.max_held:
            self.overflowed += 1
            return False
        delay_s = self.draw_s()
        if delay_s <= 0:
            return False
        self._seq += 1
        heapq.heappush(self._heap, (now + delay_s, self._seq, packet))
        self.delayed += 1
        self.max_seen = max(self.max_seen, len(self._heap))
        return True

    def next_due(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: float) -> list[Verdictable]:
        due = []
        while self._heap and self._heap[0][0] <= now:
            due.append(heapq.heappop(self._heap)[2])
        return due

    def pop_all(self) -> list[Verdictable]:
        packets = [entry[2] for entry in sorted(self._heap)]
        self._heap.clear()
        return packets

    def __len__(self) -> int:
        return len(self._heap)


def serve(
    *,
    queue_num: int,
    ms: float,
    jitter_ms: float,
    max_held: int,
    parent_pid: int,
    seed: int | None = None,
    control: int = 0,
    report: IO[str] = sys.stdout,
) -> int:
    """Bind NFQUEUE QUEUE_NUM in this namespace and delay its packets until told to stop; returns an exit status.

    CONTROL (a file descriptor) brings JSON lines ``{"ms": .., "jitter_ms": ..}``; its end of file starts a drain.
    REPORT gets JSON lines: ``ready``, ``set`` (one per control line), ``error``, ``exit`` (with the counts).
    """
    from netfilterqueue import COPY_META, NetfilterQueue  # only the handler needs libnetfilter_queue

    def emit(event: str, **fields: Any) -> None:
        try:
            report.write(json.dumps({"event": event, **fields}) + "\n")
            report.flush()
        except (BrokenPipeError, ValueError):  # the parent is gone or stopped listening: nobody to tell
            pass

    hold = HoldQueue(ms=ms, jitter_ms=jitter_ms, max_held=max_held, rng=random.Random(seed))
    passed = 0
    draining = stopping = False

    def on_packet(packet: Verdictable) -> None:
        nonlocal passed
        if draining or not hold.arrive(packet, time.monotonic()):
            if draining:
                passed += 1
            packet.accept()

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w)  # a signal wakes select() at once
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    os.set_blocking(control, False)

    queue = NetfilterQueue()
    # held packets count against the kernel's queue length, and a full queue drops (the library cannot ask for
    # fail-open): keep the kernel's limit well above ours, so that ours is the one that acts
    kernel_max = 2 * max_held + 1024
    try:
        queue.bind(queue_num, on_packet, max_len=kernel_max, mode=COPY_META, sock_len=kernel_max * 1024)
    except OSError as exc:
        emit("error", message=f"cannot bind NFQUEUE {queue_num}: {exc}")
        return 1
    queue_fd = queue.get_fd()
    watched = [queue_fd, control, wake_r]
    pending = b""
    emit("ready", queue_num=queue_num, ms=hold.ms, jitter_ms=hold.jitter_ms, pid=os.getpid())
    try:
        while not stopping:
            for packet in hold.pop_due(time.monotonic()):
                packet.accept()
            if draining and not len(hold):
                break
            if os.getppid() != parent_pid:  # orphaned (the stdin check misses a parent that forked meanwhile)
                draining = True
            next_due = hold.next_due()
            timeout_s = _POLL_S if next_due is None else min(_POLL_S, max(0.0, next_due - time.monotonic()))
            ready, _, _ = select.select(watched, [], [], timeout_s)
            if queue_fd in ready:
                queue.run(block=False)
            if wake_r in ready:
                while _read_nonblocking(wake_r):
                    pass
            if control in ready:
                chunk = _read_nonblocking(control)
                if chunk == b"":
                    draining = True
                    watched.remove(control)
                    continue
                pending += chunk or b""
                while b"\n" in pending:
                    line, pending = pending.split(b"\n", 1)
                    try:
                        message = json.loads(line)
                        hold.set(float(message["ms"]), float(message.get("jitter_ms", 0.0)))
                    except (ValueError, KeyError, TypeError, TopologyError) as exc:
                        emit("error", message=f"bad control line {line[:200]!r}: {exc}")
                        continue
                    emit("set", ms=hold.ms, jitter_ms=hold.jitter_ms)
    finally:
        # unbinding drops whatever is still queued to us: let it all go now instead, held or not yet read
        draining = True
        try:
            queue.run(block=False)
        except OSError:
            pass
        for packet in hold.pop_all():
            packet.accept()
        queue.unbind()
        emit(
            "exit",
            received=hold.received,
            delayed=hold.delayed,
            overflowed=hold.overflowed,
            passed=passed,
            max_held=hold.max_seen,
        )
    return 0


def _read_nonblocking(fd: int) -> bytes | None:
    """Up to 64 KiB from FD; b"" at end of file, None if nothing is there right now."""
    try:
        return os.read(fd, 65536)
    except BlockingIOError:
        return None


def main(argv: Sequence[str] | None = None, *, serve_fn: Callable[..., int] = serve) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {HANDLER_MODULE}", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    handler = commands.add_parser("handler", help="delay the packets of an NFQUEUE in this namespace")
    handler.add_argument("--queue-num", type=int, default=DEFAULT_QUEUE_NUM)
    handler.add_argument("--ms", type=float, required=True)
    handler.add_argument("--jitter-ms", type=float, default=0.0)
    handler.add_argument("--max-held", type=int, default=DEFAULT_MAX_HELD)
    handler.add_argument("--parent-pid", type=int, default=None, help="exit when this stops being our parent")
    handler.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    return serve_fn(
        queue_num=args.queue_num,
        ms=args.ms,
        jitter_ms=args.jitter_ms,
        max_held=args.max_held,
        parent_pid=args.parent_pid if args.parent_pid is not None else os.getppid(),
        seed=args.seed,
    )


if __name__ == "__main__":
    sys.exit(main())
