"""Running a few calls inside another network namespace, on the calling thread only.

setns(2) moves just the calling thread, so the rest of the process (and bcc's state) stays where it is; sockets
and netlink handles opened inside keep the namespace after the thread returns.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os

from .errors import AttachError

CLONE_NEWNET = 0x40000000
NETNS_RUN_DIR = "/var/run/netns"

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def netns_path(netns: str) -> str:
    """A namespace given by name (as `ip netns` lists it) or by path (e.g. /proc/PID/ns/net)."""
    return netns if "/" in netns else os.path.join(NETNS_RUN_DIR, netns)


def _setns(fd: int, what: str) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise AttachError(f"setns({what}): {os.strerror(err)}")


@contextlib.contextmanager
def entered(netns: str | None):
    """Run the body with the calling thread in NETNS (None: stay where we are)."""
    if netns is None:
        yield
        return
    path = netns_path(netns)
    try:
        target = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise AttachError(f"network namespace {netns!r}: {e.strerror}") from None
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        _setns(target, path)
        try:
            yield
        finally:
            _setns(home, "back to the original namespace")
    finally:
        os.close(target)
        os.close(home)
