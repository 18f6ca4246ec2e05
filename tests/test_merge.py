"""The shard merge equals one global sort (property test)."""

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.merge import merge_by_id, merge_scored
from shard.points import id_sort_key
from shard.types import Record, ScoredPoint

scores = st.floats(min_value=-100, max_value=100, allow_nan=False, width=32)


@st.composite
def sharded_results(draw):
    n_shards = draw(st.integers(1, 4))
    ids = draw(st.lists(st.integers(0, 10_000), unique=True, max_size=60))
    points = [ScoredPoint(id=i, version=0, score=draw(scores)) for i in ids]
    shards = [[] for _ in range(n_shards)]
    for p in points:
        shards[draw(st.integers(0, n_shards - 1))].append(p)
    return points, shards


@settings(max_examples=300, deadline=None)
@given(sharded_results(), st.integers(0, 20), st.integers(1, 30), st.booleans())
def test_merge_scored_is_a_global_sort(data, offset, limit, higher):
    points, shards = data
    sign = -1 if higher else 1
    key = lambda p: (sign * p.score, id_sort_key(p.id))  # noqa: E731
    # Each shard answers its best offset+limit, best first.
    answers = [sorted(s, key=key)[: offset + limit] for s in shards]
    merged = merge_scored(answers, offset=offset, limit=limit, higher_is_better=higher)
    expected = sorted(points, key=key)[offset : offset + limit]
    assert [p.id for p in merged] == [p.id for p in expected]


def test_merge_drops_duplicate_ids_and_applies_offset_once():
    a = [ScoredPoint(1, 0, 0.9), ScoredPoint(2, 0, 0.8)]
    b = [ScoredPoint(1, 0, 0.9), ScoredPoint(3, 0, 0.7)]
    assert [p.id for p in merge_scored([a, b], offset=1, limit=5, higher_is_better=True)] == [2, 3]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.integers(0, 1000), st.uuids().map(str)), unique=True, max_size=40), st.integers(1, 10), st.integers(1, 3))
def test_scroll_pages_merge_by_id(ids, limit, n_shards):
    shards = [sorted((Record(i) for k, i in enumerate(ids) if k % n_shards == s), key=lambda r: id_sort_key(r.id)) for s in range(n_shards)]
    answers = [s[: limit + 1] for s in shards]
    page, next_offset = merge_by_id(answers, limit)
    ordered = sorted(ids, key=id_sort_key)
    assert [r.id for r in page] == ordered[:limit]
    assert next_offset == (ordered[limit] if len(ordered) > limit else None)
