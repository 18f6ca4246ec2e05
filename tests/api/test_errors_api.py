"""Raw HTTP: status codes, Qdrant's error texts and envelopes, and atomic rejection.

Clients match on these texts (qdrant-client raises ``UnexpectedResponse`` carrying the
body; other SDKs parse ``status.error``), so they are checked exactly where Qdrant's
text is stable, and by prefix where it quotes serde's parser message.
"""

from __future__ import annotations

import uuid

import pytest

from .rawhttp import call, error_text


@pytest.fixture
def coll(base_url, shard_number):
    """A 3-dim Cosine collection with points 1..4; dropped afterwards."""
    name = f"err_{uuid.uuid4().hex[:10]}"
    status, body = call("PUT", f"{base_url}/collections/{name}",
                        {"vectors": {"size": 3, "distance": "Cosine"}, "shard_number": shard_number})
    assert (status, body.get("result")) == (200, True), body
    status, body = call("PUT", f"{base_url}/collections/{name}/points?wait=true", {"points": [
        {"id": i, "vector": [0.1 * i, 0.2, 0.3], "payload": {"n": i}} for i in range(1, 5)]})
    assert status == 200, body
    yield f"{base_url}/collections/{name}", name
    call("DELETE", f"{base_url}/collections/{name}")


def assert_error(response, status: int, text: str | None = None, prefix: str | None = None):
    got_status, body = response
    message = error_text(body)
    assert got_status == status, f"expected {status}, got {got_status}: {body!r}"
    assert isinstance(body, dict) and isinstance(body.get("time"), float), body
    assert body.get("result") is None, body
    if text is not None:
        assert message == text, f"error text\n  expected: {text!r}\n  got:      {message!r}"
    if prefix is not None:
        assert message and message.startswith(prefix), f"expected prefix {prefix!r}, got {message!r}"


def count(url: str) -> int:
    status, body = call("POST", f"{url}/points/count", {"exact": True})
    assert status == 200, body
    return body["result"]["count"]


def test_root_and_success_envelope(base_url, coll):
    status, body = call("GET", base_url + "/")
    assert status == 200
    assert body["title"] == "qdrant - vector search engine"
    assert body["version"].startswith("1.15."), body
    url, _ = coll
    status, body = call("POST", f"{url}/points/count", {"exact": True})
    assert status == 200
    assert set(body) >= {"result", "status", "time"}, body
    assert body["status"] == "ok" and isinstance(body["time"], float)
    assert body["result"] == {"count": 4}
    status, body = call("GET", f"{base_url}/readyz")
    assert status == 200


def test_vector_dimension_error(coll):
    url, _ = coll
    assert_error(call("PUT", f"{url}/points?wait=true", {"points": [{"id": 9, "vector": [1.0, 2.0]}]}),
                 400, "Wrong input: Vector dimension error: expected dim: 3, got 2")
    assert_error(call("POST", f"{url}/points/search", {"vector": [1.0, 2.0], "limit": 3}),
                 400, "Wrong input: Vector dimension error: expected dim: 3, got 2")


@pytest.mark.parametrize("raw", [
    b'{"vector": [1.0, 2.0, 3.0], "limit": 3',            # truncated
    b'{"vector": [1.0, NaN, 3.0], "limit": 3}',           # NaN is not JSON
    b'{"vector": [1.0, 2.0, 3.0], "limit": "three"}',     # wrong type
    b'{"vector": "abc", "limit": 3}',
    b'{"limit": 3}',                                       # missing field
], ids=["truncated", "nan", "limit-type", "vector-type", "missing-vector"])
def test_format_errors_search(coll, raw):
    url, _ = coll
    assert_error(call("POST", f"{url}/points/search", raw=raw), 400,
                 prefix="Format error in JSON body: ")


@pytest.mark.parametrize("point_id", ["not-a-uuid", -1, 1.5, None, [1]],
                         ids=["bad-uuid", "negative", "float", "null", "list"])
def test_format_errors_bad_ids(coll, point_id):
    url, _ = coll
    assert_error(call("PUT", f"{url}/points?wait=true",
                      {"points": [{"id": point_id, "vector": [1.0, 2.0, 3.0]}]}),
                 400, prefix="Format error in JSON body: ")


def test_validation_errors(base_url, coll):
    url, _ = coll
    assert_error(call("POST", f"{url}/points/search", {"vector": [1.0, 2.0, 3.0], "limit": 0}),
                 422, "Validation error in JSON body: [search_request.limit: value 0 invalid, "
                      "must be 1 or larger]")
    assert_error(call("POST", f"{url}/points/query", {"query": [1.0, 2.0, 3.0], "limit": 0}),
                 422, "Validation error in JSON body: [internal.limit: value 0 invalid, "
                      "must be 1 or larger]")
    name = f"big_{uuid.uuid4().hex[:8]}"
    assert_error(call("PUT", f"{base_url}/collections/{name}",
                      {"vectors": {"size": 65537, "distance": "Dot"}}),
                 422, "Validation error in JSON body: [vectors.size: value 65537 invalid, "
                      "must be from 1 to 65536]")
    status, _ = call("GET", f"{base_url}/collections/{name}")
    assert status == 404


def test_collection_not_found_and_conflict(base_url, coll, shard_number):
    missing = f"missing_{uuid.uuid4().hex[:8]}"
    text = f"Not found: Collection `{missing}` doesn't exist!"
    assert_error(call("GET", f"{base_url}/collections/{missing}"), 404, text)
    assert_error(call("POST", f"{base_url}/collections/{missing}/points/search",
                      {"vector": [1.0, 2.0, 3.0], "limit": 3}), 404, text)
    assert_error(call("PUT", f"{base_url}/collections/{missing}/points",
                      {"points": [{"id": 1, "vector": [1.0, 2.0, 3.0]}]}), 404, text)
    # Qdrant answers a delete of a missing collection with 200 and result false
    # (qdrant-client's recreate_collection relies on it: DELETE, then PUT).
    status, body = call("DELETE", f"{base_url}/collections/{missing}")
    assert (status, body.get("result"), body.get("status")) == (200, False, "ok"), body
    _, name = coll
    assert_error(call("PUT", f"{base_url}/collections/{name}",
                      {"vectors": {"size": 3, "distance": "Cosine"}, "shard_number": shard_number}),
                 409, f"Wrong input: Collection `{name}` already exists!")


def test_recommend_errors(base_url, coll):
    url, _ = coll
    assert_error(call("POST", f"{url}/points/recommend", {"positive": [7], "limit": 3}),
                 404, "Not found: No point with id 7 found")
    assert_error(call("POST", f"{url}/points/query",
                      {"query": {"recommend": {"positive": [7]}}, "limit": 3}),
                 404, "Not found: No point with id 7 found")
    assert_error(call("POST", f"{url}/points/recommend",
                      {"positive": [1], "using": "nope", "limit": 3}),
                 400, "Wrong input: Not existing vector name error: nope")
    missing = f"missing_{uuid.uuid4().hex[:8]}"
    assert_error(call("POST", f"{url}/points/recommend",
                      {"positive": [1], "limit": 3, "lookup_from": {"collection": missing}}),
                 404, f"Not found: Collection `{missing}` doesn't exist!")


def test_search_unknown_vector_name(coll):
    url, _ = coll
    assert_error(call("POST", f"{url}/points/search",
                      {"vector": {"name": "nope", "vector": [1.0, 2.0, 3.0]}, "limit": 3}),
                 400, "Wrong input: Not existing vector name error: nope")


def test_rejected_batch_changes_nothing(coll):
    url, _ = coll
    before = count(url)
    points = [{"id": 100 + i, "vector": [1.0, 0.5, float(i)], "payload": {"k": i}} for i in range(30)]
    points[17] = {"id": 117, "vector": [1.0, 0.5]}
    assert_error(call("PUT", f"{url}/points?wait=true", {"points": points}), 400,
                 "Wrong input: Vector dimension error: expected dim: 3, got 2")
    assert count(url) == before
    batch = {"batch": {"ids": [200, 201, 202], "vectors": [[1, 2, 3], [1, 2, 3], [1, 2]]}}
    assert_error(call("PUT", f"{url}/points?wait=true", batch), 400,
                 "Wrong input: Vector dimension error: expected dim: 3, got 2")
    assert count(url) == before
    status, body = call("POST", f"{url}/points", {"ids": [100, 101, 116, 118, 200]})
    assert status == 200 and body["result"] == [], body
    # a good batch afterwards is stored whole
    status, body = call("PUT", f"{url}/points?wait=true",
                        {"points": [p for i, p in enumerate(points) if i != 17]})
    assert status == 200 and body["result"]["status"] == "completed", body
    assert count(url) == before + 29


QUERY_PARAMS = [
    # (method, path after the collection, body, query, status, text)
    ("PUT", "/points", {"points": [{"id": 9, "vector": [1.0, 2.0, 3.0]}]}, "wait=maybe",
     400, "Deserialize error in query parameters: provided string was not `true` or `false`"),
    ("POST", "/points/delete", {"points": [1]}, "ordering=fast",
     400, "Deserialize error in query parameters: unknown variant `fast`, expected one of `weak`, `medium`, `strong`"),
    ("POST", "/points/search", {"vector": [1.0, 2.0, 3.0], "limit": 3}, "consistency=J",
     400, "Deserialize error in query parameters: failed to deserialize read consistency query parameter value"),
    ("POST", "/points/count", {}, "timeout=-5", 400, "Deserialize error in query parameters: invalid digit found in string"),
    ("POST", "/points/scroll", {}, "timeout=abc", 400, "Deserialize error in query parameters: invalid digit found in string"),
    ("POST", "/points/query", {}, "timeout=0",
     400, "Deserialize error in query parameters: invalid value: integer `0`, expected a nonzero u64"),
    ("PATCH", "", {}, "timeout=0", 422, "Validation error in query parameters: [timeout: value 0 invalid, must be 1 or larger]"),
]


@pytest.mark.parametrize("method, path, body, query, status, text", QUERY_PARAMS,
                         ids=[f"{m} {p} ?{q}" for m, p, _, q, _, _ in QUERY_PARAMS])
def test_invalid_query_parameters_are_refused_and_change_nothing(coll, method, path, body, query, status, text):
    url, _ = coll
    assert_error(call(method, f"{url}{path}?{query}", body), status, text)
    assert count(url) == 4


def test_valid_query_parameters_are_accepted(coll):
    url, _ = coll
    status, body = call("POST", f"{url}/points/search?consistency=majority&timeout=10", {"vector": [1.0, 2.0, 3.0], "limit": 2})
    assert status == 200 and len(body["result"]) == 2, body
    status, body = call("PUT", f"{url}/points?wait=true&ordering=strong", {"points": [{"id": 9, "vector": [1.0, 2.0, 3.0]}]})
    assert status == 200 and body["result"]["status"] == "completed", body
    assert count(url) == 5


@pytest.mark.parametrize("path, body", [
    ("/points/discover", {"limit": 1}),
    ("/points/discover", {"context": [], "limit": 1}),
    ("/points/discover/batch", {"searches": [{"target": 1, "limit": 1}, {"context": [], "limit": 2}]}),
    ("/points/query", {"query": {"context": []}}),
], ids=["no-target", "empty-context", "batch", "query-context"])
def test_discover_without_target_or_context_is_a_bad_request(coll, path, body):
    url, _ = coll
    assert_error(call("POST", url + path, body), 400, "Bad request: target and/or context_pairs must be specified")


def test_deeply_nested_filter_is_a_format_error(coll):
    url, _ = coll
    condition = '{"key": "n", "match": {"value": 1}}'
    for _ in range(200):
        condition = '{"must": [' + condition + "]}"
    raw = ('{"vector": [1.0, 2.0, 3.0], "limit": 3, "filter": ' + condition + "}").encode()
    status, body = call("POST", f"{url}/points/search", raw=raw)
    assert status == 400, body
    assert error_text(body).startswith("Format error in JSON body: recursion limit exceeded at line 1 column "), body
    # 60 levels (120 of JSON) are within serde's limit and are served.
    condition = '{"key": "n", "match": {"value": 1}}'
    for _ in range(60):
        condition = '{"must": [' + condition + "]}"
    raw = ('{"vector": [1.0, 2.0, 3.0], "limit": 3, "filter": ' + condition + "}").encode()
    status, body = call("POST", f"{url}/points/search", raw=raw)
    assert status == 200 and [p["id"] for p in body["result"]] == [1], body


INFERENCE = "Bad request: documents, images and objects need an inference service, which Shoal does not have: send vectors"


@pytest.mark.parametrize("method, path, body", [
    ("POST", "/points/query", {"query": {"text": "hello", "model": "bm25"}}),
    ("POST", "/points/query", {"query": {"nearest": {"image": "x.png", "model": "clip"}}}),
    ("POST", "/points/query", {"query": {"recommend": {"positive": [{"text": "a", "model": "m"}]}}}),
    ("POST", "/points/query", {"query": {"context": [{"positive": {"object": {}, "model": "m"}, "negative": 1}]}}),
    ("POST", "/points/query/batch", {"searches": [{"query": {"discover": {"target": {"text": "a", "model": "m"}, "context": []}}}]}),
    ("PUT", "/points?wait=true", {"points": [{"id": 9, "vector": {"text": "a", "model": "m"}}]}),
    ("PUT", "/points/vectors?wait=true", {"points": [{"id": 1, "vector": {"text": "a", "model": "m"}}]}),
], ids=["document", "image", "recommend", "context", "batch", "upsert", "update-vectors"])
def test_inference_objects_are_a_bad_request(coll, method, path, body):
    url, _ = coll
    assert_error(call(method, url + path, body), 400, INFERENCE)
    assert count(url) == 4
