"""The gateway's handle on one shard.

``ShardHandle`` is the only way the gateway reaches a shard: awaitable methods
named after ``LocalShard``'s, so the transport underneath (today a Ray actor
call) can change without touching the gateway.
"""

from __future__ import annotations

from typing import Any

from cluster import runtime


class ShardHandle:
    def __init__(self, actor, index: int):
        self.actor = actor
        self.index = index

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return await runtime.call(self.actor, method, *args, **kwargs)

    async def ready(self) -> None:
        await runtime.ready(self.actor)

    async def stop(self, take_snapshot: bool = True) -> None:
        await runtime.stop(self.actor, take_snapshot)

    # Thin typed wrappers keep call sites readable.
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

    async def facet(self, key: str, filter, limit: int) -> list:
        return await self.call("facet", key, filter, limit)

    async def sample(self, filter, using: str, n: int, seed: int):
        return await self.call("sample", filter, using, n, seed)

    async def info(self):
        return await self.call("info")
