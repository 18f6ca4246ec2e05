"""Which point lives at which offset.

Offsets are the rows of a shard's arrays. A deleted point's offset is reused by
a later insert, so storage stays dense; the HNSW graph is told separately (its
labels are offsets, and a reused offset simply gets a new graph entry).
"""

from __future__ import annotations

import numpy as np

from shard.types import PointId

GROWTH = 1.5


def id_sort_key(point_id: PointId) -> tuple[int, int | str]:
    """Qdrant's order of ids: every integer id before every UUID; UUIDs by value
    (which for canonical lower-case hex is their string order)."""
    return (0, point_id) if isinstance(point_id, int) else (1, point_id)


class PointTable:
    def __init__(self, capacity: int = 1024):
        self.ids: list[PointId | None] = []
        self.offset_of: dict[PointId, int] = {}
        self.live = np.zeros(capacity, dtype=bool)
        self.versions = np.zeros(capacity, dtype=np.int64)
        self.free: list[int] = []

    @property
    def size(self) -> int:
        """One past the highest offset ever used: the length of every mask."""
        return len(self.ids)

    def __len__(self) -> int:
        return len(self.offset_of)

    def _grow(self, size: int) -> None:
        if size <= self.live.shape[0]:
            return
        cap = max(size, int(self.live.shape[0] * GROWTH))
        live = np.zeros(cap, dtype=bool)
        live[: self.live.shape[0]] = self.live
        versions = np.zeros(cap, dtype=np.int64)
        versions[: self.versions.shape[0]] = self.versions
        self.live, self.versions = live, versions

    def assign(self, point_id: PointId) -> tuple[int, bool]:
        """The offset of ``point_id``, allocating one if new. Returns (offset, is_new)."""
        offset = self.offset_of.get(point_id)
        if offset is not None:
            return offset, False
        if self.free:
            offset = self.free.pop()
            self.ids[offset] = point_id
        else:
            offset = len(self.ids)
            self.ids.append(point_id)
            self._grow(offset + 1)
        self.offset_of[point_id] = offset
        self.live[offset] = True
        return offset, True

    def release(self, offset: int) -> None:
        point_id = self.ids[offset]
        if point_id is None:
            return
        del self.offset_of[point_id]
        self.ids[offset] = None
        self.live[offset] = False
        self.versions[offset] = 0
        self.free.append(offset)

    def offsets_of(self, ids) -> np.ndarray:
        """Offsets of those ``ids`` that exist, in the given order."""
        get = self.offset_of.get
        found = [o for o in (get(i) for i in ids) if o is not None]
        return np.asarray(found, dtype=np.int64)

    def live_mask(self) -> np.ndarray:
        return self.live[: self.size]

    def to_state(self) -> dict:
        return {"ids": self.ids, "versions": self.versions[: self.size].tolist()}

    @classmethod
    def from_state(cls, state: dict) -> PointTable:
        ids = state["ids"]
        table = cls(capacity=max(1024, len(ids)))
        table.ids = list(ids)
        for offset, point_id in enumerate(table.ids):
            if point_id is None:
                table.free.append(offset)
            else:
                table.offset_of[point_id] = offset
                table.live[offset] = True
        table.versions[: len(ids)] = state["versions"]
        table.free.reverse()  # reuse the lowest offsets first, as a fresh table would
        return table
