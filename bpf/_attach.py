"""Attaching a loaded program to an interface (XDP, or a clsact direct-action filter) and always detaching it.

Each attachment is a context manager whose teardown runs in `finally` and leaves the interface as it found it: an
XDP slot that is taken is refused rather than replaced, detaching removes only our own program, and a clsact
qdisc is removed only if this process added it and no filter remains on it. Netlink goes through pyroute2; a
handle opened inside a namespace keeps that namespace, so the caller's thread is moved only while opening it.

A teardown in `finally` does not run when the process is SIGKILLed or crashes hard. With ``link=True`` an
attachment is a BPF link instead (BPF_LINK_CREATE: XDP, or tcx at TC ingress/egress, kernel >= 6.6): the kernel
detaches the program when the last fd of the link closes, i.e. when the process that holds it ends, however it
ends. A tcx program runs before any clsact filter of its hook and its return codes mean the same (TC_ACT_UNSPEC
passes the packet on to the next program and the clsact filters, TC_ACT_SHOT drops it); a kernel without links of
that kind gets the netlink attachment, said once in the log. Links suit a process that attaches for itself (a
standalone node); the testbed, which attaches from its own process into many namespaces and outlives them, keeps
netlink and its own cleanup.

Every handle this module makes is made, used and closed on one thread of its own (`_on_netlink_thread`): pyroute2's
synchronous API drives an asyncio loop of its own, which cannot run on a thread already running one (a node
attaching from inside its loop got "This event loop is already running"), and it keeps per-thread state, so a
handle used from another thread would open a second socket in that thread's namespace.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import errno
import logging
import os
import threading

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from . import _sys
from ._netns import entered, netns_path
from .errors import AttachError, BpfUsageError, MapError

log = logging.getLogger("bpf")

XDP_FLAGS_UPDATE_IF_NOEXIST = 1 << 0
XDP_FLAGS_SKB_MODE = 1 << 1
XDP_FLAGS_DRV_MODE = 1 << 2
XDP_FLAGS_REPLACE = 1 << 4
XDP_MODES = {"native": XDP_FLAGS_DRV_MODE, "generic": XDP_FLAGS_SKB_MODE}

TC_PARENTS = {"ingress": 0xFFFFFFF2, "egress": 0xFFFFFFF3}
TC_DIRECTIONS = {"ingress": ("ingress",), "egress": ("egress",), "both": ("ingress", "egress")}
TCX_ATTACH_TYPES = {"ingress": _sys.BPF_TCX_INGRESS, "egress": _sys.BPF_TCX_EGRESS}

# What BPF_LINK_CREATE fails with on a kernel that has no link of the kind asked for (no tcx before 6.6, no XDP
# link before 5.9, no BPF_LINK_CREATE at all before 5.7): the attachment falls back to netlink.
_NO_SUCH_LINK = (errno.EINVAL, errno.EOPNOTSUPP, 524)  # 524: ENOTSUPP, not in the errno module
_fallback_said: set[str] = set()

# The filter priority of each program on a clsact hook. The testbed puts the broadcaster on the node's own
# interface and the fault programs on the bridge-side end of its veth, so they never share a hook there; where
# someone attaches both to one hook, the broadcaster runs first and each copy it emits is judged on its own.
PRIO_BROADCAST = 10
PRIO_FAULTS = 20
_FILTER_HANDLE = 1

# clsact qdiscs this process added, by (namespace inode, ifindex): how many of our filters still use each
_clsact_users: dict[tuple[int, int], int] = {}
_clsact_lock = threading.Lock()

_netlink_pool: concurrent.futures.ThreadPoolExecutor | None = None
_netlink_pool_lock = threading.Lock()
_on_pool = threading.local()


def _mark_netlink_thread() -> None:
    _on_pool.active = True


def _forget_pool_in_child() -> None:
    """A forked child has no netlink thread (only the forking thread is copied): it makes its own when needed."""
    global _netlink_pool, _netlink_pool_lock
    _netlink_pool, _netlink_pool_lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_pool_in_child)


def _on_netlink_thread(fn, *args, **kwargs):
    """FN(*ARGS, **KWARGS) run on this process's netlink thread (see the module docstring); its exception re-raised
    here. Calls are serialised: each is a few netlink messages."""
    global _netlink_pool
    if getattr(_on_pool, "active", False):  # already there: a nested call must not wait on itself
        return fn(*args, **kwargs)
    with _netlink_pool_lock:
        if _netlink_pool is None:
            _netlink_pool = concurrent.futures.ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="bpf-netlink", initializer=_mark_netlink_thread)
        pool = _netlink_pool
    return pool.submit(fn, *args, **kwargs).result()


def open_iproute(netns: str | None) -> IPRoute:
    """An IPRoute handle whose socket lives in NETNS (None: the calling thread's namespace), for use on the calling
    thread only (which must not be running an asyncio loop)."""
    with entered(netns):
        return IPRoute()


class _Handle:
    """An IPRoute handle in one namespace that lives on the netlink thread: its methods are called there, and what
    they return is read there (pyroute2 returns lazy iterators that drive its loop as they are read). NETNS None
    means the namespace of the thread that makes the handle."""

    def __init__(self, netns: str | None) -> None:
        if netns is None:  # the caller's namespace, not the netlink thread's (the caller may have setns'd)
            netns = f"/proc/{os.getpid()}/task/{threading.get_native_id()}/ns/net"
        self._ipr = _on_netlink_thread(open_iproute, netns)

    def __getattr__(self, name: str):
        if name.startswith("_"):  # only IPRoute's public methods are forwarded (and never _ipr itself)
            raise AttributeError(name)
        method = getattr(self._ipr, name)

        def call(*args, **kwargs):
            return _on_netlink_thread(_read, method, args, kwargs)
        return call

    def close(self) -> None:
        _on_netlink_thread(self._ipr.close)


def _read(method, args, kwargs):
    out = method(*args, **kwargs)
    return list(out) if hasattr(out, "__next__") else out


def _ns_key(netns: str | None, ifindex: int) -> tuple[int, int]:
    path = netns_path(netns) if netns else "/proc/thread-self/ns/net"
    return os.stat(path).st_ino, ifindex


def _gone(e: NetlinkError) -> bool:
    return e.code in (errno.ENODEV, errno.ENOENT, errno.EINVAL)


def _link_create(prog_fd: int, ifindex: int, attach_type: int, flags: int, netns: str | None,
                 kind: str) -> int | None:
    """A link's fd, or None when this kernel has no such link (said once per KIND in the log): the caller attaches
    through netlink instead. Other failures raise `MapError`."""
    try:
        with entered(netns):
            return _sys.link_create(prog_fd, ifindex, attach_type, flags)
    except MapError as e:
        if e.errno not in _NO_SUCH_LINK:
            raise
        if kind not in _fallback_said:
            _fallback_said.add(kind)
            log.warning("this kernel has no %s links (%s): attaching through netlink, so the program stays attached "
                        "if the process dies without detaching it", kind, os.strerror(e.errno))
        return None


def tcx_prog_ids(ifindex: int, netns: str | None = None) -> dict[str, list[int]]:
    """The ids of the programs attached by tcx link to each TC hook of the interface ([] when none; also on a
    kernel without tcx)."""
    out = {}
    with entered(netns):
        for direction, attach_type in TCX_ATTACH_TYPES.items():
            try:
                out[direction] = _sys.prog_query(ifindex, attach_type)
            except MapError as e:
                if e.errno not in _NO_SUCH_LINK:
                    raise
                out[direction] = []
    return out


def xdp_prog_id(ifindex: int, netns: str | None = None) -> int:
    """The id of the XDP program on the interface, 0 if none."""
    ipr = _Handle(netns)
    try:
        xdp = ipr.get_links(ifindex)[0].get_attr("IFLA_XDP")
        return (xdp.get_attr("IFLA_XDP_PROG_ID") or 0) if xdp is not None else 0
    finally:
        ipr.close()


@contextlib.contextmanager
def xdp_attached(prog_fd: int, ifindex: int, *, netns: str | None = None, mode: str = "native",
                 link: bool = False):
    """XDP program PROG_FD on interface IFINDEX (in NETNS) for the duration of the block; with LINK by a BPF link,
    which the kernel also removes when this process dies (see the module docstring)."""
    if mode not in XDP_MODES:
        raise BpfUsageError(f"mode: must be one of {sorted(XDP_MODES)}, got {mode!r}")
    flags = XDP_MODES[mode]
    if link:
        try:
            link_fd = _link_create(prog_fd, ifindex, _sys.BPF_XDP, flags, netns, "XDP")
        except MapError as e:
            why = "another XDP program is attached" if e.errno == errno.EBUSY else os.strerror(e.errno)
            raise AttachError(f"XDP ({mode}) link on ifindex {ifindex} in {netns or 'this namespace'}: {why}") \
                from None
        if link_fd is not None:
            try:
                yield
            finally:
                os.close(link_fd)
            return
    ipr = _Handle(netns)
    try:
        try:
            ipr.link("set", index=ifindex, xdp={"attrs": [("IFLA_XDP_FD", prog_fd),
                                                          ("IFLA_XDP_FLAGS", flags | XDP_FLAGS_UPDATE_IF_NOEXIST)]})
        except NetlinkError as e:
            why = "another XDP program is attached" if e.code == errno.EBUSY else os.strerror(e.code)
            raise AttachError(f"XDP ({mode}) on ifindex {ifindex} in {netns or 'this namespace'}: {why}") from None
        try:
            yield
        finally:
            # REPLACE + EXPECTED_FD: remove the program only if it is still ours
            try:
                ipr.link("set", index=ifindex, xdp={"attrs": [("IFLA_XDP_FD", -1),
                                                              ("IFLA_XDP_FLAGS", flags | XDP_FLAGS_REPLACE),
                                                              ("IFLA_XDP_EXPECTED_FD", prog_fd)]})
            except NetlinkError as e:
                if not _gone(e) and e.code != errno.EEXIST:
                    raise AttachError(f"detaching XDP from ifindex {ifindex}: {os.strerror(e.code)}") from None
    finally:
        ipr.close()


def _filters(ipr: _Handle, ifindex: int, parent: int) -> list:
    return [f for f in ipr.get_filters(index=ifindex, parent=parent) if f.get_attr("TCA_KIND")]


def tc_filters(ifindex: int, netns: str | None = None) -> dict[str, int]:
    """How many filters each clsact hook of the interface has (0 when there is no clsact)."""
    ipr = _Handle(netns)
    try:
        return {d: len(_filters(ipr, ifindex, p)) for d, p in TC_PARENTS.items()}
    except NetlinkError:
        return {d: 0 for d in TC_PARENTS}
    finally:
        ipr.close()


@contextlib.contextmanager
def tc_attached(prog_fds: dict[str, int], ifindex: int, *, netns: str | None = None, prio: int, name: str,
                link: bool = False):
    """Direct-action cls_bpf filters on the clsact hooks of IFINDEX: PROG_FDS maps "ingress"/"egress" to a fd.
    With LINK, tcx links instead (PRIO then plays no part: a tcx program runs before every clsact filter)."""
    if link:
        with contextlib.ExitStack() as links:
            for direction, fd in prog_fds.items():
                try:
                    link_fd = _link_create(fd, ifindex, TCX_ATTACH_TYPES[direction], 0, netns, "tcx")
                except MapError as e:
                    raise AttachError(f"tcx {direction} link {name} on ifindex {ifindex}: "
                                      f"{os.strerror(e.errno)}") from None
                if link_fd is None:
                    break
                links.callback(os.close, link_fd)
            else:
                yield
                return
        # no tcx here: the links made so far (none, on any real kernel) are closed; netlink instead
    key = _ns_key(netns, ifindex)
    ipr = _Handle(netns)
    added: list[int] = []
    counted = False
    try:
        with _clsact_lock:
            try:
                ipr.tc("add", "clsact", index=ifindex)
                _clsact_users[key] = 0
            except NetlinkError as e:
                if e.code != errno.EEXIST:
                    raise AttachError(f"clsact on ifindex {ifindex}: {os.strerror(e.code)}") from None
            if key in _clsact_users:
                _clsact_users[key] += 1
                counted = True
        for direction, fd in prog_fds.items():
            parent = TC_PARENTS[direction]
            try:
                ipr.tc("add-filter", "bpf", index=ifindex, fd=fd, name=name, parent=parent, prio=prio,
                       handle=_FILTER_HANDLE, classid=1, direct_action=True)
            except NetlinkError as e:
                raise AttachError(f"tc {direction} filter {name} (prio {prio}) on ifindex {ifindex}: "
                                  f"{os.strerror(e.code)}") from None
            added.append(parent)
        yield
    finally:
        try:
            for parent in added:
                try:
                    ipr.tc("del-filter", "bpf", index=ifindex, parent=parent, prio=prio, handle=_FILTER_HANDLE)
                except NetlinkError as e:
                    if not _gone(e):
                        raise AttachError(f"removing tc filter {name} from ifindex {ifindex}: "
                                          f"{os.strerror(e.code)}") from None
            with _clsact_lock:
                if counted:
                    _clsact_users[key] -= 1
                    if _clsact_users[key] == 0:
                        del _clsact_users[key]
                        try:
                            if not any(_filters(ipr, ifindex, p) for p in TC_PARENTS.values()):
                                ipr.tc("del", "clsact", index=ifindex)
                        except NetlinkError as e:
                            if not _gone(e):
                                raise AttachError(f"removing clsact from ifindex {ifindex}: "
                                                  f"{os.strerror(e.code)}") from None
        finally:
            ipr.close()


def pin_maps(maps: dict[str, int], pin_dir: str) -> list[str]:
    """Pin each map fd under PIN_DIR (which must be on a bpffs); returns the paths created."""
    os.makedirs(pin_dir, mode=0o700, exist_ok=True)
    paths = []
    try:
        for name, fd in maps.items():
            path = os.path.join(pin_dir, name)
            _sys.obj_pin(fd, path)
            paths.append(path)
    except BaseException:
        _sys.unpin(paths, pin_dir)
        raise
    return paths
