"""shard.sparse: the sparse vector store and its inverted index, against a naive
dense model and against qdrant-client's local mode."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from qdrant_client import QdrantClient, models

import shard.sparse as sparse_module
from shard.sparse import Idf, SparseStore, SparseVectorError, idf_weights, validate
from shard.types import BadInput

DIMS = 24  # few dimensions, so that vectors overlap often


@st.composite
def sparse_vectors(draw, min_size=0, max_size=8):
    """(indices, values) with unique indices in random order; values exact in f32."""
    indices = draw(st.lists(st.integers(0, DIMS - 1), min_size=min_size, max_size=max_size, unique=True))
    values = draw(st.lists(st.integers(-64, 64).map(lambda x: x / 8), min_size=len(indices), max_size=len(indices)))
    return indices, values


def dense(vector) -> np.ndarray:
    out = np.zeros(DIMS, dtype=np.float64)
    for i, v in zip(*vector):
        out[i] = v
    return out


def naive_search(model: dict, query, limit=None, allowed=None, threshold=None, idf=None):
    """Every stored vector sharing an index with the query, scored by a dense dot
    product (IDF: the query weights scaled by the formula in plain floats)."""
    q_idx, q_val = query
    weights = list(q_val)
    if idf is not None:
        n, df = idf
        weights = [v * math.log((n - df.get(i, 0) + 0.5) / (df.get(i, 0) + 0.5) + 1) for i, v in zip(q_idx, q_val)]
    q = dense((q_idx, weights))
    hits = []
    for offset, vector in model.items():
        if not set(q_idx) & set(vector[0]):
            continue
        if allowed is not None and (offset >= len(allowed) or not allowed[offset]):
            continue
        score = float(dense(vector) @ q)
        if threshold is not None and not score > threshold:
            continue
        hits.append((offset, score))
    hits.sort(key=lambda h: (-h[1], h[0]))
    return hits if limit is None else hits[:limit]


def naive_df(model: dict) -> tuple[int, dict[int, int]]:
    df: dict[int, int] = {}
    for indices, _ in model.values():
        for i in indices:
            df[i] = df.get(i, 0) + 1
    return sum(1 for v in model.values() if v[0]), df


def assert_hits(got, want, exact=False):
    """``got`` (offsets, scores) is ``want`` [(offset, score)]. Values are multiples of
    1/8, so plain dot products are exact in f32 and the lists must be equal, ties
    (by offset) included; IDF weights round, so near-ties may swap there."""
    offsets, scores = (a.tolist() for a in got)
    assert scores == sorted(scores, reverse=True)
    if exact:
        assert list(zip(offsets, scores)) == want
        return
    assert len(offsets) == len(want)
    assert scores == pytest.approx([s for _, s in want], abs=1e-4, rel=1e-5)
    by_offset = dict(zip(offsets, scores))
    for offset, score in want:
        if offset in by_offset:
            assert by_offset[offset] == pytest.approx(score, abs=1e-4, rel=1e-5)
        else:  # left out for a near-tie at the cut
            assert score == pytest.approx(scores[-1], abs=1e-4, rel=1e-5)


def build(vectors) -> tuple[SparseStore, dict]:
    store, model = SparseStore(), {}
    store.set(list(range(len(vectors))), vectors)
    for offset, (indices, values) in enumerate(vectors):
        model[offset] = (list(indices), list(values))
    return store, model


# ---------------------------------------------------------------------------
# Scores against a dense dot product.
# ---------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(st.lists(sparse_vectors(), max_size=30), sparse_vectors(), st.integers(1, 40), st.booleans())
def test_search_equals_dense_dot_product(vectors, query, limit, with_idf):
    store, model = build(vectors)
    idf = None
    if with_idf:
        n, df = naive_df(model)
        assert (store.vector_count, store.document_frequencies(range(DIMS))) == (n, {i: df.get(i, 0) for i in range(DIMS)})
        idf = Idf(n, store.document_frequencies(query[0]))
    got = store.search(*query, limit=limit, idf=idf)
    assert_hits(got, naive_search(model, query, limit, idf=None if idf is None else (idf.n, idf.df)), exact=idf is None)


@settings(max_examples=100, deadline=None)
@given(st.lists(sparse_vectors(), max_size=30), sparse_vectors(), st.data())
def test_filter_mask_and_threshold(vectors, query, data):
    store, model = build(vectors)
    allowed = np.array(data.draw(st.lists(st.booleans(), max_size=35)), dtype=bool)
    threshold = data.draw(st.none() | st.integers(-20, 20).map(lambda x: x + 0.3))
    got = store.search(*query, limit=100, allowed=allowed, score_threshold=threshold)
    assert_hits(got, naive_search(model, query, allowed=allowed, threshold=threshold), exact=True)


def test_score_threshold_is_strict():
    """As in Qdrant (Dot: score > threshold); qdrant-client's local mode keeps score == t."""
    store, _ = build([([1], [2.0]), ([1], [3.0]), ([1], [1.0])])
    assert store.search([1], [1.0], limit=5, score_threshold=2.0)[0].tolist() == [1]
    assert store.search([1], [1.0], limit=5, score_threshold=-1.0)[0].tolist() == [1, 0, 2]


def test_no_overlap_is_no_candidate():
    """Qdrant returns only points sharing an index with the query (score 0 included)."""
    store, _ = build([([1, 2], [1.0, 1.0]), ([3], [2.0]), ([2], [0.0]), ([], [])])
    offsets, scores = store.search([2, 5], [1.0, 1.0], limit=10)
    assert offsets.tolist() == [0, 2] and scores.tolist() == [1.0, 0.0]
    assert store.search([], [], limit=10)[0].size == 0
    assert store.search([2], [1.0], limit=0)[0].size == 0


@settings(max_examples=100, deadline=None)
@given(st.lists(sparse_vectors(), min_size=1, max_size=20), sparse_vectors(), st.data())
def test_score_matches_search(vectors, query, data):
    """``score`` (rescoring given candidates) agrees with ``search``; -inf where no overlap."""
    store, model = build(vectors)
    offsets = data.draw(st.lists(st.integers(0, len(vectors) + 3), max_size=10))
    want = dict(naive_search(model, query))
    got = store.score(*query, offsets)
    for offset, score in zip(offsets, got.tolist()):
        if offset in want:
            assert score == pytest.approx(want[offset], abs=1e-4)
        else:
            assert score == -np.inf


# ---------------------------------------------------------------------------
# Writes: overwrites, deletes, the counts IDF needs.
# ---------------------------------------------------------------------------

ops = st.lists(
    st.tuples(st.sampled_from(["set", "clear"]), st.lists(st.integers(0, 15), min_size=1, max_size=4, unique=True),
              st.lists(sparse_vectors(), min_size=4, max_size=4)),
    max_size=25,
)


def apply_ops(store: SparseStore, model: dict, steps) -> None:
    for kind, offsets, vectors in steps:
        if kind == "set":
            store.set(offsets, vectors[: len(offsets)])
            for offset, (indices, values) in zip(offsets, vectors):
                model[offset] = (list(indices), list(values))
        else:
            store.clear(offsets)
            for offset in offsets:
                model.pop(offset, None)


@settings(max_examples=100, deadline=None)
@given(ops, sparse_vectors(min_size=1), st.booleans())
def test_overwrites_and_deletes(steps, query, with_idf):
    store, model = SparseStore(), {}
    apply_ops(store, model, steps)
    n, df = naive_df(model)
    assert store.vector_count == n
    assert store.document_frequencies(range(DIMS)) == {i: df.get(i, 0) for i in range(DIMS)}
    assert store.mask(20).tolist() == [o in model for o in range(20)]
    for offset, (indices, values) in model.items():
        got_i, got_v = store.get(offset)
        order = np.argsort(indices)
        assert got_i.tolist() == np.asarray(indices, dtype=np.int64)[order].tolist()
        assert got_v.tolist() == np.asarray(values, dtype=np.float32)[order].tolist()
    idf = Idf(n, df) if with_idf else None
    want = naive_search(model, query, idf=(n, df) if with_idf else None)
    assert_hits(store.search(*query, limit=50, idf=idf), want[:50], exact=not with_idf)
    assert store.nbytes() >= 0


def test_get_of_missing_offset():
    store, _ = build([([1], [1.0])])
    store.clear([0, 7])
    assert not store.has(0) and not store.has(7)
    with pytest.raises(KeyError):
        store.get(0)


def test_empty_vector_is_stored_not_indexed():
    """A point may hold an empty sparse vector (it reads back) but it is no document."""
    store, _ = build([([], []), ([4], [1.0])])
    assert store.has(0) and store.get(0)[0].size == 0
    assert store.vector_count == 1
    store.set([1], [([], [])])
    assert store.vector_count == 0 and store.document_frequencies([4]) == {4: 0}


# ---------------------------------------------------------------------------
# IDF: the formula, and collection-wide statistics over several shards.
# ---------------------------------------------------------------------------


@given(st.integers(0, 10**6).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n))))
def test_idf_formula(n_df):
    """In f32, as Qdrant computes it: close to float64 for every df <= N."""
    n, df = n_df
    want = math.log((n - df + 0.5) / (df + 0.5) + 1)
    assert float(idf_weights(n, np.array([df]))[0]) == pytest.approx(want, rel=1e-5, abs=1e-6)


@settings(max_examples=60, deadline=None)
@given(st.lists(sparse_vectors(min_size=1), max_size=30), sparse_vectors(min_size=1), st.integers(1, 4))
def test_idf_over_shards_equals_one_shard(vectors, query, shard_count):
    """Summed df and N, passed back to every shard, give one shard's scores."""
    whole, _ = build(vectors)
    shards = [SparseStore() for _ in range(shard_count)]
    for offset, vector in enumerate(vectors):
        shards[offset % shard_count].set([offset], [vector])
    n = sum(s.vector_count for s in shards)
    df: dict[int, int] = {}
    for s in shards:
        for i, c in s.document_frequencies(query[0]).items():
            df[i] = df.get(i, 0) + c
    idf = Idf(n, df)
    merged = sorted(
        ((o, sc) for s in shards for o, sc in zip(*(a.tolist() for a in s.search(*query, limit=100, idf=idf)))),
        key=lambda h: (-h[1], h[0]),
    )
    offsets, scores = whole.search(*query, limit=100, idf=Idf(whole.vector_count, whole.document_frequencies(query[0])))
    assert [o for o, _ in merged] == offsets.tolist()
    assert [s for _, s in merged] == scores.tolist()


# ---------------------------------------------------------------------------
# Persistence.
# ---------------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(ops, sparse_vectors(min_size=1))
def test_save_load_round_trip(tmp_path_factory, steps, query):
    store, model = SparseStore(), {}
    apply_ops(store, model, steps)
    path = tmp_path_factory.mktemp("sparse") / "sparse-0.npz"
    store.save(path)  # with writes still pending in the postings
    loaded = SparseStore.load(path)
    assert loaded.size == store.size and loaded.vector_count == store.vector_count
    assert loaded.entries == store.entries
    assert loaded.document_frequencies(range(DIMS)) == store.document_frequencies(range(DIMS))
    assert loaded.mask(20).tolist() == store.mask(20).tolist()
    for offset in model:
        assert [a.tolist() for a in loaded.get(offset)] == [a.tolist() for a in store.get(offset)]
    a, b = store.search(*query, limit=50), loaded.search(*query, limit=50)
    assert a[0].tolist() == b[0].tolist() and a[1].tolist() == b[1].tolist()
    loaded.set([3], [([1, 2], [1.0, 1.0])])  # a loaded store takes writes
    assert 3 in loaded.search([1], [1.0], limit=50)[0].tolist()


def test_load_refuses_arrays_that_do_not_fit():
    good = build([([1, 2], [1.0, 2.0]), ([3], [1.0])])[0].to_arrays()
    for bad in (
        {**good, "indptr": np.array([0, 2, 4])},  # past the end
        {**good, "present": np.array([True, False])},  # a missing row with entries
        {**good, "indices": np.array([2, 1, 3], dtype=np.uint32)},  # unsorted row
        {**good, "values": np.zeros(2, dtype=np.float32)},
    ):
        with pytest.raises(ValueError):
            SparseStore.from_arrays(bad)
    assert SparseStore.from_arrays(good).search([3], [1.0], 5)[0].tolist() == [1]


# ---------------------------------------------------------------------------
# Bad input: Qdrant's texts, and nothing changes.
# ---------------------------------------------------------------------------

LENGTH = ("values", "Validation error: must be the same length as indices [{}]")
UNIQUE = ("indices", "Validation error: must be unique [{}]")


@pytest.mark.parametrize(
    "indices, values, errors",
    [
        ([1, 2, 3], [1.0, 2.0], [LENGTH]),
        ([1], [], [LENGTH]),
        ([1, 2, 1], [1.0, 2.0, 3.0], [UNIQUE]),
        ([4, 4], [1.0], [LENGTH, UNIQUE]),
    ],
)
def test_bad_vectors_get_qdrant_texts(indices, values, errors):
    with pytest.raises(SparseVectorError) as info:
        validate(indices, values)
    assert info.value.errors == errors
    assert str(info.value) == "; ".join(f"{f}: {m}" for f, m in errors)
    assert isinstance(info.value, BadInput)
    store, _ = build([([1], [1.0])])
    for call in (lambda: store.set([0, 5], [([2], [3.0]), (indices, values)]),
                 lambda: store.search(indices, values, 5), lambda: store.score(indices, values, [0])):
        with pytest.raises(SparseVectorError):
            call()
    assert store.get(0)[0].tolist() == [1] and store.size == 1 and store.document_frequencies([2]) == {2: 0}


@pytest.mark.parametrize("indices, values", [([-1], [1.0]), ([2**32], [1.0]), ([1.5], [1.0]), ([[1]], [[1.0]]),
                                             (["a"], [1.0]), ([1], ["x"])])
def test_indices_outside_u32_are_refused(indices, values):
    with pytest.raises(BadInput):
        validate(indices, values)


def test_unsorted_indices_are_sorted_values_following():
    """Qdrant accepts unsorted indices and sorts them (sparse_vector.rs double_sort)."""
    indices, values = validate([9, 2, 5], [0.5, 1.5, 2.5])
    assert indices.tolist() == [2, 5, 9] and values.tolist() == [1.5, 2.5, 0.5]
    raw = [9, 2, 5]
    validate(raw, [1, 2, 3])
    assert raw == [9, 2, 5]  # inputs are not mutated


# ---------------------------------------------------------------------------
# The oracle: qdrant-client's local mode.
# ---------------------------------------------------------------------------


def random_vector(rng: random.Random, dims: int, min_size: int = 1) -> tuple[list[int], list[float]]:
    indices = rng.sample(range(dims), rng.randint(min_size, 10))
    return indices, [round(rng.uniform(-1, 3), 4) for _ in indices]


@pytest.mark.parametrize("modifier", [None, models.Modifier.IDF])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_matches_qdrant_local_mode(modifier, seed):
    """Same ids and scores as QdrantClient(":memory:") for random data, overwrites
    included. Every point holds a non-empty vector: local mode's IDF counts every
    point as a document, Qdrant's server (and Shoal) only the indexed vectors."""
    rng = random.Random(seed)
    dims, count = 60, 300
    client = QdrantClient(":memory:")
    client.create_collection(
        "c", vectors_config={}, sparse_vectors_config={"text": models.SparseVectorParams(modifier=modifier)}
    )
    vectors = {i: random_vector(rng, dims) for i in range(count)}
    rewritten = {i: random_vector(rng, dims) for i in rng.sample(range(count), 60)}
    store = SparseStore()
    for batch in (vectors, rewritten):
        client.upsert("c", [models.PointStruct(id=i, vector={"text": models.SparseVector(indices=v[0], values=v[1])})
                            for i, v in batch.items()])
        store.set(list(batch), list(batch.values()))
    for _ in range(20):
        query = random_vector(rng, dims + 5)
        limit = rng.choice([1, 5, 20, 400])
        want = client.query_points(
            "c", query=models.SparseVector(indices=query[0], values=query[1]), using="text", limit=limit
        ).points
        idf = Idf(store.vector_count, store.document_frequencies(query[0])) if modifier else None
        offsets, scores = store.search(*query, limit=limit, idf=idf)
        assert len(offsets) == len(want)
        for offset, score, point in zip(offsets.tolist(), scores.tolist(), want):
            assert score == pytest.approx(point.score, abs=1e-5, rel=1e-5)
            if offset != point.id:  # only a tie may swap two results
                assert score == pytest.approx(dict(zip(offsets.tolist(), scores.tolist())).get(point.id), abs=1e-5)
    client.close()


# ---------------------------------------------------------------------------
# Recommend / discover examples: every offset scored, averages.
# ---------------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(st.lists(sparse_vectors(), max_size=30), sparse_vectors(), st.integers(0, 40))
def test_scores_all_equals_dense_dot_product(vectors, query, size):
    """Every offset below ``size``: its dot product with the query, 0 without a
    shared index or a vector (examples score so in Qdrant's sparse raw scorer)."""
    store, model = build(vectors)
    got = store.scores_all(*query, size)
    want = [float(dense(model[o]) @ dense(query)) if o in model else 0.0 for o in range(size)]
    assert got.dtype == np.float32 and got.tolist() == want


@settings(max_examples=100, deadline=None)
@given(st.lists(sparse_vectors(min_size=1), min_size=1, max_size=5), sparse_vectors(min_size=1))
def test_average_and_combine_equal_dense_arithmetic(vectors, negative):
    from shard.sparse import average, combine

    ordered = [validate(*v) for v in vectors]
    avg = average(ordered)
    assert list(avg[0]) == sorted({i for v in vectors for i in v[0]})
    want = np.mean([dense(v) for v in vectors], axis=0)
    assert np.allclose(dense((avg[0].tolist(), avg[1].tolist())), want, atol=1e-6)
    merged = combine(avg, validate(*negative), lambda p, n: p + p - n)
    assert np.allclose(dense((merged[0].tolist(), merged[1].tolist())), 2 * want - dense(negative), atol=1e-5)


# ---------------------------------------------------------------------------
# The pruned search (MaxScore) against the full scan: the same top, bit for bit.
# ---------------------------------------------------------------------------


class _Pruning:
    """Makes every search of a store try the pruned path, with posting levels cut
    from a few entries on (the module's settings, restored on exit)."""

    def __init__(self, min_entries: int):
        self.settings = {"PRUNE_MIN_ENTRIES": min_entries, "LEVEL_MIN_ENTRIES": 8, "PRUNE_SHORT_PART": 16}

    def __enter__(self):
        self.saved = {name: getattr(sparse_module, name) for name in self.settings}
        for name, value in self.settings.items():
            setattr(sparse_module, name, value)

    def __exit__(self, *exc):
        for name, value in self.saved.items():
            setattr(sparse_module, name, value)


def _full_scan(store: SparseStore, *args, **kwargs):
    with _Pruning(min_entries=2**62):
        return store.search(*args, **kwargs)


def skewed_corpus(seed: int, count: int, dims: int = 400, negative: bool = False) -> list:
    """Documents shaped like text: Zipf-distributed words, mostly said once, a few
    words common to most documents (long postings), small integer counts."""
    rng = np.random.default_rng(seed)
    docs = []
    for _ in range(count):
        words = np.unique(np.minimum(rng.zipf(1.3, size=rng.integers(1, 14)), dims) - 1)
        counts = rng.choice([1.0, 1.0, 1.0, 1.0, 2.0, 2.0, 3.0, 5.0], size=len(words))
        if negative:
            counts *= rng.choice([1.0, -1.0], size=len(words), p=[0.8, 0.2])
        docs.append((words.tolist(), counts.tolist()))
    return docs


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 25), st.booleans(), st.booleans(), st.data())
def test_pruned_search_is_the_full_scan(seed, limit, with_idf, negative, data):
    """Any query (a document's own words, with or without IDF, negative weights,
    a filter, a score threshold) gets the very offsets and f32 scores the full
    scan gives: pruning only leaves out vectors that cannot reach the top."""
    docs = skewed_corpus(seed, 600, negative=negative)
    store, _ = build(docs)
    rng = np.random.default_rng(seed + 1)
    query = docs[int(rng.integers(len(docs)))]
    if data.draw(st.booleans()):  # a made-up query, common words included
        query = (sorted(set(rng.integers(0, 40, size=6).tolist())), [1.0] * len(set(rng.integers(0, 40, size=6).tolist())))
        query = (query[0], [float(x) for x in rng.choice([1.0, 2.0, -1.0], size=len(query[0]))])
    idf = Idf(store.vector_count, store.document_frequencies(query[0])) if with_idf else None
    allowed = rng.random(650) < data.draw(st.sampled_from([1.0, 0.5, 0.05])) if data.draw(st.booleans()) else None
    threshold = data.draw(st.none() | st.floats(-5, 30))
    want = _full_scan(store, *query, limit=limit, allowed=allowed, score_threshold=threshold, idf=idf)
    with _Pruning(min_entries=0):
        got = store.search(*query, limit=limit, allowed=allowed, score_threshold=threshold, idf=idf)
    assert got[0].tolist() == want[0].tolist()
    assert got[1].tolist() == want[1].tolist()


def test_pruning_reads_less_and_follows_writes():
    """On text-like data the pruned path answers (it does not fall back to the full
    scan) with the full scan's answer, and writes after a search (overwrites, deletes,
    new vectors) are seen by the next one: the posting levels are rebuilt."""
    docs = skewed_corpus(7, 3000)
    store, _ = build(docs)
    queries = [docs[i] for i in range(0, 3000, 150)]
    pruned = 0
    with _Pruning(min_entries=0):
        for step in range(3):
            for query in queries:
                idf = Idf(store.vector_count, store.document_frequencies(query[0]))
                q_idx, q_val = store.weights(*query, idf)
                parts = [(store.postings[i], w) for i, w in zip(q_idx.tolist(), q_val) if i in store.postings]
                found = sparse_module._pruned_top(store, parts, q_idx, q_val, 10, None, None)
                pruned += found is not None
                want = _full_scan(store, *query, limit=10, idf=idf)
                got = store.search(*query, limit=10, idf=idf)
                assert got[0].tolist() == want[0].tolist() and got[1].tolist() == want[1].tolist()
                if found is not None:
                    assert found[0].tolist() == want[0].tolist() and found[1].tolist() == want[1].tolist()
            # writes between rounds: a best hit of each query deleted, others overwritten, new ones
            store.clear([int(store.search(*q, limit=1)[0][0]) for q in queries[:5]])
            store.set(list(range(100, 200)), skewed_corpus(100 + step, 100))
            store.set(list(range(store.size, store.size + 50)), skewed_corpus(200 + step, 50))
    assert pruned >= len(queries) * 3 // 2


def test_rows_survive_overwrites_and_compaction():
    """Vectors are slices of one arena: overwriting the same offsets again and again
    fills it with dead rows until it is compacted; every vector reads back, views
    handed out before a compaction keep their values, and searches, rescoring and
    the saved arrays see only the live rows."""
    rng = np.random.default_rng(3)
    store, model = SparseStore(), {}
    early, written = None, 0
    for round_ in range(60):
        offsets = rng.choice(300, size=120, replace=False).tolist()
        vectors = skewed_corpus(round_, len(offsets), dims=DIMS)
        store.set(offsets, vectors)
        written += sum(len(i) for i, _ in vectors)
        model.update({o: (list(i), list(v)) for o, (i, v) in zip(offsets, vectors)})
        gone = rng.choice(300, size=10, replace=False).tolist()
        store.clear(gone)
        for o in gone:
            model.pop(o, None)
        if early is None and model:
            offset = next(iter(model))
            early = (offset, store.get(offset), [x.copy() for x in store.get(offset)])
    assert store.rows.used < written / 4  # compacted along the way: dead rows do not pile up
    assert early[1][0].tolist() == early[2][0].tolist() and early[1][1].tolist() == early[2][1].tolist()
    for offset in range(300):
        assert store.has(offset) == (offset in model)
        if offset in model:
            indices, values = model[offset]
            order = np.argsort(indices)
            assert store.get(offset)[0].tolist() == np.asarray(indices)[order].tolist()
            assert store.get(offset)[1].tolist() == np.asarray(values, dtype=np.float32)[order].tolist()
    query = ([0, 1, 5, 9], [1.0, 0.5, 2.0, 1.0])
    assert_hits(store.search(*query, limit=300), naive_search(model, query), exact=True)
    with _Pruning(min_entries=0):
        assert_hits(store.search(*query, limit=10), naive_search(model, query, limit=10), exact=True)
    scores = store.score(*query, list(range(300)))
    want = dict(naive_search(model, query))
    assert [s if s != -np.inf else None for s in scores.tolist()] == [want.get(o) for o in range(300)]
    copy = SparseStore.from_arrays(store.to_arrays())
    assert [copy.has(o) for o in range(300)] == [store.has(o) for o in range(300)]
    assert all(copy.get(o)[1].tolist() == store.get(o)[1].tolist() for o in model)


def test_the_arena_of_posting_parts_is_renewed_as_writes_leave_it_dead():
    """The pruned search reads the postings' parts from one arena, where a changed
    posting's parts are written again when next searched. Rounds of overwrites and
    searches leave dead slices; the store starts a new arena once they make it
    more than twice the postings' entries, and every answer stays the full scan's."""
    docs = skewed_corpus(5, 800)
    store, _ = build(docs)
    queries = [docs[i] for i in range(0, 800, 80)]
    arenas = set()
    with _Pruning(min_entries=0):
        for step in range(12):
            for query in queries:
                want = _full_scan(store, *query, limit=5)
                got = store.search(*query, limit=5)
                assert got[0].tolist() == want[0].tolist() and got[1].tolist() == want[1].tolist()
                arena = store.parts_arena()
                assert arena.used <= 2 * store.entries + sparse_module.ARENA_SLACK
                arenas.add(id(arena))
            store.set(list(range(800)), skewed_corpus(50 + step, 800))
    assert len(arenas) > 1


def test_warm_up_compiles_every_loop():
    """``python -m shard.sparse`` (run by the container image's build) leaves every
    compiled loop with the argument types searches use, so none compiles again."""
    import subprocess
    import sys

    from shard import sparse_kernels

    subprocess.run([sys.executable, "-m", "shard.sparse"], check=True, timeout=300)
    sparse_module.warm_up()
    kernels = [sparse_kernels.pruned_top, sparse_kernels.score_rows]
    before = [len(k.signatures) for k in kernels]
    assert before == [1, 1]
    docs = skewed_corpus(11, 3000)
    store, _ = build(docs)
    with _Pruning(min_entries=0):
        for query in docs[:20]:
            idf = Idf(store.vector_count, store.document_frequencies(query[0]))
            store.search(*query, limit=10, idf=idf)
            store.search(*query, limit=10, idf=idf, allowed=np.ones(3000, dtype=bool))
            store.score(*query, [1, 2, 3])
    assert [len(k.signatures) for k in kernels] == before


def test_processes_that_never_search_do_not_load_numba():
    """The gateway imports this module for its checks; the compiled loops, and
    numba with them (~60 MB), load only when a shard first searches. As faiss
    (``shard.product``) loads only with a product-quantized graph, and the int8
    graph's loops (``shard.scalar_graph``) with a scalar-quantized one."""
    import subprocess
    import sys

    code = ("import sys, gateway.app, shard.sparse, shard.local_shard, shard.graphs; "
            "assert not {'numba', 'faiss', 'shard.scalar_graph'} & set(sys.modules), 'numba or faiss imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_a_sparse_shards_actor_loads_the_compiled_loops_ahead(tmp_path):
    """A shard actor whose collection has sparse vectors loads the compiled loops
    in the background as it starts (~0.4 s from numba's cache), so that its first
    sparse search does not wait for them; one without sparse vectors loads no numba.
    Each in a fresh process, where nothing has loaded them yet."""
    import subprocess
    import sys

    code = """if True:
        import sys, threading
        from cluster.actor import ShardActor
        from shard.types import ShardConfig, SparseVectorParams, VectorParams, Distance
        sparse = sys.argv[2] == "sparse"
        config = ShardConfig(vectors={"": VectorParams(4, Distance.DOT)},
                             sparse={"text": SparseVectorParams(modifier="idf")} if sparse else {})
        actor = ShardActor(sys.argv[1], config.to_json(), {})
        for thread in threading.enumerate():
            if thread.name == "sparse-warm-up":
                thread.join(120)
        loaded = "shard.sparse_kernels" in sys.modules
        if loaded:
            from shard import sparse_kernels as k
            assert all(len(f.signatures) == 1 for f in (k.pruned_top, k.score_rows))
        assert loaded == sparse and ("numba" in sys.modules) == sparse, (loaded, sparse)
        actor.close(take_snapshot=False)
    """
    for kind in ("sparse", "dense"):
        subprocess.run([sys.executable, "-c", code, str(tmp_path / kind), kind], check=True, timeout=180)
