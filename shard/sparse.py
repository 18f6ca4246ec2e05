"""One named sparse vector of a shard: the vectors by offset and an inverted index.

A sparse vector is ``(indices, values)``: u32 dimension ids and f32 weights.
Scoring is Qdrant's (lib/sparse common/sparse_vector.rs ``score_vectors``): the
dot product over the indices both vectors hold, and a point that shares no index
with the query is no candidate at all (not a score of 0). Search reads only the
postings of the query's indices, so it is exact, as Qdrant's inverted index is.

Qdrant keeps a vector's indices sorted (``double_sort``: unsorted input is
accepted and sorted, values following), so every vector is stored sorted and
returned that way. An empty vector is stored (a point can hold it and read it
back) but never indexed: it can match nothing, and it is no document for IDF
(Qdrant's ``build_ram_index``: "do not index empty vectors").

The ``idf`` modifier scales each query weight by ``ln((N - df + 0.5) / (df + 0.5) + 1)``
(Qdrant query_context.rs ``fancy_idf``), N the number of indexed vectors and df
those holding the index (since Qdrant PR #6739, 1.15: indexed vectors, not
points). N and df must be the collection's, not this shard's, so that scores do
not depend on the shard count: the caller sums :meth:`SparseStore.document_frequencies`
and :attr:`SparseStore.vector_count` over shards and passes them back as an
:class:`Idf`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shard import fileio
from shard.types import BadInput

MAX_INDEX = 2**32 - 1  # DimId is u32
_EMPTY_I = np.zeros(0, dtype=np.uint32)
_EMPTY_V = np.zeros(0, dtype=np.float32)


class SparseVectorError(BadInput):
    """A sparse vector that breaks Qdrant's ``validate_sparse_vector_impl``.

    ``errors`` are validator's (field, message) pairs, relative to the vector: the
    gateway answers them as Qdrant's REST API does, 422 "Validation error in JSON
    body: [<path>.values: ...]", prefixing the vector's path in the request. The
    text alone is what Qdrant's gRPC API puts after "Sparse indices does not match
    sparse vector conditions: "."""

    def __init__(self, errors: list[tuple[str, str]]):
        self.errors = list(errors)
        super().__init__("; ".join(f"{field}: {message}" for field, message in errors))

    def __reduce__(self):
        return (SparseVectorError, (self.errors,))


def _rule(code: str) -> str:
    """validator's Display of a ValidationError with a code and no message or params."""
    return f"Validation error: {code} [{{}}]"


LENGTH_MISMATCH = ("values", _rule("must be the same length as indices"))
NOT_UNIQUE = ("indices", _rule("must be unique"))


def validate(indices, values) -> tuple[np.ndarray, np.ndarray]:
    """The vector as sorted (u32 indices, f32 values) arrays; SparseVectorError if
    the lengths differ or an index repeats (both reported when both hold; Qdrant's
    order of the two is a hash map's). Unsorted indices are accepted and sorted,
    as Qdrant sorts them. Never mutates its inputs."""
    try:
        raw_i = np.asarray(indices)
        raw_v = np.asarray(values, dtype=np.float32)
    except (TypeError, ValueError):
        raise BadInput("a sparse vector's indices and values must be lists of numbers") from None
    if raw_i.ndim != 1 or raw_v.ndim != 1:
        raise BadInput("a sparse vector's indices and values must be flat lists")
    if raw_i.size and (not np.issubdtype(raw_i.dtype, np.integer) or raw_i.min() < 0 or raw_i.max() > MAX_INDEX):
        raise BadInput(f"sparse vector indices must be integers from 0 to {MAX_INDEX}")
    idx = raw_i.astype(np.uint32)
    errors = []
    if idx.size != raw_v.size:
        errors.append(LENGTH_MISMATCH)
    if np.unique(idx).size != idx.size:
        errors.append(NOT_UNIQUE)
    if errors:
        raise SparseVectorError(errors)
    order = np.argsort(idx, kind="stable")
    return idx[order], raw_v[order]


def average(vectors: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """The mean of sparse vectors (sorted indices, f32 values): every index any of
    them has, its values summed and divided by their number (Qdrant's sparse
    ``avg_vector_for_recommendation``)."""
    if not vectors:
        return np.zeros(0, dtype=np.uint32), _EMPTY_V
    indices = np.concatenate([v[0] for v in vectors]).astype(np.int64)
    values = np.concatenate([v[1] for v in vectors]).astype(np.float32)
    union, inverse = np.unique(indices, return_inverse=True)
    sums = np.zeros(len(union), dtype=np.float32)
    np.add.at(sums, inverse, values)
    return union.astype(np.uint32), sums / np.float32(len(vectors))


def combine(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray], op) -> tuple[np.ndarray, np.ndarray]:
    """``op(a_value, b_value)`` at every index of either (0 where one lacks it)."""
    union = np.union1d(a[0], b[0])
    left, right = np.zeros(len(union), dtype=np.float32), np.zeros(len(union), dtype=np.float32)
    left[np.searchsorted(union, a[0])] = a[1]
    right[np.searchsorted(union, b[0])] = b[1]
    return union.astype(np.uint32), op(left, right).astype(np.float32)


def idf_weights(n: int, df: np.ndarray) -> np.ndarray:
    """Qdrant's ``fancy_idf`` in f32: ln((N - df + 0.5) / (df + 0.5) + 1)."""
    n32 = np.float32(n)
    df32 = np.asarray(df, dtype=np.float32)
    half = np.float32(0.5)
    return np.log((n32 - df32 + half) / (df32 + half) + np.float32(1.0)).astype(np.float32)


LOCAL_IDF = "local"  # a query's idf: this store's own statistics (a collection of one shard)


@dataclass(frozen=True)
class Idf:
    """Collection-wide IDF statistics for one query: N and df of each of its indices."""

    n: int
    df: dict[int, int]

    def scale(self, indices: np.ndarray, values: np.ndarray) -> np.ndarray:
        """The query's values times the IDF of their index (a new array)."""
        df = np.fromiter((self.df.get(int(i), 0) for i in indices), dtype=np.int64, count=len(indices))
        return (values * idf_weights(self.n, df)).astype(np.float32)


class _Posting:
    """The (offset, weight) pairs of one dimension, as sorted arrays, with writes
    kept aside until the next read: a write costs O(1), a read of a changed
    posting one merge of its length."""

    __slots__ = ("offsets", "weights", "pending")

    def __init__(self, offsets: np.ndarray = None, weights: np.ndarray = None):
        self.offsets = np.zeros(0, dtype=np.int64) if offsets is None else offsets
        self.weights = _EMPTY_V if weights is None else weights
        self.pending: dict[int, float | None] = {}  # offset -> new weight, None: removed

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        if self.pending:
            touched = np.fromiter(self.pending, dtype=np.int64, count=len(self.pending))
            keep = ~np.isin(self.offsets, touched)
            added = [(o, w) for o, w in self.pending.items() if w is not None]
            offsets = np.concatenate([self.offsets[keep], np.array([o for o, _ in added], dtype=np.int64)])
            weights = np.concatenate([self.weights[keep], np.array([w for _, w in added], dtype=np.float32)])
            order = np.argsort(offsets, kind="stable")
            self.offsets, self.weights, self.pending = offsets[order], weights[order], {}
        return self.offsets, self.weights


class SparseStore:
    """The sparse vectors of one name, by offset (the rows of ``shard.points``).

    Not thread-safe, reads included (a search merges the postings' pending
    writes): the caller holds the shard lock, as ``LocalShard`` does for every call."""

    def __init__(self):
        self.vectors: list[tuple[np.ndarray, np.ndarray] | None] = []
        self.postings: dict[int, _Posting] = {}
        self.df: dict[int, int] = {}  # index -> indexed vectors holding it
        self.vector_count = 0  # indexed (non-empty) vectors: N of this shard
        self.entries = 0  # (index, value) pairs stored
        self._present = np.zeros(0, dtype=bool)  # by offset: holds a vector (capacity >= len(vectors))

    @property
    def size(self) -> int:
        """One past the highest offset ever set."""
        return len(self.vectors)

    def set(self, offsets, vectors) -> None:
        """Stores ``vectors`` (each ``(indices, values)``) at ``offsets``, replacing what
        those offsets held. All are validated first: one bad vector changes nothing."""
        checked = [validate(i, v) for i, v in vectors]
        if len(checked) != len(offsets):
            raise ValueError("one vector per offset")
        for offset, vector in zip((int(o) for o in offsets), checked):
            self._unindex(offset)
            if offset >= len(self.vectors):
                self.vectors.extend([None] * (offset + 1 - len(self.vectors)))
            if offset >= len(self._present):  # grown by a factor: appends stay amortised O(1)
                grown = np.zeros(max(offset + 1, len(self._present) * 3 // 2, 1024), dtype=bool)
                grown[: len(self._present)] = self._present
                self._present = grown
            self.vectors[offset] = vector
            self._present[offset] = True
            self._index(offset, vector)

    def clear(self, offsets) -> None:
        """Removes the vectors at ``offsets`` (a point deleted, or its vector dropped)."""
        for offset in (int(o) for o in offsets):
            if offset < len(self.vectors):
                self._unindex(offset)
                self.vectors[offset] = None
                self._present[offset] = False

    def _index(self, offset: int, vector: tuple[np.ndarray, np.ndarray]) -> None:
        indices, values = vector
        if not len(indices):
            return
        self.vector_count += 1
        self.entries += len(indices)
        for i, w in zip(indices.tolist(), values.tolist()):
            self.postings.setdefault(i, _Posting()).pending[offset] = w
            self.df[i] = self.df.get(i, 0) + 1

    def _unindex(self, offset: int) -> None:
        old = self.vectors[offset] if offset < len(self.vectors) else None
        if old is None or not len(old[0]):
            return
        self.vector_count -= 1
        self.entries -= len(old[0])
        for i in old[0].tolist():
            self.postings[i].pending[offset] = None
            self.df[i] -= 1
            if not self.df[i]:
                del self.df[i], self.postings[i]

    def has(self, offset: int) -> bool:
        return offset < len(self.vectors) and self.vectors[offset] is not None

    def get(self, offset: int) -> tuple[np.ndarray, np.ndarray]:
        """The stored vector (sorted by index); KeyError if the offset holds none."""
        vector = self.vectors[offset] if offset < len(self.vectors) else None
        if vector is None:
            raise KeyError(offset)
        return vector

    def mask(self, size: int) -> np.ndarray:
        """Which of the first ``size`` offsets hold a vector (an empty one included)."""
        out = np.zeros(size, dtype=bool)
        n = min(size, len(self.vectors))
        out[:n] = self._present[:n]
        return out

    def document_frequencies(self, indices) -> dict[int, int]:
        """This shard's df of each of ``indices``: its share of the collection's."""
        return {int(i): self.df.get(int(i), 0) for i in indices}

    def weights(self, indices, values, idf: Idf | str | None) -> tuple[np.ndarray, np.ndarray]:
        """The query's (indices, values), validated, each value times its index's
        IDF when ``idf`` is given (``LOCAL_IDF``: this store's own statistics)."""
        q_idx, q_val = validate(indices, values)
        if idf == LOCAL_IDF:
            idf = Idf(self.vector_count, self.document_frequencies(q_idx))
        if idf is not None:
            q_val = idf.scale(q_idx, q_val)
        return q_idx, q_val

    def score(self, indices, values, offsets, idf: Idf | None = None) -> np.ndarray:
        """Scores of the query against the vectors at ``offsets`` (f32; -inf where a
        vector shares no index with the query or is missing). For rescoring and
        the Query API, where the candidates come from elsewhere."""
        q_idx, q_val = self.weights(indices, values, idf)
        out = np.full(len(offsets), -np.inf, dtype=np.float32)
        for k, offset in enumerate(int(o) for o in offsets):
            vector = self.vectors[offset] if 0 <= offset < len(self.vectors) else None
            if vector is None:
                continue
            common, qi, vi = np.intersect1d(q_idx, vector[0], assume_unique=True, return_indices=True)
            if len(common):
                out[k] = np.float32(np.dot(q_val[qi].astype(np.float64), vector[1][vi].astype(np.float64)))
        return out

    def scores_all(self, indices, values, size: int, idf: Idf | None = None) -> np.ndarray:
        """The query's score against every offset below ``size`` (f32), 0 where
        no vector shares an index with it: read from the postings of its indices
        only, for recommend, discover and context examples."""
        q_idx, q_val = self.weights(indices, values, idf)
        out = np.zeros(size, dtype=np.float64)
        for i, w in zip(q_idx.tolist(), q_val):
            posting = self.postings.get(i)
            if posting is None:
                continue
            offsets, weights = posting.arrays()
            inside = offsets < size  # offsets are unique within a posting
            out[offsets[inside]] += weights[inside].astype(np.float64) * np.float64(w)
        return out.astype(np.float32)

    def search(self, indices, values, limit: int, allowed: np.ndarray | None = None,
               score_threshold: float | None = None, idf: Idf | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The ``limit`` best (offsets, scores), best first, ties by offset. Only
        vectors sharing an index with the query are candidates; ``allowed`` (a bool
        mask by offset, False past its end) restricts them; ``score_threshold`` is
        strict, as in Qdrant: score > t."""
        q_idx, q_val = self.weights(indices, values, idf)
        parts = [(self.postings[i].arrays(), w) for i, w in zip(q_idx.tolist(), q_val) if i in self.postings]
        if limit <= 0 or not parts:
            return np.zeros(0, dtype=np.int64), _EMPTY_V
        # Scores summed straight into one array by offset (offsets are unique within
        # a posting): no sort of the postings, only of the top.
        size = max((int(offsets[-1]) + 1 for (offsets, _), _ in parts if len(offsets)), default=0)
        sums = np.zeros(size, dtype=np.float64)
        touched = np.zeros(size, dtype=bool)
        for (offsets, weights), w in parts:
            sums[offsets] += (weights * w).astype(np.float32)
            touched[offsets] = True
        if allowed is not None:
            allowed = np.asarray(allowed, dtype=bool)
            touched[: min(size, len(allowed))] &= allowed[:size]
            touched[len(allowed):] = False
        candidates = np.flatnonzero(touched)
        scores = sums[candidates].astype(np.float32)
        if score_threshold is not None:
            keep = scores > np.float32(score_threshold)
            candidates, scores = candidates[keep], scores[keep]
        if limit < len(scores):
            part = np.argpartition(-scores, limit - 1)[:limit]
            order = part[np.lexsort((candidates[part], -scores[part]))]
        else:
            order = np.lexsort((candidates, -scores))
        return candidates[order], scores[order]

    def nbytes(self) -> int:
        """About what the vectors and the index take in memory, in O(1): 8 bytes a
        stored pair (u32 index, f32 value), 12 a posting entry (i64 offset, f32
        weight), 8 an offset. Python's object overhead is not counted."""
        return 20 * self.entries + 8 * len(self.vectors)

    # -- persistence -----------------------------------------------------

    def to_arrays(self) -> dict[str, np.ndarray]:
        """CSR form: ``present`` by offset, ``indptr`` into ``indices``/``values``."""
        present = np.array([v is not None for v in self.vectors], dtype=bool)
        lengths = np.array([0 if v is None else len(v[0]) for v in self.vectors], dtype=np.int64)
        held = [v for v in self.vectors if v is not None]
        return {
            "present": present,
            "indptr": np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
            "indices": np.concatenate([i for i, _ in held]) if held else _EMPTY_I,
            "values": np.concatenate([v for _, v in held]) if held else _EMPTY_V,
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> SparseStore:
        """The store :meth:`to_arrays` describes; the index is rebuilt in bulk."""
        present, indptr = arrays["present"].astype(bool), arrays["indptr"].astype(np.int64)
        indices, values = arrays["indices"].astype(np.uint32), arrays["values"].astype(np.float32)
        lengths = np.diff(indptr) if len(indptr) else indptr
        rising = np.diff(indices.astype(np.int64)) > 0
        rising[indptr[1:-1][(indptr[1:-1] > 0) & (indptr[1:-1] < len(indices))] - 1] = True  # row starts
        if (len(indptr) != len(present) + 1 or indptr[0] != 0 or indptr[-1] != len(indices)
                or len(values) != len(indices) or (lengths < 0).any() or lengths[~present].any() or not rising.all()):
            raise ValueError("sparse arrays do not fit together")
        store = cls()
        store.vectors = [(indices[a:b], values[a:b]) if p else None
                         for p, a, b in zip(present.tolist(), indptr[:-1].tolist(), indptr[1:].tolist())]
        rows = np.repeat(np.arange(len(present), dtype=np.int64), np.diff(indptr))
        order = np.lexsort((rows, indices))
        rows, by_dim, weights = rows[order], indices[order], values[order]
        dims, starts, counts = np.unique(by_dim, return_index=True, return_counts=True)
        for dim, a, c in zip(dims.tolist(), starts.tolist(), counts.tolist()):
            store.postings[dim] = _Posting(rows[a:a + c], weights[a:a + c])
            store.df[dim] = c
        store._present = present.copy()
        store.vector_count = int(np.count_nonzero(present & (np.diff(indptr) > 0)))
        store.entries = len(indices)
        return store

    def save(self, path: Path) -> None:
        """Writes the store to the file ``path`` (an .npz) at once, crash-safely."""
        fileio.write_arrays(path, self.to_arrays())

    @classmethod
    def load(cls, path: Path) -> SparseStore:
        return cls.from_arrays(fileio.read_arrays(path, ("present", "indptr", "indices", "values")))
