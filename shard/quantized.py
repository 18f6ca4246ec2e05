"""The one module that imports usearch: a graph over binary quantized vectors (a
scalar one is Shoal's own, ``shard.scalar_graph``; product quantization's is faiss's,
``shard.product``).

``QuantizedIndex`` has ``HnswIndex``'s interface (labels are shard offsets; add,
remove, search, save, load) but holds each vector as bits, never its float32 copy
(that stays in the shard's vector store, for rescoring and for answers). The
bits are Qdrant's ``encoding`` (lib/quantization encoded_vectors_binary.rs):

- ``one_bit`` (the default): a bit per dimension, its sign;
- ``two_bits``: two per dimension, from its z-score against the dimension's mean
  and standard deviation (``stats``, measured on the sample a new graph is given):
  00 at -2/3 or below, 10 between, 11 at 2/3 or above: the first bits of every
  dimension, then the second ones;
- ``one_and_half_bits``: the two-bit code with the second bits of each pair of
  dimensions OR-ed into one.

Two rows are scored by their Hamming distance; the similarity reported is
``1 - 2 * hamming / dim`` (the cosine of two vectors whose bits agree that often,
to first order; for Euclid, ``2 * that - 2``, the negated squared distance of
unit vectors with that cosine). With ``query_encoding`` ``scalar4bits`` or
``scalar8bits`` the query is held in 4 or 8 bits a dimension instead (asymmetric,
as in Qdrant: a bit scored against the query's value, not its sign): the walk
compares bits, and its candidates are then scored with that query and ordered by
it. A thirty-second of the bytes (a sixteenth with two bits): candidates are
meant to be rescored (Qdrant's default for binary).

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

ENCODINGS = ("one_bit", "two_bits", "one_and_half_bits")  # Qdrant's binary encodings
SIGMAS = 2.0 / 3.0  # the middle code of two bits: z-scores strictly between -SIGMAS and SIGMAS
QUERY_BITS = {"scalar4bits": 4, "scalar8bits": 8}  # Qdrant's query_encodings; the default: the storage's


def needs_stats(quantization: Quantization) -> bool:
    """Whether a binary graph under ``quantization`` codes by z-scores (two bits, one
    and a half), and so needs each dimension's mean and standard deviation."""
    return (quantization.encoding or "one_bit") != "one_bit"


def element_stats(sample: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each dimension's mean and standard deviation over ``sample`` (n, dim), f32."""
    sample = np.asarray(sample, dtype=np.float64)
    return sample.mean(axis=0).astype(np.float32), sample.std(axis=0).astype(np.float32)


class QuantizedIndex:
    """A usearch graph over binary copies of some offsets of one vector store.
    Thread-safe as ``HnswIndex`` is: one lock around mutations and searches."""

    kind = "binary"
    scale = None  # only a scalar graph has one (``shard.graphs.describe``)

    def __init__(self, dim: int, distance: Distance, config: HnswConfig, quantization: Quantization,
                 threads: int = 1, stats: tuple[np.ndarray, np.ndarray] | None = None):
        """``stats``: each dimension's mean and standard deviation (``element_stats``),
        which the two-bit codes need; without them a dimension codes as its sign twice
        (Qdrant's encoding without statistics)."""
        if quantization.kind != "binary":
            raise ValueError(f"no binary graph for {quantization.kind!r}")
        self.dim, self.distance, self.config, self.quantization = dim, distance, config, quantization
        self.encoding = quantization.encoding or "one_bit"
        if self.encoding not in ENCODINGS:
            raise ValueError(f"no binary encoding {self.encoding!r}")
        self.bits = {"one_bit": dim, "two_bits": 2 * dim, "one_and_half_bits": dim + (dim + 1) // 2}[self.encoding]
        self.query_bits = QUERY_BITS.get(quantization.query_encoding)
        self.stats = None
        if stats is not None and needs_stats(quantization):
            mean, std = (np.asarray(x, dtype=np.float32) for x in stats)
            if mean.shape != (dim,) or std.shape != (dim,) or not (np.isfinite(mean).all() and np.isfinite(std).all()):
                raise ValueError("binary graph statistics of another shape, or not finite")
            self.stats = (mean, std)
        self.threads = max(1, threads)
        self._lock = threading.Lock()
        self._index = self._new_index()
        self._labels: set[int] = set()

    def _new_index(self) -> Index:
        return Index(ndim=self.bits, metric="hamming", dtype="b1", connectivity=self.config.m,
                     expansion_add=self.config.ef_construct, expansion_search=64)

    def stats_json(self) -> dict | None:
        """The statistics, for the snapshot's meta.json (``shard.graphs.describe``)."""
        if self.stats is None:
            return None
        return {"mean": self.stats[0].tolist(), "stddev": self.stats[1].tolist()}

    def __len__(self) -> int:
        return len(self._labels)

    def labels(self) -> np.ndarray:
        return np.fromiter(self._labels, dtype=np.int64, count=len(self._labels))

    def encode(self, vectors: np.ndarray) -> np.ndarray:
        """The packed bits of float32 ``vectors`` (n, dim) in the graph's encoding."""
        return np.packbits(self.code(vectors), axis=-1)

    def code(self, vectors: np.ndarray) -> np.ndarray:
        """The bits of ``vectors`` (n, ``self.bits``, bool), unpacked."""
        vectors = np.asarray(vectors, dtype=np.float32)
        if self.encoding == "one_bit":
            return vectors > 0
        if self.stats is None:
            first = second = vectors > 0
        else:
            mean, std = self.stats
            flat = std < np.finfo(np.float32).eps  # no spread: the sign, and no second bit
            z = (vectors - mean) / np.where(flat, np.float32(1.0), std)
            first = np.where(flat, vectors > 0, z > -SIGMAS)
            second = ~flat & (z >= SIGMAS)
        if self.encoding == "one_and_half_bits":
            if self.dim % 2:
                second = np.concatenate([second, np.zeros((len(second), 1), dtype=bool)], axis=1)
            second = second[:, 0::2] | second[:, 1::2]
        return np.concatenate([first, second], axis=1)

    def query_levels(self, query: np.ndarray) -> np.ndarray:
        """A query held in ``query_bits`` bits a dimension, as fractions of the
        top level (0..1), laid out as the stored bits are: each dimension's level
        for its first bits, then again for its second ones (for one and a half
        bits, the higher of each pair's). Qdrant's ``_encode_scalar_query_vector``:
        the range ±max |value|, cut into 2**bits - 1 steps, rounded half up."""
        query = np.asarray(query, dtype=np.float32)
        if self.encoding == "two_bits":
            query = np.concatenate([query, query])
        elif self.encoding == "one_and_half_bits":
            pairs = np.append(query, query[-1]) if self.dim % 2 else query
            query = np.concatenate([query, np.maximum(pairs[0::2], pairs[1::2])])
        top = (1 << self.query_bits) - 1
        reach = np.float32(np.abs(query).max(initial=0.0))
        step = np.float32(2.0) * reach / np.float32(top)
        if step <= np.finfo(np.float32).eps:
            return np.zeros(len(query), dtype=np.float32)
        levels = np.floor((query + reach) / step + np.float32(0.5)) % (top + 1)
        return (levels / np.float32(top)).astype(np.float32)

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
                if self.query_bits and count:
                    found_keys, hamming = self._asymmetric(queries[i], keys[i, :count])
                else:
                    found_keys, hamming = keys[i, :count], dist[i, :count]
                labels[i, :count] = found_keys
                sims[i, :count] = self._to_similarity(hamming)
        return labels, sims

    def _asymmetric(self, query: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``keys`` ordered by their distance to the query held in ``query_bits``
        bits (Qdrant's ``xor_popcnt_scalar`` over the top level): a stored bit 0
        is as far from a level as the level, a bit 1 as 1 minus it. Ties keep the
        walk's order. Under the graph's lock (the keys are in it)."""
        codes = np.stack(self._index.get(np.asarray(keys, dtype=np.uint64)))
        bits = np.unpackbits(codes, axis=-1, count=self.bits).astype(np.float32)
        levels = self.query_levels(query)
        distance = levels.sum(dtype=np.float32) + bits @ (np.float32(1.0) - np.float32(2.0) * levels)
        order = np.argsort(distance, kind="stable")
        return keys[order], distance[order].astype(np.float32)

    def _to_similarity(self, dist: np.ndarray) -> np.ndarray:
        cosine = np.float32(1.0) - np.float32(2.0 / self.dim) * dist
        # Euclid: -|a - b|^2 of unit vectors with that cosine
        return cosine if self.distance is not Distance.EUCLID else np.float32(2.0) * cosine - np.float32(2.0)

    def save(self, path: Path, outer: threading.RLock, read: Callable[[], T]) -> T:
        """As ``HnswIndex.save``: the graph to ``path``, and ``read()`` under both locks."""
        return save_locked(self._lock, outer, read, lambda: self._index.save(str(path)))

    @classmethod
    def load(cls, path: Path, dim: int, distance: Distance, config: HnswConfig, quantization: Quantization,
             labels: np.ndarray, threads: int = 1, stats: dict | None = None) -> QuantizedIndex:
        """A saved graph; ``labels`` are the offsets current in it (the others go);
        ``stats``: what ``stats_json`` wrote. ValueError when the file's bits are not
        the encoding's, or the two-bit statistics are missing or malformed (the
        graph is then built again from the vectors)."""
        if needs_stats(quantization):
            if not isinstance(stats, dict) or not isinstance(stats.get("mean"), list) \
                    or not isinstance(stats.get("stddev"), list):
                raise ValueError("a two-bit graph without its statistics")
            try:
                stats = (np.array(stats["mean"], dtype=np.float32), np.array(stats["stddev"], dtype=np.float32))
            except (TypeError, ValueError) as exc:
                raise ValueError(f"binary graph statistics: {exc}") from None
        else:
            stats = None
        self = cls(dim, distance, config, quantization, threads, stats)
        self._index.load(str(path))
        if self._index.ndim != self.bits:
            raise ValueError(f"a graph of {self._index.ndim} bits a vector, the encoding has {self.bits}")
        held = np.asarray(self._index.keys, dtype=np.int64)
        keep = set(labels.tolist())
        dead = [label for label in held.tolist() if label not in keep]
        if dead:
            self._index.remove(np.asarray(dead, dtype=np.uint64))
        self._labels = set(held.tolist()) - set(dead)
        return self
