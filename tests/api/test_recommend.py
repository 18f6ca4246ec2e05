"""Recommend, discover and context search through 1.15.1: Shoal vs :memory:.

Covers every strategy with ids and raw vectors, negative-only examples, ``using``,
``lookup_from`` another collection, the batch forms, and the same queries through
``query_points`` (the endpoint newer clients use for everything).
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from qdrant_client import models

from .compare import assert_scored, both, both_raise
from .data import create_both, make_points, query_vectors, upsert_both, vectors

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")

STRATEGIES = ["average_vector", "best_score", "sum_scores"]
CITY = models.Filter(must=[models.FieldCondition(key="city", match=models.MatchAny(any=["London", "Paris"]))])


@pytest.fixture
def world(shoal, memory, collection_names, shard_number):
    """A collection with two named vectors, and a second one to look vectors up from."""
    name, other = collection_names("rec"), collection_names("lookup")
    config = {"image": models.VectorParams(size=8, distance=models.Distance.COSINE),
              "text": models.VectorParams(size=4, distance=models.Distance.EUCLID)}
    create_both(shoal, memory, name, config, shard_number)
    upsert_both(shoal, memory, name, make_points(300, 0, seed=51, named={"image": 8, "text": 4}))
    create_both(shoal, memory, other,
                {"user": models.VectorParams(size=8, distance=models.Distance.COSINE)}, shard_number)
    upsert_both(shoal, memory, other, [models.PointStruct(id=i, vector={"user": v})
                                       for i, v in enumerate(vectors(20, 8, seed=52).tolist())])
    return SimpleNamespace(shoal=shoal, memory=memory, name=name, other=other)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_recommend_strategies(world, strategy):
    s, m, name = world.shoal, world.memory, world.name
    raw = query_vectors(2, 8, seed=53)
    cases = {
        "ids": dict(positive=[1, 2, 3], negative=[4]),
        "positive only": dict(positive=[10]),
        "raw vectors": dict(positive=[raw[0], 5], negative=[raw[1]]),
        "filtered": dict(positive=[7, 8], negative=[9], query_filter=CITY),
        "threshold": dict(positive=[11], negative=[12], score_threshold=0.1),
        "offset": dict(positive=[13, 14], offset=5, with_vectors=True),
    }
    if strategy != "average_vector":
        cases["negative only"] = dict(negative=[15, 16])
    for label, kwargs in cases.items():
        a, b = both(s, m, lambda c: c.recommend(name, using="image", strategy=strategy,
                                                limit=8, **kwargs))
        assert_scored(a, b, limit=8, what=f"recommend {strategy} {label}")
        used_ids = {x for x in kwargs.get("positive", []) + kwargs.get("negative", [])
                    if isinstance(x, int)}
        assert not used_ids & {p.id for p in a}, "example ids must not be recommended"
        if label == "threshold" and strategy != "best_score":
            assert all(p.score > 0.1 for p in a)

    a, b = both(s, m, lambda c: c.query_points(
        name, query=models.RecommendQuery(recommend=models.RecommendInput(
            positive=[1, raw[0]], negative=[4], strategy=strategy)),
        using="image", limit=8))
    assert_scored(a.points, b.points, limit=8, what=f"query_points RecommendQuery {strategy}")


def test_recommend_using_text_and_lookup_from(world):
    s, m, name, other = world.shoal, world.memory, world.name, world.other
    a, b = both(s, m, lambda c: c.recommend(name, positive=[20, 21], negative=[22], using="text",
                                            limit=10))
    assert_scored(a, b, limit=10, what="recommend using=text (Euclid)")
    for strategy in STRATEGIES:
        a, b = both(s, m, lambda c: c.recommend(
            name, positive=[0, 1], negative=[2], using="image", strategy=strategy, limit=10,
            lookup_from=models.LookupLocation(collection=other, vector="user")))
        assert_scored(a, b, limit=10, what=f"recommend lookup_from {strategy}")
        # Ids come from the other collection, so they are NOT excluded here.
    a, b = both(s, m, lambda c: c.query_points(
        name, query=models.RecommendQuery(recommend=models.RecommendInput(positive=[3], negative=[4])),
        using="image", limit=10, lookup_from=models.LookupLocation(collection=other, vector="user")))
    assert_scored(a.points, b.points, limit=10, what="query_points lookup_from")


def test_recommend_batch(world):
    s, m, name = world.shoal, world.memory, world.name
    requests = [
        models.RecommendRequest(positive=[1, 2], negative=[3], using="image", limit=5),
        models.RecommendRequest(positive=[4], using="text", limit=7, filter=CITY),
        models.RecommendRequest(negative=[5, 6], using="image", strategy="best_score", limit=3),
        models.RecommendRequest(positive=[7], negative=[8], using="image", strategy="sum_scores",
                                limit=4, with_payload=False),
    ]
    a, b = both(s, m, lambda c: c.recommend_batch(name, requests=requests))
    assert len(a) == len(b) == len(requests)
    for i, (x, y) in enumerate(zip(a, b)):
        assert_scored(x, y, limit=requests[i].limit, what=f"recommend_batch[{i}]")


def test_discover_and_context(world):
    s, m, name = world.shoal, world.memory, world.name
    target = query_vectors(1, 8, seed=54)[0]
    pairs = [models.ContextExamplePair(positive=1, negative=2),
             models.ContextExamplePair(positive=3, negative=query_vectors(1, 8, seed=55)[0])]
    a, b = both(s, m, lambda c: c.discover(name, target=target, context=pairs, using="image", limit=10))
    assert_scored(a, b, limit=10, what="discover target+context")
    a, b = both(s, m, lambda c: c.discover(name, target=17, context=pairs, using="image", limit=10,
                                           query_filter=CITY))
    assert_scored(a, b, limit=10, what="discover id target, filtered")
    a, b = both(s, m, lambda c: c.discover(name, context=pairs, using="image", limit=10))
    assert_scored(a, b, limit=10, what="context search (no target)")
    requests = [
        models.DiscoverRequest(target=target, context=pairs, using="image", limit=6),
        models.DiscoverRequest(context=pairs[:1], using="image", limit=4),
        models.DiscoverRequest(target=5, context=[models.ContextExamplePair(positive=6, negative=7)],
                               using="text", limit=5),
    ]
    a, b = both(s, m, lambda c: c.discover_batch(name, requests=requests))
    assert len(a) == len(b) == len(requests)
    for i, (x, y) in enumerate(zip(a, b)):
        assert_scored(x, y, limit=requests[i].limit, what=f"discover_batch[{i}]")
    a, b = both(s, m, lambda c: c.query_points(
        name, query=models.DiscoverQuery(discover=models.DiscoverInput(
            target=target, context=[models.ContextPair(positive=1, negative=2)])),
        using="image", limit=10))
    assert_scored(a.points, b.points, limit=10, what="query_points DiscoverQuery")
    a, b = both(s, m, lambda c: c.query_points(
        name, query=models.ContextQuery(context=[models.ContextPair(positive=1, negative=2)]),
        using="image", limit=10))
    assert_scored(a.points, b.points, limit=10, what="query_points ContextQuery")


def test_recommend_rejections(world):
    s, m, name = world.shoal, world.memory, world.name
    both_raise(s, m, lambda c: c.recommend(name, positive=[123456], using="image"),
               "unknown example id")
    both_raise(s, m, lambda c: c.recommend(name, positive=[1], using="nope"), "unknown vector name")
    both_raise(s, m, lambda c: c.recommend(name, negative=[1], using="image",
                                           strategy="average_vector"),
               "average_vector without positives")
