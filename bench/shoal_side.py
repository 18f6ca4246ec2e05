"""The Shoal side: everything through Shoal's Qdrant REST API, as a Qdrant user would.

Sequence (Qdrant 1.15 routes):
1. ``DELETE /collections/{name}`` (a leftover from an earlier run), then
   ``PUT /collections/{name}`` with Cosine, HNSW m / ef_construct, and
   ``PUT /collections/{name}/index?wait=true`` for a keyword index on ``pos``.
2. Ingestion clock: ``PUT /collections/{name}/points?wait=true`` in batches of 1,000
   (bodies serialised before the clock starts), then ``GET /collections/{name}`` polled
   until ``result.status`` is "green" — Qdrant's signal that optimisation (the HNSW
   build) is finished, so the points are searchable through the index.
3. Recall: every query once, sequentially, on one keep-alive connection
   (``POST /points/search`` or ``/points/query`` with ``params.hnsw_ef``).
4. Latency and throughput: the load generator (wrk or aiohttp) with 1, 8 and 32
   connections, rotating through the same bodies; filtered runs add a ``match`` filter.
5. Memory: summed RSS/PSS over the server's process tree (gateway + Ray processes).
"""

from __future__ import annotations

import http.client
import os
import tempfile
import time
from urllib.parse import urlsplit

import numpy as np
import orjson

from bench import dataset, loadgen, machine, procmem, timing
from bench.config import BenchConfig


class RestClient:
    """A minimal keep-alive JSON client over http.client (sequential use only)."""

    def __init__(self, url: str, timeout_s: float = 600.0):
        loadgen.check_loopback(url)
        parts = urlsplit(url)
        self.host, self.port = parts.hostname, parts.port or 80
        self.timeout_s = timeout_s
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout_s)

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, dict]:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        for attempt in (0, 1):
            try:
                self.conn.request(method, path, body=body, headers=headers)
                resp = self.conn.getresponse()
                data = resp.read()
                break
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                # The server closed an idle keep-alive connection: reconnect once.
                self.conn.close()
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout_s)
                if attempt:
                    raise
        try:
            payload = orjson.loads(data) if data else {}
        except orjson.JSONDecodeError:
            payload = {"raw": data[:500].decode(errors="replace")}
        return resp.status, payload

    def ok(self, method: str, path: str, body: bytes | None = None) -> dict:
        status, payload = self.request(method, path, body)
        if status != 200:
            raise RuntimeError(f"{method} {path} -> HTTP {status}: {str(payload)[:500]}")
        return payload

    def close(self) -> None:
        self.conn.close()


def _search_path(cfg: BenchConfig) -> str:
    if cfg.shoal_endpoint not in ("search", "query"):
        raise ValueError(f"unknown endpoint {cfg.shoal_endpoint!r}")
    return f"/collections/{cfg.collection}/points/{cfg.shoal_endpoint}"


def _search_bodies(cfg: BenchConfig, queries: np.ndarray, pos_value: str | None) -> list[bytes]:
    key = "vector" if cfg.shoal_endpoint == "search" else "query"
    bodies = []
    for q in queries:
        body: dict = {key: q, "limit": cfg.k, "params": {"hnsw_ef": cfg.hnsw_ef}}
        if pos_value is not None:
            body["filter"] = {"must": [{"key": "pos", "match": {"value": pos_value}}]}
        bodies.append(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY))
    return bodies


def _ids(cfg: BenchConfig, payload: dict) -> list[int]:
    result = payload["result"]
    points = result["points"] if cfg.shoal_endpoint == "query" else result
    return [int(p["id"]) for p in points]


def _create_collection(client: RestClient, cfg: BenchConfig, dim: int) -> None:
    name = cfg.collection
    status, _ = client.request("DELETE", f"/collections/{name}")
    if status not in (200, 404):
        raise RuntimeError(f"DELETE /collections/{name} -> HTTP {status}")
    client.ok(
        "PUT",
        f"/collections/{name}",
        orjson.dumps(
            {
                "vectors": {"size": dim, "distance": "Cosine"},
                "hnsw_config": {"m": cfg.m, "ef_construct": cfg.ef_construct},
            }
        ),
    )
    client.ok(
        "PUT",
        f"/collections/{name}/index?wait=true",
        orjson.dumps({"field_name": "pos", "field_schema": "keyword"}),
    )


def _ingest(client: RestClient, cfg: BenchConfig, ds: dataset.Dataset) -> dict:
    name = cfg.collection
    bodies = []
    for s in range(0, ds.n, cfg.batch_size):
        points = [{"id": i, "vector": ds.base[i], "payload": {"pos": ds.pos[i]}} for i in range(s, min(s + cfg.batch_size, ds.n))]
        bodies.append(orjson.dumps({"points": points}, option=orjson.OPT_SERIALIZE_NUMPY))
    t0 = time.perf_counter()
    for body in bodies:
        client.ok("PUT", f"/collections/{name}/points?wait=true", body)
    t_acked = time.perf_counter()
    polls, info = 0, {}
    while True:
        info = client.ok("GET", f"/collections/{name}")["result"]
        polls += 1
        if info.get("status") == "green":
            break
        if time.perf_counter() - t0 > cfg.green_timeout_s:
            raise TimeoutError(f"collection not green after {cfg.green_timeout_s:.0f}s: {info.get('status')}")
        time.sleep(0.05)
    t_green = time.perf_counter()
    return {
        "points_per_s": ds.n / (t_green - t0),
        "seconds": t_green - t0,
        "upsert_seconds": t_acked - t0,
        "until_green_seconds": t_green - t_acked,
        "status_polls": polls,
        "points": info.get("points_count"),
        "indexed_vectors": info.get("indexed_vectors_count"),
        "segments": info.get("segments_count"),
    }


def _recall_pass(client: RestClient, cfg: BenchConfig, bodies: list[bytes], truth: np.ndarray) -> dict:
    """Every query once, in order, on one connection: recall and client-side latency."""
    path = _search_path(cfg)
    answers, lat = [], []
    for body in bodies:
        t0 = time.perf_counter()
        payload = client.ok("POST", path, body)
        lat.append(time.perf_counter() - t0)
        answers.append(_ids(cfg, payload))
    arr = np.asarray(lat) * 1000
    return {
        "recall": dataset.recall_at_k(answers, truth, cfg.k),
        "python_client_p50_ms": float(np.percentile(arr, 50)),
        "python_client_p99_ms": float(np.percentile(arr, 99)),
    }


def run(cfg: BenchConfig, gt: dict[str, np.ndarray], url: str, server_pid: int | None) -> dict:
    """Measure Shoal through REST at ``url``; ``server_pid`` roots the memory figure."""
    ds = dataset.load(cfg.dataset, cfg.n)
    generator = loadgen.choose(cfg.loadgen)
    client = RestClient(url)
    out: dict = {"engine": "shoal", "n": ds.n, "url": url, "loadgen": generator}
    out["cpu_probe_start"] = timing.cpu_probe()
    search_url = url.rstrip("/") + _search_path(cfg)
    meter = machine.LoadMeter(server_pid)
    with tempfile.TemporaryDirectory(prefix="bench-bodies-") as tmp, meter:
        try:
            _create_collection(client, cfg, ds.dim)
            out["ingest"] = _ingest(client, cfg, ds)

            bodies = _search_bodies(cfg, ds.queries, None)
            bodies_file = os.path.join(tmp, "search.jsonl")
            loadgen.write_bodies(bodies_file, bodies)
            search = _recall_pass(client, cfg, bodies, gt[""])
            search["latency"] = loadgen.run(
                search_url, bodies_file, 1, cfg.duration_s, cfg.max_requests, generator
            )
            search["concurrency"] = {}
            for conc in cfg.concurrencies:
                loadgen.wait_a_moment()
                search["concurrency"][str(conc)] = loadgen.run(
                    search_url, bodies_file, conc, cfg.duration_s, cfg.max_requests, generator
                )
            out["search"] = search

            out["filtered"] = {}
            for value in cfg.filters:
                fbodies = _search_bodies(cfg, ds.queries, value)
                ffile = os.path.join(tmp, f"search-{value}.jsonl")
                loadgen.write_bodies(ffile, fbodies)
                entry = _recall_pass(client, cfg, fbodies, gt[value])
                entry["selectivity"] = dataset.selectivity(ds, value)
                loadgen.wait_a_moment()
                entry["load"] = loadgen.run(
                    search_url, ffile, cfg.filter_concurrency, cfg.duration_s / 2, cfg.max_requests, generator
                )
                entry["qps"] = entry["load"]["qps"]
                out["filtered"][value] = entry
            out["cpu_probe_end"] = timing.cpu_probe()
        finally:
            if server_pid is not None:
                mem = procmem.tree_memory(server_pid)
                out["memory"] = {k: mem[k] for k in ("rss_mib", "pss_mib", "processes")}
                out["memory"]["per_process"] = mem["per_process"]
            client.close()
    out["machine_load"] = meter.result
    return out
