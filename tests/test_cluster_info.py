"""The cluster endpoints' pure parts: peer ids, the layout of a collection's
replicas, Qdrant's JSON for GET /cluster and GET /collections/{name}/cluster,
Qdrant's checks on POST /collections/{name}/cluster, and the Raft status the
metadata store reports (in-process nodes, ticked by hand)."""

from __future__ import annotations

import random

import pytest
from qdrant_client.http import models as qm

from cluster.metadata import MetadataStore, RaftStatus, RaftTimings
from cluster.peers import peer_id, raft_uri
from cluster.replicas import initial_placement
from cluster.topology import Layout, ReplicaView, Transfer, layout
from cluster.metadata_ops import AbortTransfer, DropReplica, RequestTransfer, apply
from gateway.cluster_info import check_operation, cluster_status, collection_cluster_info, plan_operation
from gateway.errors import BadRequest, status_and_text
from shard.digest import ShardDigest
from shard.types import NotFound
from tests.test_metadata import free_ports, tick_until

ME = "127.0.0.1:6335"
SELF = peer_id(ME)
INC = "a" * 32


def test_peer_ids_are_stable_distinct_and_js_safe():
    names = [f"10.0.0.{i}:6335" for i in range(200)] + ["a" * 56, ""]
    ids = [peer_id(n) for n in names]
    assert len(set(ids)) == len(ids)
    assert all(0 < i < 2**53 for i in ids)
    assert peer_id("10.0.0.1:6335") == ids[1]  # a pure function of the name
    assert raft_uri("127.0.0.1:6335") == "tcp://127.0.0.1:6335"
    assert raft_uri("::1:6335") == "tcp://[::1]:6335"


# ------------------------------------------------------------------ layout


def test_single_node_layout_is_every_shard_here_and_active():
    where = layout({"incarnation": "a" * 32}, 3, SELF)
    assert [(r.shard_id, r.peer_id, r.state, r.local) for r in where.replicas] == [
        (0, SELF, "active", True), (1, SELF, "active", True), (2, SELF, "active", True)]
    assert where.shard_count == 3 and where.peers() == {SELF} and where.transfers == ()


def test_replicated_layout_names_nodes_by_peer_id_and_states_by_qdrant():
    shards = initial_placement(2, 2, ["n1", "n2", "n3"])
    shards[0]["replicas"]["r1"]["state"] = "dead"
    shards[1]["replicas"]["r0"]["state"] = "active"
    where = layout({"incarnation": "a" * 32, "shards": shards}, 2, SELF, self_node="n2")
    seen = [(r.shard_id, r.replica, r.peer_id, r.qdrant_state, r.local) for r in where.replicas]
    assert seen == [(0, "r0", peer_id("n1"), "Initializing", False), (0, "r1", SELF, "Dead", True),
                    (1, "r0", SELF, "Active", True), (1, "r1", peer_id("n3"), "Initializing", False)]


# ------------------------------------------------------------- GET answers


def status(**changes) -> RaftStatus:
    base = dict(self_address=ME, partners=("10.0.0.2:6335", "10.0.0.3:6335"), role="follower",
                leader="10.0.0.2:6335", term=4, commit=17, applied=15,
                unreachable={"10.0.0.3:6335": (3, 1_700_000_000.5)}, last_tick=1_700_000_001.25, running=True)
    base.update(changes)
    return RaftStatus(**base)


def test_cluster_status_is_qdrants_enabled_form():
    answer = cluster_status(status(), now=0.0)
    assert answer == {
        "status": "enabled",
        "peer_id": SELF,
        "peers": {str(peer_id(a)): {"uri": f"tcp://{a}"} for a in (ME, "10.0.0.2:6335", "10.0.0.3:6335")},
        "raft_info": {"term": 4, "commit": 17, "pending_operations": 2, "leader": peer_id("10.0.0.2:6335"),
                      "role": "Follower", "is_voter": True},
        "consensus_thread_status": {"consensus_thread_status": "working",
                                    "last_update": "2023-11-14T22:13:21.250000Z"},
        "message_send_failures": {"tcp://10.0.0.3:6335": {"count": 3, "latest_error": "no connection to this peer",
                                                         "latest_error_timestamp": "2023-11-14T22:13:20.500000Z"}},
    }
    parsed = qm.ClusterStatusOneOf1.model_validate(answer)  # what qdrant-client reads
    assert parsed.raft_info.role == qm.StateRole.FOLLOWER and parsed.peer_id == SELF


def test_cluster_status_without_a_leader_and_stopped():
    answer = cluster_status(status(role="candidate", leader=None, running=False, unreachable={}), now=0.0)
    assert answer["raft_info"]["leader"] is None and answer["raft_info"]["role"] == "Candidate"
    assert answer["consensus_thread_status"] == {"consensus_thread_status": "stopped"}
    assert answer["message_send_failures"] == {}
    qm.ClusterStatusOneOf1.model_validate(answer)


def test_collection_cluster_info_with_digests_beside_qdrants_fields():
    where = Layout(2, (ReplicaView(1, "r0", SELF, "active", True, True), ReplicaView(0, "r0", SELF, "active", True, True),
                       ReplicaView(0, "r1", 77, "partial", False)),
                   (Transfer(0, SELF, 77, sync=True),))
    digests = [ShardDigest(5, "b" * 32), ShardDigest(3, "a" * 32), None]
    answer = collection_cluster_info(SELF, where, digests)
    assert answer == {
        "peer_id": SELF,
        "shard_count": 2,
        "local_shards": [{"shard_id": 0, "points_count": 3, "state": "Active", "shoal_replica": "r0",
                          "shoal_primary": True, "shoal_content_hash": "a" * 32},
                         {"shard_id": 1, "points_count": 5, "state": "Active", "shoal_replica": "r0",
                          "shoal_primary": True, "shoal_content_hash": "b" * 32}],
        "remote_shards": [{"shard_id": 0, "peer_id": 77, "state": "Partial", "shoal_replica": "r1",
                           "shoal_primary": False, "shoal_points_count": 0, "shoal_content_hash": None}],
        "shard_transfers": [{"shard_id": 0, "from": SELF, "to": 77, "sync": True}],
    }
    parsed = qm.CollectionClusterInfo.model_validate(answer)
    assert parsed.local_shards[1].points_count == 5 and parsed.remote_shards[0].state == qm.ReplicaState.PARTIAL


# ------------------------------------------------------------ POST checks


SINGLE = layout({"incarnation": "a" * 32}, 2, SELF)


def refusal(kind, args, where=SINGLE, peers=frozenset({SELF})):
    with pytest.raises((BadRequest, NotFound)) as caught:
        check_operation(kind, args, "coll", where, set(peers))
    return status_and_text(caught.value)


@pytest.mark.parametrize("kind", ["move_shard", "replicate_shard"])
def test_transfers_on_one_node(kind):
    other = SELF + 1
    assert refusal(kind, {"shard_id": 2, "from_peer_id": SELF, "to_peer_id": other}) == (
        400, "Bad request: Shard 2 of coll does not exist")
    assert refusal(kind, {"shard_id": 1, "from_peer_id": SELF, "to_peer_id": other}) == (
        400, f"Bad request: Peer {other} does not exist")
    assert refusal(kind, {"shard_id": 1, "from_peer_id": other, "to_peer_id": SELF}) == (
        400, f"Bad request: Peer {other} does not exist")
    # Two gateways, and the shard on this one: Qdrant would start the transfer.
    two = {SELF, other}
    assert refusal(kind, {"shard_id": 1, "from_peer_id": other, "to_peer_id": SELF}, peers=two) == (
        400, f"Bad request: Shard 1 is not active on peer {other}")
    args = {"shard_id": 1, "from_peer_id": SELF, "to_peer_id": other}
    check_operation(kind, args, "coll", SINGLE, two)  # passes: Shoal's own refusal comes with the plan
    assert planning_refusal(kind, args) == (400, "cannot be carried out")


def planning_refusal(kind, args, where=SINGLE, placement=None, nodes=None):
    with pytest.raises(BadRequest) as caught:
        plan_operation(kind, args, "coll", INC, placement or {"incarnation": INC}, where, nodes or {})
    status, text = status_and_text(caught.value)
    return status, "cannot be carried out" if "cannot be carried out" in text else text


@pytest.mark.parametrize("kind", ["abort_transfer", "restart_transfer"])
def test_transfers_that_do_not_run(kind):
    assert refusal(kind, {"shard_id": 0, "from_peer_id": 5, "to_peer_id": 6, "method": "snapshot"}) == (
        404, "Not found: Shard transfer 5 -> 6 for collection coll:0 does not exist")
    running = Layout(2, SINGLE.replicas, (Transfer(0, 5, 6, sync=False),))
    check_operation(kind, {"shard_id": 0, "from_peer_id": 5, "to_peer_id": 6}, "coll", running, {SELF})


def test_drop_replica():
    assert refusal("drop_replica", {"shard_id": 9, "peer_id": SELF}) == (400, "Bad request: Shard 9 of coll does not exist")
    assert refusal("drop_replica", {"shard_id": 0, "peer_id": 3}) == (400, "Bad request: Peer 3 does not exist")
    assert refusal("drop_replica", {"shard_id": 0, "peer_id": SELF}) == (
        400, f"Bad request: Shard 0 must have at least one active replica after removing {SELF}")
    assert refusal("drop_replica", {"shard_id": 0, "peer_id": 3}, peers={SELF, 3}) == (
        400, "Bad request: Peer 3 has no replica of shard 0")
    two = Layout(1, (ReplicaView(0, "r0", SELF, "active", True), ReplicaView(0, "r1", 3, "dead", False)))
    assert refusal("drop_replica", {"shard_id": 0, "peer_id": SELF}, where=two, peers={SELF, 3}) == (
        400, f"Bad request: Shard 0 must have at least one active replica after removing {SELF}")
    check_operation("drop_replica", {"shard_id": 0, "peer_id": 3}, "coll", two, {SELF, 3})


# A replicated collection: shard 0 on nodes a (r0, the primary) and b (r1), node c free;
# this gateway holds none.
NODES = {peer_id(n): n for n in ("node-a", "node-b", "node-c")}
A, B, C = sorted(NODES, key=NODES.get)
REPLICATED = {"incarnation": INC, "shards": [{"epoch": 1, "primary": "r0", "next_replica": 2, "replicas": {
    "r0": {"node": "node-a", "state": "active"}, "r1": {"node": "node-b", "state": "active"}}}]}


def plan(kind, args, placement=REPLICATED):
    where = layout(placement, 1, SELF)
    check_operation(kind, args, "coll", where, {SELF, *NODES})
    return plan_operation(kind, args, "coll", INC, placement, where, NODES)


def test_operations_on_a_replicated_collection_become_metadata_ops():
    assert plan("move_shard", {"shard_id": 0, "from_peer_id": B, "to_peer_id": C}) == \
        RequestTransfer("coll", INC, 0, "r2", "node-c", "r1", move=True)
    assert plan("replicate_shard", {"shard_id": 0, "from_peer_id": A, "to_peer_id": C}) == \
        RequestTransfer("coll", INC, 0, "r2", "node-c", "r0", move=False)
    assert plan("drop_replica", {"shard_id": 0, "peer_id": B}) == DropReplica("coll", INC, 0, "r1")
    moving, _ = apply({"collections": {"coll": {"config": {"params": {}}, "placement": REPLICATED}}, "aliases": {},
                       "version": 0}, RequestTransfer("coll", INC, 0, "r2", "node-c", "r1", move=True))
    placed = moving["collections"]["coll"]["placement"]
    where = layout(placed, 1, SELF)
    assert where.transfers == (Transfer(0, B, C, sync=False, replica="r2"),)
    assert plan("abort_transfer", {"shard_id": 0, "from_peer_id": B, "to_peer_id": C}, placed) == \
        AbortTransfer("coll", INC, 0, "r2")
    # What Shoal refuses: a shard already in a transfer with either peer, a target that
    # is a gateway, or one that holds a replica of the shard already.
    with pytest.raises(BadRequest) as caught:
        plan("replicate_shard", {"shard_id": 0, "from_peer_id": A, "to_peer_id": B}, placed)
    assert status_and_text(caught.value) == (400, f"Bad request: Shard 0 is already involved in transfer {B} -> {C}")
    for target, words in ((SELF, "holds no shard replicas"), (B, f"Shard 0 already has a replica on peer {B}")):
        with pytest.raises(BadRequest) as caught:
            plan("move_shard", {"shard_id": 0, "from_peer_id": A, "to_peer_id": target})
        assert words in status_and_text(caught.value)[1]


def test_sharding_keys_and_resharding():
    shard_key = (400, "Bad request: Shard Key cannot be created with Auto sharding method")
    assert refusal("create_sharding_key", {"shard_key": "a"}) == shard_key
    assert refusal("drop_sharding_key", {"shard_key": 1}) == shard_key
    assert refusal("start_resharding", {"direction": "up"}) == (
        400, "Bad request: resharding is only supported in Qdrant Cloud")
    for kind in ("abort_resharding", "finish_resharding", "commit_read_hash_ring", "commit_write_hash_ring",
                 "finish_migrating_points"):
        assert refusal(kind, {}) == (400, "Bad request: resharding is not in progress for collection coll")


# --------------------------------------------------- the metadata store's view


def test_raft_status_of_three_nodes_and_of_one_that_stopped(tmp_path):
    random.seed(99)
    addrs = [f"127.0.0.1:{p}" for p in free_ports(3)]
    timings = RaftTimings.fast_test()
    nodes = [MetadataStore(tmp_path / f"n{i}", self_address=addrs[i], partners=addrs, auto_tick=False,
                           timings=timings) for i in range(3)]
    try:
        assert tick_until(nodes, lambda: sum(n.is_leader for n in nodes) == 1 and all(n.leader for n in nodes))
        views = [n.raft_status() for n in nodes]
        leader = next(n for n in nodes if n.is_leader)
        assert sorted(v.role for v in views) == ["follower", "follower", "leader"]
        assert {v.leader for v in views} == {leader.self_address}
        assert all(v.term >= 1 and v.running and v.last_tick is not None for v in views)
        assert {v.partners for v in views} == {tuple(a for a in addrs if a != v.self_address) for v in views}
        # Qdrant's JSON agrees on the members and the leader whichever node answers.
        answers = [cluster_status(v, now=0.0) for v in views]
        assert len({tuple(sorted(a["peers"])) for a in answers}) == 1
        assert {a["raft_info"]["leader"] for a in answers} == {peer_id(leader.self_address)}

        gone = next(n for n in nodes if not n.is_leader)
        gone.close()
        alive = [n for n in nodes if n is not gone]
        assert tick_until(alive, lambda: all(gone.self_address in n.raft_status().unreachable for n in alive))
        count, _ = alive[0].raft_status().unreachable[gone.self_address]
        assert count >= 1
        assert gone.raft_status().running is False
        answer = cluster_status(alive[0].raft_status(), now=0.0)
        assert list(answer["message_send_failures"]) == [raft_uri(gone.self_address)]
    finally:
        for n in nodes:
            n.close()
