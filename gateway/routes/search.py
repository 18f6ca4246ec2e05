"""Scored reads: legacy search / recommend / discover, the universal query, groups
and the distance matrix."""

from __future__ import annotations

from aiohttp import web

from gateway import convert, groups, matrix, queries, universal
from gateway.routes.common import body, collection, read_options, registry, strict_mode

routes = web.RouteTableDef()
PREFIX = "/collections/{collection_name}/points"


@routes.post(PREFIX + "/search")
async def search(request: web.Request):
    data = await body(request, "SearchRequest")
    params = read_options(request)
    coll = collection(request)
    await strict_mode(request, coll, "search", data, params.timeout)
    return (await queries.run(coll, [queries.search_request(coll, data)]))[0]


@routes.post(PREFIX + "/search/batch")
async def search_batch(request: web.Request):
    data = await body(request, "SearchRequestBatch")
    params = read_options(request)
    coll = collection(request)
    await strict_mode(request, coll, "search_batch", data, params.timeout)
    return await queries.run(coll, [queries.search_request(coll, s) for s in data["searches"]])


@routes.post(PREFIX + "/recommend")
async def recommend(request: web.Request):
    data = await body(request, "RecommendRequest")
    params = read_options(request)
    coll = collection(request)
    await strict_mode(request, coll, "recommend", data, params.timeout)
    req = await queries.recommend_request(registry(request), coll, data)
    return (await queries.run(coll, [req]))[0]


@routes.post(PREFIX + "/recommend/batch")
async def recommend_batch(request: web.Request):
    data = await body(request, "RecommendRequestBatch")
    params = read_options(request)
    coll = collection(request)
    await strict_mode(request, coll, "recommend_batch", data, params.timeout)
    reqs = [await queries.recommend_request(registry(request), coll, s) for s in data["searches"]]
    return await queries.run(coll, reqs)


@routes.post(PREFIX + "/discover")
async def discover(request: web.Request):
    data = await body(request, "DiscoverRequest")
    params = read_options(request)
    coll = collection(request)
    await strict_mode(request, coll, "discover", data, params.timeout)
    req = await queries.discover_request(registry(request), coll, data)
    return (await queries.run(coll, [req]))[0]


@routes.post(PREFIX + "/discover/batch")
async def discover_batch(request: web.Request):
    data = await body(request, "DiscoverRequestBatch")
    params = read_options(request)
    coll = collection(request)
    await strict_mode(request, coll, "discover_batch", data, params.timeout)
    reqs = [await queries.discover_request(registry(request), coll, s) for s in data["searches"]]
    return await queries.run(coll, reqs)


@routes.post(PREFIX + "/query")
async def query(request: web.Request):
    data = await body(request, "QueryRequest")
    params = read_options(request)
    coll = collection(request)
    await strict_mode(request, coll, "query", data, params.timeout)
    return {"points": await universal.query_points(registry(request), coll, data)}


@routes.post(PREFIX + "/query/batch")
async def query_batch(request: web.Request):
    data = await body(request, "QueryRequestBatch")
    params = read_options(request)
    coll = collection(request)
    await strict_mode(request, coll, "query_batch", data, params.timeout)
    return [{"points": await universal.query_points(registry(request), coll, s)} for s in data["searches"]]


@routes.post(PREFIX + "/search/groups")
async def search_groups(request: web.Request):
    data = await body(request, "SearchGroupsRequest")
    params = read_options(request)
    coll = collection(request)
    await strict_mode(request, coll, "search_groups", data, params.timeout)
    req = queries.search_request(coll, data)
    return await groups.grouped(registry(request), data, groups.searching(coll, req), req.with_payload)


@routes.post(PREFIX + "/recommend/groups")
async def recommend_groups(request: web.Request):
    data = await body(request, "RecommendGroupsRequest")
    params = read_options(request)
    coll = collection(request)
    await strict_mode(request, coll, "recommend_groups", data, params.timeout)
    req = await queries.recommend_request(registry(request), coll, data)
    return await groups.grouped(registry(request), data, groups.searching(coll, req), req.with_payload)


@routes.post(PREFIX + "/query/groups")
async def query_groups(request: web.Request):
    data = await body(request, "QueryGroupsRequest")
    params = read_options(request)
    coll = collection(request)
    await strict_mode(request, coll, "query_groups", data, params.timeout)
    return await groups.grouped(registry(request), data, universal.grouping(registry(request), coll, data),
                                convert.payload_selector(data.get("with_payload"), default=False))


@routes.post(PREFIX + "/search/matrix/pairs")
async def matrix_pairs(request: web.Request):
    data = await body(request, "SearchMatrixRequest")
    params = read_options(request)
    coll = collection(request)
    await strict_mode(request, coll, "matrix", data, params.timeout)
    ids, neighbours = await matrix.compute(coll, data)
    return matrix.as_pairs(ids, neighbours)


@routes.post(PREFIX + "/search/matrix/offsets")
async def matrix_offsets(request: web.Request):
    data = await body(request, "SearchMatrixRequest")
    params = read_options(request)
    coll = collection(request)
    await strict_mode(request, coll, "matrix", data, params.timeout)
    ids, neighbours = await matrix.compute(coll, data)
    return matrix.as_offsets(ids, neighbours)
