"""Multivectors in a LocalShard on real files: writes, reads, search (nearest and
by examples), the log, snapshots, restores and the content digest (shard.multi
itself is tested in test_multi.py)."""

import numpy as np
import pytest

from shard import codec, distances, multi
from shard.local_shard import LocalShard
from shard.multi import MultiVectorError
from shard.types import (
    BadInput,
    ContextPair,
    ContextQuery,
    DiscoverQuery,
    Distance,
    NearestQuery,
    RecommendQuery,
    SearchRequest,
    ShardConfig,
    VectorParams,
)

DIM = 3
MAXSIM = {"comparator": "max_sim"}


def config(distance=Distance.DOT, datatype=None):
    return ShardConfig(vectors={"d": VectorParams(DIM, Distance.DOT)},
                       multi={"m": VectorParams(DIM, distance, datatype=datatype, multivector=MAXSIM)})


def mv(*rows):
    return np.asarray(rows, dtype=np.float32)


def upsert(ids, matrices, dense=True):
    n = len(ids)
    return {"type": "upsert", "ids": list(ids), "payloads": [{"i": i} for i in ids],
            "vectors": {"d": np.ones((n, DIM), dtype=np.float32)} if dense else {},
            "multi": {"m": multi.op_entry(matrices, DIM)}}


MATRICES = [mv([1, 0, 0], [0, 1, 0]), mv([0, 0, 1]), None, mv([2, 2, 0], [0, 0, 0.5], [1, 1, 1])]


def naive(query, matrix):
    """Dot MaxSim: the sum over the query's rows of its best dot product."""
    return sum(max(float(np.dot(q, r)) for r in matrix) for q in query)


def nearest(shard, query, limit=10, **kw):
    (hits,) = shard.search_batch([SearchRequest(NearestQuery(mv(*query)), using="m", limit=limit, **kw)])
    return [(h.id, round(h.score, 5)) for h in hits]


def test_upsert_search_retrieve(tmp_path):
    shard = LocalShard(tmp_path, config(), background_indexing=False)
    shard.apply(upsert([1, 2, 3, 4], MATRICES))
    q = [[1, 0, 0], [0, 0, 1]]
    want = sorted(((i, round(naive(np.asarray(q), m), 5)) for i, m in zip([1, 2, 4], [MATRICES[0], MATRICES[1],
                                                                                        MATRICES[3]])),
                  key=lambda h: -h[1])
    assert nearest(shard, q) == want == [(4, 3.0), (1, 1.0), (2, 1.0)]
    assert nearest(shard, q, filter={"must": [{"key": "i", "match": {"value": 1}}]}) == [(1, 1.0)]
    assert nearest(shard, q, filter={"must": [{"has_id": [1, 2]}]}) == [(1, 1.0), (2, 1.0)]
    assert nearest(shard, q, score_threshold=1.0) == [(4, 3.0)]
    assert nearest(shard, q, limit=1, offset=1) == [(4, 3.0), (1, 1.0)]  # shards answer offset + limit
    (rec,) = shard.retrieve([4], None, True)
    assert set(rec.vector) == {"d", "m"}
    assert rec.vector["m"].tolist() == MATRICES[3].tolist()
    (rec,) = shard.retrieve([3], None, ("m",))
    assert rec.vector == {}
    assert shard.count({"must": [{"has_vector": "m"}]}) == 3
    assert shard.info().vectors_count == 4 + 3
    assert shard.get_vectors([1, 3], "m")[1].tolist() == MATRICES[0].tolist()


def test_unnamed_multivector_is_bare(tmp_path):
    cfg = ShardConfig(vectors={}, multi={"": VectorParams(DIM, Distance.COSINE, multivector=MAXSIM)})
    shard = LocalShard(tmp_path, cfg, background_indexing=False)
    shard.apply({"type": "upsert", "ids": [1], "vectors": {}, "payloads": None,
                 "multi": {"": multi.op_entry([mv([3, 0, 4])], DIM)}})
    (rec,) = shard.retrieve([1], None, True)
    assert np.allclose(rec.vector, [[0.6, 0.0, 0.8]])  # Cosine: stored unit length, as Qdrant returns it
    (hit,) = shard.search_batch([SearchRequest(NearestQuery(mv([0, 0, 2], [3, 0, 0])), using="")])[0:1][0]
    assert round(hit.score, 5) == 1.4


@pytest.mark.parametrize("datatype,want", [("float16", [[0.0999755859375, 1.0, 300.0]]),
                                           ("uint8", [[0.0, 1.0, 255.0]])])
def test_datatype_rounds_the_stored_rows(tmp_path, datatype, want):
    shard = LocalShard(tmp_path, config(datatype=datatype), background_indexing=False)
    shard.apply(upsert([1], [mv([0.1, 1.0, 300.0])]))
    (rec,) = shard.retrieve([1], None, ("m",))
    assert rec.vector["m"].tolist() == want
    assert nearest(shard, [[0, 0, 1]]) == [(1, round(want[0][2], 5))]


def test_upsert_replaces_update_and_delete_clear(tmp_path):
    shard = LocalShard(tmp_path, config(), background_indexing=False)
    shard.apply(upsert([1, 2, 3, 4], MATRICES))
    shard.apply(upsert([1], [None]))  # an upsert replaces the whole point: its multivector goes
    assert [h for h, _ in nearest(shard, [[1, 0, 0]])] == [4, 2]
    shard.apply({"type": "update_vectors", "ids": [3], "vectors": {}, "multi": {"m": multi.op_entry([mv([5, 0, 0])], DIM)}})
    shard.apply({"type": "delete_vectors", "ids": [2], "names": ["m"]})
    assert nearest(shard, [[1, 0, 0]]) == [(3, 5.0), (4, 2.0)]
    assert shard.retrieve([3], None, ("d",))[0].vector["d"].tolist() == [1, 1, 1]  # the dense vector stays
    shard.apply({"type": "delete_points", "ids": [3]})
    assert nearest(shard, [[1, 0, 0]]) == [(4, 2.0)]
    assert shard.count({"must": [{"has_vector": "m"}]}) == 1


def test_bad_multivector_op_changes_nothing(tmp_path):
    shard = LocalShard(tmp_path, config(), background_indexing=False)
    shard.apply(upsert([1], [MATRICES[0]]))
    with pytest.raises(BadInput, match="Vector dimension error: expected dim: 3, got 2"):
        shard.apply({**upsert([1], [MATRICES[0]]), "multi": {"m": {"counts": np.array([1]),
                                                                   "rows": np.zeros((1, 2), np.float32)}}})
    with pytest.raises(BadInput, match="Not existing vector name error: x"):
        shard.apply({**upsert([1], [MATRICES[0]]), "multi": {"x": multi.op_entry([MATRICES[0]], DIM)}})
    with pytest.raises(BadInput, match="NaN"):
        shard.apply(upsert([1], [mv([np.nan, 0, 0])]))
    with pytest.raises(BadInput, match="counts"):
        shard.apply({**upsert([1], [MATRICES[0]]), "multi": {"m": {"counts": np.array([3]),
                                                                   "rows": np.zeros((1, DIM), np.float32)}}})
    with pytest.raises(MultiVectorError, match="multi vector must not be empty"):
        shard.search_batch([SearchRequest(NearestQuery(np.zeros((0, DIM), np.float32)), using="m")])
    assert nearest(shard, [[1, 1, 0]]) == [(1, 1.0)]
    assert shard.seq == 1


def test_recommend_discover_context_by_maxsim(tmp_path):
    shard = LocalShard(tmp_path, config(), background_indexing=False)
    shard.apply(upsert([1, 2, 3, 4], MATRICES))
    pos, neg = mv([1, 0, 0]), mv([0, 0, 1])
    stored = {1: MATRICES[0], 2: MATRICES[1], 4: MATRICES[3]}

    def run(query):
        (hits,) = shard.search_batch([SearchRequest(query, using="m")])
        return {h.id: h.score for h in hits}

    got = run(RecommendQuery((pos,), (neg,), "sum_scores"))
    assert got == pytest.approx({i: naive(pos, m) - naive(neg, m) for i, m in stored.items()})
    ids = sorted(stored)

    def sims(example):
        return np.array([naive(example, stored[i]) for i in ids], dtype=np.float32)

    def expect(scores):
        return dict(zip(ids, np.asarray(scores).tolist()))

    got = run(ContextQuery((ContextPair(pos, neg),)))
    assert got == pytest.approx(expect(distances.context_score([(sims(pos), sims(neg))])))
    got = run(DiscoverQuery(neg, (ContextPair(pos, neg),)))
    assert got == pytest.approx(expect(distances.discovery_score(sims(neg), [(sims(pos), sims(neg))])))
    got = run(RecommendQuery((pos,), (neg,), "best_score"))
    assert got == pytest.approx(expect(distances.best_score([sims(pos)], [sims(neg)])))
    assert max(got, key=got.get) == 4 and got[2] < 0  # point 2 is nearer the negative


@pytest.mark.parametrize("via", ["log", "snapshot", "export"])
def test_survives_restart(tmp_path, via):
    cfg = config(Distance.COSINE, "float16")
    shard = LocalShard(tmp_path / "a", cfg, background_indexing=False)
    shard.apply(upsert([1, 2, 3, 4], MATRICES))
    shard.apply({"type": "delete_vectors", "ids": [2], "names": ["m"]})
    q = [[1, 0.5, 0], [0, 0, 1]]
    want = nearest(shard, q)
    stored = shard.retrieve([4], None, ("m",))[0].vector["m"].tolist()
    if via == "export":
        shard.export(str(tmp_path / "copy"))
        other = LocalShard(tmp_path / "b", cfg, background_indexing=False)
        other.restore(str(tmp_path / "copy"))
        shard.close()
        shard = other
    else:
        shard.close(take_snapshot=via == "snapshot")
        shard = LocalShard(tmp_path / "a", cfg, background_indexing=False)
    assert nearest(shard, q) == want and [h for h, _ in want] == [4, 1]
    assert shard.retrieve([4], None, ("m",))[0].vector["m"].tolist() == stored
    assert shard.count({"must": [{"has_vector": "m"}]}) == 2
    shard.close()


def test_snapshot_without_multivectors_loads(tmp_path):
    """A snapshot from before multivectors (no "multi" in its meta.json) loads, empty."""
    shard = LocalShard(tmp_path, config(), background_indexing=False)
    shard.apply(upsert([1], [MATRICES[0]]))
    shard.close(take_snapshot=True)
    import orjson

    meta_file = tmp_path / "snapshot" / "meta.json"
    meta = orjson.loads(meta_file.read_bytes())
    assert meta["multi"] == {"m": 0}
    del meta["multi"]
    meta_file.write_bytes(orjson.dumps(meta))
    (tmp_path / "snapshot" / "multi-0.npz").unlink()
    shard = LocalShard(tmp_path, config(), background_indexing=False)
    assert shard.count(None) == 1 and shard.count({"must": [{"has_vector": "m"}]}) == 0
    shard.close()


def test_export_refuses_other_multivector_names(tmp_path):
    shard = LocalShard(tmp_path / "a", config(), background_indexing=False)
    shard.apply(upsert([1], [MATRICES[0]]))
    shard.export(str(tmp_path / "copy"))
    other = LocalShard(tmp_path / "b", ShardConfig(vectors={"d": VectorParams(DIM, Distance.DOT)}),
                       background_indexing=False)
    with pytest.raises(BadInput, match="multivectors"):
        other.restore(str(tmp_path / "copy"))


def test_op_with_multivectors_round_trips_the_codec():
    op = upsert([1, 2, 3, 4], MATRICES)
    back = codec.decode(codec.encode(op))
    rows = multi.op_rows(back["multi"]["m"])
    assert rows[2] is None
    assert [r.tolist() for r in rows if r is not None] == [m.tolist() for m in MATRICES if m is not None]
    old = {k: v for k, v in op.items() if k != "multi"}  # a record logged before multivectors
    assert "multi" not in codec.decode(codec.encode(old))


def test_config_round_trips_json():
    cfg = config(Distance.EUCLID, "uint8")
    assert ShardConfig.from_json(cfg.to_json()) == cfg
    assert cfg.to_json()["multi"]["m"] == {"size": DIM, "distance": "Euclid", "datatype": "uint8",
                                           "multivector_config": MAXSIM}
    assert "multi" not in ShardConfig(vectors={"d": VectorParams(DIM, Distance.DOT)}).to_json()


def test_digest_covers_multivectors(tmp_path):
    a = LocalShard(tmp_path / "a", config(), background_indexing=False)
    b = LocalShard(tmp_path / "b", config(), background_indexing=False)
    a.apply(upsert([1, 2, 3, 4], MATRICES))
    b.apply(upsert([4, 3], MATRICES[:1:-1]))  # the same points, written in another order
    b.apply(upsert([1, 2], MATRICES[:2]))
    assert a.digest() == b.digest()
    b.apply({"type": "update_vectors", "ids": [2], "vectors": {}, "multi": {"m": multi.op_entry([mv([0, 0, 2])], DIM)}})
    assert a.digest() != b.digest()
    b.apply({"type": "update_vectors", "ids": [2], "vectors": {}, "multi": {"m": multi.op_entry([mv([0, 0, 1])], DIM)}})
    assert a.digest() == b.digest()
    b.apply({"type": "update_vectors", "ids": [2], "vectors": {},
             "multi": {"m": multi.op_entry([mv([0, 0, 1], [0, 0, 1])], DIM)}})
    assert a.digest() != b.digest()  # a repeated row is another multivector
    b.apply({"type": "update_vectors", "ids": [2], "vectors": {}, "multi": {"m": multi.op_entry([mv([0, 0, 1])], DIM)}})
    b.apply({"type": "delete_vectors", "ids": [4], "names": ["m"]})
    assert a.digest() != b.digest()
