"""Shard replicas in the metadata: where a new collection's replicas go
(``cluster.replicas``) and the operations that change them (``cluster.metadata_ops``),
as pure functions."""

from __future__ import annotations

import copy
import random
from collections import Counter

import orjson
import pytest

from cluster.metadata_ops import (
    AddReplica,
    CreateCollection,
    DeleteCollection,
    MalformedOp,
    OpResult,
    AbortTransfer,
    DropReplica,
    RemoveReplica,
    RequestTransfer,
    SetPrimary,
    SetReplicaState,
    apply,
    empty_state,
    op_from_json,
)
from cluster.replicas import (
    ReplicaState,
    can_be_source_of_truth,
    initial_placement,
    is_readable,
    next_replica_id,
    placement_problem,
    takes_writes,
)

INC = "c" * 32
NODES = ["n1", "n2", "n3"]


def config(shards: int) -> dict:
    return {"params": {"vectors": {"size": 4, "distance": "Cosine"}, "shard_number": shards}}


def created(shards: int = 2, replication: int = 2, nodes=NODES) -> dict:
    placement = {"incarnation": INC, "shards": initial_placement(shards, replication, nodes)}
    state, result = apply(empty_state(), CreateCollection("c", config(shards), placement))
    assert result.ok, result
    return state


def shard(state: dict, i: int) -> dict:
    return state["collections"]["c"]["placement"]["shards"][i]


def activate_all(state: dict, inc: str = INC) -> dict:
    for i, s in enumerate(state["collections"]["c"]["placement"]["shards"]):
        for r in list(s["replicas"]):
            state, result = apply(state, SetReplicaState("c", inc, i, r, "active"))
            assert result.ok
    return state


# ---------------------------------------------------------------- placement


def test_initial_placement_spreads_replicas_on_distinct_nodes_evenly():
    shards = initial_placement(6, 2, NODES)
    assert len(shards) == 6
    per_node = Counter()
    for s in shards:
        nodes = [r["node"] for r in s["replicas"].values()]
        assert len(nodes) == 2 and len(set(nodes)) == 2
        assert s["primary"] == "r0" and s["epoch"] == 1
        assert {r["state"] for r in s["replicas"].values()} == {"initializing"}
        per_node.update(nodes)
    assert set(per_node.values()) == {4}  # 12 replicas over 3 nodes
    primaries = Counter(s["replicas"][s["primary"]]["node"] for s in shards)
    assert set(primaries.values()) == {2}  # primaries spread too


def test_initial_placement_places_no_more_copies_than_nodes():
    shards = initial_placement(2, 3, ["only"])
    assert [list(s["replicas"]) for s in shards] == [["r0"], ["r0"]]
    with pytest.raises(ValueError):
        initial_placement(1, 1, [])


@pytest.mark.parametrize("placement, problem", [
    ({"incarnation": INC}, None),  # the single-node layout
    ({"shards": []}, "placement must list 1 shard(s)"),
    ({"shards": [{"epoch": 1, "primary": "r0", "replicas": {}}]}, "shard 0: no replicas"),
    ({"shards": [{"epoch": 0, "primary": "r0", "replicas": {"r0": {"node": "a", "state": "active"}}}]},
     "shard 0: bad epoch"),
    ({"shards": [{"epoch": 1, "primary": "r9", "replicas": {"r0": {"node": "a", "state": "active"}}}]},
     "shard 0: the primary is not one of its replicas"),
    ({"shards": [{"epoch": 1, "primary": "r0", "replicas": {"r0": {"node": "a", "state": "active"},
                                                             "r1": {"node": "a", "state": "active"}}}]},
     "shard 0: two replicas on one node"),
    ({"shards": [{"epoch": 1, "primary": "r0", "replicas": {"r0": {"node": "a", "state": "gone"}}}]},
     "shard 0: unknown replica state"),
    ({"shards": [{"epoch": 1, "primary": "a", "replicas": {"a": {"node": "a", "state": "active"}}}]},
     "shard 0: replica ids must be r0, r1, ..."),
    ({"shards": [{"epoch": 1, "primary": "r0", "next_replica": 1,
                  "replicas": {"r0": {"node": "a", "state": "active"}, "r1": {"node": "b", "state": "active"}}}]},
     "shard 0: next_replica must be past every replica id"),
    ({"shards": [{"epoch": 1, "primary": "r0", "next_replica": 4,
                  "replicas": {"r0": {"node": "a", "state": "active"}}}]}, None),
])
def test_placement_problems_are_named(placement, problem):
    assert placement_problem(placement, 1) == problem


def test_a_create_with_a_broken_placement_is_refused():
    bad = {"incarnation": INC, "shards": initial_placement(1, 1, NODES)}
    state, result = apply(empty_state(), CreateCollection("c", config(2), bad))
    assert not result.ok and result.error == "bad_input" and "2 shard(s)" in result.message
    assert state == empty_state()


def test_state_predicates():
    assert [is_readable(s.value) for s in ReplicaState] == [False, True, False, False]
    assert [takes_writes(s.value) for s in ReplicaState] == [False, True, True, False]
    assert [can_be_source_of_truth(s.value) for s in ReplicaState] == [False, True, False, False]
    assert next_replica_id({"replicas": {"r0": {}, "r2": {}}}) == "r3"  # a gap is an id used before
    assert next_replica_id({"next_replica": 5, "replicas": {"r0": {}, "r2": {}}}) == "r5"


def test_replica_ids_are_never_reused():
    """An id names a replica's actor and its storage: a replica added with the id of one
    removed could be stopped, its storage deleted, by the stop asked for the old one."""
    state = activate_all(created())
    state, _ = apply(state, AddReplica("c", INC, 0, "r2", "n3", "partial"))
    state, result = apply(state, RemoveReplica("c", INC, 0, "r2"))
    assert result.ok and shard(state, 0)["next_replica"] == 3 and next_replica_id(shard(state, 0)) == "r3"
    for op, error, words in [(AddReplica("c", INC, 0, "r2", "n3"), "conflict", "r2 of shard 0 was used before"),
                             (AddReplica("c", INC, 0, "r1", "n3"), "conflict", "already exists"),
                             (AddReplica("c", INC, 0, "x", "n3"), "bad_input", "is not r0, r1"),
                             (AddReplica("c", INC, 0, "r03", "n3"), "bad_input", "is not r0, r1")]:
        new, result = apply(state, op)
        assert new is state and result.error == error and words in result.message, result
    state, result = apply(state, AddReplica("c", INC, 0, "r7", "n3"))  # the proposer may skip ids
    assert result.ok and next_replica_id(shard(state, 0)) == "r8"


# ------------------------------------------------------------------ the ops


def test_replica_lifecycle():
    state = activate_all(created())
    state, result = apply(state, AddReplica("c", INC, 0, "r2", "n3", "partial"))
    assert result == OpResult.success(True) and shard(state, 0)["replicas"]["r2"] == {"node": "n3", "state": "partial"}
    state, result = apply(state, SetReplicaState("c", INC, 0, "r2", "active", from_state="partial"))
    assert result.ok and shard(state, 0)["replicas"]["r2"]["state"] == "active"
    state, result = apply(state, SetPrimary("c", INC, 0, "r2", 2))
    assert result.ok and (shard(state, 0)["primary"], shard(state, 0)["epoch"]) == ("r2", 2)
    state, result = apply(state, RemoveReplica("c", INC, 0, "r0"))
    assert result.ok and set(shard(state, 0)["replicas"]) == {"r1", "r2"}
    assert shard(state, 1) == shard(activate_all(created()), 1)  # the other shard is untouched


def test_from_state_dismisses_a_stale_change():
    state = activate_all(created())
    new, result = apply(state, SetReplicaState("c", INC, 0, "r1", "active", from_state="partial"))
    assert result == OpResult.success(False) and new is state


@pytest.mark.parametrize("op, error, words", [
    (AddReplica("c", "d" * 32, 0, "r5", "n3"), "not_found", "Collection `c`"),  # an earlier life
    (AddReplica("nope", INC, 0, "r5", "n3"), "not_found", "Collection `nope`"),
    (AddReplica("c", INC, 7, "r5", "n3"), "not_found", "Shard 7"),
    (AddReplica("c", INC, 0, "r0", "n3"), "conflict", "already exists"),
    (AddReplica("c", INC, 0, "r5", "n1"), "bad_input", "already has a replica on node n1"),
    (SetReplicaState("c", INC, 0, "r9", "dead"), "not_found", "Replica r9"),
    (RemoveReplica("c", INC, 0, "r0"), "bad_input", "is the primary"),
    (SetPrimary("c", INC, 0, "r1", 3), "conflict", "at epoch 1"),
    (SetPrimary("c", INC, 0, "r1", 1), "conflict", "at epoch 1"),
    (RequestTransfer("c", INC, 0, "r2", "n1", "r0", True), "bad_input", "already has a replica on node n1"),
    (RequestTransfer("c", INC, 0, "r2", "n3", "r7", True), "bad_input", "r7 of shard 0 is not active"),
    (RequestTransfer("c", INC, 0, "r1", "n3", "r0", False), "conflict", "already exists"),
    (AbortTransfer("c", INC, 0, "r1"), "not_found", "not the target of a transfer"),
    (DropReplica("c", INC, 0, "r9"), "not_found", "Replica r9"),
])
def test_refused_ops_change_nothing(op, error, words):
    state = activate_all(created())
    new, result = apply(state, op)
    assert new is state and not result.ok and result.error == error and words in result.message, result


def test_cluster_api_ops_mark_what_the_controller_carries_out():
    state = activate_all(created(shards=1))  # r0* on n1, r1 on n2
    moved, result = apply(state, RequestTransfer("c", INC, 0, "r2", "n3", "r1", True))
    assert result.ok and shard(moved, 0)["replicas"]["r2"] == {"node": "n3", "state": "partial", "source": "r1",
                                                             "move": True}
    assert shard(moved, 0)["replicas"]["r1"]["leaving"] is True and "factor" not in shard(moved, 0)
    aborted, _ = apply(moved, AbortTransfer("c", INC, 0, "r2"))
    assert "r2" not in shard(aborted, 0)["replicas"] and "leaving" not in shard(aborted, 0)["replicas"]["r1"]
    assert shard(aborted, 0)["next_replica"] == 3  # r2 is never used again
    copied, _ = apply(state, RequestTransfer("c", INC, 0, "r2", "n3", "r0", False))
    assert shard(copied, 0)["factor"] == 3  # one more than it holds (its collection's factor, unset, is 1)
    dead, _ = apply(state, SetReplicaState("c", INC, 0, "r1", "dead"))
    dropped, _ = apply(dead, DropReplica("c", INC, 0, "r1"))
    assert list(shard(dropped, 0)["replicas"]) == ["r0"] and shard(dropped, 0)["factor"] == 1


def test_only_an_active_replica_becomes_primary():
    state = created()  # every replica still initializing
    new, result = apply(state, SetPrimary("c", INC, 0, "r1", 2))
    assert new is state and result.error == "bad_input" and "not active" in result.message


def test_replica_ops_round_trip_and_malformed_ones_are_refused():
    ops = [AddReplica("c", INC, 0, "r2", "n3", "partial"), SetReplicaState("c", INC, 1, "r0", "dead"),
           SetReplicaState("c", INC, 1, "r0", "active", "dead"), RemoveReplica("c", INC, 0, "r1"),
           SetPrimary("c", INC, 0, "r1", 4), RequestTransfer("c", INC, 0, "r2", "n3", "r1", True),
           DropReplica("c", INC, 1, "r1"), AbortTransfer("c", INC, 0, "r2")]
    for op in ops:
        assert op_from_json(orjson.loads(orjson.dumps(op.to_json()))) == op
    for bad in ({"v": 1, "type": "add_replica", "collection": "c", "incarnation": INC, "shard": -1, "replica": "r",
                 "node": "n", "state": "active"},
                {"v": 1, "type": "set_replica_state", "collection": "c", "incarnation": INC, "shard": 0,
                 "replica": "r0", "state": "sleeping"},
                {"v": 1, "type": "set_primary", "collection": "c", "incarnation": INC, "shard": 0, "replica": "r0",
                 "epoch": True},
                {"v": 1, "type": "request_transfer", "collection": "c", "incarnation": INC, "shard": 0,
                 "replica": "r2", "node": "n3", "source": "r1", "move": "yes"}):
        with pytest.raises(MalformedOp):
            op_from_json(bad)


def test_replica_ops_are_pure_deterministic_and_keep_the_invariants():
    rng = random.Random(7)
    nodes = ["n1", "n2", "n3", "n4"]
    inc, lives = INC, 0
    state = activate_all(created(shards=3, replication=2, nodes=nodes))
    listed: dict[int, set] = {s: set(shard(state, s)["replicas"]) for s in range(3)}  # ever, in this life
    for step in range(600):
        s = rng.randrange(3)
        current = shard(state, s)
        r = rng.choice(list(current["replicas"]) + ["r7"])
        op = rng.choice([
            AddReplica("c", inc, s, rng.choice([next_replica_id(current), f"r{rng.randrange(8)}"]),
                       rng.choice(nodes + ["n5"]), rng.choice(["partial", "initializing"])),
            SetReplicaState("c", inc, s, r, rng.choice(["active", "dead", "partial"]),
                            rng.choice([None, "active", "dead"])),
            RemoveReplica("c", inc, s, r),
            SetPrimary("c", inc, s, r, current["epoch"] + rng.choice([0, 1, 1, 2])),
        ])
        before = copy.deepcopy(state)
        new, result = apply(state, op)
        assert state == before  # inputs never change
        assert apply(before, op) == (new, result)  # same inputs, same outputs
        state = new
        for i, sh in enumerate(state["collections"]["c"]["placement"]["shards"]):
            replica_nodes = [x["node"] for x in sh["replicas"].values()]
            assert len(replica_nodes) == len(set(replica_nodes)) and sh["primary"] in sh["replicas"]
            assert sh["epoch"] >= 1
            if isinstance(op, AddReplica) and result.ok and op.shard == i:  # an id never listed before
                assert op.replica not in listed[i] and next_replica_id(sh) not in listed[i] | set(sh["replicas"])
                listed[i].add(op.replica)
        if step % 150 == 149:  # a delete and a new life: ops about the old one are refused
            state, _ = apply(state, DeleteCollection("c"))
            old, lives = inc, lives + 1
            inc = f"{lives:032x}"
            placement = {"incarnation": inc, "shards": initial_placement(3, 2, nodes)}
            state, result = apply(state, CreateCollection("c", config(3), placement))
            assert result.ok
            listed = {s: set(shard(state, s)["replicas"]) for s in range(3)}
            unchanged, result = apply(state, SetReplicaState("c", old, 0, "r0", "dead"))
            assert unchanged is state and result.error == "not_found"
            state = activate_all(state, inc)
