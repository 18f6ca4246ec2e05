"""Service endpoints: version, probes, Prometheus metrics, collection status and counts."""

import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from gateway.commit import UNKNOWN, find_commit
from tests.api.rawhttp import call
from tests.conftest import REPO_ROOT


def test_root_reports_qdrant_115_and_shoals_commit(base_url, shoal):
    status, body = call("GET", base_url + "/")
    assert status == 200 and set(body) == {"title", "version", "commit"}
    assert body["title"] == "qdrant - vector search engine"
    assert body["version"].startswith("1.15.")
    assert re.fullmatch(r"[0-9a-f]{40}", body["commit"]), body
    # The server runs from this checkout: its commit is HEAD's (or, if a commit landed
    # since the server read it, one of HEAD's ancestors).
    git = ["git", "-C", str(REPO_ROOT)]
    if (REPO_ROOT / ".git").exists() and shutil.which("git") and subprocess.run(
            [*git, "rev-parse", "HEAD"], capture_output=True).returncode == 0:  # git may refuse another's checkout
        ancestor = subprocess.run([*git, "merge-base", "--is-ancestor", body["commit"], "HEAD"], capture_output=True)
        assert ancestor.returncode == 0, f"{body['commit']} is not this checkout's HEAD: {ancestor.stderr!r}"
    info = shoal.info()  # qdrant-client's VersionInfo
    assert (info.title, info.version, info.commit) == (body["title"], body["version"], body["commit"])


def test_probes_answer_qdrants_texts(base_url):
    # Qdrant: /healthz and /livez both "healthz check passed", as text/plain (src/actix/api/service_api.rs).
    for path, text in (("/healthz", "healthz check passed"), ("/livez", "healthz check passed"),
                       ("/readyz", "all shards are ready")):
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(base_url + path, timeout=30) as r:
            assert (r.status, r.read().decode()) == (200, text)
            assert r.headers["Content-Type"].split(";")[0] == "text/plain"


def _git(folder: Path, head: str, refs: dict[str, str] | None = None, packed: str | None = None) -> Path:
    folder.mkdir(parents=True)
    (folder / "HEAD").write_text(head)
    for ref, sha in (refs or {}).items():
        (folder / ref).parent.mkdir(parents=True, exist_ok=True)
        (folder / ref).write_text(sha + "\n")
    if packed is not None:
        (folder / "packed-refs").write_text(packed)
    return folder


def test_the_commit_is_found_in_the_package_or_its_checkout(tmp_path):
    a, b, c = "a" * 40, "b" * 40, "0123456789abcdef0123456789abcdef01234567"
    package = tmp_path / "src" / "gateway"
    package.mkdir(parents=True)
    assert find_commit(package) == UNKNOWN == "0" * 40  # neither: 40 zeros
    (package / "COMMIT").write_text(f"{a}\n")
    assert find_commit(package) == a  # a packager's file, where there is no checkout
    (package / "COMMIT").write_text("not a commit\n")
    assert find_commit(package) == UNKNOWN  # a damaged one counts as absent
    (package / "COMMIT").write_text(f"{c}\n")

    git = _git(tmp_path / "src" / ".git", "ref: refs/heads/main\n", {"refs/heads/main": a})
    assert find_commit(package) == a  # the loose ref HEAD names
    (git / "refs/heads/main").unlink()
    (git / "packed-refs").write_text(f"# pack-refs with: peeled\n{b} refs/heads/main\n^{c}\n")
    assert find_commit(package) == b  # else its packed line
    (git / "HEAD").write_text(c.upper() + "\n")
    assert find_commit(package) == c  # a detached HEAD
    (package / "COMMIT").write_text(f"{b}\n")
    assert find_commit(package) == c  # the checkout, always current, before a file maybe stale
    (git / "HEAD").write_text("ref: refs/heads/gone\n")
    assert find_commit(package) == b  # a ref that names nothing: the file
    (package / "COMMIT").unlink()
    assert find_commit(package) == UNKNOWN

    # A worktree: .git is a file naming its own folder, which shares the main one's refs.
    tree = tmp_path / "tree" / "gateway"
    tree.mkdir(parents=True)
    main = _git(tmp_path / "repo", "ref: refs/heads/main\n", packed=f"{c} refs/heads/side\n")
    _git(main / "worktrees" / "t", "ref: refs/heads/side\n")
    (main / "worktrees" / "t" / "commondir").write_text("../..\n")
    (tmp_path / "tree" / ".git").write_text(f"gitdir: {main / 'worktrees' / 't'}\n")
    assert find_commit(tree) == c


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
