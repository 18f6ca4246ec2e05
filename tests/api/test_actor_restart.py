"""A shard actor that dies is restarted by Ray and recovers from its snapshot and
log; the gateway reconnects to its new socket and nothing acknowledged is lost."""

import os
import signal
import time

import pytest

from tests.api.rawhttp import call
from tests.conftest import ShoalServer


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = ShoalServer(tmp_path_factory.mktemp("restart") / "storage", tmp_path_factory.mktemp("restart-logs"))
    server.start()
    yield server
    server.kill()


def test_killed_shard_actor_comes_back_with_its_data(server):
    url = server.url
    assert call("PUT", f"{url}/collections/r", {"vectors": {"size": 2, "distance": "Dot"}})[0] == 200
    points = [{"id": i, "vector": [1.0, float(i)], "payload": {"i": i}} for i in range(50)]
    assert call("PUT", f"{url}/collections/r/points?wait=true", {"points": points})[0] == 200
    before = call("POST", f"{url}/collections/r/points/search", {"vector": [0.0, 1.0], "limit": 3})[1]["result"]
    (actor,) = server.shard_actors()
    os.kill(actor, signal.SIGKILL)

    status, body = call("POST", f"{url}/collections/r/points/search", {"vector": [0.0, 1.0], "limit": 3}, timeout=120)
    assert status == 200 and [p["id"] for p in body["result"]] == [p["id"] for p in before]
    deadline = time.monotonic() + 60
    while not [p for p in server.shard_actors() if p != actor]:
        assert time.monotonic() < deadline, "Ray did not restart the shard actor"
        time.sleep(0.5)
    # Writes and reads go on (over the restarted actor's new socket).
    assert call("PUT", f"{url}/collections/r/points?wait=true", {"points": [{"id": 50, "vector": [1.0, 99.0]}]})[0] == 200
    assert call("POST", f"{url}/collections/r/points/count", {})[1]["result"] == {"count": 51}
    status, body = call("POST", f"{url}/collections/r/points", {"ids": [7], "with_payload": True})
    assert status == 200 and body["result"][0]["payload"] == {"i": 7}
