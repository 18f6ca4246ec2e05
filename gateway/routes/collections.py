"""Collections, aliases and payload indexes."""

from __future__ import annotations

import asyncio

from aiohttp import web

from gateway import convert
from gateway.routes.common import body, collection, flag, registry, write
from shard.types import NotFound

routes = web.RouteTableDef()


@routes.get("/collections")
async def list_collections(request: web.Request):
    return {"collections": [{"name": n} for n in registry(request).names()]}


@routes.put("/collections/{collection_name}")
async def create_collection(request: web.Request):
    data = await body(request, "CreateCollection")
    await registry(request).create(request.match_info["collection_name"], convert.collection_config(data))
    return True


@routes.patch("/collections/{collection_name}")
async def update_collection(request: web.Request):
    data = await body(request, "UpdateCollection")
    coll = collection(request)
    new_config = convert.updated_collection_config(coll.config, data)
    await registry(request).update(coll.name, new_config)
    return True


@routes.delete("/collections/{collection_name}")
async def delete_collection(request: web.Request):
    return await registry(request).delete(request.match_info["collection_name"])


@routes.get("/collections/{collection_name}/exists")
async def collection_exists(request: web.Request):
    try:
        collection(request)
        return {"exists": True}
    except NotFound:
        return {"exists": False}


@routes.get("/collections/{collection_name}")
async def collection_info(request: web.Request):
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
    await registry(request).change_aliases(data["actions"])
    return True


@routes.get("/collections/{collection_name}/aliases")
async def collection_aliases(request: web.Request):
    coll = collection(request)
    pairs = registry(request).aliases()
    return {"aliases": [{"alias_name": a, "collection_name": c} for a, c in sorted(pairs.items()) if c == coll.name]}


@routes.get("/aliases")
async def all_aliases(request: web.Request):
    pairs = registry(request).aliases()
    return {"aliases": [{"alias_name": a, "collection_name": c} for a, c in sorted(pairs.items())]}


# -------------------------------------------------------------- payload indexes


@routes.put("/collections/{collection_name}/index")
async def create_index(request: web.Request):
    data = await body(request, "CreateFieldIndex")
    coll = collection(request)
    op = {"type": "create_index", "field": data["field_name"], "schema": data.get("field_schema")}
    return await write(coll, {i: op for i in range(len(coll.shards))}, flag(request, "wait"))


@routes.delete("/collections/{collection_name}/index/{field_name}")
async def delete_index(request: web.Request):
    coll = collection(request)
    op = {"type": "delete_index", "field": request.match_info["field_name"]}
    return await write(coll, {i: op for i in range(len(coll.shards))}, flag(request, "wait"))
