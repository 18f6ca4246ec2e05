"""Collection snapshots: Qdrant's snapshot API over Shoal's shards.

A collection snapshot is one uncompressed tar file (the same format will carry
replica transfers)::

    shoal-snapshot.json   {"format", "v", "collection", "config", "shards": [{"seq", "points"}], "created"}
    shards/<i>/...        shard i as of its export (``LocalShard.export``: the snapshot layout)

It is kept at ``<snapshots>/<key>/<name>.snapshot``, its SHA-256 beside it in
``<name>.snapshot.checksum``. ``<key>`` is a digest of the collection's name: a
name never becomes a path, and a collection created again under a name sees the
snapshots taken before, as in Qdrant. A snapshot is looked up by listing that
folder, never by joining a requested name onto a path.

Recovering reads only what this module writes: the tar's members are checked
against that layout before anything is extracted (no links, no absolute paths,
no ``..``), its config is read as a collection config, and the HNSW graphs in it
are not loaded but rebuilt from the vectors (a graph file is parsed by native
code: a crafted one must never reach it). A ``file://`` location must lie inside
the snapshots folder (Qdrant reads any local path; Shoal does not).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import re
import secrets
import tarfile
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import orjson

from cluster.collection import Collection, shard_config_of
from cluster.names import name_problem
from shard.fileio import OutsideRoot, contained, fsync_dir, remove_tree
from shard.types import BadInput, NotFound

log = logging.getLogger(__name__)

FORMAT = "shoal-collection-snapshot"
VERSION = 1
MANIFEST = "shoal-snapshot.json"
SUFFIX = ".snapshot"
CHECKSUM_SUFFIX = ".checksum"
_MEMBER = re.compile(r"shards/(\d{1,6})(?:/([A-Za-z0-9_.-]{1,64}))?")
_SHARD_FILE = re.compile(r"(meta|points|payload)\.json|(vectors|present|indexed)-\d{1,4}\.npy|hnsw-\d{1,4}\.bin|\.complete")


@dataclass(frozen=True)
class SnapshotDescription:
    """Qdrant's SnapshotDescription."""

    name: str
    creation_time: str
    size: int
    checksum: str | None

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "creation_time": self.creation_time, "size": self.size, "checksum": self.checksum}


@dataclass(frozen=True)
class Recovered:
    """A snapshot unpacked and checked: the collection's config and each shard's folder."""

    config: dict[str, Any]
    shard_folders: list[Path]
    work: Path


class Snapshots:
    """The snapshots of every collection, under ``root`` (inside ``storage``)."""

    def __init__(self, storage: Path, root: Path, shard_timeout: float, max_upload_bytes: int):
        self.storage = Path(storage)
        self.root = Path(root).resolve()  # a setting, never a request's text
        self.work_root = self.root / ".work"
        self.shard_timeout = shard_timeout
        self.max_upload_bytes = max_upload_bytes

    # ------------------------------------------------------------------ paths

    def _folder(self, collection: str) -> Path:
        key = hashlib.sha256(collection.encode()).hexdigest()[:32]
        return self.root / key

    def work_folder(self) -> Path:
        """A fresh folder for one operation's temporary files (removed by the caller)."""
        folder = self.work_root / uuid.uuid4().hex
        folder.mkdir(parents=True)
        return folder

    def clean(self) -> None:
        """At start-up: remove what operations a crash cut short left behind
        (their work folders, snapshot files not yet published)."""
        self.discard(self.work_root)
        if self.root.is_dir():
            for partial in self.root.glob("*/.*.partial"):
                with contextlib.suppress(OSError):
                    partial.unlink()

    def discard(self, folder: Path) -> None:
        with contextlib.suppress(FileNotFoundError, OutsideRoot):
            remove_tree(self.root, folder)

    # ---------------------------------------------------------------- listing

    def list(self, collection: str) -> list[SnapshotDescription]:
        folder = self._folder(collection)
        if not folder.is_dir():
            return []
        found = []
        for entry in sorted(folder.iterdir()):
            if entry.name.endswith(SUFFIX) and entry.is_file() and not entry.is_symlink():
                info = entry.stat()
                checksum = _read_checksum(entry)
                created = datetime.fromtimestamp(info.st_mtime, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
                found.append(SnapshotDescription(entry.name, created, info.st_size, checksum))
        return found

    def path(self, collection: str, snapshot_name: str) -> Path:
        """The file of a listed snapshot; NotFound (Qdrant's text) otherwise."""
        for entry in self.list(collection):
            if entry.name == snapshot_name:
                return self._folder(collection) / entry.name
        raise NotFound(f"Snapshot {snapshot_name} not found")

    def delete(self, collection: str, snapshot_name: str) -> None:
        path = self.path(collection, snapshot_name)
        path.unlink()
        with contextlib.suppress(FileNotFoundError):
            Path(str(path) + CHECKSUM_SUFFIX).unlink()
        fsync_dir(path.parent)

    # --------------------------------------------------------------- creating

    async def create(self, coll: Collection) -> SnapshotDescription:
        """Export every shard (consistent each, reads and writes go on), pack them
        with the config into one tar, and publish it atomically."""
        work = self.work_folder()
        try:
            shards = await asyncio.gather(*(
                s.call("export", str(work / "shards" / str(s.index)), timeout=self.shard_timeout)
                for s in coll.shards))
            manifest = {"format": FORMAT, "v": VERSION, "collection": coll.name, "config": coll.config,
                        "shards": shards, "created": datetime.now(timezone.utc).isoformat()}
            (work / MANIFEST).write_bytes(orjson.dumps(manifest))
            return await asyncio.to_thread(self._pack, coll.name, work)
        finally:
            await asyncio.to_thread(self.discard, work)

    def _pack(self, collection: str, work: Path) -> SnapshotDescription:
        folder = self._folder(collection)
        folder.mkdir(parents=True, exist_ok=True)
        name = _snapshot_name(collection)
        final = folder / name
        partial = folder / f".{name}.partial"
        digest = hashlib.sha256()
        with open(partial, "wb") as raw:
            hashing = _Hashing(raw, digest)
            with tarfile.open(fileobj=hashing, mode="w", format=tarfile.PAX_FORMAT) as tar:
                tar.add(work / MANIFEST, arcname=MANIFEST)
                for shard in sorted((work / "shards").iterdir(), key=lambda p: int(p.name)):
                    for item in sorted(shard.iterdir()):
                        tar.add(item, arcname=f"shards/{shard.name}/{item.name}")
            raw.flush()
            os.fsync(raw.fileno())
        checksum = digest.hexdigest()
        Path(str(final) + CHECKSUM_SUFFIX).write_text(checksum)
        os.replace(partial, final)
        fsync_dir(folder)
        info = final.stat()
        created = datetime.fromtimestamp(info.st_mtime, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
        log.info("collection `%s`: snapshot %s (%d bytes)", collection, name, info.st_size)
        return SnapshotDescription(name, created, info.st_size, checksum)

    # ------------------------------------------------------------- recovering

    def location(self, url: str) -> Path:
        """The file a ``file://`` location names, which must be inside the
        snapshots folder; BadInput (400) otherwise."""
        parts = urlsplit(url)
        if parts.scheme != "file":
            raise BadInput(f"Bad request: URL {url} with scheme {parts.scheme} is not supported")
        if parts.netloc not in ("", "localhost"):
            raise BadInput("Bad request: Invalid snapshot URI, file path must be absolute or on localhost")
        try:
            path = contained(self.root, unquote(parts.path))
        except OutsideRoot:
            raise BadInput("Bad request: snapshot files are read from the snapshots folder only "
                           "(setting storage.snapshots_path)") from None
        if not path.is_file():
            raise BadInput(f"Bad request: Snapshot file {url} does not exist")
        return path

    def unpack(self, archive: Path, checksum: str | None, limits_shards: int) -> Recovered:
        """Check and unpack a snapshot file into a work folder (the caller
        discards ``work`` when done); BadInput for anything that is not a
        snapshot this module wrote."""
        if checksum is not None:
            actual = _file_sha256(archive)
            if actual != checksum:
                raise BadInput(f"Snapshot checksum mismatch: expected {checksum}, got {actual}")
        work = self.work_folder()
        try:
            manifest = _extract(archive, work)
            config = manifest.get("config")
            shards = manifest.get("shards")
            if not isinstance(config, dict) or not isinstance(shards, list):
                raise BadInput("the snapshot's manifest lacks its config or its shards")
            try:
                shard_config_of(config)
                number = config["params"].get("shard_number", 1)
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise BadInput(f"the snapshot's collection config cannot be read: {exc}") from None
            if number != len(shards) or not 1 <= number <= limits_shards:
                raise BadInput(f"the snapshot holds {len(shards)} shard(s) for a shard_number of {number}")
            folders = [work / "shards" / str(i) for i in range(number)]
            for folder in folders:
                if not (folder / "meta.json").is_file():
                    raise BadInput(f"the snapshot lacks shard {folder.name}")
                for graph in folder.glob("hnsw-*.bin"):  # rebuilt from the vectors, never parsed
                    graph.unlink()
            return Recovered(config, folders, work)
        except BaseException:
            self.discard(work)
            raise


class _Hashing:
    """A write-only file object that hashes what passes through it."""

    def __init__(self, raw, digest):
        self.raw, self.digest = raw, digest

    def write(self, data) -> int:
        self.digest.update(data)
        return self.raw.write(data)

    def tell(self) -> int:
        return self.raw.tell()


def _snapshot_name(collection: str) -> str:
    """Qdrant's ``<collection>-<peer>-<time>.snapshot``; a name unfit for a file name
    (which only a collection from before names were checked can have) is left out."""
    usable = name_problem(collection) is None and not collection.startswith(".")
    stamp = time.strftime("%Y-%m-%d-%H-%M-%S", time.gmtime())
    return f"{collection if usable else 'collection'}-{secrets.token_hex(4)}-{stamp}{SUFFIX}"


def _read_checksum(path: Path) -> str | None:
    try:
        text = Path(str(path) + CHECKSUM_SUFFIX).read_text().strip()
    except OSError:
        return None
    return text if re.fullmatch(r"[0-9a-f]{64}", text) else None


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _extract(archive: Path, work: Path) -> dict[str, Any]:
    """Extract the members of the snapshot layout, and nothing else, into ``work``;
    the manifest, checked."""
    try:
        tar = tarfile.open(archive, mode="r:")
    except (tarfile.TarError, OSError) as exc:
        raise BadInput(f"the file is not a Shoal snapshot: {exc}") from None
    with tar:
        members = []
        for member in tar:
            if member.name == MANIFEST and member.isfile():
                members.append(member)
                continue
            match = _MEMBER.fullmatch(member.name)
            if match is None or not (member.isfile() or (member.isdir() and match.group(2) is None)):
                raise BadInput(f"the file is not a Shoal snapshot: unexpected member {member.name!r}")
            if match.group(2) is not None and not _SHARD_FILE.fullmatch(match.group(2)):
                raise BadInput(f"the file is not a Shoal snapshot: unexpected member {member.name!r}")
            members.append(member)
        if not any(m.name == MANIFEST for m in members):
            raise BadInput("the file is not a Shoal snapshot: no manifest")
        tar.extractall(work, members=members, filter="data")
    try:
        manifest = orjson.loads((work / MANIFEST).read_bytes())
    except orjson.JSONDecodeError:
        raise BadInput("the snapshot's manifest is not JSON") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or manifest.get("v") != VERSION:
        raise BadInput(f"the file is not a Shoal snapshot of version {VERSION}")
    return manifest
