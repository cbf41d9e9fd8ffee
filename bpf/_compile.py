"""Whether eBPF can be used here, and compiling a program in this directory with bcc.

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

from .errors import CompileError, UnavailableError

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


def compile_program(c_file: str, functions: dict[str, str]):
    """Compile HERE/C_FILE and load FUNCTIONS ({name: "xdp" | "sched_cls"}) through the verifier.

    Returns (bpf, {name: fd}). Raises `CompileError` with bcc's log when compiling or loading fails.
    """
    require()
    import bcc

    kinds = {"xdp": bcc.BPF.XDP, "sched_cls": bcc.BPF.SCHED_CLS}
    with _captured_stderr() as log:
        try:
            b = bcc.BPF(src_file=str(HERE / c_file).encode(),
                        cflags=[f"-I{HERE}", "-Wno-compare-distinct-pointer-types"])
            fds = {name: b.load_func(name.encode(), kinds[kind]).fd for name, kind in functions.items()}
        except Exception as e:
            err = e
        else:
            err = None
    if err is not None:
        raise CompileError(f"{c_file}: {err}\n{log[0][-4000:]}") from err
    return b, fds
