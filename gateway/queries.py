"""Scored reads across a collection's shards.

A request is turned into one engine ``SearchRequest`` (examples given by id are
resolved to vectors *before* the fan-out, so every shard scores against the same
examples), sent to every shard, and the per-shard answers merged once.

Recommend strategies, as Qdrant defines them:
- average_vector: query = 2·avg(positive) − avg(negative) (avg(positive) without
  negatives), then a plain nearest search; needs a positive example. On a
  multivector (Qdrant's avg_vector_for_recommendation) the "average" is every
  positive example's rows one after another, then every negative's rows negated.
- best_score / sum_scores: scored by the shards against every example.
Example ids are excluded from the results unless they were looked up in
another collection (``lookup_from``).

A sparse nearest search on a vector with the idf modifier asks every shard for
its share of the IDF statistics first (``with_idf``) and sends their sum with
the query, so that every shard weighs the query's indices alike.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import numpy as np

from cluster.collection import Collection, Registry
from cluster.placement import split_by_shard
from gateway import convert, errors
from gateway.merge import merge_scored
from shard import distances
from shard import multi as multi_store
from shard import sparse as sparse_store
from shard.types import (
    DEFAULT_VECTOR,
    BadInput,
    ContextPair,
    ContextQuery,
    DiscoverQuery,
    NearestQuery,
    PointNotFound,
    QuantizationParams,
    RecommendQuery,
    ScoredPoint,
    SearchRequest,
    SparseQuery,
)

NO_POSITIVE = "At least one positive vector ID required with this strategy"


def is_vector(value: Any) -> bool:
    return isinstance(value, list) or (isinstance(value, dict) and "indices" in value)


class Examples:
    """Resolves example point ids to vectors for one request. On a sparse vector
    the examples are ``SparseQuery``s (their IDF, if any, added by ``with_idf``); on
    a multivector, (rows, size) float32 matrices (a plain vector given, or read
    from a plain vector by ``lookup_from``, is a matrix of one row, as Qdrant
    expands it)."""

    def __init__(self, collections: Registry, collection: Collection, using: str, lookup_from: dict | None):
        self.collections = collections
        self.using = using
        self.sparse = using in collection.shard_config.sparse
        self.multi = using in collection.shard_config.multi
        self.exclude_ids: set = set()
        if lookup_from:
            self.source = collections.resolve(lookup_from["collection"])
            self.source_vector = lookup_from.get("vector") or DEFAULT_VECTOR
            self.exclude = self.source.name == collection.name
        else:
            self.source = collection
            self.source_vector = using
            self.exclude = True
        if self.sparse:
            self.source.shard_config.sparse_vector(self.source_vector)
        else:
            if self.source_vector not in self.source.shard_config.multi:
                self.source.shard_config.vector(self.source_vector)
            config = collection.shard_config
            self._dim = (config.multi_vector(using) if self.multi else config.vector(using)).size
        self._ids: list = []
        self._vectors: dict = {}

    def want(self, value: Any) -> None:
        if isinstance(value, dict) or (self.sparse and isinstance(value, list)):
            self.vector(value)  # not a point id: refused here, in its own words
        if not is_vector(value):
            self._ids.append(value)

    async def fetch(self) -> None:
        ids = list(dict.fromkeys(self._ids))
        if not ids:
            return
        self._vectors.update(await vectors_of(self.source, ids, self.source_vector))
        if self.exclude:
            self.exclude_ids.update(ids)

    def vector(self, value: Any) -> np.ndarray | SparseQuery:
        if isinstance(value, dict) and convert.is_inference(value):
            raise errors.BadRequest(errors.no_inference())
        if self.sparse:
            if isinstance(value, dict):
                return SparseQuery(*sparse_store.validate(value["indices"], value["values"]))
            if isinstance(value, list):
                raise BadInput(errors.wrong_sparse())
        elif isinstance(value, dict):
            raise BadInput(errors.wrong_sparse())
        elif isinstance(value, list) and value and isinstance(value[0], list):
            if not self.multi:
                raise BadInput(errors.wrong_multi())
            return multi_store.validate(value, self._dim)
        elif isinstance(value, list):
            if len(value) != self._dim:
                raise BadInput(errors.vector_dimension(self._dim, len(value)))
            vector = np.asarray(value, dtype=np.float32)
            return vector[None, :] if self.multi else vector
        if value not in self._vectors:
            raise PointNotFound(value)
        found = self._vectors[value]
        if isinstance(found, tuple) != self.sparse:  # lookup_from a vector of the other kind
            raise BadInput(errors.wrong_sparse())
        if self.sparse:
            return SparseQuery(*found)
        if found.ndim == 2 and not self.multi:  # lookup_from a multivector for a plain vector
            raise BadInput(errors.wrong_multi())
        if found.shape[-1] != self._dim:
            raise BadInput(errors.vector_dimension(self._dim, found.shape[-1]))
        return found[None, :] if found.ndim == 1 and self.multi else found

    def nearest(self, value: Any) -> NearestQuery | SparseQuery:
        """The query of a nearest search by ``value`` (a vector or a point id)."""
        vector = self.vector(value)
        return vector if isinstance(vector, SparseQuery) else NearestQuery(vector)


async def vectors_of(coll: Collection, ids: list, using: str) -> dict:
    """Vector ``using`` of each point of ``ids`` that has one, by id (each shard
    asked once, for its own points)."""
    groups: dict[int, list] = {}
    for point_id in dict.fromkeys(ids):
        groups.setdefault(coll.shards.index(coll.shard_for(point_id)), []).append(point_id)
    found = await asyncio.gather(*(coll.shards[s].get_vectors(group, using) for s, group in groups.items()))
    return {k: v for part in found for k, v in part.items()}


def sparse_query(value: Any, using: str, config) -> SparseQuery:
    """The query of a sparse nearest search on vector ``using`` (the models have
    refused repeated indices and length mismatches with Qdrant's 422)."""
    if using not in config.sparse:
        if not config.has_name(using):
            config.vector(using)  # an unknown name is refused in its own words
        raise BadInput(errors.wrong_sparse())
    if not (isinstance(value, dict) and "indices" in value):
        raise BadInput(errors.wrong_sparse())
    indices, values = sparse_store.validate(value["indices"], value["values"])
    return SparseQuery(indices, values)


def nearest_vector(body_vector: Any, config) -> tuple[str, np.ndarray | SparseQuery]:
    """(using, vector) of a legacy search's ``vector``: a list, or {"name", "vector"}
    (a NamedSparseVector when the vector is {"indices", "values"})."""
    if isinstance(body_vector, dict):
        name, vector = body_vector["name"], body_vector["vector"]
        if isinstance(vector, dict) or name in config.sparse:
            return name, sparse_query(vector, name, config)
    else:
        name, vector = DEFAULT_VECTOR, body_vector
    if name in config.multi:  # a plain vector on a multivector: a query of one row, as Qdrant expands it
        dim = config.multi[name].size
        if len(vector) != dim:
            raise BadInput(errors.vector_dimension(dim, len(vector)))
        return name, np.asarray([vector], dtype=np.float32)
    dim = config.vector(name).size
    if len(vector) != dim:
        raise BadInput(f"Vector dimension error: expected dim: {dim}, got {len(vector)}")
    return name, np.asarray(vector, dtype=np.float32)


def base_request(body: dict[str, Any], query, using: str, *, default_limit: int = 10) -> SearchRequest:
    params = body.get("params") or {}
    return SearchRequest(
        query=query,
        using=using,
        filter=body.get("filter"),
        limit=body.get("limit", default_limit) if body.get("limit") is not None else default_limit,
        offset=body.get("offset") or 0,
        score_threshold=body.get("score_threshold"),
        with_payload=convert.payload_selector(body.get("with_payload"), default=False),
        with_vector=convert.vector_selector(body.get("with_vector", body.get("with_vectors"))),
        hnsw_ef=params.get("hnsw_ef"),
        exact=bool(params.get("exact")),
        quantization=quantization_params(params.get("quantization")),
    )


def quantization_params(body: dict[str, Any] | None) -> QuantizationParams | None:
    """A search's ``params.quantization`` (validated by its model)."""
    if not body:
        return None
    return QuantizationParams(ignore=bool(body.get("ignore")), rescore=body.get("rescore"),
                              oversampling=body.get("oversampling"))


def search_request(collection: Collection, body: dict[str, Any]) -> SearchRequest:
    using, vector = nearest_vector(body["vector"], collection.shard_config)
    return base_request(body, vector if isinstance(vector, SparseQuery) else NearestQuery(vector), using)


def recommend_query(examples: Examples, positive: list, negative: list, strategy: str | None):
    strategy = strategy or "average_vector"
    pos = [examples.vector(v) for v in positive]
    neg = [examples.vector(v) for v in negative]
    if strategy == "average_vector":
        if not pos:
            raise BadInput(NO_POSITIVE)
        if examples.sparse:
            avg = sparse_store.average([(v.indices, v.values) for v in pos])
            if neg:
                avg = sparse_store.combine(avg, sparse_store.average([(v.indices, v.values) for v in neg]),
                                           lambda p, n: p + p - n)
            return SparseQuery(*avg)
        if examples.multi:
            rows = [*pos, *(-v for v in neg)]
            return NearestQuery(np.concatenate(rows).astype(np.float32))
        avg_pos = np.mean(pos, axis=0, dtype=np.float32)
        vector = avg_pos if not neg else avg_pos + avg_pos - np.mean(neg, axis=0, dtype=np.float32)
        return NearestQuery(vector.astype(np.float32))
    if not pos and not neg:
        raise BadInput(NO_POSITIVE)
    return RecommendQuery(tuple(pos), tuple(neg), strategy)


async def recommend_request(collections: Registry, collection: Collection, body: dict[str, Any]) -> SearchRequest:
    using = body.get("using") or DEFAULT_VECTOR
    examples = Examples(collections, collection, using, body.get("lookup_from"))
    positive, negative = body.get("positive") or [], body.get("negative") or []
    for v in positive + negative:
        examples.want(v)
    await examples.fetch()
    query = recommend_query(examples, positive, negative, body.get("strategy"))
    return replace(base_request(body, query, using), exclude_ids=frozenset(examples.exclude_ids))


def context_pairs(examples: Examples, pairs: list[dict]) -> tuple[ContextPair, ...]:
    return tuple(ContextPair(examples.vector(p["positive"]), examples.vector(p["negative"])) for p in pairs)


async def discover_request(collections: Registry, collection: Collection, body: dict[str, Any]) -> SearchRequest:
    using = body.get("using") or DEFAULT_VECTOR
    examples = Examples(collections, collection, using, body.get("lookup_from"))
    target, context = body.get("target"), body.get("context") or []
    if target is None and not context:
        raise errors.BadRequest(errors.no_target_or_context())
    if target is not None:
        examples.want(target)
    for pair in context:
        examples.want(pair["positive"])
        examples.want(pair["negative"])
    await examples.fetch()
    pairs = context_pairs(examples, context)
    if target is None:
        query = ContextQuery(pairs)
    elif not pairs:
        query = DiscoverQuery(examples.vector(target), ())
    else:
        query = DiscoverQuery(examples.vector(target), pairs)
    return replace(base_request(body, query, using), exclude_ids=frozenset(examples.exclude_ids))


def _sparse_parts(query) -> list[SparseQuery]:
    """The sparse vectors a query scores with: itself, or its examples."""
    if isinstance(query, SparseQuery):
        return [query]
    if isinstance(query, RecommendQuery):
        return [*query.positive, *query.negative]
    pairs = [v for p in getattr(query, "context", ()) for v in (p.positive, p.negative)]
    target = [query.target] if isinstance(query, DiscoverQuery) else []
    return [v for v in target + pairs if isinstance(v, SparseQuery)]


def _with_idf_parts(query, idf):
    """``query`` with ``idf`` on each of its sparse vectors."""
    def weighed(v):
        return replace(v, idf=idf) if isinstance(v, SparseQuery) else v

    if isinstance(query, SparseQuery):
        return weighed(query)
    if isinstance(query, RecommendQuery):
        return replace(query, positive=tuple(map(weighed, query.positive)),
                       negative=tuple(map(weighed, query.negative)))
    context = tuple(ContextPair(weighed(p.positive), weighed(p.negative)) for p in query.context)
    if isinstance(query, DiscoverQuery):
        return replace(query, target=weighed(query.target), context=context)
    return replace(query, context=context)


async def with_idf(collection: Collection, requests: list[SearchRequest]) -> list[SearchRequest]:
    """The requests, each query on a sparse vector with the idf modifier carrying
    the collection's IDF statistics on every sparse vector it scores with (the
    query, or its examples): every shard's share, summed (one call per shard for
    the whole batch, before the search), so that every shard scores with the same
    weights and scores do not depend on the shard count. A collection of one shard
    skips the round trip: the shard weighs by its own statistics (``LOCAL_IDF``)."""
    config = collection.shard_config
    wanted = [i for i, req in enumerate(requests)
              if req.using in config.sparse and config.sparse[req.using].idf and _sparse_parts(req.query)]
    if not wanted:
        return requests
    if len(collection.shards) == 1:  # one shard's statistics are the collection's: it weighs by its own
        out = list(requests)
        for i in wanted:
            out[i] = replace(requests[i], query=_with_idf_parts(requests[i].query, sparse_store.LOCAL_IDF))
        return out
    asks = [(requests[i].using, sorted({int(x) for v in _sparse_parts(requests[i].query) for x in v.indices}))
            for i in wanted]
    per_shard = await asyncio.gather(*(shard.call("sparse_stats_many", asks) for shard in collection.shards))
    out = list(requests)
    for k, i in enumerate(wanted):
        n, df = 0, {}
        for stats in per_shard:
            shard_n, shard_df = stats[k]
            n += shard_n
            for index, count in shard_df.items():
                df[index] = df.get(index, 0) + count
        out[i] = replace(requests[i], query=_with_idf_parts(requests[i].query, sparse_store.Idf(n, df)))
    return out


def higher_is_better(collection: Collection, req: SearchRequest) -> bool:
    if isinstance(req.query, NearestQuery):
        config = collection.shard_config
        params = config.multi[req.using] if req.using in config.multi else config.vectors[req.using]
        return distances.display_higher_is_better(params.distance)
    return True


def _one_row(collection: Collection, req: SearchRequest) -> SearchRequest:
    """A plain vector's nearest search on a multivector becomes a query of one row,
    as Qdrant expands it (TryFrom<VectorInternal> for MultiDenseVectorInternal)."""
    if (req.using in collection.shard_config.multi and isinstance(req.query, NearestQuery)
            and np.ndim(req.query.vector) == 1):
        return replace(req, query=NearestQuery(np.asarray(req.query.vector, dtype=np.float32)[None, :]))
    return req


async def run(collection: Collection, requests: list[SearchRequest]) -> list[list[ScoredPoint]]:
    """Fan a batch out to every shard (one call per shard) and merge each request's answers."""
    requests = [_one_row(collection, req) for req in requests]
    for req in requests:
        if req.using in collection.shard_config.sparse:
            if isinstance(req.query, NearestQuery):
                raise BadInput(errors.wrong_sparse())
        elif isinstance(req.query, SparseQuery):
            collection.shard_config.sparse_vector(req.using)
        elif req.using not in collection.shard_config.multi:
            collection.shard_config.vector(req.using)
            if isinstance(req.query, NearestQuery) and np.ndim(req.query.vector) != 1:
                raise BadInput(errors.wrong_multi())
        if req.limit < 0 or req.offset < 0:
            raise BadInput("limit and offset must not be negative")
    requests = await with_idf(collection, requests)
    shards = collection.shards
    if len(shards) == 1:  # gather would wrap the one call in a task of its own
        per_shard = [await shards[0].search_batch(requests)]
    else:
        per_shard = await asyncio.gather(*(s.search_batch(requests) for s in shards))
    return [
        merge_scored(
            (answers[i] for answers in per_shard),
            offset=req.offset,
            limit=req.limit,
            higher_is_better=higher_is_better(collection, req),
        )
        for i, req in enumerate(requests)
    ]


async def retrieve(coll: Collection, ids: list, with_payload, with_vector) -> list:
    """Points by id from the shards that own them, in the order asked, each once."""
    payload = convert.payload_selector(with_payload, default=True)
    vectors = convert.vector_selector(with_vector)
    groups = split_by_shard(ids, len(coll.shards))
    parts = await asyncio.gather(
        *(coll.shards[s].retrieve([ids[r] for r in rows], payload, vectors) for s, rows in groups.items())
    )
    found = {rec.id: rec for part in parts for rec in part}
    return [found[i] for i in dict.fromkeys(ids) if i in found]
