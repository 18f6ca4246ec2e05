"""HTTP worker processes: more than one core for the REST layer.

One Python process spends most of a request's CPU in HTTP parsing, JSON and
validation, so a single gateway process caps throughput at about one core
whatever the shards can do. With ``service.workers > 1`` the server becomes:

- the **control** process (the one ``shoal serve`` started): Ray driver, Raft
  metadata, collection lifecycle, and one of the HTTP listeners. It also serves
  an internal Unix socket (``control.sock``) where workers read the registry and
  send the requests they do not handle themselves;
- N-1 **workers**, spawned by the control process, listening on the same port
  (SO_REUSEPORT lets the kernel spread connections). A worker answers reads and
  point writes itself, straight over the shards' Unix sockets, and forwards
  collection and alias changes to the control process.

Workers learn about metadata changes through a version number the control
process writes into a small memory-mapped file: a worker re-reads the registry
when the number moves (or when a shard socket breaks, as after a restart).
"""

from __future__ import annotations

import asyncio
import logging
import mmap
import os
import struct
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from cluster.collection import Collection, RunningCollections, Unavailable
from cluster.shard_client import DirectShard

log = logging.getLogger(__name__)

VERSION = struct.Struct("<Q")
REGISTRY_PATH = "/_shoal/registry"


class Forward(Exception):
    """Raised in a worker for a request only the control process can carry out."""


# --------------------------------------------------------------- control side


class Control:
    """The control process's side: the shared version number and the workers."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="shoal-"))
        self.socket_path = str(self.dir / "control.sock")
        self.version_path = self.dir / "version"
        self.version_path.write_bytes(bytes(VERSION.size))
        self._file = open(self.version_path, "r+b")
        self._map = mmap.mmap(self._file.fileno(), VERSION.size)
        self._version = 0
        self.processes: list[subprocess.Popen] = []

    def bump(self) -> None:
        """Tell the workers the registry changed."""
        self._version += 1
        VERSION.pack_into(self._map, 0, self._version)

    def spawn(self, count: int, argv: list[str]) -> None:
        """Start ``count`` workers: ``python -m gateway`` with the control's own
        flags plus where to find the control (same environment, same session)."""
        for _ in range(count):
            cmd = [sys.executable, "-m", "gateway", "_worker", "--control-dir", str(self.dir), *argv]
            self.processes.append(subprocess.Popen(cmd))

    def stop(self) -> None:
        for proc in self.processes:
            proc.terminate()
        for proc in self.processes:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        self._map.close()
        self._file.close()


async def registry_json(collections) -> dict[str, Any]:
    """What a worker needs: every collection's config and its shards' socket
    addresses, and the collections that could not be started."""
    out: dict[str, Any] = {"collections": {}, "unavailable": {}, "aliases": collections.aliases()}
    for coll in collections.running():
        addresses = await asyncio.gather(*(s.socket_address() for s in coll.shards))
        out["collections"][coll.name] = {"config": coll.config, "incarnation": coll.incarnation, "shards": addresses}
    for name in collections.names():
        down = collections.unavailable(name)
        if down is not None:
            out["unavailable"][name] = {"config": down[1].config, "reason": down[1].reason}
    return out


# ---------------------------------------------------------------- worker side


class RemoteCollections(RunningCollections):
    """A worker's read-only view of the registry, kept in step with the control's."""

    def __init__(self, control_dir: Path):
        self.socket_path = str(control_dir / "control.sock")
        self._file = open(control_dir / "version", "rb")
        self._map = mmap.mmap(self._file.fileno(), VERSION.size, access=mmap.ACCESS_READ)
        self._seen = -1
        self._stale = False
        self._running: dict[str, Collection] = {}
        self._unavailable: dict[str, Unavailable] = {}
        self._aliases: dict[str, str] = {}
        self._session: aiohttp.ClientSession | None = None
        self._refreshing = asyncio.Lock()
        self.ready = True

    def _current(self) -> int:
        return VERSION.unpack_from(self._map, 0)[0]

    def mark_stale(self) -> None:
        """A shard socket broke: re-read where the shards are before the next request."""
        self._stale = True

    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=self.socket_path))
        return self._session

    async def refresh(self, force: bool = False) -> None:
        """Re-read the registry if the control's version moved (or when forced)."""
        force = force or self._stale
        if not force and self._current() == self._seen:
            return
        self._stale = False
        async with self._refreshing:
            version = self._current()
            if not force and version == self._seen:
                return
            async with self.session().get("http://control" + REGISTRY_PATH) as resp:
                data = (await resp.json())["result"]
            old = self._running
            running = {}
            for name, entry in data["collections"].items():
                kept = old.get(name)
                if kept is not None and kept.incarnation == entry["incarnation"] and not force:
                    kept.config = entry["config"]
                    running[name] = kept
                    continue
                coll = Collection(name, entry["config"], entry["incarnation"])
                coll.shards = [DirectShard(address, i, self.mark_stale) for i, address in enumerate(entry["shards"])]
                running[name] = coll
            self._unavailable = {n: Unavailable(u["config"], u["reason"]) for n, u in data["unavailable"].items()}
            self._running, self._aliases, self._seen = running, data["aliases"], version

    def _real_name(self, name: str) -> str | None:
        return self._aliases.get(name, name)

    def aliases(self) -> dict[str, str]:
        return dict(self._aliases)

    # Changes are the control's.
    async def create(self, *args: Any) -> None:
        raise Forward()

    delete = update = change_aliases = recover = create

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
        self._map.close()
        self._file.close()


async def forward(request: web.Request, remote: RemoteCollections) -> web.Response:
    """Replay ``request`` on the control process and relay its answer."""
    body = await request.read()
    headers = {"Content-Type": request.headers.get("Content-Type", "application/json")}
    for name in ("api-key", "Authorization"):  # the control checks the caller's credential again
        if name in request.headers:
            headers[name] = request.headers[name]
    url = "http://control" + request.path_qs
    async with remote.session().request(request.method, url, data=body, headers=headers) as resp:
        payload = await resp.read()
        response = web.Response(body=payload, status=resp.status)
        if "Content-Type" in resp.headers:
            response.headers["Content-Type"] = resp.headers["Content-Type"]
    await remote.refresh()
    return response


async def worker_ctx(app: web.Application):
    """An HTTP worker's start-up: read the registry from the control process."""
    from gateway.state import COLLECTIONS, CONTROL_DIR, READY

    remote = RemoteCollections(app[CONTROL_DIR])
    await remote.refresh(force=True)
    app[COLLECTIONS] = remote
    app[READY].set()
    watchdog = asyncio.create_task(_exit_with_parent())
    yield
    watchdog.cancel()
    await remote.close()


async def _exit_with_parent() -> None:
    """A worker outlives no control process: if it dies (even by SIGKILL), stop."""
    parent = os.getppid()
    while True:
        await asyncio.sleep(1.0)
        if os.getppid() != parent:
            log.warning("the control process is gone; this HTTP worker stops")
            os._exit(0)


def worker_count(setting: int) -> int:
    """``service.workers``: 0 means one per core."""
    return setting if setting > 0 else (os.cpu_count() or 1)
