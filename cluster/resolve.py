"""Merging the answers of several replicas of ONE shard, as Qdrant's resolver does
(lib/collection/src/shards/resolve.rs, the ``Resolve`` trait). Pure: no I/O.

A read with ``consistency`` above 1 asks several replicas of a shard
(``cluster.routing.read_targets``); their answers are resolved here into the one
answer of that shard, and only then merged across shards by the gateway's merge
rule (``gateway.merge``), so that each shard counts once there.

What Qdrant keeps, and so what this module keeps:

- A point (a record, a facet value) is kept when *enough* answers hold the same
  copy of it: every answer for ``Condition.ALL``, more than half of them
  (``n // 2 + 1``) for ``Condition.MAJORITY`` (``ResolveCondition::resolution_count``).
  Copies are the same when id, score, order value, vector and payload are equal,
  a missing payload being equal to an empty one (``scored_point_eq``,
  ``record_eq``, ``payload_eq``). The version is not compared, as in Qdrant; among
  the copies that agree the one with the highest version is returned (Qdrant
  returns whichever came first, which is one of them: this makes the choice
  deterministic and the newest). So a point the replicas disagree about is kept
  only in the copy enough of them hold, and dropped when no copy has enough: a
  lagging replica's older copy never wins over the agreement of the others, and
  with ``ALL`` a point one replica lacks or holds differently is left out.
- The kept items come out in the answers' own order (Qdrant's ``MergeInOrder``):
  at each step the item at the head of most answers. When every answer is ordered
  by one key (score then id, id, order value), so is the result: the item that is
  first by that key heads every answer that holds it, which are more than half.
- Counts: the smallest for ``ALL``, the upper median for ``MAJORITY``
  (``impl Resolve for CountResult``). Facet hits: a value is kept when enough
  answers list it, with its counts resolved as a count (``impl Resolve for
  FacetResponse``).
- One answer is returned as it is (``execute_and_resolve_read_operation`` only
  resolves several).

Functions never mutate their inputs; kept items are the answers' own objects.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from enum import Enum
from typing import Any, TypeVar

import numpy as np

from shard.types import Record, ScoredPoint

T = TypeVar("T")


class Condition(str, Enum):
    """Qdrant's ``ResolveCondition``: how many answers must agree on an item."""

    ALL = "all"
    MAJORITY = "majority"


def agreement(condition: Condition, answers: int) -> int:
    """How many of ``answers`` must hold the same copy of an item for it to be kept
    (``ResolveCondition::resolution_count``)."""
    return answers if condition is Condition.ALL else answers // 2 + 1


# ------------------------------------------------------------------ equality


def _same(a: Any, b: Any) -> bool:
    """Equal as Qdrant compares values: JSON values by kind and value (1, 1.0 and
    true are three values, as serde_json has them), vectors element by element.
    A numpy scalar is the Python number it holds (a score may arrive as either)."""
    a = a.item() if isinstance(a, np.generic) else a
    b = b.item() if isinstance(b, np.generic) else b
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (isinstance(a, np.ndarray) and isinstance(b, np.ndarray)
                and a.shape == b.shape and bool(np.array_equal(a, b)))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(v, b[k]) for k, v in a.items())
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(map(_same, a, b))
    return type(a) is type(b) and a == b


def _same_payload(a: dict | None, b: dict | None) -> bool:
    """``payload_eq``: no payload is the same as an empty one."""
    return _same(a or {}, b or {})


def _same_point(a: ScoredPoint, b: ScoredPoint) -> bool:
    """``scored_point_eq``: the version is not compared."""
    return (a.id == b.id and _same(a.score, b.score) and _same(a.order_value, b.order_value)
            and _same(a.vector, b.vector) and _same_payload(a.payload, b.payload))


def _same_record(a: Record, b: Record) -> bool:
    """``record_eq``."""
    return (a.id == b.id and _same(a.order_value, b.order_value)
            and _same(a.vector, b.vector) and _same_payload(a.payload, b.payload))


def _first(copies: list[T]) -> T:
    return copies[0]


def _newest(copies: list[ScoredPoint]) -> ScoredPoint:
    """The copy with the highest version; the first answer's among equals."""
    return max(copies, key=lambda p: p.version)


# ------------------------------------------------------------------ the resolver


def _resolve(
    answers: Sequence[Sequence[T]],
    condition: Condition,
    key: Callable[[T], Hashable],
    same: Callable[[T, T], bool],
    pick: Callable[[list[T]], T] = _first,
) -> list[T]:
    """Qdrant's ``Resolver::resolve``: the items enough answers agree on, in order."""
    if not answers:
        return []
    if len(answers) == 1:
        return list(answers[0])
    need = agreement(condition, len(answers))
    # id -> the distinct copies seen of it, each with where it stands: [(row, index), ...]
    copies: dict[Hashable, list[tuple[T, list[tuple[int, int]]]]] = {}
    for row, items in enumerate(answers):
        for index, item in enumerate(items):
            seen = copies.setdefault(key(item), [])
            for first, places in seen:
                if same(item, first):
                    places.append((row, index))
                    break
            else:
                seen.append((item, [(row, index)]))
    kept = {place for seen in copies.values() for _, places in seen if len(places) >= need for place in places}
    rows = [[item for index, item in enumerate(items) if (row, index) in kept] for row, items in enumerate(answers)]
    return _merge_in_order(rows, key, pick)


def _merge_in_order(rows: list[list[T]], key: Callable[[T], Hashable], pick: Callable[[list[T]], T]) -> list[T]:
    """Qdrant's ``MergeInOrder``: repeatedly take the item at the head of most rows
    and advance those rows. Two refinements, for answers whose orders disagree:
    a tie goes to the item heading the earliest row (Qdrant's is a hash map's
    order), and an item is given once (Qdrant could repeat it)."""
    heads = [0] * len(rows)
    given: set[Hashable] = set()
    out: list[T] = []
    while True:
        at_head: dict[Hashable, list[int]] = {}
        for r, row in enumerate(rows):
            while heads[r] < len(row) and key(row[heads[r]]) in given:
                heads[r] += 1
            if heads[r] < len(row):
                at_head.setdefault(key(row[heads[r]]), []).append(r)
        if not at_head:
            return out
        chosen, where = max(at_head.items(), key=lambda kv: (len(kv[1]), -kv[1][0]))
        out.append(pick([rows[r][heads[r]] for r in where]))
        given.add(chosen)
        for r in where:
            heads[r] += 1


def _point_key(item: ScoredPoint | Record) -> Hashable:
    return item.id


# ------------------------------------------------------------------ per answer kind


def resolve_points(answers: Sequence[Sequence[ScoredPoint]], condition: Condition) -> list[ScoredPoint]:
    """One search's hits, as each replica answered them (each best first)."""
    return _resolve(answers, condition, _point_key, _same_point, _newest)


def resolve_batches(answers: Sequence[Sequence[Sequence[ScoredPoint]]], condition: Condition) -> list[list[ScoredPoint]]:
    """``search_batch`` answers (per replica, one list of hits per request):
    request by request (Qdrant transposes replicas x requests the same way)."""
    if not answers:
        return []
    if len(answers) == 1:
        return [list(hits) for hits in answers[0]]
    if len({len(a) for a in answers}) != 1:
        raise ValueError("replicas answered different numbers of requests")
    return [resolve_points([a[i] for a in answers], condition) for i in range(len(answers[0]))]


def resolve_records(answers: Sequence[Sequence[Record]], condition: Condition) -> list[Record]:
    """Retrieved records, and scroll pages (by id or by order value)."""
    return _resolve(answers, condition, _point_key, _same_record)


def resolve_count(answers: Sequence[int], condition: Condition) -> int:
    """The smallest count for ``ALL``; the upper median for ``MAJORITY``."""
    if not answers:
        return 0
    if condition is Condition.ALL:
        return min(answers)
    return sorted(answers)[len(answers) // 2]


def _facet_key(hit: tuple[Any, int]) -> Hashable:
    """A facet value by kind and value (True and 1 are two values), as gateway.merge keys them."""
    return type(hit[0]).__name__, hit[0]


def resolve_facets(answers: Sequence[Sequence[tuple[Any, int]]], condition: Condition) -> list[tuple[Any, int]]:
    """Facet hits ``(value, count)``: a value listed by enough answers, its count
    resolved from the counts of the answers that list it; in the answers' order."""
    if len(answers) <= 1:
        return list(answers[0]) if answers else []
    need = agreement(condition, len(answers))
    counts: dict[Hashable, list[int]] = {}
    for hits in answers:
        for hit in hits:
            counts.setdefault(_facet_key(hit), []).append(hit[1])
    resolved = {k: resolve_count(c, condition) for k, c in counts.items() if len(c) >= need}
    rows = [[(value, resolved[_facet_key((value, n))]) for value, n in hits if _facet_key((value, n)) in resolved]
            for hits in answers]
    return _merge_in_order(rows, _facet_key, _first)
