"""The `Cluster` interface: the verbs a scenario needs, implemented once for real hosts and once by the simulator.

The timeline interpreter (`testbed.interpreter`) is the only caller. It keeps the truth about every node (never
started, up, paused, down) and records it; a cluster only acts and reports. Nodes are named ``n0``..``n{N-1}``
(hosts for nodes that join later included); times are absolute seconds on the clock the nodes stamp their own
records with (the wall clock on real hosts, the virtual clock on the simulator).

Network faults have one meaning on every implementation (``docs/faults.md``):
- `partition(groups)` takes sides that together hold every host: a message crosses only between nodes of one side;
- `set_loss(rate)` drops each message with RATE, once per message; `set_loss(rate, node=n)` drops messages to and
  from N with RATE, on top of any other rule;
- both act where the network is, before the receiving node's XDP program, so what a node and its fast path count
  is what the network delivered.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True, slots=True, kw_only=True)
class Read:
    """A node's answer to a read: its member list (names, itself included), and its metadata version."""

    members: tuple[str, ...]
    version: int
    origin: int


class Cluster(abc.ABC):
    """A running set of gossip nodes and the network between them. A context manager: leaving it removes
    everything it made, however the run went."""

    backend: str = ""

    def __enter__(self) -> "Cluster":
        return self

    def __exit__(self, *exc) -> None:
        return None

    # ---- time ------------------------------------------------------------------------------------------------

    @abc.abstractmethod
    def now(self) -> float:
        """The clock every record of the run is stamped with."""

    @abc.abstractmethod
    def advance_to(self, t: float, on_exit: Callable[[str, int | None], None]) -> None:
        """Let time pass until absolute time T. A node process that dies by itself meanwhile is reported
        through ON_EXIT(name, exit code)."""

    # ---- nodes -----------------------------------------------------------------------------------------------

    @abc.abstractmethod
    def start_nodes(self, seeds: dict[str, list[str]]) -> None:
        """Start the initial nodes (the keys of SEEDS, in order), each contacting its seeds; returns once all run."""

    @abc.abstractmethod
    def start(self, name: str, seeds: list[str] | None) -> None:
        """Start node NAME's process: fresh state; SEEDS None means the seeds of its last start (a restart)."""

    @abc.abstractmethod
    def kill(self, name: str) -> None:
        """SIGKILL: the process is gone at once, with its state."""

    @abc.abstractmethod
    def pause(self, name: str) -> None:
        """SIGSTOP: the process keeps its state and queues what arrives, answers nothing."""

    @abc.abstractmethod
    def resume(self, name: str) -> None:
        """SIGCONT."""

    @abc.abstractmethod
    def leave(self, name: str) -> None:
        """A graceful stop: the node announces its leave (peers drop it at once, as ``member_left``), then ends."""

    @abc.abstractmethod
    def heartbeats(self, name: str, on: bool) -> None:
        """Own heartbeats on or off (the node keeps listening, forwarding and swapping)."""

    @abc.abstractmethod
    def publish(self, name: str, data: bytes) -> None:
        """The node publishes DATA."""

    @abc.abstractmethod
    def set_secrets(self, secrets: tuple[bytes, ...], names: list[str]) -> None:
        """The cluster's key ring from now on (the first signs, all verify): every node started later starts with
        it, and the running nodes of NAMES switch to it now."""

    @abc.abstractmethod
    def read(self, name: str) -> Read | None:
        """The node's view and value, or None if it could not be read."""

    def recovered(self, live: set[str]) -> bool:
        """Every node of LIVE lists exactly LIVE, and all hold one version."""
        versions = set()
        for name in live:
            r = self.read(name)
            if r is None or set(r.members) != live:
                return False
            versions.add((r.version, r.origin))
        return len(versions) <= 1

    # ---- network ---------------------------------------------------------------------------------------------

    @abc.abstractmethod
    def partition(self, groups: list[list[str]], *, via: str = "bpf") -> None:
        """Cut the network into GROUPS (together every host); replaces any earlier partition; [] removes it."""

    @abc.abstractmethod
    def set_loss(self, rate: float, node: str | None = None) -> None:
        """Loss on every message (NODE None) or on messages to and from NODE; rate 0 removes that one rule."""

    @abc.abstractmethod
    def heal(self) -> None:
        """The end of every network fault: no partition, no loss rule anywhere."""

    @abc.abstractmethod
    def add_delay(self, names: list[str], ms: float, jitter_ms: float) -> object:
        """Delay every message delivered to NAMES; returns a handle for `remove_delay`."""

    @abc.abstractmethod
    def remove_delay(self, handle: object) -> None: ...

    @abc.abstractmethod
    def inject(self, kind: str, target: str, *, count: int, rate_pps: int | None, rng) -> int:
        """Craft COUNT packets of KIND (see `testbed.net.inject.EXPECT`) into TARGET; returns how many went."""

    # ---- what happened ---------------------------------------------------------------------------------------

    def sample(self, names: list[str]) -> list[dict]:
        """Periodic records about NAMES (e.g. their XDP counters), stamped with `now`; none by default."""
        return []

    @abc.abstractmethod
    def counters(self, name: str) -> dict:
        """Node NAME's stats.json entry: packets in/out and drops by reason, plus what its kernel programs and the
        network counted for it."""

    def network_counters(self) -> dict:
        """What the network did, cluster-wide (messages sent, delivered, dropped per reason), if it counts."""
        return {}

    @abc.abstractmethod
    def node_records(self) -> list[dict]:
        """Every record the nodes wrote themselves (started, member_added, stats, ...), after they stopped."""

    @abc.abstractmethod
    def stop_all(self) -> None:
        """The end: every node process stops (the cluster is still entered; leaving it tears down the rest)."""

    def meta(self) -> dict:
        """Backend facts for meta.json (run id, timings, whether XDP ran, ...)."""
        return {}
