"""Command line: ``python -m gossip node ...`` runs one node until SIGTERM/SIGINT, then leaves (it tells its peers,
which drop it at once); ``python -m gossip demo`` runs a small local cluster on loopback and narrates what it does.

A user's mistake (a bad value, an address that cannot be listened on, a path that cannot be used) is one line on
stderr naming it, exit status 2: values are checked by their argparse types, and what only the kernel can refuse
(an address in use) is named where it is tried. A bug of ours still shows its traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import logging
import os
import random
import signal
import stat
import sys

from . import _accel, protocols
from ._config import LOG_LEVELS, PROTOCOLS, NodeConfig

_D = NodeConfig()  # the defaults: NodeConfig is the one definition of node options (and validates them)
from ._node import Node
from ._wire import Identity
from .errors import GossipError, UsageError

log = logging.getLogger("gossip")


UNIX_PATH_MAX = 107  # sun_path is 108 bytes on Linux, one of them the terminating NUL
# what binding a listening socket refuses because of the address the user chose, not because of a bug
_LISTEN_ERRNOS = (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES, errno.EPERM)


class _Parser(argparse.ArgumentParser):
    """argparse, its errors in one line: ``prog: error: message`` (the usage it would print first is --help's)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def http_address(text: str) -> tuple[str, int] | str:
    """ADDR:PORT, or unix:PATH for a Unix socket (in a directory that exists, short enough for a socket, not a file
    that is not a socket: a stale socket left by a killed node is replaced, anything else refused)."""
    if text.startswith("unix:") and len(text) > 5:
        path = text[5:]
        directory = os.path.dirname(path) or "."
        if not os.path.isdir(directory):
            raise argparse.ArgumentTypeError(f"unix:{path}: the directory {directory} does not exist")
        if os.path.lexists(path) and not stat.S_ISSOCK(os.lstat(path).st_mode):
            raise argparse.ArgumentTypeError(f"unix:{path}: exists and is not a socket")
        if len(os.fsencode(path)) > UNIX_PATH_MAX:
            raise argparse.ArgumentTypeError(f"unix:{path}: longer than a socket path may be "
                                             f"({UNIX_PATH_MAX} bytes)")
        return path
    return endpoint(text)


def _where(http: tuple[str, int] | str) -> str:
    return f"unix:{http}" if isinstance(http, str) else f"{http[0]}:{http[1]}"


def endpoint(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    # ASCII digits only: "²".isdigit() is true and int("²") raises
    if not sep or not host or not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected ADDR:PORT, got {text!r}")
    return host, int(port)


def seed_endpoint(text: str) -> tuple[str, int]:
    """ADDR:PORT of a peer: ADDR an IPv4 address (peers are addressed by IP on the wire, never by host name)."""
    host, port = endpoint(text)
    try:
        Identity(name="", addr=host, port=port)
    except UsageError as e:
        raise argparse.ArgumentTypeError(f"expected ADDR:PORT with an IPv4 ADDR, got {text!r} ({e})") from None
    return host, port


def utf8_text(text: str) -> str:
    """An argument that must be valid UTF-8 (argv bytes that are not arrive as lone surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise argparse.ArgumentTypeError(f"must be valid UTF-8, got {text!r}") from None
    return text


def option_pair(text: str) -> tuple[str, object]:
    """NAME=VALUE of a protocol option: VALUE true/false, an integer, a number or else a string (the protocol's
    OPTIONS then check its type and range)."""
    name, eq, raw = utf8_text(text).partition("=")
    if not eq or not name:
        raise argparse.ArgumentTypeError(f"must be NAME=VALUE, got {text!r}")
    value: object = raw
    if raw in ("true", "false"):
        value = raw == "true"
    else:
        for parse in (int, float):
            try:
                value = parse(raw)
                break
            except ValueError:
                pass
    return name, value


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m gossip", description="A gossip node accelerated with eBPF.")
    sub = p.add_subparsers(dest="command", required=True)
    n = sub.add_parser("node", help="run one node until SIGTERM/SIGINT")
    n.add_argument("--name", required=True, type=utf8_text)
    n.add_argument("--addr", default=_D.listen_addr, help=f"IPv4 address to listen on (default {_D.listen_addr})")
    n.add_argument("--port", type=int, default=_D.listen_port)
    n.add_argument("--seed", type=seed_endpoint, action="append", default=[], metavar="ADDR:PORT",
                   help="a known node to contact (repeatable)")
    n.add_argument("--protocol", choices=PROTOCOLS, default=_D.protocol, help="the transport")
    n.add_argument("--membership", default=_D.membership, type=utf8_text, metavar="NAME|MODULE:NAME",
                   help=f"the membership protocol (default {_D.membership}; built in: "
                        f"{', '.join(sorted(protocols.BUILTIN))}; MODULE:NAME imports MODULE, which registers NAME)")
    n.add_argument("--option", type=option_pair, action="append", default=[], metavar="NAME=VALUE",
                   help="a setting of the membership protocol's own (repeatable; e.g. swim's lifeguard_lhm=false)")
    n.add_argument("--secret", action="append", default=[], type=utf8_text,
                   help="cluster secret (repeatable: the first signs, all verify)")
    n.add_argument("--cluster", default=_D.cluster, type=utf8_text, help="cluster name (its hash is the cluster id)")
    n.add_argument("--fanout", type=int, default=_D.fanout)
    n.add_argument("--cycle", type=float, default=_D.cycle_s, metavar="SECONDS")
    n.add_argument("--timeout", type=float, default=_D.timeout_s, metavar="SECONDS")
    n.add_argument("--buffer", type=int, default=_D.buffer, help="receive queue depth")
    n.add_argument("--max-packet", type=int, default=_D.max_packet_bytes, metavar="BYTES")
    n.add_argument("--private", default="", type=utf8_text, help="free-form private data announced with this node")
    n.add_argument("--http", type=http_address, metavar="ADDR:PORT|unix:PATH",
                   help="serve the JSON control API here (TCP, or a Unix socket)")
    n.add_argument("--events", metavar="FILE", help="append one JSON line per event to FILE")
    n.add_argument("--record-refreshes", action="store_true",
                   help="also log every accepted heartbeat (member_refreshed): for latency measurements")
    n.add_argument("--rng-seed", type=int, help="seed of the node's random generator (default: random)")
    n.add_argument("--log-level", choices=LOG_LEVELS, default=_D.log_level)
    n.add_argument("--state-dir", metavar="DIR",
                   help="keep the adopted metadata and the HLC mark in DIR, and restart from them (default: memory)")
    n.add_argument("--xdp", metavar="IFACE", help="attach the XDP fast path to IFACE (needs root and bcc)")
    n.add_argument("--xdp-mode", choices=("native", "generic"), default="native")
    n.add_argument("--xdp-entries", type=_accel.xdp_entries, default=_accel.DEFAULT_XDP_ENTRIES, metavar="N",
                   help="origins the fast path of --xdp remembers: at least the cluster's size "
                        f"(default {_accel.DEFAULT_XDP_ENTRIES})")
    n.add_argument("--xdp-pin", metavar="DIR", help="use fast-path maps pinned in DIR (attached by the testbed)")
    n.add_argument("--broadcast", action="store_true",
                   help="send rumors through the TC in-kernel broadcaster (UDP; with --xdp)")
    n.add_argument("--broadcast-pin", metavar="DIR", help="use broadcaster maps pinned in DIR (testbed)")
    n.add_argument("--kernel-heartbeats", action="store_true",
                   help="let the TC heartbeat plane take fresh heartbeats in the kernel (with --xdp; heartbeat "
                        "membership, UDP)")
    n.add_argument("--hbplane-pin", metavar="DIR",
                   help="use heartbeat-plane maps pinned in DIR (attached by the testbed; with --kernel-heartbeats)")
    sub.add_parser("demo", help="run a small local cluster on loopback and show it converge")
    return p


def _open_events(path: str):
    """PATH opened for appending records, one JSON line each. A process killed in the middle of a record leaves
    a torn line without its newline (the kernel stops a write at a page boundary when SIGKILL arrives); the next
    incarnation starts on a line of its own, so only the torn fragment is unreadable, not its first record."""
    f = open(path, "a", buffering=1)
    if f.tell() > 0:
        with open(path, "rb") as r:
            r.seek(-1, os.SEEK_END)
            if r.read(1) != b"\n":
                f.write("\n")
    return f


async def run_node(args) -> int:
    config = NodeConfig(fanout=args.fanout, cycle_s=args.cycle, timeout_s=args.timeout, buffer=args.buffer,
                        max_packet_bytes=args.max_packet,
                        secrets=tuple(s.encode() for s in args.secret) or (b"",), cluster=args.cluster,
                        protocol=args.protocol, membership=args.membership, listen_addr=args.addr,
                        listen_port=args.port, log_level=args.log_level, state_dir=args.state_dir,
                        options=tuple(args.option), kernel_heartbeats=args.kernel_heartbeats)
    try:
        events = _open_events(args.events) if args.events else None
    except OSError as e:
        raise UsageError(f"--events {args.events}: cannot open: {e.strerror}") from None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # SIGTERM and SIGINT end the wait below; node.close() then announces the leave (peers drop this node at once)
    # and waits at most _node.LEAVE_FLUSH_S for it to go out before the process exits. A second signal changes
    # nothing: the flush is bounded anyway.
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    with _accel.accelerators(args, config) as (fastpath, broadcaster), \
            _accel.heartbeat_plane(args, config, fastpath) as plane:
        node = Node(config, name=args.name, private=args.private.encode(), seeds=tuple(args.seed),
                    rng=random.Random(args.rng_seed), events=events, fastpath=fastpath, broadcaster=broadcaster,
                    record_refreshes=args.record_refreshes, plane=plane)
        runner = None
        try:
            try:
                await node.join()
            except OSError as e:
                if e.errno not in _LISTEN_ERRNOS:
                    raise
                raise UsageError(f"cannot listen on {config.listen_addr}:{config.listen_port}/{config.protocol}: "
                                 f"{os.strerror(e.errno)}") from None
            if args.http:
                from ._http import serve
                try:
                    runner = await serve(node, args.http)
                except OSError as e:
                    # strerror, not os.strerror(errno): a host name that does not resolve has a negative errno
                    raise UsageError(f"--http {_where(args.http)}: cannot listen: {e.strerror or e}") from None
                log.info("HTTP API on %s", args.http)
            await stop.wait()
            log.info("shutting down")
        finally:
            if runner is not None:
                runner.close()
                await runner.wait_closed()
            await node.close()
            if events is not None:
                events.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=getattr(args, "log_level", "info").upper(),
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        if args.command == "node":
            return asyncio.run(run_node(args))
        from ._demo import demo
        return demo()
    except GossipError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
