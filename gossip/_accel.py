"""Optional kernel acceleration for a node: the XDP fast path and the TC in-kernel broadcaster from ``bpf/``.

Acceleration never changes what a node does, only where work happens. When it cannot be had (no bcc, no kernel
headers, not root, no such interface) the node says once, clearly, why, and runs in pure userspace.
"""

from __future__ import annotations

import contextlib
import logging
import socket

log = logging.getLogger("gossip")


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
    with contextlib.ExitStack() as stack:
        try:
            fastpath, broadcaster = _open(stack, bpf, args, config)
        except (OSError, bpf.BpfError) as e:
            log.warning("XDP fast path unavailable: %s; running in pure userspace with identical semantics", e)
            fastpath, broadcaster = None, None
        yield fastpath, broadcaster


def _open(stack, bpf, args, config):
    iface = args.xdp or "eth0"
    ifindex = socket.if_nametoindex(iface)
    if args.xdp_pin:
        fastpath = stack.enter_context(bpf.FastPathWriter.open_pinned(args.xdp_pin, ifindex))
        broadcaster = bpf.BroadcastSender.open_pinned(args.xdp_pin, ifindex) if args.broadcast else None
        log.info("XDP fast path: using maps pinned in %s for %s (ifindex %d)", args.xdp_pin, iface, ifindex)
        return fastpath, broadcaster
    fastpath = stack.enter_context(bpf.standalone_fastpath(ifindex, cluster=config.cluster,
                                                           port=config.listen_port, mode=args.xdp_mode))
    broadcaster = stack.enter_context(bpf.standalone_broadcaster(ifindex)) if args.broadcast else None
    log.info("XDP fast path attached to %s (ifindex %d, %s mode)", iface, ifindex, args.xdp_mode)
    return fastpath, broadcaster
