"""The universal query API (``points/query``) in terms of the legacy reads.

A query is one of: a vector or a point id (nearest), ``nearest``, ``recommend``,
``discover``, ``context``, ``order_by``, ``sample``, or nothing (points by id).
Results of order_by, sample and no-query carry score 0, as in Qdrant.
Prefetch, fusion and formula queries are not supported yet and say so.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import replace
from typing import Any

from cluster.collection import Collection, Registry
from gateway import convert, errors, queries
from gateway.merge import merge_by_id, merge_ordered
from shard.types import DEFAULT_VECTOR, BadInput, OrderBy, ScoredPoint


async def query_points(collections: Registry, coll: Collection, body: dict[str, Any]) -> list[ScoredPoint]:
    if body.get("prefetch"):
        raise BadInput("prefetch is not supported by Shoal yet")
    query = body.get("query")
    using = body.get("using") or DEFAULT_VECTOR
    if isinstance(query, dict) and "order_by" in query:
        return await _ordered(coll, body, query["order_by"])
    if isinstance(query, dict) and "sample" in query:
        return await _sample(coll, body)
    if query is None:
        return await _by_id(coll, body)
    if isinstance(query, dict) and ("fusion" in query or "formula" in query or "rrf" in query):
        raise BadInput("fusion and formula queries need prefetch, which Shoal does not support yet")
    req = await scored_request(collections, coll, body, query, using)
    return (await queries.run(coll, [req]))[0]


async def scored_request(collections, coll, body, query, using):
    if isinstance(query, dict) and "nearest" in query:
        query = query["nearest"]
    sparse_given = isinstance(query, dict) and "indices" in query
    if sparse_given or using in coll.shard_config.sparse:
        if not sparse_given and not isinstance(query, list):
            raise BadInput("recommend, discover, context and point ids on sparse vectors are not supported by Shoal yet")
        return queries.base_request(body, queries.sparse_query(query, using, coll.shard_config), using)
    examples = queries.Examples(collections, coll, using, body.get("lookup_from"))
    if isinstance(query, dict) and "recommend" in query:
        rec = query["recommend"]
        positive, negative = rec.get("positive") or [], rec.get("negative") or []
        for v in positive + negative:
            examples.want(v)
        await examples.fetch()
        engine_query = queries.recommend_query(examples, positive, negative, rec.get("strategy"))
    elif isinstance(query, dict) and "discover" in query:
        disc = query["discover"]
        examples.want(disc["target"])
        pairs = _pairs(disc.get("context"))
        for p in pairs:
            examples.want(p["positive"])
            examples.want(p["negative"])
        await examples.fetch()
        engine_query = queries.DiscoverQuery(examples.vector(disc["target"]), queries.context_pairs(examples, pairs))
    elif isinstance(query, dict) and "context" in query:
        pairs = _pairs(query["context"])
        if not pairs:
            raise errors.BadRequest(errors.no_target_or_context())
        for p in pairs:
            examples.want(p["positive"])
            examples.want(p["negative"])
        await examples.fetch()
        engine_query = queries.ContextQuery(queries.context_pairs(examples, pairs))
    else:
        examples.want(query)
        await examples.fetch()
        engine_query = queries.NearestQuery(examples.vector(query))
    req = queries.base_request(body, engine_query, using)
    return replace(req, exclude_ids=frozenset(examples.exclude_ids))


def _pairs(context: Any) -> list[dict]:
    if context is None:
        return []
    return context if isinstance(context, list) else [context]


def _scored(records) -> list[ScoredPoint]:
    return [ScoredPoint(r.id, 0, 0.0, r.payload, r.vector, r.order_value) for r in records]


def _read_kwargs(body: dict[str, Any]) -> dict[str, Any]:
    return dict(
        filter=body.get("filter"),
        with_payload=convert.payload_selector(body.get("with_payload"), default=False),
        with_vector=convert.vector_selector(body.get("with_vector")),
    )


async def _ordered(coll: Collection, body: dict[str, Any], order_by: Any) -> list[ScoredPoint]:
    limit, offset = body.get("limit") or 10, body.get("offset") or 0
    ob: OrderBy = convert.order_by(order_by)
    parts = await asyncio.gather(
        *(s.scroll(offset=None, limit=limit + offset, order_by=ob, **_read_kwargs(body)) for s in coll.shards)
    )
    return _scored(merge_ordered(parts, limit + offset, ob.direction == "desc")[offset:])


async def _by_id(coll: Collection, body: dict[str, Any]) -> list[ScoredPoint]:
    limit, offset = body.get("limit") or 10, body.get("offset") or 0
    parts = await asyncio.gather(
        *(s.scroll(offset=None, limit=limit + offset, order_by=None, **_read_kwargs(body)) for s in coll.shards)
    )
    page, _ = merge_by_id(parts, limit + offset)
    return _scored(page[offset:])


async def _sample(coll: Collection, body: dict[str, Any]) -> list[ScoredPoint]:
    """Random points passing the filter: each shard offers its share, then one draw."""
    limit = body.get("limit") or 10
    seed = random.randrange(2**32)
    kwargs = _read_kwargs(body)
    parts = await asyncio.gather(
        *(s.call("sample_records", kwargs["filter"], limit, seed, kwargs["with_payload"], kwargs["with_vector"]) for s in coll.shards)
    )
    records = [r for part in parts for r in part]
    random.Random(seed).shuffle(records)
    return _scored(records[:limit])
