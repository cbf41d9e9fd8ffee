"""Every shipped scenario with ``membership: swim`` on the simulator, beside the same scenario with the heartbeat
protocol: a check that passes with one protocol must pass with the other (the checks mean the same for both), and
no check may pass where it could not judge (the heartbeat protocol records no suspicions, so `no_false_suspicions`
is unknown there, never passed).

At the parity suite's sizes (`_shared.SIZES`); no root needed. The same scenarios on netns with SWIM are in
test_parity.py (``test_swim_tells_the_same_story_on_netns_and_sim``) and tests/node/test_swim.py.
"""

from __future__ import annotations

import pytest

from testbed.runner import run_scenario

from _shared import SIZES, parity_scenario

NOT_MEMBERSHIP = {"validation"}  # a rumor-timing scenario with heartbeats only recorded, not a membership test


def _checks(summary: dict) -> dict[str, bool | None]:
    return {c["name"]: c["passed"] for c in summary["checks"]}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(set(SIZES) - NOT_MEMBERSHIP))
def test_every_scenario_means_the_same_with_swim_on_the_simulator(name, tmp_path):
    base = parity_scenario(name).with_overrides(backend="sim")
    got = {}
    for membership in ("heartbeat", "swim"):
        s = base.with_overrides(node={"membership": membership, "options": {}})
        got[membership] = _checks(run_scenario(s, tmp_path / membership))
    assert set(got["heartbeat"]) == set(got["swim"])
    for check, hb in got["heartbeat"].items():
        sw = got["swim"][check]
        if check == "no_false_suspicions":
            assert hb is None and sw is not None, (check, hb, sw)
            continue
        assert sw == hb, f"{name}: {check} is {sw} with swim, {hb} with heartbeat"
