"""Where each collection's shards live, and their lifecycle.

The collection registry's truth is the Raft-replicated metadata
(``cluster.metadata``): a collection exists once its create operation is
committed there. This module turns that metadata into running shard actors —
at create, at start-up (restoring every collection found in storage), and
tears them down at delete. Shard data lives at
``<storage>/collections/<name>/<incarnation>/shard-<i>/``; the incarnation (a
UUID chosen before proposing, never inside ``apply``) keeps a re-created
collection from ever reading an older one's files.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import uuid
from pathlib import Path
from typing import Any

from cluster import runtime
from cluster.metadata import MetadataStore
from cluster.metadata_ops import ChangeAliases, CreateAlias, CreateCollection, DeleteAlias, DeleteCollection, RenameAlias, UpdateCollection
from cluster.collection import Collection, RunningCollections, not_found
from cluster.shards import ShardHandle
from shard.types import Conflict

log = logging.getLogger(__name__)


class Collections(RunningCollections):
    """Running collections, kept in step with the metadata."""

    def __init__(self, storage: Path, metadata: MetadataStore, shard_options: dict[str, Any]):
        self.storage = storage
        self.metadata = metadata
        self.shard_options = shard_options
        self._running: dict[str, Collection] = {}
        self._lock = asyncio.Lock()
        self.ready = False
        self.on_change = lambda: None  # told after every change of the registry

    # ----------------------------------------------------------------- lookups

    def _real_name(self, name: str) -> str | None:
        return self.metadata.resolve(name)

    # --------------------------------------------------------------- lifecycle

    def _shard_dir(self, name: str, incarnation: str, i: int) -> Path:
        return self.storage / "collections" / name / incarnation / f"shard-{i}"

    async def _start(self, name: str, entry: dict[str, Any]) -> Collection:
        incarnation = entry["placement"]["incarnation"]
        collection = Collection(name, entry["config"], incarnation)
        config = collection.shard_config.to_json()
        for i in range(entry["config"]["params"].get("shard_number", 1)):
            path = self._shard_dir(name, incarnation, i)
            actor = runtime.spawn_shard(f"{name}/{incarnation}/{i}", str(path), config, self.shard_options)
            collection.shards.append(ShardHandle(actor, i))
        await asyncio.gather(*(s.ready() for s in collection.shards))
        return collection

    async def restore(self) -> None:
        """Start every collection the metadata knows; remove folders it does not
        (left by a delete that crashed before cleaning up)."""
        entries = self.metadata.collections()
        started = await asyncio.gather(*(self._start(n, e) for n, e in entries.items()))
        self._running = {c.name: c for c in started}
        root = self.storage / "collections"
        if root.exists():
            for folder in root.iterdir():
                entry = entries.get(folder.name)
                for inc in folder.iterdir() if folder.is_dir() else ():
                    if entry is None or inc.name != entry["placement"]["incarnation"]:
                        shutil.rmtree(inc, ignore_errors=True)
        self.ready = True
        log.info("restored %d collection(s)", len(self._running))

    async def create(self, name: str, config: dict[str, Any]) -> None:
        async with self._lock:
            if name in self._running:
                raise Conflict(f"Collection `{name}` already exists!")
            op = CreateCollection(name, config, placement={"incarnation": uuid.uuid4().hex})
            await asyncio.to_thread(self.metadata.propose, op)
            self._running[name] = await self._start(name, self.metadata.collections()[name])
            self.on_change()

    async def delete(self, name: str) -> bool:
        async with self._lock:
            if name not in self._running:
                return False
            await asyncio.to_thread(self.metadata.propose, DeleteCollection(name))
            collection = self._running.pop(name)
            await asyncio.gather(*(s.stop(take_snapshot=False) for s in collection.shards))
            # Off the event loop: a collection's folder can hold gigabytes.
            await asyncio.to_thread(shutil.rmtree, self.storage / "collections" / name, True)
            self.on_change()
            return True

    async def update(self, name: str, config: dict[str, Any]) -> None:
        """Replace a collection's config (the caller applied the PATCH diff to it)."""
        async with self._lock:
            if name not in self._running:
                raise not_found(name)
            await asyncio.to_thread(self.metadata.propose, UpdateCollection(name, replace=config))
            self._running[name].config = self.metadata.collections()[name]["config"]
            self.on_change()

    def aliases(self) -> dict[str, str]:
        return self.metadata.aliases()

    async def change_aliases(self, actions: list[dict[str, Any]]) -> None:
        """POST /collections/aliases: the actions in order, as one metadata entry."""
        ops = []
        for action in actions:
            (kind, args), = action.items()
            if kind == "create_alias":
                ops.append(CreateAlias(args["alias_name"], args["collection_name"]))
            elif kind == "delete_alias":
                ops.append(DeleteAlias(args["alias_name"]))
            elif kind == "rename_alias":
                ops.append(RenameAlias(args["old_alias_name"], args["new_alias_name"]))
        try:
            await asyncio.to_thread(self.metadata.propose, ChangeAliases(tuple(ops)))
        finally:
            self.on_change()  # actions before a failing one are kept, as in Qdrant

    async def close(self) -> None:
        running, self._running = self._running, {}
        await asyncio.gather(*(s.stop() for c in running.values() for s in c.shards), return_exceptions=True)
