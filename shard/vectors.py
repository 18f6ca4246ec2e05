"""Contiguous float32 storage of one named vector, indexed by offset.

Rows are stored already preprocessed (unit length for Cosine, see
``shard.distances.preprocess``), so scoring is a plain matrix product and
vectors are returned normalised, as Qdrant returns them.

Two stores behind one interface (set, clear, mask, ``data[idx]``):

- ``VectorStore``: ``data`` is a numpy array in RAM (``on_disk`` false, the default).
- ``MappedVectorStore``: ``data`` is a ``numpy.memmap`` of a file in the shard's folder
  (``on_disk: true``, as Qdrant keeps such vectors in a memory-mapped file), so the
  kernel may page rows out and back in instead of the process holding them all.
  Scoring code cannot tell the two apart: a memmap is an ndarray.

The map file is a cache, never the source of truth: the write-ahead log and the
snapshots are (``shard.local_shard``). It is never fsynced, and a shard that opens
deletes whatever map file it finds and fills a new one from its snapshot and log.
So a map file torn by kill -9 or a power cut, half written or stale, is harmless:
nothing ever reads it back. Its name is fixed by the code, ``vectors-<i>.mmap`` for
the vector at position ``i`` of the collection's config (vector names are user input
and never become file names), or ``vectors-<i>.alt.mmap`` for the store a restore
fills beside the live one.
"""

from __future__ import annotations

import os
import re
import weakref
from pathlib import Path

import numpy as np

from shard.distances import preprocess
from shard.types import Distance

GROWTH = 1.5
MIN_CAPACITY = 1024
MAP_FILE = re.compile(r"vectors-\d{1,4}(\.alt)?\.mmap")  # every name a map file may have


def map_file(folder: Path, position: int, alternate: bool = False) -> Path:
    """A map file of the vector at ``position`` in the collection's config; each has
    two names, so that a new store can be filled while the live one serves."""
    return folder / f"vectors-{int(position)}{'.alt' if alternate else ''}.mmap"


class VectorStore:
    """A (capacity, dim) float32 array plus a mask of rows that hold a vector."""

    file: Path | None = None  # the map file of a MappedVectorStore

    def __init__(self, dim: int, distance: Distance, capacity: int = MIN_CAPACITY):
        self.dim = dim
        self.distance = distance
        self.data = self._new_data(capacity)
        self.present = np.zeros(capacity, dtype=bool)

    def _new_data(self, capacity: int) -> np.ndarray:
        return np.zeros((capacity, self.dim), dtype=np.float32)

    @property
    def capacity(self) -> int:
        return self.data.shape[0]

    def _new_capacity(self, size: int) -> int:
        return max(size, int(self.capacity * GROWTH), MIN_CAPACITY)

    def _grow_present(self, new_cap: int) -> np.ndarray:
        present = np.zeros(new_cap, dtype=bool)
        present[: self.capacity] = self.present
        return present

    def ensure_capacity(self, size: int) -> None:
        """Grow by a factor (never one row at a time) so appends stay amortised O(1)."""
        if size <= self.capacity:
            return
        new_cap = self._new_capacity(size)
        data = np.zeros((new_cap, self.dim), dtype=np.float32)
        data[: self.capacity] = self.data
        self.data, self.present = data, self._grow_present(new_cap)

    def set(self, offsets: np.ndarray, vectors: np.ndarray) -> None:
        """Store ``vectors`` (n, dim) at ``offsets`` (n,), preprocessing them."""
        if len(offsets) == 0:
            return
        self.ensure_capacity(int(offsets.max()) + 1)
        self.data[offsets] = preprocess(vectors, self.distance)
        self.present[offsets] = True

    def clear(self, offsets: np.ndarray) -> None:
        offsets = offsets[offsets < self.capacity]
        self.present[offsets] = False
        self.data[offsets] = 0.0

    def has(self, offset: int) -> bool:
        return offset < self.capacity and bool(self.present[offset])

    def get(self, offset: int) -> np.ndarray:
        return self.data[offset]

    def mask(self, size: int) -> np.ndarray:
        """Presence as a bool array of exactly ``size`` rows."""
        if size <= self.capacity:
            return self.present[:size]
        out = np.zeros(size, dtype=bool)
        out[: self.capacity] = self.present
        return out

    def nbytes(self) -> int:
        return int(self.data.nbytes + self.present.nbytes)

    def copy_from(self, other: VectorStore) -> None:
        """Take ``other``'s rows and presence (a store of the same vector that this
        one replaces: its storage changes between RAM and a map file)."""
        self.ensure_capacity(other.capacity)
        self.data[: other.capacity] = other.data
        self.present[: other.capacity] = other.present

    def close(self) -> None:
        """Let go of what the store holds outside the process's heap (nothing here)."""


class MappedVectorStore(VectorStore):
    """A ``VectorStore`` whose ``data`` is a ``numpy.memmap`` of ``file`` (see the
    module docstring: a cache of the log and snapshot, never read back).

    Made afresh: whatever ``file`` held is removed first. The file is sparse
    (``truncate``), so unwritten rows cost neither disk nor memory; growing extends
    it in place and maps it again, so the rows written so far stay where they are.
    The store keeps the file open and grows it through that handle, so it never
    depends on what the name points to later, and ``close`` deletes the name only
    while it is still this store's file (another shard object opened on the same
    folder, as a test reopening without a close does, has made its own by then).
    """

    def __init__(self, dim: int, distance: Distance, file: Path, capacity: int = MIN_CAPACITY):
        self.file = Path(file)
        self.file.unlink(missing_ok=True)
        # Exclusive creation: never through a link planted at the name. A str name, so
        # that the memmap records it (``data.filename``).
        self._handle = open(os.fspath(self.file), "x+b")
        identity = os.fstat(self._handle.fileno())
        self._close = weakref.finalize(self, _release, self._handle, self.file, (identity.st_dev, identity.st_ino))
        super().__init__(dim, distance, capacity)

    def _new_data(self, capacity: int) -> np.ndarray:
        self._handle.truncate(capacity * self.dim * 4)
        return np.memmap(self._handle, dtype=np.float32, mode="r+", shape=(capacity, self.dim))

    def ensure_capacity(self, size: int) -> None:
        """Grow as ``VectorStore`` does, by extending the file: the old map stays
        valid for whoever still holds a view of it (the file only grows)."""
        if size <= self.capacity:
            return
        new_cap = self._new_capacity(size)
        present = self._grow_present(new_cap)
        self.data, self.present = self._new_data(new_cap), present

    def get(self, offset: int) -> np.ndarray:
        """The row as a plain ndarray view: a memmap's row, even copied, would stay a
        ``numpy.memmap``, which the gateway's JSON encoder (orjson) does not take."""
        return self.data[offset].view(np.ndarray)

    def close(self) -> None:
        """Close the file and delete it (rows already handed out stay readable: the
        map lives until its last view is gone). Also done when the store is
        garbage-collected, and at the process's exit."""
        self._close()


def _release(handle, file: Path, identity: tuple[int, int]) -> None:
    handle.close()
    try:
        now = os.stat(file, follow_symlinks=False)
    except FileNotFoundError:
        return
    if (now.st_dev, now.st_ino) == identity:
        file.unlink(missing_ok=True)


def remove_map_files(folder: Path) -> None:
    """Delete every map file in ``folder``: what a previous run of the shard left
    (it never closed them: killed) is stale by definition."""
    for entry in folder.iterdir():
        if MAP_FILE.fullmatch(entry.name) and not entry.is_dir():
            entry.unlink(missing_ok=True)
