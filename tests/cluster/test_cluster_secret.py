"""A gateway joining a Ray cluster with another cluster secret than the gateways
already there ends at once with one line saying what to change (exit status 2),
instead of running leaderless; one with the same secret starts.

One Ray node (n1, the head) and the gateways on it.
"""

from __future__ import annotations

import pytest

from tests.cluster import gateways
from tests.cluster.conftest import need
from tests.cluster.raynodes import running

SECRET = "the cluster's secret, long enough"


@pytest.fixture(scope="module")
def cluster():
    need()
    with running([2]) as made:
        yield made


def test_a_wrong_secret_ends_the_gateway_in_one_line(cluster):
    host = cluster.network.hosts[0]
    scratch = cluster.network.scratch
    first = gateways.start(cluster, host, 6333, scratch / "first", SECRET)
    try:
        wrong = gateways.launch(cluster, host, 6343, scratch / "wrong", "another secret, also long enough")
        assert wrong.proc.wait(timeout=120) == 2
        log = wrong.log.read_text(errors="replace")
        assert "Traceback" not in log
        last = log.strip().splitlines()[-1]
        assert last.startswith("shoal: error: cluster.secret differs from the secret of the gateways"), last
        assert "another secret" not in log and SECRET not in log

        same = gateways.start(cluster, host, 6353, scratch / "same", SECRET)
        same.stop()
    finally:
        first.stop()
