"""The testbed package's error hierarchy.

`ScenarioError` is the user's mistake in a scenario file and names the file, the line and the field; `UsageError`
is the user's mistake anywhere else (an output path that cannot be written, a directory that is not a run, a value
out of range for the run it applies to) and names what is wrong. The command line reports either in one line and
exits 2. `TopologyError` is a bad topology description (a misuse of the API, caught before anything touches the
kernel). `DeployError` is a failure while building, running or tearing down the real network; `CommandError` is the
one kind of it that comes from an external command, and carries that command and its stderr.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence


class TestbedError(Exception):
    """Base class of every error this package raises."""

    __test__ = False  # the name starts with "Test": keep pytest from collecting it


class ScenarioError(TestbedError, ValueError):
    """A scenario file is invalid; formats as ``file:line: field: message`` (``file: field: message`` when no line
    is to blame, e.g. a command-line override)."""

    def __init__(self, file: str, line: int | None, field: str, message: str) -> None:
        super().__init__(f"{file}{f':{line}' if line is not None else ''}: {field}: {message}")
        self.file = file
        self.line = line
        self.field = field
        self.message = message


class UsageError(TestbedError, ValueError):
    """The user named something a command cannot use: the message names it (the path, the run, the value)."""


class TopologyError(TestbedError, ValueError):
    """A topology description is invalid; the message names the field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class DeployError(TestbedError):
    """Building, running or tearing down the real network failed."""


class CommandError(DeployError):
    """An external command (ip, tc, nft, ethtool, ...) failed; the message holds the command and its stderr."""

    def __init__(self, argv: Sequence[str], returncode: int | None, stderr: str) -> None:
        command = shlex.join(argv)
        status = "timed out" if returncode is None else f"exited {returncode}"
        detail = stderr.strip()
        super().__init__(f"`{command}` {status}" + (f": {detail}" if detail else ""))
        self.argv = tuple(argv)
        self.returncode = returncode
        self.stderr = stderr
