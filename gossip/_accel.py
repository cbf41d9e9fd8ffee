"""Optional kernel acceleration for a node: the XDP fast path and the TC in-kernel broadcaster from ``bpf/``.

Acceleration never changes what a node does, only where work happens. When it cannot be had (no bcc, no kernel
headers, not root, no such interface, an interface whose XDP slot is taken, anything else that goes wrong while
opening it) the node says once, in one line, why, and runs in pure userspace; the details (a compiler log, a
traceback) go to the debug log.
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
        stack.enter_context(prog.attach(ifindex, mode=args.xdp_mode))
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
            stack.enter_context(prog.attach(ifindex))
            broadcaster = stack.enter_context(prog.sender(ifindex))
    return fastpath, broadcaster
