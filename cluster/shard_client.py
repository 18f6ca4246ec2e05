"""Talking to one shard, without Ray.

``ShardClient`` gives awaitable methods named after ``LocalShard``'s over some
``call``; ``DirectShard`` carries them over the shard's Unix socket alone, as
HTTP worker processes do (they never load Ray). The control process uses
``cluster.shards.ShardHandle``, which adds Ray calls as the fallback.

No call waits without limit: each is bounded by ``ShardClient.call_timeout``
(setting ``cluster.shard_call_timeout_s``) or by a shorter ``timeout`` given
with it (a read's ``timeout`` parameter), and past it fails with ShardTimeout
(Qdrant's 408). A shard the health monitor (``cluster.health``) finds silent
is marked with ``set_problem``: its calls then fail at once with
ShardUnavailable (Qdrant's 503), those already waiting included.
"""

from __future__ import annotations

import asyncio
import time
from contextvars import ContextVar
from typing import Any

from cluster.transport import ShardChannel
from shard.types import ShoalError

WRITES = frozenset({"apply", "restore"})  # not retried blindly: it may have taken effect
# The ``timeout`` a read request gave, in seconds: it bounds every shard call made
# for that request (each request runs in a task, with a context, of its own).
REQUEST_TIMEOUT: ContextVar[float | None] = ContextVar("shard_request_timeout", default=None)
SWEEP_EVERY = 0.25  # seconds between two looks for calls past their bound


class ShardUnavailable(ShoalError):
    """The shard could not be reached; the request may or may not have taken effect.
    Answered as Qdrant's StorageError::ShardUnavailable: 503."""


class ShardTimeout(ShoalError):
    """A shard call did not finish within its bound; a write may or may not have
    taken effect. Answered as Qdrant's StorageError::Timeout: 408."""

    def __init__(self, operation: str, seconds: float):
        super().__init__(f"operation '{operation}' timed out after {seconds:g} s")
        self.operation = operation
        self.seconds = seconds


class _Call:
    """One call in flight, which the sweeper (past its deadline) or
    ``set_problem`` may end by cancelling the task that waits for it."""

    __slots__ = ("client", "task", "deadline", "ended")

    def __init__(self, client: ShardClient, task: asyncio.Task, deadline: float):
        self.client, self.task, self.deadline, self.ended = client, task, deadline, False

    def end(self) -> None:
        if not self.ended:
            self.ended = True
            self.task.cancel()


# Every call in flight, of every shard. One coarse sweeper per event loop ends
# those past their deadline: a timer per call (asyncio.timeout) costs ~8 us on
# every search, this ~1 us; the bound is a backstop against hangs, to within
# SWEEP_EVERY.
_in_flight: set[_Call] = set()
_sweeper: asyncio.Task | None = None


async def _sweep() -> None:
    while _in_flight:
        await asyncio.sleep(SWEEP_EVERY)
        now = time.monotonic()
        for call in [c for c in _in_flight if c.deadline <= now]:
            call.end()


def _watch(call: _Call) -> None:
    global _sweeper
    _in_flight.add(call)
    if _sweeper is None or _sweeper.done() or _sweeper.get_loop() is not call.task.get_loop():
        _sweeper = call.task.get_loop().create_task(_sweep(), name="shard-call-sweeper")


# What a replica set's ``locate`` answers for a replica Ray has not started yet.
NOT_STARTED = "not started"


class ShardClient:
    # Seconds any call may take: one value for the process, set from the settings
    # at the entry point (gateway.cli), before any shard is reached.
    call_timeout: float = 60.0
    # Where the shard listens, when the client keeps track of it (``cluster.shards``):
    # a replica set forwards writes and transfers there. None: the set's own record.
    endpoints: Any = None

    def __init__(self, index: int):
        self.index = index
        self.problem: str | None = None  # why the shard is unavailable, or None

    async def _send(self, method: str, args: tuple, kwargs: dict[str, Any]) -> Any:
        raise NotImplementedError

    async def call(self, method: str, *args: Any, timeout: float | None = None, **kwargs: Any) -> Any:
        """Run one ``LocalShard`` method on the shard, bounded in time (see above)."""
        if self.problem is not None:
            raise ShardUnavailable(self.problem)
        if timeout is None:  # the request's own timeout may shorten the bound, never lengthen it
            asked = REQUEST_TIMEOUT.get()
            limit = self.call_timeout if asked is None else min(asked, self.call_timeout)
        else:  # a call known to take long (a snapshot) names its own bound
            limit = timeout
        task = asyncio.current_task()
        cancelling = task.cancelling()
        call = _Call(self, task, time.monotonic() + limit)
        _watch(call)
        try:
            return await self._send(method, args, kwargs)
        except asyncio.CancelledError:
            # Ours (and nobody else's, as asyncio.timeout tells them apart): a failure.
            if not call.ended or task.uncancel() > cancelling:
                raise
            if self.problem is not None:
                raise ShardUnavailable(self.problem) from None
            raise ShardTimeout(method, limit) from None
        finally:
            _in_flight.discard(call)

    def set_problem(self, problem: str | None) -> None:
        """Mark the shard unavailable (``problem`` says why) or available again
        (None). Marking it ends the calls waiting on it at once."""
        was, self.problem = self.problem, problem
        if problem is not None and was is None:
            for call in [c for c in _in_flight if c.client is self]:
                call.end()

    async def apply(self, op: dict[str, Any], wait: bool, timeout: float | None = None) -> int:
        return await self.call("apply", op, wait, timeout=timeout)

    async def search_batch(self, requests: list, timeout: float | None = None) -> list:
        return await self.call("search_batch", requests, timeout=timeout)

    async def retrieve(self, ids, with_payload, with_vector, timeout: float | None = None) -> list:
        return await self.call("retrieve", ids, with_payload, with_vector, timeout=timeout)

    async def get_vectors(self, ids, using: str, timeout: float | None = None) -> dict:
        return await self.call("get_vectors", ids, using, timeout=timeout)

    async def scroll(self, timeout: float | None = None, **kwargs: Any) -> list:
        return await self.call("scroll", timeout=timeout, **kwargs)

    async def count(self, filter, timeout: float | None = None) -> int:
        return await self.call("count", filter, timeout=timeout)

    async def facet(self, key: str, filter, limit, timeout: float | None = None) -> list:
        return await self.call("facet", key, filter, limit, timeout=timeout)

    async def sample(self, filter, using: str, n: int, seed: int, timeout: float | None = None):
        return await self.call("sample", filter, using, n, seed, timeout=timeout)

    async def info(self, timeout: float | None = None):
        return await self.call("info", timeout=timeout)

    async def payload_bytes(self, timeout: float | None = None) -> int:
        return await self.call("payload_bytes", timeout=timeout)

    async def digest(self, timeout: float | None = None):
        return await self.call("digest", timeout=timeout)

    async def export_copy(self, folder: str, timeout: float | None = None) -> dict[str, int]:
        """A consistent copy of the shard in ``folder``, a folder of this machine (a
        snapshot's); its ``{"seq", "points"}``."""
        return await self.call("export", folder, timeout=timeout)

    async def restore_copy(self, folder: str, timeout: float | None = None) -> dict[str, int]:
        """Make the shard hold the copy in ``folder`` (of this machine); ``{"seq", "points"}``."""
        return await self.call("restore", folder, timeout=timeout)


class DirectShard(ShardClient):
    """A shard reached only through its socket. When the socket breaks (the actor
    was restarted and listens elsewhere), ``on_broken`` is told, so the owner can
    re-read where the shard is, and the call fails with ShardUnavailable."""

    def __init__(self, address: str, index: int, on_broken=None):
        super().__init__(index)
        self.address = address
        self.on_broken = on_broken
        self._channel: ShardChannel | None = None

    async def _send(self, method: str, args: tuple, kwargs: dict[str, Any]) -> Any:
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
