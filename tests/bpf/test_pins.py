"""Where pinned maps live: always on the one project bpffs at `PIN_ROOT`, never on a bpffs mounted per run.

A bpffs mounted on a run's own directory outlives the run (rmdir cannot remove a mount point); on a machine where
nothing had mounted `PIN_ROOT` yet, every testbed run used to leave one behind. The test runs in a private mount
namespace (``unshare -m``) so it can start from that fresh-machine state without touching the host's mounts.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.root]

PROBE = r"""
import json, os, subprocess
from bpf import _sys
root = _sys.PIN_ROOT
while os.path.ismount(root):  # start as a fresh machine does: nothing mounted at PIN_ROOT
    subprocess.run(["umount", root], check=True)
pin = _sys.prepare_pin_dir(f"{root}/probe-run/fastpath", "fastpath")
print(json.dumps({"pin": pin, "run_dir_is_mount": os.path.ismount(f"{root}/probe-run"),
                  "root_is_mount": os.path.ismount(root), "on_bpffs": _sys._mounted_bpffs(pin)}))
"""


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None, reason="needs root and unshare")
def test_a_run_pin_dir_is_created_on_the_project_bpffs_not_mounted_on():
    out = subprocess.run(["unshare", "-m", "--propagation", "private", sys.executable, "-c", PROBE],
                         capture_output=True, text=True, timeout=60, cwd=os.path.dirname(os.path.dirname(
                             os.path.dirname(os.path.abspath(__file__)))))
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert got == {"pin": got["pin"], "run_dir_is_mount": False, "root_is_mount": True, "on_bpffs": True}
