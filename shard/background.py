"""The shard's background work, ``LocalShard``'s half that keeps its graphs up: a
thread per shard (``_index_loop``) that takes a snapshot when the log has outgrown its
capacity and otherwise moves vectors not yet in a graph into it, a chunk at a time
(``index_step``), the graph add itself outside the shard lock.

A mixin, as ``shard.write_ops``: its methods work on the shard's stores (``config``,
``vectors``, ``graphs``, ``indexed``), its lock and its change counter (``_epoch``).
Until a vector is in a graph, searches score it exactly (``shard.search``), so a
result never waits for indexing.

The thread runs at ``indexing_niceness`` (Linux keeps a nice value per thread, and
the threads hnswlib starts for an add inherit it): on a busy machine searches and
writes get the CPU first, and the graphs catch up when it is free.
"""

from __future__ import annotations

import logging
import os
import threading
import time

import numpy as np

from shard import graphs, hnsw

log = logging.getLogger(__name__)

INDEX_CHUNK = 2048  # rows per background add_items call: large enough to use every thread


class Background:
    def _graph_wanted(self, name: str) -> bool:
        """A graph pays off once a vector's data passes the indexing threshold (KB),
        as Qdrant's optimizer decides; below it search is exact. 0 disables graphs."""
        params = self.config.vectors[name]
        if not hnsw.supported(params.distance):
            return False
        threshold = self.config.optimizers.indexing_threshold
        if threshold is None:
            threshold = 20000
        if threshold == 0:
            return False
        stored = int(self.vectors[name].mask(self.size).sum())
        return stored * params.size * 4 >= threshold * 1024

    def _pending(self, name: str) -> np.ndarray:
        """Offsets whose current vector is not yet in the graph."""
        present = self.vectors[name].mask(self.size)
        indexed = self.indexed[name]
        if indexed.shape[0] < self.size:
            grown = np.zeros(self.size, dtype=bool)
            grown[: indexed.shape[0]] = indexed
            self.indexed[name] = indexed = grown
        return np.flatnonzero(present & ~indexed[: self.size])

    def index_step(self, max_rows: int = INDEX_CHUNK) -> int:
        """Move up to ``max_rows`` pending vectors into their graph. Returns how many.

        The add itself runs without the shard lock (hnswlib releases the GIL), so
        reads and writes go on meanwhile; a vector changed during the add stays
        pending, since its entry was built from the old copy. A pass that found
        nothing to do is not repeated until the shard changes: looking costs
        O(points) under the lock, which would stall searches every second.
        """
        with self._lock:
            started = self._epoch
            if started == self._idle_epoch:
                return 0
        for name in self.config.vectors:
            with self._lock:
                if self._closed or not self._graph_wanted(name):
                    continue
                graph = self.graphs[name]
                pending = self._pending(name)
                if graph is None:
                    graph = self.graphs[name] = graphs.new(self.config, name, self.indexing_threads, max(self.size, 1024),
                                                           self.vectors[name].data[pending[:graphs.SAMPLE]])
                pending = pending[:max_rows]
                stale = self._stale_labels(name, graph)
                if len(pending) == 0 and len(stale) == 0:
                    continue
                vectors = self.vectors[name].data[pending]  # a copy: fancy indexing
            graph.remove(stale)
            graph.add(pending, vectors)
            with self._lock:
                if self.graphs[name] is not graph:  # replaced meanwhile (``restore``): its masks are not ours
                    return 0
                store = self.vectors[name]
                unchanged = store.present[pending] & (store.data[pending] == vectors).all(axis=1)
                self.indexed[name][pending[unchanged]] = True
                self._epoch += 1
            return len(pending) + len(stale)
        with self._lock:
            self._idle_epoch = started
        return 0

    def _stale_labels(self, name: str, graph: graphs.Graph) -> np.ndarray:
        """Graph labels whose offset no longer holds a vector (deleted points)."""
        present = self.vectors[name].mask(self.size)
        labels = graph.labels()
        if len(labels) == 0:
            return labels
        inside = labels < self.size
        dead = ~inside
        dead[inside] = ~present[labels[inside]]
        return labels[dead]

    def _index_loop(self) -> None:
        """The shard's background thread: snapshots when the log has outgrown its
        capacity, else moves pending vectors into the graphs (module docstring)."""
        if self.indexing_niceness > 0:
            tid = threading.get_native_id()
            try:
                os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + self.indexing_niceness))
            except OSError as exc:  # a sandbox that forbids it: index at the same priority, never not at all
                log.warning("shard %s: cannot lower the indexer's priority (%s)", self.path.name, exc)
        while True:
            with self._lock:
                if self._closed:
                    return
            if self._snapshot_due:
                try:
                    self.snapshot()
                except Exception:  # the log still holds every write; try again after the next one
                    log.exception("shard %s: snapshot failed", self.path.name)
            try:
                moved = self.index_step()
            except Exception:  # keep indexing alive; the points stay searchable exactly
                log.exception("shard %s: indexing failed", self.path.name)
                moved = 0
            if moved == 0:
                with self._work:
                    if self._closed:
                        return
                    self._work.wait(timeout=1.0)

    def wait_indexed(self, timeout: float = 60.0) -> bool:
        """Index synchronously until nothing is pending (tests, bulk loads)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.info().pending_index == 0:
                return True
            if self._indexer is None:
                self.index_step()
            else:
                time.sleep(0.02)
        return False
