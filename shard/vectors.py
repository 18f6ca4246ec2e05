"""Contiguous float32 storage of one named vector, indexed by offset.

Rows are stored already preprocessed (unit length for Cosine, see
``shard.distances.preprocess``), so scoring is a plain matrix product and
vectors are returned normalised, as Qdrant returns them.
"""

from __future__ import annotations

import numpy as np

from shard.distances import preprocess
from shard.types import Distance

GROWTH = 1.5
MIN_CAPACITY = 1024


class VectorStore:
    """A (capacity, dim) float32 array plus a mask of rows that hold a vector."""

    def __init__(self, dim: int, distance: Distance, capacity: int = MIN_CAPACITY):
        self.dim = dim
        self.distance = distance
        self.data = np.zeros((capacity, dim), dtype=np.float32)
        self.present = np.zeros(capacity, dtype=bool)

    @property
    def capacity(self) -> int:
        return self.data.shape[0]

    def ensure_capacity(self, size: int) -> None:
        """Grow by a factor (never one row at a time) so appends stay amortised O(1)."""
        if size <= self.capacity:
            return
        new_cap = max(size, int(self.capacity * GROWTH), MIN_CAPACITY)
        data = np.zeros((new_cap, self.dim), dtype=np.float32)
        data[: self.capacity] = self.data
        present = np.zeros(new_cap, dtype=bool)
        present[: self.capacity] = self.present
        self.data, self.present = data, present

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
