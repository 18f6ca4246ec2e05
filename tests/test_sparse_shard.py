"""Sparse vectors in a LocalShard on real files: writes, reads, search, the log,
snapshots and restores (shard.sparse itself is tested in test_sparse.py)."""

import numpy as np
import pytest

from shard import codec
from shard.local_shard import LocalShard
from shard.sparse import Idf, SparseVectorError
from shard.types import (
    BadInput,
    Distance,
    SearchRequest,
    ShardConfig,
    SparseQuery,
    SparseVectorParams,
    VectorParams,
)

DIM = 4


def config(modifier=None):
    return ShardConfig(vectors={"d": VectorParams(DIM, Distance.DOT)},
                       sparse={"s": SparseVectorParams(modifier=modifier)})


def sv(indices, values):
    return [np.asarray(indices, dtype=np.uint32), np.asarray(values, dtype=np.float32)]


def upsert(ids, sparse_rows, dense=True):
    n = len(ids)
    op = {"type": "upsert", "ids": list(ids), "payloads": [{"i": i - 1} for i in ids],
          "vectors": {"d": np.ones((n, DIM), dtype=np.float32)} if dense else {},
          "sparse": {"s": sparse_rows}}
    return op


def query(shard, indices, values, limit=10, **kw):
    q = SparseQuery(np.asarray(indices, dtype=np.uint32), np.asarray(values, dtype=np.float32), kw.pop("idf", None))
    (hits,) = shard.search_batch([SearchRequest(q, using="s", limit=limit, **kw)])
    return [(h.id, round(h.score, 5)) for h in hits]


ROWS = [sv([1, 5], [1.0, 2.0]), sv([5, 9], [0.5, 1.0]), None, sv([2], [3.0])]


def test_upsert_search_retrieve(tmp_path):
    shard = LocalShard(tmp_path, config(), background_indexing=False)
    shard.apply(upsert([1, 2, 3, 4], ROWS))
    assert query(shard, [5, 2], [2.0, 1.0]) == [(1, 4.0), (4, 3.0), (2, 1.0)]
    assert query(shard, [5], [1.0], filter={"must": [{"key": "i", "match": {"value": 1}}]}) == [(2, 0.5)]
    assert query(shard, [5], [1.0], score_threshold=0.5) == [(1, 2.0)]
    (rec,) = shard.retrieve([2], None, True)
    assert set(rec.vector) == {"d", "s"}
    assert rec.vector["s"]["indices"].tolist() == [5, 9] and rec.vector["s"]["values"].tolist() == [0.5, 1.0]
    (rec,) = shard.retrieve([3], None, ("s",))
    assert rec.vector == {}
    assert shard.count({"must": [{"has_vector": "s"}]}) == 3
    assert shard.info().vectors_count == 4 + 3


def test_upsert_replaces_the_point_and_delete_clears(tmp_path):
    shard = LocalShard(tmp_path, config(), background_indexing=False)
    shard.apply(upsert([1, 2, 3, 4], ROWS))
    shard.apply(upsert([1], [None]))  # an upsert replaces the whole point: its sparse vector goes
    assert query(shard, [1, 5], [1.0, 1.0]) == [(2, 0.5)]
    shard.apply({"type": "update_vectors", "ids": [3], "vectors": {}, "sparse": {"s": [sv([1], [4.0])]}})
    shard.apply({"type": "delete_vectors", "ids": [2], "names": ["s"]})
    assert query(shard, [1, 5], [1.0, 1.0]) == [(3, 4.0)]
    shard.apply({"type": "delete_points", "ids": [3]})
    assert query(shard, [1, 5], [1.0, 1.0]) == []
    assert shard.count({"must": [{"has_vector": "s"}]}) == 1


def test_bad_sparse_op_changes_nothing(tmp_path):
    shard = LocalShard(tmp_path, config(), background_indexing=False)
    shard.apply(upsert([1], [ROWS[0]]))
    with pytest.raises(SparseVectorError):
        shard.apply(upsert([1, 2], [sv([7], [1.0]), sv([3, 3], [1.0, 2.0])]))
    with pytest.raises(BadInput, match="Not existing vector name error: x"):
        shard.apply({**upsert([1], [ROWS[0]]), "sparse": {"x": [ROWS[0]]}})
    assert query(shard, [1, 7], [1.0, 1.0]) == [(1, 1.0)]
    assert shard.seq == 1


def test_idf_scales_the_query(tmp_path):
    shard = LocalShard(tmp_path, config("idf"), background_indexing=False)
    shard.apply(upsert([1, 2, 3, 4], ROWS))
    assert shard.sparse_stats_many([("s", [5, 2, 8])]) == [(3, {5: 2, 2: 1, 8: 0})]
    idf = Idf(3, {5: 2})
    w = float(np.log((3 - 2 + 0.5) / (2 + 0.5) + 1))
    assert query(shard, [5], [1.0], idf=idf) == [(1, round(2.0 * w, 5)), (2, round(0.5 * w, 5))]


@pytest.mark.parametrize("via", ["log", "snapshot", "export"])
def test_survives_restart(tmp_path, via):
    shard = LocalShard(tmp_path / "a", config(), background_indexing=False)
    shard.apply(upsert([1, 2, 3, 4], ROWS))
    shard.apply({"type": "delete_vectors", "ids": [4], "names": ["s"]})
    want = query(shard, [1, 2, 5, 9], [1.0, 1.0, 1.0, 1.0])
    if via == "export":
        shard.export(str(tmp_path / "copy"))
        other = LocalShard(tmp_path / "b", config(), background_indexing=False)
        other.restore(str(tmp_path / "copy"))
        shard.close()
        shard = other
    else:
        shard.close(take_snapshot=via == "snapshot")
        shard = LocalShard(tmp_path / "a", config(), background_indexing=False)
    assert query(shard, [1, 2, 5, 9], [1.0, 1.0, 1.0, 1.0]) == want == [(1, 3.0), (2, 1.5)]
    assert shard.count({"must": [{"has_vector": "s"}]}) == 2
    shard.close()


def test_export_refuses_other_sparse_names(tmp_path):
    shard = LocalShard(tmp_path / "a", config(), background_indexing=False)
    shard.apply(upsert([1], [ROWS[0]]))
    shard.export(str(tmp_path / "copy"))
    other = LocalShard(tmp_path / "b", ShardConfig(vectors={"d": VectorParams(DIM, Distance.DOT)}),
                       background_indexing=False)
    with pytest.raises(BadInput, match="sparse vectors"):
        other.restore(str(tmp_path / "copy"))


def test_op_with_sparse_round_trips_the_codec():
    op = upsert([1, 2, 3, 4], ROWS)
    back = codec.decode(codec.encode(op))
    assert back["sparse"]["s"][2] is None
    assert back["sparse"]["s"][1][0].dtype == np.uint32 and back["sparse"]["s"][1][1].tolist() == [0.5, 1.0]


def test_config_round_trips_json():
    cfg = ShardConfig(vectors={}, sparse={"s": SparseVectorParams({"on_disk": True}, "idf")})
    assert ShardConfig.from_json(cfg.to_json()) == cfg
    assert "sparse" not in ShardConfig(vectors={"d": VectorParams(DIM, Distance.DOT)}).to_json()


def test_digest_covers_sparse_vectors(tmp_path):
    a = LocalShard(tmp_path / "a", config(), background_indexing=False)
    b = LocalShard(tmp_path / "b", config(), background_indexing=False)
    a.apply(upsert([1, 2, 3, 4], ROWS))
    b.apply(upsert([4, 3], ROWS[:1:-1]))  # the same points, written in another order
    b.apply(upsert([1, 2], ROWS[:2]))
    assert a.digest() == b.digest()
    b.apply({"type": "update_vectors", "ids": [2], "vectors": {}, "sparse": {"s": [sv([5, 9], [0.5, 1.5])]}})
    assert a.digest() != b.digest()
    b.apply({"type": "update_vectors", "ids": [2], "vectors": {}, "sparse": {"s": [sv([9, 5], [1.0, 0.5])]}})
    assert a.digest() == b.digest()
    b.apply({"type": "delete_vectors", "ids": [4], "names": ["s"]})
    assert a.digest() != b.digest()
