"""gateway.fusion: rrf and dbsf against a naive implementation and against qdrant-client.

The naive implementation below is written from the definitions (f64, two-pass variance);
gateway.fusion computes in f32 with Welford's method as Qdrant does, so scores agree
within 1e-6 and tied points (equal within 1e-6) may come in either order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from qdrant_client import QdrantClient, models

from gateway import fusion
from shard.types import BadInput, ScoredPoint

TOL = 1e-6


@dataclass(frozen=True)
class Hit:
    id: int
    score: float
    tag: str = ""


# ----------------------------------------------------------------------- naive


def naive_rrf(lists):
    scores, first = {}, []
    for ranked in lists:
        for pos, hit in enumerate(ranked):
            if hit.id not in scores:
                first.append(hit.id)
                scores[hit.id] = 0.0
            scores[hit.id] += 1.0 / (pos + 2)
    return [(i, scores[i]) for i in first]


def naive_dbsf(lists):
    scores, first = {}, []
    for ranked in lists:
        values = [h.score for h in ranked]
        if len(values) == 1:
            normed = [0.5]
        elif values:
            mean = sum(values) / len(values)
            std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
            lo, hi = mean - 3 * std, mean + 3 * std
            normed = [0.5] * len(values) if hi == lo else [(v - lo) / (hi - lo) for v in values]
        else:
            normed = []
        for hit, s in zip(ranked, normed):
            if hit.id not in scores:
                first.append(hit.id)
                scores[hit.id] = 0.0
            scores[hit.id] += s
    return [(i, scores[i]) for i in first]


def assert_same_ranking(got: list[tuple], want: list[tuple]) -> None:
    """Same scores position by position (within TOL); each id sits where the other list
    has it, up to reordering among scores equal within TOL."""
    assert len(got) == len(want), (got, want)
    got_scores = [s for _, s in got]
    assert all(a >= b for a, b in zip(got_scores, got_scores[1:])), got  # best first
    want_sorted = sorted(want, key=lambda e: -e[1])
    for (_, gs), (_, ws) in zip(got, want_sorted):
        assert abs(gs - ws) <= TOL, (got, want_sorted)
    want_score = dict(want)
    for gid, gs in got:
        assert gid in want_score and abs(want_score[gid] - gs) <= TOL, (gid, got, want)


# Scores on a grid of eighths: exact in f32, and distinct scores are never so close that
# f32 and f64 disagree on whether a list has any spread at all.
scores_st = st.integers(-80, 80).map(lambda i: i / 8)
lists_st = st.lists(
    st.lists(st.tuples(st.integers(0, 30), scores_st), max_size=12, unique_by=lambda t: t[0]).map(
        lambda pairs: [Hit(i, s) for i, s in sorted(pairs, key=lambda t: -t[1])]
    ),
    max_size=4,
)


@settings(max_examples=300, deadline=None)
@given(lists_st)
def test_rrf_matches_naive(lists):
    got = [(h.id, h.score) for h in fusion.rrf(lists)]
    assert_same_ranking(got, naive_rrf(lists))


@settings(max_examples=300, deadline=None)
@given(lists_st)
def test_dbsf_matches_naive(lists):
    got = [(h.id, h.score) for h in fusion.dbsf(lists)]
    assert_same_ranking(got, naive_dbsf(lists))


@settings(max_examples=200, deadline=None)
@given(lists_st, st.sampled_from(fusion.METHODS), st.integers(0, 8), st.integers(1, 10), st.none() | scores_st)
def test_fuse_cuts_threshold_then_offset_and_limit(lists, method, offset, limit, threshold):
    whole = (fusion.rrf if method == "rrf" else fusion.dbsf)(lists)
    kept = whole if threshold is None else [h for h in whole if h.score >= float(np.float32(threshold))]
    page = fusion.fuse(method, lists, limit=limit, offset=offset, score_threshold=threshold)
    assert page == kept[offset : offset + limit]


# ---------------------------------------------------------------- hand-checked


def test_rrf_qdrant_example():
    # lib/segment/src/common/reciprocal_rank_fusion.rs test_rrf_scoring
    lists = [
        [Hit(2, 0.9), Hit(1, 0.8)],
        [Hit(1, 0.7), Hit(2, 0.6), Hit(3, 0.5)],
        [Hit(5, 0.9), Hit(3, 0.5), Hit(1, 0.4)],
    ]
    got = [(h.id, h.score) for h in fusion.rrf(lists)]
    want = [(1, 1.0833334), (2, 0.8333334), (3, 0.5833334), (5, 0.5)]
    assert [i for i, _ in got] == [i for i, _ in want]
    for (_, g), (_, w) in zip(got, want):
        assert g == float(np.float32(w))  # f32 bit for bit


def test_ties_keep_first_appearance_and_first_record():
    lists = [[Hit(7, 1.0, "a"), Hit(8, 0.5, "a")], [Hit(9, 3.0, "b"), Hit(7, 2.0, "b")]]
    fused = fusion.rrf(lists)
    # 7: 1/2 + 1/3; 9: 1/2; 8: 1/3 -- 9 and 8 are not tied with anything
    assert [h.id for h in fused] == [7, 9, 8]
    assert fused[0].tag == "a"  # the record of the first appearance
    tied = fusion.rrf([[Hit(1, 0.0)], [Hit(2, 0.0)], [Hit(3, 0.0)]])
    assert [h.id for h in tied] == [1, 2, 3] and {h.score for h in tied} == {0.5}


def test_dbsf_edge_cases():
    assert fusion.dbsf([]) == []
    assert [h.score for h in fusion.dbsf([[Hit(1, 42.0)]])] == [0.5]  # one point: 0.5
    same = fusion.dbsf([[Hit(1, 3.0), Hit(2, 3.0), Hit(3, 3.0)]])  # no spread: all 0.5
    assert [h.score for h in same] == [0.5, 0.5, 0.5]
    two = fusion.dbsf([[Hit(1, 1.0), Hit(2, 0.0)]])
    # mean 0.5, sample std sqrt(0.5): 1.0 -> (0.5 + 0.5) / (6 * 0.7071) + 0.5
    assert abs(two[0].score - (0.5 + 0.5 / (6 * math.sqrt(0.5)))) < TOL
    assert abs(two[0].score + two[1].score - 1.0) < TOL
    summed = fusion.dbsf([[Hit(1, 1.0)], [Hit(1, 5.0), Hit(2, 1.0)]])
    assert summed[0].id == 1 and summed[0].score > 1.0


def test_fuse_threshold_is_not_strict_and_works_on_scored_points():
    points = [[ScoredPoint(1, 0, 0.9), ScoredPoint(2, 0, 0.1)], [ScoredPoint(2, 0, 0.8)]]
    # 2: 1/3 + 1/2, 1: 1/2
    assert [p.id for p in fusion.fuse("rrf", points, limit=10, score_threshold=0.5)] == [2, 1]
    assert [p.id for p in fusion.fuse("rrf", points, limit=10, score_threshold=0.51)] == [2]
    assert [p.id for p in fusion.fuse("rrf", points, limit=1, offset=1)] == [1]
    with pytest.raises(BadInput):
        fusion.fuse("rank", points, limit=10)


# --------------------------------------------------------------- the oracle


DIM = 4


def _oracle_case(seed: int, n_points: int, limits: list[int]):
    rng = np.random.default_rng(seed)
    client = QdrantClient(":memory:")
    client.create_collection(
        "c",
        vectors_config={
            "a": models.VectorParams(size=DIM, distance=models.Distance.COSINE),
            "b": models.VectorParams(size=DIM, distance=models.Distance.EUCLID),
        },
    )
    client.upsert(
        "c",
        [
            models.PointStruct(id=i, vector={"a": rng.normal(size=DIM).tolist(), "b": rng.normal(size=DIM).tolist()})
            for i in range(n_points)
        ],
    )
    prefetch = [
        models.Prefetch(query=rng.normal(size=DIM).tolist(), using="a" if i % 2 == 0 else "b", limit=lim)
        for i, lim in enumerate(limits)
    ]
    return client, prefetch


@settings(max_examples=25, deadline=None)
@given(
    st.integers(0, 2**32 - 1),
    st.integers(1, 40),
    st.lists(st.integers(1, 25), min_size=1, max_size=3),
    st.sampled_from([models.Fusion.RRF, models.Fusion.DBSF]),
)
def test_fusion_matches_qdrant_client(seed, n_points, limits, method):
    client, prefetch = _oracle_case(seed, n_points, limits)
    lists = [client.query_points("c", query=p.query, using=p.using, limit=p.limit).points for p in prefetch]
    everything = n_points  # a limit past every fused point: no tie is cut at the edge
    want = client.query_points("c", prefetch=prefetch, query=models.FusionQuery(fusion=method), limit=everything).points
    got = fusion.fuse(method.value, lists, limit=everything, rescored=lambda p, s: p.model_copy(update={"score": s}))
    assert_same_ranking([(p.id, p.score) for p in got], [(p.id, p.score) for p in want])
