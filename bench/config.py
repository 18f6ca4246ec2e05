"""The settings every side of the benchmark shares, in one frozen object.

The issue fixes the index and search parameters so that the three engines are compared
on equal terms; they live here so no side can drift from the others. The run's CLI
builds one `BenchConfig` and hands it (picklable) to each side's worker process.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# The pos values used as filters, with the base-set share the dataset README states.
# They span a selective, a medium and a broad filter (~3 %, ~12 %, ~70 %).
FILTER_VALUES: tuple[str, ...] = ("adv", "verb", "noun")

COLLECTION_NAME = "bench_wordnet"


@dataclass(frozen=True)
class BenchConfig:
    """Parameters of one benchmark run.

    ``m``/``ef_construct``/``hnsw_ef`` are Qdrant's HNSW names; hnswlib's M,
    ef_construction and ef take the same values. ``duration_s`` bounds every throughput
    measurement; ``max_requests`` additionally bounds the HTTP load generator.
    """

    dataset: str
    n: int | None = None
    k: int = 10
    m: int = 16
    ef_construct: int = 100
    hnsw_ef: int = 64
    batch_size: int = 1000
    duration_s: float = 10.0
    max_requests: int = 1_000_000
    concurrencies: tuple[int, ...] = (8, 32)
    filter_concurrency: int = 32
    filters: tuple[str, ...] = FILTER_VALUES
    collection: str = COLLECTION_NAME
    # Qdrant's default full_scan_threshold (in KB of vectors); Qdrant's query planner
    # scores a filter exactly when its cardinality is below it. Kept at the default so
    # Edge behaves as Qdrant does out of the box.
    full_scan_threshold_kb: int = 10_000
    # Edge's search pool size (EdgeConfig.max_search_threads); None = Edge's default,
    # derived from the CPU count. One thread avoids the per-call hand-off to the pool.
    edge_search_threads: int | None = None
    green_timeout_s: float = 1800.0
    shoal_endpoint: str = "search"  # "search" -> /points/search, "query" -> /points/query
    loadgen: str = "auto"  # "wrk", "aiohttp" or "auto" (wrk when installed)
    extra: dict = field(default_factory=dict)
