"""What every route needs: the body as validated JSON, the collection, writes."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from cluster.collection import Collection, Registry
from gateway import models
from gateway.state import COLLECTIONS
from shard.types import BadInput


async def body(request: web.Request, model_name: str) -> dict[str, Any]:
    """The request body validated by Qdrant's model ``model_name``, as JSON-shaped
    data (only the fields the client sent)."""
    raw = await request.read()
    return models.read(getattr(models, model_name), raw or b"{}")


def registry(request: web.Request) -> Registry:
    return request.app[COLLECTIONS]


def collection(request: web.Request) -> Collection:
    return request.app[COLLECTIONS].resolve(request.match_info["collection_name"])


def flag(request: web.Request, name: str, default: bool = False) -> bool:
    value = request.query.get(name)
    if value is None:
        return default
    if value.lower() in ("true", "1", ""):
        return True
    if value.lower() in ("false", "0"):
        return False
    raise BadInput(f"Query deserialize error: `{name}` must be true or false")


async def write(coll: Collection, ops: dict[int, dict[str, Any]], wait: bool) -> dict[str, Any]:
    """Apply per-shard ops; Qdrant's UpdateResult."""
    seqs = await asyncio.gather(*(coll.shards[i].apply(op, wait) for i, op in ops.items()))
    # Shard logs number from 1; Qdrant's operation ids from 0.
    return {"operation_id": max(seqs, default=1) - 1, "status": "completed" if wait else "acknowledged"}


async def check_ids_exist(coll: Collection, ids: list) -> None:
    """Raise PointNotFound for the first missing id, before any shard changes:
    an op on ids that do not all exist must change nothing."""
    from cluster.placement import split_by_shard

    groups = split_by_shard(ids, len(coll.shards))
    await asyncio.gather(*(coll.shards[s].call("check_exist", [ids[r] for r in rows]) for s, rows in groups.items()))
