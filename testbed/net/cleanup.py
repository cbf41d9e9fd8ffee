"""Find and remove what runs left in the kernel: the backing of ``python -m testbed clean``.

A run that was killed (SIGKILL, a crash, a lost terminal) never reaches its ``finally``; everything it created
carries its run id (see `RunNames`), so it can be found afterwards: namespaces ``xg-<run_id>-*``, root links named
``xg<short>...``, processes with ``XG_RUN_ID`` in their environment or living in one of those namespaces, pinned BPF
objects under ``/run/xdp-gossip/bpffs/<run_id>/`` and root-namespace nft tables ``xg_<short>...``. The throwaway
networks of the BPF tests and root benchmarks (namespaces ``xgt-<hex6>-<k>``, root links ``xt<hex6>...``) are found
the same way.

A run in progress names its owner (pid and start time) in ``/run/xdp-gossip/runs/<run_id>`` from before it creates
anything until after its teardown (`record_owner`, `drop_owner_record`; a test network in
``/run/xdp-gossip/testnets/<hex6>``). With no run id, `find_leftovers` and `clean` leave every run whose owner is
alive alone and report it as in progress; a run without a record, or whose owner is gone, is a leftover. ``force``
takes every run, live or not, and so does naming a run id: both are explicit requests.

The process helpers here are also what the network backends use to make sure nothing outlives their teardown.
This module never kills a process that carries no run id and lives in none of the runs' namespaces, nor the
calling process or its ancestors; without a run id or ``force``, nothing of a run whose owner is alive.
"""

from __future__ import annotations

import os
import re
import signal
import stat
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass

from pyroute2 import IPRoute, netns

from . import shell as _shell
from .topology import (
    NETNS_RUN_DIR,
    PIN_ROOT,
    RUN_ID_ENV,
    RUNS_ROOT,
    TESTNETS_ROOT,
    RunNames,
    is_project_link,
    is_project_netns,
    is_project_nft_table,
    is_testnet_link,
    is_testnet_netns,
    testnet_id,
)
from ..errors import CommandError, DeployError

_ENV_KEY = RUN_ID_ENV.encode() + b"="
_HOST_VETH_RE = re.compile(r"h\d+$")  # bridges end in b<j>, trunks in t<k>a/z
_BPF_PIN_DIR_RE = re.compile(r"(?:fastpath|broadcast)-(\d+)-[0-9a-f]+")  # bpf's own pin dirs, named by their pid
_RECORD_NAME_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")  # a run id (a test network's <hex6> is one too)
NsId = tuple[int, int]  # (st_dev, st_ino) of a network namespace


@dataclass(frozen=True, slots=True, kw_only=True)
class Owner:
    """The process a run belongs to: its pid and its start time (so a recycled pid is not taken for it)."""

    pid: int
    start_ticks: int  # field 22 of /proc/<pid>/stat, in clock ticks since boot


@dataclass(frozen=True, slots=True, kw_only=True)
class InProgress:
    """A run (or test network) whose owner is alive, which `clean()` without a run id left alone."""

    run_id: str  # for a test network, its <hex6>
    pid: int
    testnet: bool = False

    def __str__(self) -> str:
        what = f"test network xgt-{self.run_id}" if self.testnet else f"run {self.run_id}"
        return f"skipped {what}: in progress (pid {self.pid})"


@dataclass(frozen=True, slots=True, kw_only=True)
class Leftovers:
    """Kernel objects and processes of one run (or of all runs), and the runs in progress that were left out."""

    namespaces: tuple[str, ...] = ()
    links: tuple[str, ...] = ()
    processes: tuple[int, ...] = ()
    pin_dirs: tuple[str, ...] = ()
    nft_tables: tuple[str, ...] = ()  # "family name"
    records: tuple[str, ...] = ()  # owner records of runs whose owner is gone (or, asked for by id, of that run)
    in_progress: tuple[InProgress, ...] = ()  # not leftovers: what `empty` and `summary` leave out

    @property
    def empty(self) -> bool:
        return not (
            self.namespaces or self.links or self.processes or self.pin_dirs or self.nft_tables or self.records
        )

    def __bool__(self) -> bool:
        return not self.empty

    def summary(self) -> str:
        """One line per kind, for people."""
        if self.empty:
            return "nothing"
        parts = [
            (f"{len(values)} {kind}: " + " ".join(str(v) for v in values))
            for kind, values in (
                ("namespaces", self.namespaces),
                ("links", self.links),
                ("processes", self.processes),
                ("pin dirs", self.pin_dirs),
                ("nft tables", self.nft_tables),
                ("owner records", self.records),
            )
            if values
        ]
        return "\n".join(parts)


def find_leftovers(run_id: str | None = None, *, force: bool = False) -> Leftovers:
    """What RUN_ID has in the kernel right now, live or not; with None, what runs whose owner is gone left behind.

    Without a run id, a run whose owner is alive is listed in ``in_progress`` instead, unless FORCE: then every
    run's objects are taken, as with a run id.
    """
    if run_id is not None:
        names = RunNames(run_id)
        namespaces = _find_namespaces(names.owns_netns)
        return Leftovers(
            namespaces=namespaces,
            links=_find_links(names.owns_link),
            processes=_find_processes(lambda value: value == run_id, _netns_ids(namespaces)),
            pin_dirs=_find_pin_dirs(run_id),
            nft_tables=_find_nft_tables(names.owns_nft_table),
            records=tuple(p for p in (names.owner_record,) if os.path.lexists(p)),
        )

    # Everything is listed before the records are read: a run records its owner before it creates anything, so
    # whatever was listed of a run that had started is covered by a record read afterwards.
    namespaces = _find_namespaces(lambda n: is_project_netns(n) or is_testnet_netns(n))
    ns_ids = {name: netns_id(f"{NETNS_RUN_DIR}/{name}") for name in namespaces}
    links = _find_links(lambda n: is_project_link(n) or is_testnet_link(n))
    processes = _scan_processes(with_netns=any(ns_ids.values()))
    pin_dirs = _find_pin_dirs(None)
    nft_tables = _find_nft_tables(is_project_nft_table)
    run_records, testnet_records = _find_records(RUNS_ROOT), _find_records(TESTNETS_ROOT)
    runs = {} if force else _live_owners(RUNS_ROOT)
    testnets = {} if force else _live_owners(TESTNETS_ROOT)
    live = [RunNames(r) for r in runs]

    def spared(name: str, owns: Callable[[RunNames, str], bool]) -> bool:
        testnet = testnet_id(name)
        if testnet is not None:
            return testnet in testnets
        return any(owns(names, name) for names in live)

    namespaces = tuple(n for n in namespaces if not spared(n, RunNames.owns_netns))
    dead_ns = {ns_ids[n] for n in namespaces} - {None}
    return Leftovers(
        namespaces=namespaces,
        links=tuple(n for n in links if not spared(n, RunNames.owns_link)),
        processes=tuple(
            pid
            for pid, value, ns in processes
            if (value is not None and value not in runs) or (value is None and ns in dead_ns)
        ),
        pin_dirs=tuple(p for p in pin_dirs if force or not _pin_dir_in_use(p, runs)),
        nft_tables=tuple(t for t in nft_tables if not spared(t.split(" ", 1)[1], RunNames.owns_nft_table)),
        records=tuple(p for p in run_records if os.path.basename(p) not in runs)
        + tuple(p for p in testnet_records if os.path.basename(p) not in testnets),
        in_progress=tuple(InProgress(run_id=r, pid=pid) for r, pid in sorted(runs.items()))
        + tuple(InProgress(run_id=t, pid=pid, testnet=True) for t, pid in sorted(testnets.items())),
    )


def clean(run_id: str | None = None, *, force: bool = False, timeout_s: float = 10.0) -> Leftovers:
    """Remove RUN_ID's leftovers (with None: those of every run whose owner is gone) and return what was removed.

    RUN_ID is removed even if its run is in progress; with None, runs in progress are left alone (and listed in
    ``in_progress``) unless FORCE. Order matters: processes first (they keep namespaces alive), then namespaces
    (whose removal takes their veths along, in one batch), then whatever root links are still there, nft tables,
    pinned objects and owner records last. A run that ends meanwhile removes some of these itself: objects already
    gone are skipped. With a run id, raises `DeployError` naming whatever is still there afterwards.
    """
    found = find_leftovers(run_id, force=force)
    kill_processes(found.processes, timeout_s=timeout_s)
    for name in found.namespaces:
        remove_netns(name)
    if found.links:
        # hosts' veths go with their namespaces, in one batch, if given a moment; bridges and trunks never do
        host_veths = [name for name in found.links if _HOST_VETH_RE.search(name)]
        _wait_links_gone(host_veths, timeout_s=min(timeout_s, 3.0))
        _delete_links(found.links)
    for table in found.nft_tables:
        family, name = table.split(" ", 1)
        _shell.nft("delete", "table", family, name, check=False)
    for path in found.pin_dirs:
        remove_pin_dir(path)
    for path in found.records:
        _unlink(path)
    if run_id is not None:
        left = find_leftovers(run_id)
        if left:
            raise DeployError(f"clean({run_id!r}) could not remove:\n{left.summary()}")
    return found


# --- owner records --------------------------------------------------------------------------------------------


def record_owner(path: str) -> None:
    """Name the calling process as the owner of the run (or test network) whose record is PATH.

    Called before the run creates anything, and `drop_owner_record` after its teardown: in between, `clean()`
    without a run id leaves the run alone. `DeployError` if another live process owns PATH already.
    """
    me = process_owner(os.getpid())
    assert me is not None  # this process is alive
    current = read_owner(path)
    if current is not None and current != me and owner_alive(current):
        raise DeployError(f"{path}: this run is in progress already, in pid {current.pid}")
    tmp = f"{path}.{me.pid}.tmp"
    try:
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        with open(tmp, "w") as fh:
            fh.write(f"{me.pid} {me.start_ticks}\n")
        os.replace(tmp, path)  # whole or not at all: a record is never read half-written
    except OSError as exc:
        raise DeployError(f"cannot write {exc.filename or path}: {exc.strerror}") from None


def drop_owner_record(path: str) -> None:
    """Remove PATH if it names the calling process (one that found its run id taken must not drop the owner's)."""
    if read_owner(path) == process_owner(os.getpid()):
        _unlink(path)


def read_owner(path: str) -> Owner | None:
    """The owner PATH names; None if there is no record, or one that is not ``<pid> <start ticks>`` (no owner)."""
    try:
        with open(path) as fh:
            text = fh.read(64)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise DeployError(f"cannot read {path}: {exc.strerror}") from None
    fields = text.split()
    if len(fields) != 2 or not all(f.isascii() and f.isdigit() for f in fields):
        return None
    return Owner(pid=int(fields[0]), start_ticks=int(fields[1]))


def process_owner(pid: int) -> Owner | None:
    """PID as an `Owner` (with its start time), None if it is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if len(fields) < 20 or fields[0] in (b"Z", b"X"):
        return None
    return Owner(pid=pid, start_ticks=int(fields[19]))


def owner_alive(owner: Owner) -> bool:
    """True if OWNER's process still runs: its pid is alive and started when OWNER says."""
    return process_owner(owner.pid) == owner


def _find_records(root: str) -> list[str]:
    try:  # a record's name is an id; not one (e.g. a record being written, NAME.PID.tmp): none of ours
        entries = list(os.scandir(root))
    except FileNotFoundError:
        return []
    return sorted(e.path for e in entries if _RECORD_NAME_RE.fullmatch(e.name) and e.is_file(follow_symlinks=False))


def _live_owners(root: str) -> dict[str, int]:
    """The ids recorded under ROOT whose owner is alive, with the owner's pid."""
    live = {}
    for path in _find_records(root):
        owner = read_owner(path)
        if owner is not None and owner_alive(owner):
            live[os.path.basename(path)] = owner.pid
    return live


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise DeployError(f"cannot remove {path}: {exc.strerror}") from None


# --- processes ------------------------------------------------------------------------------------------------


def netns_id(path: str) -> NsId | None:
    """The identity of the network namespace at PATH (a bind mount or /proc/PID/ns/net), None if it is gone."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def processes_in_netns(ns_ids: Collection[NsId]) -> list[int]:
    """PIDs of the processes whose network namespace is one of NS_IDS (never this process or its ancestors)."""
    if not ns_ids:
        return []
    spared = _self_and_ancestors()
    found = []
    for pid in _all_pids():
        if pid not in spared and netns_id(f"/proc/{pid}/ns/net") in ns_ids:
            found.append(pid)
    return found


def kill_processes(pids: Iterable[int], *, timeout_s: float = 5.0) -> None:
    """SIGCONT then SIGKILL each of PIDS and wait until they are dead (or zombies waiting for their parent)."""
    pids = [pid for pid in pids if pid not in _self_and_ancestors()]
    for pid in pids:
        for sig in (signal.SIGCONT, signal.SIGKILL):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                break
    deadline = time.monotonic() + timeout_s
    alive = [pid for pid in pids if _alive(pid)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.01)
        alive = [pid for pid in alive if _alive(pid)]
    if alive:
        raise DeployError(f"processes survived SIGKILL for {timeout_s} s: {alive}")


def _find_processes(wanted: Callable[[str], bool], ns_ids: Collection[NsId]) -> tuple[int, ...]:
    """Processes whose ``XG_RUN_ID`` is WANTED, or that carry none and live in one of NS_IDS."""
    found = []
    for pid, value, ns in _scan_processes(with_netns=bool(ns_ids)):
        if (value is not None and wanted(value)) or (value is None and ns in ns_ids):
            found.append(pid)
    return tuple(found)


def _scan_processes(*, with_netns: bool) -> list[tuple[int, str | None, NsId | None]]:
    """(pid, ``XG_RUN_ID`` or None, network namespace if WITH_NETNS) of every live process but us and our
    ancestors."""
    spared = _self_and_ancestors()
    found = []
    for pid in _all_pids():
        if pid in spared or not _alive(pid):
            continue
        ns = netns_id(f"/proc/{pid}/ns/net") if with_netns else None
        found.append((pid, environ_run_id(pid), ns))
    return found


def environ_run_id(pid: int) -> str | None:
    """The ``XG_RUN_ID`` in PID's environment, None if it has none (or is gone)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            environ = fh.read()
    except OSError:
        return None
    for entry in environ.split(b"\0"):
        if entry.startswith(_ENV_KEY):
            return entry[len(_ENV_KEY) :].decode(errors="replace")
    return None


def _all_pids() -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


def _self_and_ancestors() -> set[int]:
    spared = {os.getpid()}
    pid = os.getppid()
    while pid > 1 and pid not in spared:
        spared.add(pid)
        pid = _parent(pid)
    return spared


def _parent(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return int(fh.read().rsplit(b")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def _alive(pid: int) -> bool:
    """True unless PID is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            state = fh.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in (b"Z", b"X")


# --- namespaces and links -------------------------------------------------------------------------------------


def remove_netns(name: str) -> None:
    """Unmount and delete the named namespace (the kernel frees it once no process holds it); idempotent."""
    try:
        netns.remove(name)
    except FileNotFoundError:
        pass


def _find_namespaces(owns: Callable[[str], bool]) -> tuple[str, ...]:
    return tuple(sorted(n for n in netns.listnetns() if owns(n)))


def _netns_ids(namespaces: Iterable[str]) -> set[NsId]:
    ids = (netns_id(f"{NETNS_RUN_DIR}/{name}") for name in namespaces)
    return {i for i in ids if i is not None}


def _find_links(owns: Callable[[str], bool]) -> tuple[str, ...]:
    with IPRoute() as ipr:
        return tuple(sorted(n for n in (link.get("ifname") for link in ipr.get_links()) if n and owns(n)))


def _wait_links_gone(ifnames: Collection[str], *, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    wanted = set(ifnames)
    with IPRoute() as ipr:
        while time.monotonic() < deadline:
            if not wanted.intersection(link.get("ifname") for link in ipr.get_links()):
                return
            time.sleep(0.02)


def _delete_links(ifnames: Iterable[str]) -> None:
    with IPRoute() as ipr:
        for name in ifnames:
            for index in ipr.link_lookup(ifname=name):
                try:
                    ipr.link("del", index=index)
                except Exception as exc:  # gone meanwhile (its veth peer went first): fine; anything else: re-raise
                    if getattr(exc, "code", None) != 19:  # ENODEV
                        raise DeployError(f"cannot delete link {name}: {exc}") from exc


# --- nft tables and pinned BPF objects ------------------------------------------------------------------------


def _find_nft_tables(owns: Callable[[str], bool]) -> tuple[str, ...]:
    try:
        entries = _shell.nft_json("list", "tables")
    except CommandError as exc:
        if exc.returncode == 127:  # no nft on this machine: no tables either
            return ()
        raise
    tables = (entry["table"] for entry in entries if "table" in entry)
    return tuple(sorted(f"{t['family']} {t['name']}" for t in tables if owns(t["name"])))


def _find_pin_dirs(run_id: str | None) -> tuple[str, ...]:
    if run_id is not None:
        path = RunNames(run_id).pin_dir
        return (path,) if os.path.lexists(path) else ()
    try:  # directories only: the bpffs itself and its kernel files (maps.debug, progs.debug) stay
        return tuple(sorted(e.path for e in os.scandir(PIN_ROOT) if e.is_dir(follow_symlinks=False)))
    except FileNotFoundError:
        return ()


def _pin_dir_in_use(path: str, live_runs: Collection[str]) -> bool:
    """Whether PATH (a directory under PIN_ROOT) belongs to a run in progress or to a live process's BPF program."""
    name = os.path.basename(path)
    m = _BPF_PIN_DIR_RE.fullmatch(name)
    if m:  # bpf names these by pid alone; a recycled pid keeps a dead one's pins a little longer, harmlessly
        return _alive(int(m[1]))
    return name in live_runs


def remove_pin_dir(path: str) -> None:
    """Delete PATH and everything under it: pinned BPF objects go by unlink, a bpffs mounted inside by unmounting.

    What disappears meanwhile (its run ending and removing it) is skipped."""
    if os.path.ismount(path):
        _shell.umount(path)  # takes the pins of that mount with it
    try:
        if os.path.islink(path) or not stat.S_ISDIR(os.lstat(path).st_mode):
            os.unlink(path)
            return
        entries = list(os.scandir(path))
    except FileNotFoundError:
        return
    for entry in entries:
        remove_pin_dir(entry.path)
    try:
        os.rmdir(path)
    except FileNotFoundError:
        pass
