"""Collection snapshots: create, list, download, delete, recover from a file in the
snapshots folder or from an upload (Qdrant's /collections/{name}/snapshots API).
The work is ``cluster.snapshots``'; this module reads requests and answers them."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from gateway import errors
from gateway.errors import FormatError
from gateway.params import bool_param
from gateway.routes.common import body, collection, registry
from gateway.state import CONTROL_TASKS, SETTINGS, SNAPSHOTS
from gateway.workers import Forward
from shard.types import BadInput

routes = web.RouteTableDef()
PREFIX = "/collections/{collection_name}/snapshots"
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


def _accepted(started: float) -> web.Response:
    """Qdrant's answer to an operation it goes on with in the background: 202."""
    return web.json_response({"result": None, "status": "accepted", "time": time.perf_counter() - started},
                             status=202)


@routes.get(PREFIX)
async def list_snapshots(request: web.Request):
    snapshots = _snapshots(request)
    coll = collection(request)
    return [d.to_json() for d in await asyncio.to_thread(snapshots.list, coll.name)]


@routes.post(PREFIX)
async def create_snapshot(request: web.Request):
    started = time.perf_counter()
    snapshots, wait = _snapshots(request), _wait(request)
    coll = collection(request)
    work = asyncio.ensure_future(snapshots.create(coll))
    if wait:
        return (await work).to_json()
    request.app[CONTROL_TASKS].add(work)
    work.add_done_callback(request.app[CONTROL_TASKS].discard)
    return _accepted(started)


@routes.get(PREFIX + "/{snapshot_name}")
async def download_snapshot(request: web.Request):
    snapshots = _snapshots(request)
    coll = collection(request)
    path = await asyncio.to_thread(snapshots.path, coll.name, request.match_info["snapshot_name"])
    return web.FileResponse(path, headers={"Content-Type": "application/octet-stream",
                                           "Content-Disposition": f'attachment; filename="{path.name}"'})


@routes.delete(PREFIX + "/{snapshot_name}")
async def delete_snapshot(request: web.Request):
    started = time.perf_counter()
    snapshots, wait = _snapshots(request), _wait(request)
    coll = collection(request)
    await asyncio.to_thread(snapshots.delete, coll.name, request.match_info["snapshot_name"])
    return True if wait else _accepted(started)  # done already: a file's removal is quick


@routes.put(PREFIX + "/recover")
async def recover_snapshot(request: web.Request):
    data = await body(request, "SnapshotRecover")
    snapshots, _ = _snapshots(request), _wait(request)
    if not urlsplit(data["location"]).scheme:
        raise FormatError("relative URL without a base")  # serde's words for a location that is no URL
    path = await asyncio.to_thread(snapshots.location, data["location"])
    await _recover(request, path, data.get("checksum"))
    return True


@routes.post(PREFIX + "/upload")
async def upload_snapshot(request: web.Request):
    snapshots, _ = _snapshots(request), _wait(request)
    work = await asyncio.to_thread(snapshots.work_folder)
    try:
        path = await _receive_upload(request, work / "upload.snapshot", snapshots.max_upload_bytes)
        await _recover(request, path, request.query.get("checksum"))
        return True
    finally:
        await asyncio.to_thread(snapshots.discard, work)


async def _recover(request: web.Request, path: Path, checksum: str | None) -> None:
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
