"""Optional kernel acceleration for a node: the XDP fast path, the TC in-kernel broadcaster and the TC heartbeat
plane (``--kernel-heartbeats``) from ``bpf/``.

Acceleration never changes what a node does, only where work happens. When it cannot be had (no bcc, no kernel
headers, not root, no such interface, an interface whose XDP slot is taken, anything else that goes wrong while
opening it) the node says once, in one line, why, and runs in pure userspace; the details (a compiler log, a
traceback) go to the debug log.

A node that compiles its own programs (``--xdp IFACE`` without pins) attaches them by BPF link (XDP, tcx): the
kernel detaches them when the node's process ends, also when it is SIGKILLed or crashes, where no `finally` runs.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import socket

from ._wire import cluster_id

log = logging.getLogger("gossip")

# The origins a lone node's fast path remembers (--xdp-entries): its heartbeat map is sized from it when the
# program is loaded. Beyond it the LRU evicts and duplicates reach the node (counted: hb_evicted in /stats).
DEFAULT_XDP_ENTRIES = 4096
MAX_XDP_ENTRIES = 1 << 24


def xdp_entries(text: str) -> int:
    """The argparse type of --xdp-entries: an integer 1..MAX_XDP_ENTRIES."""
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= MAX_XDP_ENTRIES:
        raise argparse.ArgumentTypeError(f"expected an integer 1..{MAX_XDP_ENTRIES}, got {text!r}")
    return int(text)


@contextlib.contextmanager
def accelerators(args, config):
    """Yield (fastpath_sink, broadcast_sink) for a node run from the CLI; either may be None."""
    if not (args.xdp or args.xdp_pin):
        if args.broadcast:
            log.warning("--broadcast needs --xdp or --xdp-pin; sending one datagram per target")
        yield None, None
        return
    try:
        import bpf
    except ImportError as e:  # the bpf package is part of the project; this only happens in odd installs
        log.warning("XDP fast path unavailable (%s); running in pure userspace", e)
        yield None, None
        return
    ok, why = (True, "") if args.xdp_pin else bpf.available()
    if not ok:
        log.warning("XDP fast path unavailable: %s; running in pure userspace with identical semantics", why)
        yield None, None
        return
    if config.protocol != "udp":
        log.warning("the XDP fast path parses UDP only; with protocol %s the node runs in pure userspace",
                    config.protocol)
        yield None, None
        return
    with contextlib.ExitStack() as stack:
        try:
            with contextlib.ExitStack() as attempt:  # a failed attempt undoes its own partial attachments
                fastpath, broadcaster = _open(attempt, bpf, args, config)
                stack.push(attempt.pop_all())
        except Exception as e:  # whatever it was, the node runs without acceleration (KeyboardInterrupt still ends it)
            log.warning("XDP fast path unavailable: %s; running in pure userspace with identical semantics",
                        _one_line(e, expected=isinstance(e, (OSError, bpf.BpfError))))
            log.debug("opening the accelerators failed", exc_info=True)
            fastpath, broadcaster = None, None
        yield fastpath, broadcaster


def _one_line(e: Exception, *, expected: bool) -> str:
    """E's first line (a compile error carries bcc's whole log after it); an unexpected kind is named."""
    text = (str(e).strip().splitlines() or [""])[0]
    if expected and text:
        return text
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _open(stack, bpf, args, config):
    iface = args.xdp or "eth0"
    try:
        ifindex = socket.if_nametoindex(iface)
    except OSError as e:
        raise bpf.BpfUsageError(f"interface {iface}: {e.strerror or 'not found'}") from None
    if args.xdp_pin:
        fastpath = stack.enter_context(bpf.FastPathWriter(args.xdp_pin, ifindex))
        log.info("XDP fast path: maps pinned in %s for %s (ifindex %d)", args.xdp_pin, iface, ifindex)
    else:
        # one interface; its node hears from up to --xdp-entries origins
        prog = stack.enter_context(bpf.FastPath.compile(
            nodes=1, members=getattr(args, "xdp_entries", DEFAULT_XDP_ENTRIES)))
        stack.enter_context(prog.attach(ifindex, mode=args.xdp_mode, link=True))
        prog.configure(ifindex, cluster_id(config.cluster), config.listen_port)
        fastpath = stack.enter_context(prog.writer(ifindex))
        log.info("XDP fast path attached to %s (ifindex %d, %s mode)", iface, ifindex, args.xdp_mode)
    fastpath.reset()  # this process has accepted nothing yet: forget what an earlier one accepted
    broadcaster = None
    if args.broadcast:
        if config.protocol != "udp":
            log.warning("--broadcast works with UDP only; sending one datagram per target")
        elif args.broadcast_pin:
            broadcaster = stack.enter_context(bpf.BroadcastSender(args.broadcast_pin, ifindex))
        else:
            prog = stack.enter_context(bpf.Broadcaster.compile())
            stack.enter_context(prog.attach(ifindex, link=True))
            broadcaster = stack.enter_context(prog.sender(ifindex))
    return fastpath, broadcaster


@contextlib.contextmanager
def heartbeat_plane(args, config, fastpath):
    """Yield the heartbeat plane's writer (`bpf.hbplane.PlaneWriter`) for the node's interface when
    ``config.kernel_heartbeats`` asks for it and it can be had, else None (after one warning line saying why).

    Standalone (``--xdp IFACE``): compiled and attached at TC ingress of IFACE here, for this node alone. With
    ``--hbplane-pin DIR`` the testbed compiled it once and attached it to every node's interface: the node only
    opens the pinned maps and writes its own entries."""
    if not config.kernel_heartbeats:
        yield None
        return
    if fastpath is None:
        if not (args.xdp or args.xdp_pin):  # otherwise the fast path's own line said why the node runs without
            log.warning("kernel heartbeat plane unavailable: it needs the XDP fast path (--xdp IFACE); "
                        "heartbeats handled in userspace")
        yield None
        return
    from . import _plane

    why = _plane.refusal(config)
    if why is not None:
        log.warning("kernel heartbeat plane unavailable: %s; heartbeats handled in userspace", why)
        yield None
        return
    import bpf

    with contextlib.ExitStack() as stack:
        try:
            with contextlib.ExitStack() as attempt:  # a failed attempt undoes its own partial attachment
                writer = _open_plane(attempt, args)
                stack.push(attempt.pop_all())
        except Exception as e:
            log.warning("kernel heartbeat plane unavailable: %s; heartbeats handled in userspace",
                        _one_line(e, expected=isinstance(e, (OSError, bpf.BpfError))))
            log.debug("opening the heartbeat plane failed", exc_info=True)
            writer = None
        yield writer


def _open_plane(stack, args):
    from bpf.hbplane import HeartbeatPlane, PlaneWriter

    iface = args.xdp or "eth0"
    ifindex = socket.if_nametoindex(iface)
    pin = getattr(args, "hbplane_pin", None)
    if pin:
        writer = stack.enter_context(PlaneWriter.from_pin(pin, ifindex))
        log.info("heartbeat plane: maps pinned in %s for %s (ifindex %d)", pin, iface, ifindex)
        return writer
    plane = stack.enter_context(HeartbeatPlane.compile(nodes=1))
    stack.enter_context(plane.attach(ifindex, link=True))
    writer = stack.enter_context(plane.writer(ifindex))
    log.info("heartbeat plane attached to %s (ifindex %d, TC ingress)", iface, ifindex)
    return writer
