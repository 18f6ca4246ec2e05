"""Loading wordnet-minilm-384 and computing the exact neighbours every recall is against.

The dataset ships float16 embeddings and no neighbours (its README asks for them to be
computed with numpy on the float32 cast). Ground truth is Cosine: both sides are
L2-normalised in float32 and ranked by dot product, which is how Qdrant scores Cosine
(it normalises vectors on upsert). Filtered ground truth ranks only the points whose
``pos`` equals the filter value, i.e. the exact answer to a `match` filter.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np

DEFAULT_DATASET = os.path.join("..", "shared", "datasets", "wordnet-minilm-384")


@dataclass
class Dataset:
    """Base vectors (float32, as cast), their ``pos`` payload and the query vectors."""

    base: np.ndarray  # (n, 384) float32
    pos: list[str]  # pos of row i
    queries: np.ndarray  # (q, 384) float32

    @property
    def n(self) -> int:
        return int(self.base.shape[0])

    @property
    def dim(self) -> int:
        return int(self.base.shape[1])


def load(path: str, n: int | None = None) -> Dataset:
    """Load the first ``n`` base rows (all when None) and all queries.

    Raises FileNotFoundError naming the path when the dataset is missing, since a
    relative default is easy to get wrong when run from outside the repository root.
    """
    base_file = os.path.join(path, "base.f16.npy")
    if not os.path.exists(base_file):
        raise FileNotFoundError(
            f"dataset not found: {base_file} (pass --dataset; the default is relative "
            "to the repository root)"
        )
    base16 = np.load(base_file, mmap_mode="r")
    if n is not None:
        if n <= 0:
            raise ValueError(f"--n must be positive, got {n}")
        base16 = base16[:n]
    base = np.ascontiguousarray(base16, dtype=np.float32)
    pos: list[str] = []
    with open(os.path.join(path, "base.jsonl"), "rb") as fh:
        for line in fh:
            if len(pos) >= base.shape[0]:
                break
            pos.append(json.loads(line)["pos"])
    if len(pos) != base.shape[0]:
        raise ValueError(f"base.jsonl has {len(pos)} rows, base.f16.npy {base.shape[0]}")
    queries = np.load(os.path.join(path, "queries.f16.npy")).astype(np.float32)
    return Dataset(base=base, pos=pos, queries=queries)


def normalise(x: np.ndarray) -> np.ndarray:
    """Row-wise L2 normalisation into a new array (inputs are never mutated)."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return x / norms


def exact_top_k(base_n: np.ndarray, queries_n: np.ndarray, k: int, chunk: int = 128) -> np.ndarray:
    """Indices of the k best rows of ``base_n`` per query, best first (normalised inputs).

    Chunked over queries so the score matrix stays small at 100k rows.
    """
    k = min(k, base_n.shape[0])
    out = np.empty((queries_n.shape[0], k), dtype=np.int64)
    for s in range(0, queries_n.shape[0], chunk):
        scores = queries_n[s : s + chunk] @ base_n.T
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        part_scores = np.take_along_axis(scores, part, axis=1)
        order = np.argsort(-part_scores, axis=1, kind="stable")
        out[s : s + chunk] = np.take_along_axis(part, order, axis=1)
    return out


def ground_truth(ds: Dataset, k: int, filters: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Exact top-k ids: key "" for unfiltered, key = pos value for each filter.

    Ids are base row numbers, which are also the point ids every side uploads.
    """
    base_n = normalise(ds.base)
    q_n = normalise(ds.queries)
    gt = {"": exact_top_k(base_n, q_n, k)}
    pos = np.asarray(ds.pos)
    for value in filters:
        rows = np.flatnonzero(pos == value)
        if rows.size == 0:
            raise ValueError(f"no base point has pos={value!r}")
        gt[value] = rows[exact_top_k(base_n[rows], q_n, k)]
    return gt


def selectivity(ds: Dataset, value: str) -> float:
    """Share of base points whose pos equals ``value``."""
    return sum(1 for p in ds.pos if p == value) / ds.n


def recall_at_k(found: list[list[int]], truth: np.ndarray, k: int) -> float:
    """Mean over queries of |found[:k] ∩ truth[:k]| / k (found[i] answers query i)."""
    if len(found) != truth.shape[0]:
        raise ValueError(f"{len(found)} answers for {truth.shape[0]} queries")
    hits = 0
    for ids, true_ids in zip(found, truth):
        hits += len(set(int(i) for i in ids[:k]) & set(int(t) for t in true_ids[:k]))
    return hits / (k * truth.shape[0])


def saved_truth(path: str, n: int | None, k: int, folder: str) -> tuple[int, int, str]:
    """The exact top-``k`` of every query over the first ``n`` points of the dataset at
    ``path``, saved as ``truth.npy`` in ``folder`` (for benchmark child processes);
    the points' count and dimension, and the file."""
    data = load(path, n)
    truth = exact_top_k(normalise(data.base), normalise(data.queries), k)
    out = os.path.join(folder, "truth.npy")
    np.save(out, truth)
    return data.n, data.dim, out
