"""One shard: points, vectors, payloads, graphs, and the log that makes them durable.

Write path (``apply``): validate → append to the write-ahead log → apply to memory
→ fsync when the caller waits (outside the shard lock, shared by writers waiting at
once: ``sync_log``) → return the operation's sequence number. A rejected operation
raises before anything is logged, so it changes nothing.

Graphs are built in the background (``shard.background``): a point is searchable the
moment its write returns (scored exactly until the indexer has put it into the
graph), and the shard reports itself "yellow" while such points exist, "green" once
none do.

Recovery (``open``): load the newest snapshot, replay the log after it. Snapshots
are taken by the background thread when the log since the last one exceeds
``wal_capacity_bytes`` (``snapshot``: the shard lock is held only while the state
is staged), and on close; then the log before them is dropped, but for the newest
``wal_retain_bytes`` of it, kept for replicas that catch up, and anything a transfer
has pinned (``pin_log``).

Replication (the primary sequences, every replica applies in its order; see
docs/cluster.md): the primary's writes come through ``apply`` with the epoch the
gateway knows, a replica's through ``apply_replicated`` at the primary's sequence
number, logged under that same number, so that primary and replicas have the same
log. Both refuse an epoch older than the highest the shard has seen (``StaleEpoch``),
which the shard keeps in ``epoch.json``, written atomically before the first write
of a new epoch is logged. A replica that fell behind reads ``records_after(its
seq)`` from the primary, or, once those are gone (``LogTruncated``), is made a copy
of another replica (its ``export``, taken over by ``restore(exact=True)`` at exactly
the copy's seq) and then reads the records after that seq.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from shard import codec, fileio, filters, graphs, search, snapshot
from shard.background import Background
from shard.digest import ShardDigest, content_digest
from shard.multi import MultiStore
from shard.payload import PayloadStore
from shard.points import PointTable
from shard.sparse import SparseStore
from shard.types import (
    BadInput,
    Diverged,
    LogTruncated,
    Op,
    PointId,
    PointNotFound,
    SequenceGap,
    ShardConfig,
    ShardInfo,
    StaleEpoch,
)
from shard.vectors import MIN_CAPACITY, MappedVectorStore, VectorStore, map_file, remove_map_files
from shard.write_ops import WriteOps
from shard.wal import DEFAULT_SEGMENT_BYTES, WriteAheadLog

log = logging.getLogger(__name__)

EPOCH_FILE = "epoch.json"  # {"epoch": n}: the highest replication epoch the shard has seen
RESTORING = "restoring"  # a transfer's copy being made the shard (``restore(exact=True)``); finished on open


class LocalShard(WriteOps, Background):
    """One shard in the folder ``path`` (made if missing; opened and recovered if not).

    Settings:
    - ``indexing_threads``: hnswlib threads for building graphs (0: every core).
    - ``indexing_niceness`` (0): added to the nice value of the background thread.
    - ``search_threads``: hnswlib threads per batch of searches.
    - ``wal_capacity_bytes`` (32 MiB): log written since the last snapshot that makes
      the next one due; bounds how much a restart replays.
    - ``wal_retain_bytes`` (64 MiB): log kept after a snapshot although the snapshot
      covers it, so that a replica that fell behind by up to about this much catches
      up from ``records_after`` instead of a full transfer. Kept in whole segments,
      so up to one segment more stays; 0 drops all the snapshot covers.
    - ``wal_segment_bytes`` (64 MiB): size of one log file, the unit in which the
      log is dropped.
    - ``background_indexing``: a thread builds graphs and takes due snapshots;
      without it, ``wait_indexed`` builds and ``apply`` snapshots.
    """

    def __init__(
        self,
        path: Path | str,
        config: ShardConfig,
        *,
        indexing_threads: int = 0,
        indexing_niceness: int = 0,
        search_threads: int = 1,
        wal_capacity_bytes: int = 32 * 1024 * 1024,
        wal_retain_bytes: int = 64 * 1024 * 1024,
        wal_segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        background_indexing: bool = True,
    ):
        self.path = Path(path)
        self.config = config
        self.indexing_threads = indexing_threads or (os.cpu_count() or 1)
        self.indexing_niceness = indexing_niceness
        self.search_threads = max(1, search_threads)  # hnswlib threads per batch of searches
        self.wal_capacity_bytes = wal_capacity_bytes
        self.wal_retain_bytes = wal_retain_bytes
        self._lock = threading.RLock()
        self._work = threading.Condition(self._lock)
        self._closed = False
        self.points = PointTable()
        self.payloads = PayloadStore()
        self.vectors: dict[str, VectorStore] = {}  # made by _recover, once the folder exists
        self.sparse = {n: SparseStore() for n in config.sparse}  # exact inverted indexes: no graphs
        # Multivectors: searched exactly by MaxSim, no graphs (Qdrant's exact path).
        self.multi = {n: MultiStore(p.size, p.distance, p.datatype or "float32") for n, p in config.multi.items()}
        self.graphs: dict[str, graphs.Graph | None] = {n: None for n in config.vectors}
        # indexed[name][offset]: the graph holds the offset's current vector.
        self.indexed = {n: np.zeros(0, dtype=bool) for n in config.vectors}
        self.seq = 0  # last applied operation
        # (Not the replication epoch, which is _highest_epoch:)
        self._epoch = 0  # moves with every change a read could see (writes, indexing)
        self._idle_epoch = -1  # the epoch at which the indexer last found nothing to do
        self._read_cache: dict = {}
        self._read_cache_epoch = 0
        self._snapshot_seq = 0
        self._log_bytes = 0  # logged since the last snapshot
        self._snapshot_due = False  # the log outgrew wal_capacity_bytes: the background thread snapshots
        self._snapshotting = threading.Lock()  # one snapshot at a time; taken before the shard lock
        self.path.mkdir(parents=True, exist_ok=True)
        remove_map_files(self.path)  # a killed run's: never trusted, rebuilt by _recover
        self._epoch_file = fileio.contained(self.path, self.path / EPOCH_FILE)
        epochs = fileio.read_json(self._epoch_file, default={"epoch": 0})
        self._highest_epoch = int(epochs["epoch"])
        # The epoch of the primary whose write this shard applied last (apply_replicated
        # checks a new primary's first write against it). Older files: the highest.
        self._applied_epoch = int(epochs.get("applied", self._highest_epoch))
        self._log_pins: dict[str, tuple[int, float]] = {}  # key -> (keep records after, until when)
        if (self.path / RESTORING).is_dir():
            log.warning("shard %s: finishing the restore of a transfer's copy that a crash interrupted", self.path.name)
            self._install_restoring(wal_segment_bytes).close()
        self._recover()
        self.wal = WriteAheadLog(self.path / "wal", segment_bytes=wal_segment_bytes)
        if self._snapshot_seq:
            # New records must number above the snapshot even if the log's unsynced
            # tail was lost with a power cut (the snapshot may cover such writes).
            self.wal.truncate_before(self._snapshot_seq, keep_bytes=self.wal_retain_bytes)
        self._replay()
        self._indexer: threading.Thread | None = None
        if background_indexing:
            self._indexer = threading.Thread(target=self._index_loop, name=f"indexer-{self.path.name}", daemon=True)
            self._indexer.start()

    # ------------------------------------------------------------------ recovery

    def _recover(self) -> None:
        # The quantization a configure op gave the vectors before the snapshot wins
        # over the config the shard is started with (a Ray restart passes the first one).
        self.config = self.config.with_vector_settings(snapshot.saved_settings(self.path / "snapshot"))
        state = snapshot.load(self.path / "snapshot", self.config, new_store=self._new_store)
        if state is None:
            self.vectors = {name: self._new_store(name) for name in self.config.vectors}
            return
        self._take(state)
        self._snapshot_seq = state.seq

    def _new_store(self, name: str, capacity: int = MIN_CAPACITY) -> VectorStore:
        """An empty store for vector ``name``: in RAM, or with ``on_disk`` in a map
        file named after the vector's position in the config (``shard.vectors``):
        the one of its two names that the vector's live store does not use, since
        a restore fills the new store while the live one serves (and stays, if the
        restore fails)."""
        params = self.config.vectors[name]
        if not params.on_disk:
            return VectorStore(params.size, params.distance, capacity)
        position = list(self.config.vectors).index(name)
        live = self.vectors.get(name)
        alternate = live is not None and live.file == map_file(self.path, position)
        return MappedVectorStore(params.size, params.distance, map_file(self.path, position, alternate), capacity)

    def _release(self, stores: dict[str, VectorStore]) -> None:
        """Close the stores of ``stores`` the shard no longer uses (a map file is
        deleted, unless a newer store of the vector has taken its name over)."""
        live = {id(store) for store in self.vectors.values()}
        for store in stores.values():
            if id(store) not in live:
                store.close()

    def _state(self) -> snapshot.ShardState:
        """The shard's stores and seq as of now, for a snapshot to write: the
        stores themselves, not copies (the lock held)."""
        return snapshot.ShardState(self.seq, self.points, self.payloads, self.vectors, self.graphs, self.indexed,
                                   self.sparse, self.multi)

    def _take(self, state: snapshot.ShardState) -> None:
        """Make ``state``'s stores the shard's (recovery, restores; the lock held),
        with the quantization it was saved under (a ``configure`` op's, maybe: the
        answers depend on it; ``ShardConfig.saved_settings``)."""
        self.config = self.config.with_vector_settings(state.settings)
        self.points, self.payloads, self.vectors = state.points, state.payloads, state.vectors
        self.graphs, self.indexed, self.seq = state.graphs, state.indexed, state.seq
        self.sparse = state.sparse
        self.multi = state.multi
        self._settle()

    def _replay(self) -> None:
        replayed = 0
        for seq, record in self.wal.replay(after_seq=self._snapshot_seq):
            self._apply(seq, codec.decode(record))
            self._log_bytes += len(record)
            replayed += 1
        if replayed:
            log.info("shard %s: replayed %d operations from the log", self.path.name, replayed)

    # --------------------------------------------------------------------- writes

    def apply(self, op: Op, wait: bool = True, epoch: int | None = None) -> int:
        """Validate, log and apply one update operation; return its sequence number.

        With ``wait`` the log is fsynced before returning, so the write survives a
        power loss; without, it survives the death of every process (the bytes are
        in the OS's page cache) and is fsynced by the next waiting write or snapshot.
        The fsync is ``sync_log``'s: reads see the write before it is durable.

        ``epoch``: a primary's write, tagged with the epoch its sender knows.
        StaleEpoch, and nothing logged, when the shard has seen a newer one; a newer
        one is recorded (durably) before the op is logged. Without it epochs are
        not looked at: the single-node path.
        """
        with self._lock:
            self._check_open()
            if epoch is not None:
                self._check_epoch(epoch)
            self._validate(op)
            seq = self._commit(op, codec.encode(op), False, epoch)
        if wait:
            self.sync_log()
        if self._snapshot_due and self._indexer is None:
            self.snapshot()  # no background thread to take it
        return seq

    def sync_log(self) -> None:
        """fsync every logged write, without the shard lock held meanwhile (never
        call it holding it): searches and writes go on, and writers waiting at
        once share one fsync (``WriteAheadLog.flush_outside``)."""
        self.wal.flush_outside(self._lock)

    def apply_replicated(self, seq: int, op: Op | bytes, epoch: int, wait: bool = True) -> int:
        """Apply the primary's write number ``seq`` on this replica, logged under
        that same number; return the last seq the shard has applied (>= ``seq``).

        - ``epoch`` older than the highest this shard has seen: StaleEpoch (the
          sender is a deposed primary). It is the sender's epoch now, also when it
          sends older records to catch a replica up.
        - ``seq`` applied already: nothing changes (a re-send after a lost answer);
          with ``wait`` the log is fsynced, as the first send may not have asked.
          Unless ``epoch`` is newer than that of the last write applied: a new
          primary writes where this replica holds an older primary's unacknowledged
          writes (Diverged: it needs a full transfer). Or unless the op is not the
          one logged at ``seq``: the primary lost writes it had forwarded (a crash
          before they were fsynced, ``wait=false``) and numbers new ones the same
          (Diverged too; a re-send is always the same op).
        - ``seq`` past the next one: SequenceGap naming the one needed, nothing
          changed; the sender fills the gap from ``records_after`` and sends again.
        - an op the shard refuses (BadInput, PointNotFound) where the primary took
          it: the replica has diverged. Nothing changes; it needs a full transfer.

        ``op`` may be the encoded record, as ``records_after`` returns it: it is then
        logged byte for byte as the primary logged it.
        """
        with self._lock:
            self._check_open()
            self._check_epoch(epoch)
            if seq <= self.seq:
                if epoch > self._applied_epoch:
                    # A new primary's first write, at a number this replica holds: what
                    # it holds there came from an older primary, and the new one never
                    # had it. A re-send of the new primary's own would carry its epoch.
                    raise Diverged(seq, epoch, self.seq, self._applied_epoch)
                if not self._logged_as(seq, op):
                    raise Diverged(seq, epoch, self.seq, self._applied_epoch)
                if wait:
                    self.wal.flush(fsync=True)
                return self.seq
            if seq != self.seq + 1:
                raise SequenceGap(self.seq + 1, seq)
            record = None
            if isinstance(op, (bytes, bytearray, memoryview)):
                record, op = op, codec.decode(op)
            self._validate(op)
            self._commit(op, codec.encode(op) if record is None else record, wait, epoch, seq)
            applied = self.seq
        if self._snapshot_due and self._indexer is None:
            self.snapshot()
        return applied

    def _logged_as(self, seq: int, op: Op | bytes) -> bool:
        """Whether ``op`` is the write logged at ``seq``, in the codec's own form
        (True when the log no longer holds it: nothing to tell by)."""
        logged = self.wal.record(seq)
        op = codec.decode(op) if isinstance(op, (bytes, bytearray, memoryview)) else op
        return logged is None or codec.encode(codec.decode(logged)) == codec.encode(op)

    def fence(self, epoch: int) -> None:
        """Record ``epoch`` as seen (durably) without a write, so that from now on
        the shard refuses writes of older epochs: what a controller does to the
        replicas when it promotes a new primary, before that one's first write.
        StaleEpoch if the shard has seen a newer one."""
        with self._lock:
            self._check_open()
            self._check_epoch(epoch)
            if epoch > self._highest_epoch:
                self._store_epoch(epoch)

    @property
    def highest_epoch(self) -> int:
        """The highest replication epoch this shard has seen (0: none)."""
        return self._highest_epoch

    @property
    def applied_epoch(self) -> int:
        """The epoch of the primary whose write this shard applied last (0: none)."""
        return self._applied_epoch

    def records_after(self, seq: int, limit: int = 1000, max_bytes: int = 64 << 20) -> list[tuple[int, bytes]]:
        """The logged writes after ``seq``, oldest first: (seq, encoded op) pairs,
        at most ``limit`` of them and, but for the first, ``max_bytes`` of records.
        What a primary serves a replica catching up, which applies each with
        ``apply_replicated`` and asks again after the last. Empty when the shard
        holds nothing after ``seq``.

        LogTruncated when the log no longer holds ``seq + 1``: the replica needs a
        full transfer (``export``), then the records after the copy's seq.

        The log is read without the shard lock, so writes go on meanwhile; the
        snapshots, which delete log files, wait until it has been read.
        """
        with self._snapshotting:
            with self._lock:
                self._check_open()
                if seq >= self.seq:
                    return []
                if seq < self.wal.first_seq - 1:
                    raise LogTruncated(seq, self.wal.first_seq)
                records = self.wal.replay(after_seq=seq)
            out: list[tuple[int, bytes]] = []
            size = 0
            try:
                for pair in itertools.islice(records, limit):
                    out.append(pair)
                    size += len(pair[1])
                    if size >= max_bytes:
                        break
            finally:
                records.close()
            return out

    def pin_log(self, key: str, after_seq: int, seconds: float) -> None:
        """Keep the log's records after ``after_seq`` for ``seconds`` from now, beyond
        ``wal_retain_bytes`` if need be: a transfer's target reads them once its copy
        of this shard is in (``cluster.transfer``). The same key again renews it."""
        with self._lock:
            self._log_pins[key] = (int(after_seq), time.monotonic() + float(seconds))

    def _log_floor(self, seq: int) -> int:
        """The seq a snapshot may drop the log up to: ``seq``, or below a live pin
        (the lock held)."""
        now = time.monotonic()
        self._log_pins = {k: pin for k, pin in self._log_pins.items() if pin[1] > now}
        return min([seq, *(after for after, _ in self._log_pins.values())])

    def _check_epoch(self, epoch: int) -> None:
        if epoch < self._highest_epoch:
            raise StaleEpoch(epoch, self._highest_epoch)

    def _store_epoch(self, epoch: int, applied: int | None = None) -> None:
        applied = self._applied_epoch if applied is None else int(applied)
        fileio.write_json(self._epoch_file, {"epoch": int(epoch), "applied": applied})
        self._highest_epoch, self._applied_epoch = int(epoch), applied

    def _commit(self, op: Op, record: bytes, wait: bool, epoch: int | None, seq: int | None = None) -> int:
        """Log ``record`` (the encoded ``op``) and apply the op, validated, the lock
        held: under the log's next seq, or under ``seq`` (a replica's: it must be
        the next). Returns the seq."""
        if epoch is not None and (epoch > self._highest_epoch or epoch != self._applied_epoch):
            self._store_epoch(max(epoch, self._highest_epoch), applied=epoch)
        seq = self.wal.append(record) if seq is None else self.wal.append_at(seq, record)
        if wait:
            self.wal.flush(fsync=True)
        self._apply(seq, op)
        self._epoch += 1
        self._log_bytes += len(record)
        if self._log_bytes > self.wal_capacity_bytes:
            self._snapshot_due = True
        self._work.notify_all()
        return seq

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"shard {self.path.name} is closed")

    def read_cache(self) -> dict:
        """A dict for derived read state (see shard.search.cached_candidates),
        emptied whenever the shard changed since it was filled. Caller holds the lock."""
        if self._read_cache_epoch != self._epoch:
            self._read_cache = {}
            self._read_cache_epoch = self._epoch
        return self._read_cache

    # ----------------------------------- the read view (shard.view.ShardReader)

    @property
    def size(self) -> int:
        return self.points.size

    @property
    def live(self) -> np.ndarray:
        return self.points.live_mask()

    def offsets_of(self, ids) -> np.ndarray:
        return self.points.offsets_of(ids)

    def has_vector(self, name: str) -> np.ndarray:
        if name in self.sparse:
            return self.sparse[name].mask(self.size)
        if name in self.multi:
            return self.multi[name].mask(self.size)
        if name not in self.vectors:
            return np.zeros(self.size, dtype=bool)
        return self.vectors[name].mask(self.size)

    # ---------------------------------------------------------------------- reads

    def info(self) -> ShardInfo:
        with self._lock:
            pending = sum(len(self._pending(n)) for n in self.config.vectors if self._graph_wanted(n))
            indexed = sum(int(self.indexed[n][: self.size].sum()) for n in self.config.vectors)
            return ShardInfo(
                points_count=len(self.points),
                vectors_count=sum(int(self.vectors[n].mask(self.size).sum()) for n in self.config.vectors)
                + sum(int(s.mask(self.size).sum()) for s in self.sparse.values())
                + sum(int(m.mask(self.size).sum()) for m in self.multi.values()),
                indexed_vectors_count=indexed,
                pending_index=pending,
                segments_count=1,
                payload_schema=self.payloads.payload_schema(),
                wal_bytes=self.wal.disk_bytes(),
            )

    def payload_bytes(self) -> int:  # strict mode's payload storage size: PayloadStore.nbytes
        with self._lock:
            return self.payloads.nbytes

    def digest(self) -> ShardDigest:
        """Point count and content hash (``shard.digest``), for seeing that replicas
        agree. Computed under the shard lock (~0.1 s at 100k x 384) and kept in the
        read cache until the shard next changes."""
        with self._lock:
            cache = self.read_cache()
            if "digest" not in cache:
                cache["digest"] = content_digest(
                    self.points.ids, self.points.live_mask(),
                    {name: (store.data, store.present) for name, store in self.vectors.items()},
                    self.payloads.payload_list(),
                    {name: store.vectors for name, store in self.sparse.items()},
                    self.multi)
            return cache["digest"]

    def sparse_stats_many(self, asks) -> list[tuple[int, dict[int, int]]]:
        """This shard's share of the IDF statistics of each (sparse vector name,
        indices) of ``asks``: (indexed vectors, df of each index). The gateway
        sums them over the shards into the ``Idf`` of a query (``shard.sparse``)."""
        with self._lock:
            out = []
            for name, indices in asks:
                self.config.sparse_vector(name)
                store = self.sparse[name]
                out.append((store.vector_count, store.document_frequencies(indices)))
            return out

    def search_batch(self, requests):
        with self._lock:
            return search.search_many(self, requests)

    def retrieve(self, ids, with_payload, with_vector):
        with self._lock:
            return search.retrieve(self, ids, with_payload, with_vector)

    def check_exist(self, ids) -> None:
        """PointNotFound for the first of ``ids`` this shard does not hold."""
        with self._lock:
            for point_id in ids:
                if point_id not in self.points.offset_of:
                    raise PointNotFound(point_id)

    def get_vectors(self, ids, using: str) -> dict[PointId, np.ndarray]:
        with self._lock:
            return search.get_vectors(self, ids, using)

    def scroll(self, **kwargs):
        with self._lock:
            return search.scroll(self, **kwargs)

    def count(self, filter: dict[str, Any] | None) -> int:
        with self._lock:
            return int(filters.evaluate(filter, self).sum())

    def facet(self, key: str, filter: dict[str, Any] | None, limit: int):
        with self._lock:
            return search.facet(self, key, filter, limit)

    def sample_records(self, filter, n: int, seed: int, with_payload, with_vector):
        with self._lock:
            return search.sample_records(self, filter, n, seed, with_payload, with_vector)

    def sample(self, filter, using: str, n: int, seed: int):
        with self._lock:
            return search.sample(self, filter, using, n, seed)

    # ---------------------------------------------------------------- lifecycle

    @property
    def lock(self) -> threading.RLock:
        """The shard lock: every read and write holds it."""
        return self._lock

    def snapshot(self) -> None:
        """Snapshot the shard and drop the log it covers.

        The shard lock is held only while the state is staged (``snapshot.stage``,
        ~50 ms at 100k x 384); the graphs are written under their own locks and
        the fsyncs under none, so searches and writes go on meanwhile (a whole
        snapshot under the lock stalled them ~0.5 s at that size; what remains is
        hnswlib holding the GIL while it writes a graph, 0.1-0.3 s). Writes made
        meanwhile are in the log after the snapshot's ``seq``, and stay there."""
        with self._snapshotting:
            with self._lock:
                self._snapshot_due = False
                if self._closed or self.seq == self._snapshot_seq:
                    return
                self.wal.flush(fsync=True)
                seq, logged = self.seq, self._log_bytes
                staged = snapshot.stage(self._state(), self.config, self.path / "snapshot")
            snapshot.finish(staged, self._lock)
            with self._lock:
                self.wal.truncate_before(self._log_floor(seq), keep_bytes=self.wal_retain_bytes)
                self._snapshot_seq = seq
                self._log_bytes -= logged

    def set_on_disk(self, name: str, on_disk: bool) -> None:
        """Keep vector ``name`` in a map file (True) or in RAM (False) from now on,
        without a log record (a ``configure`` op is the logged way, what a PATCH
        sends): the rows are copied at once, under the lock. Qdrant moves such
        vectors in the background (its optimizer rebuilds segments whose storage
        no longer matches the config)."""
        with self._lock:
            self._check_open()
            self.config.vector(name)
            self.config = self.config.with_vector_settings({name: {"on_disk": on_disk}})
            self._settle()
            self._epoch += 1

    def export(self, folder: str) -> dict[str, int]:
        """A consistent copy of the shard as of now in ``folder`` (made afresh; the
        caller chose a path inside its storage), in the snapshot layout, and
        what it holds: ``{"seq", "points"}``. Taken as a snapshot is, in two
        halves, so reads and writes go on meanwhile; the shard's own snapshot
        and log are untouched."""
        with self._snapshotting:
            with self._lock:
                self._check_open()
                seq, points = self.seq, len(self.points)
                staged = snapshot.stage(self._state(), self.config, Path(folder))
            snapshot.finish(staged, self._lock)
        return {"seq": seq, "points": points}

    def restore(self, folder: str, exact: bool = False) -> dict[str, int]:
        """Replace everything the shard holds by the export in ``folder`` (a shard
        snapshot being recovered; a transfer's copy): all at once for readers and
        writers, and durably, since the new state is saved as the shard's snapshot
        before the log is dropped (a crash leaves the old state or the new).

        The sequence number goes on from the export's when that is ahead of the
        log (a transfer continues its source's numbering), else from one past the
        log (numbers never go back); either way the log keeps nothing at or below
        it, so a restart replays nothing onto the restored state. Graphs are
        rebuilt from the vectors. Returns ``{"seq", "points"}``.

        ``exact``: a transfer's target (``cluster.transfer``), which must end at
        exactly the copy's sequence number, below its own log's end or not, so
        that the primary's link goes on with ``records_after`` that number; the
        log is emptied and numbers from there. The copy is another replica's
        export of this same shard, received over the authenticated wire into
        ``folder`` inside this shard's folder, and is taken over, not copied: it
        becomes the shard's snapshot, graphs and all (nothing is rebuilt).
        Moving it to ``RESTORING`` is the commit: a crash after that is finished
        when the shard is reopened, one before it leaves the shard as it was."""
        if exact:
            return self._restore_exact(fileio.contained(self.path, folder))
        # BadInput for what does not fit. Made beside the shard's own stores, which go
        # on serving meanwhile (map files under their other names: _new_store).
        state = snapshot.load_export(Path(folder), self.config, new_store=self._new_store)
        with self._snapshotting, self._lock:
            self._check_open()
            old = self._state()
            seq = state.seq if state.seq > self.wal.last_seq else self.wal.last_seq + 1
            # Another collection's copy, maybe: the vectors keep this shard's settings.
            state = replace(state, seq=seq, settings={})
            self._take(state)
            try:
                snapshot.save(state, self.config, self.path / "snapshot", self._lock)
            except BaseException:
                self._take(old)
                self._release(state.vectors)
                raise
            self._release(old.vectors)
            self.wal.truncate_before(seq)
            self._snapshot_seq, self._log_bytes, self._snapshot_due = seq, 0, False
            self._epoch += 1
            self._work.notify_all()
            log.info("shard %s: restored %d points, now at sequence %d", self.path.name, len(self.points), seq)
            return {"seq": seq, "points": len(self.points)}

    def _restore_exact(self, folder: Path) -> dict[str, int]:
        try:
            state = snapshot.load(folder, self.config, new_store=self._new_store)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError, OSError, RuntimeError) as exc:
            raise BadInput(f"the transferred copy cannot be read: {type(exc).__name__}: {exc}") from None
        if state is None:
            raise BadInput("the transferred copy holds no shard")
        fileio.fsync_tree(folder)  # before the commit, and outside the lock
        with self._snapshotting, self._lock:
            self._check_open()
            os.rename(folder, self.path / RESTORING)
            fileio.fsync_dir(self.path)
            try:
                self.wal.close()
                self.wal = self._install_restoring(self.wal.segment_bytes)
            except BaseException:
                # Committed but not installed (an I/O failure): the memory no longer
                # matches the disk. Closed; reopening finishes the restore.
                self._closed = True
                self._work.notify_all()
                raise
            old = self.vectors
            self._take(state)
            self._release(old)
            self._snapshot_seq = state.seq
            self._log_bytes, self._snapshot_due = 0, False
            self._epoch += 1
            # The copy is of the source's lineage, at the epoch it was fenced to.
            self._store_epoch(self._highest_epoch, applied=self._highest_epoch)
            self._work.notify_all()
            log.info("shard %s: took over a copy of %d points, now at sequence %d",
                     self.path.name, len(self.points), self.seq)
            return {"seq": self.seq, "points": len(self.points)}

    def _install_restoring(self, segment_bytes: int) -> WriteAheadLog:
        """The disk half of an exact restore, from the committed copy in
        ``RESTORING``: an empty log numbering from the copy's seq + 1, then the
        copy as the snapshot. Each step may be done again, so a crash anywhere
        in it is finished by running it all again on open."""
        copy = self.path / RESTORING
        seq = int(fileio.read_json(copy / "meta.json")["seq"])
        fileio.remove_tree(self.path, self.path / "wal")
        wal = WriteAheadLog(self.path / "wal", segment_bytes=segment_bytes)
        wal.truncate_before(seq)
        for name in ("snapshot", "snapshot.tmp", "snapshot.old"):
            fileio.remove_tree(self.path, self.path / name)
        os.rename(copy, self.path / "snapshot")
        fileio.fsync_dir(self.path)
        return wal

    def _snapshot_locked(self) -> None:
        if self.seq == self._snapshot_seq:
            return
        self.wal.flush(fsync=True)
        snapshot.save(self._state(), self.config, self.path / "snapshot", self._lock)
        self.wal.truncate_before(self._log_floor(self.seq), keep_bytes=self.wal_retain_bytes)
        self._snapshot_seq = self.seq
        self._log_bytes = 0

    def close(self, take_snapshot: bool = True) -> None:
        with self._snapshotting, self._work:  # after a snapshot in progress
            if self._closed:
                return
            if take_snapshot:
                self._snapshot_locked()
            self._closed = True
            for store in self.vectors.values():
                store.close()  # map files go: a reopen rebuilds them from the snapshot and log
            self._work.notify_all()
        if self._indexer is not None:
            self._indexer.join(timeout=30)
        self.wal.close()
