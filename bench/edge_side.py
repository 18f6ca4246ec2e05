"""The Qdrant Edge reference: Qdrant's own engine in-process through ``qdrant-edge-py``.

Edge is a single Qdrant shard without a server. How it is driven, and why:
- The shard is created with Qdrant's collection settings of this benchmark (HNSW m,
  ef_construct; Qdrant's default full_scan_threshold) and the keyword index on ``pos``
  is created before loading, as for Shoal, so the HNSW build also adds Qdrant's
  per-value payload links (Qdrant does that for indexed keyword fields).
- Edge has no background optimiser: ``EdgeShard.optimize()`` runs the segment
  optimisers in the calling thread and returns when none is planned. "Searchable index"
  for Edge is therefore upserts of 1,000 points followed by one ``optimize()``; the
  shard's ``info().indexed_vectors_count`` is recorded to show the graph covers every point.
- Search is ``EdgeShard.query`` (one request per call) and ``EdgeShard.query_batch``
  (all queries in one planned call); the better of the two is Edge's "best".
- Requests and points are built before the clock starts, so the figures are the
  engine's and not the Python object construction's.
Runs in its own worker process (see ``run.py``) so its RSS is its own.
"""

from __future__ import annotations

import gc
import shutil
import tempfile
import time

import numpy as np

from bench import dataset, procmem, timing
from bench.config import BenchConfig


def _pos_filter(qe, value: str):
    return qe.Filter(must=[qe.FieldCondition(key="pos", match=qe.MatchValue(value))])


def run(cfg: BenchConfig, gt: dict[str, np.ndarray]) -> dict:
    """Measure Edge end to end; returns the figures as a JSON-able dict."""
    import qdrant_edge as qe

    ds = dataset.load(cfg.dataset, cfg.n)
    q_lists = [q.tolist() for q in ds.queries]
    nq = len(q_lists)
    out: dict = {"engine": "qdrant-edge", "n": ds.n}
    out["cpu_probe_start"] = timing.cpu_probe()
    try:
        from importlib.metadata import version

        out["version"] = version("qdrant-edge-py")
    except Exception:  # metadata is informative only
        out["version"] = None

    gc.collect()
    mem_before = procmem.self_memory()
    # Points are built first so the clock covers the engine's work only.
    batches = []
    for s in range(0, ds.n, cfg.batch_size):
        rows = range(s, min(s + cfg.batch_size, ds.n))
        batches.append([qe.Point(i, ds.base[i].tolist(), {"pos": ds.pos[i]}) for i in rows])

    workdir = tempfile.mkdtemp(prefix="bench-edge-")
    try:
        config = qe.EdgeConfig(
            vectors=qe.EdgeVectorParams(size=ds.dim, distance=qe.Distance.Cosine),
            hnsw_config=qe.HnswIndexConfig(
                m=cfg.m,
                ef_construct=cfg.ef_construct,
                full_scan_threshold=cfg.full_scan_threshold_kb,
            ),
            max_search_threads=cfg.edge_search_threads,
        )
        out["max_search_threads"] = cfg.edge_search_threads
        shard = qe.EdgeShard.create(workdir + "/shard", config)
        shard.update(qe.UpdateOperation.create_field_index("pos", qe.PayloadSchemaType.Keyword))
        out["threads_after_create"] = procmem.thread_count()

        t0 = time.perf_counter()
        for pts in batches:
            shard.update(qe.UpdateOperation.upsert_points(pts))
        t_upserted = time.perf_counter()
        c0 = time.process_time()
        optimized = shard.optimize()
        t_built = time.perf_counter()
        optimize_cores = (time.process_time() - c0) / (t_built - t_upserted)
        info = shard.info()
        out["ingest"] = {
            "points_per_s": ds.n / (t_built - t0),
            "seconds": t_built - t0,
            "upsert_seconds": t_upserted - t0,
            "optimize_seconds": t_built - t_upserted,
            "optimize_did_work": bool(optimized),
            "optimize_cpu_cores_used": optimize_cores,
            "segments": info.segments_count,
            "points": info.points_count,
            "indexed_vectors": info.indexed_vectors_count,
        }
        del batches
        gc.collect()

        params = qe.SearchParams(hnsw_ef=cfg.hnsw_ef)

        def requests(flt=None):
            return [
                qe.QueryRequest(limit=cfg.k, query=qe.Query.Nearest(v), params=params, filter=flt)
                for v in q_lists
            ]

        def ids_of(points) -> list[int]:
            return [int(p.id) for p in points]

        # Unfiltered: latency + recall pass, then the loop and the batch throughput.
        reqs = requests()
        answers, lat = timing.timed_calls(lambda i: ids_of(shard.query(reqs[i])), nq)
        batch = qe.QueryBatchRequest(reqs)
        batch_answers = [ids_of(r) for r in shard.query_batch(batch)]
        loop = timing.loop_qps(lambda i: shard.query(reqs[i]), nq, cfg.duration_s)
        bat = timing.batch_qps(lambda: shard.query_batch(batch), nq, cfg.duration_s)
        out["search"] = {
            "latency": lat,
            "recall": dataset.recall_at_k(answers, gt[""], cfg.k),
            "batch_recall": dataset.recall_at_k(batch_answers, gt[""], cfg.k),
            **timing.best_of(loop, bat),
        }

        out["filtered"] = {}
        for value in cfg.filters:
            freqs = requests(_pos_filter(qe, value))
            f_answers, f_lat = timing.timed_calls(lambda i: ids_of(shard.query(freqs[i])), nq)
            fbatch = qe.QueryBatchRequest(freqs)
            f_loop = timing.loop_qps(lambda i: shard.query(freqs[i]), nq, cfg.duration_s / 2)
            f_bat = timing.batch_qps(lambda: shard.query_batch(fbatch), nq, cfg.duration_s / 2)
            out["filtered"][value] = {
                "selectivity": dataset.selectivity(ds, value),
                "recall": dataset.recall_at_k(f_answers, gt[value], cfg.k),
                "latency": f_lat,
                **timing.best_of(f_loop, f_bat),
            }

        out["threads_after_search"] = procmem.thread_count()
        out["cpu_probe_end"] = timing.cpu_probe()
        gc.collect()
        out["memory"] = procmem.memory_since(mem_before)
        shard.close()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return out
