"""The aiohttp application: middleware, state, start-up and shutdown.

Handlers return plain results; ``envelope`` wraps them in Qdrant's
``{"result", "status": "ok", "time"}`` and turns every exception into Qdrant's
error JSON (``gateway.errors``). The server listens at once and restores
collections in the background: ``/readyz`` says 503 until every shard is
loaded, and API requests wait for it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import orjson
from aiohttp import web

from cluster import runtime
from cluster.collections import Collections
from cluster.metadata import MetadataStore
from gateway import errors
from gateway.metrics import Metrics
from gateway.routes import collections as collection_routes
from gateway.routes import points as point_routes
from gateway.routes import search as search_routes
from gateway.routes import service as service_routes
from gateway.settings import Settings
from gateway.state import COLLECTIONS, METRICS, READY, SETTINGS

log = logging.getLogger(__name__)

NOT_GATED = {"/", "/healthz", "/livez", "/readyz", "/metrics"}


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
        if request.path not in NOT_GATED and not request.app[READY].is_set():
            await request.app[READY].wait()
        result = await handler(request)
        if isinstance(result, web.StreamResponse):
            response = result
        else:
            response = json_response(errors.ok_envelope(result, started))
    except web.HTTPException as exc:
        status, body = errors.http_error(exc, started, request.content_length)
        response = _error(body, status)
    except Exception as exc:  # every failure answers in Qdrant's error shape
        status, body = errors.error_response(exc, started)
        if status >= 500:
            log.exception("request failed: %s %s", request.method, request.path)
        response = _error(body, status)
    request.app[METRICS].observe(request.method, endpoint, response.status, time.perf_counter() - started)
    return response


async def cluster_ctx(app: web.Application):
    """Start Ray and the metadata store, restore collections in the background;
    on shutdown close every shard cleanly (snapshot + log) and stop Ray."""
    settings = app[SETTINGS]
    storage = Path(settings.storage.storage_path)
    storage.mkdir(parents=True, exist_ok=True)
    await asyncio.to_thread(runtime.start, settings.cluster.ray_address, settings.cluster.num_cpus)
    raft_port = settings.cluster.raft_port or settings.service.http_port + 2
    metadata = await asyncio.to_thread(
        MetadataStore,
        storage / "raft",
        self_address=f"{settings.cluster.raft_host}:{raft_port}",
        partners=settings.cluster.raft_peers,
    )
    await asyncio.to_thread(metadata.wait_ready, 30)
    shard_options = {
        "indexing_threads": settings.storage.indexing_threads,
        "wal_capacity_bytes": settings.storage.wal_capacity_mb * 1024 * 1024,
        "log_level": settings.log_level,
    }
    collections = Collections(storage, metadata, shard_options)
    app[COLLECTIONS] = collections

    async def restore():
        try:
            await collections.restore()
            app[READY].set()
        except Exception:
            log.exception("could not restore the collections")
            raise

    task = asyncio.create_task(restore())
    yield
    task.cancel()
    await collections.close()
    await asyncio.to_thread(metadata.close)
    await asyncio.to_thread(runtime.shutdown)


def create_app(settings: Settings) -> web.Application:
    app = web.Application(
        middlewares=[envelope],
        client_max_size=settings.service.max_request_size_mb * 1024 * 1024,
    )
    app[SETTINGS] = settings
    app[METRICS] = Metrics()
    app[READY] = asyncio.Event()
    app.cleanup_ctx.append(cluster_ctx)
    for module in (service_routes, collection_routes, point_routes, search_routes):
        app.router.add_routes(module.routes)
    return app
