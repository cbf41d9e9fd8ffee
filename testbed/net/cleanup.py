"""Find and remove what runs left in the kernel: the backing of ``python -m testbed clean``.

A run that was killed (SIGKILL, a crash, a lost terminal) never reaches its ``finally``; everything it created
carries its run id (see `RunNames`), so it can be found afterwards: namespaces ``xg-<run_id>-*``, root links named
``xg<short>...``, processes with ``XG_RUN_ID`` in their environment or living in one of those namespaces, pinned BPF
objects under ``/run/xdp-gossip/bpffs/<run_id>/`` and root-namespace nft tables ``xg_<short>...``. With no run id, every
run's leftovers are found, so `clean()` without one also stops runs still in progress; it also finds the throwaway
networks of the BPF tests and root benchmarks (namespaces ``xgt-<hex6>-<k>``, root links ``xt<hex6>...``), which a
killed test or benchmark leaves the same way.

The process helpers here are also what the network backends use to make sure nothing outlives their teardown.
This module never kills a process that carries no run id and lives in none of the runs' namespaces, nor the
calling process or its ancestors.
"""

from __future__ import annotations

import os
import re
import signal
import stat
import time
from collections.abc import Collection, Iterable
from dataclasses import dataclass

from pyroute2 import IPRoute, netns

from . import shell as _shell
from .topology import (
    NETNS_RUN_DIR,
    PIN_ROOT,
    RUN_ID_ENV,
    RunNames,
    is_project_link,
    is_project_netns,
    is_project_nft_table,
    is_testnet_link,
    is_testnet_netns,
)
from ..errors import CommandError, DeployError

_ENV_KEY = RUN_ID_ENV.encode() + b"="
_HOST_VETH_RE = re.compile(r"h\d+$")  # bridges end in b<j>, trunks in t<k>a/z
NsId = tuple[int, int]  # (st_dev, st_ino) of a network namespace


@dataclass(frozen=True, slots=True, kw_only=True)
class Leftovers:
    """Kernel objects and processes of one run (or of all runs)."""

    namespaces: tuple[str, ...] = ()
    links: tuple[str, ...] = ()
    processes: tuple[int, ...] = ()
    pin_dirs: tuple[str, ...] = ()
    nft_tables: tuple[str, ...] = ()  # "family name"

    @property
    def empty(self) -> bool:
        return not (self.namespaces or self.links or self.processes or self.pin_dirs or self.nft_tables)

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
            )
            if values
        ]
        return "\n".join(parts)


def find_leftovers(run_id: str | None = None) -> Leftovers:
    """What RUN_ID (or, with None, any run) has in the kernel right now."""
    names = RunNames(run_id) if run_id is not None else None
    namespaces = _find_namespaces(names)
    return Leftovers(
        namespaces=namespaces,
        links=_find_links(names),
        processes=_find_processes(run_id, _netns_ids(namespaces)),
        pin_dirs=_find_pin_dirs(run_id),
        nft_tables=_find_nft_tables(names),
    )


def clean(run_id: str | None = None, *, timeout_s: float = 10.0) -> Leftovers:
    """Remove RUN_ID's leftovers (with None: every run's) and return what was removed.

    Order matters: processes first (they keep namespaces alive), then namespaces (whose removal takes their veths
    along, in one batch), then whatever root links are still there, nft tables and pinned objects. Raises
    `DeployError` naming whatever is still there afterwards.
    """
    found = find_leftovers(run_id)
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
    left = find_leftovers(run_id)
    if run_id is not None and left:
        raise DeployError(f"clean({run_id!r}) could not remove:\n{left.summary()}")
    return found


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


def _find_processes(run_id: str | None, ns_ids: Collection[NsId]) -> tuple[int, ...]:
    spared = _self_and_ancestors()
    found = []
    for pid in _all_pids():
        if pid in spared or not _alive(pid):
            continue
        value = environ_run_id(pid)
        if value is not None and (run_id is None or value == run_id):
            found.append(pid)
        elif ns_ids and netns_id(f"/proc/{pid}/ns/net") in ns_ids:
            found.append(pid)
    return tuple(found)


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


def _find_namespaces(names: RunNames | None) -> tuple[str, ...]:
    owns = names.owns_netns if names is not None else lambda n: is_project_netns(n) or is_testnet_netns(n)
    return tuple(sorted(n for n in netns.listnetns() if owns(n)))


def _netns_ids(namespaces: Iterable[str]) -> set[NsId]:
    ids = (netns_id(f"{NETNS_RUN_DIR}/{name}") for name in namespaces)
    return {i for i in ids if i is not None}


def _find_links(names: RunNames | None) -> tuple[str, ...]:
    owns = names.owns_link if names is not None else lambda n: is_project_link(n) or is_testnet_link(n)
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


def _find_nft_tables(names: RunNames | None) -> tuple[str, ...]:
    owns = names.owns_nft_table if names is not None else is_project_nft_table
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


def remove_pin_dir(path: str) -> None:
    """Delete PATH and everything under it: pinned BPF objects go by unlink, a bpffs mounted inside by unmounting."""
    if os.path.ismount(path):
        _shell.umount(path)  # takes the pins of that mount with it
    if not os.path.lexists(path):
        return
    if os.path.islink(path) or not stat.S_ISDIR(os.lstat(path).st_mode):
        os.unlink(path)
        return
    for entry in os.scandir(path):
        remove_pin_dir(entry.path)
    os.rmdir(path)
