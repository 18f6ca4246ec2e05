"""Quantized search against float32 search on one shard, with recall@10 beside every
speed and the memory each mode holds.

The first ``--n`` points of wordnet-minilm-384 (100,000 x 384, Cosine) go into shards,
built once and closed (snapshot: vectors, graph): one plain (hnswlib's graph
over float32, ``shard.hnsw``), one with ``scalar`` int8 quantization (Shoal's own graph
over int8, ``shard.scalar_graph``), one with ``product`` quantization at x16 (faiss's HNSW
over 96-byte PQ codes, ``shard.product``, its codebooks trained on the first 10,000
vectors, as a shard's are), each graph added 10,000 vectors at a time. Then a fresh
process per mode opens its shard and runs the 1,000 queries (limit 10, ``hnsw_ef`` 64),
one query per ``search_batch`` call (as one REST request asks a shard) and in batches of
50, and reports recall@10, searches/s and ``RssAnon`` (the process's own memory:
vectors in RAM and graph) after opening.

Modes: ``float32``; ``int8`` with ``rescore`` and ``oversampling`` 2 (the quantized
graph's candidates scored again with the stored vectors: the mode the issue's target is
for); ``int8`` without rescoring (Qdrant's default for scalar); ``int8 on_disk`` (the
same, its float32 vectors in a map file: only the int8 copy and the graph stay in the
process's memory, as Qdrant's ``always_ram`` quantized vectors beside on-disk originals);
``product x16`` with ``rescore`` and ``oversampling`` 2 (the least that keeps recall@10 at
0.95 or more: the graph's own top 10, the row without rescoring, holds about 0.84 of
it), without rescoring (Qdrant's default for product too), and ``on_disk``; ``binary``
in each of Qdrant's encodings (one bit, one and a half, two; two with the query in 8 bits),
rescored from ``oversampling`` 4 (usearch's graphs over the bits, ``shard.quantized``).

References measured in the same run, in the same kind of fresh process: raw hnswlib
(float32, the library Shoal's plain graph is) and raw usearch (int8, a library's int8
graph, which Shoal's scalar graph was until it had its own), one ``knn_query`` /
``search`` per query, one thread.

    python -m bench.quantized                  # ~2 min on 2 cores, most of it the graph builds
    python -m bench.quantized --n 20000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

from bench import dataset
from bench.on_disk import filled, memory
from shard.local_shard import LocalShard
from shard.types import (
    Distance,
    NearestQuery,
    Quantization,
    QuantizationParams,
    SearchRequest,
    ShardConfig,
    VectorParams,
)

K, EF, M, EF_CONSTRUCT = 10, 64, 16, 100
QUERY_BATCH = 50
SHARDS = {  # shard (its folder) -> (its quantization, the kind of graph it gets)
    "float32": (None, "hnsw"),
    "int8": (Quantization("scalar", quantile=0.99, always_ram=True), "scalar"),
    "product": (Quantization("product", compression="x16", always_ram=True), "product"),
    "binary1": (Quantization("binary", always_ram=True), "binary"),
    "binary15": (Quantization("binary", always_ram=True, encoding="one_and_half_bits"), "binary"),
    "binary2": (Quantization("binary", always_ram=True, encoding="two_bits"), "binary"),
    "binary2q8": (Quantization("binary", always_ram=True, encoding="two_bits", query_encoding="scalar8bits"), "binary"),
}
RESCORED = QuantizationParams(rescore=True, oversampling=2.0)  # enough for int8 and product x16
BINARY_RESCORED = QuantizationParams(rescore=True, oversampling=4.0)
MODES = {  # name -> (shard, on_disk, search params)
    "float32": ("float32", False, None),
    "int8, rescore, oversampling 2": ("int8", False, RESCORED),
    "int8, no rescore": ("int8", False, None),
    "int8 on_disk, rescore, oversampling 2": ("int8", True, RESCORED),
    "product x16, rescore, oversampling 2": ("product", False, RESCORED),
    "product x16, no rescore": ("product", False, None),
    "product x16 on_disk, rescore, oversampling 2": ("product", True, RESCORED),
    "binary 1 bit, rescore, oversampling 4": ("binary1", False, BINARY_RESCORED),
    "binary 1.5 bits, rescore, oversampling 4": ("binary15", False, BINARY_RESCORED),
    "binary 2 bits, rescore, oversampling 4": ("binary2", False, BINARY_RESCORED),
    "binary 2 bits, 8-bit query, rescore, ovs. 4": ("binary2q8", False, BINARY_RESCORED),
}


def shard_config(shard: str, on_disk: bool, dim: int) -> ShardConfig:
    return ShardConfig(vectors={"": VectorParams(dim, Distance.COSINE, on_disk=on_disk)},
                       quantization=SHARDS[shard][0])


def build(folder: str, data_dir: str, n: int, shard_name: str) -> float:
    """The shard, written and closed (snapshotted); seconds to a built graph."""
    dim = np.load(os.path.join(data_dir, "queries.f16.npy"), mmap_mode="r").shape[1]
    started = time.perf_counter()
    shard = filled(folder, data_dir, n, shard_config(shard_name, False, dim))
    while shard.index_step(max_rows=10_000):
        pass
    took = time.perf_counter() - started
    shard.close()
    return took


def _searches(search, queries: np.ndarray, truth: np.ndarray) -> dict:
    found: list[list[int]] = []
    started = time.perf_counter()
    for q in queries:
        found.append(search(q))
    took = time.perf_counter() - started
    return {"qps": len(queries) / took, "recall": dataset.recall_at_k(found, truth, K)}


def measure(folder: str, data_dir: str, mode: str, truth_file: str) -> dict:
    """In a fresh process: open the shard, search, report memory, speed and recall."""
    shard_name, on_disk, params = MODES[mode]
    queries = np.load(os.path.join(data_dir, "queries.f16.npy")).astype(np.float32)
    truth = np.load(truth_file)
    shard = LocalShard(folder, shard_config(shard_name, on_disk, queries.shape[1]), background_indexing=False)
    assert shard.graphs[""] is not None and shard.graphs[""].kind == SHARDS[shard_name][1]
    after_open = memory()

    def one(q):
        hits = shard.search_batch([SearchRequest(NearestQuery(q), limit=K, hnsw_ef=EF, quantization=params)])[0]
        return [int(h.id) for h in hits]

    single = _searches(one, queries, truth)
    started = time.perf_counter()
    for lo in range(0, len(queries), QUERY_BATCH):
        shard.search_batch([SearchRequest(NearestQuery(q), limit=K, hnsw_ef=EF, quantization=params)
                            for q in queries[lo:lo + QUERY_BATCH]])
    batched = len(queries) / (time.perf_counter() - started)
    shard.close(take_snapshot=False)
    return {"single": single, "batched_qps": batched, "memory": after_open}


def reference(kind: str, data_dir: str, n: int, truth_file: str) -> dict:
    """Raw hnswlib (float32) or usearch (int8) over the same vectors, one thread (usearch
    quantizes float32 rows to int8 itself, by its own fixed scale)."""
    base = dataset.normalise(np.load(os.path.join(data_dir, "base.f16.npy"))[:n].astype(np.float32))
    queries = dataset.normalise(np.load(os.path.join(data_dir, "queries.f16.npy")).astype(np.float32))
    truth = np.load(truth_file)
    before = memory()
    if kind == "hnswlib":
        import hnswlib

        index = hnswlib.Index("ip", base.shape[1])
        index.init_index(len(base), M=M, ef_construction=EF_CONSTRUCT, random_seed=100)
        index.add_items(base, np.arange(len(base)))
        index.set_ef(EF)
        index.set_num_threads(1)
        search = lambda q: index.knn_query(q[None], k=K)[0][0].tolist()  # noqa: E731
    else:
        from usearch.index import Index

        index = Index(ndim=base.shape[1], metric="ip", dtype="i8", connectivity=M, expansion_add=EF_CONSTRUCT,
                      expansion_search=EF)
        index.add(np.arange(len(base)), base)
        search = lambda q: np.asarray(index.search(q, K).keys).tolist()  # noqa: E731
    added = memory()["RssAnon"] - before["RssAnon"]
    return {"single": _searches(search, queries, truth), "index_rss": added}


def _mb(n: int) -> str:
    return f"{n / 2**20:,.0f} MB"


def _child(args: dict) -> dict:
    out = subprocess.run([sys.executable, "-m", "bench.quantized", "--child", json.dumps(args)],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default=dataset.DEFAULT_DATASET)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--out", help="write the figures as JSON here")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # json: one measure() or reference()
    args = parser.parse_args()
    if args.child:
        asked = json.loads(args.child)
        if "reference" in asked:
            print(json.dumps(reference(asked["reference"], asked["data_dir"], asked["n"], asked["truth_file"])))
        else:
            print(json.dumps(measure(**asked)))
        return
    work = tempfile.mkdtemp(prefix="shoal-quantized-")
    try:
        n, dim, truth_file = dataset.saved_truth(args.dataset, args.n, K, work)
        built = {name: build(os.path.join(work, name), args.dataset, n, name) for name in SHARDS}
        results = {mode: _child({"folder": os.path.join(work, MODES[mode][0]),
                                 "data_dir": args.dataset, "mode": mode, "truth_file": truth_file})
                   for mode in MODES}
        refs = {kind: _child({"reference": kind, "data_dir": args.dataset, "n": n, "truth_file": truth_file})
                for kind in ("hnswlib", "usearch int8")}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base = results["float32"]
    print(f"\n{n:,} x {dim} Cosine, HNSW m {M}, ef_construct {EF_CONSTRUCT}, hnsw_ef {EF}, limit {K}; one thread")
    print("graph built in " + ", ".join(f"{took:.0f} s ({name})" for name, took in built.items()) + "\n")
    head = f"{'mode':<44} | {'recall@10':>9} | {'1 query/call':>12} | {'vs float32':>10} | {'50/call':>8} | {'RssAnon':>8}"
    print(head)
    print("-" * len(head))
    for mode, r in results.items():
        print(f"{mode:<44} | {r['single']['recall']:>9.4f} | {r['single']['qps']:>8,.0f} q/s | "
              f"{r['single']['qps'] / base['single']['qps']:>9.2f}x | {r['batched_qps']:>8,.0f} | "
              f"{_mb(r['memory']['RssAnon']):>8}")
    for kind, r in refs.items():
        print(f"{'reference: raw ' + kind:<44} | {r['single']['recall']:>9.4f} | {r['single']['qps']:>8,.0f} q/s | "
              f"{r['single']['qps'] / base['single']['qps']:>9.2f}x | {'':>8} | +{_mb(r['index_rss']):>7}")
    target = results["int8, rescore, oversampling 2"]["single"]
    ratio = target["qps"] / base["single"]["qps"]
    verdict = "PASS" if ratio >= 1.2 and target["recall"] >= 0.95 else "FAIL"
    print(f"\ntarget: int8 rescored >= 1.2x float32 at recall@10 >= 0.95: {ratio:.2f}x at {target['recall']:.4f} "
          f"-> {verdict}")
    if args.out:
        with open(args.out, "w") as fh:
            json.dump({"n": n, "dim": dim, "built_s": built, "modes": results, "references": refs,
                       "ratio": ratio, "verdict": verdict}, fh, indent=2)


if __name__ == "__main__":
    main()
