"""Service endpoints: version, health probes, metrics."""

from __future__ import annotations

from aiohttp import web

from gateway.commit import shoal_commit
from gateway.metrics import CONTENT_TYPE, cluster_families, merge, render
from gateway.params import bool_param
from gateway.scrape import cluster_figures, request_parts
from gateway.state import CONTROL_DIR, HEALTH, READY
from gateway.workers import Forward

routes = web.RouteTableDef()

# The Qdrant release whose REST API Shoal serves: clients check it for compatibility.
QDRANT_VERSION = "1.15.5"
TITLE = "qdrant - vector search engine"
# Qdrant's plain-text probe answers (src/actix/api/service_api.rs); a 503 is Shoal's own,
# saying why (Qdrant's probes never fail but /readyz's "some shards are not ready").
HEALTHY = "healthz check passed"
READY_TEXT = "all shards are ready"


@routes.get("/")
async def root(request: web.Request):
    """Qdrant's ``VersionInfo``: its title, the Qdrant release served, and the commit
    Shoal was built from (``gateway.commit``: 40 hex digits, zeros when unknown)."""
    return web.json_response({"title": TITLE, "version": QDRANT_VERSION, "commit": shoal_commit()})


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
    return web.Response(text=HEALTHY)


@routes.get("/livez")
async def livez(request: web.Request):
    """Qdrant answers /livez as /healthz, same text (src/actix/api/service_api.rs)."""
    problem = _ray_problem(request)
    if problem is not None:
        return web.Response(status=503, text=f"livez check failed: {problem}")
    return web.Response(text=HEALTHY)


@routes.get("/readyz")
async def readyz(request: web.Request):
    """200 once every shard is loaded and while Ray and every shard answer;
    503 otherwise, saying why (Ray, or which shard of which collection). On a
    joined cluster whose Ray head is down, 200 naming what does not work."""
    health = request.app.get(HEALTH)
    problems = [] if health is None else health.not_ready()
    if not request.app[READY].is_set():
        problems.insert(0, "some shards are not ready")  # Qdrant's 503 text
    if problems:
        return web.Response(status=503, text="; ".join(problems))
    degraded = [] if health is None else health.degraded()
    return web.Response(text="; ".join([READY_TEXT, *(f"degraded: {d}" for d in degraded)]))


@routes.get("/metrics")
async def metrics(request: web.Request):
    """Every HTTP process's request figures summed, and the cluster's state
    (``gateway.scrape``): answered by the control process, a worker forwards it."""
    bool_param(request, "anonymize")  # Qdrant's one parameter here: nothing to hide in these figures
    if CONTROL_DIR in request.app:
        raise Forward()
    parts, processes = await request_parts(request.app)
    figures = await cluster_figures(request.app, shards=request.app[READY].is_set())
    figures.http_processes = processes
    body = render(merge(parts) + cluster_families(figures))
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})
