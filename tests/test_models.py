"""Request models: every body qdrant-client 1.15.1 sends parses, and dumps back
as the same Qdrant-shaped JSON; Qdrant's documented examples parse; ids are
canonical; a 1,000-point upsert parses quickly.

Error texts and statuses are table-tested in test_errors.py.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import orjson
import pytest
from qdrant_client.http import models as m

from gateway import models as g
from gateway.errors import FormatError, ValidationError
from gateway.models import canonical_id, dump, parse, path_point_id
from shard.types import BadInput

UUID = "550e8400-e29b-41d4-a716-446655440000"
SEEDS = Path(__file__).resolve().parents[2] / "shared" / "seeds"

# ---------------------------------------------------------------------------
# A corpus of client-side request models (what qdrant-client sends).
# ---------------------------------------------------------------------------

GEO = m.GeoLineString(
    points=[m.GeoPoint(lon=0, lat=0), m.GeoPoint(lon=1, lat=0), m.GeoPoint(lon=1, lat=1), m.GeoPoint(lon=0, lat=0)]
)
FILTER = m.Filter(
    must=[
        m.FieldCondition(key="city", match=m.MatchValue(value="London")),
        m.FieldCondition(key="count", match=m.MatchValue(value=7)),
        m.FieldCondition(key="flag", match=m.MatchValue(value=True)),
        m.FieldCondition(key="price", range=m.Range(gte=1, lt=10.5)),
        m.FieldCondition(key="ts", range=m.DatetimeRange(gt="2023-01-01T00:00:00Z", lte="2024-02-03")),
        m.FieldCondition(key="tags", match=m.MatchAny(any=["a", "b"])),
        m.FieldCondition(key="n", match=m.MatchExcept(**{"except": [1, 2]})),
        m.FieldCondition(key="text", match=m.MatchText(text="hello")),
        m.FieldCondition(key="text", match=m.MatchPhrase(phrase="hello world")),
        m.FieldCondition(key="loc", geo_radius=m.GeoRadius(center=m.GeoPoint(lon=1.5, lat=2), radius=10.0)),
        m.FieldCondition(
            key="loc",
            geo_bounding_box=m.GeoBoundingBox(top_left=m.GeoPoint(lon=0, lat=10), bottom_right=m.GeoPoint(lon=10, lat=0)),
        ),
        m.FieldCondition(key="loc", geo_polygon=m.GeoPolygon(exterior=GEO, interiors=[GEO])),
        m.FieldCondition(key="arr", values_count=m.ValuesCount(gt=1, lte=5)),
        m.FieldCondition(key="maybe", is_empty=True),
        m.FieldCondition(key="maybe", is_null=False),
        m.IsEmptyCondition(is_empty=m.PayloadField(key="e")),
        m.IsNullCondition(is_null=m.PayloadField(key="nn")),
        m.HasIdCondition(has_id=[1, UUID]),
        m.HasVectorCondition(has_vector="image"),
        m.NestedCondition(
            nested=m.Nested(key="country.cities[]", filter=m.Filter(must=[m.FieldCondition(key="pop", range=m.Range(gte=8))]))
        ),
    ],
    should=m.FieldCondition(key="flag", match=m.MatchValue(value=True)),
    must_not=[m.Filter(should=[m.FieldCondition(key="x", match=m.MatchValue(value=3))])],
    min_should=m.MinShould(conditions=[m.FieldCondition(key="a", match=m.MatchValue(value="b"))], min_count=1),
)
SMALL_FILTER = m.Filter(must=[m.FieldCondition(key="city", match=m.MatchValue(value="Berlin"))])
PARAMS = m.SearchParams(hnsw_ef=128, exact=False, quantization=m.QuantizationSearchParams(rescore=True, oversampling=2.0))
SPARSE = m.SparseVector(indices=[1, 7], values=[0.5, 0.25])
HNSW = m.HnswConfigDiff(m=8, ef_construct=64, full_scan_threshold=100, on_disk=False, payload_m=4)
SCALAR = m.ScalarQuantization(scalar=m.ScalarQuantizationConfig(type=m.ScalarType.INT8, quantile=0.99, always_ram=True))

CASES: list[tuple[type, object]] = [
    # collections
    (g.CreateCollection, m.CreateCollection(vectors=m.VectorParams(size=100, distance=m.Distance.COSINE))),
    (
        g.CreateCollection,
        m.CreateCollection(
            vectors={
                "image": m.VectorParams(size=4, distance=m.Distance.DOT, hnsw_config=HNSW, on_disk=True),
                "text": m.VectorParams(size=8, distance=m.Distance.EUCLID, datatype=m.Datatype.FLOAT16),
                "colbert": m.VectorParams(
                    size=8,
                    distance=m.Distance.MANHATTAN,
                    multivector_config=m.MultiVectorConfig(comparator=m.MultiVectorComparator.MAX_SIM),
                ),
            },
            shard_number=3,
            replication_factor=1,
            write_consistency_factor=1,
            on_disk_payload=False,
            hnsw_config=HNSW,
            optimizers_config=m.OptimizersConfigDiff(
                deleted_threshold=0.3, indexing_threshold=0, flush_interval_sec=2, max_optimization_threads="auto"
            ),
            wal_config=m.WalConfigDiff(wal_capacity_mb=16, wal_segments_ahead=1),
            quantization_config=SCALAR,
            sparse_vectors={"bm25": m.SparseVectorParams(index=m.SparseIndexParams(on_disk=True), modifier=m.Modifier.IDF)},
            strict_mode_config=m.StrictModeConfig(enabled=True, max_query_limit=100),
        ),
    ),
    (
        g.CreateCollection,
        m.CreateCollection(
            vectors=m.VectorParams(size=3, distance=m.Distance.DOT),
            quantization_config=m.ProductQuantization(product=m.ProductQuantizationConfig(compression=m.CompressionRatio.X16)),
            optimizers_config=m.OptimizersConfigDiff(max_optimization_threads=2),
        ),
    ),
    (
        g.CreateCollection,
        m.CreateCollection(
            vectors=m.VectorParams(size=3, distance=m.Distance.DOT),
            quantization_config=m.BinaryQuantization(binary=m.BinaryQuantizationConfig(always_ram=True)),
        ),
    ),
    (
        g.UpdateCollection,
        m.UpdateCollection(
            vectors={"": m.VectorParamsDiff(hnsw_config=m.HnswConfigDiff(m=32), on_disk=True)},
            optimizers_config=m.OptimizersConfigDiff(indexing_threshold=10000),
            params=m.CollectionParamsDiff(replication_factor=2, on_disk_payload=True),
            hnsw_config=m.HnswConfigDiff(ef_construct=200),
            quantization_config=m.Disabled.DISABLED,
        ),
    ),
    (g.UpdateCollection, m.UpdateCollection(quantization_config=SCALAR)),
    (
        g.ChangeAliasesOperation,
        m.ChangeAliasesOperation(
            actions=[
                m.CreateAliasOperation(create_alias=m.CreateAlias(collection_name="c", alias_name="a")),
                m.RenameAliasOperation(rename_alias=m.RenameAlias(old_alias_name="a", new_alias_name="b")),
                m.DeleteAliasOperation(delete_alias=m.DeleteAlias(alias_name="b")),
            ]
        ),
    ),
    (g.CreateFieldIndex, m.CreateFieldIndex(field_name="city", field_schema=m.PayloadSchemaType.KEYWORD)),
    (g.CreateFieldIndex, m.CreateFieldIndex(field_name="price", field_schema="float")),
    (
        g.CreateFieldIndex,
        m.CreateFieldIndex(
            field_name="n", field_schema=m.IntegerIndexParams(type=m.IntegerIndexType.INTEGER, lookup=False, range=True)
        ),
    ),
    (
        g.CreateFieldIndex,
        m.CreateFieldIndex(
            field_name="body",
            field_schema=m.TextIndexParams(
                type=m.TextIndexType.TEXT,
                tokenizer=m.TokenizerType.WORD,
                min_token_len=2,
                lowercase=True,
                stopwords=m.Language.ENGLISH,
                stemmer=m.SnowballParams(type=m.Snowball.SNOWBALL, language=m.SnowballLanguage.ENGLISH),
            ),
        ),
    ),
    (g.CreateFieldIndex, m.CreateFieldIndex(field_name="k", field_schema=m.KeywordIndexParams(type="keyword", is_tenant=True))),
    (g.CreateFieldIndex, m.CreateFieldIndex(field_name="u", field_schema=m.UuidIndexParams(type="uuid"))),
    # points
    (
        g.PointInsertOperations,
        m.PointsList(
            points=[
                m.PointStruct(id=1, vector=[0.1, 0.2, 0.3], payload={"city": "London", "n": 1}),
                m.PointStruct(id=UUID, vector={"image": [0.1, 0.2], "sparse": SPARSE}),
                m.PointStruct(id=3, vector=[[0.1, 0.2], [0.3, 0.4]]),
            ]
        ),
    ),
    (
        g.PointInsertOperations,
        m.PointsBatch(batch=m.Batch(ids=[1, 2], vectors=[[0.1, 0.2], [0.3, 0.4]], payloads=[{"a": 1}, {"b": 2}])),
    ),
    (
        g.PointInsertOperations,
        m.PointsBatch(batch=m.Batch(ids=[1, 2], vectors={"image": [[0.1, 0.2], [0.3, 0.4]], "sparse": [SPARSE, SPARSE]})),
    ),
    (g.PointRequest, m.PointRequest(ids=[1, UUID], with_payload=True, with_vector=["image"])),
    (g.PointRequest, m.PointRequest(ids=[1], with_payload=m.PayloadSelectorInclude(include=["a", "b.c"]))),
    (g.PointsSelector, m.PointIdsList(points=[1, 2, UUID])),
    (g.PointsSelector, m.FilterSelector(filter=SMALL_FILTER)),
    (g.SetPayload, m.SetPayload(payload={"a": 1}, points=[1, 2])),
    (g.SetPayload, m.SetPayload(payload={"a": {"b": 1}}, filter=SMALL_FILTER, key="nested.path")),
    (g.DeletePayload, m.DeletePayload(keys=["a", "b"], points=[1])),
    (g.DeletePayload, m.DeletePayload(keys=["a"], filter=SMALL_FILTER)),
    (g.UpdateVectors, m.UpdateVectors(points=[m.PointVectors(id=1, vector={"image": [0.1, 0.2]})])),
    (g.DeleteVectors, m.DeleteVectors(points=[1, 2], vector=["image"])),
    (g.DeleteVectors, m.DeleteVectors(filter=SMALL_FILTER, vector=["image", "text"])),
    (
        g.UpdateOperations,
        m.UpdateOperations(
            operations=[
                m.UpsertOperation(upsert=m.PointsList(points=[m.PointStruct(id=5, vector=[0.1, 0.2])])),
                m.UpsertOperation(upsert=m.PointsBatch(batch=m.Batch(ids=[6], vectors=[[0.1, 0.2]]))),
                m.DeleteOperation(delete=m.PointIdsList(points=[1])),
                m.SetPayloadOperation(set_payload=m.SetPayload(payload={"a": 2}, points=[2])),
                m.OverwritePayloadOperation(overwrite_payload=m.SetPayload(payload={"z": 0}, filter=SMALL_FILTER)),
                m.DeletePayloadOperation(delete_payload=m.DeletePayload(keys=["a"], points=[2])),
                m.ClearPayloadOperation(clear_payload=m.FilterSelector(filter=SMALL_FILTER)),
                m.UpdateVectorsOperation(update_vectors=m.UpdateVectors(points=[m.PointVectors(id=2, vector=[0.5, 0.5])])),
                m.DeleteVectorsOperation(delete_vectors=m.DeleteVectors(points=[2], vector=[""])),
            ]
        ),
    ),
    (g.ScrollRequest, m.ScrollRequest(limit=5, offset=10, filter=FILTER, with_payload=True, with_vector=False)),
    (g.ScrollRequest, m.ScrollRequest(order_by="price")),
    (g.ScrollRequest, m.ScrollRequest(order_by=m.OrderBy(key="price", direction=m.Direction.DESC, start_from=10.5))),
    (g.ScrollRequest, m.ScrollRequest(with_payload=m.PayloadSelectorExclude(exclude=["big"]), offset=UUID)),
    (g.CountRequest, m.CountRequest(filter=FILTER, exact=True)),
    (g.FacetRequest, m.FacetRequest(key="city", limit=5, filter=SMALL_FILTER, exact=False)),
    # search family
    (g.SearchRequest, m.SearchRequest(vector=[0.1, 0.2, 0.3], limit=3)),
    (
        g.SearchRequest,
        m.SearchRequest(
            vector=m.NamedVector(name="image", vector=[0.1, 0.2]),
            filter=FILTER,
            params=PARAMS,
            limit=10,
            offset=2,
            with_payload=["city"],
            with_vector=True,
            score_threshold=0.5,
        ),
    ),
    (g.SearchRequest, m.SearchRequest(vector=m.NamedSparseVector(name="bm25", vector=SPARSE), limit=3)),
    (g.SearchRequestBatch, m.SearchRequestBatch(searches=[m.SearchRequest(vector=[0.1], limit=1)] * 2)),
    (
        g.SearchGroupsRequest,
        m.SearchGroupsRequest(
            vector=[0.1, 0.2], group_by="doc_id", group_size=2, limit=3, with_lookup=m.WithLookup(collection="docs")
        ),
    ),
    (g.SearchGroupsRequest, m.SearchGroupsRequest(vector=[0.1], group_by="doc", group_size=1, limit=1, with_lookup="docs")),
    (g.RecommendRequest, m.RecommendRequest(positive=[1, UUID], negative=[3], limit=5)),
    (
        g.RecommendRequest,
        m.RecommendRequest(
            positive=[1, [0.1, 0.2]],
            negative=[SPARSE],
            strategy=m.RecommendStrategy.BEST_SCORE,
            filter=SMALL_FILTER,
            params=PARAMS,
            limit=5,
            offset=1,
            with_payload=True,
            with_vector=["image"],
            score_threshold=0.1,
            using="image",
            lookup_from=m.LookupLocation(collection="other", vector="image"),
        ),
    ),
    (g.RecommendRequestBatch, m.RecommendRequestBatch(searches=[m.RecommendRequest(positive=[1], limit=2)])),
    (
        g.RecommendGroupsRequest,
        m.RecommendGroupsRequest(positive=[1], group_by="doc", group_size=2, limit=2, strategy="sum_scores"),
    ),
    (
        g.DiscoverRequest,
        m.DiscoverRequest(
            target=1, context=[m.ContextExamplePair(positive=2, negative=[0.1, 0.2])], limit=4, using="image"
        ),
    ),
    (g.DiscoverRequest, m.DiscoverRequest(context=[m.ContextExamplePair(positive=2, negative=3)], limit=4)),
    (g.DiscoverRequestBatch, m.DiscoverRequestBatch(searches=[m.DiscoverRequest(target=[0.1], limit=1)])),
    (g.SearchMatrixRequest, m.SearchMatrixRequest(filter=SMALL_FILTER, sample=10, limit=3, using="image")),
    # universal query
    (g.QueryRequest, m.QueryRequest(query=[0.1, 0.2, 0.3], limit=3)),
    (g.QueryRequest, m.QueryRequest(query=7, with_payload=True)),
    (g.QueryRequest, m.QueryRequest(query=UUID, using="image", lookup_from=m.LookupLocation(collection="o"))),
    (g.QueryRequest, m.QueryRequest(query=SPARSE, using="bm25")),
    (g.QueryRequest, m.QueryRequest(query=[[0.1, 0.2], [0.3, 0.4]], using="colbert")),
    (g.QueryRequest, m.QueryRequest(query=m.NearestQuery(nearest=[0.1, 0.2]), filter=FILTER, params=PARAMS)),
    (g.QueryRequest, m.QueryRequest(query=m.NearestQuery(nearest=[0.1], mmr=m.Mmr(diversity=0.5, candidates_limit=100)))),
    (
        g.QueryRequest,
        m.QueryRequest(
            query=m.RecommendQuery(
                recommend=m.RecommendInput(positive=[1, [0.1, 0.2]], negative=[3], strategy=m.RecommendStrategy.AVERAGE_VECTOR)
            ),
            limit=5,
            offset=5,
            score_threshold=0.2,
        ),
    ),
    (
        g.QueryRequest,
        m.QueryRequest(
            query=m.DiscoverQuery(
                discover=m.DiscoverInput(target=1, context=[m.ContextPair(positive=2, negative=3)])
            )
        ),
    ),
    (
        g.QueryRequest,
        m.QueryRequest(query=m.DiscoverQuery(discover=m.DiscoverInput(target=1, context=m.ContextPair(positive=2, negative=3)))),
    ),
    (g.QueryRequest, m.QueryRequest(query=m.ContextQuery(context=[m.ContextPair(positive=[0.1], negative=[0.2])]))),
    (g.QueryRequest, m.QueryRequest(query=m.ContextQuery(context=m.ContextPair(positive=1, negative=2)))),
    (g.QueryRequest, m.QueryRequest(query=m.OrderByQuery(order_by="price"))),
    (g.QueryRequest, m.QueryRequest(query=m.OrderByQuery(order_by=m.OrderBy(key="price", direction="desc")))),
    (g.QueryRequest, m.QueryRequest(query=m.SampleQuery(sample=m.Sample.RANDOM), limit=2)),
    (
        g.QueryRequest,
        m.QueryRequest(
            prefetch=[
                m.Prefetch(query=[0.1, 0.2], using="dense", limit=20, filter=SMALL_FILTER),
                m.Prefetch(query=SPARSE, using="sparse", limit=20, params=PARAMS, score_threshold=0.1),
            ],
            query=m.FusionQuery(fusion=m.Fusion.RRF),
            limit=10,
        ),
    ),
    (
        g.QueryRequest,
        m.QueryRequest(
            prefetch=m.Prefetch(prefetch=m.Prefetch(query=[0.1], limit=100), query=[0.2], limit=50),
            query=m.FusionQuery(fusion=m.Fusion.DBSF),
        ),
    ),
    (
        g.QueryRequest,
        m.QueryRequest(
            prefetch=m.Prefetch(query=[0.1], limit=50),
            query=m.FormulaQuery(
                formula=m.SumExpression(
                    sum=[
                        "$score",
                        m.MultExpression(mult=[0.5, m.FieldCondition(key="tag", match=m.MatchAny(any=["h1"]))]),
                        m.ExpDecayExpression(exp_decay=m.DecayParamsExpression(x=m.DatetimeKeyExpression(datetime_key="ts"), scale=3.0)),
                        m.GeoDistance(geo_distance=m.GeoDistanceParams(origin=m.GeoPoint(lon=1, lat=2), to="loc")),
                        m.DivExpression(div=m.DivParams(left=1.0, right="x", by_zero_default=0.0)),
                        m.PowExpression(pow=m.PowParams(base=2.0, exponent=m.NegExpression(neg="y"))),
                    ]
                ),
                defaults={"x": 1},
            ),
        ),
    ),
    (
        g.QueryRequestBatch,
        m.QueryRequestBatch(searches=[m.QueryRequest(query=[0.1], limit=1), m.QueryRequest(query=3, filter=SMALL_FILTER)]),
    ),
    (
        g.QueryGroupsRequest,
        m.QueryGroupsRequest(query=[0.1, 0.2], group_by="doc", group_size=2, limit=3, with_lookup=m.WithLookup(collection="d")),
    ),
    (g.QueryGroupsRequest, m.QueryGroupsRequest(query=m.SampleQuery(sample="random"), group_by="doc")),
]


def wire(client_model) -> dict:
    """The JSON qdrant-client 1.15.1 puts on the wire for a request model
    (its points_api jsonable_encoder: by alias, unset and None fields left out)."""
    return client_model.model_dump(mode="json", by_alias=True, exclude_unset=True, exclude_none=True)


ONE_OR_MANY = {"must", "should", "must_not", "prefetch", "context"}


def _lists(value):
    """Wrap one-or-many objects in lists (except DiscoverRequest/RecommendInput
    context lists, which are lists already)."""
    if isinstance(value, dict):
        return {k: ([_lists(v)] if k in ONE_OR_MANY and isinstance(v, dict) else _lists(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [_lists(v) for v in value]
    return value


@pytest.mark.parametrize("model_cls,client_model", CASES, ids=[f"{i}-{c.__name__}" for i, (c, _) in enumerate(CASES)])
def test_client_requests_parse_and_round_trip(model_cls, client_model):
    sent = wire(client_model)
    parsed = parse(model_cls, orjson.dumps(sent))
    assert dump(parsed) == _lists(sent)


def test_client_upsert_with_numpy_vectors_parses():
    vectors = np.random.default_rng(1).random((3, 4)).astype(np.float32)
    batch = m.PointsBatch(batch=m.Batch(ids=[1, 2, 3], vectors=vectors.tolist()))
    parsed = parse(g.PointInsertOperations, orjson.dumps(wire(batch)))
    assert isinstance(parsed, g.PointsBatch)
    assert np.allclose(np.asarray(parsed.batch.vectors, dtype=np.float32), vectors)


def test_dispatchers_return_the_variant():
    assert isinstance(parse(g.PointInsertOperations, b'{"points": []}'), g.PointsList)
    assert isinstance(parse(g.PointInsertOperations, b'{"batch": {"ids": [], "vectors": []}}'), g.PointsBatch)
    assert isinstance(parse(g.PointsSelector, b'{"points": [1]}'), g.PointIdsList)
    assert isinstance(parse(g.PointsSelector, b'{"filter": {}}'), g.FilterSelector)


# ---------------------------------------------------------------------------
# Shapes the engine relies on.
# ---------------------------------------------------------------------------


def test_filter_round_trip_keeps_qdrant_shape_and_lists_one_or_many():
    body = {
        "must": {"key": "a", "match": {"value": 5}},
        "should": [{"key": "b", "range": {"gt": 1, "lte": 2.5}}, {"has_id": [UUID.upper(), 3]}],
        "must_not": {"must": {"is_empty": {"key": "c"}}},
        "min_should": {"conditions": [{"key": "d", "match": {"any": ["x"]}}], "min_count": 1},
    }
    parsed = parse(g.CountRequest, orjson.dumps({"filter": body, "exact": False}))
    assert dump(parsed) == {
        "filter": {
            "must": [{"key": "a", "match": {"value": 5}}],
            "should": [{"key": "b", "range": {"gt": 1, "lte": 2.5}}, {"has_id": [UUID, 3]}],
            "must_not": [{"must": [{"is_empty": {"key": "c"}}]}],
            "min_should": {"conditions": [{"key": "d", "match": {"any": ["x"]}}], "min_count": 1},
        },
        "exact": False,
    }


def test_aliases_dump_under_canonical_names():
    parsed = parse(g.SearchRequest, b'{"vector": [1, 2], "top": 3, "with_vectors": true}')
    assert dump(parsed) == {"vector": [1.0, 2.0], "limit": 3, "with_vector": True}
    parsed = parse(g.PointInsertOperations, b'{"points": [{"id": 1, "vectors": {"a": [1]}}]}')
    assert dump(parsed) == {"points": [{"id": 1, "vector": {"a": [1.0]}}]}
    parsed = parse(g.CreateCollection, b'{"optimizer_config": {"indexing_threshold": 0}, "quantization": null}')
    assert dump(parsed) == {"optimizers_config": {"indexing_threshold": 0}, "quantization_config": None}
    parsed = parse(g.FilterSelector, b'{"filter": {"must": [{"key": "n", "match": {"except": [1]}}]}}')
    assert dump(parsed)["filter"]["must"][0]["match"] == {"except": [1]}


def test_unknown_fields_are_ignored_except_in_filters():
    parsed = parse(g.SearchRequest, b'{"vector": [1], "limit": 1, "future_option": {"x": 1}}')
    assert dump(parsed) == {"vector": [1.0], "limit": 1}
    with pytest.raises(FormatError):
        parse(g.SearchRequest, b'{"vector": [1], "limit": 1, "filter": {"muts": []}}')


def test_query_variants_parse_to_their_models():
    q = parse(g.QueryRequest, b'{"query": {"nearest": [1, 2]}}').query
    assert isinstance(q, g.NearestQuery)
    assert parse(g.QueryRequest, b'{"query": 5}').query == 5
    assert parse(g.QueryRequest, b'{"query": [1, 2]}').query == [1.0, 2.0]
    assert isinstance(parse(g.QueryRequest, b'{"query": {"indices": [1], "values": [2]}}').query, g.SparseVector)
    assert isinstance(parse(g.QueryRequest, b'{"query": {"fusion": "rrf"}}').query, g.FusionQuery)
    assert isinstance(parse(g.QueryRequest, b'{"query": {"sample": "random"}}').query, g.SampleQuery)
    assert isinstance(parse(g.QueryRequest, b'{"query": {"order_by": "k"}}').query, g.OrderByQuery)
    ctx = parse(g.QueryRequest, b'{"query": {"context": {"positive": 1, "negative": 2}}}').query
    assert isinstance(ctx, g.ContextQuery) and len(ctx.context) == 1


# ---------------------------------------------------------------------------
# Ids.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw,expected",
    [
        (0, 0),
        (7, 7),
        (2**64 - 1, 2**64 - 1),
        (UUID, UUID),
        (UUID.upper(), UUID),
        (UUID.replace("-", ""), UUID),
        ("{" + UUID + "}", UUID),
        ("urn:uuid:" + UUID, UUID),
    ],
)
def test_canonical_id_accepts_u64_and_every_uuid_form(raw, expected):
    assert canonical_id(raw) == expected


@pytest.mark.parametrize(
    "raw,shown",
    [
        (-1, "-1"),
        (2**64, "18446744073709552000"),
        (1.5, "1.5"),
        (1.0, "1"),
        (True, "true"),
        (None, "Unit"),
        ("abc", "abc"),
        ("7", "7"),
        (UUID[:-1], UUID[:-1]),
        ("URN:uuid:" + UUID, "URN:uuid:" + UUID),
        ([1], "[U64(1)]"),
    ],
)
def test_canonical_id_rejects_everything_else_with_qdrants_text(raw, shown):
    with pytest.raises(ValueError) as info:
        canonical_id(raw)
    assert str(info.value) == (
        f"value {shown} is not a valid point ID, valid values are either an unsigned integer or a UUID"
    )


def test_path_point_id_reads_like_qdrants_from_str():
    assert path_point_id("42") == 42
    assert path_point_id("+042") == 42
    assert path_point_id(UUID.upper()) == UUID
    with pytest.raises(BadInput, match='Can not recognize "-1" as point id'):
        path_point_id("-1")
    with pytest.raises(BadInput, match='Can not recognize "abc" as point id'):
        path_point_id("abc")


def test_ids_in_bodies_come_out_canonical():
    body = {"ids": [UUID.upper(), "{" + UUID + "}", 3]}
    assert dump(parse(g.PointRequest, orjson.dumps(body)))["ids"] == [UUID, UUID, 3]


# ---------------------------------------------------------------------------
# Qdrant's documented examples.
# ---------------------------------------------------------------------------

ENDPOINT_MODELS = [
    (r"/points/query/groups$", g.QueryGroupsRequest),
    (r"/points/query/batch$|/query/batch$", g.QueryRequestBatch),
    (r"/points/query$", g.QueryRequest),
    (r"/points/search/matrix/(pairs|offsets)$", g.SearchMatrixRequest),
    (r"/points/search/batch$", g.SearchRequestBatch),
    (r"/points/search/groups$", g.SearchGroupsRequest),
    (r"/points/search$", g.SearchRequest),
    (r"/points/recommend/batch$", g.RecommendRequestBatch),
    (r"/points/recommend$", g.RecommendRequest),
    (r"/points/discover$", g.DiscoverRequest),
    (r"/points/scroll$", g.ScrollRequest),
    (r"/points/count$", g.CountRequest),
]


def _seed_examples():
    """(endpoint, body) of every ``http`` block in the seed documents; the
    markdown escapes some line ends with a backslash, which we drop."""
    out = []
    for path in sorted(SEEDS.glob("*.md")) if SEEDS.is_dir() else []:
        for block in re.findall(r"```http\n(.*?)```", path.read_text(), flags=re.S):
            head, _, body = block.partition("\n")
            if body.strip():
                out.append((head.split()[1], body.replace("\\\n", "\n")))
    return out


SEED_EXAMPLES = _seed_examples()


@pytest.mark.skipif(not SEED_EXAMPLES, reason="seed documents not present")
@pytest.mark.parametrize("endpoint,body", SEED_EXAMPLES, ids=[f"{i}" for i in range(len(SEED_EXAMPLES))])
def test_documented_examples_parse(endpoint, body):
    model_cls = next(cls for pattern, cls in ENDPOINT_MODELS if re.search(pattern, endpoint))
    raw = body.encode()
    parsed = parse(model_cls, raw)
    assert dump(parsed) == _lists(orjson.loads(raw)) or model_cls is g.SearchMatrixRequest


def test_tutorial_bodies_parse():
    """The requests the getting-started tutorial makes, as its client sends them."""
    bodies = [
        (g.CreateCollection, m.CreateCollection(vectors=m.VectorParams(size=100, distance=m.Distance.COSINE))),
        (
            g.PointInsertOperations,
            m.PointsBatch(batch=m.Batch(ids=[1, 2], vectors=[[0.1] * 100, [0.2] * 100], payloads=[{"artist": "a"}, {}])),
        ),
        (g.PointRequest, m.PointRequest(ids=[10, 14, 500], with_payload=True)),
        (g.PointsSelector, m.PointIdsList(points=[1000])),
        (g.CountRequest, m.CountRequest(exact=True)),
        (
            g.SearchRequest,
            m.SearchRequest(
                vector=[0.5] * 100,
                limit=3,
                filter=m.Filter(must=[m.FieldCondition(key="country", match=m.MatchValue(value="Australia"))]),
                with_payload=m.PayloadSelectorExclude(exclude=["year"]),
            ),
        ),
        (g.RecommendRequest, m.RecommendRequest(positive=[17], negative=[120, 180], limit=5, strategy="best_score")),
    ]
    for model_cls, client_model in bodies:
        sent = wire(client_model)
        assert dump(parse(model_cls, orjson.dumps(sent))) == _lists(sent)


# ---------------------------------------------------------------------------
# Large bodies.
# ---------------------------------------------------------------------------


def test_thousand_point_upsert_parses():
    """A 7 MB upsert body reads whole (what validating it costs beside parsing it
    is measured by ``python -m bench.micro``)."""
    rng = np.random.default_rng(0)
    points = [{"id": i, "vector": rng.random(384).astype(np.float32).tolist(), "payload": {"n": i}} for i in range(1000)]
    body = orjson.dumps({"points": points})
    parsed = parse(g.PointInsertOperations, body)
    assert len(parsed.points) == 1000 and len(parsed.points[999].vector) == 384


def test_models_reject_with_errors_not_asserts():
    with pytest.raises(ValidationError):
        parse(g.SearchRequest, b'{"vector": [1], "limit": 0}')
    with pytest.raises(FormatError):
        parse(g.SearchRequest, b'{"vector": [1], "limit": -1}')
