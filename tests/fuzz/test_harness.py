"""The checks that need a server can fail too: a rejected request that changed
the seeded collection, a server that stops answering, a server that dies. Each
is staged here on the fuzz server, through the same ``Fuzzer.send`` the fuzz
tests use, with a failure log of its own."""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.fuzz import harness
from tests.fuzz.harness import SEED_COLLECTION, FailureLog, Fuzzer, spec_operations
from tests.fuzz.schema import load_spec
from tests.fuzz.test_fuzz import POSITIVE_SPEC, schemathesis_schema

SCROLL = next(op for op in spec_operations(POSITIVE_SPEC) if op.id == "scroll_points")


def _case(body):
    operation = schemathesis_schema(3)[SCROLL.path][SCROLL.method]
    return operation.Case(path_parameters={"collection_name": SEED_COLLECTION}, body=body,
                          media_type="application/json")


@pytest.fixture
def staged(fuzz_target):
    """A fuzzer with its own log, and the seeded collection as it was afterwards."""
    fuzzer = Fuzzer(fuzz_target, FailureLog(), load_spec()["components"]["schemas"])
    yield fuzzer
    fuzz_target.restore()


def _kinds(fuzzer) -> set[str]:
    return {failure.kind for failure in fuzzer.log.groups.values()}


def test_a_rejection_that_changed_the_data_is_caught(staged, fuzz_target):
    staged.send(_case({"limit": 2}), SCROLL, "positive")
    assert _kinds(staged) == set()
    # Stage it: the harness now expects a point the collection does not hold.
    fuzz_target.expected = {**fuzz_target.expected, 999: {"vector": [0.0, 0.0], "payload": {}}}
    staged.send(_case({"limit": "not a number"}), SCROLL, "negative")
    (failure,) = staged.log.groups.values()
    assert failure.kind == "rejected request changed data" and failure.status == 400
    assert "point 999 is gone" in failure.message
    # ... and the seeded collection was restored, so the next rejection passes.
    staged.log.groups.clear()
    staged.send(_case({"limit": "not a number"}), SCROLL, "negative")
    assert _kinds(staged) == set()


@pytest.mark.slow
def test_a_server_that_stops_answering_is_a_hang_and_is_restarted(staged, fuzz_target, monkeypatch):
    monkeypatch.setattr(harness, "REQUEST_TIMEOUT", 3.0)
    restarts = fuzz_target.restarts
    os.kill(fuzz_target.server.proc.pid, signal.SIGSTOP)
    staged.send(_case({"limit": 2}), SCROLL, "positive")
    assert _kinds(staged) == {"hang"}
    assert fuzz_target.restarts == restarts + 1 and fuzz_target.responsive()


@pytest.mark.slow
def test_a_server_that_dies_is_caught_and_restarted(staged, fuzz_target):
    restarts = fuzz_target.restarts
    os.kill(fuzz_target.server.proc.pid, signal.SIGKILL)
    fuzz_target.server.proc.wait(timeout=30)
    time.sleep(0.5)
    staged.send(_case({"limit": 2}), SCROLL, "positive")
    assert _kinds(staged) == {"server died"}
    assert fuzz_target.restarts == restarts + 1 and fuzz_target.responsive()
