"""The node's neighbour table on one interface (IPv4 -> link-layer address), read without pyroute2: the one reader
of it, for both programs that address frames themselves -- the heartbeat plane (`gossip._plane` registers a
member's MAC with it) and the TC broadcaster (`bpf.broadcaster.BroadcastSender` packs each target's MAC).

Written here rather than through pyroute2 because measured cost says so: a pyroute2 dump runs on a helper thread
(its synchronous API cannot run inside the node's asyncio loop), and importing pyroute2 alone costs a node ~11 MiB.
Two reads, both on the calling thread:

- the whole table, from ``/proc/net/arp``: the node runs inside its namespace, so that is its namespace's table.
  Only complete entries count (ATF_COM: the kernel sets it for every NUD_VALID state -- reachable, stale, delay,
  probe, noarp, permanent: NUD_VALID, what a single-address request takes as usable too). The kernel walks its whole
  neighbour hash for it, every namespace's entries and all the buckets a past big run grew it to, as for a netlink
  dump: measured with 64 / 512 entries in the namespace, 0.85 / 2.8 ms against pyroute2's 3.0 / 18 ms, and
  ~0.6 ms with none (that host's hash had 524,288 buckets for 2 entries: big runs grow it, nothing shrinks it);
- one address, by an RTM_GETNEIGH request (not a dump) on a raw rtnetlink socket: one hash lookup, 2.3 us
  whatever the table's size. A miss uses it, so a member whose MAC is not known yet costs microseconds per retry,
  not a walk of the table.

It must never write the table or ask the kernel to resolve anything: the addresses are the ones the node's own
sends made the kernel resolve (the simulator models exactly that, `testbed.sim._plane`).
"""

from __future__ import annotations

import contextlib
import socket
import struct

ARP_TABLE = "/proc/net/arp"
ATF_COM = 0x02  # the entry is complete (include/uapi/linux/if_arp.h)
NUD_VALID = 0x02 | 0x04 | 0x08 | 0x10 | 0x40 | 0x80  # reachable, stale, delay, probe, noarp, permanent
_ZERO_MAC = bytes(6)

# rtnetlink (include/uapi/linux/netlink.h, rtnetlink.h, neighbour.h)
_RTM_NEWNEIGH, _RTM_GETNEIGH = 28, 30
_NLM_F_REQUEST = 0x1
_NLMSG_ERROR = 2
_NDA_DST, _NDA_LLADDR = 1, 2
_NLMSG = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_NDMSG = struct.Struct("=BxxxiHBB")  # family, pad, ifindex, state, flags, type
_RTA = struct.Struct("=HH")  # len, type


def parse_arp(text: str, ifname: str) -> dict[str, bytes]:
    """IPv4 -> MAC of the complete entries on IFNAME in TEXT, the contents of /proc/net/arp (a header line, then
    ``IP  HW-type  Flags  HW-address  Mask  Device`` per entry). Incomplete entries (flags without ATF_COM, MAC all
    zeros), other interfaces and lines it cannot read are left out."""
    out: dict[str, bytes] = {}
    for line in text.splitlines()[1:]:
        f = line.split()
        if len(f) < 6 or f[5] != ifname:
            continue
        try:
            flags = int(f[2], 16)
            mac = bytes.fromhex(f[3].replace(":", ""))
        except ValueError:
            continue
        if flags & ATF_COM and len(mac) == 6 and mac != _ZERO_MAC:
            out[f[0]] = mac
    return out


def getneigh_request(ifindex: int, ip: str, seq: int) -> bytes:
    """An RTM_GETNEIGH request for IP on IFINDEX (one entry: no NLM_F_DUMP)."""
    dst = socket.inet_aton(ip)
    body = _NDMSG.pack(socket.AF_INET, ifindex, 0, 0, 0) + _RTA.pack(_RTA.size + len(dst), _NDA_DST) + dst
    return _NLMSG.pack(_NLMSG.size + len(body), _RTM_GETNEIGH, _NLM_F_REQUEST, seq, 0) + body


def parse_neigh_reply(data: bytes, seq: int) -> bytes | None:
    """The MAC in the kernel's answer DATA to request SEQ if the entry is usable (NUD_VALID), else None (no entry:
    an NLMSG_ERROR; incomplete or failed; a short or foreign message)."""
    if len(data) < _NLMSG.size + _NDMSG.size:
        return None
    length, kind, _, rseq, _ = _NLMSG.unpack_from(data)
    if kind != _RTM_NEWNEIGH or rseq != seq or length > len(data):
        return None
    _, _, state, _, _ = _NDMSG.unpack_from(data, _NLMSG.size)
    if not state & NUD_VALID:
        return None
    off = _NLMSG.size + _NDMSG.size
    while off + _RTA.size <= length:
        rlen, rtype = _RTA.unpack_from(data, off)
        if rlen < _RTA.size or off + rlen > length:
            return None
        if rtype == _NDA_LLADDR:
            mac = bytes(data[off + _RTA.size:off + rlen])
            return mac if len(mac) == 6 and mac != _ZERO_MAC else None
        off += (rlen + 3) & ~3
    return None


class NeighbourTable:
    """IPv4 -> MAC on interface IFINDEX, cached: `mac` answers from the cache, and on a miss asks the kernel
    again, at most every RETRY_S, for that address alone (one RTM_GETNEIGH); `expired` says when the whole cache is
    older than TTL_S, and the caller then `refresh`es it (one read of /proc/net/arp, which also drops entries the
    kernel dropped; `generation` counts these reloads). The table is this process's namespace's, or NETNS's (a
    name or path, entered for each read: for a sender in a process outside the namespace, as in tests)."""

    def __init__(self, ifindex: int, ttl_s: float, retry_s: float, *, path: str = ARP_TABLE,
                 netns: str | None = None) -> None:
        self.ifindex, self.ttl_s, self.retry_s, self.path, self.netns = ifindex, ttl_s, retry_s, path, netns
        self.ifname: str | None = None  # looked up at the first read (the interface may not be there yet)
        self._macs: dict[str, bytes] = {}
        self._missed: dict[str, float] = {}  # ip -> when the kernel last had no usable entry for it
        self.loaded_at = -float("inf")
        self.generation = 0  # bumped on every reload of the whole table
        self.lookups = 0  # whole-table reads done
        self.gets = 0  # single-address requests done
        self._nl: socket.socket | None = None
        self._seq = 0

    def expired(self, now: float) -> bool:
        return now - self.loaded_at > self.ttl_s

    def mac(self, ip: str, now: float) -> bytes | None:
        mac = self._macs.get(ip)
        if mac is not None or now - max(self.loaded_at, self._missed.get(ip, -float("inf"))) <= self.retry_s:
            return mac
        mac = self.get(ip)
        if mac is None:
            self._missed[ip] = now
        else:
            self._macs[ip] = mac
            self._missed.pop(ip, None)
        return mac

    def _inside(self):
        if self.netns is None:
            return contextlib.nullcontext()
        from ._netns import entered

        return entered(self.netns)

    def refresh(self, now: float) -> None:
        try:
            with self._inside():
                if self.ifname is None:
                    self.ifname = socket.if_indextoname(self.ifindex)
                with open(self.path, "rb") as f:
                    text = f.read()
            self._macs = parse_arp(text.decode("ascii", "replace"), self.ifname)
        except OSError:  # no table or no such interface: no MAC known (the plane passes what would go to these
            # members, the broadcaster sends them one sendto each)
            self._macs = {}
        self._missed.clear()
        self.loaded_at = now
        self.generation += 1
        self.lookups += 1

    def get(self, ip: str) -> bytes | None:
        """IP's MAC from the kernel now (one request, no cache), or None if it has no usable entry."""
        try:
            if self._nl is None:
                with self._inside():  # a netlink socket answers for the namespace it was made in
                    self._nl = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                                             socket.NETLINK_ROUTE)
                self._nl.bind((0, 0))
            self._seq = (self._seq + 1) & 0xFFFFFFFF
            self._nl.send(getneigh_request(self.ifindex, ip, self._seq))
            self.gets += 1
            while True:  # rtnetlink answers inside send(): the answer is already queued
                data = self._nl.recv(65536, socket.MSG_DONTWAIT)
                if len(data) >= _NLMSG.size and _NLMSG.unpack_from(data)[3] == self._seq:
                    return parse_neigh_reply(data, self._seq)
        except (OSError, ValueError):  # nothing queued, or netlink trouble: no MAC known
            return None

    def close(self) -> None:
        if self._nl is not None:
            self._nl.close()
            self._nl = None


def _main() -> None:  # python -m bpf._neigh IFNAME [IP...]: the table as this reader sees it, then each IP's get
    import sys

    table = NeighbourTable(socket.if_nametoindex(sys.argv[1]), 30.0, 1.0)
    try:
        table.refresh(0.0)
        for ip, mac in table._macs.items():
            print(ip, mac.hex(":"))
        for ip in sys.argv[2:]:
            mac = table.get(ip)
            print("get", ip, mac and mac.hex(":"))
    finally:
        table.close()


if __name__ == "__main__":
    _main()
