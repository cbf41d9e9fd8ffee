"""Command line: ``python -m gossip node ...`` runs one node until SIGTERM/SIGINT; ``python -m gossip demo``
runs a small local cluster on loopback and narrates what it does."""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import signal
import sys

from . import _accel
from ._config import LOG_LEVELS, PROTOCOLS, NodeConfig

_D = NodeConfig()  # the defaults: NodeConfig is the one definition of node options (and validates them)
from ._node import Node
from ._wire import Identity
from .errors import GossipError, UsageError

log = logging.getLogger("gossip")


def http_address(text: str) -> tuple[str, int] | str:
    """ADDR:PORT, or unix:PATH for a Unix socket."""
    if text.startswith("unix:") and len(text) > 5:
        return text[5:]
    return endpoint(text)


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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m gossip", description="A gossip node accelerated with eBPF.")
    sub = p.add_subparsers(dest="command", required=True)
    n = sub.add_parser("node", help="run one node until SIGTERM/SIGINT")
    n.add_argument("--name", required=True, type=utf8_text)
    n.add_argument("--addr", default=_D.listen_addr, help=f"IPv4 address to listen on (default {_D.listen_addr})")
    n.add_argument("--port", type=int, default=_D.listen_port)
    n.add_argument("--seed", type=seed_endpoint, action="append", default=[], metavar="ADDR:PORT",
                   help="a known node to contact (repeatable)")
    n.add_argument("--protocol", choices=PROTOCOLS, default=_D.protocol)
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
    n.add_argument("--xdp-pin", metavar="DIR", help="use fast-path maps pinned in DIR (attached by the testbed)")
    n.add_argument("--broadcast", action="store_true",
                   help="send rumors through the TC in-kernel broadcaster (UDP; with --xdp)")
    n.add_argument("--broadcast-pin", metavar="DIR", help="use broadcaster maps pinned in DIR (testbed)")
    sub.add_parser("demo", help="run a small local cluster on loopback and show it converge")
    return p


async def run_node(args) -> int:
    config = NodeConfig(fanout=args.fanout, cycle_s=args.cycle, timeout_s=args.timeout, buffer=args.buffer,
                        max_packet_bytes=args.max_packet,
                        secrets=tuple(s.encode() for s in args.secret) or (b"",), cluster=args.cluster,
                        protocol=args.protocol, listen_addr=args.addr, listen_port=args.port,
                        log_level=args.log_level, state_dir=args.state_dir)
    events = open(args.events, "a", buffering=1) if args.events else None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    with _accel.accelerators(args, config) as (fastpath, broadcaster):
        node = Node(config, name=args.name, private=args.private.encode(), seeds=tuple(args.seed),
                    rng=random.Random(args.rng_seed), events=events, fastpath=fastpath, broadcaster=broadcaster,
                    record_refreshes=args.record_refreshes)
        runner = None
        try:
            await node.join()
            if args.http:
                from ._http import serve
                runner = await serve(node, args.http)
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
