"""Reads of one shard: scored search (with its planner), retrieve, scroll, facet, sample.

The planner picks, per query, between exact numpy scoring of the candidate
points and the HNSW graph, as Qdrant's query planner does from the filter's
cardinality:

- exact when asked (``exact``), when the vector has no graph (small data,
  Manhattan), or when the filtered candidates hold fewer kilobytes of vectors
  than ``full_scan_threshold``;
- otherwise the graph, asked for enough neighbours that the filter leaves the
  wanted number (oversampling by the filter's selectivity), with exact scoring
  of the points not yet in the graph merged in. If the graph still comes back
  short, the query falls back to exact scoring, so a filter never loses recall
  to the graph.

A quantized graph (``shard.quantized``: scalar or binary) answers with approximate
similarities. It is asked for ``oversampling`` times the limit, and its hits are
scored again with the stored float32 vectors when the search asks (``rescore``,
``ignore``) or, by default, for binary quantization (Qdrant's defaults). Exact
searches always score the stored vectors.

Sparse queries read only the postings of their indices (``shard.sparse``):
exact, as Qdrant's inverted index is, with the filter as a mask.

Multivectors have no graph: every query on one scores the candidates exactly
by MaxSim (``shard.multi``), as Qdrant's exact search of a multivector does.

Recommend (best_score, sum_scores), discovery and context queries are scored
exactly over the candidates: their scores depend on every example, which a
graph built for plain similarity cannot rank.

Every function takes the shard as a ``shard.view.ShardReader`` (never ``LocalShard``,
which imports this module); callers hold the shard's lock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from shard import distances, filters
from shard.payload import facet as payload_facet
from shard.payload import order_values, select_payload
from shard.points import id_sort_key
from shard.types import (
    DEFAULT_VECTOR,
    ContextQuery,
    DiscoverQuery,
    NearestQuery,
    OrderBy,
    PayloadSelector,
    PointId,
    RecommendQuery,
    Record,
    ScoredPoint,
    SearchRequest,
    SparseQuery,
    VectorSelector,
)
from shard.view import ShardReader

OVERSAMPLE = 1.5
EXTRA = 16


def candidates(shard: ShardReader, filter: dict | None, using: str, exclude: frozenset[PointId] = frozenset()) -> np.ndarray:
    """Bool mask of the points a query may return: live, holding vector ``using``,
    passing the filter, not excluded."""
    mask = filters.evaluate(filter, shard) & shard.has_vector(using)
    if exclude:
        mask[shard.points.offsets_of(exclude)] = False
    return mask


@dataclass
class Candidates:
    """The points a (vector, filter, exclusions) may return, with what the planner
    needs about them. Derived once per shard epoch and reused by every query that
    asks the same: the masks are O(points) to build, a graph search is not."""

    mask: np.ndarray
    count: int
    in_graph: np.ndarray  # candidates whose current vector is in the graph
    in_graph_count: int
    pending: np.ndarray | None  # candidates not yet in the graph; None when there are none
    _block: tuple | None = None

    def block(self, shard: ShardReader, using: str) -> tuple[np.ndarray, np.ndarray | None]:
        """(offsets, their vectors as one contiguous block). The block is gathered
        once and kept with the candidates (so exact scoring of a repeated filter
        is a bare matrix product) while the shard's read cache has room for it
        (BLOCK_BUDGET bytes in all); otherwise it is None and callers gather."""
        if self._block is None:
            idx = np.flatnonzero(self.mask)
            nbytes = len(idx) * shard.vectors[using].dim * 4
            cache = shard.read_cache()
            used = cache.get(BLOCK_BYTES_KEY, 0)
            block = None
            # On-disk vectors stay on disk: a block would copy them back into memory.
            if used + nbytes <= BLOCK_BUDGET and shard.vectors[using].file is None:
                block = shard.vectors[using].data[idx]
                cache[BLOCK_BYTES_KEY] = used + nbytes
            self._block = (idx, block)
        return self._block

    def cacheable(self, shard: ShardReader, using: str) -> bool:
        """Whether the block fits the read cache's budget at all."""
        return self.count * shard.vectors[using].dim * 4 <= BLOCK_BUDGET // 2

    @classmethod
    def of(cls, shard: ShardReader, using: str, filter: dict | None, exclude: frozenset) -> Candidates:
        mask = candidates(shard, filter, using, exclude)
        indexed = shard.indexed[using][: shard.size]
        if len(indexed) < len(mask):
            indexed = np.concatenate([indexed, np.zeros(len(mask) - len(indexed), dtype=bool)])
        in_graph = mask & indexed
        pending = mask & ~indexed
        return cls(mask, int(mask.sum()), in_graph, int(in_graph.sum()), pending if pending.any() else None)


CACHE_SIZE = 64
BLOCK_BUDGET = 256 * 1024 * 1024  # bytes of candidate blocks a shard's read cache may hold
BLOCK_BYTES_KEY = "block bytes"
GRAPH_RETRIES = 2  # times a short graph answer is retried with 4x the neighbours
SELECTIVE = 0.3  # below this share of the graph, a filter is scored exactly (see _plan)


def cached_candidates(shard: ShardReader, using: str, filter: dict | None, exclude: frozenset) -> Candidates:
    """Candidates from the shard's read cache, which is emptied whenever the shard's
    epoch moves (every write, every indexing step)."""
    cache = shard.read_cache()
    key = (using, None if filter is None else orjson.dumps(filter, option=orjson.OPT_SORT_KEYS), exclude)
    found = cache.get(key)
    if found is None:
        if len(cache) >= CACHE_SIZE:  # a fresh epoch's cache refills; until then, drop all
            cache.clear()
        found = cache[key] = Candidates.of(shard, using, filter, exclude)
    return found


@dataclass
class _Plan:
    """One request on its way through ``search_many``."""

    req: SearchRequest
    cands: Candidates | None = None
    query: np.ndarray | None = None  # preprocessed vector of a nearest query
    graph_k: int = 0  # > 0: ask the graph for this many neighbours
    ef: int = 0
    labels: np.ndarray | None = None
    sims: np.ndarray | None = None
    exact_done: bool = False  # labels/sims hold the final exact answer


def search_many(shard: ShardReader, requests: list[SearchRequest]) -> list[list[ScoredPoint]]:
    """Answer several requests; graph searches that share a vector, k and ef go to
    hnswlib as one multi-query call."""
    queries = _preprocessed(shard, requests)
    plans = [_Plan(r) if r.using in shard.sparse or r.using in shard.multi else _plan(shard, r, queries.get(i))
             for i, r in enumerate(requests)]
    graph_groups: dict[tuple[str, int, int], list[_Plan]] = {}
    exact_groups: dict[int, list[_Plan]] = {}
    for plan in plans:
        if plan.graph_k > 0:
            graph_groups.setdefault((plan.req.using, plan.graph_k, plan.ef), []).append(plan)
        elif plan.query is not None and plan.cands is not None:
            exact_groups.setdefault(id(plan.cands), []).append(plan)

    # The graph walks first, then the sparse and multivector searches, on this
    # thread. hnswlib releases the GIL only inside a walk, and a walk handed to
    # another thread waited for this one to let go of it (numba's loops keep it):
    # measured on the hybrid benchmark's shard (dense + sparse prefetch), 0.72 ms
    # a batch with a second thread against 0.60 ms without; the same throughput
    # through the server under load.
    for (using, k, ef), members in graph_groups.items():
        labels, sims = shard.graphs[using].search(np.stack([p.query for p in members]), k, ef, shard.search_threads)
        for i, plan in enumerate(members):
            plan.labels, plan.sims = labels[i], sims[i]
    answers = {i: _exact_kind(shard, plan.req) for i, plan in enumerate(plans)
               if plan.req.using in shard.sparse or plan.req.using in shard.multi}
    for members in exact_groups.values():
        if len(members) > 1:
            _exact_together(shard, members)
    return [answers[i] if i in answers else _finish(shard, plan) for i, plan in enumerate(plans)]


def _exact_kind(shard: ShardReader, req: SearchRequest) -> list[ScoredPoint]:
    """A search on a sparse vector or a multivector, exact (no graph). Nearest: the
    store's own search (a sparse one reads only the postings of the query's
    indices; a multivector one scores MaxSim, shown as a dense score is).
    Recommend, discover, context: every candidate scored against the examples."""
    sparse = req.using in shard.sparse
    if sparse:
        shard.config.sparse_vector(req.using)
    else:
        shard.config.multi_vector(req.using)
    top = req.offset + req.limit
    if top <= 0:
        return []
    query = req.query
    if sparse and isinstance(query, SparseQuery) and req.filter is None and not req.exclude_ids:
        mask = None  # the postings hold only live points' vectors: no mask to build
    else:
        mask = candidates(shard, req.filter, req.using, req.exclude_ids)
    if sparse and isinstance(query, SparseQuery):
        offsets, scores = shard.sparse[req.using].search(
            query.indices, query.values, top, allowed=mask, score_threshold=req.score_threshold, idf=query.idf)
    elif not sparse and isinstance(query, NearestQuery):
        offsets, scores = shard.multi[req.using].search(query.vector, top, allowed=mask,
                                                        score_threshold=req.score_threshold)
    else:
        offsets, scores = _by_examples(shard, req, np.flatnonzero(mask), top)
    return _scored_points(shard, offsets, scores, req.with_payload, req.with_vector)


def _by_examples(shard: ShardReader, req: SearchRequest, idx: np.ndarray, top: int):
    """(offsets, scores) of the ``top`` of ``idx`` by a recommend / discover /
    context query, ``score_threshold`` applied (strict)."""
    all_scores = _score_query(shard, req.using, req.query, idx)
    if req.score_threshold is not None:
        keep = all_scores > req.score_threshold
        idx, all_scores = idx[keep], all_scores[keep]
    order = _top_order(all_scores, top)
    return idx[order], all_scores[order]


def _exact_together(shard: ShardReader, members: list[_Plan]) -> None:
    """Exact scores for nearest queries that share their candidates: one gather of
    the candidate vectors and one matrix product for all of them."""
    first = members[0]
    using = first.req.using
    params = shard.config.vectors[using]
    idx, block = first.cands.block(shard, using)
    if block is None:
        block = shard.vectors[using].data[idx]
    sims = distances.similarity(np.stack([p.query for p in members]), block, params.distance)
    for plan, row in zip(members, sims):
        order = _top_order(row, plan.req.offset + plan.req.limit)
        plan.labels, plan.sims = idx[order], row[order]
        plan.exact_done = True


def _preprocessed(shard: ShardReader, requests: list[SearchRequest]) -> dict[int, np.ndarray]:
    """The query vector of every nearest request (by position), preprocessed once
    per vector name for the whole round rather than one call per request."""
    by_using: dict[str, list[int]] = {}
    for i, req in enumerate(requests):
        if isinstance(req.query, NearestQuery) and req.using not in shard.multi:
            by_using.setdefault(req.using, []).append(i)
    out: dict[int, np.ndarray] = {}
    for using, positions in by_using.items():
        params = shard.config.vector(using)
        vectors = [requests[i].query.vector for i in positions]
        if len({np.shape(v) for v in vectors}) != 1:  # mismatched sizes: each alone, to fail alone
            out.update((i, distances.preprocess(v, params.distance)) for i, v in zip(positions, vectors))
            continue
        out.update(zip(positions, distances.preprocess(np.stack(vectors), params.distance)))
    return out


def _plan(shard: ShardReader, req: SearchRequest, query: np.ndarray | None) -> _Plan:
    params = shard.config.vector(req.using)
    plan = _Plan(req)
    top = req.offset + req.limit
    if top <= 0:
        return plan
    plan.cands = cached_candidates(shard, req.using, req.filter, req.exclude_ids)
    if not isinstance(req.query, NearestQuery):
        return plan
    plan.query = query
    graph = shard.graphs.get(req.using)
    if req.exact or graph is None or len(graph) == 0:
        return plan
    small = plan.cands.count * params.size * 4 < shard.config.hnsw_for(req.using).full_scan_threshold * 1024
    if req.filter is not None and small:
        return plan  # Qdrant's planner: below full_scan_threshold, score exactly
    if req.filter is not None and plan.cands.count < SELECTIVE * len(graph) and plan.cands.cacheable(shard, req.using):
        # A selective filter wastes most of a graph search, and where the payload
        # correlates with the vectors (a part of speech, a category) the graph's
        # neighbourhood may hold too few matches at all. Exact scoring of the
        # cached candidate block is a bare (batched) matrix product: faster, and
        # exact. Measured on wordnet-minilm-384 (100k, pos=verb, 11.7 %): graph
        # with retries 2.7 ms/query, exact 0.48 ms alone, 0.17 ms batched by 32.
        return plan
    in_graph = plan.cands.in_graph_count
    if in_graph == 0:
        return plan
    # A quantized graph is asked for ``oversampling`` times more (Qdrant's
    # oversampled top), then by the filter's selectivity within the graph.
    wanted = top
    if graph.kind != "hnsw" and req.quantization is not None and (req.quantization.oversampling or 1) > 1:
        wanted = math.ceil(top * req.quantization.oversampling)
    k = wanted if in_graph >= len(graph) else math.ceil(wanted * len(graph) / in_graph * OVERSAMPLE) + EXTRA
    plan.graph_k = min(k, len(graph))
    plan.ef = max(req.hnsw_ef or shard.config.hnsw_for(req.using).ef_construct, plan.graph_k)
    return plan


def _finish(shard: ShardReader, plan: _Plan) -> list[ScoredPoint]:
    req = plan.req
    top = req.offset + req.limit
    if plan.cands is None or plan.cands.count == 0:
        return []
    params = shard.config.vectors[req.using]
    if isinstance(req.query, NearestQuery):
        if plan.exact_done:
            offsets, sims = plan.labels, plan.sims
        elif plan.labels is not None:
            offsets, sims = _from_graph(shard, plan, top)
        else:
            offsets, sims = _exact_candidates(shard, req.using, plan.query, plan.cands, top)
        if req.score_threshold is not None:
            keep = sims > distances.threshold_to_internal(req.score_threshold, params.distance)
            offsets, sims = offsets[keep], sims[keep]
        scores = distances.to_display(sims, params.distance)
    else:
        offsets, scores = _by_examples(shard, req, np.flatnonzero(plan.cands.mask), top)
    return _scored_points(shard, offsets, scores, req.with_payload, req.with_vector)


def _from_graph(shard: ShardReader, plan: _Plan, top: int):
    """Graph hits that pass the mask, merged with exact scores of the candidates not
    yet in the graph; exact over all candidates if the graph came back short."""
    req, cands = plan.req, plan.cands
    labels, sims = _passing(plan.labels, plan.sims, cands)
    graph, k, ef = shard.graphs[req.using], plan.graph_k, plan.ef
    retries = 0
    while len(labels) < min(top, cands.in_graph_count) and k < len(graph) and retries < GRAPH_RETRIES:
        # The filter left too few: ask the graph for more before scoring exactly.
        k, retries = min(len(graph), k * 4), retries + 1
        more_labels, more_sims = graph.search(plan.query[None, :], k, max(ef, k))
        labels, sims = _passing(more_labels[0], more_sims[0], cands)
    if len(labels) < min(top, cands.in_graph_count):
        return _exact_candidates(shard, req.using, plan.query, cands, top)
    if graph.kind != "hnsw" and _rescore(req, shard.config.quantization_for(req.using)):
        sims = distances.similarity(plan.query, shard.vectors[req.using].data[labels],
                                    shard.config.vectors[req.using].distance)
    if cands.pending is not None:
        p_off, p_sims = _exact(shard, req.using, plan.query, cands.pending, top)
        labels = np.concatenate([labels, p_off])
        sims = np.concatenate([sims, p_sims])
    order = _top_order(sims, top)
    return labels[order], sims[order]


def _rescore(req: SearchRequest, quantization) -> bool:
    """Whether a quantized graph's hits are scored again with the stored vectors:
    when asked to ignore the quantized scores, or to rescore; by default for binary
    quantization only, as in Qdrant."""
    asked = req.quantization
    if asked is not None and (asked.ignore or asked.rescore is not None):
        return asked.ignore or asked.rescore
    return quantization.default_rescore


def _passing(labels: np.ndarray, sims: np.ndarray, cands: Candidates):
    """Graph hits that are candidates and current in the graph."""
    ok = (labels >= 0) & (labels < len(cands.in_graph))
    ok[ok] = cands.in_graph[labels[ok]]
    return labels[ok], sims[ok]


def _exact_candidates(shard: ShardReader, using: str, q: np.ndarray, cands: Candidates, top: int):
    """Exact top of the candidates, from their cached block when there is one."""
    idx, block = cands.block(shard, using)
    if block is None:
        return _exact(shard, using, q, cands.mask, top)
    sims = distances.similarity(q, block, shard.config.vectors[using].distance)
    order = _top_order(sims, top)
    return idx[order], sims[order]


def _exact(shard: ShardReader, using: str, q: np.ndarray, mask: np.ndarray, top: int):
    params = shard.config.vectors[using]
    data = shard.vectors[using].data
    idx = np.flatnonzero(mask)
    if len(idx) > shard.size // 2:
        # Dense candidates: score the whole block and drop the rest, cheaper than gathering.
        sims = distances.similarity(q, data[: shard.size], params.distance)[idx]
    else:
        sims = distances.similarity(q, data[idx], params.distance)
    order = _top_order(sims, top)
    return idx[order], sims[order]


def _top_order(scores: np.ndarray, top: int) -> np.ndarray:
    """Indices of the ``top`` largest scores, best first (ties by position)."""
    if len(scores) > top:
        part = np.argpartition(-scores, top - 1)[:top]
        return part[np.lexsort((part, -scores[part]))]
    return np.lexsort((np.arange(len(scores)), -scores))


def _score_query(shard: ShardReader, using: str, query, idx: np.ndarray) -> np.ndarray:
    """Scores of a recommend / discover / context query over offsets ``idx``. On a
    sparse vector the examples are ``SparseQuery``s and a candidate that shares no
    index with an example scores 0 against it (Qdrant's sparse raw scorer)."""
    if using in shard.sparse:
        store = shard.sparse[using]

        def sim(v: SparseQuery) -> np.ndarray:
            return store.scores_all(v.indices, v.values, shard.size, idf=v.idf)[idx]
    elif using in shard.multi:
        multi = shard.multi[using]

        def sim(v: np.ndarray) -> np.ndarray:  # internal MaxSim, as Qdrant's query scorers use
            return multi.score(v, idx)
    else:
        params = shard.config.vectors[using]
        data = shard.vectors[using].data[idx]

        def sim(v: np.ndarray) -> np.ndarray:
            return distances.similarity(distances.preprocess(v, params.distance), data, params.distance)

    if isinstance(query, RecommendQuery):
        pos = [sim(v) for v in query.positive]
        neg = [sim(v) for v in query.negative]
        if query.strategy == "best_score":
            return distances.best_score(pos, neg)
        return distances.sum_scores(pos, neg)
    if isinstance(query, DiscoverQuery):
        pairs = [(sim(p.positive), sim(p.negative)) for p in query.context]
        return distances.discovery_score(sim(query.target), pairs)
    if isinstance(query, ContextQuery):
        pairs = [(sim(p.positive), sim(p.negative)) for p in query.context]
        return distances.context_score(pairs)
    raise TypeError(f"unknown query {type(query).__name__}")


# -------------------------------------------------------------------- records


def vector_output(shard: ShardReader, offset: int, selector: VectorSelector):
    """A point's vectors in Qdrant's JSON shape: one vector for a collection with only
    the unnamed vector, a dict by name otherwise; None when not asked for. Vectors are
    float32 arrays (copies): JSON encoding prints them as float32, as Qdrant does; a
    sparse one is {"indices": u32 array, "values": f32 array}, sorted by index; a
    multivector a (rows, size) float32 array (a list of lists in JSON), its values
    as stored: unit rows for Cosine, rounded to float16 or uint8 by its datatype."""
    if selector is False:
        return None
    config = shard.config
    if selector is True and [*config.vectors, *config.multi] == [DEFAULT_VECTOR] and not config.sparse:
        store = shard.vectors[DEFAULT_VECTOR] if DEFAULT_VECTOR in shard.vectors else shard.multi[DEFAULT_VECTOR]
        return store.get(offset).copy() if store.has(offset) else None
    names = list(shard.config.vectors) if selector is True else [n for n in selector if n in shard.vectors]
    out = {n: shard.vectors[n].get(offset).copy() for n in names if shard.vectors[n].has(offset)}
    sparse = list(shard.config.sparse) if selector is True else [n for n in selector if n in shard.sparse]
    for name in sparse:
        if shard.sparse[name].has(offset):
            indices, values = shard.sparse[name].get(offset)
            out[name] = {"indices": indices.copy(), "values": values.copy()}
    multi = list(config.multi) if selector is True else [n for n in selector if n in shard.multi]
    for name in multi:
        if shard.multi[name].has(offset):
            out[name] = shard.multi[name].get(offset)
    if config.sparse and list(out) == [DEFAULT_VECTOR] and (DEFAULT_VECTOR in shard.vectors
                                                            or DEFAULT_VECTOR in shard.multi):
        # Qdrant's VectorStructInternal from NamedVectors: the default vector alone is bare.
        return out[DEFAULT_VECTOR]
    return out


def _payload(shard: ShardReader, offset: int, selector: PayloadSelector | None):
    if selector is None:
        return None
    return select_payload(shard.payloads.get(offset), selector)


def _scored_points(shard: ShardReader, offsets: np.ndarray, scores: np.ndarray, with_payload, with_vector) -> list[ScoredPoint]:
    """Results for the points at ``offsets`` with their display ``scores``. Ids,
    versions and scores are read in one pass each: per-point numpy indexing was
    a tenth of a filtered search's time on the shard."""
    offsets = np.asarray(offsets)
    ids = shard.points.ids
    versions = shard.points.versions[offsets].tolist()
    scores = np.asarray(scores).tolist()
    if with_payload is None and with_vector is False:
        return [ScoredPoint(ids[o], v, s) for o, v, s in zip(offsets.tolist(), versions, scores)]
    return [
        ScoredPoint(ids[o], v, s, _payload(shard, o, with_payload), vector_output(shard, o, with_vector))
        for o, v, s in zip(offsets.tolist(), versions, scores)
    ]


def retrieve(shard: ShardReader, ids, with_payload: PayloadSelector | None, with_vector: VectorSelector) -> list[Record]:
    seen: set = set()
    out = []
    for point_id in ids:
        offset = shard.points.offset_of.get(point_id)
        if offset is None or point_id in seen:
            continue
        seen.add(point_id)
        out.append(Record(point_id, _payload(shard, offset, with_payload), vector_output(shard, offset, with_vector)))
    return out


def get_vectors(shard: ShardReader, ids, using: str) -> dict[PointId, np.ndarray | tuple[np.ndarray, np.ndarray]]:
    """Stored vectors ``using`` of the existing ``ids`` (points without it are left
    out): float32 rows, (indices, values) for a sparse vector, or a (rows, size)
    float32 matrix for a multivector."""
    if using in shard.multi:
        multi = shard.multi[using]
        found = {}
        for point_id in ids:
            offset = shard.points.offset_of.get(point_id)
            if offset is not None and multi.has(offset):
                found[point_id] = multi.get(offset)
        return found
    if using in shard.sparse:
        sparse = shard.sparse[using]
        found = {}
        for point_id in ids:
            offset = shard.points.offset_of.get(point_id)
            if offset is not None and sparse.has(offset):
                indices, values = sparse.get(offset)
                found[point_id] = (indices.copy(), values.copy())
        return found
    shard.config.vector(using)
    store = shard.vectors[using]
    out = {}
    for point_id in ids:
        offset = shard.points.offset_of.get(point_id)
        if offset is not None and store.has(offset):
            out[point_id] = store.get(offset).copy()
    return out


def scroll(
    shard: ShardReader,
    *,
    filter: dict | None,
    offset: PointId | None,
    limit: int,
    order_by: OrderBy | None,
    with_payload: PayloadSelector | None,
    with_vector: VectorSelector,
) -> list[Record]:
    """Up to ``limit`` points passing the filter: by id from ``offset`` (inclusive),
    or by a payload key's value when ``order_by`` is given."""
    idx = np.flatnonzero(filters.evaluate(filter, shard))
    if order_by is None:
        ids = shard.points.ids
        keyed = sorted((id_sort_key(ids[o]), o) for o in idx.tolist())
        if offset is not None:
            start = id_sort_key(offset)
            keyed = [(k, o) for k, o in keyed if k >= start]
        chosen = [(o, None) for _, o in keyed[:limit]]
    else:
        chosen = order_values(shard.payloads, idx, order_by, limit)
    records = []
    for o, value in chosen:
        rec = Record(
            shard.points.ids[o],
            _payload(shard, o, with_payload),
            vector_output(shard, o, with_vector),
            order_value=value,
        )
        records.append(rec)
    return records


def facet(shard: ShardReader, key: str, filter: dict | None, limit: int) -> list[tuple[Any, int]]:
    idx = np.flatnonzero(filters.evaluate(filter, shard))
    return payload_facet(shard.payloads, idx, key, limit)


def sample(shard: ShardReader, filter: dict | None, using: str, n: int, seed: int):
    """Up to ``n`` random points passing the filter that hold vector ``using``:
    (ids, (k, dim) vectors; for a multivector, a list of (rows, dim) matrices).
    For the distance matrix."""
    if using not in shard.multi:
        shard.config.vector(using)
    idx = np.flatnonzero(candidates(shard, filter, using))
    if len(idx) > n:
        idx = np.sort(np.random.default_rng(seed).choice(idx, size=n, replace=False))
    ids = [shard.points.ids[o] for o in idx.tolist()]
    if using in shard.multi:
        return ids, [shard.multi[using].get(o) for o in idx.tolist()]
    return ids, shard.vectors[using].data[idx].copy()


def sample_records(shard: ShardReader, filter: dict | None, n: int, seed: int, with_payload, with_vector) -> list[Record]:
    """Up to ``n`` random points passing the filter, as records (sample query)."""
    idx = np.flatnonzero(filters.evaluate(filter, shard))
    if len(idx) > n:
        idx = np.random.default_rng(seed).choice(idx, size=n, replace=False)
    return [
        Record(shard.points.ids[o], _payload(shard, o, with_payload), vector_output(shard, o, with_vector))
        for o in idx.tolist()
    ]
