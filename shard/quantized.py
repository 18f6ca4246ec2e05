"""The one module that imports usearch: a graph over binary quantized vectors (a
scalar one is Shoal's own, ``shard.scalar_graph``; product quantization's is faiss's,
``shard.product``).

``QuantizedIndex`` has ``HnswIndex``'s interface (labels are shard offsets; add,
remove, search, save, load) but holds each vector as one bit per dimension (its
sign), never its float32 copy (that stays in the shard's vector store, for
rescoring and for answers). Two rows are scored by their Hamming distance; the
similarity reported is ``1 - 2 * hamming / dim`` (the cosine of two vectors whose
bits agree that often, to first order; for Euclid, ``2 * that - 2``, the negated
squared distance of unit vectors with that cosine). A thirty-second of the bytes:
candidates are meant to be rescored (Qdrant's default for binary).

Manhattan vectors get no graph of any kind (``hnsw.supported``).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Callable, TypeVar

import numpy as np
from usearch.index import Index

from shard.hnsw import no_hits, save_locked
from shard.types import Distance, HnswConfig, Quantization

T = TypeVar("T")


class QuantizedIndex:
    """A usearch graph over binary copies of some offsets of one vector store.
    Thread-safe as ``HnswIndex`` is: one lock around mutations and searches."""

    kind = "binary"
    scale = None  # only a scalar graph has one (``shard.graphs.describe``)

    def __init__(self, dim: int, distance: Distance, config: HnswConfig, quantization: Quantization,
                 threads: int = 1):
        if quantization.kind != "binary":
            raise ValueError(f"no binary graph for {quantization.kind!r}")
        self.dim, self.distance, self.config, self.quantization = dim, distance, config, quantization
        self.threads = max(1, threads)
        self._lock = threading.Lock()
        self._index = self._new_index()
        self._labels: set[int] = set()

    def _new_index(self) -> Index:
        return Index(ndim=self.dim, metric="hamming", dtype="b1", connectivity=self.config.m,
                     expansion_add=self.config.ef_construct, expansion_search=64)

    def __len__(self) -> int:
        return len(self._labels)

    def labels(self) -> np.ndarray:
        return np.fromiter(self._labels, dtype=np.int64, count=len(self._labels))

    def encode(self, vectors: np.ndarray) -> np.ndarray:
        """The packed sign bits of float32 ``vectors`` (n, dim)."""
        return np.packbits(np.asarray(vectors, dtype=np.float32) > 0, axis=-1)

    def add(self, offsets: np.ndarray, vectors: np.ndarray) -> None:
        """Insert or replace the graph entries of ``offsets``."""
        if len(offsets) == 0:
            return
        with self._lock:
            keys = np.asarray(offsets, dtype=np.uint64)
            replaced = [label for label in offsets.tolist() if label in self._labels]
            if replaced:
                self._index.remove(np.asarray(replaced, dtype=np.uint64))
            self._index.add(keys, self.encode(vectors), threads=self.threads)
            self._labels.update(offsets.tolist())

    def remove(self, offsets: np.ndarray) -> None:
        with self._lock:
            gone = [label for label in offsets.tolist() if label in self._labels]
            if gone:
                self._index.remove(np.asarray(gone, dtype=np.uint64))
                self._labels.difference_update(gone)

    def search(self, queries: np.ndarray, k: int, ef: int, threads: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Top-k labels and approximate similarities per query, padded with label -1
        and similarity -inf (as ``HnswIndex.search``)."""
        m = queries.shape[0]
        with self._lock:
            k = min(k, len(self._labels))
            if k <= 0:
                return no_hits(m, 0)
            self._index.expansion_search = max(ef, k)
            found = self._index.search(self.encode(queries), k, threads=threads)
        keys = np.asarray(found.keys, dtype=np.int64).reshape(m, -1)
        dist = np.asarray(found.distances, dtype=np.float32).reshape(m, -1)
        # One query gives usearch's Matches (its hits only), several its BatchMatches.
        counts = np.asarray(found.counts).reshape(m) if m > 1 else np.array([keys.shape[1]])
        labels, sims = no_hits(m, k)
        for i, count in enumerate(counts.tolist()):
            labels[i, :count] = keys[i, :count]
            sims[i, :count] = self._to_similarity(dist[i, :count])
        return labels, sims

    def _to_similarity(self, dist: np.ndarray) -> np.ndarray:
        cosine = np.float32(1.0) - np.float32(2.0 / self.dim) * dist
        # Euclid: -|a - b|^2 of unit vectors with that cosine
        return cosine if self.distance is not Distance.EUCLID else np.float32(2.0) * cosine - np.float32(2.0)

    def save(self, path: Path, outer: threading.RLock, read: Callable[[], T]) -> T:
        """As ``HnswIndex.save``: the graph to ``path``, and ``read()`` under both locks."""
        return save_locked(self._lock, outer, read, lambda: self._index.save(str(path)))

    @classmethod
    def load(cls, path: Path, dim: int, distance: Distance, config: HnswConfig, quantization: Quantization,
             labels: np.ndarray, threads: int = 1) -> QuantizedIndex:
        """A saved graph; ``labels`` are the offsets current in it (the others go)."""
        self = cls(dim, distance, config, quantization, threads)
        self._index.load(str(path))
        held = np.asarray(self._index.keys, dtype=np.int64)
        keep = set(labels.tolist())
        dead = [label for label in held.tolist() if label not in keep]
        if dead:
            self._index.remove(np.asarray(dead, dtype=np.uint64))
        self._labels = set(held.tolist()) - set(dead)
        return self
