"""Each fuzz check fails on a made-up bad answer and passes on Qdrant's own
(so none of them is a check that cannot fail), and the failure log groups and
minimises as promised. No server needed."""

from __future__ import annotations

import json

from tests.fuzz.checks import (
    invalid_query_parameters,
    query_value_valid,
    response_problems,
    state_differences,
    unsafe_to_send,
)
from tests.fuzz.harness import Failure, FailureLog, normalized
from tests.fuzz.schema import load_spec

JSON = "application/json"
GOOD_ERROR = b'{"status":{"error":"Wrong input: Vector dimension error: expected dim: 2, got 3"},"time":0.0001}'


def test_answers_qdrant_gives_pass():
    assert response_problems(200, JSON, b'{"result":true,"status":"ok","time":0.1}') == []
    assert response_problems(400, JSON, GOOD_ERROR) == []
    assert response_problems(422, "application/json; charset=utf-8", GOOD_ERROR) == []
    assert response_problems(404, JSON, b'{"status":{"error":"Not found: x"},"time":0.0}') == []
    assert response_problems(404, None, b"") == []  # unknown route or wrong method


def test_server_errors_fail():
    assert response_problems(500, JSON, b'{"status":{"error":"Service internal error: boom"},"time":0.0}')
    assert response_problems(503, "text/plain", b"Service Unavailable")


def test_error_answers_out_of_shape_fail():
    assert response_problems(400, "text/plain", b"400: Bad Request")  # aiohttp's own text
    assert response_problems(400, "text/plain", GOOD_ERROR)  # right body, wrong content type
    assert response_problems(400, JSON, b"")  # empty body is for 404 only
    assert response_problems(409, JSON, b'{"status":"error","time":0.0}')
    assert response_problems(400, JSON, b'{"status":{"error":"x"}}')  # no time
    assert response_problems(400, JSON, b'{"status":{"error":"x"},"time":0}')  # time not a float
    assert response_problems(400, JSON, b'{"status":{"error":"x"},"time":0.0,"result":null}')
    assert response_problems(400, JSON, b'{"status":{"error":7},"time":0.0}')
    assert response_problems(400, JSON, b'[]')


SPEC = load_spec()
COMPONENTS = SPEC["components"]["schemas"]
SCROLL = SPEC["paths"]["/collections/{collection_name}/points/scroll"]["post"]["parameters"]
UPSERT = SPEC["paths"]["/collections/{collection_name}/points"]["put"]["parameters"]


def test_query_values_as_qdrant_parses_them():
    wait = {"type": "boolean"}
    assert query_value_valid(wait, "true", COMPONENTS) and query_value_valid(wait, "false", COMPONENTS)
    assert not any(query_value_valid(wait, raw, COMPONENTS) for raw in ("", "1", "yes", "True"))
    timeout = {"type": "integer", "minimum": 1}
    assert query_value_valid(timeout, "30", COMPONENTS) and query_value_valid(timeout, "+30", COMPONENTS)
    assert not any(query_value_valid(timeout, raw, COMPONENTS) for raw in ("0", "-1", "1.5", "x", str(2**64)))
    consistency = {"$ref": "#/components/schemas/ReadConsistency"}
    assert all(query_value_valid(consistency, raw, COMPONENTS) for raw in ("0", "3", "all", "majority", "quorum"))
    assert not any(query_value_valid(consistency, raw, COMPONENTS) for raw in ("ALL", "-1", "some"))


def test_invalid_query_parameters_are_found_in_the_sent_url():
    base = "http://h/collections/c/points"
    assert invalid_query_parameters(base + "/scroll?consistency=all&timeout=5", SCROLL, COMPONENTS) == []
    assert invalid_query_parameters(base + "/scroll?unknown=zzz", SCROLL, COMPONENTS) == []  # ignored by Qdrant
    assert invalid_query_parameters(base + "/scroll?consistency=", SCROLL, COMPONENTS) == []  # "not given"
    assert invalid_query_parameters(base + "/scroll?timeout=0", SCROLL, COMPONENTS)
    assert invalid_query_parameters(base + "?wait=maybe", UPSERT, COMPONENTS)
    assert invalid_query_parameters(base + "?ordering=fast", UPSERT, COMPONENTS)
    assert invalid_query_parameters(base + "?wait=true&wait=false", UPSERT, COMPONENTS)


def test_state_differences_name_each_change():
    seed = {1: {"vector": [1.0, 0.0], "payload": {"a": 1}}, 2: {"vector": [0.0, 1.0], "payload": {}}}
    assert state_differences(seed, json.loads(json.dumps(seed))) != []  # JSON keys are strings: ids differ
    assert state_differences(seed, dict(seed)) == []
    assert state_differences(seed, {1: seed[1]}) == ["point 2 is gone"]
    assert state_differences(seed, {**seed, 3: seed[1]}) == ["point 3 appeared"]
    changed = {**seed, 1: {"vector": [1.0, 0.0], "payload": {"a": 2}}}
    assert state_differences(seed, changed) == ["point 1 payload {'a': 1} -> {'a': 2}"]
    gone_vector = {**seed, 2: {"vector": {}, "payload": {}}}
    assert state_differences(seed, gone_vector) == ["point 2 vector [0.0, 1.0] -> {}"]


def test_names_and_sizes_that_must_not_be_sent():
    assert unsafe_to_send({"collection_name": "fuzz_seed"}, {"shard_number": 2}, max_shards=4) is None
    assert unsafe_to_send({}, None, max_shards=4) is None
    for name in ("..", ".", "a%2Fb", "..%2F..", "a\\b", "%2E%2E"):
        assert unsafe_to_send({"collection_name": name}, None, max_shards=4), name
    assert unsafe_to_send({"collection_name": "c"}, {"shard_number": 1000}, max_shards=4)


def _failure(message: str, body: str, operation: str = "POST /x") -> Failure:
    return Failure(kind="server error", operation=operation, mode="positive", status=500, message=message,
                   method="POST", url="/x", body=body, response="")


def test_failure_log_groups_by_message_shape_and_keeps_the_smallest():
    log = FailureLog()
    log.record(_failure("Service internal error: index 17 out of range", body='{"limit": 123456}'))
    log.record(_failure("Service internal error: index 3 out of range", body='{"limit": 1}'))
    log.record(_failure("Service internal error: other", body="{}"))
    log.record(_failure("Service internal error: index 3 out of range", body="{}", operation="POST /y"))
    assert len(log.of("POST /x")) == 2
    smallest = [f for f in log.of("POST /x") if "range" in f.message][0]
    assert smallest.body == '{"limit": 1}' and smallest.count == 2
    assert len(log.distinct()) == 2  # the range error in two operations is one distinct failure
    assert normalized("Collection `abc` doesn't exist! 12") == "Collection <v> doesn't exist! N"
