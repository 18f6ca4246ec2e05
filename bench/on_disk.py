"""Memory of a shard whose vectors are ``on_disk`` (a numpy memmap, ``shard.vectors``)
against the same shard keeping them in RAM, with recall@10 and search speed beside.

One shard of the first ``--n`` points of wordnet-minilm-384 (100,000 x 384, Cosine) is
built once and closed (snapshot: vectors, graph). Then a fresh process per mode opens
it (the recovery copies the snapshot's rows into RAM or into the map file), runs the
1,000 queries (limit 10, ``hnsw_ef`` 64) and reports, from ``/proc/self/status``:

- ``RssAnon``: the process's own memory, which the kernel can only take back by
  swapping. A RAM shard's vectors are here; a mapped shard's are not.
- ``RssFile``: file pages mapped into the process that are resident right now (the
  map file's rows that searches touched). The kernel drops these under memory
  pressure and reads them back on the next access: page cache, not the process's.
- ``VmHWM``: peak RSS, which includes the recovery's temporary copies.

Done twice: with the HNSW graph (Shoal's default for a shard this size; hnswlib keeps
its own copy of every vector inside the graph, in RAM whatever ``on_disk`` says, as
Qdrant's ``hnsw_config.on_disk`` is a separate setting) and exact search only
(``indexing_threshold`` 0: no graph), where the vectors are nearly all there is.

    python -m bench.on_disk                     # ~3 min on 2 cores, most of it the graph build
    python -m bench.on_disk --n 20000 --no-graph
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
from shard.local_shard import LocalShard
from shard.types import Distance, NearestQuery, OptimizersConfig, SearchRequest, ShardConfig, VectorParams

K = 10
EF = 64
BATCH = 1000  # points per upsert
QUERY_BATCH = 50  # searches per search_batch call


def shard_config(on_disk: bool, graph: bool, dim: int) -> ShardConfig:
    optimizers = OptimizersConfig() if graph else OptimizersConfig(indexing_threshold=0)
    return ShardConfig(vectors={"": VectorParams(dim, Distance.COSINE, on_disk=on_disk)}, optimizers=optimizers)


def filled(folder: str, data_dir: str, n: int, config) -> LocalShard:
    """A shard under ``config`` holding the first ``n`` points (no payloads), its
    graphs not built yet."""
    base16 = np.load(os.path.join(data_dir, "base.f16.npy"), mmap_mode="r")[:n]
    shard = LocalShard(folder, config, background_indexing=False, wal_capacity_bytes=1 << 40)
    for lo in range(0, len(base16), BATCH):
        rows = np.asarray(base16[lo:lo + BATCH], dtype=np.float32)
        shard.apply({"type": "upsert", "ids": list(range(lo, lo + len(rows))), "vectors": {"": rows},
                     "payloads": None}, wait=False)
    return shard


def build(folder: str, data_dir: str, n: int, graph: bool) -> None:
    """The shard, written and closed (snapshotted): what every mode then opens."""
    dim = np.load(os.path.join(data_dir, "queries.f16.npy"), mmap_mode="r").shape[1]
    shard = filled(folder, data_dir, n, shard_config(False, graph, dim))
    if graph and not shard.wait_indexed(timeout=3600):
        raise RuntimeError("the graph was not built within an hour")
    shard.close()


def memory() -> dict[str, int]:
    """RssAnon, RssFile, VmRSS and VmHWM of this process, in bytes."""
    out = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("RssAnon", "RssFile", "VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) * 1024
    return out


def measure(folder: str, data_dir: str, on_disk: bool, graph: bool, truth_file: str) -> dict:
    """In a fresh process: open the shard, search, report memory and recall."""
    queries = np.load(os.path.join(data_dir, "queries.f16.npy")).astype(np.float32)
    truth = np.load(truth_file)
    started = time.perf_counter()
    shard = LocalShard(folder, shard_config(on_disk, graph, queries.shape[1]), background_indexing=False)
    opened = time.perf_counter() - started
    store = shard.vectors[""]
    after_open = memory()
    found: list[list[int]] = []
    started = time.perf_counter()
    for lo in range(0, len(queries), QUERY_BATCH):
        requests = [SearchRequest(NearestQuery(q), limit=K, hnsw_ef=EF) for q in queries[lo:lo + QUERY_BATCH]]
        found.extend([int(h.id) for h in hits] for hits in shard.search_batch(requests))
    searched = time.perf_counter() - started
    result = {
        "storage": type(store.data).__name__,  # memmap or ndarray
        "map_file": None if store.file is None else store.file.name,
        "open_s": opened,
        "qps": len(queries) / searched,
        "recall": dataset.recall_at_k(found, truth, K),
        "after_open": after_open,
        "after_search": memory(),
    }
    shard.close(take_snapshot=False)
    return result


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f}"


def report(title: str, ram: dict, disk: dict) -> None:
    print(f"\n{title}")
    print(f"{'':<24} | {'in RAM':>10} | {'on_disk':>10} | {'on_disk / RAM':>13}")
    print("-" * 24 + "-+-" + "-" * 10 + "-+-" + "-" * 10 + "-+-" + "-" * 13)
    for phase in ("after_open", "after_search"):
        for key in ("RssAnon", "RssFile", "VmRSS"):
            a, b = ram[phase][key], disk[phase][key]
            print(f"{phase + ' ' + key:<24} | {_mb(a):>7} MB | {_mb(b):>7} MB | {b / a:>13.2f}")
    a, b = ram["after_search"]["VmHWM"], disk["after_search"]["VmHWM"]
    print(f"{'peak RSS (VmHWM)':<24} | {_mb(a):>7} MB | {_mb(b):>7} MB | {b / a:>13.2f}")
    print(f"{'recall@10':<24} | {ram['recall']:>10.4f} | {disk['recall']:>10.4f} |")
    print(f"{'searches/s (1 thread)':<24} | {ram['qps']:>10.0f} | {disk['qps']:>10.0f} | {disk['qps'] / ram['qps']:>13.2f}")
    print(f"{'open (recovery) s':<24} | {ram['open_s']:>10.2f} | {disk['open_s']:>10.2f} |")
    print(f"storage: {ram['storage']} / {disk['storage']} ({disk['map_file']})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default=dataset.DEFAULT_DATASET)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--no-graph", action="store_true", help="only the exact-search shard")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # json: the arguments of one measure()
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(**json.loads(args.child))))
        return
    work = tempfile.mkdtemp(prefix="shoal-on-disk-")
    try:
        n, dim, truth_file = dataset.saved_truth(args.dataset, args.n, K, work)
        for graph in ((False,) if args.no_graph else (True, False)):
            folder = os.path.join(work, "graph" if graph else "exact")
            started = time.perf_counter()
            build(folder, args.dataset, n, graph)
            built = time.perf_counter() - started
            results = {}
            for on_disk in (False, True):
                child = json.dumps({"folder": folder, "data_dir": args.dataset, "on_disk": on_disk,
                                    "graph": graph, "truth_file": truth_file})
                out = subprocess.run([sys.executable, "-m", "bench.on_disk", "--child", child],
                                     check=True, capture_output=True, text=True)
                results[on_disk] = json.loads(out.stdout.strip().splitlines()[-1])
            report(f"{n:,} x {dim} Cosine, "
                   f"{'HNSW graph (m 16, ef 64)' if graph else 'exact search, no graph'}; built in {built:.0f} s",
                   results[False], results[True])
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
