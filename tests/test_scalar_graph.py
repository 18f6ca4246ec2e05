"""Shoal's own HNSW graph over int8 vectors (``shard.scalar_graph``, its loops in
``shard.graph_kernels``), tested against plain numpy: every score it gives is the
exact integer score of the label's latest vector, no removed label ever comes out,
a saved graph answers as before, and on clustered data it finds what brute force
finds. On real shards: tests/test_quantization.py; speed: bench/quantized.py.
"""

from __future__ import annotations

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shard import graph_kernels
from shard.local_shard import LocalShard
from shard.scalar_graph import ScalarIndex, choose_scale
from shard.types import Distance, HnswConfig, NearestQuery, OptimizersConfig, Quantization, SearchRequest, ShardConfig, VectorParams

DIM = 24
DISTANCES = [Distance.COSINE, Distance.DOT, Distance.EUCLID]


def clustered(n: int, seed: int, dim: int = DIM) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(1, n // 50), dim))
    return (centres[rng.integers(0, len(centres), n)] + 0.3 * rng.standard_normal((n, dim))).astype(np.float32)


def new_graph(distance: Distance, scale: float = 40.0, m: int = 8, dim: int = DIM) -> ScalarIndex:
    return ScalarIndex(dim, distance, HnswConfig(m=m, ef_construct=32), Quantization("scalar"), scale=scale,
                       capacity=16)


def exact_scores(graph: ScalarIndex, rows: np.ndarray, query: np.ndarray) -> np.ndarray:
    """What the graph's scores must be: the integer score of the int8 rows, over scale**2."""
    a, b = graph.encode(rows).astype(np.int64), graph.encode(query[None])[0].astype(np.int64)
    raw = -((a - b) ** 2).sum(axis=1) if graph.distance is Distance.EUCLID else a @ b
    return (raw / np.float32(graph.scale * graph.scale)).astype(np.float32)


def check_answers(graph: ScalarIndex, latest: dict[int, np.ndarray], query: np.ndarray, k: int) -> list[int]:
    """The graph's answer to ``query`` holds only live labels, once each, scored
    exactly for their latest vectors, best first, padded as every graph pads."""
    labels, scores = graph.search(query[None], k, ef=max(k, 16))
    assert labels.shape == scores.shape == (1, min(k, len(latest)))
    got = [label for label in labels[0].tolist() if label != -1]
    assert set(got) <= set(latest) and len(got) == len(set(got))
    assert (labels[0, len(got):] == -1).all() and np.isneginf(scores[0, len(got):]).all()
    if got:
        want = exact_scores(graph, np.stack([latest[label] for label in got]), query)
        assert np.allclose(scores[0, :len(got)], want, rtol=1e-6, atol=1e-6)
        assert (np.diff(scores[0, :len(got)]) <= 0).all()
    return got


operations = st.lists(st.tuples(st.sampled_from(["add", "remove"]), st.lists(st.integers(0, 60), min_size=1,
                                                                            max_size=40)), min_size=1, max_size=12)


@settings(max_examples=60, deadline=None)
@given(operations, st.sampled_from(DISTANCES), st.integers(1, 12), st.integers(0, 2**16))
def test_any_sequence_of_adds_and_removes_answers_with_exact_scores_of_live_labels(tmp_path_factory, ops, distance,
                                                                                    k, seed):
    rng = np.random.default_rng(seed)
    graph, latest = new_graph(distance), {}
    for op, labels in ops:
        if op == "add":
            rows = rng.standard_normal((len(labels), DIM)).astype(np.float32)
            graph.add(np.array(labels), rows)
            latest.update(zip(labels, rows))  # a label given twice keeps its last row
        else:
            graph.remove(np.array(labels))
            for label in labels:
                latest.pop(label, None)
        assert sorted(graph.labels().tolist()) == sorted(latest) and len(graph) == len(latest)
    queries = rng.standard_normal((3, DIM)).astype(np.float32)
    answers = [check_answers(graph, latest, q, k) for q in queries]
    # Saved and loaded: the same answers; loaded with fewer labels, the others are gone.
    path = tmp_path_factory.mktemp("graph") / "g.bin"
    graph.save(path, __import__("threading").RLock(), lambda: None)
    again = ScalarIndex.load(path, DIM, distance, graph.config, graph.quantization, graph.labels(), graph.scale)
    assert [check_answers(again, latest, q, k) for q in queries] == answers
    kept = dict(list(latest.items())[::2])
    fewer = ScalarIndex.load(path, DIM, distance, graph.config, graph.quantization, np.array(list(kept), np.int64),
                             graph.scale)
    for q in queries:
        check_answers(fewer, kept, q, k)
    # And the loaded graph goes on taking adds: new nodes, none linked to a removed one's row.
    fewer.add(np.array([1000]), queries[:1])
    assert check_answers(fewer, {**kept, 1000: queries[0]}, queries[0], 1) == [1000]


@pytest.mark.parametrize("distance", DISTANCES)
def test_on_clustered_data_it_finds_what_brute_force_finds(distance):
    rows = clustered(3000, seed=7)
    queries = rows[:50] + 0.2 * np.random.default_rng(8).standard_normal((50, DIM)).astype(np.float32)
    graph = new_graph(distance, scale=choose_scale(rows, 0.99), m=16)
    for start in range(0, len(rows), 700):  # several adds, as the background indexer makes
        graph.add(np.arange(start, min(start + 700, len(rows))), rows[start:start + 700])
    hits = 0
    for q in queries:
        want = set(np.argsort(-exact_scores(graph, rows, q), kind="stable")[:10].tolist())
        labels, _ = graph.search(q[None], 10, ef=64)
        hits += len(want & set(labels[0].tolist()))
    assert hits / (10 * len(queries)) >= 0.97


def test_updating_a_label_moves_it_and_the_graph_keeps_one_node_per_label():
    rows = clustered(500, seed=1)
    graph = new_graph(Distance.EUCLID, scale=choose_scale(rows, None))  # a row's nearest is itself
    graph.add(np.arange(500), rows)
    for _ in range(3):  # the same labels again and again, with rows far from where they were
        graph.add(np.arange(100), -rows[:100])
    assert int(graph._state[graph_kernels.COUNT]) == 500
    for label in (0, 42, 99):
        labels, _ = graph.search(-rows[label][None], 1, ef=64)
        assert labels[0, 0] == label


def test_euclid_scores_do_not_overflow_at_qdrants_largest_dimension():
    dim = 65_536
    rows = np.full((3, dim), -1.0, np.float32)
    rows[1] = 1.0
    rows[2, ::2] = 1.0
    graph = new_graph(Distance.EUCLID, scale=127.0, dim=dim)
    graph.add(np.arange(3), rows)
    query = np.ones(dim, np.float32)
    labels, scores = graph.search(query[None], 3, ef=8)
    assert labels[0].tolist() == [1, 2, 0]
    assert np.allclose(scores[0], exact_scores(graph, rows[labels[0]], query))  # 0, -2**31, -2**32


def test_a_snapshot_of_a_scalar_graph_in_another_format_is_rebuilt_not_read(tmp_path):
    """Scalar graphs were usearch's before Shoal's own: a snapshot holding one says so
    by having no ``format``, and its graph is built again from the vectors."""
    rows = clustered(1000, seed=3)
    config = ShardConfig(vectors={"": VectorParams(DIM, Distance.COSINE)}, quantization=Quantization("scalar"),
                         optimizers=OptimizersConfig(indexing_threshold=10))
    shard = LocalShard(tmp_path / "s", config, background_indexing=False)
    shard.apply({"type": "upsert", "ids": list(range(1000)), "vectors": {"": rows}, "payloads": [{}] * 1000})
    while shard.index_step():
        pass
    shard.snapshot()
    shard.close()
    shard = LocalShard(tmp_path / "s", config, background_indexing=False)
    assert isinstance(shard.graphs[""], ScalarIndex) and len(shard.graphs[""]) == 1000  # read back
    shard.close()
    meta_file = tmp_path / "s" / "snapshot" / "meta.json"
    meta = orjson.loads(meta_file.read_bytes())
    assert meta["graphs"][""]["format"] == ScalarIndex.format
    del meta["graphs"][""]["format"]
    meta_file.write_bytes(orjson.dumps(meta))
    shard = LocalShard(tmp_path / "s", config, background_indexing=False)
    try:
        assert shard.graphs[""] is None  # not read: searched exactly until built again
        query = SearchRequest(NearestQuery(rows[5]), limit=3)
        assert shard.search_batch([query])[0][0].id == 5
        while shard.index_step():
            pass
        assert isinstance(shard.graphs[""], ScalarIndex) and len(shard.graphs[""]) == 1000
        assert shard.search_batch([query])[0][0].id == 5
    finally:
        shard.close()


def test_a_saved_graph_that_does_not_hold_together_is_refused(tmp_path):
    """The loops index without bounds checks, and a snapshot may be uploaded by
    anyone: a graph file is checked whole before it is used (``shard.graphs`` then
    builds the graph again from the vectors)."""
    rows = clustered(300, seed=4)
    graph = new_graph(Distance.DOT)
    graph.add(np.arange(300), rows)
    good = tmp_path / "good.bin"
    graph.save(good, __import__("threading").RLock(), lambda: None)
    load = lambda path: ScalarIndex.load(path, DIM, Distance.DOT, graph.config, graph.quantization,  # noqa: E731
                                         np.arange(300), graph.scale)
    assert len(load(good)) == 300
    with np.load(good) as saved:
        arrays = {name: saved[name] for name in saved.files}
    for name, change in [("links0", lambda a: a.__setitem__((5, 0), 10_000)),
                         ("count0", lambda a: a.__setitem__(7, 999)),
                         ("links_up", lambda a: a.__setitem__((0, 0, 0), -4)),
                         ("slot", lambda a: a.__setitem__(np.flatnonzero(a >= 0)[0], 10_000)),
                         ("state", lambda a: a.__setitem__(graph_kernels.ENTRY, 301))]:
        bad = {key: value.copy() for key, value in arrays.items()}
        change(bad[name])
        path = tmp_path / f"bad-{name}.bin"
        with open(path, "wb") as file:
            np.savez(file, **bad)
        with pytest.raises(ValueError):
            load(path)
    (tmp_path / "cut.bin").write_bytes(good.read_bytes()[:1000])
    with pytest.raises(ValueError):
        load(tmp_path / "cut.bin")
