"""A collection created from another one: Qdrant's ``init_from`` on PUT /collections/{name}.

What Qdrant 1.15 does (storage toc/create_collection.rs, content_manager/data_transfer.rs):
before it creates anything it looks the source up, through aliases too (a missing
one: 404 "Collection `x` doesn't exist!"), and checks that every vector of the
source is in the new collection with the same size and distance (400 "Wrong input:
Vectors configuration is not compatible: ..."; the new collection may have more
vectors, another shard number, other HNSW or optimizer settings); with a custom
sharding method it refuses. Then it answers ``true`` at once and copies in the
background: the payload indexes first, then the points (vectors and payloads), a
page of 1000 at a time, source shard by source shard. A copy that fails there is
only logged, and the new collection stays, partly filled.

Shoal makes the same checks with the same texts, and the same copy (indexes, then
pages of points, each point upserted into the new collection's shard
``shard_of(id, shard_number)`` through the normal write path, so that replicas get
every write), but before the create is committed (``Collections.create``'s
``fill``): the create answers once every point is in, and a copy that fails takes
the new collection away and answers the error. So a create that answered ``true``
holds every point the source held when its shard was read, and no client ever sees a
half-filled collection. Writes to the source during the copy may or may not be
copied (Qdrant's copy reads page by page too).
"""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable

from cluster.collection import Collection, Registry, shard_config_of
from gateway import convert, errors
from shard.types import BadInput, PayloadSelector

PAGE = 1000  # points read from the source per call: Qdrant's MIGRATION_BATCH_SIZE

Fill = Callable[[Collection], Awaitable[None]]


def prepare(registry: Registry, name: str, body: dict[str, Any], config: dict[str, Any]) -> Fill:
    """Check a create's ``init_from`` now, before any shard of ``name`` starts, and
    return the copy for ``Collections.create`` to run. When ``name`` is taken the
    create refuses that first (as Qdrant checks the name first), so no check is made
    here; the copy checks again anyway, with the source as it is then."""
    source_name = body["init_from"]["collection"]
    custom = body.get("sharding_method") == "custom"
    if name not in registry.names() and name not in registry.aliases():
        _source(registry, source_name, config, custom)

    async def fill(target: Collection) -> None:
        await copy(_source(registry, source_name, config, custom), target)

    return fill


def _source(registry: Registry, source_name: str, config: dict[str, Any], custom: bool) -> Collection:
    source = registry.resolve(source_name)  # NotFound: Qdrant's 404 text
    check_compatible(source.config, config)
    if custom:
        raise BadInput(errors.init_from_custom_sharding())
    return source


def check_compatible(origin: dict[str, Any], other: dict[str, Any]) -> None:
    """Raise BadInput, with Qdrant's text, unless every vector of collection config
    ``origin`` is in config ``other`` with the same size and distance
    (VectorsConfig::check_compatible: the unnamed vector and named ones never mix)."""
    origin_named = "size" not in origin["params"]["vectors"]
    other_named = "size" not in other["params"]["vectors"]
    origin_config, other_config = shard_config_of(origin), shard_config_of(other)
    origin_vectors = {**origin_config.vectors, **origin_config.multi}
    other_vectors = {**other_config.vectors, **other_config.multi}
    if origin_named != other_named:
        raise BadInput(errors.init_from_vectors_kind(sorted(origin_vectors), sorted(other_vectors)))
    for vector in sorted(origin_vectors):
        this, that = origin_vectors[vector], other_vectors.get(vector)
        if that is None:
            raise BadInput(errors.init_from_vector_missing(vector))
        if this.size != that.size:
            raise BadInput(errors.init_from_vector_param(vector, "size", this.size, that.size))
        if this.distance != that.distance:
            raise BadInput(errors.init_from_vector_param(vector, "distance", this.distance.value,
                                                         that.distance.value))


async def copy(source: Collection, target: Collection, page: int = PAGE) -> None:
    """Every payload index, then every point, of ``source`` into ``target`` (whose
    shards are empty), each write waited for."""
    await _copy_indexes(source, target)
    for shard in source.shards:  # one source shard at a time, as Qdrant
        offset = None
        while True:
            records = await shard.scroll(filter=None, offset=offset, limit=page + 1, order_by=None,
                                         with_payload=PayloadSelector(), with_vector=True)
            if records[:page]:
                ops = convert.records_upsert_ops(target.shard_config, len(target.shards), records[:page])
                await asyncio.gather(*(target.shards[i].apply(op, True) for i, op in ops.items()))
            if len(records) <= page:
                break
            offset = records[page].id  # the first point of the next page (scroll's offset is inclusive)


async def _copy_indexes(source: Collection, target: Collection) -> None:
    """The source's payload indexes, with their params, on every shard of ``target``
    (Qdrant's transfer_indexes: from the source's payload_schema)."""
    schemas: dict[str, Any] = {}
    for info in await asyncio.gather(*(s.info() for s in source.shards)):
        for field, entry in info.payload_schema.items():
            schemas.setdefault(field, entry.get("params") or entry["data_type"])
    for field, schema in schemas.items():
        op = {"type": "create_index", "field": field, "schema": schema}
        await asyncio.gather(*(s.apply(op, True) for s in target.shards))

