"""LocalShard on real files: writes, exact and graph search, recovery."""

import dataclasses
import os
import threading
import time

import numpy as np
import pytest

from shard import distances, hnsw, snapshot
from shard.local_shard import LocalShard
from shard.types import (
    BadInput,
    ContextPair,
    ContextQuery,
    DiscoverQuery,
    Distance,
    HnswConfig,
    NearestQuery,
    OptimizersConfig,
    PayloadSelector,
    PointNotFound,
    RecommendQuery,
    SearchRequest,
    ShardConfig,
    VectorParams,
)

DIM = 16


def config(distance=Distance.COSINE, indexing_threshold=20000, names=("",)):
    return ShardConfig(
        vectors={n: VectorParams(DIM, distance) for n in names},
        optimizers=OptimizersConfig(indexing_threshold=indexing_threshold),
    )


def upsert(ids, vectors, payloads=None, name=""):
    return {"type": "upsert", "ids": list(ids), "vectors": {name: np.asarray(vectors, dtype=np.float32)}, "payloads": payloads}


def brute_force(data, q, distance, k):
    v = distances.preprocess(data, distance)
    sims = distances.similarity(distances.preprocess(q, distance), v, distance)
    return list(np.argsort(-sims, kind="stable")[:k])


@pytest.fixture
def rng():
    return np.random.default_rng(7)


@pytest.mark.parametrize("distance", list(Distance))
def test_exact_search_matches_brute_force(tmp_path, rng, distance):
    shard = LocalShard(tmp_path, config(distance), background_indexing=False)
    data = rng.normal(size=(300, DIM)).astype(np.float32)
    shard.apply(upsert(range(300), data))
    q = rng.normal(size=DIM).astype(np.float32)
    (hits,) = shard.search_batch([SearchRequest(NearestQuery(q), limit=10)])
    assert [h.id for h in hits] == brute_force(data, q, distance, 10)
    if distance is Distance.EUCLID:
        assert hits[0].score == pytest.approx(float(np.linalg.norm(data[hits[0].id] - q)), rel=1e-4)
    shard.close()


def test_graph_search_recall_and_pending_points(tmp_path, rng):
    # indexing_threshold 1 KB: the graph is built even for a small shard.
    shard = LocalShard(tmp_path, config(indexing_threshold=1), background_indexing=False)
    data = rng.normal(size=(3000, DIM)).astype(np.float32)
    shard.apply(upsert(range(3000), data))
    assert shard.info().pending_index == 3000
    assert shard.wait_indexed()
    assert shard.info().indexed_vectors_count == 3000
    # Points written after the build are searchable before they are indexed.
    extra = rng.normal(size=(50, DIM)).astype(np.float32)
    shard.apply(upsert(range(3000, 3050), extra))
    assert shard.info().pending_index == 50
    all_data = np.concatenate([data, extra])
    queries = rng.normal(size=(50, DIM)).astype(np.float32)
    hit = 0
    for q in queries:
        (got,) = shard.search_batch([SearchRequest(NearestQuery(q), limit=10, hnsw_ef=64)])
        hit += len({h.id for h in got} & set(brute_force(all_data, q, Distance.COSINE, 10)))
    assert hit / (10 * len(queries)) >= 0.95
    (own,) = shard.search_batch([SearchRequest(NearestQuery(extra[0]), limit=1)])
    assert own[0].id == 3000
    shard.close()


def test_filtered_graph_search_keeps_recall(tmp_path, rng):
    shard = LocalShard(tmp_path, config(indexing_threshold=1), background_indexing=False)
    data = rng.normal(size=(4000, DIM)).astype(np.float32)
    payloads = [{"group": int(i % 10)} for i in range(4000)]
    shard.apply(upsert(range(4000), data, payloads))
    shard.apply({"type": "create_index", "field": "group", "schema": "integer"})
    shard.wait_indexed()
    flt = {"must": [{"key": "group", "match": {"value": 3}}]}
    allowed = np.array([i % 10 == 3 for i in range(4000)])
    hit = 0
    for q in rng.normal(size=(30, DIM)).astype(np.float32):
        (got,) = shard.search_batch([SearchRequest(NearestQuery(q), filter=flt, limit=10)])
        assert all(h.id % 10 == 3 for h in got)
        truth = np.flatnonzero(allowed)[brute_force(data[allowed], q, Distance.COSINE, 10)]
        hit += len({h.id for h in got} & set(truth.tolist()))
    assert hit / 300 >= 0.95
    shard.close()


def test_upsert_replaces_delete_removes_and_offsets_are_reused(tmp_path, rng):
    shard = LocalShard(tmp_path, config(), background_indexing=False)
    data = rng.normal(size=(10, DIM)).astype(np.float32)
    shard.apply(upsert(range(10), data, [{"n": i} for i in range(10)]))
    shard.apply({"type": "delete_points", "ids": [3, 4]})
    assert shard.count(None) == 8
    shard.apply(upsert(["6f1b5d1e-5d1a-4c5e-9a5e-0e9c3b1a2b3c"], data[:1], [{"n": "uuid"}]))
    assert shard.points.size == 10  # the freed offset was reused
    recs = shard.retrieve([3, 5, "6f1b5d1e-5d1a-4c5e-9a5e-0e9c3b1a2b3c"], PayloadSelector(), False)
    assert [(r.id, r.payload) for r in recs] == [(5, {"n": 5}), ("6f1b5d1e-5d1a-4c5e-9a5e-0e9c3b1a2b3c", {"n": "uuid"})]
    shard.apply(upsert([5], data[:1]))  # upsert replaces the payload too
    assert shard.retrieve([5], PayloadSelector(), False)[0].payload == {}
    shard.close()


def test_rejected_ops_change_nothing(tmp_path, rng):
    shard = LocalShard(tmp_path, config(), background_indexing=False)
    shard.apply(upsert([1], rng.normal(size=(1, DIM))))
    seq = shard.seq
    with pytest.raises(BadInput, match="Vector dimension error: expected dim: 16, got 3"):
        shard.apply(upsert([2, 3], np.ones((2, 3))))
    with pytest.raises(PointNotFound, match="No point with id 9 found"):
        shard.apply({"type": "set_payload", "ids": [1, 9], "payload": {"a": 1}})
    with pytest.raises(BadInput, match="Not existing vector name error: image"):
        shard.apply(upsert([2], rng.normal(size=(1, DIM)), name="image"))
    assert shard.seq == seq and shard.count(None) == 1
    assert shard.retrieve([1], PayloadSelector(), False)[0].payload == {}
    shard.close()


def test_recovery_from_log_and_snapshot(tmp_path, rng):
    data = rng.normal(size=(500, DIM)).astype(np.float32)
    shard = LocalShard(tmp_path, config(indexing_threshold=1), background_indexing=False)
    shard.apply(upsert(range(500), data, [{"i": i} for i in range(500)]))
    shard.wait_indexed()
    shard.snapshot()
    shard.apply({"type": "delete_points", "ids": list(range(100))})
    shard.apply({"type": "set_payload", "ids": [200], "payload": {"x": "y"}})
    shard.close(take_snapshot=False)  # as if killed: the last two ops live only in the log

    again = LocalShard(tmp_path, config(indexing_threshold=1), background_indexing=False)
    assert again.count(None) == 400
    assert again.retrieve([50], PayloadSelector(), False) == []
    assert again.retrieve([200], PayloadSelector(), False)[0].payload == {"i": 200, "x": "y"}
    (hits,) = again.search_batch([SearchRequest(NearestQuery(data[10]), limit=5)])
    assert 10 not in {h.id for h in hits}  # an acknowledged delete stays deleted
    (hits,) = again.search_batch([SearchRequest(NearestQuery(data[300]), limit=1)])
    assert hits[0].id == 300
    again.close()
    third = LocalShard(tmp_path, config(indexing_threshold=1), background_indexing=False)
    assert third.count(None) == 400  # from the snapshot written at close
    third.close()


class Paused:
    """Wraps a function so that a call waits, once started, until released: the
    test acts while another thread is inside it."""

    def __init__(self, fn):
        self.fn, self.started, self.release = fn, threading.Event(), threading.Event()

    def __call__(self, *args, **kwargs):
        self.started.set()
        assert self.release.wait(30), "never released"
        return self.fn(*args, **kwargs)


def in_thread(fn) -> threading.Thread:
    thread = threading.Thread(target=fn, daemon=True)
    thread.start()
    return thread


def test_reads_and_writes_go_on_while_a_snapshot_is_published(tmp_path, rng, monkeypatch):
    data = rng.normal(size=(300, DIM)).astype(np.float32)
    shard = LocalShard(tmp_path, config(indexing_threshold=1), background_indexing=False)
    shard.apply(upsert(range(300), data))
    shard.wait_indexed()
    publish = Paused(snapshot.fileio.publish_dir)
    monkeypatch.setattr(snapshot.fileio, "publish_dir", publish)
    taking = in_thread(shard.snapshot)
    assert publish.started.wait(30)

    answers = []
    work = in_thread(lambda: answers.append((
        shard.search_batch([SearchRequest(NearestQuery(data[7]), limit=1)]),
        shard.apply({"type": "delete_points", "ids": [7]}),
        shard.apply(upsert([1000], data[:1])),
    )))
    work.join(30)
    assert answers, "the shard lock was held while the snapshot was published"
    assert answers[0][0][0][0].id == 7
    publish.release.set()
    taking.join(30)
    assert not taking.is_alive()
    shard.close(take_snapshot=False)  # as if killed: the writes made during the snapshot live in the log

    again = LocalShard(tmp_path, config(indexing_threshold=1), background_indexing=False)
    assert again.count(None) == 300
    assert again.retrieve([7], None, False) == []
    assert [r.id for r in again.retrieve([1000], None, False)] == [1000]
    again.close()


def test_searches_go_on_while_a_waiting_write_is_fsynced(tmp_path, rng, monkeypatch):
    """``apply(wait=True)`` answers once its record is fsynced, but holds no shard
    lock during the fsync: a search meanwhile answers (and sees the write)."""
    data = rng.normal(size=(10, DIM)).astype(np.float32)
    shard = LocalShard(tmp_path, config(), background_indexing=False)
    syncing = Paused(os.fdatasync)
    monkeypatch.setattr(os, "fdatasync", syncing)
    write = in_thread(lambda: shard.apply(upsert(range(10), data)))
    assert syncing.started.wait(30)
    assert shard.wal.synced_seq == 0 and write.is_alive()
    found = []
    in_thread(lambda: found.append(shard.search_batch([SearchRequest(NearestQuery(data[3]), limit=1)]))).join(30)
    assert found and found[0][0][0].id == 3, "the shard lock was held during the fsync"
    syncing.release.set()
    write.join(30)
    assert not write.is_alive() and shard.wal.synced_seq == 1
    shard.close(take_snapshot=False)


def test_the_background_thread_runs_at_the_indexing_niceness(tmp_path):
    """Graph building yields the CPU to searches and writes: the background thread's
    own nice value is raised, the rest of the process keeps its own."""
    def nice(tid: int) -> int:
        return os.getpriority(os.PRIO_PROCESS, tid)

    shard = LocalShard(tmp_path, config(), indexing_niceness=7)
    try:
        deadline = time.monotonic() + 10
        while nice(shard._indexer.native_id) != min(19, nice(0) + 7) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert nice(shard._indexer.native_id) == min(19, nice(0) + 7)
        assert nice(threading.get_native_id()) == nice(0) < nice(shard._indexer.native_id)
    finally:
        shard.close(take_snapshot=False)


def test_a_machine_that_forbids_the_niceness_still_indexes(tmp_path, rng, monkeypatch):
    def forbidden(*args):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "setpriority", forbidden)
    data = rng.normal(size=(50, DIM)).astype(np.float32)
    shard = LocalShard(tmp_path, config(indexing_threshold=1), indexing_niceness=7)
    try:
        shard.apply(upsert(range(50), data))
        assert shard.wait_indexed(30) and shard._indexer.is_alive()
    finally:
        shard.close(take_snapshot=False)


def test_a_graph_that_moves_during_a_snapshot_reopens_consistent(tmp_path, rng, monkeypatch):
    """The graph is written after the rest of the snapshot; deletions indexed in
    between, and offsets reused after, must not leave points the graph hides."""
    data = rng.normal(size=(200, DIM)).astype(np.float32)
    shard = LocalShard(tmp_path, config(indexing_threshold=1), background_indexing=False)
    shard.apply(upsert(range(200), data))
    shard.wait_indexed()
    save = Paused(hnsw.HnswIndex.save)
    monkeypatch.setattr(hnsw.HnswIndex, "save", lambda *a: save(*a))
    taking = in_thread(shard.snapshot)
    assert save.started.wait(30)
    shard.apply({"type": "delete_points", "ids": list(range(20))})
    while shard.index_step():  # the graph marks them deleted before it is written
        pass
    save.release.set()
    taking.join(30)
    assert not taking.is_alive()
    fresh = rng.normal(size=(10, DIM)).astype(np.float32)
    shard.apply(upsert(range(1000, 1010), fresh))  # into half of the freed offsets
    shard.close(take_snapshot=False)

    again = LocalShard(tmp_path, config(indexing_threshold=1), background_indexing=False)
    again.wait_indexed()
    live = {i: data[i] for i in range(20, 200)} | {1000 + j: fresh[j] for j in range(10)}
    hits = again.search_batch([SearchRequest(NearestQuery(v), limit=1) for v in live.values()])
    assert [h[0].id for h in hits] == list(live)
    again.close()


def test_torn_log_tail_is_not_fatal(tmp_path, rng):
    shard = LocalShard(tmp_path, config(), background_indexing=False)
    shard.apply(upsert([1, 2], rng.normal(size=(2, DIM))))
    shard.apply(upsert([3], rng.normal(size=(1, DIM))))
    shard.close(take_snapshot=False)
    segment = max((tmp_path / "wal").iterdir(), key=lambda p: p.stat().st_size)
    raw = segment.read_bytes()
    segment.write_bytes(raw[:-7])  # a crash mid-write of the last record
    again = LocalShard(tmp_path, config(), background_indexing=False)
    assert again.count(None) == 2
    again.apply(upsert([4], rng.normal(size=(1, DIM))))
    assert again.count(None) == 3
    again.close()


def test_recommend_discover_context_scores(tmp_path, rng):
    shard = LocalShard(tmp_path, config(Distance.DOT), background_indexing=False)
    data = rng.normal(size=(50, DIM)).astype(np.float32)
    shard.apply(upsert(range(50), data))
    pos, neg = data[0], data[1]
    sim = lambda v: data @ v  # noqa: E731
    (best,) = shard.search_batch([SearchRequest(RecommendQuery((pos,), (neg,), "best_score"), limit=50, exclude_ids=frozenset({0, 1}))])
    expected = distances.best_score([sim(pos)], [sim(neg)])
    assert {h.id for h in best} == set(range(2, 50))
    for h in best:
        assert h.score == pytest.approx(float(expected[h.id]), rel=1e-5)
    (total,) = shard.search_batch([SearchRequest(RecommendQuery((pos,), (neg,), "sum_scores"), limit=3)])
    assert total[0].score == pytest.approx(float(np.max(sim(pos) - sim(neg))), rel=1e-5)
    pair = ContextPair(data[2], data[3])
    (disc,) = shard.search_batch([SearchRequest(DiscoverQuery(data[4], (pair,)), limit=5)])
    rank = np.sign(sim(data[2]) - sim(data[3]))
    assert all(rank[h.id] == 1 for h in disc[:1])
    (ctx,) = shard.search_batch([SearchRequest(ContextQuery((pair,)), limit=5)])
    assert ctx[0].score == 0.0
    shard.close()


def test_named_vectors_and_partial_points(tmp_path, rng):
    shard = LocalShard(tmp_path, config(names=("image", "text")), background_indexing=False)
    op = {
        "type": "upsert",
        "ids": [1, 2],
        "vectors": {"image": rng.normal(size=(2, DIM)).astype(np.float32), "text": rng.normal(size=(2, DIM)).astype(np.float32)},
        "vector_mask": {"text": np.array([True, False])},
        "payloads": None,
    }
    shard.apply(op)
    (rec1, rec2) = shard.retrieve([1, 2], None, True)
    assert set(rec1.vector) == {"image", "text"} and set(rec2.vector) == {"image"}
    (hits,) = shard.search_batch([SearchRequest(NearestQuery(rng.normal(size=DIM).astype(np.float32)), using="text", limit=5)])
    assert [h.id for h in hits] == [1]
    shard.close()


def test_batched_search_equals_one_at_a_time(tmp_path, rng):
    shard = LocalShard(tmp_path, config(indexing_threshold=1), background_indexing=False)
    data = rng.normal(size=(3000, DIM)).astype(np.float32)
    shard.apply(upsert(range(3000), data, [{"g": int(i % 7)} for i in range(3000)]))
    shard.apply({"type": "create_index", "field": "g", "schema": "integer"})
    shard.wait_indexed()
    filters = [None, {"must": [{"key": "g", "match": {"value": 2}}]}, {"must": [{"key": "g", "match": {"any": [1, 3, 5]}}]}]
    requests = [
        SearchRequest(NearestQuery(q), filter=filters[i % 3], limit=5 + i % 4, offset=i % 2, exact=i % 5 == 0)
        for i, q in enumerate(rng.normal(size=(24, DIM)).astype(np.float32))
    ]
    together = shard.search_batch(requests)
    alone = [shard.search_batch([r])[0] for r in requests]
    assert [[(h.id, round(h.score, 5)) for h in hits] for hits in together] == [
        [(h.id, round(h.score, 5)) for h in hits] for hits in alone
    ]
    shard.close()


def test_cached_candidates_never_serve_stale_answers(tmp_path, rng):
    shard = LocalShard(tmp_path, config(indexing_threshold=1), background_indexing=False)
    data = rng.normal(size=(500, DIM)).astype(np.float32)
    shard.apply(upsert(range(500), data, [{"g": i % 2} for i in range(500)]))
    flt = {"must": [{"key": "g", "match": {"value": 0}}]}

    def top(q, f=None):
        return [h.id for h in shard.search_batch([SearchRequest(NearestQuery(q), filter=f, limit=3)])[0]]

    assert top(data[10])[0] == 10 and top(data[10], flt)[0] == 10
    shard.apply({"type": "delete_points", "ids": [10]})
    assert 10 not in top(data[10]) and 10 not in top(data[10], flt)
    # Back, elsewhere (near point 11, not an exact twin: HNSW may prune exact
    # duplicates from each other's neighbour lists), and in the other group.
    moved = data[11] + np.float32(0.05) * rng.normal(size=DIM).astype(np.float32)
    shard.apply(upsert([10], moved[None, :], [{"g": 1}]))
    assert top(moved)[0] == 10 and 10 not in top(moved, flt)
    assert shard.wait_indexed()  # indexing moves points into the graph: answers stay right
    assert top(moved)[0] == 10 and 10 not in top(moved, flt)
    shard.close()


def test_correlated_filter_through_the_graph_keeps_recall(tmp_path, rng):
    """Two clusters, the payload says which: a query from one cluster filtered to the
    other finds few matches among its graph neighbours, so the graph answer comes
    back short and must be retried wider (or scored exactly), never returned short."""
    # full_scan_threshold of 1 KB: even this small filtered set goes through the graph.
    cfg = dataclasses.replace(config(indexing_threshold=1), hnsw=HnswConfig(full_scan_threshold=1))
    shard = LocalShard(tmp_path, cfg, background_indexing=False)
    centres = rng.normal(size=(2, DIM)).astype(np.float32) * 4
    side = rng.integers(0, 2, size=4000)
    data = (centres[side] + rng.normal(size=(4000, DIM))).astype(np.float32)
    shard.apply(upsert(range(4000), data, [{"side": int(s)} for s in side]))
    shard.apply({"type": "create_index", "field": "side", "schema": "integer"})
    shard.wait_indexed()
    flt = {"must": [{"key": "side", "match": {"value": 1}}]}  # about half: the graph path
    allowed = side == 1
    hit = 0
    queries = (centres[0] + rng.normal(size=(20, DIM))).astype(np.float32)  # from the other side
    for q in queries:
        (got,) = shard.search_batch([SearchRequest(NearestQuery(q), filter=flt, limit=10, hnsw_ef=16)])
        assert len(got) == 10 and all(side[h.id] == 1 for h in got)
        truth = np.flatnonzero(allowed)[brute_force(data[allowed], q, Distance.COSINE, 10)]
        hit += len({h.id for h in got} & set(truth.tolist()))
    assert hit / 200 >= 0.95
    shard.close()


def test_selective_filter_is_answered_exactly(tmp_path, rng):
    shard = LocalShard(tmp_path, config(indexing_threshold=1), background_indexing=False)
    data = rng.normal(size=(5000, DIM)).astype(np.float32)
    shard.apply(upsert(range(5000), data, [{"g": int(i % 20)} for i in range(5000)]))  # 5 % each
    shard.wait_indexed()
    flt = {"must": [{"key": "g", "match": {"value": 7}}]}
    allowed = np.arange(5000) % 20 == 7
    for q in rng.normal(size=(10, DIM)).astype(np.float32):
        (got,) = shard.search_batch([SearchRequest(NearestQuery(q), filter=flt, limit=10, hnsw_ef=16)])
        truth = np.flatnonzero(allowed)[brute_force(data[allowed], q, Distance.COSINE, 10)]
        assert [h.id for h in got] == truth.tolist()
    shard.close()


def test_idle_indexer_wakes_up_for_new_writes(tmp_path, rng):
    shard = LocalShard(tmp_path, config(indexing_threshold=1), background_indexing=False)
    shard.apply(upsert(range(100), rng.normal(size=(100, DIM))))
    assert shard.wait_indexed()
    assert shard.index_step() == 0 and shard.index_step() == 0  # nothing to do, twice
    shard.apply(upsert(range(100, 150), rng.normal(size=(50, DIM))))
    assert shard.index_step() == 50
    assert shard.info().indexed_vectors_count == 150
    shard.apply({"type": "delete_points", "ids": [0, 1]})
    assert shard.index_step() == 2  # the deleted points' graph entries are removed
    shard.close()


@pytest.mark.parametrize("distance", [Distance.COSINE, Distance.DOT])
def test_similarity_of_any_number_of_queries_is_the_matrix_product(rng, distance):
    """The few-rows and padded paths of the product give the plain product's scores."""
    vectors = rng.normal(size=(300, 24)).astype(np.float32)
    for m in range(1, 14):
        queries = rng.normal(size=(m, 24)).astype(np.float32)
        got = distances.similarity(queries, vectors, distance)
        assert got.shape == (m, 300)
        np.testing.assert_allclose(got, queries.astype(np.float64) @ vectors.T.astype(np.float64), rtol=1e-5, atol=1e-5)
