"""A full (snapshot) transfer: one replica of a shard made a copy of another; or,
where that is safe and the source's log allows, a replica caught up in place.

docs/cluster.md ("Recovery and repair") has when: a replica whose missing records
the primary's log no longer holds (``LogTruncated``), or a new one. This module is
both ends, without Ray (threads and blocking sockets, as ``cluster.replicator``); the
shard actor serves them through ``ServedShard``, and the controller asks the TARGET,
``transfer_from(source, timeout)``, which pulls the copy over one connection to the
SOURCE (Unix socket on this machine, authenticated TCP elsewhere: ``cluster.wire``)::

    target                                       source
    transfer_open(lease)                    ->   exports its shard into a folder of its
                                                 own (LocalShard.export: consistent, and
                                                 reads and writes go on meanwhile)
                                            <-   ExportInfo: id, seq, points, epoch, files
    transfer_read(id, file, offset, size)   ->   at most CHUNK_BYTES of one file
        ... every file, in chunks, each written and fsynced into a folder of the target's
    transfer_close(id)                      ->   the export deleted
    fence(epoch), restore(copy, exact=True)      the target now holds the copy at its seq
    records_after(seq, ...)                 ->   the writes the source took since, in
                                                 batches, applied in order until the
                                                 source has no more

File by file rather than one tar stream: an export is a flat folder of a few files,
so a read names its file and offset and the source keeps no stream position per
target, and the target needs no archive parsing, only a plain-name check. Memory
stays bounded on both sides: a chunk at a time (frames are pickled whole).

Lifetimes. The source's export lives in ``<source shard>/transfer-out-<id>`` until
the target closes it, or ``lease`` seconds after the last call about it (a target
that vanished), or the actor closes; at most ``MAX_EXPORTS`` exist at once (each is
a whole copy of the shard on disk). The target's copy lives in
``<target shard>/transfer-in-<id>`` until the restore takes it over, and is deleted
if the transfer fails. Folders a killed process left are deleted when its actor
starts again (``remove_leftovers``).

First the target checks whether it can be caught up in place instead (``catch_up_in_place``):
a replica Ray restarted, or one that missed writes while cut off, still holds its
storage; when its last write came from the source's epoch and the source's log holds
every record after it, it applies those and no copy is made.

The target is restored at exactly the export's sequence number (``restore(exact=True)``),
whatever its own log held, and with at least the source's replication epoch; then
it applies the records after that number from the source's log, as a replica
catching up does. The source is an active replica, which has every write before
its client is answered, so the target ends with every write acknowledged before
``transfer_from`` returns. The primary's link to the target is refused meanwhile
(``TransferInProgress``: it reports the replica failed and retries every few
seconds); its next attempt finds the target where the transfer left it (the link
asks, or the target answers ``SequenceGap``) and fills in the rest from the
primary's log. A transfer that fails before the restore leaves the target as it
was; one whose catch-up from the source fails (the source gone, its log trimmed
past the copy) leaves it at the copy, consistent, for the link to go on from.
The source keeps the log after the export's sequence (``LocalShard.pin_log``) while
the export lives and for a lease after it is closed, whatever ``wal_retain_bytes``
says, so the writes made during a long copy are there for the catch-up; the primary's
own log, which the link fills in from, keeps ``wal_retain_bytes`` (64 MiB by default)
after a snapshot, and beyond that the target is reported as needing another transfer.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cluster.transport import HANDSHAKE_TIMEOUT, BlockingChannel, Endpoints
from shard import fileio
from shard.types import LogTruncated, ReplicationError, StaleEpoch

log = logging.getLogger(__name__)

CHUNK_BYTES = 8 << 20  # bytes per transfer_read: a pickled frame on each side, then a write
MAX_CHUNK_BYTES = 64 << 20  # the most a source hands out per read, whatever is asked
EXPORT_LEASE = 30.0  # seconds a source keeps an export after the last call about it
MAX_LEASE = 600.0
MAX_EXPORTS = 3  # exports a source holds at once: each is a whole copy of the shard on disk
CLOSE_TIMEOUT = 2.0  # seconds for telling the source it may delete its export
CATCH_UP_RECORDS = 256  # records per records_after call after the restore
CATCH_UP_BYTES = 16 << 20  # and bytes (but for the first record)
PREFIX = "transfer-"
OUT, IN = PREFIX + "out-", PREFIX + "in-"


class TransferInProgress(ReplicationError):
    """This replica is being replaced by a transfer (it takes no forwarded write
    until that is done: the primary's link retries), or a transfer to it runs
    already (a second one is refused)."""


class ExportGone(ReplicationError):
    """The source no longer holds the export named (closed, or its lease ran out)."""


@dataclass(frozen=True)
class ExportInfo:
    """What ``transfer_open`` answers: the export's id and what it holds."""

    export_id: str
    seq: int
    points: int
    epoch: int  # the source's highest replication epoch once the export was made
    files: tuple[tuple[str, int], ...]  # (name, bytes), in the order to fetch them


@dataclass(frozen=True)
class Received:
    """What a transfer did, for the log line."""

    seq: int  # where the target is now: the copy's seq and the records applied after it
    points: int
    bytes: int
    chunks: int
    caught_up: int  # records applied after the copy
    seconds: float


def remove_leftovers(shard_path: Path) -> None:
    """Delete the transfer folders a killed process left in a shard's folder: no
    transfer runs across a restart. (A copy already committed is ``RESTORING``,
    which the shard itself finishes.)"""
    if not shard_path.is_dir():
        return
    for entry in shard_path.iterdir():
        if entry.name.startswith(PREFIX) and entry.is_dir() and not entry.is_symlink():
            log.info("shard %s: deleting %s, left by an interrupted transfer", shard_path.name, entry.name)
            fileio.remove_tree(shard_path, entry)


# ---------------------------------------------------------------- the source


@dataclass
class _Export:
    folder: Path
    lease: float
    expires: float = float("inf")  # not before it is made
    files: dict[str, int] = field(default_factory=dict)
    seq: int = 0  # the shard's sequence the export holds


class Exports:
    """A source's exports lent to targets (see the module docstring)."""

    def __init__(self, shard: Any):
        self._shard = shard
        self._cond = threading.Condition()
        self._exports: dict[str, _Export] = {}
        self._reaper: threading.Thread | None = None
        self._closed = False

    def open(self, lease: float) -> ExportInfo:
        """Export the shard into a folder of its own and lend it for ``lease``
        seconds after each call about it."""
        lease = float(lease)
        if not 0 < lease <= MAX_LEASE:
            raise ValueError(f"an export's lease is more than 0 and at most {MAX_LEASE:g} seconds, not {lease:g}")
        export_id = uuid.uuid4().hex
        folder = self._shard.path / f"{OUT}{export_id}"
        with self._cond:
            if self._closed:
                raise RuntimeError("the shard is closing")
            if len(self._exports) >= MAX_EXPORTS:
                raise TransferInProgress(f"this replica is the source of {MAX_EXPORTS} transfers already")
            self._exports[export_id] = _Export(folder, lease)
        try:
            done = self._shard.export(str(folder))
            files = {p.name: p.stat().st_size for p in sorted(folder.iterdir()) if p.is_file()}
            epoch = self._shard.highest_epoch
        except BaseException:
            self.close(export_id)
            raise
        with self._cond:
            export = self._exports.get(export_id)
            if export is not None:
                export.files, export.expires, export.seq = files, time.monotonic() + lease, done["seq"]
                self._watch()
        if export is None:  # closed meanwhile (the actor is closing)
            self._remove(folder)
            raise ExportGone("the shard closed while it exported")
        # The target reads the writes made since from this shard's log once its copy is
        # in: kept while the export lives, and for a lease after it is closed.
        self._shard.pin_log(export_id, done["seq"], lease)
        log.info("shard %s: exported %d points at sequence %d for a transfer (%s)",
                 self._shard.path.name, done["points"], done["seq"], export_id)
        return ExportInfo(export_id, done["seq"], done["points"], epoch, tuple(files.items()))

    def read(self, export_id: str, name: str, offset: int, size: int) -> bytes:
        """At most ``size`` bytes (and MAX_CHUNK_BYTES) of file ``name`` of the
        export from ``offset``; fewer only at its end. Renews the lease."""
        with self._cond:
            export = self._exports.get(export_id)
            if export is None or not export.files:
                raise ExportGone(f"no export {export_id} here: closed, or its lease ran out")
            if name not in export.files:
                raise ValueError(f"the export has no file {name!r}")
            export.expires = time.monotonic() + export.lease
            path = export.folder / name
        self._shard.pin_log(export_id, export.seq, export.lease)
        with open(path, "rb") as f:
            f.seek(max(0, int(offset)))
            return f.read(max(0, min(int(size), MAX_CHUNK_BYTES)))

    def close(self, export_id: str) -> None:
        """Delete the export (nothing if it is gone already)."""
        with self._cond:
            export = self._exports.pop(export_id, None)
            self._cond.notify_all()
        if export is not None:
            if export.files:  # its target catches up from the log next: kept a lease longer
                self._shard.pin_log(export_id, export.seq, export.lease)
            self._remove(export.folder)

    def close_all(self) -> None:
        with self._cond:
            self._closed = True
            exports, self._exports = list(self._exports.values()), {}
            self._cond.notify_all()
        for export in exports:
            self._remove(export.folder)

    def _remove(self, folder: Path) -> None:
        for path in (folder, folder.with_name(folder.name + ".tmp")):  # .tmp: an export that failed midway
            try:
                fileio.remove_tree(self._shard.path, path)
            except OSError as exc:
                log.warning("shard %s: could not delete %s: %s", self._shard.path.name, path.name, exc)

    def _watch(self) -> None:
        """Start the thread that deletes expired exports, if it is not running (the
        condition held). It ends once no export is left."""
        if self._reaper is None:
            self._reaper = threading.Thread(target=self._reap, name=f"exports-{self._shard.path.name}", daemon=True)
            self._reaper.start()
        self._cond.notify_all()

    def _reap(self) -> None:
        while True:
            with self._cond:
                now = time.monotonic()
                expired = [i for i, e in self._exports.items() if e.expires <= now]
                if not expired:
                    if not self._exports:
                        self._reaper = None
                        return
                    soonest = min(e.expires for e in self._exports.values())
                    self._cond.wait(None if soonest == float("inf") else soonest - now)
                    continue
            for export_id in expired:
                log.warning("shard %s: export %s unused for its lease: deleted (its target gave up)",
                            self._shard.path.name, export_id)
                self.close(export_id)


# ---------------------------------------------------------------- the target


def time_left(started: float, timeout: float, what: str):
    """``left()``: the seconds left of ``timeout`` from ``started``; TimeoutError once none."""
    deadline = started + timeout

    def left() -> float:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"{what} did not finish within {timeout:g} s")
        return remaining

    return left


def receive(shard: Any, source: Endpoints, secret: bytes | None, timeout: float) -> Received:
    """Make ``shard`` (this replica's LocalShard) a copy of the shard served at
    ``source`` and apply the source's writes since, within ``timeout`` seconds
    (the restore itself is local and not cut short). A failure before the restore
    leaves ``shard`` as it was (its epoch perhaps raised) and deletes the partial
    copy; the source deletes its export when told, or when its lease runs out."""
    started = time.monotonic()
    left = time_left(started, timeout, "the transfer")
    folder = shard.path / f"{IN}{uuid.uuid4().hex}"
    channel: BlockingChannel | None = None
    export: ExportInfo | None = None
    try:
        channel = BlockingChannel.connect(source, secret, timeout=min(HANDSHAKE_TIMEOUT, left()))
        export = channel.call("transfer_open", EXPORT_LEASE, timeout=left())
        folder.mkdir()
        copied, chunks = fetch_files(channel, export, folder, left)
        info, export = export, None
        close_quietly(source, secret, info.export_id, channel)  # the copy is whole: the source may go now
        if info.epoch > shard.highest_epoch:
            try:
                shard.fence(info.epoch)  # first: the copy never sits below the source's epoch
            except StaleEpoch:
                pass  # this replica has seen a newer one meanwhile
        done = shard.restore(str(folder), exact=True)
        seq = _catch_up(channel, shard, done["seq"], left)
    finally:
        if channel is not None:
            channel.close()
        if export is not None:  # failed: on a new connection, since a call cut short spoils the old one
            close_quietly(source, secret, export.export_id)
        try:
            fileio.remove_tree(shard.path, folder)  # gone already when the restore took it over
        except OSError as exc:  # the shard's next start deletes it (remove_leftovers)
            log.warning("shard %s: could not delete %s: %s", shard.path.name, folder.name, exc)
    received = Received(seq, done["points"], copied, chunks, seq - done["seq"], time.monotonic() - started)
    log.info("shard %s: a copy of its source at sequence %d (%d points, %.1f MiB in %d chunks), "
             "then %d records after it: %.1f s", shard.path.name, done["seq"], received.points, copied / 2**20,
             chunks, received.caught_up, received.seconds)
    return received


def catch_up_in_place(shard: Any, source: Endpoints, secret: bytes | None, timeout: float) -> Received | None:
    """Catch ``shard`` up from the source's log, without a copy, when that is safe and
    possible: its last write came from the source's epoch (so what it holds is a
    prefix of the source's history: a replica ahead of a new primary refuses that
    primary's writes, see ``LocalShard.apply_replicated``), and the source's log
    still holds every record after it. None: a full transfer is needed. Forwarded
    writes go on meanwhile: they and these records are applied each at its number,
    whichever comes first."""
    started = time.monotonic()
    left = time_left(started, timeout, "the catch-up")
    if shard.seq == 0:
        return None
    channel = BlockingChannel.connect(source, secret, timeout=min(HANDSHAKE_TIMEOUT, left()))
    try:
        return _in_place(channel, shard, started, left)
    finally:
        channel.close()


def _in_place(channel: BlockingChannel, shard: Any, started: float, left) -> Received | None:
    if channel.call("replication_epoch", timeout=left()) != shard.applied_epoch:
        return None
    start = shard.seq
    try:
        first = channel.call("records_after", start, CATCH_UP_RECORDS, CATCH_UP_BYTES, timeout=left())
    except LogTruncated:
        return None
    seq = start
    for i, (record_seq, record) in enumerate(first):
        seq = shard.apply_replicated(record_seq, record, shard.highest_epoch, wait=i == len(first) - 1)
    if len(first) >= CATCH_UP_RECORDS or sum(len(r) for _, r in first) >= CATCH_UP_BYTES:
        seq = _catch_up(channel, shard, seq, left)
    received = Received(seq, len(shard.points), 0, 0, seq - start, time.monotonic() - started)
    log.info("shard %s: caught up in place from sequence %d to %d from its source's log: %.1f s",
             shard.path.name, start, seq, received.seconds)
    return received


def fetch_files(channel: BlockingChannel, export: ExportInfo, folder: Path, left) -> tuple[int, int]:
    """Every file of the export into ``folder``, a chunk at a time, each fsynced.
    Returns (bytes, chunks)."""
    copied = chunks = 0
    for name, size in export.files:
        path = fileio.contained(folder, folder / name)  # a plain name inside the folder, nothing else
        with open(path, "wb") as f:
            offset = 0
            while offset < size:
                data = channel.call("transfer_read", export.export_id, name, offset,
                                    min(CHUNK_BYTES, size - offset), timeout=left())
                if not data:
                    raise ConnectionError(f"the source's {name} ends at byte {offset} of {size}")
                f.write(data)
                offset += len(data)
                chunks += 1
            f.flush()
            os.fsync(f.fileno())
        copied += size
    fileio.fsync_dir(folder)
    return copied, chunks


def _catch_up(channel: BlockingChannel, shard: Any, seq: int, left) -> int:
    """Apply the source's records after ``seq`` until it has none left (a short
    batch); the last seq applied. Best effort: the copy is in already, and the
    primary's link fills in whatever this does not."""
    epoch = shard.highest_epoch  # at least the source's: the records are its history
    try:
        while True:
            batch = channel.call("records_after", seq, CATCH_UP_RECORDS, CATCH_UP_BYTES, timeout=left())
            for i, (record_seq, record) in enumerate(batch):
                seq = shard.apply_replicated(record_seq, record, epoch, wait=i == len(batch) - 1)
            if len(batch) < CATCH_UP_RECORDS and sum(len(r) for _, r in batch) < CATCH_UP_BYTES:
                return seq
    except Exception as exc:  # noqa: BLE001 - the link goes on from wherever this stopped
        log.warning("shard %s: caught up from the transfer's source to sequence %d only: %s: %s",
                    shard.path.name, seq, type(exc).__name__, exc)
        return seq


def close_quietly(source: Endpoints, secret: bytes | None, export_id: str,
                   channel: BlockingChannel | None = None) -> None:
    """Tell the source its export is no longer needed, over ``channel`` or a new
    connection, if it still listens (else its lease deletes the export)."""
    own = None
    try:
        if channel is None:
            channel = own = BlockingChannel.connect(source, secret, timeout=CLOSE_TIMEOUT)
        channel.call("transfer_close", export_id, timeout=CLOSE_TIMEOUT)
    except Exception as exc:  # noqa: BLE001 - best effort: the lease covers it
        log.info("could not tell the transfer's source to delete export %s: %s", export_id, exc)
    finally:
        if own is not None:
            own.close()
