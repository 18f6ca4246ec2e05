"""What the collection and shard snapshot suites share: their points, reading a
whole collection back, and the raw HTTP calls qdrant-client does not make
(an upload as it sends one, a download)."""

from __future__ import annotations

import hashlib
import http.client
import json
import uuid
from pathlib import Path

from qdrant_client import models

VECTORS = models.VectorParams(size=4, distance=models.Distance.COSINE)


def points(n: int, start: int = 0) -> list[models.PointStruct]:
    return [models.PointStruct(id=i, vector=[1.0, float(i % 7), float(i % 5), 0.5], payload={"i": i, "tag": f"t{i % 3}"})
            for i in range(start, start + n)]


def everything(client, name: str) -> dict:
    records, _ = client.scroll(name, limit=100_000, with_vectors=True, with_payload=True)
    return {r.id: (r.vector, r.payload) for r in records}


def snapshots_folder(server) -> Path:
    return server.storage / "snapshots"


def key_folder(name: str) -> str:
    """The folder a collection's snapshots are kept in (a digest of its name)."""
    return hashlib.sha256(name.encode()).hexdigest()[:32]


def prefix(name: str, shard_id: int | None) -> str:
    base = f"/collections/{name}"
    return f"{base}/snapshots" if shard_id is None else f"{base}/shards/{shard_id}/snapshots"


def raw(server, method: str, path: str, body: bytes | None = None,
        headers: dict[str, str] | None = None) -> tuple[int, bytes, http.client.HTTPResponse]:
    """One request with ``path`` sent exactly as given (no normalisation)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read(), response
    finally:
        conn.close()


def upload(server, name: str, data: bytes, field: str = "snapshot", shard_id: int | None = None,
           query: str = "wait=true") -> tuple[int, dict]:
    """A multipart upload, as qdrant-client's REST API sends it."""
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"s.snapshot\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    status, answer, _ = raw(server, "POST", f"{prefix(name, shard_id)}/upload?{query}", body,
                            {"Content-Type": f"multipart/form-data; boundary={boundary}"})
    return status, json.loads(answer)


def download(server, name: str, snapshot: str, shard_id: int | None = None) -> bytes:
    status, data, response = raw(server, "GET", f"{prefix(name, shard_id)}/{snapshot}")
    assert status == 200 and response.getheader("Content-Type") == "application/octet-stream", (status, data[:200])
    return data
