"""Replicated writes on a cluster of machines: their cost per replication factor, and
how long a lost node's replicas take to be rebuilt.

One run builds four "machines" (``tests.cluster``: network namespaces on a bridge, one
``ray start`` node each, as ``tests/cluster/test_replication.py`` does): a Ray head and
two workers with one CPU each, which host the replicas, and a client host whose Ray node
has no CPU, where the gateway runs with a cluster secret (it dials the primaries over
TCP, and each primary forwards to its peers over TCP). The client (this process) runs
in the root namespace and reaches the gateway over the run's bridge; nothing leaves
the network (checked, and written to the JSON). Every node and the gateway is a session
of its own; the kernel's session autogrouping is turned off for the run (``--autogroup``,
restored after), so that a shard's graph building, at a lower priority
(``storage.indexing_niceness``), yields the CPU to every node's writes as it would on a
machine of its own, not only to those of its own session (``bench.machine.autogroup``).

1. Write cost: for replication_factor 1, 2 and 3 (``--shards`` shards, a collection
   each), ``PUT /points?wait=true`` in batches of ``--batch`` points of the dataset,
   first from one client, then from ``--clients`` concurrent clients, each bounded by
   ``--seconds`` and ``--batches`` per client. Points/s and batch latency, beside
   factor 1's as ratios; after loading (and green), recall@10 of ``--queries``
   sequential searches against numpy's exact neighbours of the points acknowledged.
2. Rebuild: a collection of ``--n`` points (the whole dataset by default) with
   replication_factor 2, loaded and green; then a worker holding replicas is killed
   (kill -9 of its whole node; the head holds the GCS and is never killed) while a
   bounded loop of searches and writes goes on. The time from the kill until every
   shard has 2 Active replicas again, none on the lost node's peer, polled on
   ``GET /collections/{name}/cluster``; then the replicas' ``shoal_content_hash`` per
   shard, the exact count against the points acknowledged, and recall.

    python -m bench.cluster_writes          # as root; several minutes on 2 cores
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import sys
import threading
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import numpy as np
import orjson

from bench import dataset, machine, timing
from bench.config import BenchConfig
from bench.remote_search import finish, network_only, run_warnings
from bench.shoal_side import RestClient
from cluster.peers import peer_id
from tests.cluster import gateways
from tests.cluster.connections import escapes
from tests.cluster.netns import missing
from tests.cluster.raynodes import FAST_HEALTH_CHECKS, running, until

FACTORS = (1, 2, 3)
REFERENCE = 1
TARGET_RATIO = 0.6  # factor 2's points/s >= 0.6 x factor 1's
TARGET_REBUILD_S = 60.0
LOAD_BATCH = 1000  # points per upsert while loading the rebuild's collection (not measured)
PORT = 6333


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.cluster_writes", description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default=dataset.DEFAULT_DATASET, help="dataset directory (default: %(default)s, relative to the repo root)")
    p.add_argument("--n", type=int, default=None, help="points of the rebuild's collection, the first N (default: all)")
    p.add_argument("--shards", type=int, default=2, help="shards per collection (default: %(default)s)")
    p.add_argument("--batch", type=int, default=100, help="points per measured write (default: %(default)s)")
    p.add_argument("--clients", type=int, default=4, help="concurrent clients of the second write run (default: %(default)s)")
    p.add_argument("--seconds", type=float, default=20.0, help="at most this long per write run (default: %(default)s)")
    p.add_argument("--batches", type=int, default=150, help="at most this many batches per client and run (default: %(default)s)")
    p.add_argument("--queries", type=int, default=500, help="sequential searches for each recall (default: %(default)s)")
    p.add_argument("--indexing-threshold", type=int, default=None,
                   help="optimizers_config.indexing_threshold (KB) of the write runs' collections; 0: no graph is "
                        "built during them (default: Qdrant's, 20000)")
    p.add_argument("--autogroup", choices=("off", "on"), default="off",
                   help="the kernel's session autogrouping during the run, restored after (default: %(default)s; "
                   "see bench/README.md)")
    p.add_argument("--skip-rebuild", action="store_true", help="measure the write runs only")
    p.add_argument("--skip-writes", action="store_true", help="measure the rebuild only")
    p.add_argument("--node-grace", type=float, default=5.0, help="SHOAL__CLUSTER__NODE_GRACE_S of the gateway (default: %(default)s)")
    p.add_argument("--rebuild-timeout", type=float, default=300.0, help="give up the rebuild after S seconds (default: %(default)s)")
    p.add_argument("--green-timeout", type=float, default=900.0, help="max seconds for a collection to turn green")
    p.add_argument("--out", default=os.path.join("bench", "results", "cluster_writes.json"), help="JSON output (default: %(default)s)")
    return p.parse_args(argv)


def _body(ds: dataset.Dataset, ids: range, sign: float = 1.0) -> bytes:
    """An upsert of points ``ids``: row i of the dataset (times ``sign``) and its pos."""
    return orjson.dumps({"points": [{"id": i, "vector": sign * ds.base[i % ds.n], "payload": {"pos": ds.pos[i % ds.n]}}
                                    for i in ids]}, option=orjson.OPT_SERIALIZE_NUMPY)


def _upsert(client: RestClient, name: str, body: bytes, why: Counter | None = None) -> bool:
    """Whether the write was acknowledged; ``why`` counts the reasons of failures."""
    try:
        status, answer = client.request("PUT", f"/collections/{name}/points?wait=true", body)
    except OSError as exc:
        status, answer = 0, {"status": {"error": type(exc).__name__}}
    if status == 200 and answer.get("result", {}).get("status") == "completed":
        return True
    if why is not None:
        error = str((answer.get("status") or {}).get("error", ""))
        why[f"{status} {error[:120]}"] += 1
    return False


def _create(client: RestClient, name: str, dim: int, cfg: BenchConfig, shards: int, factor: int,
            indexing_threshold: int | None = None) -> list[dict]:
    with contextlib.suppress(RuntimeError):
        client.ok("DELETE", f"/collections/{name}")
    client.ok("PUT", f"/collections/{name}", orjson.dumps({
        "vectors": {"size": dim, "distance": "Cosine"}, "shard_number": shards, "replication_factor": factor,
        "hnsw_config": {"m": cfg.m, "ef_construct": cfg.ef_construct},
        **({"optimizers_config": {"indexing_threshold": indexing_threshold}} if indexing_threshold is not None else {})}))
    return until(lambda: _all_active(client, name, shards, factor), 120, f"{name}: every replica Active")


def _replicas(client: RestClient, name: str) -> list[dict]:
    """Every replica: shard_id, peer_id, state, replica (r0 the primary), hash."""
    info = client.ok("GET", f"/collections/{name}/cluster")["result"]
    return [{"shard_id": r["shard_id"], "peer_id": r["peer_id"], "state": r["state"], "replica": r.get("shoal_replica"),
             "hash": r.get("shoal_content_hash")} for r in info["local_shards"] + info["remote_shards"]]


def _all_active(client: RestClient, name: str, shards: int, factor: int, lost: int | None = None) -> list[dict] | None:
    """The replicas when every shard has ``factor`` Active ones and none is on peer ``lost``."""
    try:
        replicas = _replicas(client, name)
    except (RuntimeError, OSError):
        return None
    active = [r for r in replicas if r["state"] == "Active"]
    done = all(sum(1 for r in active if r["shard_id"] == s) == factor for s in range(shards)) \
        and not any(r["peer_id"] == lost for r in replicas)
    return replicas if done else None


def _green(client: RestClient, name: str, seconds: float) -> float:
    started = time.perf_counter()
    until(lambda: client.ok("GET", f"/collections/{name}")["result"]["status"] == "green", seconds,
          f"{name} to turn green", step=0.05)
    return time.perf_counter() - started


def _recall(client: RestClient, name: str, ds: dataset.Dataset, vectors: np.ndarray, ids: np.ndarray,
            cfg: BenchConfig, count: int) -> dict:
    """``count`` sequential searches (the dataset's queries in turn) against the exact
    top k of ``vectors``, whose point ids are ``ids``."""
    asked = [i % len(ds.queries) for i in range(count)]
    truth = ids[dataset.exact_top_k(dataset.normalise(vectors), dataset.normalise(ds.queries[asked]), cfg.k)]
    answers, latency = [], []
    for i in asked:
        body = orjson.dumps({"vector": ds.queries[i], "limit": cfg.k, "params": {"hnsw_ef": cfg.hnsw_ef}},
                            option=orjson.OPT_SERIALIZE_NUMPY)
        begin = time.perf_counter()
        answer = client.ok("POST", f"/collections/{name}/points/search", body)
        latency.append(time.perf_counter() - begin)
        answers.append([int(p["id"]) for p in answer["result"]])
    return {"recall": dataset.recall_at_k(answers, truth, cfg.k), "queries": count, **timing.percentiles_ms(latency)}


def _write_run(url: str, name: str, ds: dataset.Dataset, first: int, clients: int, args) -> dict:
    """``clients`` threads, each with its connection, upserting the next free batch of
    ids from ``first`` on until ``args.seconds`` or ``args.batches`` of its own. A body
    is serialised before its request's clock starts (the run's wall time includes it)."""
    starts = iter(range(first, ds.n - args.batch + 1, args.batch))
    lock = threading.Lock()
    latency: list[float] = []
    acked: list[int] = []
    errors = [0]
    started = time.perf_counter()
    deadline = started + args.seconds

    def client_loop() -> None:
        client = RestClient(url)
        try:
            for _ in range(args.batches):
                with lock:
                    start = next(starts, None)
                if start is None or time.perf_counter() >= deadline:
                    return
                ids = range(start, start + args.batch)
                body = _body(ds, ids)
                begin = time.perf_counter()
                ok = _upsert(client, name, body)
                took = time.perf_counter() - begin
                with lock:
                    if ok:
                        latency.append(took)
                        acked.extend(ids)
                    else:
                        errors[0] += 1
        finally:
            client.close()

    threads = [threading.Thread(target=client_loop, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - started
    return {"clients": clients, "points": len(acked), "seconds": seconds, "points_per_s": len(acked) / seconds,
            "errors": errors[0], **(timing.percentiles_ms(latency) if latency else {}), "acked": acked}


def _factor(client: RestClient, url: str, factor: int, ds: dataset.Dataset, cfg: BenchConfig, args) -> dict:
    name = f"writes_rf{factor}"
    _create(client, name, ds.dim, cfg, args.shards, factor, args.indexing_threshold)
    out: dict = {"collection": name}
    first = 0
    for clients in (1, args.clients):
        run = _write_run(url, name, ds, first, clients, args)
        first = max(run["acked"], default=first - 1) + 1
        out[f"clients_{clients}"] = run
        print(f"  factor {factor}, {clients} client(s): {run['points']} points in {run['seconds']:.1f} s, "
              f"{run['points_per_s']:,.0f} points/s, p50 {run.get('p50_ms', float('nan')):.1f} ms, "
              f"{run['errors']} errors", flush=True)
    acked = np.array(sorted(out["clients_1"].pop("acked") + out[f"clients_{args.clients}"].pop("acked")))
    out["green_seconds"] = _green(client, name, args.green_timeout)
    out["count"] = client.ok("POST", f"/collections/{name}/points/count", b'{"exact": true}')["result"]["count"]
    out["acked"] = len(acked)
    out["search"] = _recall(client, name, ds, ds.base[acked], acked, cfg, args.queries)
    print(f"  factor {factor}: count {out['count']} (acked {len(acked)}), recall@10 {out['search']['recall']:.4f}",
          flush=True)
    client.ok("DELETE", f"/collections/{name}")
    return out


class Traffic(threading.Thread):
    """Searches and writes in turn, on a connection of its own, until ``stop`` and at
    most ``seconds``; a write that fails is sent again (upserts are idempotent) until
    acknowledged, also after ``stop``. New points: ids from ``first`` on, the dataset's
    rows negated (so no two points share a direction)."""

    def __init__(self, url: str, name: str, ds: dataset.Dataset, first: int, batch: int, seconds: float):
        super().__init__(daemon=True)
        self.url, self.name, self.ds, self.first, self.batch, self.seconds = url, name, ds, first, batch, seconds
        self.stop = threading.Event()
        self.written = 0  # acknowledged new points, ids first .. first + written - 1
        self.counts = {"search_ok": 0, "search_failed": 0, "write_ok": 0, "write_failed": 0}
        self.search_latency: list[float] = []
        self.failures: Counter = Counter()  # why writes failed

    def run(self) -> None:
        client = RestClient(self.url, timeout_s=30.0)
        deadline = time.monotonic() + self.seconds
        pending = None
        try:
            for turn in range(10 ** 9):
                give_up = time.monotonic() > deadline + 60
                if give_up or ((self.stop.is_set() or time.monotonic() > deadline) and pending is None):
                    return
                if pending is None:
                    ids = range(self.first + self.written, self.first + self.written + self.batch)
                    pending = _body(self.ds, ids, -1.0)
                if _upsert(client, self.name, pending, self.failures):
                    self.counts["write_ok"] += 1
                    self.written += self.batch
                    pending = None
                else:
                    self.counts["write_failed"] += 1
                    time.sleep(0.2)
                self._search(client, turn)
        finally:
            client.close()

    def _search(self, client: RestClient, turn: int) -> None:
        body = orjson.dumps({"vector": self.ds.queries[turn % len(self.ds.queries)], "limit": 10},
                            option=orjson.OPT_SERIALIZE_NUMPY)
        begin = time.perf_counter()
        try:
            status, _ = client.request("POST", f"/collections/{self.name}/points/search", body)
        except OSError:
            status = 0
        if status == 200:
            self.counts["search_ok"] += 1
            self.search_latency.append(time.perf_counter() - begin)
        else:
            self.counts["search_failed"] += 1


def _rebuild(client: RestClient, url: str, cluster, ds: dataset.Dataset, cfg: BenchConfig, args) -> dict:
    name, factor = "rebuild", 2
    _create(client, name, ds.dim, cfg, args.shards, factor, args.indexing_threshold)
    started = time.perf_counter()
    for s in range(0, ds.n, LOAD_BATCH):
        client.ok("PUT", f"/collections/{name}/points?wait=true", _body(ds, range(s, min(s + LOAD_BATCH, ds.n))))
    out: dict = {"collection": name, "points": ds.n, "load_seconds": time.perf_counter() - started,
                 "green_seconds": _green(client, name, args.green_timeout)}
    print(f"  rebuild: {ds.n} points loaded in {out['load_seconds']:.1f} s, green {out['green_seconds']:.1f} s later",
          flush=True)

    ids = {n["ip"]: n["id"] for n in cluster.driver(cluster.network.hosts[3]).ask("nodes") if n["alive"]}
    replicas = _replicas(client, name)
    workers = cluster.nodes[1:3]  # the head holds the GCS
    held = [sum(1 for r in replicas if r["peer_id"] == peer_id(ids[node.host.address])) for node in workers]
    victim = workers[held.index(max(held))]
    lost = peer_id(ids[victim.host.address])
    held = max(held)
    out["before"] = replicas
    out["victim"] = {"node": victim.name, "address": victim.host.address, "peer_id": lost, "replicas": held,
                     "primaries": sum(1 for r in replicas if r["peer_id"] == lost and r["replica"] == "r0")}

    traffic = Traffic(url, name, ds, ds.n, args.batch, args.rebuild_timeout)
    traffic.start()
    time.sleep(2.0)  # the loop is going before the kill
    before = dict(traffic.counts)
    killed = time.monotonic()
    cluster.kill(victim)
    dead_at = rebuilt_at = None
    while time.monotonic() - killed < args.rebuild_timeout:
        now = _all_active(client, name, args.shards, factor, lost)
        if now is not None:
            rebuilt_at = time.monotonic()
            break
        if dead_at is None:
            with contextlib.suppress(RuntimeError, OSError):
                if any(r["peer_id"] == lost and r["state"] != "Active" for r in _replicas(client, name)):
                    dead_at = time.monotonic()
        time.sleep(0.25)
    traffic.stop.set()
    traffic.join(timeout=120)
    out["kill_to_marked_dead_s"] = dead_at - killed if dead_at else None
    out["kill_to_rebuilt_s"] = rebuilt_at - killed if rebuilt_at else None
    out["traffic"] = {**traffic.counts, "write_failures": dict(traffic.failures), "before_kill": before,
                      "new_points_acked": traffic.written,
                      "unfinished": traffic.is_alive(),
                      **(timing.percentiles_ms(traffic.search_latency) if traffic.search_latency else {})}
    print(f"  rebuild: killed {victim.name} ({held} replicas); rebuilt "
          f"{'after %.1f s' % out['kill_to_rebuilt_s'] if rebuilt_at else 'NOT within %.0f s' % args.rebuild_timeout}; "
          f"traffic {traffic.counts}", flush=True)

    acked = ds.n + traffic.written
    out["acked"] = acked
    out["count"] = client.ok("POST", f"/collections/{name}/points/count", b'{"exact": true}')["result"]["count"]
    out["after"] = replicas = _replicas(client, name)
    active = [r for r in replicas if r["state"] == "Active"]
    out["hashes_agree"] = all(len({r["hash"] for r in active if r["shard_id"] == s}) == 1
                              and None not in {r["hash"] for r in active if r["shard_id"] == s}
                              for s in range(args.shards))
    new = np.arange(ds.n, acked)
    vectors = np.concatenate([ds.base, -ds.base[new % ds.n]])
    out["search"] = _recall(client, name, ds, vectors, np.concatenate([np.arange(ds.n), new]), cfg, args.queries)
    return out


def _run(args, cfg: BenchConfig, ds: dataset.Dataset) -> dict:
    secret = secrets.token_hex(32)
    # Shard actors at normal priority, as Shoal's own Ray starts them (see bench.remote_search);
    # the GCS checks every node each second, as raynodes.running does by default.
    env = {**FAST_HEALTH_CHECKS, "RAY_worker_niceness": "0"}
    with machine.autogroup(args.autogroup == "on") as grouped, running([1, 1, 1, 0], env=env) as cluster:
        network = cluster.network
        print(f"network {network.subnet}: Ray head {network.hosts[0].address}, workers {network.hosts[1].address} "
              f"and {network.hosts[2].address} (1 CPU each), gateway on {network.hosts[3].address} (no CPU); "
              f"session autogrouping {'n/a' if grouped is None else ('on' if grouped else 'off')}", flush=True)
        gateway = gateways.launch(cluster, network.hosts[3], PORT, network.scratch / "storage", secret,
                                  env={"SHOAL__CLUSTER__NODE_GRACE_S": f"{args.node_grace:g}"})
        try:
            url = gateway.wait_ready().url
            out: dict = {"cpu_probe_start": timing.cpu_probe(), "autogroup": grouped, "writes": {}}
            with network_only(network), machine.LoadMeter() as meter:
                client = RestClient(url)
                try:
                    for factor in () if args.skip_writes else FACTORS:
                        out["writes"][factor] = _factor(client, url, factor, ds, cfg, args)
                    if not args.skip_rebuild:
                        out["rebuild"] = _rebuild(client, url, cluster, ds, cfg, args)
                    out["escaped_connections"] = [str(c) for c in escapes(network, cluster.pids() | {os.getpid()})]
                finally:
                    client.close()
            out["machine_load"] = meter.result
            out["cpu_probe_end"] = timing.cpu_probe()
            return out
        except BaseException:
            if gateway.log.exists():
                print(f"--- log of the gateway ---\n{gateway.log.read_text(errors='replace')[-3000:]}", file=sys.stderr)
            raise
        finally:
            with contextlib.suppress(Exception):
                gateway.stop()


def _rows(res: dict, clients: int) -> list[tuple[str, int, float, float, float, float]]:
    """(measure, factor, figure, its recall, reference, its recall) per row."""
    if not res["writes"]:
        return []
    w, ref = res["writes"], res["writes"][REFERENCE]
    rows = []
    for c in (1, clients):
        for key, unit in (("points_per_s", "points/s"), ("p50_ms", "p50 ms")):
            for factor in FACTORS:
                if factor != REFERENCE:
                    rows.append((f"{unit}, {c} client{'s' * (c > 1)}", factor, w[factor][f"clients_{c}"].get(key, float("nan")),
                                 w[factor]["search"]["recall"], ref[f"clients_{c}"].get(key, float("nan")),
                                 ref["search"]["recall"]))
    return rows


def _cell(measure: str, x: float) -> str:
    return f"{x:,.0f} pts/s" if measure.startswith("points") else f"{x:.1f} ms"


def render(res: dict, args) -> str:
    lines = [f"{'measure':<20} | factor | {'figure':>12} | {'recall':>6} | {'factor 1':>12} | {'recall':>6} | {'ratio':>5}",
             "-" * 20 + "-+-" + "-" * 6 + "-+-" + "-" * 12 + "-+-" + "-" * 6 + "-+-" + "-" * 12 + "-+-" + "-" * 6 + "-+-" + "-" * 5]
    for measure, factor, figure, recall, reference, ref_recall in _rows(res, args.clients):
        lines.append(f"{measure:<20} | {factor:>6} | {_cell(measure, figure):>12} | {recall:.4f} | "
                     f"{_cell(measure, reference):>12} | {ref_recall:.4f} | {figure / reference:>5.2f}")
    lines.append(f"writes: PUT /points?wait=true, {args.batch} points a batch, {args.shards} shards; ratio = figure / "
                 "factor 1's; recall@10 of the collection searched after loading")
    if "rebuild" not in res:
        return "\n".join(lines)
    r = res["rebuild"]
    t = r["traffic"]
    rebuilt = f"{r['kill_to_rebuilt_s']:.1f} s" if r["kill_to_rebuilt_s"] is not None else "not rebuilt"
    dead = f"{r['kill_to_marked_dead_s']:.1f} s" if r["kill_to_marked_dead_s"] is not None else "-"
    lines += ["", f"rebuild of a lost node's replicas: {r['points']:,} points, replication_factor 2, {args.shards} shards",
              f"  killed worker {r['victim']['node']} holding {r['victim']['replicas']} replicas "
              f"({r['victim']['primaries']} primaries); node grace {args.node_grace:g} s, "
              f"RAY_health_check_period_ms={FAST_HEALTH_CHECKS['RAY_health_check_period_ms']}",
              f"  kill -> its replicas not Active: {dead}; kill -> every shard 2 Active replicas, none on it: {rebuilt}",
              f"  during: searches {t['search_ok']} ok / {t['search_failed']} failed, writes {t['write_ok']} ok / "
              f"{t['write_failed']} failed (retried until acknowledged)"
              + "".join(f"\n    {n} x {why}" for why, n in sorted(t["write_failures"].items(), key=lambda x: -x[1])),
              f"  after: count {r['count']:,} vs acknowledged {r['acked']:,}; content hashes agree per shard: "
              f"{r['hashes_agree']}; recall@10 {r['search']['recall']:.4f}"]
    return "\n".join(lines)


def targets(res: dict, args) -> list[dict]:
    w, r = res["writes"], res.get("rebuild")
    out = []
    for c in (1, args.clients) if w else ():
        ratio = w[2][f"clients_{c}"]["points_per_s"] / w[REFERENCE][f"clients_{c}"]["points_per_s"]
        out.append({"target": f"factor 2 points/s >= {TARGET_RATIO:g} x factor 1's, {c} client(s)",
                    "result": "PASS" if ratio >= TARGET_RATIO else "FAIL", "value": f"{ratio:.2f}x"})
    if r is None:
        return out
    took = r["kill_to_rebuilt_s"]
    out.append({"target": f"rebuilt <= {TARGET_REBUILD_S:g} s after the kill",
                "result": "PASS" if took is not None and took <= TARGET_REBUILD_S else "FAIL",
                "value": f"{took:.1f} s" if took is not None else "not rebuilt"})
    out.append({"target": "after the rebuild: hashes agree per shard, count == acknowledged",
                "result": "PASS" if r["hashes_agree"] and r["count"] == r["acked"] else "FAIL",
                "value": f"hashes {'agree' if r['hashes_agree'] else 'differ'}, {r['count']} / {r['acked']}"})
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if (why := missing()) is not None:
        raise SystemExit(f"cannot build the test network: {why}")
    if min(args.shards, args.batch, args.clients, args.batches, args.queries) < 1:
        raise SystemExit("--shards, --batch, --clients, --batches and --queries must be positive")
    root = Path(__file__).resolve().parent.parent
    cfg = BenchConfig(dataset=os.path.normpath(root / args.dataset), n=args.n, green_timeout_s=args.green_timeout)
    ds = dataset.load(cfg.dataset, cfg.n)
    print(f"dataset: {ds.n} points x {ds.dim}, {ds.queries.shape[0]} queries; {args.shards} shards", flush=True)
    res = _run(args, cfg, ds)

    print()
    print(render(res, args))
    tgts = targets(res, args)
    warnings = run_warnings(res)
    for factor, w in res["writes"].items():
        errors = sum(w[f"clients_{c}"]["errors"] for c in (1, args.clients))
        if errors or w["count"] != w["acked"]:
            warnings.append(f"factor {factor}: {errors} failed writes, count {w['count']} vs acknowledged {w['acked']}")
    doc = {"settings": {**vars(args), "bench_config": asdict(cfg), "ray_env": {**FAST_HEALTH_CHECKS}},
           "table": [dict(zip(("measure", "factor", "figure", "recall", "reference", "reference_recall"), row))
                     for row in _rows(res, args.clients)],
           "targets": tgts, "warnings": warnings, "results": res}
    finish(args.out, [f"[{t['result']}] {t['target']}: {t['value']}" for t in tgts], warnings, doc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
