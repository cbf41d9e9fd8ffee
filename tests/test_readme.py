"""The README's commands, run as a user would type them, so a documented example cannot rot.

The convention, for every fenced block in README.md whose language is a shell (``sh``, ``bash``, ``console``)
or Python:

- ```` ```sh runnable ```` marks a block this test runs; flags may follow: ``root`` (needs root: namespaces, BPF,
  node processes; skipped without it, CI runs as root), ``slow`` (marked ``slow``), ``timeout=S`` (seconds, 120 by
  default). ```` ```python runnable ```` runs the block with the venv's Python.
- ```` ```sh illustrative ```` marks a block that is not run, for a reason the README gives beside it (it installs
  the machine, is the test suite itself, starts a server, needs a Dask cluster, runs for many minutes).
- A shell block that says neither fails `test_every_shell_block_is_classified`: a new command is classified when it
  is written.

A runnable shell block runs as one bash script (``set -euo pipefail``) from the repository root, with the venv's
``bin`` first on PATH; processes it starts in the background (a line ending in ``&``) are killed when it ends,
with everything else in its process group. Every path under ``runs/`` (where the README's runs write) is
redirected into a temporary directory, so nothing lands in the tree; a block that starts a run, sweep or mirror
must therefore name its ``--out`` under ``runs/``. As root, a block not marked ``root`` runs in a network
namespace of its own (loopback only), so the ports it binds cannot meet another test's.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from testbed import scenario

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
SHELLS = ("sh", "bash", "console", "shell")
DEFAULT_TIMEOUT_S = 120
_FENCE = re.compile(r"^```(\S*)(.*)$")
_RUNS = re.compile(r"(?<![\w./-])runs/")
_STARTS_RUN = re.compile(r"-m testbed (run|sweep|mirror|validate)\b")


@dataclass(frozen=True)
class Block:
    line: int  # of the opening fence
    lang: str
    flags: tuple[str, ...]
    text: str

    @property
    def runnable(self) -> bool:
        return "runnable" in self.flags

    @property
    def timeout_s(self) -> int:
        return next((int(f.split("=", 1)[1]) for f in self.flags if f.startswith("timeout=")), DEFAULT_TIMEOUT_S)

    @property
    def label(self) -> str:
        first = next((ln for ln in self.text.splitlines() if ln.strip() and not ln.startswith("#")), "")
        return f"L{self.line}:{first.split('#')[0].strip()[:60]}"


def blocks(text: str) -> list[Block]:
    out, open_at, info, body = [], None, "", []
    for n, line in enumerate(text.splitlines(), 1):
        m = _FENCE.match(line)
        if open_at is None and m:
            open_at, info, body = n, (m.group(1) + m.group(2)).strip(), []
        elif open_at is not None and line.startswith("```"):
            words = info.split()
            out.append(Block(open_at, words[0] if words else "", tuple(words[1:]), "\n".join(body) + "\n"))
            open_at = None
        elif open_at is not None:
            body.append(line)
    return out


ALL = blocks(README.read_text())
RUNNABLE = [b for b in ALL if b.runnable and (b.lang in SHELLS or b.lang == "python")]


def _param(b: Block):
    marks = ([pytest.mark.root] if "root" in b.flags else []) + ([pytest.mark.slow] if "slow" in b.flags else [])
    return pytest.param(b, marks=marks, id=b.label)


def test_every_shell_block_is_classified():
    shell = [b for b in ALL if b.lang in SHELLS]
    assert shell, "the README has no shell block"
    unclassified = [b.line for b in shell if not ({"runnable", "illustrative"} & set(b.flags))]
    assert not unclassified, f"README.md lines {unclassified}: mark the block 'runnable' or 'illustrative'"
    assert len([b for b in shell if b.runnable]) >= 3


def test_runs_write_under_runs():
    for b in RUNNABLE:
        for line in b.text.splitlines():
            if _STARTS_RUN.search(line):
                assert re.search(r"--out runs/", line), f"README.md block at line {b.line}: {line!r} needs --out runs/..."


def _script(b: Block, tmp: Path) -> str:
    body = _RUNS.sub(f"{tmp}/runs/", b.text)
    # background jobs die with the block; `wait` reaps them so no node outlives it
    return ("set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true' EXIT\n"
            + body)


@pytest.mark.parametrize("block", [b for b in ALL if b.lang == "yaml"], ids=lambda b: f"L{b.line}")
def test_yaml_examples_parse(block: Block):
    """A scenario example parses, at its size and scaled to 8 nodes; a fragment (a ``sim:`` block) parses inside
    the smallest scenario."""
    text = block.text if yaml.safe_load(block.text).get("name") else f"name: readme\nnodes: 8\n{block.text}"
    s = scenario.parse(text, f"README.md:{block.line}")
    assert s.with_overrides(nodes=8).nodes == 8


@pytest.mark.parametrize("block", [_param(b) for b in RUNNABLE])
def test_readme_block_runs(block: Block, tmp_path):
    if "root" in block.flags and os.geteuid() != 0:
        pytest.skip("needs root (CI runs as root)")
    (tmp_path / "runs").mkdir()
    env = {**os.environ, "PATH": f"{ROOT / '.venv' / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"}
    if block.lang == "python":
        argv = [str(ROOT / ".venv" / "bin" / "python"), "-c", block.text]
    else:
        script = tmp_path / "block.sh"
        script.write_text(_script(block, tmp_path))
        argv = ["bash", str(script)]
    if os.geteuid() == 0 and "root" not in block.flags and shutil.which("unshare"):
        argv = ["unshare", "--net", "--", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *argv]
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=block.timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"README.md block at line {block.line} still running after {block.timeout_s} s:\n{out[-3000:]}")
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # anything it left in its session
        except ProcessLookupError:
            pass
    assert proc.returncode == 0, f"README.md block at line {block.line} exited {proc.returncode}:\n{out[-3000:]}"
