"""Which shard a point lives on: a stable hash of its id.

Python's ``hash()`` is salted per process, so it cannot place data that must be
found again after a restart or from another process. This is SplitMix64's
finaliser over the id's integer value (a UUID folds its two 64-bit halves), mod
the shard count. (Qdrant places points with a hash ring, ``hash_ring.rs``; a
ring matters once shards are added to a live collection, which Shoal does not
do yet.)
"""

from __future__ import annotations

from collections import defaultdict

from shard.types import PointId

MASK64 = (1 << 64) - 1


def _mix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK64
    return x ^ (x >> 31)


def point_hash(point_id: PointId) -> int:
    if isinstance(point_id, int):
        return _mix64(point_id & MASK64)
    value = int(point_id.replace("-", ""), 16)
    return _mix64((value & MASK64) ^ (value >> 64))


def shard_of(point_id: PointId, shard_count: int) -> int:
    return 0 if shard_count == 1 else point_hash(point_id) % shard_count


def split_by_shard(ids: list[PointId], shard_count: int) -> dict[int, list[int]]:
    """Row numbers of ``ids`` grouped by the shard that owns each id."""
    groups: dict[int, list[int]] = defaultdict(list)
    for row, point_id in enumerate(ids):
        groups[shard_of(point_id, shard_count)].append(row)
    return dict(groups)
