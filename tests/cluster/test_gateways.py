"""Several gateways, one cluster: any gateway serves any collection, a metadata change
made through one reaches the others, and losing the Raft leader's gateway costs one
election.

The cluster: a Ray head and two workers (n1-n3, one CPU each) host the replicas; three
gateways run on n4 (its Ray node has no CPU), each its own process with its own port,
storage and Raft port, peers of one metadata Raft authenticated with the secret.
"""

from __future__ import annotations

import os
import signal
import time

import pytest
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from tests.cluster import gateways, rest
from tests.cluster.conftest import need
from tests.cluster.connections import escapes
from tests.cluster.raynodes import running, until

SECRET = "gateways test secret, long enough"
PORTS = [6333, 6343, 6353]


@pytest.fixture(scope="module")
def cluster():
    need()
    with running([1, 1, 1, 0]) as made:
        yield made


def _leader(gws: list[gateways.Gateway]) -> gateways.Gateway:
    """The gateway the others agree leads the metadata Raft."""

    def agreed():
        views = [rest.get(f"{g.url}/cluster") for g in gws]
        leaders = {v["raft_info"]["leader"] for v in views}
        if len(leaders) != 1 or None in leaders:
            return None
        leader = leaders.pop()
        return next((g for g, v in zip(gws, views) if v["peer_id"] == leader), None)

    return until(agreed, 30, "the gateways to agree on a Raft leader")


def _names(gateway: gateways.Gateway) -> set[str]:
    return {c["name"] for c in rest.get(f"{gateway.url}/collections")["collections"]}


def test_any_gateway_serves_any_collection_and_the_leaders_loss_costs_one_election(cluster):
    host = cluster.network.hosts[3]
    gws = gateways.start_several(cluster, host, PORTS, cluster.network.scratch, SECRET)
    try:
        clients = [QdrantClient(url=g.url, timeout=60) for g in gws]
        leader = _leader(gws)
        follower = next(g for g in gws if g is not leader)
        fc = clients[gws.index(follower)]

        # Created through a follower (forwarded to the leader, acknowledged once committed).
        fc.create_collection("many", vectors_config=models.VectorParams(size=rest.DIM, distance=models.Distance.DOT),
                             shard_number=2, replication_factor=2)
        acked = {}
        for n, client in enumerate(clients):  # written through every gateway
            points = rest.points(30, start=n * 30, seed=n)
            client.upsert("many", points, wait=True)
            acked.update({p.id: p.vector for p in points})
        for client in clients:  # and every gateway reads all of it
            assert client.count("many", exact=True).count == len(acked)
            assert len(client.retrieve("many", list(acked), consistency=models.ReadConsistencyType.ALL)) == len(acked)

        # A config change, and an alias, made through one gateway are seen through the others.
        clients[2].update_collection("many", optimizers_config=models.OptimizersConfigDiff(indexing_threshold=1234))
        clients[1].update_collection_aliases(change_aliases_operations=[
            models.CreateAliasOperation(create_alias=models.CreateAlias(collection_name="many", alias_name="lots"))])
        for client in clients:
            until(lambda: client.get_collection("many").config.optimizer_config.indexing_threshold == 1234, 10,
                  "the config change to reach every gateway")
            assert client.count("lots", exact=True).count == len(acked)

        # The leader's gateway is killed: the other two elect a leader, and a metadata
        # change succeeds through either of them.
        os.kill(leader.proc.pid, signal.SIGKILL)
        leader.proc.wait(30)
        killed_at = time.monotonic()
        rest_ = [g for g in gws if g is not leader]

        def created():
            try:
                clients[gws.index(rest_[0])].create_collection(
                    "after", vectors_config=models.VectorParams(size=rest.DIM, distance=models.Distance.COSINE))
                return True
            except (UnexpectedResponse, ResponseHandlingException):
                return False

        until(created, 60, "a metadata change to succeed without the leader", step=0.1)
        print(f"a metadata change succeeded {time.monotonic() - killed_at:.1f} s after the leader was killed")
        for g in rest_:
            until(lambda: "after" in _names(g), 10, "the new collection on every gateway left")
            assert QdrantClient(url=g.url, timeout=60).count("many", exact=True).count == len(acked)

        # Started again on its storage, the killed gateway catches up with what it missed.
        restarted = gateways.launch(cluster, host, leader.port, cluster.network.scratch / f"gateway-{leader.port}",
                                    SECRET, peers=[f"{host.address}:{g.port + 2}" for g in rest_]).wait_ready()
        gws[gws.index(leader)] = restarted
        assert _names(restarted) >= {"many", "after"}
        client = QdrantClient(url=restarted.url, timeout=60)
        assert client.count("lots", exact=True).count == len(acked)

        # Deleted through one gateway: gone through all, and so are its replicas' actors.
        clients[gws.index(rest_[1])].delete_collection("many")
        for g in gws:
            until(lambda: "many" not in _names(g), 10, "the deleted collection to leave every gateway")
            with pytest.raises(UnexpectedResponse) as missing:
                QdrantClient(url=g.url, timeout=60).count("many")
            assert missing.value.status_code == 404
        assert [str(c) for c in escapes(cluster.network, cluster.pids())] == []
    finally:
        for g in gws:
            g.stop()
