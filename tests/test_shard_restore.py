"""LocalShard.restore: a shard's export swapped in whole, durably, with a sequence
number that never goes back; what does not fit is refused and changes nothing.
Exact restores (a transfer's target): at exactly the copy's number, durably, and
finished on open when cut short after their commit. And the snapshot names the API accepts (cluster.names.snapshot_name_problem)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from cluster.names import snapshot_name_problem
from shard import codec, fileio, hnsw
from shard.local_shard import RESTORING, LocalShard
from shard.types import (
    BadInput,
    Distance,
    NearestQuery,
    OptimizersConfig,
    PayloadSelector,
    SearchRequest,
    ShardConfig,
    VectorParams,
)

DIM = 8


def config(dim: int = DIM, names=("",), indexing_threshold: int = 20000) -> ShardConfig:
    return ShardConfig(vectors={n: VectorParams(dim, Distance.DOT) for n in names},
                       optimizers=OptimizersConfig(indexing_threshold=indexing_threshold))


def upsert(ids, value: float, dim: int = DIM):
    ids = list(ids)
    vectors = np.full((len(ids), dim), value, dtype=np.float32)
    return {"type": "upsert", "ids": ids, "vectors": {"": vectors}, "payloads": [{"v": value} for _ in ids]}


def contents(shard: LocalShard) -> dict:
    records = shard.retrieve(sorted(shard.points.offset_of), PayloadSelector(), True)
    return {r.id: (r.payload, np.asarray(r.vector).tolist()) for r in records}


def test_restore_swaps_in_the_export_durably_and_numbers_go_on(tmp_path):
    shard = LocalShard(tmp_path / "s", config(), background_indexing=False)
    shard.apply(upsert(range(10), 1.0))
    exported = shard.export(str(tmp_path / "copy"))
    at_export = contents(shard)
    assert exported == {"seq": 1, "points": 10}
    shard.apply(upsert(range(5, 20), 2.0))
    shard.apply({"type": "delete_points", "ids": [0, 1]})
    assert shard.seq == 3

    done = shard.restore(str(tmp_path / "copy"))
    assert done == {"seq": 4, "points": 10}  # one past the log: numbers never go back
    assert contents(shard) == at_export
    assert shard.apply(upsert([99], 3.0)) == 5
    shard.close(take_snapshot=False)  # what a restart sees: the restored snapshot, then the log after it

    reopened = LocalShard(tmp_path / "s", config(), background_indexing=False)
    assert reopened.seq == 5
    assert contents(reopened) == {**at_export, 99: ({"v": 3.0}, [3.0] * DIM)}
    reopened.close()


def test_an_export_ahead_of_the_log_keeps_its_sequence_number(tmp_path):
    source = LocalShard(tmp_path / "source", config(), background_indexing=False)
    for i in range(5):
        source.apply(upsert([i], float(i)))
    source.export(str(tmp_path / "copy"))
    target = LocalShard(tmp_path / "target", config(), background_indexing=False)
    target.apply(upsert([100], 1.0))
    # A transfer goes on from its source's number.
    assert target.restore(str(tmp_path / "copy")) == {"seq": 5, "points": 5}
    assert target.apply(upsert([6], 6.0)) == 6
    source.close()
    target.close()


@pytest.mark.parametrize("other, words", [
    (config(dim=4), "cannot be read"),
    (config(names=("a",)), "holds the vectors"),
])
def test_an_export_that_does_not_fit_is_refused_and_changes_nothing(tmp_path, other, words):
    source = LocalShard(tmp_path / "source", other, background_indexing=False)
    name = next(iter(other.vectors))
    dim = other.vectors[name].size
    source.apply({"type": "upsert", "ids": [1, 2], "vectors": {name: np.ones((2, dim), dtype=np.float32)}})
    source.export(str(tmp_path / "copy"))
    target = LocalShard(tmp_path / "target", config(), background_indexing=False)
    target.apply(upsert(range(3), 1.0))
    before = contents(target)
    with pytest.raises(BadInput, match=words):
        target.restore(str(tmp_path / "copy"))
    assert contents(target) == before and target.seq == 1
    source.close()
    target.close()


def test_a_graph_replaced_while_the_indexer_adds_to_it_is_left_alone(tmp_path, monkeypatch):
    """The indexer adds to a graph without the shard lock; a restore meanwhile
    replaces the graphs and masks. The add that finishes afterwards must not mark
    rows of the restored state as indexed (they are in no graph)."""
    shard = LocalShard(tmp_path / "s", config(indexing_threshold=1), background_indexing=False)
    shard.apply(upsert(range(50), 1.0))
    shard.export(str(tmp_path / "copy"))
    shard.apply(upsert(range(50, 100), 2.0))
    adding, resume = threading.Event(), threading.Event()
    real_add = hnsw.HnswIndex.add

    def slow_add(self, labels, vectors):
        adding.set()
        resume.wait(10)
        return real_add(self, labels, vectors)

    monkeypatch.setattr(hnsw.HnswIndex, "add", slow_add)
    indexer = threading.Thread(target=shard.index_step)
    indexer.start()
    assert adding.wait(10)
    shard.restore(str(tmp_path / "copy"))
    resume.set()
    indexer.join(10)
    assert not shard.indexed[""].any() and shard.graphs[""] is None
    monkeypatch.setattr(hnsw.HnswIndex, "add", real_add)
    assert shard.wait_indexed() and shard.indexed[""][:50].all()
    shard.close()


# ---------------------------------------------------------------------------
# restore(exact=True): a transfer's target (cluster.transfer).
# ---------------------------------------------------------------------------


def exact_pair(tmp_path, indexing_threshold: int = 20000):
    """A source at seq 3 with its copy inside the target's folder; the target's own
    log runs to seq 8, past the copy's number."""
    cfg = config(indexing_threshold=indexing_threshold)
    source = LocalShard(tmp_path / "source", cfg, background_indexing=False)
    for i in range(3):
        source.apply(upsert(range(i * 40, i * 40 + 60), float(i + 1)))
    target = LocalShard(tmp_path / "target", cfg, background_indexing=False)
    for i in range(8):
        target.apply(upsert([i], 9.0))
    source.wait_indexed()
    source.export(str(tmp_path / "target" / "copy"))
    return source, target


def test_an_exact_restore_ends_at_the_copys_number_below_the_log(tmp_path):
    source, target = exact_pair(tmp_path)
    assert target.restore(str(tmp_path / "target" / "copy"), exact=True) == {"seq": 3, "points": 140}
    assert target.seq == 3 and target.wal.next_seq == 4 and target.records_after(3) == []
    assert contents(target) == contents(source) and not (tmp_path / "target" / "copy").exists()
    # The primary's next record joins up; a restart sees the copy, then that record.
    record = codec.encode(upsert([500], 5.0))
    assert source.apply(upsert([500], 5.0)) == target.apply_replicated(4, record, epoch=0) == 4
    target.close(take_snapshot=False)
    reopened = LocalShard(tmp_path / "target", config(), background_indexing=False)
    assert reopened.seq == 4 and contents(reopened) == contents(source)
    source.close()
    reopened.close()


def test_an_exact_restore_keeps_the_copys_graphs(tmp_path):
    source, target = exact_pair(tmp_path, indexing_threshold=1)
    assert source.graphs[""] is not None and source.info().pending_index == 0
    target.restore(str(tmp_path / "target" / "copy"), exact=True)
    assert target.graphs[""] is not None and target.info().pending_index == 0  # nothing to rebuild
    query = SearchRequest(NearestQuery(np.linspace(-1, 1, DIM, dtype=np.float32)), limit=10)
    assert target.search_batch([query]) == source.search_batch([query])
    source.close()
    target.close()


def test_an_exact_restore_cut_short_after_its_commit_is_finished_on_open(tmp_path, monkeypatch):
    source, target = exact_pair(tmp_path)

    def crash(self, segment_bytes):
        raise OSError("disk gone")

    monkeypatch.setattr(LocalShard, "_install_restoring", crash)
    with pytest.raises(OSError, match="disk gone"):
        target.restore(str(tmp_path / "target" / "copy"), exact=True)
    with pytest.raises(RuntimeError, match="closed"):  # its memory no longer matches its disk
        target.apply(upsert([1], 1.0))
    assert (tmp_path / "target" / RESTORING).is_dir()
    monkeypatch.undo()
    reopened = LocalShard(tmp_path / "target", config(), background_indexing=False)
    assert reopened.seq == 3 and reopened.wal.next_seq == 4 and contents(reopened) == contents(source)
    assert not (tmp_path / "target" / RESTORING).exists()
    source.close()
    reopened.close()


def test_an_exact_restore_refuses_a_copy_outside_the_shard_or_not_one(tmp_path):
    source, target = exact_pair(tmp_path)
    before = contents(target)
    source.export(str(tmp_path / "outside"))
    with pytest.raises(fileio.OutsideRoot):
        target.restore(str(tmp_path / "outside"), exact=True)
    (tmp_path / "target" / "empty").mkdir()
    with pytest.raises(BadInput, match="holds no shard"):
        target.restore(str(tmp_path / "target" / "empty"), exact=True)
    assert contents(target) == before and target.seq == 8 and (tmp_path / "outside").is_dir()
    source.close()
    target.close()


@pytest.mark.parametrize("name", ["c-shard-0-2026-01-01-00-00-00.snapshot", "a b.snapshot", "é.snapshot"])
def test_snapshot_names_shoal_writes_are_accepted(name):
    assert snapshot_name_problem(name) is None


@pytest.mark.parametrize("name", ["", ".", "..", "../x.snapshot", "a/b", "a\\b", "a\0b", ".hidden", "x" * 256, "a\nb"])
def test_snapshot_names_that_are_no_plain_file_name_are_refused(name):
    assert snapshot_name_problem(name) is not None
