"""Quantized graphs on real shards (``shard.scalar_graph``, ``shard.quantized``,
``shard.graphs``): scalar int8 and binary graphs are built instead of hnswlib's, answer with approximate scores,
rescore with the stored vectors when asked (by default for binary), oversample,
survive a snapshot and a reopen, and are rebuilt when the quantization changes.
Product quantization's graph (``shard.product``): tests/test_product_quantization.py;
the int8 graph's own properties: tests/test_scalar_graph.py.

Speed and memory are the benchmark's (bench/quantized.py); here only behaviour.
"""

from __future__ import annotations

import threading

import numpy as np
import orjson
import pytest

from shard.local_shard import LocalShard
from shard.quantized import QuantizedIndex, element_stats
from shard.scalar_graph import ScalarIndex
from shard.types import (
    Distance,
    HnswConfig,
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


# ---------------------------------------------------------------------------
# Binary encodings (Qdrant 1.15's ``encoding`` and ``query_encoding``).
# ---------------------------------------------------------------------------


def qdrant_two_bits(value: float, mean: float | None, std: float | None) -> tuple[bool, bool]:
    """Qdrant's ``encode_two_bits_value``, one value at a time."""
    if mean is None:
        return (value > 0, value > 0)
    if std < np.finfo(np.float32).eps:
        return (value > 0, False)
    z = (value - mean) / std
    if z <= -2.0 / 3.0:
        return (False, False)
    return (True, False) if z < 2.0 / 3.0 else (True, True)


def qdrant_bits(vector, encoding: str, stats) -> list[bool]:
    """Qdrant's ``encode_vector``: bit i, then the second bits at dim + i (two bits)
    or OR-ed at dim + i // 2 (one and a half)."""
    dim = len(vector)
    if encoding == "one_bit":
        return [v > 0 for v in vector]
    size = 2 * dim if encoding == "two_bits" else dim + (dim + 1) // 2
    bits = [False] * size
    for i, v in enumerate(vector):
        first, second = qdrant_two_bits(float(v), *((float(stats[0][i]), float(stats[1][i])) if stats else (None, None)))
        bits[i] = first
        j = dim + i if encoding == "two_bits" else dim + i // 2
        bits[j] = bits[j] or second
    return bits


def qdrant_scalar_distance(query, stored_bits: list[bool], encoding: str, query_bits: int) -> float:
    """Qdrant's ``xor_popcnt_scalar`` of a query held in ``query_bits`` bits against
    stored bits, divided by the top level, bit by bit: each bit b of the query's
    level XOR the stored bit, weighted 2**b."""
    query = [float(x) for x in query]
    dim = len(query)
    if encoding == "two_bits":
        query = query + query
    elif encoding == "one_and_half_bits":
        query = query + [max(query[i : i + 2]) for i in range(0, dim, 2)]
    top = (1 << query_bits) - 1
    reach = max(abs(np.float32(x)) for x in query)
    step = np.float32(2.0) * np.float32(reach) / np.float32(top)
    total = 0
    for value, bit in zip(query, stored_bits):
        level = int(np.floor((np.float32(value) + np.float32(reach)) / step + np.float32(0.5))) % (top + 1) \
            if step > np.finfo(np.float32).eps else 0
        total += sum((((level >> b) & 1) ^ int(bit)) << b for b in range(query_bits))
    return total / top


@pytest.mark.parametrize("encoding", ["one_bit", "two_bits", "one_and_half_bits"])
@pytest.mark.parametrize("dim", [7, 64])
def test_binary_codes_are_qdrants(encoding, dim):
    """Each encoding's bits are those of Qdrant's encoder, value by value: with the
    dimensions' statistics (one dimension without spread), and without any."""
    rng = np.random.default_rng(dim)
    vectors = rng.standard_normal((50, dim)).astype(np.float32)
    vectors[:, 0] = 0.25  # no spread: its sign, and no second bit
    params = (dim, Distance.COSINE, HnswConfig(), Quantization("binary", encoding=encoding))
    for stats in (element_stats(vectors), None):
        graph = QuantizedIndex(*params, stats=stats)
        codes = graph.code(vectors)
        assert codes.shape == (50, graph.bits)
        kept = graph.stats if encoding != "one_bit" else None
        assert [list(row) for row in codes] == [qdrant_bits(v, encoding, kept) for v in vectors]


@pytest.mark.parametrize("encoding", ["one_bit", "two_bits", "one_and_half_bits"])
@pytest.mark.parametrize("query_encoding", ["scalar4bits", "scalar8bits"])
def test_an_asymmetric_query_ranks_the_walks_hits_by_qdrants_scalar_distance(encoding, query_encoding):
    """With ``query_encoding``, the hits the walk finds come back ordered by the
    distance of the query held in 4 or 8 bits to their stored bits, Qdrant's
    ``xor_popcnt_scalar``, computed here bit by bit; the similarity is
    1 - 2 * that / dim."""
    dim = 33
    rng = np.random.default_rng(3)
    rows = rng.standard_normal((300, dim)).astype(np.float32)
    quantization = Quantization("binary", encoding=encoding, query_encoding=query_encoding)
    graph = QuantizedIndex(dim, Distance.DOT, HnswConfig(m=16, ef_construct=100), quantization,
                           stats=element_stats(rows))
    graph.add(np.arange(300), rows)
    bits = graph.code(rows)
    bits_of = {i: list(bits[i]) for i in range(300)}
    for q in rng.standard_normal((5, dim)).astype(np.float32):
        labels, sims = graph.search(q[None, :], 40, 100)
        want = [qdrant_scalar_distance(q, bits_of[int(i)], encoding, graph.query_bits) for i in labels[0]]
        assert np.allclose(sims[0], 1 - 2 * np.array(want) / dim, atol=1e-4)
        assert list(sims[0]) == sorted(sims[0], reverse=True)
        assert len(set(labels[0].tolist())) == 40


@pytest.mark.parametrize("encoding, query_encoding", [("two_bits", None), ("one_and_half_bits", "scalar8bits"),
                                                      ("one_bit", "scalar4bits")])
def test_binary_encodings_find_the_neighbours_and_survive_a_reopen(tmp_path, encoding, query_encoding):
    """A shard's binary graph in each encoding holds its bits (two a dimension, one
    and a half), finds the neighbours as one bit does or better, unrescored and
    rescored, and is loaded from a snapshot with its statistics, answering the same."""
    rows = data()
    queries = near(rows, 30)
    one_bit = filled(tmp_path / "one", config(Quantization("binary")), rows)
    cfg = config(Quantization("binary", encoding=encoding, query_encoding=query_encoding))
    shard = filled(tmp_path / "s", cfg, rows)
    try:
        graph = shard.graphs[""]
        assert graph.bits == {"one_bit": DIM, "two_bits": 2 * DIM, "one_and_half_bits": DIM + DIM // 2}[encoding]
        assert (graph.stats is None) == (encoding == "one_bit")
        unrescored = QuantizationParams(rescore=False, oversampling=1.0)
        # Two builds of the same graph differ by up to ~0.015 here (usearch's build is not
        # deterministic); two bits gain 0.02-0.04 over one at 64 dimensions. Codes that lost
        # the neighbours would fall far below.
        assert recall(shard, rows, queries, unrescored) >= recall(one_bit, rows, queries, unrescored) - 0.04
        assert recall(shard, rows, queries, QuantizationParams(rescore=True, oversampling=10.0)) >= 0.85
        before = [search(shard, q, unrescored) for q in queries[:5]]
        shard = reopened(shard, cfg)
        reloaded = shard.graphs[""]
        assert reloaded is not None and len(reloaded) == N  # loaded, not rebuilt
        if graph.stats is not None:
            assert all(np.array_equal(a, b) for a, b in zip(reloaded.stats, graph.stats))
        for q, (ids, scores) in zip(queries[:5], before):
            again = search(shard, q, unrescored)
            assert again[0] == ids and np.allclose(again[1], scores)
    finally:
        shard.close()
        one_bit.close()


def test_a_binary_graph_whose_bits_or_statistics_do_not_fit_is_rebuilt(tmp_path):
    """A snapshot's graph written in another encoding than its meta.json says (a
    two-bit collection's graph from before encodings were applied held one bit),
    or whose statistics are missing or malformed, is not loaded but built again
    from the vectors."""
    rows = data()
    q = near(rows, 1)[0]
    cfg = config(Quantization("binary", encoding="two_bits"))
    shard = filled(tmp_path / "s", cfg, rows)
    shard.snapshot()
    shard.close()
    meta_file = next((tmp_path / "s").glob("snapshot/meta.json"))
    meta = orjson.loads(meta_file.read_bytes())
    about = meta["graphs"][""]
    graph_file = tmp_path / "s" / "snapshot" / "hnsw-0.bin"  # vector 0's graph, whatever its kind
    assert graph_file.exists()
    one_bit = QuantizedIndex(DIM, Distance.COSINE, HnswConfig(), Quantization("binary"))
    one_bit.add(np.arange(N), rows)
    for change in ("bits", "no stats", "bad stats"):
        fresh = dict(about)
        if change == "bits":
            saved = graph_file.read_bytes()
            one_bit.save(graph_file, threading.RLock(), lambda: None)
        elif change == "no stats":
            del fresh["stats"]
        else:
            fresh["stats"] = {"mean": ["x"] * DIM, "stddev": [1.0] * DIM}
        meta_file.write_bytes(orjson.dumps({**meta, "graphs": {"": fresh}}))
        shard = LocalShard(tmp_path / "s", cfg, background_indexing=False)
        try:
            assert shard.graphs[""] is None  # not loaded: searched exactly meanwhile
            assert search(shard, q)[0] == search(shard, q, exact=True)[0]
            while shard.index_step():
                pass
            assert shard.graphs[""].bits == 2 * DIM and shard.graphs[""].stats is not None
        finally:
            shard.close()
        if change == "bits":
            graph_file.write_bytes(saved)
