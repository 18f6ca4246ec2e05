"""Sparse vectors through the official client (1.15.1), against ``:memory:``, on 1
and 3 shards: the collection config, upserts mixed with dense vectors (list and
batch), retrieve, scroll, count with has_vector, sparse search (legacy and
``points/query``, with filters, thresholds and IDF), delete_vectors, overwrites,
restarts and snapshots, and Qdrant's answers to bad sparse vectors.

The oracle's IDF counts points where Qdrant 1.15 counts indexed vectors
(non-empty ones): the two agree here because every point holds the idf vector.
"""

from __future__ import annotations

import numpy as np
import pytest
from qdrant_client import models

from . import rawhttp
from .compare import assert_records, assert_same, assert_scored, both
from .data import payload_for
from . import test_persistence

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")

N = 160
DIM = 4
VOCAB = 40
TEXT_FILTER = models.Filter(must=[models.FieldCondition(key="city", match=models.MatchValue(value="London"))])
HAS_TEXT = models.Filter(must=[models.HasVectorCondition(has_vector="text")])


server = test_persistence.server  # the fixture: a real server, left up after a restart


def sparse(rng: np.random.Generator, low: int = 1, high: int = 7) -> models.SparseVector:
    """Distinct indices in a random (unsorted) order; Qdrant sorts them."""
    k = int(rng.integers(low, high))
    indices = rng.choice(VOCAB, size=k, replace=False)
    return models.SparseVector(indices=[int(i) for i in indices],
                               values=[round(float(v), 3) for v in rng.uniform(0.1, 2.0, size=k)])


def make_points(n: int, seed: int) -> list[models.PointStruct]:
    """Every point has "dense" and "idf"; "text" is missing on every 7th."""
    rng = np.random.default_rng(seed)
    points = []
    for i in range(n):
        vector = {"dense": [round(float(x), 3) for x in rng.uniform(-1, 1, size=DIM)], "idf": sparse(rng)}
        if i % 7 != 3:
            vector["text"] = sparse(rng)
        points.append(models.PointStruct(id=i, vector=vector, payload=payload_for(i, rng)))
    return points


def create(shoal, memory, name: str, shard_number: int) -> None:
    for client in (shoal, memory):
        assert client.create_collection(
            name, vectors_config={"dense": models.VectorParams(size=DIM, distance=models.Distance.DOT)},
            sparse_vectors_config={"text": models.SparseVectorParams(),
                                   "idf": models.SparseVectorParams(modifier=models.Modifier.IDF)},
            shard_number=shard_number) is True


def load(shoal, memory, name: str, seed: int = 3) -> list[models.PointStruct]:
    points = make_points(N, seed)
    both(shoal, memory, lambda c: c.upsert(name, points=points[:120], wait=True))
    tail = points[120:]  # the batch form: every one of these holds all three vectors
    for p in tail:
        p.vector.setdefault("text", models.SparseVector(indices=[1], values=[1.0]))
    batch = models.Batch(ids=[p.id for p in tail], payloads=[p.payload for p in tail],
                         vectors={name_: [p.vector[name_] for p in tail] for name_ in ("dense", "text", "idf")})
    both(shoal, memory, lambda c: c.upsert(name, points=batch, wait=True))
    return points


def queries(seed: int = 11, k: int = 4) -> list[models.SparseVector]:
    rng = np.random.default_rng(seed)
    return [sparse(rng, 2, 9) for _ in range(k)]


def check_searches(shoal, memory, name: str, shoal_name: str | None = None) -> None:
    """Sparse searches agree; ``shoal_name``: Shoal's copy of the oracle's ``name``."""
    names = {id(shoal): shoal_name or name, id(memory): name}

    def each(call):
        return call(shoal, names[id(shoal)]), call(memory, names[id(memory)])

    for q in queries():
        for using in ("text", "idf"):
            for kwargs in ({}, {"query_filter": TEXT_FILTER}, {"score_threshold": 1.0}, {"offset": 3, "limit": 5}):
                kwargs = {"limit": 10, **kwargs}
                a, b = each(lambda c, n: c.query_points(
                    n, query=q, using=using, with_payload=True, **kwargs).points)
                assert_scored(a, b, limit=kwargs["limit"], what=f"query {using} {kwargs}")
        a, b = each(lambda c, n: c.search(
            n, query_vector=models.NamedSparseVector(name="text", vector=q), limit=7, with_vectors=True))
        assert_scored(a, b, limit=7, what="legacy search NamedSparseVector")
    for using in ("text", "idf"):  # legacy recommend and discover by sparse examples (points that keep "text")
        for strategy in models.RecommendStrategy:
            a, b = each(lambda c, n: c.recommend(n, positive=[41, 43], negative=[47], using=using, strategy=strategy,
                                                 limit=8, with_payload=True))
            assert_scored(a, b, limit=8, what=f"legacy recommend {using} {strategy}")
        a, b = each(lambda c, n: c.discover(n, target=51, context=[models.ContextExamplePair(positive=53, negative=55)],
                                            using=using, limit=8))
        assert_scored(a, b, limit=8, what=f"legacy discover {using}")


def test_config_writes_reads_and_search(shoal, memory, collection_names, shard_number):
    name = collection_names("sparse")
    create(shoal, memory, name, shard_number)
    a, b = both(shoal, memory, lambda c: c.get_collection(name).config.params.sparse_vectors)
    assert_same(a, b, what="sparse_vectors config")
    load(shoal, memory, name)

    a, b = both(shoal, memory, lambda c: c.retrieve(name, ids=[0, 3, 5, 150, 999], with_vectors=True))
    assert_records(a, b, what="retrieve with every vector")
    a, b = both(shoal, memory, lambda c: c.scroll(name, limit=1000, with_vectors=["text"])[0])
    assert_records(a, b, ordered=True, what="scroll with the text vector")
    a, b = both(shoal, memory, lambda c: c.count(name, count_filter=HAS_TEXT).count)
    assert a == b == N - len(range(3, 120, 7))
    check_searches(shoal, memory, name)

    # delete_vectors, and an upsert that replaces a point without its sparse vector
    both(shoal, memory, lambda c: c.delete_vectors(name, vectors=["text"], points=list(range(0, 40, 2)), wait=True))
    both(shoal, memory, lambda c: c.upsert(name, points=[models.PointStruct(
        id=1, vector={"dense": [0.0] * DIM, "idf": models.SparseVector(indices=[5], values=[1.0])})], wait=True))
    both(shoal, memory, lambda c: c.update_vectors(name, points=[models.PointVectors(
        id=3, vector={"text": models.SparseVector(indices=[7, 2], values=[0.5, 1.5])})], wait=True))
    a, b = both(shoal, memory, lambda c: c.count(name, count_filter=HAS_TEXT).count)
    assert a == b
    a, b = both(shoal, memory, lambda c: c.retrieve(name, ids=list(range(6)), with_vectors=True))
    assert_records(a, b, what="retrieve after delete_vectors")
    check_searches(shoal, memory, name)


def test_bad_sparse_vectors_get_qdrant_answers(shoal, memory, collection_names, base_url):
    name = collection_names("sparse_bad")
    create(shoal, memory, name, 1)
    load(shoal, memory, name)
    before = shoal.scroll(name, limit=1000, with_vectors=True)[0]
    url = f"{base_url}/collections/{name}/points?wait=true"

    def upsert(vector):
        return rawhttp.call("PUT", url, {"points": [
            {"id": 500, "vector": {"dense": [1, 2, 3, 4]}},
            {"id": 7, "vector": {"dense": [1, 2, 3, 4], "text": vector}}]})

    status, body = upsert({"indices": [3, 3], "values": [1, 2]})
    assert status == 422, body
    assert rawhttp.error_text(body) == ("Validation error in JSON body: [points[1].vector.?.indices: "
                                        "Validation error: must be unique [{}]]")
    status, body = upsert({"indices": [1, 2], "values": [1]})
    assert status == 422, body
    assert rawhttp.error_text(body) == ("Validation error in JSON body: [points[1].vector.?.values: "
                                        "Validation error: must be the same length as indices [{}]]")
    status, body = upsert([1.0, 2.0])
    assert status == 400, body
    assert rawhttp.error_text(body) == "Wrong input: Conversion between sparse and regular vectors failed"
    status, body = rawhttp.call("PUT", url, {"points": [{"id": 7, "vector": {"nope": {"indices": [1], "values": [1]}}}]})
    assert (status, rawhttp.error_text(body)) == (400, "Wrong input: Not existing vector name error: nope")
    status, body = rawhttp.call("POST", f"{base_url}/collections/{name}/points/query",
                                {"query": {"indices": [1, 1], "values": [1, 2]}, "using": "text"})
    assert status == 422, body
    assert shoal.scroll(name, limit=1000, with_vectors=True)[0] == before  # nothing changed
    # unsorted is fine, and comes back sorted
    status, body = upsert({"indices": [9, 2, 5], "values": [1, 2, 3]})
    assert status == 200, body
    (rec,) = shoal.retrieve(name, ids=[7], with_vectors=["text"])
    assert rec.vector["text"] == models.SparseVector(indices=[2, 5, 9], values=[2.0, 3.0, 1.0])

    # names must not clash with dense ones
    status, body = rawhttp.call("PUT", f"{base_url}/collections/{collection_names('clash')}", {
        "vectors": {"a": {"size": 2, "distance": "Dot"}}, "sparse_vectors": {"a": {}}})
    assert (status, rawhttp.error_text(body)) == (
        400, "Wrong input: Dense and sparse vector names must be unique - duplicate found with 'a'")


@pytest.mark.parametrize("graceful", [True, False], ids=["graceful", "killed"])
def test_restart_and_snapshot_keep_sparse_vectors(server, make_client, memory, collection_names, graceful):
    shoal = make_client()
    name = collection_names("sparse_durable")
    create(shoal, memory, name, 3)
    load(shoal, memory, name)
    both(shoal, memory, lambda c: c.delete_vectors(name, vectors=["text"], points=[0, 2, 4], wait=True))
    server.restart(graceful=graceful)
    shoal = make_client()
    a, b = both(shoal, memory, lambda c: c.scroll(name, limit=1000, with_vectors=True)[0])
    assert_records(a, b, ordered=True, what="scroll after a restart")
    check_searches(shoal, memory, name)
    if not graceful:
        return
    described = shoal.create_snapshot(name, wait=True)
    copy = collection_names("sparse_copy")
    location = (server.storage / "snapshots").resolve()
    found = list(location.rglob(described.name))
    assert len(found) == 1
    assert shoal.recover_snapshot(copy, location=found[0].as_uri(), wait=True) is True
    a = shoal.scroll(copy, limit=1000, with_vectors=True)[0]
    assert_records(a, b, ordered=True, what="scroll of a snapshot's copy")
    assert_same(shoal.get_collection(copy).config.params.sparse_vectors,
                memory.get_collection(name).config.params.sparse_vectors)
    check_searches(shoal, memory, name, shoal_name=copy)


def test_patch_sparse_vector_params(shoal, memory, collection_names, base_url):
    """PATCH turns the idf modifier on (scores follow), merges index params field by
    field as Qdrant does, and refuses an unknown name without changing anything."""
    name = collection_names("sparse_patch")
    create(shoal, memory, name, 2)
    new = models.SparseVectorParams(modifier=models.Modifier.IDF,
                                    index=models.SparseIndexParams(full_scan_threshold=500, on_disk=False))
    # The local mode counts IDF statistics only for points written while the
    # modifier was on, where Qdrant reads them from its index: its twin gets the
    # new params before the points, Shoal after.
    memory.update_collection(name, sparse_vectors_config={"text": new})
    load(shoal, memory, name)
    # and its 1.15.1 counts every point in N: give every point a "text" vector
    both(shoal, memory, lambda c: c.update_vectors(name, points=[models.PointVectors(
        id=i, vector={"text": models.SparseVector(indices=[i % 40, 39 - i % 40], values=[1.0, 0.5])})
        for i in range(3, 120, 7)], wait=True))
    assert shoal.update_collection(name, sparse_vectors_config={"text": new}) is True
    a, b = both(shoal, memory, lambda c: c.get_collection(name).config.params.sparse_vectors)
    assert_same(a, b, what="sparse_vectors config after PATCH")
    check_searches(shoal, memory, name)  # "text" now weighs by IDF on both

    # Qdrant merges a partial index diff into the existing index params
    status, _ = rawhttp.call("PATCH", f"{base_url}/collections/{name}", {"sparse_vectors": {"text": {"index": {"on_disk": True}}}})
    assert status == 200
    got = shoal.get_collection(name).config.params.sparse_vectors["text"]
    assert (got.modifier, got.index.full_scan_threshold, got.index.on_disk) == (models.Modifier.IDF, 500, True)

    before = shoal.get_collection(name).config.params.sparse_vectors
    status, body = rawhttp.call("PATCH", f"{base_url}/collections/{name}",
                        {"sparse_vectors": {"text": {"modifier": "none"}, "nope": {"modifier": "idf"}}})
    assert (status, body["status"]["error"]) == (400, "Wrong input: Not existing vector name error: nope")
    assert shoal.get_collection(name).config.params.sparse_vectors == before
