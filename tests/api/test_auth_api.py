"""API keys and JWT access tokens on a real server (``service.api_key``,
``read_only_api_key``, ``jwt_rbac``), with two HTTP processes so that requests
a worker forwards to the control process are checked too.

Every route of the app's router is called without a key: 401 with Qdrant's
text, except the health checks (and the web UI), which Qdrant leaves open.
"""

from __future__ import annotations

import re
import time

import httpx
import jwt
import pytest
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import UnexpectedResponse

from gateway import auth
from gateway.app import create_app
from gateway.settings import Settings
from tests.conftest import ShoalServer

KEY = "api-key-for-the-auth-tests-0123456789"
RO_KEY = "read-only-key-for-the-auth-tests-0123"
NO_KEY = "Must provide an API key or an Authorization bearer token"
DIM = 4


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("auth")
    server = ShoalServer(base / "storage", base, env={
        "SHOAL__SERVICE__API_KEY": KEY, "SHOAL__SERVICE__READ_ONLY_API_KEY": RO_KEY,
        "SHOAL__SERVICE__JWT_RBAC": "true", "SHOAL__SERVICE__WORKERS": "2"})
    server.start()
    with httpx.Client(base_url=server.url, headers={"api-key": KEY}, timeout=60) as admin:
        for name in ("books", "maps"):
            assert admin.put(f"/collections/{name}", json={"vectors": {"size": DIM, "distance": "Dot"}}).status_code == 200
            points = [{"id": i, "vector": [float(i)] * DIM, "payload": {"n": i}} for i in range(1, 4)]
            assert admin.put(f"/collections/{name}/points?wait=true", json={"points": points}).status_code == 200
    yield server
    server.stop()


def http(server, credential: str | None = None, header: str = "api-key") -> httpx.Client:
    headers = {}
    if credential is not None:
        headers = {"api-key": credential} if header == "api-key" else {"Authorization": f"Bearer {credential}"}
    return httpx.Client(base_url=server.url, headers=headers, timeout=60)


def token(claims: dict, key: str = KEY) -> str:
    return jwt.encode({"exp": int(time.time()) + 600, **claims}, key, algorithm="HS256")


async def _no_lifecycle(app):
    yield


def every_route() -> list[tuple[str, str]]:
    app = create_app(Settings(), _no_lifecycle)
    values = {"collection_name": "books", "id": "1", "field_name": "n", "snapshot_name": "s.snapshot",
              "shard_id": "0", "name": "index.html"}
    return [(r.method, re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], r.resource.canonical))
            for r in app.router.routes()]


def test_every_route_needs_a_key_but_the_health_checks(server):
    opened = set()
    with http(server) as anonymous:
        for method, path in every_route():
            answer = anonymous.request(method, path)
            if auth.is_open(path):
                assert answer.status_code != 401, (method, path)
                opened.add(path)
                continue
            assert answer.status_code == 401, (method, path, answer.status_code, answer.text)
            if method != "HEAD":
                assert answer.text == NO_KEY, (method, path)
        # A path no route serves: 401 first, as Qdrant; with a key, 404.
        assert anonymous.get("/no/such/route").status_code == 401
    assert {"/", "/healthz", "/livez", "/readyz"} <= opened
    with http(server, KEY) as admin:
        assert admin.get("/no/such/route").status_code == 404
    with http(server, "wrong") as stranger:
        answer = stranger.get("/collections")
        assert (answer.status_code, answer.text) == (401, "Invalid API key or JWT")


@pytest.mark.parametrize("header", ["api-key", "bearer"])
def test_both_header_forms(server, header):
    with http(server, KEY, header) as client:
        assert client.get("/collections/books").status_code == 200
    with http(server, "wrong", header) as client:
        assert client.get("/collections/books").status_code == 401


def test_the_read_only_key_reads_and_may_not_write(server):
    with http(server, RO_KEY) as reader:
        for method, path, body in [("GET", "/collections", None), ("GET", "/collections/books", None),
                                   ("POST", "/collections/books/points/search", {"vector": [1.0] * DIM, "limit": 2}),
                                   ("POST", "/collections/books/points/query", {"query": [1.0] * DIM}),
                                   ("POST", "/collections/books/points/scroll", {}),
                                   ("POST", "/collections/books/points/count", {}),
                                   ("POST", "/collections/books/points", {"ids": [1]}),
                                   ("GET", "/collections/books/points/1", None), ("GET", "/cluster", None),
                                   ("GET", "/metrics", None)]:
            answer = reader.request(method, path, json=body)
            assert answer.status_code == 200, (method, path, answer.text)
        for method, path, body in [("PUT", "/collections/books/points", {"points": []}),
                                   ("POST", "/collections/books/points/delete", {"points": [1]}),
                                   ("PUT", "/collections/new", {"vectors": {"size": DIM, "distance": "Dot"}}),
                                   ("DELETE", "/collections/books", None),
                                   ("POST", "/collections/aliases", {"actions": []}),
                                   ("PUT", "/collections/books/index", {"field_name": "n", "field_schema": "integer"})]:
            answer = reader.request(method, path, json=body)
            assert answer.status_code == 403, (method, path, answer.text)
            assert answer.json()["status"]["error"] == "Forbidden: Global manage access is required"
    with http(server, KEY) as admin:
        assert admin.post("/collections/books/points/count", json={}).json()["result"]["count"] == 3
        assert admin.get("/collections/new/exists").json()["result"]["exists"] is False


def test_global_tokens(server):
    with http(server, token({"access": "r"}), "bearer") as reader:
        assert reader.post("/collections/books/points/count", json={}).status_code == 200
        refused = reader.put("/collections/books/points", json={"points": []})
        assert refused.status_code == 403
        assert refused.json()["status"]["error"] == "Forbidden: Global manage access is required"
    with http(server, token({"access": "m"})) as manager:
        assert manager.put("/collections/tokened", json={"vectors": {"size": DIM, "distance": "Dot"}}).status_code == 200
        assert manager.delete("/collections/tokened").status_code == 200


def test_collection_tokens(server):
    scoped = token({"access": [{"collection": "books", "access": "rw"}]})
    with http(server, scoped) as client:
        assert client.put("/collections/books/points?wait=true",
                          json={"points": [{"id": 9, "vector": [1.0] * DIM}]}).status_code == 200
        assert client.post("/collections/books/points/delete?wait=true", json={"points": [9]}).status_code == 200
        assert [c["name"] for c in client.get("/collections").json()["result"]["collections"]] == ["books"]
        other = client.post("/collections/maps/points/count", json={})
        assert other.status_code == 403
        assert other.json()["status"]["error"] == "Forbidden: Access to collection maps is required"
        assert client.delete("/collections/books").status_code == 403
        assert client.get("/cluster").status_code == 403
    read_only = token({"access": [{"collection": "maps", "access": "r"}]})
    with http(server, read_only) as client:
        assert client.post("/collections/maps/points/count", json={}).status_code == 200
        refused = client.put("/collections/maps/points", json={"points": []})
        assert refused.json()["status"]["error"] == "Forbidden: Write access to collection maps is required"


def test_expired_and_badly_signed_tokens(server):
    expired = token({"exp": int(time.time()) - 120})
    with http(server, expired) as client:
        answer = client.get("/collections")
        assert (answer.status_code, answer.text) == (403, "ExpiredSignature")
    with http(server, token({}, key="not the server's key, but long enough")) as client:
        answer = client.get("/collections")
        assert (answer.status_code, answer.text) == (403, "InvalidSignature")


def test_qdrant_client_with_api_keys(server):
    with pytest.warns(UserWarning, match="insecure"):
        admin = QdrantClient(host="127.0.0.1", port=server.port, api_key=KEY, https=False, timeout=60)
    admin.create_collection("client_made", vectors_config=models.VectorParams(size=DIM, distance=models.Distance.DOT))
    admin.upsert("client_made", [models.PointStruct(id=1, vector=[1.0] * DIM, payload={"a": 1})], wait=True)
    assert [p.id for p in admin.query_points("client_made", query=[1.0] * DIM).points] == [1]
    with pytest.warns(UserWarning, match="insecure"):
        reader = QdrantClient(host="127.0.0.1", port=server.port, api_key=RO_KEY, https=False, timeout=60)
    assert reader.count("client_made").count == 1
    with pytest.raises(UnexpectedResponse) as refused:
        reader.upsert("client_made", [models.PointStruct(id=2, vector=[1.0] * DIM)], wait=True)
    assert refused.value.status_code == 403
    anonymous = QdrantClient(host="127.0.0.1", port=server.port, timeout=60)
    with pytest.raises(UnexpectedResponse) as refused:
        anonymous.get_collections()
    assert refused.value.status_code == 401
    admin.delete_collection("client_made")
    for client in (admin, reader, anonymous):
        client.close()


def test_keys_are_not_logged(server):
    logs = "".join(p.read_text(errors="replace") for p in server.log_dir.glob("server-*.std*"))
    assert KEY not in logs and RO_KEY not in logs
