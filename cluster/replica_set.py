"""One shard of a replicated collection, as a gateway sees it: a ``ShardClient`` over
the clients of its replicas, routing by ``cluster.routing`` (docs/cluster.md, "Writes"
and "Reads").

- A write goes to the shard's primary as ``replicate``: the primary applies it and
  forwards it, in sequence order, to the other replicas that take writes, and says who
  has it (``cluster.replicator``). ``routing.write_verdict`` decides; the replicas that
  failed are marked ``dead`` through Raft (``mark_dead``, given by the owner) *before*
  the client is answered, so that no replica left active lacks an acknowledged write;
  so are the partial ones (being filled) that did not take it, whatever their state
  by then, so that none is made active without it.
- A read goes to one active replica (the one on the gateway's own node first, then
  in turn), or to as many as the request's ``consistency`` asks (``READ_CONSISTENCY``,
  set per request as ``REQUEST_TIMEOUT`` is), whose answers are resolved into one
  (``cluster.resolve``). A replica that fails a read is skipped for a few seconds and
  the read goes to the next one.

The set holds the shard's entry of the placement (epoch, primary, replicas and their
states) as the metadata last said; its owner calls ``update`` after every change.
Ray-free: the replica clients may be Ray-backed handles or plain socket clients.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path
from contextvars import ContextVar
from typing import Any, Awaitable, Callable

from cluster import resolve, routing, shard_copy
from cluster.replicator import Peer, WriteOutcome
from cluster.shard_client import NOT_STARTED, WRITES, ShardClient, ShardTimeout, ShardUnavailable
from cluster.transport import Endpoints
from shard.types import BadInput

# The request's ``consistency`` (gateway.params.ReadParams), for every shard it reads.
READ_CONSISTENCY: ContextVar[routing.Consistency] = ContextVar("read_consistency", default=None)
SKIP_FAILING_FOR = 5.0  # seconds a replica that failed a read is asked last
WRITE_TIMEOUT = 10.0  # seconds the primary waits for its peers before naming them failed
COPY_TIMEOUT = 600.0  # seconds a copy of a shard to or from the gateway may take, by default
TRANSIENT = (ShardUnavailable, ShardTimeout, ConnectionError, routing.NotEnoughReplicas)

# How several replicas' answers of one method become one (cluster.resolve); the
# others (info, digest, sample, ...) take the first answer.
_RESOLVERS: dict[str, Callable[[list, resolve.Condition], Any]] = {
    "search_batch": resolve.resolve_batches,
    "retrieve": resolve.resolve_records,
    "count": resolve.resolve_count,
    "facet": resolve.resolve_facets,
}

# (shard, {replica: the state it must still be in, None: any}) -> committed
MarkDead = Callable[[int, dict[str, str | None]], Awaitable[None]]
# (shard, replica) -> (its client, its endpoints) once it runs; NOT_STARTED while its
# actor was never started; None when that cannot be told now
Locate = Callable[[int, str], Awaitable[tuple[ShardClient, Endpoints] | str | None]]


class ReplicaSet(ShardClient):
    def __init__(self, index: int, shard: dict[str, Any], replicas: dict[str, ShardClient],
                 endpoints: dict[str, Endpoints], *, own_node: str | None, write_factor: int,
                 mark_dead: MarkDead, read_fan_out: int = 0, write_timeout: float = WRITE_TIMEOUT,
                 secret: bytes | None = None, locate: Locate | None = None):
        super().__init__(index)
        self.secret = secret  # the key of the shards' connections (cluster.wire), for copies
        self.own_node = own_node
        self.write_factor = write_factor
        self.read_fan_out = read_fan_out
        self.write_timeout = write_timeout
        self._mark_dead = mark_dead
        self._locate = locate
        self._turn = itertools.count()
        self._failing: dict[str, float] = {}  # replica -> until when it is asked last
        self.update(shard, replicas, endpoints)

    def update(self, shard: dict[str, Any], replicas: dict[str, ShardClient], endpoints: dict[str, Endpoints]) -> None:
        """The shard's placement entry as the metadata now holds it, and a client and
        the endpoints of each of its replicas."""
        self.shard, self.replicas, self._endpoints = shard, replicas, endpoints

    @property
    def endpoints(self) -> dict[str, Endpoints]:
        """Where each replica listens: as its client last heard, when it keeps track
        (Ray restarts a killed actor as a new process, listening elsewhere), else as
        given to ``update``."""
        heard = {r: c.endpoints for r, c in self.replicas.items() if c.endpoints is not None}
        return {**self._endpoints, **heard} if heard else self._endpoints

    # ------------------------------------------------------------------ writes

    async def _send(self, method: str, args: tuple, kwargs: dict[str, Any]) -> Any:
        if method == "apply":
            return await self._write(*args, **kwargs)
        if method in WRITES:
            raise BadInput(f"`{method}` is not supported on a replicated shard yet")
        return await self._read(method, args, kwargs)

    async def _write(self, op: dict[str, Any], wait: bool) -> int:
        targets = routing.write_targets(self.shard, self.shard["epoch"], shard_id=self.index)
        quorum = routing.write_quorum(self.write_factor, targets)
        if targets.primary not in self.replicas:
            raise ShardUnavailable(f"shard {self.index}: its primary {targets.primary} is not running")
        where, not_started = await self._find(targets)
        peers = [Peer(r, where[r]) for r in targets.forwards if r in where]
        outcome: WriteOutcome = await self.replicas[targets.primary].call(
            "replicate", op, wait, targets.epoch, peers, self.write_timeout, timeout=self.write_timeout + 30)
        if outcome.stale:
            raise ShardUnavailable(f"shard {self.index}: its primary was replaced while writing; retry")
        # An active replica that did not take the write is marked dead. A partial one
        # is behind by nature (being filled by a transfer, or not started yet): it
        # reads nothing, and it is caught up from the primary's log before it is
        # made active; its failures neither fail the write nor mark it.
        why = {**{r: "not running" for r in targets.forwards if r not in where and r not in not_started},
               **outcome.failed}
        failed = {r: ShardUnavailable(f"replica {r}: {text}") for r, text in why.items() if r in targets.active}
        verdict = routing.write_verdict(targets, quorum, {targets.primary, *outcome.acked}, failed)
        # A partial replica that did not take the write may be made active by the
        # controller at any moment (its transfer done): it is marked dead as well, from
        # whatever state it is in by then (None), so that it is never active without
        # this write; it neither fails the write nor counts for it. It is caught up
        # again (in place, from the primary's log, when it can be).
        states = {**{r: None for r in why if r not in targets.active},
                  **{r: self.shard["replicas"][r]["state"] for r in verdict.mark_dead}}
        if states:
            await self._mark_dead(self.index, states)
        if not verdict.accepted:
            raise verdict.error
        return outcome.seq

    async def _find(self, targets: routing.WriteTargets) -> tuple[dict[str, Endpoints], set[str]]:
        """Where the replicas a write goes to listen, those this gateway had not
        heard of looked up first (``locate``: started by the controller, through
        another gateway, a moment ago); and the partial ones whose actor Ray has not
        started yet. Those need not take the write: a replica is filled by a
        transfer from an active one only once it runs, and every active one has
        the write by then (it is marked dead otherwise). Without that, a replica
        added under a steady flow of writes would be marked dead before it ever
        ran, again and again."""
        where = self.endpoints
        unseen = [r for r in targets.forwards if r not in where]
        if not unseen or self._locate is None:
            return where, set()
        found = await asyncio.gather(*(self._locate(self.index, r) for r in unseen), return_exceptions=True)
        replicas, endpoints = dict(self.replicas), dict(self._endpoints)
        for r, answer in zip(unseen, found):
            if isinstance(answer, tuple) and r in self.shard["replicas"]:
                replicas.setdefault(r, answer[0])
                endpoints[r] = answer[1]
        self.update(self.shard, replicas, endpoints)
        return self.endpoints, {r for r, answer in zip(unseen, found)
                                if isinstance(answer, str) and answer == NOT_STARTED and r not in targets.active}

    # -------------------------------------------------- copies (snapshots)

    async def export_copy(self, folder: str, timeout: float | None = None) -> dict[str, int]:
        """A copy of an active replica (the primary first), fetched over its connection
        into ``folder`` on the gateway's machine (``cluster.shard_copy.fetch``)."""
        order = [r for r in dict.fromkeys([self.shard["primary"], *sorted(self.shard["replicas"])])
                 if r in self.endpoints and self.shard["replicas"][r]["state"] == "active"]
        if not order:
            raise ShardUnavailable(f"shard {self.index}: no active replica to copy")
        info = await asyncio.to_thread(shard_copy.fetch, self.endpoints[order[0]], self.secret, Path(folder),
                                       timeout or COPY_TIMEOUT)
        return {"seq": info.seq, "points": info.points}

    async def restore_copy(self, folder: str, timeout: float | None = None, mark: bool = True) -> dict[str, int]:
        """Hand every replica that takes writes the shard in ``folder`` (on the
        gateway's machine), each restoring it (``cluster.shard_copy.push``). The
        primary's answer; a replica that failed, or ended elsewhere than the primary,
        is marked dead (``mark``) or fails the call."""
        targets = routing.write_targets(self.shard, self.shard["epoch"], shard_id=self.index)
        names = [targets.primary, *targets.forwards]
        if targets.primary not in self.endpoints:
            raise ShardUnavailable(f"shard {self.index}: its primary {targets.primary} is not running")
        answers = await asyncio.gather(*(
            asyncio.to_thread(shard_copy.push, self.endpoints[r], self.secret, Path(folder), timeout or COPY_TIMEOUT)
            for r in names if r in self.endpoints), return_exceptions=True)
        done = dict(zip([r for r in names if r in self.endpoints], answers))
        first = done[targets.primary]
        if isinstance(first, BaseException):
            raise first
        behind = {r: None for r in names if not isinstance(done.get(r), dict) or done[r]["seq"] != first["seq"]}
        if behind and not mark:
            raise ShardUnavailable(f"shard {self.index}: replicas {sorted(behind)} did not take the copy")
        if behind:
            await self._mark_dead(self.index, behind)
        return first

    # ------------------------------------------------------------------- reads

    async def _read(self, method: str, args: tuple, kwargs: dict[str, Any]) -> Any:
        now = time.monotonic()
        failing = [r for r, until in self._failing.items() if until > now]
        plan = self._plan(failing)
        if plan.required == 1 and len(plan.ask) == 1:
            return await self._one(method, args, kwargs, [*plan.ask, *plan.spares, *failing])
        answers = await self._several(method, args, kwargs, plan)
        resolver = _RESOLVERS.get(method)
        return answers[0] if resolver is None or len(answers) == 1 else resolver(answers, plan.condition)

    def _plan(self, failing: list[str]) -> routing.ReadPlan:
        try:
            return routing.read_targets(self.shard, READ_CONSISTENCY.get(), self.own_node, failing,
                                        shard_id=self.index, seed=next(self._turn), fan_out=self.read_fan_out)
        except routing.NotEnoughReplicas:
            if not failing:
                raise
            return routing.read_targets(self.shard, READ_CONSISTENCY.get(), self.own_node, (),
                                        shard_id=self.index, seed=next(self._turn), fan_out=self.read_fan_out)

    async def _one(self, method: str, args: tuple, kwargs: dict[str, Any], order: list[str]) -> Any:
        """Ask the replicas in ``order`` one after the other until one answers."""
        errors = []
        for replica in dict.fromkeys(order):
            try:
                return await self.replicas[replica].call(method, *args, **kwargs)
            except TRANSIENT as exc:
                self._failing[replica] = time.monotonic() + SKIP_FAILING_FOR
                errors.append(f"replica {replica}: {exc}")
        raise ShardUnavailable(routing.reads_failed(errors, 0))

    async def _several(self, method: str, args: tuple, kwargs: dict[str, Any], plan: routing.ReadPlan) -> list:
        """Ask ``plan.ask`` at once, a spare for each transient failure, until
        ``plan.required`` answered (routing.ReadPlan says how)."""
        spares = list(plan.spares)
        pending = {asyncio.ensure_future(self._ask(r, method, args, kwargs)) for r in plan.ask}
        answers, errors = [], []
        try:
            while pending and len(answers) < plan.required:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    replica, ok, value = task.result()
                    if ok:
                        answers.append(value)
                        continue
                    if not isinstance(value, TRANSIENT):
                        raise value
                    self._failing[replica] = time.monotonic() + SKIP_FAILING_FOR
                    errors.append(f"replica {replica}: {value}")
                    if spares:
                        pending.add(asyncio.ensure_future(self._ask(spares.pop(0), method, args, kwargs)))
                if len(answers) + len(pending) < plan.required:
                    break
        finally:
            for task in pending:
                task.cancel()
        if len(answers) < plan.required:
            raise routing.ReplicaSetError(routing.reads_failed(errors, len(answers)))
        return answers

    async def _ask(self, replica: str, method: str, args: tuple, kwargs: dict[str, Any]) -> tuple[str, bool, Any]:
        try:
            return replica, True, await self.replicas[replica].call(method, *args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - sorted by the caller
            return replica, False, exc
