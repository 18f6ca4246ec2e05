"""Point and payload updates, scroll, count and payload indexes: Shoal vs :memory:.

After each update the whole collection (payloads and vectors) is scrolled on both
sides and compared, so an update that touches too much or too little fails.
"""

from __future__ import annotations

import pytest
from qdrant_client import models
from qdrant_client.http.exceptions import UnexpectedResponse

from .compare import assert_records, assert_same, assert_scroll, both
from .data import create_both, make_points, point_uuid, upsert_both, vectors

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")

DIM = 6
N = 120
ID_KINDS = ["int", "uuid"]


def pid(i: int, kind: str):
    return point_uuid(i) if kind == "uuid" else i


def assert_same_collection(shoal, memory, name: str, what: str) -> None:
    a, b = both(shoal, memory, lambda c: c.scroll(name, limit=10_000, with_vectors=True))
    assert_records(a[0], b[0], ordered=True, what=f"whole collection after {what}")
    a, b = both(shoal, memory, lambda c: c.count(name, exact=True))
    assert_same(a, b, what=f"count after {what}")


@pytest.fixture
def loaded(shoal, memory, collection_names, shard_number, request):
    kind = getattr(request, "param", "int")
    name = collection_names("points")
    create_both(shoal, memory, name, models.VectorParams(size=DIM, distance=models.Distance.DOT),
                shard_number)
    upsert_both(shoal, memory, name, make_points(N, DIM, seed=5, uuid_ids=kind == "uuid"))
    return shoal, memory, name, kind


@pytest.mark.parametrize("loaded", ID_KINDS, indirect=True)
def test_payload_updates_by_ids(loaded, against_memory):
    s, m, name, kind = loaded
    ids = [pid(i, kind) for i in (0, 1, 2, 50)]
    steps = [
        ("set_payload", lambda c: c.set_payload(name, payload={"new": 1, "city": "Rome"}, points=ids)),
        ("set_payload key", lambda c: c.set_payload(name, payload={"b": "deep"}, key="nested.a",
                                                    points=ids[:2])),
        ("overwrite_payload", lambda c: c.overwrite_payload(name, payload={"only": True},
                                                            points=ids[1:3])),
        ("delete_payload", lambda c: c.delete_payload(name, keys=["city", "count", "absent"],
                                                      points=ids)),
        ("delete_payload nested", _delete_nested_key(s, m, name, pid(7, kind), against_memory)),
        ("clear_payload", lambda c: c.clear_payload(name, points_selector=ids[2:])),
    ]
    for what, call in steps:
        results = both(s, m, call)
        assert [r.status for r in results] == [models.UpdateStatus.COMPLETED] * 2, what
        assert_same_collection(s, m, name, what)


def _delete_nested_key(shoal, memory, name, point_id, both_local: bool):
    """Qdrant deletes a nested key by path ("nested.a.b"); qdrant-client 1.15.1's local
    mode only deletes top-level keys, so the oracle gets the same edit spelled as a
    set_payload of the parent object."""
    def call(client):
        if client is memory or both_local:
            return client.set_payload(name, payload={"a": {}}, key="nested", points=[point_id])
        return client.delete_payload(name, keys=["nested.a.b"], points=[point_id])
    return call


@pytest.mark.parametrize("loaded", ID_KINDS, indirect=True)
def test_updates_by_filter(loaded):
    s, m, name, _ = loaded
    london = models.Filter(must=[models.FieldCondition(key="city", match=models.MatchValue(value="London"))])
    cheap = models.Filter(must=[models.FieldCondition(key="price", range=models.Range(lt=30))])
    steps = [
        ("set_payload by filter", lambda c: c.set_payload(name, payload={"tagged": "x"}, points=london)),
        ("overwrite_payload by filter", lambda c: c.overwrite_payload(
            name, payload={"city": "London", "o": 1}, points=models.FilterSelector(filter=cheap))),
        ("delete_payload by filter", lambda c: c.delete_payload(name, keys=["tags"], points=london)),
        ("clear_payload by filter", lambda c: c.clear_payload(
            name, points_selector=models.FilterSelector(filter=models.Filter(
                must=[models.FieldCondition(key="count", range=models.Range(gte=45))])))),
        ("delete by filter", lambda c: c.delete(name, points_selector=models.FilterSelector(filter=london))),
    ]
    for what, call in steps:
        both(s, m, call)
        assert_same_collection(s, m, name, what)
    assert s.count(name, count_filter=london).count == 0


@pytest.mark.parametrize("loaded", ID_KINDS, indirect=True)
def test_delete_upsert_overwrites(loaded):
    s, m, name, kind = loaded
    both(s, m, lambda c: c.delete(name, points_selector=models.PointIdsList(
        points=[pid(i, kind) for i in range(0, N, 3)])))
    assert_same_collection(s, m, name, "delete ids")
    fresh = [models.PointStruct(id=pid(i, kind), vector=[0.5] * DIM, payload={"v": i})
             for i in range(0, N, 2)]
    both(s, m, lambda c: c.upsert(name, points=fresh))
    assert_same_collection(s, m, name, "upsert over existing and deleted ids")
    both(s, m, lambda c: c.delete(name, points_selector=[pid(10_000, kind)]))
    assert_same_collection(s, m, name, "delete of an absent id")


def test_named_vector_updates(shoal, memory, collection_names, shard_number):
    name = collection_names("vecs")
    config = {"a": models.VectorParams(size=4, distance=models.Distance.EUCLID),
              "b": models.VectorParams(size=3, distance=models.Distance.MANHATTAN)}
    create_both(shoal, memory, name, config, shard_number)
    upsert_both(shoal, memory, name, make_points(40, 0, seed=6, named={"a": 4, "b": 3}))
    new_b = vectors(3, 3, seed=7).tolist()
    steps = [
        ("update_vectors", lambda c: c.update_vectors(name, points=[
            models.PointVectors(id=1, vector={"b": new_b[0]}),
            models.PointVectors(id=9, vector={"b": new_b[1], "a": [1.0, 2.0, 3.0, 4.0]})])),
        ("delete_vectors ids", lambda c: c.delete_vectors(name, vectors=["b"], points=[2, 3])),
        ("delete_vectors filter", lambda c: c.delete_vectors(name, vectors=["a"], points=models.Filter(
            must=[models.FieldCondition(key="city", match=models.MatchValue(value="Paris"))]))),
    ]
    for what, call in steps:
        both(shoal, memory, call)
        assert_same_collection(shoal, memory, name, what)
    flt = models.Filter(must=[models.HasVectorCondition(has_vector="b")])
    a, b = both(shoal, memory, lambda c: c.count(name, count_filter=flt))
    assert_same(a, b, what="count has_vector=b after deletes")


def test_batch_update_points(shoal, memory, collection_names, shard_number):
    name = collection_names("batch")
    create_both(shoal, memory, name, models.VectorParams(size=DIM, distance=models.Distance.COSINE),
                shard_number)
    upsert_both(shoal, memory, name, make_points(60, DIM, seed=8))
    ops = [
        models.UpsertOperation(upsert=models.PointsList(points=[
            models.PointStruct(id=100, vector=[1.0] * DIM, payload={"x": 1}),
            models.PointStruct(id=5, vector=[-1.0] * DIM, payload={"x": 2})])),
        models.DeleteOperation(delete=models.PointIdsList(points=[1, 2, 3])),
        models.SetPayloadOperation(set_payload=models.SetPayload(payload={"y": "set"}, points=[4, 100])),
        models.OverwritePayloadOperation(overwrite_payload=models.SetPayload(payload={"z": 0}, points=[6])),
        models.DeletePayloadOperation(delete_payload=models.DeletePayload(keys=["city"], points=[7, 8])),
        models.ClearPayloadOperation(clear_payload=models.PointIdsList(points=[9])),
        models.UpdateVectorsOperation(update_vectors=models.UpdateVectors(points=[
            models.PointVectors(id=10, vector=[0.25] * DIM)])),
        models.DeleteOperation(delete=models.FilterSelector(filter=models.Filter(must=[
            models.FieldCondition(key="count", range=models.Range(gte=55))]))),
    ]
    results = both(shoal, memory, lambda c: c.batch_update_points(name, update_operations=ops))
    assert [len(r) for r in results] == [len(ops), len(ops)]
    assert all(r.status == models.UpdateStatus.COMPLETED for r in results[0])
    assert_same_collection(shoal, memory, name, "batch_update_points")


def test_a_batch_refused_for_a_missing_point_changes_nothing(shoal, collection_names, shard_number):
    """Every operation of a batch is checked before any is applied: a later one naming
    a point that neither exists nor is upserted earlier in the batch refuses the whole
    batch (404, Qdrant's text), and the earlier ones have changed nothing. A point an
    earlier operation upserts may be named; one it deletes may not."""
    name = collection_names("batch_refused")
    shoal.create_collection(name, vectors_config=models.VectorParams(size=DIM, distance=models.Distance.COSINE),
                            shard_number=shard_number)
    shoal.upsert(name, make_points(20, DIM, seed=3), wait=True)
    before = shoal.scroll(name, limit=100, with_payload=True, with_vectors=True)[0]
    ops = [models.ClearPayloadOperation(clear_payload=models.FilterSelector(filter=models.Filter())),
           models.UpsertOperation(upsert=models.PointsList(points=[models.PointStruct(id=500, vector=[1.0] * DIM)])),
           models.UpdateVectorsOperation(update_vectors=models.UpdateVectors(points=[
               models.PointVectors(id=500, vector=[0.5] * DIM), models.PointVectors(id=5524, vector=[0.5] * DIM)]))]
    with pytest.raises(UnexpectedResponse) as refused:
        shoal.batch_update_points(name, update_operations=ops)
    assert refused.value.status_code == 404 and "No point with id 5524 found" in str(refused.value)
    assert shoal.scroll(name, limit=100, with_payload=True, with_vectors=True)[0] == before
    ops[2] = models.UpdateVectorsOperation(update_vectors=models.UpdateVectors(points=[
        models.PointVectors(id=500, vector=[0.5] * DIM)]))
    assert len(shoal.batch_update_points(name, update_operations=ops)) == 3
    assert shoal.retrieve(name, [500], with_vectors=True)[0].vector[0] == pytest.approx(1 / DIM ** 0.5)  # cosine: normalised
    # A point an earlier operation deletes by id is missing for the later ones, even
    # when it exists before the batch.
    deleted_then_updated = [
        models.DeleteOperation(delete=models.PointIdsList(points=[3])),
        models.SetPayloadOperation(set_payload=models.SetPayload(payload={"x": 1}, points=[3]))]
    before = shoal.scroll(name, limit=100, with_payload=True, with_vectors=True)[0]
    with pytest.raises(UnexpectedResponse) as refused:
        shoal.batch_update_points(name, update_operations=deleted_then_updated)
    assert refused.value.status_code == 404 and "No point with id 3 found" in str(refused.value)
    assert shoal.scroll(name, limit=100, with_payload=True, with_vectors=True)[0] == before


def test_an_upsert_refused_for_a_value_beyond_float32_changes_no_shard(shoal, collection_names, shard_number):
    """A number a float32 cannot hold (it would be stored as infinity) refuses the
    whole upsert (400, Qdrant's text) before any shard applies its part: the other
    points, which go to other shards, are not stored either."""
    name = collection_names("beyond_f32")
    shoal.create_collection(name, vectors_config=models.VectorParams(size=DIM, distance=models.Distance.DOT),
                            shard_number=shard_number)
    points = [models.PointStruct(id=i, vector=[1.0] * DIM) for i in range(12)]
    points.append(models.PointStruct(id=99, vector=[-1.7976931348623157e308] + [1.0] * (DIM - 1)))
    with pytest.raises(UnexpectedResponse) as refused:
        shoal.upsert(name, points, wait=True)
    assert refused.value.status_code == 400 and "Vector contains NaN or infinite values" in str(refused.value)
    assert shoal.count(name, exact=True).count == 0


@pytest.mark.parametrize("loaded", ID_KINDS, indirect=True)
def test_scroll_pagination(loaded):
    s, m, name, _ = loaded
    flt = models.Filter(must_not=[models.FieldCondition(key="city", match=models.MatchValue(value="Tokyo"))])
    for page_size, scroll_filter in ((7, None), (13, flt), (N, None), (N + 1, flt)):
        offsets = [None]
        while True:
            a, b = both(s, m, lambda c: c.scroll(name, scroll_filter=scroll_filter, limit=page_size,
                                                 offset=offsets[-1], with_vectors=True))
            assert_scroll(a, b, what=f"scroll page {len(offsets)} size {page_size}")
            if a[1] is None:
                break
            offsets.append(a[1])
            assert len(offsets) < 100
        expected = m.count(name, count_filter=scroll_filter).count
        assert len(offsets) == max(1, -(-expected // page_size)), "pages until exhausted"


def test_scroll_order_by(shoal, memory, collection_names, shard_number):
    name = collection_names("order")
    create_both(shoal, memory, name, models.VectorParams(size=DIM, distance=models.Distance.DOT),
                shard_number)
    for client in (shoal, memory):
        client.create_payload_index(name, "price", models.PayloadSchemaType.FLOAT, wait=True)
        client.create_payload_index(name, "created", models.PayloadSchemaType.DATETIME, wait=True)
    upsert_both(shoal, memory, name, make_points(N, DIM, seed=9))
    for order_by in (models.OrderBy(key="price"),
                     models.OrderBy(key="price", direction=models.Direction.DESC),
                     models.OrderBy(key="created", direction="desc", start_from="2024-06-01T00:00:00Z"),
                     models.OrderBy(key="price", start_from=50)):
        a, b = both(shoal, memory, lambda c: c.scroll(name, limit=25, order_by=order_by))
        assert_records(a[0], b[0], ordered=True, limit=25, what=f"scroll order_by={order_by}")
        assert a[1] is None  # Qdrant gives no next_page_offset with order_by


def test_payload_index_lifecycle(shoal, memory, collection_names, shard_number, against_memory):
    name = collection_names("index")
    create_both(shoal, memory, name, models.VectorParams(size=DIM, distance=models.Distance.COSINE),
                shard_number)
    upsert_both(shoal, memory, name, make_points(50, DIM, seed=10))
    schemas = {"city": "keyword", "count": "integer", "price": "float", "flag": "bool",
               "location": "geo", "text": "text", "created": "datetime", "uid": "uuid"}
    for field, schema in schemas.items():
        result = shoal.create_payload_index(name, field_name=field, field_schema=schema, wait=True)
        assert result.status == models.UpdateStatus.COMPLETED
    flt = models.Filter(must=[models.FieldCondition(key="count", range=models.Range(gte=10, lt=20))])
    a, b = both(shoal, memory, lambda c: c.count(name, count_filter=flt))
    assert_same(a, b, what="count through integer index")
    if against_memory:
        return
    info = shoal.get_collection(name)
    assert {k: v.data_type.value for k, v in info.payload_schema.items()} == schemas
    assert all(v.points == 50 for v in info.payload_schema.values())
    shoal.delete_payload_index(name, "price", wait=True)
    shoal.delete_payload_index(name, "text", wait=True)
    info = shoal.get_collection(name)
    assert set(info.payload_schema) == set(schemas) - {"price", "text"}
    # a new point is counted by the remaining indexes
    shoal.upsert(name, points=[models.PointStruct(id=999, vector=[1.0] * DIM, payload={"city": "X"})])
    assert shoal.get_collection(name).payload_schema["city"].points == 51
