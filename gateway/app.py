"""The aiohttp application: middleware, state, start-up and shutdown.

Handlers return plain results; ``envelope`` wraps them in Qdrant's
``{"result", "status": "ok", "time"}`` and turns every exception into Qdrant's
error JSON (``gateway.errors``). The server listens at once and restores
collections in the background: ``/readyz`` says 503 until every shard is
loaded, and API requests wait for it; while Ray is down (``cluster.health``)
they answer 503 at once (on a joined cluster only those in NEEDS_RAY). In an
HTTP worker, requests only the control process can carry out are forwarded to
it (``gateway.workers``).
"""

from __future__ import annotations

import asyncio
import logging
import time

import orjson
from aiohttp import web

from cluster.shard_client import ShardUnavailable
from gateway import auth, errors, rate_limits, scrape
from gateway.metrics import Metrics
from gateway.routes import cluster as cluster_routes
from gateway.routes import collections as collection_routes
from gateway.routes import dashboard as dashboard_routes
from gateway.routes import ingest as ingest_routes
from gateway.routes import points as point_routes
from gateway.routes import search as search_routes
from gateway.routes import service as service_routes
from gateway.routes import snapshots as snapshot_routes
from gateway.routes.common import check_collection_path
from gateway.serve import over_unix_socket
from gateway.settings import Settings
from gateway.state import COLLECTIONS, CONTROL_TASKS, HEALTH, METRICS, RATE_LIMITS, READY, SETTINGS
from gateway.workers import Forward, RemoteCollections, forward

log = logging.getLogger(__name__)

NOT_GATED = {"/", "/healthz", "/livez", "/readyz", "/metrics", *dashboard_routes.PATHS}
# Requests that start or stop shard actors: on a joined cluster whose Ray head
# is down, these alone answer 503 (the others reach the shards over their sockets).
# A route that comes to start or stop actors (replica moves) belongs here too.
NEEDS_RAY = {("PUT", "/collections/{collection_name}"), ("DELETE", "/collections/{collection_name}"),
             ("PUT", "/collections/{collection_name}/snapshots/recover"),
             ("POST", "/collections/{collection_name}/snapshots/upload")}


def json_response(body: object, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), status=status, content_type="application/json")


def _error(body: dict | None, status: int) -> web.Response:
    """Qdrant answers some errors (unknown route) with an empty body."""
    return web.Response(status=status) if body is None else json_response(body, status)


@web.middleware
async def envelope(request: web.Request, handler):
    started = time.perf_counter()
    route = request.match_info.route.resource
    endpoint = route.canonical if route is not None else "unmatched"
    try:
        check_collection_path(request)
        if request.path not in NOT_GATED:
            health = request.app.get(HEALTH)
            problem = None if health is None else health.request_problem((request.method, endpoint) in NEEDS_RAY)
            if problem is not None:
                raise ShardUnavailable(problem)  # at once, rather than hang on Ray (503)
            if not request.app[READY].is_set():
                await request.app[READY].wait()
        registry = request.app.get(COLLECTIONS)
        if isinstance(registry, RemoteCollections):
            await registry.refresh()
        elif registry is not None and "collection_name" in request.match_info \
                and registry.behind(request.match_info["collection_name"]):
            await registry.follow()  # created or deleted through another gateway a moment ago
        result = await handler(request)
        if isinstance(result, web.StreamResponse):
            response = result
        else:
            response = json_response(errors.ok_envelope(result, started))
    except Forward:
        response = await forward(request, request.app[COLLECTIONS])
    except web.HTTPException as exc:
        status, body = errors.http_error(exc, started, request.content_length)
        response = _error(body, status)
    except Exception as exc:  # every failure answers in Qdrant's error shape
        status, body = errors.error_response(exc, started)
        if status == 500:  # a fault of Shoal's own: once, with its traceback
            log.exception("request failed: %s %s", request.method, request.path)
        response = _error(body, status)
        if isinstance(exc, errors.QdrantError):
            response.headers.update(exc.headers)  # a rate limit's Retry-After
        if isinstance(exc, errors.BodyTimeout):
            response.force_close()  # the rest of that body would be read as a request
    if not over_unix_socket(request):  # a worker's internal call is counted where it came in
        request.app[METRICS].observe(request.method, endpoint, response.status, time.perf_counter() - started)
    return response


def create_app(settings: Settings, lifecycle) -> web.Application:
    """The REST app; ``lifecycle`` is the cleanup context that sets up the registry:
    ``gateway.control.control_ctx`` (Ray, Raft, shards) or a worker's."""
    # With API keys set, every request is checked first (gateway.auth); without, nothing is.
    keys = auth.Keys.from_settings(settings.service)
    checks = [] if keys is None else [auth.middleware(keys)]
    app = web.Application(
        middlewares=[*checks, envelope],
        client_max_size=settings.service.max_request_size_mb * 1024 * 1024,
    )
    app[SETTINGS] = settings
    app[METRICS] = Metrics()
    app[READY] = asyncio.Event()
    app[CONTROL_TASKS] = set()
    app[RATE_LIMITS] = rate_limits.RateLimits()
    app.cleanup_ctx.append(lifecycle)
    app.cleanup_ctx.append(scrape.history_ctx)
    # aiohttp tries the routes under one prefix ("/collections") in the order they
    # were added, one regular expression each: the busiest go first.
    for module in (search_routes, point_routes, collection_routes, snapshot_routes, cluster_routes, service_routes,
                   dashboard_routes, ingest_routes):
        app.router.add_routes(module.routes)
    return app
