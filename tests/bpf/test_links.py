"""Attachments by BPF link (`bpf._attach`, ``link=True``): what the kernel removes when the holding process ends.

A standalone node (``--xdp IFACE --broadcast --kernel-heartbeats``) attaches its own programs by link: XDP, and tcx
at TC ingress (the heartbeat plane) and egress (the broadcaster). SIGKILLed, it runs no `finally`, and still nothing
stays on its interface. The broadcaster's clones re-enter egress through its own tcx program and leave exactly as
under a clsact filter; a kernel without such links gets the netlink attachment and one log line. Processes,
namespaces and the pins a killed node leaves are removed in `finally` (the Testnet teardown fails the test if an XDP
program, a tcx link or a tc filter is left on an interface).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import time
from pathlib import Path

import pytest

import bpf
from bpf import _attach, _sys
from bpf.broadcaster import read_stats as broadcaster_stats
from bpf_testnet import Capture, Testnet, assert_valid_checksums, broadcast_testnet, drain
from gossip._wire import MetadataRumor, cluster_id, encode
from test_node_xdp_cli import PORT, Proc, node_argv, stats, wait_for
from testbed.cluster import control

pytestmark = [pytest.mark.root, pytest.mark.bpf, pytest.mark.netns]

PAYLOAD = encode(MetadataRumor(cluster=cluster_id("link-test"), origin=1, version=7, data=b"hello"), key=b"k")


def pin_dirs_of(pid: int) -> list[str]:
    """The pin directories a node process made (fast path, broadcaster, plane)."""
    with contextlib.suppress(FileNotFoundError):
        return [os.path.join(bpf.PIN_ROOT, d) for d in os.listdir(bpf.PIN_ROOT)
                if d.split("-")[1:2] == [str(pid)] and d.split("-")[0] in ("fastpath", "broadcast", "hbplane")]
    return []


def attached(node) -> dict:
    """What is on NODE's interface, seen from inside its namespace."""
    return {"xdp": _attach.xdp_prog_id(node.ifindex, node.ns), "tcx": _attach.tcx_prog_ids(node.ifindex, node.ns),
            "tc_filters": _attach.tc_filters(node.ifindex, node.ns)}


def test_a_sigkilled_standalone_node_leaves_nothing_attached(tmp_path):
    """Node A compiles and attaches the fast path, the broadcaster and the plane itself; three plain nodes are
    seeded with A, each sending its heartbeats to one target (fanout 1), so A's plane has others to forward them
    to. While A runs its programs work through the links (the plane forwards heartbeats, the broadcaster makes
    copies); after SIGKILL nothing is attached to A's interface."""
    procs: list[Proc] = []
    with Testnet(4, bridge=True) as net:
        a, *others = net.nodes
        try:
            sock_a = tmp_path / "a.sock"
            proc_a = Proc(a.ns, node_argv("a", a, sock_a, "--xdp", a.ifname, "--broadcast", "--kernel-heartbeats"),
                          tmp_path / "a.log")
            procs.append(proc_a)
            wait_for(lambda: "xdp" in stats(sock_a) and "hbplane" in stats(sock_a), 180,
                     "node a's fast path and plane", proc_a)  # three bcc compiles
            for k, n in enumerate(others):
                procs.append(Proc(n.ns, node_argv(f"p{k}", n, tmp_path / f"p{k}.sock", "--seed", f"{a.ip}:{PORT}",
                                                  "--fanout", "1"),
                                  tmp_path / f"p{k}.log"))
            names = {"a", "p0", "p1", "p2"}
            wait_for(lambda: {m["name"] for m in control.call(str(sock_a), "GET", "/list")} == names, 60,
                     "a to list every node", proc_a)
            wait_for(lambda: stats(sock_a)["hbplane"]["handled"] > 0, 30, "the plane to forward a heartbeat", proc_a)

            (bc_dir,) = [d for d in pin_dirs_of(proc_a.popen.pid) if os.path.basename(d).startswith("broadcast-")]
            bc_fd = _sys.obj_get(os.path.join(bc_dir, "bc_stats"))
            try:
                wait_for(lambda: broadcaster_stats(bc_fd, a.ifindex)["broadcasts"] > 0, 30,
                         "a broadcast through the broadcaster", proc_a)
                bc = broadcaster_stats(bc_fd, a.ifindex)
            finally:
                os.close(bc_fd)
            assert bc["copies"] > bc["broadcasts"] and bc["clone_errors"] == 0, bc  # the clones left egress

            before = attached(a)
            assert before["xdp"] != 0, before
            assert len(before["tcx"]["ingress"]) == 1 and len(before["tcx"]["egress"]) == 1, before
            assert before["tc_filters"] == {"ingress": 0, "egress": 0}, before  # links, not clsact filters
            text = proc_a.text()
            assert "unavailable" not in text and "attaching through netlink" not in text, text[-3000:]

            proc_a.popen.kill()
            proc_a.popen.wait(15)
            deadline = time.monotonic() + 5  # the links go as the process's files close; allow the kernel a moment
            while (after := attached(a))["xdp"] or any(after["tcx"].values()):
                assert time.monotonic() < deadline, f"still attached after SIGKILL: {after}"
                time.sleep(0.05)
            assert after == {"xdp": 0, "tcx": {"ingress": [], "egress": []},
                             "tc_filters": {"ingress": 0, "egress": 0}}, after
            assert net.attached_programs() == []
        finally:
            for proc in procs:
                proc.stop()
                for path in pin_dirs_of(proc.popen.pid):  # left by the killed node: its maps go once unpinned
                    _sys.unpin([os.path.join(path, f) for f in os.listdir(path)], path)


@pytest.fixture(scope="module")
def bridged():
    with broadcast_testnet(8, PORT) as net:
        yield net


@pytest.mark.parametrize("fanout", [3, 8])
def test_the_broadcaster_by_tcx_link_sends_exactly_one_copy_per_target(bridged, broadcaster, no_leftovers,
                                                                          fanout):
    """Under tcx each clone re-enters egress through the broadcaster's own link (it lets its marked clones pass,
    TC_ACT_UNSPEC going on as TCX_NEXT): every target gets one copy with valid checksums, nobody else any."""
    net = bridged
    no_leftovers(net)
    sender, targets = net.nodes[0], net.nodes[1:1 + fanout]
    for sock in net.socks.values():
        drain(sock, timeout_s=0)
    with broadcaster.attach(sender.ifindex, netns=sender.ns, link=True), \
            broadcaster.sender(sender.ifindex, netns=sender.ns) as bsend:
        assert _attach.tcx_prog_ids(sender.ifindex, sender.ns)["egress"] != []
        assert _attach.tc_filters(sender.ifindex, sender.ns)["egress"] == 0
        before = broadcaster.stats(sender.ifindex)
        capture = Capture(net)
        bsend.send(net.sender_sock, PAYLOAD, [(t.ip, PORT) for t in targets])
        got = {t.ip: [d for d, _ in drain(net.socks[t.ip], expect=1, quiet_s=0.05)] for t in targets}
        time.sleep(0.05)
        extras = {ip: drain(s, timeout_s=0) for ip, s in net.socks.items()}
        frames = capture.udp_frames()
        after = broadcaster.stats(sender.ifindex)
    assert bsend.sendto_calls == 1
    assert got == {t.ip: [PAYLOAD] for t in targets}
    assert all(v == [] for v in extras.values()), extras
    assert len(frames) == fanout
    for frame in frames:
        assert_valid_checksums(frame)
    assert after["broadcasts"] - before["broadcasts"] == 1
    assert after["copies"] - before["copies"] == fanout
    assert after["clone_errors"] == before["clone_errors"]
    assert _attach.tcx_prog_ids(sender.ifindex, sender.ns)["egress"] == []


def test_a_kernel_without_links_gets_the_netlink_attachment_and_one_line(testnet_factory, fastpath, broadcaster,
                                                                        monkeypatch, caplog):
    """BPF_LINK_CREATE answering EINVAL, as a kernel without XDP or tcx links does: each kind of attachment is made
    through netlink instead, said once per kind, and removed on leaving the block."""
    node = testnet_factory(1).nodes[0]

    def no_links(prog_fd, ifindex, attach_type, flags=0):
        raise bpf.MapError(f"BPF_LINK_CREATE (attach type {attach_type})", errno.EINVAL)

    monkeypatch.setattr(_sys, "link_create", no_links)
    monkeypatch.setattr(_attach, "_fallback_said", set())
    with caplog.at_level(logging.WARNING, logger="bpf"):
        for _ in range(2):
            with fastpath.attach(node.ifindex, netns=node.ns, link=True):
                with broadcaster.attach(node.ifindex, netns=node.ns, link=True):
                    now = attached(node)
                    assert now["xdp"] != 0 and now["tcx"] == {"ingress": [], "egress": []}, now
                    assert now["tc_filters"]["ingress"] == 0 and now["tc_filters"]["egress"] > 0, now
    lines = [r.getMessage() for r in caplog.records if r.name == "bpf"]
    assert len(lines) == 2 and all("attaching through netlink" in line for line in lines), lines
    assert {line.split()[4] for line in lines} == {"XDP", "tcx"}, lines
    assert attached(node)["xdp"] == 0
