"""Grouped reads (``search/groups``, ``recommend/groups``, ``query/groups``).

As Qdrant does: run the scored search for more points than needed, put each hit
in the group of every value its payload holds at ``group_by`` (hits without a
value are skipped), keep at most ``group_size`` hits per group and ``limit``
groups in the order of their best hit; widen the search until the groups are
full or the collection is exhausted.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from cluster.collection import Collection, Registry
from gateway import queries
from shard.json_path import values_at
from shard.payload import select_payload
from shard.types import PayloadSelector, SearchRequest

MAX_ROUNDS = 4


async def grouped(collections: Registry, coll: Collection, body: dict[str, Any], req: SearchRequest) -> dict[str, Any]:
    group_by = body["group_by"]
    group_size = body.get("group_size") or 1
    limit = body.get("limit") or 10
    wanted_payload = req.with_payload
    fetch = max(limit * group_size * 2, 16)
    groups: dict[Any, list] = {}
    for _ in range(MAX_ROUNDS):
        probe = replace(req, limit=fetch, offset=0, with_payload=PayloadSelector())
        hits = (await queries.run(coll, [probe]))[0]
        groups = _group(hits, group_by, group_size)
        leading = list(groups.values())[:limit]
        # Done when the groups that will be returned are full: a later, deeper
        # search could only add hits to them, never change which groups lead.
        if (len(leading) == limit and all(len(g) >= group_size for g in leading)) or len(hits) < fetch:
            break
        fetch *= 4
    chosen = list(groups.items())[:limit]
    out = []
    for value, hits in chosen:
        for hit in hits:
            hit.payload = None if wanted_payload is None else select_payload(hit.payload or {}, wanted_payload)
        out.append({"id": value, "hits": hits})
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
