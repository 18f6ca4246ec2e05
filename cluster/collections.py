"""Where each collection's shards live, and their lifecycle.

The collection registry's truth is the Raft-replicated metadata
(``cluster.metadata``): a collection exists once its create operation is
committed there. This module turns that metadata into running shard actors —
at create, at start-up (restoring every collection found in storage), and
tears them down at delete.

Names never reach the file system or Ray. A collection's data lives at
``<storage>/collections/<incarnation>/shard-<i>/`` and its actors are named
``shard-<incarnation>-<i>``, where the incarnation is a UUID drawn for each
create (``cluster.names``); a re-created collection never reads an older one's
files. Every path written or deleted is checked to lie inside the storage
folder (``shard.fileio.contained``).

Create is all or nothing: the shards are started first, and only once all of
them answer is the create committed to the metadata; if they fail, or the
commit does, the actors are stopped and their files removed. A crash in
between leaves files no metadata names, which the next start removes. Restore
is per collection: one that cannot start is reported (logged, and answered as
"unavailable" by the API) and the others are served.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cluster import metadata_ops, runtime
from cluster.collection import Collection, RunningCollections, Unavailable, not_found
from cluster.metadata import MetadataStore
from cluster.metadata_ops import (
    ChangeAliases,
    CreateAlias,
    CreateCollection,
    DeleteAlias,
    DeleteCollection,
    RenameAlias,
    SetReplicaState,
    UpdateCollection,
)
from cluster.names import is_incarnation, name_problem, new_incarnation
from cluster.controller import ReplicaFailed, ReplicaStarted
from cluster.replica_set import ReplicaSet
from cluster.replicator import Peer
from cluster.replicas import ReplicaState, initial_placement
from cluster.shard_client import ShardUnavailable
from cluster.shards import ShardHandle
from shard.fileio import OutsideRoot, contained, fsync_dir, remove_tree
from shard.types import BadInput, Conflict

log = logging.getLogger(__name__)

LOCATE_TIMEOUT = 2.0  # seconds to tell where a replica another gateway started listens


@dataclass(frozen=True)
class Limits:
    """What one server hosts at most (see ``gateway.settings.LimitSettings``)."""

    max_shards_total: int = 128
    start_timeout: float = 300.0  # seconds for a collection's shards to answer


class _NameLocks:
    """One asyncio lock per collection name, dropped when nobody holds or awaits it:
    a create, update or delete of one name waits for another on the same name,
    never for one on a different name."""

    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}
        self._users: dict[str, int] = {}

    @contextlib.asynccontextmanager
    async def hold(self, name: str):
        lock = self._locks.setdefault(name, asyncio.Lock())
        self._users[name] = self._users.get(name, 0) + 1
        try:
            async with lock:
                yield
        finally:
            self._users[name] -= 1
            if not self._users[name]:
                del self._users[name], self._locks[name]

    def busy(self, name: str) -> bool:
        return name in self._users


class Collections(RunningCollections):
    """Running collections, kept in step with the metadata."""

    def __init__(self, storage: Path, metadata: MetadataStore, shard_options: dict[str, Any],
                 limits: Limits = Limits()):
        self.storage = Path(storage)
        self.root = self.storage / "collections"
        self.metadata = metadata
        self.shard_options = shard_options
        self.limits = limits
        self._running: dict[str, Collection] = {}
        self._unavailable: dict[str, Unavailable] = {}
        self._starting: dict[str, int] = {}  # name -> shards being started for a create
        self._names = _NameLocks()
        self._follow_lock = asyncio.Lock()
        self._followed = -1  # the metadata version ``follow`` last brought this gateway to
        self.following = False  # other gateways may change the metadata (cluster.follower)
        self.ready = False
        self.on_change = lambda: None  # told after every change of the registry

    # ----------------------------------------------------------------- lookups

    def _real_name(self, name: str) -> str | None:
        return self.metadata.resolve(name)

    def aliases(self) -> dict[str, str]:
        return self.metadata.aliases()

    # ------------------------------------------------------------------- paths

    def _dir(self, incarnation: str) -> Path:
        """``<storage>/collections/<incarnation>``, checked: an incarnation read
        back from the metadata is used in a path only if it is one."""
        if not is_incarnation(incarnation):
            raise OutsideRoot(f"refusing a collection folder for incarnation {incarnation!r}")
        return contained(self.storage, self.root / incarnation)

    def _remove_files(self, incarnation: str) -> None:
        try:
            remove_tree(self.storage, self._dir(incarnation))
        except OutsideRoot as exc:
            log.error("collection files not removed: %s", exc)

    # ------------------------------------------------------------------ shards

    async def _start(self, name: str, config: dict[str, Any], incarnation: str,
                     placement: dict[str, Any] | None = None, spawn: bool = True) -> Collection:
        """Start the shards of one collection and wait until every one answers;
        if any fails or the wait exceeds ``limits.start_timeout``, stop them all
        and raise. A ``placement`` that lists replicas: ``_start_replicated``.
        ``spawn=False`` starts nothing: it finds the actors another gateway started
        (``follow``), and a shard not found fails the start."""
        if placement is not None and isinstance(placement.get("shards"), list):
            return await self._start_replicated(name, config, incarnation, placement, spawn)
        folder = self._dir(incarnation)
        collection = Collection(name, config, incarnation)
        shard_config = collection.shard_config.to_json()
        nodes = await asyncio.to_thread(runtime.shard_nodes)
        for i in range(config["params"].get("shard_number", 1)):
            actor_name = f"shard-{incarnation}-{i}"
            if spawn:
                actor = runtime.spawn_shard(actor_name, str(folder / f"shard-{i}"), shard_config, self.shard_options,
                                            node=_node_for(incarnation, i, nodes))
            else:
                actor = await asyncio.to_thread(runtime.find_shard, actor_name)
                if actor is None:
                    raise ShardUnavailable(f"shard {i} of collection `{name}` is not running")
            collection.shards.append(ShardHandle(actor, i, self.shard_options.get("wire_secret")))
        try:
            async with asyncio.timeout(self.limits.start_timeout):
                await asyncio.gather(*(s.ready() for s in collection.shards))
        except BaseException as exc:
            if spawn:
                await self._stop(collection, take_snapshot=False)
            if isinstance(exc, TimeoutError):
                raise ShardUnavailable(f"the shards of collection `{name}` did not start within "
                                       f"{self.limits.start_timeout:g} s (setting limits.shard_start_timeout_s)") from None
            raise
        return collection

    async def _start_replicated(self, name: str, config: dict[str, Any], incarnation: str,
                                placement: dict[str, Any], spawn: bool = True) -> Collection:
        """Start every replica the placement lists on a live node (each a detached
        actor pinned to its node: ``shard-<incarnation>-<shard>-<replica>``, its data
        in ``shard-<shard>-<replica>``; one already running is reused), wait until
        they answer, and give each shard a ReplicaSet over them. Replicas that
        cannot start are left to the controller, unless a shard has no replica that
        could serve: then the start fails, as an unreplicated one does.
        ``spawn=False``: only the replicas found running are used."""
        folder = self._dir(incarnation)
        collection = Collection(name, config, incarnation)
        shard_config = collection.shard_config.to_json()
        alive = set(await asyncio.to_thread(runtime.shard_nodes))
        secret = self.shard_options.get("wire_secret")
        handles: list[dict[str, ShardHandle]] = []
        for i, entry in enumerate(placement["shards"]):
            started = {}
            for replica, info in sorted(entry["replicas"].items()):
                if info["node"] not in alive or info["state"] == "dead":
                    continue
                actor_name = f"shard-{incarnation}-{i}-{replica}"
                if spawn:
                    actor = runtime.spawn_shard(actor_name, str(folder / f"shard-{i}-{replica}"), shard_config,
                                                self.shard_options, node=info["node"], detached=True)
                else:
                    actor = await asyncio.to_thread(runtime.find_shard, actor_name)
                    if actor is None:
                        continue
                started[replica] = ShardHandle(actor, i, secret)
            handles.append(started)
        every = [h for started in handles for h in started.values()]

        async def up(handle: ShardHandle):
            await handle.ready()
            return await runtime.endpoints(handle.actor)

        try:
            async with asyncio.timeout(self.limits.start_timeout):
                answers = iter(await asyncio.gather(*(up(h) for h in every), return_exceptions=True))
            endpoints = []
            for i, started in enumerate(handles):  # ``every`` is the handles in this order
                endpoints.append({})
                for replica in list(started):
                    answer = next(answers)
                    if isinstance(answer, BaseException):
                        log.warning("collection `%s`: replica %s of shard %d did not start: %s", name, replica, i,
                                    answer)
                        del started[replica]
                    else:
                        endpoints[i][replica] = answer
                if not any(placement["shards"][i]["replicas"][r]["state"] == ReplicaState.ACTIVE for r in started):
                    raise ShardUnavailable(f"shard {i} of collection `{name}` has no replica that could serve")
        except BaseException as exc:
            if spawn:
                await asyncio.gather(*(h.stop(take_snapshot=False) for h in every), return_exceptions=True)
            if isinstance(exc, TimeoutError):
                raise ShardUnavailable(f"the replicas of collection `{name}` did not start within "
                                       f"{self.limits.start_timeout:g} s (setting limits.shard_start_timeout_s)") from None
            raise
        params = config["params"]
        for i, entry in enumerate(placement["shards"]):
            collection.shards.append(ReplicaSet(
                i, entry, handles[i], endpoints[i], own_node=runtime.own_node(),
                write_factor=params.get("write_consistency_factor") or 1,
                read_fan_out=params.get("read_fan_out_factor") or 0,
                mark_dead=self._marker(name, incarnation), secret=secret, locate=self._locator(incarnation)))
        return collection

    def _marker(self, name: str, incarnation: str):
        """The ``mark_dead`` of a replicated collection's shards: commit each replica's
        ``dead`` through Raft (from the state it was seen in, a change since winning;
        or from any state), then hand every shard of the collection the placement as
        now committed."""

        async def mark_dead(shard: int, states: dict[str, str | None]) -> None:
            for replica, state in states.items():
                await asyncio.to_thread(self.metadata.propose,
                                        SetReplicaState(name, incarnation, shard, replica, "dead", from_state=state))
                log.log(logging.WARNING if state is not None else logging.INFO,
                        "collection `%s`: replica %s of shard %d missed a write: marked dead", name, replica, shard)
            self._refresh_placement(name)

        return mark_dead

    def _locator(self, incarnation: str):
        """The ``locate`` of a replicated collection's shards: a replica looked up
        in Ray by its actor's name (``runtime.locate_shard``)."""
        secret = self.shard_options.get("wire_secret")

        async def locate(shard: int, replica: str):
            found = await runtime.locate_shard(f"shard-{incarnation}-{shard}-{replica}", LOCATE_TIMEOUT)
            if not isinstance(found, tuple):
                return found
            actor, where = found
            handle = ShardHandle(actor, shard, secret)
            handle.endpoints = where
            return handle, where

        return locate

    # ------------------------------------------------- the controller's hands

    def _replica_set(self, name: str, incarnation: str, shard: int) -> ReplicaSet:
        collection = self._running.get(name)
        if collection is None or collection.incarnation != incarnation or not 0 <= shard < len(collection.shards) \
                or not isinstance(collection.shards[shard], ReplicaSet):
            raise ShardUnavailable(f"no running replicated shard {shard} of `{name}` ({incarnation})")
        return collection.shards[shard]

    def _replica_actor(self, name: str, incarnation: str, shard: int, replica: str, node: str):
        collection = self._running[name]
        folder = self._dir(incarnation)
        return runtime.spawn_shard(f"shard-{incarnation}-{shard}-{replica}", str(folder / f"shard-{shard}-{replica}"),
                                   collection.shard_config.to_json(), self.shard_options, node=node, detached=True)

    async def start_replica(self, name: str, incarnation: str, shard: int, replica: str, node: str) -> int:
        """Run a replica's actor on ``node`` (or find it running), add it to its
        shard's set; the sequence its storage holds."""
        replicas = self._replica_set(name, incarnation, shard)
        handle = replicas.replicas.get(replica)
        if handle is None:
            handle = ShardHandle(self._replica_actor(name, incarnation, shard, replica, node), shard,
                                 self.shard_options.get("wire_secret"))
        async with asyncio.timeout(self.limits.start_timeout):
            await handle.ready()
            where = await runtime.endpoints(handle.actor)
            seq = await handle.call("applied_seq")
        replicas = self._replica_set(name, incarnation, shard)  # still there after the wait
        replicas.update(replicas.shard, {**replicas.replicas, replica: handle}, {**replicas.endpoints, replica: where})
        return seq

    async def stop_replica(self, name: str, incarnation: str, shard: int, replica: str) -> None:
        """End a replica's actor and delete its storage (the actor does, on its node)."""
        try:
            replicas = self._replica_set(name, incarnation, shard)
        except ShardUnavailable:
            replicas = None
        handle = replicas.replicas.get(replica) if replicas is not None else None
        if handle is not None:
            replicas.update(replicas.shard, {r: h for r, h in replicas.replicas.items() if r != replica},
                            {r: e for r, e in replicas.endpoints.items() if r != replica})
            await runtime.destroy(handle.actor)
        else:
            await runtime.destroy_named(f"shard-{incarnation}-{shard}-{replica}")

    async def transfer(self, name: str, incarnation: str, shard: int, source: str, target: str,
                       timeout: float) -> int:
        """Have ``target`` pull a copy of ``source`` (``ServedShard.transfer_from``);
        the target's sequence after it."""
        replicas = self._replica_set(name, incarnation, shard)
        if source not in replicas.endpoints or target not in replicas.replicas:
            raise ShardUnavailable(f"replica {source if source not in replicas.endpoints else target} "
                                   f"of shard {shard} of `{name}` is not running")
        return await replicas.replicas[target].call("transfer_from", Peer(source, replicas.endpoints[source]),
                                                    timeout, timeout=timeout + 30)

    async def sweep_replicas(self, state: dict[str, Any]) -> list:
        """The controller's sweep: each replica the metadata lists, reported running
        (with its sequence) or not."""
        reports, checks = [], []
        for name, record in sorted(state["collections"].items()):
            placement = record.get("placement") or {}
            if not isinstance(placement.get("shards"), list):
                continue
            for shard, entry in enumerate(placement["shards"]):
                for replica in sorted(entry["replicas"]):
                    key = (name, placement["incarnation"], shard, replica)
                    try:
                        handle = self._replica_set(*key[:3]).replicas.get(replica)
                    except ShardUnavailable:
                        handle = None
                    if handle is None:
                        reports.append(ReplicaFailed(*key, reason="not running"))
                    else:
                        checks.append((key, handle))

        async def check(key, handle):
            try:
                return ReplicaStarted(*key, applied_seq=await handle.call("applied_seq", timeout=5))
            except Exception as exc:  # noqa: BLE001 - any failure: not running for the controller
                return ReplicaFailed(*key, reason=str(exc))

        return reports + list(await asyncio.gather(*(check(k, h) for k, h in checks)))

    def placement_changed(self) -> None:
        """Hand every replicated shard the placement as the metadata now holds it."""
        for name in list(self._running):
            self._refresh_placement(name)

    def _refresh_placement(self, name: str) -> None:
        collection, entry = self._running.get(name), self.metadata.collection(name)
        if collection is None or entry is None or entry["placement"].get("incarnation") != collection.incarnation:
            return
        for shard, placed in zip(collection.shards, entry["placement"].get("shards") or ()):
            if isinstance(shard, ReplicaSet):
                listed = placed["replicas"]
                shard.update(placed, {r: h for r, h in shard.replicas.items() if r in listed},
                             {r: e for r, e in shard.endpoints.items() if r in listed})

    # ------------------------------------------ following the other gateways

    def behind(self, name: str) -> bool:
        """Whether the metadata changed ``name`` (a collection or an alias) since this
        gateway last followed it: created, deleted or re-created through another one."""
        if not self.following or self.metadata.version == self._followed or not self.ready:
            return False
        real = self.metadata.resolve(name) or name
        running = self._running.get(real)
        return self.metadata.incarnation(real) != (running.incarnation if running is not None else None)

    async def follow(self) -> None:
        """Bring the running collections in step with the metadata, whichever gateway
        (or the controller) changed it: start serving a collection created elsewhere
        (its shards found running, never started here), forget one deleted or
        re-created, take a new config and placement, and reach replicas added since.
        A name whose own change is under way on this gateway is left to that change.
        Called after every metadata apply (``MetadataFollower``), every few seconds,
        and by a request that finds this gateway behind."""
        if not self.ready:  # restore starts everything the metadata holds
            return
        async with self._follow_lock:
            version = self.metadata.version
            entries = self.metadata.collections()
            changed = False
            for name in sorted({*self._running, *self._unavailable, *entries}):
                if self._names.busy(name):
                    continue
                async with self._names.hold(name):
                    try:
                        changed |= await self._follow_one(name, self.metadata.collection(name))
                    except Exception as exc:  # noqa: BLE001 - one collection's trouble never stops the others
                        log.warning("collection `%s`: could not follow its metadata: %s", name, _reason(exc))
            self._followed = version
            if changed:
                self.on_change()

    async def _follow_one(self, name: str, entry: dict[str, Any] | None) -> bool:
        """``follow`` for one name; whether the registry changed."""
        placement = (entry or {}).get("placement") or {}
        running = self._running.get(name)
        changed = False
        if running is not None and placement.get("incarnation") != running.incarnation:
            del self._running[name]  # deleted, or re-created, through another gateway
            if not any(isinstance(s, ReplicaSet) for s in running.shards):
                await self._stop(running, take_snapshot=False)  # non-detached actors this gateway found or started
            running, changed = None, True
        if entry is None:
            return self._unavailable.pop(name, None) is not None or changed
        if running is None:
            try:
                collection = await self._start(name, entry["config"], placement.get("incarnation"), placement,
                                               spawn=False)
            except Exception as exc:  # noqa: BLE001 - reported as the collection's state
                before = self._unavailable.get(name)
                self._unavailable[name] = Unavailable(entry["config"], _reason(exc))
                return changed or before is None
            self._unavailable.pop(name, None)
            self._running[name] = collection
            log.info("collection `%s`: serving it (created through another gateway)", name)
            return True
        if running.config != entry["config"]:
            running.config = entry["config"]
            params = entry["config"]["params"]
            for shard in running.shards:
                if isinstance(shard, ReplicaSet):
                    shard.write_factor = params.get("write_consistency_factor") or 1
                    shard.read_fan_out = params.get("read_fan_out_factor") or 0
            changed = True
        self._refresh_placement(name)
        await self._reach_new_replicas(running, placement)
        return changed

    async def _reach_new_replicas(self, collection: Collection, placement: dict[str, Any]) -> None:
        """Add to each shard's set the listed replicas (not dead) it has no client
        for and that are running: added by the controller, or restarted."""
        missing = [(shard, replica) for shard, entry in zip(collection.shards, placement.get("shards") or ())
                   if isinstance(shard, ReplicaSet)
                   for replica, info in sorted(entry["replicas"].items())
                   if info["state"] != ReplicaState.DEAD and replica not in shard.replicas]
        locate = self._locator(collection.incarnation)
        found = await asyncio.gather(*(locate(s.index, r) for s, r in missing), return_exceptions=True)
        for (shard, replica), answer in zip(missing, found):
            if not isinstance(answer, tuple) or replica in shard.replicas or replica not in shard.shard["replicas"]:
                continue
            handle, where = answer
            shard.update(shard.shard, {**shard.replicas, replica: handle}, {**shard.endpoints, replica: where})

    @staticmethod
    async def _stop(collection: Collection, take_snapshot: bool = True) -> None:
        handles = [(s.index, h) for s in collection.shards
                   for h in (s.replicas.values() if isinstance(s, ReplicaSet) else [s])]
        results = await asyncio.gather(*(h.stop(take_snapshot=take_snapshot) for _, h in handles),
                                       return_exceptions=True)
        for (index, _), result in zip(handles, results):
            if isinstance(result, BaseException):
                log.warning("collection `%s`: shard %d did not stop cleanly: %s", collection.name, index, result)

    # ----------------------------------------------------------------- restore

    async def restore(self) -> None:
        """Start every collection the metadata knows. One that cannot start is
        logged and kept as unavailable; the others are served. Then remove the
        folders no metadata names (left by a create or delete a crash cut short)."""
        entries = self.metadata.collections()
        names = list(entries)
        results = await asyncio.gather(*(self._restore_one(n, entries[n]) for n in names), return_exceptions=True)
        for name, result in zip(names, results):
            if isinstance(result, Collection):
                self._running[name] = result
                continue
            reason = _reason(result)
            log.error("collection `%s` could not be loaded, the others are served: %s", name, reason)
            self._unavailable[name] = Unavailable(entries[name]["config"], reason)
        self._remove_orphans({e["placement"].get("incarnation") for e in entries.values()
                              if isinstance(e.get("placement"), dict)})
        self.ready = True
        log.info("restored %d collection(s)%s", len(self._running),
                 f", {len(self._unavailable)} unavailable" if self._unavailable else "")

    async def _restore_one(self, name: str, entry: dict[str, Any]) -> Collection:
        placement = entry.get("placement") or {}
        incarnation = placement.get("incarnation")
        if not is_incarnation(incarnation):
            raise OutsideRoot(f"its metadata names no valid storage folder ({incarnation!r})")
        await asyncio.to_thread(self._move_legacy_folder, name, incarnation)
        return await self._start(name, entry["config"], incarnation, placement)

    def _move_legacy_folder(self, name: str, incarnation: str) -> None:
        """Earlier versions kept a collection at ``collections/<name>/<incarnation>``:
        move it to ``collections/<incarnation>``. A name that made that path leave
        the storage folder is not followed: the collection is then reported."""
        new = self._dir(incarnation)
        legacy = self.root / name / incarnation
        if os.path.lexists(new) or not os.path.lexists(legacy):
            return
        try:
            legacy = contained(self.storage, legacy)
        except OutsideRoot:
            log.error("collection `%s`: an earlier version wrote its files outside the storage folder, at %s; "
                      "they are left there", name, legacy.resolve())
            raise OutsideRoot("an earlier version wrote its files outside the storage folder") from None
        os.rename(legacy, new)
        fsync_dir(new.parent)
        with contextlib.suppress(OSError):  # the name's folder, if nothing else is in it
            legacy.parent.rmdir()
        log.info("collection `%s`: moved its files to the layout by incarnation", name)

    def _remove_orphans(self, known: set) -> None:
        """Remove ``collections/<incarnation>`` folders no collection owns. Only
        folders named like an incarnation are touched; anything else is left."""
        if not self.root.is_dir():
            return
        for folder in self.root.iterdir():
            if folder.name in known:
                continue
            if is_incarnation(folder.name):
                log.info("removing the files of a collection that no longer exists (%s)", folder.name)
                self._remove_files(folder.name)
            else:
                log.warning("left alone in the storage folder: %s (Shoal did not write it)", folder.name)

    # ---------------------------------------------------------------- changes

    async def create(self, name: str, config: dict[str, Any], fill=None) -> None:
        """Create ``name``: all shards running and the create committed, or
        nothing (no metadata entry, no actors, no files). ``await fill(collection)``,
        if given, runs on the started shards before the commit (``init_from``'s copy):
        if it fails, the create does."""
        self._check_name(name)
        async with self._names.hold(name):
            if name in self._running or name in self._unavailable:
                raise Conflict(f"Collection `{name}` already exists!")
            await self._create_locked(name, config, new_incarnation(), prepare=fill)

    async def recover(self, name: str, config: dict[str, Any], shard_folders: list[Path]) -> None:
        """Make ``name`` hold what a snapshot holds: an existing collection of that
        name is dropped (as Qdrant replaces it), then the snapshot's shard folders
        become the shards' snapshots of a new incarnation, which starts as a
        create does (all or nothing)."""
        self._check_name(name)
        async with self._names.hold(name):
            if name in self._running or name in self._unavailable or self.metadata.collection(name):
                await self._delete_locked(name)
            incarnation = new_incarnation()
            folder = self._dir(incarnation)
            placement = await self._placement(config, incarnation)
            if "shards" in placement:
                # The replicas live on other machines: each is handed its shard's copy
                # over its connection once started, before the create is committed.
                async def fill(collection: Collection) -> None:
                    await asyncio.gather(*(s.restore_copy(str(f), timeout=self.limits.start_timeout, mark=False)
                                           for s, f in zip(collection.shards, shard_folders)))

                await self._create_locked(name, config, incarnation, placement, prepare=fill)
                return

            def place() -> None:
                for i, source in enumerate(shard_folders):
                    target = contained(self.storage, folder / f"shard-{i}" / "snapshot")
                    target.parent.mkdir(parents=True)
                    shutil.move(source, target)
                fsync_dir(folder)

            try:
                await asyncio.to_thread(place)
            except BaseException:
                await asyncio.to_thread(self._remove_files, incarnation)
                raise
            await self._create_locked(name, config, incarnation, placement)

    @staticmethod
    def _check_name(name: str) -> None:
        problem = name_problem(name)
        if problem is not None:  # the gateway answers this first, with Qdrant's 422
            raise BadInput(f"collection name `{name}`: {problem}")

    async def _placement(self, config: dict[str, Any], incarnation: str) -> dict[str, Any]:
        """Where a new collection's shards go. On one node, the unreplicated layout
        (one actor per shard, as ever). On a cluster of several nodes, replicas:
        ``replication_factor`` per shard (at most one per node), round the nodes, all
        ``active`` once started (a new shard has no data to miss), r0 the primary.
        With other gateways, replicas even on one node: they are detached actors,
        which outlive the gateway that created them (unreplicated shards do not)."""
        nodes = await asyncio.to_thread(runtime.shard_nodes)
        if len(nodes) < 2 and not self.metadata.partners:
            return {"incarnation": incarnation}
        params = config["params"]
        factor = params.get("replication_factor") or 1
        if factor > 1 and not self.shard_options.get("wire_secret"):
            raise BadInput("replicas on several machines forward writes to each other over TCP, which needs "
                           "cluster.secret: set it, or create the collection with replication_factor 1")
        shards = initial_placement(params.get("shard_number", 1), factor, nodes)
        for shard in shards:
            for replica in shard["replicas"].values():
                replica["state"] = ReplicaState.ACTIVE.value
        return {"incarnation": incarnation, "shards": shards}

    async def _create_locked(self, name: str, config: dict[str, Any], incarnation: str,
                             placement: dict[str, Any] | None = None, prepare=None) -> None:
        """Start the shards, ``await prepare(collection)`` if given, commit the create;
        all or nothing."""
        try:
            if placement is None:
                placement = await self._placement(config, incarnation)
        except BaseException:
            await asyncio.to_thread(self._remove_files, incarnation)
            raise
        op = CreateCollection(name, config, placement=placement)
        # Refuse what the commit would refuse (name taken by an alias, ...)
        # before starting any shard: apply is pure, so this is a dry run.
        try:
            metadata_ops.apply(self.metadata.state(), op)[1].unwrap()
            shard_count = sum(len(s["replicas"]) for s in placement["shards"]) if "shards" in placement \
                else config["params"].get("shard_number", 1)
            total = self._shard_count() + shard_count
            if total > self.limits.max_shards_total:
                raise BadInput(
                    f"creating `{name}` would bring this server to {total} shards, above its limit of "
                    f"{self.limits.max_shards_total} (setting limits.max_shards_total)")
        except BaseException:
            await asyncio.to_thread(self._remove_files, incarnation)
            raise
        self._starting[name] = shard_count
        try:
            collection = await self._start(name, config, incarnation, placement)  # stops its own on failure
            try:
                if prepare is not None:
                    await prepare(collection)
                await asyncio.to_thread(self.metadata.propose, op)
            except BaseException:
                await self._stop(collection, take_snapshot=False)
                raise
        except BaseException:
            await asyncio.to_thread(self._remove_files, incarnation)
            raise
        finally:
            del self._starting[name]
        self._running[name] = collection
        self.on_change()

    def _shard_count(self) -> int:
        """Shard actors running or starting (a replicated shard counts its replicas)."""
        running = sum(len(s.replicas) if isinstance(s, ReplicaSet) else 1
                      for c in self._running.values() for s in c.shards)
        return running + sum(self._starting.values())

    async def delete(self, name: str) -> bool:
        """Drop ``name`` (not an alias of it, as Qdrant): metadata first, then its
        actors, then its files. An unavailable collection can be deleted too."""
        async with self._names.hold(name):
            return await self._delete_locked(name)

    async def _delete_locked(self, name: str) -> bool:
        entry = self.metadata.collection(name)
        if entry is None and name not in self._running and name not in self._unavailable:
            return False
        await asyncio.to_thread(self.metadata.propose, DeleteCollection(name))
        collection = self._running.pop(name, None)
        self._unavailable.pop(name, None)
        self.on_change()
        placement = (entry or {}).get("placement") or {}
        if isinstance(placement.get("shards"), list) and is_incarnation(placement.get("incarnation")):
            # Every listed replica, running here or not, deletes its storage on its node.
            await asyncio.gather(*(runtime.destroy_named(f"shard-{placement['incarnation']}-{i}-{r}")
                                   for i, shard in enumerate(placement["shards"]) for r in shard["replicas"]))
        elif collection is not None:
            await self._stop(collection, take_snapshot=False)
        incarnation = (entry or {}).get("placement", {}).get("incarnation")
        if collection is not None:
            incarnation = collection.incarnation
        if is_incarnation(incarnation):
            # Off the event loop: a collection's folder can hold gigabytes.
            await asyncio.to_thread(self._remove_files, incarnation)
        return True

    async def update(self, name: str, config: dict[str, Any]) -> None:
        """Replace a collection's config (the caller applied the PATCH diff to it)."""
        async with self._names.hold(name):
            if name not in self._running:
                self.resolve(name)  # unavailable: say so
                raise not_found(name)
            await asyncio.to_thread(self.metadata.propose, UpdateCollection(name, replace=config))
            self._running[name].config = self.metadata.collections()[name]["config"]
            self.on_change()

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
        """At shutdown: close every unreplicated shard cleanly (snapshot, log). The
        replicas of replicated collections belong to the cluster, not to this
        gateway: they keep running, for the other gateways and for this one's restart."""
        running, self._running = self._running, {}
        own = [c for c in running.values() if not any(isinstance(s, ReplicaSet) for s in c.shards)]
        await asyncio.gather(*(self._stop(c) for c in own), return_exceptions=True)


def _reason(error: BaseException) -> str:
    """A one-line reason for an API answer: the error's own words, no traceback."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[-1] if text else ''}".rstrip(": ")


def _node_for(incarnation: str, shard: int, nodes: list[str]) -> str | None:
    """The node a shard of an unreplicated collection starts on: the shards go
    round the nodes, from a point the incarnation picks (so that collections of
    one shard spread too). Pinned even when only one node has CPUs: a shard asks
    Ray for no CPU, so Ray would also place it on a node without CPUs (a gateway's
    own, which is there to route). None when no node has CPUs: Ray's choice.

    This placement is not recorded: a restart of the gateway recomputes it from
    the nodes alive then, so the nodes must share the storage folder, and a shard
    whose node is lost is unavailable until the node is back. Replicated
    collections are placed by the controller and recorded in the metadata
    (docs/cluster.md)."""
    if not nodes:
        return None
    return nodes[(int(incarnation[:8], 16) + shard) % len(nodes)]
