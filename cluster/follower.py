"""Keeping a gateway's running collections in step with the replicated metadata.

Any gateway accepts any request, so a collection created, deleted or changed through one
gateway (or a replica added by the controller on the Raft leader) must reach the others.
``MetadataFollower`` runs ``Collections.follow`` after every entry the Raft applies on this
gateway and every ``PERIOD`` seconds (a replica that was not running at the first try is
reached at a later one). A request naming a collection this gateway has not caught up
with follows at once (``gateway.app``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cluster.collections import Collections
    from cluster.metadata import MetadataStore

log = logging.getLogger(__name__)

PERIOD = 5.0  # seconds between two follows when nothing is applied


class MetadataFollower:
    def __init__(self, metadata: MetadataStore, collections: Collections, period: float = PERIOD):
        self.metadata = metadata
        self.collections = collections
        self.period = period
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()

        def applied(*_) -> None:  # in the Raft thread
            with contextlib.suppress(RuntimeError):  # the loop closed at shutdown
                loop.call_soon_threadsafe(wake.set)

        self.metadata.listen(applied)
        self.collections.following = True
        self._task = asyncio.create_task(self._run(wake), name="metadata-follower")

    async def _run(self, wake: asyncio.Event) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), self.period)
            wake.clear()
            try:
                await self.collections.follow()
            except Exception:  # noqa: BLE001 - the next round tries again
                log.exception("following the metadata failed")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
