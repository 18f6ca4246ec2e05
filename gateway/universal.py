"""The universal query API (``points/query``) in terms of the legacy reads.

A query is one of: a vector or a point id (nearest, optionally with ``mmr``),
``nearest``, ``recommend``, ``discover``, ``context``, ``order_by``, ``sample``,
or nothing (points by id). Results of order_by, sample and no-query carry score
0, as in Qdrant. A query with ``prefetch`` is a tree whose nodes are such
queries, fusions or formulas (``gateway.prefetch``).
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import replace
from typing import Any

import numpy as np

from cluster.collection import Collection, Registry
from gateway import convert, errors, mmr, prefetch, queries
from gateway.merge import merge_by_id, merge_ordered
from gateway.prefetch import Tree, validation_failed
from shard import distances
from shard import multi as multi_store
from shard.types import DEFAULT_VECTOR, OrderBy, ScoredPoint, SparseQuery


async def query_points(collections: Registry, coll: Collection, body: dict[str, Any]) -> list[ScoredPoint]:
    if body.get("prefetch"):
        return await Tree(collections, coll, base_query, scored_request).answer(body)
    return await base_query(collections, coll, body)


async def base_query(collections: Registry, coll: Collection, body: dict[str, Any],
                     run=queries.run) -> list[ScoredPoint]:
    """A query without prefetches (the whole request, or a leaf of a prefetch tree).
    ``run``: how its search is sent to the shards (a prefetch tree batches its leaves')."""
    query = body.get("query")
    using = body.get("using") or DEFAULT_VECTOR
    if isinstance(query, dict) and "order_by" in query:
        return await _ordered(coll, body, query["order_by"])
    if isinstance(query, dict) and "sample" in query:
        return await _sample(coll, body)
    if query is None:
        return await _by_id(coll, body)
    if isinstance(query, dict) and "fusion" in query:
        raise validation_failed("cannot apply Fusion without prefetches")
    if isinstance(query, dict) and "formula" in query:
        raise validation_failed("cannot apply Formula without prefetches")
    if isinstance(query, dict) and query.get("mmr") is not None:
        return await _diverse(collections, coll, body, query, using)
    req = await scored_request(collections, coll, body, query, using)
    return (await run(coll, [req]))[0]


async def _diverse(collections: Registry, coll: Collection, body: dict[str, Any], query: dict, using: str):
    """A nearest search with maximal marginal relevance (``gateway.mmr``): the
    candidates merged across the shards, then picked with their vectors."""
    params = query["mmr"]
    limit, offset = body.get("limit") or 10, body.get("offset") or 0
    candidates_limit = params.get("candidates_limit")
    diversity = params.get("diversity")
    lam = 1.0 - (mmr.DEFAULT_DIVERSITY if diversity is None else diversity)
    search = {**body, "limit": candidates_limit if candidates_limit is not None else limit, "offset": 0}
    req = await scored_request(collections, coll, search, query, using)
    found = (await queries.run(coll, [req]))[0]
    vectors = await queries.vectors_of(coll, [p.id for p in found], using)
    found = [p for p in found if p.id in vectors]
    if not found:
        return []
    if isinstance(req.query, SparseQuery):  # dot products of the raw sparse vectors (no IDF)
        rows, query_row = mmr.sparse_rows([vectors[p.id] for p in found], (req.query.indices, req.query.values))
        relevance, similarity = rows @ query_row, rows @ rows.T
    elif using in coll.shard_config.multi:
        vector = coll.shard_config.multi[using]
        matrices = [vectors[p.id] for p in found]
        sims = multi_store.maxsim_matrix([req.query.vector, *matrices], matrices, vector.size, vector.distance,
                                         vector.datatype or "float32")
        relevance, similarity = sims[0], sims[1:]  # between candidates: one's rows as the query
    else:
        distance = coll.shard_config.vector(using).distance
        matrix = np.stack([vectors[p.id] for p in found])
        relevance = distances.similarity(distances.preprocess(req.query.vector, distance), matrix, distance)
        similarity = distances.similarity(matrix, matrix, distance)
    threshold = body.get("score_threshold")
    picked = mmr.select(relevance, similarity, lam, limit + offset, threshold)
    return [replace(found[i], score=float(relevance[i])) for i in picked][offset:]


def grouping(collections: Registry, coll: Collection, body: dict[str, Any]):
    """``query/groups``: the best ``n`` hits of the query (any query, prefetch
    trees included) with their whole payload, for ``gateway.groups``. As in
    Qdrant (grouping/group_by.rs ``increase_limit_for_group``), every prefetch's
    limit is multiplied by the number of groups asked for."""
    groups = body.get("limit") or 10

    def widened(prefetches: list[dict] | None) -> list[dict] | None:
        if not prefetches:
            return prefetches
        return [{**p, "limit": (p.get("limit") or prefetch.DEFAULT_LIMIT) * groups,
                 "prefetch": widened(p.get("prefetch"))} for p in prefetches]

    request = {**body, "prefetch": widened(body.get("prefetch")), "offset": 0, "with_payload": True}

    async def hits(n: int) -> list[ScoredPoint]:
        return await query_points(collections, coll, {**request, "limit": n})
    return hits


async def scored_request(collections, coll, body, query, using):
    if isinstance(query, dict) and "nearest" in query:
        query = query["nearest"]
    sparse_given = isinstance(query, dict) and "indices" in query
    if sparse_given or (using in coll.shard_config.sparse and isinstance(query, list)):
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
        engine_query = examples.nearest(query)
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
