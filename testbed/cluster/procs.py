"""Launching and owning the processes of a run (the gossip nodes, helpers) inside hosts or the root namespace.

A `ProcessGroup` starts each process in its own session (so a signal reaches the process and anything it spawned),
with ``XG_RUN_ID`` and ``XG_PROC_NAME`` in its environment (so `_cleanup` can find it if this process dies) and
its stdout and stderr appended to ``<log_dir>/<name>.stdout.log`` / ``.stderr.log`` (``log_dir``: ``<run_dir>/logs``
by default). Faults act on one
process by name: `kill` (SIGKILL), `pause`/`resume` (SIGSTOP/SIGCONT), `terminate` (SIGTERM, then SIGKILL after a
bound), `restart` (same argv, env and host; the logs go on). Leaving the ``with`` block stops everything in
``finally``: paused processes are resumed first (a stopped process never acts on SIGTERM), then SIGTERM, a bounded
wait, and SIGKILL for the rest.

This module never signals a process it did not start.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from ..net.topology import RUN_ID_ENV, check_run_id
from ..errors import DeployError, TopologyError

if TYPE_CHECKING:
    from ..net import Host

PROC_NAME_ENV = "XG_PROC_NAME"
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


class ManagedProcess:
    """One named process of a group and its current incarnation (`restart` replaces ``popen``)."""

    __slots__ = ("name", "argv", "env", "host", "stdout_path", "stderr_path", "popen", "starts", "paused")

    def __init__(
        self,
        *,
        name: str,
        argv: tuple[str, ...],
        env: Mapping[str, str],
        host: Host | None,
        stdout_path: Path,
        stderr_path: Path,
    ) -> None:
        self.name = name
        self.argv = argv
        self.env = dict(env)
        self.host = host
        self.stdout_path = stdout_path
        self.stderr_path = stderr_path
        self.popen: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.paused = False

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen is not None else None

    @property
    def returncode(self) -> int | None:
        """None while running; the exit status (negative: killed by that signal) once it ended."""
        return self.popen.poll() if self.popen is not None else None

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def __repr__(self) -> str:
        where = self.host.name if self.host is not None else "root"
        state = "paused" if self.paused and self.running else "running" if self.running else f"exit {self.returncode}"
        return f"<ManagedProcess {self.name} pid={self.pid} on {where} {state}>"


class ProcessGroup:
    """Owns the processes of one run; use as a context manager."""

    def __init__(self, run_id: str, run_dir: str | os.PathLike[str], *, term_timeout_s: float = 5.0,
                 log_dir: str | os.PathLike[str] | None = None) -> None:
        self.run_id = check_run_id(run_id)
        self.run_dir = Path(run_dir)
        self.log_dir = Path(log_dir) if log_dir is not None else self.run_dir / "logs"
        self.term_timeout_s = term_timeout_s
        self._procs: dict[str, ManagedProcess] = {}
        self._closed = False

    def __enter__(self) -> Self:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            self.close()
        except Exception as err:
            if exc is None:
                raise
            exc.add_note(f"stopping the processes of run {self.run_id} also failed: {err}")

    def __getitem__(self, name: str) -> ManagedProcess:
        try:
            return self._procs[name]
        except KeyError:
            raise TopologyError("name", f"no process named {name!r} in this group") from None

    def __contains__(self, name: object) -> bool:
        return name in self._procs

    def __iter__(self) -> Iterator[ManagedProcess]:
        return iter(list(self._procs.values()))

    def __len__(self) -> int:
        return len(self._procs)

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        host: Host | None = None,
        env: Mapping[str, str] | None = None,
    ) -> ManagedProcess:
        """Start ARGV as process NAME inside HOST (None: the root namespace), with ENV added to ours."""
        if self._closed:
            raise DeployError(f"the process group of run {self.run_id} is closed")
        if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
            raise TopologyError("name", f"{name!r} is not 1-64 of [A-Za-z0-9_.-] starting alphanumeric")
        if name in self._procs:
            raise TopologyError("name", f"a process named {name!r} already exists; use restart()")
        if not argv or not all(isinstance(a, str) for a in argv):
            raise TopologyError("argv", f"must be a non-empty sequence of strings, not {argv!r}")
        if host is not None and host.run_id != self.run_id:
            raise TopologyError("host", f"host {host.name} belongs to run {host.run_id}, not {self.run_id}")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        proc = ManagedProcess(
            name=name,
            argv=tuple(argv),
            env={**(env or {}), RUN_ID_ENV: self.run_id, PROC_NAME_ENV: name},
            host=host,
            stdout_path=self.log_dir / f"{name}.stdout.log",
            stderr_path=self.log_dir / f"{name}.stderr.log",
        )
        self._procs[name] = proc
        self._launch(proc)
        return proc

    def signal(self, name: str, sig: int) -> None:
        """Send SIG to process NAME and everything in its session's process group."""
        proc = self[name]
        if not proc.running:
            raise DeployError(f"process {name} is not running (exit {proc.returncode})")
        _signal_group(proc, sig)

    def kill(self, name: str, *, timeout_s: float = 5.0) -> int:
        """SIGKILL process NAME; returns its exit status once it is gone."""
        proc = self[name]
        if proc.running:
            _signal_group(proc, signal.SIGKILL)
        return self._reap(proc, timeout_s)

    def pause(self, name: str) -> None:
        """SIGSTOP process NAME (it keeps its state and sockets, but answers nothing)."""
        self.signal(name, signal.SIGSTOP)
        self[name].paused = True

    def resume(self, name: str) -> None:
        """SIGCONT process NAME."""
        self.signal(name, signal.SIGCONT)
        self[name].paused = False

    def terminate(self, name: str, *, timeout_s: float | None = None) -> int:
        """SIGTERM process NAME (resumed first if paused), SIGKILL after TIMEOUT_S; returns its exit status."""
        self._stop([self[name]], self.term_timeout_s if timeout_s is None else timeout_s)
        return self[name].returncode  # type: ignore[return-value]

    def restart(self, name: str, *, timeout_s: float | None = None) -> ManagedProcess:
        """Stop process NAME if it runs, then start it again with the same argv, env and host."""
        proc = self[name]
        if self._closed:
            raise DeployError(f"the process group of run {self.run_id} is closed")
        if proc.running:
            self._stop([proc], self.term_timeout_s if timeout_s is None else timeout_s)
        self._launch(proc)
        return proc

    def wait(self, name: str, *, timeout_s: float) -> int:
        """Wait up to TIMEOUT_S for process NAME to exit on its own; returns its exit status."""
        return self._reap(self[name], timeout_s)

    def close(self) -> None:
        """Stop every process still running (resume, SIGTERM, bounded wait, SIGKILL); idempotent."""
        self._closed = True
        self._stop(list(self._procs.values()), self.term_timeout_s)

    def _launch(self, proc: ManagedProcess) -> None:
        env = {**os.environ, **proc.env}
        with open(proc.stdout_path, "ab") as out, open(proc.stderr_path, "ab") as err:
            kwargs: dict[str, Any] = {
                "stdin": subprocess.DEVNULL,
                "stdout": out,
                "stderr": err,
                "env": env,
                "start_new_session": True,
            }
            try:
                if proc.host is not None:
                    popen = proc.host.popen(list(proc.argv), **kwargs)
                else:
                    popen = subprocess.Popen(list(proc.argv), **kwargs)
            except OSError as exc:
                raise DeployError(f"cannot start process {proc.name} ({proc.argv[0]}): {exc}") from exc
        proc.popen = popen
        proc.starts += 1
        proc.paused = False

    def _stop(self, procs: Sequence[ManagedProcess], timeout_s: float) -> None:
        running = [p for p in procs if p.running]
        for proc in running:
            _signal_group(proc, signal.SIGCONT)
            proc.paused = False
            _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while any(p.running for p in running) and time.monotonic() < deadline:
            time.sleep(0.01)
        stubborn = [p for p in running if p.running]
        for proc in stubborn:
            _signal_group(proc, signal.SIGKILL)
        for proc in stubborn:
            self._reap(proc, 5.0)

    @staticmethod
    def _reap(proc: ManagedProcess, timeout_s: float) -> int:
        assert proc.popen is not None
        try:
            return proc.popen.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise DeployError(f"process {proc.name} (pid {proc.pid}) still running after {timeout_s} s") from None


def _signal_group(proc: ManagedProcess, sig: int) -> None:
    """Signal PROC's process group (it leads its own session), falling back to the process alone."""
    assert proc.popen is not None
    if proc.popen.poll() is not None:
        return
    try:
        os.killpg(proc.popen.pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        proc.popen.send_signal(sig)
