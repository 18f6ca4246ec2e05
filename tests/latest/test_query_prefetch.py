"""Query trees through the NEWEST qdrant-client's ``query_points``, against its
``:memory:`` mode, on 1 and 3 shards: hybrid dense + sparse fused by RRF and DBSF,
rescoring prefetched candidates with another vector, nested prefetches, filters
propagated down the tree, formulas (scores, payload variables, conditions),
maximal marginal relevance, order_by and sample over prefetches, and batches. Then
the refusals: Qdrant's texts, nothing changed.

Run by scripts/test with the newest client first on PYTHONPATH; skipped under 1.15.1.
"""

from __future__ import annotations

import uuid

import numpy as np
import pytest
from qdrant_client import models

from api.compare import assert_scored, both
from api.rawhttp import call
from latest.marks import LATEST_ONLY

pytestmark = LATEST_ONLY

N = 240
VOCAB = 40
EVEN = models.Filter(must=[models.FieldCondition(key="even", match=models.MatchValue(value=True))])
LOW = models.Filter(must=[models.FieldCondition(key="price", range=models.Range(lt=60.0))])


def sparse(rng: np.random.Generator, low: int = 1, high: int = 8) -> models.SparseVector:
    k = int(rng.integers(low, high))
    indices = rng.choice(VOCAB, size=k, replace=False)
    return models.SparseVector(indices=[int(i) for i in indices],
                               values=[round(float(v), 3) for v in rng.uniform(0.1, 3.0, size=k)])


def dense(rng: np.random.Generator, dim: int) -> list[float]:
    return [round(float(x), 4) for x in rng.normal(size=dim)]


@pytest.fixture(scope="module", params=[1, 3], ids=["shards1", "shards3"])
def hybrid(request, shoal_session):
    """Points with a Cosine "dense" (8), a Dot "small" (4) and an idf sparse "bm"
    vector; payload i, even, price (distinct), tag."""
    from qdrant_client import QdrantClient

    shoal, memory = shoal_session, QdrantClient(":memory:")
    name = f"prefetch_{uuid.uuid4().hex[:8]}"
    for client in (shoal, memory):
        client.create_collection(
            name, shard_number=request.param,
            vectors_config={"dense": models.VectorParams(size=8, distance=models.Distance.COSINE),
                            "small": models.VectorParams(size=4, distance=models.Distance.DOT)},
            sparse_vectors_config={"bm": models.SparseVectorParams(modifier=models.Modifier.IDF)})
    shoal.create_payload_index(name, "price", models.PayloadSchemaType.FLOAT, wait=True)
    rng = np.random.default_rng(11)
    prices = rng.permutation(N) * 0.5 + rng.uniform(0, 0.1, size=N)
    points = [models.PointStruct(
        id=i, vector={"dense": dense(rng, 8), "small": dense(rng, 4), "bm": sparse(rng)},
        payload={"i": i, "even": i % 2 == 0, "price": round(float(prices[i]), 4), "tag": "abc"[i % 3]})
        for i in range(N)]
    both(shoal, memory, lambda c: c.upsert(name, points=points, wait=True))
    yield shoal, memory, name
    shoal.delete_collection(name)


def _compare(hybrid, what: str, limit: int = 10, **kwargs):
    shoal, memory, name = hybrid
    a, b = both(shoal, memory, lambda c: c.query_points(name, limit=limit, **kwargs).points)
    assert_scored(a, b, limit=limit, what=what)
    return a


@pytest.mark.parametrize("fusion", [models.Fusion.RRF, models.Fusion.DBSF])
def test_hybrid_fusion(hybrid, fusion):
    rng = np.random.default_rng(3)
    for _ in range(4):
        prefetch = [models.Prefetch(query=dense(rng, 8), using="dense", limit=20),
                    models.Prefetch(query=sparse(rng, 2, 8), using="bm", limit=20)]
        for kwargs in ({}, {"query_filter": EVEN}, {"offset": 3}, {"with_payload": True, "with_vectors": ["small"]},
                       {"score_threshold": 0.3}):
            got = _compare(hybrid, f"{fusion} {kwargs}", prefetch=prefetch, query=models.FusionQuery(fusion=fusion),
                           **kwargs)
            assert got, "a hybrid query found nothing"


def test_rescore_prefetched_candidates(hybrid):
    rng = np.random.default_rng(5)
    for _ in range(4):
        _compare(hybrid, "rescore with another vector",
                 prefetch=models.Prefetch(query=dense(rng, 4), using="small", limit=40),
                 query=dense(rng, 8), using="dense", with_payload=True)
        _compare(hybrid, "rescore with a sparse vector, filtered, paged",
                 prefetch=[models.Prefetch(query=dense(rng, 8), using="dense", limit=30, filter=LOW)],
                 query=sparse(rng, 2, 8), using="bm", query_filter=EVEN, limit=5, offset=2)


def test_nested_prefetches_and_filters(hybrid):
    rng = np.random.default_rng(7)
    for _ in range(3):
        inner = models.Prefetch(
            prefetch=[models.Prefetch(query=dense(rng, 8), using="dense", limit=25),
                      models.Prefetch(query=sparse(rng, 2, 8), using="bm", limit=25, filter=LOW)],
            query=models.FusionQuery(fusion=models.Fusion.RRF), limit=15)
        _compare(hybrid, "nested fusion then rescore", prefetch=inner, query=dense(rng, 4), using="small",
                 query_filter=EVEN, with_payload=["price"])
        _compare(hybrid, "a rescored prefetch fused with a plain one", prefetch=[
            models.Prefetch(prefetch=models.Prefetch(query=dense(rng, 4), using="small", limit=50),
                            query=dense(rng, 8), using="dense", limit=10),
            models.Prefetch(query=sparse(rng, 2, 8), using="bm", limit=10)],
            query=models.FusionQuery(fusion=models.Fusion.DBSF))


def test_formula(hybrid):
    rng = np.random.default_rng(9)
    formula = models.FormulaQuery(formula=models.SumExpression(sum=[
        "$score",
        models.MultExpression(mult=[0.01, "price"]),
        models.MultExpression(mult=[0.25, models.FieldCondition(key="tag", match=models.MatchValue(value="a"))]),
        models.MultExpression(mult=[0.5, "$score[1]"]),
    ]))
    for _ in range(3):
        prefetch = [models.Prefetch(query=dense(rng, 8), using="dense", limit=30),
                    models.Prefetch(query=dense(rng, 4), using="small", limit=30)]
        _compare(hybrid, "formula", prefetch=prefetch, query=formula, with_payload=True)
        _compare(hybrid, "formula, paged", prefetch=prefetch, query=formula, limit=5, offset=4)
    decay = models.FormulaQuery(formula=models.ExpDecayExpression(exp_decay=models.DecayParamsExpression(
        x="price", target=60.0, scale=30.0)), defaults={})
    _compare(hybrid, "decay", prefetch=models.Prefetch(query=dense(rng, 8), using="dense", limit=50), query=decay)


def test_mmr(hybrid):
    rng = np.random.default_rng(13)
    for diversity in (0.0, 0.5, 0.9):
        q = dense(rng, 8)
        mmr = models.NearestQuery(nearest=q, mmr=models.Mmr(diversity=diversity, candidates_limit=40))
        _compare(hybrid, f"mmr {diversity}", query=mmr, using="dense", with_payload=True)
        _compare(hybrid, f"mmr {diversity} over prefetches", query=mmr, using="dense",
                 prefetch=models.Prefetch(query=dense(rng, 4), using="small", limit=60), limit=8)
    plain = _compare(hybrid, "no diversity", query=models.NearestQuery(
        nearest=q, mmr=models.Mmr(diversity=0.0, candidates_limit=40)), using="dense")
    shoal, _, name = hybrid
    nearest = shoal.query_points(name, query=q, using="dense", limit=10).points
    assert [p.id for p in plain] == [p.id for p in nearest], "diversity 0 must be the plain nearest order"


def test_order_by_and_sample_over_prefetches(hybrid):
    rng = np.random.default_rng(17)
    prefetch = models.Prefetch(query=dense(rng, 8), using="dense", limit=30)
    shoal, memory, name = hybrid
    a, b = both(shoal, memory, lambda c: c.query_points(
        name, prefetch=prefetch, query=models.OrderByQuery(order_by="price"), limit=10, with_payload=True).points)
    assert [p.id for p in a] == [p.id for p in b]
    candidates = {p.id for p in shoal.query_points(name, query=prefetch.query, using="dense", limit=30).points}
    sampled = shoal.query_points(name, prefetch=prefetch, query=models.SampleQuery(sample=models.Sample.RANDOM),
                                 limit=10).points
    assert len(sampled) == 10 and {p.id for p in sampled} <= candidates


def test_query_batch_with_prefetches(hybrid):
    shoal, memory, name = hybrid
    rng = np.random.default_rng(19)
    requests = [
        models.QueryRequest(prefetch=[models.Prefetch(query=dense(rng, 8), using="dense", limit=20),
                                      models.Prefetch(query=sparse(rng, 2, 8), using="bm", limit=20)],
                            query=models.FusionQuery(fusion=models.Fusion.RRF), limit=7, with_payload=True),
        models.QueryRequest(prefetch=models.Prefetch(query=dense(rng, 4), using="small", limit=30),
                            query=dense(rng, 8), using="dense", limit=5),
    ]
    a, b = both(shoal, memory, lambda c: c.query_batch_points(name, requests=requests))
    for x, y in zip(a, b):
        assert_scored(x.points, y.points, limit=len(y.points), what="batch")


@pytest.mark.parametrize("body, status, error", [
    ({"query": {"fusion": "rrf"}}, 400, "Wrong input: Validation failed: cannot apply Fusion without prefetches"),
    ({"query": {"formula": "$score"}}, 400, "Wrong input: Validation failed: cannot apply Formula without prefetches"),
    ({"prefetch": {"query": [1, 0, 0, 0, 0, 0, 0, 0], "using": "dense"}}, 400,
     "Wrong input: Validation failed: cannot have prefetches without a query"),
    ({"prefetch": {"query": [1, 0, 0, 0], "using": "nope"}, "query": {"fusion": "rrf"}}, 400,
     "Wrong input: Not existing vector name error: nope"),
    ({"prefetch": {"prefetch": {"query": [1, 0, 0, 0], "using": "small"}}, "query": {"fusion": "rrf"}}, 400,
     "Wrong input: Validation failed: cannot have prefetches without a query"),
    ({"prefetch": {"query": [1, 0, 0, 0], "using": "small"}, "query": {"formula": {"div": {"left": 1, "right": 0}}}},
     400, "Wrong input: The expression 1/0 = inf produced a non-finite number"),
])
def test_refusals(hybrid, shoal_server, body, status, error):
    shoal, _, name = hybrid
    before = shoal.count(name).count
    code, answer = call("POST", f"{shoal_server.url}/collections/{name}/points/query", body)
    assert (code, answer["status"]["error"]) == (status, error)
    assert shoal.count(name).count == before


def test_depth_limit(hybrid, shoal_server):
    _, _, name = hybrid
    node: dict = {"query": [1, 0, 0, 0], "using": "small"}
    for _ in range(65):
        node = {"prefetch": node, "query": [1, 0, 0, 0], "using": "small"}
    code, answer = call("POST", f"{shoal_server.url}/collections/{name}/points/query", {**node, "limit": 1})
    assert (code, answer["status"]["error"]) == (
        400, "Wrong input: Validation failed: prefetches depth 65 exceeds max depth 64")


def test_query_groups(hybrid):
    shoal, memory, name = hybrid
    rng = np.random.default_rng(23)
    # Qdrant multiplies each prefetch's limit by the groups asked for, the local mode
    # raises it to every point: with limits of N both see every candidate.
    prefetch = [models.Prefetch(query=dense(rng, 8), using="dense", limit=N),
                models.Prefetch(query=sparse(rng, 2, 8), using="bm", limit=N)]
    cases = [
        {"prefetch": prefetch, "query": models.FusionQuery(fusion=models.Fusion.RRF)},
        {"query": dense(rng, 8), "using": "dense", "with_payload": ["i"]},
        {"query": sparse(rng, 2, 8), "using": "bm", "query_filter": EVEN},
    ]
    for kwargs in cases:
        a, b = both(shoal, memory, lambda c: c.query_points_groups(
            name, group_by="tag", group_size=3, limit=2, **kwargs).groups)
        assert [g.id for g in a] == [g.id for g in b]
        for x, y in zip(a, b):
            assert_scored(x.hits, y.hits, limit=3, what=f"group {x.id} of {kwargs}")
