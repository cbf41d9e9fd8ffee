"""What the scenario suites share: one real run per scenario, judged by every module that asks for it.

The parity suite and the scenario suite both run `attack`, `loss`, `metadata` and `partition` on netns at the
scenario's own size. A run is the costly part (20-35 s each of real time), the judging is not: `shared_run` runs a
scenario once per session and hands the same run directory and summary to each test that asks for exactly that
scenario (same file, same overrides, same backend). Every run is checked here as it ends, whoever asked for it:
nothing left behind carrying its run id, its summary.json is what the runner returned, and the plots it names
were drawn.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from testbed.net.cleanup import find_leftovers
from testbed.runner import run_scenario


def _checked_run(s, out: Path) -> dict:
    summary = run_scenario(s, out)
    meta = json.loads((out / "meta.json").read_text())
    if meta.get("backend") != "sim":
        left = find_leftovers(meta["run_id"])
        assert left.empty, f"run left resources behind: {left.summary()}"
    assert json.loads((out / "summary.json").read_text()) == json.loads(json.dumps(summary))
    for plot in s.plots:
        assert (out / f"{plot}.png").stat().st_size > 10_000
    return summary


@pytest.fixture(scope="session")
def shared_run(tmp_path_factory):
    """``shared_run(scenario)`` -> (summary, run_dir): SCENARIO (a parsed `Scenario`, overrides applied) run once
    per session; a second request for an equal scenario gets the first run."""
    cache: dict[str, tuple[dict, Path]] = {}

    def get(s) -> tuple[dict, Path]:
        key = repr(s)  # frozen dataclasses of plain values and mapping proxies: equal scenarios, equal reprs
        if key not in cache:
            out = tmp_path_factory.mktemp(f"{s.name}-{s.backend}") / "run"
            cache[key] = (_checked_run(s, out), out)
        return cache[key]
    return get
