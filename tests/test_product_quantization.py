"""Product quantization on real shards (``shard.product``: faiss's HNSW over PQ codes):
the graph is built for Cosine, Dot and Euclid, rescoring finds the exact neighbours,
deletes and updates reach it, repeated updates do not grow it (compaction keeps every
code and every answer), it survives a snapshot, is rebuilt under another compression,
and works on shards smaller than its 256 centroids.

Speed and memory are the benchmark's (bench/quantized.py); here only behaviour.
"""

from __future__ import annotations

import threading

import numpy as np
import orjson
import pytest

from shard import graphs
from shard.local_shard import LocalShard
from shard.product import ProductIndex, sub_vectors
from shard.types import Distance, HnswConfig, Quantization, QuantizationParams
from tests.test_quantization import DIM, N, config, data, filled, near, recall, reopened, search, search_one_score

X16 = Quantization("product", compression="x16", always_ram=True)
RESCORED = QuantizationParams(rescore=True, oversampling=4.0)


def settle(shard: LocalShard) -> None:
    while shard.index_step():
        pass


def test_the_compression_gives_the_sub_vectors():
    """``dim * 4 / ratio`` one-byte codes, lowered to a divisor of the dimension."""
    assert [sub_vectors(384, c) for c in ("x4", "x8", "x16", "x32", "x64")] == [384, 192, 96, 48, 24]
    assert sub_vectors(64, "x16") == 16 and sub_vectors(100, "x16") == 25 and sub_vectors(10, "x32") == 1
    assert sub_vectors(90, "x16") == 18  # 22 does not divide 90
    with pytest.raises(ValueError, match="compression"):
        sub_vectors(64, None)


@pytest.mark.parametrize("distance", [Distance.COSINE, Distance.DOT, Distance.EUCLID])
def test_a_product_graph_is_built_and_rescoring_gives_the_exact_neighbours(tmp_path, distance):
    rows = data()
    queries = near(rows, 20)
    shard = filled(tmp_path / "s", config(X16, distance), rows)
    scale = 1.0 if distance is Distance.COSINE else float(np.mean(np.sum(rows**2, axis=1)))
    try:
        graph = shard.graphs[""]
        assert isinstance(graph, ProductIndex) and graph.kind == "product" and len(graph) == N
        assert graph.sub_vectors == DIM * 4 // 16
        for q in queries[:5]:
            ids, scores = search(shard, q, RESCORED)  # rescored: the stored vectors' scores, in order
            assert np.allclose(scores, [search_one_score(shard, q, i) for i in ids], atol=1e-5)
            assert list(scores) == sorted(scores, reverse=distance is not Distance.EUCLID)
            ids, scores = search(shard, q)  # Qdrant's default for product: the codes' approximate scores
            exact = np.array([search_one_score(shard, q, i) for i in ids])
            assert not np.allclose(scores, exact, atol=1e-5)
            if distance is Distance.EUCLID:  # shown as distances: compare the squares, as scored
                scores, exact = scores**2, exact**2
            assert np.abs(scores - exact).max() < 0.1 * scale  # within a tenth of a squared norm
        # 16 bytes a vector of 64 dimensions: the codes rank neighbours in a cluster
        # roughly; oversampled and rescored, they are found.
        assert recall(shard, rows, queries, RESCORED) >= 0.9
    finally:
        shard.close()


def test_deletes_and_updates_reach_a_product_graph(tmp_path):
    rows = data()
    shard = filled(tmp_path / "s", config(X16), rows)
    try:
        shard.apply({"type": "delete_points", "ids": list(range(0, 100))})
        shard.apply({"type": "upsert", "ids": [500], "vectors": {"": -rows[500:501]}, "payloads": [{}]})
        settle(shard)
        graph = shard.graphs[""]
        assert len(graph) == N - 100 and 500 in set(graph.labels().tolist())
        for q in rows[:20]:  # each deleted point's own vector: never answered
            assert not set(search(shard, q, RESCORED)[0]) & set(range(100))
            assert not set(search(shard, q)[0]) & set(range(100))
        ids, scores = search(shard, -rows[500], RESCORED)
        assert ids[0] == 500 and scores[0] == pytest.approx(1.0, abs=1e-5)
        assert search(shard, -rows[500])[0][0] == 500  # not rescored: the new code is the nearest too
    finally:
        shard.close()


def test_repeated_updates_do_not_grow_the_graph(tmp_path):
    """Every update kills an entry faiss cannot remove; once the dead outnumber the
    live the graph is rebuilt from the live codes, so it stays within about twice its
    points, and the answers are those of the same points before."""
    rows = data()
    queries = near(rows, 10)
    shard = filled(tmp_path / "s", config(X16), rows)
    try:
        before = [search(shard, q, RESCORED) for q in queries]
        held = []
        for _ in range(6):
            for lo in range(0, N, 1000):  # the same vectors again: every entry replaced
                ids = list(range(lo, lo + 1000))
                shard.apply({"type": "upsert", "ids": ids, "vectors": {"": rows[ids]}, "payloads": [{}] * 1000})
            settle(shard)
            held.append(shard.graphs[""].held)
        assert max(held) <= 2 * N and min(held) < max(held)  # compacted: never more dead than live
        assert len(shard.graphs[""]) == N
        after = [search(shard, q, RESCORED) for q in queries]
        same = sum(len(set(b[0]) & set(a[0])) for b, a in zip(before, after))
        assert same >= 0.95 * 10 * len(queries)  # a rebuilt graph, walked differently: nearly the same
    finally:
        shard.close()


def unit_graph(distance: Distance = Distance.COSINE, sample: np.ndarray | None = None) -> ProductIndex:
    return ProductIndex(DIM, distance, HnswConfig(), X16, threads=2, sample=sample)


def exhaustive(graph: ProductIndex, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The graph's answers with ``ef`` past its size: every code is scored, so the
    answers depend on the codes alone, not on the graph's links."""
    return graph.search(queries, 10, ef=2 * graph.held)


def test_compaction_keeps_every_code_and_every_answer():
    """Decoded to its centroids and encoded again, a code is itself: the rebuilt
    index scores every point as the old one did."""
    rows = data()[:400]
    queries = near(rows, 5)
    graph = unit_graph(sample=rows)
    labels = np.arange(400)
    graph.add(labels, rows)
    codes = graph.codes(labels)
    want = exhaustive(graph, queries)
    graph.add(labels[:300], rows[:300])  # 300 dead, 400 live: kept
    assert graph.held == 700 and len(graph) == 400
    assert np.array_equal(graph.codes(labels), codes)
    graph.remove(labels[300:])  # 400 dead, 300 live: rebuilt from the live codes
    assert graph.held == 300 and len(graph) == 300
    graph.add(labels[300:], rows[300:])
    assert graph.held == 400
    assert np.array_equal(graph.codes(labels), codes)
    got = exhaustive(graph, queries)
    assert np.array_equal(np.sort(got[1], axis=1), np.sort(want[1], axis=1))
    for a, b in zip(got[0], want[0]):
        assert set(a.tolist()) == set(b.tolist())


def test_a_saved_graph_loads_only_the_labels_it_is_told(tmp_path):
    rows = data()[:400]
    graph = unit_graph(Distance.EUCLID, rows)
    graph.add(np.arange(400), rows)
    graph.add(np.arange(10), rows[10:20])  # replaced: dead entries are saved too
    path = tmp_path / "graph.bin"
    assert graph.save(path, threading.RLock(), lambda: "read") == "read"
    assert path.exists()  # the name it was given: np.savez adds ".npz" to a bare name
    keep = np.arange(5, 400)
    loaded = ProductIndex.load(path, DIM, Distance.EUCLID, HnswConfig(), X16, keep, threads=2)
    assert len(loaded) == len(keep) and set(loaded.labels().tolist()) == set(keep.tolist())
    assert np.array_equal(loaded.codes(keep), graph.codes(keep))
    labels, sims = loaded.search(rows[:5], 20, ef=1000)
    assert not set(labels.ravel().tolist()) & set(range(5))
    assert np.all(sims[labels >= 0] <= 0)  # Euclid: negated squared distances
    loaded.add(np.arange(5), -rows[:5])  # adds after a load: codebooks and code table there
    assert loaded.search(-rows[:1], 1, ef=64)[0][0, 0] == 0


def test_a_product_graph_survives_a_snapshot_and_a_reopen(tmp_path):
    rows = data()
    queries = near(rows, 10)
    cfg = config(X16, Distance.DOT, per_vector=True)
    shard = filled(tmp_path / "s", cfg, rows)
    shard.apply({"type": "upsert", "ids": [7], "vectors": {"": rows[8:9]}, "payloads": [{}]})  # a dead entry
    settle(shard)
    before = [search(shard, q) for q in queries]
    shard = reopened(shard, cfg)
    try:
        graph = shard.graphs[""]
        assert isinstance(graph, ProductIndex) and graph.quantization == X16 and len(graph) == N
        for q, (ids, scores) in zip(queries, before):
            got_ids, got_scores = search(shard, q)
            assert got_ids == ids and np.array_equal(got_scores, scores)
    finally:
        shard.close()


def test_a_graph_saved_under_x16_is_rebuilt_under_x32(tmp_path):
    rows = data()
    q = near(rows, 1)[0]
    shard = reopened(filled(tmp_path / "s", config(X16), rows), config(X16))
    try:
        meta = orjson.loads((tmp_path / "s" / "snapshot" / "meta.json").read_bytes())
        about = meta["graphs"][""]
        assert about == {"kind": "product", "quantization": X16.to_json(), "scale": None}
        graph_file = tmp_path / "s" / "snapshot" / "hnsw-0.bin"
        x32 = config(Quantization("product", compression="x32"))
        assert graphs.load(graph_file, x32, "", about, np.arange(N)) is None
        assert graphs.load(graph_file, config(X16), "", about, np.arange(N)).sub_vectors == 16
        assert shard.graphs[""].sub_vectors == 16

        shard.apply({"type": "configure", "settings": {"": {"quantization": {"product": {"compression": "x32"}}}}})
        assert shard.graphs[""] is None  # dropped: searched exactly meanwhile
        assert search(shard, q)[0] == search(shard, q, exact=True)[0]
        settle(shard)
        assert shard.graphs[""].kind == "product" and shard.graphs[""].sub_vectors == 8
        shard = reopened(shard, config(X16))  # the snapshot's setting wins
        assert shard.graphs[""].sub_vectors == 8 and len(shard.graphs[""]) == N
    finally:
        shard.close()


def test_a_shard_smaller_than_the_centroids(tmp_path):
    """100 points train 64 centroids a sub-vector (6 bits); the search still finds
    every point's own vector first."""
    rows = data()[:100]
    shard = filled(tmp_path / "s", config(X16), rows)
    try:
        graph = shard.graphs[""]
        assert isinstance(graph, ProductIndex) and len(graph) == 100
        for i in range(0, 100, 10):
            ids, scores = search(shard, rows[i], RESCORED)
            assert ids[0] == i and scores[0] == pytest.approx(1.0, abs=1e-5)
    finally:
        shard.close()


def test_one_training_row_is_enough():
    rows = data()[:50]
    graph = unit_graph(Distance.DOT, rows[:1])
    graph.add(np.arange(50), rows)
    labels, sims = graph.search(rows[:3], 5, ef=64)
    assert labels.shape == (3, 5) and (labels >= 0).all() and np.isfinite(sims).all()
