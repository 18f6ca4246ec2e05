"""Fixtures for multi-machine tests: networks of namespaces and Ray clusters on them.

Every network is closed by a finaliser even when its test fails (and by an
atexit hook if pytest itself dies); a network left by a run that was killed is
removed by the next one (``netns.remove_stale``).
"""

from __future__ import annotations

import os

import pytest

from tests.cluster.netns import Network, missing
from tests.cluster.raynodes import running


def need(iptables: bool = False) -> None:
    """Skip, saying why, where this machine cannot run these tests; in CI (``CI``
    set, where scripts/test installs the tools) fail instead: a skipped fault test
    there would pass unnoticed."""
    why = missing(iptables)
    if why is not None:
        if os.environ.get("CI"):
            pytest.fail(f"cluster tests cannot run in CI: {why}")
        pytest.skip(why)


@pytest.fixture
def make_network():
    """Factory of ``Network``s, all closed at the end of the test."""
    need()
    made: list[Network] = []

    def make(size: int) -> Network:
        made.append(Network(size))
        return made[-1]

    yield make
    for network in made:
        network.close()


@pytest.fixture(scope="module")
def ray_cluster():
    """Four Ray nodes of one CPU each on hosts n1 (head) to n4, and a client host
    n5 whose node has no CPU: drivers run there (a driver needs a node on its
    host, see ``raynodes``). Shared by a module's tests: a test that kills or cuts
    a node brings it back before it ends.

    Ray's GCS checks each node every second instead of every 3 s: a dead node's
    checks fail at once, so after 5 misses it is reported dead in ~5 s rather
    than ~15 s; a silent (cut-off) node's checks each wait 10 s first, so a cut
    of a few seconds is never taken for a death."""
    need()
    with running([1, 1, 1, 1, 0]) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def ray_driver(ray_cluster):
    """A ``raydriver`` on the client host n5, for the module's tests."""
    return ray_cluster.driver(ray_cluster.network.hosts[4])
