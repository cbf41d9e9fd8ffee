"""The simulator predicts the testbed: a reduced validation set, run for real and mirrored with the default model.

Two scenarios of the set (`testbed.experiments.validate.SET`; `python -m testbed validate` runs all of them), each
run once on netns and mirrored on the simulator with the default host model under five seeds. The model reads
nothing but the run's own heartbeat hops and CPU accounting, so it is not tuned to these curves. A row passes when
the KS distance (seeds pooled) is within the target or within what chance alone gives for those sample sizes
(`validate.ks_critical`), and the median seed alone within its own bound; and, where the run had XDP, when the
simulator's share of duplicate drops made by XDP is within 10 % of the testbed's. Needs root.
"""

import pytest

from testbed.experiments import validate
from testbed.net.cleanup import find_leftovers

pytestmark = [pytest.mark.root, pytest.mark.netns, pytest.mark.bpf, pytest.mark.slow]

REDUCED = ("validation/n16-f2-c05.yaml", "validation/n24-f2-c1-loss-noxdp.yaml")


@pytest.mark.parametrize("name", REDUCED)
def test_the_host_model_predicts_a_testbed_run_it_was_not_tuned_to(name, tmp_path):
    (row,) = validate.validate(tmp_path, scenarios=(name,), runs=1, seeds=5, progress=lambda line: None)
    print(validate.table([row]))
    assert row.samples[0] >= 100 and row.samples[1] >= 4 * row.samples[0]
    assert row.ks_critical == pytest.approx(validate.ks_critical(*row.samples), abs=1e-3)
    assert row.passed, validate.table([row])
    tb, sim = row.xdp_share
    if row.xdp:
        assert tb is not None and sim is not None and abs(sim - tb) <= 0.1 * tb, row.xdp_share
    assert find_leftovers(None).namespaces == ()
