"""Shoal's own HNSW graph over scalar (int8) quantized vectors.

``ScalarIndex`` has ``HnswIndex``'s interface (labels are shard offsets; add, remove,
search, save, load) and holds each vector as int8, never its float32 copy (that
stays in the shard's vector store, for rescoring and for answers). Every value is
multiplied by one ``scale`` and rounded; the scale maps the ``quantile`` of the
absolute values of a sample of the vectors (``choose_scale``: all of them when unset)
to 127, and larger values clip. One scale for every dimension keeps the dot product a
dot product: two int8 rows are scored by their integer dot product (Cosine, Dot) or
negated squared L2 distance (Euclid), and dividing by ``scale**2`` gives the float
similarity back, approximately.

The graph is our own rather than a library's because what makes int8 faster than
float32 here is how the walk reaches memory (``shard.graph_kernels``, which holds
the loops): measured on the wordnet vectors (100k x 384, ef 64), usearch's int8 walk
took ~150 us a query and hnswlib's float32 one ~145 us, this one ~80 us, at the same
recall. Building it runs on one thread (~12 s for 100k x 384 at m 16, ef_construct
100; hnswlib takes ~11 s on two).

A node is a label's for good: updating a label links its node again with the new
vector, and removing it marks it deleted (a waypoint, never a result) until it is
added again, as hnswlib's ``mark_deleted``. The graph never holds more nodes than
labels ever added.
"""

from __future__ import annotations

import math
import zipfile
import threading
from pathlib import Path
from typing import Callable, TypeVar

import numpy as np

from shard import graph_kernels as kernels
from shard.hnsw import no_hits, save_locked
from shard.types import Distance, HnswConfig, Quantization

T = TypeVar("T")
GROWTH = 1.5
CHUNK = 256  # nodes linked per call while the lock is held: a search waits for at most one chunk (~30 ms)
FORMAT = "shoal-int8-hnsw-1"  # written beside the graph (``shard.graphs.describe``); another is rebuilt
SAMPLE = 4096  # vectors a scale is chosen from
SEED = 100


def choose_scale(sample: np.ndarray, quantile: float | None) -> float:
    """The scale of a scalar graph: the ``quantile`` of the absolute values of
    ``sample`` (its largest when unset) times it is 127."""
    values = np.abs(np.asarray(sample, dtype=np.float32)[:SAMPLE]).ravel()
    if len(values) == 0:
        return 1.0
    top = float(values.max() if quantile is None or quantile >= 1 else np.quantile(values, quantile))
    return 127.0 / top if top > 0 else 1.0


class ScalarIndex:
    """An HNSW graph over int8 copies of some offsets of one vector store.
    Thread-safe as ``HnswIndex`` is: one lock around mutations and searches."""

    kind = "scalar"
    format = FORMAT

    def __init__(self, dim: int, distance: Distance, config: HnswConfig, quantization: Quantization,
                 threads: int = 1, scale: float | None = None, capacity: int = 1024):
        if quantization.kind != "scalar":
            raise ValueError(f"no scalar graph for {quantization.kind!r}")
        if distance not in (Distance.COSINE, Distance.DOT, Distance.EUCLID):
            raise ValueError(f"no scalar graph for {distance.value}")
        if not scale:
            raise ValueError("a scalar quantized graph needs its scale (choose_scale)")
        self.dim, self.distance, self.config, self.quantization = dim, distance, config, quantization
        self.threads = max(1, threads)  # accepted as every graph's; the build runs on one
        self.scale = scale
        self.m, self.m0 = max(2, config.m), max(2, 2 * config.m)
        self._l2 = distance is Distance.EUCLID
        self._lock = threading.Lock()
        self._rng = np.random.default_rng(SEED)
        self._node_of: dict[int, int] = {}  # label -> its node, for good
        self._live: set[int] = set()  # labels in the graph and not deleted
        self._state = np.array([0, -1, 0, 0], dtype=np.int64)
        self._allocate(max(capacity, 16), 16)
        _load_loops()

    # -- storage ---------------------------------------------------------------

    def _allocate(self, capacity: int, slots: int) -> None:
        self._vecs = np.zeros((capacity, self.dim), np.int8)
        self._links0 = np.zeros((capacity, self.m0), np.int32)
        self._count0 = np.zeros(capacity, np.int32)
        self._level = np.zeros(capacity, np.int8)
        self._slot = np.full(capacity, -1, np.int32)
        self._deleted = np.zeros(capacity, np.uint8)
        self._label_of = np.full(capacity, -1, np.int64)
        self._visited = np.zeros(capacity, np.uint16)
        self._best_s = np.empty(capacity + 1, np.int64)
        self._best_n = np.empty(capacity + 1, np.int32)
        self._links_up = np.zeros((slots, kernels.LEVELS, self.m), np.int32)
        self._count_up = np.zeros((slots, kernels.LEVELS), np.int32)
        self._slots = 0

    def _grow(self, nodes: int, slots: int) -> None:
        """Room for ``nodes`` nodes and ``slots`` upper rows, keeping what is held."""
        capacity = len(self._vecs)
        if nodes > capacity:
            new = max(nodes, int(capacity * GROWTH))
            for name in ("_vecs", "_links0", "_count0", "_level", "_deleted", "_visited"):
                old = getattr(self, name)
                grown = np.zeros((new,) + old.shape[1:], old.dtype)
                grown[:capacity] = old
                setattr(self, name, grown)
            for name, fill in (("_slot", -1), ("_label_of", -1)):
                old = getattr(self, name)
                grown = np.full(new, fill, old.dtype)
                grown[:capacity] = old
                setattr(self, name, grown)
            self._best_s = np.empty(new + 1, np.int64)
            self._best_n = np.empty(new + 1, np.int32)
        if slots > len(self._links_up):
            new = max(slots, int(len(self._links_up) * GROWTH))
            links, counts = np.zeros((new, kernels.LEVELS, self.m), np.int32), np.zeros((new, kernels.LEVELS), np.int32)
            links[:self._slots], counts[:self._slots] = self._links_up[:self._slots], self._count_up[:self._slots]
            self._links_up, self._count_up = links, counts

    def _graph(self) -> tuple:
        """The arrays every kernel takes, in its order."""
        return (self._vecs, self._links0, self._count0, self._slot, self._links_up, self._count_up, self._deleted,
                self._visited, self._state, self._best_s, self._best_n)

    def _results(self, ef: int) -> tuple[np.ndarray, np.ndarray]:
        """The heap (scores, nodes) that a walk keeps its ``ef`` best in."""
        return np.empty(ef + 1, np.int64), np.empty(ef + 1, np.int32)

    # -- the interface every graph has -------------------------------------------

    def __len__(self) -> int:
        return len(self._live)

    def labels(self) -> np.ndarray:
        return np.fromiter(self._live, dtype=np.int64, count=len(self._live))

    def encode(self, vectors: np.ndarray) -> np.ndarray:
        """The int8 rows of float32 ``vectors`` (n, dim) (``graph_kernels.search``
        quantizes its queries the same way)."""
        vectors = np.asarray(vectors, dtype=np.float32)
        return np.clip(np.rint(vectors * np.float32(self.scale)), -127, 127).astype(np.int8)

    def add(self, offsets: np.ndarray, vectors: np.ndarray) -> None:
        """Insert or replace the graph entries of ``offsets``."""
        offsets = np.asarray(offsets, dtype=np.int64)
        encoded = self.encode(vectors)
        for start in range(0, len(offsets), CHUNK):
            with self._lock:
                self._add(offsets[start:start + CHUNK], encoded[start:start + CHUNK])

    def _add(self, offsets: np.ndarray, encoded: np.ndarray) -> None:
        labels = offsets.tolist()
        fresh = [label for label in dict.fromkeys(labels) if label not in self._node_of]
        levels = np.minimum(np.floor(-np.log(1.0 - self._rng.random(len(fresh))) / math.log(self.m)),
                            kernels.LEVELS).astype(np.int8)
        count = int(self._state[kernels.COUNT])
        self._grow(count + len(fresh), self._slots + int((levels > 0).sum()))
        for label, level in zip(fresh, levels.tolist()):
            node = count
            count += 1
            self._node_of[label] = node
            self._label_of[node] = label
            self._level[node] = level
            if level > 0:
                self._slot[node] = self._slots
                self._slots += 1
        nodes = np.fromiter((self._node_of[label] for label in labels), dtype=np.int32, count=len(labels))
        self._vecs[nodes] = encoded  # a label given twice keeps its last vector, as a store does
        self._deleted[nodes] = 0
        unique = np.array(list(dict.fromkeys(nodes.tolist())), dtype=np.int32)
        best_s, best_n = self._results(self.config.ef_construct)
        kernels.insert(unique, self._level[unique].astype(np.int64), self.m, self.m0, max(self.config.ef_construct, 1),
                       *self._graph(), best_s, best_n, self._l2)
        self._live.update(labels)

    def remove(self, offsets: np.ndarray) -> None:
        with self._lock:
            for label in np.asarray(offsets).tolist():
                if label in self._live:
                    self._deleted[self._node_of[label]] = 1
                    self._live.discard(label)

    def search(self, queries: np.ndarray, k: int, ef: int, threads: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Top-k labels and approximate similarities per query, padded with label -1
        and similarity -inf (as ``HnswIndex.search``)."""
        m = queries.shape[0]
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        with self._lock:
            k = min(k, len(self._live))
            if k <= 0:
                return no_hits(m, 0)
            labels, scores = no_hits(m, k)
            best_s, best_n = self._results(max(ef, k))
            kernels.search(queries, np.float32(self.scale), k, max(ef, k), *self._graph(), best_s, best_n, self._l2,
                           self._label_of, labels, scores)
        return labels, scores

    # -- snapshots ---------------------------------------------------------------

    def save(self, path: Path, outer: threading.RLock, read: Callable[[], T]) -> T:
        """As ``HnswIndex.save``: the graph to ``path``, and ``read()`` under both locks."""

        def write() -> None:
            count = int(self._state[kernels.COUNT])
            with open(path, "wb") as file:  # a file object: np.savez would add ".npz" to a name
                np.savez(file, vecs=self._vecs[:count], links0=self._links0[:count], count0=self._count0[:count],
                         level=self._level[:count], slot=self._slot[:count], deleted=self._deleted[:count],
                         label_of=self._label_of[:count], links_up=self._links_up[:self._slots],
                         count_up=self._count_up[:self._slots], state=self._state, m=np.array([self.m, self.m0]))

        return save_locked(self._lock, outer, read, write)

    @classmethod
    def load(cls, path: Path, dim: int, distance: Distance, config: HnswConfig, quantization: Quantization,
             labels: np.ndarray, scale: float | None, threads: int = 1) -> ScalarIndex:
        """A saved graph; ``labels`` are the offsets current in it (the others are
        marked deleted). ValueError when the file is not a whole graph of ``dim``
        (the loops index without bounds checks: a snapshot may come from anywhere)."""
        self = cls(dim, distance, config, quantization, threads, scale)
        try:
            with np.load(path, allow_pickle=False) as saved:
                arrays = {name: saved[name] for name in saved.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
            raise ValueError(f"not a saved scalar graph: {err}") from err
        _check(arrays, dim)
        self.m, self.m0 = (int(v) for v in arrays["m"])  # a graph keeps the m it was built with, as hnswlib's
        count, slots = len(arrays["vecs"]), len(arrays["links_up"])
        # The arrays read are the graph's own (no copy: it would hold the graph twice
        # while loading); the next add grows them.
        for name in ("vecs", "links0", "count0", "level", "slot", "deleted", "label_of", "links_up", "count_up"):
            setattr(self, f"_{name}", arrays[name])
        self._visited = np.zeros(count, np.uint16)
        self._best_s, self._best_n = np.empty(count + 1, np.int64), np.empty(count + 1, np.int32)
        self._slots = slots
        self._state[:] = arrays["state"]
        self._state[kernels.STAMP] = 0
        self._node_of = {label: node for node, label in enumerate(self._label_of[:count].tolist())}
        keep = set(np.asarray(labels).tolist())
        live = {label for label, node in self._node_of.items() if not self._deleted[node]}
        for label in live - keep:
            self._deleted[self._node_of[label]] = 1
        self._live = live & keep
        # A later add must not repeat the levels drawn before: start the draws elsewhere.
        self._rng = np.random.default_rng([SEED, count])
        return self


def _check(arrays: dict[str, np.ndarray], dim: int) -> None:
    """Raises ValueError unless ``arrays`` (a saved graph) are consistent: every
    link names a node, every count fits its row, every upper level has its row."""
    expected = {"vecs": np.int8, "links0": np.int32, "count0": np.int32, "level": np.int8, "slot": np.int32,
                "deleted": np.uint8, "label_of": np.int64, "links_up": np.int32, "count_up": np.int32,
                "state": np.int64, "m": np.int64}
    if set(arrays) != set(expected) or any(arrays[k].dtype != v for k, v in expected.items()):
        raise ValueError("not a saved scalar graph")
    count, slots = len(arrays["vecs"]), len(arrays["links_up"])
    m, m0 = (int(v) for v in arrays["m"]) if arrays["m"].shape == (2,) else (0, 0)
    state = arrays["state"]
    shapes_ok = (
        m >= 2 and m0 >= 2 and arrays["vecs"].shape == (count, dim) and arrays["links0"].shape == (count, m0)
        and all(arrays[k].shape == (count,) for k in ("count0", "level", "slot", "deleted", "label_of"))
        and arrays["links_up"].shape == (slots, kernels.LEVELS, m) and arrays["count_up"].shape == (slots, kernels.LEVELS)
        and state.shape == (4,))
    if not shapes_ok:
        raise ValueError("a saved scalar graph of other shapes")
    level, slot = arrays["level"].astype(np.int64), arrays["slot"].astype(np.int64)
    upper = level > 0
    sound = (
        state[kernels.COUNT] == count and (count == 0 or 0 <= state[kernels.ENTRY] < count)
        and 0 <= state[kernels.TOP] <= kernels.LEVELS and (level >= 0).all() and (level <= state[kernels.TOP]).all()
        and ((arrays["count0"] >= 0) & (arrays["count0"] <= m0)).all()
        and ((arrays["links0"] >= 0) & (arrays["links0"] < max(count, 1))).all()
        and ((arrays["count_up"] >= 0) & (arrays["count_up"] <= m)).all()
        and ((arrays["links_up"] >= 0) & (arrays["links_up"] < max(count, 1))).all()
        and (slot[~upper] == -1).all() and ((slot[upper] >= 0) & (slot[upper] < slots)).all()
        and len(np.unique(slot[upper])) == int(upper.sum()) and (arrays["label_of"] >= 0).all()
        and len(np.unique(arrays["label_of"])) == count)
    if not sound:
        raise ValueError("a saved scalar graph that does not hold together")


_loaded = False


def _load_loops() -> None:
    """Loads the compiled loops in this process with its first graph, as a shard
    opens or first builds one, rather than with its first search (~0.3 s from
    numba's cache; seconds to compile them when there is none)."""
    global _loaded
    if not _loaded:
        _loaded = True  # before: warm_up makes graphs too
        warm_up()


def warm_up() -> None:
    """Compiles the graph's loops (``shard.graph_kernels``) into numba's on-disk
    cache: a build and a search of a small graph of each metric's loops. ``python
    -m shard.scalar_graph`` does it; the container image runs it at build time, so
    that a shard's first scalar graph does not wait seconds for the compiler."""
    for distance in (Distance.DOT, Distance.EUCLID):
        graph = ScalarIndex(4, distance, HnswConfig(m=4, ef_construct=8), Quantization("scalar"), scale=100.0)
        graph.add(np.arange(8), np.eye(8, 4, dtype=np.float32))
        graph.search(np.ones((1, 4), np.float32), 2, 8)


if __name__ == "__main__":
    warm_up()
