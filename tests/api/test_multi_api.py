"""Multivectors through the official client (1.15.1), against ``:memory:``, on 1 and
3 shards: the collection config (named and unnamed, datatypes), upserts beside a
dense vector (list and batch), retrieve, scroll, count with has_vector, MaxSim
search with ``points/query`` (filters, thresholds, paging, has_id), recommend,
discover and context by multivector examples, update and delete vectors,
overwrites, restarts and snapshots, and Qdrant's answers to bad multivectors.

The oracle's local mode ignores ``datatype``: float16 and uint8 collections are
checked against values worked out by hand instead. It also cannot score a
multivector search while some point lacks that multivector (it takes the missing
one for an empty matrix and fails), so searches run against a twin collection
of the oracle that holds only the points with "colbert", and on Shoal with a
has_vector "colbert" filter: the same candidates on both sides.
"""

from __future__ import annotations

import numpy as np
import pytest
from qdrant_client import models

from . import rawhttp
from . import test_persistence
from .compare import assert_records, assert_same, assert_scored, both
from .data import payload_for

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")

N = 90
DIM = 4
MAXSIM = models.MultiVectorConfig(comparator=models.MultiVectorComparator.MAX_SIM)
HAS_COLBERT = models.Filter(must=[models.HasVectorCondition(has_vector="colbert")])

server = test_persistence.server  # the fixture: a real server, left up after a restart


def matrix(rng: np.random.Generator, low: int = 1, high: int = 6) -> list[list[float]]:
    rows = int(rng.integers(low, high))
    return [[round(float(x), 3) for x in rng.uniform(-1, 1, size=DIM)] for _ in range(rows)]


def make_points(n: int, seed: int) -> list[models.PointStruct]:
    """Every point has "dense" and "manhattan"; "colbert" is missing on every 7th."""
    rng = np.random.default_rng(seed)
    points = []
    for i in range(n):
        vector = {"dense": [round(float(x), 3) for x in rng.uniform(-1, 1, size=DIM)],
                  "manhattan": matrix(rng, 1, 4)}
        if i % 7 != 3:
            vector["colbert"] = matrix(rng)
        points.append(models.PointStruct(id=i, vector=vector, payload=payload_for(i, rng)))
    return points


def create(shoal, memory, name: str, shard_number: int) -> None:
    for client in (shoal, memory):
        assert client.create_collection(name, shard_number=shard_number, vectors_config={
            "dense": models.VectorParams(size=DIM, distance=models.Distance.DOT),
            "colbert": models.VectorParams(size=DIM, distance=models.Distance.COSINE, multivector_config=MAXSIM),
            "manhattan": models.VectorParams(size=DIM, distance=models.Distance.MANHATTAN,
                                             multivector_config=MAXSIM, datatype=models.Datatype.FLOAT32),
        }) is True


def load(shoal, memory, name: str, seed: int = 3) -> list[models.PointStruct]:
    points = make_points(N, seed)
    both(shoal, memory, lambda c: c.upsert(name, points=points[:60], wait=True))
    tail = points[60:]  # the batch form: every one of these holds all three vectors
    rng = np.random.default_rng(seed + 1)
    for p in tail:
        p.vector.setdefault("colbert", matrix(rng))
    batch = models.Batch(ids=[p.id for p in tail], payloads=[p.payload for p in tail],
                         vectors={n: [p.vector[n] for p in tail] for n in ("dense", "colbert", "manhattan")})
    both(shoal, memory, lambda c: c.upsert(name, points=batch, wait=True))
    return points


def search_twin(memory, name: str) -> str:
    """A copy, in the oracle, of collection ``name`` with only its points that hold
    "colbert" (see the module docstring); made afresh at every call."""
    twin = f"{name}_twin"
    if memory.collection_exists(twin):
        memory.delete_collection(twin)
    memory.create_collection(twin, vectors_config=memory.get_collection(name).config.params.vectors)
    records = memory.scroll(name, limit=10_000, with_vectors=True, with_payload=True)[0]
    points = [models.PointStruct(id=r.id, vector=r.vector, payload=r.payload) for r in records if "colbert" in r.vector]
    memory.upsert(twin, points=points, wait=True)
    return twin


def is_local(client) -> bool:
    return type(getattr(client, "_client", None)).__name__ == "QdrantLocal"


def with_colbert(condition: models.Condition | None = None) -> models.Filter:
    return models.Filter(must=[c for c in (condition, models.HasVectorCondition(has_vector="colbert")) if c])


def check_searches(shoal, memory, name: str, shoal_name: str | None = None) -> None:
    """MaxSim searches agree; ``shoal_name``: Shoal's copy of the oracle's ``name``."""
    shoal_name = shoal_name or name
    if is_local(shoal):  # SHOAL_TEST_AGAINST_MEMORY=1: the "Shoal" side is an oracle too
        shoal_name = search_twin(shoal, shoal_name)
    names = {id(shoal): shoal_name, id(memory): search_twin(memory, name)}

    def each(call):
        return call(shoal, names[id(shoal)]), call(memory, names[id(memory)])

    rng = np.random.default_rng(11)
    london = models.FieldCondition(key="city", match=models.MatchValue(value="London"))
    for _ in range(3):
        q = matrix(rng, 2, 5)
        for using in ("colbert", "manhattan"):
            for kwargs in ({}, {"query_filter": with_colbert(london)},
                           {"score_threshold": 1.0 if using == "colbert" else 3.0},
                           {"offset": 3, "limit": 5},
                           {"query_filter": with_colbert(models.HasIdCondition(has_id=[1, 2, 3, 5, 8, 13]))}):
                kwargs = {"limit": 10, "query_filter": with_colbert(), **kwargs}
                a, b = each(lambda c, n: c.query_points(n, query=q, using=using, with_payload=True, **kwargs).points)
                assert_scored(a, b, limit=kwargs["limit"], what=f"query {using} {kwargs}")
        a, b = each(lambda c, n: c.query_points(n, query=q, using="colbert", limit=4, with_vectors=True,
                                                query_filter=with_colbert()).points)
        assert_scored(a, b, limit=4, what="query with vectors")
    # recommend / discover / context by multivector examples, in the Query API and the legacy calls
    example = matrix(rng, 2, 3)
    for strategy in models.RecommendStrategy:
        a, b = each(lambda c, n: c.query_points(n, query=models.RecommendQuery(recommend=models.RecommendInput(
            positive=[41, example], negative=[47], strategy=strategy)), using="colbert", limit=8,
            query_filter=with_colbert()).points)
        assert_scored(a, b, limit=8, what=f"query recommend {strategy}")
        a, b = each(lambda c, n: c.recommend(n, positive=[41, 43], negative=[46], using="colbert", strategy=strategy,
                                             limit=8, with_payload=True, query_filter=with_colbert()))
        assert_scored(a, b, limit=8, what=f"legacy recommend {strategy}")
    a, b = each(lambda c, n: c.query_points(n, query=models.DiscoverQuery(discover=models.DiscoverInput(
        target=51, context=[models.ContextPair(positive=53, negative=example)])), using="colbert", limit=8,
        query_filter=with_colbert()).points)
    assert_scored(a, b, limit=8, what="query discover")
    a, b = each(lambda c, n: c.query_points(n, query=models.ContextQuery(context=[
        models.ContextPair(positive=53, negative=55), models.ContextPair(positive=example, negative=61)]),
        using="colbert", limit=8, query_filter=with_colbert()).points)
    assert_scored(a, b, limit=8, what="query context")
    a, b = each(lambda c, n: c.discover(n, target=51, context=[models.ContextExamplePair(positive=53, negative=55)],
                                        using="colbert", limit=8, query_filter=with_colbert()))
    assert_scored(a, b, limit=8, what="legacy discover")
    a, b = each(lambda c, n: c.query_points(n, query=54, using="colbert", limit=6, query_filter=with_colbert()).points)
    assert_scored(a, b, limit=6, what="nearest by id")


def test_config_writes_reads_and_search(shoal, memory, collection_names, shard_number):
    name = collection_names("multi")
    create(shoal, memory, name, shard_number)
    a, b = both(shoal, memory, lambda c: c.get_collection(name).config.params.vectors)
    assert_same(a, b, what="vectors config")
    load(shoal, memory, name)

    a, b = both(shoal, memory, lambda c: c.retrieve(name, ids=[0, 3, 5, 70, 999], with_vectors=True))
    assert_records(a, b, what="retrieve with every vector")
    a, b = both(shoal, memory, lambda c: c.scroll(name, limit=1000, with_vectors=["colbert"])[0])
    assert_records(a, b, ordered=True, what="scroll with the colbert vector")
    a, b = both(shoal, memory, lambda c: c.count(name, count_filter=HAS_COLBERT).count)
    assert a == b == N - len(range(3, 60, 7))
    check_searches(shoal, memory, name)

    # delete_vectors, an upsert that replaces a point without its multivector, update_vectors
    both(shoal, memory, lambda c: c.delete_vectors(name, vectors=["colbert"], points=list(range(0, 30, 2)), wait=True))
    both(shoal, memory, lambda c: c.upsert(name, points=[models.PointStruct(
        id=1, vector={"dense": [0.0] * DIM, "manhattan": [[1.0, 2.0, 3.0, 4.0]]})], wait=True))
    both(shoal, memory, lambda c: c.update_vectors(name, points=[models.PointVectors(
        id=3, vector={"colbert": [[0.5, 1.5, 0.0, 1.0], [1.0, 0.0, 0.0, 0.0]]})], wait=True))
    a, b = both(shoal, memory, lambda c: c.count(name, count_filter=HAS_COLBERT).count)
    assert a == b
    a, b = both(shoal, memory, lambda c: c.retrieve(name, ids=list(range(6)), with_vectors=True))
    assert_records(a, b, what="retrieve after delete_vectors")
    check_searches(shoal, memory, name)


def test_colbert_rescoring_of_a_dense_prefetch(shoal, memory, collection_names, shard_number):
    """The ColBERT pattern: candidates from the dense vector, reranked by MaxSim."""
    name = collection_names("multi_rescore")
    create(shoal, memory, name, shard_number)
    load(shoal, memory, name)
    twin = search_twin(memory, name)
    rng = np.random.default_rng(23)
    for _ in range(3):
        dense, q = [float(x) for x in rng.uniform(-1, 1, size=DIM)], matrix(rng, 2, 4)
        if is_local(shoal):
            name = search_twin(shoal, name)
        a, b = (c.query_points(n, prefetch=models.Prefetch(query=dense, using="dense", limit=20,
                                                           filter=with_colbert()),
                               query=q, using="colbert", limit=5, with_payload=True).points
                for c, n in ((shoal, name), (memory, twin)))
        assert_scored(a, b, limit=5, what="dense prefetch, colbert rescore")


def test_unnamed_multivector_and_datatypes(shoal, memory, collection_names, base_url):
    name = collection_names("multi_unnamed")
    for client in (shoal, memory):
        client.create_collection(name, vectors_config=models.VectorParams(
            size=3, distance=models.Distance.EUCLID, multivector_config=MAXSIM))
    points = [models.PointStruct(id=i, vector=[[i, 1.0, 0.0], [0.0, -i, 2.0]]) for i in range(1, 6)]
    both(shoal, memory, lambda c: c.upsert(name, points=points, wait=True))
    a, b = both(shoal, memory, lambda c: c.retrieve(name, ids=[2, 4], with_vectors=True))
    assert_records(a, b, what="an unnamed multivector comes back bare")
    a, b = both(shoal, memory, lambda c: c.query_points(name, query=[[1.0, 1.0, 0.0], [0.0, 0.0, 2.0]], limit=3).points)
    assert_scored(a, b, limit=3, what="Euclid MaxSim")
    a, b = both(shoal, memory, lambda c: c.get_collection(name).config.params.vectors)
    assert_same(a, b, what="unnamed multivector config")
    # a plain vector queries a multivector as a matrix of one row (Qdrant; local mode refuses it)
    assert [p.id for p in shoal.query_points(name, query=[1.0, 1.0, 0.0], limit=5).points] == \
        [p.id for p in shoal.query_points(name, query=[[1.0, 1.0, 0.0]], limit=5).points]

    # datatypes: the rows as Qdrant stores and returns them (0.1 rounded to f16 is 0.0999755859375,
    # printed as the shortest f32 text)
    for datatype, stored, score in (("float16", [[0.099975586, 1.0, 300.0]], 300.0),
                                    ("uint8", [[0.0, 1.0, 255.0]], 255.0)):
        typed = collection_names("multi_" + datatype)
        status, body = rawhttp.call("PUT", f"{base_url}/collections/{typed}", {"vectors": {"m": {
            "size": 3, "distance": "Dot", "datatype": datatype, "multivector_config": {"comparator": "max_sim"}}}})
        assert status == 200, body
        params = shoal.get_collection(typed).config.params.vectors["m"]
        assert (params.datatype, params.multivector_config) == (models.Datatype(datatype), MAXSIM)
        shoal.upsert(typed, points=[models.PointStruct(id=1, vector={"m": [[0.1, 1.0, 300.0]]})], wait=True)
        (rec,) = shoal.retrieve(typed, ids=[1], with_vectors=True)
        assert rec.vector["m"] == stored
        (hit,) = shoal.query_points(typed, query=[[0.0, 0.0, 1.0]], using="m").points
        assert hit.score == score


def test_bad_multivectors_get_qdrant_answers(shoal, memory, collection_names, base_url):
    name = collection_names("multi_bad")
    create(shoal, memory, name, 2)
    load(shoal, memory, name)
    before = shoal.scroll(name, limit=1000, with_vectors=True)[0]
    url = f"{base_url}/collections/{name}/points?wait=true"

    def upsert(vector, name_="colbert"):
        return rawhttp.call("PUT", url, {"points": [
            {"id": 500, "vector": {"dense": [1, 2, 3, 4]}},
            {"id": 7, "vector": {"dense": [1, 2, 3, 4], name_: vector}}]})

    def expect(answer, status, text):
        assert (answer[0], rawhttp.error_text(answer[1])) == (status, text), answer

    expect(upsert([[1, 2, 3, 4], []]), 422,
           "Validation error in JSON body: [points[1].vector.?.data: all vectors must be non-empty]")
    expect(upsert([[1, 2, 3, 4], [1, 2, 3]]), 422, "Validation error in JSON body: [points[1].vector.?.data: "
           "all vectors must have the same dimension, found vector with dimension 3]")
    expect(upsert([[1, 2, 3], [1, 2, 3]]), 400, "Wrong input: Vector dimension error: expected dim: 4, got 3")
    expect(upsert([1, 2, 3, 4]), 400, "Wrong input: Conversion between multi and regular vectors failed")
    expect(upsert([]), 400, "Wrong input: Vector dimension error: expected dim: 4, got 0")
    expect(upsert([[1, 2, 3, 4]], "dense"), 400, "Wrong input: Conversion between multi and regular vectors failed")
    expect(upsert({"indices": [1], "values": [1.0]}), 400,
           "Wrong input: Conversion between sparse and regular vectors failed")
    status, body = rawhttp.call("PUT", url, {"batch": {"ids": [7], "vectors": {"colbert": [[[1, 2, 3, 4], [1, 2]]]}}})
    assert status == 422, body
    assert "data: all vectors must have the same dimension, found vector with dimension 2]" in rawhttp.error_text(body)
    query_url = f"{base_url}/collections/{name}/points/query"
    status, body = rawhttp.call("POST", query_url, {"query": [[1, 2, 3, 4], [1, 2, 3]], "using": "colbert"})
    assert status == 422, body
    assert "data: all vectors must have the same dimension, found vector with dimension 3]" in rawhttp.error_text(body)
    status, body = rawhttp.call("POST", query_url, {"query": [[1, 2, 3, 4], []], "using": "colbert"})
    assert status == 422, body
    assert "data: all vectors must be non-empty]" in rawhttp.error_text(body)
    expect(rawhttp.call("POST", query_url, {"query": [[1, 2, 3]], "using": "colbert"}), 400,
           "Wrong input: Vector dimension error: expected dim: 4, got 3")
    expect(rawhttp.call("POST", query_url, {"query": [[1, 2, 3, 4]], "using": "dense"}), 400,
           "Wrong input: Conversion between multi and regular vectors failed")
    status, body = rawhttp.call("POST", f"{base_url}/collections/{name}/points/search",
                                {"vector": {"colbert": [[1, 2, 3, 4]]}, "limit": 3})
    assert (status, rawhttp.error_text(body)) == (
        400, "Format error in JSON body: data did not match any variant of untagged enum NamedVectorStruct"), body
    assert shoal.scroll(name, limit=1000, with_vectors=True)[0] == before  # nothing changed


@pytest.mark.parametrize("graceful", [True, False], ids=["graceful", "killed"])
def test_restart_and_snapshot_keep_multivectors(server, make_client, memory, collection_names, graceful):
    shoal = make_client()
    name = collection_names("multi_durable")
    create(shoal, memory, name, 3)
    load(shoal, memory, name)
    both(shoal, memory, lambda c: c.delete_vectors(name, vectors=["colbert"], points=[0, 2, 4], wait=True))
    server.restart(graceful=graceful)
    shoal = make_client()
    a, b = both(shoal, memory, lambda c: c.scroll(name, limit=1000, with_vectors=True)[0])
    assert_records(a, b, ordered=True, what="scroll after a restart")
    check_searches(shoal, memory, name)
    info = shoal.get_collection(name)
    assert info.points_count == N
    if not graceful:
        return
    described = shoal.create_snapshot(name, wait=True)
    copy = collection_names("multi_copy")
    location = (server.storage / "snapshots").resolve()
    found = list(location.rglob(described.name))
    assert len(found) == 1
    assert shoal.recover_snapshot(copy, location=found[0].as_uri(), wait=True) is True
    a = shoal.scroll(copy, limit=1000, with_vectors=True)[0]
    assert_records(a, b, ordered=True, what="scroll of a snapshot's copy")
    assert_same(shoal.get_collection(copy).config.params.vectors, memory.get_collection(name).config.params.vectors)
    check_searches(shoal, memory, name, shoal_name=copy)


def test_init_from_copies_multivectors(shoal, memory, collection_names):
    name = collection_names("multi_source")
    create(shoal, memory, name, 2)
    load(shoal, memory, name)
    copy = collection_names("multi_init")
    vectors = shoal.get_collection(name).config.params.vectors
    assert shoal.create_collection(copy, vectors_config=vectors, shard_number=3,
                                   init_from=models.InitFrom(collection=name)) is True
    a, b = (shoal.scroll(n, limit=1000, with_vectors=True, with_payload=True)[0] for n in (copy, name))
    assert_records(a, b, ordered=True, what="init_from's copy")
