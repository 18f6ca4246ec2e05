"""Service endpoints: version, probes, Prometheus metrics, collection status and counts."""

import time

from tests.api.rawhttp import call


def test_root_reports_qdrant_115(base_url):
    status, body = call("GET", base_url + "/")
    assert status == 200
    assert body["title"] == "qdrant - vector search engine"
    assert body["version"].startswith("1.15.")


def test_probes(base_url):
    for path, text in (("/healthz", "healthz check passed"), ("/livez", "livez check passed"), ("/readyz", "all shards are ready")):
        status, body = call("GET", base_url + path)
        assert (status, body) == (200, text)


def test_metrics_count_requests_and_points(base_url):
    name = f"metrics_{time.monotonic_ns()}"
    assert call("PUT", f"{base_url}/collections/{name}", {"vectors": {"size": 2, "distance": "Dot"}, "shard_number": 2})[0] == 200
    points = [{"id": i, "vector": [1.0, float(i)]} for i in range(7)]
    assert call("PUT", f"{base_url}/collections/{name}/points?wait=true", {"points": points})[0] == 200
    assert call("POST", f"{base_url}/collections/{name}/points/search", {"vector": [1, 0], "limit": 1})[0] == 200
    status, text = call("GET", base_url + "/metrics")
    assert status == 200
    assert f'shoal_collection_points{{collection="{name}"}} 7.0' in text
    assert 'shoal_rest_requests_total{endpoint="/collections/{collection_name}/points/search",method="POST",status="200"}' in text
    assert "shoal_rest_request_seconds_bucket" in text
    call("DELETE", f"{base_url}/collections/{name}")


def test_collection_info_counts_and_status(base_url):
    name = f"info_{time.monotonic_ns()}"
    call("PUT", f"{base_url}/collections/{name}", {"vectors": {"a": {"size": 2, "distance": "Cosine"}, "b": {"size": 3, "distance": "Euclid"}}, "shard_number": 3})
    points = [{"id": i, "vector": {"a": [1.0, 0.5]} if i % 2 else {"a": [1.0, 0.5], "b": [0, 1, 2]}} for i in range(10)]
    call("PUT", f"{base_url}/collections/{name}/points?wait=true", {"points": points})
    status, body = call("GET", f"{base_url}/collections/{name}")
    info = body["result"]
    assert status == 200 and info["status"] == "green"
    assert (info["points_count"], info["vectors_count"]) == (10, 15)
    assert info["config"]["params"]["shard_number"] == 3
    assert set(info["config"]["params"]["vectors"]) == {"a", "b"}
    assert info["config"]["hnsw_config"]["m"] == 16
    call("DELETE", f"{base_url}/collections/{name}")
