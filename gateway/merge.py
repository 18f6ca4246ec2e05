"""The merge rule, written once (Qdrant's ``merge_from_shards``).

Every shard is asked for its best ``offset + limit``; here the per-shard lists,
each already best-first, are merged k-way in the score's order, duplicate ids
dropped (a point is on one shard, but a retried write may briefly leave two
copies during a move), and ``offset`` applied exactly once.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from typing import Any

from shard.points import id_sort_key
from shard.types import Record, ScoredPoint


def merge_scored(per_shard: Iterable[list[ScoredPoint]], *, offset: int, limit: int, higher_is_better: bool) -> list[ScoredPoint]:
    lists = list(per_shard)
    if len(lists) == 1:  # one shard: already in order, and a shard holds a point once
        return lists[0][offset : offset + limit]
    sign = -1.0 if higher_is_better else 1.0
    merged = heapq.merge(*lists, key=lambda p: (sign * p.score, id_sort_key(p.id)))
    out: list[ScoredPoint] = []
    seen: set = set()
    skipped = 0
    for point in merged:
        if point.id in seen:
            continue
        seen.add(point.id)
        if skipped < offset:
            skipped += 1
            continue
        out.append(point)
        if len(out) >= limit:
            break
    return out


def merge_by_id(per_shard: Iterable[list[Record]], limit: int) -> tuple[list[Record], Any]:
    """Scroll pages: merge by id order; returns (records, next_page_offset).
    Each shard was asked for ``limit + 1`` records so the next offset is known."""
    merged = list(heapq.merge(*per_shard, key=lambda r: id_sort_key(r.id)))
    page = merged[:limit]
    next_offset = merged[limit].id if len(merged) > limit else None
    return page, next_offset


def merge_ordered(per_shard: Iterable[list[Record]], limit: int, descending: bool) -> list[Record]:
    """Scroll with order_by: merge by the order value (then id), no next offset (as Qdrant)."""
    sign = -1 if descending else 1

    def key(r: Record):
        return (sign * r.order_value, id_sort_key(r.id))

    return sorted((r for rs in per_shard for r in rs), key=key)[:limit]


def merge_facets(per_shard: Iterable[list[tuple[Any, int]]], limit: int) -> list[tuple[Any, int]]:
    """Sum the per-shard counts; biggest count first, then by value, as Qdrant orders hits."""
    totals: dict[Any, int] = {}
    for hits in per_shard:
        for value, count in hits:
            key = (type(value).__name__, value)
            totals[key] = totals.get(key, 0) + count
    ordered = sorted(totals.items(), key=lambda kv: (-kv[1], kv[0][1]))
    return [(k[1], c) for k, c in ordered[:limit]]
