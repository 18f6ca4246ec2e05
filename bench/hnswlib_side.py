"""The raw hnswlib reference: the library Shoal's shards build their graphs with.

It bounds what Shoal can reach: no payloads, no HTTP, no actors, just the graph.
- Ingestion is one ``add_items`` of the whole set with hnswlib's default thread count
  (all cores), after ``init_index`` sized for it (sizing is not timed).
- Search is ``knn_query`` one vector per call with one thread (the per-call figure and the
  latency), and ``knn_query`` of the whole query set in one call with all threads (batch).
- hnswlib's "cosine" space normalises on insert and query, matching Qdrant's Cosine.
hnswlib has no payload, so it takes no part in the filtered rows.
"""

from __future__ import annotations

import gc
import time

import numpy as np

from bench import dataset, procmem, timing
from bench.config import BenchConfig


def run(cfg: BenchConfig, gt: dict[str, np.ndarray]) -> dict:
    """Measure hnswlib end to end; returns the figures as a JSON-able dict."""
    import hnswlib

    ds = dataset.load(cfg.dataset, cfg.n)
    queries = ds.queries
    nq = queries.shape[0]
    labels = np.arange(ds.n, dtype=np.int64)
    out: dict = {"engine": "hnswlib", "n": ds.n, "version": getattr(hnswlib, "__version__", None)}
    out["cpu_probe_start"] = timing.cpu_probe()

    gc.collect()
    mem_before = procmem.self_memory()
    index = hnswlib.Index(space="cosine", dim=ds.dim)
    index.init_index(max_elements=ds.n, M=cfg.m, ef_construction=cfg.ef_construct, random_seed=100)
    t0 = time.perf_counter()
    index.add_items(ds.base, labels)
    seconds = time.perf_counter() - t0
    out["ingest"] = {"points_per_s": ds.n / seconds, "seconds": seconds, "threads": index.num_threads}
    index.set_ef(cfg.hnsw_ef)

    singles = [queries[i : i + 1] for i in range(nq)]

    def one(i: int) -> list[int]:
        found, _ = index.knn_query(singles[i], k=cfg.k, num_threads=1)
        return found[0].tolist()

    answers, lat = timing.timed_calls(one, nq)
    loop = timing.loop_qps(lambda i: index.knn_query(singles[i], k=cfg.k, num_threads=1), nq, cfg.duration_s)
    batch_found, _ = index.knn_query(queries, k=cfg.k)
    bat = timing.batch_qps(lambda: index.knn_query(queries, k=cfg.k), nq, cfg.duration_s)
    out["search"] = {
        "latency": lat,
        "recall": dataset.recall_at_k(answers, gt[""], cfg.k),
        "batch_recall": dataset.recall_at_k(batch_found.tolist(), gt[""], cfg.k),
        **timing.best_of(loop, bat),
    }
    out["cpu_probe_end"] = timing.cpu_probe()
    gc.collect()
    out["memory"] = procmem.memory_since(mem_before)
    return out
