"""Collection and shard snapshots: create, list, download, delete, recover from a
file in the snapshots folder or from an upload (Qdrant's
/collections/{name}/snapshots and /collections/{name}/shards/{shard_id}/snapshots
APIs). The work is ``cluster.snapshots``'; this module reads requests and
answers them, the two kinds through the same handlers.

Both kinds answer as Qdrant's ``time_or_accept``: with ``wait=false`` 202 at once
while the operation goes on; with ``wait=true`` (the default) the operation is
not cancelled by a client that goes away, since a recover is not safe to stop
half-way (Qdrant spawns it for the same reason).

A shard's ``priority`` (no_sync, snapshot, replica) decides in Qdrant which of a
shard's replicas are kept when others are active; a shard here has one replica,
so every priority recovers the snapshot, as Qdrant does for a shard without
other active replicas.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from cluster.collection import Collection
from cluster.snapshots import file_sha256
from gateway import errors
from gateway.errors import FormatError, QdrantError, RouteNotFound
from gateway.params import bool_param, snapshot_priority
from gateway.routes.common import body, collection, registry
from gateway.state import CONTROL_TASKS, SETTINGS, SNAPSHOTS
from gateway.workers import Forward
from shard.types import BadInput, NotFound

log = logging.getLogger(__name__)

routes = web.RouteTableDef()
PREFIX = "/collections/{collection_name}/snapshots"
# A shard id that is no u32 matches no route: actix answers 404 for a path
# segment its extractor cannot read, as for an unknown route.
SHARD_PREFIX = "/collections/{collection_name}/shards/{shard_id:[0-9]{1,10}}/snapshots"
MAX_SHARD_ID = (1 << 32) - 1
UPLOAD_CHUNK = 1 << 20


def _snapshots(request: web.Request):
    snapshots = request.app.get(SNAPSHOTS)
    if snapshots is None:
        raise Forward()  # an HTTP worker: the control process keeps the snapshots
    return snapshots


def _wait(request: web.Request) -> bool:
    """Snapshot operations wait for their end unless ``wait=false``."""
    wait = bool_param(request, "wait")
    return True if wait is None else wait


def _target(request: web.Request) -> tuple[Collection, int | None]:
    """The collection the path names, and its shard when it names one: Qdrant's
    404 "shard 7 not found" for an id the collection does not have."""
    if "shard_id" not in request.match_info:
        return collection(request), None
    shard_id = int(request.match_info["shard_id"])
    if shard_id > MAX_SHARD_ID:
        raise RouteNotFound()
    coll = collection(request)
    if shard_id >= len(coll.shards):
        raise NotFound(errors.shard_not_found(shard_id))
    return coll, shard_id


def _recovery(request: web.Request) -> Callable[[Path, str | None], Awaitable[None]]:
    """How a recover on this path makes its target hold a snapshot file: the
    collection (created, or replaced, as in Qdrant) or the one shard."""
    if "shard_id" not in request.match_info:
        return lambda path, checksum: _recover_collection(request, path, checksum)
    coll, shard_id = _target(request)
    return lambda path, checksum: _snapshots(request).recover_shard(coll, shard_id, path, checksum)


async def _time_or_accept(request: web.Request, work: Awaitable[Any], wait: bool, started: float):
    """The result of ``work``, or with ``wait=false`` Qdrant's 202 at once while
    it goes on (a failure then is logged). Either way it runs to its end."""
    task = asyncio.ensure_future(work)
    tasks = request.app[CONTROL_TASKS]
    tasks.add(task)
    task.add_done_callback(tasks.discard)
    if wait:
        return await asyncio.shield(task)
    task.add_done_callback(_log_failure)
    return web.json_response({"result": None, "status": "accepted", "time": time.perf_counter() - started},
                             status=202)


def _log_failure(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("a snapshot operation left to run (wait=false) failed: %s", task.exception())


async def _described(creating: Awaitable[Any]) -> dict[str, Any]:
    return (await creating).to_json()


async def _true(work: Awaitable[Any]) -> bool:
    await work
    return True


# ------------------------------------------------------------------------ routes
# Each serves both kinds: /collections/{name}/snapshots... and
# /collections/{name}/shards/{shard_id}/snapshots...


@routes.get(SHARD_PREFIX)
@routes.get(PREFIX)
async def list_snapshots(request: web.Request):
    snapshots = _snapshots(request)
    coll, shard_id = _target(request)
    return [d.to_json() for d in await asyncio.to_thread(snapshots.list, coll.name, shard_id)]


@routes.post(SHARD_PREFIX)
@routes.post(PREFIX)
async def create_snapshot(request: web.Request):
    started = time.perf_counter()
    snapshots, wait = _snapshots(request), _wait(request)
    coll, shard_id = _target(request)
    return await _time_or_accept(request, _described(snapshots.create(coll, shard_id)), wait, started)


@routes.get(SHARD_PREFIX + "/{snapshot_name}")
@routes.get(PREFIX + "/{snapshot_name}")
async def download_snapshot(request: web.Request):
    snapshots = _snapshots(request)
    coll, shard_id = _target(request)
    path = await asyncio.to_thread(snapshots.path, coll.name, request.match_info["snapshot_name"], shard_id)
    return web.FileResponse(path, headers={"Content-Type": "application/octet-stream",
                                           "Content-Disposition": f'attachment; filename="{path.name}"'})


@routes.delete(SHARD_PREFIX + "/{snapshot_name}")
@routes.delete(PREFIX + "/{snapshot_name}")
async def delete_snapshot(request: web.Request):
    started = time.perf_counter()
    snapshots, wait = _snapshots(request), _wait(request)
    coll, shard_id = _target(request)
    deleting = asyncio.to_thread(snapshots.delete, coll.name, request.match_info["snapshot_name"], shard_id)
    return await _time_or_accept(request, _true(deleting), wait, started)


@routes.put(SHARD_PREFIX + "/recover")
@routes.put(PREFIX + "/recover")
async def recover_snapshot(request: web.Request):
    """A collection's ``location`` is a URL; a shard's, as Qdrant's untagged
    ShardSnapshotLocation reads any text, a URL or one of its snapshots' names."""
    started = time.perf_counter()
    shard = "shard_id" in request.match_info
    data = await body(request, "ShardSnapshotRecover" if shard else "SnapshotRecover")
    snapshots, wait = _snapshots(request), _wait(request)
    location = data["location"]
    if shard:
        coll, shard_id = _target(request)
        path = await asyncio.to_thread(snapshots.shard_location, location, coll.name, shard_id)
    else:
        if not urlsplit(location).scheme:
            raise FormatError("relative URL without a base")  # serde's words for a location that is no URL
        path = await asyncio.to_thread(snapshots.location, location)
    recovering = _recovery(request)(path, data.get("checksum"))
    return await _time_or_accept(request, _true(recovering), wait, started)


@routes.post(SHARD_PREFIX + "/upload")
@routes.post(PREFIX + "/upload")
async def upload_snapshot(request: web.Request):
    """The query (``wait``, ``priority``, ``checksum``) and the target first,
    then the file, received into a work folder and checked against ``checksum``
    as Qdrant's upload checks it, then the recover; the work folder is dropped at
    the end, also when the recover goes on after a 202."""
    started = time.perf_counter()
    snapshots, wait = _snapshots(request), _wait(request)
    snapshot_priority(request)
    checksum = request.query.get("checksum")
    recover = _recovery(request)
    work = await asyncio.to_thread(snapshots.work_folder)
    try:
        path = await _receive_upload(request, work / "upload.snapshot", snapshots.max_upload_bytes)
        if checksum is not None:
            actual = await asyncio.to_thread(file_sha256, path)
            if actual != checksum:
                raise QdrantError(errors.checksum_mismatch(actual, checksum), 400)
    except BaseException:
        await asyncio.to_thread(snapshots.discard, work)
        raise

    async def recovering() -> bool:
        try:
            await recover(path, None)
        finally:
            await asyncio.to_thread(snapshots.discard, work)
        return True

    return await _time_or_accept(request, recovering(), wait, started)


async def _recover_collection(request: web.Request, path: Path, checksum: str | None) -> None:
    snapshots = _snapshots(request)
    limit = request.app[SETTINGS].limits.max_shard_number
    recovered = await asyncio.to_thread(snapshots.unpack, path, checksum, limit)
    try:
        await registry(request).recover(request.match_info["collection_name"], recovered.config,
                                        recovered.shard_folders)
    finally:
        await asyncio.to_thread(snapshots.discard, recovered.work)


async def _receive_upload(request: web.Request, target: Path, limit: int) -> Path:
    """The multipart field ``snapshot`` streamed to ``target``: at most ``limit``
    bytes, each chunk within ``service.body_timeout_s`` of the one before."""
    if not request.content_type.startswith("multipart/"):
        raise BadInput("Bad request: the snapshot must be uploaded as multipart/form-data, in a field `snapshot`")
    seconds = request.app[SETTINGS].service.body_timeout_s
    received = 0
    try:
        async with asyncio.timeout(seconds) as deadline:
            reader = await request.multipart()
            while (part := await reader.next()) is not None:
                if part.name != "snapshot":
                    await part.release()
                    continue
                with open(target, "wb") as out:
                    while chunk := await part.read_chunk(UPLOAD_CHUNK):
                        received += len(chunk)
                        if received > limit:
                            raise BadInput(f"Bad request: the snapshot is larger than {limit} bytes "
                                           "(setting limits.max_snapshot_upload_mb)")
                        await asyncio.to_thread(out.write, chunk)
                        deadline.reschedule(asyncio.get_running_loop().time() + seconds)
                return target
    except TimeoutError:
        raise errors.BodyTimeout(seconds) from None
    except (HttpProcessingError, ValueError, RuntimeError, AssertionError) as exc:
        # aiohttp's multipart reader says what is wrong with a malformed body in
        # these (an AssertionError among them): the client's fault.
        raise BadInput(f"Bad request: the upload is not valid multipart/form-data ({_first_line(exc)})") from None
    raise BadInput("Bad request: no field `snapshot` in the upload")


def _first_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return (text or type(exc).__name__)[:200]
