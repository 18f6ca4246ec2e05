"""The cluster endpoints on a real server, through qdrant-client 1.15.1 (its
``http.distributed_api``: the REST client's cluster calls) and raw HTTP:
GET /cluster, GET and POST /collections/{name}/cluster.

A single Shoal server is a one-member Raft cluster: GET /cluster answers Qdrant's
``enabled`` form with this gateway as the only peer and the leader; each
collection's shards are all local and active, with their point counts and the
content hash of each (equal for equal points, whatever order they were written
in); every cluster operation is refused as Qdrant refuses it on one peer.
"""

from __future__ import annotations

import json
import random
import time

import pytest
from qdrant_client import models
from qdrant_client.http.exceptions import UnexpectedResponse

from cluster.placement import shard_of
from tests.api.rawhttp import call, error_text

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

VECTORS = models.VectorParams(size=4, distance=models.Distance.COSINE)


@pytest.fixture
def server(shoal_server):
    if shoal_server is None:
        pytest.skip("the cluster API needs a real Shoal server (SHOAL_TEST_AGAINST_MEMORY=1)")
    shoal_server.ensure_up()
    return shoal_server


def points(ids) -> list[models.PointStruct]:
    return [models.PointStruct(id=i, vector=[1.0, (i % 7) / 7, (i % 5) / 5, 0.5 + i / 1000],
                               payload={"i": i, "tag": f"t{i % 3}", "nested": {"k": [i, "x"]}}) for i in ids]


def refusal(client, name: str, operation) -> tuple[int, str]:
    with pytest.raises(UnexpectedResponse) as caught:
        client.http.distributed_api.update_collection_cluster(name, cluster_operations=operation)
    answer = caught.value
    return answer.status_code, json.loads(answer.content)["status"]["error"]


def test_cluster_status_is_a_one_peer_raft(server, shoal):
    status, body = call("GET", f"{server.url}/cluster")
    assert status == 200 and body["status"] == "ok"
    result = body["result"]
    assert set(result) == {"status", "peer_id", "peers", "raft_info", "consensus_thread_status",
                           "message_send_failures"}
    me = result["peer_id"]
    assert result["status"] == "enabled" and isinstance(me, int) and 0 < me < 2**53
    assert result["peers"] == {str(me): {"uri": f"tcp://127.0.0.1:{server.port + 2}"}}
    raft = result["raft_info"]
    assert raft["leader"] == me and raft["role"] == "Leader" and raft["is_voter"] is True
    assert raft["term"] >= 1 and raft["commit"] >= 1 and raft["pending_operations"] == 0
    assert result["consensus_thread_status"]["consensus_thread_status"] == "working"
    assert result["consensus_thread_status"]["last_update"].endswith("Z")
    assert result["message_send_failures"] == {}

    parsed = shoal.http.distributed_api.cluster_status().result  # qdrant-client reads it
    assert isinstance(parsed, models.ClusterStatusOneOf1)
    assert parsed.peer_id == me and parsed.raft_info.role == models.StateRole.LEADER
    assert set(parsed.peers) == {str(me)}


@pytest.mark.parametrize("shards", [1, 3])
def test_collection_cluster_info_counts_and_hashes(server, shoal, collection_names, shards):
    first, second = collection_names("cl_a"), collection_names("cl_b")
    ids = list(range(200))
    for name in (first, second):
        shoal.create_collection(name, vectors_config=VECTORS, shard_number=shards)
    shoal.upsert(first, points(ids), wait=True)
    shuffled = ids[:]
    random.Random(5).shuffle(shuffled)
    for start in range(0, 200, 37):  # the same points, in other batches and another order
        shoal.upsert(second, points(shuffled[start:start + 37]), wait=True)

    info = shoal.http.distributed_api.collection_cluster_info(first).result
    assert isinstance(info, models.CollectionClusterInfo)  # qdrant-client parses Shoal's extra fields away
    me = shoal.http.distributed_api.cluster_status().result.peer_id
    assert info.peer_id == me and info.shard_count == shards
    assert info.remote_shards == [] and info.shard_transfers == [] and info.resharding_operations is None
    expected = [sum(1 for i in ids if shard_of(i, shards) == s) for s in range(shards)]
    assert [(s.shard_id, s.points_count, s.state) for s in info.local_shards] == [
        (s, expected[s], models.ReplicaState.ACTIVE) for s in range(shards)]

    def raw(name: str) -> dict:
        status, body = call("GET", f"{server.url}/collections/{name}/cluster")
        assert status == 200
        return body["result"]

    a, b = raw(first), raw(second)
    assert set(a) == {"peer_id", "shard_count", "local_shards", "remote_shards", "shard_transfers"}
    assert all(set(s) == {"shard_id", "points_count", "state", "shoal_replica", "shoal_primary", "shoal_content_hash"}
               for s in a["local_shards"])
    assert all(s["shoal_primary"] is True for s in a["local_shards"])  # one server: every shard's only copy
    hashes_a = [s["shoal_content_hash"] for s in a["local_shards"]]
    assert all(isinstance(h, str) and len(h) == 32 for h in hashes_a)
    assert hashes_a == [s["shoal_content_hash"] for s in b["local_shards"]]  # same points, same hashes
    assert len(set(hashes_a)) == shards

    # One payload value of one point changes its shard's hash, and only that one.
    changed = 17
    shoal.set_payload(second, payload={"tag": "other"}, points=[changed], wait=True)
    after = [s["shoal_content_hash"] for s in raw(second)["local_shards"]]
    moved = [s for s in range(shards) if after[s] != hashes_a[s]]
    assert moved == [shard_of(changed, shards)]
    # One vector component: the same.
    shoal.set_payload(second, payload={"tag": "t2"}, points=[changed], wait=True)  # back as it was
    assert [s["shoal_content_hash"] for s in raw(second)["local_shards"]] == hashes_a
    vector = points([changed])[0].vector
    vector[2] += 0.001
    shoal.update_vectors(second, points=[models.PointVectors(id=changed, vector=vector)], wait=True)
    assert [s["shoal_content_hash"] for s in raw(second)["local_shards"]] != hashes_a
    # A delete is counted.
    shoal.delete(first, points_selector=models.PointIdsList(points=[0, 1, 2]), wait=True)
    counts = [s.points_count for s in shoal.http.distributed_api.collection_cluster_info(first).result.local_shards]
    assert sum(counts) == 197


def test_cluster_operations_are_refused_as_qdrant_refuses_them_on_one_peer(server, shoal, collection_names):
    name = collection_names("cl_ops")
    shoal.create_collection(name, vectors_config=VECTORS, shard_number=2)
    me = shoal.http.distributed_api.cluster_status().result.peer_id
    other = me + 1

    snapshot, wal_delta = models.ShardTransferMethodOneOf1.SNAPSHOT, models.ShardTransferMethodOneOf2.WAL_DELTA
    shard_key = (400, "Bad request: Shard Key cannot be created with Auto sharding method")
    # Qdrant's validate rule first (422), then its checks against the cluster (400, 404).
    cases = [
        (models.MoveShardOperation(move_shard=models.MoveShard(shard_id=0, from_peer_id=me, to_peer_id=me)),
         (422, f'Validation error in JSON body: [move_shard.to_peer_id: cannot transfer shard to itself, '
               f'"to_peer_id" must be different than {me} in "from_peer_id"]')),
        (models.ReplicateShardOperation(replicate_shard=models.ReplicateShard(
            shard_id=5, from_peer_id=me, to_peer_id=other)), (400, f"Bad request: Shard 5 of {name} does not exist")),
        (models.MoveShardOperation(move_shard=models.MoveShard(
            shard_id=1, from_peer_id=me, to_peer_id=other, method=snapshot)),
         (400, f"Bad request: Peer {other} does not exist")),
        (models.AbortTransferOperation(abort_transfer=models.AbortShardTransfer(
            shard_id=1, from_peer_id=me, to_peer_id=other)),
         (404, f"Not found: Shard transfer {me} -> {other} for collection {name}:1 does not exist")),
        (models.RestartTransferOperation(restart_transfer=models.RestartTransfer(
            shard_id=0, from_peer_id=other, to_peer_id=me, method=wal_delta)),
         (404, f"Not found: Shard transfer {other} -> {me} for collection {name}:0 does not exist")),
        (models.DropReplicaOperation(drop_replica=models.Replica(shard_id=0, peer_id=other)),
         (400, f"Bad request: Peer {other} does not exist")),
        (models.DropReplicaOperation(drop_replica=models.Replica(shard_id=1, peer_id=me)),
         (400, f"Bad request: Shard 1 must have at least one active replica after removing {me}")),
        (models.CreateShardingKeyOperation(create_sharding_key=models.CreateShardingKey(shard_key="eu")), shard_key),
        (models.DropShardingKeyOperation(drop_sharding_key=models.DropShardingKey(shard_key=7)), shard_key),
        (models.StartReshardingOperation(start_resharding=models.StartResharding(
            direction=models.ReshardingDirectionOneOf.UP)), (400, "Bad request: resharding is only supported in Qdrant Cloud")),
        (models.AbortReshardingOperation(abort_resharding={}),
         (400, f"Bad request: resharding is not in progress for collection {name}")),
    ]
    for operation, expected in cases:
        assert refusal(shoal, name, operation) == expected, operation
    # Nothing changed.
    info = shoal.http.distributed_api.collection_cluster_info(name).result
    assert [(s.shard_id, s.state) for s in info.local_shards] == [(0, models.ReplicaState.ACTIVE),
                                                                  (1, models.ReplicaState.ACTIVE)]


def test_bad_bodies_names_and_collections(server, shoal, collection_names):
    name = collection_names("cl_bad")
    shoal.create_collection(name, vectors_config=VECTORS)
    url = f"{server.url}/collections/{name}/cluster"
    untagged = "Format error in JSON body: data did not match any variant of untagged enum ClusterOperations"
    for body in ({"move_shard_please": {}}, {}, [], {"move_shard": {"shard_id": -1, "to_peer_id": 1, "from_peer_id": 2}},
                 {"drop_replica": {"shard_id": 0}}, {"start_resharding": {"direction": "sideways"}}):
        status, answer = call("POST", url, body)
        assert (status, error_text(answer)) == (400, untagged), body
        assert answer["time"] == 0.0
    status, answer = call("POST", url, raw=b'{"move_shard": {')
    assert (status, error_text(answer)) == (400, "Format error in JSON body: EOF while parsing an object at line 1 column 16")
    status, answer = call("POST", url + "?timeout=abc", {"abort_resharding": {}})
    assert (status, error_text(answer)) == (400, "Deserialize error in query parameters: invalid digit found in string")
    status, answer = call("POST", url + "?timeout=0", {"abort_resharding": {}})
    assert status == 422

    missing = collection_names("cl_missing")
    for method, body in (("GET", None), ("POST", {"abort_resharding": {}})):
        status, answer = call(method, f"{server.url}/collections/{missing}/cluster", body)
        assert (status, error_text(answer)) == (404, f"Not found: Collection `{missing}` doesn't exist!")
    status, answer = call("GET", f"{server.url}/collections/{'n' * 256}/cluster")
    assert (status, error_text(answer)) == (
        422, "Validation error in path parameters: [name: must be from 1 to 255 characters]")

    # An alias answers for its collection; texts name what the request named.
    alias = collection_names("cl_alias")
    shoal.update_collection_aliases(change_aliases_operations=[
        models.CreateAliasOperation(create_alias=models.CreateAlias(collection_name=name, alias_name=alias))])
    status, answer = call("GET", f"{server.url}/collections/{alias}/cluster")
    assert status == 200 and answer["result"]["shard_count"] == 1
    status, answer = call("POST", f"{server.url}/collections/{alias}/cluster",
                          {"drop_replica": {"shard_id": 3, "peer_id": 1}})
    assert (status, error_text(answer)) == (400, f"Bad request: Shard 3 of {alias} does not exist")


def test_peer_id_survives_a_restart(server, shoal):
    before = shoal.http.distributed_api.cluster_status().result.peer_id
    server.restart()
    status, body = call("GET", f"{server.url}/cluster")
    assert status == 200 and body["result"]["peer_id"] == before


def test_http_workers_forward_to_the_control_process(tmp_path_factory, against_memory):
    """With service.workers=2 a connection may land on a worker, which has no Raft:
    it hands the cluster requests to the control process, so every answer is the same."""
    if against_memory:
        pytest.skip("needs a real Shoal server")
    from tests.api.test_workers import http_processes
    from tests.conftest import ShoalServer

    server = ShoalServer(tmp_path_factory.mktemp("cl_workers") / "storage", tmp_path_factory.mktemp("cl_workers_logs"),
                         env={"SHOAL__SERVICE__WORKERS": "2"})
    server.start()
    try:
        deadline = time.monotonic() + 60
        while len(http_processes(server)) < 2:
            assert time.monotonic() < deadline, "the HTTP worker did not start"
            time.sleep(0.5)
        url = server.url
        assert call("PUT", f"{url}/collections/w", {"vectors": {"size": 2, "distance": "Dot"}, "shard_number": 2})[0] == 200
        points = [{"id": i, "vector": [1.0, float(i)]} for i in range(30)]
        assert call("PUT", f"{url}/collections/w/points?wait=true", {"points": points})[0] == 200
        clusters, infos, refusals = set(), set(), set()
        for _ in range(12):  # one connection each: the kernel spreads them over both processes
            status, body = call("GET", f"{url}/cluster")
            clusters.add((status, body["result"]["peer_id"], tuple(body["result"]["peers"])))
            status, body = call("GET", f"{url}/collections/w/cluster")
            infos.add((status, json.dumps(body["result"], sort_keys=True)))
            status, body = call("POST", f"{url}/collections/w/cluster", {"drop_replica": {"shard_id": 7, "peer_id": 1}})
            refusals.add((status, error_text(body)))
        assert len(clusters) == 1 and next(iter(clusters))[0] == 200
        assert len(infos) == 1 and next(iter(infos))[0] == 200
        assert sum(s["points_count"] for s in json.loads(next(iter(infos))[1])["local_shards"]) == 30
        assert refusals == {(400, "Bad request: Shard 7 of w does not exist")}
    finally:
        server.stop()
