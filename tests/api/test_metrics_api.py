"""/metrics against the API's own answers, on a real server: points per
collection and per shard replica, replica states, the Raft's state, log sizes,
request counts; with two HTTP processes, every process's requests summed; and
the request history the dashboard draws. The pure parts (summing, quantiles,
the history's differences) are checked without a server at the end."""

from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.metrics import Metrics, RequestHistory, as_part, merge, quantile, totals
from tests.api.rawhttp import call
from tests.conftest import ended
from tests.api import test_workers
from tests.api.test_workers import http_processes

SEARCH = "/collections/{collection_name}/points/search"
two_workers = test_workers.two_workers  # a server with service.workers = 2 (module-scoped fixture)


def scrape(url: str) -> dict[tuple[str, frozenset], float]:
    """Every sample of one scrape: (name, labels) -> value."""
    status, text = call("GET", url + "/metrics")
    assert status == 200, text
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples, name: str, **labels) -> float | None:
    return samples.get((name, frozenset((k, str(v)) for k, v in labels.items())))


def series(samples, name: str, **labels) -> dict[frozenset, float]:
    """The samples called ``name`` whose labels include ``labels``."""
    want = {(k, str(v)) for k, v in labels.items()}
    return {key: v for (n, key), v in samples.items() if n == name and want <= key}


def requests_to(samples, endpoint: str, method: str = "POST") -> float:
    return sum(series(samples, "shoal_rest_requests_total", endpoint=endpoint, method=method).values())


def upsert(url: str, name: str, ids, dim: int = 4) -> None:
    points = [{"id": i, "vector": [float(i % 7), 1.0, float(i % 3), 0.5][:dim], "payload": {"i": i}} for i in ids]
    status, body = call("PUT", f"{url}/collections/{name}/points?wait=true", {"points": points})
    assert status == 200, body


@pytest.fixture
def collection(base_url):
    name = f"metrics_{uuid.uuid4().hex[:10]}"
    status, body = call("PUT", f"{base_url}/collections/{name}", {"vectors": {"size": 4, "distance": "Dot"},
                                                                  "shard_number": 3})
    assert status == 200, body
    yield name
    call("DELETE", f"{base_url}/collections/{name}")


def test_collection_and_shard_figures_equal_the_api(base_url, collection):
    upsert(base_url, collection, range(57))
    call("POST", f"{base_url}/collections/{collection}/points/delete?wait=true", {"points": [3, 4, 5]})
    samples = scrape(base_url)
    info = call("GET", f"{base_url}/collections/{collection}")[1]["result"]
    shards = call("GET", f"{base_url}/collections/{collection}/cluster")[1]["result"]
    assert info["points_count"] == 54
    assert value(samples, "shoal_collection_points", collection=collection) == info["points_count"]
    assert len(shards["local_shards"]) == 3
    for shard in shards["local_shards"]:
        where = {"collection": collection, "shard": shard["shard_id"], "replica": shard["shoal_replica"],
                 "peer": shards["peer_id"]}
        assert value(samples, "shoal_shard_points", **where) == shard["points_count"]
        assert value(samples, "shoal_shard_up", **where) == 1
        assert value(samples, "shoal_shard_segments", **where) == 1
        assert value(samples, "shoal_wal_bytes", **where) > 0
        states = series(samples, "shoal_replica_state", **where)
        assert {dict(k)["state"]: v for k, v in states.items()} == {
            "active": 1, "dead": 0, "partial": 0, "initializing": 0}
        assert shard["state"] == "Active"
    assert sum(series(samples, "shoal_shard_points", collection=collection).values()) == info["points_count"]
    assert sum(series(samples, "shoal_shard_segments", collection=collection).values()) == info["segments_count"]
    assert value(samples, "shoal_collections") == len(call("GET", f"{base_url}/collections")[1]["result"]["collections"])


def test_wal_bytes_grow_with_writes(base_url, collection):
    upsert(base_url, collection, range(10))
    before = sum(series(scrape(base_url), "shoal_wal_bytes", collection=collection).values())
    upsert(base_url, collection, range(10, 200))
    after = sum(series(scrape(base_url), "shoal_wal_bytes", collection=collection).values())
    assert after > before > 0


def test_raft_figures_equal_get_cluster(base_url):
    for _ in range(5):  # a metadata change between the two reads moves the commit index: read again
        raft = call("GET", f"{base_url}/cluster")[1]["result"]["raft_info"]
        samples = scrape(base_url)
        if value(samples, "shoal_raft_commit_index") == raft["commit"]:
            break
    assert value(samples, "shoal_raft_commit_index") == raft["commit"]
    assert value(samples, "shoal_raft_term") == raft["term"]
    roles = {dict(k)["role"]: v for k, v in series(samples, "shoal_raft_role").items()}
    assert roles == {"leader": 1, "follower": 0, "candidate": 0} and raft["role"] == "Leader"
    assert value(samples, "shoal_raft_peers") == 1
    assert value(samples, "shoal_raft_leader_known") == 1


def test_request_counts_and_latency_by_route(base_url, collection):
    upsert(base_url, collection, range(5))
    before = scrape(base_url)
    for _ in range(7):
        assert call("POST", f"{base_url}/collections/{collection}/points/search", {"vector": [1, 0, 0, 0], "limit": 2})[0] == 200
    assert call("POST", f"{base_url}/collections/{collection}/points/search", {"vector": [1, 0]})[0] == 400
    after = scrape(base_url)
    assert requests_to(after, SEARCH) - requests_to(before, SEARCH) == 8
    bad = value(after, "shoal_rest_requests_total", endpoint=SEARCH, method="POST", status=400)
    assert bad - (value(before, "shoal_rest_requests_total", endpoint=SEARCH, method="POST", status=400) or 0) == 1
    counted = value(after, "shoal_rest_request_seconds_count", endpoint=SEARCH, method="POST")
    assert counted - (value(before, "shoal_rest_request_seconds_count", endpoint=SEARCH, method="POST") or 0) == 8
    assert value(after, "shoal_rest_request_seconds_bucket", endpoint=SEARCH, method="POST", le="+Inf") == counted
    assert value(after, "shoal_http_processes") == 1


def test_request_history_shows_the_rate(base_url):
    for _ in range(20):
        call("GET", f"{base_url}/collections")
    deadline = time.monotonic() + 30
    while True:
        status, body = call("GET", f"{base_url}/metrics/history")
        assert status == 200, body
        points = body["result"]["points"]
        if points and points[-1]["requests_per_s"] > 0:
            break
        assert time.monotonic() < deadline, points[-3:]
        time.sleep(1)
    assert body["result"]["period_s"] > 0
    last = points[-1]
    assert last["latency_mean_ms"] > 0 and last["latency_p95_ms"] > 0
    assert [p["time"] for p in points] == sorted(p["time"] for p in points)


# ------------------------------------------------------------ two processes


def _worker_socket(server) -> tuple[int, Path]:
    """The HTTP worker's pid and the Unix socket it answers the control process
    on, once it listens."""
    deadline = time.monotonic() + 60
    while True:
        workers = [p for p in http_processes(server) if p != server.proc.pid]
        if workers:
            argv = open(f"/proc/{workers[0]}/cmdline", "rb").read().split(b"\0")
            path = Path(argv[argv.index(b"--control-dir") + 1].decode()) / f"worker-{workers[0]}.sock"
            if path.exists():
                return workers[0], path
        assert time.monotonic() < deadline, "the HTTP worker did not start"
        time.sleep(0.5)


def _worker_figures(server) -> tuple[int, dict]:
    """The worker's own figures, read as the control process reads them: over
    the worker's Unix socket in the control's folder."""
    import http.client
    import json
    import socket

    worker, path = _worker_socket(server)

    class Unix(http.client.HTTPConnection):
        def connect(self):
            self.sock = socket.socket(socket.AF_UNIX)
            self.sock.connect(str(path))

    conn = Unix("worker", timeout=10)
    conn.request("GET", "/_shoal/metrics")
    part = json.loads(conn.getresponse().read())
    conn.close()
    return worker, {(s[0], frozenset(s[1].items())): s[2] for family in part for s in family[3]}


def test_two_processes_requests_are_summed(two_workers):
    url = two_workers.url
    _worker_socket(two_workers)  # both processes listen
    name = "summed"
    assert call("PUT", f"{url}/collections/{name}", {"vectors": {"size": 4, "distance": "Dot"}})[0] == 200
    upsert(url, name, range(30))
    sent = 60
    for _ in range(sent):  # a new connection each: the kernel spreads them over both processes
        assert call("POST", f"{url}/collections/{name}/points/search", {"vector": [1, 0, 0, 0], "limit": 1})[0] == 200
    worker, own = _worker_figures(two_workers)
    served_by_worker = requests_to(own, SEARCH)
    assert 0 < served_by_worker < sent, "the searches did not spread over both processes"
    for _ in range(6):  # whichever process takes the scrape, the sums are the same
        samples = scrape(url)
        assert requests_to(samples, SEARCH) == sent
        assert value(samples, "shoal_http_processes") == 2
        assert value(samples, "shoal_collection_points", collection=name) == 30
    # The create went through the worker or straight to the control: counted once either way.
    assert requests_to(samples, "/collections/{collection_name}", "PUT") == 1

    # A worker that ends keeps counting with the figures it last gave.
    os.kill(worker, signal.SIGKILL)
    deadline = time.monotonic() + 20
    while not ended(worker):  # its listening socket closed: no new connection goes to it
        assert time.monotonic() < deadline
        time.sleep(0.2)
    samples = scrape(url)
    assert requests_to(samples, SEARCH) == sent
    assert value(samples, "shoal_http_processes") == 1


# ---------------------------------------------------------------- pure parts


def test_merge_sums_samples_of_the_same_labels():
    a, b = Metrics(), Metrics()
    a.observe("GET", "/x", 200, 0.003)
    a.observe("GET", "/x", 200, 0.003)
    b.observe("GET", "/x", 200, 0.2)
    b.observe("POST", "/y", 500, 0.001)
    merged = {(s.name, frozenset(s.labels.items())): s.value for f in merge([a.part(), b.part()]) for s in f.samples}
    assert merged[("shoal_rest_requests_total", frozenset({"method": "GET", "endpoint": "/x", "status": "200"}.items()))] == 3
    assert merged[("shoal_rest_request_seconds_bucket", frozenset({"method": "GET", "endpoint": "/x", "le": "0.005"}.items()))] == 2
    assert merged[("shoal_rest_request_seconds_bucket", frozenset({"method": "GET", "endpoint": "/x", "le": "+Inf"}.items()))] == 3
    assert not any(name.endswith("_created") for name, _ in merged)
    again = merge([as_part(merge([a.part()])), b.part()])  # a retired worker's figures, summed once more
    assert {(s.name, frozenset(s.labels.items())): s.value for f in again for s in f.samples} == merged


def test_quantile_interpolates_like_prometheus():
    buckets = [(0.1, 10.0), (0.2, 20.0), (float("inf"), 20.0)]
    assert quantile(0.5, buckets) == pytest.approx(0.1)
    assert quantile(0.75, buckets) == pytest.approx(0.15)
    assert quantile(0.5, [(0.1, 0.0), (float("inf"), 0.0)]) is None
    assert quantile(0.99, [(0.1, 1.0), (float("inf"), 5.0)]) == 0.1  # in +Inf: the highest finite bound


def test_history_rates_from_differences():
    m = Metrics()
    history = RequestHistory(period=5, size=3)

    def sample(t: float) -> None:
        history.add(totals(merge([m.part()]), t))

    sample(100)
    for _ in range(10):
        m.observe("GET", "/x", 200, 0.004)
    m.observe("GET", "/x", 503, 0.004)
    sample(105)
    sample(110)
    first, second = history.points()
    assert first["requests_per_s"] == pytest.approx(11 / 5) and first["errors_per_s"] == pytest.approx(1 / 5)
    assert first["latency_mean_ms"] == pytest.approx(4) and 2 < first["latency_p95_ms"] <= 5
    assert second == {"time": 110, "requests_per_s": 0, "errors_per_s": 0, "latency_mean_ms": None,
                      "latency_p95_ms": None}
    for t in (115, 120, 125):
        sample(t)
    assert [p["time"] for p in history.points()] == [115, 120, 125]  # three kept
