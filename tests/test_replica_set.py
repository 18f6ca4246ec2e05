"""A replicated shard as the gateway drives it (cluster.replica_set): real shards on
disk, each served on its own Unix socket, reached by socket clients; the metadata is
the real pure ``apply`` over a placement, as Raft would commit it. No Ray."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from cluster import metadata_ops, routing
from cluster.metadata_ops import SetReplicaState
from cluster.replica_set import READ_CONSISTENCY, ReplicaSet
from cluster.replicator import ServedShard
from cluster.shard_client import NOT_STARTED, DirectShard
from cluster.transport import ShardServer
from shard.local_shard import LocalShard
from shard.types import Distance, NearestQuery, PayloadSelector, SearchRequest, ShardConfig, VectorParams

DIM = 8
CONFIG = ShardConfig(vectors={"": VectorParams(DIM, Distance.DOT)})
INCARNATION = "c" * 32


def upsert(ids, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {"type": "upsert", "ids": list(ids), "vectors": {"": rng.normal(size=(len(ids), DIM)).astype(np.float32)},
            "payloads": [{"n": i, "kind": ("a", "b")[i % 2]} for i in ids]}


class Cluster:
    """Three replicas of shard 0 on nodes n0..n2, a placement in a metadata state,
    and the ReplicaSet a gateway on node n0 would hold."""

    def __init__(self, tmp_path, write_factor: int = 1):
        self.shards, self.served, self.servers = {}, {}, {}
        for k in range(3):
            r = f"r{k}"
            self.shards[r] = LocalShard(tmp_path / r, CONFIG, background_indexing=False)
            self.served[r] = ServedShard(self.shards[r])
            self.servers[r] = ShardServer(self.served[r])
        placement = {"incarnation": INCARNATION, "shards": [{
            "epoch": 1, "primary": "r0", "next_replica": 3,
            "replicas": {f"r{k}": {"node": f"n{k}", "state": "active"} for k in range(3)}}]}
        op = metadata_ops.CreateCollection("c", {"params": {"shard_number": 1, "replication_factor": 3}}, placement)
        self.state = metadata_ops.apply(metadata_ops.empty_state(), op)[0]
        self.marked: list[dict[str, str]] = []
        clients = {r: DirectShard(s.address, 0) for r, s in self.servers.items()}
        self.set = ReplicaSet(0, self.entry(), clients, {r: s.endpoints() for r, s in self.servers.items()},
                              own_node="n0", write_factor=write_factor, mark_dead=self.mark_dead, write_timeout=3)

    def entry(self) -> dict:
        return self.state["collections"]["c"]["placement"]["shards"][0]

    async def mark_dead(self, shard: int, states: dict[str, str]) -> None:
        """What the gateway's owner does: commit each through the metadata, then
        hand the set the new entry."""
        self.marked.append(states)
        for replica, state in states.items():
            self.state = metadata_ops.apply(self.state, SetReplicaState("c", INCARNATION, shard, replica, "dead", state))[0]
        self.set.update(self.entry(), self.set.replicas, self.set.endpoints)

    def stop(self, replica: str) -> None:
        self.servers[replica].close()
        self.served[replica].close(take_snapshot=False)

    def close(self) -> None:
        for r in self.servers:
            try:
                self.stop(r)
            except RuntimeError:
                pass


@pytest.fixture
def cluster(tmp_path):
    made = Cluster(tmp_path)
    yield made
    made.close()


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def search(vector) -> list:
    return [SearchRequest(NearestQuery(np.asarray(vector, np.float32)), limit=5, with_payload=PayloadSelector())]


def test_writes_reach_every_replica_and_reads_see_them(cluster):
    async def go():
        for i in range(4):
            seq = await cluster.set.apply(upsert(range(i * 5, i * 5 + 5), seed=i), True)
            assert seq == i + 1
        assert len({s.digest() for s in cluster.shards.values()}) == 1
        assert await cluster.set.count(None) == 20
        for consistency in (None, 2, "majority", "quorum", "all"):
            READ_CONSISTENCY.set(consistency)
            hits = await cluster.set.search_batch(search(np.ones(DIM)))
            assert [p.id for p in hits[0]] == [p.id for p in cluster.shards["r1"].search_batch(search(np.ones(DIM)))[0]]
            assert await cluster.set.count(None) == 20
            assert sorted(r.id for r in await cluster.set.retrieve(list(range(25)), PayloadSelector(), False)) == list(range(20))

    run(go())
    assert cluster.marked == []


def test_a_replica_that_misses_a_write_is_dead_before_the_write_returns(cluster):
    async def go():
        await cluster.set.apply(upsert(range(5)), True)
        cluster.stop("r2")
        seq = await cluster.set.apply(upsert(range(5, 10)), True)
        # Returned: and "r2" was marked dead first, from the state it was in.
        assert seq == 2 and cluster.marked == [{"r2": "active"}]
        assert cluster.entry()["replicas"]["r2"]["state"] == "dead"
        # From now on it is neither written to nor read from.
        assert await cluster.set.apply(upsert(range(10, 15)), True) == 3
        assert cluster.marked == [{"r2": "active"}]
        READ_CONSISTENCY.set("all")
        with pytest.raises(routing.NotEnoughReplicas):  # "all" counts the dead replica too, as Qdrant
            await cluster.set.count(None)
        READ_CONSISTENCY.set(2)
        assert await cluster.set.count(None) == 15

    run(go())
    assert cluster.shards["r0"].digest() == cluster.shards["r1"].digest()


def test_a_write_below_its_consistency_factor_fails_and_marks_nobody(tmp_path):
    cluster = Cluster(tmp_path, write_factor=3)
    try:
        async def go():
            await cluster.set.apply(upsert(range(5)), True)
            cluster.stop("r1")
            with pytest.raises(Exception, match="replica r1"):
                await cluster.set.apply(upsert(range(5, 10)), True)
            assert cluster.marked == []  # the client retries; Qdrant marks no replica here either

        run(go())
    finally:
        cluster.close()


def test_a_read_goes_on_to_another_replica_when_one_is_unreachable(cluster):
    async def go():
        await cluster.set.apply(upsert(range(10)), True)
        cluster.stop("r0")  # the gateway's own node's replica: asked first
        assert await cluster.set.count(None) == 10
        assert "r0" in cluster.set._failing
        # Reads spread over the others meanwhile, and never fail.
        assert [await cluster.set.count({"must": [{"key": "kind", "match": {"value": "a"}}]}) for _ in range(4)] == [5] * 4

    run(go())


def test_a_partial_replica_that_misses_a_write_is_marked_dead_from_any_state(cluster):
    """A partial replica (being filled) does not count for a write, but one that missed
    it must never become active without it: it is marked dead whatever its state by
    the time the mark is committed (the controller may be activating it)."""
    async def go():
        await cluster.set.apply(upsert(range(5)), True)
        cluster.state = metadata_ops.apply(cluster.state, SetReplicaState("c", INCARNATION, 0, "r2", "partial"))[0]
        cluster.set.update(cluster.entry(), cluster.set.replicas, cluster.set.endpoints)
        cluster.stop("r2")
        assert await cluster.set.apply(upsert(range(5, 10)), True) == 2  # the write stands
        assert cluster.marked == [{"r2": None}]
        assert cluster.entry()["replicas"]["r2"]["state"] == "dead"

    run(go())


def test_a_replica_the_set_has_not_heard_of_is_located_before_a_write(cluster):
    """A replica added by the controller, or started through another gateway, is
    looked up (``locate``) before a write goes out: one running takes the write; a
    partial one never started is left to its transfer, not marked (it would be marked
    again and again under a steady flow of writes, and never start); one that cannot
    be told is marked dead, as one that missed the write."""
    answers: dict[str, object] = {}
    asked: list[str] = []

    async def locate(shard: int, replica: str):
        asked.append(replica)
        return answers[replica]

    async def go():
        cluster.state = metadata_ops.apply(cluster.state, SetReplicaState("c", INCARNATION, 0, "r2", "partial"))[0]
        heard = {r: c for r, c in cluster.set.replicas.items() if r != "r2"}
        cluster.set.update(cluster.entry(), heard, {r: e for r, e in cluster.set.endpoints.items() if r != "r2"})
        cluster.set._locate = locate

        answers["r2"] = NOT_STARTED
        assert await cluster.set.apply(upsert(range(5)), True) == 1
        assert asked == ["r2"] and cluster.marked == [] and cluster.shards["r2"].seq == 0

        answers["r2"] = (DirectShard(cluster.servers["r2"].address, 0), cluster.servers["r2"].endpoints())
        assert await cluster.set.apply(upsert(range(5, 10)), True) == 2
        assert cluster.marked == [] and "r2" in cluster.set.replicas
        assert cluster.shards["r2"].seq == 2  # forwarded, the gap filled from the primary's log
        assert await cluster.set.apply(upsert(range(10, 15)), True) == 3
        assert asked == ["r2", "r2"]  # known now: not looked up again

        heard = {r: c for r, c in cluster.set.replicas.items() if r != "r2"}
        cluster.set.update(cluster.entry(), heard, {r: e for r, e in cluster.set.endpoints.items() if r != "r2"})
        answers["r2"] = None
        assert await cluster.set.apply(upsert(range(15, 20)), True) == 4
        assert cluster.marked == [{"r2": None}]

    run(go())


def test_a_copy_is_fetched_from_a_replica_and_handed_to_every_replica(cluster, tmp_path):
    """What snapshots of a replicated collection do: the gateway fetches an active
    replica's copy into a folder of its own, and hands a copy to every replica, which
    restores it; replicas that did not take it are marked dead."""
    async def go():
        await cluster.set.apply(upsert(range(30)), True)
        exported = await cluster.set.export_copy(str(tmp_path / "copy"), timeout=30)
        assert exported == {"seq": 1, "points": 30}
        assert {p.name for p in (tmp_path / "copy").iterdir()} >= {"meta.json", "points.json"}
        await cluster.set.apply({"type": "delete_points", "ids": list(range(10))}, True)
        assert await cluster.set.count(None) == 20
        done = await cluster.set.restore_copy(str(tmp_path / "copy"), timeout=30)  # back to the copy
        assert done["points"] == 30
        assert len({s.digest() for s in cluster.shards.values()}) == 1 and cluster.marked == []
        assert await cluster.set.count(None) == 30
        cluster.stop("r2")
        with pytest.raises(Exception, match="did not take the copy"):
            await cluster.set.restore_copy(str(tmp_path / "copy"), timeout=30, mark=False)
        await cluster.set.restore_copy(str(tmp_path / "copy"), timeout=30)
        assert cluster.marked == [{"r2": None}]

    run(go())
