"""Multivectors through the NEWEST qdrant-client's ``query_points``, against its
``:memory:`` mode, on 1 and 3 shards: the ColBERT pattern (dense prefetch, then
MaxSim rescoring), nearest search in a batch, recommend / discover / context by
multivector examples, and a collection that holds one unnamed multivector.

Run by scripts/test with the newest client first on PYTHONPATH; skipped under 1.15.1.
"""

from __future__ import annotations

import uuid

import numpy as np
import pytest
from qdrant_client import models

from api.compare import assert_records, assert_scored, both
from latest.marks import LATEST_ONLY

pytestmark = LATEST_ONLY

N = 240
DIM = 6
MAXSIM = models.MultiVectorConfig(comparator=models.MultiVectorComparator.MAX_SIM)
EVEN = models.Filter(must=[models.FieldCondition(key="even", match=models.MatchValue(value=True))])


def matrix(rng: np.random.Generator, low: int = 1, high: int = 8) -> list[list[float]]:
    rows = int(rng.integers(low, high))
    return [[round(float(x), 3) for x in rng.uniform(-1, 1, size=DIM)] for _ in range(rows)]


@pytest.fixture(scope="module", params=[1, 3], ids=["shards1", "shards3"])
def colbert(request, shoal_session):
    """"dense" (Cosine), "colbert" (Cosine MaxSim) and "dot" (Dot MaxSim) on every point."""
    from qdrant_client import QdrantClient

    shoal, memory = shoal_session, QdrantClient(":memory:")
    name = f"multi_latest_{uuid.uuid4().hex[:8]}"
    for client in (shoal, memory):
        client.create_collection(name, shard_number=request.param, vectors_config={
            "dense": models.VectorParams(size=DIM, distance=models.Distance.COSINE),
            "colbert": models.VectorParams(size=DIM, distance=models.Distance.COSINE, multivector_config=MAXSIM),
            "dot": models.VectorParams(size=DIM, distance=models.Distance.DOT, multivector_config=MAXSIM)})
    rng = np.random.default_rng(5)
    points = []
    for i in range(N):
        # Every point holds every vector: the oracle's local mode cannot score a multivector
        # search while some point lacks it (tests/api/test_multi_api.py covers missing ones).
        vector = {"dense": [float(x) for x in rng.uniform(-1, 1, size=DIM)], "dot": matrix(rng, 1, 4),
                  "colbert": matrix(rng)}
        points.append(models.PointStruct(id=i, vector=vector, payload={"even": i % 2 == 0, "i": i}))
    both(shoal, memory, lambda c: c.upsert(name, points=points, wait=True))
    yield shoal, memory, name
    shoal.delete_collection(name)


def test_dense_prefetch_then_maxsim_rescoring(colbert):
    shoal, memory, name = colbert
    rng = np.random.default_rng(17)
    for _ in range(4):
        dense, q = [float(x) for x in rng.uniform(-1, 1, size=DIM)], matrix(rng, 2, 6)
        for kwargs in ({}, {"query_filter": EVEN}, {"limit": 4, "offset": 3}):
            kwargs = {"limit": 10, **kwargs}
            a, b = both(shoal, memory, lambda c: c.query_points(
                name, prefetch=models.Prefetch(query=dense, using="dense", limit=40), query=q, using="colbert",
                with_payload=True, **kwargs).points)
            assert_scored(a, b, limit=kwargs["limit"], what=f"rescore {kwargs}")
        # two prefetches fused, then rescored; and a multivector prefetch under a dense rescoring
        a, b = both(shoal, memory, lambda c: c.query_points(
            name, prefetch=[models.Prefetch(query=dense, using="dense", limit=30),
                            models.Prefetch(query=q, using="dot", limit=30)],
            query=q, using="colbert", limit=10).points)
        assert_scored(a, b, limit=10, what="two prefetches, colbert rescore")
        a, b = both(shoal, memory, lambda c: c.query_points(
            name, prefetch=models.Prefetch(query=q, using="colbert", limit=30), query=dense, using="dense",
            limit=10).points)
        assert_scored(a, b, limit=10, what="colbert prefetch, dense rescore")


def test_query_batch_and_reads(colbert):
    shoal, memory, name = colbert
    rng = np.random.default_rng(23)
    requests = [models.QueryRequest(query=matrix(rng, 2, 5), using="colbert", limit=5, with_payload=True),
                models.QueryRequest(query=models.NearestQuery(nearest=matrix(rng, 2, 5)), using="dot",
                                    filter=EVEN, limit=5, with_vector=["dot"])]
    a, b = both(shoal, memory, lambda c: c.query_batch_points(name, requests=requests))
    for x, y in zip(a, b):
        assert_scored(x.points, y.points, limit=5, what="query batch")
    a, b = both(shoal, memory, lambda c: c.retrieve(name, ids=[0, 1, 5, 239], with_vectors=True))
    assert_records(a, b, what="retrieve")
    a, b = both(shoal, memory, lambda c: c.scroll(name, limit=50, with_vectors=["colbert"])[0])
    assert_records(a, b, ordered=True, what="scroll")


@pytest.mark.parametrize("using", ["colbert", "dot"])
def test_recommend_discover_context_by_multivector_examples(colbert, using):
    shoal, memory, name = colbert
    rng = np.random.default_rng(29)
    queries = [
        models.RecommendQuery(recommend=models.RecommendInput(positive=[1, 6], negative=[11])),
        models.RecommendQuery(recommend=models.RecommendInput(positive=[matrix(rng, 2, 4)])),
        models.RecommendQuery(recommend=models.RecommendInput(
            positive=[1, matrix(rng, 2, 4)], negative=[16], strategy=models.RecommendStrategy.BEST_SCORE)),
        models.RecommendQuery(recommend=models.RecommendInput(
            positive=[21], negative=[matrix(rng, 2, 4)], strategy=models.RecommendStrategy.SUM_SCORES)),
        models.RecommendQuery(recommend=models.RecommendInput(
            negative=[26], strategy=models.RecommendStrategy.BEST_SCORE)),
        models.DiscoverQuery(discover=models.DiscoverInput(
            target=31, context=[models.ContextPair(positive=36, negative=41)])),
        models.ContextQuery(context=[models.ContextPair(positive=46, negative=51),
                                     models.ContextPair(positive=matrix(rng, 2, 4), negative=56)]),
        models.NearestQuery(nearest=61),
        66,
    ]
    for query in queries:
        for kwargs in ({}, {"query_filter": EVEN}):
            a, b = both(shoal, memory, lambda c: c.query_points(
                name, query=query, using=using, limit=10, with_payload=True, **kwargs).points)
            assert_scored(a, b, limit=10, what=f"{using} {query} {kwargs}")


@pytest.mark.parametrize("distance", list(models.Distance))
def test_unnamed_multivector_every_distance(shoal_session, distance):
    from qdrant_client import QdrantClient

    shoal, memory = shoal_session, QdrantClient(":memory:")
    name = f"multi_unnamed_{uuid.uuid4().hex[:8]}"
    for client in (shoal, memory):
        client.create_collection(name, shard_number=2, vectors_config=models.VectorParams(
            size=DIM, distance=distance, multivector_config=MAXSIM))
    rng = np.random.default_rng(31)
    points = [models.PointStruct(id=i, vector=matrix(rng), payload={"even": i % 2 == 0}) for i in range(60)]
    both(shoal, memory, lambda c: c.upsert(name, points=points, wait=True))
    try:
        for _ in range(3):
            q = matrix(rng, 1, 5)
            a, b = both(shoal, memory, lambda c: c.query_points(name, query=q, limit=8, with_vectors=True).points)
            assert_scored(a, b, limit=8, what=f"{distance}")
            a, b = both(shoal, memory, lambda c: c.query_points(name, query=q, limit=8, query_filter=EVEN).points)
            assert_scored(a, b, limit=8, what=f"{distance} filtered")
    finally:
        shoal.delete_collection(name)


@pytest.mark.parametrize("using", ["colbert", "dot"])
def test_mmr_on_multivectors(colbert, using):
    """MMR's similarities between candidates by MaxSim, one's rows as the query."""
    shoal, memory, name = colbert
    rng = np.random.default_rng(37)
    for diversity in (0.0, 0.5, 0.9):
        q = matrix(rng, 2, 5)
        mmr = models.NearestQuery(nearest=q, mmr=models.Mmr(diversity=diversity, candidates_limit=30))
        for kwargs in ({}, {"query_filter": EVEN}):
            a, b = both(shoal, memory, lambda c: c.query_points(name, query=mmr, using=using, limit=8,
                                                                with_payload=True, **kwargs).points)
            assert_scored(a, b, limit=8, what=f"mmr {using} {diversity} {kwargs}")


@pytest.mark.parametrize("using", ["colbert", "dot"])
def test_distance_matrix_of_multivectors(colbert, using):
    """A sample above the matching points takes them all, so both sides sample alike."""
    shoal, memory, name = colbert
    got = {}
    for side, client in (("shoal", shoal), ("memory", memory)):
        result = client.search_matrix_pairs(collection_name=name, sample=200, limit=3, using=using,
                                            query_filter=EVEN)
        got[side] = {(p.a, p.b): p.score for p in result.pairs}
    assert len(got["shoal"]) == N // 2 * 3
    assert set(got["shoal"]) == set(got["memory"])
    for pair, score in got["memory"].items():
        assert abs(got["shoal"][pair] - score) <= 1e-4 * max(1.0, abs(score)), pair
