"""Talking to one shard, without Ray.

``ShardClient`` gives awaitable methods named after ``LocalShard``'s over some
``call``; ``DirectShard`` carries them over the shard's Unix socket alone, as
HTTP worker processes do (they never load Ray). The control process uses
``cluster.shards.ShardHandle``, which adds Ray calls as the fallback.
"""

from __future__ import annotations

from typing import Any

from cluster.transport import ShardChannel
from shard.types import ShoalError

WRITES = frozenset({"apply"})


class ShardUnavailable(ShoalError):
    """The shard could not be reached; the request may or may not have taken effect."""


class ShardClient:
    index: int

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    async def apply(self, op: dict[str, Any], wait: bool) -> int:
        return await self.call("apply", op, wait)

    async def search_batch(self, requests: list) -> list:
        return await self.call("search_batch", requests)

    async def retrieve(self, ids, with_payload, with_vector) -> list:
        return await self.call("retrieve", ids, with_payload, with_vector)

    async def get_vectors(self, ids, using: str) -> dict:
        return await self.call("get_vectors", ids, using)

    async def scroll(self, **kwargs: Any) -> list:
        return await self.call("scroll", **kwargs)

    async def count(self, filter) -> int:
        return await self.call("count", filter)

    async def facet(self, key: str, filter, limit) -> list:
        return await self.call("facet", key, filter, limit)

    async def sample(self, filter, using: str, n: int, seed: int):
        return await self.call("sample", filter, using, n, seed)

    async def info(self):
        return await self.call("info")


class DirectShard(ShardClient):
    """A shard reached only through its socket. When the socket breaks (the actor
    was restarted and listens elsewhere), ``on_broken`` is told, so the owner can
    re-read where the shard is, and the call fails with ShardUnavailable."""

    def __init__(self, address: str, index: int, on_broken=None):
        self.address = address
        self.index = index
        self.on_broken = on_broken
        self._channel: ShardChannel | None = None

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        try:
            if self._channel is None or self._channel.closed:
                self._channel = await ShardChannel.connect(self.address)
            return await self._channel.call(method, *args, **kwargs)
        except (ConnectionError, OSError) as exc:
            self._channel = None
            if self.on_broken is not None:
                self.on_broken()
            raise ShardUnavailable(f"shard {self.index} is unreachable: {exc}") from None

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None
