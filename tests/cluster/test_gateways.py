"""Several gateways, one cluster: any gateway serves any collection, a metadata change
made through one reaches the others, and losing the Raft leader's gateway costs one
election.

The cluster: a Ray head and two workers (n1-n3, one CPU each) host the replicas; three
gateways run on n4 (its Ray node has no CPU), each its own process with its own port,
storage and Raft port, peers of one metadata Raft authenticated with the secret.
"""

from __future__ import annotations

import hashlib
import os
import signal
import time

import numpy as np
import pytest
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from cluster.peers import peer_id
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


def test_replicas_move_copy_and_drop_through_the_cluster_api(cluster):
    """Qdrant's move_shard, replicate_shard and drop_replica on a collection of one shard
    with two replicas among three nodes, then PATCHes of its replication_factor: each
    ends with the replicas where (and as many as) it asked, active, agreeing, and every
    point there."""
    gateway = gateways.start(cluster, cluster.network.hosts[3], 6363, cluster.network.scratch / "gateway-ops", SECRET)
    try:
        client = QdrantClient(url=gateway.url, timeout=60)
        client.create_collection("ops", vectors_config=models.VectorParams(size=rest.DIM, distance=models.Distance.DOT),
                                 replication_factor=2)
        points = rest.points(100)
        client.upsert("ops", points, wait=True)
        nodes = {n["ip"]: n["id"] for n in cluster.driver(cluster.network.hosts[3]).ask("nodes") if n["alive"]}
        peers = {peer_id(nodes[n.host.address]) for n in cluster.nodes[:3]}

        def operate(operation) -> bool:
            return client.http.distributed_api.update_collection_cluster("ops", cluster_operations=operation).result

        def placed(count: int):
            replicas = rest.replicas(gateway, "ops")
            if len(replicas) != count or any(r["state"] != "Active" for r in replicas) \
                    or len({r["hash"] for r in replicas}) != 1:
                return None
            return {r["peer_id"] for r in replicas}

        holders = until(lambda: placed(2), 30, "two active replicas")
        source, free = sorted(holders)[0], (peers - holders).pop()
        assert operate(models.MoveShardOperation(
            move_shard=models.MoveShard(shard_id=0, from_peer_id=source, to_peer_id=free)))
        info = client.http.distributed_api.collection_cluster_info("ops").result
        assert [(t.from_, t.to, t.sync) for t in info.shard_transfers] in ([(source, free, False)], [])
        holders = until(lambda: (p := placed(2)) and source not in p and p, 120, "the move to end")
        assert free in holders

        spare = (peers - holders).pop()
        assert operate(models.ReplicateShardOperation(
            replicate_shard=models.ReplicateShard(shard_id=0, from_peer_id=free, to_peer_id=spare)))
        until(lambda: placed(3), 120, "the copy to end")
        assert operate(models.DropReplicaOperation(
            drop_replica=models.Replica(shard_id=0, peer_id=free)))
        assert until(lambda: placed(2), 120, "the drop to end") == peers - {free}
        got = client.retrieve("ops", [p.id for p in points], consistency=models.ReadConsistencyType.ALL)
        assert len(got) == len(points)
        # PATCH of replication_factor: every shard to that many again, online.
        client.update_collection("ops", collection_params=models.CollectionParamsDiff(
            replication_factor=3, write_consistency_factor=2))
        until(lambda: placed(3), 120, "a third replica after raising the factor")
        client.upsert("ops", rest.points(10, start=1000, seed=5), wait=True)  # two replicas must have it
        client.update_collection("ops", collection_params=models.CollectionParamsDiff(
            replication_factor=1, write_consistency_factor=1))
        until(lambda: placed(1), 120, "one replica left after lowering the factor")
        assert client.count("ops", exact=True).count == len(points) + 10
        client.update_collection("ops", collection_params=models.CollectionParamsDiff(replication_factor=2))
        until(lambda: placed(2), 120, "two replicas again")
        me = rest.get(f"{gateway.url}/cluster")["peer_id"]  # a member, holding no replica
        with pytest.raises(UnexpectedResponse) as refused:  # Qdrant's checks still come first
            operate(models.DropReplicaOperation(drop_replica=models.Replica(shard_id=0, peer_id=me)))
        assert refused.value.status_code == 400 and f"Peer {me} has no replica of shard 0" in str(refused.value)
    finally:
        gateway.stop()


def test_snapshots_of_a_replicated_collection_are_carried_over_the_shards_connections(cluster):
    """A collection snapshot and a shard snapshot of a collection whose replicas are on
    other nodes: the gateway fetches each shard's copy over the shard's connection, and
    recovering hands each replica its copy the same way; the replicas then agree and
    hold what the snapshot holds."""
    storage = cluster.network.scratch / "gateway-snap"
    gateway = gateways.start(cluster, cluster.network.hosts[3], 6373, storage, SECRET)
    try:
        client = QdrantClient(url=gateway.url, timeout=120)
        client.create_collection("snap", vectors_config=models.VectorParams(size=rest.DIM, distance=models.Distance.DOT),
                                 shard_number=2, replication_factor=2)
        points = rest.points(200)
        client.upsert("snap", points, wait=True)
        taken = client.create_snapshot("snap")
        shard_taken = client.create_shard_snapshot("snap", shard_id=1)
        client.delete("snap", points_selector=models.PointIdsList(points=list(range(100))), wait=True)
        assert client.count("snap", exact=True).count == 100

        def agree(count: int) -> bool:
            replicas = rest.replicas(gateway, "snap")
            return len(replicas) == 4 and all(r["state"] == "Active" for r in replicas) and all(
                len({r["hash"] for r in replicas if r["shard_id"] == s}) == 1 for s in (0, 1)) \
                and client.count("snap", exact=True).count == count

        # A shard snapshot brings back shard 1's half of the deleted points.
        shard_file = storage / "snapshots" / _key("snap") / "shards" / "1" / shard_taken.name
        assert client.recover_shard_snapshot("snap", shard_id=1, location=f"file://{shard_file}")
        in_shard_1 = {p.id for p in client.scroll("snap", limit=1000)[0]}
        assert until(lambda: agree(len(in_shard_1)), 60, "the shard's replicas to agree")
        assert 100 < len(in_shard_1) < 200

        # The collection snapshot brings back everything, as a new life of the collection.
        full = storage / "snapshots" / _key("snap") / taken.name
        assert client.recover_snapshot("snap", location=f"file://{full}", wait=True)
        assert until(lambda: agree(200), 60, "the recovered collection's replicas to agree")
        got = client.retrieve("snap", [p.id for p in points], with_vectors=True,
                              consistency=models.ReadConsistencyType.ALL)
        sent = {p.id: p.vector for p in points}
        assert len(got) == 200 and all(np.allclose(p.vector, sent[p.id], atol=1e-6) for p in got)
    finally:
        gateway.stop()


def _key(collection: str) -> str:
    """The snapshots folder of a collection (cluster.snapshots: a digest of its name)."""
    return hashlib.sha256(collection.encode()).hexdigest()[:32]
