"""The distance matrix (``search/matrix/pairs`` and ``/offsets``).

As in Qdrant: sample ``sample`` random points (default 10) that pass the filter
and hold vector ``using``, then give each sampled point its ``limit`` (default
3) nearest among the sample, itself excluded (on a multivector, by MaxSim of
the point's rows against the other's). Each shard offers a random sample
of its own; one draw over their union picks the final sample, so the matrix
spans every shard.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import numpy as np

from cluster.collection import Collection
from shard import distances
from shard import multi as multi_store
from shard.types import DEFAULT_VECTOR, BadInput


async def compute(coll: Collection, body: dict[str, Any]) -> tuple[list, list[list[tuple[int, float]]]]:
    """(sampled ids, per sampled point its [(index into ids, score)], best first)."""
    sample = body.get("sample", 10) if body.get("sample") is not None else 10
    limit = body.get("limit", 3) if body.get("limit") is not None else 3
    using = body.get("using") or DEFAULT_VECTOR
    multi = coll.shard_config.multi.get(using)
    params = multi or coll.shard_config.vector(using)
    if sample < 2 or limit < 1:
        raise BadInput("sample must be at least 2 and limit at least 1")
    seed = random.randrange(2**32)
    parts = await asyncio.gather(*(s.sample(body.get("filter"), using, sample, seed + s.index) for s in coll.shards))
    ids = [i for part_ids, _ in parts for i in part_ids]
    if not ids:
        return [], []
    if multi is not None:
        vectors = [m for _, part in parts for m in part]
    else:
        vectors = np.concatenate([v for _, v in parts if len(v)], axis=0)
    if len(ids) > sample:
        chosen = np.sort(np.random.default_rng(seed).choice(len(ids), size=sample, replace=False))
        ids = [ids[i] for i in chosen.tolist()]
        vectors = [vectors[i] for i in chosen.tolist()] if multi is not None else vectors[chosen]
    if multi is not None:
        sims = multi_store.maxsim_matrix(vectors, vectors, multi.size, multi.distance, multi.datatype or "float32")
    else:
        sims = distances.similarity(vectors, vectors, params.distance).astype(np.float32)
    np.fill_diagonal(sims, -np.inf)
    k = min(limit, len(ids) - 1)
    neighbours = []
    for row in sims:
        order = np.lexsort((np.arange(len(row)), -row))[:k]
        shown = distances.to_display(row[order], params.distance)
        neighbours.append([(int(j), float(s)) for j, s in zip(order, np.atleast_1d(shown))])
    return ids, neighbours


def as_pairs(ids: list, neighbours: list[list[tuple[int, float]]]) -> dict[str, Any]:
    return {"pairs": [{"a": ids[a], "b": ids[b], "score": s} for a, row in enumerate(neighbours) for b, s in row]}


def as_offsets(ids: list, neighbours: list[list[tuple[int, float]]]) -> dict[str, Any]:
    rows, cols, scores = [], [], []
    for a, row in enumerate(neighbours):
        for b, s in row:
            rows.append(a)
            cols.append(b)
            scores.append(s)
    return {"offsets_row": rows, "offsets_col": cols, "scores": scores, "ids": ids}
