"""The one place the testbed runs ``ip``, ``tc``, ``nft``, ``ethtool`` (and ``umount``) as commands.

Netlink goes through pyroute2 wherever it covers the call; this module is for the rest (nft rule sets, ethtool
offloads, qdiscs pyroute2 does not model). Every failure raises `CommandError` carrying the command and its stderr,
never a bare `CalledProcessError` and never a log line that is then ignored. Commands can run inside a namespace,
given by path (``/var/run/netns/NAME`` or ``/proc/PID/ns/net``). Nothing here keeps state.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from typing import Any

from ..errors import CommandError

DEFAULT_TIMEOUT_S = 30.0


def in_netns(netns_path: str, argv: Sequence[str]) -> list[str]:
    """ARGV prefixed so that it runs in the network namespace at NETNS_PATH (mounts and /sys stay the root's)."""
    return ["nsenter", f"--net={netns_path}", "--", *argv]


def run(
    argv: Sequence[str],
    *,
    netns_path: str | None = None,
    input: str | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run ARGV (in the namespace at NETNS_PATH if given) and return its result; raise `CommandError` if it fails.

    With ``check=False`` a non-zero exit is returned, not raised; a missing program or a timeout always raises.
    """
    full = in_netns(netns_path, argv) if netns_path else list(argv)
    try:
        done = subprocess.run(full, input=input, capture_output=True, text=True, timeout=timeout_s, check=False)
    except FileNotFoundError as exc:
        raise CommandError(full, 127, f"{exc.filename or full[0]}: not found") from None
    except subprocess.TimeoutExpired as exc:
        stderr = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        raise CommandError(full, None, f"no exit after {timeout_s} s. {stderr}") from None
    if check and done.returncode != 0:
        raise CommandError(full, done.returncode, done.stderr)
    return done


def ip(*args: str, netns_path: str | None = None, check: bool = True) -> str:
    """``ip ARGS``; returns stdout."""
    return run(["ip", *args], netns_path=netns_path, check=check).stdout


def ip_json(*args: str, netns_path: str | None = None) -> Any:
    """``ip -json ARGS``, parsed."""
    out = run(["ip", "-json", *args], netns_path=netns_path).stdout
    return json.loads(out) if out.strip() else []


def tc(*args: str, netns_path: str | None = None, check: bool = True) -> str:
    """``tc ARGS``; returns stdout."""
    return run(["tc", *args], netns_path=netns_path, check=check).stdout


def nft(*args: str, netns_path: str | None = None, script: str | None = None, check: bool = True) -> str:
    """``nft ARGS``, or ``nft -f -`` fed SCRIPT when given (one atomic transaction); returns stdout."""
    argv = ["nft", "-f", "-"] if script is not None else ["nft", *args]
    return run(argv, netns_path=netns_path, input=script, check=check).stdout


def nft_json(*args: str, netns_path: str | None = None) -> list[dict[str, Any]]:
    """``nft -j ARGS``, parsed into the list under the top-level ``"nftables"`` key."""
    out = run(["nft", "-j", *args], netns_path=netns_path).stdout
    return json.loads(out).get("nftables", []) if out.strip() else []


def ethtool(*args: str, netns_path: str | None = None, check: bool = True) -> str:
    """``ethtool ARGS``; returns stdout."""
    return run(["ethtool", *args], netns_path=netns_path, check=check).stdout


def umount(path: str, *, lazy: bool = True) -> None:
    """Unmount PATH (detached with LAZY, so busy mounts go once unused)."""
    run(["umount", *(["--lazy"] if lazy else []), path])
