"""Deterministic data sets for the API suites, and helpers to load them on both sides.

The payloads are shaped to exercise every filter kind: keywords, integers, floats,
bools, datetimes, geo points, full-text, arrays, nested objects, nulls, empty arrays
and missing keys. Only qdrant-client's ``models`` are used, so tests/latest can import
this module under the newest client too.
"""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np
from qdrant_client import models

CITIES = ["London", "Berlin", "Moscow", "Paris", "Tokyo"]
COLORS = ["red", "green", "blue"]
WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"]
GEO = {"London": (-0.1276, 51.5072), "Berlin": (13.405, 52.52), "Moscow": (37.6173, 55.7558),
       "Paris": (2.3522, 48.8566), "Tokyo": (139.6503, 35.6762)}


def point_uuid(i: int) -> str:
    """A stable UUID per index (canonical, lower case)."""
    return str(uuid.UUID(int=(0x5EED << 96) + i * 7919))


def payload_for(i: int, rng: np.random.Generator) -> dict[str, Any]:
    city = CITIES[i % len(CITIES)]
    lon, lat = GEO[city]
    payload: dict[str, Any] = {
        "city": city,
        "color": COLORS[(i // 5) % len(COLORS)],
        "count": i % 50,
        "price": round(float(rng.uniform(0, 100)), 2),
        "flag": bool(i % 3 == 0),
        "tags": [WORDS[(i + k) % len(WORDS)] for k in range(i % 4)],
        "created": f"2024-{1 + i % 12:02d}-{1 + i % 28:02d}T{i % 24:02d}:30:00Z",
        "location": {"lon": round(lon + float(rng.uniform(-1, 1)), 4),
                     "lat": round(lat + float(rng.uniform(-1, 1)), 4)},
        "text": " ".join(WORDS[(i * k + 3) % len(WORDS)] for k in range(1, 4)),
        "nested": {"a": {"b": i % 7}},
        "items": [{"b": (i + k) % 5, "c": COLORS[k % 3]} for k in range(1 + i % 3)],
        "uid": point_uuid(i + 100_000),
    }
    kind = i % 6
    if kind == 1:
        payload["maybe"] = None
    elif kind == 2:
        payload["maybe"] = []
    elif kind == 3:
        payload["maybe"] = "here"
    elif kind == 4:
        payload["maybe"] = [1, 2]
    return payload


def vectors(n: int, dim: int, seed: int, dtype=np.float32) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(-1.0, 1.0, size=(n, dim)).astype(dtype)


def make_points(n: int, dim: int, *, seed: int = 1, uuid_ids: bool = False,
                named: dict[str, int] | None = None) -> list[models.PointStruct]:
    """``n`` points with rich payloads. ``named`` maps vector names to dims; point i
    lacks the second named vector when i % 10 == 9 (for has_vector)."""
    rng = np.random.default_rng(seed + 1000)
    points = []
    if named:
        mats = {name: vectors(n, d, seed + k) for k, (name, d) in enumerate(named.items())}
    else:
        mat = vectors(n, dim, seed)
    for i in range(n):
        pid = point_uuid(i) if uuid_ids else i
        if named:
            vec: Any = {name: m[i].tolist() for name, m in mats.items()}
            if i % 10 == 9 and len(named) > 1:
                vec.pop(list(named)[1])
        else:
            vec = mat[i].tolist()
        points.append(models.PointStruct(id=pid, vector=vec, payload=payload_for(i, rng)))
    return points


def upsert_both(shoal, memory, name: str, points: list, batch: int = 500) -> None:
    for start in range(0, len(points), batch):
        chunk = points[start:start + batch]
        for client in (shoal, memory):
            result = client.upsert(collection_name=name, points=chunk, wait=True)
            assert result.status == models.UpdateStatus.COMPLETED, result


def create_both(shoal, memory, name: str, vectors_config, shard_number: int, **kwargs) -> None:
    for client in (shoal, memory):
        assert client.create_collection(collection_name=name, vectors_config=vectors_config,
                                        shard_number=shard_number, **kwargs) is True


def query_vectors(k: int, dim: int, seed: int = 99) -> list[list[float]]:
    return vectors(k, dim, seed).tolist()
