"""The fuzz tests' own Shoal server (generated requests create, break and delete
things, so they do not share the session's server) and the session's failure
log, printed grouped at the end of the run and written to ``failures.json``
beside the server's logs."""

from __future__ import annotations

import json

import pytest

from tests.conftest import AGAINST_MEMORY
from tests.fuzz.harness import FailureLog, Fuzzer, Target
from tests.fuzz.schema import load_spec

FAILURES = pytest.StashKey[FailureLog]()


@pytest.fixture(scope="session")
def failure_log(request) -> FailureLog:
    log = request.config.stash.setdefault(FAILURES, FailureLog())
    return log


@pytest.fixture(scope="session")
def fuzz_target(tmp_path_factory, failure_log):
    if AGAINST_MEMORY:
        pytest.skip("fuzzing needs a real Shoal server (SHOAL_TEST_AGAINST_MEMORY=1)")
    target = Target(tmp_path_factory.mktemp("fuzz"))
    target.start()
    try:
        yield target
    finally:
        target.stop()
        (target.base / "failures.json").write_text(json.dumps(failure_log.to_json(), indent=1, default=str))


@pytest.fixture(scope="session")
def fuzzer(fuzz_target, failure_log):
    return Fuzzer(fuzz_target, failure_log, load_spec()["components"]["schemas"])


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    log = config.stash.get(FAILURES, None)
    if not log or not log.groups:
        return
    terminalreporter.section("fuzz: distinct failures")
    for (kind, status, message), failures in sorted(log.distinct().items(), key=lambda kv: str(kv[0])):
        seen = sum(f.count for f in failures)
        terminalreporter.write_line(f"[{kind}] {status}: {message}  ({seen}x in {len(failures)} operation(s))")
        for failure in sorted(failures, key=lambda f: f.operation):
            terminalreporter.write_line(f"    {failure.operation} ({failure.mode})")
