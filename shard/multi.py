"""One named multivector of a shard: each point holds a matrix of rows of the
vector's size, compared by MaxSim (Qdrant's ``multivector_config: {comparator:
max_sim}``, the only comparator Qdrant 1.15 has).

MaxSim (Qdrant query_scorer/mod.rs ``score_max_similarity``): the sum over the
query's rows of the best internal similarity of that row against the point's rows,
summed in f32. The internal similarity is the dense one of ``shard.distances``
(Cosine and Dot: dot product, Euclid: -d², Manhattan: -L1), so a nearest search
shows the score the way a dense one does (Qdrant ``postprocess_score``): Euclid
sqrt(|sum|), Manhattan |sum|, Cosine and Dot the sum itself. qdrant-client's local
mode (local/multi_distances.py) does the same.

Datatypes (Qdrant ``VectorStorageDatatype``), applied to stored rows and to the
query alike (named_vectors.rs ``preprocess_dense_vector``, then
``PrimitiveVectorElement::slice_from_float_cow`` in multi_metric_query_scorer.rs):

- ``float32``: rows as given, unit length for Cosine.
- ``float16``: normalised in f32 for Cosine, then rounded to the nearest f16 (ties
  to even, as ``half::f16::from_f32``); scored in f32 over the f16 values.
- ``uint8``: Rust's ``x as u8``: truncated toward zero and saturated to 0..255 (so
  -3 stores 0 and 300 stores 255). Cosine does NOT normalise (a u8 row cannot hold
  a unit vector): it scores the true cosine of the byte rows instead, 0 when
  either is all zeros (metric_uint/simple_cosine.rs). Dot, Euclid and Manhattan
  are exact integer sums, shown as f32.

Qdrant's local mode ignores ``datatype``: it scores the floats as given.

Storage is one flat row array plus, per offset, where its rows start and how many
there are (0: no vector; Qdrant refuses an empty multivector, so a stored one has
at least one row). An overwrite appends its rows and leaves the old ones as
garbage; the rows are compacted once the garbage outgrows the live rows, which
keeps writes amortised O(rows written).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from shard import distances, fileio
from shard.types import BadInput, Distance

# lib/common/common/src/validation.rs: "Multivector should be small enough to fit
# the chunk of vector storage" (release builds).
MAX_FLATTENED = 1024 * 1024
DATATYPES = {"float32": np.float32, "float16": np.float16, "uint8": np.uint8}
BLOCK_ROWS = 1 << 15  # rows scored at once: bounds the (query rows x rows) block
GROWTH = 1.5
MIN_ROWS = 256


class MultiVectorError(BadInput):
    """A multivector that breaks Qdrant's ``validate_multi_vector``.

    ``errors`` are (field, message) pairs relative to the vector (the field is
    always ``data``, as Qdrant adds it): the gateway answers them as Qdrant's REST
    API does, 422 "Validation error in JSON body: [<path>.data: <message>]",
    prefixing the vector's path in the request (``points[0].vector.colbert``;
    Qdrant writes ``?`` for a named vector's key: ``points[1].vector.?.data``)."""

    def __init__(self, errors: list[tuple[str, str]]):
        self.errors = list(errors)
        super().__init__("; ".join(f"{field}: {message}" for field, message in errors))

    def __reduce__(self):
        return (MultiVectorError, (self.errors,))


EMPTY = "multi vector must not be empty"
EMPTY_ROW = "all vectors must be non-empty"


def too_large(flattened: int) -> str:
    return f"Total size of all vectors ({flattened}) must be less than {MAX_FLATTENED}"


def inconsistent(found: int) -> str:
    return f"all vectors must have the same dimension, found vector with dimension {found}"


def dimension_error(expected: int, got: int) -> str:
    """Qdrant's OperationError::WrongVectorDimension (400 "Wrong input: ..."), raised per
    row by segment's ``check_vector_against_config``. The gateway's
    ``errors.vector_dimension`` words the same text."""
    return f"Vector dimension error: expected dim: {expected}, got {got}"


def _row_lengths(matrix) -> list[int]:
    if isinstance(matrix, np.ndarray) and matrix.ndim == 2 and matrix.dtype != object:
        return [matrix.shape[1]] * matrix.shape[0]
    try:
        return [len(row) for row in matrix]
    except TypeError:
        raise BadInput("a multivector must be a list of vectors") from None


def check_shape(matrix) -> list[int]:
    """The row lengths of ``matrix``; MultiVectorError with Qdrant's first complaint,
    in Qdrant's order: no rows, an empty row, over the size limit, rows of
    different lengths. This is the REST layer's check (422), which Qdrant runs on
    every vector of a request before any dimension check."""
    lengths = _row_lengths(matrix)
    if not lengths:
        raise MultiVectorError([("data", EMPTY)])
    if 0 in lengths:
        raise MultiVectorError([("data", EMPTY_ROW)])
    flattened = sum(lengths)
    if flattened >= MAX_FLATTENED:
        raise MultiVectorError([("data", too_large(flattened))])
    bad = next((n for n in lengths if n != lengths[0]), None)
    if bad is not None:
        raise MultiVectorError([("data", inconsistent(bad))])
    return lengths


def validate(matrix, dim: int) -> np.ndarray:
    """``matrix`` as a (rows, dim) float32 array (a new one); MultiVectorError for a
    malformed one (see :func:`check_shape`), BadInput with Qdrant's dimension text
    if its rows are not ``dim`` long, BadInput for values that are not finite
    numbers (as Shoal refuses them in dense vectors). Never mutates its input."""
    lengths = check_shape(matrix)
    if lengths[0] != dim:
        raise BadInput(dimension_error(dim, lengths[0]))
    try:
        out = np.array(matrix, dtype=np.float32)
    except (TypeError, ValueError):
        raise BadInput("a multivector's values must be numbers") from None
    if out.shape != (len(lengths), dim):
        raise BadInput("a multivector must be a list of vectors")
    if not np.isfinite(out).all():
        raise BadInput("Vector contains NaN or infinite values")
    return out


def to_uint8(values: np.ndarray) -> np.ndarray:
    """Rust's ``f32 as u8``: toward zero, saturating (NaN would be 0; none get here)."""
    return np.trunc(np.clip(values, 0.0, 255.0)).astype(np.uint8)


# -- the op form (shard.types, "multi"): ragged rows as two arrays ----------

def op_rows(entry: dict) -> list[np.ndarray | None]:
    """An op's multivectors of one name (``{"counts", "rows"}``) as one (rows, dim)
    array per point, None where the point was given none (views into ``rows``)."""
    counts = np.asarray(entry["counts"], dtype=np.int64)
    rows = np.asarray(entry["rows"])
    ends = np.cumsum(counts)
    return [rows[end - n: end] if n else None for n, end in zip(counts.tolist(), ends.tolist())]


def op_entry(matrices: list, dim: int) -> dict[str, np.ndarray]:
    """The op form of per-point multivectors (each a (rows, dim) float32 array, or
    None for none given): the inverse of ``op_rows``."""
    counts = np.array([0 if m is None else len(m) for m in matrices], dtype=np.int64)
    present = [np.asarray(m, dtype=np.float32) for m in matrices if m is not None]
    rows = np.concatenate(present) if present else np.zeros((0, dim), dtype=np.float32)
    return {"counts": counts, "rows": rows}


class MultiStore:
    """The multivectors of one name, by offset (the rows of ``shard.points``).

    Not thread-safe: the caller holds the shard lock, as ``LocalShard`` does for
    every call."""

    def __init__(self, dim: int, distance: Distance, datatype: str = "float32", capacity: int = 0):
        if dim < 1:
            raise ValueError("a multivector's size must be at least 1")
        if datatype not in DATATYPES:
            raise ValueError(f"unknown datatype {datatype!r}")
        self.dim, self.distance, self.datatype = dim, Distance(distance), datatype
        self.dtype = DATATYPES[datatype]
        self.rows = np.zeros((MIN_ROWS, dim), dtype=self.dtype)
        self.used = 0  # rows written, garbage included
        self.live = 0  # rows of stored vectors
        self.start = np.zeros(capacity, dtype=np.int64)
        self.count = np.zeros(capacity, dtype=np.int64)  # 0: no vector
        self._size = 0

    @property
    def size(self) -> int:
        """One past the highest offset ever set."""
        return self._size

    # -- encoding --------------------------------------------------------

    def encode(self, matrix: np.ndarray) -> np.ndarray:
        """Validated f32 rows as this store keeps them (and scores a query)."""
        if self.datatype == "uint8":
            return to_uint8(matrix)  # Cosine's preprocess is the identity for u8
        rows = distances.preprocess(matrix, self.distance)
        return rows.astype(self.dtype)

    def prepare(self, query) -> np.ndarray:
        """A query multivector validated and encoded like a stored one."""
        return self.encode(validate(query, self.dim))

    def similarity(self, query: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Internal similarities (m, n) f32 of encoded query rows against encoded rows."""
        if self.datatype != "uint8":
            return distances.similarity(query.astype(np.float32), rows.astype(np.float32), self.distance)
        q, r = query.astype(np.float64), rows.astype(np.float64)  # integer sums, exact
        if self.distance is Distance.MANHATTAN:
            r16 = rows.astype(np.int16)
            return np.stack([-np.abs(r16 - row).sum(axis=1, dtype=np.int64) for row in query.astype(np.int16)]
                            ).astype(np.float32)
        dot = q @ r.T
        qn, rn = (q * q).sum(axis=1), (r * r).sum(axis=1)
        if self.distance is Distance.DOT:
            return dot.astype(np.float32)
        if self.distance is Distance.EUCLID:
            return (-(qn[:, None] + rn[None, :] - 2 * dot)).astype(np.float32)
        # Cosine of bytes: dot as f32 / sqrt(f32(|q|²) * f32(|r|²)), 0 for a zero row.
        norms = np.sqrt(qn.astype(np.float32)[:, None] * rn.astype(np.float32)[None, :])
        with np.errstate(divide="ignore", invalid="ignore"):
            out = dot.astype(np.float32) / norms
        return np.where(norms > 0, out, np.float32(0.0)).astype(np.float32)

    # -- writes ----------------------------------------------------------

    def _ensure_offsets(self, size: int) -> None:
        if size <= len(self.count):
            return
        cap = max(size, int(len(self.count) * GROWTH), 16)
        for name in ("start", "count"):
            grown = np.zeros(cap, dtype=np.int64)
            grown[: len(self.count)] = getattr(self, name)
            setattr(self, name, grown)

    def _ensure_rows(self, rows: int) -> None:
        if rows <= len(self.rows):
            return
        grown = np.zeros((max(rows, int(len(self.rows) * GROWTH)), self.dim), dtype=self.dtype)
        grown[: self.used] = self.rows[: self.used]
        self.rows = grown

    def set(self, offsets, vectors) -> None:
        """Stores ``vectors`` (each a matrix: a list of rows or a 2-D array) at
        ``offsets``, replacing what those offsets held; the last of a repeated offset
        wins. All are validated first, shape before dimension as Qdrant does across a
        request: one bad vector changes nothing."""
        vectors = list(vectors)
        offsets = np.asarray(offsets, dtype=np.int64).reshape(-1)
        if len(offsets) != len(vectors):
            raise ValueError("one vector per offset")
        if len(offsets) and offsets.min() < 0:
            raise ValueError("offsets are not negative")
        for matrix in vectors:
            check_shape(matrix)
        encoded = [self.encode(validate(matrix, self.dim)) for matrix in vectors]
        if not len(offsets):
            return
        _, last = np.unique(offsets[::-1], return_index=True)
        keep = np.sort(len(offsets) - 1 - last)
        offsets = offsets[keep]
        block = np.concatenate([encoded[i] for i in keep.tolist()])
        counts = np.array([len(encoded[i]) for i in keep.tolist()], dtype=np.int64)
        self._ensure_offsets(int(offsets.max()) + 1)
        self._ensure_rows(self.used + len(block))
        self.rows[self.used: self.used + len(block)] = block
        self.live += int(counts.sum() - self.count[offsets].sum())
        self.start[offsets] = self.used + np.cumsum(counts) - counts
        self.count[offsets] = counts
        self.used += len(block)
        self._size = max(self._size, int(offsets.max()) + 1)
        self._maybe_compact()

    def clear(self, offsets) -> None:
        """Removes the vectors at ``offsets`` (a point deleted, or its vector dropped)."""
        offsets = np.unique(np.asarray(offsets, dtype=np.int64).reshape(-1))
        offsets = offsets[(offsets >= 0) & (offsets < len(self.count))]
        self.live -= int(self.count[offsets].sum())
        self.count[offsets] = 0
        self._maybe_compact()

    def _maybe_compact(self) -> None:
        """Rewrites the live rows in offset order once garbage outnumbers them: each
        compaction copies ``live`` rows after at least as many were written."""
        if self.used - self.live <= self.live:
            return
        present = np.flatnonzero(self.count[: self._size])
        rows, counts = self._gather(present)
        self.rows = np.zeros((max(len(rows), MIN_ROWS), self.dim), dtype=self.dtype)
        self.rows[: len(rows)] = rows
        self.start[present] = np.cumsum(counts) - counts
        self.used = self.live = len(rows)

    # -- reads -----------------------------------------------------------

    def has(self, offset: int) -> bool:
        return 0 <= offset < len(self.count) and bool(self.count[offset])

    def get(self, offset: int) -> np.ndarray:
        """The stored rows as a new (rows, dim) float32 array, as Qdrant returns them
        (normalised for Cosine, rounded to the datatype); KeyError if none."""
        if not self.has(offset):
            raise KeyError(offset)
        a = int(self.start[offset])
        return self.rows[a: a + int(self.count[offset])].astype(np.float32)

    def mask(self, size: int) -> np.ndarray:
        """Which of the first ``size`` offsets hold a vector."""
        out = np.zeros(size, dtype=bool)
        n = min(size, len(self.count))
        out[:n] = self.count[:n] > 0
        return out

    def _gather(self, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The rows of ``offsets`` (all holding a vector) one after another, and each
        offset's row count."""
        counts = self.count[offsets]
        within = np.arange(int(counts.sum()), dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
        return self.rows[np.repeat(self.start[offsets], counts) + within], counts

    def _maxsim(self, query: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """MaxSim (internal, f32) of an encoded query against ``offsets`` (all present),
        in blocks of about BLOCK_ROWS stored rows (a point is never split)."""
        out = np.zeros(len(offsets), dtype=np.float32)
        ends = np.cumsum(self.count[offsets])
        i = 0
        while i < len(offsets):
            base = ends[i - 1] if i else 0
            j = max(int(np.searchsorted(ends, base + BLOCK_ROWS, side="right")), i + 1)
            rows, counts = self._gather(offsets[i:j])
            sims = self.similarity(query, rows)
            best = np.maximum.reduceat(sims, np.cumsum(counts) - counts, axis=1)
            out[i:j] = best.sum(axis=0, dtype=np.float32)
            i = j
        return out

    def score(self, query, offsets) -> np.ndarray:
        """Internal MaxSim of the query multivector against the vectors at ``offsets``
        (f32; -inf where an offset holds none), the similarity recommend, discovery,
        context and rescoring build on. For the score a nearest search shows, pass
        it through ``distances.to_display``."""
        q = self.prepare(query)
        offsets = np.asarray(offsets, dtype=np.int64).reshape(-1)
        out = np.full(len(offsets), -np.inf, dtype=np.float32)
        inside = (offsets >= 0) & (offsets < len(self.count))
        held = np.zeros(len(offsets), dtype=bool)
        held[inside] = self.count[offsets[inside]] > 0
        out[held] = self._maxsim(q, offsets[held])
        return out

    def search(self, query, limit: int, allowed: np.ndarray | None = None,
               score_threshold: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Exact nearest search: the ``limit`` best (offsets, displayed scores), best
        first, ties by offset. ``allowed`` (a bool mask by offset, False past its end)
        restricts the candidates; ``score_threshold`` is on the displayed score and
        strict, as in Qdrant (Cosine/Dot keep score > t, Euclid/Manhattan distance < t)."""
        q = self.prepare(query)
        candidates = np.flatnonzero(self.count[: self._size])
        if allowed is not None:
            allowed = np.asarray(allowed, dtype=bool)
            candidates = candidates[candidates < len(allowed)]
            candidates = candidates[allowed[candidates]]
        if limit <= 0 or not len(candidates):
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        sims = self._maxsim(q, candidates)
        if score_threshold is not None:
            keep = sims > distances.threshold_to_internal(score_threshold, self.distance)
            candidates, sims = candidates[keep], sims[keep]
        if limit < len(sims):
            part = np.argpartition(-sims, limit - 1)[:limit]
            # Ties at the cut: take every point scoring the limit-th score, then sort.
            part = np.flatnonzero(sims >= sims[part].min())
            order = part[np.lexsort((candidates[part], -sims[part]))][:limit]
        else:
            order = np.lexsort((candidates, -sims))
        scores = np.asarray(distances.to_display(sims[order], self.distance), dtype=np.float32)
        return candidates[order], scores

    def nbytes(self) -> int:
        """What the row array (its capacity, garbage included) and the per-offset
        arrays take in memory, in O(1)."""
        return int(self.rows.nbytes + self.start.nbytes + self.count.nbytes)

    # -- persistence -----------------------------------------------------

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Compact form: ``counts`` by offset (0: none) and the live ``rows`` in offset
        order, in the store's datatype."""
        counts = self.count[: self._size].copy()
        rows, _ = self._gather(np.flatnonzero(counts))
        return {"counts": counts, "rows": rows}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], dim: int, distance: Distance,
                    datatype: str = "float32") -> MultiStore:
        """The store :meth:`to_arrays` describes, checked against the vector's config."""
        counts, rows = np.asarray(arrays["counts"]), np.asarray(arrays["rows"])
        store = cls(dim, distance, datatype)
        if (counts.ndim != 1 or not np.issubdtype(counts.dtype, np.integer) or (counts < 0).any()
                or rows.ndim != 2 or rows.shape[1] != dim or rows.dtype != store.dtype
                or int(counts.sum()) != len(rows)):
            raise ValueError("multivector arrays do not fit together or the vector's config")
        counts = counts.astype(np.int64)
        store._ensure_offsets(len(counts))
        store._ensure_rows(len(rows))
        store.rows[: len(rows)] = rows
        store.count[: len(counts)] = counts
        store.start[: len(counts)] = np.cumsum(counts) - counts
        store.used = store.live = len(rows)
        store._size = len(counts)
        return store

    def save(self, path: Path) -> None:
        """Writes the store to the file ``path`` (an .npz) at once, crash-safely."""
        fileio.write_arrays(path, self.to_arrays())

    @classmethod
    def load(cls, path: Path, dim: int, distance: Distance, datatype: str = "float32") -> MultiStore:
        return cls.from_arrays(fileio.read_arrays(path, ("counts", "rows")), dim, distance, datatype)


def maxsim_matrix(queries: list, matrices: list, dim: int, distance: Distance,
                  datatype: str = "float32") -> np.ndarray:
    """(len(queries), len(matrices)) f32: the internal MaxSim of each query
    multivector against each of ``matrices``, both encoded as a store of
    ``datatype`` encodes them. Not symmetric: a point scored against another takes
    its rows as the query, as Qdrant's MMR and distance matrix do."""
    store = MultiStore(dim, distance, datatype)
    offsets = np.arange(len(matrices))
    store.set(offsets, matrices)
    out = np.zeros((len(queries), len(matrices)), dtype=np.float32)
    for i, query in enumerate(queries):
        out[i] = store.score(query, offsets)
    return out
