"""Routing reads and writes over a shard's replicas (``cluster.routing``) and resolving
what several replicas of one shard answered (``cluster.resolve``): pure functions,
checked against Qdrant's computations and its resolver's own test data
(lib/collection/src/shards/resolve.rs)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cluster.resolve import (
    Condition,
    agreement,
    resolve_batches,
    resolve_count,
    resolve_facets,
    resolve_points,
    resolve_records,
)
from cluster.routing import (
    EpochMismatch,
    NotEnoughReplicas,
    NoWritableReplica,
    PrimaryUnavailable,
    ReadPlan,
    ReadQuorum,
    ReplicaSetError,
    read_quorum,
    read_targets,
    reads_failed,
    write_quorum,
    write_targets,
    write_verdict,
)
from gateway.errors import status_and_text
from gateway.merge import merge_scored
from shard.types import Record, ScoredPoint

ALL, MAJORITY = Condition.ALL, Condition.MAJORITY
STATES = ("active", "partial", "dead", "initializing")


def shard(*states: str, primary: str = "r0", epoch: int = 1) -> dict:
    """A shard whose replica rN is on node nN and in states[N]."""
    return {"epoch": epoch, "primary": primary,
            "replicas": {f"r{i}": {"node": f"n{i}", "state": s} for i, s in enumerate(states)}}


def pt(id, score=1.0, version=1, payload=None, vector=None) -> ScoredPoint:
    return ScoredPoint(id, version, score, payload, vector)


def ids(items) -> list:
    return [i.id for i in items]


# ====================================================================== reads


@pytest.mark.parametrize("consistency, replicas, expected", [
    (None, 3, ReadQuorum(1, ALL)),       # Qdrant's default: Factor(1)
    (1, 3, ReadQuorum(1, ALL)),
    (2, 3, ReadQuorum(2, ALL)),
    (5, 3, ReadQuorum(3, ALL)),          # clamped to the replicas there are
    ("all", 3, ReadQuorum(3, ALL)),
    ("majority", 3, ReadQuorum(3, MAJORITY)),
    ("quorum", 3, ReadQuorum(2, ALL)),
    ("quorum", 4, ReadQuorum(3, ALL)),
    ("quorum", 1, ReadQuorum(1, ALL)),
    ("majority", 1, ReadQuorum(1, MAJORITY)),
    ("all", 1, ReadQuorum(1, ALL)),
])
def test_read_quorum_as_qdrant_computes_it(consistency, replicas, expected):
    assert read_quorum(consistency, replicas) == expected


@pytest.mark.parametrize("bad", [0, -1, True, "one", "ALL", 1.5])
def test_read_quorum_refuses_what_the_gateway_never_parses(bad):
    with pytest.raises(ValueError):
        read_quorum(bad, 3)


def test_majority_of_three():
    # Qdrant's code asks every replica for `majority` and keeps what 2 of the 3
    # agree on (its docs say the reverse of `quorum`, which asks 2 and keeps what
    # both agree on).
    assert read_quorum("majority", 3) == ReadQuorum(3, MAJORITY)
    assert agreement(MAJORITY, 3) == 2
    assert read_quorum("quorum", 3) == ReadQuorum(2, ALL)
    assert agreement(ALL, 2) == 2


@pytest.mark.parametrize("consistency, states", [
    (None, ("dead", "dead")),
    (None, ("partial", "initializing", "dead")),
    ("all", ("active", "active", "dead")),
    ("all", ("active", "partial")),
    ("majority", ("active", "active", "dead")),   # majority needs every replica
    (3, ("active", "active", "initializing")),
])
def test_too_few_active_replicas_is_qdrants_500(consistency, states):
    with pytest.raises(NotEnoughReplicas) as caught:
        read_targets(shard(*states), consistency, "n0", shard_id=4)
    assert str(caught.value) == "The replica set for shard 4 on peer n0 does not have enough active replicas"
    assert status_and_text(caught.value) == (
        500, "Service internal error: The replica set for shard 4 on peer n0 does not have enough active replicas")


@pytest.mark.parametrize("consistency, states, required", [
    ("quorum", ("active", "active", "dead"), 2),
    (2, ("dead", "active", "active"), 2),
    (None, ("dead", "partial", "active"), 1),
])
def test_enough_active_replicas_despite_others(consistency, states, required):
    plan = read_targets(shard(*states), consistency, "n9", shard_id=0)
    assert plan.required == required
    assert all(shard(*states)["replicas"][r]["state"] == "active" for r in plan.ask + plan.spares)


def test_prefers_the_own_node_and_asks_no_other_by_default():
    plan = read_targets(shard("active", "active", "active"), None, "n2", shard_id=0, seed=1)
    assert plan == ReadPlan(ask=("r2",), spares=("r1", "r0"), required=1, condition=ALL)


def test_without_an_own_replica_one_more_is_asked_at_once():
    # Qdrant's default read_fan_out_factor: 0 with a local active replica, else 1.
    plan = read_targets(shard("active", "active", "active"), None, "elsewhere", shard_id=0)
    assert plan == ReadPlan(ask=("r0", "r1"), spares=("r2",), required=1, condition=ALL)
    assert read_targets(shard("active", "active"), None, None, shard_id=0, fan_out=0).ask == ("r0",)
    assert read_targets(shard("active", "active", "active"), None, "n0", shard_id=0, fan_out=1).ask == ("r0", "r1")


def test_an_own_replica_that_is_not_active_is_not_preferred():
    plan = read_targets(shard("active", "partial", "active"), None, "n1", shard_id=0)
    assert plan.ask == ("r0", "r2") and "r1" not in plan.spares


def test_reads_spread_over_the_replicas_by_seed():
    placement = shard(*["active"] * 4)
    firsts = [read_targets(placement, None, None, shard_id=0, seed=s, fan_out=0).ask[0] for s in range(8)]
    assert firsts == ["r0", "r1", "r2", "r3"] * 2
    # the own node stays first whatever the seed; the spares rotate
    plans = [read_targets(placement, None, "n3", shard_id=0, seed=s) for s in range(3)]
    assert [p.ask for p in plans] == [("r3",)] * 3
    assert [p.spares for p in plans] == [("r0", "r1", "r2"), ("r1", "r2", "r0"), ("r2", "r0", "r1")]


def test_excluded_replicas_are_neither_asked_nor_counted_active():
    placement = shard("active", "active", "active")
    plan = read_targets(placement, 2, "n0", exclude={"r1"}, shard_id=0)
    assert plan.ask == ("r0", "r2") and plan.spares == ()
    with pytest.raises(NotEnoughReplicas):
        read_targets(placement, "all", "n0", exclude=("r1",), shard_id=0)


def test_replica_ids_in_creation_order():
    placement = {"epoch": 1, "primary": "r2", "replicas": {
        r: {"node": f"n-{r}", "state": "active"} for r in ("r10", "r2", "r1")}}
    plan = read_targets(placement, "all", None, shard_id=0, fan_out=0)
    assert plan.ask == ("r1", "r2", "r10")


def test_reads_failed_text():
    assert reads_failed(["Shard unreachable", "timed out"], 1) == (
        "2 of 3 read operations failed:\n  Shard unreachable\n  timed out")
    assert reads_failed([], 0) == "0 of 0 read operations failed"


@st.composite
def placements(draw):
    states = draw(st.lists(st.sampled_from(STATES), min_size=1, max_size=6))
    return shard(*states)


@settings(max_examples=300, deadline=None)
@given(placements(), st.one_of(st.none(), st.integers(1, 7), st.sampled_from(["majority", "quorum", "all"])),
       st.sampled_from([None, "n0", "n1", "n9"]), st.integers(0, 100), st.one_of(st.none(), st.integers(0, 3)))
def test_read_targets_properties(placement, consistency, node, seed, fan_out):
    replicas = placement["replicas"]
    active = [r for r, info in replicas.items() if info["state"] == "active"]
    quorum = read_quorum(consistency, len(replicas))
    try:
        plan = read_targets(placement, consistency, node, shard_id=0, seed=seed, fan_out=fan_out)
    except NotEnoughReplicas:
        assert len(active) < quorum.required
        return
    everyone = plan.ask + plan.spares
    assert sorted(everyone) == sorted(active)  # every active replica, once, and no other
    assert (plan.required, plan.condition) == (quorum.required, quorum.condition)
    own = [r for r in active if replicas[r]["node"] == node]
    width = quorum.required + (fan_out if fan_out is not None else (0 if own else 1))
    assert len(plan.ask) == min(width, len(active))
    if own:
        assert plan.ask[0] == own[0]


# ====================================================================== writes


def test_writes_go_to_the_primary_and_every_active_or_partial_replica():
    targets = write_targets(shard("partial", "active", "dead", "initializing", "active", primary="r1", epoch=3),
                            3, shard_id=0)
    assert targets.primary == "r1"
    assert targets.forwards == ("r0", "r4")
    assert targets.all == ("r1", "r0", "r4")
    assert targets.active == {"r1", "r4"}
    assert targets.replicas == 5 and targets.epoch == 3
    assert targets.nodes == {"r0": "n0", "r1": "n1", "r4": "n4"}


def test_a_write_of_another_epoch_is_refused():
    for sent in (2, 4):
        with pytest.raises(EpochMismatch) as caught:
            write_targets(shard("active", epoch=3), sent, shard_id=1)
        assert str(caught.value) == f"Shard 1 is at epoch 3, not {sent}"


def test_no_replica_takes_writes():
    with pytest.raises(NoWritableReplica) as caught:
        write_targets(shard("dead", "initializing"), 1, shard_id=2)
    assert status_and_text(caught.value) == (
        500, "Service internal error: The replica set for shard 2 on peer n0 has no active replica")


@pytest.mark.parametrize("state", ["dead", "partial", "initializing"])
def test_a_primary_that_is_not_active_sequences_nothing(state):
    with pytest.raises(PrimaryUnavailable) as caught:
        write_targets(shard(state, "active"), 1, shard_id=0)
    assert isinstance(caught.value, ReplicaSetError) and caught.value.state == state


@pytest.mark.parametrize("factor, states, expected", [
    (1, ("active", "active", "active"), 1),
    (2, ("active", "active", "active"), 2),
    (3, ("active", "active", "active"), 3),
    (5, ("active", "active", "active"), 3),     # capped by the replicas of the shard
    (3, ("active", "active", "dead"), 3),       # ... in any state: a dead one counts in the cap
    (2, ("active",), 1),
])
def test_write_quorum_caps_the_factor(factor, states, expected):
    assert write_quorum(factor, write_targets(shard(*states), 1, shard_id=0)) == expected


@pytest.mark.parametrize("bad", [0, -1, True, 1.0, None])
def test_write_quorum_refuses_a_bad_factor(bad):
    with pytest.raises(ValueError):
        write_quorum(bad, write_targets(shard("active"), 1, shard_id=0))


FAIL = ConnectionError("unreachable")


@pytest.mark.parametrize("states, quorum, acked, failed, accepted, dead, error", [
    # every asked replica acknowledged
    (("active", "active", "active"), 3, {"r0", "r1", "r2"}, {}, True, (), None),
    # a dead replica is not asked and fails nothing: fewer acknowledgements still make the write
    (("active", "active", "dead"), 3, {"r0", "r1"}, {}, True, (), None),
    # enough acknowledgements: the failed replica is marked dead
    (("active", "active", "active"), 2, {"r0", "r1"}, {"r2": FAIL}, True, ("r2",), None),
    (("active", "partial", "active"), 2, {"r0", "r2"}, {"r1": FAIL}, True, ("r1",), None),
    # too few: the first failure's own error, and nobody marked dead (the client retries)
    (("active", "active", "active"), 3, {"r0", "r1"}, {"r2": FAIL}, False, (), FAIL),
])
def test_write_verdict(states, quorum, acked, failed, accepted, dead, error):
    targets = write_targets(shard(*states), 1, shard_id=0)
    verdict = write_verdict(targets, quorum, acked, failed)
    assert (verdict.accepted, verdict.mark_dead, verdict.error) == (accepted, dead, error)


def test_write_verdict_needs_an_active_acknowledgement():
    targets = write_targets(shard("active", "partial"), 1, shard_id=0)
    verdict = write_verdict(targets, 1, {"r1"}, {"r0": FAIL})
    assert not verdict.accepted and verdict.mark_dead == ("r0",)
    assert str(verdict.error) == ("Failed to apply operation to at least one `Active` replica. Consistency of "
                                  "this update is not guaranteed. Please retry. Failed peer: n0, error: unreachable")
    with pytest.raises(ValueError):
        write_verdict(targets, 1, {"r0", "r9"}, {})
    with pytest.raises(ValueError):
        write_verdict(targets, 1, {"r0"}, {"r0": FAIL})


# ====================================================================== resolve

# Qdrant's resolver test data (resolve.rs `input_2`, `input_3`, `input_4`).
INPUT_2 = [[1, 2, 3, 6, 7, 9, 11, 12, 13], [3, 4, 5, 6, 8, 10, 11]]
INPUT_3 = [[1, 2, 6, 7, 8, 11, 13, 14, 15], [2, 3, 4, 7, 9, 10, 13, 14, 16], [4, 5, 6, 7, 9, 11, 12, 14, 17]]
INPUT_4 = [
    [1, 2, 3, 9, 11, 12, 13, 14, 16, 19, 21, 22, 24, 27, 29],
    [2, 3, 4, 5, 6, 12, 13, 15, 17, 19, 22, 24, 26, 27, 28],
    [3, 5, 6, 7, 8, 9, 13, 15, 16, 18, 20, 22, 26, 27, 28],
    [6, 8, 9, 10, 11, 12, 13, 16, 18, 19, 21, 23, 26, 27, 29],
]


@pytest.mark.parametrize("answers, condition, expected", [
    ([], ALL, []),
    ([], MAJORITY, []),
    (INPUT_2, ALL, [3, 6, 11]),
    (INPUT_2, MAJORITY, [3, 6, 11]),
    (INPUT_3, ALL, [7, 14]),
    (INPUT_3, MAJORITY, [2, 4, 6, 7, 9, 11, 13, 14]),
    (INPUT_4, ALL, [13, 27]),
    (INPUT_4, MAJORITY, [3, 6, 9, 12, 13, 16, 19, 22, 26, 27]),
    ([list(range(1, 10))] * 5, ALL, list(range(1, 10))),
])
def test_qdrants_resolver_cases(answers, condition, expected):
    assert ids(resolve_records([[Record(i) for i in a] for a in answers], condition)) == expected
    assert ids(resolve_points([[pt(i, score=-i) for i in a] for a in answers], condition)) == expected


def test_keeps_a_point_only_present_in_enough_answers():
    answers = [[pt(1, 0.9), pt(2, 0.8), pt(3, 0.7)],
               [pt(1, 0.9), pt(3, 0.7)],
               [pt(2, 0.8), pt(3, 0.7), pt(4, 0.6)]]
    assert ids(resolve_points(answers, ALL)) == [3]
    assert ids(resolve_points(answers, MAJORITY)) == [1, 2, 3]


def test_keeps_the_copy_enough_replicas_hold_and_the_newest_version_of_it():
    answers = [[pt(7, payload={"a": 2}, version=5)],
               [pt(7, payload={"a": 1}, version=4)],   # a lagging replica's older copy
               [pt(7, payload={"a": 2}, version=6)]]
    kept = resolve_points(answers, MAJORITY)
    assert [(p.id, p.payload, p.version) for p in kept] == [(7, {"a": 2}, 6)]
    assert resolve_points(answers, ALL) == []  # no copy held by all three
    # the version alone does not split copies (as Qdrant's scored_point_eq)
    same = [[pt(7, version=3)], [pt(7, version=9)]]
    assert [p.version for p in resolve_points(same, ALL)] == [9]


@pytest.mark.parametrize("a, b, agree", [
    (pt(1, payload=None), pt(1, payload={}), True),            # payload_eq: none == empty
    (pt(1, payload={"x": 1}), pt(1, payload={"x": 1.0}), False),  # JSON kinds differ, as in serde_json
    (pt(1, payload={"x": 1}), pt(1, payload={"x": True}), False),
    (pt(1, score=0.5), pt(1, score=0.25), False),
    (pt(1, score=np.float32(0.5)), pt(1, score=0.5), True),
    (pt(1, vector=np.array([1, 2], np.float32)), pt(1, vector=np.array([1, 2], np.float32)), True),
    (pt(1, vector=np.array([1, 2], np.float32)), pt(1, vector=np.array([1, 3], np.float32)), False),
    (pt(1, vector={"a": np.zeros(2, np.float32)}), pt(1, vector={"a": np.zeros(2, np.float32)}), True),
    (pt(1, vector={"a": np.zeros(2, np.float32)}), pt(1, vector={"b": np.zeros(2, np.float32)}), False),
    (pt(1, vector=np.zeros(2, np.float32)), pt(1, vector=None), False),
])
def test_what_counts_as_the_same_copy(a, b, agree):
    assert (resolve_points([[a], [b]], ALL) != []) == agree
    ra, rb = Record(a.id, a.payload, a.vector), Record(b.id, b.payload, b.vector)
    if a.score == b.score:
        assert (resolve_records([[ra], [rb]], ALL) != []) == agree


def test_records_compare_order_values():
    answers = [[Record(1, order_value=3)], [Record(1, order_value=4)], [Record(1, order_value=3)]]
    assert [r.order_value for r in resolve_records(answers, MAJORITY)] == [3]
    assert resolve_records(answers, ALL) == []


def test_one_answer_is_returned_as_it_is():
    answer = [pt(2, 0.9), pt(1, 0.5)]
    assert resolve_points([answer], ALL) == answer
    assert resolve_facets([[("a", 3)]], ALL) == [("a", 3)]
    assert resolve_count([7], MAJORITY) == 7


def test_answers_in_different_orders_give_each_point_once():
    answers = [[Record(1), Record(2)], [Record(2), Record(1)]]
    assert ids(resolve_records(answers, ALL)) == [1, 2]


def test_does_not_mutate_the_answers():
    answers = [[pt(1, version=1), pt(2)], [pt(1, version=2)]]
    before = [[(p.id, p.version) for p in a] for a in answers]
    resolve_points(answers, MAJORITY)
    assert [[(p.id, p.version) for p in a] for a in answers] == before


@pytest.mark.parametrize("counts, condition, expected", [
    ([], ALL, 0),
    ([5, 3, 4], ALL, 3),
    ([5, 3, 4], MAJORITY, 4),
    ([1, 2], MAJORITY, 2),      # the upper median, as Qdrant's counts[len / 2]
    ([9, 1, 1, 9], MAJORITY, 9),
])
def test_resolve_count(counts, condition, expected):
    assert resolve_count(counts, condition) == expected


def test_resolve_facets():
    # resolve.rs's own example: a 20 / 21, b 15 / 13
    answers = [[("a", 20), ("b", 15)], [("a", 21), ("b", 13)]]
    assert resolve_facets(answers, ALL) == [("a", 20), ("b", 13)]
    three = [[("a", 5), ("b", 4), (True, 2)], [("a", 6), (1, 3)], [("b", 2), ("a", 7), (True, 2)]]
    assert resolve_facets(three, MAJORITY) == [("a", 6), ("b", 4), (True, 2)]  # 1 is not True
    assert resolve_facets(three, ALL) == [("a", 5)]


def test_resolve_batches_request_by_request():
    replica_a = [[pt(1, 0.9), pt(2, 0.8)], [pt(5, 0.3)]]
    replica_b = [[pt(2, 0.8)], [pt(5, 0.3), pt(6, 0.1)]]
    assert [ids(h) for h in resolve_batches([replica_a, replica_b], ALL)] == [[2], [5]]
    assert resolve_batches([replica_a], ALL) == replica_a
    with pytest.raises(ValueError):
        resolve_batches([replica_a, replica_a[:1]], ALL)


def test_each_shard_counts_once_in_the_cross_shard_merge():
    # Resolve each shard's replicas first, then the gateway's merge across shards.
    shard_0 = [[pt(1, 0.9), pt(3, 0.5)], [pt(1, 0.9), pt(3, 0.5)]]
    shard_1 = [[pt(2, 0.7), pt(4, 0.2)], [pt(2, 0.7)]]
    per_shard = [resolve_points(shard_0, ALL), resolve_points(shard_1, ALL)]
    merged = merge_scored(per_shard, offset=0, limit=10, higher_is_better=True)
    assert ids(merged) == [1, 2, 3]


def _key(p: ScoredPoint):
    return (-p.score, p.id)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 40), st.integers(0, 5)), unique_by=lambda t: t[0], max_size=15),
       st.integers(1, 5), st.sampled_from([ALL, MAJORITY]), st.data())
def test_resolve_keeps_exactly_what_enough_answers_hold_in_order(base, n, condition, data):
    """Against a naive oracle: replicas that each lack some points of one ordered
    list keep the points held by enough of them, in that list's order, each once."""
    points = sorted((pt(i, score=float(s)) for i, s in base), key=_key)
    answers = [[p for p in points if data.draw(st.booleans())] for _ in range(n)]
    need = agreement(condition, n)
    expected = [p.id for p in points if sum(p.id in ids(a) for a in answers) >= need]
    got = resolve_points(answers, condition)
    assert ids(got) == (ids(answers[0]) if n == 1 else expected)
    assert got == sorted(got, key=_key)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 1000), unique=True, max_size=20), st.integers(1, 5), st.sampled_from([ALL, MAJORITY]))
def test_agreeing_answers_resolve_to_themselves(point_ids, n, condition):
    answer = [Record(i, payload={"i": i}) for i in point_ids]
    assert resolve_records([list(answer) for _ in range(n)], condition) == answer


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 100), min_size=1, max_size=7))
def test_resolved_count_lies_between_the_answers(counts):
    assert resolve_count(counts, ALL) == min(counts)
    assert min(counts) <= resolve_count(counts, MAJORITY) <= max(counts)
