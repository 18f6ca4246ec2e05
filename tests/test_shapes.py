"""Search and query bodies read by shape (gateway.models.shapes) read exactly as
the whole reading does: the same JSON out, the same errors, whatever vector a
body of a known shape brings; and no request can change what the next one gets."""

from __future__ import annotations

import orjson
import pytest

from gateway import models as g
from gateway.models import dump, parse, read
from gateway.models.shapes import MAX_SHAPES, ShapeCache
from tests.test_models import CASES, wire

SHAPED = [(cls, body) for cls, body in CASES if cls in (g.SearchRequest, g.QueryRequest)]


def outcome(fn):
    """What reading a body gives: ("ok", result) or the error's type and text."""
    try:
        return ("ok", fn())
    except Exception as exc:
        return (type(exc).__name__, str(exc))


def whole(model_cls, body: bytes):
    return outcome(lambda: dump(parse(model_cls, body)))


def with_vector(sent: dict, vector) -> dict:
    """``sent`` with its dense query vector (wherever it is) replaced."""
    out = dict(sent)
    if isinstance(out.get("vector"), list):
        out["vector"] = vector
    elif isinstance(out.get("query"), list) and not isinstance(out["query"][0], list):
        out["query"] = vector
    elif isinstance(out.get("query"), dict) and isinstance(out["query"].get("nearest"), list):
        out["query"] = {**out["query"], "nearest": vector}
    return out


@pytest.mark.parametrize("model_cls,client_model", SHAPED, ids=[f"{i}-{c.__name__}" for i, (c, _) in enumerate(SHAPED)])
def test_bodies_of_a_known_shape_read_as_the_whole_reading(model_cls, client_model):
    sent = wire(client_model)
    for vector in ([0.5, -1.0, 2.0], [3, 4], [0.25] * 70, [1e-40, 7.0]):
        body = orjson.dumps(with_vector(sent, vector))
        expected = whole(model_cls, body)
        assert outcome(lambda: read(model_cls, body)) == expected
        assert outcome(lambda: read(model_cls, body)) == expected  # now by its shape


BAD_VECTORS = [["a", 1.0], [1.0, True], [1.0, None], [1.0, [2.0]], [1.0, {"x": 1}], ["1.0", 2.0]]


@pytest.mark.parametrize("vector", BAD_VECTORS, ids=[orjson.dumps(v).decode() for v in BAD_VECTORS])
@pytest.mark.parametrize("model_cls,first", [
    (g.SearchRequest, {"vector": [0.1, 0.2], "limit": 3, "filter": {"must": [{"key": "a", "match": {"value": 1}}]}}),
    (g.QueryRequest, {"query": [0.1, 0.2], "limit": 3}),
    (g.QueryRequest, {"query": {"nearest": [0.1, 0.2]}, "limit": 3}),
])
def test_a_bad_vector_in_a_known_shape_fails_as_the_whole_reading(model_cls, first, vector):
    read(model_cls, orjson.dumps(first))  # the shape is known now
    body = orjson.dumps(with_vector(first, vector))
    expected = whole(model_cls, body)
    assert expected[0] != "ok" or model_cls is g.QueryRequest  # a list of lists is a multivector query
    assert outcome(lambda: read(model_cls, body)) == expected


def test_a_rule_breach_beside_the_vector_is_reported_every_time():
    body = orjson.dumps({"vector": [0.1, 0.2], "limit": 0})
    expected = whole(g.SearchRequest, body)
    assert expected[0] == "ValidationError"
    for _ in range(3):
        assert outcome(lambda: read(g.SearchRequest, body)) == expected


def test_a_request_cannot_change_what_the_next_one_reads():
    body = {"vector": [0.1, 0.2], "limit": 3, "filter": {"must": [{"key": "a", "match": {"value": 1}}]}}
    first = read(g.SearchRequest, orjson.dumps(body))
    first["filter"]["must"].append({"key": "b", "match": {"value": 2}})
    first["limit"] = 99
    second = read(g.SearchRequest, orjson.dumps(body))
    second["vector"].append(5.0)
    third = read(g.SearchRequest, orjson.dumps(body))
    assert third == dump(parse(g.SearchRequest, orjson.dumps(body)))


def counting(model_cls, reads: list):
    """A ``whole`` reader for a body that notes each whole reading in ``reads``."""
    def reader(body):
        def go():
            reads.append(1)
            return dump(parse(model_cls, orjson.dumps(body)))
        return go
    return reader


def test_shapes_kept_are_bounded_and_the_least_recent_goes_first():
    cache = ShapeCache((("vector",),))
    reads = []
    reader = counting(g.SearchRequest, reads)

    bodies = [{"vector": [0.1], "limit": n} for n in range(1, MAX_SHAPES + 2)]
    for body in bodies:
        cache.read(body, reader(body))
    assert len(reads) == MAX_SHAPES + 1
    cache.read(bodies[-1], reader(bodies[-1]))  # kept: no whole reading
    assert len(reads) == MAX_SHAPES + 1
    cache.read(bodies[0], reader(bodies[0]))  # the oldest was dropped
    assert len(reads) == MAX_SHAPES + 2


HYBRID = {"prefetch": [{"query": [0.1, 0.2], "using": "dense", "limit": 20, "params": {"hnsw_ef": 64}},
                       {"query": {"indices": [1, 5], "values": [0.5, 1.0]}, "using": "text", "limit": 20,
                        "prefetch": {"query": {"nearest": [0.3, 0.4]}, "using": "dense"}}],
          "query": {"fusion": "rrf"}, "limit": 10, "with_payload": True}

SPARSE_VECTORS = [
    {"indices": [7, 3, 9], "values": [1.0, 2.0, 3.0]},  # unsorted: taken
    {"indices": [1, 1], "values": [1.0, 2.0]},  # repeated index
    {"indices": [1, 2], "values": [1.0]},  # lengths differ
    {"indices": [-1], "values": [1.0]},  # not a u32
    {"indices": [1.5], "values": [1.0]},
    {"indices": [1], "values": ["x"]},
    {"indices": [], "values": []},
]


@pytest.mark.parametrize("sparse", SPARSE_VECTORS, ids=[orjson.dumps(v).decode() for v in SPARSE_VECTORS])
@pytest.mark.parametrize("dense", [[0.5, -1.0], [3, 4], ["a", 1.0]], ids=["floats", "ints", "bad"])
def test_hybrid_bodies_of_a_known_shape_read_as_the_whole_reading(sparse, dense):
    """A prefetch tree's vectors, dense and sparse, at every level, are taken out of
    its shape: a body of a known shape reads as the whole reading, bad vectors
    failing with the same error (its path in the tree included)."""
    read(g.QueryRequest, orjson.dumps(HYBRID))  # the shape is known now
    body = {**HYBRID, "prefetch": [{**HYBRID["prefetch"][0], "query": dense},
                                   {**HYBRID["prefetch"][1], "query": sparse}]}
    raw = orjson.dumps(body)
    expected = whole(g.QueryRequest, raw)
    assert outcome(lambda: read(g.QueryRequest, raw)) == expected
    assert outcome(lambda: read(g.QueryRequest, raw)) == expected


def test_hybrid_shapes_are_read_by_shape():
    """The second body of a hybrid shape does not go the whole way."""
    cache = ShapeCache((("query",), ("query", "nearest")), nested="prefetch")
    reads = []
    reader = counting(g.QueryRequest, reads)

    second = {**HYBRID, "prefetch": [{**HYBRID["prefetch"][0], "query": [0.9, 0.8]}, HYBRID["prefetch"][1]]}
    first_out = cache.read(HYBRID, reader(HYBRID))
    second_out = cache.read(second, reader(second))
    assert len(reads) == 1
    assert second_out == dump(parse(g.QueryRequest, orjson.dumps(second))) != first_out
