"""A machine that comes back under its name keeps its replicas.

Placement knows a Ray node that advertises ``shoal-node:<name>`` by that name
(``cluster.runtime``), as the Helm chart's storage pods do with their pod names: a
pod restarted with its volume is a new Ray node, but the same machine to Shoal.
Here the nodes with CPUs (n1-n3) carry names, and a gateway on n4 (no CPU) holds a
collection with two replicas per shard. A replica node is killed with kill -9 and
started again, with the same folder, while writes go on: its replicas are started
there again and catch up, under the same replica ids on the same peer, rather than
being rebuilt elsewhere (which would give them new ids: ``test_replication.py``).
"""

from __future__ import annotations

import pytest
from qdrant_client import QdrantClient, models

from cluster.peers import peer_id
from tests.cluster import gateways, rest
from tests.cluster.conftest import need
from tests.cluster.connections import escapes
from tests.cluster.raynodes import running, until

SECRET = "named nodes test secret, long enough"
DIM, SHARDS = rest.DIM, 2


@pytest.fixture(scope="module")
def cluster():
    need()
    with running([1, 1, 1, 0], named=True) as made:
        yield made


def test_a_node_that_comes_back_under_its_name_keeps_its_replicas(cluster):
    # A grace longer than the restart takes: nothing is rebuilt elsewhere meanwhile.
    gateway = gateways.start(cluster, cluster.network.hosts[3], 6333, cluster.network.scratch / "storage", SECRET,
                             env={"SHOAL__CLUSTER__NODE_GRACE_S": "120"})
    try:
        client = QdrantClient(url=gateway.url, timeout=60)
        client.create_collection("named", vectors_config=models.VectorParams(size=DIM, distance=models.Distance.DOT),
                                 shard_number=SHARDS, replication_factor=2)
        acked = {}
        write = rest.batch_writer(client, "named", acked, 40)
        for batch in range(3):
            write(batch)
        before = rest.replicas(gateway, "named")
        names = {peer_id(node.name): node for node in cluster.nodes[:3]}
        assert {r["peer_id"] for r in before} <= set(names), "replicas are placed by the nodes' names"
        # A worker (the head holds the GCS) that holds a replica.
        victim = next(names[r["peer_id"]] for r in before if not names[r["peer_id"]].head)
        cluster.kill(victim)
        for batch in range(3, 6):  # acknowledged by the replicas left
            write(batch)
        cluster.restart(victim)

        def caught_up():
            write(len(acked) // 40)
            now = rest.replicas(gateway, "named")
            return {r["state"] for r in now} == {"Active"} and now

        after = until(caught_up, 180, "every replica active again", step=1)
        key = lambda r: (r["shard_id"], r["replica"], r["peer_id"])  # noqa: E731
        assert sorted(map(key, after)) == sorted(map(key, before)), "the same replicas, on the same peers"
        for shard in range(SHARDS):
            hashes = {r["hash"] for r in after if r["shard_id"] == shard}
            assert len(hashes) == 1 and None not in hashes, after
        assert client.count("named", exact=True).count == len(acked)
        got = {p.id: p.vector for p in client.retrieve("named", list(acked), with_vectors=True)}
        assert got.keys() == acked.keys()
        assert [str(c) for c in escapes(cluster.network, cluster.pids())] == []
    finally:
        gateway.stop()
