"""Whether eBPF can be used here, compiling a program in this directory with bcc, and `PinnedProgram`: a
compiled program with its maps pinned, the base of `FastPath` and `Broadcaster`.

bcc is imported only inside `compile_program`, so processes that merely share maps (a node) never load it.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import sys
import tempfile
from pathlib import Path

from .errors import BpfUsageError, CompileError, UnavailableError

HERE = Path(__file__).resolve().parent


@functools.cache
def available() -> tuple[bool, str]:
    """(True, "") when this process can compile and attach the programs, else (False, the reason)."""
    if os.geteuid() != 0:
        return False, "eBPF needs root (or CAP_BPF + CAP_NET_ADMIN); running as uid %d" % os.geteuid()
    if importlib.util.find_spec("bcc") is None:
        return False, "bcc is not importable (install the python3-bpfcc Debian package; see scripts/install.sh)"
    release = os.uname().release
    build = Path("/lib/modules") / release / "build" / "include"
    if not build.is_dir() and not Path("/sys/kernel/kheaders.tar.xz").exists():
        return False, (f"no kernel headers for {release}: link /lib/modules/{release}/build and source to "
                       "Debian's linux-headers (scripts/install.sh does it)")
    return True, ""


def require() -> None:
    ok, why = available()
    if not ok:
        raise UnavailableError(why)


@contextlib.contextmanager
def _captured_stderr():
    """bcc prints compiler and verifier logs on fd 2; capture them for the error message."""
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(tmp.fileno(), 2)
        log = []
        try:
            yield log
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            log.append(tmp.read().decode(errors="replace"))


def compile_program(c_file: str, functions: dict[str, str], defines: dict[str, int] | None = None):
    """Compile HERE/C_FILE and load FUNCTIONS ({name: "xdp" | "sched_cls"}) through the verifier.

    DEFINES are the program's tunables ({"FP_MAX_HEARTBEATS": 262144}), passed as -D flags: the C keeps its
    defaults under #ifndef and its source is never templated. Returns (bpf, {name: fd}). Raises `CompileError`
    with bcc's log when compiling or loading fails.
    """
    require()
    import bcc

    kinds = {"xdp": bcc.BPF.XDP, "sched_cls": bcc.BPF.SCHED_CLS}
    flags = [f"-I{HERE}", "-Wno-compare-distinct-pointer-types"]
    for name, value in (defines or {}).items():
        if not (name.isidentifier() and isinstance(value, int) and not isinstance(value, bool)):
            raise BpfUsageError(f"{c_file}: a define must be NAME=integer, got {name!r}={value!r}")
        flags.append(f"-D{name}={value}")
    with _captured_stderr() as log:
        try:
            b = bcc.BPF(src_file=str(HERE / c_file).encode(), cflags=flags)
            fds = {name: b.load_func(name.encode(), kinds[kind]).fd for name, kind in functions.items()}
        except Exception as e:
            err = e
        else:
            err = None
    if err is not None:
        raise CompileError(f"{c_file}: {err}\n{log[0][-4000:]}") from err
    return b, fds


class PinnedProgram:
    """One compiled program whose maps are pinned to a bpffs directory, for nodes in other processes to open.

    What `FastPath` and `Broadcaster` share: compile once, pin the maps, and on `close` (or leaving the `with`
    block) unpin them and release the program, which stays loaded while still attached somewhere. A subclass names
    its C file, its program and section, its pin-directory kind and its maps, and releases what it holds itself in
    `_release`.
    """

    C_FILE: str
    PROGRAM: str
    SECTION: str  # "xdp" or "sched_cls"
    KIND: str  # in the pin directory's name
    MAPS: tuple[str, ...]
    PROGRAMS: dict[str, str] | None = None  # several programs ({name: section}); PROGRAM is the one attached

    def __init__(self, bpf, prog_fd: int, pin_dir: str) -> None:
        self._bpf = bpf
        self.prog_fd = prog_fd
        self.pin_dir = pin_dir
        self.map_fds = {name: bpf[name.encode()].map_fd for name in self.MAPS}
        self._pins: list[str] = []

    @classmethod
    def compile(cls, *, pin_dir: str | None = None, defines: dict[str, int] | None = None):
        """Compile and load the program (~2 s, ~150 MB: do it once per testbed) and pin its maps to PIN_DIR.

        PIN_DIR defaults to a fresh directory under /run/xdp-gossip/bpffs (a bpffs mounted there if needed).
        DEFINES are the program's load-time tunables (see `compile_program`).
        """
        from . import _attach, _sys  # netlink only here: a node that opens the pins never needs it

        bpf, fds = compile_program(cls.C_FILE, cls.PROGRAMS or {cls.PROGRAM: cls.SECTION}, defines)
        pin_dir = _sys.prepare_pin_dir(pin_dir, cls.KIND)
        self = cls(bpf, fds[cls.PROGRAM], pin_dir)
        try:
            self._link(fds)
            self._pins = _attach.pin_maps(self.map_fds, pin_dir)
        except BaseException:
            self.close()
            raise
        return self

    def _link(self, fds: dict[str, int]) -> None:
        """After the programs FDS ({name: fd}) are loaded, before the maps are pinned: what a subclass of several
        programs joins up (the heartbeat plane's tail calls). Nothing for one program."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Unpin the maps and release the program (it stays loaded while still attached somewhere)."""
        from . import _sys

        _sys.unpin(self._pins, self.pin_dir)
        self._pins = []
        self._release()
        if self._bpf is not None:
            self._bpf.cleanup()
            self._bpf = None

    def _release(self) -> None:
        """What a subclass holds beyond the program and its maps, released before the program."""
