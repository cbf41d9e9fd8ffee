"""The few bpf(2) commands a process needs to share maps with a loaded program, through ctypes.

A node process opens the maps an orchestrator pinned, reads and writes them, and never compiles anything (one bcc
compile costs ~150 MB), so this module must never import bcc. Also here: mounting the bpffs the pins live on.
Every failed call raises `MapError` naming the command and the errno.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import functools
import os
import platform
import re
import secrets

from .errors import BpfError, MapError

_SYS_BPF = {"x86_64": 321, "aarch64": 280, "armv7l": 386, "ppc64le": 361, "s390x": 351, "riscv64": 280}

BPF_MAP_LOOKUP_ELEM = 1
BPF_MAP_UPDATE_ELEM = 2
BPF_MAP_DELETE_ELEM = 3
BPF_MAP_GET_NEXT_KEY = 4
BPF_OBJ_PIN = 6
BPF_OBJ_GET = 7
BPF_OBJ_GET_INFO_BY_FD = 15
BPF_ENABLE_STATS = 32
BPF_STATS_RUN_TIME = 0
BPF_MAP_LOOKUP_BATCH = 24
BPF_PROG_QUERY = 16
BPF_LINK_CREATE = 28

# attach types (enum bpf_attach_type) of the links this project makes
BPF_XDP = 37
BPF_TCX_INGRESS = 46
BPF_TCX_EGRESS = 47

BPF_ANY = 0
BPF_NOEXIST = 1
BPF_EXIST = 2

BPF_FS_MAGIC = 0xCAFE4A11
PIN_ROOT = "/run/xdp-gossip/bpffs"  # not /sys/fs/bpf: `ip netns exec` hides that from processes it starts

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_libc.syscall.restype = ctypes.c_long


class _MapElemAttr(ctypes.Structure):
    _fields_ = [("map_fd", ctypes.c_uint32), ("pad", ctypes.c_uint32), ("key", ctypes.c_uint64),
                ("value", ctypes.c_uint64), ("flags", ctypes.c_uint64)]


class _BatchAttr(ctypes.Structure):
    _fields_ = [("in_batch", ctypes.c_uint64), ("out_batch", ctypes.c_uint64), ("keys", ctypes.c_uint64),
                ("values", ctypes.c_uint64), ("count", ctypes.c_uint32), ("map_fd", ctypes.c_uint32),
                ("elem_flags", ctypes.c_uint64), ("flags", ctypes.c_uint64)]


class _ObjAttr(ctypes.Structure):
    _fields_ = [("pathname", ctypes.c_uint64), ("bpf_fd", ctypes.c_uint32), ("file_flags", ctypes.c_uint32),
                ("path_fd", ctypes.c_int32), ("pad", ctypes.c_uint32)]


class _LinkCreateAttr(ctypes.Structure):
    """`link_create` of `union bpf_attr` for a link on an interface: prog_fd, target_ifindex, attach_type, flags,
    then (at 16, 8-byte aligned) the tcx member: relative_fd and expected_revision. The tail is zero, as the kernel
    requires of every byte past what the command reads."""

    _fields_ = [("prog_fd", ctypes.c_uint32), ("target_ifindex", ctypes.c_uint32), ("attach_type", ctypes.c_uint32),
                ("flags", ctypes.c_uint32), ("relative_fd", ctypes.c_uint32), ("pad", ctypes.c_uint32),
                ("expected_revision", ctypes.c_uint64), ("tail", ctypes.c_uint64 * 4)]


class _QueryAttr(ctypes.Structure):
    """`query` of `union bpf_attr` (BPF_PROG_QUERY) with the ifindex target of tcx."""

    _fields_ = [("target_ifindex", ctypes.c_uint32), ("attach_type", ctypes.c_uint32),
                ("query_flags", ctypes.c_uint32), ("attach_flags", ctypes.c_uint32), ("prog_ids", ctypes.c_uint64),
                ("count", ctypes.c_uint32), ("pad", ctypes.c_uint32), ("prog_attach_flags", ctypes.c_uint64),
                ("link_ids", ctypes.c_uint64), ("link_attach_flags", ctypes.c_uint64), ("revision", ctypes.c_uint64)]


class _InfoAttr(ctypes.Structure):
    _fields_ = [("bpf_fd", ctypes.c_uint32), ("info_len", ctypes.c_uint32), ("info", ctypes.c_uint64)]


class MapInfo(ctypes.Structure):
    """The head of `struct bpf_map_info` (the kernel fills what fits)."""

    _fields_ = [("type", ctypes.c_uint32), ("id", ctypes.c_uint32), ("key_size", ctypes.c_uint32),
                ("value_size", ctypes.c_uint32), ("max_entries", ctypes.c_uint32), ("map_flags", ctypes.c_uint32),
                ("name", ctypes.c_char * 16)]


class ProgInfo(ctypes.Structure):
    """The head of `struct bpf_prog_info`: enough for the program's id."""

    _fields_ = [("type", ctypes.c_uint32), ("id", ctypes.c_uint32), ("tag", ctypes.c_uint8 * 8)]


def _bpf(cmd: int, attr: ctypes.Structure, what: str) -> int:
    nr = _SYS_BPF.get(platform.machine())
    if nr is None:
        raise MapError(f"bpf(2): unknown syscall number on {platform.machine()}", errno.ENOSYS)
    ret = _libc.syscall(nr, cmd, ctypes.byref(attr), ctypes.sizeof(attr))
    if ret < 0:
        err = ctypes.get_errno()
        raise MapError(f"{what}: {os.strerror(err)}", err)
    return ret


def _addr(obj) -> int:
    return ctypes.addressof(obj)


def obj_get(path: str) -> int:
    """A new fd for the object pinned at PATH (read-write)."""
    cpath = ctypes.create_string_buffer(os.fsencode(path))
    return _bpf(BPF_OBJ_GET, _ObjAttr(pathname=_addr(cpath)), f"BPF_OBJ_GET {path}")


def obj_pin(fd: int, path: str) -> None:
    cpath = ctypes.create_string_buffer(os.fsencode(path))
    _bpf(BPF_OBJ_PIN, _ObjAttr(pathname=_addr(cpath), bpf_fd=fd), f"BPF_OBJ_PIN {path}")


def map_lookup(fd: int, key: ctypes._SimpleCData | ctypes.Structure, value) -> bool:
    """Fill VALUE with the element at KEY; False when there is none."""
    attr = _MapElemAttr(map_fd=fd, key=_addr(key), value=_addr(value))
    try:
        _bpf(BPF_MAP_LOOKUP_ELEM, attr, "BPF_MAP_LOOKUP_ELEM")
    except MapError as e:
        if e.errno == errno.ENOENT:
            return False
        raise
    return True


def map_update(fd: int, key, value, flags: int = BPF_ANY) -> None:
    _bpf(BPF_MAP_UPDATE_ELEM, _MapElemAttr(map_fd=fd, key=_addr(key), value=_addr(value), flags=flags),
         "BPF_MAP_UPDATE_ELEM")


def map_delete(fd: int, key) -> bool:
    """Delete the element at KEY; False when there was none."""
    try:
        _bpf(BPF_MAP_DELETE_ELEM, _MapElemAttr(map_fd=fd, key=_addr(key)), "BPF_MAP_DELETE_ELEM")
    except MapError as e:
        if e.errno == errno.ENOENT:
            return False
        raise
    return True


def map_keys(fd: int, key_type):
    """Every key of the map (a snapshot walk; keys deleted meanwhile may be skipped)."""
    keys = []
    cur, nxt = key_type(), key_type()
    first = True
    while True:
        attr = _MapElemAttr(map_fd=fd, key=0 if first else _addr(cur), value=_addr(nxt))
        try:
            _bpf(BPF_MAP_GET_NEXT_KEY, attr, "BPF_MAP_GET_NEXT_KEY")
        except MapError as e:
            if e.errno == errno.ENOENT:
                return keys
            raise
        keys.append(key_type.from_buffer_copy(nxt))
        ctypes.memmove(ctypes.addressof(cur), ctypes.addressof(nxt), ctypes.sizeof(cur))
        first = False


def map_keys_bytes(fd: int, key_size: int, value_size: int, batch: int = 4096) -> bytes:
    """Every key of a hash map, concatenated, BATCH per bpf(2) call (BPF_MAP_LOOKUP_BATCH): walking 262,144 keys
    one call and one ctypes object each took 1.4 s. Falls back to the one-key walk where the kernel has no batch
    lookup for the map (EINVAL, ENOTSUPP)."""
    keys = (ctypes.c_uint8 * (key_size * batch))()
    values = (ctypes.c_uint8 * (value_size * batch))()
    token_in, token_out = ctypes.c_uint64(), ctypes.c_uint64()  # the kernel's opaque position (a bucket index)
    out = []
    first = True
    while True:
        attr = _BatchAttr(in_batch=0 if first else _addr(token_in), out_batch=_addr(token_out), keys=_addr(keys),
                          values=_addr(values), count=batch, map_fd=fd)
        try:
            _bpf(BPF_MAP_LOOKUP_BATCH, attr, "BPF_MAP_LOOKUP_BATCH")
            done = False
        except MapError as e:
            if e.errno == errno.ENOENT:  # the last batch (maybe empty)
                done = True
            elif first and e.errno in (errno.EINVAL, 524):  # 524: ENOTSUPP, not in the errno module
                return b"".join(bytes(k) for k in map_keys(fd, ctypes.c_uint8 * key_size))
            else:
                raise
        out.append(bytes(keys)[:attr.count * key_size])
        if done:
            return b"".join(out)
        token_in.value = token_out.value
        first = False


def map_info(fd: int) -> MapInfo:
    info = MapInfo()
    _bpf(BPF_OBJ_GET_INFO_BY_FD, _InfoAttr(bpf_fd=fd, info_len=ctypes.sizeof(info), info=_addr(info)),
         "BPF_OBJ_GET_INFO_BY_FD")
    return info


def check_map(fd: int, name: str, types: tuple) -> None:
    """The map at FD (called NAME) has the key and value sizes of TYPES, (key ctypes type, value ctypes type):
    a pin left by another version of a program would otherwise be read and written with the wrong layout."""
    key_type, value_type = types
    info = map_info(fd)
    if (info.key_size, info.value_size) != (ctypes.sizeof(key_type), ctypes.sizeof(value_type)):
        raise BpfError(f"map {name}: key/value of {info.key_size}/{info.value_size} bytes, expected "
                       f"{ctypes.sizeof(key_type)}/{ctypes.sizeof(value_type)} (a pin from another version?)")


def open_pinned_maps(pin_dir: str, names, layouts: dict) -> dict[str, int]:
    """{name: fd} of the maps NAMES pinned in PIN_DIR, each checked against its layout in LAYOUTS (`check_map`);
    on any failure the fds already opened are closed."""
    fds: dict[str, int] = {}
    try:
        for name in names:
            fds[name] = obj_get(os.path.join(pin_dir, name))
            check_map(fds[name], name, layouts[name])
    except BaseException:
        for fd in fds.values():
            os.close(fd)
        raise
    return fds


def map_memlock(fd: int) -> int:
    """The kernel memory the map at FD takes, in bytes (its fdinfo's ``memlock``: what the kernel charges it)."""
    with open(f"/proc/self/fdinfo/{fd}") as f:
        for line in f:
            if line.startswith("memlock:"):
                return int(line.split()[1])
    raise MapError(f"fdinfo of fd {fd}: no memlock line (not a BPF map?)", errno.EINVAL)


def link_create(prog_fd: int, ifindex: int, attach_type: int, flags: int = 0) -> int:
    """A BPF link of program PROG_FD on interface IFINDEX (of the calling thread's namespace) at ATTACH_TYPE
    (BPF_XDP with FLAGS the XDP mode, or BPF_TCX_INGRESS / BPF_TCX_EGRESS appended after the programs already
    there). Returns the link's fd: the program stays attached until the last fd of the link is closed, so a link
    nobody pinned goes away with the process that holds it, however that process ends."""
    attr = _LinkCreateAttr(prog_fd=prog_fd, target_ifindex=ifindex, attach_type=attach_type, flags=flags)
    return _bpf(BPF_LINK_CREATE, attr, f"BPF_LINK_CREATE (attach type {attach_type}) on ifindex {ifindex}")


def prog_query(ifindex: int, attach_type: int, max_progs: int = 64) -> list[int]:
    """The ids of the programs attached to interface IFINDEX (of the calling thread's namespace) at ATTACH_TYPE
    (the tcx hooks), in the order they run; [] when none."""
    ids = (ctypes.c_uint32 * max_progs)()
    attr = _QueryAttr(target_ifindex=ifindex, attach_type=attach_type, prog_ids=_addr(ids), count=max_progs)
    _bpf(BPF_PROG_QUERY, attr, f"BPF_PROG_QUERY (attach type {attach_type}) on ifindex {ifindex}")
    return list(ids[:min(attr.count, max_progs)])


def prog_id(fd: int) -> int:
    info = ProgInfo()
    _bpf(BPF_OBJ_GET_INFO_BY_FD, _InfoAttr(bpf_fd=fd, info_len=ctypes.sizeof(info), info=_addr(info)),
         "BPF_OBJ_GET_INFO_BY_FD")
    return info.id


class ProgRunInfo(ctypes.Structure):
    """`struct bpf_prog_info` up to run_cnt (offsets of the UAPI header): the program's own run-time counters."""

    _fields_ = [("type", ctypes.c_uint32), ("id", ctypes.c_uint32), ("_skip", ctypes.c_uint8 * 184),
                ("run_time_ns", ctypes.c_uint64), ("run_cnt", ctypes.c_uint64)]


def prog_run_stats(fd: int) -> tuple[int, int]:
    """(run_time_ns, run_cnt) of the program FD: what the kernel summed while `bpf_stats_enabled` was on. A tail
    call runs inside its caller's accounting, so an entry program's figures include the programs it jumps to."""
    info = ProgRunInfo()
    _bpf(BPF_OBJ_GET_INFO_BY_FD, _InfoAttr(bpf_fd=fd, info_len=ctypes.sizeof(info), info=_addr(info)),
         "BPF_OBJ_GET_INFO_BY_FD")
    return info.run_time_ns, info.run_cnt


BPF_STATS_SYSCTL = "/proc/sys/kernel/bpf_stats_enabled"


class _EnableStatsAttr(ctypes.Structure):
    _fields_ = [("type", ctypes.c_uint32)]


@contextlib.contextmanager
def bpf_stats_enabled():
    """The kernel's run-time statistics of every BPF program on for the block, then back to what they were (they
    cost every program two clock reads per run, so they are on only while something measures).

    Through BPF_ENABLE_STATS: the kernel keeps them on while this process holds the fd it returns, a count of its
    own beside the kernel.bpf_stats_enabled sysctl's, so another process writing the sysctl (a benchmark setting it
    back to 0) cannot switch them off halfway through a measurement. A kernel without that command: the sysctl,
    restored after. Without either, no figures (run counts stay 0)."""
    try:
        fd = _bpf(BPF_ENABLE_STATS, _EnableStatsAttr(type=BPF_STATS_RUN_TIME), "BPF_ENABLE_STATS")
    except MapError:
        fd = None
    if fd is not None:
        try:
            yield
        finally:
            os.close(fd)
        return
    if not os.path.exists(BPF_STATS_SYSCTL):
        yield
        return
    with open(BPF_STATS_SYSCTL) as f:
        before = f.read().strip()
    with open(BPF_STATS_SYSCTL, "w") as f:
        f.write("1")
    try:
        yield
    finally:
        with open(BPF_STATS_SYSCTL, "w") as f:
            f.write(before)


@functools.cache
def possible_cpus() -> int:
    """How many values a per-CPU map holds per key (the kernel's possible CPUs, not the online ones)."""
    with open("/sys/devices/system/cpu/possible") as f:
        spec = f.read().strip()
    count = 0
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        count += int(hi or lo) - int(lo) + 1
    return count


def percpu_lookup(fd: int, key, value_type) -> list | None:
    """Each possible CPU's value at KEY, or None when there is none. Per-CPU values are 8-byte aligned."""
    stride = (ctypes.sizeof(value_type) + 7) & ~7
    ncpu = possible_cpus()
    buf = (ctypes.c_uint8 * (stride * ncpu))()
    if not map_lookup(fd, key, buf):
        return None
    return [value_type.from_buffer_copy(buf, i * stride) for i in range(ncpu)]


def sum_percpu_counters(fd: int, ifindex: int | None, value_type, names) -> dict[str, int]:
    """A per-CPU counter array map keyed by ifindex, summed over CPUs for IFINDEX (or over every interface when
    None); VALUE_TYPE has a ``count`` array whose slots are NAMES."""
    keys = [ctypes.c_uint32(ifindex)] if ifindex is not None else map_keys(fd, ctypes.c_uint32)
    totals = [0] * len(names)
    for key in keys:
        for value in percpu_lookup(fd, key, value_type) or ():
            for i, n in enumerate(value.count):
                totals[i] += n
    return dict(zip(names, totals))


def percpu_update(fd: int, key, value, flags: int = BPF_ANY) -> None:
    """Set KEY to VALUE on every CPU."""
    stride = (ctypes.sizeof(value) + 7) & ~7
    ncpu = possible_cpus()
    buf = (ctypes.c_uint8 * (stride * ncpu))()
    raw = bytes(value)
    for i in range(ncpu):
        ctypes.memmove(ctypes.addressof(buf) + i * stride, raw, len(raw))
    map_update(fd, key, buf, flags)


def _mounted_bpffs(path: str) -> bool:
    """Whether PATH lies on a bpffs: the mount holding it (the longest mount point above it) is of type bpf."""
    real = os.path.realpath(path)
    best, best_type = "", ""
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            point = fields[4]
            sep = fields.index("-")
            inside = real == point or real.startswith(point.rstrip("/") + "/")
            if inside and len(point) >= len(best):
                best, best_type = point, fields[sep + 1]
    return best_type == "bpf"


def ensure_bpffs(path: str) -> str:
    """Mount a bpffs at PATH unless one is there already; returns PATH.

    Pins live under /run rather than /sys/fs/bpf because `ip netns exec` remounts /sys and would hide them from
    processes started inside a namespace.
    """
    os.makedirs(path, mode=0o700, exist_ok=True)
    if not _mounted_bpffs(path):
        if _libc.mount(b"bpf", os.fsencode(path), b"bpf", 0, b"mode=0700") != 0:
            err = ctypes.get_errno()
            raise MapError(f"mount -t bpf {path}: {os.strerror(err)}", err)
    return path


def pin_dir_name(kind: str) -> str:
    """A fresh pin directory name; the pid in it lets `remove_stale_pins` find pins of dead processes."""
    return f"{kind}-{os.getpid()}-{secrets.token_hex(3)}"


def prepare_pin_dir(pin_dir: str | None, kind: str) -> str:
    """The directory to pin a program's maps in: PIN_DIR, or a fresh one under PIN_ROOT; its bpffs is mounted."""
    if pin_dir is None:
        return os.path.join(ensure_bpffs(PIN_ROOT), pin_dir_name(kind))
    parent = os.path.dirname(os.path.abspath(pin_dir))
    if parent == PIN_ROOT or parent.startswith(PIN_ROOT + "/"):
        # Below the project's bpffs: mount it at PIN_ROOT itself, never a fresh bpffs on a run's directory (a
        # mount there would outlive the run: rmdir cannot remove a mount point).
        ensure_bpffs(PIN_ROOT)
        os.makedirs(parent, mode=0o700, exist_ok=True)
    else:
        ensure_bpffs(parent)
    return pin_dir


def remove_stale_pins(root: str = PIN_ROOT) -> list[str]:
    """Remove pin directories under ROOT left by processes that died without closing (their maps are freed once
    nothing else holds them). Returns the directories removed."""
    removed = []
    with contextlib.suppress(FileNotFoundError):
        for name in os.listdir(root):
            m = re.fullmatch(r"(fastpath|broadcast|hbplane)-(\d+)-[0-9a-f]+", name)
            if not m or os.path.exists(f"/proc/{m[2]}"):
                continue
            path = os.path.join(root, name)
            unpin([os.path.join(path, f) for f in os.listdir(path)], path)
            removed.append(path)
    return removed


def unpin(paths: list[str], pin_dir: str | None = None) -> None:
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    if pin_dir:
        with contextlib.suppress(OSError):
            os.rmdir(pin_dir)
