"""Packet injections: scapy-built Ethernet frames sent straight into one node's namespace.

Frames go out of the root-side end of the node's veth, so they arrive on the node's ``eth0`` as if a peer had sent
them, and nowhere else. Every injection is bounded in count (and, for floods, in rate and time). Each kind says
under which drop reason(s) the node or its XDP program must count it.
"""

from __future__ import annotations

import os
import random
import socket
import time
from dataclasses import dataclass

from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from gossip import _wire as wire

GOSSIP_PORT = 7946
ETH_P_ALL = 0x0003
EXPECT = {
    "forged": "bad_mac",
    "malformed": "malformed",
    "truncated": "malformed",
    "foreign_cluster": "foreign_cluster",
    "replay": "duplicate|stale",
    "flood": "duplicate|stale",
}
FLOOD_MAX_S = 30.0
# What a replay or flood copies: the message types `Protocol.replay_sample` hands the simulator's injection (a
# heartbeat; SWIM's PING or GOSSIP), each carrying a per-origin sequence the node (and XDP) judge. Capturing any
# gossip frame instead made a netns replay mean something else than the simulator's: an ACK or a swap is not
# replay-protected by sequence, so its copies were judged differently, or not counted at all.
REPLAY_TYPES = frozenset({wire.MsgType.HEARTBEAT, wire.MsgType.PING, wire.MsgType.GOSSIP})


@dataclass(frozen=True, slots=True, kw_only=True)
class Target:
    ip: str
    mac: str
    root_veth: str


def _frame(target: Target, src_ip: str, payload: bytes) -> bytes:
    return bytes(Ether(src="02:ee:00:00:00:01", dst=target.mac) / IP(src=src_ip, dst=target.ip, ttl=64)
                 / UDP(sport=GOSSIP_PORT, dport=GOSSIP_PORT) / payload)


def capture(root_veth: str, dst_ip: str, want: int, timeout_s: float,
            types: frozenset[int] = REPLAY_TYPES) -> list[bytes]:
    """Up to WANT real gossip frames of TYPES addressed to DST_IP, sniffed on ROOT_VETH within TIMEOUT_S, each made
    whole (`_whole`) so that its copies reach the node."""
    # frames leaving an interface reach only ETH_P_ALL taps; Python converts the bind protocol to network order
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.bind((root_veth, ETH_P_ALL))
    s.settimeout(0.2)
    dst = socket.inet_aton(dst_ip)
    out: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(out) < want and time.monotonic() < deadline:
            try:
                frame, addr = s.recvfrom(65535)
            except socket.timeout:
                continue
            if addr[2] != socket.PACKET_OUTGOING:  # outgoing from the root side = towards the node
                continue
            if frame[12:14] != b"\x08\x00":
                continue
            ihl = (frame[14] & 0x0F) * 4
            udp = 14 + ihl
            if frame[23] == 17 and frame[30:34] == dst and \
                    int.from_bytes(frame[udp + 2:udp + 4], "big") == GOSSIP_PORT and \
                    frame[udp + 8:udp + 10] == wire.MAGIC.to_bytes(2, "big") and \
                    len(frame) > udp + 11 and frame[udp + 11] in types:
                out.append(_whole(frame))
    finally:
        s.close()
    return out


def _whole(frame: bytes) -> bytes:
    """FRAME with its IP and UDP checksums computed. A frame sniffed between two veths carries the sender's partial
    checksum (the offload completes it later, or never, on veth); sent again from a raw socket it is a bad checksum,
    and the receiving kernel discards every copy XDP passes without counting it anywhere the run reads."""
    pkt = Ether(frame)
    del pkt[IP].chksum
    del pkt[UDP].chksum
    return bytes(pkt)


def payloads(kind: str, *, src_ip: str, cluster: str, secret: bytes, count: int, rng: random.Random) -> list[bytes]:
    """COUNT UDP payloads of KIND (forged, foreign_cluster, truncated, malformed) as if sent from SRC_IP."""
    ident = wire.Identity(name="intruder", addr=src_ip, port=GOSSIP_PORT)  # same id as the real node there
    cid = wire.cluster_id(cluster)
    out = []
    for i in range(count):
        # claims to come from a real peer (SRC_IP) with a sequence far in the future: only the MAC tells
        hb = wire.Heartbeat(cluster=cid, origin=ident.node_id, seq=2**62 + i, identity=ident,
                            infected=wire.Infected(ids=frozenset({ident.node_id})))
        if kind == "forged":
            payload = wire.encode(hb, key=b"not-the-secret-" + secret)
        elif kind == "foreign_cluster":
            payload = wire.encode(wire.Heartbeat(cluster=cid ^ 0x5A5A5A5A, origin=hb.origin, seq=hb.seq,
                                                 identity=ident, infected=hb.infected), key=secret)
        elif kind == "truncated":
            full = wire.encode(hb, key=secret)
            payload = full[:rng.randrange(1, wire.HEADER_BYTES)]
        elif kind == "malformed":
            body = rng.randbytes(rng.randrange(0, 200))
            # body_len never matches what follows, so the packet can only be counted as malformed
            head = wire.HEADER.pack(wire.MAGIC, wire.FORMAT_VERSION, rng.choice([1, 2, 3, 4, 9]), cid, hb.origin,
                                    0, len(body) + 1 + rng.randrange(0, 4000), hb.seq)
            payload = head + body
        else:
            raise ValueError(f"unknown injection {kind!r}")
        out.append(payload)
    return out


def build(kind: str, target: Target, *, src_ip: str, cluster: str, secret: bytes, count: int,
          rng: random.Random) -> list[bytes]:
    """COUNT Ethernet frames of KIND for TARGET (replay and flood are built from captured traffic by `inject`)."""
    return [_frame(target, src_ip, p) for p in payloads(kind, src_ip=src_ip, cluster=cluster, secret=secret,
                                                        count=count, rng=rng)]


def send_frames(root_veth: str, frames: list[bytes], *, count: int, rate_pps: int | None) -> float:
    """Send COUNT frames (cycling through FRAMES) out of ROOT_VETH; returns the seconds it took (bounded)."""
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((root_veth, 0))
    t0 = time.monotonic()
    try:
        for i in range(count):
            s.send(frames[i % len(frames)])
            if rate_pps and i % 64 == 63:
                ahead = (i + 1) / rate_pps - (time.monotonic() - t0)
                if ahead > 0:
                    time.sleep(ahead)
            if time.monotonic() - t0 > FLOOD_MAX_S:
                raise RuntimeError(f"injection stopped after {FLOOD_MAX_S:g} s at {i} of {count} frames")
    finally:
        s.close()
    return time.monotonic() - t0


def inject(kind: str, target: Target, *, src_ip: str, cluster: str, secret: bytes, count: int,
           rate_pps: int | None, rng: random.Random) -> int:
    """Inject COUNT packets of KIND into TARGET's namespace; returns how many were sent."""
    if kind in ("replay", "flood"):
        frames = capture(target.root_veth, target.ip, 1 if kind == "flood" else min(count, 16), timeout_s=5.0)
        if not frames:
            return 0
        time.sleep(0.05)  # let the originals be accepted first: every copy sent now is a replay
    else:
        frames = build(kind, target, src_ip=src_ip, cluster=cluster, secret=secret, count=min(count, 256),
                       rng=rng)
    send_frames(target.root_veth, frames, count=count, rate_pps=rate_pps)
    return count


def os_can_inject() -> bool:
    return os.geteuid() == 0
