"""Property-based fuzzing of every operation Shoal serves, from Qdrant's OpenAPI spec.

For each operation, schemathesis generates valid requests ("positive") and
requests that break the schema ("negative"); most target a seeded collection.
Each one is judged by ``tests.fuzz.checks``: no 5xx, an answer within 15 s, the
server still alive, every error in Qdrant's JSON error shape (or the empty
unknown-route 404), no invalid query parameter accepted, and the seeded
collection unchanged after every rejected request. See ``harness.py``.

Runs are seeded per operation, so they repeat exactly. Budgets:
- quick (default suite): 15 valid and 8 invalid requests per operation;
  ``pytest tests/fuzz -m "not slow"``, about 2 minutes on 2 cores.
- long (``pytest tests/fuzz -m slow``): 200 valid and 40 invalid requests per
  operation, filters nested deeper in invalid ones; about 8 minutes.

Negative generation at recursion depth 3 costs seconds per request in
schemathesis (it negates the whole unrolled filter union), so invalid requests
use depth 1 (quick) or 2 (long); valid ones always use depth 3.
"""

from __future__ import annotations

from functools import cache

import pytest

from tests.api.rawhttp import call
from tests.fuzz.harness import SEED_COLLECTION, report, spec_operations, strategy_for
from tests.fuzz.schema import fuzz_spec

POSITIVE_SPEC = fuzz_spec(depth=3)

# Operations Shoal does not serve at all: Qdrant's answer to them is a real
# feature Shoal lacks, and Shoal answers Qdrant's unknown-route 404 with an empty
# body. They are not fuzzed; test_unserved_operations_answer_empty_404 keeps this
# list honest (serve one, and that test says to move it out of here).
UNSERVED = {
    # sharding keys (custom sharding)
    "create_shard_key", "delete_shard_key",
    # service internals
    "telemetry", "post_locks", "get_locks", "get_issues", "clear_issues",
    # distributed mode: peer removal and Raft recovery (the cluster's and a
    # collection's status, and cluster operations, are served)
    "recover_current_peer", "remove_peer",
    # full-storage snapshots (collection and shard snapshots are served)
    "list_full_snapshots", "create_full_snapshot",
    "delete_full_snapshot", "get_full_snapshot",
}
OPERATIONS = spec_operations(POSITIVE_SPEC)
SERVED = [op for op in OPERATIONS if op.id not in UNSERVED]
BREAKABLE = [op for op in SERVED if op.has_inputs_to_break]

# mode -> (recursion depth, requests per operation)
QUICK = {"positive": (3, 15), "negative": (1, 8)}
LONG = {"positive": (3, 200), "negative": (2, 40)}
# How many requests in 10 name the seeded collection (the rest a generated name).
# A delete of the seeded collection costs a re-creation of about a second.
FIXED_SHARE = {"delete_collection": 3}


@cache
def schemathesis_schema(depth: int):
    import schemathesis

    return schemathesis.openapi.from_dict(fuzz_spec(depth))


def fuzz(fuzzer, op, mode: str, budget: dict[str, tuple[int, int]], salt: str) -> None:
    depth, examples = budget[mode]
    operation = schemathesis_schema(depth)[op.path][op.method]
    strategy = strategy_for(operation, mode, fixed_share=FIXED_SHARE.get(op.id, 9))
    failures = fuzzer.run(op, mode, strategy, examples, salt=salt)
    assert not failures, report(failures)


def _ids(op) -> str:
    return op.id


@pytest.mark.parametrize("op", SERVED, ids=_ids)
def test_quick_valid_requests(fuzzer, op):
    fuzz(fuzzer, op, "positive", QUICK, salt="quick")


@pytest.mark.parametrize("op", BREAKABLE, ids=_ids)
def test_quick_invalid_requests(fuzzer, op):
    fuzz(fuzzer, op, "negative", QUICK, salt="quick")


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.parametrize("op", SERVED, ids=_ids)
def test_long_valid_requests(fuzzer, op):
    fuzz(fuzzer, op, "positive", LONG, salt="long")


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.parametrize("op", BREAKABLE, ids=_ids)
def test_long_invalid_requests(fuzzer, op):
    fuzz(fuzzer, op, "negative", LONG, salt="long")


def test_unserved_operations_answer_empty_404(fuzz_target):
    """Every operation left out of the fuzzing above answers Qdrant's empty
    unknown-route 404; one that answers anything else is served and belongs in
    the fuzzing (remove it from UNSERVED)."""
    served_after_all = []
    for op in OPERATIONS:
        if op.id not in UNSERVED:
            continue
        path = op.path.replace("{collection_name}", SEED_COLLECTION)
        for name in ("shard_id", "snapshot_name", "peer_id"):
            path = path.replace("{" + name + "}", "1")
        body = {} if "requestBody" in op.raw else None
        status, answer = call(op.method, fuzz_target.url + path, body)
        if (status, answer) != (404, None):
            served_after_all.append(f"{op.id}: {op.method} {path} -> {status} {answer!r:.200}")
    assert not served_after_all, "\n".join(served_after_all)
