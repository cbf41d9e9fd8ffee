"""Durable metadata (`gossip._state`, ``NodeConfig.state_dir``): the state file's round trip, its atomic
replacement, its refusal of every truncated or corrupted form, and the HLC staying monotonic across a restart
whose clock went back -- through the core, the shared driver and the real `Node`."""

from __future__ import annotations

import os

import pytest

from gossip import ConfigError, NodeConfig, UsageError, Version, cluster_id
from gossip import _state
from gossip._cli import build_parser
from gossip._core import DurableState
from gossip._driver import CoreDriver
from gossip._node import Node
from gossip._state import FileStore, Loaded, MemoryStore, StateError, decode, encode

from fakenet import make_core

CLUSTER = cluster_id("gossip")


def _driver(core, records, *, store=None, sends=None, now=1000.0):
    return CoreDriver(core, name=core.identity.name, send=(sends.append if sends is not None else lambda s: None),
                      write=records.append, now=now, store=store)


def _state_of(seq=1_700_000_000_123, origin=0x1234ABCD, data=b"config v7", hlc=None):
    return DurableState(version=Version(seq, origin), data=data, hlc=seq if hlc is None else hlc)


def test_encode_decode_and_the_file_store_round_trip(tmp_path):
    state = _state_of(hlc=1_700_000_000_999)
    assert decode(encode(state, CLUSTER), CLUSTER) == state
    store = FileStore(str(tmp_path / "a" / "b"), cluster=CLUSTER)  # created, parents too, on first use
    assert store.load() == Loaded(None)
    store.save(state)
    assert FileStore(str(tmp_path / "a" / "b"), cluster=CLUSTER).load() == Loaded(state)
    assert sorted(os.listdir(tmp_path / "a" / "b")) == ["metadata.lock", "metadata.state"]  # temporary one renamed
    mem = MemoryStore(cluster=CLUSTER)
    mem.save(state)
    assert mem.load() == Loaded(state) and mem.blob == encode(state, CLUSTER)


def test_a_restarted_core_holds_the_stored_version_value_and_mark_and_says_so(tmp_path):
    cfg = {"state_dir": str(tmp_path)}
    a = make_core(0, **cfg)
    records: list[dict] = []
    driver = _driver(a, records)
    assert isinstance(driver.store, FileStore) and driver.store.path == str(tmp_path / "metadata.state")
    version = a.publish(b"v1", 1000.5)
    driver.drain(1000.5)
    assert [(r["kind"], r["via"]) for r in records] == [("metadata_adopted", "publish")]

    b = make_core(0, **cfg)  # the same node, restarted
    records = []
    driver = _driver(b, records, now=2000.0)
    assert b.read() == (version, b"v1") and b.hlc_mark == version.seq
    driver.drain(2000.0)
    assert records == [{"t": 2000.0, "node": "n0", "kind": "metadata_adopted", "version": version.seq,
                        "origin": version.origin, "via": "restore", "size": 2, "src": ""}]
    assert b.durable_state() == DurableState(version=version, data=b"v1", hlc=version.seq)


def test_an_adopted_value_is_durable_before_the_sends_carrying_it_go_out():
    a, b, c = (make_core(i, fanout=1) for i in range(3))
    journal: list = []

    class Store(MemoryStore):
        def save(self, state):
            journal.append(("save", state.version))
            super().save(state)

    store = Store(cluster=a.cluster)
    driver = CoreDriver(a, name="n0", send=lambda s: journal.append(("send", [type(x.message).__name__ for x in s])),
                        write=lambda r: None, now=1000.0, store=store)
    a.set(c.identity, 1000.0)
    driver.drain(1000.0)
    b.set(a.identity, 1000.0)
    version = b.publish(b"v1", 1000.1)
    (rumor,) = b.take_sends()
    a.receive(rumor.payload, 1000.2)
    driver.drain(1000.2)
    a.tick(1000.3)  # heartbeats and swaps never write
    a.receive(rumor.payload, 1000.3)  # a duplicate: nothing new to write
    driver.drain(1000.3)
    assert journal[:2] == [("save", version), ("send", ["MetadataRumor"])]
    assert [e for e in journal if e[0] == "save"] == [("save", version)]
    assert store.load().state.data == b"v1"


def test_a_failed_write_withholds_the_sends_records_it_and_fails_the_publish():
    core = make_core(0)
    peer = make_core(1)
    core.set(peer.identity, 1000.0)

    class Full(MemoryStore):
        def save(self, state):
            raise OSError(28, "No space left on device")

    records, sends = [], []
    driver = _driver(core, records, store=Full(cluster=core.cluster, path="/full/metadata.state"), sends=sends)
    driver.drain(1000.0)
    core.publish(b"v1", 1000.1)
    with pytest.raises(StateError, match="No space left"):
        driver.drain(1000.1)
    assert sends == [] and core.take_sends() == []
    failed = [r for r in records if r["kind"] == "state_write_failed"]
    assert failed and failed[0]["path"] == "/full/metadata.state" and failed[0]["withheld"] == 1


def test_a_publish_refused_by_the_disk_is_not_spread_by_the_next_swap():
    """After a failed write the core rolls back to the last durable value: its next swap cannot carry the refused
    one to a peer, and what it holds is what its disk holds."""
    core, peer = make_core(0), make_core(1)
    core.set(peer.identity, 1000.0)

    class Full(MemoryStore):
        def save(self, state):
            raise OSError(28, "No space left on device")

    sends: list = []
    driver = _driver(core, [], store=Full(cluster=core.cluster), sends=sends)
    driver.drain(1000.0)
    core.publish(b"refused", 1000.1)
    with pytest.raises(StateError):
        driver.drain(1000.1)
    sends.clear()
    core.tick(1001.0)
    driver.drain(1001.0)
    for batch in sends:
        for send in batch:
            peer.receive(send.payload, 1001.0)
    assert peer.read() == (Version(0, 0), b"")
    assert core.read() == (Version(0, 0), b"")
    assert any(b for b in sends), "the swap itself still went out"


def test_a_crash_between_the_temporary_write_and_the_rename_leaves_the_old_state(tmp_path, monkeypatch):
    store = FileStore(str(tmp_path), cluster=CLUSTER)
    old, new = _state_of(data=b"old"), _state_of(seq=1_700_000_009_000, data=b"new")
    store.save(old)

    def crash(src, dst):
        raise OSError(5, "simulated crash before the rename")
    monkeypatch.setattr(_state.os, "replace", crash)
    with pytest.raises(OSError):
        store.save(new)
    monkeypatch.undo()
    assert (tmp_path / ".metadata.state.tmp").read_bytes() == encode(new, CLUSTER)  # written, never renamed
    assert FileStore(str(tmp_path), cluster=CLUSTER).load() == Loaded(old)
    # a crash half-way through writing the temporary file: the state file is untouched as well
    (tmp_path / ".metadata.state.tmp").write_bytes(encode(new, CLUSTER)[:20])
    assert FileStore(str(tmp_path), cluster=CLUSTER).load() == Loaded(old)
    store.save(new)  # and the next write goes through
    assert FileStore(str(tmp_path), cluster=CLUSTER).load() == Loaded(new)


def _start_from(tmp_path, blob: bytes):
    """Put BLOB where a node's state file is, start a core and driver on it: (core, records)."""
    (tmp_path / "metadata.state").write_bytes(blob)
    core = make_core(0, state_dir=str(tmp_path))
    records: list[dict] = []
    driver = _driver(core, records)
    driver.drain(1000.0)
    return core, records


def _assert_refused(core, records, path) -> None:
    assert core.read() == (Version(0, 0), b"") and core.hlc_mark == 0
    (refused,) = [r for r in records if r["kind"] == "state_refused"]
    assert refused["path"] == str(path) and refused["error"]
    assert not [r for r in records if r["kind"] == "metadata_adopted"]


def test_a_state_file_truncated_at_every_offset_is_refused_and_the_node_starts_empty(tmp_path):
    blob = encode(_state_of(data=b"a value worth keeping"), cluster_id("gossip"))
    reasons = set()
    for k in range(len(blob)):
        core, records = _start_from(tmp_path, blob[:k])
        _assert_refused(core, records, tmp_path / "metadata.state")
        reasons.add(records[0]["error"].split(" ")[0])
        assert (tmp_path / "metadata.state.refused").read_bytes() == blob[:k]  # kept aside, not destroyed
    assert reasons == {"too", "truncated"}
    core, records = _start_from(tmp_path, blob)  # the whole file is accepted
    assert core.read()[1] == b"a value worth keeping" and not [r for r in records if r["kind"] == "state_refused"]


def test_a_state_file_with_any_single_byte_flipped_is_refused(tmp_path):
    blob = encode(_state_of(data=b"a value worth keeping"), cluster_id("gossip"))
    for i in range(len(blob)):
        for mask in (0x01, 0x80, 0xFF):
            bad = bytearray(blob)
            bad[i] ^= mask
            core, records = _start_from(tmp_path, bytes(bad))
            _assert_refused(core, records, tmp_path / "metadata.state")
    core, records = _start_from(tmp_path, blob + b"\0")  # padded
    _assert_refused(core, records, tmp_path / "metadata.state")


def test_a_valid_file_of_another_cluster_or_too_large_for_this_config_is_refused(tmp_path):
    core, records = _start_from(tmp_path, encode(_state_of(), cluster_id("other")))
    _assert_refused(core, records, tmp_path / "metadata.state")
    assert "belongs to cluster" in records[0]["error"]
    core, records = _start_from(tmp_path, encode(_state_of(data=b"x" * 5000), cluster_id("gossip")))
    _assert_refused(core, records, tmp_path / "metadata.state")
    assert "max_packet_bytes" in records[0]["error"]


def test_the_hlc_stays_monotonic_across_a_restart_whose_clock_went_back(tmp_path):
    """On the real node: publish at t = 2,000,000 s, restart with the clock 1,000 s behind, publish again."""
    def node(t, state_dir):
        config = NodeConfig(listen_port=9100, cycle_s=0.1, timeout_s=0.5, state_dir=state_dir)
        return Node(config, name="a", clock=lambda: t)

    first = node(2_000_000.0, str(tmp_path)).publish(b"v1")
    assert first == Version(2_000_000_000, first.origin)
    restarted = node(1_999_000.0, str(tmp_path))
    assert restarted.read() == (first, b"v1")
    second = restarted.publish(b"v2")
    assert second > first and second.seq == first.seq + 1
    assert node(1_998_000.0, str(tmp_path)).read() == (second, b"v2")
    # the bug it fixes: in memory only, the restarted node's publish is ordered before the value it replaces
    assert node(1_999_000.0, None).publish(b"v2") < first


def test_a_core_is_restored_only_once_before_any_metadata():
    core = make_core(0)
    core.publish(b"v1", 1000.0)
    with pytest.raises(UsageError, match="only once"):
        core.restore(_state_of())
    fresh = make_core(0)
    fresh.restore(DurableState(version=Version(0, 0), data=b"", hlc=5_000_000_000_000))
    assert fresh.read() == (Version(0, 0), b"") and fresh.publish(b"x", 1000.0).seq == 5_000_000_000_001
    with pytest.raises(UsageError):
        DurableState(version=Version(-1, 0), data=b"", hlc=0)


def test_state_dir_is_validated_and_passed_by_the_cli(tmp_path):
    with pytest.raises(ConfigError, match="state_dir"):
        NodeConfig(state_dir=3)
    with pytest.raises(ConfigError, match="state_dir"):
        NodeConfig(state_dir="")
    assert NodeConfig().state_dir is None
    args = build_parser().parse_args(["node", "--name", "a", "--state-dir", str(tmp_path)])
    assert args.state_dir == str(tmp_path)
    (tmp_path / "file").write_text("")
    with pytest.raises(StateError, match="cannot create"):
        FileStore(str(tmp_path / "file" / "sub"), cluster=CLUSTER).load()


def test_a_node_without_state_dir_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    core = make_core(0)
    driver = _driver(core, [])
    assert driver.store is None
    core.publish(b"v1", 1000.0)
    driver.drain(1000.0)
    assert os.listdir(tmp_path) == []
