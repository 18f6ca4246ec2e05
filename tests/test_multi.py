"""shard.multi: the multivector store and its MaxSim scoring, against a naive Python
model and against qdrant-client's local mode."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from qdrant_client import QdrantClient, models

from shard import multi
from shard.multi import MAX_FLATTENED, MultiStore, MultiVectorError, validate
from shard.types import BadInput, Distance

DISTANCES = list(Distance)
DATATYPES = ["float32", "float16", "uint8"]
LOWER_IS_BETTER = (Distance.EUCLID, Distance.MANHATTAN)


# -- the naive model: plain Python floats, one row at a time -----------------


def naive_encode(row, distance, datatype):
    """A row as Qdrant stores it: u8 truncated and saturated (no normalising, even for
    Cosine); otherwise unit length for Cosine, then rounded to f16 for float16."""
    row = [float(np.float32(x)) for x in row]
    if datatype == "uint8":
        return [float(int(min(max(x, 0.0), 255.0))) for x in row]
    if distance is Distance.COSINE:
        norm = math.sqrt(sum(x * x for x in row))
        if norm > 1e-7:
            row = [x / norm for x in row]
    if datatype == "float16":
        row = [float(np.float16(x)) for x in row]
    return row


def naive_similarity(a, b, distance, datatype):
    if distance is Distance.COSINE and datatype == "uint8":
        na, nb = sum(x * x for x in a), sum(y * y for y in b)
        return 0.0 if not na or not nb else sum(x * y for x, y in zip(a, b)) / math.sqrt(na * nb)
    if distance in (Distance.COSINE, Distance.DOT):
        return sum(x * y for x, y in zip(a, b))
    if distance is Distance.EUCLID:
        return -sum((x - y) ** 2 for x, y in zip(a, b))
    return -sum(abs(x - y) for x, y in zip(a, b))


def naive_maxsim(query, matrix, distance, datatype):
    """Σ over query rows of the best similarity against the point's rows."""
    q = [naive_encode(r, distance, datatype) for r in query]
    m = [naive_encode(r, distance, datatype) for r in matrix]
    return sum(max(naive_similarity(a, b, distance, datatype) for b in m) for a in q)


def display(internal, distance):
    if distance is Distance.EUCLID:
        return math.sqrt(abs(internal))
    if distance is Distance.MANHATTAN:
        return abs(internal)
    return internal


def naive_search(model, query, distance, datatype, limit=None, allowed=None, threshold=None):
    """[(offset, displayed score)] best first, ties by offset; threshold strict."""
    hits = []
    for offset, matrix in model.items():
        if allowed is not None and (offset >= len(allowed) or not allowed[offset]):
            continue
        internal = naive_maxsim(query, matrix, distance, datatype)
        shown = display(internal, distance)
        if threshold is not None:
            passes = shown < threshold if distance in LOWER_IS_BETTER else shown > threshold
            if not passes:
                continue
        hits.append((offset, internal, shown))
    hits.sort(key=lambda h: (-h[1], h[0]))
    return [(o, s) for o, _, s in (hits if limit is None else hits[:limit])]


def tolerance(distance, datatype, query_rows):
    """Values are multiples of 1/4 (exact in f32 and f16), so only Cosine rounds:
    f32 normalising, and for float16 the rounding of a normalised row to f16."""
    if distance is not Distance.COSINE or datatype == "uint8":
        return 1e-5
    return query_rows * (3e-3 if datatype == "float16" else 1e-5)


def assert_hits(got, want, distance, tol):
    """``got`` (offsets, scores) is ``want`` [(offset, score)] up to ``tol``: same
    length, same scores in order, and each offset's score its naive one (so only
    near-equal scores may trade places)."""
    offsets, scores = (a.tolist() for a in got)
    assert len(offsets) == len(want)
    assert scores == pytest.approx([s for _, s in want], abs=tol, rel=1e-5)
    step = [b - a for a, b in zip(scores, scores[1:])]
    assert all(s >= 0 for s in step) if distance in LOWER_IS_BETTER else all(s <= 0 for s in step)
    naive = dict(want)
    for offset, score in zip(offsets, scores):
        if offset in naive:
            assert score == pytest.approx(naive[offset], abs=tol, rel=1e-5)


# -- strategies ---------------------------------------------------------------

quarter = st.integers(-16, 16).map(lambda x: x / 4)
byte_like = st.one_of(st.integers(-20, 300).map(float), st.integers(-8, 48).map(lambda x: x / 4))


@st.composite
def setups(draw):
    """(distance, datatype, dim, {offset: matrix}, query)."""
    distance = draw(st.sampled_from(DISTANCES))
    datatype = draw(st.sampled_from(DATATYPES))
    dim = draw(st.integers(1, 4))
    values = byte_like if datatype == "uint8" else quarter

    def matrices():
        return st.lists(st.lists(values, min_size=dim, max_size=dim), min_size=1, max_size=4)

    model = draw(st.dictionaries(st.integers(0, 12), matrices(), max_size=8))
    return distance, datatype, dim, model, draw(matrices())


def filled(distance, datatype, dim, model) -> MultiStore:
    store = MultiStore(dim, distance, datatype)
    store.set(list(model), list(model.values()))
    return store


# -- MaxSim against the naive model ------------------------------------------


@settings(max_examples=300, deadline=None)
@given(setups(), st.integers(1, 10))
def test_search_equals_naive_maxsim(setup, limit):
    distance, datatype, dim, model, query = setup
    store = filled(distance, datatype, dim, model)
    want = naive_search(model, query, distance, datatype, limit)
    assert_hits(store.search(query, limit), want, distance, tolerance(distance, datatype, len(query)))


@settings(max_examples=150, deadline=None)
@given(setups(), st.data())
def test_score_of_given_offsets(setup, data):
    """``score`` gives the internal MaxSim of any offsets, -inf where none is held."""
    distance, datatype, dim, model, query = setup
    store = filled(distance, datatype, dim, model)
    offsets = data.draw(st.lists(st.integers(-2, 16), max_size=10))
    got = store.score(query, offsets)
    assert got.dtype == np.float32 and len(got) == len(offsets)
    tol = tolerance(distance, datatype, len(query))
    for offset, score in zip(offsets, got.tolist()):
        if offset in model:
            assert score == pytest.approx(naive_maxsim(query, model[offset], distance, datatype), abs=tol, rel=1e-5)
        else:
            assert score == -math.inf


@settings(max_examples=100, deadline=None)
@given(setups())
def test_maxsim_matrix_scores_each_against_each(setup):
    """``maxsim_matrix``: row i is the MaxSim of query i against every matrix, in
    order (not symmetric: the row's matrix is the query)."""
    distance, datatype, dim, model, query = setup
    matrices = list(model.values())
    got = multi.maxsim_matrix([query, *matrices], matrices, dim, distance, datatype)
    assert got.shape == (1 + len(matrices), len(matrices)) and got.dtype == np.float32
    tol = tolerance(distance, datatype, 4)
    for i, q in enumerate([query, *matrices]):
        for j, m in enumerate(matrices):
            assert got[i, j] == pytest.approx(naive_maxsim(q, m, distance, datatype), abs=tol, rel=1e-5)


@settings(max_examples=150, deadline=None)
@given(setups(), st.data())
def test_filter_mask_and_threshold(setup, data):
    distance, datatype, dim, model, query = setup
    store = filled(distance, datatype, dim, model)
    allowed = np.array(data.draw(st.lists(st.booleans(), max_size=16)), dtype=bool)
    everything = naive_search(model, query, distance, datatype)
    # A threshold between two naive scores, so that rounding cannot decide it.
    shown = sorted({s for _, s in everything})
    gaps = [(a + b) / 2 for a, b in zip(shown, shown[1:]) if b - a > 0.05]
    threshold = data.draw(st.sampled_from(gaps)) if gaps else None
    want = naive_search(model, query, distance, datatype, 10, allowed, threshold)
    got = store.search(query, 10, allowed=allowed, score_threshold=threshold)
    assert_hits(got, want, distance, tolerance(distance, datatype, len(query)))


@pytest.mark.parametrize("distance", DISTANCES)
def test_score_threshold_is_strict(distance):
    """A point scoring exactly the threshold is left out, as in Qdrant."""
    store = MultiStore(2, distance)
    store.set([0, 1], [[[1.0, 0.0]], [[0.0, 1.0], [3.0, 4.0]]])
    query = [[1.0, 0.0], [0.0, 1.0]]
    offsets, scores = store.search(query, 5)
    assert len(offsets) == 2
    for offset, score in zip(offsets.tolist(), scores.tolist()):
        kept = store.search(query, 5, score_threshold=score)[0].tolist()
        assert offset not in kept


def test_ties_by_offset_and_at_the_limit():
    """Equal scores come by offset, also where the limit cuts through them."""
    store = MultiStore(2, Distance.DOT)
    store.set([5, 3, 9, 1, 7], [[[1.0, 1.0]]] * 3 + [[[0.5, 0.5]], [[2.0, 2.0]]])
    offsets, scores = store.search([[1.0, 0.0]], 3)
    assert offsets.tolist() == [7, 3, 5]
    assert scores.tolist() == [2.0, 1.0, 1.0]


def test_more_rows_than_one_block():
    """A store of more rows than one scoring block (BLOCK_ROWS) scores as a plain
    numpy MaxSim over all of it does (integer values: exact)."""
    rng = np.random.default_rng(7)
    counts = rng.integers(1, 4, size=20000)
    flat = rng.integers(-4, 5, size=(int(counts.sum()), 3)).astype(np.float32)
    matrices = np.split(flat, np.cumsum(counts)[:-1])
    store = MultiStore(3, Distance.DOT)
    store.set(np.arange(len(matrices)), matrices)
    assert store.live > multi.BLOCK_ROWS
    query = np.array([[1, 2, 0], [-1, 0, 3]], dtype=np.float32)
    sims = query @ flat.T
    want = np.maximum.reduceat(sims, np.cumsum(counts) - counts, axis=1).sum(axis=0)
    top = np.lexsort((np.arange(len(want)), -want))[:50]
    offsets, scores = store.search(query, 50)
    assert offsets.tolist() == top.tolist() and scores.tolist() == want[top].tolist()
    assert store.score(query, [19999, 0]).tolist() == [want[19999], want[0]]


def test_displayed_scores_follow_qdrant():
    """Euclid shows sqrt(|Σ -d²|), Manhattan |Σ -L1|: the sum of squared distances,
    not a sum of distances (Qdrant postprocess_score; local mode alike)."""
    rows = [[[0.0, 0.0], [3.0, 4.0]]]
    query = [[3.0, 0.0], [3.0, 4.0]]  # best rows: d² = 9 (to 0,0: 9; to 3,4: 16), 0
    euclid = MultiStore(2, Distance.EUCLID)
    euclid.set([0], rows)
    assert euclid.score(query, [0]).tolist() == [-9.0]
    assert euclid.search(query, 1)[1].tolist() == [3.0]
    manhattan = MultiStore(2, Distance.MANHATTAN)
    manhattan.set([0], rows)
    assert manhattan.search(query, 1)[1].tolist() == [3.0]


# -- datatypes ----------------------------------------------------------------


def test_uint8_truncates_and_saturates_and_keeps_cosine_unnormalised():
    store = MultiStore(3, Distance.COSINE, "uint8")
    store.set([0], [[[-3.0, 300.0, 2.9], [3.0, 4.0, 0.0]]])
    assert store.get(0).tolist() == [[0.0, 255.0, 2.0], [3.0, 4.0, 0.0]]
    # The cosine of the byte rows: [6, 8, 0] is parallel to [3, 4, 0].
    assert store.score([[6.0, 8.0, 0.0]], [0]).tolist() == [pytest.approx(1.0, abs=1e-6)]
    # A query row of zeros (all negative values saturate to 0) scores 0, not NaN.
    assert store.score([[-1.0, -2.0, -3.0]], [0]).tolist() == [0.0]


def test_uint8_sums_are_exact_integers():
    store = MultiStore(2, Distance.DOT, "uint8")
    store.set([0], [[[255.0, 255.0]]])
    assert store.score([[255.0, 255.0], [1.0, 0.0]], [0]).tolist() == [2 * 255 * 255 + 255]


def test_float16_rounds_stored_and_query_rows():
    store = MultiStore(2, Distance.DOT, "float16")
    store.set([0], [[[0.1, 1000.3]]])
    stored = [float(np.float16(0.1)), float(np.float16(1000.3))]
    assert store.get(0).tolist() == [stored]
    q = [float(np.float16(0.3)), float(np.float16(0.7))]
    want = np.float32(stored[0] * q[0] + stored[1] * q[1])
    assert store.score([[0.3, 0.7]], [0]).tolist() == [pytest.approx(float(want), rel=1e-6)]


def test_cosine_rows_are_normalised_and_returned_so():
    store = MultiStore(2, Distance.COSINE)
    store.set([0], [[[3.0, 4.0], [0.0, 0.0]]])
    assert store.get(0).tolist() == [[pytest.approx(0.6), pytest.approx(0.8)], [0.0, 0.0]]


# -- set / clear against a dict model ------------------------------------------


@st.composite
def histories(draw):
    """A distance without rounding, a datatype, and a list of writes."""
    distance = draw(st.sampled_from([Distance.DOT, Distance.EUCLID, Distance.MANHATTAN]))
    datatype = draw(st.sampled_from(DATATYPES))
    values = byte_like if datatype == "uint8" else quarter
    matrix = st.lists(st.lists(values, min_size=2, max_size=2), min_size=1, max_size=5)
    step = st.one_of(
        st.tuples(st.just("set"), st.lists(st.tuples(st.integers(0, 20), matrix), max_size=5)),
        st.tuples(st.just("clear"), st.lists(st.integers(-1, 25), max_size=5)),
    )
    return distance, datatype, draw(st.lists(step, max_size=25)), draw(matrix)


def replay(distance, datatype, steps):
    store, model, size = MultiStore(2, distance, datatype), {}, 0
    for kind, arg in steps:
        if kind == "set":
            store.set([o for o, _ in arg], [m for _, m in arg])
            for offset, matrix in arg:
                model[offset] = matrix
                size = max(size, offset + 1)
        else:
            store.clear(arg)
            for offset in arg:
                model.pop(offset, None)
        assert store.used - store.live <= store.live  # garbage never outgrows the live rows
    return store, model, size


def assert_matches_model(store, model, size, distance, datatype, query):
    assert store.size == size
    assert store.mask(size + 3).tolist() == [o in model for o in range(size + 3)]
    for offset in range(-1, size + 3):
        assert store.has(offset) == (offset in model)
        if offset in model:
            assert store.get(offset).tolist() == [naive_encode(r, distance, datatype) for r in model[offset]]
        else:
            with pytest.raises(KeyError):
                store.get(offset)
    got = store.search(query, 100)
    want = naive_search(model, query, distance, datatype)
    assert list(zip(*(a.tolist() for a in got))) == [(o, pytest.approx(s, rel=1e-6)) for o, s in want]


@settings(max_examples=200, deadline=None)
@given(histories())
def test_set_and_clear_follow_a_dict(history):
    distance, datatype, steps, query = history
    store, model, size = replay(distance, datatype, steps)
    assert_matches_model(store, model, size, distance, datatype, query)
    assert store.nbytes() >= store.live * 2 * np.dtype(store.dtype).itemsize


def test_overwrites_compact_the_rows():
    store = MultiStore(4, Distance.DOT)
    for i in range(200):
        store.set([0, 1], [[[i, 0, 0, 0]] * 3, [[0, i, 0, 0]]])
    assert store.live == 4 and store.used <= 8
    assert store.get(0).tolist() == [[199.0, 0.0, 0.0, 0.0]] * 3
    assert store.search([[1, 1, 0, 0]], 5)[0].tolist() == [0, 1]


def test_repeated_offset_in_one_batch_last_wins():
    store = MultiStore(1, Distance.DOT)
    store.set([2, 2, 0], [[[1.0]], [[5.0], [6.0]], [[3.0]]])
    assert store.get(2).tolist() == [[5.0], [6.0]]
    assert store.live == 3


# -- persistence ----------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(histories())
def test_save_load_round_trip(tmp_path_factory, history):
    distance, datatype, steps, query = history
    store, model, size = replay(distance, datatype, steps)
    path = tmp_path_factory.mktemp("multi") / "colbert.npz"
    store.save(path)
    loaded = MultiStore.load(path, 2, distance, datatype)
    assert_matches_model(loaded, model, size, distance, datatype, query)
    for key, array in store.to_arrays().items():
        assert np.array_equal(loaded.to_arrays()[key], array) and loaded.to_arrays()[key].dtype == array.dtype


def test_load_refuses_arrays_that_do_not_fit():
    store = MultiStore(2, Distance.DOT, "float16")
    store.set([0, 3], [[[1, 2]], [[3, 4], [5, 6]]])
    good = store.to_arrays()
    MultiStore.from_arrays(good, 2, Distance.DOT, "float16")
    bad = [
        ({**good, "counts": good["counts"][:-1]}, 2, "float16"),  # counts do not add up to the rows
        ({**good, "counts": -good["counts"]}, 2, "float16"),
        (good, 3, "float16"),  # another size
        (good, 2, "float32"),  # another datatype
        ({**good, "rows": good["rows"].reshape(-1)}, 2, "float16"),
    ]
    for arrays, dim, datatype in bad:
        with pytest.raises(ValueError):
            MultiStore.from_arrays(arrays, dim, Distance.DOT, datatype)


# -- bad input: Qdrant's texts, nothing changed -----------------------------------


@pytest.mark.parametrize("matrix, message", [
    ([], "multi vector must not be empty"),
    (np.zeros((0, 2)), "multi vector must not be empty"),
    ([[]], "all vectors must be non-empty"),
    ([[1, 2], []], "all vectors must be non-empty"),
    ([[1, 2], [1, 2, 3]], "all vectors must have the same dimension, found vector with dimension 3"),
    ([[1, 2, 3], [1, 2], [1]], "all vectors must have the same dimension, found vector with dimension 2"),
    # Qdrant checks the total before the row lengths.
    ([[0.0] * 1024] * 1023 + [[0.0] * 1025], "Total size of all vectors (1048577) must be less than 1048576"),
    (np.zeros((1024, 1024)), f"Total size of all vectors (1048576) must be less than {MAX_FLATTENED}"),
])
def test_malformed_multivectors_get_qdrant_texts(matrix, message):
    with pytest.raises(MultiVectorError) as caught:
        validate(matrix, 2)
    assert caught.value.errors == [("data", message)]
    assert isinstance(caught.value, BadInput)


@pytest.mark.parametrize("matrix, text", [
    ([[1, 2, 3]], "Vector dimension error: expected dim: 2, got 3"),
    ([[1]], "Vector dimension error: expected dim: 2, got 1"),
    ([[1, float("nan")]], "Vector contains NaN or infinite values"),
    ([[1, float("inf")]], "Vector contains NaN or infinite values"),
    ([[1, "a"]], None),
    (5, None),
    ([1, 2], None),
])
def test_wrong_dimension_and_values_are_bad_input(matrix, text):
    with pytest.raises(BadInput) as caught:
        validate(matrix, 2)
    assert not isinstance(caught.value, MultiVectorError)
    if text is not None:
        assert str(caught.value) == text


def test_a_refused_batch_changes_nothing():
    """Shape errors come first across the batch (Qdrant validates the whole request
    before any dimension check), and nothing of the batch is stored."""
    store = MultiStore(2, Distance.COSINE, "float16")
    store.set([0, 1], [[[1, 2]], [[3, 4], [5, 6]]])
    before = {k: v.copy() for k, v in store.to_arrays().items()}
    state = (store.used, store.live, store.size)
    batches = [
        ([0, 5, 6], [[[9, 9]], [[1, 2, 3]], [[1, 2], [1]]], MultiVectorError),
        ([0, 5], [[[9, 9]], [[1, 2, 3]]], BadInput),
        ([1, 7], [[[9, 9]], []], MultiVectorError),
        ([1], [[[float("nan"), 1]]], BadInput),
    ]
    for offsets, vectors, error in batches:
        with pytest.raises(error):
            store.set(offsets, vectors)
        after = store.to_arrays()
        assert all(np.array_equal(after[k], before[k]) for k in before)
        assert (store.used, store.live, store.size) == state


def test_bad_queries_are_refused_like_bad_vectors():
    store = MultiStore(2, Distance.DOT)
    store.set([0], [[[1, 2]]])
    with pytest.raises(MultiVectorError):
        store.search([], 3)
    with pytest.raises(BadInput, match="expected dim: 2, got 1"):
        store.score([[1]], [0])


def test_error_survives_pickling():
    import pickle

    error = pickle.loads(pickle.dumps(MultiVectorError([("data", "multi vector must not be empty")])))
    assert error.errors == [("data", "multi vector must not be empty")]


# -- the oracle: qdrant-client's local mode -----------------------------------------


def random_matrix(rng, dim, datatype):
    rows = rng.randint(1, 5)
    if datatype == "uint8":  # in range and whole: the server's bytes are the floats local mode keeps
        return [[float(rng.randint(0, 255)) for _ in range(dim)] for _ in range(rows)]
    return [[rng.randint(-32, 32) / 8 for _ in range(dim)] for _ in range(rows)]  # exact in f16


@pytest.mark.parametrize("datatype", DATATYPES)
@pytest.mark.parametrize("distance", DISTANCES)
def test_matches_qdrant_local_mode(distance, datatype):
    """Same ids and scores as QdrantClient(":memory:") for random data, overwrites and
    deletes included, with and without a filter. Local mode ignores ``datatype`` and
    keeps Cosine rows in f32, where the server rounds them to f16: for float16 Cosine
    the scores are compared more loosely (the naive-model tests check the rounding)."""
    rng = random.Random(f"{distance.value}-{datatype}")
    dim, count = 4, 40
    client = QdrantClient(":memory:")
    client.create_collection("c", vectors_config={"colbert": models.VectorParams(
        size=dim, distance=models.Distance(distance.value), datatype=models.Datatype(datatype),
        multivector_config=models.MultiVectorConfig(comparator=models.MultiVectorComparator.MAX_SIM))})
    store = MultiStore(dim, distance, datatype)
    matrices = {i: random_matrix(rng, dim, datatype) for i in range(count)}
    for i in rng.sample(range(count), 10):  # overwrites
        matrices[i] = random_matrix(rng, dim, datatype)
    client.upsert("c", [models.PointStruct(id=i, vector={"colbert": m}, payload={"even": i % 2 == 0})
                        for i, m in matrices.items()])
    store.set(list(matrices), list(matrices.values()))
    gone = rng.sample(range(count), 5)
    client.delete("c", points_selector=models.PointIdsList(points=gone))
    store.clear(gone)
    loose = distance is Distance.COSINE and datatype == "float16"
    for _ in range(5):
        query = random_matrix(rng, dim, datatype)
        for even in (None, True):
            flt = None if even is None else models.Filter(must=[models.FieldCondition(
                key="even", match=models.MatchValue(value=True))])
            allowed = None if even is None else np.arange(count) % 2 == 0
            theirs = client.query_points("c", query=query, using="colbert", limit=10, query_filter=flt).points
            offsets, scores = store.search(query, 10, allowed=allowed)
            tol = 5e-3 * len(query) if loose else 1e-4
            assert scores.tolist() == pytest.approx([p.score for p in theirs], abs=tol, rel=1e-4)
            mine = dict(zip(offsets.tolist(), scores.tolist()))
            for point in theirs:  # ids differ only between equal scores
                if point.id not in mine:
                    assert any(abs(s - point.score) <= tol + 1e-4 * abs(s) for s in mine.values())
                else:
                    assert mine[point.id] == pytest.approx(point.score, abs=tol, rel=1e-4)
