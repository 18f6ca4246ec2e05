"""Bulk load: ``shoal ingest`` (a Ray job) against REST upserts, in the same run.

One server (``python -m gateway serve`` on a free loopback port, a fresh storage
folder), two fresh collections one after the other, both Cosine with HNSW m=16,
ef_construct=100 and a keyword index on ``pos``, both given the same points (the
wordnet set's float16 vectors, payload ``{"pos"}``):

1. REST: ``PUT /points?wait=true`` in batches of 1,000 (bodies built before the
   clock starts), then ``GET /collections/{name}`` polled every 50 ms until green;
2. Ray job: ``python -m gateway ingest`` on ``base.f16.npy`` (``--payload-columns
   pos``) run as a subprocess, timed from its start (joining Ray, Ray Data's start-up
   and all) until the collection is green.

Each is points ÷ seconds to green, with recall@10 of the 1,000 queries (hnsw_ef=64)
against exact numpy neighbours; the ratio ingest ÷ REST, and PASS when it is ≥ 1.3.
The first collection is deleted before the second is loaded. ``--order`` picks which
goes first (default rest,ingest). Beside each figure: the cores other processes of
the machine took meanwhile (``bench.machine``); ``--quiet-wait S`` waits for an idle
machine before each side.

    python -m bench.ingest                     # 100k x 384; a few minutes on 2 cores
    python -m bench.ingest --n 20000           # quick
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson

from bench import dataset, machine
from bench.server import ManagedServer
from bench.shoal_side import RestClient

REPO = Path(__file__).resolve().parents[1]
TARGET = 1.3
K, HNSW_EF, BATCH = 10, 64, 1000


def _create(client: RestClient, name: str, dim: int) -> None:
    client.request("DELETE", f"/collections/{name}")
    client.ok("PUT", f"/collections/{name}", orjson.dumps({"vectors": {"size": dim, "distance": "Cosine"},
                                                          "hnsw_config": {"m": 16, "ef_construct": 100}}))
    client.ok("PUT", f"/collections/{name}/index?wait=true",
              orjson.dumps({"field_name": "pos", "field_schema": "keyword"}))


def _until_green(client: RestClient, name: str, t0: float, timeout: float) -> dict:
    while True:
        info = client.ok("GET", f"/collections/{name}")["result"]
        if info.get("status") == "green":
            return info
        if time.perf_counter() - t0 > timeout:
            raise TimeoutError(f"{name} not green after {timeout:.0f} s")
        time.sleep(0.05)


def _recall(client: RestClient, name: str, queries: np.ndarray, truth: np.ndarray) -> float:
    found = []
    for q in queries:
        body = orjson.dumps({"vector": q, "limit": K, "params": {"hnsw_ef": HNSW_EF}},
                            option=orjson.OPT_SERIALIZE_NUMPY)
        found.append([int(p["id"]) for p in client.ok("POST", f"/collections/{name}/points/search", body)["result"]])
    return dataset.recall_at_k(found, truth, K)


def rest_side(client: RestClient, ds: dataset.Dataset, timeout: float) -> dict:
    name = "ingest_rest"
    _create(client, name, ds.dim)
    bodies = []
    for s in range(0, ds.n, BATCH):
        points = [{"id": i, "vector": ds.base[i], "payload": {"pos": ds.pos[i]}} for i in range(s, min(s + BATCH, ds.n))]
        bodies.append(orjson.dumps({"points": points}, option=orjson.OPT_SERIALIZE_NUMPY))
    t0 = time.perf_counter()
    for body in bodies:
        client.ok("PUT", f"/collections/{name}/points?wait=true", body)
    loaded = time.perf_counter() - t0
    info = _until_green(client, name, t0, timeout)
    return {"name": name, "seconds": time.perf_counter() - t0, "load_seconds": loaded, "points": info["points_count"]}


def ingest_side(client: RestClient, server: ManagedServer, files: Path, ds: dataset.Dataset, timeout: float,
                work: Path, flags: list[str]) -> dict:
    name = "ingest_ray"
    _create(client, name, ds.dim)
    cmd = [sys.executable, "-m", "gateway", "ingest", "--collection", name, "--url", server.url,
           "--storage", server.storage, "--payload-columns", "pos", "--rejects", str(work / "rejects.jsonl"),
           "--state-dir", str(work / "state"), *flags, str(files / "base.f16.npy")]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    loaded = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"shoal ingest exited {done.returncode}: {done.stderr[-2000:]}")
    info = _until_green(client, name, t0, timeout)
    return {"name": name, "seconds": time.perf_counter() - t0, "load_seconds": loaded, "points": info["points_count"],
            "summary": done.stdout.strip().splitlines()[0]}


def _prefix(source: Path, n: int, into: Path) -> Path:
    """The first ``n`` rows of the dataset as files ``shoal ingest`` reads."""
    np.save(into / "base.f16.npy", np.load(source / "base.f16.npy", mmap_mode="r")[:n])
    with open(source / "base.jsonl", "rb") as src, open(into / "base.jsonl", "wb") as dst:
        for _, line in zip(range(n), src):
            dst.write(line)
    return into


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default=str(REPO / dataset.DEFAULT_DATASET))
    parser.add_argument("--n", type=int, help="prefix of the base set (default: all of it)")
    parser.add_argument("--order", default="rest,ingest", choices=("rest,ingest", "ingest,rest"))
    parser.add_argument("--green-timeout", type=float, default=900.0)
    parser.add_argument("--quiet-wait", type=float, default=0.0,
                        help="before each side, wait up to S seconds for other processes to go idle")
    parser.add_argument("--ingest-flags", default="", help="more flags for shoal ingest, e.g. '--parallelism 2'")
    parser.add_argument("--out", help="JSON results file")
    args = parser.parse_args(argv)
    ds = dataset.load(args.dataset, args.n)
    truth = dataset.exact_top_k(dataset.normalise(ds.base), dataset.normalise(ds.queries), K)
    results: dict = {"n": ds.n, "dim": ds.dim, "order": args.order}
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp, ManagedServer(str(REPO)) as server:
        work = Path(tmp)
        files = Path(args.dataset) if args.n is None else _prefix(Path(args.dataset), ds.n, work)
        client = RestClient(server.url)
        for side in args.order.split(","):
            if args.quiet_wait > 0:
                machine.wait_for_quiet(args.quiet_wait)
            with machine.LoadMeter(server.pid) as meter:
                if side == "rest":
                    out = rest_side(client, ds, args.green_timeout)
                else:
                    out = ingest_side(client, server, files, ds, args.green_timeout, work, args.ingest_flags.split())
            out["load"] = meter.result
            out["points_per_s"] = ds.n / out["seconds"]
            out["recall"] = _recall(client, out["name"], ds.queries, truth)
            client.ok("DELETE", f"/collections/{out['name']}")
            results[side] = out
        client.close()
    ratio = results["ingest"]["points_per_s"] / results["rest"]["points_per_s"]
    results["ratio"] = ratio
    for side, label in (("rest", "REST upserts of 1,000, wait=true"), ("ingest", "shoal ingest (Ray job)")):
        r = results[side]
        print(f"{label:34s} {r['points_per_s']:8,.0f} points/s to green  ({r['seconds']:.1f} s; loaded in "
              f"{r['load_seconds']:.1f} s)  recall@10 {r['recall']:.3f}  other processes "
              f"{r['load']['foreign_cores']:.2f} cores")
    print(f"ratio ingest / REST: {ratio:.2f}x  (target >= {TARGET}x)")
    print(f"{'PASS' if ratio >= TARGET else 'FAIL'}: bulk load through the Ray job {ratio:.2f}x the REST path")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))
    return 0 if ratio >= TARGET else 1


if __name__ == "__main__":
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    sys.exit(main())
