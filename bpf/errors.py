"""The bpf package's error hierarchy.

`BpfUsageError` means the caller misused the API (a bad probability, too many targets); the others mean the kernel
or the machine refused something, and carry what was asked and why.
"""

from __future__ import annotations


class BpfError(Exception):
    """Base class of every error this package raises."""


class BpfUsageError(BpfError, ValueError):
    """The caller passed something invalid."""


class UnavailableError(BpfError):
    """eBPF cannot be used here (no bcc, no kernel headers, not root); the message says which."""


class CompileError(BpfError):
    """bcc failed to compile or the verifier rejected a program; the message holds its log."""


class AttachError(BpfError):
    """A program could not be attached to or detached from an interface."""


class MapError(BpfError, OSError):
    """A bpf(2) call on a map or pin failed; `errno` is the kernel's answer."""

    def __init__(self, message: str, err: int) -> None:
        OSError.__init__(self, err, message)

    def __str__(self) -> str:
        return self.strerror
