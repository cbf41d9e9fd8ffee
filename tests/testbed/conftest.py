"""Fixtures for the testbed's deployment tests: a unique run id per test, and a safety net that removes whatever
that run left in the kernel even when the test failed half-way (tests assert on leftovers themselves)."""

from __future__ import annotations

import os
import secrets
import string
from collections.abc import Iterator

import pytest

def _new_run_id() -> str:
    alphabet = string.ascii_lowercase + string.digits
    return "t" + "".join(secrets.choice(alphabet) for _ in range(5))


@pytest.fixture
def run_id() -> Iterator[str]:
    """A fresh run id; everything carrying it is removed after the test (only it: other runs may be going on)."""
    rid = _new_run_id()
    yield rid
    if os.geteuid() == 0:
        from testbed.net.cleanup import clean

        clean(rid)


@pytest.fixture
def other_run_id() -> Iterator[str]:
    rid = _new_run_id()
    yield rid
    if os.geteuid() == 0:
        from testbed.net.cleanup import clean

        clean(rid)
