"""The "Explore the data" page, snippet by snippet, through the NEWEST qdrant-client.

Every python example of shared/seeds/explore-api.md runs against Shoal and against the
newest client's own ``:memory:`` mode, on 1 and on 3 shards: recommend (each strategy,
negative-only, ``using``, ``lookup_from``), batch queries, discovery, context search and
the distance matrix. Matrix answers are random samples, so they are checked against the
truth computed here instead of against the oracle's sample.

Run by scripts/test with the newest client first on PYTHONPATH; skipped under 1.15.1.
"""

from __future__ import annotations

import uuid
from types import SimpleNamespace

import numpy as np
import pytest
from qdrant_client import models

from api.compare import assert_scored, both
from api.data import create_both, make_points, upsert_both
from latest.marks import LATEST_ONLY

pytestmark = LATEST_ONLY

N = 1000
DIM = 4
LONDON = models.Filter(must=[models.FieldCondition(key="city", match=models.MatchValue(value="London"))])
RED = models.Filter(must=[models.FieldCondition(key="color", match=models.MatchValue(value="red"))])


@pytest.fixture(scope="module", params=[1, 3], ids=["shards1", "shards3"])
def explore(request, shoal_session):
    """``plain``: unnamed 4-dim vectors; ``multi``: named "image" and "text";
    ``external``: a collection to look vectors up from. Built once per shard count."""
    from qdrant_client import QdrantClient

    shards = request.param
    shoal, memory = shoal_session, QdrantClient(":memory:")
    tag = uuid.uuid4().hex[:8]
    plain, multi, external = f"explore_{tag}", f"image_{tag}", f"external_{tag}"
    cosine = models.VectorParams(size=DIM, distance=models.Distance.COSINE)
    create_both(shoal, memory, plain, cosine, shards)
    create_both(shoal, memory, multi, {"image": cosine, "text": cosine}, shards)
    create_both(shoal, memory, external, {"ext": cosine}, shards)
    upsert_both(shoal, memory, plain, make_points(N, DIM, seed=71))
    upsert_both(shoal, memory, multi, make_points(N, 0, seed=72, named={"image": DIM, "text": DIM}))
    upsert_both(shoal, memory, external, make_points(N, 0, seed=73, named={"ext": DIM}))
    yield SimpleNamespace(shoal=shoal, memory=memory, plain=plain, multi=multi, external=external)
    for name in (plain, multi, external):
        shoal.delete_collection(name)
    memory.close()


@pytest.mark.parametrize("strategy", ["average_vector", "best_score", "sum_scores"])
def test_recommend_query(explore, strategy):
    s, m = explore.shoal, explore.memory
    a, b = both(s, m, lambda client: client.query_points(
        collection_name=explore.plain,
        query=models.RecommendQuery(
            recommend=models.RecommendInput(
                positive=[100, 231],
                negative=[718, [0.2, 0.3, 0.4, 0.5]],
                strategy=strategy,
            )
        ),
        query_filter=LONDON,
        limit=3,
    ))
    assert_scored(a.points, b.points, limit=3, what=f"RecommendQuery {strategy}")
    assert len(a.points) == 3 and all(p.payload["city"] == "London" for p in a.points)


@pytest.mark.parametrize("strategy", ["best_score", "sum_scores"])
def test_recommend_negative_only(explore, strategy):
    s, m = explore.shoal, explore.memory
    a, b = both(s, m, lambda client: client.query_points(
        collection_name=explore.plain,
        query=models.RecommendQuery(recommend=models.RecommendInput(
            negative=[718, 5], strategy=strategy)),
        query_filter=LONDON,
        limit=10,
    ))
    assert_scored(a.points, b.points, limit=10, what=f"negative-only {strategy}")


def test_recommend_using(explore):
    a, b = both(explore.shoal, explore.memory, lambda client: client.query_points(
        collection_name=explore.multi,
        query=models.RecommendQuery(recommend=models.RecommendInput(positive=[100, 231], negative=[718])),
        using="image",
        limit=10,
    ))
    assert_scored(a.points, b.points, limit=10, what="RecommendQuery using=image")


def test_recommend_lookup_from(explore):
    a, b = both(explore.shoal, explore.memory, lambda client: client.query_points(
        collection_name=explore.multi,
        query=models.RecommendQuery(recommend=models.RecommendInput(positive=[100, 231], negative=[718])),
        using="image",
        limit=10,
        lookup_from=models.LookupLocation(collection=explore.external, vector="ext"),
    ))
    assert_scored(a.points, b.points, limit=10, what="RecommendQuery lookup_from")


def test_query_batch_recommend(explore):
    recommend_queries = [
        models.QueryRequest(
            query=models.RecommendQuery(recommend=models.RecommendInput(positive=[100, 231], negative=[718])),
            filter=LONDON,
            limit=3,
        ),
        models.QueryRequest(
            query=models.RecommendQuery(recommend=models.RecommendInput(positive=[200, 67], negative=[300])),
            filter=LONDON,
            limit=3,
        ),
    ]
    a, b = both(explore.shoal, explore.memory, lambda client: client.query_batch_points(
        collection_name=explore.plain, requests=recommend_queries))
    assert len(a) == len(b) == 2
    for i, (x, y) in enumerate(zip(a, b)):
        assert_scored(x.points, y.points, limit=3, what=f"query_batch_points[{i}]")


def test_discover_query(explore):
    discover_queries = [
        models.QueryRequest(
            query=models.DiscoverQuery(
                discover=models.DiscoverInput(
                    target=[0.2, 0.1, 0.9, 0.7],
                    context=[
                        models.ContextPair(positive=100, negative=718),
                        models.ContextPair(positive=200, negative=300),
                    ],
                )
            ),
            limit=10,
        ),
    ]
    a, b = both(explore.shoal, explore.memory, lambda client: client.query_batch_points(
        collection_name=explore.plain, requests=discover_queries))
    assert_scored(a[0].points, b[0].points, limit=10, what="DiscoverQuery")


def test_context_query(explore):
    context_queries = [
        models.QueryRequest(
            query=models.ContextQuery(
                context=[
                    models.ContextPair(positive=100, negative=718),
                    models.ContextPair(positive=200, negative=300),
                ],
            ),
            limit=10,
        ),
    ]
    a, b = both(explore.shoal, explore.memory, lambda client: client.query_batch_points(
        collection_name=explore.plain, requests=context_queries))
    assert_scored(a[0].points, b[0].points, limit=10, what="ContextQuery")


def _truth(client, name: str) -> dict:
    """Unit vectors by id, to score any pair exactly (Cosine = dot of unit vectors)."""
    records, _ = client.scroll(name, limit=N + 1, with_vectors=True)
    out = {}
    for r in records:
        v = np.asarray(r.vector, dtype=np.float64)
        out[r.id] = v / np.linalg.norm(v)
    return out


def check_matrix(rows: dict, sampled: list, vecs: dict, allowed: set, sample: int, limit: int,
                 side: str) -> None:
    """A distance-matrix answer is right: sample size, filter, true scores, true neighbours."""
    assert len(sampled) == len(set(sampled)) == min(sample, len(allowed)), (side, sampled)
    assert set(sampled) <= allowed, f"{side}: sampled points outside the filter"
    position = {pid: k for k, pid in enumerate(sampled)}
    unit = np.stack([vecs[pid] for pid in sampled])
    scores = unit @ unit.T
    np.fill_diagonal(scores, -np.inf)
    expected = min(limit, len(sampled) - 1)
    for a in sampled:
        pairs = rows.get(a, [])
        assert len(pairs) == expected, (side, a, pairs)
        row = scores[position[a]]
        true = np.sort(row)[::-1][:expected]
        got = []
        for b, score in pairs:
            assert b in position and b != a, f"{side}: row {a} names {b}, not another sampled point"
            assert abs(score - row[position[b]]) < 1e-4, (side, a, b, score, row[position[b]])
            got.append(score)
        assert got == sorted(got, reverse=True), f"{side}: row {a} not ordered by score"
        assert np.allclose(got, true, atol=1e-4), f"{side}: row {a} misses true neighbours"


RED_LONDON = models.Filter(must=RED.must + LONDON.must)  # ~67 points: fewer than the sample


@pytest.mark.parametrize("sample,limit,flt", [(10, 2, RED), (60, 5, RED), (100, 3, RED_LONDON)],
                         ids=["10x2", "60x5", "sample-above-matches"])
def test_search_matrix_pairs(explore, sample, limit, flt):
    s, m, name = explore.shoal, explore.memory, explore.plain
    vecs = _truth(m, name)
    allowed = {r.id for r in m.scroll(name, scroll_filter=flt, limit=N + 1)[0]}
    assert len(allowed) > 10
    for side, client in (("Shoal", s), (":memory:", m)):
        result = client.search_matrix_pairs(collection_name=name, sample=sample, limit=limit,
                                            query_filter=flt)
        rows: dict = {}
        order = []
        for pair in result.pairs:
            if pair.a not in rows:
                order.append(pair.a)
            rows.setdefault(pair.a, []).append((pair.b, pair.score))
        check_matrix(rows, order, vecs, allowed, sample, limit, side)


@pytest.mark.parametrize("sample,limit", [(10, 2), (60, 5)])
def test_search_matrix_offsets(explore, sample, limit):
    s, m, name = explore.shoal, explore.memory, explore.plain
    vecs = _truth(m, name)
    allowed = {r.id for r in m.scroll(name, scroll_filter=RED, limit=N + 1)[0]}
    for side, client in (("Shoal", s), (":memory:", m)):
        result = client.search_matrix_offsets(collection_name=name, sample=sample, limit=limit,
                                              query_filter=RED)
        assert len(result.offsets_row) == len(result.offsets_col) == len(result.scores), side
        rows: dict = {}
        for r, c, score in zip(result.offsets_row, result.offsets_col, result.scores):
            rows.setdefault(result.ids[r], []).append((result.ids[c], score))
        assert list(result.offsets_row) == sorted(result.offsets_row), f"{side}: rows out of order"
        check_matrix(rows, list(result.ids), vecs, allowed, sample, limit, side)


def test_search_matrix_unfiltered_and_named(explore):
    s, m, name = explore.shoal, explore.memory, explore.multi
    for side, client in (("Shoal", s), (":memory:", m)):
        result = client.search_matrix_pairs(collection_name=name, sample=20, limit=3, using="image")
        assert len(result.pairs) == 20 * 3, side
        records = client.retrieve(name, ids=list({p.a for p in result.pairs} | {p.b for p in result.pairs}),
                                  with_vectors=["image"])
        vecs = {r.id: np.asarray(r.vector["image"]) / np.linalg.norm(r.vector["image"]) for r in records}
        for p in result.pairs:
            assert abs(p.score - float(vecs[p.a] @ vecs[p.b])) < 1e-4, (side, p)
