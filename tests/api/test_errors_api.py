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
