"""Qdrant's "Getting Started" tutorial, call for call, on Shoal and on :memory:.

The tutorial (shared/seeds/getting-started-tutorial.md) is run unchanged through
qdrant-client 1.15.1, with Faker and numpy seeded so both sides get the same data, and
every answer is compared with the oracle. Where the tutorial's code no longer runs on
1.15.1 (``recommend(query_vector=...)``), the test checks that both sides reject it the
same way (inside the client) and runs the call as the client accepts it.
"""

from __future__ import annotations

import numpy as np
import pytest
from faker import Faker
from qdrant_client.http import models
from qdrant_client.http.models import CollectionStatus

from .compare import assert_records, assert_scored, both

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _songs(seed: int):
    """The tutorial's data: 1,000 songs of 100 dims in [-1, 1], Faker payloads."""
    np.random.seed(seed)
    data = np.random.uniform(low=-1.0, high=1.0, size=(1_000, 100))
    fake_something = Faker()
    fake_something.seed_instance(seed)
    payload = []
    for _ in range(len(data)):
        payload.append(
            {
                "artist": fake_something.name(),
                "song": " ".join(fake_something.words()),
                "url_song": fake_something.url(),
                "year": fake_something.year(),
                "country": fake_something.country(),
            }
        )
    return data, payload


def create_song():
    return np.random.uniform(low=-1.0, high=1.0, size=100).tolist()


def test_getting_started_tutorial(shoal, memory, collection_names, shard_number, against_memory):
    my_collection = collection_names("first_collection")
    data, payload = _songs(seed=7)
    index = list(range(len(data)))

    # recreate_collection answers True on both sides.
    created = both(shoal, memory, lambda c: c.recreate_collection(
        collection_name=my_collection,
        vectors_config=models.VectorParams(size=100, distance=models.Distance.COSINE),
        shard_number=shard_number,
    ))
    assert created == (True, True)

    # get_collection: green, empty, and the config the tutorial shows.
    info, mem_info = both(shoal, memory, lambda c: c.get_collection(collection_name=my_collection))
    assert info.status == CollectionStatus.GREEN
    assert info.vectors_count in (0, None)  # deprecated field: Qdrant 1.15 may omit it
    assert info.points_count == 0 == mem_info.points_count
    assert info.config.params.vectors == models.VectorParams(size=100, distance=models.Distance.COSINE)
    if not against_memory:
        assert info.config.params.shard_number == shard_number
    assert info.payload_schema == {}

    # upsert a Batch, then retrieve id 100 with its (normalised) vector.
    results = both(shoal, memory, lambda c: c.upsert(
        collection_name=my_collection, points=models.Batch(ids=index, vectors=data.tolist())))
    assert [r.status for r in results] == [models.UpdateStatus.COMPLETED] * 2
    a, b = both(shoal, memory, lambda c: c.retrieve(
        collection_name=my_collection, ids=[100], with_vectors=True))
    assert_records(a, b, what="retrieve [100] with vectors")
    assert a[0].payload == {}
    assert np.isclose(np.linalg.norm(a[0].vector), 1.0, atol=1e-5)

    # one PointStruct, count, delete it, count again.
    np.random.seed(8)
    song = create_song()
    both(shoal, memory, lambda c: c.upsert(
        collection_name=my_collection, points=[models.PointStruct(id=1000, vector=song)]))
    counts = both(shoal, memory, lambda c: c.count(collection_name=my_collection, exact=True))
    assert [x.count for x in counts] == [1001, 1001]
    both(shoal, memory, lambda c: c.delete(
        collection_name=my_collection, points_selector=models.PointIdsList(points=[1000])))
    counts = both(shoal, memory, lambda c: c.count(collection_name=my_collection, exact=True))
    assert [x.count for x in counts] == [1000, 1000]

    # payloads
    _upsert_with_payload(shoal, memory, my_collection, index, data, payload)
    a, b = both(shoal, memory, lambda c: c.retrieve(
        collection_name=my_collection, ids=[10, 50, 100, 500], with_vectors=False))
    assert_records(a, b, what="retrieve 10,50,100,500")
    assert {r.id: r.payload for r in a} == {i: payload[i] for i in (10, 50, 100, 500)}
    assert all(r.vector is None for r in a)

    # search
    np.random.seed(9)
    living_la_vida_loca = create_song()
    a, b = both(shoal, memory, lambda c: c.search(
        collection_name=my_collection, query_vector=living_la_vida_loca, limit=3))
    assert_scored(a, b, limit=3, what="search limit=3")
    assert len(a) == 3

    aussie = _most_common_country(payload)
    aussie_songs = models.Filter(
        must=[models.FieldCondition(key="country", match=models.MatchValue(value=aussie))]
    )
    a, b = both(shoal, memory, lambda c: c.search(
        collection_name=my_collection, query_vector=living_la_vida_loca,
        query_filter=aussie_songs, limit=2))
    assert_scored(a, b, limit=2, what=f"search filtered country={aussie!r}")
    assert all(p.payload["country"] == aussie for p in a) and len(a) == 2

    a, b = both(shoal, memory, lambda c: c.search(
        collection_name=my_collection, query_vector=living_la_vida_loca,
        query_filter=aussie_songs,
        with_payload=models.PayloadSelectorExclude(exclude=["year"]), limit=5))
    assert_scored(a, b, limit=5, what="search with PayloadSelectorExclude(year)")
    assert all("year" not in p.payload and "artist" in p.payload for p in a)

    # clear_payload: every payload is gone; then the tutorial uploads payloads again.
    both(shoal, memory, lambda c: c.clear_payload(
        collection_name=my_collection, points_selector=models.PointIdsList(points=index)))
    a, b = both(shoal, memory, lambda c: c.retrieve(collection_name=my_collection, ids=[0, 17, 999]))
    assert_records(a, b, what="retrieve after clear_payload")
    assert all(r.payload == {} for r in a)
    _upsert_with_payload(shoal, memory, my_collection, index, data, payload)

    # recommendations
    a, b = both(shoal, memory, lambda c: c.recommend(
        collection_name=my_collection, positive=[17], limit=5))
    assert_scored(a, b, limit=5, what="recommend positive=[17]")
    assert 17 not in [p.id for p in a]

    # The tutorial passes query_vector=, which 1.15.1 refuses before sending anything.
    for client in (shoal, memory):
        with pytest.raises(AssertionError, match="Unknown arguments: \\['query_vector'\\]"):
            client.recommend(collection_name=my_collection, query_vector=living_la_vida_loca,
                             positive=[17], negative=[120], limit=5)
    a, b = both(shoal, memory, lambda c: c.recommend(
        collection_name=my_collection, positive=[17], negative=[120], limit=5))
    assert_scored(a, b, limit=5, what="recommend positive=[17] negative=[120]")

    a, b = both(shoal, memory, lambda c: c.recommend(
        collection_name=my_collection, positive=[17], negative=[120, 180],
        score_threshold=0.22, limit=5))
    assert_scored(a, b, limit=5, what="recommend score_threshold=0.22")
    assert all(p.score > 0.22 for p in a)

    dominican = _least_common_country(payload)
    a, b = both(shoal, memory, lambda c: c.recommend(
        collection_name=my_collection,
        query_filter=models.Filter(
            must=[models.FieldCondition(key="country", match=models.MatchValue(value=dominican))]
        ),
        positive=[17], negative=[120], limit=5))
    assert_scored(a, b, limit=5, what=f"recommend filtered country={dominican!r}")
    assert a and all(p.payload["country"] == dominican for p in a)


def _upsert_with_payload(shoal, memory, name, index, data, payload):
    results = both(shoal, memory, lambda c: c.upsert(
        collection_name=name,
        points=models.Batch(ids=index, vectors=data.tolist(), payloads=payload)))
    assert [r.status for r in results] == [models.UpdateStatus.COMPLETED] * 2


def _most_common_country(payload) -> str:
    countries = [p["country"] for p in payload]
    return max(sorted(set(countries)), key=countries.count)


def _least_common_country(payload) -> str:
    """A country with only a few songs: the filtered recommend then has < limit hits."""
    countries = [p["country"] for p in payload]
    return min(sorted(set(countries)), key=countries.count)
