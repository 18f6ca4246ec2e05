"""The controller's shell: runs ``cluster.controller.Controller`` on the Raft leader and
carries out what it decides (docs/cluster.md, "Recovery and repair").

Once a second, on the gateway that leads the metadata Raft: the metadata if it moved
(``MetadataChanged``), the Ray nodes that may host replicas (``NodesSeen``), and every
report that came back from the work started in earlier rounds go into the controller;
its effects come out and are started, each as a task of its own whose outcome is the
report of a later round:

- ``Propose``: the op goes to Raft (``ProposalFailed`` if it is not taken);
- ``StartReplica``: ``Collections.start_replica`` (the actor started, or found running,
  on its node; ``ReplicaStarted`` with its applied sequence, or ``ReplicaFailed``);
- ``StopReplica``: ``Collections.stop_replica`` (actor ended, storage deleted;
  ``ReplicaStopped``);
- ``StartTransfer``: ``Collections.transfer`` (the target pulls a copy of the source;
  ``TransferDone`` or ``TransferFailed``);
- ``Log``: a log line.

Every few rounds a sweep reports each listed replica as running or not, as the
controller's contract asks, so that a lost report or an actor Ray restarted on its own
is corrected. A gateway that stops leading drops its controller; one that starts
leading builds a new one from the replicated state (the controller keeps nothing else).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any, Callable

from cluster import runtime
from cluster.controller import (
    Controller,
    Event,
    Log,
    MetadataChanged,
    NodesSeen,
    Propose,
    ProposalFailed,
    ReplicaFailed,
    ReplicaStarted,
    ReplicaStopped,
    StartReplica,
    StartTransfer,
    StopReplica,
    TransferDone,
    TransferFailed,
)

if TYPE_CHECKING:
    from cluster.collections import Collections
    from cluster.metadata import MetadataStore

log = logging.getLogger(__name__)

ROUND = 1.0  # seconds between two rounds
SWEEP_EVERY = 10  # rounds between two sweeps of the replicas
TRANSFER_TIMEOUT = 600.0  # seconds one transfer may take


class RepairLoop:
    """Owns the controller while this gateway leads; see the module docstring."""

    def __init__(self, metadata: MetadataStore, collections: Collections, *, node_grace: float = 30.0,
                 retry_after: float = 15.0, ray_down: Callable[[], bool] = lambda: False, clock=time.monotonic):
        self.metadata = metadata
        self.ray_down = ray_down  # while Ray's head is unreachable nothing can be placed: rounds wait
        self.collections = collections
        self.node_grace = node_grace
        self.retry_after = retry_after
        self._clock = clock
        self.controller: Controller | None = None
        self._version = -1
        self._reports: list[Event] = []
        self._tasks: set[asyncio.Task] = set()
        self._rounds = 0
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="repair-loop")

    async def stop(self) -> None:
        for task in [self._task, *self._tasks]:
            if task is not None:
                task.cancel()
        await asyncio.gather(*(t for t in [self._task, *self._tasks] if t is not None), return_exceptions=True)
        self._task = None

    async def _run(self) -> None:
        while True:
            started = self._clock()
            try:
                await self.round()
            except asyncio.CancelledError:
                raise
            except Exception:  # the loop must go on
                log.exception("repair round failed")
            await asyncio.sleep(max(0.0, ROUND - (self._clock() - started)))

    async def round(self) -> None:
        """One round: the events since the last one in, the effects out (started)."""
        if self.ray_down():
            return  # the controller keeps its state; node times resume with Ray
        if not self.metadata.is_leader:
            if self.controller is not None:
                log.info("no longer the metadata leader: placement and repair are another gateway's")
            self.controller, self._version, self._reports = None, -1, []
            return
        if self.controller is None:
            log.info("metadata leader: placement and repair run here")
            self.controller = Controller(node_grace=self.node_grace, retry_after=self.retry_after)
            self._rounds = 0
        events: list[Event] = []
        state = None
        if self.metadata.version != self._version:
            state = await asyncio.to_thread(self.metadata.state)
            self._version = state["version"]
            events.append(MetadataChanged(state))
        nodes = await asyncio.to_thread(runtime.shard_nodes)
        events.append(NodesSeen(self._clock(), frozenset(nodes)))
        if self._rounds % SWEEP_EVERY == 0:  # the first round too: what runs already
            events += await self.collections.sweep_replicas(state or await asyncio.to_thread(self.metadata.state))
        events += self._reports
        self._reports = []
        self._rounds += 1
        for effect in self.controller.handle(*events):
            self._carry_out(effect)

    def _carry_out(self, effect: Any) -> None:
        if isinstance(effect, Log):
            log.log(effect.level, "%s", effect.text)
            return
        task = asyncio.create_task(self._do(effect), name=f"repair-{type(effect).__name__}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _do(self, effect: Any) -> None:
        report = await self._outcome(effect)
        if report is not None:
            self._reports.append(report)

    async def _outcome(self, effect: Any) -> Event | None:
        c = self.collections
        if isinstance(effect, Propose):
            try:
                await asyncio.to_thread(self.metadata.propose, effect.op)
            except Exception as exc:  # noqa: BLE001 - the controller asks again
                return ProposalFailed(effect.op, str(exc))
            c.placement_changed()
            return None
        key = (effect.collection, effect.incarnation, effect.shard)
        if isinstance(effect, StartReplica):
            try:
                seq = await c.start_replica(*key, effect.replica, effect.node)
            except Exception as exc:  # noqa: BLE001 - reported
                return ReplicaFailed(*key, effect.replica, reason=str(exc))
            return ReplicaStarted(*key, effect.replica, applied_seq=seq)
        if isinstance(effect, StopReplica):
            try:
                await c.stop_replica(*key, effect.replica)
            except Exception as exc:  # noqa: BLE001 - the controller asks again
                log.warning("could not stop %s: %s", effect.key, exc)
                return None
            return ReplicaStopped(*key, effect.replica)
        if isinstance(effect, StartTransfer):
            try:
                seq = await c.transfer(*key, effect.source, effect.target, TRANSFER_TIMEOUT)
            except Exception as exc:  # noqa: BLE001 - reported
                return TransferFailed(*key, effect.target, effect.version, reason=str(exc))
            return TransferDone(*key, effect.target, effect.version, applied_seq=seq)
        raise TypeError(f"not a controller effect: {effect!r}")
