"""Strict mode through the API: ``strict_mode_config`` on create and PATCH, reported
as Qdrant 1.15 reports it (and as qdrant-client 1.15.1 reads it), each limit
refused with Qdrant's status and text before anything changes, allowed requests
still answered, ``enabled: false`` turning it off, and the config kept across a
restart. Texts come from Qdrant's lib/collection/src/operations/verification/ and
its tests/openapi/test_strict_mode.py.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid

import numpy as np
import pytest
from qdrant_client import models

from .rawhttp import call, error_text

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")

POINTS = [{"id": i, "vector": [1.0 + i, 0.5, 0.25, -0.5 * i],
           "payload": {"city": ["Berlin", "London", "Paris"][i % 3], "count": i, "price": 1.5 * i}}
          for i in range(1, 13)]


@pytest.fixture
def coll(base_url, shard_number):
    """(collection URL, name): a 4-dim collection with 12 points, strict mode off."""
    name = f"strict_{uuid.uuid4().hex[:10]}"
    url = f"{base_url}/collections/{name}"
    ok(call("PUT", url, {"vectors": {"size": 4, "distance": "Dot"}, "shard_number": shard_number,
                         "sparse_vectors": {"s": {}}}))
    ok(call("PUT", url + "/points?wait=true", {"points": POINTS}))
    yield url, name
    call("DELETE", url)


def ok(response):
    status, body = response
    assert status == 200, body
    return body["result"]


def strict_of(url: str) -> dict | None:
    return ok(call("GET", url))["config"].get("strict_mode_config")


def patch(url: str, settings: dict) -> None:
    assert ok(call("PATCH", url, {"strict_mode_config": settings})) is True


def refused(response, text: str, status: int = 400) -> None:
    got, body = response
    assert (got, error_text(body)) == (status, text), body


def limit_text(value, limit, name: str) -> str:
    return (f'Bad request: Limit exceeded {value} > {limit} for "{name}". '
            f'Help: Reduce the "{name}" parameter to or below {limit}.')


def unindexed(key: str, schemas: str, what: str = "filter") -> str:
    return (f'Bad request: Index required but not found for "{key}" of one of the following types: [{schemas}]. '
            f"Help: Create an index for this key or use a different {what}.")


def count(url: str) -> int:
    return ok(call("POST", url + "/points/count", {"exact": True}))["count"]


def points(url: str) -> list:
    return ok(call("POST", url + "/points/scroll", {"limit": 100, "with_payload": True, "with_vector": True}))["points"]


def call_headers(method: str, url: str, body) -> tuple[int, dict, dict]:
    """(status, JSON body, headers): rawhttp.call without the headers would not do for Retry-After."""
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method=method,
                                 headers={"Content-Type": "application/json"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=60) as response:
            return response.status, json.loads(response.read()), dict(response.headers)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read()), dict(e.headers)


BERLIN = {"must": [{"key": "city", "match": {"value": "Berlin"}}]}


# ----------------------------------------------------------------------- config


def test_default_create_patch_and_report(base_url, shoal, collection_names):
    plain, configured = collection_names("strict"), collection_names("strict")
    shoal.create_collection(plain, vectors_config=models.VectorParams(size=4, distance=models.Distance.DOT))
    # Qdrant 1.15's default config gives every new collection {"enabled": false}
    assert strict_of(f"{base_url}/collections/{plain}") == {"enabled": False}
    assert shoal.get_collection(plain).config.strict_mode_config == models.StrictModeConfigOutput(enabled=False)

    shoal.create_collection(configured, vectors_config=models.VectorParams(size=4, distance=models.Distance.DOT),
                            strict_mode_config=models.StrictModeConfig(
                                enabled=True, max_query_limit=5, search_max_oversampling=1.5,
                                sparse_config={"s": models.StrictModeSparse(max_length=3)}))
    url = f"{base_url}/collections/{configured}"
    assert strict_of(url) == {"enabled": True, "max_query_limit": 5, "search_max_oversampling": 1.5,
                              "sparse_config": {"s": {"max_length": 3}}}
    shoal.update_collection(configured, strict_mode_config=models.StrictModeConfig(max_query_limit=7,
                                                                                   write_rate_limit=100))
    patch(url, {"max_query_limit": None, "max_payload_index_count": 4})  # null leaves a limit as it is
    expected = {"enabled": True, "max_query_limit": 7, "search_max_oversampling": 1.5, "write_rate_limit": 100,
                "sparse_config": {"s": {"max_length": 3}}, "max_payload_index_count": 4}
    assert strict_of(url) == expected
    assert list(strict_of(url)) == list(expected)  # Qdrant's field order
    got = shoal.get_collection(configured).config.strict_mode_config
    assert (got.enabled, got.max_query_limit, got.write_rate_limit, got.sparse_config["s"].max_length) \
        == (True, 7, 100, 3)


def test_bad_values_are_refused_with_qdrants_422(base_url, coll):
    url, _ = coll
    refused(call("PATCH", url, {"strict_mode_config": {"enabled": True, "max_query_limit": 0}}),
            "Validation error in JSON body: [strict_mode_config.max_query_limit: value 0 invalid, must be 1 or larger]",
            422)
    refused(call("PATCH", url, {"strict_mode_config": {"multivector_config": {"m": {"max_vectors": 0}}}}),
            "Validation error in JSON body: [strict_mode_config.multivector_config.config[0].max_vectors: value 0 "
            "invalid, must be 1 or larger]", 422)
    assert strict_of(url) == {"enabled": False}
    name = f"strict_{uuid.uuid4().hex[:10]}"
    refused(call("PUT", f"{base_url}/collections/{name}",
                 {"vectors": {"size": 4, "distance": "Dot"}, "strict_mode_config": {"read_rate_limit": 0}}),
            "Validation error in JSON body: [strict_mode_config.read_rate_limit: value 0 invalid, must be 1 or larger]",
            422)
    assert call("GET", f"{base_url}/collections/{name}")[0] == 404


# ------------------------------------------------------------------------ reads


def test_read_limits(coll):
    url, _ = coll
    patch(url, {"enabled": True, "max_query_limit": 5, "search_max_hnsw_ef": 4, "search_allow_exact": False,
                "search_max_oversampling": 1.9, "max_timeout": 2})
    search = {"vector": [0.2, 0.1, 0.9, 0.7], "limit": 6}
    refused(call("POST", url + "/points/search", search), limit_text(6, 5, "limit"))
    assert len(ok(call("POST", url + "/points/search", {**search, "limit": 5}))) == 5
    refused(call("POST", url + "/points/query", {"query": [0.2, 0.1, 0.9, 0.7]}), limit_text(10, 5, "limit"))
    assert len(ok(call("POST", url + "/points/query", {"query": [0.2, 0.1, 0.9, 0.7], "limit": 3}))["points"]) == 3
    refused(call("POST", url + "/points/query", {"prefetch": {"query": [1, 0, 0, 0], "limit": 50},
                                                  "query": {"fusion": "rrf"}, "limit": 5}), limit_text(50, 5, "limit"))
    refused(call("POST", url + "/points/search/groups", {"vector": [1, 0, 0, 0], "limit": 2, "group_size": 3,
                                                          "group_by": "city"}), limit_text(6, 5, "limit"))
    refused(call("POST", url + "/points/search/matrix/pairs", {"sample": 3, "limit": 2}), limit_text(6, 5, "limit"))
    refused(call("POST", url + "/points/recommend", {"positive": [1], "limit": 9}), limit_text(9, 5, "limit"))
    refused(call("POST", url + "/points/discover", {"target": 1, "limit": 9}), limit_text(9, 5, "limit"))
    refused(call("POST", url + "/points/scroll", {"limit": 6}), limit_text(6, 5, "limit"))
    assert len(ok(call("POST", url + "/points/scroll", {}))["points"]) == 10  # no limit given: not checked (1.15)
    refused(call("POST", url + "/points/search", {**search, "limit": 1, "params": {"hnsw_ef": 5}}),
            limit_text(5, 4, "hnsw_ef"))
    oversampled = {**search, "limit": 1, "params": {"quantization": {"oversampling": 2}}}
    refused(call("POST", url + "/points/search", oversampled), limit_text(2, 1.9, "oversampling"))
    exact = "Bad request: Exact search disabled!. Help: Set exact=false."
    refused(call("POST", url + "/points/search", {**search, "limit": 1, "params": {"exact": True}}), exact)
    refused(call("POST", url + "/points/count", {}), exact)  # count is exact unless told otherwise
    assert ok(call("POST", url + "/points/count", {"exact": False}))["count"] == 12
    refused(call("POST", url + "/points/search?timeout=3", {**search, "limit": 1}), limit_text(3, 2, "timeout"))
    assert ok(call("POST", url + "/points/search?timeout=2", {**search, "limit": 1}))


def test_read_limits_through_qdrant_client(coll, shoal):
    from qdrant_client.http.exceptions import UnexpectedResponse

    url, name = coll
    shoal.update_collection(name, strict_mode_config=models.StrictModeConfig(enabled=True, max_query_limit=3))
    with pytest.raises(UnexpectedResponse) as caught:
        shoal.query_points(name, query=[1.0, 0.0, 0.0, 0.0], limit=4)
    assert caught.value.status_code == 400
    assert json.loads(caught.value.content)["status"]["error"] == limit_text(4, 3, "limit")
    assert len(shoal.query_points(name, query=[1.0, 0.0, 0.0, 0.0], limit=3).points) == 3


def test_unindexed_read_filter_until_indexed(coll):
    url, _ = coll
    search = {"vector": [1, 0, 0, 0], "limit": 3, "filter": BERLIN}
    patch(url, {"enabled": True, "unindexed_filtering_retrieve": True})
    assert len(ok(call("POST", url + "/points/search", search))) == 3
    patch(url, {"unindexed_filtering_retrieve": False})
    refused(call("POST", url + "/points/search", search), unindexed("city", "keyword"))
    refused(call("POST", url + "/points/scroll", {"filter": {"must": [{"key": "count", "range": {"gte": 3}}]}}),
            unindexed("count", "float, integer"))
    refused(call("POST", url + "/points/query", {"prefetch": {"query": [1, 0, 0, 0]}, "limit": 3,
                                                  "query": {"formula": {"sum": ["price", "$score"]}}}),
            unindexed("price", "float, integer", "formula expression"))
    refused(call("POST", url + "/points/query/groups", {"query": [1, 0, 0, 0], "group_by": "city", "limit": 1}),
            'Bad request: Index required but not found for "city". Help: Create an index supporting `match` for '
            "this key.")
    ok(call("PUT", url + "/index?wait=true", {"field_name": "city", "field_schema": "keyword"}))
    assert len(ok(call("POST", url + "/points/search", search))) == 3
    assert ok(call("POST", url + "/points/query/groups", {"query": [1, 0, 0, 0], "group_by": "city", "limit": 1}))
    # a keyword index does not serve a range
    ok(call("PUT", url + "/index?wait=true", {"field_name": "count", "field_schema": "keyword"}))
    refused(call("POST", url + "/points/scroll", {"filter": {"must": [{"key": "count", "range": {"gte": 3}}]}}),
            unindexed("count", "float, integer"))


def test_filter_size_limits(coll):
    url, _ = coll
    patch(url, {"enabled": True, "filter_max_conditions": 2, "condition_max_size": 3})
    three = {"must": [{"key": "count", "match": {"value": i}} for i in range(3)]}
    refused(call("POST", url + "/points/scroll", {"filter": three}),
            "Bad request: Filter condition limit reached (3 > 2). "
            "Help: Reduce the amount of conditions of your filter.")
    refused(call("POST", url + "/points/count", {"exact": False, "filter": {"must": [
        {"key": "count", "match": {"any": [1, 2, 3, 4]}}]}}),
            "Bad request: Condition size limit reached (4 > 3). Help: Reduce the size of your condition.")
    assert ok(call("POST", url + "/points/count", {"exact": False, "filter": {"must": [
        {"key": "count", "match": {"any": [1, 2, 3]}}]}}))["count"] == 3


# ----------------------------------------------------------------------- writes


def test_refused_writes_change_nothing(coll):
    url, _ = coll
    before = points(url)
    patch(url, {"enabled": True, "upsert_max_batchsize": 2, "unindexed_filtering_update": False,
                "sparse_config": {"s": {"max_length": 2}}})
    three = [{"id": 100 + i, "vector": [1, 1, 1, 1]} for i in range(3)]
    refused(call("PUT", url + "/points?wait=true", {"points": three}), limit_text(3, 2, "upsert limit"))
    refused(call("PUT", url + "/points?wait=true", {"batch": {"ids": [100, 101, 102], "vectors": [[1, 1, 1, 1]] * 3}}),
            limit_text(3, 2, "upsert limit"))
    refused(call("POST", url + "/points/batch?wait=true", {"operations": [
        {"upsert": {"points": three[:1]}}, {"upsert": {"points": three}}]}), limit_text(3, 2, "upsert limit"))
    refused(call("PUT", url + "/points/vectors?wait=true", {"points": [
        {"id": i, "vector": [0, 0, 0, 1]} for i in (1, 2, 3)]}), limit_text(3, 2, "update limit"))
    refused(call("PUT", url + "/points?wait=true", {"points": [
        {"id": 100, "vector": {"": [1, 1, 1, 1], "s": {"indices": [1, 2, 3], "values": [0.1, 0.2, 0.3]}}}]}),
            "Bad request: Sparse vector 's' has a limit of 2 indices, but 3 were provided!")
    refused(call("POST", url + "/points/delete?wait=true", {"filter": BERLIN}), unindexed("city", "keyword"))
    refused(call("POST", url + "/points/payload?wait=true", {"payload": {"x": 1}, "filter": BERLIN}),
            unindexed("city", "keyword"))
    refused(call("POST", url + "/points/batch?wait=true", {"operations": [
        {"set_payload": {"payload": {"x": 1}, "points": [1]}}, {"delete": {"filter": BERLIN}}]}),
            unindexed("city", "keyword"))
    assert points(url) == before
    # within the limits, the same kinds of request go through
    ok(call("PUT", url + "/points?wait=true", {"points": three[:2]}))
    ok(call("POST", url + "/points/delete?wait=true", {"points": [100, 101]}))
    ok(call("PUT", url + "/index?wait=true", {"field_name": "city", "field_schema": "keyword"}))
    ok(call("POST", url + "/points/payload?wait=true", {"payload": {"x": 1}, "filter": BERLIN}))
    assert sum(1 for p in points(url) if p["payload"].get("x") == 1) == 4


def test_points_count_and_payload_index_count(coll):
    url, _ = coll
    patch(url, {"enabled": True, "max_points_count": 13, "max_payload_index_count": 1})
    ok(call("PUT", url + "/points?wait=true", {"points": [{"id": 100, "vector": [1, 1, 1, 1]},
                                                         {"id": 101, "vector": [1, 1, 1, 1]}]}))  # 12 < 13: allowed
    assert count(url) == 14
    refused(call("PUT", url + "/points?wait=true", {"points": [{"id": 102, "vector": [1, 1, 1, 1]}]}),
            "Bad request: Max points count limit of 13 reached!")
    assert count(url) == 14
    ok(call("POST", url + "/points/delete?wait=true", {"points": [100, 101]}))  # deletes are not limited
    ok(call("PUT", url + "/points?wait=true", {"points": [{"id": 102, "vector": [1, 1, 1, 1]}]}))
    ok(call("PUT", url + "/index?wait=true", {"field_name": "city", "field_schema": "keyword"}))
    refused(call("PUT", url + "/index?wait=true", {"field_name": "count", "field_schema": "integer"}),
            "Bad request: Collection already has the maximum number of payload indices (1). "
            "Help: Please delete an existing index before creating a new one.")
    assert list(ok(call("GET", url))["payload_schema"]) == ["city"]


def test_payload_storage_size(coll):
    """max_collection_payload_size_bytes: upserts, update vectors, set and overwrite
    payload (in a batch too) are refused once the payloads take that many bytes
    (measured as JSON), with the limit in MiB as Qdrant prints it; other writes
    go on, and a collection back under it takes them again."""
    url, _ = coll
    payloads = [p["payload"] for p in points(url)]
    size = sum(len(json.dumps(p, separators=(",", ":"), ensure_ascii=False).encode()) for p in payloads if p)
    patch(url, {"enabled": True, "max_collection_payload_size_bytes": size + 1})
    ok(call("POST", url + "/points/payload?wait=true", {"payload": {"note": "x" * 40}, "points": [1]}))  # under: taken
    text = "Bad request: Max payload storage size limit of " + np.format_float_positional(
        np.float32((size + 1) / (1024 * 1024)), trim="-") + "MB reached!"
    before = points(url)
    refused(call("PUT", url + "/points?wait=true", {"points": [{"id": 100, "vector": [1, 1, 1, 1]}]}), text)
    refused(call("PUT", url + "/points/vectors?wait=true", {"points": [{"id": 1, "vector": [0, 0, 0, 1]}]}), text)
    refused(call("POST", url + "/points/payload?wait=true", {"payload": {"y": 1}, "points": [2]}), text)
    refused(call("PUT", url + "/points/payload?wait=true", {"payload": {"y": 1}, "points": [2]}), text)
    refused(call("POST", url + "/points/batch?wait=true", {"operations": [
        {"set_payload": {"payload": {"y": 1}, "points": [2]}}]}), text)
    assert points(url) == before
    ok(call("POST", url + "/points/payload/delete?wait=true", {"keys": ["note"], "points": [1]}))  # not limited
    ok(call("POST", url + "/points/payload?wait=true", {"payload": {"y": 1}, "points": [2]}))  # under again


def test_enabled_false_turns_it_off(coll):
    url, _ = coll
    patch(url, {"enabled": True, "max_query_limit": 1, "upsert_max_batchsize": 1})
    refused(call("POST", url + "/points/scroll", {"limit": 2}), limit_text(2, 1, "limit"))
    patch(url, {"enabled": False})
    assert strict_of(url) == {"enabled": False, "max_query_limit": 1, "upsert_max_batchsize": 1}
    assert len(ok(call("POST", url + "/points/scroll", {"limit": 2}))["points"]) == 2
    ok(call("PUT", url + "/points?wait=true", {"points": [{"id": 100 + i, "vector": [1, 1, 1, 1]} for i in range(3)]}))


# ------------------------------------------------------------------ rate limits


def test_rate_limits(coll):
    url, _ = coll
    before = count(url)
    patch(url, {"enabled": True, "read_rate_limit": 1, "write_rate_limit": 10})
    search = {"vector": [0.2, 0.1, 0.9, 0.7], "limit": 4}
    assert call_headers("POST", url + "/points/search", search)[0] == 200
    status, body, headers = call_headers("POST", url + "/points/search", search)
    assert status == 429, body
    assert body["status"]["error"].startswith(
        "Rate limiting exceeded: Read rate limit exceeded: Operation requires 1 tokens but only 0.0 were available. "
        "Retry after "), body
    assert 55 < int(headers["Retry-After"]) <= 60
    eleven = [{"id": 100 + i, "vector": [1, 1, 1, 1]} for i in range(11)]
    status, body, headers = call_headers("PUT", url + "/points?wait=true", {"points": eleven})
    assert (status, body["status"]["error"]) == (429, (
        "Rate limiting exceeded: Write rate limit exceeded, request larger than rate limiter capacity, please try "
        "to split your request")), body
    assert "Retry-After" not in headers
    assert call_headers("PUT", url + "/points?wait=true", {"points": eleven[:10]})[0] == 200
    status, body, _ = call_headers("PUT", url + "/points?wait=true", {"points": eleven[:10]})
    assert status == 429 and "Operation requires 10 tokens but only 0.0 were available" in body["status"]["error"]
    patch(url, {"enabled": False})
    for _ in range(3):
        assert call_headers("POST", url + "/points/search", search)[0] == 200
    assert count(url) == before + 10


# ---------------------------------------------------------------------- restart


def test_kept_across_a_restart(restartable_server):
    server = restartable_server
    name = f"strict_{uuid.uuid4().hex[:10]}"
    url = f"{server.url}/collections/{name}"
    ok(call("PUT", url, {"vectors": {"size": 4, "distance": "Dot"}, "shard_number": 2,
                         "strict_mode_config": {"enabled": True, "max_query_limit": 2}}))
    patch(url, {"filter_max_conditions": 1})
    ok(call("PUT", url + "/points?wait=true", {"points": POINTS}))
    before = strict_of(url)
    assert before == {"enabled": True, "max_query_limit": 2, "filter_max_conditions": 1}
    try:
        assert server.stop() == 0, server.stderr_tail()
        server.start()
        assert strict_of(url) == before
        refused(call("POST", url + "/points/scroll", {"limit": 3}), limit_text(3, 2, "limit"))
        assert len(ok(call("POST", url + "/points/scroll", {"limit": 2}))["points"]) == 2
    finally:
        call("DELETE", url)


def test_no_full_scan_of_a_vector_without_a_graph(base_url, collection_names):
    url = f"{base_url}/collections/{collection_names('strict')}"
    ok(call("PUT", url, {"vectors": {"v": {"size": 4, "distance": "Dot", "hnsw_config": {"m": 0}},
                                     "w": {"size": 4, "distance": "Dot"}},
                         "strict_mode_config": {"enabled": True, "search_allow_exact": False}}))
    point = {"id": 1, "vector": {"v": [1, 0, 0, 0], "w": [0, 1, 0, 0]}}
    ok(call("PUT", url + "/points?wait=true", {"points": [point]}))
    refused(call("POST", url + "/points/query", {"query": [1, 0, 0, 0], "using": "v", "limit": 1}),
            "Bad request: Request is forbidden on 'v' because global vector indexing is disabled "
            "(hnsw_config.m = 0). Help: Use tenant-specific filter, enable global vector indexing or enable strict "
            "mode `search_allow_exact` option")
    assert ok(call("POST", url + "/points/query", {"query": [1, 0, 0, 0], "using": "w", "limit": 1}))["points"]
    # rescoring a prefetch made with a graph scans nothing
    assert ok(call("POST", url + "/points/query", {"prefetch": {"query": [0, 1, 0, 0], "using": "w"},
                                                    "query": [1, 0, 0, 0], "using": "v", "limit": 1}))["points"]
