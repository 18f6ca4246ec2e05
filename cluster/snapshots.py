"""Collection and shard snapshots: Qdrant's snapshot API over Shoal's shards.

A collection snapshot is one uncompressed tar file (the same format will carry
replica transfers)::

    shoal-snapshot.json   {"format", "v", "collection", "config", "shards": [{"seq", "points"}], "created"}
    shards/<i>/...        shard i as of its export (``LocalShard.export``: the snapshot layout)

A shard snapshot is the same tar holding one shard: its manifest is
``{"format": "shoal-shard-snapshot", "v", "collection", "config", "shard_id",
"shard_number", "seq", "points", "created"}`` and ``shards/<shard_id>/`` holds
that shard's export, the folder a replica transfer sends. Recovering one makes
the running shard hold it (``LocalShard.restore``); it must come from a shard of
the same vectors, the same shard id and the same shard number (a point lives in
the shard its id hashes to).

A collection snapshot is kept at ``<snapshots>/<key>/<name>.snapshot``, a shard
snapshot at ``<snapshots>/<key>/shards/<shard_id>/<name>.snapshot``, each with its
SHA-256 beside it in ``<name>.snapshot.checksum``. ``<key>`` is a digest of the
collection's name: a name never becomes a path, and a collection created again
under a name sees the snapshots taken before, as in Qdrant. A snapshot is looked
up by listing its folder, never by joining a requested name onto a path.

Recovering reads only what this module writes: the tar's members are checked
against that layout before anything is extracted (no links, no absolute paths,
no ``..``), its config is read as a collection config, and the HNSW graphs in it
are not loaded but rebuilt from the vectors (a graph file is parsed by native
code: a crafted one must never reach it). A ``file://`` location must lie inside
the snapshots folder (Qdrant reads any local path for a collection, and no
``file://`` location at all for a shard; Shoal reads one in that folder for both).
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
from cluster.names import name_problem, snapshot_name_problem
from shard import snapshot
from shard.fileio import OutsideRoot, contained, fsync_dir, remove_tree
from shard.types import BadInput, NotFound

log = logging.getLogger(__name__)

FORMAT = "shoal-collection-snapshot"
SHARD_FORMAT = "shoal-shard-snapshot"
VERSION = 1
MANIFEST = "shoal-snapshot.json"
SUFFIX = ".snapshot"
CHECKSUM_SUFFIX = ".checksum"
_MEMBER = re.compile(r"shards/(\d{1,6})(?:/([A-Za-z0-9_.-]{1,64}))?")
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")  # what makes a text a URL, for Rust's url crate


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

    def _folder(self, collection: str, shard_id: int | None = None) -> Path:
        """The folder of a collection's snapshots, or of one of its shard's."""
        folder = self.root / hashlib.sha256(collection.encode()).hexdigest()[:32]
        return folder if shard_id is None else folder / "shards" / str(int(shard_id))

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
            for partial in (*self.root.glob("*/.*.partial"), *self.root.glob("*/shards/*/.*.partial")):
                with contextlib.suppress(OSError):
                    partial.unlink()

    def discard(self, folder: Path) -> None:
        with contextlib.suppress(FileNotFoundError, OutsideRoot):
            remove_tree(self.root, folder)

    # ---------------------------------------------------------------- listing

    def list(self, collection: str, shard_id: int | None = None) -> list[SnapshotDescription]:
        """The snapshots of a collection, or of one of its shards."""
        folder = self._folder(collection, shard_id)
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

    def path(self, collection: str, snapshot_name: str, shard_id: int | None = None) -> Path:
        """The file of a listed snapshot; NotFound (Qdrant's text) otherwise. The
        requested name is checked (``snapshot_name_problem``) and matched against
        the folder's entries; the path is built from the entry found, and checked
        to lie in the snapshots folder."""
        if snapshot_name_problem(snapshot_name) is None:
            folder = self._folder(collection, shard_id)
            for entry in self.list(collection, shard_id):
                if entry.name == snapshot_name:
                    return contained(self.root, folder / entry.name)
        raise NotFound(f"Snapshot {snapshot_name} not found")

    def delete(self, collection: str, snapshot_name: str, shard_id: int | None = None) -> None:
        path = self.path(collection, snapshot_name, shard_id)
        path.unlink()
        with contextlib.suppress(FileNotFoundError):
            Path(str(path) + CHECKSUM_SUFFIX).unlink()
        fsync_dir(path.parent)

    # --------------------------------------------------------------- creating

    async def create(self, coll: Collection, shard_id: int | None = None) -> SnapshotDescription:
        """Export every shard, or the one ``shard_id`` names (each consistent, reads
        and writes go on), pack them with the config into one tar, and publish it
        atomically."""
        shards = coll.shards if shard_id is None else [coll.shards[shard_id]]
        work = self.work_folder()
        try:
            exported = await asyncio.gather(*(
                s.export_copy(str(work / "shards" / str(s.index)), timeout=self.shard_timeout) for s in shards))
            manifest = {"format": FORMAT, "v": VERSION, "collection": coll.name, "config": coll.config,
                        "created": datetime.now(timezone.utc).isoformat()}
            if shard_id is None:
                manifest["shards"] = exported
                name = _snapshot_name(coll.name)
            else:
                manifest.update(exported[0], format=SHARD_FORMAT, shard_id=shard_id, shard_number=len(coll.shards))
                name = _shard_snapshot_name(coll.name, shard_id)
            (work / MANIFEST).write_bytes(orjson.dumps(manifest))
            return await asyncio.to_thread(self._pack, self._folder(coll.name, shard_id), name, work)
        finally:
            await asyncio.to_thread(self.discard, work)

    def _pack(self, folder: Path, name: str, work: Path) -> SnapshotDescription:
        folder.mkdir(parents=True, exist_ok=True)
        final = _reserve(folder, name)
        checksum_file = Path(str(final) + CHECKSUM_SUFFIX)
        partial = folder / f".{final.name}.partial"
        digest = hashlib.sha256()
        try:
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
            checksum_file.write_text(checksum)  # before the snapshot appears, as Qdrant does
            os.replace(partial, final)
        except BaseException:
            partial.unlink(missing_ok=True)
            checksum_file.unlink(missing_ok=True)
            raise
        fsync_dir(folder)
        info = final.stat()
        created = datetime.fromtimestamp(info.st_mtime, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
        log.info("snapshot %s (%d bytes)", final.name, info.st_size)
        return SnapshotDescription(final.name, created, info.st_size, checksum)

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

    def shard_location(self, location: str, collection: str, shard_id: int) -> Path:
        """The file a shard recover's ``location`` names. As Qdrant reads it (an
        untagged URL or path): a text that is no URL is the name of one of the
        shard's snapshots; of the URLs, Shoal reads ``file://`` ones as
        ``location`` does (Qdrant refuses them here) and, like Qdrant, no scheme
        but those and ``http(s)``, which Shoal does not fetch."""
        scheme = _SCHEME.match(location)
        if scheme is None:
            return self.path(collection, location, shard_id)
        name = scheme.group(1).lower()
        if name not in ("file", "http", "https"):
            raise BadInput(f"Invalid snapshot URL {location}: URLs with {name} scheme are not supported")
        return self.location(location)

    def unpack(self, archive: Path, checksum: str | None, limits_shards: int) -> Recovered:
        """Check and unpack a collection snapshot file into a work folder (the
        caller discards ``work`` when done); BadInput for anything that is not a
        collection snapshot this module wrote."""

        def shard_folders(manifest: dict[str, Any], work: Path) -> tuple[dict[str, Any], list[Path]]:
            config, shards = manifest.get("config"), manifest.get("shards")
            if not isinstance(config, dict) or not isinstance(shards, list):
                raise BadInput("the snapshot's manifest lacks its config or its shards")
            number = _read_config(config)["params"].get("shard_number", 1)
            if number != len(shards) or not 1 <= number <= limits_shards:
                raise BadInput(f"the snapshot holds {len(shards)} shard(s) for a shard_number of {number}")
            return config, [work / "shards" / str(i) for i in range(number)]

        return self._unpack(archive, checksum, FORMAT, shard_folders)

    def unpack_shard(self, archive: Path, checksum: str | None, coll: Collection, shard_id: int) -> Recovered:
        """Check and unpack a shard snapshot file that fits shard ``shard_id`` of
        ``coll`` (same vectors, same shard id and shard number); BadInput otherwise."""

        def shard_folder(manifest: dict[str, Any], work: Path) -> tuple[dict[str, Any], list[Path]]:
            config, source, number = manifest.get("config"), manifest.get("shard_id"), manifest.get("shard_number")
            if not isinstance(config, dict) or not _is_index(source) or not _is_index(number):
                raise BadInput("the snapshot's manifest lacks its config or its shard")
            theirs, ours = _vectors_of(_read_config(config)), _vectors_of(coll.config)
            if theirs != ours:
                problem = f"its vectors ({_describe(theirs)}) are not the collection's ({_describe(ours)})"
            elif (source, number) != (shard_id, len(coll.shards)):
                problem = (f"it holds shard {source} of {number} shards, not shard {shard_id} of {len(coll.shards)} "
                           "(a point lives in the shard its id hashes to)")
            else:
                return config, [work / "shards" / str(source)]
            raise BadInput(f"the snapshot does not fit shard {shard_id} of collection `{coll.name}`: {problem}")

        return self._unpack(archive, checksum, SHARD_FORMAT, shard_folder)

    def _unpack(self, archive: Path, checksum: str | None, kind: str, folders_of) -> Recovered:
        """What both kinds of recover share: the checksum, the checked extraction,
        the manifest's kind, each shard folder present, and no graph kept."""
        if checksum is not None:
            actual = file_sha256(archive)
            if actual != checksum:
                raise BadInput(f"Snapshot checksum mismatch: expected {checksum}, got {actual}")
        work = self.work_folder()
        try:
            manifest = _extract(archive, work)
            if manifest["format"] != kind:
                raise BadInput(f"the file is a {_KINDS[manifest['format']]} snapshot, "
                               f"not a {_KINDS[kind]} snapshot: recover it as one")
            config, folders = folders_of(manifest, work)
            for folder in folders:
                if not (folder / "meta.json").is_file():
                    raise BadInput(f"the snapshot lacks shard {folder.name}")
                for graph in folder.glob("hnsw-*.bin"):  # rebuilt from the vectors, never parsed
                    graph.unlink()
            return Recovered(config, folders, work)
        except BaseException:
            self.discard(work)
            raise

    async def recover_shard(self, coll: Collection, shard_id: int, archive: Path, checksum: str | None) -> None:
        """Make shard ``shard_id`` of ``coll`` hold what the shard snapshot file
        holds (the shard swaps it in at once, see ``LocalShard.restore``)."""
        recovered = await asyncio.to_thread(self.unpack_shard, archive, checksum, coll, shard_id)
        try:
            done = await coll.shards[shard_id].restore_copy(str(recovered.shard_folders[0]), timeout=self.shard_timeout)
        finally:
            await asyncio.to_thread(self.discard, recovered.work)
        log.info("collection `%s`: shard %d recovered from a snapshot (%d points, sequence %d)",
                 coll.name, shard_id, done["points"], done["seq"])


class _Hashing:
    """A write-only file object that hashes what passes through it."""

    def __init__(self, raw, digest):
        self.raw, self.digest = raw, digest

    def write(self, data) -> int:
        self.digest.update(data)
        return self.raw.write(data)

    def tell(self) -> int:
        return self.raw.tell()


_KINDS = {FORMAT: "collection", SHARD_FORMAT: "shard"}
_MAX_LABEL_BYTES = 160  # of a collection's name in a snapshot's file name, which may have 255


def _label(collection: str) -> str:
    """The collection's name as the start of a snapshot's file name; a name unfit
    for one (which only a collection from before names were checked can have) or
    too long for one is left out."""
    usable = (name_problem(collection) is None and not collection.startswith(".")
              and len(collection.encode()) <= _MAX_LABEL_BYTES)
    return collection if usable else "collection"


def _stamp() -> str:
    return time.strftime("%Y-%m-%d-%H-%M-%S", time.gmtime())


def _snapshot_name(collection: str) -> str:
    """Qdrant's ``<collection>-<peer>-<time>.snapshot``, a random tag for the peer."""
    return f"{_label(collection)}-{secrets.token_hex(4)}-{_stamp()}{SUFFIX}"


def _shard_snapshot_name(collection: str, shard_id: int) -> str:
    """Qdrant's ``<collection>-shard-<id>-<time>.snapshot``."""
    return f"{_label(collection)}-shard-{shard_id}-{_stamp()}{SUFFIX}"


def _reserve(folder: Path, name: str) -> Path:
    """The path of a new snapshot called ``name`` in ``folder``, or ``name`` with
    ``-1``, ``-2`` ... before its suffix if that is taken (two snapshots of a shard
    in one second): reserved by creating its checksum file exclusively, so that
    two snapshots never publish under one name."""
    stem = name[: -len(SUFFIX)]
    for attempt in range(1000):
        final = folder / (name if attempt == 0 else f"{stem}-{attempt}{SUFFIX}")
        try:
            os.close(os.open(str(final) + CHECKSUM_SUFFIX, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        except FileExistsError:
            continue
        if not os.path.lexists(final):
            return final
        os.unlink(str(final) + CHECKSUM_SUFFIX)  # a snapshot whose checksum file was removed: not ours
    raise RuntimeError(f"no free name for snapshot {name}")


def _is_index(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 1 << 32


def _read_config(config: dict[str, Any]) -> dict[str, Any]:
    """A snapshot's collection config, checked to read as one; BadInput if not."""
    try:
        shard_config_of(config)
        config["params"].get("shard_number", 1)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise BadInput(f"the snapshot's collection config cannot be read: {exc}") from None
    return config


def _vectors_of(config: dict[str, Any]) -> dict[str, tuple[int, str]]:
    """What the stored data of a collection's shards depends on: each vector's size and
    distance (and, for a multivector, that it is one and its datatype)."""
    shard_config = shard_config_of(config)
    out = {name: (p.size, p.distance.value) for name, p in shard_config.vectors.items()}
    for name, p in shard_config.multi.items():
        out[name] = (p.size, f"{p.distance.value}, multivector of {p.datatype or 'float32'}")
    return out


def _describe(vectors: dict[str, tuple[int, str]]) -> str:
    return "; ".join(f"{f'{name}: ' if name else ''}size {size}, {distance}"
                     for name, (size, distance) in sorted(vectors.items()))


def _read_checksum(path: Path) -> str | None:
    try:
        text = Path(str(path) + CHECKSUM_SUFFIX).read_text().strip()
    except OSError:
        return None
    return text if re.fullmatch(r"[0-9a-f]{64}", text) else None


def file_sha256(path: Path) -> str:
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
            if match.group(2) is not None and not snapshot.FILE_NAME.fullmatch(match.group(2)):
                raise BadInput(f"the file is not a Shoal snapshot: unexpected member {member.name!r}")
            members.append(member)
        if not any(m.name == MANIFEST for m in members):
            raise BadInput("the file is not a Shoal snapshot: no manifest")
        tar.extractall(work, members=members, filter="data")
    try:
        manifest = orjson.loads((work / MANIFEST).read_bytes())
    except orjson.JSONDecodeError:
        raise BadInput("the snapshot's manifest is not JSON") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("format"), str) \
            or manifest["format"] not in _KINDS or manifest.get("v") != VERSION:
        raise BadInput(f"the file is not a Shoal snapshot of version {VERSION}")
    return manifest
