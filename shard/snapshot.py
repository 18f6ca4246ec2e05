"""A shard's state on disk, so that recovery replays only the log since.

Layout of ``snapshot/`` (written whole into ``snapshot.tmp/``, then swapped in
by ``fileio.replace_dir`` so a crash at any step leaves one complete snapshot):

    meta.json           {"seq": n, "vectors": {name: i}}: the op the snapshot covers
    points.json         offset -> id, versions
    payload.json        PayloadStore state (payloads and index definitions)
    vectors-<i>.npy     (size, dim) float32 rows of vector i
    present-<i>.npy     which rows hold vector i
    indexed-<i>.npy     which rows the graph of vector i holds current
    hnsw-<i>.bin        that graph (only when one exists)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import orjson

from shard import fileio, hnsw
from shard.payload import PayloadStore
from shard.points import PointTable
from shard.types import ShardConfig
from shard.vectors import VectorStore

if TYPE_CHECKING:
    from shard.local_shard import LocalShard


@dataclass
class ShardState:
    seq: int
    points: PointTable
    payloads: PayloadStore
    vectors: dict[str, VectorStore]
    graphs: dict[str, hnsw.HnswIndex | None]
    indexed: dict[str, np.ndarray]


def save(shard: LocalShard, target: Path) -> None:
    """Write the shard's current state (caller holds the shard lock)."""
    size = shard.size

    def write(tmp: Path) -> None:
        names = {name: i for i, name in enumerate(shard.config.vectors)}
        (tmp / "points.json").write_bytes(orjson.dumps(shard.points.to_state()))
        (tmp / "payload.json").write_bytes(orjson.dumps(shard.payloads.to_state()))
        for name, i in names.items():
            store = shard.vectors[name]
            np.save(tmp / f"vectors-{i}.npy", store.data[:size])
            np.save(tmp / f"present-{i}.npy", store.mask(size))
            indexed = np.zeros(size, dtype=bool)
            current = shard.indexed[name][:size]
            indexed[: len(current)] = current
            np.save(tmp / f"indexed-{i}.npy", indexed)
            graph = shard.graphs[name]
            if graph is not None:
                graph.save(tmp / f"hnsw-{i}.bin")
        (tmp / "meta.json").write_bytes(orjson.dumps({"seq": shard.seq, "vectors": names}))

    fileio.replace_dir(target, write)


def load(target: Path, config: ShardConfig) -> ShardState | None:
    """The saved state, or None when there is no snapshot yet."""
    target = fileio.recover_dir(target)
    if target is None or not (target / "meta.json").exists():
        return None
    meta = orjson.loads((target / "meta.json").read_bytes())
    points = PointTable.from_state(orjson.loads((target / "points.json").read_bytes()))
    payloads = PayloadStore.from_state(orjson.loads((target / "payload.json").read_bytes()))
    vectors, graphs, indexed = {}, {}, {}
    for name, params in config.vectors.items():
        i = meta["vectors"][name]
        store = VectorStore(params.size, params.distance, capacity=max(1024, points.size))
        data = np.load(target / f"vectors-{i}.npy")
        store.data[: len(data)] = data
        store.present[: len(data)] = np.load(target / f"present-{i}.npy")
        vectors[name] = store
        mask = np.load(target / f"indexed-{i}.npy")
        graph_file = target / f"hnsw-{i}.bin"
        graphs[name] = (
            hnsw.HnswIndex.load(graph_file, params.size, params.distance, config.hnsw_for(name), np.flatnonzero(mask))
            if graph_file.exists()
            else None
        )
        indexed[name] = mask if graphs[name] is not None else np.zeros(len(mask), dtype=bool)
    return ShardState(meta["seq"], points, payloads, vectors, graphs, indexed)
