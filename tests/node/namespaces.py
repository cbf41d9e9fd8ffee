"""A throwaway network namespace with loopback up, for node tests that need their own network (root only)."""

import contextlib
import os
import secrets


@contextlib.contextmanager
def namespace(prefix: str = "gossip-test"):
    """A uniquely named network namespace with loopback up, removed at the end even on failure."""
    from pyroute2 import NetNS, netns
    name = f"{prefix}-{os.getpid()}-{secrets.token_hex(3)}"
    netns.create(name)
    try:
        with NetNS(name) as ns:
            ns.link("set", index=ns.link_lookup(ifname="lo")[0], state="up")
        yield name
    finally:
        netns.remove(name)
