"""The hybrid benchmark's Qdrant Edge side: the same points and queries, in-process.

One ``EdgeShard`` with the dense vector ``dense`` (384, Cosine, HNSW m / ef_construct of
``BenchConfig``, Qdrant's default full_scan_threshold) and the sparse vector ``text`` with
``Modifier.Idf``; points upserted in batches of 1,000, then ``optimize()`` (Edge has no
background optimiser; see ``edge_side``). Two queries, each measured one call per query
(``EdgeShard.query`` in a loop) and as one batch call (``query_batch`` of all queries):

- sparse-only: ``Query.Nearest(SparseVector, using="text")``, limit k;
- hybrid: two prefetches, ``Nearest(dense, using="dense")`` with ``hnsw_ef`` and
  ``Nearest(sparse, using="text")``, each limit L, fused by ``Fusion.Rrf(k=2)`` (Qdrant's
  default k), limit k.

The answers of one pass (ids and scores, one call per query) go back to the caller, which
checks them against the exact references. Requests are built before the clock starts.
Runs in a spawned worker process (``hybrid.py``) so its threads are gone before Shoal runs.
"""

from __future__ import annotations

import shutil
import tempfile
import time

from bench import hybrid_data, timing
from bench.config import BenchConfig

DENSE, TEXT = "dense", "text"


def _answer(points) -> tuple[list[int], list[float]]:
    return [int(p.id) for p in points], [float(p.score) for p in points]


def _measure(shard, qe, requests: list, duration_s: float) -> dict:
    """One pass for the answers and per-call latency, then the loop and the batch."""
    answers, latency = timing.timed_calls(lambda i: _answer(shard.query(requests[i])), len(requests))
    batch = qe.QueryBatchRequest(requests)
    loop = timing.loop_qps(lambda i: shard.query(requests[i]), len(requests), duration_s)
    bat = timing.batch_qps(lambda: shard.query_batch(batch), len(requests), duration_s)
    return {"answers": answers, "latency": latency, **timing.best_of(loop, bat)}


def run(cfg: BenchConfig, prefetch_limit: int) -> dict:
    """Load, optimise and measure Edge; returns the figures and the answers."""
    import qdrant_edge as qe

    data = hybrid_data.load(cfg.dataset, cfg.n)
    ds = data.dense
    out: dict = {"engine": "qdrant-edge", "n": ds.n, "cpu_probe_start": timing.cpu_probe()}

    def sparse(rows: hybrid_data.SparseRows, r: int):
        indices, values = rows.row(r)
        return qe.SparseVector(indices.tolist(), values.tolist())

    batches = [
        [qe.Point(i, {DENSE: ds.base[i].tolist(), TEXT: sparse(data.docs, i)}) for i in range(s, min(s + cfg.batch_size, ds.n))]
        for s in range(0, ds.n, cfg.batch_size)
    ]
    workdir = tempfile.mkdtemp(prefix="bench-hybrid-edge-")
    try:
        config = qe.EdgeConfig(
            vectors={DENSE: qe.EdgeVectorParams(size=ds.dim, distance=qe.Distance.Cosine)},
            sparse_vectors={TEXT: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)},
            hnsw_config=qe.HnswIndexConfig(m=cfg.m, ef_construct=cfg.ef_construct, full_scan_threshold=cfg.full_scan_threshold_kb),
            max_search_threads=cfg.edge_search_threads,
        )
        shard = qe.EdgeShard.create(workdir + "/shard", config)
        t0 = time.perf_counter()
        for points in batches:
            shard.update(qe.UpdateOperation.upsert_points(points))
        t_upserted = time.perf_counter()
        shard.optimize()
        t_built = time.perf_counter()
        info = shard.info()
        out["ingest"] = {
            "points_per_s": ds.n / (t_built - t0),
            "upsert_seconds": t_upserted - t0,
            "optimize_seconds": t_built - t_upserted,
            "segments": info.segments_count,
            "points": info.points_count,
            "indexed_vectors": info.indexed_vectors_count,
        }
        del batches

        params = qe.SearchParams(hnsw_ef=cfg.hnsw_ef)
        nq = len(data.queries)
        sparse_reqs = [qe.QueryRequest(limit=cfg.k, query=qe.Query.Nearest(sparse(data.queries, q), using=TEXT)) for q in range(nq)]
        hybrid_reqs = [
            qe.QueryRequest(
                limit=cfg.k,
                prefetches=[
                    qe.Prefetch(limit=prefetch_limit, query=qe.Query.Nearest(ds.queries[q].tolist(), using=DENSE), params=params),
                    qe.Prefetch(limit=prefetch_limit, query=qe.Query.Nearest(sparse(data.queries, q), using=TEXT)),
                ],
                query=qe.Fusion.Rrf(k=hybrid_data.RRF_K),
            )
            for q in range(nq)
        ]
        out["sparse"] = _measure(shard, qe, sparse_reqs, cfg.duration_s)
        out["hybrid"] = _measure(shard, qe, hybrid_reqs, cfg.duration_s)
        out["cpu_probe_end"] = timing.cpu_probe()
        shard.close()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return out
