"""Every ``ray.*`` call Shoal makes lives here, so the rest can be read (and
tested) without Ray.

Ray is started on loopback unless an address is given: by default Ray picks
the machine's external address, and a single-machine server has no business
listening there.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

import ray
from ray._private import ray_constants
from ray.exceptions import ActorUnavailableError, RayActorError, RayTaskError

from cluster.actor import ShardActor

log = logging.getLogger(__name__)

RemoteShardActor = ray.remote(ShardActor)
RESTART_WAIT = 60.0  # seconds an idempotent call waits for a restarting actor


def start(address: str | None, num_cpus: int | None = None) -> None:
    """Join the Ray cluster at ``address``, or start a local one on 127.0.0.1."""
    if ray.is_initialized():
        return
    if address:
        ray.init(address=address, logging_level="WARNING", namespace="shoal")
        return
    # On Linux Ray binds to the machine's external address unless told this is a
    # single-machine cluster; this flag (meant for Windows/macOS) does exactly that.
    # Ray's child processes read it from the environment when they start; this
    # process read it when it imported Ray, so its copy is set as well.
    os.environ[ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    # Ray starts its workers at niceness 15, meant for batch tasks beside a
    # driver; a shard actor serves requests and must not yield its core to
    # the gateway it answers (100k x 384, 32 clients: ~2,100 -> ~2,700 req/s).
    os.environ.setdefault(ray_constants.RAY_WORKER_NICENESS, "0")
    ray.init(
        _node_ip_address="127.0.0.1",
        include_dashboard=False,
        num_cpus=num_cpus,
        logging_level="WARNING",
        namespace="shoal",
    )
    node_ip = ray.util.get_node_ip_address()
    if node_ip != "127.0.0.1":
        log.warning("the local Ray instance runs on %s, not on loopback", node_ip)


def shutdown() -> None:
    if ray.is_initialized():
        ray.shutdown()


def spawn_shard(name: str, path: str, config: dict[str, Any], options: dict[str, Any]):
    """Start (or, after a restart, recover) one shard actor.

    num_cpus=0: a shard is mostly idle memory; reserving a CPU each would cap a
    2-core machine at two shards. max_restarts: a crashed actor comes back and
    recovers from its snapshot and log.
    """
    return RemoteShardActor.options(
        name=name,
        num_cpus=0,
        max_concurrency=16,
        max_restarts=3,
        lifetime=None,
    ).remote(path, config, options)


async def _while_restarting(submit, idempotent: bool):
    """Await ``submit()``; while Ray restarts the actor (ActorUnavailableError),
    retry idempotent calls for up to RESTART_WAIT seconds. A write is never
    retried: it "may or may not have been executed"."""
    deadline = time.monotonic() + RESTART_WAIT
    delay = 0.1
    while True:
        try:
            return await submit()
        except ActorUnavailableError:
            if not idempotent or time.monotonic() + delay > deadline:
                raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


async def call(actor, method: str, *args: Any, idempotent: bool = True, **kwargs: Any) -> Any:
    """Await one ShardActor.call; a shard's own exception is re-raised as itself."""
    try:
        return await _while_restarting(lambda: actor.call.remote(method, *args, **kwargs), idempotent)
    except RayTaskError as err:
        cause = getattr(err, "cause", None)
        if isinstance(cause, Exception):
            raise cause from None
        raise


async def ready(actor) -> None:
    await _while_restarting(lambda: actor.ready.remote(), True)


async def endpoint(actor) -> tuple[str, str]:
    return await _while_restarting(lambda: actor.endpoint.remote(), True)


async def stop(actor, take_snapshot: bool = True) -> None:
    """Close the shard cleanly (snapshot, log closed), then end the actor."""
    try:
        await actor.close.remote(take_snapshot)
    except RayActorError:
        log.warning("shard actor died before it could close")
    ray.kill(actor, no_restart=True)
