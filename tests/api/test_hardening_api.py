"""Hostile and careless requests against a real server: names that try to leave
the storage folder, names that once wedged the server, limits that keep it
answering, and a create that fails half-way. Nothing outside storage may change,
no request may get a 5xx, and the server must start again with every healthy
collection."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.api.rawhttp import call, error_text
from tests.conftest import ShoalServer, free_port

VECTORS = {"vectors": {"size": 3, "distance": "Cosine"}}
POINTS = {"points": [{"id": i, "vector": [1.0, float(i), 0.5], "payload": {"i": i}} for i in range(1, 6)]}

# Collection names as they appear in a URL path: encoded and not, escaping the
# storage folder, naming it, or holding bytes that once reached a path or Ray.
HOSTILE = [
    "..%2F..%2Fvictim", "..%2F..%2F..%2Fvictim", "%2E%2E%2F%2E%2E%2Fvictim", "..%5C..%5Cvictim",
    "%2E%2E", "%2E", "..", ".", ".%2F..", "a%2Fb", "%2Fvictim", "..%2Fstorage", "..%2Fraft",
    "victim%00", "a%00b", "a%0Ab", "a%3Ab", "x" * 300, "%2E%2E%2F%2E%2E%2F%2E%2E%2F%2E%2E%2Ftmp",
]


def tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder below ``root``: relative path -> (size, mode)."""
    found = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder, name)
            info = path.lstat()
            found[str(path.relative_to(root))] = (info.st_size if name in files else 0, info.st_mode)
    return found


def raw(server: ShoalServer, method: str, path: str, body: dict | None = None) -> tuple[int, object]:
    """A request whose path goes out byte for byte (no client-side normalising)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        data = None if body is None else json.dumps(body).encode()
        conn.request(method, path, body=data, headers={"Content-Type": "application/json"} if data else {})
        response = conn.getresponse()
        payload = response.read()
        return response.status, json.loads(payload) if payload else None
    finally:
        conn.close()


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    """A server whose storage sits beside folders it must never touch:
    ``<base>/victim`` and ``<base>/box/sibling`` (``<base>/box/storage`` is its own)."""
    base = tmp_path_factory.mktemp("hardening")
    for folder in (base / "victim", base / "box" / "sibling", base / "tmp"):
        folder.mkdir(parents=True)
        (folder / "keep.txt").write_text("not Shoal's")
    server = ShoalServer(base / "box" / "storage", base / "logs", env={
        "SHOAL__SERVICE__BODY_TIMEOUT_S": "2",
        "SHOAL__SERVICE__MAX_CONNECTIONS": "12",
        "SHOAL__LIMITS__MAX_SHARDS_TOTAL": "10",
    })
    (base / "logs").mkdir()
    server.start()
    assert call("PUT", f"{server.url}/collections/kept", VECTORS)[0] == 200
    assert call("PUT", f"{server.url}/collections/kept/points?wait=true", POINTS)[0] == 200
    yield server, base
    server.stop()


def outside_storage(base: Path) -> dict:
    return {k: v for k, v in tree(base).items() if not k.startswith(("box/storage", "logs"))}


def count(server: ShoalServer, name: str) -> int:
    status, body = call("POST", f"{server.url}/collections/{name}/points/count", {"exact": True})
    assert status == 200, body
    return body["result"]["count"]


def test_traversal_names_touch_nothing_outside_storage(sandbox):
    server, base = sandbox
    before = outside_storage(base)
    raft_before = tree(server.storage / "raft").keys()
    for name in HOSTILE:
        url = f"/collections/{name}"
        answers = {
            "create": raw(server, "PUT", url, VECTORS),
            "update": raw(server, "PATCH", url, {"optimizers_config": {"indexing_threshold": 1}}),
            "upsert": raw(server, "PUT", url + "/points?wait=true", POINTS),
            "delete points": raw(server, "POST", url + "/points/delete?wait=true", {"filter": {}}),
            "index": raw(server, "PUT", url + "/index?wait=true", {"field_name": "i", "field_schema": "integer"}),
            "info": raw(server, "GET", url),
            "delete": raw(server, "DELETE", url),
        }
        for what, (status, body) in answers.items():
            assert status < 500, (name, what, status, body)
            assert not (status == 200 and what in ("create", "delete") and body["result"] is True), (name, what, body)
            if status >= 400 and (status != 404 or body is not None):  # no route: empty 404, as Qdrant
                assert error_text(body), (name, what, status, body)
    assert outside_storage(base) == before
    assert set(tree(server.storage / "raft")) >= set(raft_before)
    assert call("GET", f"{server.url}/collections")[1]["result"]["collections"] == [{"name": "kept"}]
    assert count(server, "kept") == 5


def test_new_names_follow_qdrants_rule_with_its_422(sandbox):
    server, _ = sandbox
    status, body = raw(server, "PUT", "/collections/a%3Ab", VECTORS)
    assert status == 422 and body["time"] == 0.0
    assert error_text(body) == 'Validation error in path parameters: [name: collection name cannot contain ":" char]'
    status, body = raw(server, "GET", "/collections/" + "y" * 256)
    assert (status, error_text(body)) == (422, "Validation error in path parameters: [name: must be from 1 to 255 characters]")
    # A name taken by a collection cannot be written into an alias with a bad character either.
    status, body = call("POST", f"{server.url}/collections/aliases",
                        {"actions": [{"create_alias": {"alias_name": "../kept", "collection_name": "kept"}}]})
    assert status == 422, body
    assert error_text(body) == ('Validation error in JSON body: [actions[0].create_alias.alias_name: '
                                'collection name cannot contain "/" char]')
    assert call("GET", f"{server.url}/aliases")[1]["result"]["aliases"] == []


def test_shard_limits_refuse_and_create_nothing(sandbox):
    server, base = sandbox
    folders = set(os.listdir(server.storage / "collections"))
    status, body = call("PUT", f"{server.url}/collections/many", {**VECTORS, "shard_number": 1000})
    assert (status, error_text(body)) == (
        422, "Validation error in JSON body: [shard_number: value 1000 invalid, must be from 1 to 64]")
    # This server hosts at most 10 shards: "kept" has one.
    status, body = call("PUT", f"{server.url}/collections/many", {**VECTORS, "shard_number": 10})
    assert status == 400, body
    assert "above its limit of 10 (setting limits.max_shards_total)" in error_text(body)
    assert set(os.listdir(server.storage / "collections")) == folders
    assert call("GET", f"{server.url}/collections/many")[0] == 404


def test_a_create_does_not_hold_up_other_requests(sandbox):
    server, _ = sandbox
    done = threading.Event()
    result = {}

    def create():
        result["create"] = call("PUT", f"{server.url}/collections/wide", {**VECTORS, "shard_number": 8}, timeout=300)
        done.set()

    threading.Thread(target=create, daemon=True).start()
    answered_meanwhile = 0
    deadline = time.monotonic() + 300
    while not done.is_set() and time.monotonic() < deadline:
        status, _ = call("POST", f"{server.url}/collections/kept/points/count", {"exact": True}, timeout=30)
        assert status == 200
        if not done.is_set():
            answered_meanwhile += 1
    assert done.wait(60) and result["create"][0] == 200, result
    assert answered_meanwhile > 0, "no request was answered while the 8-shard create ran"
    assert call("DELETE", f"{server.url}/collections/wide")[1]["result"] is True


def test_a_body_that_never_arrives_gets_408_and_the_connection_closes(sandbox):
    server, _ = sandbox
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(b"POST /collections/kept/points/count HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"exact\":")
        answer = b""
        while b"}" not in answer.partition(b"\r\n\r\n")[2]:
            chunk = sock.recv(4096)
            assert chunk, answer
            answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408"), head
        assert b"application/json" in head and b"Connection: close" in head
        assert error_text(json.loads(body)) == "Timeout: the request body did not arrive within 2 s"
        assert sock.recv(4096) == b""  # closed: the rest would have been read as a request
    assert count(server, "kept") == 5


def test_connections_beyond_the_limit_get_503_and_the_server_goes_on(sandbox):
    server, _ = sandbox
    idle = [socket.create_connection(("127.0.0.1", server.port), timeout=30) for _ in range(12)]
    try:
        time.sleep(0.5)  # let the server accept them all
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as extra:
            answer = b""
            while True:
                chunk = extra.recv(4096)
                if not chunk:
                    break
                answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 503"), answer
        assert "service.max_connections" in error_text(json.loads(body))
    finally:
        for sock in idle:
            sock.close()
    deadline = time.monotonic() + 30
    while True:  # the closed ones are let go of, and the server answers again
        try:
            assert count(server, "kept") == 5
            break
        except (AssertionError, OSError):
            assert time.monotonic() < deadline
            time.sleep(0.2)


def test_malformed_http_is_one_warning_line(sandbox):
    server, _ = sandbox
    log = server.log_dir / f"server-{server.starts}.stderr"
    before = log.read_text(errors="replace")
    for request in (b"GET / HTTP/1.1\r\nHost: x\r\nX-Bad: a\x01b\r\n\r\n", b"GET /\x01 HTTP/1.1\r\nHost: x\r\n\r\n"):
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
            sock.sendall(request)
            assert sock.recv(4096).startswith(b"HTTP/1.")
    deadline = time.monotonic() + 10
    while log.read_text(errors="replace").count("malformed HTTP request") < before.count("malformed HTTP request") + 2:
        assert time.monotonic() < deadline, log.read_text(errors="replace")[len(before):]
        time.sleep(0.1)
    new = log.read_text(errors="replace")[len(before):]
    assert "Traceback" not in new and "ERROR" not in new, new
    assert all(" WARNING aiohttp.server: malformed HTTP request from " in line
               for line in new.splitlines() if "malformed" in line), new


def _shard_socket(server: ShoalServer) -> bytes:
    """The abstract address of one of this server's shard sockets (read from
    /proc: the inodes its shard actors listen on)."""
    inodes = set()
    for pid in server.shard_actors():
        for fd in os.listdir(f"/proc/{pid}/fd"):
            target = os.readlink(f"/proc/{pid}/fd/{fd}") if os.path.exists(f"/proc/{pid}/fd/{fd}") else ""
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    for line in Path("/proc/net/unix").read_text().splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 8 and fields[6] in inodes and fields[7].startswith("@shoal-"):
            return b"\0" + fields[7][1:].encode()
    raise AssertionError("no shard socket found")


_PROBE = r"""
import os, pickle, socket, struct, sys
if len(sys.argv) > 2:
    os.setgid(65534); os.setuid(65534)
sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
sock.settimeout(20)
sock.connect(bytes.fromhex(sys.argv[1]))
frame = pickle.dumps((1, "info", (), {}))
try:
    sock.sendall(struct.pack("<I", len(frame)) + frame)
    data = sock.recv(1 << 20)
except OSError:  # closed at once (a broken pipe or a reset)
    data = b""
print("answered" if data else "refused")
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
def test_shard_sockets_answer_only_this_user(sandbox):
    server, _ = sandbox
    address = _shard_socket(server).hex()
    same = subprocess.run([sys.executable, "-c", _PROBE, address], capture_output=True, text=True, timeout=60)
    other = subprocess.run([sys.executable, "-c", _PROBE, address, "nobody"], capture_output=True, text=True, timeout=60)
    assert same.stdout.strip() == "answered", same.stderr
    assert other.stdout.strip() == "refused", other.stderr
    assert count(server, "kept") == 5


@pytest.mark.slow
def test_bad_names_never_wedge_a_restart(sandbox):
    server, _ = sandbox
    for name in ("a%00b", "x" * 300, "..%2F..%2Fvictim"):
        assert raw(server, "PUT", f"/collections/{name}", VECTORS)[0] == 422
    server.restart(graceful=True)
    assert count(server, "kept") == 5
    server.restart(graceful=False)  # kill -9 of every Shoal process
    assert count(server, "kept") == 5
    assert call("GET", f"{server.url}/readyz")[0] == 200


@pytest.mark.slow
def test_one_collection_that_cannot_load_does_not_hold_up_the_others(sandbox):
    server, _ = sandbox
    folders = set(os.listdir(server.storage / "collections"))
    assert call("PUT", f"{server.url}/collections/broken", VECTORS)[0] == 200
    assert call("PUT", f"{server.url}/collections/broken/points?wait=true", POINTS)[0] == 200
    (folder,) = set(os.listdir(server.storage / "collections")) - folders
    server.stop()
    (server.storage / "collections" / folder / "shard-0" / "snapshot" / "meta.json").write_text("not json")
    server.start()  # waits for /readyz: the healthy collection is served

    assert count(server, "kept") == 5
    # The failed shard's own lines reach the server's log through Ray: without
    # terminal colours, and no Ray token warning at start.
    deadline = time.monotonic() + 30
    while "ShardActor pid=" not in server.stderr_tail(5000):  # Ray forwards them a little later
        assert time.monotonic() < deadline, server.stderr_tail(50)
        time.sleep(0.5)
    log = server.stderr_tail(5000)
    assert "\x1b[" not in log, log[-3000:]
    assert "Token authentication" not in log
    names = {c["name"] for c in call("GET", f"{server.url}/collections")[1]["result"]["collections"]}
    assert names == {"kept", "broken"}
    status, body = call("GET", f"{server.url}/collections/broken")
    assert status == 200 and body["result"]["status"] == "red", body
    assert body["result"]["optimizer_status"]["error"], body
    status, body = call("POST", f"{server.url}/collections/broken/points/count", {})
    assert status == 503 and error_text(body).startswith("Shard temporarily unavailable: "), body
    assert call("GET", f"{server.url}/collections/broken/exists")[1]["result"] == {"exists": True}
    # It can be dropped, files and all, and created afresh.
    assert call("DELETE", f"{server.url}/collections/broken")[1]["result"] is True
    assert folder not in os.listdir(server.storage / "collections")
    assert call("PUT", f"{server.url}/collections/broken", VECTORS)[0] == 200
    assert count(server, "broken") == 0
    assert call("DELETE", f"{server.url}/collections/broken")[1]["result"] is True


@pytest.fixture(scope="module")
def impatient(tmp_path_factory):
    """A server whose shards may take 10 ms to start: every create fails half-way."""
    base = tmp_path_factory.mktemp("impatient")
    server = ShoalServer(base / "storage", base, env={"SHOAL__LIMITS__SHARD_START_TIMEOUT_S": "0.01"})
    server.start()
    yield server
    server.stop()


@pytest.mark.slow
def test_a_create_that_fails_leaves_nothing_behind(impatient):
    server = impatient
    status, body = call("PUT", f"{server.url}/collections/half", {**VECTORS, "shard_number": 3}, timeout=120)
    assert status == 503, body
    assert "did not start within 0.01 s" in error_text(body)
    assert call("GET", f"{server.url}/collections")[1]["result"]["collections"] == []
    assert call("GET", f"{server.url}/collections/half")[0] == 404
    assert not list((server.storage / "collections").glob("*"))
    deadline = time.monotonic() + 60
    while server.shard_actors():  # the actors are stopped, not left running
        assert time.monotonic() < deadline, server.shard_actors()
        time.sleep(0.5)
    server.restart(graceful=True)
    assert call("GET", f"{server.url}/collections")[1]["result"]["collections"] == []
    # The name is free (nothing of the failed create was committed): trying again
    # fails the same way, not with "already exists".
    status, body = call("PUT", f"{server.url}/collections/half", VECTORS, timeout=120)
    assert status == 503 and "did not start" in error_text(body), body



@pytest.mark.slow
def test_a_reads_timeout_bounds_its_shard_calls(tmp_path):
    """``?timeout=`` of a read bounds the wait on a shard that does not answer:
    408 in Qdrant's words, and the shard serves again once it runs."""
    # The health monitor must not step in first (it would answer 503).
    server = ShoalServer(tmp_path / "storage", tmp_path, env={"SHOAL__CLUSTER__SHARD_PING_TIMEOUT_S": "60",
                                                             "SHOAL__CLUSTER__SHARD_RESTART_AFTER_S": "600"})
    server.start()
    try:
        assert call("PUT", f"{server.url}/collections/slow", VECTORS)[0] == 200
        assert call("PUT", f"{server.url}/collections/slow/points?wait=true", POINTS)[0] == 200
        (actor,) = server.shard_actors()
        os.kill(actor, signal.SIGSTOP)
        try:
            status, body = call("POST", f"{server.url}/collections/slow/points/search?timeout=1",
                                {"vector": [1.0, 2.0, 3.0], "limit": 2}, timeout=30)
            assert status == 408, body
            assert error_text(body).startswith("Timeout: "), body
            status, body = call("POST", f"{server.url}/collections/slow/points/count?timeout=1", {}, timeout=30)
            assert status == 408, body
        finally:
            os.kill(actor, signal.SIGCONT)
        assert count(server, "slow") == 5
    finally:
        server.stop()


def test_the_command_line_shows_its_version_and_no_internal_command():
    shown = subprocess.run([sys.executable, "-m", "gateway", "--help"], capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0 and "serve" in shown.stdout and "_worker" not in shown.stdout, shown.stdout
    version = subprocess.run([sys.executable, "-m", "gateway", "--version"], capture_output=True, text=True, timeout=60)
    assert version.returncode == 0 and version.stdout.startswith("shoal ") and "Qdrant REST API 1.15" in version.stdout


@pytest.mark.parametrize("case", ["not yaml", "unknown setting", "peers without a secret", "missing file",
                                  "no ray head"])
def test_bad_start_up_input_ends_with_one_line_saying_what_to_change(tmp_path, case):
    """A malformed or missing configuration file, a setting that is not valid, or a
    Ray address nobody answers at: exit status 2 and one line on stderr, no traceback,
    and the secret never shown."""
    config = tmp_path / "shoal.yaml"
    argv, env = ["serve", "--storage", str(tmp_path / "storage")], {}
    if case == "not yaml":
        config.write_text("service: [1\n")
        argv += ["--config", str(config)]
        said = "is not valid YAML (line 2, column 1)"
    elif case == "unknown setting":
        config.write_text("service:\n  htp_port: 1\n")
        argv += ["--config", str(config)]
        said = "service.htp_port: Extra inputs are not permitted"
    elif case == "peers without a secret":
        argv += ["--peers", "10.0.0.2:6335", "--ray-address", "10.0.0.1:6379"]
        said = "cluster.secret is required when cluster.raft_peers is set"
    elif case == "missing file":
        argv += ["--config", str(tmp_path / "nope.yaml")]
        said = "nope.yaml: No such file or directory"
    else:
        argv += ["--ray-address", f"127.0.0.1:{free_port(low=20_000)}", "--cluster-secret", "hush, a secret"]
        env = {"SHOAL__CLUSTER__RAY_CONNECT_TIMEOUT_S": "1"}
        said = "cannot reach the Ray cluster's head at 127.0.0.1:"
    done = subprocess.run([sys.executable, "-m", "gateway", *argv], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **env})
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith("shoal: error: "), done.stderr
    assert said in lines[0] and "Traceback" not in done.stderr and "hush" not in done.stderr
