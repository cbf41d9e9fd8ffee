"""Fixtures for the BPF tests: each program compiled once per session, and throwaway testnets.

Everything here is skipped, with the reason, when not root or when bcc or the kernel headers are missing.
"""

from __future__ import annotations

import pytest

import bpf

from bpf_testnet import Testnet


def pytest_collection_modifyitems(config, items):
    ok, why = bpf.available()
    if ok:
        return
    for item in items:
        if item.get_closest_marker("bpf"):
            item.add_marker(pytest.mark.skip(reason=f"eBPF unavailable: {why}"))


@pytest.fixture(scope="session")
def fastpath():
    with bpf.FastPath.compile() as fp:
        yield fp


@pytest.fixture(scope="session")
def broadcaster():
    with bpf.Broadcaster.compile() as bc:
        yield bc


@pytest.fixture(scope="session")
def faults():
    with bpf.Faults.compile() as ft:
        yield ft


@pytest.fixture
def no_leftovers():
    """For tests on a longer-lived testnet: after each test, nothing may stay attached to it."""
    nets: list[Testnet] = []
    yield nets.append
    leftovers = [found for net in nets for found in net.attached_programs()]
    assert not leftovers, f"programs left attached: {leftovers}"


@pytest.fixture
def testnet_factory():
    """make(n, bridge=False, offloads=True) -> a Testnet, torn down (and checked for leftovers) after the test."""
    made: list[Testnet] = []

    def make(n: int, **options) -> Testnet:
        net = Testnet(n, **options).__enter__()
        made.append(net)
        return net

    yield make
    errors = []
    for net in reversed(made):
        try:
            net.__exit__(None, None, None)
        except AssertionError as e:
            errors.append(str(e))
    assert not errors, errors
