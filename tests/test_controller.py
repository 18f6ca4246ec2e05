"""The placement controller (cluster.controller) as a pure state machine: events in,
effects out, no Ray, no clock. Whole scenarios run through ``tests.controller_sim.Sim``;
the random-fault property test is in test_controller_faults.py."""

from __future__ import annotations

import logging
from collections import Counter

import pytest

from cluster.controller import (
    Controller,
    Log,
    MetadataChanged,
    NodesSeen,
    Propose,
    ReplicaFailed,
    ReplicaStarted,
    ReplicaStopped,
    StartReplica,
    StartTransfer,
    StopReplica,
    Tick,
)
from cluster.metadata_ops import (
    AbortTransfer,
    AddReplica,
    CreateCollection,
    DeleteCollection,
    DropReplica,
    RequestTransfer,
    SetReplicaState,
    UpdateCollection,
    apply,
    empty_state,
)
from tests.controller_sim import (
    ACTIVE,
    DEAD,
    GRACE,
    INC,
    INIT,
    NODES,
    PARTIAL,
    RETRY,
    Sim,
    add,
    config,
    create_op,
    decisions,
    done,
    healthy,
    key,
    problems,
    remove,
    set_primary,
    set_state,
    settle,
    shard_of,
    start,
    started,
    states,
    texts,
    transfer,
    transfer_failed,
)


# ---------------------------------------------------------- rule 1: creation


def test_nothing_is_decided_before_the_first_look_at_the_nodes():
    c = Controller(node_grace=GRACE, retry_after=RETRY)
    state, _ = apply(empty_state(), create_op("c", 1, 2, NODES))
    assert c.handle(MetadataChanged(state), started("r0")) == []


def test_a_new_collection_starts_its_replicas_then_activates_them_the_primary_last():
    state, _ = apply(empty_state(), create_op("c", 1, 3, NODES))
    c = Controller(node_grace=GRACE, retry_after=RETRY)
    assert c.handle(MetadataChanged(state), NodesSeen(0.0, frozenset(NODES))) == [
        start("r0", "n1"), start("r1", "n2"), start("r2", "n3")]
    assert c.handle(started("r2"), started("r1")) == []  # the primary first: its writes must find them active
    assert c.handle(started("r0")) == [set_state("r1", ACTIVE, INIT), set_state("r2", ACTIVE, INIT),
                                       set_state("r0", ACTIVE, INIT)]
    for effect in c.pending:
        state, result = apply(state, effect.op)
        assert result.ok
    assert c.handle(MetadataChanged(state)) == [] and c.pending == ()


def test_a_replica_that_starts_after_the_primary_is_active_catches_up_first():
    sim = Sim(NODES, hold=(StartTransfer,))
    sim.lose("n3")
    sim.tick(0.0)
    sim.gateway(create_op("c", 1, 3, NODES))
    assert states(sim.state) == {"r0*": ("n1", ACTIVE), "r1": ("n2", ACTIVE), "r2": ("n3", INIT)}
    sim.up.add("n3")
    effects = sim.tick(1.0)  # the primary may have taken writes: r2 is partial, then transferred to
    assert decisions(effects) == [start("r2", "n3"), set_state("r2", PARTIAL, INIT), transfer("r0", "r2")]
    assert decisions(sim.feed(done(sim, "r2"))) == [set_state("r2", ACTIVE, PARTIAL)]
    assert states(sim.state)["r2"] == ("n3", ACTIVE) and sim.c.pending == ()


# --------------------------------------------------- rule 8: pending and retries


def test_an_effect_is_asked_once_then_again_after_the_retry_timeout():
    sim = Sim(NODES, hold=(StartReplica,))
    sim.tick(0.0)
    first = sim.gateway(create_op("c", 1, 2, NODES))
    assert first == [start("r0", "n1"), start("r1", "n2")]
    assert sim.tick(1.0) == [] and sim.tick(RETRY - 0.1) == []
    assert sim.tick(RETRY) == first  # not seen to happen: asked again
    assert sim.c.pending == tuple(first)


def test_a_lost_proposal_is_proposed_again_after_the_retry_timeout():
    sim = healthy(rf=2)
    sim.drop_batch = True  # Raft lost the next batch
    sim.feed(ReplicaFailed("c", INC, 0, "r1", "its actor died"))
    assert states(sim.state)["r1"] == ("n2", ACTIVE) and set_state("r1", DEAD, ACTIVE) in sim.c.pending
    assert decisions(sim.tick(RETRY - 1)) == []
    effects = sim.tick(RETRY)  # asked again; and Ray did not restart r1, so the controller does
    assert decisions(effects)[:2] == [set_state("r1", DEAD, ACTIVE), start("r1", "n2")]
    assert decisions(effects)[2:] == [set_state("r1", PARTIAL, DEAD), transfer("r0", "r1"),
                                      set_state("r1", ACTIVE, PARTIAL)]


# ------------------------------------------------------- rule 2: lost nodes


def test_a_lost_node_kills_its_replicas_and_the_most_up_to_date_active_one_becomes_primary():
    sim = healthy(rf=3, nodes=NODES)
    sim.feed(started("r1", 5), started("r2", 9))  # the sequences they last reported
    sim.lose("n1", report=False)
    assert sim.tick(GRACE - 0.1) == []  # missing, not lost yet
    assert sim.c.handle(NodesSeen(GRACE, frozenset({"n2", "n3"}))) == [
        Log(logging.WARNING, "node n1 has not been seen for 10 s: it is lost, and its replicas are dead"),
        set_state("r0", DEAD, ACTIVE), set_primary("r2", 2),
        Log(logging.WARNING, "shard 0 of `c`: primary r0 is dead; r2 (applied sequence 9) is primary at epoch 2"),
        Log(logging.INFO, "shard 0 of `c` has 2 of 3 replicas: no other live node to place one on")]


def test_equally_up_to_date_replicas_are_promoted_in_id_order():
    sim = healthy(rf=3)
    sim.lose("n1", report=False)
    sim.tick(GRACE)
    assert shard_of(sim.state)["primary"] == "r1" and shard_of(sim.state)["epoch"] == 2


def test_a_failed_replica_that_is_a_primary_is_replaced_at_once():
    sim = healthy(rf=2)
    effects = sim.feed(ReplicaFailed("c", INC, 0, "r0", "its actor died"))
    assert decisions(effects)[:2] == [set_state("r0", DEAD, ACTIVE), set_primary("r1", 2)]


def test_with_no_active_replica_left_nothing_is_promoted_and_it_is_said_once():
    sim = healthy(rf=2, nodes=NODES)
    sim.lose("n1", report=False)
    sim.lose("n2", report=False)
    effects = sim.tick(GRACE)
    assert decisions(effects) == [set_state("r0", DEAD, ACTIVE), set_state("r1", DEAD, ACTIVE)]
    assert texts(effects)[-1] == ("shard 0 of `c` is unavailable: no active replica is left, and no partial or dead "
                                  "one may be promoted; waiting for primary r0 on node n1")
    assert sim.tick(GRACE + 1) == [] and sim.tick(GRACE + RETRY + 1) == []  # said once
    assert shard_of(sim.state)["primary"] == "r0"


def test_the_primary_comes_back_as_the_source_of_truth_when_no_active_replica_is_left():
    sim = healthy(rf=2, nodes=NODES)
    sim.lose("n1", report=False)
    sim.lose("n2", report=False)
    sim.tick(GRACE)
    sim.up.add("n2")  # not the primary's node: r1 may lack writes, and waits
    assert decisions(sim.tick(GRACE + 1)) == [start("r1", "n2")]
    assert states(sim.state) == {"r0*": ("n1", DEAD), "r1": ("n2", DEAD)}
    sim.up.add("n1")
    effects = sim.tick(GRACE + 2)
    assert decisions(effects) == [start("r0", "n1"), set_state("r0", ACTIVE, DEAD), set_state("r1", PARTIAL, DEAD),
                                  transfer("r0", "r1"), set_state("r1", ACTIVE, PARTIAL)]
    assert "node n1 is back" in texts(effects)
    assert states(sim.state) == {"r0*": ("n1", ACTIVE), "r1": ("n2", ACTIVE)}


def test_a_primary_that_never_started_lets_a_started_replica_take_over():
    sim = Sim(NODES)
    sim.lose("n1", report=False)
    sim.tick(0.0)
    sim.gateway(create_op("c", 1, 2, NODES))
    assert states(sim.state) == {"r0*": ("n1", INIT), "r1": ("n2", INIT)}  # r1 waits for the primary
    effects = sim.tick(GRACE)  # the shard never took a write: r1 may become active, then primary
    assert decisions(effects)[:3] == [set_state("r1", ACTIVE, INIT), set_state("r0", DEAD, INIT), set_primary("r1", 2)]
    settle(sim)
    assert states(sim.state) == {"r1*": ("n2", ACTIVE), "r2": ("n3", ACTIVE)}


def test_an_empty_node_table_declares_no_loss():
    sim = healthy(rf=2)
    sim.up.clear()
    assert sim.tick(GRACE * 5) == [] and sim.c.lost_nodes == frozenset()


# --------------------------------------------- rules 3 and 4: repair and recovery


def test_an_under_replicated_shard_is_repaired_on_the_least_loaded_node():
    nodes = ["n1", "n2", "n3", "n4"]
    sim = healthy(shards=4, rf=2, nodes=nodes, hold=(StartTransfer,))  # s0 n1 n2, s1 n2 n3, s2 n3 n4, s3 n4 n1
    sim.gateway(create_op("d", 1, 1, ["n1"]))  # n1 holds one more
    sim.lose("n2", report=False)
    effects = sim.tick(GRACE)
    assert decisions(effects) == [
        set_state("r1", DEAD, ACTIVE, shard=0), add("r2", "n3", shard=0),  # n3 and n4 hold 2: the first
        set_state("r0", DEAD, ACTIVE, shard=1), set_primary("r1", 2, shard=1),
        add("r2", "n4", shard=1),  # n1 holds 3, n4 2
        start("r2", "n3", shard=0), start("r2", "n4", shard=1),
        transfer("r0", "r2", shard=0), transfer("r1", "r2", shard=1)]
    assert sim.tick(GRACE + 1) == []  # transfers running: nothing asked twice
    effects = sim.feed(done(sim, "r2", 0), done(sim, "r2", 1))
    # The dead replicas go once the activations are applied, not while they are in flight:
    # one lost on its way through Raft must not leave a shard short of a replica it counted.
    assert decisions(effects)[:4] == [set_state("r2", ACTIVE, PARTIAL, shard=0),
                                      set_state("r2", ACTIVE, PARTIAL, shard=1),
                                      remove("r1", shard=0), remove("r0", shard=1)]
    assert states(sim.state, 0) == {"r0*": ("n1", ACTIVE), "r2": ("n3", ACTIVE)}
    assert states(sim.state, 1) == {"r1*": ("n3", ACTIVE), "r2": ("n4", ACTIVE)}
    assert sim.c.pending == ()


def test_a_replica_ray_restarts_catches_up_in_place_and_is_not_replaced():
    sim = healthy(rf=2, nodes=NODES + ["n4"])
    effects = sim.feed(ReplicaFailed("c", INC, 0, "r1", "its actor died"))
    assert decisions(effects) == [set_state("r1", DEAD, ACTIVE)]
    assert texts(effects) == ["replica r1 of shard 0 of `c` failed (its actor died): it is dead until it has caught up"]
    assert decisions(sim.tick(GRACE - 1)) == []  # not replaced while Ray restarts it
    effects = sim.feed(started("r1", 0))
    assert decisions(effects) == [set_state("r1", PARTIAL, DEAD), transfer("r0", "r1"), set_state("r1", ACTIVE, PARTIAL)]
    assert states(sim.state) == {"r0*": ("n1", ACTIVE), "r1": ("n2", ACTIVE)}


def test_a_replica_that_stays_down_is_replaced_after_the_grace():
    sim = healthy(rf=2, nodes=NODES)
    sim.crash(key("r1"), restart_in=None)
    sim.carry([])
    assert states(sim.state)["r1"] == ("n2", DEAD)
    assert decisions(sim.tick(GRACE - 0.1)) == []
    effects = sim.tick(GRACE)  # down for the grace: replaced
    assert decisions(effects) == [add("r2", "n3"), start("r2", "n3"), transfer("r0", "r2"),
                                  set_state("r2", ACTIVE, PARTIAL), remove("r1")]
    assert states(sim.state) == {"r0*": ("n1", ACTIVE), "r2": ("n3", ACTIVE)}


def test_a_dead_replica_beyond_the_factor_is_removed_not_revived():
    sim = healthy(rf=3, nodes=NODES)
    sim.crash(key("r2"), restart_in=None)
    sim.carry([])
    assert states(sim.state)["r2"] == ("n3", DEAD)
    effects = sim.gateway(UpdateCollection("c", {"params": {"replication_factor": 2}}))
    assert decisions(effects) == [remove("r2")]
    assert sim.feed(started("r2")) == [StopReplica("c", INC, 0, "r2")]  # Ray restarted it after all
    assert states(sim.state) == {"r0*": ("n1", ACTIVE), "r1": ("n2", ACTIVE)}


def test_repair_needs_a_source_and_a_free_node():
    sim = healthy(rf=2, nodes=["n1", "n2"])
    sim.lose("n2", report=False)
    effects = sim.tick(GRACE)
    assert decisions(effects) == [set_state("r1", DEAD, ACTIVE)]
    assert texts(effects)[-1] == "shard 0 of `c` has 1 of 2 replicas: no other live node to place one on"
    sim.up.add("n3")
    sim.nodes.append("n3")
    effects = sim.tick(GRACE + 1)
    assert decisions(effects)[0] == add("r2", "n3") and remove("r1") in effects


# ------------------------------------------------------------- rule 5: balance


def test_a_node_that_joins_receives_replicas_moved_online_until_balanced():
    sim = healthy(shards=4, rf=2, nodes=NODES, hold=(StartTransfer,))  # 8 replicas: 3 3 2
    sim.up.add("n4")
    effects = sim.tick(1.0)
    assert decisions(effects) == [add("r2", "n4", shard=0), start("r2", "n4", shard=0), transfer("r0", "r2", shard=0)]
    assert texts(effects) == ["moving shard 0 of `c` from node n1 (3 replicas) to node n4 (0)"]
    assert states(sim.state)["r2"] == ("n4", PARTIAL)
    assert sim.tick(2.0) == []  # one move at a time per collection
    effects = sim.feed(done(sim, "r2"))
    # Active: the shard has 3 of 2, and a replica on a most loaded node goes (not the primary,
    # of two equally loaded); then the next move.
    assert decisions(effects)[:3] == [set_state("r2", ACTIVE, PARTIAL), remove("r1"), add("r2", "n4", shard=2)]
    assert StopReplica("c", INC, 0, "r1") in effects
    assert states(sim.state) == {"r0*": ("n1", ACTIVE), "r2": ("n4", ACTIVE)}
    sim.hold, held, sim.held = (), sim.held, []
    sim.carry([t for t in held if t.key != key("r2")])
    settle(sim)
    loads = Counter(rep["node"] for s in sim.state["collections"]["c"]["placement"]["shards"]
                    for rep in s["replicas"].values())
    assert sorted(loads.values()) == [2, 2, 2, 2]


def test_no_move_while_a_collection_is_repairing_or_already_balanced():
    sim = healthy(shards=3, rf=2, nodes=NODES)  # 6 replicas: 2 2 2
    assert sim.tick(100.0) == []
    sim.feed(ReplicaFailed("c", INC, 0, "r1", "its actor died"))
    sim.up.add("n4")
    effects = sim.tick(101.0)
    assert not any(isinstance(e, Propose) and isinstance(e.op, AddReplica) for e in effects)


# ------------------------------------------------------ rule 6: the factor


def test_raising_and_lowering_the_factor_adds_and_removes_replicas_never_the_primary():
    sim = healthy(rf=1, nodes=NODES + ["n4"])
    effects = sim.gateway(UpdateCollection("c", {"params": {"replication_factor": 3}}))
    assert decisions(effects)[:2] == [add("r1", "n2"), add("r2", "n3")]
    assert states(sim.state) == {"r0*": ("n1", ACTIVE), "r1": ("n2", ACTIVE), "r2": ("n3", ACTIVE)}
    sim.gateway(SetReplicaState("c", INC, 0, "r1", DEAD, ACTIVE))  # the write path missed r1 ...
    sim.lose("n2", report=False)  # ... whose node is going away
    effects = sim.gateway(UpdateCollection("c", {"params": {"replication_factor": 1}}))
    assert decisions(effects) == [remove("r1"), remove("r2"),  # the dead one first
                                  StopReplica("c", INC, 0, "r1"), StopReplica("c", INC, 0, "r2")]
    assert states(sim.state) == {"r0*": ("n1", ACTIVE)}


def test_lowering_the_factor_on_the_primarys_node_hands_over_first():
    sim = healthy(rf=2, nodes=["n1", "n2"])  # r0 on n1, r1 on n2
    sim.gateway(create_op("d", 1, 1, ["n1"]))  # n1 holds most
    effects = sim.gateway(UpdateCollection("c", {"params": {"replication_factor": 1}}))
    # The primary hands over, and is dropped once the handover is in the metadata.
    assert decisions(effects) == [set_primary("r1", 2), remove("r0"), StopReplica("c", INC, 0, "r0")]
    assert states(sim.state) == {"r1*": ("n2", ACTIVE)}


# ----------------------------------------- the cluster API's operations


def test_move_shard_copies_from_the_source_asked_for_then_drops_it():
    sim = healthy(rf=2, nodes=NODES, hold=(StartTransfer,))  # r0* on n1, r1 on n2
    effects = sim.gateway(RequestTransfer("c", INC, 0, "r2", "n3", "r1", move=True))
    assert decisions(effects) == [start("r2", "n3"), transfer("r1", "r2")]  # from r1, not the primary
    assert states(sim.state)["r2"] == ("n3", PARTIAL)
    effects = sim.feed(done(sim, "r2"))
    assert decisions(effects) == [set_state("r2", ACTIVE, PARTIAL), remove("r1"), StopReplica("c", INC, 0, "r1")]
    assert states(sim.state) == {"r0*": ("n1", ACTIVE), "r2": ("n3", ACTIVE)}
    assert sim.tick(1.0) == [] and problems(sim) == []


def test_moving_the_primary_hands_it_over_before_it_goes():
    sim = healthy(rf=2, nodes=NODES)
    sim.gateway(RequestTransfer("c", INC, 0, "r2", "n3", "r0", move=True))
    settle(sim, balanced=False)
    assert states(sim.state) == {"r1*": ("n2", ACTIVE), "r2": ("n3", ACTIVE)}


def test_replicate_shard_raises_the_shards_own_factor_and_a_new_replication_factor_resets_it():
    sim = healthy(shards=2, rf=2, nodes=NODES)  # s0 on n1 n2, s1 on n2 n3
    sim.gateway(RequestTransfer("c", INC, 0, "r2", "n3", "r1", move=False))
    settle(sim, balanced=False)
    assert states(sim.state, 0) == {"r0*": ("n1", ACTIVE), "r1": ("n2", ACTIVE), "r2": ("n3", ACTIVE)}
    assert len(states(sim.state, 1)) == 2  # the other shard keeps the collection's factor
    sim.gateway(UpdateCollection("c", {"params": {"replication_factor": 1}}))
    settle(sim, balanced=False)
    assert [len(states(sim.state, i)) for i in (0, 1)] == [1, 1]


def test_drop_replica_lowers_the_shards_factor_and_the_dropped_one_goes():
    sim = healthy(rf=3, nodes=NODES)
    sim.gateway(DropReplica("c", INC, 0, "r1"))
    settle(sim, balanced=False)
    assert states(sim.state) == {"r0*": ("n1", ACTIVE), "r2": ("n3", ACTIVE)}
    sim.gateway(DropReplica("c", INC, 0, "r0"))  # the primary: handed over first
    settle(sim, balanced=False)
    assert states(sim.state) == {"r2*": ("n3", ACTIVE)}
    sim.lose("n3", report=False)
    sim.tick(GRACE + 100)
    assert states(sim.state) == {"r2*": ("n3", DEAD)}  # nothing else holds it: nothing to rebuild from


def test_aborting_a_transfer_removes_its_target_and_undoes_the_request():
    sim = healthy(rf=2, nodes=NODES, hold=(StartTransfer,))
    sim.gateway(RequestTransfer("c", INC, 0, "r2", "n3", "r1", move=True))
    effects = sim.gateway(AbortTransfer("c", INC, 0, "r2"))
    assert StopReplica("c", INC, 0, "r2") in effects
    sim.hold, sim.held = (), []
    settle(sim, balanced=False)
    assert states(sim.state) == {"r0*": ("n1", ACTIVE), "r1": ("n2", ACTIVE)}
    assert "leaving" not in shard_of(sim.state)["replicas"]["r1"]
    # A copy aborted lowers the factor it raised.
    sim.hold = (StartTransfer,)
    sim.gateway(RequestTransfer("c", INC, 0, "r3", "n3", "r0", move=False))
    assert shard_of(sim.state)["factor"] == 3
    sim.gateway(AbortTransfer("c", INC, 0, "r3"))
    assert shard_of(sim.state)["factor"] == 2


# ------------------------------------------------------- rule 7: two faults


def test_the_primarys_node_lost_while_another_replicas_transfer_fails():
    sim = healthy(rf=2, nodes=NODES + ["n4"], hold=(StartTransfer,))
    sim.gateway(UpdateCollection("c", {"params": {"replication_factor": 3}}))
    assert sim.held == [transfer("r0", "r2")]
    sim.lose("n1", report=False)
    sim.now = GRACE
    effects = sim.feed(transfer_failed(sim, "r2"), NodesSeen(GRACE, frozenset(sim.up)))
    assert decisions(effects) == [set_state("r0", DEAD, ACTIVE), set_primary("r1", 2), add("r3", "n4"),
                                  transfer("r1", "r2"), start("r3", "n4"), transfer("r1", "r3")]
    sim.hold = ()
    sim.feed(done(sim, "r2"), done(sim, "r3"))
    assert states(sim.state) == {"r1*": ("n2", ACTIVE), "r2": ("n3", ACTIVE), "r3": ("n4", ACTIVE)}


def test_two_nodes_lost_at_once():
    nodes = ["n1", "n2", "n3", "n4"]
    sim = healthy(shards=3, rf=2, nodes=nodes)  # s0 n1 n2, s1 n2 n3, s2 n3 n4
    sim.lose("n1", report=False)
    sim.lose("n2", report=False)
    effects = sim.tick(GRACE)
    assert "shard 0 of `c` is unavailable" in " ".join(texts(effects))
    assert states(sim.state, 0) == {"r0*": ("n1", DEAD), "r1": ("n2", DEAD)}
    assert states(sim.state, 1) == {"r1*": ("n3", ACTIVE), "r2": ("n4", ACTIVE)}
    assert states(sim.state, 2) == {"r0*": ("n3", ACTIVE), "r1": ("n4", ACTIVE)}
    assert problems(sim) == []
    sim.up.add("n1")  # the primary's node comes back: the shard is served again and repaired
    sim.tick(GRACE + 1)
    assert states(sim.state, 0) == {"r0*": ("n1", ACTIVE), "r2": ("n3", ACTIVE)}
    settle(sim)


def test_a_failed_replica_is_not_promoted_when_the_primarys_node_is_lost_at_once():
    sim = healthy(rf=3, nodes=NODES + ["n4"])
    sim.feed(started("r1", 9), started("r2", 3))
    sim.lose("n1", report=False)
    sim.now = GRACE
    effects = sim.feed(ReplicaFailed("c", INC, 0, "r1", "its actor died"), NodesSeen(GRACE, frozenset(sim.up)))
    assert decisions(effects)[:3] == [set_state("r0", DEAD, ACTIVE), set_state("r1", DEAD, ACTIVE), set_primary("r2", 2)]


def test_the_target_of_a_move_lost_mid_transfer_leaves_the_source_in_place():
    sim = healthy(shards=4, rf=2, nodes=NODES, hold=(StartTransfer,))
    sim.up.add("n4")
    sim.tick(1.0)
    sim.lose("n4", report=False)
    effects = sim.tick(1.0 + GRACE)
    assert decisions(effects) == [set_state("r2", DEAD, PARTIAL), remove("r2")]
    assert states(sim.state) == {"r0*": ("n1", ACTIVE), "r1": ("n2", ACTIVE)}


def test_a_write_path_mark_racing_an_activation_wins_and_the_replica_catches_up_again():
    sim = healthy(rf=2, nodes=NODES + ["n4"], hold=(StartTransfer,))
    sim.gateway(UpdateCollection("c", {"params": {"replication_factor": 3}}))
    effects = sim.c.handle(done(sim, "r2"))
    assert effects == [set_state("r2", ACTIVE, PARTIAL)]
    sim.commit(SetReplicaState("c", INC, 0, "r2", DEAD, PARTIAL))  # committed first: r2 missed a write
    # The activation is dismissed by its from_state; r2 catches up again.
    assert decisions(sim.carry(effects)) == [set_state("r2", PARTIAL, DEAD), transfer("r0", "r2")]
    assert states(sim.state)["r2"] == ("n3", PARTIAL)


def test_a_replica_restarted_before_its_dead_mark_is_applied_still_catches_up():
    sim = healthy(rf=2)
    sim.hold = (Propose,)
    sim.feed(ReplicaFailed("c", INC, 0, "r1", "its actor died"))
    assert sim.held == [set_state("r1", DEAD, ACTIVE)]
    assert decisions(sim.c.handle(started("r1", 0))) == []  # restarted: it waits for its dead mark
    sim.hold, held, sim.held = (), sim.held, []
    assert decisions(sim.carry(held)) == [set_state("r1", PARTIAL, DEAD), transfer("r0", "r1"),
                                          set_state("r1", ACTIVE, PARTIAL)]


def test_a_replica_added_after_one_was_removed_takes_a_new_id():
    """A replica's id names its actor and its storage: the stop asked for a removed one,
    however late it is carried out, must not stop a new one or delete its storage."""
    sim = healthy(rf=2, nodes=["n1", "n2"], hold=(StopReplica,))
    sim.write()
    sim.gateway(UpdateCollection("c", {"params": {"replication_factor": 1}}))
    assert sim.held == [StopReplica("c", INC, 0, "r1")] and states(sim.state) == {"r0*": ("n1", ACTIVE)}
    effects = sim.gateway(UpdateCollection("c", {"params": {"replication_factor": 2}}))
    assert decisions(effects) == [add("r2", "n2"), start("r2", "n2"), transfer("r0", "r2"),
                                  set_state("r2", ACTIVE, PARTIAL)]
    sim.write()
    sim.hold, held, sim.held = (), sim.held, []
    sim.carry(held)  # r1's stop, at last
    assert states(sim.state) == {"r0*": ("n1", ACTIVE), "r2": ("n2", ACTIVE)} and key("r2") in sim.running
    assert problems(sim) == [] and sim.seq[key("r2")] == sim.acked[("c", INC, 0)] == 2


def test_a_transfer_done_before_its_replica_missed_a_write_does_not_activate_it():
    """Even when the shell passes the news in one batch: r2's transfer is done, then r2
    misses a write (the write path marks it dead) and is set to catch up again (by the
    previous leader, say): it needs a new transfer, from the new metadata."""
    sim = healthy(rf=2, nodes=NODES, hold=(StartTransfer,))
    sim.gateway(UpdateCollection("c", {"params": {"replication_factor": 3}}))
    assert sim.held == [transfer("r0", "r2")]
    report = done(sim, "r2")
    dead, _ = apply(sim.state, SetReplicaState("c", INC, 0, "r2", DEAD, PARTIAL))
    again, _ = apply(dead, SetReplicaState("c", INC, 0, "r2", PARTIAL, DEAD))
    assert sim.c.handle(report, MetadataChanged(dead), MetadataChanged(again)) == [
        StartTransfer("c", INC, 0, "r0", "r2", again["version"])]
    assert sim.c.handle(report) == []  # the old transfer's report, late: not this one


# ------------------------------------------------------ leaders and strays


def test_a_new_leader_built_from_the_replicated_state_reaches_the_same_decisions():
    nodes = ["n1", "n2", "n3", "n4"]
    sim = healthy(shards=3, rf=2, nodes=nodes)
    reports = [started(r, seq=i + 1, shard=i) for i in range(3) for r in ("r0", "r1")]
    sim.feed(*reports)
    sim.lose("n2", report=False)
    old = sim.c.handle(NodesSeen(GRACE, frozenset(sim.up)))  # the leader dies before proposing any of it
    assert decisions(old)
    new = Controller(node_grace=GRACE, retry_after=RETRY)
    first = new.handle(MetadataChanged(sim.state), NodesSeen(GRACE, frozenset(sim.up)))
    assert all(isinstance(e, StartReplica) for e in first)  # it learns what runs by asking: a no-op for those
    assert new.handle() == []  # asked once
    new.handle(*[r for r in reports if key(r.replica, r.shard) in sim.running])
    assert new.handle(Tick(2 * GRACE)) == old  # its own grace for n2 ends later; then the same decisions


def test_replicas_the_metadata_no_longer_lists_are_stopped():
    sim = healthy(rf=2)
    old_life = ReplicaStarted("c", "d" * 32, 0, "r0", 0)  # Ray restarted an actor of an earlier life
    assert sim.c.handle(old_life) == [StopReplica("c", "d" * 32, 0, "r0")]
    assert sim.c.handle(Tick(1.0)) == []  # asked once
    sim.feed(ReplicaStopped("c", "d" * 32, 0, "r0"))
    effects = sim.gateway(DeleteCollection("c"))
    assert effects == [StopReplica("c", INC, 0, "r0"), StopReplica("c", INC, 0, "r1")]
    assert sim.running == set() and sim.c.pending == ()


def test_collections_of_the_single_node_layout_are_left_alone():
    c = Controller(node_grace=GRACE, retry_after=RETRY)
    state, _ = apply(empty_state(), CreateCollection("c", config(1, 1), {"incarnation": INC}))
    assert c.handle(MetadataChanged(state), NodesSeen(0.0, frozenset(NODES))) == []


def test_an_unknown_event_is_refused():
    with pytest.raises(TypeError):
        Controller(node_grace=GRACE, retry_after=RETRY).handle("tick")
