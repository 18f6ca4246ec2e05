"""PUT /collections/{name} with ``init_from``: a new collection filled from another one.

Through the official qdrant-client against a real server, with ``QdrantClient(":memory:")``
as the oracle where its local mode implements init_from (it copies every point too, and
follows aliases); Qdrant's refusals (missing source, incompatible vectors) are checked
over raw HTTP for their exact status and text, and for leaving nothing behind. Sources
hold more than one page of the copy (``gateway.init_from.PAGE``) so that paging is
exercised, with int and UUID ids, named vectors, and points lacking one of them.
"""

from __future__ import annotations

import threading
import time
import uuid

import pytest
from qdrant_client import models
from qdrant_client.http.exceptions import UnexpectedResponse

from .compare import assert_records, assert_same, both
from .data import create_both, make_points, upsert_both
from .rawhttp import call, error_text

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")

DIM = 4
N = 1_300  # over one copy page (1000) for a 1-shard source


def whole(client, name: str) -> list:
    records, offset = client.scroll(name, limit=10_000, with_vectors=True)
    assert offset is None
    return records


def assert_copied(shoal, memory, source: str, target: str) -> None:
    """The target holds what the source holds, on Shoal and on the oracle alike."""
    a, b = both(shoal, memory, lambda c: whole(c, target))
    assert_records(a, b, what=f"{target} after init_from")
    assert_records(a, whole(shoal, source), what=f"{target} against its source {source}")
    a, b = both(shoal, memory, lambda c: c.count(target, exact=True).count)
    assert_same(a, b, what="count")


def init_both(shoal, memory, target: str, vectors_config, shard_number: int, source: str) -> None:
    create_both(shoal, memory, target, vectors_config, shard_number,
                init_from=models.InitFrom(collection=source))


@pytest.mark.parametrize("target_shards", [1, 3], ids=lambda n: f"to{n}")
def test_copies_every_point(shoal, memory, collection_names, shard_number, target_shards):
    """Vectors and payloads, from a source of 1 or 3 shards into 1 or 3 shards."""
    config = models.VectorParams(size=DIM, distance=models.Distance.DOT)
    source, target = collection_names("src"), collection_names("dst")
    create_both(shoal, memory, source, config, shard_number)
    upsert_both(shoal, memory, source, make_points(N, DIM, seed=11))
    init_both(shoal, memory, target, config, target_shards, source)
    assert_copied(shoal, memory, source, target)
    assert shoal.get_collection(target).config.params.shard_number == target_shards
    # The copy is a collection of its own: a write to one is not seen by the other.
    shoal.delete(target, points_selector=models.PointIdsList(points=[0, 1]), wait=True)
    assert shoal.count(source, exact=True).count == N
    assert shoal.count(target, exact=True).count == N - 2


def test_named_vectors_uuid_ids_and_an_alias(shoal, memory, collection_names, shard_number):
    """Named vectors (every tenth point lacks the second), UUID ids; the source named
    by an alias; the new collection may have one more vector, which no point has."""
    named = {"a": DIM, "b": 3}
    source, target = collection_names("src"), collection_names("dst")
    alias = f"al_{uuid.uuid4().hex[:10]}"
    params = {n: models.VectorParams(size=d, distance=models.Distance.EUCLID) for n, d in named.items()}
    create_both(shoal, memory, source, params, shard_number)
    upsert_both(shoal, memory, source, make_points(400, DIM, seed=12, uuid_ids=True, named=named))
    both(shoal, memory, lambda c: c.update_collection_aliases(change_aliases_operations=[
        models.CreateAliasOperation(create_alias=models.CreateAlias(collection_name=source, alias_name=alias))]))
    try:
        wider = {**params, "c": models.VectorParams(size=2, distance=models.Distance.COSINE)}
        init_both(shoal, memory, target, wider, 4 - shard_number, alias)
        assert_copied(shoal, memory, source, target)
    finally:
        shoal.update_collection_aliases(change_aliases_operations=[
            models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=alias))])


def test_payload_indexes_are_copied(shoal, collection_names):
    """Qdrant creates the source's payload indexes on the new collection, params
    included (data_transfer.rs transfer_indexes); the local mode has no indexes."""
    config = models.VectorParams(size=DIM, distance=models.Distance.DOT)
    source, target = collection_names("src"), collection_names("dst")
    shoal.create_collection(source, vectors_config=config, shard_number=2)
    shoal.upsert(source, points=make_points(200, DIM, seed=13), wait=True)
    shoal.create_payload_index(source, "city", models.PayloadSchemaType.KEYWORD, wait=True)
    shoal.create_payload_index(source, "count", models.IntegerIndexParams(
        type=models.IntegerIndexType.INTEGER, lookup=False, range=True), wait=True)
    shoal.create_collection(target, vectors_config=config, shard_number=3, init_from=models.InitFrom(collection=source))
    schema = shoal.get_collection(target).payload_schema
    assert schema == shoal.get_collection(source).payload_schema
    assert set(schema) == {"city", "count"} and schema["count"].params.range is True
    hits = shoal.count(target, count_filter=models.Filter(must=[
        models.FieldCondition(key="count", range=models.Range(gte=10, lt=20))]), exact=True).count
    assert hits == 40


def test_empty_source(shoal, memory, collection_names):
    config = models.VectorParams(size=DIM, distance=models.Distance.DOT)
    source, target = collection_names("src"), collection_names("dst")
    create_both(shoal, memory, source, config, 3)
    init_both(shoal, memory, target, config, 1, source)
    assert both(shoal, memory, lambda c: c.count(target, exact=True).count) == (0, 0)


def test_missing_source_refused_by_both(shoal, memory, collection_names):
    """The oracle refuses too (ValueError); Shoal answers Qdrant's 404 and creates nothing."""
    config = models.VectorParams(size=DIM, distance=models.Distance.DOT)
    target, missing = collection_names("dst"), f"nope_{uuid.uuid4().hex[:8]}"
    with pytest.raises(ValueError):
        memory.create_collection(target, vectors_config=config, init_from=models.InitFrom(collection=missing))
    with pytest.raises(UnexpectedResponse) as caught:
        shoal.create_collection(target, vectors_config=config, init_from=models.InitFrom(collection=missing))
    assert caught.value.status_code == 404
    assert f"Collection `{missing}` doesn't exist!" in caught.value.content.decode()
    assert not shoal.collection_exists(target)


# ---------------------------------------------------------------- raw HTTP refusals

ORIGIN = {"size": DIM, "distance": "Dot"}
NAMED_ORIGIN = {"a": {"size": DIM, "distance": "Dot"}, "b": {"size": 3, "distance": "Dot"}}
INCOMPATIBLE = "Wrong input: Vectors configuration is not compatible: "


@pytest.mark.parametrize("origin, body, text", [
    (ORIGIN, {"vectors": {"size": 8, "distance": "Dot"}},
     INCOMPATIBLE + "origin vector  size: 4, while other vector size: 8"),
    (ORIGIN, {"vectors": {"size": DIM, "distance": "Cosine"}},
     INCOMPATIBLE + "origin vector  distance: Dot, while other vector distance: Cosine"),
    (ORIGIN, {"vectors": {"a": ORIGIN}},
     INCOMPATIBLE + "origin collection have vectors [], while other vectors [a]"),
    (NAMED_ORIGIN, {"vectors": ORIGIN},
     INCOMPATIBLE + "origin collection have vectors [a, b], while other vectors []"),
    (NAMED_ORIGIN, {"vectors": {"a": NAMED_ORIGIN["a"], "c": ORIGIN}},
     INCOMPATIBLE + "origin collection have vector b, while other collection does not"),
    (NAMED_ORIGIN, {"vectors": {"b": {"size": 5, "distance": "Dot"}, "a": NAMED_ORIGIN["a"]}},
     INCOMPATIBLE + "origin vector b size: 3, while other vector size: 5"),
    (ORIGIN, {"vectors": ORIGIN, "sharding_method": "custom"},
     "Wrong input: Can't initialize collection from another collection with custom sharding method"),
], ids=["size", "distance", "unnamed-to-named", "named-to-unnamed", "missing-vector", "named-size", "custom"])
def test_incompatible_target_is_refused_and_not_created(base_url, origin, body, text):
    source, target = f"src_{uuid.uuid4().hex[:10]}", f"dst_{uuid.uuid4().hex[:10]}"
    assert call("PUT", f"{base_url}/collections/{source}", {"vectors": origin})[0] == 200
    try:
        status, answer = call("PUT", f"{base_url}/collections/{target}", {**body, "init_from": {"collection": source}})
        assert (status, error_text(answer)) == (400, text), answer
        assert call("GET", f"{base_url}/collections/{target}/exists")[1]["result"] == {"exists": False}
        assert target not in {c["name"] for c in call("GET", f"{base_url}/collections")[1]["result"]["collections"]}
    finally:
        call("DELETE", f"{base_url}/collections/{target}")
        call("DELETE", f"{base_url}/collections/{source}")


def test_taken_name_is_refused_first(base_url):
    """Qdrant checks the new name before the source: 409, not the source's 404."""
    target = f"dst_{uuid.uuid4().hex[:10]}"
    assert call("PUT", f"{base_url}/collections/{target}", {"vectors": ORIGIN})[0] == 200
    try:
        status, answer = call("PUT", f"{base_url}/collections/{target}",
                              {"vectors": ORIGIN, "init_from": {"collection": "no_such_source"}})
        assert (status, error_text(answer)) == (409, f"Wrong input: Collection `{target}` already exists!")
    finally:
        call("DELETE", f"{base_url}/collections/{target}")


@pytest.mark.parametrize("delay", [0.1, 0.5, 0.9], ids=lambda d: f"after{d}s")
def test_copy_cut_short_leaves_nothing(base_url, shoal_server, delay):
    """The source is deleted ``delay`` seconds into the create (before, during or
    after the copy, as the machine goes): the create either holds every point (the
    copy won the race) or fails and leaves no collection and no files behind;
    never a half-filled collection."""
    source, target = f"src_{uuid.uuid4().hex[:10]}", f"dst_{uuid.uuid4().hex[:10]}"
    assert call("PUT", f"{base_url}/collections/{source}", {"vectors": ORIGIN, "shard_number": 3})[0] == 200
    folders = shoal_server.storage / "collections"
    before = {p.name for p in folders.iterdir()}
    total = 12_000
    for start in range(0, total, 2_000):
        points = [{"id": i, "vector": [i % 7, 1, 2, 3], "payload": {"i": i}} for i in range(start, start + 2_000)]
        assert call("PUT", f"{base_url}/collections/{source}/points?wait=true", {"points": points})[0] == 200
    answer = {}
    creating = threading.Thread(target=lambda: answer.update(result=call(
        "PUT", f"{base_url}/collections/{target}", {"vectors": ORIGIN, "init_from": {"collection": source}})))
    creating.start()
    time.sleep(delay)
    assert call("DELETE", f"{base_url}/collections/{source}")[0] == 200
    creating.join()
    status, body = answer["result"]
    try:
        exists = call("GET", f"{base_url}/collections/{target}/exists")[1]["result"]["exists"]
        print(f"init_from, its source deleted {delay} s in: create answered {status}"
              f"{'' if status == 200 else ': ' + str(error_text(body))}")
        if status == 200:
            assert exists
            count = call("POST", f"{base_url}/collections/{target}/points/count", {"exact": True})[1]
            assert count["result"]["count"] == total
            assert len({p.name for p in folders.iterdir()} - before) == 1
        else:
            assert status >= 400 and error_text(body), body
            assert not exists
            assert {p.name for p in folders.iterdir()} - before == set()
    finally:
        call("DELETE", f"{base_url}/collections/{target}")
