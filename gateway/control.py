"""The control process's start-up and shutdown: Ray, Raft metadata, shards,
and (with ``service.workers > 1``) the HTTP worker processes."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import time
from pathlib import Path

from aiohttp import web

from cluster import keys, runtime
from cluster.actor import NODE_ADDRESS
from cluster.collections import Collections, Limits
from cluster.follower import MetadataFollower
from cluster.health import HealthMonitor
from cluster.metadata import MetadataStore
from cluster.repair import RepairLoop
from cluster.snapshots import Snapshots
from gateway.serve import over_unix_socket
from gateway.state import COLLECTIONS, CONTROL, HEALTH, METADATA, READY, SETTINGS, SNAPSHOTS, WORKER_ARGV
from gateway.workers import registry_json, worker_count

log = logging.getLogger(__name__)

EXIT_DEADLINE = 20.0  # seconds the shutdown after Ray's death may take before the process ends hard


def _exit_soon(reason: str) -> None:
    """Ray is gone for good: shut down as on SIGTERM (the cleanup below skips the
    calls to Ray, which would wait on its dead parts for a minute), and end the
    process hard should that take longer than EXIT_DEADLINE. gateway.cli makes
    the exit status non-zero."""

    def hard_exit() -> None:
        time.sleep(EXIT_DEADLINE)
        os._exit(1)

    threading.Thread(target=hard_exit, name="exit-deadline", daemon=True).start()
    os.kill(os.getpid(), signal.SIGTERM)


async def control_ctx(app: web.Application):
    """Start the metadata store (Ray is already up: see gateway.cli), restore the
    collections in the background; on shutdown close every shard cleanly
    (snapshot + log) and stop Ray."""
    settings = app[SETTINGS]
    storage = Path(settings.storage.storage_path)
    storage.mkdir(parents=True, exist_ok=True)
    raft_port = settings.cluster.raft_port or settings.service.http_port + 2
    secret = settings.cluster.secret.get_secret_value() if settings.cluster.secret else None
    metadata = await asyncio.to_thread(
        MetadataStore,
        storage / "raft",
        self_address=f"{settings.cluster.raft_host}:{raft_port}",
        partners=settings.cluster.raft_peers,
        password=keys.raft_password(secret, settings.cluster.raft_peers),
    )
    await asyncio.to_thread(metadata.wait_ready, 30)
    shard_options = {
        "indexing_threads": settings.storage.indexing_threads,
        "indexing_niceness": settings.storage.indexing_niceness,
        "search_threads": settings.storage.search_threads,
        "wal_capacity_bytes": settings.storage.wal_capacity_mb * 1024 * 1024,
        "log_level": settings.log_level,
    }
    if secret:
        # Shards serve gateways on other machines over TCP, authenticated with a
        # key of their own (cluster.wire); without a secret they listen on no port.
        shard_options.update(wire_secret=keys.derive(secret, keys.SHARD_WIRE_LABEL), tcp_host=NODE_ADDRESS,
                             wire_encrypt=settings.service.enable_tls)  # and encrypted with TLS on
    runtime.place_shards_on(settings.cluster.shard_node_resource)
    limits = Limits(max_shards_total=settings.limits.max_shards_total,
                    start_timeout=settings.limits.shard_start_timeout_s)
    collections = Collections(storage, metadata, shard_options, limits)
    app[COLLECTIONS] = collections
    app[METADATA] = metadata
    app[SNAPSHOTS] = Snapshots(storage, settings.storage.snapshots_path or storage / "snapshots",
                               shard_timeout=settings.limits.snapshot_timeout_s,
                               max_upload_bytes=settings.limits.max_snapshot_upload_mb * 1024 * 1024)
    await asyncio.to_thread(app[SNAPSHOTS].clean)
    control = app.get(CONTROL)
    # Joined to a cluster, Ray down mostly means its head is: the shards, elsewhere,
    # still answer (cluster.health), and with GCS fault tolerance the head comes back.
    joined = bool(settings.cluster.ray_address)
    grace = "head_down_grace_s" if joined else "ray_down_grace_s"
    health = HealthMonitor(collections.running, _exit_soon,
                           ray_grace=getattr(settings.cluster, grace), grace_setting=f"cluster.{grace}",
                           serve_while_ray_down=joined,
                           restart_after=settings.cluster.shard_restart_after_s,
                           ping_timeout=settings.cluster.shard_ping_timeout_s)
    app[HEALTH] = health
    health.start()

    # Placement and repair of replicas (cluster.repair), on a Ray cluster joined:
    # the embedded instance is one node, where nothing is replicated.
    repair = RepairLoop(metadata, collections, node_grace=settings.cluster.node_grace_s,
                        ray_down=lambda: health.ray_problem is not None) if settings.cluster.ray_address else None

    # Other gateways may change the metadata only on a joined cluster (raft_peers needs ray_address).
    follower = MetadataFollower(metadata, collections) if settings.cluster.ray_address else None

    async def restore():
        try:
            await collections.restore()
            if follower is not None:
                follower.start()
            if repair is not None:
                repair.start()
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
    if follower is not None:
        await follower.stop()
    if repair is not None:
        await repair.stop()
    await health.stop()
    ray_gone = health.ray_problem is not None
    if control is not None:
        await asyncio.to_thread(control.stop)
    if ray_gone:
        log.warning("shards not closed (Ray is unavailable): each recovers from its log at the next start")
    else:
        await collections.close()
    await asyncio.to_thread(metadata.close)
    await asyncio.to_thread(runtime.shutdown, ray_gone)




async def registry(request: web.Request):
    """The registry as HTTP workers read it (internal; see gateway.workers). Only
    over the control's Unix socket, in a folder only this user can enter: it
    names the shards' sockets, which are not for clients."""
    if not over_unix_socket(request):
        raise web.HTTPNotFound()
    return await registry_json(request.app[COLLECTIONS])
