"""bpf/blake2b.h computes the wire format's MAC exactly as `hashlib.blake2b(msg, key=key, digest_size=16)` does.

bpf/mac_test.c is run with BPF_PROG_TEST_RUN over packets "prefix || message || MAC", as an XDP and as a TC
program (the two ways of reading a packet), with the key written to its map; the MAC it stores is compared with
hashlib's, and its verdict (PASS / DROP) with whether the packet's MAC was the right one. The program is compiled
once for the module (~2 s); every case after that is one syscall.

`MacHarness` is also what benchmarks/bench_mac.py drives.
"""

from __future__ import annotations

import ctypes
import hashlib
import random

import pytest

import bpf
from bpf import _sys

pytestmark = [pytest.mark.root, pytest.mark.bpf]

MSG_MAX = 1356  # B2B_MSG_MAX: 1400-byte datagram minus IPv4, UDP and the MAC
MAC_BYTES = 16
OFFSET = 42  # where the message starts: after Ethernet, IPv4 and UDP headers, as in a gossip datagram

XDP_ABORTED, XDP_DROP, XDP_PASS = 0, 1, 2
TC_ACT_UNSPEC, TC_ACT_OK, TC_ACT_SHOT = -1, 0, 2
VERDICTS = {"xdp": {"match": XDP_PASS, "mismatch": XDP_DROP, "error": XDP_ABORTED},
            "tc": {"match": TC_ACT_OK, "mismatch": TC_ACT_SHOT, "error": TC_ACT_UNSPEC}}

BPF_PROG_TEST_RUN = 10
BPF_OBJ_GET_INFO_BY_FD = 15


class _TestRunAttr(ctypes.Structure):
    _fields_ = [("prog_fd", ctypes.c_uint32), ("retval", ctypes.c_uint32), ("data_size_in", ctypes.c_uint32),
                ("data_size_out", ctypes.c_uint32), ("data_in", ctypes.c_uint64), ("data_out", ctypes.c_uint64),
                ("repeat", ctypes.c_uint32), ("duration", ctypes.c_uint32), ("ctx_size_in", ctypes.c_uint32),
                ("ctx_size_out", ctypes.c_uint32), ("ctx_in", ctypes.c_uint64), ("ctx_out", ctypes.c_uint64),
                ("flags", ctypes.c_uint32), ("cpu", ctypes.c_uint32), ("batch_size", ctypes.c_uint32),
                ("pad", ctypes.c_uint32)]


class _ProgInfo(ctypes.Structure):
    """`struct bpf_prog_info` up to verified_insns (kernel 5.16+)."""

    _fields_ = [("type", ctypes.c_uint32), ("id", ctypes.c_uint32), ("tag", ctypes.c_uint8 * 8),
                ("jited_prog_len", ctypes.c_uint32), ("xlated_prog_len", ctypes.c_uint32),
                ("jited_prog_insns", ctypes.c_uint64), ("xlated_prog_insns", ctypes.c_uint64),
                ("load_time", ctypes.c_uint64), ("created_by_uid", ctypes.c_uint32), ("nr_map_ids", ctypes.c_uint32),
                ("map_ids", ctypes.c_uint64), ("name", ctypes.c_char * 16), ("ifindex", ctypes.c_uint32),
                ("gpl_compatible", ctypes.c_uint32), ("netns_dev", ctypes.c_uint64), ("netns_ino", ctypes.c_uint64),
                ("nr_jited_ksyms", ctypes.c_uint32), ("nr_jited_func_lens", ctypes.c_uint32),
                ("jited_ksyms", ctypes.c_uint64), ("jited_func_lens", ctypes.c_uint64), ("btf_id", ctypes.c_uint32),
                ("func_info_rec_size", ctypes.c_uint32), ("func_info", ctypes.c_uint64),
                ("nr_func_info", ctypes.c_uint32), ("nr_line_info", ctypes.c_uint32), ("line_info", ctypes.c_uint64),
                ("jited_line_info", ctypes.c_uint64), ("nr_jited_line_info", ctypes.c_uint32),
                ("line_info_rec_size", ctypes.c_uint32), ("jited_line_info_rec_size", ctypes.c_uint32),
                ("nr_prog_tags", ctypes.c_uint32), ("prog_tags", ctypes.c_uint64), ("run_time_ns", ctypes.c_uint64),
                ("run_cnt", ctypes.c_uint64), ("recursion_misses", ctypes.c_uint64),
                ("verified_insns", ctypes.c_uint32), ("attach_btf_obj_id", ctypes.c_uint32),
                ("attach_btf_id", ctypes.c_uint32), ("pad", ctypes.c_uint32)]


class _InfoAttr(ctypes.Structure):
    _fields_ = [("bpf_fd", ctypes.c_uint32), ("info_len", ctypes.c_uint32), ("info", ctypes.c_uint64)]


def prog_test_run(prog_fd: int, data: bytes, repeat: int = 1) -> tuple[int, int]:
    """(return value, mean ns per run) of the program over DATA, run REPEAT times by the kernel."""
    buf = ctypes.create_string_buffer(data, len(data))
    attr = _TestRunAttr(prog_fd=prog_fd, data_size_in=len(data), data_in=ctypes.addressof(buf), repeat=repeat)
    _sys._bpf(BPF_PROG_TEST_RUN, attr, "BPF_PROG_TEST_RUN")
    return ctypes.c_int32(attr.retval).value, attr.duration


def prog_info(prog_fd: int) -> _ProgInfo:
    info = _ProgInfo()
    _sys._bpf(BPF_OBJ_GET_INFO_BY_FD, _InfoAttr(bpf_fd=prog_fd, info_len=ctypes.sizeof(info),
                                                info=ctypes.addressof(info)), "BPF_OBJ_GET_INFO_BY_FD")
    return info


class MacHarness:
    """bpf/mac_test.c compiled and loaded: set a key and an offset, run a packet, read the MAC it computed."""

    PROGRAMS = {"xdp_mac_test": "xdp", "tc_mac_test": "sched_cls"}

    def __init__(self) -> None:
        self._bpf, fds = bpf._compile.compile_program("mac_test.c", self.PROGRAMS)
        self.fds = {"xdp": fds["xdp_mac_test"], "tc": fds["tc_mac_test"]}
        self.offset = None
        self.configure(OFFSET)

    def close(self) -> None:
        self._bpf.cleanup()

    def configure(self, offset: int, *, prekeyed: bool = False) -> None:
        table = self._bpf[b"mt_config"]
        leaf = table.Leaf()
        leaf.off, leaf.prekeyed = offset, int(prekeyed)
        table[table.Key(0)] = leaf
        self.offset = offset

    def set_key(self, key: bytes, *, length: int | None = None) -> None:
        """Write KEY (zero-padded to 64 bytes) with length LENGTH (default len(KEY); a larger one tests refusal)."""
        table = self._bpf[b"mt_key"]
        leaf = table.Leaf()  # zeroed: the padding past the key's length must be 0, and prekeyed starts at 0
        ctypes.memmove(leaf.bytes, key, len(key))
        leaf.len = len(key) if length is None else length
        table[table.Key(0)] = leaf

    def run(self, packet: bytes, kind: str = "xdp", repeat: int = 1) -> tuple[int, int]:
        return prog_test_run(self.fds[kind], packet, repeat)

    def last(self) -> tuple[bytes, int, int]:
        """(MAC computed, error, message length) of the last run."""
        out = self._bpf[b"mt_out"][0]
        return bytes(ctypes.string_at(ctypes.addressof(out.mac), MAC_BYTES)), out.err, out.len

    def stats(self) -> dict[str, int]:
        values = self._bpf[b"mt_stats"][0]  # per-CPU: one value per CPU
        names = ("match", "mismatch", "error")
        return {name: sum(v.count[i] for v in values) for i, name in enumerate(names)}

    def verified_insns(self) -> dict[str, int]:
        """Instructions the verifier processed to accept each program (what its log calls 'processed')."""
        return {kind: prog_info(fd).verified_insns for kind, fd in self.fds.items()}


def packet(message: bytes, key: bytes, *, prefix: bytes = bytes(range(OFFSET))) -> bytes:
    return prefix + message + hashlib.blake2b(message, key=key, digest_size=MAC_BYTES).digest()


@pytest.fixture(scope="module")
def harness():
    h = MacHarness()
    yield h
    h.close()


@pytest.fixture
def mac(harness):
    """mac(message, key, kind) -> the MAC the program computed, after checking it accepted the right one."""
    harness.configure(OFFSET)

    def compute(message: bytes, key: bytes, kind: str = "xdp") -> bytes:
        harness.set_key(key)
        verdict, _ = harness.run(packet(message, key), kind)
        computed, err, length = harness.last()
        assert (err, length) == (0, len(message))
        assert verdict == VERDICTS[kind]["match"], f"{kind} rejected a right MAC (len {len(message)})"
        return computed

    return compute


LENGTHS = [0, 1, 127, 128, 129, 255, 256, 257, 1000, 1024, 1355, MSG_MAX]
KEYS = [b"", b"k", bytes(range(32)), bytes(range(100, 164)), b"gossip-secret"]


@pytest.mark.parametrize("kind", ["xdp", "tc"])
@pytest.mark.parametrize("key", KEYS, ids=lambda k: f"key{len(k)}")
def test_mac_equals_hashlib_at_block_boundaries(mac, kind, key):
    rng = random.Random(len(key))
    for length in LENGTHS:
        message = rng.randbytes(length)
        assert mac(message, key, kind) == hashlib.blake2b(message, key=key, digest_size=16).digest(), length


def test_mac_equals_hashlib_at_random_lengths_and_keys(mac):
    rng = random.Random(20240607)
    for _ in range(60):
        length, key = rng.randrange(MSG_MAX + 1), rng.randbytes(rng.randrange(65))
        message = rng.randbytes(length)
        kind = rng.choice(["xdp", "tc"])
        assert mac(message, key, kind) == hashlib.blake2b(message, key=key, digest_size=16).digest(), \
            (kind, length, key.hex())


def test_the_key_length_counts_not_just_its_bytes(mac):
    """Keys b"k" and b"k\\0" pad to the same block; the parameter block tells them apart."""
    message = b"same message"
    assert mac(message, b"k") != mac(message, b"k\0")
    assert mac(message, b"k\0") == hashlib.blake2b(message, key=b"k\0", digest_size=16).digest()


@pytest.mark.parametrize("kind", ["xdp", "tc"])
def test_a_prekeyed_start_gives_the_same_mac(harness, kind):
    rng = random.Random(7)
    for key in [b"", b"x", rng.randbytes(32), rng.randbytes(64)]:
        harness.set_key(key)  # prekeyed back to 0: the program prepares the key on its first run
        harness.configure(OFFSET, prekeyed=True)
        for length in [0, 1, 24, 128, 129, 700, MSG_MAX]:
            message = rng.randbytes(length)
            verdict, _ = harness.run(packet(message, key), kind)
            assert harness.last() == (hashlib.blake2b(message, key=key, digest_size=16).digest(), 0, length)
            assert verdict == VERDICTS[kind]["match"]
        prepared = harness._bpf[b"mt_key"][0]
        assert prepared.prekeyed == (1 if key else 0)
    harness.configure(OFFSET)


@pytest.mark.parametrize("kind", ["xdp", "tc"])
def test_a_wrong_mac_is_rejected(harness, kind):
    rng = random.Random(11)
    key, other = rng.randbytes(32), rng.randbytes(32)
    harness.configure(OFFSET)
    harness.set_key(key)
    before = harness.stats()
    for length in [0, 24, 128, 300, MSG_MAX]:
        message = rng.randbytes(length)
        for wrong in (packet(message, other),  # another key's MAC
                      packet(message, key)[:-MAC_BYTES] + bytes(MAC_BYTES),  # zeros
                      packet(message, key)[:-MAC_BYTES] + rng.randbytes(MAC_BYTES)):
            verdict, _ = harness.run(wrong, kind)
            assert verdict == VERDICTS[kind]["mismatch"], length
            computed, err, _ = harness.last()
            assert err == 0 and computed == hashlib.blake2b(message, key=key, digest_size=16).digest()
    after = harness.stats()
    assert after["mismatch"] - before["mismatch"] == 15 and after["match"] == before["match"]


@pytest.mark.parametrize("kind", ["xdp", "tc"])
def test_a_flipped_bit_anywhere_is_rejected(harness, kind):
    """In the message or the MAC, at every byte: the packet's MAC no longer matches. The prefix is not MACed."""
    rng = random.Random(13)
    key = rng.randbytes(16)
    harness.configure(OFFSET)
    harness.set_key(key)
    for length in [1, 130, 777]:
        good = packet(rng.randbytes(length), key)
        assert harness.run(good, kind)[0] == VERDICTS[kind]["match"]
        for pos in range(len(good)):
            bad = bytearray(good)
            bad[pos] ^= 1 << rng.randrange(8)
            expected = "match" if pos < OFFSET else "mismatch"
            assert harness.run(bytes(bad), kind)[0] == VERDICTS[kind][expected], (length, pos)


def test_the_offset_is_where_the_message_starts(harness):
    rng = random.Random(17)
    key = b"offset"
    harness.set_key(key)
    for offset in [14, 15, 42, 100]:
        harness.configure(offset)
        message = rng.randbytes(200)
        verdict, _ = harness.run(packet(message, key, prefix=rng.randbytes(offset)))
        assert verdict == XDP_PASS and harness.last()[2] == 200
    harness.configure(OFFSET)


@pytest.mark.parametrize("kind", ["xdp", "tc"])
def test_refused_inputs_are_errors_not_verdicts(harness, kind):
    harness.configure(OFFSET)
    harness.set_key(b"k" * 64)
    long_message = bytes(MSG_MAX + 1)
    assert harness.run(packet(long_message, b"k" * 64), kind)[0] == VERDICTS[kind]["error"]
    assert harness.last()[1] == -7  # -E2BIG
    harness.set_key(b"k" * 64, length=65)
    assert harness.run(packet(b"message", b"k" * 64), kind)[0] == VERDICTS[kind]["error"]
    assert harness.last()[1] == -7
    harness.set_key(b"k")
    assert harness.run(bytes(OFFSET + MAC_BYTES - 1), kind)[0] == VERDICTS[kind]["error"]  # no room for a MAC
    assert harness.last()[1] == -22  # -EINVAL


def test_the_verifier_accepted_both_programs_within_bounds(harness):
    counts = harness.verified_insns()
    assert all(0 < n < 200_000 for n in counts.values()), counts
