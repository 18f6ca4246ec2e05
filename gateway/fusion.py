"""Fusion of several scored lists into one: Qdrant 1.15's ``rrf`` and ``dbsf``.

A fusion query (``{"fusion": "rrf"}`` / ``{"fusion": "dbsf"}``) combines the results of
its prefetches, each already merged across shards and best-first. Mirrored sources:

- ``rrf``: lib/segment/src/common/reciprocal_rank_fusion.rs ``rrf_scoring``. Only the
  rank counts: a point at 0-based position ``p`` of a list earns ``1 / (p + k)`` with
  ``k = 2``; a point's earnings are summed over the lists it appears in.
- ``dbsf``: lib/segment/src/common/score_fusion.rs ``score_fusion(ScoreFusion::dbsf())``.
  Each list is normalised by its own mean ± 3 sample standard deviations (Welford's
  one-pass mean and variance) to ``(s - lo) / (hi - lo)``; a list of one point scores
  0.5, and so does every point of a list where ``lo == hi`` (all scores equal); the
  normalised scores of a point are summed.
- the cut (the universal query's ``fusion_rescore``): ``score_threshold`` keeps points
  while ``score >= threshold`` (not strict, unlike a vector search), then the first
  ``offset + limit`` are kept and ``offset`` of them skipped.

Qdrant computes in f32, so this module does too (numpy float32 scalars): the scores are
Qdrant's bit for bit, which also decides the order of near-ties. A fused point carries
the record of its first appearance (Qdrant's ``or_insert``), with the fused score.

Ties: Qdrant collects the points in a hash map and does not break ties, so their order
is arbitrary there. Shoal orders tied points by first appearance (list by list, rank by
rank), which is also what qdrant-client's local mode does.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import numpy as np

from shard.types import BadInput

T = TypeVar("T")

F32 = np.float32
DEFAULT_RRF_K = 2
METHODS = ("rrf", "dbsf")


def _with_score(item: Any, score: float) -> Any:
    return dataclasses.replace(item, score=score)


def rrf(lists: Iterable[Sequence[T]], k: int = DEFAULT_RRF_K, rescored: Callable[[T, float], T] = _with_score) -> list[T]:
    """Reciprocal rank fusion, best first. Items need ``.id``; their scores are ignored."""
    return [rescored(item, score) for item, score in _rrf(lists, k)]


def _rrf(lists: Iterable[Sequence[T]], k: int = DEFAULT_RRF_K) -> list[tuple[T, float]]:
    lists = [list(ranked) for ranked in lists]
    longest = max((len(ranked) for ranked in lists), default=0)
    earned = F32(1.0) / (np.arange(longest, dtype=F32) + F32(k))  # 1 / (rank + k), in f32 as Qdrant
    return _summed((item, score) for ranked in lists for item, score in zip(ranked, earned))


def distribution_normalised(scores: Sequence[float]) -> list[np.float32]:
    """One list's DBSF scores (score_fusion.rs ``distr_norm``), in f32."""
    n = len(scores)
    if n < 2:
        return [F32(0.5)] * n
    values = [F32(s) for s in scores]
    mean, aggregate = F32(0.0), F32(0.0)
    for count, s in enumerate(values, 1):
        old_delta = s - mean
        mean = mean + old_delta / F32(count)
        aggregate = aggregate + old_delta * (s - mean)
    with np.errstate(all="ignore"):
        std_dev = np.sqrt(aggregate / (F32(n) - F32(1.0)))
        lo = mean - F32(3.0) * std_dev
        hi = mean + F32(3.0) * std_dev
        if lo == hi:  # norm()'s guard against dividing by zero
            return [F32(0.5)] * n
        width = hi - lo
        return [(s - lo) / width for s in values]


def dbsf(lists: Iterable[Sequence[T]], rescored: Callable[[T, float], T] = _with_score) -> list[T]:
    """Distribution-based score fusion, best first. Items need ``.id`` and ``.score``."""
    return [rescored(item, score) for item, score in _dbsf(lists)]


def _dbsf(lists: Iterable[Sequence[T]]) -> list[tuple[T, float]]:
    return _summed(pair for ranked in lists for pair in zip(ranked, distribution_normalised([p.score for p in ranked])))


def _summed(scored: Iterable[tuple[Any, np.float32]]) -> list[tuple[Any, float]]:
    """Sum each point's f32 scores: (first item, score), best first, ties in order
    of first appearance."""
    fused: dict[Any, list] = {}  # id -> [first item, f32 score]
    for item, score in scored:
        entry = fused.get(item.id)
        if entry is None:
            fused[item.id] = [item, score]
        else:
            entry[1] = entry[1] + score
    entries = sorted(fused.values(), key=lambda e: -float(e[1]))
    return [(item, float(score)) for item, score in entries]


def fuse(
    method: str,
    lists: Iterable[Sequence[T]],
    *,
    limit: int,
    offset: int = 0,
    score_threshold: float | None = None,
    rescored: Callable[[T, float], T] = _with_score,
) -> list[T]:
    """The page a fusion query answers: fused, cut at ``score_threshold`` (kept while
    ``score >= threshold``), then ``offset`` skipped and ``limit`` kept."""
    if method == "rrf":
        fused = _rrf(lists)
    elif method == "dbsf":
        fused = _dbsf(lists)
    else:
        raise BadInput(f"unknown fusion method: {method}")
    if score_threshold is not None:
        threshold = float(F32(score_threshold))  # the request's threshold is an f32
        cut = 0
        while cut < len(fused) and fused[cut][1] >= threshold:
            cut += 1
        fused = fused[:cut]
    return [rescored(item, score) for item, score in fused[offset : offset + limit]]
