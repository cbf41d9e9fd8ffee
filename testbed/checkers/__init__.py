"""The run's checks, one module each, found through `REGISTRY` (check name -> `Check`).

`testbed.analysis.summarize` runs them and the scenario schema reads their names and parameter fields from here;
neither lists them. Each is a pure function of the recorded history: see `base`.
"""

from .base import REGISTRY, Check, CheckResult, register

# Importing a check module registers it; the order here is the order checks are listed in.
from . import membership_converged, metadata_converged, no_false_deaths  # noqa: E402,F401,I001
from . import bad_packets_dropped, no_lost_update  # noqa: E402,F401,I001
from . import every_update_delivered, no_false_deaths_under_light_loss, resources_flat  # noqa: E402,F401,I001
from . import no_false_suspicions  # noqa: E402,F401,I001

__all__ = ["REGISTRY", "Check", "CheckResult", "register"]
