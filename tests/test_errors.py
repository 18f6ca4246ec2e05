"""Qdrant's error answers: exact statuses and texts for bodies that do not
deserialize (400), bodies that break a validate rule (422), engine errors
(400/404/409/500) and HTTP-level errors (unknown route, wrong method, body too
large), plus the envelopes.

Texts come from Qdrant 1.15's source (named in gateway/errors.py and the
models); columns follow serde_json's counting (bytes consumed on the line).
"""

from __future__ import annotations

import json
import time

import orjson
import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import errors
from gateway import models as g
from gateway.errors import (
    BadRequest,
    FormatError,
    RouteNotFound,
    ValidationError,
    error_response,
    http_error,
    ok_envelope,
)
from gateway.models import jsontext, parse
from shard.types import BadInput, Conflict, NotFound, PointNotFound

UUID = "550e8400-e29b-41d4-a716-446655440000"
FORMAT = "Format error in JSON body: "
VALIDATION = "Validation error in JSON body: "
ID_ERROR = "is not a valid point ID, valid values are either an unsigned integer or a UUID"

# (model, body, expected text after "Format error in JSON body: ")
FORMAT_CASES = [
    # JSON syntax, as serde_json words it
    (g.SearchRequest, b"", "EOF while parsing a value at line 1 column 0"),
    (g.SearchRequest, b'{"vector": [1.0, 2.0], "limit": 3', "EOF while parsing an object at line 1 column 33"),
    (g.SearchRequest, b'{"vector":[1,NaN],"limit":1}', "expected value at line 1 column 14"),
    (g.SearchRequest, b'{"vector":[1,Infinity],"limit":1}', "expected value at line 1 column 14"),
    (g.SearchRequest, b'{"vector":[1,2],"limit":1,}', "trailing comma at line 1 column 27"),
    (g.SearchRequest, b"{} x", "trailing characters at line 1 column 4"),
    (g.SearchRequest, b'{"limit" 1}', "expected `:` at line 1 column 10"),
    (g.SearchRequest, b"{limit: 1}", "key must be a string at line 1 column 2"),
    (g.SearchRequest, b'{"vector":[1 2]}', "expected `,` or `]` at line 1 column 14"),
    (g.SearchRequest, b'{"a":tru}', "expected ident at line 1 column 9"),
    (g.SearchRequest, b'{"a":01}', "invalid number at line 1 column 7"),
    (g.SearchRequest, b'{"a":1e400}', "number out of range at line 1 column 10"),
    (g.SearchRequest, b'{"a":"\\x"}', "invalid escape at line 1 column 8"),
    (g.SearchRequest, b'{"a":"b', "EOF while parsing a string at line 1 column 7"),
    # types of a flattened request: no position, as Qdrant reports them
    (g.SearchRequest, b'{"vector":[1,2],"limit":"x"}', 'invalid type: string "x", expected usize'),
    (g.SearchRequest, b'{"vector":[1,2],"limit":-1}', "invalid value: integer `-1`, expected usize"),
    (g.SearchRequest, b'{"vector":[1,2],"limit":1.5}', "invalid type: floating point `1.5`, expected usize"),
    (g.SearchRequest, b'{"vector":[1,2],"limit":true}', "invalid type: boolean `true`, expected usize"),
    (g.SearchRequest, b'{"vector":[1,2],"limit":null}', "invalid type: null, expected usize"),
    (g.SearchRequest, b'{"vector":[1,2]}', "missing field `limit`"),
    (g.SearchRequest, b'{"limit":3}', "missing field `vector`"),
    (g.SearchRequest, b'{"vector":"abc","limit":3}', "data did not match any variant of untagged enum NamedVectorStruct"),
    (g.SearchRequest, b'{"vector":[1,"a"],"limit":3}', "data did not match any variant of untagged enum NamedVectorStruct"),
    (g.SearchRequest, b'{"vector":[1],"limit":1,"score_threshold":"x"}', 'invalid type: string "x", expected f32'),
    (g.SearchRequest, b'{"vector":[1],"limit":1,"with_payload":5}', "data did not match any variant of untagged enum WithPayloadInterface"),
    (g.SearchRequest, b'{"vector":[1],"limit":1,"filter":{"muts":[]}}', "unknown field `muts`, expected one of `should`, `min_should`, `must`, `must_not`"),
    (g.SearchRequest, b'{"vector":[1],"limit":1,"params":5}', "invalid type: integer `5`, expected struct SearchParams"),
    (g.ScrollRequest, b'{"filter":{"min_should":1}}', "invalid type: integer `1`, expected struct MinShould"),
    (g.ScrollRequest, b'{"filter":{"must":[{"key":"a","match":{"value":1.5}}]}}', "data did not match any variant of untagged enum Condition"),
    (g.ScrollRequest, b'{"filter":{"must":[{"key":"a[","match":{"value":1}}]}}', "data did not match any variant of untagged enum Condition"),
    (g.ScrollRequest, b'{"filter":{"must":"x"}}', 'invalid type: string "x", expected null, array or map'),
    (g.ScrollRequest, b'{"order_by":5}', "data did not match any variant of untagged enum OrderByInterface"),
    (g.ScrollRequest, b'{"with_vector":null}', "data did not match any variant of untagged enum WithVector"),
    (g.CountRequest, b'{"exact":null}', "invalid type: null, expected a boolean"),
    (g.RecommendRequest, b'{"positive":[1],"limit":1,"strategy":"foo"}', "unknown variant `foo`, expected one of `average_vector`, `best_score`, `sum_scores`"),
    (g.RecommendRequest, b'{"positive":["x"],"limit":1}', "data did not match any variant of untagged enum RecommendExample"),
    (g.QueryRequest, b'{"query":"rrf"}', "Expected some form of vector, id, or a type of query"),
    (g.QueryRequest, b'{"query":{"rrf":{"k":3}}}', "Expected some form of vector, id, or a type of query"),
    (g.QueryRequest, b'{"query":{"fusion":"rrf"},"prefetch":5}', "invalid type: integer `5`, expected null, array or map"),
    (g.PointRequest, b'{"ids":["abc"]}', f"value abc {ID_ERROR}"),
    (g.SearchRequestBatch, b'{"searches":[{"vector":[1],"limit":"x"}]}', 'invalid type: string "x", expected usize'),
    (g.SearchRequestBatch, b'{"searches":5}', "invalid type: integer `5`, expected a sequence at line 1 column 13"),
    (g.QueryRequestBatch, b'{}', "missing field `searches` at line 1 column 2"),
    # the upsert body goes through serde_json::Value in Qdrant: no positions
    (g.PointInsertOperations, b'{"points":[{"id":"abc","vector":[1]}]}', f"value abc {ID_ERROR}"),
    (g.PointInsertOperations, b'{"points":[{"id":-1,"vector":[1]}]}', f"value -1 {ID_ERROR}"),
    (g.PointInsertOperations, b'{"points":[{"id":1.5,"vector":[1]}]}', f"value 1.5 {ID_ERROR}"),
    (g.PointInsertOperations, b'{"points":[{"id":null,"vector":[1]}]}', f"value Unit {ID_ERROR}"),
    (g.PointInsertOperations, b'{"points":[{"id":true,"vector":[1]}]}', f"value true {ID_ERROR}"),
    (g.PointInsertOperations, b'{"points":[{"id":[1],"vector":[1]}]}', f"value [U64(1)] {ID_ERROR}"),
    (g.PointInsertOperations, b'{"points":[{"id":1}]}', "missing field `vector`"),
    (g.PointInsertOperations, b'{"points":[{"id":1,"vector":"x"}]}', "data did not match any variant of untagged enum VectorStruct"),
    (g.PointInsertOperations, b'{"points":[{"id":1,"vector":[1],"payload":[]}]}', "invalid type: sequence, expected a map"),
    (g.PointInsertOperations, b'{"pts":[]}', "Invalid PointInsertOperations format"),
    (g.PointInsertOperations, b"[]", "Invalid PointInsertOperations format"),
    (g.PointInsertOperations, b'{"batch":{"ids":[1]}}', "missing field `vectors`"),
    (g.PointsSelector, b"{}", "data did not match any variant of untagged enum PointsSelector"),
    (g.SetPayload, b'{"payload":{}}', "Either list of point ids or filter must be provided"),
    (g.DeletePayload, b'{"keys":["a"]}', "Either list of point ids or filter must be provided"),
    # non-flattened bodies: serde_json positions
    (g.CreateCollection, b'{"vectors":{"size":3,"distance":"Foo"}}', "data did not match any variant of untagged enum VectorsConfig at line 1 column 39"),
    (g.CreateCollection, b'{"vectors":{"size":0,"distance":"Dot"}}', "data did not match any variant of untagged enum VectorsConfig at line 1 column 39"),
    (g.CreateCollection, b'{"hnsw_config":{"m":-1}}', "invalid value: integer `-1`, expected usize at line 1 column 22"),
    (g.CreateCollection, b'{"hnsw_config":{"m":"x"}}', 'invalid type: string "x", expected usize at line 1 column 23'),
    (g.CreateCollection, b'{\n  "vectors": {"size": 4, "distance": "Cosine"},\n  "hnsw_config": {"m": "x"}\n}', 'invalid type: string "x", expected usize at line 3 column 26'),
    (g.CreateCollection, b'{"on_disk_payload":"yes"}', 'invalid type: string "yes", expected a boolean at line 1 column 24'),
    (g.CreateCollection, b'{"shard_number":-1}', "invalid value: integer `-1`, expected u32 at line 1 column 18"),
    (g.CreateCollection, b'{"shard_number":4294967296}', "invalid value: integer `4294967296`, expected u32 at line 1 column 26"),
    (g.CreateCollection, b"5", "invalid type: integer `5`, expected struct CreateCollection at line 1 column 1"),
    (g.UpdateCollection, b'{"params":{"replication_factor":0}}', "invalid value: integer `0`, expected a nonzero u32 at line 1 column 33"),
    (g.CreateFieldIndex, b'{"field_name":"a","field_schema":"foo"}', "data did not match any variant of untagged enum PayloadFieldSchema at line 1 column 39"),
    (g.CreateFieldIndex, b'{"field_name":"a[","field_schema":"keyword"}', "Invalid json path at line 1 column 18"),
    (g.CreateFieldIndex, b'{"field_schema":"keyword"}', "missing field `field_name` at line 1 column 26"),
    (g.ChangeAliasesOperation, b'{"actions":[{"create_alias":{"collection_name":"a"}}]}', "data did not match any variant of untagged enum AliasOperations at line 1 column 53"),
    (g.DeleteVectors, b'{"points":[1]}', "missing field `vector` at line 1 column 14"),
    (g.DeleteVectors, b'{"points":[1],"vector":["a"],"filter":{"x":1}}', "unknown field `x`, expected one of `should`, `min_should`, `must`, `must_not` at line 1 column 42"),
    (g.UpdateOperations, b'{"operations":[{"upsert":{"points":[{"id":"x","vector":[1]}]}}]}', "data did not match any variant of untagged enum UpdateOperation at line 1 column 63"),
]


@pytest.mark.parametrize("model_cls,body,text", FORMAT_CASES, ids=[f"{i}-{c.__name__}" for i, (c, _, _) in enumerate(FORMAT_CASES)])
def test_format_errors_are_400_with_serdes_text(model_cls, body, text):
    with pytest.raises(FormatError) as info:
        parse(model_cls, body)
    status, envelope = error_response(info.value, time.perf_counter() - 5)
    assert status == 400
    assert envelope == {"status": {"error": FORMAT + text}, "time": 0.0}


# (model, body, [(path, message), ...])
VALIDATION_CASES = [
    (g.SearchRequest, b'{"vector":[1,2],"limit":0}', [("search_request.limit", "value 0 invalid, must be 1 or larger")]),
    (g.SearchRequest, b'{"vector":[1],"limit":1,"params":{"quantization":{"oversampling":0.5}}}', [("search_request.params.quantization.oversampling", "value 0.5 invalid, must be 1.0 or larger")]),
    (g.SearchRequestBatch, b'{"searches":[{"vector":[1],"limit":1},{"vector":[1],"limit":0}]}', [("searches[1].search_request.limit", "value 0 invalid, must be 1 or larger")]),
    (g.SearchGroupsRequest, b'{"vector":[1],"group_by":"a","group_size":1,"limit":0}', [("search_group_request.group_request.limit", "value 0 invalid, must be 1 or larger")]),
    (g.RecommendRequest, b'{"positive":[1],"limit":0}', [("recommend_request.limit", "value 0 invalid, must be 1 or larger")]),
    (g.DiscoverRequest, b'{"target":1,"limit":0}', [("discover_request.limit", "value 0 invalid, must be 1 or larger")]),
    (g.QueryRequest, b'{"query":{"recommend":{"positive":[1]}},"limit":0}', [("internal.limit", "value 0 invalid, must be 1 or larger")]),
    (g.QueryRequest, b'{"prefetch":{"limit":0},"query":{"fusion":"rrf"}}', [("internal.prefetch[0].limit", "value 0 invalid, must be 1 or larger")]),
    (g.QueryRequest, b'{"query":{"nearest":[1],"mmr":{"diversity":1.5}}}', [("internal.query.mmr.diversity", "value 1.5 invalid, must be from 0.0 to 1.0")]),
    (g.QueryRequest, b'{"query":{"nearest":[1],"mmr":{"candidates_limit":20000}}}', [("internal.query.mmr.candidates_limit", "value 20000 invalid, must be 16384 or smaller")]),
    (g.QueryRequest, b'{"query":{"indices":[1,1],"values":[1,2]}}', [("internal.query.indices", "Validation error: must be unique [{}]")]),
    (g.QueryRequest, b'{"query":{"indices":[1],"values":[1,2]}}', [("internal.query.values", "Validation error: must be the same length as indices [{}]")]),
    (g.QueryRequest, b'{"query":{"recommend":{}}}', [("internal.query.recommend.positives, negatives", "Validation error: At least one positive or negative vector/id must be provided [{}]")]),
    (g.QueryGroupsRequest, b'{"group_by":"a","group_size":0}', [("search_group_request.group_request.group_size", "value 0 invalid, must be 1 or larger")]),
    (g.QueryRequestBatch, b'{"searches":[{"limit":0}]}', [("searches[0].internal.limit", "value 0 invalid, must be 1 or larger")]),
    (g.ScrollRequest, b'{"limit":0}', [("scroll_request.limit", "value 0 invalid, must be 1 or larger")]),
    (g.ScrollRequest, b'{"filter":{"must":[{"key":"a"}]}}', [("scroll_request.filter.must[0].__all__", "Validation error: At least one field condition must be specified [{}]")]),
    (g.ScrollRequest, b'{"filter":{"must":[{"key":"g","geo_polygon":{"exterior":{"points":[{"lon":0,"lat":0},{"lon":1,"lat":0},{"lon":0,"lat":0}]}}}]}}', [("scroll_request.filter.must[0].geo_polygon.exterior", "value invalid, the size must be at least 4, got 3")]),
    (g.ScrollRequest, b'{"filter":{"must":[{"key":"g","geo_polygon":{"exterior":{"points":[{"lon":0,"lat":0},{"lon":1,"lat":0},{"lon":1,"lat":1},{"lon":2,"lat":2}]}}}]}}', [("scroll_request.filter.must[0].geo_polygon.exterior", "value invalid, the first and the last points should be same to form a closed line")]),
    (g.CountRequest, b'{"filter":{"should":{"must":{"key":"b"}}}}', [("count_request.filter.should[0].must[0].__all__", "Validation error: At least one field condition must be specified [{}]")]),
    (g.FacetRequest, b'{"key":"city","limit":0}', [("facet_request.limit", "value 0 invalid, must be 1 or larger")]),
    (g.SearchMatrixRequest, b'{"sample":1,"limit":0}', [("search_request.sample", "value 1 invalid, must be 2 or larger"), ("search_request.limit", "value 0 invalid, must be 1 or larger")]),
    (g.CreateCollection, b'{"vectors":{"size":65537,"distance":"Dot"}}', [("vectors.size", "value 65537 invalid, must be from 1 to 65536")]),
    (g.CreateCollection, b'{"vectors":{"a":{"size":70000,"distance":"Dot"}}}', [("vectors.?.size", "value 70000 invalid, must be from 1 to 65536")]),
    (g.CreateCollection, b'{"shard_number":0,"replication_factor":0,"write_consistency_factor":0}', [("shard_number", "value 0 invalid, must be 1 or larger"), ("replication_factor", "value 0 invalid, must be 1 or larger"), ("write_consistency_factor", "value 0 invalid, must be 1 or larger")]),
    (g.CreateCollection, b'{"hnsw_config":{"ef_construct":2},"wal_config":{"wal_capacity_mb":0}}', [("hnsw_config.ef_construct", "value 2 invalid, must be 4 or larger"), ("wal_config.wal_capacity_mb", "value 0 invalid, must be 1 or larger")]),
    (g.CreateCollection, b'{"vectors":{"size":3,"distance":"Dot","hnsw_config":{"full_scan_threshold":5}}}', [("vectors.hnsw_config.full_scan_threshold", "value 5 invalid, must be 10 or larger")]),
    (g.CreateCollection, b'{"optimizers_config":{"max_segment_size":0}}', [("optimizers_config.max_segment_size", "value 0 invalid, must be 1 or larger")]),
    (g.CreateCollection, b'{"quantization_config":{"scalar":{"type":"int8","quantile":0.3}}}', [("quantization_config.scalar.quantile", "value 0.30000001192092896 invalid, must be from 0.5 to 1.0")]),
    (g.UpdateCollection, b'{"vectors":{"":{"hnsw_config":{"ef_construct":1}}}}', [("vectors.?.hnsw_config.ef_construct", "value 1 invalid, must be 4 or larger")]),
    (g.CreateFieldIndex, b'{"field_name":"n","field_schema":{"type":"integer","lookup":false,"range":false}}', [("field_schema.__all__", "Validation error: the 'lookup' and 'range' capabilities can't be both disabled [{}]")]),
    (g.PointInsertOperations, b'{"batch":{"ids":[1,2],"vectors":[[1,2]]}}', [("batch.batch", "number of ids and vectors must be equal (2 != 1)")]),
    (g.PointInsertOperations, b'{"batch":{"ids":[1],"vectors":[[1]],"payloads":[{},{}]}}', [("batch.batch", "number of ids and payloads must be equal (1 != 2)")]),
    (g.PointInsertOperations, b'{"points":[{"id":1,"vector":{"s":{"indices":[1,1],"values":[1,2]}}}]}', [("points[0].vector.?.indices", "Validation error: must be unique [{}]")]),
    (g.PointInsertOperations, b'{"points":[{"id":1,"vector":{"m":[[1],[]]}}]}', [("points[0].vector.?.data", "all vectors must be non-empty")]),
    (g.PointInsertOperations, b'{"points":[{"id":1,"vector":{"m":[[1,2],[3]]}}]}', [("points[0].vector.?.data", "all vectors must have the same dimension, found vector with dimension 1")]),
    (g.PointInsertOperations, b'{"points":[{"id":1,"vector":[[1,2],[3,4,5]]}]}', [("points[0].vector.data", "all vectors must have the same dimension, found vector with dimension 3")]),
    (g.QueryRequest, b'{"query":[[1,2],[]],"using":"m"}', [("internal.query.data", "all vectors must be non-empty")]),
    (g.QueryRequest, b'{"query":{"recommend":{"positive":[[[1,2],[3]]]}},"using":"m"}', [("internal.query.recommend.data", "all vectors must have the same dimension, found vector with dimension 1")]),
    (g.UpdateVectors, b'{"points":[]}', [("points", "must specify points to update")]),
    (g.UpdateVectors, b'{"points":[{"id":1,"vector":{}}]}', [("points[0].vector", "must specify vectors to update for point")]),
    (g.DeleteVectors, b'{"points":[1],"vector":[]}', [("vector", "must specify vector names to delete")]),
    (g.UpdateOperations, b'{"operations":[{"update_vectors":{"points":[]}}]}', [("operations[0].update_vectors.points", "must specify points to update")]),
]


@pytest.mark.parametrize("model_cls,body,errs", VALIDATION_CASES, ids=[f"{i}-{c.__name__}" for i, (c, _, _) in enumerate(VALIDATION_CASES)])
def test_validation_errors_are_422_with_qdrants_labels(model_cls, body, errs):
    with pytest.raises(ValidationError) as info:
        parse(model_cls, body)
    status, envelope = error_response(info.value)
    assert status == 422
    text = VALIDATION + "[" + "; ".join(f"{p}: {msg}" for p, msg in errs) + "]"
    assert envelope == {"status": {"error": text}, "time": 0.0}


def test_qdrant_leaves_recommend_groups_unvalidated():
    # RecommendGroupsRequestInternal's group_request is not #[validate(nested)]
    # in Qdrant: a zero group_size/limit is not a 422 there, nor here.
    parsed = parse(g.RecommendGroupsRequest, b'{"positive":[1],"group_by":"a","group_size":0,"limit":0}')
    assert (parsed.group_size, parsed.limit) == (0, 0)


# ---------------------------------------------------------------------------
# Engine and REST-layer errors.
# ---------------------------------------------------------------------------

ENGINE_CASES = [
    (BadInput(errors.vector_dimension(3, 2)), 400, "Wrong input: Vector dimension error: expected dim: 3, got 2"),
    (BadInput("Wrong input: " + errors.vector_dimension(3, 2)), 400, "Wrong input: Vector dimension error: expected dim: 3, got 2"),
    (BadInput(errors.vector_name_not_exists("nope")), 400, "Wrong input: Not existing vector name error: nope"),
    (BadInput(errors.missing_order_by_index("price")), 400, "Wrong input: No range index for `order_by` key: `price`. Please create one to use `order_by`. Check https://qdrant.tech/documentation/concepts/indexing/#payload-index to see which payload schemas support Range conditions"),
    (BadInput(errors.empty_positive_average()), 400, "Wrong input: Positive vectors should not be empty with `average` strategy"),
    (BadInput(errors.point_id_not_recognized("abc")), 400, 'Wrong input: Can not recognize "abc" as point id'),
    (BadInput(errors.dense_sparse_name_clash("a")), 400, "Wrong input: Dense and sparse vector names must be unique - duplicate found with 'a'"),
    (BadRequest(errors.no_positive_for_average_vector()), 400, "Bad request: At least one positive vector ID required with this strategy"),
    (BadRequest(errors.no_examples_for_strategy()), 400, "Bad request: At least one positive or negative vector ID required with this strategy"),
    (BadInput("Bad request: " + errors.score_threshold_with_order_by()), 400, "Bad request: Can't use score_threshold with an order_by query."),
    (NotFound(errors.collection_not_found("docs")), 404, "Not found: Collection `docs` doesn't exist!"),
    (NotFound("Not found: " + errors.collection_not_found("docs")), 404, "Not found: Collection `docs` doesn't exist!"),
    (NotFound(errors.alias_not_found("a1")), 404, "Not found: Alias a1 does not exists!"),
    (NotFound(errors.lookup_collection_not_found("other")), 404, "Not found: Collection other not found"),
    (NotFound(errors.point_does_not_exist(7)), 404, "Not found: Point with id 7 does not exists!"),
    (PointNotFound(7), 404, "Not found: No point with id 7 found"),
    (PointNotFound(UUID), 404, f"Not found: No point with id {UUID} found"),
    (Conflict(errors.collection_already_exists("docs")), 409, "Wrong input: Collection `docs` already exists!"),
    (RuntimeError("boom"), 500, "Service internal error: boom"),
]


@pytest.mark.parametrize("exc,status,text", ENGINE_CASES, ids=[f"{i}-{type(e).__name__}" for i, (e, _, _) in enumerate(ENGINE_CASES)])
def test_engine_errors_map_to_qdrant_status_and_text(exc, status, text):
    started = time.perf_counter()
    got_status, envelope = error_response(exc, started)
    assert got_status == status
    assert envelope["status"] == {"error": text}
    assert set(envelope) == {"status", "time"}
    assert isinstance(envelope["time"], float) and envelope["time"] >= 0.0
    assert errors.point_not_found(7) == "No point with id 7 found"


def test_engine_error_wrapped_by_a_remote_call_keeps_its_mapping():
    class RemoteTaskError(Exception):  # shaped like ray.exceptions.RayTaskError
        def __init__(self, cause):
            super().__init__("task failed")
            self.cause = cause

    status, envelope = error_response(RemoteTaskError(NotFound(errors.collection_not_found("x"))))
    assert (status, envelope["status"]["error"]) == (404, "Not found: Collection `x` doesn't exist!")


def test_unknown_route_and_wrong_method_are_404_with_an_empty_body():
    assert error_response(RouteNotFound()) == (404, None)
    assert http_error(web.HTTPNotFound()) == (404, None)
    assert http_error(web.HTTPMethodNotAllowed("DELETE", ["GET", "PUT"])) == (404, None)


def test_body_over_the_limit_is_qdrants_payload_error():
    exc = web.HTTPRequestEntityTooLarge(max_size=33554432, actual_size=40000000)
    assert http_error(exc, content_length=40000000) == (
        400,
        {
            "status": {
                "error": "Payload error: JSON payload (40000000 bytes) is larger than allowed (limit: 33554432 bytes)."
            },
            "time": 0.0,
        },
    )
    status, envelope = http_error(exc)
    assert status == 400
    assert envelope["status"]["error"] == "Payload error: JSON payload has exceeded limit (33554432 bytes)."
    too_large = errors.PayloadTooLarge(10, 5)
    assert error_response(too_large) == (
        400,
        {"status": {"error": "Payload error: JSON payload (10 bytes) is larger than allowed (limit: 5 bytes)."}, "time": 0.0},
    )


def test_other_http_errors_keep_their_status():
    status, envelope = http_error(web.HTTPBadRequest(text="Query deserialize error: bad"))
    assert status == 400 and envelope["status"]["error"] == "Query deserialize error: bad"


def test_ok_envelope_has_qdrants_keys_and_elapsed_seconds():
    started = time.perf_counter() - 0.25
    body = ok_envelope({"count": 3}, started)
    assert set(body) == {"result", "status", "time"}
    assert body["result"] == {"count": 3} and body["status"] == "ok"
    assert 0.25 <= body["time"] < 5
    assert ok_envelope(True)["time"] == 0.0


def test_error_texts_have_one_source():
    # The same wording wherever Shoal raises these (and the engine's own text
    # in shard.types agrees with the REST text).
    assert str(PointNotFound(7)) == errors.point_not_found(7)
    assert errors.validation_text([("a", "x"), ("b", "y")]) == "Validation error in JSON body: [a: x; b: y]"
    assert FormatError("boom").text == "Format error in JSON body: boom"


# ---------------------------------------------------------------------------
# The JSON text helpers behind the positions.
# ---------------------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=20,
)


def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, prefix + (i,))


def _at(value, path):
    for step in path:
        value = value[step]
    return value


@settings(max_examples=150, deadline=None)
@given(value=JSON_VALUES, indent=st.sampled_from([None, 1, 4]), ascii_only=st.booleans(), pick=st.integers(0, 10**6))
def test_locate_finds_the_exact_text_of_any_value(value, indent, ascii_only, pick):
    body = json.dumps(value, indent=indent, ensure_ascii=ascii_only).encode()
    paths = list(_paths(value))
    path = paths[pick % len(paths)]
    start, end, _ = jsontext.locate(body, path)
    assert json.loads(body[start:end]) == _at(value, path)


@settings(max_examples=150, deadline=None)
@given(value=JSON_VALUES)
def test_syntax_checker_accepts_what_serde_json_reads(value):
    assert jsontext.syntax_error(orjson.dumps(value)) is None


@pytest.mark.parametrize(
    "body,message",
    [
        (b"[1,2", "EOF while parsing a list at line 1 column 4"),
        (b'{"a":1 "b":2}', "expected `,` or `}` at line 1 column 8"),
        (b'{"a":[1,]}', "trailing comma at line 1 column 9"),
        (b'{"a":-}', "invalid number at line 1 column 7"),
        (b'{"a":1.}', "invalid number at line 1 column 8"),
        (b'{"a":"\x01"}', "control character (\\u0000-\\u001F) found while parsing a string at line 1 column 7"),
        (b'{"a":"\\ud800"}', "unexpected end of hex escape at line 1 column 13"),
        (b'\n\n  nux', "expected ident at line 3 column 5"),
        (b'\n\n  nul', "EOF while parsing a value at line 3 column 5"),
        (b"[" * 128 + b"]" * 128, "recursion limit exceeded at line 1 column 128"),
        (b"\xef\xbb\xbf{}", "expected value at line 1 column 1"),
    ],
)
def test_syntax_errors_read_like_serde_json(body, message):
    assert jsontext.syntax_error(body) == message
    if body.count(b"[") < 128:  # orjson itself reads deeper nesting than serde_json
        with pytest.raises(FormatError) as info:
            g.decode(body)
        assert info.value.text == FORMAT + message
