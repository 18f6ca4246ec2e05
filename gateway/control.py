"""The control process's start-up and shutdown: Ray, Raft metadata, shards,
and (with ``service.workers > 1``) the HTTP worker processes."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from aiohttp import web

from cluster import runtime
from cluster.collections import Collections
from cluster.metadata import MetadataStore
from gateway.state import COLLECTIONS, CONTROL, READY, SETTINGS, WORKER_ARGV
from gateway.workers import registry_json, worker_count

log = logging.getLogger(__name__)


async def control_ctx(app: web.Application):
    """Start the metadata store (Ray is already up: see gateway.cli), restore the
    collections in the background; on shutdown close every shard cleanly
    (snapshot + log) and stop Ray."""
    settings = app[SETTINGS]
    storage = Path(settings.storage.storage_path)
    storage.mkdir(parents=True, exist_ok=True)
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
        "search_threads": settings.storage.search_threads,
        "wal_capacity_bytes": settings.storage.wal_capacity_mb * 1024 * 1024,
        "log_level": settings.log_level,
    }
    collections = Collections(storage, metadata, shard_options)
    app[COLLECTIONS] = collections
    control = app.get(CONTROL)

    async def restore():
        try:
            await collections.restore()
            if control is not None:
                collections.on_change = control.bump
                control.spawn(worker_count(settings.service.workers) - 1, app[WORKER_ARGV])
            app[READY].set()
        except Exception:
            log.exception("could not restore the collections")
            raise

    task = asyncio.create_task(restore())
    yield
    task.cancel()
    if control is not None:
        await asyncio.to_thread(control.stop)
    await collections.close()
    await asyncio.to_thread(metadata.close)
    await asyncio.to_thread(runtime.shutdown)




async def registry(request: web.Request):
    """The registry as HTTP workers read it (internal; see gateway.workers)."""
    return await registry_json(request.app[COLLECTIONS])
