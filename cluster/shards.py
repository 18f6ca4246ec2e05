"""The gateway's handle on one shard.

``ShardHandle`` is the only way the gateway reaches a shard: awaitable methods
named after ``LocalShard``'s. Underneath, a shard on this machine is reached
over its Unix socket (``cluster.transport``), one on another machine over its
authenticated TCP listener (when the cluster has a secret: ``wire_secret``),
and otherwise through a Ray actor call. If the socket breaks (the actor died
and Ray is restarting it), reads retry through Ray, which waits for the
restart; a write is not retried blindly (it may have been applied) and fails
with ShardUnavailable.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from cluster import runtime
from cluster.shard_client import WRITES, ShardClient, ShardUnavailable
from cluster.transport import Endpoints, ShardChannel, machine_identity

log = logging.getLogger(__name__)

RECONNECT_AFTER = 5.0  # seconds on Ray calls after the shard's socket could not be reached


class ShardHandle(ShardClient):
    def __init__(self, actor, index: int, wire_secret: bytes | None = None):
        super().__init__(index)
        self.actor = actor
        self._wire_secret = wire_secret
        self._channel: ShardChannel | None = None
        self._remote = False  # the shard is on another machine and has no TCP listener: Ray calls only
        self._retry_at = 0.0  # after a failed connect, Ray calls until then
        self._connecting = asyncio.Lock()
        # Where the actor listens, as last heard (``ShardClient.endpoints``): read at
        # each connect and each health check, so a restarted actor is found again.
        self.endpoints: Endpoints | None = None

    async def _local_address(self) -> str | None:
        """The shard's socket address if it runs on this machine (asked afresh:
        a restarted actor listens at a new address)."""
        identity, address = await runtime.endpoint(self.actor)
        return address if identity == machine_identity() else None

    async def _connect(self) -> ShardChannel | None:
        if self._channel is not None and not self._channel.closed:
            return self._channel
        if self._remote or time.monotonic() < self._retry_at:
            return None
        async with self._connecting:
            if self._channel is not None and not self._channel.closed:
                return self._channel
            where = self.endpoints = await runtime.endpoints(self.actor)
            if where.machine != machine_identity() and (where.tcp is None or self._wire_secret is None):
                self._remote = True
                return None
            try:
                if where.machine == machine_identity():
                    self._channel = await ShardChannel.connect(where.unix)
                else:
                    self._channel = await ShardChannel.connect_tcp(*where.tcp, self._wire_secret)
            except OSError as exc:
                # Perhaps the actor is restarting: use Ray calls for a while, then
                # try the socket again rather than staying on the slow path for good.
                log.warning("shard %d: socket unreachable (%s); Ray calls for %.0f s", self.index, exc, RECONNECT_AFTER)
                self._retry_at = time.monotonic() + RECONNECT_AFTER
                return None
            return self._channel

    async def _send(self, method: str, args: tuple, kwargs: dict[str, Any]) -> Any:
        channel = await self._connect()
        if channel is None:
            return await runtime.call(self.actor, method, *args, idempotent=method not in WRITES, **kwargs)
        try:
            return await channel.call(method, *args, **kwargs)
        except ConnectionError as exc:
            self._channel = None
            if method in WRITES:
                raise ShardUnavailable(f"shard {self.index} went away during a write: {exc}") from None
            return await runtime.call(self.actor, method, *args, **kwargs)

    async def socket_address(self) -> str | None:
        """Where HTTP workers on this machine reach the shard; None for another machine."""
        return await self._local_address()

    async def ready(self) -> None:
        await runtime.ready(self.actor)

    async def ping(self, timeout: float) -> tuple[str, str]:
        """One health check through Ray (see ``runtime.ping``). An actor that now
        listens elsewhere (Ray restarted it) is reached there from now on: by this
        handle's socket, and by the replicas that forward writes to it."""
        state, detail, where = await runtime.ping(self.actor, timeout)
        if where is not None and where != self.endpoints:
            if self.endpoints is not None and self._channel is not None:
                self._channel.close()
                self._channel = None
            self.endpoints = where
        return state, detail

    def restart(self) -> None:
        """Have Ray restart the actor (it reloads its storage). The socket to the
        old process is dropped; calls reconnect to the new one."""
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        runtime.restart(self.actor)

    async def stop(self, take_snapshot: bool = True) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        await runtime.stop(self.actor, take_snapshot)
