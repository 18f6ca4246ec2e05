"""Scores in one place.

Internally every distance is a similarity where bigger is better:

    Cosine     dot product of unit vectors (vectors are normalised at insert)
    Dot        dot product
    Euclid     -(squared L2 distance)
    Manhattan  -(L1 distance)

What users see ("display score") follows Qdrant: Cosine and Dot show the
similarity, Euclid shows the L2 distance and Manhattan the L1 distance, for
both of which smaller is better. Recommend (best_score, sum_scores), discovery
and context scores are built from the *internal* similarities and shown as they
are, as in Qdrant's core (qdrant-client's ``calculate_distance_core``).

No function here mutates its inputs.
"""

from __future__ import annotations

import numpy as np

from shard.types import Distance

# f32::EPSILON, the margin Qdrant's context search subtracts.
EPSILON = np.float32(1.1920929e-7)


def preprocess(vectors: np.ndarray, distance: Distance) -> np.ndarray:
    """What a vector becomes before it is stored or used as a query: float32,
    and unit length for Cosine (a zero vector stays zero, as in Qdrant)."""
    out = np.asarray(vectors, dtype=np.float32)
    if distance is not Distance.COSINE:
        return out
    norms = np.linalg.norm(out, axis=-1, keepdims=True)
    return out / np.where(norms < EPSILON, np.float32(1.0), norms)


def similarity(queries: np.ndarray, vectors: np.ndarray, distance: Distance) -> np.ndarray:
    """Internal similarity (bigger is better) of every query against every vector.

    ``queries`` is (d,) or (m, d) and already preprocessed; ``vectors`` is (n, d).
    Returns (n,) or (m, n) float32.
    """
    q = np.asarray(queries, dtype=np.float32)
    if distance in (Distance.COSINE, Distance.DOT):
        return vectors @ q if q.ndim == 1 else _dot_many(q, vectors)
    if distance is Distance.EUCLID:
        if q.ndim == 1:
            diff = vectors - q
            return -np.einsum("ij,ij->i", diff, diff)
        return np.stack([-np.einsum("ij,ij->i", vectors - row, vectors - row) for row in q])
    if distance is Distance.MANHATTAN:
        if q.ndim == 1:
            return -np.abs(vectors - q).sum(axis=1, dtype=np.float32)
        return np.stack([-np.abs(vectors - row).sum(axis=1, dtype=np.float32) for row in q])
    raise ValueError(f"unknown distance {distance}")


def _dot_many(queries: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """``queries @ vectors.T``, shaped for OpenBLAS: a matrix product of a few
    rows costs more than one matrix-vector product per row (3,100 x 384 block,
    one thread: 2 rows 424 us as a product, 191 us row by row), and one of a
    row count that is not a multiple of 4 costs about as much as the next
    multiple (7 rows 689 us, padded to 8: 454 us)."""
    m = queries.shape[0]
    if m < 6:
        return np.stack([vectors @ row for row in queries])
    pad = -m % 4
    if pad:
        queries = np.concatenate([queries, np.zeros((pad, queries.shape[1]), dtype=queries.dtype)])
    return (queries @ vectors.T)[:m]


def to_display(internal: np.ndarray | float, distance: Distance) -> np.ndarray | float:
    """The score Qdrant shows for a plain nearest search."""
    if distance is Distance.EUCLID:
        return np.sqrt(np.maximum(-np.asarray(internal, dtype=np.float32), 0))
    if distance is Distance.MANHATTAN:
        return -np.asarray(internal, dtype=np.float32)
    return internal


def threshold_to_internal(threshold: float, distance: Distance) -> float:
    """The internal similarity a displayed score_threshold corresponds to.

    score_threshold is strict, as in Qdrant: Cosine/Dot keep score > t,
    Euclid/Manhattan keep distance < t, i.e. internal similarity > the value
    returned here.
    """
    if distance is Distance.EUCLID:
        return -(float(threshold) ** 2) if threshold >= 0 else float("inf")
    if distance is Distance.MANHATTAN:
        return -float(threshold)
    return float(threshold)


def display_higher_is_better(distance: Distance) -> bool:
    """Order of displayed nearest-search scores: False for Euclid and Manhattan."""
    return distance not in (Distance.EUCLID, Distance.MANHATTAN)


def fast_sigmoid(x: np.ndarray) -> np.ndarray:
    """x / (1 + |x|): Qdrant's cheap monotone squash into (-1, 1)."""
    x = np.asarray(x, dtype=np.float32)
    return x / (np.float32(1.0) + np.abs(x))


def scaled_fast_sigmoid(x: np.ndarray) -> np.ndarray:
    """0.5 * (fast_sigmoid(x) + 1): squash into (0, 1)."""
    return np.float32(0.5) * (fast_sigmoid(x) + np.float32(1.0))


def best_score(positive: list[np.ndarray], negative: list[np.ndarray]) -> np.ndarray:
    """Recommend best_score from per-example internal similarities (each (n,)).

    score = s(best positive) if it beats the best negative, else -s(best negative),
    with s the scaled fast sigmoid; with no positives only the second branch applies.
    """
    n = (positive or negative)[0].shape[0]
    pos = np.max(positive, axis=0) if positive else np.full(n, -np.inf, dtype=np.float32)
    neg = np.max(negative, axis=0) if negative else np.full(n, -np.inf, dtype=np.float32)
    with np.errstate(invalid="ignore"):
        return np.where(pos > neg, scaled_fast_sigmoid(pos), -scaled_fast_sigmoid(neg)).astype(np.float32)


def sum_scores(positive: list[np.ndarray], negative: list[np.ndarray]) -> np.ndarray:
    """Recommend sum_scores: Σ sim(positive) − Σ sim(negative)."""
    n = (positive or negative)[0].shape[0]
    total = np.zeros(n, dtype=np.float32)
    for s in positive:
        total += s
    for s in negative:
        total -= s
    return total


def discovery_rank(pairs: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Σ over context pairs of sign(sim(positive) − sim(negative))."""
    n = pairs[0][0].shape[0]
    rank = np.zeros(n, dtype=np.float32)
    for pos, neg in pairs:
        rank += np.sign(pos - neg).astype(np.float32)
    return rank


def discovery_score(target: np.ndarray, pairs: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """rank + s(sim(target)): the context decides the band, the target the order within it."""
    base = discovery_rank(pairs) if pairs else np.zeros_like(target, dtype=np.float32)
    return (base + scaled_fast_sigmoid(target)).astype(np.float32)


def context_score(pairs: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Σ over pairs of fast_sigmoid(min(sim(p) − sim(n) − ε, 0)): 0 for points on the
    positive side of every pair, so many results tie at 0, as in Qdrant."""
    n = pairs[0][0].shape[0]
    total = np.zeros(n, dtype=np.float32)
    for pos, neg in pairs:
        total += fast_sigmoid(np.minimum(pos - neg - EPSILON, np.float32(0.0)))
    return total
