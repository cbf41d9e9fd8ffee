"""`bpf.available()` says why eBPF cannot be used; importing the package loads neither bcc nor pyroute2."""

from __future__ import annotations

import subprocess
import sys

from bpf import _compile


def test_not_root_is_reported(monkeypatch):
    monkeypatch.setattr(_compile.os, "geteuid", lambda: 1000)
    ok, why = _compile.available.__wrapped__()
    assert not ok and "root" in why


def test_missing_bcc_is_reported(monkeypatch):
    monkeypatch.setattr(_compile.os, "geteuid", lambda: 0)
    monkeypatch.setattr(_compile.importlib.util, "find_spec", lambda name: None)
    ok, why = _compile.available.__wrapped__()
    assert not ok and "bcc" in why


def test_importing_the_package_stays_light():
    code = "import sys, bpf; bpf.available(); print('bcc' in sys.modules, 'pyroute2' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
