"""Maximal marginal relevance: diverse results from a nearest search
(``{"nearest": v, "mmr": {"diversity": d, "candidates_limit": n}}``).

Mirrors Qdrant 1.15 (lib/collection/src/collection/mmr.rs): the ``n`` nearest
candidates (default: the query's limit) are fetched with their vectors; the most
relevant one is picked first, then repeatedly the candidate with the best
``λ·relevance − (1 − λ)·max similarity to those already picked``, where
``λ = 1 − diversity`` (diversity defaults to 0.5), relevance is the candidate's
similarity to the query and similarities are the collection's distance, as the
engine computes it (for Cosine and Dot, the plain search score; for a sparse
vector, the dot product of the raw vectors, without IDF). A candidate whose
relevance is below ``score_threshold`` is not picked after the first. The score
of a picked point is its relevance.

Ties are broken as Qdrant's ``max_by_key`` over an ``IndexSet`` with
``swap_remove`` breaks them: the last of the equal candidates in the set's order.
"""

from __future__ import annotations

import numpy as np

DEFAULT_DIVERSITY = 0.5


def select(relevance: np.ndarray, similarity: np.ndarray, lam: float, limit: int,
           score_threshold: float | None = None) -> list[int]:
    """The indices of the candidates MMR picks, in order. ``relevance[i]``: candidate
    i's similarity to the query; ``similarity[i, j]``: between candidates i and j."""
    n = len(relevance)
    if n == 0 or limit <= 0:
        return []
    lam32 = np.float32(lam)
    pending = list(range(n))
    picked = [_swap_remove(pending, _last_argmax([relevance[i] for i in pending]))]
    best_to_picked = similarity[:, picked[0]].astype(np.float32).copy()
    while len(picked) < limit and pending:
        scores, positions = [], []
        for pos, i in enumerate(pending):
            if score_threshold is not None and relevance[i] < score_threshold:
                continue
            scores.append(lam32 * np.float32(relevance[i]) - (np.float32(1.0) - lam32) * best_to_picked[i])
            positions.append(pos)
        if not scores:
            break
        chosen = _swap_remove(pending, positions[_last_argmax(scores)])
        picked.append(chosen)
        np.maximum(best_to_picked, similarity[:, chosen], out=best_to_picked)
    return picked


def sparse_rows(vectors: list[tuple[np.ndarray, np.ndarray]], query: tuple[np.ndarray, np.ndarray]):
    """Sparse candidates and query as dense f32 rows over the indices they use, so
    that their dot products are matrix products: (candidates' rows, query row)."""
    columns = np.unique(np.concatenate([v[0] for v in vectors] + [query[0]]))
    rows = np.zeros((len(vectors), len(columns)), dtype=np.float32)
    for r, (indices, values) in enumerate(vectors):
        rows[r, np.searchsorted(columns, indices)] = values
    query_row = np.zeros(len(columns), dtype=np.float32)
    query_row[np.searchsorted(columns, query[0])] = query[1]
    return rows, query_row


def _last_argmax(values) -> int:
    """Rust's ``max_by_key``: the last of the largest."""
    best = 0
    for i in range(1, len(values)):
        if values[i] >= values[best]:
            best = i
    return best


def _swap_remove(items: list[int], pos: int) -> int:
    """``IndexSet::swap_remove``: the last item takes the removed one's place."""
    item = items[pos]
    last = items.pop()
    if pos < len(items):
        items[pos] = last
    return item
