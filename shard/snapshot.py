"""A shard's state on disk, so that recovery replays only the log since.

Layout of ``snapshot/`` (written whole into ``snapshot.tmp/``, then swapped in
by ``fileio.replace_dir`` so a crash at any step leaves one complete snapshot):

    meta.json           {"seq": n, "vectors": {name: i}, "sparse": {name: j}, "multi": {name: k},
                        "graphs": {name: {"kind", ...}}, "settings": {name: {"quantization"}}}: the op
                        the snapshot covers, each graph's kind, each vector's quantization
    points.json         offset -> id, versions
    payload.json        PayloadStore state (payloads and index definitions)
    vectors-<i>.npy     (size, dim) float32 rows of vector i
    present-<i>.npy     which rows hold vector i
    indexed-<i>.npy     which rows the graph of vector i holds current
    hnsw-<i>.bin        that graph (only when one exists): hnswlib's, or one over quantized
                        vectors (Shoal's own int8 one, usearch's binary one, faiss's
                        product one), as meta.json's "graphs" says (``shard.graphs``)
    sparse-<j>.npz      sparse vector j in CSR form (``SparseStore.to_arrays``); its
                        inverted index is rebuilt on load
    multi-<k>.npz       multivector k (``MultiStore.to_arrays``: row counts by offset and
                        the rows, in the vector's datatype); snapshots older than
                        multivectors have no "multi" in meta.json and load without any
"""

from __future__ import annotations

import re
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import orjson

from shard import fileio
from shard import graphs as graphs_
from shard.multi import MultiStore
from shard.payload import PayloadStore
from shard.points import PointTable
from shard.sparse import SparseStore
from shard.types import BadInput, ShardConfig
from shard.vectors import VectorStore

# (vector name, capacity) -> an empty store for that vector: how a shard chooses
# RAM or a map file for each (``LocalShard._new_store``).
StoreFactory = Callable[[str, int], VectorStore]

# The name of every file a snapshot folder may hold (a plain name: no folder part).
FILE_NAME = re.compile(r"(meta|points|payload)\.json|(vectors|present|indexed)-\d{1,4}\.npy|hnsw-\d{1,4}\.bin|(sparse|multi)-\d{1,4}\.npz|\.complete")


@dataclass
class ShardState:
    """A shard's stores as of sequence number ``seq``: what a snapshot writes and
    what loading one gives back. The shard builds one over its own stores to
    snapshot them (references, not copies, read under the shard's lock), so this
    module needs nothing else of the shard and never imports it."""

    seq: int
    points: PointTable
    payloads: PayloadStore
    vectors: dict[str, VectorStore]
    graphs: dict[str, graphs_.Graph | None]
    indexed: dict[str, np.ndarray]
    sparse: dict[str, SparseStore] = field(default_factory=dict)
    multi: dict[str, MultiStore] = field(default_factory=dict)
    # The settings of each dense vector the state was saved under (ShardConfig.vector_settings)
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass
class Staged:
    """A snapshot half written: everything but the graphs is in ``tmp``."""

    target: Path
    tmp: Path
    size: int
    graphs: list[tuple[str, int, graphs_.Graph]]  # (vector name, file number, graph) still to write
    indexed: dict[str, np.ndarray]  # the shard's own masks (ShardState.indexed), read as each graph is saved


def stage(state: ShardState, config: ShardConfig, target: Path) -> Staged:
    """First half of a snapshot of ``state``, a shard's stores; the caller holds
    the shard lock. Writes the points, payloads and vectors as of now into the
    staging directory: page-cache writes, about 50 ms for 100k x 384, where the
    graphs and the fsyncs of a whole snapshot take ten times that."""
    size = state.points.size
    tmp = fileio.staging_dir(target)
    try:
        names = {name: i for i, name in enumerate(config.vectors)}
        (tmp / "points.json").write_bytes(orjson.dumps(state.points.to_state()))
        (tmp / "payload.json").write_bytes(orjson.dumps(state.payloads.to_state()))
        graphs = []
        for name, i in names.items():
            store = state.vectors[name]
            np.save(tmp / f"vectors-{i}.npy", store.data[:size])
            np.save(tmp / f"present-{i}.npy", store.mask(size))
            graph = state.graphs[name]
            if graph is None:
                np.save(tmp / f"indexed-{i}.npy", np.zeros(size, dtype=bool))
            else:
                graphs.append((name, i, graph))
        sparse_names = {name: j for j, name in enumerate(config.sparse)}
        for name, j in sparse_names.items():
            np.savez(tmp / f"sparse-{j}.npz", **state.sparse[name].to_arrays())
        multi_names = {name: k for k, name in enumerate(config.multi)}
        for name, k in multi_names.items():
            np.savez(tmp / f"multi-{k}.npz", **state.multi[name].to_arrays())
        meta = {"seq": state.seq, "vectors": names, "sparse": sparse_names, "settings": config.saved_settings()}
        if graphs:
            meta["graphs"] = {name: graphs_.describe(graph) for name, _, graph in graphs}
        if multi_names:  # absent otherwise: a snapshot without multivectors reads as before
            meta["multi"] = multi_names
        (tmp / "meta.json").write_bytes(orjson.dumps(meta))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Staged(target, tmp, size, graphs, state.indexed)


def finish(staged: Staged, lock: threading.RLock) -> None:
    """Second half, without the shard lock: each graph beside the mask of the
    offsets current in it, then the publish (fsync, swap).

    The mask is read with the graph locked, so file and mask agree; it may be
    newer than the staged vectors, and that is sound: a graph entry can only
    differ from a staged vector through a write after the staged ``seq``, and
    replaying that write from the log invalidates the entry again. Entries the
    mask does not vouch for are marked deleted on load.

    ``lock`` is the shard lock, taken to read each mask: the shard replaces a
    mask in ``staged.indexed`` when it grows one (the dict is the shard's own,
    and stays so until a restore, which waits for the snapshot to end)."""
    try:
        for name, i, graph in staged.graphs:

            def current_mask(name: str = name) -> np.ndarray:
                current = staged.indexed[name][: staged.size]
                indexed = np.zeros(staged.size, dtype=bool)
                indexed[: len(current)] = current
                return indexed

            indexed = graph.save(staged.tmp / f"hnsw-{i}.bin", lock, current_mask)
            np.save(staged.tmp / f"indexed-{i}.npy", indexed)
        fileio.publish_dir(staged.target)
    except BaseException:
        shutil.rmtree(staged.tmp, ignore_errors=True)
        raise


def save(state: ShardState, config: ShardConfig, target: Path, lock: threading.RLock) -> None:
    """A whole snapshot at once (the caller holds the shard lock, ``lock``)."""
    finish(stage(state, config, target), lock)


def load(target: Path, config: ShardConfig, with_graphs: bool = True,
         new_store: StoreFactory | None = None) -> ShardState | None:
    """The saved state, or None when there is no snapshot yet. Without
    ``with_graphs`` no graph file is read: the graphs are rebuilt from the vectors.

    ``new_store(name, capacity)`` makes the empty store each vector is loaded into
    (the shard's, which keeps ``on_disk`` vectors in a map file; default: RAM).
    The rows of a mapped store are copied from the snapshot file mapped too, so
    they pass through the page cache and never all sit in the process's heap."""
    target = fileio.recover_dir(target)
    if target is None or not (target / "meta.json").exists():
        return None
    meta = orjson.loads((target / "meta.json").read_bytes())
    settings = _settings(meta, config)
    config = config.with_vector_settings(settings)
    points = PointTable.from_state(orjson.loads((target / "points.json").read_bytes()))
    payloads = PayloadStore.from_state(orjson.loads((target / "payload.json").read_bytes()))
    vectors, graphs, indexed = {}, {}, {}
    try:
        for name, params in config.vectors.items():
            i = meta["vectors"][name]
            capacity = max(1024, points.size)
            store = new_store(name, capacity) if new_store else VectorStore(params.size, params.distance, capacity)
            vectors[name] = store
            data = np.load(target / f"vectors-{i}.npy", mmap_mode="r" if store.file is not None else None)
            store.data[: len(data)] = data
            store.present[: len(data)] = np.load(target / f"present-{i}.npy")
            mask = np.load(target / f"indexed-{i}.npy")
            graph_file = target / f"hnsw-{i}.bin"
            graphs[name] = (
                graphs_.load(graph_file, config, name, (meta.get("graphs") or {}).get(name), np.flatnonzero(mask))
                if with_graphs and graph_file.exists()
                else None
            )
            indexed[name] = mask if graphs[name] is not None else np.zeros(len(mask), dtype=bool)
    except BaseException:
        for store in vectors.values():
            store.close()  # a map file goes now, not whenever the traceback lets go of it
        raise
    sparse_files = meta.get("sparse") or {}  # snapshots before sparse vectors have none
    sparse = {name: SparseStore.load(target / f"sparse-{int(sparse_files[name])}.npz") if name in sparse_files
              else SparseStore() for name in config.sparse}
    multi_files = meta.get("multi") or {}  # nor before multivectors
    multi = {name: MultiStore.load(target / f"multi-{int(multi_files[name])}.npz", params.size, params.distance,
                                   params.datatype or "float32")
             if name in multi_files else MultiStore(params.size, params.distance, params.datatype or "float32")
             for name, params in config.multi.items()}
    return ShardState(meta["seq"], points, payloads, vectors, graphs, indexed, sparse, multi, settings)


def _settings(meta: dict, config: ShardConfig) -> dict[str, Any]:
    """The vector settings a snapshot's meta.json keeps, for ``config``'s vectors (none
    in snapshots from before configure ops)."""
    return {n: v for n, v in (meta.get("settings") or {}).items() if n in config.vectors and isinstance(v, dict)}


def saved_settings(target: Path) -> dict[str, Any]:
    """The vector settings of the snapshot at ``target`` ({} when there is none)."""
    target = fileio.recover_dir(target)
    if target is None or not (target / "meta.json").exists():
        return {}
    return {n: v for n, v in (orjson.loads((target / "meta.json").read_bytes()).get("settings") or {}).items()
            if isinstance(v, dict)}


def load_export(folder: Path, config: ShardConfig, new_store: StoreFactory | None = None) -> ShardState:
    """A shard's export (``LocalShard.export``) from outside, such as a snapshot
    being recovered, read as a state for ``config``: BadInput when it is not
    one (other vector names or sizes, arrays that do not fit, damaged files).
    Its graph files are never parsed (native code would read them): the graphs
    are rebuilt from the vectors."""
    try:
        meta = orjson.loads((folder / "meta.json").read_bytes())
        names = meta["vectors"]
        if not isinstance(names, dict) or set(names) != set(config.vectors):
            raise BadInput(f"the shard holds the vectors {sorted(names)}, the collection {sorted(config.vectors)}")
        sparse_names = meta.get("sparse") or {}
        if not isinstance(sparse_names, dict) or set(sparse_names) != set(config.sparse):
            raise BadInput(f"the shard holds the sparse vectors {sorted(sparse_names)}, "
                           f"the collection {sorted(config.sparse)}")
        multi_names = meta.get("multi") or {}
        if not isinstance(multi_names, dict) or set(multi_names) != set(config.multi):
            raise BadInput(f"the shard holds the multivectors {sorted(multi_names)}, "
                           f"the collection {sorted(config.multi)}")
        if not isinstance(meta["seq"], int) or meta["seq"] < 0:
            raise BadInput("the shard's sequence number is not one")
        state = load(folder, config, with_graphs=False, new_store=new_store)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, OSError) as exc:  # orjson: ValueError
        raise BadInput(f"the snapshot's shard cannot be read: {type(exc).__name__}: {exc}") from None
    if state is None:
        raise BadInput("the snapshot holds no shard")
    return state
