"""Collections, aliases and payload indexes."""

from __future__ import annotations

import asyncio

from aiohttp import web

from cluster.collection import shard_config_of
from cluster.names import name_problem
from gateway import convert, init_from
from gateway.errors import ValidationError
from gateway.params import wait_timeout
from gateway.routes.common import body, collection, registry, strict_mode, wait_flag, write
from gateway.state import SETTINGS
from shard.types import NotFound

routes = web.RouteTableDef()


@routes.get("/collections")
async def list_collections(request: web.Request):
    return {"collections": [{"name": n} for n in registry(request).names()]}


@routes.put("/collections/{collection_name}")
async def create_collection(request: web.Request):
    data = await body(request, "CreateCollection")
    settings = request.app[SETTINGS]
    limit = settings.limits.max_shard_number
    shards = data.get("shard_number") or 1
    if shards > limit:
        # Beyond this server's limit: said as Qdrant says a range it refuses.
        raise ValidationError([("shard_number", f"value {shards} invalid, must be from 1 to {limit}")])
    wait_timeout(request)
    defaults = settings.storage.collection
    config = convert.collection_config(data, defaults.replication_factor, defaults.write_consistency_factor)
    name = request.match_info["collection_name"]
    # init_from: checked now, copied before the create is committed (gateway.init_from).
    fill = init_from.prepare(registry(request), name, data, config) if data.get("init_from") else None
    await registry(request).create(name, config, fill)
    return True


@routes.patch("/collections/{collection_name}")
async def update_collection(request: web.Request):
    data = await body(request, "UpdateCollection")
    wait_timeout(request)
    coll = collection(request)
    new_config = convert.updated_collection_config(coll.config, data)
    # A change of a vector's quantization or on_disk reaches every shard first,
    # through its log as a write (LocalShard._configure): replicated, and kept
    # across restarts.
    settings = shard_config_of(new_config).vector_settings()
    if settings != coll.shard_config.vector_settings():
        op = {"type": "configure", "settings": settings}
        await asyncio.gather(*(shard.apply(op, True) for shard in coll.shards))
    await registry(request).update(coll.name, new_config)
    return True


@routes.delete("/collections/{collection_name}")
async def delete_collection(request: web.Request):
    wait_timeout(request)
    return await registry(request).delete(request.match_info["collection_name"])


@routes.get("/collections/{collection_name}/exists")
async def collection_exists(request: web.Request):
    if registry(request).unavailable(request.match_info["collection_name"]) is not None:
        return {"exists": True}
    try:
        collection(request)
        return {"exists": True}
    except NotFound:
        return {"exists": False}


@routes.get("/collections/{collection_name}")
async def collection_info(request: web.Request):
    down = registry(request).unavailable(request.match_info["collection_name"])
    if down is not None:
        # Qdrant's "red": the collection exists but its shards are not serving.
        _, record = down
        return {"status": "red", "optimizer_status": {"error": record.reason}, "indexed_vectors_count": None,
                "points_count": None, "segments_count": 0, "config": record.config, "payload_schema": {}}
    coll = collection(request)
    infos = await asyncio.gather(*(s.info() for s in coll.shards))
    schema: dict = {}
    for info in infos:
        for field, entry in info.payload_schema.items():
            if field in schema:
                schema[field]["points"] += entry.get("points", 0)
            else:
                schema[field] = dict(entry)
    pending = sum(i.pending_index for i in infos)
    return {
        "status": "green" if pending == 0 else "yellow",
        "optimizer_status": "ok",
        "vectors_count": sum(i.vectors_count for i in infos),
        "indexed_vectors_count": sum(i.indexed_vectors_count for i in infos),
        "points_count": sum(i.points_count for i in infos),
        "segments_count": sum(i.segments_count for i in infos),
        "config": coll.config,
        "payload_schema": schema,
    }


# ---------------------------------------------------------------------- aliases


@routes.post("/collections/aliases")
async def change_aliases(request: web.Request):
    data = await body(request, "ChangeAliasesOperation")
    problems = []
    for i, action in enumerate(data["actions"]):
        (kind, args), = action.items()
        field = {"create_alias": "alias_name", "rename_alias": "new_alias_name"}.get(kind)
        problem = name_problem(args[field]) if field else None
        if problem is not None:  # a new alias is held to the rule for collection names
            problems.append((f"actions[{i}].{kind}.{field}", problem))
    if problems:
        raise ValidationError(problems)
    wait_timeout(request)
    await registry(request).change_aliases(data["actions"])
    return True


@routes.get("/collections/{collection_name}/aliases")
async def collection_aliases(request: web.Request):
    down = registry(request).unavailable(request.match_info["collection_name"])
    name = down[0] if down is not None else collection(request).name
    pairs = registry(request).aliases()
    return {"aliases": [{"alias_name": a, "collection_name": c} for a, c in sorted(pairs.items()) if c == name]}


@routes.get("/aliases")
async def all_aliases(request: web.Request):
    pairs = registry(request).aliases()
    return {"aliases": [{"alias_name": a, "collection_name": c} for a, c in sorted(pairs.items())]}


# -------------------------------------------------------------- payload indexes


@routes.put("/collections/{collection_name}/index")
async def create_index(request: web.Request):
    data = await body(request, "CreateFieldIndex")
    wait = wait_flag(request)
    coll = collection(request)
    await strict_mode(request, coll, "create_index", data)
    op = {"type": "create_index", "field": data["field_name"], "schema": data.get("field_schema")}
    return await write(coll, {i: op for i in range(len(coll.shards))}, wait)


@routes.delete("/collections/{collection_name}/index/{field_name}")
async def delete_index(request: web.Request):
    wait = wait_flag(request)
    coll = collection(request)
    await strict_mode(request, coll, "delete_index", {})
    op = {"type": "delete_index", "field": request.match_info["field_name"]}
    return await write(coll, {i: op for i in range(len(coll.shards))}, wait)
