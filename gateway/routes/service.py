"""Service endpoints: version, health probes, metrics."""

from __future__ import annotations

import asyncio

from aiohttp import web

from gateway.state import COLLECTIONS, METRICS, READY
from gateway.metrics import CONTENT_TYPE

routes = web.RouteTableDef()

# The Qdrant release whose REST API Shoal serves: clients check it for compatibility.
QDRANT_VERSION = "1.15.5"
TITLE = "qdrant - vector search engine"


@routes.get("/")
async def root(request: web.Request):
    from importlib.metadata import PackageNotFoundError, version

    try:
        shoal = version("shoal")
    except PackageNotFoundError:
        shoal = "dev"
    return web.json_response({"title": TITLE, "version": QDRANT_VERSION, "commit": f"shoal-{shoal}"})


@routes.get("/healthz")
async def healthz(request: web.Request):
    return web.Response(text="healthz check passed")


@routes.get("/livez")
async def livez(request: web.Request):
    return web.Response(text="livez check passed")


@routes.get("/readyz")
async def readyz(request: web.Request):
    if request.app[READY].is_set():
        return web.Response(text="all shards are ready")
    return web.Response(status=503, text="some shards are not ready")


@routes.get("/metrics")
async def metrics(request: web.Request):
    metrics = request.app[METRICS]
    if request.app[READY].is_set():
        registry = request.app[COLLECTIONS]
        names = registry.names()
        counts = await asyncio.gather(*(_points(registry.resolve(n)) for n in names))
        metrics.set_points(dict(zip(names, counts)))
    return web.Response(body=metrics.render(), headers={"Content-Type": CONTENT_TYPE})


async def _points(collection) -> int:
    infos = await asyncio.gather(*(s.info() for s in collection.shards))
    return sum(i.points_count for i in infos)
