"""The hybrid benchmark's Shoal side, through Shoal's Qdrant REST API.

1. ``DELETE`` then ``PUT /collections/{name}``: the dense vector ``dense`` (size, Cosine)
   and the sparse vector ``text`` with ``modifier: idf``, HNSW m / ef_construct of
   ``BenchConfig`` (Qdrant's defaults, the same as Edge's).
2. ``PUT /points?wait=true`` in batches of 1,000, each point
   ``{"id", "vector": {"dense": [...], "text": {"indices", "values"}}}``, then
   ``GET /collections/{name}`` polled until green (timed: the JSON's ``ingest``).
3. For each query kind (``POST /points/query``):
   - sparse-only: ``{"query": {"indices", "values"}, "using": "text", "limit": k}``;
   - hybrid: ``{"prefetch": [{"query": dense, "using": "dense", "limit": L, "params":
     {"hnsw_ef": …}}, {"query": sparse, "using": "text", "limit": L}], "query":
     {"fusion": "rrf"}, "limit": k}``.
   First one request: if Shoal does not answer 200 (prefetch and fusion are not served
   yet), the kind is recorded as failed with Shoal's answer and skipped. Otherwise every
   query once, in order, on one keep-alive connection (the answers the caller checks
   against the exact references; bounded by a time limit too), then the load generator
   (wrk, or the aiohttp client) with ``clients`` connections on the same bodies.
"""

from __future__ import annotations

import os
import tempfile
import time

import orjson

from bench import hybrid_data, loadgen, machine, timing
from bench.config import BenchConfig
from bench.ingest import _until_green
from bench.shoal_side import RestClient

DENSE, TEXT = "dense", "text"
KINDS = ("sparse", "hybrid")


def _sparse(rows: hybrid_data.SparseRows, r: int) -> dict:
    indices, values = rows.row(r)
    return {"indices": indices, "values": values}


def query_bodies(data: hybrid_data.HybridData, cfg: BenchConfig, prefetch_limit: int) -> dict[str, list[bytes]]:
    """The request bodies of each query kind, one per query, serialised once."""
    dumps = lambda body: orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)  # noqa: E731
    bodies: dict[str, list[bytes]] = {kind: [] for kind in KINDS}
    for q in range(len(data.queries)):
        sparse = _sparse(data.queries, q)
        bodies["sparse"].append(dumps({"query": sparse, "using": TEXT, "limit": cfg.k}))
        bodies["hybrid"].append(dumps({
            "prefetch": [
                {"query": data.dense.queries[q], "using": DENSE, "limit": prefetch_limit, "params": {"hnsw_ef": cfg.hnsw_ef}},
                {"query": sparse, "using": TEXT, "limit": prefetch_limit},
            ],
            "query": {"fusion": "rrf"},
            "limit": cfg.k,
        }))
    return bodies


def _load(client: RestClient, cfg: BenchConfig, data: hybrid_data.HybridData) -> dict:
    name, ds = cfg.collection, data.dense
    status, _ = client.request("DELETE", f"/collections/{name}")
    if status not in (200, 404):
        raise RuntimeError(f"DELETE /collections/{name} -> HTTP {status}")
    client.ok("PUT", f"/collections/{name}", orjson.dumps({
        "vectors": {DENSE: {"size": ds.dim, "distance": "Cosine"}},
        "sparse_vectors": {TEXT: {"modifier": "idf"}},
        "hnsw_config": {"m": cfg.m, "ef_construct": cfg.ef_construct},
    }))
    bodies = []
    for s in range(0, ds.n, cfg.batch_size):
        points = [{"id": i, "vector": {DENSE: ds.base[i], TEXT: _sparse(data.docs, i)}} for i in range(s, min(s + cfg.batch_size, ds.n))]
        bodies.append(orjson.dumps({"points": points}, option=orjson.OPT_SERIALIZE_NUMPY))
    t0 = time.perf_counter()
    for body in bodies:
        client.ok("PUT", f"/collections/{name}/points?wait=true", body)
    t_acked = time.perf_counter()
    info = _until_green(client, name, t0, cfg.green_timeout_s)
    t_green = time.perf_counter()
    return {
        "points_per_s": ds.n / (t_green - t0),
        "upsert_seconds": t_acked - t0,
        "until_green_seconds": t_green - t_acked,
        "points": info.get("points_count"),
        "indexed_vectors": info.get("indexed_vectors_count"),
        "segments": info.get("segments_count"),
    }


def _answers(client: RestClient, path: str, bodies: list[bytes], time_limit_s: float) -> dict:
    """Every body once, in order, until ``time_limit_s``: the answers as (ids, scores)."""
    answers, lat = [], []
    deadline = time.perf_counter() + time_limit_s
    for body in bodies:
        t0 = time.perf_counter()
        points = client.ok("POST", path, body)["result"]["points"]
        lat.append(time.perf_counter() - t0)
        answers.append(([int(p["id"]) for p in points], [float(p["score"]) for p in points]))
        if time.perf_counter() > deadline:
            break
    return {"answers": answers, "python_client_latency": timing.percentiles_ms(lat)}


def run(cfg: BenchConfig, data: hybrid_data.HybridData, prefetch_limit: int, clients: int, url: str,
        server_pid: int | None, answers_time_limit_s: float) -> dict:
    """Load the collection at ``url`` and measure both query kinds; a kind Shoal refuses
    is reported under ``errors`` and does not stop the other."""
    generator = loadgen.choose(cfg.loadgen)
    client = RestClient(url)
    path = f"/collections/{cfg.collection}/points/query"
    out: dict = {"engine": "shoal", "n": data.dense.n, "url": url, "loadgen": generator, "errors": {}}
    out["cpu_probe_start"] = timing.cpu_probe()
    meter = machine.LoadMeter(server_pid)
    with tempfile.TemporaryDirectory(prefix="bench-hybrid-") as tmp, meter:
        try:
            out["ingest"] = _load(client, cfg, data)
            for kind, bodies in query_bodies(data, cfg, prefetch_limit).items():
                status, payload = client.request("POST", path, bodies[0])
                if status != 200:
                    out["errors"][kind] = f"HTTP {status}: {orjson.dumps(payload.get('status', payload)).decode()[:300]}"
                    continue
                try:
                    entry = _answers(client, path, bodies, answers_time_limit_s)
                    bodies_file = os.path.join(tmp, f"{kind}.jsonl")
                    loadgen.write_bodies(bodies_file, bodies)
                    loadgen.wait_a_moment()
                    entry["load"] = loadgen.run(url.rstrip("/") + path, bodies_file, clients, cfg.duration_s,
                                                cfg.max_requests, generator)
                except RuntimeError as exc:  # a later request refused, or the load generator failed
                    out["errors"][kind] = str(exc)[:500]
                    continue
                out[kind] = entry
            out["cpu_probe_end"] = timing.cpu_probe()
        finally:
            client.close()
    out["machine_load"] = meter.result
    return out
