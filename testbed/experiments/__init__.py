"""Experiments over many runs: `sweep` (a grid of simulator runs on every core or a Dask cluster) and `mirror`
(a testbed run's scenario on the simulator, with the host measured on that run, compared by KS distance; the
comparison itself is `testbed.analysis.compare_runs`, drawn by `testbed.plots.compare`)."""
