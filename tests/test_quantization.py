"""Quantized graphs on real shards (``shard.scalar_graph``, ``shard.quantized``,
``shard.graphs``): scalar int8 and binary graphs are built instead of hnswlib's, answer with approximate scores,
rescore with the stored vectors when asked (by default for binary), oversample,
survive a snapshot and a reopen, and are rebuilt when the quantization changes.
Product quantization's graph (``shard.product``): tests/test_product_quantization.py;
the int8 graph's own properties: tests/test_scalar_graph.py.

Speed and memory are the benchmark's (bench/quantized.py); here only behaviour.
"""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from shard.local_shard import LocalShard
from shard.quantized import QuantizedIndex
from shard.scalar_graph import ScalarIndex
from shard.types import (
    Distance,
    NearestQuery,
    OptimizersConfig,
    Quantization,
    QuantizationParams,
    SearchRequest,
    ShardConfig,
    VectorParams,
)

DIM, N = 64, 3000


def data(seed: int = 0) -> np.ndarray:
    """Clustered points, as real embeddings are: neighbours are not ties."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((40, DIM))
    return (centres[rng.integers(0, 40, N)] + 0.35 * rng.standard_normal((N, DIM))).astype(np.float32)


def near(rows: np.ndarray, count: int, seed: int = 1) -> np.ndarray:
    """Queries close to some of the points."""
    rng = np.random.default_rng(seed)
    return (rows[rng.choice(len(rows), count)] + 0.3 * rng.standard_normal((count, DIM))).astype(np.float32)


def config(quantization: Quantization | None, distance=Distance.COSINE, per_vector: bool = False) -> ShardConfig:
    params = VectorParams(DIM, distance, quantization=quantization if per_vector else None)
    return ShardConfig(vectors={"": params}, optimizers=OptimizersConfig(indexing_threshold=10),
                       quantization=None if per_vector else quantization)


def filled(path, cfg: ShardConfig, rows: np.ndarray) -> LocalShard:
    shard = LocalShard(path, cfg, background_indexing=False)
    for lo in range(0, len(rows), 1000):
        ids = list(range(lo, min(lo + 1000, len(rows))))
        shard.apply({"type": "upsert", "ids": ids, "vectors": {"": rows[ids]}, "payloads": [{}] * len(ids)})
    while shard.index_step():
        pass
    return shard


def reopened(shard: LocalShard, cfg: ShardConfig) -> LocalShard:
    """``shard`` snapshotted, closed and opened again under ``cfg``."""
    shard.snapshot()
    shard.close()
    return LocalShard(shard.path, cfg, background_indexing=False)


def search(shard: LocalShard, q: np.ndarray, params: QuantizationParams | None = None, exact: bool = False,
           limit: int = 10):
    hits = shard.search_batch([SearchRequest(NearestQuery(q), limit=limit, hnsw_ef=128, exact=exact,
                                             quantization=params)])[0]
    return [h.id for h in hits], np.array([h.score for h in hits])


def recall(shard: LocalShard, rows: np.ndarray, queries: np.ndarray, params) -> float:
    got = 0
    for q in queries:
        want, _ = search(shard, q, exact=True)
        ids, _ = search(shard, q, params)
        got += len(set(ids) & set(want))
    return got / (10 * len(queries))


@pytest.mark.parametrize("kind", ["scalar", "binary"])
@pytest.mark.parametrize("distance", [Distance.COSINE, Distance.DOT, Distance.EUCLID])
def test_a_quantized_graph_is_built_and_rescoring_gives_the_stored_vectors_scores(tmp_path, kind, distance):
    rows = data()
    queries = near(rows, 20)
    shard = filled(tmp_path / "s", config(Quantization(kind, quantile=0.99), distance), rows)
    try:
        graph = shard.graphs[""]
        assert isinstance(graph, ScalarIndex if kind == "scalar" else QuantizedIndex)
        assert graph.kind == kind and len(graph) == N
        # One bit per dimension keeps less of 64 dimensions than of Qdrant's usual
        # hundreds: binary is asked for more candidates, and held to less.
        rescored = QuantizationParams(rescore=True, oversampling=3.0 if kind == "scalar" else 10.0)
        for q in queries[:5]:
            ids, scores = search(shard, q, rescored)
            exact_ids, exact_scores = search(shard, q, exact=True)
            # Rescored: each hit's score is its exact one, in exact order.
            assert np.allclose(scores, [exact_scores[exact_ids.index(i)] if i in exact_ids else
                                        search_one_score(shard, q, i) for i in ids], atol=1e-5)
            assert list(scores) == sorted(scores, reverse=distance is not Distance.EUCLID)
        assert recall(shard, rows, queries, rescored) >= (0.95 if kind == "scalar" else 0.85)
    finally:
        shard.close()


def search_one_score(shard: LocalShard, q: np.ndarray, point: int) -> float:
    ids, scores = search(shard, q, exact=True, limit=N)
    return float(scores[ids.index(point)])


def test_scalar_scores_are_approximate_unless_rescored_and_binary_rescores_by_default(tmp_path):
    rows = data()
    q = near(rows, 1)[0]
    scalar = filled(tmp_path / "scalar", config(Quantization("scalar")), rows)
    binary = filled(tmp_path / "binary", config(Quantization("binary")), rows)
    try:
        exact_ids, exact_scores = search(scalar, q, exact=True)
        ids, scores = search(scalar, q)  # Qdrant's default for scalar: no rescoring
        assert not np.array_equal(scores, exact_scores[: len(scores)])
        assert np.allclose(scores, [search_one_score(scalar, q, i) for i in ids], atol=0.02)
        ids, scores = search(scalar, q, QuantizationParams(ignore=True))  # the stored vectors' scores
        assert np.allclose(scores, [search_one_score(scalar, q, i) for i in ids], atol=1e-5)
        ids, scores = search(binary, q)  # binary: rescored by default
        assert np.allclose(scores, [search_one_score(binary, q, i) for i in ids], atol=1e-5)
        ids, scores = search(binary, q, QuantizationParams(rescore=False))
        assert not np.allclose(scores, [search_one_score(binary, q, i) for i in ids], atol=1e-3)
    finally:
        scalar.close()
        binary.close()


def test_oversampling_asks_the_graph_for_more_and_recall_does_not_drop(tmp_path):
    rows = data()
    queries = near(rows, 30)
    shard = filled(tmp_path / "s", config(Quantization("binary")), rows)
    try:
        plain = recall(shard, rows, queries, QuantizationParams(rescore=True))
        more = recall(shard, rows, queries, QuantizationParams(rescore=True, oversampling=10.0))
        assert more > plain and more >= 0.85
    finally:
        shard.close()


def test_a_vectors_own_quantization_wins_and_the_graph_survives_a_reopen(tmp_path):
    rows = data()
    q = near(rows, 1)[0]
    cfg = config(Quantization("scalar", quantile=0.99), per_vector=True)
    shard = filled(tmp_path / "s", cfg, rows)
    scale = shard.graphs[""].scale
    before = search(shard, q)
    shard = reopened(shard, cfg)
    try:
        graph = shard.graphs[""]
        assert isinstance(graph, ScalarIndex) and graph.scale == scale and len(graph) == N
        assert search(shard, q)[0] == before[0] and np.allclose(search(shard, q)[1], before[1])
    finally:
        shard.close()


def test_a_graph_from_before_quantized_graphs_is_rebuilt_under_a_quantized_config(tmp_path):
    """Snapshots written before quantization was applied hold hnswlib graphs and say
    nothing of quantization: a collection configured with one (accepted, then) gets
    its quantized graph rebuilt."""
    rows = data()
    q = near(rows, 1)[0]
    shard = filled(tmp_path / "s", config(None), rows)
    shard.snapshot()
    shard.close()
    meta_file = next((tmp_path / "s").glob("snapshot/meta.json"))
    meta = orjson.loads(meta_file.read_bytes())
    del meta["settings"], meta["graphs"]
    meta_file.write_bytes(orjson.dumps(meta))
    product = Quantization("product", compression="x16")
    for quantization, kind in [(Quantization("binary"), "binary"), (product, "product")]:
        shard = LocalShard(tmp_path / "s", config(quantization), background_indexing=False)
        try:
            assert shard.graphs[""] is None  # not loaded: every vector is pending, and searched exactly
            assert search(shard, q)[0] == search(shard, q, exact=True)[0]
            while shard.index_step():
                pass
            assert shard.graphs[""].kind == kind and len(shard.graphs[""]) == N
        finally:
            shard.close()


def test_deletes_and_updates_reach_a_quantized_graph(tmp_path):
    rows = data()
    shard = filled(tmp_path / "s", config(Quantization("scalar")), rows)
    try:
        shard.apply({"type": "delete_points", "ids": list(range(0, 100))})
        shard.apply({"type": "upsert", "ids": [500], "vectors": {"": -rows[500:501]}, "payloads": [{}]})
        while shard.index_step():
            pass
        assert len(shard.graphs[""]) == N - 100
        for q in rows[:5]:
            ids, _ = search(shard, q, QuantizationParams(rescore=True, oversampling=2.0))
            assert not set(ids) & set(range(100))
        ids, scores = search(shard, -rows[500], QuantizationParams(rescore=True))
        assert ids[0] == 500 and scores[0] == pytest.approx(1.0, abs=1e-5)
    finally:
        shard.close()


def test_a_configure_op_changes_the_quantization_through_the_log(tmp_path):
    """A PATCH of a vector's quantization reaches a shard as a ``configure`` op:
    logged and replicated like a write, so a restart, from the log or from a
    snapshot, keeps it whatever the config the shard is started with (on_disk, which
    the op may carry too, moves the rows: tests/test_vectors_on_disk.py)."""
    rows = data()
    q = near(rows, 1)[0]
    shard = filled(tmp_path / "s", config(None), rows)
    assert shard.graphs[""].kind == "hnsw"
    shard.apply({"type": "configure", "settings": {"": {"quantization": {"scalar": {"type": "int8", "quantile": 0.99}},
                                                        "on_disk": True}}})
    assert shard.graphs[""] is None  # dropped: searched exactly meanwhile
    assert search(shard, q)[0] == search(shard, q, exact=True)[0]
    while shard.index_step():
        pass
    assert shard.graphs[""].kind == "scalar" and shard.graphs[""].quantization.quantile == 0.99
    assert shard.vectors[""].file is not None  # on_disk: moved into a map file
    shard.close()
    for snapshot_first in (False, True):  # replayed from the log, then loaded from a snapshot
        shard = LocalShard(tmp_path / "s", config(None), background_indexing=False)
        try:
            assert shard.config.quantization_for("") == Quantization("scalar", quantile=0.99)
            while shard.index_step():
                pass
            assert shard.graphs[""].kind == "scalar"
            if not snapshot_first:
                shard.snapshot()
        finally:
            shard.close()
    shard = LocalShard(tmp_path / "s", config(None), background_indexing=False)
    try:
        shard.apply({"type": "configure", "settings": {"": {"quantization": None, "on_disk": False}}})
        while shard.index_step():
            pass
        assert shard.graphs[""].kind == "hnsw" and shard.config.quantization_for("") is None
        assert shard.vectors[""].file is None
        assert search(shard, q)[0] == search(shard, q, exact=True)[0]
        with pytest.raises(Exception, match="Not existing vector name"):
            shard.apply({"type": "configure", "settings": {"other": {"quantization": None}}})
    finally:
        shard.close()
