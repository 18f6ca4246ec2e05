"""Service endpoints: version, probes, Prometheus metrics, collection status and counts."""

import os
import sys
import time

import pytest

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


def _listening_tcp(pids: set[int]) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket in LISTEN state held by ``pids`` (Linux /proc)."""
    listening = {}
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        for line in open(table).read().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":  # TCP_LISTEN
                address, port = fields[1].split(":")
                assert len(address) == width
                listening[fields[9]] = (address, int(port, 16))
    found = set()
    for pid in pids:
        try:
            links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
        except OSError:  # the process ended meanwhile
            continue
        for link in links:
            if link.startswith("socket:[") and link[8:-1] in listening:
                found.add(listening[link[8:-1]])
    return found


# 127.0.0.1 as /proc/net/tcp prints it, and as an IPv4-mapped IPv6 address.
LOOPBACK = {"0100007F", "0000000000000000FFFF00000100007F", "00000000000000000000000001000000"}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_every_process_listens_on_loopback_only(shoal_server):
    """Started with --host 127.0.0.1, neither the gateway nor any of its Ray processes
    (GCS, raylet, agents, shard actors) may listen on another interface."""
    if shoal_server is None:
        pytest.skip("no server (SHOAL_TEST_AGAINST_MEMORY)")
    listening = _listening_tcp(shoal_server.pids())
    assert any(port == shoal_server.port for _, port in listening)
    assert len(listening) > 3  # the gateway, Ray's GCS, raylet, ...
    assert {(a, p) for a, p in listening if a not in LOOPBACK} == set()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_shard_actors_run_at_normal_priority(shoal_server, base_url):
    """Ray starts its workers at niceness 15; a shard serving searches must not
    yield its core to the gateway waiting for its answers."""
    if shoal_server is None:
        pytest.skip("no server (SHOAL_TEST_AGAINST_MEMORY)")
    name = f"nice_{time.monotonic_ns()}"
    assert call("PUT", f"{base_url}/collections/{name}", {"vectors": {"size": 2, "distance": "Dot"}})[0] == 200
    niceness = {}
    for pid in shoal_server.shard_actors():
        try:
            stat = open(f"/proc/{pid}/stat").read()
        except OSError:
            continue
        niceness[pid] = int(stat[stat.rfind(")") + 2 :].split()[16])  # field 19: nice
    call("DELETE", f"{base_url}/collections/{name}")
    assert niceness, "no shard actor process found"
    assert set(niceness.values()) == {0}
