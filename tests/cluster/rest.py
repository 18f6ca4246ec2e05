"""Talking to a cluster's gateways in the tests: their REST answers, written points, retries."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import numpy as np
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from tests.cluster import gateways

DIM = 16


def get(url: str) -> dict:
    try:
        with urllib.request.urlopen(url, timeout=30) as answer:
            return json.load(answer)["result"]
    except urllib.error.HTTPError as exc:
        raise AssertionError(f"GET {url}: {exc.code} {exc.read()[:2000]!r}") from None


def replicas(gateway: gateways.Gateway, name: str) -> list[dict]:
    """Every replica of the collection: shard_id, peer_id, state, and Shoal's extras:
    replica id, whether it is the shard's primary, content hash."""
    info = get(f"{gateway.url}/collections/{name}/cluster")
    return [{"shard_id": r["shard_id"], "peer_id": r["peer_id"], "state": r["state"], "replica": r["shoal_replica"],
             "primary": r.get("shoal_primary"), "hash": r.get("shoal_content_hash")}
            for r in info["local_shards"] + info["remote_shards"]]


def points(n: int, start: int = 0, seed: int = 0) -> list[models.PointStruct]:
    rng = np.random.default_rng(seed)
    return [models.PointStruct(id=start + i, vector=rng.standard_normal(DIM).tolist(), payload={"i": start + i})
            for i in range(n)]


def upsert_retrying(client: QdrantClient, points, seconds: float = 90.0, collection: str = "fail") -> float:
    """Upsert until it is acknowledged (a 5xx while a primary is being replaced is
    retried: the write may or may not have been applied, and upserts are
    idempotent); how long it took."""
    started = time.monotonic()
    while True:
        try:
            client.upsert(collection, points, wait=True)
            return time.monotonic() - started
        except (UnexpectedResponse, ResponseHandlingException) as exc:
            if time.monotonic() - started > seconds:
                raise AssertionError(f"no write acknowledged within {seconds:.0f} s: {exc}") from None
            time.sleep(0.5)


def batch_writer(client: QdrantClient, collection: str, acked: dict, size: int):
    """``write(batch)``: upsert the ``size`` points of batch number ``batch`` until
    acknowledged, and record them in ``acked`` (id -> vector)."""
    def write(batch: int) -> None:
        made = points(size, start=batch * size, seed=batch)
        upsert_retrying(client, made, collection=collection)
        acked.update({p.id: p.vector for p in made})
    return write
