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


def test_stale_pin_directories_of_every_program_kind_are_found_and_only_those(tmp_path):
    from bpf import _sys

    dead = 2 ** 22 + 12345  # above the default pid_max range used here: no such process
    assert not os.path.exists(f"/proc/{dead}")
    for name in (f"fastpath-{dead}-a1b2c3", f"broadcast-{dead}-a1b2c3", f"hbplane-{dead}-a1b2c3",
                 f"hbplane-{os.getpid()}-a1b2c3", f"somebody-{dead}-a1b2c3"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "hb_members").write_bytes(b"")
    removed = sorted(os.path.basename(p) for p in _sys.remove_stale_pins(str(tmp_path)))
    assert removed == sorted([f"broadcast-{dead}-a1b2c3", f"fastpath-{dead}-a1b2c3", f"hbplane-{dead}-a1b2c3"])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f"hbplane-{os.getpid()}-a1b2c3",
                                                                 f"somebody-{dead}-a1b2c3"])
