"""Small timing helpers shared by the in-process sides (Edge, hnswlib).

Throughput loops rotate through the query set and stop when the time budget is spent,
so every figure covers the same wall-clock budget whatever an engine's speed. Each also
records the process CPU time over wall time ("cpu_cores_used"), which shows whether an
engine spreads one call over both cores.
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np


def percentiles_ms(latencies_s: list[float]) -> dict:
    arr = np.asarray(latencies_s, dtype=np.float64) * 1000.0
    return {
        "p50_ms": float(np.percentile(arr, 50)),
        "p90_ms": float(np.percentile(arr, 90)),
        "p99_ms": float(np.percentile(arr, 99)),
        "mean_ms": float(arr.mean()),
        "calls": int(arr.size),
    }


def timed_calls(call: Callable[[int], list[int]], n_queries: int) -> tuple[list[list[int]], dict]:
    """Call ``call(i)`` once per query, timing each; returns (answers, latency stats)."""
    answers, lat = [], []
    for i in range(n_queries):
        t0 = time.perf_counter()
        ids = call(i)
        lat.append(time.perf_counter() - t0)
        answers.append(ids)
    return answers, percentiles_ms(lat)


def loop_qps(call: Callable[[int], object], n_queries: int, duration_s: float) -> dict:
    """One query per call, rotating through the queries, for ``duration_s`` seconds."""
    done = 0
    c0 = time.process_time()
    t0 = time.perf_counter()
    deadline = t0 + duration_s
    while True:
        call(done % n_queries)
        done += 1
        if done % 64 == 0 and time.perf_counter() >= deadline:
            break
    elapsed = time.perf_counter() - t0
    cores = (time.process_time() - c0) / elapsed
    return {"qps": done / elapsed, "queries": done, "seconds": elapsed, "cpu_cores_used": cores}


def batch_qps(call_all: Callable[[], object], n_queries: int, duration_s: float) -> dict:
    """The whole query set in one call, repeated until ``duration_s`` (at least once)."""
    calls = 0
    c0 = time.process_time()
    t0 = time.perf_counter()
    while True:
        call_all()
        calls += 1
        if time.perf_counter() - t0 >= duration_s:
            break
    elapsed = time.perf_counter() - t0
    cores = (time.process_time() - c0) / elapsed
    return {"qps": calls * n_queries / elapsed, "queries": calls * n_queries, "seconds": elapsed, "cpu_cores_used": cores}


def cpu_probe() -> dict:
    """Time a fixed single-thread workload (ms), recorded at each side's start and end.

    Virtual machines' cores vary in speed from minute to minute (shared hosts); a side's
    figures are comparable with another's only when their probes agree, so the probes go
    into the JSON beside the figures.
    """
    rng = np.random.default_rng(0)
    a = rng.random((256, 384), dtype=np.float32)
    b = rng.random((384, 4096), dtype=np.float32)
    t0 = time.perf_counter()
    s = 0
    for i in range(300_000):
        s += i
    t1 = time.perf_counter()
    for _ in range(5):
        a @ b
    t2 = time.perf_counter()
    return {"python_loop_ms": (t1 - t0) * 1000, "matmul_ms": (t2 - t1) * 1000}  # numpy's BLAS: all cores


def best_of(loop: dict, batch: dict) -> dict:
    """A reference's two ways of searching and which was faster (its "best")."""
    return {
        "loop": loop,
        "batch": batch,
        "best": "loop" if loop["qps"] >= batch["qps"] else "batch",
        "best_qps": max(loop["qps"], batch["qps"]),
    }
