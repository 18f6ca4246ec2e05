"""Search through a gateway whose shards are on another machine: p50 and throughput.

One run builds two "machines" (``tests.cluster``: network namespaces on a bridge,
one ``ray start`` node each): host A, the Ray head, with CPUs, where every shard
runs, and host B, whose Ray node has no CPU and should host none (see
``_create``). Three gateways join that cluster, each with its own storage and
its own collection of the same points, and are measured side by side:

- ``tcp``: on B, with a cluster secret: the shards listen on TCP at A's address
  and the gateway dials them, authenticated (``cluster.transport``);
- ``ray``: on B, without a secret: Ray actor calls carry every request;
- ``unix``: on A, beside its shards: the same-machine Unix socket. The reference.

The client (this process, and the load generator: wrk or ``bench.aio_client``)
runs in the root namespace and reaches the gateways over the bridge; nothing of
the run leaves the network's namespaces and bridge (checked, and written to the
JSON). Every speed is printed beside the reference's, as a ratio, with recall@10
against exact neighbours (numpy over the same points, ``bench.dataset``).

Every shard builds its HNSW graph (``--indexing-threshold``, default 1 KB; at
Qdrant's default of 20,000 KB a shard of 10k points x 384 is scored exactly and
``hnsw_ef`` does nothing). Sequential searches (one keep-alive connection,
limit 10, hnsw_ef 64, the dataset's queries rotated) give p50 / p90 / p99 and
recall; then the load generator runs ``--clients`` connections for qps, on the
same request bodies (so the recall is the sequential pass's). Both are bounded
by a count and a time, split into ``--rounds`` rounds that visit the three
gateways in turn (in a rotating order), so that a machine's speed drifting
during the run lands on all three alike.

    python -m bench.remote_search          # as root; ~2 min on 2 cores
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import os
import platform
import secrets
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from unittest import mock
from urllib.parse import urlsplit

import numpy as np
import orjson
from qdrant_client import QdrantClient, models

from bench import dataset, loadgen, machine, timing
from bench.config import BenchConfig
from bench.shoal_side import RestClient
from tests.cluster import gateways
from tests.cluster.connections import connections, escapes
from tests.cluster.netns import Network, missing
from tests.cluster.raynodes import RayCluster, session_pids, until

TARGET_P50_MS = 2.0
WARMUP = 100  # searches per gateway before the first round, not counted (connections to the shards open)
REFERENCE = "unix"
PLACEMENT_ATTEMPTS = 40  # creates of one collection until Ray puts every shard on A (see _create)


@dataclass(frozen=True)
class Setup:
    name: str
    label: str
    host: int  # index into the network's hosts: 0 is A (shards), 1 is B (no CPU)
    port: int
    secret: bool

    @property
    def collection(self) -> str:
        return f"remote_search_{self.name}"


SETUPS = (
    Setup("tcp", "B -> A over TCP (secret)", 1, 6333, True),
    Setup("ray", "B -> A by Ray actor calls", 1, 6343, False),
    Setup("unix", "A, beside its shards (Unix socket)", 0, 6333, False),
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.remote_search", description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default=dataset.DEFAULT_DATASET, help="dataset directory (default: %(default)s, relative to the repo root)")
    p.add_argument("--n", type=int, default=20_000, help="the first N base points (default: %(default)s)")
    p.add_argument("--shards", type=int, default=2, help="shards per collection (default: %(default)s)")
    p.add_argument("--indexing-threshold", type=int, default=1,
                   help="the collections' optimizers.indexing_threshold, KB of vectors a shard needs for an HNSW graph; "
                   "default %(default)s: every shard builds one (Qdrant's default, 20000, leaves shards of under ~13k "
                   "points x 384 searched exactly)")
    p.add_argument("--searches", type=int, default=3000, help="sequential searches per gateway (default: %(default)s)")
    p.add_argument("--search-seconds", type=float, default=30.0, help="at most this long per gateway (default: %(default)s)")
    p.add_argument("--clients", type=int, default=4, help="concurrent connections of the throughput runs (default: %(default)s)")
    p.add_argument("--duration", type=float, default=10.0, help="seconds of load per gateway, split into the rounds (wrk runs whole seconds) (default: %(default)s)")
    p.add_argument("--max-requests", type=int, default=100_000, help="request cap of the load per gateway (default: %(default)s)")
    p.add_argument("--rounds", type=int, default=3, help="rounds the counts and times are split into (default: %(default)s)")
    p.add_argument("--loadgen", choices=("auto", "wrk", "aiohttp"), default="auto")
    p.add_argument("--quiet-wait", type=float, default=0.0, help="before measuring, wait up to S seconds for other processes to go idle")
    p.add_argument("--green-timeout", type=float, default=900.0, help="max seconds for a collection to turn green")
    p.add_argument("--out", default=os.path.join("bench", "results", "remote_search.json"), help="JSON output (default: %(default)s)")
    return p.parse_args(argv)


@contextlib.contextmanager
def network_only(network: Network):
    """``loadgen`` and ``RestClient`` refuse every URL but loopback, so that the
    benchmark never loads another machine. These gateways are on this machine
    too, on the run's own bridge: for the run, accept its subnet instead (and
    nothing else, loopback included)."""

    def check(url: str) -> None:
        try:
            inside = ipaddress.ip_address(urlsplit(url).hostname or "") in network.subnet
        except ValueError:
            inside = False
        if not inside:
            raise ValueError(f"this benchmark loads only its own test network ({network.subnet}); refusing {url}")

    with mock.patch.object(loadgen, "check_loopback", check):
        yield


def _create(client: QdrantClient, setup: Setup, dim: int, cfg: BenchConfig, shards: int, indexing_threshold: int,
            cluster: RayCluster, attempts: int) -> int:
    """Create the collection with every shard on A; the attempts it took.

    Shoal pins the shards of a collection to the Ray nodes that have CPUs
    (``cluster.collections._node_for``), so the first attempt should do; this
    checks it by counting the new shard processes on each node, since a shard on
    B would be measured on the wrong path (a gateway on B would reach it by its
    Unix socket). Should Ray put one on B, the collection is made again."""
    a, b = cluster.nodes
    for attempt in range(1, attempts + 1):
        on_a, on_b = gateways.shard_pids(a), gateways.shard_pids(b)
        client.create_collection(
            setup.collection, vectors_config=models.VectorParams(size=dim, distance=models.Distance.COSINE),
            hnsw_config=models.HnswConfigDiff(m=cfg.m, ef_construct=cfg.ef_construct),
            optimizers_config=models.OptimizersConfigDiff(indexing_threshold=indexing_threshold), shard_number=shards)
        new_on_a, new_on_b = gateways.shard_pids(a) - on_a, gateways.shard_pids(b) - on_b
        if len(new_on_a) == shards and not new_on_b:
            return attempt
        client.delete_collection(setup.collection)
        until(lambda: not (new_on_a | new_on_b) & (gateways.shard_pids(a) | gateways.shard_pids(b)), 60,
              f"the shards of a deleted {setup.collection} to exit")
    raise RuntimeError(f"{setup.collection}: Ray put a shard on B in each of {attempts} attempts")


def _load(url: str, setup: Setup, ds: dataset.Dataset, cfg: BenchConfig, args, cluster: RayCluster) -> dict:
    """Create the collection (``_create``), upsert the points through
    qdrant-client a batch at a time with ``wait``, then poll every 50 ms until it
    is green (its HNSW graphs built, if the indexing threshold asks for them),
    as ``bench.shoal_side`` does."""
    client = QdrantClient(url=url, timeout=600)
    try:
        attempts = _create(client, setup, ds.dim, cfg, args.shards, args.indexing_threshold, cluster, PLACEMENT_ATTEMPTS)
        started = time.perf_counter()
        for s in range(0, ds.n, cfg.batch_size):
            e = min(s + cfg.batch_size, ds.n)
            batch = models.Batch(ids=list(range(s, e)), vectors=ds.base[s:e].tolist(),
                                 payloads=[{"pos": p} for p in ds.pos[s:e]])
            client.upsert(setup.collection, batch, wait=True)
        acked = time.perf_counter()
        while (info := client.get_collection(setup.collection)).status != models.CollectionStatus.GREEN:
            if time.perf_counter() - started > cfg.green_timeout_s:
                raise TimeoutError(f"{setup.collection} not green after {cfg.green_timeout_s:.0f} s: {info.status}")
            time.sleep(0.05)
        green = time.perf_counter()
    finally:
        client.close()
    if info.points_count != ds.n:
        raise RuntimeError(f"{setup.collection}: {info.points_count} points, not {ds.n}")
    return {"points_per_s": ds.n / (green - started), "seconds": green - started, "upsert_seconds": acked - started,
            "until_green_seconds": green - acked, "indexed_vectors": info.indexed_vectors_count,
            "placement_attempts": attempts}


def _searches(client: RestClient, path: str, bodies: list[bytes], first: int, count: int, seconds: float) -> dict:
    """``count`` searches in turn from query ``first`` on, for at most ``seconds``."""
    deadline = time.perf_counter() + seconds
    out: dict = {"latency_s": [], "asked": [], "answers": []}
    for j in range(count):
        i = (first + j) % len(bodies)
        begin = time.perf_counter()
        answer = client.ok("POST", path, bodies[i])
        end = time.perf_counter()
        out["latency_s"].append(end - begin)
        out["asked"].append(i)
        out["answers"].append([int(p["id"]) for p in answer["result"]])
        if end >= deadline:
            break
    return out


def _in_turns(rounds: int) -> list[list[Setup]]:
    """Each round visits every gateway, starting one further along than the last."""
    return [list(SETUPS[r % len(SETUPS):] + SETUPS[: r % len(SETUPS)]) for r in range(rounds)]


def _sequential(clients: dict[str, RestClient], bodies: list[bytes], truth: np.ndarray, k: int, args) -> dict:
    for setup in SETUPS:
        _searches(clients[setup.name], _path(setup), bodies, len(bodies) - WARMUP, WARMUP, 60.0)
    per_round = -(-args.searches // args.rounds)
    done: dict[str, dict] = {s.name: {"latency_s": [], "asked": [], "answers": []} for s in SETUPS}
    for r, turn in enumerate(_in_turns(args.rounds)):
        for setup in turn:
            part = _searches(clients[setup.name], _path(setup), bodies, r * per_round, per_round,
                             args.search_seconds / args.rounds)
            for key, values in part.items():
                done[setup.name][key] += values
    out = {}
    for name, got in done.items():
        out[name] = {**timing.percentiles_ms(got["latency_s"]), "seconds": float(sum(got["latency_s"])),
                     "recall": dataset.recall_at_k(got["answers"], truth[got["asked"]], k)}
    return out


def _throughput(urls: dict[str, str], bodies_file: str, generator: str, args) -> dict:
    runs: dict[str, list[dict]] = {s.name: [] for s in SETUPS}
    for turn in _in_turns(args.rounds):
        for setup in turn:
            loadgen.wait_a_moment()
            runs[setup.name].append(loadgen.run(urls[setup.name] + _path(setup), bodies_file, args.clients,
                                                args.duration / args.rounds, args.max_requests // args.rounds, generator))
    out = {}
    for name, parts in runs.items():
        requests, seconds = sum(p["requests"] for p in parts), sum(p["seconds"] for p in parts)
        out[name] = {"clients": args.clients, "qps": requests / seconds if seconds else 0.0, "requests": requests,
                     "seconds": seconds, "errors": sum(p["errors"] for p in parts), "generator": generator,
                     "client_cpu_us_per_request": sum(p["client_cpu_s"] for p in parts) / requests * 1e6 if requests else None,
                     "runs": [{k: v for k, v in p.items() if k != "raw"} for p in parts]}
    return out


def _path(setup: Setup) -> str:
    return f"/collections/{setup.collection}/points/search"


def _data_paths(cluster: RayCluster, running: dict[str, gateways.Gateway]) -> dict:
    """Which way each gateway's requests went: its TCP connections to the shards'
    listeners (only the ``tcp`` collection's shards have one), counted while the
    connections are open."""
    listeners = {line.split()[3] for line in gateways.shard_listeners(cluster)}
    out: dict = {"shard_listeners": len(listeners)}
    for name, gateway in running.items():
        pids = session_pids(gateway.proc.pid)
        out[name] = {"tcp_connections_to_shards": sum(1 for c in connections(gateway.host.name)
                                                      if c.pids & pids and c.peer in listeners)}
    return out


def _path_warnings(paths: dict, shards: int) -> list[str]:
    want = {"tcp": shards, "ray": 0, "unix": 0}
    found = {name: paths[name]["tcp_connections_to_shards"] for name in want}
    out = [f"{name}: {found[name]} TCP connections to the shards, not {n}; its figures may not be over its "
           "intended path" for name, n in want.items() if found[name] != n]
    if paths["shard_listeners"] != shards:
        out.append(f"{paths['shard_listeners']} shard TCP listeners, not {shards} (the tcp collection's)")
    return out


def _run(args, cfg: BenchConfig, ds: dataset.Dataset, truth: np.ndarray) -> dict:
    bodies = [orjson.dumps({"vector": q, "limit": cfg.k, "params": {"hnsw_ef": cfg.hnsw_ef}},
                           option=orjson.OPT_SERIALIZE_NUMPY) for q in ds.queries]
    generator = loadgen.choose(cfg.loadgen)
    secret = secrets.token_hex(32)
    network = Network(2)
    # Shard actors at normal priority, as Shoal's own Ray starts them (cluster.runtime):
    # Ray's default niceness of 15 for workers lets the gateway starve its shards.
    cluster = RayCluster(network, [os.cpu_count() or 1, 0], env={"RAY_worker_niceness": "0"})
    running: dict[str, gateways.Gateway] = {}
    try:
        print(f"network {network.subnet}: A {network.hosts[0].address} (Ray head, shards), "
              f"B {network.hosts[1].address} (Ray node, no CPU)", flush=True)
        cluster.start()
        for setup in SETUPS:
            running[setup.name] = gateways.launch(cluster, network.hosts[setup.host], setup.port,
                                                  network.scratch / f"storage-{setup.name}",
                                                  secret if setup.secret else None)
        urls = {name: gateway.wait_ready().url for name, gateway in running.items()}
        out: dict = {"ingest": {}, "cpu_probe_start": timing.cpu_probe()}
        for setup in SETUPS:
            out["ingest"][setup.name] = got = _load(urls[setup.name], setup, ds, cfg, args, cluster)
            print(f"  {setup.name}: {ds.n} points green in {got['seconds']:.1f} s, {got['indexed_vectors']} in HNSW "
                  f"graphs (shards all on A at create {got['placement_attempts']})", flush=True)
        if args.quiet_wait > 0:
            print(f"  machine load before measuring: {machine.wait_for_quiet(args.quiet_wait):.2f} cores", flush=True)
        with network_only(network), tempfile.TemporaryDirectory(prefix="bench-bodies-") as tmp, \
                machine.LoadMeter() as meter:
            clients = {name: RestClient(url) for name, url in urls.items()}
            try:
                print("sequential searches ...", flush=True)
                out["sequential"] = _sequential(clients, bodies, truth, cfg.k, args)
                bodies_file = os.path.join(tmp, "search.jsonl")
                loadgen.write_bodies(bodies_file, bodies)
                print(f"load, {args.clients} clients ({generator}) ...", flush=True)
                out["throughput"] = _throughput(urls, bodies_file, generator, args)
                out["data_paths"] = _data_paths(cluster, running)
                out["escaped_connections"] = [str(c) for c in escapes(network, cluster.pids() | {os.getpid()})]
            finally:
                for client in clients.values():
                    client.close()
        out["machine_load"] = meter.result
        out["cpu_probe_end"] = timing.cpu_probe()
        return out
    except BaseException:
        for name, gateway in running.items():
            if gateway.log.exists():
                print(f"--- log of the {name} gateway ---\n{gateway.log.read_text(errors='replace')[-3000:]}",
                      file=sys.stderr)
        raise
    finally:
        for gateway in running.values():
            with contextlib.suppress(Exception):
                gateway.stop()
        cluster.stop()
        network.close()


def _rows(res: dict) -> list[tuple[str, str, float, float, float, float]]:
    """(measure, gateway, figure, its recall, reference, its recall) per row."""
    seq, load, ref = res["sequential"], res["throughput"], REFERENCE
    rows = []
    for setup in SETUPS:
        if setup.name == ref:
            continue
        for pct in ("p50", "p90", "p99"):
            rows.append((f"sequential {pct}", setup.label, seq[setup.name][f"{pct}_ms"], seq[setup.name]["recall"],
                         seq[ref][f"{pct}_ms"], seq[ref]["recall"]))
        rows.append((f"qps, {load[ref]['clients']} clients", setup.label, load[setup.name]["qps"],
                     seq[setup.name]["recall"], load[ref]["qps"], seq[ref]["recall"]))
    return rows


def _cell(measure: str, x: float) -> str:
    return f"{x:,.0f} qps" if measure.startswith("qps") else f"{x:.3f} ms"


def render(res: dict) -> str:
    ref = next(s for s in SETUPS if s.name == REFERENCE)
    lines = [f"{'measure':<18} | {'gateway':<26} | {'figure':>10} | {'recall':>6} | {'reference':>10} | {'recall':>6} | {'ratio':>5}",
             "-" * 18 + "-+-" + "-" * 26 + "-+-" + "-" * 10 + "-+-" + "-" * 6 + "-+-" + "-" * 10 + "-+-" + "-" * 6 + "-+-" + "-" * 5]
    for measure, label, figure, recall, reference, ref_recall in _rows(res):
        lines.append(f"{measure:<18} | {label:<26} | {_cell(measure, figure):>10} | {recall:.4f} | "
                     f"{_cell(measure, reference):>10} | {ref_recall:.4f} | {figure / reference:>5.2f}")
    lines.append(f"reference: the gateway on {ref.label}; ratio = figure / reference; qps recall is the "
                 "sequential pass's (same request bodies)")
    return "\n".join(lines)


def targets(res: dict) -> list[dict]:
    out = []
    for setup in SETUPS:
        if setup.name != REFERENCE:
            p50 = res["sequential"][setup.name]["p50_ms"]
            out.append({"target": f"p50 <= {TARGET_P50_MS:g} ms, gateway {setup.label}",
                        "result": "PASS" if p50 <= TARGET_P50_MS else "FAIL", "p50_ms": p50})
    return out


def run_warnings(res: dict) -> list[str]:
    """Warnings every run on the test network checks: connections that left it
    (``escaped_connections``) and other processes' CPU (``machine_load``)."""
    out = []
    if res["escaped_connections"]:
        out.append(f"connections left the test network: {res['escaped_connections']}")
    if res["machine_load"]["foreign_cores"] > machine.QUIET_CORES:
        out.append(f"other processes used {res['machine_load']['foreign_cores']:.2f} cores on average "
                   "during the measurements")
    return out


def finish(out: str, targets_lines: list[str], warnings: list[str], doc: dict) -> None:
    """Print the targets and warnings, and write ``doc`` (with the machine's
    description) as JSON to ``out``."""
    print("\ntargets:")
    for line in targets_lines:
        print("  " + line)
    for w in warnings:
        print("WARNING: " + w)
    doc = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
           **doc}
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(doc, indent=2, default=str))
    print(f"\nJSON written to {out}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if (why := missing()) is not None:
        raise SystemExit(f"cannot build the test network: {why}")
    if min(args.n, args.shards, args.searches, args.clients, args.rounds) < 1:
        raise SystemExit("--n, --shards, --searches, --clients and --rounds must be positive")
    root = Path(__file__).resolve().parent.parent
    cfg = BenchConfig(dataset=os.path.normpath(root / args.dataset), n=args.n, duration_s=args.duration,
                      max_requests=args.max_requests, green_timeout_s=args.green_timeout, loadgen=args.loadgen)
    ds = dataset.load(cfg.dataset, cfg.n)
    truth = dataset.ground_truth(ds, cfg.k, ())[""]
    print(f"dataset: {ds.n} points x {ds.dim}, {ds.queries.shape[0]} queries; {args.shards} shards", flush=True)
    res = _run(args, cfg, ds, truth)

    print()
    print(render(res))
    tgts = targets(res)
    warnings = _path_warnings(res["data_paths"], args.shards)
    if any(res["throughput"][s.name]["errors"] for s in SETUPS):
        warnings.append("the load generator saw errors: " + ", ".join(
            f"{s.name} {res['throughput'][s.name]['errors']}" for s in SETUPS))
    warnings += run_warnings(res)
    doc = {"settings": {**vars(args), "bench_config": asdict(cfg)},
           "setups": {s.name: {"gateway": s.label, "secret": s.secret, "on_shard_host": s.host == 0} for s in SETUPS},
           "table": [dict(zip(("measure", "gateway", "figure", "recall", "reference", "reference_recall"), row))
                     for row in _rows(res)],
           "targets": tgts, "warnings": warnings, "results": res}
    finish(args.out, [f"[{t['result']}] {t['target']}: {t['p50_ms']:.3f} ms" for t in tgts], warnings, doc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
