"""What a ``/metrics`` scrape gathers, in the control process: every HTTP
process's request figures, and the cluster's state.

- **The workers' request figures** (``service.workers > 1``). Each worker also
  listens on a Unix socket of its own in the control's folder (only this user can
  enter it) and answers ``WORKER_METRICS_PATH`` there with its figures as data
  (``Metrics.part``); the control process asks every live worker, each call
  bounded by ``WORKER_TIMEOUT``. Pulled at the scrape rather than pushed, so that
  a scrape sees every request answered before it. A worker that ended keeps
  counting with the figures it last gave (``WorkerFigures.retired``), so the sums
  do not fall back when a worker is replaced; a worker that does not answer in
  time counts with its last figures too.
- **The cluster**: each shard replica's ``info()`` (points, vectors, segments, log
  bytes), each bounded by ``SHARD_TIMEOUT`` so that a silent shard cannot hold a
  scrape up (it is reported ``shoal_shard_up 0``); replica states and transfers
  from the placement in the Raft metadata; the Raft's own state. Nothing here
  costs work per point.

``history_ctx`` samples the summed request figures every ``HISTORY_PERIOD``
seconds for the dashboard (``gateway.metrics.RequestHistory``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson
from aiohttp import web

from cluster.peers import peer_id
from cluster.shard_client import ShardClient, ShardTimeout, ShardUnavailable
from cluster.topology import layout
from gateway.metrics import ClusterFigures, Part, ReplicaFigures, RequestHistory, as_part, merge, totals
from gateway.serve import over_unix_socket
from gateway.state import COLLECTIONS, CONTROL, CONTROL_DIR, METADATA, METRICS

if TYPE_CHECKING:
    from cluster.collection import Collection
    from gateway.workers import Control

log = logging.getLogger(__name__)

WORKER_METRICS_PATH = "/_shoal/metrics"
WORKER_TIMEOUT = 2.0  # seconds a worker has to give its figures
SHARD_TIMEOUT = 2.0  # seconds a shard replica has to answer info() during a scrape
HISTORY_PERIOD = 5.0  # seconds between two samples of the dashboard's history
HISTORY_SIZE = 180  # samples kept: 15 minutes
HISTORY = web.AppKey("request_history", RequestHistory)
WORKER_FIGURES = web.AppKey("worker_figures", object)  # WorkerFigures, in a control process with workers


def worker_socket(control_dir: Path, pid: int) -> str:
    """Where the HTTP worker ``pid`` answers the control process."""
    return str(control_dir / f"worker-{pid}.sock")


async def worker_metrics(request: web.Request):
    """A worker's figures, for the control process only: over the worker's Unix
    socket (``registry`` in gateway.control is guarded the same way)."""
    if not over_unix_socket(request):
        raise web.HTTPNotFound()
    return web.Response(body=orjson.dumps(request.app[METRICS].part()), content_type="application/json")


class WorkerFigures:
    """The control process's record of its workers' request figures."""

    def __init__(self, control: Control):
        self.control = control
        self.last: dict[int, Part] = {}  # live worker pid -> the figures it last gave
        self.retired: Part = []  # the last figures of every worker that ended, summed

    async def _fetch(self, pid: int) -> Part:
        connector = aiohttp.UnixConnector(path=worker_socket(self.control.dir, pid))
        async with aiohttp.ClientSession(connector=connector) as session:
            async with asyncio.timeout(WORKER_TIMEOUT):
                async with session.get("http://worker" + WORKER_METRICS_PATH) as resp:
                    resp.raise_for_status()
                    return orjson.loads(await resp.read())

    async def gather(self) -> tuple[list[Part], int]:
        """Every worker's figures (the ended ones' included) and how many workers
        answered now."""
        live = [p.pid for p in self.control.processes if p.poll() is None]
        for pid in [pid for pid in self.last if pid not in live]:
            self.retired = as_part(merge([self.retired, self.last.pop(pid)]))
        answers = await asyncio.gather(*(self._fetch(pid) for pid in live), return_exceptions=True)
        answered = 0
        for pid, answer in zip(live, answers):
            if isinstance(answer, BaseException):  # starting, or busy: its last figures stand
                log.debug("HTTP worker %d gave no metrics: %r", pid, answer)
                continue
            self.last[pid] = answer
            answered += 1
        return [self.retired, *self.last.values()], answered


async def request_parts(app: web.Application) -> tuple[list[Part], int]:
    """This process's request figures and its workers': the parts and how many
    HTTP processes answered."""
    own = app[METRICS].part()
    workers = app.get(WORKER_FIGURES)
    if workers is None:
        return [own], 1
    parts, answered = await workers.gather()
    return [own, *parts], 1 + answered


# -------------------------------------------------------------------- cluster


def _replica_handle(coll: Collection, shard_id: int, replica: str, copies: int) -> ShardClient | None:
    """The client of one replica: a replicated shard's own client for it, or the
    shard's client when the shard has a single copy (None when not running here)."""
    if shard_id >= len(coll.shards):
        return None
    shard = coll.shards[shard_id]
    handles = getattr(shard, "replicas", None)
    if handles is not None:
        return handles.get(replica)
    return shard if copies == 1 else None


async def _info(handle: ShardClient | None):
    if handle is None:
        return None
    try:
        return await handle.info(timeout=min(SHARD_TIMEOUT, ShardClient.call_timeout))
    except (ShardUnavailable, ShardTimeout):
        return None


async def _collection(store: Any, coll: Collection, fig: ClusterFigures) -> None:
    record = store.collection(coll.name) or {}
    where = layout(record.get("placement"), len(coll.shards), peer_id(store.self_address))
    copies = {r.shard_id: len(where.replicas_of(r.shard_id)) for r in where.replicas}
    handles = [_replica_handle(coll, r.shard_id, r.replica, copies[r.shard_id]) for r in where.replicas]
    replicated = any(getattr(s, "replicas", None) is not None for s in coll.shards)
    shard_infos = asyncio.gather(*(_info(s) for s in coll.shards)) if replicated else None
    infos = await asyncio.gather(*(_info(h) for h in handles))
    figures = [ReplicaFigures(coll.name, r.shard_id, r.replica, r.peer_id, r.state, info)
               for r, info in zip(where.replicas, infos)]
    fig.replicas += figures
    if shard_infos is not None:  # one answer per shard, whichever replica gave it
        fig.points[coll.name] = sum(i.points_count for i in await shard_infos if i is not None)
    else:
        fig.points[coll.name] = sum(f.info.points_count for f in figures if f.info is not None)
    by_peer = {(f.shard, f.peer): f.info for f in figures}
    for t in where.transfers:
        source, target = by_peer.get((t.shard_id, t.from_peer)), by_peer.get((t.shard_id, t.to_peer))
        progress = None
        if source is not None and target is not None:
            progress = min(1.0, target.points_count / source.points_count) if source.points_count else 1.0
        fig.transfers.append((coll.name, t, progress))


async def cluster_figures(app: web.Application, shards: bool = True) -> ClusterFigures:
    """The cluster's state, in the control process; the collections and shards
    only with ``shards`` (once every shard was loaded)."""
    fig = ClusterFigures()
    collections, store = app.get(COLLECTIONS), app.get(METADATA)
    if store is not None:
        fig.raft = store.raft_status()
    if collections is None or store is None or not shards:
        return fig
    running = collections.running()
    fig.unavailable = [n for n in collections.names() if collections.unavailable(n) is not None]
    await asyncio.gather(*(_collection(store, coll, fig) for coll in running))
    fig.points = dict(sorted(fig.points.items()))
    fig.replicas.sort(key=lambda r: (r.collection, r.shard, len(r.replica), r.replica))
    return fig


# -------------------------------------------------------------------- history


async def _sample(app: web.Application, history: RequestHistory) -> None:
    parts, _ = await request_parts(app)
    history.add(totals(merge(parts), time.time()))


async def history_ctx(app: web.Application):
    """In the control process: the request history, and (with workers) the
    record of the workers' figures."""
    if CONTROL_DIR in app:  # an HTTP worker: the control process keeps both
        yield
        return
    control = app.get(CONTROL)
    if control is not None:
        app[WORKER_FIGURES] = WorkerFigures(control)
    history = app[HISTORY] = RequestHistory(HISTORY_PERIOD, HISTORY_SIZE)

    async def loop() -> None:
        while True:
            try:
                await _sample(app, history)
            except Exception:  # noqa: BLE001 - a missed sample leaves a gap, nothing more
                log.exception("could not sample the request figures")
            await asyncio.sleep(HISTORY_PERIOD)

    task = asyncio.create_task(loop(), name="request-history")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
