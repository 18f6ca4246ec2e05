"""Sparse search through the NEWEST qdrant-client's ``query_points`` (it sends a
``models.SparseVector`` as the query itself), against its ``:memory:`` mode, on 1
and 3 shards: plain, filtered, thresholded, paged, with IDF, in a batch, and a
collection that holds sparse vectors only.

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

N = 300
VOCAB = 60
EVEN = models.Filter(must=[models.FieldCondition(key="even", match=models.MatchValue(value=True))])


def sparse(rng: np.random.Generator, low: int = 1, high: int = 9) -> models.SparseVector:
    k = int(rng.integers(low, high))
    indices = rng.choice(VOCAB, size=k, replace=False)
    return models.SparseVector(indices=[int(i) for i in indices],
                               values=[round(float(v), 3) for v in rng.uniform(0.1, 3.0, size=k)])


@pytest.fixture(scope="module", params=[1, 3], ids=["shards1", "shards3"])
def sparse_only(request, shoal_session):
    """A collection of sparse vectors only: "bm" (idf) on every point, "splade" on most."""
    from qdrant_client import QdrantClient

    shoal, memory = shoal_session, QdrantClient(":memory:")
    name = f"sparse_latest_{uuid.uuid4().hex[:8]}"
    for client in (shoal, memory):
        client.create_collection(name, vectors_config={}, shard_number=request.param, sparse_vectors_config={
            "bm": models.SparseVectorParams(modifier=models.Modifier.IDF),
            "splade": models.SparseVectorParams(index=models.SparseIndexParams(on_disk=False))})
    rng = np.random.default_rng(5)
    points = []
    for i in range(N):
        vector = {"bm": sparse(rng)}
        if i % 5:
            vector["splade"] = sparse(rng)
        points.append(models.PointStruct(id=i, vector=vector, payload={"even": i % 2 == 0, "i": i}))
    both(shoal, memory, lambda c: c.upsert(name, points=points, wait=True))
    yield shoal, memory, name
    shoal.delete_collection(name)


@pytest.mark.parametrize("using", ["bm", "splade"])
def test_query_points_sparse(sparse_only, using):
    shoal, memory, name = sparse_only
    rng = np.random.default_rng(17)
    for _ in range(5):
        q = sparse(rng, 2, 12)
        for kwargs in ({}, {"query_filter": EVEN}, {"score_threshold": 2.0}, {"limit": 4, "offset": 6}):
            kwargs = {"limit": 10, **kwargs}
            a, b = both(shoal, memory, lambda c: c.query_points(
                name, query=q, using=using, with_payload=True, with_vectors=[using], **kwargs).points)
            assert_scored(a, b, limit=kwargs["limit"], what=f"{using} {kwargs}")


def test_query_batch_and_nearest(sparse_only):
    shoal, memory, name = sparse_only
    rng = np.random.default_rng(23)
    requests = [models.QueryRequest(query=sparse(rng, 2, 10), using="bm", limit=5, with_payload=True),
                models.QueryRequest(query=models.NearestQuery(nearest=sparse(rng, 2, 10)), using="splade",
                                    filter=EVEN, limit=5)]
    a, b = both(shoal, memory, lambda c: c.query_batch_points(name, requests=requests))
    for x, y in zip(a, b):
        assert_scored(x.points, y.points, limit=5, what="query batch")


def test_retrieve_and_scroll_sparse_only(sparse_only):
    shoal, memory, name = sparse_only
    a, b = both(shoal, memory, lambda c: c.retrieve(name, ids=[0, 1, 5, 299], with_vectors=True))
    assert_records(a, b, what="retrieve")
    a, b = both(shoal, memory, lambda c: c.scroll(name, limit=50, with_vectors=["splade"])[0])
    assert_records(a, b, ordered=True, what="scroll")


@pytest.mark.parametrize("using", ["bm", "splade"])
def test_recommend_discover_context_by_sparse_examples(sparse_only, using):
    """Examples by id and as raw sparse vectors; IDF applied to every example on "bm"."""
    shoal, memory, name = sparse_only
    rng = np.random.default_rng(29)
    queries = [
        models.RecommendQuery(recommend=models.RecommendInput(positive=[1, 6], negative=[11])),
        models.RecommendQuery(recommend=models.RecommendInput(positive=[sparse(rng, 3, 8)])),
        models.RecommendQuery(recommend=models.RecommendInput(
            positive=[1, sparse(rng, 3, 8)], negative=[16], strategy=models.RecommendStrategy.BEST_SCORE)),
        models.RecommendQuery(recommend=models.RecommendInput(
            positive=[21], negative=[sparse(rng, 3, 8)], strategy=models.RecommendStrategy.SUM_SCORES)),
        models.RecommendQuery(recommend=models.RecommendInput(
            negative=[26], strategy=models.RecommendStrategy.BEST_SCORE)),
        models.DiscoverQuery(discover=models.DiscoverInput(
            target=31, context=[models.ContextPair(positive=36, negative=41)])),
        models.ContextQuery(context=[models.ContextPair(positive=46, negative=51),
                                     models.ContextPair(positive=sparse(rng, 3, 8), negative=56)]),
        models.NearestQuery(nearest=61),
        66,
    ]
    for query in queries:
        for kwargs in ({}, {"query_filter": EVEN}):
            a, b = both(shoal, memory, lambda c: c.query_points(
                name, query=query, using=using, limit=10, with_payload=True, **kwargs).points)
            assert_scored(a, b, limit=10, what=f"{using} {query} {kwargs}")


def test_dense_example_for_a_sparse_vector_is_refused(sparse_only, shoal_server):
    from api.rawhttp import call

    _, _, name = sparse_only
    code, body = call("POST", f"{shoal_server.url}/collections/{name}/points/query",
                      {"query": {"recommend": {"positive": [[0.1, 0.2]]}}, "using": "bm"})
    assert (code, body["status"]["error"]) == (400, "Wrong input: Conversion between sparse and regular vectors failed")


def test_mmr_on_a_sparse_vector(sparse_only):
    shoal, memory, name = sparse_only
    rng = np.random.default_rng(31)
    for diversity in (0.0, 0.5, 0.8):
        query = models.NearestQuery(nearest=sparse(rng, 4, 12),
                                    mmr=models.Mmr(diversity=diversity, candidates_limit=30))
        a, b = both(shoal, memory, lambda c: c.query_points(name, query=query, using="splade", limit=8).points)
        assert_scored(a, b, limit=8, what=f"sparse mmr {diversity}")
