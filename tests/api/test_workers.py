"""Several HTTP processes on one port (service.workers): same answers whichever
process a connection lands on; collection changes made through any of them are
seen by all; workers do not outlive the control process."""

import os
import time

import pytest

from tests.api.rawhttp import call
from tests.conftest import ShoalServer, ended


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory):
    server = ShoalServer(tmp_path_factory.mktemp("workers") / "storage", tmp_path_factory.mktemp("workers-logs"))
    base_env = server._env
    server._env = lambda: {**base_env(), "SHOAL__SERVICE__WORKERS": "2"}
    server.start()
    yield server
    server.kill()


def http_processes(server) -> list[int]:
    found = []
    for pid in server.pids():
        try:
            cmdline = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
        except OSError:
            continue
        if b"gateway" in cmdline and (b"serve" in cmdline or b"_worker" in cmdline):
            found.append(pid)
    return found


def test_every_process_serves_the_same_registry(two_workers):
    url = two_workers.url
    deadline = time.monotonic() + 60
    while len(http_processes(two_workers)) < 2:
        assert time.monotonic() < deadline, "the HTTP worker did not start"
        time.sleep(0.5)
    # Each call opens a new connection, so the kernel spreads them over both processes.
    assert call("PUT", f"{url}/collections/w", {"vectors": {"size": 2, "distance": "Dot"}, "shard_number": 2})[0] == 200
    assert call("POST", f"{url}/collections/aliases", {"actions": [{"create_alias": {"collection_name": "w", "alias_name": "wa"}}]})[0] == 200
    points = [{"id": i, "vector": [1.0, float(i)], "payload": {"i": i}} for i in range(20)]
    assert call("PUT", f"{url}/collections/w/points?wait=true", {"points": points})[0] == 200
    for _ in range(20):
        status, body = call("POST", f"{url}/collections/wa/points/search", {"vector": [0.0, 1.0], "limit": 3})
        assert status == 200 and [p["id"] for p in body["result"]] == [19, 18, 17]
        assert call("POST", f"{url}/collections/w/points/count", {})[1]["result"] == {"count": 20}
    assert call("DELETE", f"{url}/collections/w")[0] == 200
    for _ in range(10):
        status, body = call("GET", f"{url}/collections/w")
        assert status == 404 and body["status"]["error"] == "Not found: Collection `w` doesn't exist!"


def test_workers_stop_with_the_control_process(two_workers):
    workers = [p for p in http_processes(two_workers) if p != two_workers.proc.pid]
    assert workers
    os.kill(two_workers.proc.pid, 9)
    deadline = time.monotonic() + 20
    while not all(ended(p) for p in workers):
        assert time.monotonic() < deadline, "an HTTP worker outlived its control process"
        time.sleep(0.5)
