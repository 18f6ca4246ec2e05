"""A gateway whose shards are on other machines reaches them over TCP.

The cluster: a Ray head and three workers (n1-n4, one CPU each), and a gateway
host n5 whose Ray node has no CPU, so that it hosts no shard. The gateway runs
there (``shoal serve --ray-address``, with a cluster secret): every shard is on
another machine, and each request must cross the test network to the shards'
TCP listeners, authenticated, not go through Ray calls.
"""

from __future__ import annotations

import numpy as np
import pytest
from qdrant_client import QdrantClient, models

from tests.cluster import gateways
from tests.cluster.conftest import need
from tests.cluster.connections import connections, escapes
from tests.cluster.raynodes import RayCluster, running, session_pids, until

SECRET = "a test secret, long enough to count"
PORT = 6333
DIM, POINTS, SHARDS = 16, 300, 3


@pytest.fixture(scope="module")
def cluster():
    need()
    with running([1, 1, 1, 1, 0]) as made:
        yield made


def _gateway(cluster: RayCluster, secret: str | None) -> gateways.Gateway:
    return gateways.start(cluster, cluster.network.hosts[4], PORT, cluster.network.scratch / "storage", secret)


def _shard_hosts(cluster: RayCluster) -> list[str]:
    """The node (n1..n5) of each shard actor process, one entry per process."""
    return sorted(node.name for node in cluster.nodes for _ in gateways.shard_pids(node))


def _load(client: QdrantClient, name: str) -> tuple[np.ndarray, list[models.PointStruct]]:
    rng = np.random.default_rng(5)
    vectors = rng.standard_normal((POINTS, DIM)).astype(np.float32)
    points = [models.PointStruct(id=i, vector=vectors[i].tolist(), payload={"i": i, "even": i % 2 == 0})
              for i in range(POINTS)]
    client.create_collection(name, vectors_config=models.VectorParams(size=DIM, distance=models.Distance.COSINE),
                             shard_number=SHARDS)
    client.upsert(name, points, wait=True)
    return vectors, points


def test_shards_on_other_machines_are_reached_over_authenticated_tcp(cluster):
    gateway = _gateway(cluster, SECRET)
    try:
        client = QdrantClient(url=gateway.url, timeout=60)
        vectors, points = _load(client, "far")
        hosts = _shard_hosts(cluster)
        assert len(hosts) == SHARDS and "n5" not in hosts, hosts  # no shard on the gateway's machine
        assert len(set(hosts)) == SHARDS, hosts  # round the nodes: one each

        reference = QdrantClient(":memory:")
        reference.create_collection("far", vectors_config=models.VectorParams(size=DIM, distance=models.Distance.COSINE))
        reference.upsert("far", points, wait=True)
        for q in vectors[:5] + 0.01:
            flt = models.Filter(must=[models.FieldCondition(key="even", match=models.MatchValue(value=True))])
            got = client.query_points("far", query=q.tolist(), limit=10, query_filter=flt).points
            want = reference.query_points("far", query=q.tolist(), limit=10, query_filter=flt).points
            assert [p.id for p in got] == [p.id for p in want]
            assert [p.score for p in got] == pytest.approx([p.score for p in want], abs=1e-5)
        assert client.count("far", exact=True).count == POINTS

        # The gateway holds established TCP connections to the shards' listeners on
        # their own hosts, one per shard, and none leaves the test network.
        gateway_pids = session_pids(gateway.proc.pid)
        shard_ips = {cluster.nodes[int(h[1:]) - 1].host.address for h in hosts}
        to_shards = {c.peer.rsplit(":", 1)[0] for c in connections(cluster.network.hosts[4].name)
                     if c.pids & gateway_pids and c.peer.rsplit(":", 1)[0] in shard_ips
                     and not c.peer.endswith(":6379")}
        assert to_shards == shard_ips
        assert len(gateways.shard_listeners(cluster)) == SHARDS
        assert [str(c) for c in escapes(cluster.network, cluster.pids())] == []

        # The shards belong to the cluster, not to the gateway: they outlive it, and
        # the gateway started again finds the same processes, with their points.
        before = {pid for node in cluster.nodes for pid in gateways.shard_pids(node)}
        gateway.stop()
        gateway = _gateway(cluster, SECRET)
        client = QdrantClient(url=gateway.url, timeout=60)
        assert client.count("far", exact=True).count == POINTS
        assert {pid for node in cluster.nodes for pid in gateways.shard_pids(node)} == before
        client.delete_collection("far")  # which does stop them
        until(lambda: not {pid for node in cluster.nodes for pid in gateways.shard_pids(node)} & before, 30,
              "the deleted collection's shard processes to exit")
    finally:
        gateway.stop()


def test_without_a_secret_shards_listen_on_no_port_and_ray_carries_the_calls(cluster):
    gateway = _gateway(cluster, None)
    try:
        client = QdrantClient(url=gateway.url, timeout=60)
        _load(client, "near")
        assert client.count("near", exact=True).count == POINTS
        assert gateways.shard_listeners(cluster) == []
    finally:
        gateway.stop()

