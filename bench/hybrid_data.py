"""The hybrid benchmark's data and its exact answers: sparse vectors from the texts, and
the exact sparse, dense and fused (RRF) top-k every engine's answer is checked against.

Sparse vectors are BM25-style term counts, built from each document's ``text`` field:
- tokens: the text lowercased, then every match of ``[a-z0-9]+`` (runs of ASCII letters
  and digits; punctuation, quotes and accented letters split tokens). No stemming, no
  stop words: the IDF modifier is what weights common words down, as with Qdrant's
  ``idf`` sparse vectors fed raw counts;
- vocabulary: every token of the base texts used (the first ``n``) and of the query
  texts, sorted, numbered from 0: token -> u32 index;
- a text's vector: its token indices, sorted and unique, each with its count as value.

Exact references, scored as Qdrant 1.15 scores them (in float64 here; the engines use
f32, which is why the overlap checks allow ties within a relative 1e-5):
- sparse, ``modifier: idf``: score(q, d) = Σ idf(i)·q_i·d_i over the indices both hold,
  idf(i) = ln((N - n_i + 0.5) / (n_i + 0.5) + 1), N the documents with a non-empty
  sparse vector, n_i those holding index i (Qdrant's ``fancy_idf``; shard/sparse.py).
  Only documents sharing an index with the query are candidates;
- dense, Cosine: ``dataset.exact_top_k`` on L2-normalised float32 vectors;
- hybrid: reciprocal rank fusion of the exact dense top-L and exact sparse top-L, each
  point earning 1 / (rank + 2) per list it is in (0-based rank; Qdrant's ``rrf_scoring``
  with k = 2), summed; ties in the order of first appearance, dense list first.

Ties are real here: documents with the same words score the same, and RRF gives the same
score to, say, the 3rd of one list and the 3rd of the other. So besides the plain overlap
(|answer ∩ exact top-10| / 10) every answer also gets a tie-aware overlap: a returned
point counts when it can be in the exact top 10 under some order of the tied exact scores
(sparse: its exact score reaches the exact 10th; hybrid: see :func:`fused_bounds`).
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import scipy.sparse

from bench import dataset

TOKEN = re.compile(r"[a-z0-9]+")
RRF_K = 2  # Qdrant 1.15's DEFAULT_RRF_K
TIE_RTOL = 1e-5  # engines score in f32: equal within this is a tie


def tokens(text: str) -> list[str]:
    """The text's tokens, in order: lowercased, then runs of ``[a-z0-9]``."""
    return TOKEN.findall(text.lower())


def vocabulary(token_lists: Iterable[Sequence[str]]) -> dict[str, int]:
    """Every token seen, sorted, numbered from 0 (so the numbering does not depend
    on the order of the texts)."""
    seen: set[str] = set()
    for toks in token_lists:
        seen.update(toks)
    return {tok: i for i, tok in enumerate(sorted(seen))}


@dataclass(frozen=True)
class SparseRows:
    """Sparse vectors in CSR form: row r is ``indices[indptr[r]:indptr[r+1]]`` (u32,
    sorted, unique) with ``values`` (f32 counts) alongside."""

    indptr: np.ndarray
    indices: np.ndarray
    values: np.ndarray

    def __len__(self) -> int:
        return len(self.indptr) - 1

    def row(self, r: int) -> tuple[np.ndarray, np.ndarray]:
        a, b = self.indptr[r], self.indptr[r + 1]
        return self.indices[a:b], self.values[a:b]

    def matrix(self, dim: int) -> scipy.sparse.csr_matrix:
        return scipy.sparse.csr_matrix((self.values.astype(np.float64), self.indices, self.indptr), shape=(len(self), dim))


def count_vectors(token_lists: Iterable[Sequence[str]], vocab: dict[str, int]) -> SparseRows:
    """Each token list as a term-count vector over ``vocab`` (every token must be in it)."""
    indptr, indices, values = [0], [], []
    for toks in token_lists:
        counts = Counter(vocab[t] for t in toks)
        for i in sorted(counts):
            indices.append(i)
            values.append(counts[i])
        indptr.append(len(indices))
    return SparseRows(
        indptr=np.asarray(indptr, dtype=np.int64),
        indices=np.asarray(indices, dtype=np.uint32),
        values=np.asarray(values, dtype=np.float32),
    )


def idf(n_docs: int, df: np.ndarray) -> np.ndarray:
    """Qdrant's ``fancy_idf`` per index: ln((N - df + 0.5) / (df + 0.5) + 1), float64."""
    df = np.asarray(df, dtype=np.float64)
    return np.log((n_docs - df + 0.5) / (df + 0.5) + 1.0)


def read_texts(path: str, n: int | None = None) -> list[str]:
    """The ``text`` field of the first ``n`` lines (all when None) of a jsonl file."""
    out: list[str] = []
    with open(path, "rb") as fh:
        for line in fh:
            if n is not None and len(out) >= n:
                break
            out.append(json.loads(line)["text"])
    return out


@dataclass
class HybridData:
    """The dense dataset plus the sparse vectors of its base and query texts."""

    dense: dataset.Dataset
    docs: SparseRows
    queries: SparseRows
    dim: int  # vocabulary size


def load(path: str, n: int | None = None) -> HybridData:
    dense = dataset.load(path, n)
    base_tokens = [tokens(t) for t in read_texts(os.path.join(path, "base.jsonl"), dense.n)]
    query_tokens = [tokens(t) for t in read_texts(os.path.join(path, "queries.jsonl"))]
    if len(query_tokens) != dense.queries.shape[0]:
        raise ValueError(f"queries.jsonl has {len(query_tokens)} rows, queries.f16.npy {dense.queries.shape[0]}")
    vocab = vocabulary(base_tokens + query_tokens)
    return HybridData(dense, count_vectors(base_tokens, vocab), count_vectors(query_tokens, vocab), len(vocab))


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the ``k`` best columns with a finite score, best first, ties by column
    (padded with -1 / -inf when a row has fewer). Ties at the k-th place are broken by
    column too, not by whatever ``argpartition`` picks."""
    rows = scores.shape[0]
    ids = np.full((rows, k), -1, dtype=np.int64)
    out = np.full((rows, k), -np.inf)
    for r in range(rows):
        row = scores[r]
        cand = np.flatnonzero(np.isfinite(row))
        if len(cand) > k:
            kth = np.partition(row[cand], len(cand) - k)[len(cand) - k]
            cand = cand[row[cand] >= kth]
        order = np.lexsort((cand, -row[cand]))[:k]
        ids[r, : len(order)] = cand[order]
        out[r, : len(order)] = row[cand[order]]
    return ids, out


class Exact:
    """The exact answers of one dataset (base rows = point ids) at ``k`` and prefetch
    limit ``limit``; keeps what is needed to score any point exactly afterwards."""

    def __init__(self, data: HybridData, k: int, limit: int, chunk: int = 64):
        if limit < k:
            raise ValueError(f"the prefetch limit ({limit}) must be at least k ({k})")
        self.k, self.limit = k, limit
        self.docs = data.docs.matrix(data.dim)
        n_docs = int(np.count_nonzero(np.diff(data.docs.indptr)))  # non-empty vectors
        df = np.bincount(data.docs.indices, minlength=data.dim)
        q = data.queries.matrix(data.dim)
        self.queries_weighted = (q @ scipy.sparse.diags(idf(n_docs, df))).tocsr()
        sparse_ids, sparse_scores, sparse_ranks = [], [], []
        for s in range(0, q.shape[0], chunk):
            scores = (self.docs @ self.queries_weighted[s : s + chunk].T).T.toarray()
            scores[scores <= 0] = -np.inf  # values are positive counts: 0 means no shared index
            ids, sc = top_k(scores, limit)
            sparse_ids.append(ids)
            sparse_scores.append(sc)
            sparse_ranks += [rank_bounds(row, limit) for row in scores]
        self.sparse_ids = np.concatenate(sparse_ids)  # (q, limit), best first, ties by id
        self.sparse_scores = np.concatenate(sparse_scores)
        base_n = dataset.normalise(data.dense.base)
        self.dense_ids = dataset.exact_top_k(base_n, dataset.normalise(data.dense.queries), limit)
        self.fused = [rrf([d, s[s >= 0]]) for d, s in zip(self.dense_ids, self.sparse_ids)]
        self.fused_bounds = [fused_bounds(d, r, limit, k) for d, r in zip(self.dense_ids, sparse_ranks)]

    def sparse_score(self, query: int, ids: Sequence[int]) -> np.ndarray:
        """Exact sparse scores of points ``ids`` for query ``query`` (-inf: no shared index)."""
        rows = self.docs[np.asarray(ids, dtype=np.int64)]
        scores = (rows @ self.queries_weighted[query].T).toarray().ravel()
        return np.where(scores > 0, scores, -np.inf)

    def sparse_top(self, query: int) -> tuple[list[int], float]:
        """Exact sparse top-k ids of a query and the k-th score (the tie line)."""
        valid = self.sparse_ids[query, : self.k] >= 0
        ids = self.sparse_ids[query, : self.k][valid]
        return ids.tolist(), float(self.sparse_scores[query, : self.k][valid][-1]) if valid.any() else np.inf


def rank_bounds(scores: np.ndarray, limit: int, rtol: float = TIE_RTOL) -> dict[int, tuple[int, int]]:
    """Every point that is among the ``limit`` best of ``scores`` (finite ones) under some
    order of the tied scores: id -> (best, worst) 0-based rank it can take, worst =
    ``limit`` when a tie can also push it out of the list."""
    cand = np.flatnonzero(np.isfinite(scores))
    if len(cand) > limit:
        kth = np.partition(scores[cand], len(cand) - limit)[len(cand) - limit]
        cand = cand[scores[cand] >= kth - rtol * abs(kth)]
    order = cand[np.lexsort((cand, -scores[cand]))]
    ordered = scores[order]
    out: dict[int, tuple[int, int]] = {}
    start = 0
    for end in range(1, len(order) + 1):
        if end == len(order) or ordered[end] < ordered[start] - rtol * abs(ordered[start]):
            worst = end - 1 if end <= limit else limit
            out.update((int(p), (start, worst)) for p in order[start:end])
            start = end
    return out


def fused_bounds(dense_ids: Sequence[int], sparse_ranks: dict[int, tuple[int, int]], limit: int, k: int,
                 rrf_k: int = RRF_K) -> tuple[dict[int, float], float, int]:
    """The RRF answer when the sparse list's ties may come in any order: each point's
    best possible fused score, and the k-th largest of the worst possible scores (a
    point whose best is below that line is beaten by k points under every order).
    Returns (best score by id, line, size of the exact answer)."""
    best: dict[int, float] = {}
    worst: dict[int, float] = {}
    for rank, pid in enumerate(dense_ids):
        best[int(pid)] = worst[int(pid)] = 1.0 / (rank + rrf_k)
    for pid, (hi, lo) in sparse_ranks.items():
        best[pid] = best.get(pid, 0.0) + 1.0 / (hi + rrf_k)
        worst[pid] = worst.get(pid, 0.0) + (1.0 / (lo + rrf_k) if lo < limit else 0.0)
    lows = sorted(worst.values(), reverse=True)
    size = min(k, len(lows))
    return best, (lows[size - 1] if size else np.inf), size


def rrf(ranked: Sequence[Sequence[int]], k: int = RRF_K) -> dict[int, float]:
    """Reciprocal rank fusion: id -> Σ 1 / (rank + k) over the lists (0-based rank),
    best first; equal scores keep their order of first appearance."""
    scores: dict[int, float] = {}
    for ids in ranked:
        for rank, pid in enumerate(ids):
            scores[int(pid)] = scores.get(int(pid), 0.0) + 1.0 / (rank + k)
    return dict(sorted(scores.items(), key=lambda item: -item[1]))  # sorted() is stable


def overlap(found: Sequence[Sequence[int]], truth: Sequence[Sequence[int]], k: int) -> float:
    """Σ |found[q][:k] ∩ truth[q][:k]| / Σ |truth[q][:k]| over the answered queries
    (``found`` may be shorter than ``truth``: a pass cut by its time bound)."""
    hits = total = 0
    for ids, want in zip(found, truth):
        want = set(int(i) for i in list(want)[:k])
        hits += len(want & set(int(i) for i in list(ids)[:k]))
        total += len(want)
    return hits / total if total else float("nan")


def tie_aware_overlap(found: Sequence[Sequence[int]], scores_of: Sequence[Sequence[float]],
                      tie_lines: Sequence[float], sizes: Sequence[int], k: int, rtol: float = TIE_RTOL) -> float:
    """Like :func:`overlap`, but a returned point counts when its exact score
    (``scores_of[q][j]`` for ``found[q][j]``) reaches the exact k-th score ``tie_lines[q]``
    (within ``rtol``): any of the points tied at the k-th place is a right answer.
    ``sizes[q]`` is how many points the exact answer holds (at most k)."""
    hits = total = 0
    for ids, scores, line, size in zip(found, scores_of, tie_lines, sizes):
        seen: set[int] = set()
        for pid, score in zip(list(ids)[:k], scores):
            if pid not in seen and score >= line - rtol * abs(line):
                hits += 1
            seen.add(pid)
        total += size
    return min(hits, total) / total if total else float("nan")


def relative_gap(got: Sequence[float], want: np.ndarray) -> np.ndarray:
    """|got - want| / |want| per point; inf where the exact score is -inf (the engine
    returned a point that shares no index with the query)."""
    got = np.asarray(got, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        gap = np.abs(got - want) / np.maximum(np.abs(want), 1e-12)
    return np.where(np.isfinite(want), gap, np.inf)


def check_sparse(exact: Exact, answers: Sequence[tuple[list[int], list[float]]]) -> dict:
    """Overlaps of sparse answers ``(ids, scores)`` with the exact top-k, and the largest
    relative gap between an engine's score and the exact score of the same point."""
    tops = [exact.sparse_top(q) for q in range(len(answers))]
    exact_scores = [exact.sparse_score(q, ids) if ids else np.zeros(0) for q, (ids, _) in enumerate(answers)]
    gaps = [float(np.max(relative_gap(got, want))) for (ids, got), want in zip(answers, exact_scores) if ids]
    return {
        "queries": len(answers),
        "overlap": overlap([ids for ids, _ in answers], [t for t, _ in tops], exact.k),
        "tie_aware_overlap": tie_aware_overlap([ids for ids, _ in answers], exact_scores,
                                               [line for _, line in tops], [len(t) for t, _ in tops], exact.k),
        "max_score_rel_error": max(gaps) if gaps else None,
    }


def check_hybrid(exact: Exact, answers: Sequence[tuple[list[int], list[float]]]) -> dict:
    """Overlaps of fused answers with the exact RRF top-k: plain (with the reference that
    orders the sparse list's ties by id), and tie-aware, where a returned point counts
    when it can be in the top-k under some order of the sparse list's ties
    (:func:`fused_bounds`; a point outside every exact list has best score 0)."""
    k = exact.k
    bounds = exact.fused_bounds[: len(answers)]
    return {
        "queries": len(answers),
        "overlap": overlap([ids for ids, _ in answers], [list(f)[:k] for f in exact.fused], k),
        "tie_aware_overlap": tie_aware_overlap(
            [ids for ids, _ in answers],
            [[best.get(int(i), 0.0) for i in ids] for (ids, _), (best, _, _) in zip(answers, bounds)],
            [line for _, line, _ in bounds], [size for _, _, size in bounds], k),
    }
