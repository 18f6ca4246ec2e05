"""Points: upsert, retrieve, delete, vectors, payloads, batch, scroll, count, facet."""

from __future__ import annotations

import asyncio

from aiohttp import web

from gateway import convert, queries
from gateway.merge import merge_by_id, merge_facets, merge_ordered
from gateway.models import path_point_id
from gateway.routes.common import body, check_ids_exist, collection, read_options, strict_mode, wait_flag, write
from shard.types import BadInput, PointNotFound

routes = web.RouteTableDef()


@routes.put("/collections/{collection_name}/points")
async def upsert(request: web.Request):
    data = await body(request, "PointInsertOperations")
    wait = wait_flag(request)
    coll = collection(request)
    await strict_mode(request, coll, "upsert", data)
    ops = convert.upsert_ops(coll.shard_config, len(coll.shards), data)
    return await write(coll, ops, wait)


@routes.post("/collections/{collection_name}/points")
async def retrieve(request: web.Request):
    data = await body(request, "PointRequest")
    params = read_options(request)
    coll = collection(request)
    await strict_mode(request, coll, "retrieve", data, params.timeout)
    return await queries.retrieve(coll, data["ids"], data.get("with_payload"), data.get("with_vector", data.get("with_vectors")))


@routes.get("/collections/{collection_name}/points/{id}")
async def get_point(request: web.Request):
    point_id = path_point_id(request.match_info["id"])
    params = read_options(request)
    coll = collection(request)
    await strict_mode(request, coll, "retrieve", {"ids": [point_id]}, params.timeout)
    records = await queries.retrieve(coll, [point_id], True, True)
    if not records:
        raise PointNotFound(point_id)
    return records[0]


async def _by_selector(coll, op: dict, wait: bool, *, must_exist: bool = False):
    if must_exist and "ids" in op:
        await check_ids_exist(coll, op["ids"])
    return await write(coll, convert.split_selector(op, len(coll.shards)), wait)


@routes.post("/collections/{collection_name}/points/delete")
async def delete_points(request: web.Request):
    data = await body(request, "PointsSelector")
    wait = wait_flag(request)
    coll = collection(request)
    await strict_mode(request, coll, "delete_points", data)
    return await _by_selector(coll, {"type": "delete_points", **convert.selector(data)}, wait)


@routes.put("/collections/{collection_name}/points/vectors")
async def update_vectors(request: web.Request):
    data = await body(request, "UpdateVectors")
    wait = wait_flag(request)
    coll = collection(request)
    await strict_mode(request, coll, "update_vectors", data)
    ops = convert.update_vectors_ops(coll.shard_config, len(coll.shards), data)
    await check_ids_exist(coll, [p["id"] for p in data["points"]])
    return await write(coll, ops, wait)


@routes.post("/collections/{collection_name}/points/vectors/delete")
async def delete_vectors(request: web.Request):
    data = await body(request, "DeleteVectors")
    wait = wait_flag(request)
    coll = collection(request)
    await strict_mode(request, coll, "delete_vectors", data)
    for name in data["vector"]:
        if name not in coll.shard_config.sparse and name not in coll.shard_config.multi:
            coll.shard_config.vector(name)
    op = {"type": "delete_vectors", "names": list(data["vector"]), **convert.selector(data)}
    return await _by_selector(coll, op, wait, must_exist=True)


def _payload_op(kind: str, data: dict) -> dict:
    op = {"type": kind, **convert.selector(data)}
    if kind in ("set_payload", "overwrite_payload"):
        op["payload"] = data["payload"]
        if kind == "set_payload" and data.get("key") is not None:
            op["key"] = data["key"]
    if kind == "delete_payload":
        op["keys"] = list(data["keys"])
    return op


def _payload_route(model: str, kind: str):
    async def handler(request: web.Request):
        data = await body(request, model)
        wait = wait_flag(request)
        coll = collection(request)
        await strict_mode(request, coll, kind, data)
        return await _by_selector(coll, _payload_op(kind, data), wait, must_exist=True)

    handler.__name__ = kind
    return handler


# set (POST) merges, overwrite (PUT) replaces, as Qdrant's two verbs on one path.
for _method, _path, _model, _kind in (
    ("POST", "/payload", "SetPayload", "set_payload"),
    ("PUT", "/payload", "SetPayload", "overwrite_payload"),
    ("POST", "/payload/delete", "DeletePayload", "delete_payload"),
    ("POST", "/payload/clear", "PointsSelector", "clear_payload"),
):
    routes.route(_method, "/collections/{collection_name}/points" + _path)(_payload_route(_model, _kind))


@routes.post("/collections/{collection_name}/points/batch")
async def batch(request: web.Request):
    """Several update operations in order. Every one is converted and checked first
    (the points it names must exist, or be upserted by an earlier one of the batch,
    and not deleted by id by an earlier one),
    so that a batch refused as bad input changes nothing; then each is applied once
    the previous one is."""
    data = await body(request, "UpdateOperations")
    wait = wait_flag(request)
    coll = collection(request)
    await strict_mode(request, coll, "batch", data)
    # What the batch itself does to the ids it names: True = upserted by an earlier
    # operation, False = deleted by one (a delete by filter names no ids: its points
    # are looked for as they are now, and a later operation on one of them may still fail).
    planned, needed, present = [], [], {}
    for operation in data["operations"]:
        ops, must_exist = _batch_plan(coll, operation)
        for point_id in must_exist:
            if present.get(point_id) is False:
                raise PointNotFound(point_id)
            if point_id not in present:
                needed.append(point_id)
        kind = next(iter(operation))
        if kind in ("upsert", "delete"):
            present.update(dict.fromkeys((i for op in ops.values() for i in op.get("ids") or ()), kind == "upsert"))
        planned.append(ops)
    if needed:
        await check_ids_exist(coll, list(dict.fromkeys(needed)))
    return [await write(coll, ops, wait) for ops in planned]


def _batch_plan(coll, operation: dict) -> tuple[dict[int, dict], list]:
    """One batch operation as per-shard ops, and the ids it needs to exist."""
    (kind, data), = operation.items()
    if kind == "upsert":
        return convert.upsert_ops(coll.shard_config, len(coll.shards), data), []
    if kind == "update_vectors":
        ops = convert.update_vectors_ops(coll.shard_config, len(coll.shards), data)
        return ops, [i for op in ops.values() for i in op["ids"]]
    if kind == "delete":
        op, must_exist = {"type": "delete_points", **convert.selector(data)}, False
    elif kind in ("set_payload", "overwrite_payload", "delete_payload", "clear_payload"):
        op, must_exist = _payload_op(kind, data), True
    elif kind == "delete_vectors":
        op, must_exist = {"type": "delete_vectors", "names": list(data["vector"]), **convert.selector(data)}, True
    else:
        raise BadInput(f"unknown batch operation {kind}")
    return convert.split_selector(op, len(coll.shards)), list(op["ids"]) if must_exist and "ids" in op else []


# ---------------------------------------------------------------------- reads


@routes.post("/collections/{collection_name}/points/scroll")
async def scroll(request: web.Request):
    data = await body(request, "ScrollRequest")
    params = read_options(request)
    coll = collection(request)
    await strict_mode(request, coll, "scroll", data, params.timeout)
    limit = data.get("limit") or 10
    order_by = convert.order_by(data.get("order_by"))
    kwargs = dict(
        filter=data.get("filter"),
        offset=None if order_by else data.get("offset"),
        limit=limit + (0 if order_by else 1),
        order_by=order_by,
        with_payload=convert.payload_selector(data.get("with_payload"), default=True),
        with_vector=convert.vector_selector(data.get("with_vector", data.get("with_vectors"))),
    )
    parts = await asyncio.gather(*(s.scroll(**kwargs) for s in coll.shards))
    if order_by is not None:
        return {"points": merge_ordered(parts, limit, order_by.direction == "desc"), "next_page_offset": None}
    page, next_offset = merge_by_id(parts, limit)
    return {"points": page, "next_page_offset": next_offset}


@routes.post("/collections/{collection_name}/points/count")
async def count(request: web.Request):
    data = await body(request, "CountRequest")
    params = read_options(request)
    coll = collection(request)
    await strict_mode(request, coll, "count", data, params.timeout)
    counts = await asyncio.gather(*(s.count(data.get("filter")) for s in coll.shards))
    return {"count": sum(counts)}


@routes.post("/collections/{collection_name}/facet")
async def facet(request: web.Request):
    data = await body(request, "FacetRequest")
    params = read_options(request)
    coll = collection(request)
    await strict_mode(request, coll, "facet", data, params.timeout)
    limit = data.get("limit") or 10
    # Each shard counts every value (no limit): a value's total is only right when
    # no shard has cut it off its own list.
    parts = await asyncio.gather(*(s.facet(data["key"], data.get("filter"), None) for s in coll.shards))
    return {"hits": [{"value": v, "count": c} for v, c in merge_facets(parts, limit)]}
