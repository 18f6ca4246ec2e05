"""What every route needs: the body as validated JSON, the collection, writes."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import web

from cluster.collection import Collection, Registry
from cluster.names import length_problem, name_problem
from cluster.replica_set import READ_CONSISTENCY
from cluster.shard_client import REQUEST_TIMEOUT
from gateway import models, rate_limits, strict
from gateway.errors import BodyTimeout, ValidationError
from gateway.params import ReadParams, read_params, update_params
from gateway.state import COLLECTIONS, RATE_LIMITS, SETTINGS

CREATE_ROUTE = "/collections/{collection_name}"


async def read_body(request: web.Request) -> bytes:
    """The raw body, which must arrive within ``service.body_timeout_s``: a client
    that announces more than it sends does not hold its connection for ever
    (BodyTimeout: 408, and the connection is closed)."""
    if request.content.is_eof():  # all of it has arrived (most requests): no timer needed
        return await request.read()
    seconds = request.app[SETTINGS].service.body_timeout_s
    try:
        async with asyncio.timeout(seconds):
            return await request.read()
    except TimeoutError:
        raise BodyTimeout(seconds) from None


async def body(request: web.Request, model_name: str) -> dict[str, Any]:
    """The request body validated by Qdrant's model ``model_name``, as JSON-shaped
    data (only the fields the client sent)."""
    raw = await read_body(request)
    return models.read(getattr(models, model_name), raw or b"{}")


def check_collection_path(request: web.Request) -> None:
    """The collection name in the path, checked before anything else happens, as
    Qdrant's path extractor checks it: 1 to 255 characters on every route, and
    Qdrant's full rule for a new collection (PUT /collections/{name})."""
    name = request.match_info.get("collection_name")
    if name is None:
        return
    creating = request.method == "PUT" and request.match_info.route.resource.canonical == CREATE_ROUTE
    problem = name_problem(name) if creating else length_problem(name)
    if problem is not None:
        raise ValidationError([("name", problem)], "path parameters")


def registry(request: web.Request) -> Registry:
    return request.app[COLLECTIONS]


def collection(request: web.Request) -> Collection:
    return request.app[COLLECTIONS].resolve(request.match_info["collection_name"])


def read_options(request: web.Request) -> ReadParams:
    """A read's query parameters (Qdrant's ReadParams); its ``timeout`` bounds
    every shard call made for this request."""
    params = read_params(request)
    if params.timeout is not None:
        REQUEST_TIMEOUT.set(float(params.timeout))
    if params.consistency is not None:
        READ_CONSISTENCY.set(params.consistency)
    return params


def wait_flag(request: web.Request) -> bool:
    """``?wait=`` of a point write (the rest of Qdrant's UpdateParam is read too)."""
    return update_params(request).wait


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


async def strict_mode(request: web.Request, coll: Collection, kind: str, data: dict[str, Any],
                      timeout: int | None = None) -> None:
    """Qdrant's strict mode for a request of ``kind`` (``gateway.strict``), called
    before anything happens: the collection's limits, then its rate limits. A
    read passes its ``timeout`` parameter. Does nothing while strict mode is off."""
    config = strict.active(coll.config)
    if config is None:
        return
    want_schema, want_count = strict.needs(coll.config, kind)
    facts = strict.Facts()
    if want_schema or want_count:  # every shard has the same payload indexes: one tells them
        infos = await asyncio.gather(*(s.info() for s in (coll.shards if want_count else coll.shards[:1])))
        payload_bytes = 0
        if want_count and config.get("max_collection_payload_size_bytes") is not None:
            payload_bytes = sum(await asyncio.gather(*(s.payload_bytes() for s in coll.shards)))
        facts = strict.Facts(schema=infos[0].payload_schema, points_count=sum(i.points_count for i in infos),
                             payload_bytes=payload_bytes)
    strict.verify(coll.config, kind, data, facts, timeout)
    write = kind not in strict.READS
    if config.get("write_rate_limit" if write else "read_rate_limit") is None:
        return
    if write:  # an operation by filter costs the points it matches
        costs = [part if isinstance(part, int) else await _matching(coll, part)
                 for part in rate_limits.write_parts(kind, data)]
    else:
        costs = [rate_limits.read_cost(kind, data)]
    request.app[RATE_LIMITS].take(coll.incarnation, config, write, costs, time.monotonic())


async def _matching(coll: Collection, flt: dict[str, Any]) -> int:
    """Points ``flt`` selects, at least 1: a filtered write's rate cost."""
    return max(1, sum(await asyncio.gather(*(s.count(flt) for s in coll.shards))))
