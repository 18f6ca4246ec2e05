"""Prefetch trees of the universal query (``points/query`` with ``prefetch``).

A query with prefetches is a tree: each leaf is an ordinary query (a vector
search, order_by, sample, or a scroll when it has no query), each inner node
(and the root) combines what its children found:

- ``fusion`` (``rrf`` / ``dbsf``): the children's lists fused (``gateway.fusion``);
- ``formula``: every candidate rescored by the expression, reading its payload,
  its score in each child (``$score[i]``) and which conditions it matches
  (``gateway.formula``);
- anything else (a vector query, recommend, discover, context, order_by, sample,
  ``mmr``): the same query run again, restricted to the children's candidates
  (a ``has_id`` filter: the shards score them exactly).

As in Qdrant (lib/shard/src/query/planned_query.rs), a node's filter is merged
into its children's (``Filter::merge_opts``: the clauses concatenated), so every
limit applies to points that pass every filter above; a leaf's limit defaults to
10; a node with prefetches needs a query; fusion and formula need prefetches;
trees deeper than 64 are refused.

Where Qdrant runs the tree on each shard and merges the shards' answers at the
end, Shoal runs every node across the whole collection: each leaf is one
scatter-gather search merged before its parent sees it. So the candidates of a
node are the collection's best, whatever the number of shards, and the answers
are those of a single-shard Qdrant (and of ``QdrantClient(":memory:")``).

The leaves a node asks for at once (the prefetches of a hybrid query: a dense
and a sparse search) go to the shards as one batch, one call per shard for all
of them (``_Batch``), as ``query/batch`` does.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import orjson

from gateway import formula as formulas
from gateway import fusion, queries
from shard.types import DEFAULT_VECTOR, BadInput, ScoredPoint

if TYPE_CHECKING:
    from cluster.collection import Collection, Registry

MAX_DEPTH = 64  # Qdrant's MAX_PREFETCH_DEPTH
DEFAULT_LIMIT = 10
CLAUSES = ("must", "should", "must_not")


def validation_failed(text: str) -> BadInput:
    """Qdrant's OperationError::ValidationError: 400 "Wrong input: Validation failed: ..."."""
    return BadInput(f"Validation failed: {text}")


def depth(prefetches: list[dict] | None) -> int:
    """How deep a prefetch list goes (Qdrant's ``prefetches_depth``: 0 for none)."""
    deepest, stack = 0, [(p, 1) for p in prefetches or ()]
    while stack:
        node, level = stack.pop()
        deepest = max(deepest, level)
        stack.extend((child, level + 1) for child in node.get("prefetch") or ())
    return deepest


def merge_filters(outer: dict | None, inner: dict | None) -> dict | None:
    """Qdrant's ``Filter::merge_opts``: each clause of both, concatenated (so the
    ``should`` of both are alternatives of each other); ``min_should`` from
    whichever has one, both's conditions with the larger count if both do."""
    if outer is None:
        return inner
    if inner is None:
        return outer
    merged: dict[str, Any] = {}
    for clause in CLAUSES:
        parts = [c for f in (outer, inner) for c in _as_list(f.get(clause))]
        if parts or clause in outer or clause in inner:
            merged[clause] = parts
    a, b = outer.get("min_should"), inner.get("min_should")
    if a is not None and b is not None:
        merged["min_should"] = {"conditions": _as_list(a["conditions"]) + _as_list(b["conditions"]),
                                "min_count": max(a["min_count"], b["min_count"])}
    elif a is not None or b is not None:
        merged["min_should"] = a if a is not None else b
    return merged


def _as_list(value: Any) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def with_ids(flt: dict | None, ids: list) -> dict:
    """``flt`` narrowed to the points ``ids``."""
    return merge_filters(flt, {"must": [{"has_id": ids}]})


class _Batch:
    """Searches asked for in one turn of the event loop, run as one batch.

    ``run`` has the signature of ``queries.run``. The first request of a turn
    schedules the flush with ``call_soon``, which runs after every task already
    ready: the sibling leaves that ``asyncio.gather`` started in the same turn.
    A leaf that must first wait for something (a recommend's examples) comes in
    a later turn and goes in a later batch."""

    def __init__(self, run):
        self._run = run  # queries.run
        self._pending: list[tuple[Any, list, asyncio.Future]] = []

    async def run(self, coll: Collection, requests: list) -> list:
        future = asyncio.get_running_loop().create_future()
        self._pending.append((coll, requests, future))
        if len(self._pending) == 1:
            asyncio.get_running_loop().call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        coll = batch[0][0]
        task = asyncio.ensure_future(self._run(coll, [r for _, requests, _ in batch for r in requests]))

        def hand_out(done: asyncio.Task) -> None:
            error = done.exception() if not done.cancelled() else asyncio.CancelledError()
            results, at = (None if error else done.result()), 0
            for _, requests, future in batch:
                if future.done():
                    continue
                if error is not None:
                    future.set_exception(error)
                else:
                    future.set_result(results[at:at + len(requests)])
                at += len(requests)
        task.add_done_callback(hand_out)


class Tree:
    """One query with prefetches, against one collection."""

    def __init__(self, collections: Registry, coll: Collection, base, scored):
        self.collections = collections
        self.coll = coll
        self._base = base  # universal.base_query: a query without prefetches, taking ``run=``
        self._scored = scored  # universal.scored_request: a vector query's SearchRequest
        self._batch = _Batch(queries.run)

    async def answer(self, body: dict[str, Any]) -> list[ScoredPoint]:
        found = depth(body.get("prefetch"))
        if found > MAX_DEPTH:
            raise validation_failed(f"prefetches depth {found} exceeds max depth {MAX_DEPTH}")
        return await self._node(body, body.get("filter"), root=True)

    async def _node(self, node: dict[str, Any], flt: dict | None, root: bool = False) -> list[ScoredPoint]:
        """What one node answers. ``flt``: its filter merged with every filter above."""
        children = node.get("prefetch") or []
        step = self._step(node, flt, root)
        limit, offset = step["limit"], step["offset"]
        if not children:
            return await self._base(self.collections, self.coll, step, run=self._batch.run)
        query = node.get("query")
        if query is None:
            raise validation_failed("cannot have prefetches without a query")
        if all(_inline_leaf(child) for child in children):
            # The usual hybrid query: leaves whose vectors are in the request. Their
            # searches are built one after the other (nothing to wait for) and sent
            # as one batch, without a task for each.
            leaves = [self._step(child, merge_filters(flt, child.get("filter"))) for child in children]
            requests = [await self._scored(self.collections, self.coll, leaf, leaf["query"],
                                           leaf.get("using") or DEFAULT_VECTOR) for leaf in leaves]
            sources = await queries.run(self.coll, requests)
        else:
            sources = await asyncio.gather(
                *(self._node(child, merge_filters(flt, child.get("filter"))) for child in children))
        if isinstance(query, dict) and "fusion" in query:
            fused = fusion.fuse(query["fusion"], sources, limit=limit, offset=offset,
                                score_threshold=node.get("score_threshold"))
            return await self._shown(fused, step)
        if isinstance(query, dict) and "formula" in query:
            return await self._formula(query, sources, step)
        ids = list(dict.fromkeys(p.id for source in sources for p in source))
        if not ids:
            return []
        return await self._base(self.collections, self.coll, {**step, "filter": with_ids(flt, ids)},
                                run=self._batch.run)

    @staticmethod
    def _step(node: dict[str, Any], flt: dict | None, root: bool = False) -> dict[str, Any]:
        """A node's own query: ``flt`` (every filter above merged in), its limit;
        only the root has an offset and shows payloads or vectors."""
        shown = {"with_payload": node.get("with_payload"), "with_vector": node.get("with_vector")} if root \
            else {"with_payload": False, "with_vector": False}
        return {**node, "prefetch": None, "filter": flt, "limit": node.get("limit") or DEFAULT_LIMIT,
                "offset": (node.get("offset") or 0) if root else 0, **shown}

    async def _shown(self, points: list[ScoredPoint], step: dict[str, Any]) -> list[ScoredPoint]:
        """``points`` with the payload and vectors the request asked for."""
        with_payload, with_vector = step.get("with_payload"), step.get("with_vector")
        if not points or (not with_payload and not with_vector):
            return [p if p.payload is None and p.vector is None else replace(p, payload=None, vector=None)
                    for p in points]
        records = await queries.retrieve(self.coll, [p.id for p in points], with_payload or False, with_vector)
        by_id = {r.id: r for r in records}
        out = []
        for p in points:
            record = by_id.get(p.id)
            out.append(replace(p, payload=record.payload if record else None,
                               vector=record.vector if record else None))
        return out

    async def _formula(self, query: dict, sources: list[list[ScoredPoint]], step: dict[str, Any]) -> list[ScoredPoint]:
        """Rescore every candidate with the formula (each point once), best first."""
        parsed = formulas.parse(query["formula"], query.get("defaults"))
        ids = list(dict.fromkeys(p.id for source in sources for p in source))
        if not ids:
            return []
        records = await queries.retrieve(self.coll, ids, True, False)
        payloads = {r.id: r.payload or {} for r in records}
        matched = await self._matching(query["formula"], ids)
        limit, offset = step["limit"], step["offset"]
        scored = formulas.rescore(parsed, sources, lambda pid: payloads.get(pid, {}),
                                  lambda cond, point: point.id in matched[_key(cond)], limit + offset)
        threshold = step.get("score_threshold")
        if threshold is not None:
            scored = [(pid, s) for pid, s in scored if s >= threshold]
        points = [ScoredPoint(pid, 0, s) for pid, s in scored[offset:]]
        return await self._shown(points, step)

    async def _matching(self, expression: Any, ids: list) -> dict[bytes, set]:
        """For each condition the formula holds: which of ``ids`` match it (asked
        of the shards, so that conditions mean what they mean in a filter)."""
        conditions = {}
        for cond in conditions_in(expression):
            conditions.setdefault(_key(cond), cond)
        keys = list(conditions)
        found = await asyncio.gather(*(self._ids_matching(conditions[k], ids) for k in keys))
        return dict(zip(keys, found))

    async def _ids_matching(self, condition: dict, ids: list) -> set:
        flt = with_ids({"must": [condition]}, ids)
        parts = await asyncio.gather(*(s.scroll(offset=None, limit=len(ids), order_by=None, filter=flt,
                                                with_payload=None, with_vector=False)
                                       for s in self.coll.shards))
        return {r.id for part in parts for r in part}


def _inline_leaf(node: dict[str, Any]) -> bool:
    """A prefetch without prefetches whose query is a dense or sparse vector given in
    the request (plain or as ``nearest``, without ``mmr``): a search that needs
    nothing fetched first."""
    if node.get("prefetch"):
        return False
    query = node.get("query")
    if isinstance(query, dict) and query.keys() == {"nearest"}:
        query = query["nearest"]
    return (isinstance(query, list) and bool(query) and isinstance(query[0], (int, float))
            or isinstance(query, dict) and query.keys() == {"indices", "values"})


def _key(condition: Any) -> bytes:
    return orjson.dumps(condition, option=orjson.OPT_SORT_KEYS)


def conditions_in(expression: Any) -> list[dict]:
    """The filter conditions a formula expression holds (where the parser
    ``gateway.formula`` reads a condition: a dict with a condition's keys, or
    only a filter's)."""
    out, stack = [], [expression]
    while stack:
        e = stack.pop()
        if isinstance(e, list):
            stack.extend(e)
        elif isinstance(e, dict):
            keys = e.keys()
            if keys & formulas.CONDITION_KEYS or keys <= formulas.FILTER_KEYS:
                out.append(e)
            else:
                stack.extend(e.values())
    return out
