"""Durable metadata: the state file a node restarts from (``NodeConfig.state_dir``, ``--state-dir``).

What is kept is the core's `DurableState` -- the metadata version and value it holds and its hybrid logical
clock's high-water mark -- so that a whole cluster restarted at once still has its configuration, and a node whose
wall clock stepped back while it was down still publishes above every version it had seen.

The file, ``<state_dir>/metadata.state``, little-endian:

    offset  size  field
    0       4     magic  b"GSMD"
    4       2     format version (1)
    6       4     payload length P
    10      P     payload: cluster id u32, version seq u64, version origin u32, HLC mark u64, data (the rest)
    10+P    32    BLAKE2b-256 of bytes [0, 10+P)

A write is atomic: the new file is written under a temporary name in the same directory, flushed and fsynced,
renamed over the old one, and the directory is fsynced, so after a crash at any moment the file is the old state
or the new one. The driver writes it before the sends carrying an adopted value go out and before a publish
returns (`gossip._driver`); nothing else writes it, and the heartbeat path never does.

One process at a time: on first use a `FileStore` takes an exclusive ``flock`` on ``<state_dir>/metadata.lock``
and holds it for the rest of the process's life (the kernel drops it when the process dies, SIGKILL included), so
a second node started on the same directory is refused with a `StateError` instead of the two overwriting each
other's state. The lock belongs to the process, not to one store: stores of one process on one directory share
it (tests restart a node in-process on the same directory), so it does not catch two nodes inside one process.

This module must never trust a file it cannot verify: a short, truncated, corrupt or foreign file is refused with
a reason (`Loaded.problem`) and the node starts empty; decoding never raises on the file's bytes. It never touches
the network, a clock or the core: it only turns a `DurableState` into bytes on disk and back.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import struct
from typing import NamedTuple, Protocol

from ._core import DurableState, Version
from .errors import GossipError

MAGIC = b"GSMD"
FORMAT_VERSION = 1
FILE_NAME = "metadata.state"
LOCK_NAME = "metadata.lock"
MAX_FILE_BYTES = 1 << 20  # data is at most one datagram's worth (< 64 KiB); anything this large is not ours
_HEADER = struct.Struct("<4sHI")
_PAYLOAD = struct.Struct("<IQIQ")
_DIGEST_BYTES = 32
# the lock files this process holds, by (st_dev, st_ino): an open lock file's inode cannot be reused, so a directory
# removed and made again (a new lock file) is locked anew, while a second store on a held directory is not refused
_HELD: dict[tuple[int, int], int] = {}


class StateError(GossipError):
    """The state directory cannot be used (created, locked: another node holds it, written); the message names the
    path and the OS error."""


class Loaded(NamedTuple):
    """What a store held: STATE when there was a valid one, else None with PROBLEM saying why if it was refused
    (None too when there simply was none)."""

    state: DurableState | None
    problem: str | None = None


class StateStore(Protocol):
    """Where a driver keeps a core's durable state (a file on a node, memory that outlives a crash in the
    simulator)."""

    path: str

    def load(self) -> Loaded: ...

    def save(self, state: DurableState) -> None: ...


def encode(state: DurableState, cluster: int) -> bytes:
    """STATE as the bytes of a state file of CLUSTER."""
    payload = _PAYLOAD.pack(cluster, state.version.seq, state.version.origin, state.hlc) + state.data
    body = _HEADER.pack(MAGIC, FORMAT_VERSION, len(payload)) + payload
    return body + hashlib.blake2b(body, digest_size=_DIGEST_BYTES).digest()


def decode(blob: bytes, cluster: int) -> DurableState | str:
    """The state in BLOB, or a string saying why it is refused. Never raises on BLOB's bytes."""
    n = len(blob)
    if n < _HEADER.size + _PAYLOAD.size + _DIGEST_BYTES:
        return f"too short for a state file ({n} bytes)"
    magic, fmt, length = _HEADER.unpack_from(blob)
    if magic != MAGIC:
        return f"not a state file (magic {magic!r}, expected {MAGIC!r})"
    if fmt != FORMAT_VERSION:
        return f"format version {fmt} is not supported (this node reads {FORMAT_VERSION})"
    want = _HEADER.size + length + _DIGEST_BYTES
    if n != want:
        return f"truncated or padded: the header says {want} bytes, the file has {n}"
    body, digest = blob[:-_DIGEST_BYTES], blob[-_DIGEST_BYTES:]
    if hashlib.blake2b(body, digest_size=_DIGEST_BYTES).digest() != digest:
        return "checksum mismatch: the file is corrupt"
    if length < _PAYLOAD.size:
        return f"payload of {length} bytes is too short"
    file_cluster, seq, origin, hlc = _PAYLOAD.unpack_from(blob, _HEADER.size)
    if file_cluster != cluster:
        return f"belongs to cluster {file_cluster:#010x}, not this node's {cluster:#010x}"
    if (seq == 0) != (origin == 0):
        return f"version {seq}/{origin:#010x} is not a version"
    return DurableState(version=Version(seq, origin), data=bytes(blob[_HEADER.size + _PAYLOAD.size:-_DIGEST_BYTES]),
                        hlc=hlc)


def _lock(directory: str) -> None:
    """Hold DIRECTORY's lock file for the rest of this process's life, or raise `StateError` naming DIRECTORY (and
    the holder's pid, when it wrote one) if another process holds it."""
    path = os.path.join(directory, LOCK_NAME)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)  # CLOEXEC: no child inherits the lock
    except OSError as e:
        raise StateError(f"state_dir: cannot open the lock file {path}: {e.strerror or e}") from None
    st = os.fstat(fd)
    if (st.st_dev, st.st_ino) in _HELD:
        os.close(fd)  # a flock belongs to the open file description that took it: closing this one keeps it
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        holder = _holder(fd)
        os.close(fd)
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise StateError(f"state_dir: {directory} is in use by another node{holder}, which holds {path}; "
                             f"two nodes must not share a state directory") from None
        raise StateError(f"state_dir: cannot lock {path}: {e.strerror or e}") from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except OSError:
        pass  # the pid only makes a second node's error clearer: a full disk must not stop this node starting
    _HELD[(st.st_dev, st.st_ino)] = fd


def _holder(fd: int) -> str:
    """The holder's pid from a held lock file as ' (pid N)', or '' when it has not written one (yet, or could not)."""
    try:
        text = os.pread(fd, 32, 0).decode("ascii").strip()
    except (OSError, UnicodeDecodeError):
        return ""
    return f" (pid {text})" if text.isdigit() else ""


class FileStore:
    """The state file in directory DIRECTORY (created, with its parents, and locked for this process on first
    use)."""

    def __init__(self, directory: str, *, cluster: int) -> None:
        self.directory = directory
        self.cluster = cluster
        self.path = os.path.join(directory, FILE_NAME)
        self._tmp = os.path.join(directory, f".{FILE_NAME}.tmp")
        self._made = False

    def _ensure_dir(self) -> None:
        if not self._made:
            try:
                os.makedirs(self.directory, exist_ok=True)
            except OSError as e:
                raise StateError(f"state_dir: cannot create {self.directory}: {e.strerror or e}") from None
            _lock(self.directory)
            self._made = True

    def load(self) -> Loaded:
        """The state file's state; a file that cannot be read or verified is refused (and moved aside to
        ``metadata.state.refused``, so the next write does not destroy the evidence). Raises `StateError` only
        when the directory cannot be created or locked (another process holds it)."""
        self._ensure_dir()
        try:
            with open(self.path, "rb") as f:
                blob = f.read(MAX_FILE_BYTES + 1)
        except FileNotFoundError:
            return Loaded(None)
        except OSError as e:
            return Loaded(None, f"cannot be read: {e.strerror or e}")
        if len(blob) > MAX_FILE_BYTES:
            got: DurableState | str = f"larger than {MAX_FILE_BYTES} bytes: not a state file"
        else:
            got = decode(blob, self.cluster)
        if isinstance(got, str):
            try:
                os.replace(self.path, self.path + ".refused")
            except OSError:
                pass  # the refusal stands either way; the next write replaces the file
            return Loaded(None, got)
        return Loaded(got)

    def save(self, state: DurableState) -> None:
        """Replace the state file with STATE atomically and durably. Raises `OSError` when the disk refuses."""
        self._ensure_dir()
        blob = encode(state, self.cluster)
        fd = os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            view = memoryview(blob)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(self._tmp, self.path)
        dfd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(dfd)  # the rename itself is durable only once the directory is
        finally:
            os.close(dfd)


class MemoryStore:
    """A store that outlives its node's crashes in the simulator: the same bytes a state file would hold, through
    the same codec, with no disk (a simulated crash cannot tear a write, so there is nothing else to model)."""

    def __init__(self, *, cluster: int, path: str = "memory") -> None:
        self.cluster = cluster
        self.path = path
        self.blob: bytes | None = None

    def load(self) -> Loaded:
        if self.blob is None:
            return Loaded(None)
        got = decode(self.blob, self.cluster)
        return Loaded(None, got) if isinstance(got, str) else Loaded(got)

    def save(self, state: DurableState) -> None:
        self.blob = encode(state, self.cluster)
