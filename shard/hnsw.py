"""The one module that imports hnswlib.

Labels in the graph are shard offsets, never point ids. The graph may lag behind
the vector store: the shard tracks which offsets are current in the graph and
scores the rest exactly, so a result is never stale.

hnswlib spaces: Cosine uses "ip" over unit vectors, Dot uses "ip", Euclid "l2"
(squared distance). hnswlib has no L1 space, so Manhattan vectors get no graph
and are always scored exactly.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Callable, TypeVar

import hnswlib
import numpy as np

from shard.types import Distance, HnswConfig

GROWTH = 1.5
T = TypeVar("T")
SPACES = {Distance.COSINE: "ip", Distance.DOT: "ip", Distance.EUCLID: "l2"}


def supported(distance: Distance) -> bool:
    return distance in SPACES


def no_hits(m: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``k`` empty hits for each of ``m`` queries, label -1 and similarity -inf: what
    every graph's ``search`` answers, or pads a row of fewer hits with."""
    return np.full((m, k), -1, dtype=np.int64), np.full((m, k), -np.inf, dtype=np.float32)


def save_locked(lock: threading.Lock, outer: threading.RLock, read: Callable[[], T], write: Callable[[], None]) -> T:
    """``write()`` a graph guarded by ``lock``, and return ``read()``, called while
    the graph is locked, so that what it reads about the graph holds for the file.

    ``read`` also runs under ``outer``, the lock searches take before the graph's
    (the shard lock); ``outer`` is held only for ``read``, never while waiting for
    the graph (an add in progress may hold it for a second) or while writing it, so
    reads and writes of the shard go on meanwhile."""
    while True:
        with outer:
            if lock.acquire(blocking=False):
                try:
                    value = read()
                except BaseException:
                    lock.release()
                    raise
                break
        with lock:  # wait for whoever holds the graph, then try again
            pass
    try:
        write()
    finally:
        lock.release()
    return value


class HnswIndex:
    """An hnswlib graph over some offsets of one vector store.

    Methods are safe to call from several threads: mutations and searches are
    serialised by one lock (hnswlib releases the GIL inside both, and its own
    docs do not promise that adds and searches may interleave).
    """

    def __init__(self, dim: int, distance: Distance, config: HnswConfig, threads: int = 1, capacity: int = 1024):
        self.dim = dim
        self.distance = distance
        self.config = config
        self.threads = max(1, threads)
        self._lock = threading.Lock()
        self._index = hnswlib.Index(space=SPACES[distance], dim=dim)
        self._index.init_index(
            max_elements=max(capacity, 16), M=config.m, ef_construction=config.ef_construct, random_seed=100
        )
        self._index.set_num_threads(self.threads)
        self._labels: set[int] = set()  # labels in the graph and not marked deleted
        self._ever: set[int] = set()  # every label ever inserted (hnswlib keeps deleted ones)

    kind = "hnsw"  # a float32 graph (``shard.quantized`` has the others)

    def __len__(self) -> int:
        return len(self._labels)

    def labels(self) -> np.ndarray:
        """The offsets the graph holds (not marked deleted)."""
        return np.fromiter(self._labels, dtype=np.int64, count=len(self._labels))

    def add(self, offsets: np.ndarray, vectors: np.ndarray) -> None:
        """Insert or replace the graph entries of ``offsets``."""
        if len(offsets) == 0:
            return
        with self._lock:
            needed = self._index.get_current_count() + len(offsets)
            if needed > self._index.get_max_elements():
                self._index.resize_index(max(needed, int(self._index.get_max_elements() * GROWTH)))
            # Replacing a label that is marked deleted requires unmarking it first.
            labels = offsets.tolist()
            for label in labels:
                if label in self._ever and label not in self._labels:
                    self._index.unmark_deleted(label)
            self._index.add_items(vectors, offsets, num_threads=self.threads)
            self._labels.update(labels)
            self._ever.update(labels)

    def remove(self, offsets: np.ndarray) -> None:
        with self._lock:
            for label in offsets.tolist():
                if label in self._labels:
                    self._index.mark_deleted(label)
                    self._labels.discard(label)

    def search(self, queries: np.ndarray, k: int, ef: int, threads: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Top-k labels and internal similarities (bigger is better) per query.

        k is clamped to the graph's size; rows with fewer than k hits are padded
        with label -1 and similarity -inf.
        """
        m = queries.shape[0]
        with self._lock:
            size = len(self._labels)
            k = min(k, size)
            if k <= 0:
                return no_hits(m, 0)
            self._index.set_ef(max(ef, k))
            try:
                labels, dist = self._index.knn_query(queries, k=k, num_threads=threads)
            except RuntimeError:
                # hnswlib could not find k live neighbours (many deletions): fetch
                # one at a time less until it can, rather than failing the search.
                return self._search_fewer(queries, k)
        return labels.astype(np.int64), self._to_similarity(dist)

    def _search_fewer(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        labels_out, sims_out = no_hits(queries.shape[0], k)
        for i in range(len(queries)):
            kk = k
            while kk > 0:
                try:
                    labels, dist = self._index.knn_query(queries[i : i + 1], k=kk, num_threads=1)
                    labels_out[i, :kk] = labels[0]
                    sims_out[i, :kk] = self._to_similarity(dist[0])
                    break
                except RuntimeError:
                    kk //= 2
        return labels_out, sims_out

    def _to_similarity(self, dist: np.ndarray) -> np.ndarray:
        dist = np.asarray(dist, dtype=np.float32)
        if self.distance is Distance.EUCLID:
            return -dist  # hnswlib "l2" is the squared distance, Shoal's internal Euclid is its negation
        return np.float32(1.0) - dist  # hnswlib "ip" distance is 1 - dot

    def save(self, path: Path, outer: threading.RLock, read: Callable[[], T]) -> T:
        """Write the graph to ``path`` and return ``read()``, called while the graph
        is locked, so that what it reads about the graph holds for the file
        (``save_locked``)."""
        return save_locked(self._lock, outer, read, lambda: self._index.save_index(str(path)))

    @classmethod
    def load(cls, path: Path, dim: int, distance: Distance, config: HnswConfig, labels: np.ndarray, threads: int = 1) -> HnswIndex:
        """Load a saved graph; ``labels`` are the offsets that are current in it."""
        self = cls.__new__(cls)
        self.dim, self.distance, self.config = dim, distance, config
        self.threads = max(1, threads)
        self._lock = threading.Lock()
        self._index = hnswlib.Index(space=SPACES[distance], dim=dim)
        self._index.load_index(str(path), allow_replace_deleted=False)
        self._index.set_num_threads(self.threads)
        self._ever = set(self._index.get_ids_list())
        self._labels = set(labels.tolist())
        dead = self._ever - self._labels
        for label in dead:
            try:
                self._index.mark_deleted(label)
            except RuntimeError:
                pass  # already marked deleted when the graph was saved
        return self
