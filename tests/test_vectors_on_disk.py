"""``on_disk: true`` vectors on real files: kept in a ``numpy.memmap`` of a file in the
shard's folder, with answers identical to the same shard keeping them in RAM, through
growth, deletes, restarts from the log and from a snapshot, a reopen after a kill,
restores and a change of ``on_disk``.

Every check here is on the store's type and its file, never on the process's memory
(RSS depends on the page cache): bench/on_disk.py measures that.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from shard.local_shard import LocalShard
from shard.types import (
    BadInput,
    Distance,
    NearestQuery,
    OptimizersConfig,
    PayloadSelector,
    RecommendQuery,
    SearchRequest,
    ShardConfig,
    VectorParams,
)
from shard.vectors import MIN_CAPACITY, MappedVectorStore, VectorStore

DIM = 12
N = 2500  # past MIN_CAPACITY: the map file grows twice


def config(on_disk: bool | None, distance=Distance.COSINE, names=("",), indexing_threshold=20000) -> ShardConfig:
    return ShardConfig(vectors={n: VectorParams(DIM, distance, on_disk=on_disk) for n in names},
                       optimizers=OptimizersConfig(indexing_threshold=indexing_threshold))


def upsert(ids, rows, name="") -> dict:
    ids = list(ids)
    return {"type": "upsert", "ids": ids, "vectors": {name: np.asarray(rows, dtype=np.float32)},
            "payloads": [{"i": i} for i in ids]}


def write(shard: LocalShard, data: np.ndarray, start: int = 0, stop: int = N) -> None:
    """Upserts in batches (the store grows as they come), then changes of every kind."""
    for lo in range(start, stop, 700):
        hi = min(lo + 700, stop)
        shard.apply(upsert(range(lo, hi), data[lo:hi]))
    shard.apply({"type": "delete_points", "ids": list(range(start, stop, 7))})
    shard.apply({"type": "update_vectors", "ids": [start + 1, start + 2],
                 "vectors": {"": -np.asarray(data[start + 1:start + 3], dtype=np.float32)}})
    shard.apply({"type": "delete_vectors", "ids": [start + 3], "names": [""]})


def answers(shard: LocalShard, queries: np.ndarray) -> dict:
    """What a client could see: searches (scores to the last bit), a recommend, the
    points with their vectors, the count and the content digest."""
    requests = [SearchRequest(NearestQuery(q), limit=15) for q in queries]
    requests.append(SearchRequest(RecommendQuery((queries[0],), (queries[1],), "best_score"), limit=10))
    requests.append(SearchRequest(NearestQuery(queries[2]), filter={"must": [{"key": "i", "range": {"lt": 900}}]},
                                  limit=10, with_vector=True))
    hits = [[(h.id, h.score, plain(h.vector)) for h in batch] for batch in shard.search_batch(requests)]
    records = shard.retrieve(sorted(shard.points.offset_of), PayloadSelector(), True)
    return {
        "hits": hits,
        "records": {r.id: (r.payload, plain(r.vector)) for r in records},
        "count": shard.count(None),
        "digest": shard.digest(),
    }


def plain(vector):
    """A returned vector as lists, checked to be a plain ndarray: a memmap would not
    pass the gateway's JSON encoder."""
    if isinstance(vector, dict):
        return {name: plain(v) for name, v in vector.items()}
    if vector is None:
        return None
    assert type(vector) is np.ndarray
    return vector.tolist()


def mapped(shard: LocalShard, name: str = "", position: int = 0) -> MappedVectorStore:
    """The store of ``name``, checked to be a memmap of its file in the shard's folder."""
    store = shard.vectors[name]
    assert isinstance(store, MappedVectorStore)
    assert isinstance(store.data, np.memmap)
    assert store.file.parent == shard.path
    assert store.file.name in (f"vectors-{position}.mmap", f"vectors-{position}.alt.mmap")
    assert store.data.filename == os.path.abspath(store.file)
    assert store.file.stat().st_size == store.capacity * DIM * 4
    return store


def map_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".mmap"))


@pytest.fixture
def data():
    return np.random.default_rng(11).normal(size=(2 * N, DIM)).astype(np.float32)


@pytest.fixture
def queries():
    return np.random.default_rng(12).normal(size=(6, DIM)).astype(np.float32)


@pytest.fixture
def reference(tmp_path, data, queries):
    """The answers of the same writes on a shard keeping its vectors in RAM."""
    shard = LocalShard(tmp_path / "ram", config(False), background_indexing=False)
    write(shard, data)
    assert type(shard.vectors[""]) is VectorStore and type(shard.vectors[""].data) is np.ndarray
    assert map_files(shard.path) == []
    out = answers(shard, queries)
    shard.close()
    return out


@pytest.mark.parametrize("distance", list(Distance))
def test_a_mapped_store_answers_as_the_ram_one_and_grows_in_its_file(tmp_path, data, queries, distance):
    ram = LocalShard(tmp_path / "ram", config(None, distance), background_indexing=False)
    disk = LocalShard(tmp_path / "disk", config(True, distance), background_indexing=False)
    first = mapped(disk)
    assert first.capacity == MIN_CAPACITY
    for shard in (ram, disk):
        write(shard, data)
    store = mapped(disk)
    assert store is first and store.capacity >= N > MIN_CAPACITY  # grown in place: the same file
    assert answers(disk, queries) == answers(ram, queries)
    ram.close()
    disk.close()
    assert map_files(disk.path) == []  # closed: the file goes with the shard


def test_graph_search_is_the_same_on_a_mapped_store(tmp_path, data, queries):
    # One indexing thread: hnswlib builds the same graph from the same vectors.
    shards = [LocalShard(tmp_path / str(on_disk), config(on_disk, indexing_threshold=1), indexing_threads=1,
                         background_indexing=False) for on_disk in (False, True)]
    for shard in shards:
        write(shard, data)
        assert shard.wait_indexed()
        assert shard.graphs[""] is not None
    ram, disk = (answers(shard, queries) for shard in shards)
    assert disk == ram
    for shard in shards:
        shard.close()


def test_restart_from_the_log(tmp_path, data, queries, reference):
    shard = LocalShard(tmp_path / "disk", config(True), background_indexing=False)
    write(shard, data)
    shard.close(take_snapshot=False)  # every write lives in the log alone
    assert map_files(shard.path) == []
    again = LocalShard(tmp_path / "disk", config(True), background_indexing=False)
    assert not (again.path / "snapshot").exists()
    mapped(again)
    assert answers(again, queries) == reference
    again.close()


def test_restart_from_a_snapshot_and_the_log_after_it(tmp_path, data, queries, reference):
    shard = LocalShard(tmp_path / "disk", config(True), background_indexing=False)
    shard.apply(upsert(range(1000), data[:1000]))
    shard.snapshot()
    write(shard, data)  # over the snapshot's points: replayed from the log
    shard.close(take_snapshot=False)
    again = LocalShard(tmp_path / "disk", config(True), background_indexing=False)
    assert again._snapshot_seq == 1 and again.seq > 1
    mapped(again)
    assert answers(again, queries) == reference
    again.close()  # snapshots everything
    third = LocalShard(tmp_path / "disk", config(True), background_indexing=False)
    assert third._snapshot_seq == third.seq
    assert mapped(third).capacity >= N
    assert answers(third, queries) == reference
    third.close()


def test_a_reopen_after_a_kill_never_reads_the_old_map_file(tmp_path, data, queries, reference):
    killed = LocalShard(tmp_path / "disk", config(True), background_indexing=False)
    write(killed, data)
    killed.snapshot()
    killed.apply(upsert([5], data[N + 5:N + 6]))
    killed.apply(upsert([5], data[5:6]))  # back as the reference has it, through the log
    file = mapped(killed).file
    killed_inode = file.stat().st_ino  # not reused while the killed shard holds the file open
    # Killed, not closed; and its map file torn: garbage over every row.
    with open(file, "r+b") as f:
        f.write(np.random.default_rng(3).bytes(file.stat().st_size))
    reopened = LocalShard(tmp_path / "disk", config(True), background_indexing=False)
    assert mapped(reopened).file == file and file.stat().st_ino != killed_inode  # made afresh
    assert answers(reopened, queries) == reference
    # The dead one's objects let go (as a killed process's would): its file was
    # already replaced, so nothing of the live shard is deleted.
    killed.wal.close()
    killed.vectors[""].close()
    assert file.exists() and answers(reopened, queries) == reference
    reopened.close()


def test_a_short_map_file_left_behind_is_replaced(tmp_path, data, queries, reference):
    shard = LocalShard(tmp_path / "disk", config(True), background_indexing=False)
    write(shard, data)
    shard.close(take_snapshot=False)
    (shard.path / "vectors-0.mmap").write_bytes(b"torn")  # a kill mid-growth, say
    (shard.path / "vectors-0.alt.mmap").write_bytes(b"left by a restore")
    (shard.path / "vectors-9.mmap").write_bytes(b"")
    (shard.path / "vectors-x.mmap").write_bytes(b"not ours")  # not a name the shard gives
    again = LocalShard(tmp_path / "disk", config(True), background_indexing=False)
    assert map_files(again.path) == ["vectors-0.mmap", "vectors-x.mmap"]
    assert mapped(again).capacity >= N
    assert answers(again, queries) == reference
    again.close()


def test_named_vectors_each_keep_their_own_storage(tmp_path, data, queries):
    cfg = ShardConfig(vectors={"ram": VectorParams(DIM, Distance.DOT, on_disk=False),
                               "disk": VectorParams(DIM, Distance.DOT, on_disk=True)})
    shard = LocalShard(tmp_path / "s", cfg, background_indexing=False)
    shard.apply({"type": "upsert", "ids": list(range(1500)),
                 "vectors": {"ram": data[:1500], "disk": data[:1500]}, "payloads": None})
    assert type(shard.vectors["ram"].data) is np.ndarray
    mapped(shard, "disk", position=1)
    assert map_files(shard.path) == ["vectors-1.mmap"]
    hits = shard.search_batch([SearchRequest(NearestQuery(q), using=name, limit=10)
                               for name in ("ram", "disk") for q in queries])
    assert hits[:len(queries)] == hits[len(queries):]
    shard.close()


def test_restores_fill_a_new_map_file_and_a_refused_one_changes_nothing(tmp_path, data, queries, reference):
    source = LocalShard(tmp_path / "source", config(False), background_indexing=False)
    write(source, data)
    source.export(str(tmp_path / "copy"))
    target = LocalShard(tmp_path / "target", config(True), background_indexing=False)
    target.apply(upsert(range(3), data[N:N + 3]))
    target.restore(str(tmp_path / "copy"))
    store = mapped(target)
    assert store.file.name == "vectors-0.alt.mmap" and map_files(target.path) == ["vectors-0.alt.mmap"]
    assert answers(target, queries) == reference

    wrong = LocalShard(tmp_path / "wrong", ShardConfig(vectors={"": VectorParams(4, Distance.COSINE)}),
                       background_indexing=False)
    wrong.apply({"type": "upsert", "ids": [1], "vectors": {"": np.ones((1, 4), dtype=np.float32)}})
    wrong.export(str(tmp_path / "wrong-copy"))
    with pytest.raises(BadInput):
        target.restore(str(tmp_path / "wrong-copy"))
    assert mapped(target) is store and map_files(target.path) == ["vectors-0.alt.mmap"]
    assert answers(target, queries) == reference

    # A transfer's copy, taken over exactly: filled under the other name again.
    copy = target.path / "transfer-in-test"
    source.export(str(copy))
    target.restore(str(copy), exact=True)
    assert mapped(target).file.name == "vectors-0.mmap" and map_files(target.path) == ["vectors-0.mmap"]
    assert answers(target, queries) == reference
    for shard in (source, target, wrong):
        shard.close()


def test_on_disk_changed_between_runs_moves_the_vectors(tmp_path, data, queries, reference):
    shard = LocalShard(tmp_path / "s", config(False), background_indexing=False)
    write(shard, data)
    shard.close()
    on = LocalShard(tmp_path / "s", config(True), background_indexing=False)  # PATCH on_disk: true, restart
    mapped(on)
    assert answers(on, queries) == reference
    on.apply(upsert([N + 1], data[N + 1:N + 2]))
    on.close(take_snapshot=False)
    off = LocalShard(tmp_path / "s", config(False), background_indexing=False)
    assert type(off.vectors[""].data) is np.ndarray and map_files(off.path) == []
    off.apply({"type": "delete_points", "ids": [N + 1]})
    assert answers(off, queries) == reference
    off.close()


def test_on_disk_changed_by_a_configure_op(tmp_path, data, queries, reference):
    """A PATCH of on_disk reaches a running shard as a ``configure`` op, through its
    log: the vectors move at once, and again when the log is replayed; a shard opened
    afresh keeps its rows where the config it is opened with says (where rows live is
    not part of the answers, unlike quantization)."""
    shard = LocalShard(tmp_path / "s", config(False), background_indexing=False)
    write(shard, data)
    shard.apply({"type": "configure", "settings": {"": {"on_disk": True}}})
    mapped(shard)
    assert shard.config.vectors[""].on_disk is True and answers(shard, queries) == reference
    shard.apply({"type": "configure", "settings": {"": {"on_disk": False}}})
    assert type(shard.vectors[""].data) is np.ndarray and map_files(shard.path) == []
    shard.apply({"type": "configure", "settings": {"": {"on_disk": True}}})
    shard.close(take_snapshot=False)
    replayed = LocalShard(tmp_path / "s", config(False), background_indexing=False)
    mapped(replayed)  # the configure op, replayed from the log
    assert answers(replayed, queries) == reference
    replayed.close()  # snapshotted: the log no longer holds it
    reopened = LocalShard(tmp_path / "s", config(False), background_indexing=False)
    assert type(reopened.vectors[""].data) is np.ndarray and answers(reopened, queries) == reference
    reopened.close()


def test_on_disk_changed_on_a_running_shard(tmp_path, data, queries):
    shard = LocalShard(tmp_path / "s", config(None), background_indexing=False)
    write(shard, data, stop=1500)
    shard.set_on_disk("", True)
    assert shard.config.vectors[""].on_disk is True
    store = mapped(shard)
    capacity = store.capacity
    assert capacity >= 1500
    write(shard, data, start=1500)  # grows the new file
    assert mapped(shard) is store and store.capacity > capacity
    shard.set_on_disk("", True)  # already so: nothing moves
    assert shard.vectors[""] is store
    expected = answers(shard, queries)
    shard.set_on_disk("", False)
    assert type(shard.vectors[""].data) is np.ndarray and map_files(shard.path) == []
    assert answers(shard, queries) == expected
    with pytest.raises(BadInput, match="Not existing vector name"):
        shard.set_on_disk("nope", True)
    shard.close()
    # Reopened, the shard keeps the vectors where the config it is given says.
    again = LocalShard(tmp_path / "s", config(None), background_indexing=False)
    assert type(again.vectors[""].data) is np.ndarray
    assert answers(again, queries) == expected
    again.close()
