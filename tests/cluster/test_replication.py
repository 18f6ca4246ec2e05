"""Replicated shards on several machines: every write on every replica, in one order,
and a lost node's replicas marked dead before any write is acknowledged without them.

The cluster: a Ray head and two workers (n1-n3, one CPU each) host the replicas; the
gateway runs on n4, whose Ray node has no CPU, with a cluster secret: it reaches the
primaries over TCP, and each primary forwards to its peers over TCP.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from qdrant_client import QdrantClient, models

from cluster.peers import peer_id
from tests.cluster import gateways, rest
from tests.cluster.conftest import need
from tests.cluster.connections import escapes
from tests.cluster.raynodes import running, until

SECRET = "replication test secret, long enough"
PORT = 6333
DIM, SHARDS = 16, 2


@pytest.fixture(scope="module")
def cluster():
    need()
    with running([1, 1, 1, 0]) as made:
        yield made


def test_replicas_hold_the_same_points_and_a_lost_node_is_marked_dead(cluster):
    gateway = gateways.start(cluster, cluster.network.hosts[3], PORT, cluster.network.scratch / "storage", SECRET)
    try:
        client = QdrantClient(url=gateway.url, timeout=60)
        client.create_collection("rep", vectors_config=models.VectorParams(size=DIM, distance=models.Distance.DOT),
                                 shard_number=SHARDS, replication_factor=2)
        acked = []
        for batch in range(5):
            points = rest.points(40, start=batch * 40, seed=batch)
            client.upsert("rep", points, wait=True)
            acked += points
        replicas = rest.replicas(gateway, "rep")
        assert len(replicas) == SHARDS * 2 and {r["state"] for r in replicas} == {"Active"}
        for shard in range(SHARDS):  # both copies of each shard hold the same points
            hashes = {r["hash"] for r in replicas if r["shard_id"] == shard}
            assert len(hashes) == 1 and None not in hashes, replicas

        # The same answers as Qdrant's own implementation on the same points.
        reference = QdrantClient(":memory:")
        reference.create_collection("rep", vectors_config=models.VectorParams(size=DIM, distance=models.Distance.DOT))
        reference.upsert("rep", acked, wait=True)
        query = np.random.default_rng(9).standard_normal(DIM).tolist()
        got = client.query_points("rep", query=query, limit=10).points
        want = reference.query_points("rep", query=query, limit=10).points
        assert [p.id for p in got] == [p.id for p in want]

        # Lose the node that holds a replica but no primary (r0 is every shard's
        # primary: no promotion has happened).
        ids = {n["ip"]: n["id"] for n in cluster.driver(cluster.network.hosts[3]).ask("nodes") if n["alive"]}
        node_of = {peer_id(ids[n.host.address]): n for n in cluster.nodes[:3]}
        holding = {r["peer_id"] for r in replicas}
        primaries = {r["peer_id"] for r in replicas if r["replica"] == "r0"}
        victim = next(node for pid, node in node_of.items() if pid in holding and pid not in primaries)
        cluster.kill(victim)

        for batch in range(5, 8):  # writes go on; the replicas on the lost node miss them
            points = rest.points(40, start=batch * 40, seed=batch)
            client.upsert("rep", points, wait=True)
            acked += points
        dead = [r for r in rest.replicas(gateway, "rep") if r["peer_id"] == peer_id(ids[victim.host.address])]
        assert dead and {r["state"] for r in dead} == {"Dead"}
        # Every acknowledged write is there, read from the replicas still active.
        assert client.count("rep", exact=True).count == len(acked)
        got = client.retrieve("rep", [p.id for p in acked], with_vectors=True)
        assert sorted(p.id for p in got) == sorted(p.id for p in acked)
        sent = {p.id: p.vector for p in acked}
        assert all(np.allclose(p.vector, sent[p.id], atol=1e-6) for p in got)
        live = [r for r in rest.replicas(gateway, "rep") if r["state"] == "Active"]
        for shard in range(SHARDS):
            assert len({r["hash"] for r in live if r["shard_id"] == shard}) == 1
        assert [str(c) for c in escapes(cluster.network, cluster.pids())] == []
    finally:
        _restore(cluster, gateway)



def test_a_lost_primary_is_replaced_and_no_acknowledged_write_is_lost(cluster):
    grace = 4
    gateway = gateways.start(cluster, cluster.network.hosts[3], PORT + 10, cluster.network.scratch / "storage-2",
                             SECRET, env={"SHOAL__CLUSTER__NODE_GRACE_S": str(grace)})
    try:
        client = QdrantClient(url=gateway.url, timeout=60)
        client.create_collection("fail", vectors_config=models.VectorParams(size=DIM, distance=models.Distance.DOT),
                                 shard_number=3, replication_factor=2)
        acked = {}
        for batch in range(3):
            points = rest.points(30, start=batch * 30, seed=batch)
            rest.upsert_retrying(client, points)
            acked.update({p.id: p.vector for p in points})

        # A worker (not the head: it holds the GCS) holding some shard's primary.
        ids = {n["ip"]: n["id"] for n in cluster.driver(cluster.network.hosts[3]).ask("nodes") if n["alive"]}
        primaries = {r["peer_id"] for r in rest.replicas(gateway, "fail") if r["replica"] == "r0"}
        victim = next(n for n in cluster.nodes[1:3] if peer_id(ids[n.host.address]) in primaries)
        cluster.kill(victim)
        waits = []
        for batch in range(3, 9):  # every shard written each time: one of them lost its primary
            points = rest.points(30, start=batch * 30, seed=batch)
            waits.append(rest.upsert_retrying(client, points))
            acked.update({p.id: p.vector for p in points})
        print(f"writes waited {max(waits):.1f} s at most for a new primary (node grace {grace} s)")

        replicas = rest.replicas(gateway, "fail")
        lost = peer_id(ids[victim.host.address])
        assert {r["state"] for r in replicas if r["peer_id"] == lost} <= {"Dead"}
        assert all(r["state"] == "Active" for r in replicas if r["peer_id"] != lost and r["replica"] in ("r0", "r1"))
        assert client.count("fail", exact=True).count == len(acked)
        got = client.retrieve("fail", list(acked), with_vectors=True)
        assert len(got) == len(acked) and all(np.allclose(p.vector, acked[p.id], atol=1e-6) for p in got)
        assert [str(c) for c in escapes(cluster.network, cluster.pids())] == []
    finally:
        _restore(cluster, gateway)


def test_a_lost_nodes_replicas_are_rebuilt_elsewhere_and_agree(cluster):
    grace = 4
    gateway = gateways.start(cluster, cluster.network.hosts[3], PORT + 20, cluster.network.scratch / "storage-3",
                             SECRET, env={"SHOAL__CLUSTER__NODE_GRACE_S": str(grace)})
    try:
        client = QdrantClient(url=gateway.url, timeout=60)
        client.create_collection("heal", vectors_config=models.VectorParams(size=DIM, distance=models.Distance.DOT),
                                 shard_number=SHARDS, replication_factor=2)
        acked = {}
        write = rest.batch_writer(client, "heal", acked, 50)
        for batch in range(4):
            write(batch)
        ids = {n["ip"]: n["id"] for n in cluster.driver(cluster.network.hosts[3]).ask("nodes") if n["alive"]}
        victim = cluster.nodes[2]  # a worker; the head holds the GCS
        lost = peer_id(ids[victim.host.address])
        assert any(r["peer_id"] == lost for r in rest.replicas(gateway, "heal"))
        cluster.kill(victim)
        started = time.monotonic()

        def healed():
            write(len(acked) // 50)  # writes go on while the replicas are rebuilt
            replicas = rest.replicas(gateway, "heal")
            active = [r for r in replicas if r["state"] == "Active"]
            return all(len([r for r in active if r["shard_id"] == s]) == 2 for s in range(SHARDS)) \
                and not any(r["peer_id"] == lost for r in replicas) and replicas

        replicas = until(healed, 180, "every shard to have two active replicas again, none on the lost node", step=1)
        print(f"rebuilt in {time.monotonic() - started:.1f} s (node grace {grace} s)")
        write(len(acked) // 50)
        replicas = rest.replicas(gateway, "heal")
        for shard in range(SHARDS):  # the rebuilt copies hold what the others hold
            hashes = {r["hash"] for r in replicas if r["shard_id"] == shard}
            assert len(hashes) == 1 and None not in hashes, replicas
        assert client.count("heal", exact=True).count == len(acked)
        assert [str(c) for c in escapes(cluster.network, cluster.pids())] == []
    finally:
        _restore(cluster, gateway)


def _restore(cluster, gateway: gateways.Gateway) -> None:
    """After a test: its gateway stopped, every node it killed started again, and
    every node alive in the GCS (the module's other tests find the cluster whole).
    A node the GCS gave up on (its health checks missed on a busy machine) is still
    leaving when its process has not yet noticed: wait for it, and start it again."""
    gateway.stop()

    def whole() -> bool:
        for node in cluster.nodes:
            if node.proc.poll() is not None:
                cluster.restart(node)
        alive = {n["ip"] for n in cluster.driver(cluster.head.host).ask("nodes") if n["alive"]}
        return all(node.host.address in alive for node in cluster.nodes)

    until(whole, 120, "every node of the cluster alive again", step=2)
