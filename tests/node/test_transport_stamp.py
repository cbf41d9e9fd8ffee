"""`UdpTransport.rx_stamp`: the kernel's receive time of the datagram being delivered (SIOCGSTAMPNS), on loopback:
the node's wait samples (``hb_wait_ms``, ``md_wait_ms``) are the time from it to the process starting on a
datagram, so it must be that datagram's, before the callback ran, and on the wall clock the node stamps with."""

import asyncio
import socket
import time

from gossip._transport import UdpTransport


def test_the_stamp_is_the_delivered_datagrams_kernel_receipt_on_the_wall_clock():
    async def main():
        got = []
        holder = {}

        def on_datagram(data, src):
            got.append((data, holder["t"].rx_stamp(), time.time()))

        t = holder["t"] = await UdpTransport.open("127.0.0.1", 0, on_datagram, lambda r, d: None)
        port = t.socket.getsockname()[1]
        out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            for i in range(5):
                before = time.time()
                out.sendto(b"x%d" % i, ("127.0.0.1", port))
                await asyncio.sleep(0.02)  # the datagram waits in the socket while the loop sleeps
                got.append(("sent", before))
        finally:
            out.close()
            await t.close()
        return got

    events = asyncio.run(main())
    stamped = [(d, s, at) for d, s, at in (e for e in events if len(e) == 3)]
    sent = [e[1] for e in events if len(e) == 2]
    assert [d for d, _, _ in stamped] == [b"x%d" % i for i in range(5)]
    # the first call turns stamping on (it may find none); every later datagram has its own stamp, taken after it
    # was sent and before the callback saw it
    for (data, stamp, at), before in list(zip(stamped, sent))[1:]:
        assert stamp is not None and before - 0.001 <= stamp <= at, (data, before, stamp, at)
