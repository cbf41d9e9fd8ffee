"""Shared test configuration: tests marked root/netns/bpf/mininet are skipped, with the reason, when not root."""

import os

import pytest


def pytest_collection_modifyitems(config, items):
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root (CI runs as root)")
    for item in items:
        if any(item.get_closest_marker(m) for m in ("root", "netns", "bpf", "mininet")):
            item.add_marker(skip)
