"""Grouped reads (``search/groups``, ``recommend/groups``, ``query/groups``).

As Qdrant does: run the scored search for more points than needed, put each hit
in the group of every value its payload holds at ``group_by`` (hits without a
value are skipped), keep at most ``group_size`` hits per group and ``limit``
groups in the order of their best hit; widen the search until the groups are
full or the collection is exhausted.
"""

from __future__ import annotations

from dataclasses import replace
from collections.abc import Awaitable, Callable
from typing import Any

from cluster.collection import Collection, Registry
from gateway import queries
from shard.json_path import values_at
from shard.payload import select_payload
from shard.types import PayloadSelector, ScoredPoint, SearchRequest

MAX_ROUNDS = 4


Hits = Callable[[int], Awaitable[list[ScoredPoint]]]


def searching(coll: Collection, req: SearchRequest) -> Hits:
    """The best ``n`` hits of one engine request, with their whole payload."""
    async def hits(n: int) -> list[ScoredPoint]:
        return (await queries.run(coll, [replace(req, limit=n, offset=0, with_payload=PayloadSelector())]))[0]
    return hits


async def grouped(collections: Registry, body: dict[str, Any], hits: Hits, wanted_payload) -> dict[str, Any]:
    """The groups of a grouped read: ``hits(n)`` gives the query's best ``n``
    hits with their whole payload; ``wanted_payload`` is the payload selector the
    answer shows (None: no payload)."""
    group_by = body["group_by"]
    group_size = body.get("group_size") or 1
    limit = body.get("limit") or 10
    fetch = max(limit * group_size * 2, 16)
    groups: dict[Any, list] = {}
    for _ in range(MAX_ROUNDS):
        found = await hits(fetch)
        groups = _group(found, group_by, group_size)
        leading = list(groups.values())[:limit]
        # Done when the groups that will be returned are full: a later, deeper
        # search could only add hits to them, never change which groups lead.
        if (len(leading) == limit and all(len(g) >= group_size for g in leading)) or len(found) < fetch:
            break
        fetch *= 4
    chosen = list(groups.items())[:limit]
    out = []
    for value, members in chosen:
        for hit in members:
            hit.payload = None if wanted_payload is None else select_payload(hit.payload or {}, wanted_payload)
        out.append({"id": value, "hits": members})
    lookup = body.get("with_lookup")
    if lookup:
        await _attach_lookup(collections, out, lookup)
    return {"groups": out}


def _group(hits, group_by: str, group_size: int) -> dict[Any, list]:
    groups: dict[Any, list] = {}
    for hit in hits:
        for value in values_at(hit.payload or {}, group_by):
            if isinstance(value, bool) or not isinstance(value, (str, int)):
                continue  # Qdrant groups by keyword and integer values only
            group = groups.setdefault(value, [])
            if len(group) < group_size and all(h.id != hit.id for h in group):
                group.append(replace(hit))
    return groups


async def _attach_lookup(collections: Registry, out: list[dict], lookup: Any) -> None:
    name = lookup if isinstance(lookup, str) else lookup["collection"]
    with_payload = True if isinstance(lookup, str) else lookup.get("with_payload", True)
    with_vector = False if isinstance(lookup, str) else lookup.get("with_vectors", lookup.get("with_vector", False))
    target = collections.resolve(name)
    ids = [g["id"] for g in out]
    records = {r.id: r for r in await queries.retrieve(target, ids, with_payload, with_vector)}
    for g in out:
        if g["id"] in records:
            g["lookup"] = records[g["id"]]
