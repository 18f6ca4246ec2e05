"""Service endpoints: version, health probes, metrics."""

from __future__ import annotations

import asyncio

from aiohttp import web

from gateway.state import COLLECTIONS, HEALTH, METRICS, READY
from gateway.metrics import CONTENT_TYPE
from gateway.params import bool_param

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


def _ray_problem(request: web.Request) -> str | None:
    """Why Ray's failure keeps this server from serving, as the control process's
    health monitor sees it (``cluster.health``: on a joined cluster it serves on);
    None in an HTTP worker, which has no monitor."""
    health = request.app.get(HEALTH)
    return None if health is None else health.request_problem()


@routes.get("/healthz")
async def healthz(request: web.Request):
    problem = _ray_problem(request)
    if problem is not None:  # the process cannot serve until Ray is back, and exits if it is not
        return web.Response(status=503, text=f"healthz check failed: {problem}")
    return web.Response(text="healthz check passed")


@routes.get("/livez")
async def livez(request: web.Request):
    problem = _ray_problem(request)
    if problem is not None:
        return web.Response(status=503, text=f"livez check failed: {problem}")
    return web.Response(text="livez check passed")


@routes.get("/readyz")
async def readyz(request: web.Request):
    """200 once every shard is loaded and while Ray and every shard answer;
    503 otherwise, saying why (Ray, or which shard of which collection). On a
    joined cluster whose Ray head is down, 200 naming what does not work."""
    health = request.app.get(HEALTH)
    problems = [] if health is None else health.not_ready()
    if not request.app[READY].is_set():
        problems.insert(0, "some shards are not ready")
    if problems:
        return web.Response(status=503, text="; ".join(problems))
    degraded = [] if health is None else health.degraded()
    return web.Response(text="; ".join(["all shards are ready", *(f"degraded: {d}" for d in degraded)]))


@routes.get("/metrics")
async def metrics(request: web.Request):
    bool_param(request, "anonymize")  # Qdrant's one parameter here: nothing to hide in these figures
    metrics = request.app[METRICS]
    if request.app[READY].is_set():
        running = request.app[COLLECTIONS].running()
        counts = await asyncio.gather(*(_points(c) for c in running))
        metrics.set_points({c.name: n for c, n in zip(running, counts)})
    return web.Response(body=metrics.render(), headers={"Content-Type": CONTENT_TYPE})


async def _points(collection) -> int:
    infos = await asyncio.gather(*(s.info() for s in collection.shards))
    return sum(i.points_count for i in infos)
