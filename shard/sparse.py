"""One named sparse vector of a shard: the vectors by offset and an inverted index.

A sparse vector is ``(indices, values)``: u32 dimension ids and f32 weights.
Scoring is Qdrant's (lib/sparse common/sparse_vector.rs ``score_vectors``): the
dot product over the indices both vectors hold, and a point that shares no index
with the query is no candidate at all (not a score of 0). Search reads only the
postings of the query's indices, so it is exact, as Qdrant's inverted index is.

A long query over common words would read a posting of half the collection for
each: a search for the top few therefore prunes (``_pruned_top``, after
MaxScore): it bounds what each part of a posting can add to a score, reads only
the parts that can decide the top, and scores the few vectors that can still
make it exactly from their own rows (the compiled loops of
``shard.sparse_kernels``), with the very scores the full scan gives. On the
benchmark's 100k texts a query's postings hold ~105k entries; it reads ~14k.

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
    order = np.argsort(idx, kind="stable")
    ordered = idx[order]
    errors = []
    if idx.size != raw_v.size:
        errors.append(LENGTH_MISMATCH)
    if ordered.size > 1 and (ordered[1:] == ordered[:-1]).any():
        errors.append(NOT_UNIQUE)
    if errors:
        raise SparseVectorError(errors)
    return ordered, raw_v[order]


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
        df = np.array([self.df.get(i, 0) for i in indices.tolist()], dtype=np.int64)
        return (values * idf_weights(self.n, df)).astype(np.float32)


class _Posting:
    """The (offset, weight) pairs of one dimension, as sorted arrays, with writes
    kept aside until the next read: a write costs O(1), a read of a changed
    posting one merge of its length."""

    __slots__ = ("offsets", "weights", "pending", "_levels")  # _levels: cached by levels()

    def __init__(self, offsets: np.ndarray = None, weights: np.ndarray = None):
        self.offsets = np.zeros(0, dtype=np.int64) if offsets is None else offsets
        self.weights = _EMPTY_V if weights is None else weights
        self.pending: dict[int, float | None] = {}  # offset -> new weight, None: removed
        self._levels: np.ndarray | None = None  # the parts table of levels(), cached

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        if self.pending:
            touched = np.fromiter(self.pending, dtype=np.int64, count=len(self.pending))
            keep = ~np.isin(self.offsets, touched)
            added = [(o, w) for o, w in self.pending.items() if w is not None]
            offsets = np.concatenate([self.offsets[keep], np.array([o for o, _ in added], dtype=np.int64)])
            weights = np.concatenate([self.weights[keep], np.array([w for _, w in added], dtype=np.float32)])
            order = np.argsort(offsets, kind="stable")
            self.offsets, self.weights, self.pending, self._levels = offsets[order], weights[order], {}, None
        return self.offsets, self.weights

    def levels(self, arena: _Arena) -> np.ndarray:
        """The posting cut by weight into a few disjoint parts, offsets sorted in
        each: a long posting's few heavy entries (a word said three times) apart
        from its many light ones, so that the pruned search bounds each part by
        its own highest weight. Each part's entries are written to ``arena``;
        the table has a row per part (columns ``sparse_kernels.START``..``HIGH``).
        Cached until the posting changes or the store starts a new arena."""
        offsets, weights = self.arrays()  # pending writes merged first: they drop the cached levels
        if self._levels is None:
            if len(weights) < LEVEL_MIN_ENTRIES:
                cuts = np.zeros(0, dtype=np.float32)
            else:
                cuts = np.unique(np.quantile(weights, LEVEL_QUANTILES).astype(np.float32))
            level = np.searchsorted(cuts, weights, side="left")  # (cuts[k-1], cuts[k]] -> k
            parts = [level == k for k in range(len(cuts) + 1)]
            parts = [mask for mask in parts if mask.any()]
            self._levels = np.array([(arena.append(offsets[m], weights[m]), np.count_nonzero(m),
                                      weights[m].min(), weights[m].max()) for m in parts], dtype=np.float64)
        return self._levels


class _Arena:
    """The parts of the postings (``_Posting.levels``) in two flat arrays, which
    the pruned search's one compiled call reads: each part is a slice, written
    when its posting is first searched after a change and never moved. The
    slices of a changed or dropped posting are dead: a store starts a new arena
    once its arena holds more than twice the entries of its postings."""

    def __init__(self):
        self.offsets = np.zeros(0, dtype=np.int64)
        self.weights = _EMPTY_V
        self.used = 0

    def append(self, offsets: np.ndarray, weights: np.ndarray) -> int:
        """Writes a part; returns where it begins."""
        n, at = len(offsets), self.used
        if at + n > len(self.offsets):
            grown = max(at + n, len(self.offsets) * 3 // 2, 1024)
            self.offsets = np.concatenate([self.offsets[:at], np.empty(grown - at, dtype=np.int64)])
            self.weights = np.concatenate([self.weights[:at], np.empty(grown - at, dtype=np.float32)])
        self.offsets[at : at + n], self.weights[at : at + n] = offsets, weights
        self.used += n
        return at


class _Rows:
    """The sparse vectors by offset, in one arena: each vector's sorted indices
    and values are a slice of two flat arrays, written once (an overwrite appends
    a new slice; the old one is dead) and compacted once half the arena is dead.
    Flat arrays are what the compiled scoring loops (``shard.sparse_kernels``)
    read, one candidate's row after another."""

    def __init__(self):
        self.start = np.zeros(0, dtype=np.int64)  # by offset: where its row begins
        self.length = np.zeros(0, dtype=np.int64)  # by offset: its row's length, -1: no vector
        self.indices, self.values = _EMPTY_I, _EMPTY_V
        self.size = 0  # one past the highest offset ever set
        self.used = 0  # entries of the arena written
        self.dead = 0  # of those, entries of overwritten or removed rows

    def put(self, offset: int, indices: np.ndarray, values: np.ndarray) -> None:
        if offset >= len(self.start):  # grown by a factor: appends stay amortised O(1)
            grown = max(offset + 1, len(self.start) * 3 // 2, 1024)
            self.start = np.concatenate([self.start, np.zeros(grown - len(self.start), dtype=np.int64)])
            self.length = np.concatenate([self.length, np.full(grown - len(self.length), -1, dtype=np.int64)])
        self.drop(offset)
        n = len(indices)
        if self.used + n > len(self.indices):
            if self.dead * 2 > self.used:
                self._compact()
            if self.used + n > len(self.indices):
                grown = max(self.used + n, len(self.indices) * 3 // 2, 4096)
                self.indices = np.concatenate([self.indices[: self.used], np.zeros(grown - self.used, dtype=np.uint32)])
                self.values = np.concatenate([self.values[: self.used], np.zeros(grown - self.used, dtype=np.float32)])
        self.indices[self.used:self.used + n] = indices
        self.values[self.used:self.used + n] = values
        self.start[offset], self.length[offset] = self.used, n
        self.used += n
        self.size = max(self.size, offset + 1)

    def drop(self, offset: int) -> None:
        if offset < self.size and self.length[offset] >= 0:
            self.dead += int(self.length[offset])
            self.length[offset] = -1

    def get(self, offset: int) -> tuple[np.ndarray, np.ndarray] | None:
        """The row at ``offset`` (views: rows are never written over), or None."""
        if not 0 <= offset < self.size or self.length[offset] < 0:
            return None
        a = int(self.start[offset])
        b = a + int(self.length[offset])
        return self.indices[a:b], self.values[a:b]

    def present(self) -> np.ndarray:
        """Which offsets below ``size`` hold a vector."""
        return self.length[: self.size] >= 0

    def live(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The offsets holding a vector, their rows' lengths, and where in the arena
        their entries are, one row after another in offset order."""
        live = np.flatnonzero(self.present())
        lengths = self.length[live]
        starts = np.cumsum(lengths) - lengths  # where each row starts once packed
        take = np.repeat(self.start[live] - starts, lengths) + np.arange(int(lengths.sum()), dtype=np.int64)
        return live, lengths, take

    def _compact(self) -> None:
        """Live rows copied into new arrays, in offset order (views handed out
        before keep the old arrays)."""
        live, lengths, take = self.live()
        self.indices, self.values = self.indices[take], self.values[take]
        self.start[live] = np.cumsum(lengths) - lengths
        self.used, self.dead = len(take), 0

    @classmethod
    def from_csr(cls, present: np.ndarray, indptr: np.ndarray, indices: np.ndarray, values: np.ndarray) -> _Rows:
        rows = cls()
        rows.size = len(present)
        rows.start = indptr[:-1].astype(np.int64).copy()
        rows.length = np.where(present, np.diff(indptr), -1).astype(np.int64)
        rows.indices, rows.values = indices.astype(np.uint32).copy(), values.astype(np.float32).copy()
        rows.used = len(indices)
        return rows


class SparseStore:
    """The sparse vectors of one name, by offset (the rows of ``shard.points``).

    Not thread-safe, reads included (a search merges the postings' pending
    writes): the caller holds the shard lock, as ``LocalShard`` does for every call."""

    def __init__(self):
        self.rows = _Rows()
        self.postings: dict[int, _Posting] = {}
        self.df: dict[int, int] = {}  # index -> indexed vectors holding it
        self.vector_count = 0  # indexed (non-empty) vectors: N of this shard
        self.entries = 0  # (index, value) pairs stored
        self._scratch = _Scratch()  # the pruned search's arrays, reused
        self._arena = _Arena()  # the postings' parts, as the pruned search reads them

    @property
    def size(self) -> int:
        """One past the highest offset ever set."""
        return self.rows.size

    @property
    def vectors(self) -> list[tuple[np.ndarray, np.ndarray] | None]:
        """Every offset's vector (sorted by index) or None, below ``size``."""
        return [self.rows.get(offset) for offset in range(self.size)]

    def set(self, offsets, vectors) -> None:
        """Stores ``vectors`` (each ``(indices, values)``) at ``offsets``, replacing what
        those offsets held. All are validated first: one bad vector changes nothing."""
        checked = [validate(i, v) for i, v in vectors]
        if len(checked) != len(offsets):
            raise ValueError("one vector per offset")
        for offset, (indices, values) in zip((int(o) for o in offsets), checked):
            self._unindex(offset)
            self.rows.put(offset, indices, values)
            self._index(offset, indices, values)

    def clear(self, offsets) -> None:
        """Removes the vectors at ``offsets`` (a point deleted, or its vector dropped)."""
        for offset in (int(o) for o in offsets):
            self._unindex(offset)
            self.rows.drop(offset)

    def _index(self, offset: int, indices: np.ndarray, values: np.ndarray) -> None:
        if not len(indices):
            return
        self.vector_count += 1
        self.entries += len(indices)
        for i, w in zip(indices.tolist(), values.tolist()):
            self.postings.setdefault(i, _Posting()).pending[offset] = w
            self.df[i] = self.df.get(i, 0) + 1

    def _unindex(self, offset: int) -> None:
        old = self.rows.get(offset)
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
        return self.rows.get(offset) is not None

    def get(self, offset: int) -> tuple[np.ndarray, np.ndarray]:
        """The stored vector (sorted by index); KeyError if the offset holds none."""
        vector = self.rows.get(offset)
        if vector is None:
            raise KeyError(offset)
        return vector

    def mask(self, size: int) -> np.ndarray:
        """Which of the first ``size`` offsets hold a vector (an empty one included)."""
        out = np.zeros(size, dtype=bool)
        n = min(size, self.size)
        out[:n] = self.rows.present()[:n]
        return out

    def document_frequencies(self, indices) -> dict[int, int]:
        """This shard's df of each of ``indices``: its share of the collection's."""
        return {int(i): self.df.get(int(i), 0) for i in indices}

    def weights(self, indices, values, idf: Idf | str | None) -> tuple[np.ndarray, np.ndarray]:
        """The query's (indices, values), validated, each value times its index's
        IDF when ``idf`` is given (``LOCAL_IDF``: this store's own statistics)."""
        q_idx, q_val = validate(indices, values)
        if idf == LOCAL_IDF:
            idf = Idf(self.vector_count, self.df)
        if idf is not None:
            q_val = idf.scale(q_idx, q_val)
        return q_idx, q_val

    def score(self, indices, values, offsets, idf: Idf | None = None) -> np.ndarray:
        """Scores of the query against the vectors at ``offsets`` (f32; -inf where a
        vector shares no index with the query or is missing), summed as a search
        sums them. For rescoring and the Query API, where the candidates come from
        elsewhere."""
        q_idx, q_val = self.weights(indices, values, idf)
        return _score_rows(self.rows, np.asarray(offsets, dtype=np.int64), q_idx, q_val)

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
        parts = [(self.postings[i], w) for i, w in zip(q_idx.tolist(), q_val) if i in self.postings]
        if limit <= 0 or not parts:
            return np.zeros(0, dtype=np.int64), _EMPTY_V
        if allowed is not None:
            allowed = np.asarray(allowed, dtype=bool)
        if sum(len(p.arrays()[0]) for p, _ in parts) >= PRUNE_MIN_ENTRIES:
            found = _pruned_top(self, parts, q_idx, q_val, limit, allowed, score_threshold)
            if found is not None:
                return found
        # Scores summed straight into one array by offset (offsets are unique within
        # a posting): no sort of the postings, only of the top.
        arrays = [(p.arrays(), w) for p, w in parts]
        size = max((int(offsets[-1]) + 1 for (offsets, _), _ in arrays if len(offsets)), default=0)
        sums = np.zeros(size, dtype=np.float64)
        touched = np.zeros(size, dtype=bool)
        for (offsets, weights), w in arrays:
            sums[offsets] += (weights * w).astype(np.float32)
            touched[offsets] = True
        if allowed is not None:
            touched[: min(size, len(allowed))] &= allowed[:size]
            touched[len(allowed):] = False
        candidates = np.flatnonzero(touched)
        return _top(candidates, sums[candidates].astype(np.float32), limit, score_threshold)

    def parts_arena(self) -> _Arena:
        """The arena of the postings' parts: a new one, every posting's levels to be
        written again as searches read them, once the dead slices of changed
        postings make it more than twice their entries."""
        if self._arena.used > 2 * self.entries + ARENA_SLACK:
            self._arena = _Arena()
            for posting in self.postings.values():
                posting._levels = None
        return self._arena

    def nbytes(self) -> int:
        """About what the vectors and the index take in memory, in O(1): 8 bytes a
        stored pair (u32 index, f32 value), 12 a posting entry (i64 offset, f32
        weight), 8 an offset. Python's object overhead is not counted."""
        return 20 * self.entries + 16 * self.size

    # -- persistence -----------------------------------------------------

    def to_arrays(self) -> dict[str, np.ndarray]:
        """CSR form: ``present`` by offset, ``indptr`` into ``indices``/``values``."""
        live, lengths, take = self.rows.live()
        present = np.zeros(self.size, dtype=bool)
        present[live] = True
        by_offset = np.zeros(self.size, dtype=np.int64)
        by_offset[live] = lengths
        return {
            "present": present,
            "indptr": np.concatenate([[0], np.cumsum(by_offset)]).astype(np.int64),
            "indices": self.rows.indices[take],
            "values": self.rows.values[take],
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
        store.rows = _Rows.from_csr(present, indptr, indices, values)
        rows = np.repeat(np.arange(len(present), dtype=np.int64), np.diff(indptr))
        order = np.lexsort((rows, indices))
        rows, by_dim, weights = rows[order], indices[order], values[order]
        dims, starts, counts = np.unique(by_dim, return_index=True, return_counts=True)
        for dim, a, c in zip(dims.tolist(), starts.tolist(), counts.tolist()):
            store.postings[dim] = _Posting(rows[a:a + c], weights[a:a + c])
            store.df[dim] = c
        store.vector_count = int(np.count_nonzero(present & (np.diff(indptr) > 0)))
        store.entries = len(indices)
        return store

    def save(self, path: Path) -> None:
        """Writes the store to the file ``path`` (an .npz) at once, crash-safely."""
        fileio.write_arrays(path, self.to_arrays())

    @classmethod
    def load(cls, path: Path) -> SparseStore:
        return cls.from_arrays(fileio.read_arrays(path, ("present", "indptr", "indices", "values")))


# A query whose postings hold fewer entries than this is scored in full: below it
# the pruned search's bookkeeping costs more than it saves.
PRUNE_MIN_ENTRIES = 8192
# The pruned search gives up (and scores in full) once the entries it must read
# reach this share of the postings': the query's bounds are too close to prune.
PRUNE_MAX_SHARE = 0.5
# A posting this long is cut by weight at the LEVEL_QUANTILES (see _Posting.levels).
LEVEL_MIN_ENTRIES = 256
# Parts of postings this short are read whether essential or not.
PRUNE_SHORT_PART = 4096
# A search for more than this many best is scored in full.
PRUNE_MAX_LIMIT = 1000
# Entries a store's arena of posting parts may hold beyond twice its postings'.
ARENA_SLACK = 4096
LEVEL_QUANTILES = (0.5, 0.8, 0.95, 0.99)
# (Settings measured on the hybrid benchmark's 100k texts: bench/README.md.)


def _top(candidates: np.ndarray, scores: np.ndarray, limit: int,
         score_threshold: float | None) -> tuple[np.ndarray, np.ndarray]:
    """The ``limit`` best of ``candidates`` (distinct offsets) by score, ties by offset."""
    if score_threshold is not None:
        keep = scores > np.float32(score_threshold)
        candidates, scores = candidates[keep], scores[keep]
    if limit < len(scores):  # the best, and of the scores tied at the cut the lowest offsets
        cut = np.partition(scores, len(scores) - limit)[len(scores) - limit]
        ties = np.flatnonzero(scores == cut)
        ties = ties[np.argsort(candidates[ties], kind="stable")]
        better = np.flatnonzero(scores > cut)
        part = np.concatenate([better, ties[: limit - len(better)]])
        order = part[np.lexsort((candidates[part], -scores[part]))]
    else:
        order = np.lexsort((candidates, -scores))
    return candidates[order], scores[order]


def _kernels():
    """``shard.sparse_kernels``, imported on first use: numba costs a process ~60 MB
    and ~0.1 s to import, which those that never search (the gateway, the CLI),
    though they use this module's checks, do not pay."""
    from shard import sparse_kernels

    return sparse_kernels


def _score_rows(rows: _Rows, offsets: np.ndarray, q_idx: np.ndarray, q_val: np.ndarray) -> np.ndarray:
    """The query's f32 scores of the rows at ``offsets`` (-inf: none, or no shared
    index), summed as the full scan of :meth:`SparseStore.search` sums them (the
    f32 gain of each shared index, in index order, added in f64), so that both
    give bit-identical scores."""
    out = np.empty(len(offsets), dtype=np.float32)
    _kernels().score_rows(offsets, rows.start, rows.length, rows.indices, rows.values, q_idx, q_val, out)
    return out


class _Scratch:
    """Arrays by offset that one pruned search after another reuses: ``stamp``
    says which offsets the current search has seen (its ``epoch``), so nothing is
    cleared between searches."""

    def __init__(self):
        self.stamp = np.zeros(0, dtype=np.uint32)
        self.acc = np.zeros(0, dtype=np.float64)
        self.out = np.zeros(0, dtype=np.int64)
        self.epoch = 0

    def next(self, size: int) -> int:
        """A new epoch, the arrays grown to hold ``size`` offsets."""
        if size > len(self.stamp):
            grown = max(size, len(self.stamp) * 3 // 2)
            self.stamp, self.acc = np.zeros(grown, dtype=np.uint32), np.zeros(grown, dtype=np.float64)
            self.out, self.epoch = np.zeros(grown, dtype=np.int64), 0
        self.epoch += 1
        if self.epoch == 2**32:
            self.stamp[:], self.epoch = 0, 1
        return self.epoch


_NOTHING = np.zeros(0, dtype=bool)


def _pruned_top(store: SparseStore, parts: list, q_idx: np.ndarray, q_val: np.ndarray, limit: int,
                allowed: np.ndarray | None, score_threshold: float | None) -> tuple[np.ndarray, np.ndarray] | None:
    """The exact top ``limit`` found without reading every posting in full
    (after MaxScore, Turtle and Flood 1995), or None where pruning does not pay.

    Every part of a posting (see :meth:`_Posting.levels`) has a bound, the most
    it can add to a score. Parts are taken by falling bound: the first few
    (rare, high-IDF dimensions; heavy entries) give a handful of vectors, scored
    exactly, whose ``limit``-th best score is a threshold. A vector found in none
    of the parts whose bounds sum to more than what the threshold leaves can
    never reach it, so only the vectors of those "essential" parts are
    candidates. The short other parts are read too, for those vectors only (each
    part read lowers their bounds); the long postings of common words, light
    entries, are not. Each candidate gets an upper bound, its partial score plus
    the bounds of the parts not read, and the candidates are then scored exactly
    from their own rows by falling bound, the threshold rising as they go, until
    the next bound falls below it (``sparse_kernels.best_of``). All of it is one
    compiled call (``sparse_kernels.pruned_top``) over the query's table of parts
    in the store's arena. Scores are bit-identical to the full scan's."""
    if limit > PRUNE_MAX_LIMIT:
        return None
    arena = store.parts_arena()
    tables = [posting.levels(arena) for posting, _ in parts]
    part_w = np.repeat(np.array([w for _, w in parts], dtype=np.float32), [len(t) for t in tables])
    scratch, rows = store._scratch, store.rows
    epochs = (scratch.next(rows.size), scratch.next(rows.size))
    has_threshold = score_threshold is not None
    ok, offsets, scores = _kernels().pruned_top(
        np.concatenate(tables), part_w, arena.offsets, arena.weights, _NOTHING if allowed is None else allowed,
        allowed is not None, scratch.stamp, epochs, scratch.acc, scratch.out, rows.start, rows.length, rows.indices,
        rows.values, q_idx, q_val, limit, float(score_threshold) if has_threshold else 0.0, has_threshold,
        PRUNE_MAX_SHARE, PRUNE_SHORT_PART)
    return _top(offsets, scores, limit, score_threshold) if ok else None


def warm_up() -> None:
    """Compiles the search's loops (``shard.sparse_kernels``) into numba's on-disk
    cache, calling each with the argument types a search passes. ``python -m
    shard.sparse`` does it; the container image runs it at build time, so that
    its first sparse search does not wait seconds for the compiler. A shard actor
    with sparse vectors runs it as it starts (``cluster.actor``): with the cache
    there, it loads the loops (~0.4 s) before the first search needs them."""
    store = SparseStore()
    store.set([0, 1, 2], [([1, 2], [1.0, 2.0]), ([2, 3], [1.0, 1.0]), ([1], [3.0])])
    q_idx, q_val = store.weights([1, 2], [1.0, 1.0], LOCAL_IDF)
    parts = [(store.postings[i], w) for i, w in zip(q_idx.tolist(), q_val)]
    for allowed in (None, np.ones(3, dtype=bool)):
        _pruned_top(store, parts, q_idx, q_val, 2, allowed, None)
    store.score([1, 2], [1.0, 1.0], [0, 1, 2])


if __name__ == "__main__":
    warm_up()
