"""Scored reads: legacy search / recommend / discover, the universal query, groups
and the distance matrix."""

from __future__ import annotations

from aiohttp import web

from gateway import convert, groups, matrix, queries, universal
from gateway.routes.common import body, collection, read_options, registry

routes = web.RouteTableDef()
PREFIX = "/collections/{collection_name}/points"


@routes.post(PREFIX + "/search")
async def search(request: web.Request):
    data = await body(request, "SearchRequest")
    read_options(request)
    coll = collection(request)
    return (await queries.run(coll, [queries.search_request(coll, data)]))[0]


@routes.post(PREFIX + "/search/batch")
async def search_batch(request: web.Request):
    data = await body(request, "SearchRequestBatch")
    read_options(request)
    coll = collection(request)
    return await queries.run(coll, [queries.search_request(coll, s) for s in data["searches"]])


@routes.post(PREFIX + "/recommend")
async def recommend(request: web.Request):
    data = await body(request, "RecommendRequest")
    read_options(request)
    coll = collection(request)
    req = await queries.recommend_request(registry(request), coll, data)
    return (await queries.run(coll, [req]))[0]


@routes.post(PREFIX + "/recommend/batch")
async def recommend_batch(request: web.Request):
    data = await body(request, "RecommendRequestBatch")
    read_options(request)
    coll = collection(request)
    reqs = [await queries.recommend_request(registry(request), coll, s) for s in data["searches"]]
    return await queries.run(coll, reqs)


@routes.post(PREFIX + "/discover")
async def discover(request: web.Request):
    data = await body(request, "DiscoverRequest")
    read_options(request)
    coll = collection(request)
    req = await queries.discover_request(registry(request), coll, data)
    return (await queries.run(coll, [req]))[0]


@routes.post(PREFIX + "/discover/batch")
async def discover_batch(request: web.Request):
    data = await body(request, "DiscoverRequestBatch")
    read_options(request)
    coll = collection(request)
    reqs = [await queries.discover_request(registry(request), coll, s) for s in data["searches"]]
    return await queries.run(coll, reqs)


@routes.post(PREFIX + "/query")
async def query(request: web.Request):
    data = await body(request, "QueryRequest")
    read_options(request)
    coll = collection(request)
    return {"points": await universal.query_points(registry(request), coll, data)}


@routes.post(PREFIX + "/query/batch")
async def query_batch(request: web.Request):
    data = await body(request, "QueryRequestBatch")
    read_options(request)
    coll = collection(request)
    return [{"points": await universal.query_points(registry(request), coll, s)} for s in data["searches"]]


@routes.post(PREFIX + "/search/groups")
async def search_groups(request: web.Request):
    data = await body(request, "SearchGroupsRequest")
    read_options(request)
    coll = collection(request)
    req = queries.search_request(coll, data)
    return await groups.grouped(registry(request), data, groups.searching(coll, req), req.with_payload)


@routes.post(PREFIX + "/recommend/groups")
async def recommend_groups(request: web.Request):
    data = await body(request, "RecommendGroupsRequest")
    read_options(request)
    coll = collection(request)
    req = await queries.recommend_request(registry(request), coll, data)
    return await groups.grouped(registry(request), data, groups.searching(coll, req), req.with_payload)


@routes.post(PREFIX + "/query/groups")
async def query_groups(request: web.Request):
    data = await body(request, "QueryGroupsRequest")
    read_options(request)
    coll = collection(request)
    return await groups.grouped(registry(request), data, universal.grouping(registry(request), coll, data),
                                convert.payload_selector(data.get("with_payload"), default=False))


@routes.post(PREFIX + "/search/matrix/pairs")
async def matrix_pairs(request: web.Request):
    data = await body(request, "SearchMatrixRequest")
    read_options(request)
    coll = collection(request)
    ids, neighbours = await matrix.compute(coll, data)
    return matrix.as_pairs(ids, neighbours)


@routes.post(PREFIX + "/search/matrix/offsets")
async def matrix_offsets(request: web.Request):
    data = await body(request, "SearchMatrixRequest")
    read_options(request)
    coll = collection(request)
    ids, neighbours = await matrix.compute(coll, data)
    return matrix.as_offsets(ids, neighbours)
