"""The one module that imports faiss: a graph over product-quantized vectors.

``ProductIndex`` has ``HnswIndex``'s interface (labels are shard offsets; add, remove,
search, save, load) over faiss's ``IndexHNSWPQ``: an HNSW graph whose vectors are PQ
codes, scored by asymmetric distance (the float32 query against each code's centroids,
through a table per query), as Qdrant scores its product quantization. The float32
vectors stay in the shard's vector store, for rescoring and for answers.

- Compression: Qdrant's ``x4 | x8 | x16 | x32 | x64`` is relative to float32 bytes, and
  a code has one byte (256 centroids, 8 bits) per sub-vector: ``dim * 4 / ratio``
  sub-vectors (384 dimensions at x16: 96 of 4 dimensions, 96 bytes). faiss needs the
  count to divide ``dim``: the largest divisor of ``dim`` not above it, at least 1
  (``sub_vectors``).
- Training: the codebooks are k-means over ``sample``, the first vectors indexed (at
  most ``SAMPLE`` rows, Qdrant's k-means sample; the first ``add``'s when there is
  none), run by the first ``add``: the shard makes a graph under its lock and adds
  without it, and k-means takes seconds. k-means needs at least as many rows as
  centroids: fewer than 256 rows get ``floor(log2(rows))`` bits per sub-vector (one
  row is used twice, for two centroids).
- Metrics: inner product for Cosine (unit vectors) and Dot, squared L2 for Euclid;
  similarities are Shoal's internal ones (the dot product; Euclid's negated squared
  distance), approximated. Manhattan gets no graph (``hnsw.supported``).
- Links: ``IndexHNSWPQ.add`` links new entries with code-to-code distances read from
  ``pq.sdc_table``, M x 256² floats (25 MB for 384 dimensions at x16) that
  ``compute_sdc_table`` fills with L2 distances whatever the metric: under inner
  product its graph is unusable (recall@10 0.18 on 20k wordnet vectors), and even
  under L2 its scattered lookups make it 3x slower than hnswlib. So ``_append`` has
  faiss's float32 HNSW (``IndexHNSWFlat``) link them instead, given the graph so far
  and the reconstructions of the codes it holds: the distances the table would hold,
  in the right metric, by SIMD (the new vectors are linked as given). The price is
  memory for the add's duration: the reconstructions are as large as the float32
  vectors.
- Removal: faiss's HNSW cannot remove. faiss's ids are sequential; ``_owner`` maps
  them to labels and ``_live`` says which are current, and searches pass faiss a
  bitmap selector of the live ones. Replacing a label kills its old entry. When dead
  entries outnumber live ones the index is rebuilt from the live entries' codes
  (decoded to their centroids and added to a fresh index with the same codebooks:
  encoding a centroid reconstruction gives back the same code), so updates of the
  same points never grow it without bound.
- Threads: faiss runs on OpenMP. ``omp_set_num_threads`` sets OpenMP's nthreads
  ICV, which has the calling thread's scope (libgomp, which faiss-cpu bundles, keeps
  it per thread): it is set before every faiss call from the thread making it (the
  indexing threads for adds and training, ``threads`` for searches), so it reaches
  no other thread and no other library's OpenMP, and needs no lock of its own.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Callable, TypeVar

import faiss
import numpy as np

from shard.hnsw import no_hits, save_locked
from shard.types import Distance, HnswConfig, Quantization

T = TypeVar("T")
METRICS = {Distance.COSINE: faiss.METRIC_INNER_PRODUCT, Distance.DOT: faiss.METRIC_INNER_PRODUCT,
           Distance.EUCLID: faiss.METRIC_L2}
RATIOS = {"x4": 4, "x8": 8, "x16": 16, "x32": 32, "x64": 64}
SAMPLE = 10_000  # rows the codebooks are trained on: Qdrant's KMEANS_SAMPLE_SIZE
BITS = 8  # bits per sub-vector code: Qdrant's 256 centroids
# k-means iterations: faiss's 25 take 9 s on 10,000 rows of 384 dimensions (2 cores), 10
# take 3.5 s and code as well (wordnet: recall@10 of the codes 0.855 against 0.853).
ITERATIONS = 10
DECODED = 16_384  # codes reconstructed at a time for ``_append``


def sub_vectors(dim: int, compression: str | None) -> int:
    """faiss's ``pq_m`` for Qdrant's compression ratio: ``dim * 4 / ratio`` one-byte
    codes, lowered to a divisor of ``dim``."""
    if compression not in RATIOS:
        raise ValueError(f"product quantization needs a compression among {sorted(RATIOS)}, not {compression!r}")
    budget = max(1, dim * 4 // RATIOS[compression])
    return max(m for m in range(1, budget + 1) if dim % m == 0)


def _threads(count: int) -> None:
    """OpenMP's threads for the faiss calls this thread makes next (see the module's
    docstring: the setting is the calling thread's own)."""
    faiss.omp_set_num_threads(max(1, count))


def _pq(index: faiss.IndexHNSWPQ) -> faiss.ProductQuantizer:
    return faiss.downcast_index(index.storage).pq


def _drop_code_table(index: faiss.IndexHNSWPQ) -> None:
    """Free the code-to-code table faiss makes on training and loading: ``_append``
    links without it, and searches never read it."""
    _pq(index).sdc_table.swap(faiss.Float32Vector())  # swap, not clear: clear keeps the memory


class ProductIndex:
    """A faiss HNSW graph over PQ codes of some offsets of one vector store.
    Thread-safe as ``HnswIndex`` is: one lock around mutations and searches."""

    kind = "product"
    scale = None  # only a scalar graph has one (``shard.graphs.describe``)

    def __init__(self, dim: int, distance: Distance, config: HnswConfig, quantization: Quantization,
                 threads: int = 1, sample: np.ndarray | None = None):
        if quantization.kind != self.kind:
            raise ValueError(f"no product graph for {quantization.kind!r}")
        self.dim, self.distance, self.config, self.quantization = dim, distance, config, quantization
        self.threads = max(1, threads)
        self.sub_vectors = sub_vectors(dim, quantization.compression)
        self._lock = threading.Lock()
        self._index: faiss.IndexHNSWPQ | None = None  # made by ``_train``, at the first add
        self._sample = sample if sample is not None and len(sample) else None  # trained on at the first add
        self._owner = np.zeros(0, dtype=np.int64)  # faiss id -> label
        self._live = np.zeros(0, dtype=bool)  # faiss id -> current
        self._slot: dict[int, int] = {}  # label -> its live faiss id
        self._selector: tuple[np.ndarray, faiss.IDSelectorBitmap] | None = None  # cached from ``_live``

    def __len__(self) -> int:
        return len(self._slot)

    def labels(self) -> np.ndarray:
        return np.fromiter(self._slot, dtype=np.int64, count=len(self._slot))

    @property
    def held(self) -> int:
        """Entries faiss holds, live or dead: never more than twice ``len``."""
        return len(self._owner)

    def _train(self, sample: np.ndarray) -> None:
        rows = np.ascontiguousarray(sample[:SAMPLE], dtype=np.float32)
        if len(rows) == 1:
            rows = np.repeat(rows, 2, axis=0)  # two centroids, the fewest faiss trains
        bits = min(BITS, int(np.log2(len(rows))))
        self._index = self._empty(bits)
        clustering = _pq(self._index).cp
        clustering.niter = ITERATIONS
        # Fewer than faiss's 39 rows a centroid is a choice here, not a mistake to warn
        # of once per sub-vector.
        clustering.min_points_per_centroid = 1
        _threads(self.threads)
        self._index.train(rows)
        _drop_code_table(self._index)

    def _empty(self, bits: int) -> faiss.IndexHNSWPQ:
        index = faiss.IndexHNSWPQ(self.dim, self.sub_vectors, self.config.m, bits, METRICS[self.distance])
        index.hnsw.efConstruction = self.config.ef_construct
        return index

    def _insert(self, offsets: np.ndarray, vectors: np.ndarray) -> None:
        """Append entries to faiss's ids and to ours."""
        self._append(np.ascontiguousarray(vectors, dtype=np.float32))
        first = len(self._owner)
        self._owner = np.concatenate([self._owner, np.asarray(offsets, dtype=np.int64)])
        self._live = np.concatenate([self._live, np.ones(len(offsets), dtype=bool)])
        self._slot.update(zip(offsets.tolist(), range(first, len(self._owner))))
        self._selector = None

    def _append(self, vectors: np.ndarray) -> None:
        """Add ``vectors`` to faiss's index: their codes to its storage, their links
        to its graph, made by a float32 HNSW (see the module's docstring)."""
        _threads(self.threads)
        index = self._index
        storage = faiss.downcast_index(index.storage)
        builder = faiss.IndexHNSWFlat(self.dim, self.config.m, METRICS[self.distance])
        builder.hnsw = index.hnsw  # a copy, as is the way back
        codes = self._codes()
        for lo in range(0, len(codes), DECODED):  # by parts: one float32 copy at a time
            builder.storage.add(storage.sa_decode(codes[lo:lo + DECODED]))
        builder.ntotal = index.ntotal
        builder.add(vectors)
        index.hnsw = builder.hnsw
        storage.add(vectors)
        index.ntotal = storage.ntotal

    def _kill(self, labels: list[int]) -> None:
        ids = [self._slot.pop(label) for label in labels if label in self._slot]
        if ids:
            self._live[ids] = False
            self._selector = None

    def codes(self, labels: np.ndarray) -> np.ndarray:
        """The PQ codes of ``labels`` (in the graph), one row each."""
        with self._lock:
            return self._codes()[[self._slot[label] for label in labels.tolist()]]

    def _codes(self) -> np.ndarray:
        """Every entry's code (a copy), in faiss's order."""
        storage = faiss.downcast_index(self._index.storage)
        return faiss.vector_to_array(storage.codes).reshape(-1, storage.code_size)

    def _compact(self, coming: int = 0) -> None:
        """Rebuild from the live entries when the dead ones outnumber them and the
        ``coming`` ones: decoded codes re-encode to themselves, so no entry moves."""
        live = np.flatnonzero(self._live)
        if len(self._live) - len(live) <= len(live) + coming:
            return
        _threads(self.threads)
        old, owner = self._index, self._owner[live]
        vectors = faiss.downcast_index(old.storage).sa_decode(self._codes()[live])
        self._index = self._empty(_pq(old).nbits)
        faiss.downcast_index(self._index.storage).pq = _pq(old)  # a copy: the trained codebooks
        self._index.storage.is_trained = self._index.is_trained = True
        self._owner, self._live, self._slot = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=bool), {}
        self._selector = None
        if len(live):
            self._insert(owner, vectors)

    def add(self, offsets: np.ndarray, vectors: np.ndarray) -> None:
        """Insert or replace the graph entries of ``offsets``."""
        if len(offsets) == 0:
            return
        with self._lock:
            if self._index is None:
                self._train(vectors if self._sample is None else self._sample)
                self._sample = None
            self._kill(offsets.tolist())
            self._compact(coming=len(offsets))
            self._insert(offsets, vectors)

    def remove(self, offsets: np.ndarray) -> None:
        with self._lock:
            self._kill(offsets.tolist())
            if self._index is not None:
                self._compact()

    def search(self, queries: np.ndarray, k: int, ef: int, threads: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Top-k labels and approximate similarities per query, padded with label -1
        and similarity -inf (as ``HnswIndex.search``)."""
        m = queries.shape[0]
        with self._lock:
            k = min(k, len(self._slot))
            if k <= 0:
                return no_hits(m, 0)
            params = faiss.SearchParametersHNSW(efSearch=max(ef, k))
            bitmap = self._bitmap()
            if bitmap is not None:
                params.sel = bitmap[1]
            _threads(threads)
            dist, ids = self._index.search(np.ascontiguousarray(queries, dtype=np.float32), k, params=params)
            found = ids >= 0
            labels, sims = no_hits(m, k)
            labels[found] = self._owner[ids[found]]
        # faiss gives inner products, or squared L2 distances: Shoal's Euclid is their negation
        sims[found] = -dist[found] if self.distance is Distance.EUCLID else dist[found]
        return labels, sims

    def _bitmap(self) -> tuple[np.ndarray, faiss.IDSelectorBitmap] | None:
        """faiss's selector of the live ids (None when all are), with the bits it
        reads: they must outlive the search."""
        if len(self._slot) == len(self._live):
            return None
        if self._selector is None:
            bits = np.packbits(self._live, bitorder="little")
            self._selector = (bits, faiss.IDSelectorBitmap(len(bits), faiss.swig_ptr(bits)))
        return self._selector

    def save(self, path: Path, outer: threading.RLock, read: Callable[[], T]) -> T:
        """As ``HnswIndex.save``: the graph to ``path``, and ``read()`` under both locks.
        One ``.npz`` (no pickles): faiss's serialised index, our ids and their liveness."""
        def write() -> None:
            with open(path, "wb") as fh:  # a file object: np.savez would add ".npz" to a name
                np.savez(fh, index=self._serialised(), owner=self._owner, live=self._live)

        return save_locked(self._lock, outer, read, write)

    def _serialised(self) -> np.ndarray:
        return np.zeros(0, dtype=np.uint8) if self._index is None else faiss.serialize_index(self._index)

    @classmethod
    def load(cls, path: Path, dim: int, distance: Distance, config: HnswConfig, quantization: Quantization,
             labels: np.ndarray, threads: int = 1) -> ProductIndex:
        """A saved graph; ``labels`` are the offsets current in it (the others go)."""
        self = cls(dim, distance, config, quantization, threads)
        with np.load(path, allow_pickle=False) as saved:
            serialised, owner, live = saved["index"], saved["owner"], saved["live"]
        if len(serialised):
            self._index = faiss.deserialize_index(serialised)
            self._index.hnsw.efConstruction = config.ef_construct
            _drop_code_table(self._index)  # faiss's reader makes the L2 one
        self._owner, self._live = owner, live & np.isin(owner, labels)
        ids = np.flatnonzero(self._live)
        self._slot = dict(zip(owner[ids].tolist(), ids.tolist()))
        if self._index is not None:
            self._compact()
        return self
