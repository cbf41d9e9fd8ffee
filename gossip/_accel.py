"""Optional kernel acceleration for a node: the XDP fast path and the TC in-kernel broadcaster from ``bpf/``.

Acceleration never changes what a node does, only where work happens. When it cannot be had (no bcc, no kernel
headers, not root, no such interface) the node says once, clearly, why, and runs in pure userspace.
"""

from __future__ import annotations

import contextlib
import logging
import socket

from ._wire import cluster_id

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
        except (OSError, bpf.BpfError) as e:
            log.warning("XDP fast path unavailable: %s; running in pure userspace with identical semantics", e)
            fastpath, broadcaster = None, None
        yield fastpath, broadcaster


def _open(stack, bpf, args, config):
    iface = args.xdp or "eth0"
    ifindex = socket.if_nametoindex(iface)
    if args.xdp_pin:
        fastpath = stack.enter_context(bpf.FastPathWriter(args.xdp_pin, ifindex))
        log.info("XDP fast path: maps pinned in %s for %s (ifindex %d)", args.xdp_pin, iface, ifindex)
    else:
        prog = stack.enter_context(bpf.FastPath.compile())
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
