"""The pure parts of query trees: MMR's picks against a plain re-statement of
Qdrant's algorithm (random candidates, ties included), filter merging as
``Filter::merge_opts``, prefetch depth, and the conditions a formula holds."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import mmr
from gateway.prefetch import conditions_in, depth, merge_filters, with_ids


def naive_mmr(relevance, similarity, lam, limit, threshold):
    """Qdrant's maximal_marginal_relevance, line by line: an IndexSet of pending
    candidates with swap_remove, max_by_key keeping the last maximum."""
    pending = list(range(len(relevance)))
    if not pending or limit == 0:
        return []

    def take(pos):
        item = pending[pos]
        pending[pos] = pending[-1]
        pending.pop()
        return item

    best = max(range(len(pending)), key=lambda p: (relevance[pending[p]], p))
    picked = [take(best)]
    while len(picked) < limit and pending:
        options = []
        for pos, c in enumerate(pending):
            if threshold is not None and relevance[c] < threshold:
                continue
            worst = max(similarity[c][s] for s in picked)
            options.append((np.float32(lam) * np.float32(relevance[c]) - (np.float32(1) - np.float32(lam)) * worst, pos))
        if not options:
            break
        picked.append(take(max(options)[1]))
    return picked


@settings(max_examples=300, deadline=None)
@given(n=st.integers(0, 12), limit=st.integers(0, 14), lam=st.sampled_from([0.0, 0.25, 0.5, 1.0]),
       seed=st.integers(0, 2**31), coarse=st.booleans(), threshold=st.sampled_from([None, -0.5, 0.2]))
def test_mmr_matches_qdrants_algorithm(n, limit, lam, seed, coarse, threshold):
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n, 4)).astype(np.float32)
    if coarse:  # few distinct values: ties everywhere
        vectors = np.round(vectors).astype(np.float32)
    query = rng.normal(size=4).astype(np.float32)
    relevance = vectors @ query
    similarity = vectors @ vectors.T
    assert mmr.select(relevance, similarity, lam, limit, threshold) == \
        naive_mmr(relevance.tolist(), similarity.tolist(), lam, limit, threshold)


def test_mmr_without_diversity_is_relevance_order():
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(30, 8)).astype(np.float32)
    relevance = vectors @ rng.normal(size=8).astype(np.float32)
    picked = mmr.select(relevance, vectors @ vectors.T, 1.0, 10)
    assert picked == list(np.argsort(-relevance)[:10])


def test_merge_filters_concatenates_clauses():
    a = {"must": [{"key": "x", "match": {"value": 1}}], "should": {"has_id": [1]},
         "min_should": {"conditions": [{"has_id": [2]}], "min_count": 1}}
    b = {"must": {"key": "y", "match": {"value": 2}}, "should": [{"has_id": [3]}], "must_not": [],
         "min_should": {"conditions": [{"has_id": [4]}, {"has_id": [5]}], "min_count": 2}}
    assert merge_filters(None, b) is b and merge_filters(a, None) is a and merge_filters(None, None) is None
    assert merge_filters(a, b) == {
        "must": [{"key": "x", "match": {"value": 1}}, {"key": "y", "match": {"value": 2}}],
        "should": [{"has_id": [1]}, {"has_id": [3]}],
        "must_not": [],
        "min_should": {"conditions": [{"has_id": [2]}, {"has_id": [4]}, {"has_id": [5]}], "min_count": 2},
    }
    assert with_ids({"should": [{"has_id": [9]}]}, [1, 2]) == {"must": [{"has_id": [1, 2]}],
                                                               "should": [{"has_id": [9]}]}


def test_depth():
    assert depth(None) == 0 and depth([]) == 0
    assert depth([{"query": [1]}]) == 1
    assert depth([{"query": [1]}, {"prefetch": [{"prefetch": [{"query": [1]}]}]}]) == 3


def test_conditions_in_a_formula():
    tag = {"key": "tag", "match": {"value": "a"}}
    near = {"must": [{"has_id": [1]}]}
    formula = {"sum": ["$score", {"mult": [0.5, tag]}, {"exp_decay": {"x": "price", "target": 1.0}},
                      {"div": {"left": near, "right": 2.0}}, {"geo_distance": {"origin": {"lat": 1, "lon": 2},
                                                                              "to": "loc"}}]}
    found = conditions_in(formula)
    assert sorted(map(str, found)) == sorted(map(str, [tag, near]))


def test_leaves_asked_together_go_as_one_batch():
    """The searches that sibling prefetches start in one turn of the event loop reach
    the shards as one batch, each leaf gets its own answers back, a leaf that
    waited first goes in a later batch, and an error reaches every leaf of its batch."""
    import asyncio

    from gateway.prefetch import _Batch

    calls = []

    async def run(coll, requests):
        calls.append(list(requests))
        await asyncio.sleep(0)
        if "bad" in requests:
            raise ValueError("bad request")
        return [f"answer to {r}" for r in requests]

    async def leaf(batch, requests, wait=False):
        if wait:
            await asyncio.sleep(0.01)
        return await batch.run("collection", requests)

    async def main():
        batch = _Batch(run)
        got = await asyncio.gather(leaf(batch, ["dense"]), leaf(batch, ["sparse", "multi"]), leaf(batch, ["late"], wait=True))
        assert got == [["answer to dense"], ["answer to sparse", "answer to multi"], ["answer to late"]]
        assert calls == [["dense", "sparse", "multi"], ["late"]]
        results = await asyncio.gather(leaf(batch, ["dense"]), leaf(batch, ["bad"]), return_exceptions=True)
        assert all(isinstance(r, ValueError) for r in results)
        assert calls[-1] == ["dense", "bad"]

    asyncio.run(main())
