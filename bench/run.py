"""Benchmark entry point: ``python -m bench.run [--shoal-url URL | --start-server] ...``.

Loads wordnet-minilm-384, computes exact ground truth once, then measures each side in
turn (never two at once, so they do not share the 2 cores):
- Edge and hnswlib each in a fresh spawned worker process, so their RSS is their own and
  their thread pools are gone before the next side starts;
- Shoal through REST, either at ``--shoal-url`` or on a server this run starts and stops.
Prints the table and the targets, and writes everything as JSON to ``--out``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import multiprocessing
import os
import platform
import sys
import time
import traceback
from dataclasses import asdict
from urllib.parse import urlsplit

from bench import dataset, machine, procmem, report
from bench.config import BenchConfig

SIDES = ("edge", "hnswlib", "shoal")


def _repo_root() -> str:
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    where = p.add_mutually_exclusive_group()
    where.add_argument("--shoal-url", help="a running Shoal server, e.g. http://127.0.0.1:6333")
    where.add_argument("--start-server", action="store_true", help="start `python -m gateway serve` for the run")
    p.add_argument("--shoal-pid", type=int, help="root pid of the Shoal server tree for RSS (default: the pid listening on the URL's port)")
    p.add_argument("--dataset", default=dataset.DEFAULT_DATASET, help="dataset directory (default: %(default)s, relative to the repo root)")
    p.add_argument("--n", type=int, help="use only the first N base points (quick runs)")
    p.add_argument("--only", default=",".join(SIDES), help="comma-separated sides to run (default: %(default)s)")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per throughput measurement (filtered: half)")
    p.add_argument("--max-requests", type=int, default=1_000_000, help="request cap per load-generator run")
    p.add_argument("--loadgen", choices=("auto", "wrk", "aiohttp"), default="auto")
    p.add_argument("--endpoint", choices=("search", "query"), default="search", help="Shoal route: /points/search or /points/query")
    p.add_argument("--green-timeout", type=float, default=1800.0, help="max seconds to wait for status green")
    p.add_argument("--ready-timeout", type=float, default=180.0, help="max seconds for a started server to answer /readyz")
    p.add_argument("--edge-search-threads", type=int, help="Qdrant Edge's max_search_threads (default: Edge's own, from the CPU count)")
    p.add_argument("--quiet-wait", type=float, default=0.0, help="before each side, wait up to S seconds for other processes to go idle (shared machines)")
    p.add_argument("--out", default="bench-results.json", help="JSON output file (default: %(default)s)")
    return p.parse_args(argv)


def _in_worker(side: str, cfg: BenchConfig, gt: dict) -> dict:
    """Run one in-process reference in a fresh spawned process and return its dict."""
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
        if side == "edge":
            from bench import edge_side

            return pool.submit(edge_side.run, cfg, gt).result()
        from bench import hnswlib_side

        return pool.submit(hnswlib_side.run, cfg, gt).result()


def _run_shoal(args: argparse.Namespace, cfg: BenchConfig, gt: dict) -> dict:
    from bench import shoal_side
    from bench.server import ManagedServer, wait_ready

    if args.start_server:
        server = ManagedServer(_repo_root(), ready_timeout_s=args.ready_timeout)
        print(f"starting Shoal at {server.url} (log: {server.log_path})", flush=True)
        try:
            with server:
                return shoal_side.run(cfg, gt, server.url, server.pid)
        except Exception:
            print("--- server log tail ---\n" + server.log_tail(), file=sys.stderr)
            raise
    url = args.shoal_url.rstrip("/")
    wait_ready(url, 10.0)
    pid = args.shoal_pid or procmem.pid_listening_on(urlsplit(url).port or 80)
    if pid is None:
        print("NOTE: no pid found for the server's port; pass --shoal-pid for memory figures", file=sys.stderr)
    return shoal_side.run(cfg, gt, url, pid)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(only) - set(SIDES)
    if unknown:
        raise SystemExit(f"unknown side(s) in --only: {', '.join(sorted(unknown))}")
    if "shoal" in only and not (args.shoal_url or args.start_server):
        raise SystemExit("the shoal side needs --shoal-url URL or --start-server (or leave it out of --only)")
    data_path = args.dataset if os.path.isabs(args.dataset) else os.path.join(_repo_root(), args.dataset)
    cfg = BenchConfig(
        dataset=os.path.normpath(data_path),
        n=args.n,
        duration_s=args.duration,
        max_requests=args.max_requests,
        green_timeout_s=args.green_timeout,
        shoal_endpoint=args.endpoint,
        loadgen=args.loadgen,
        edge_search_threads=args.edge_search_threads,
    )

    t0 = time.perf_counter()
    ds = dataset.load(cfg.dataset, cfg.n)
    gt = dataset.ground_truth(ds, cfg.k, cfg.filters)
    print(f"dataset: {ds.n} points x {ds.dim}, {ds.queries.shape[0]} queries; ground truth in {time.perf_counter() - t0:.1f}s", flush=True)
    del ds

    results: dict = {}
    errors: dict = {}
    warnings: list[str] = []
    for side in SIDES:
        if side not in only:
            continue
        if args.quiet_wait > 0:
            idle = machine.wait_for_quiet(args.quiet_wait)
            print(f"  machine load before {side}: {idle:.2f} cores", flush=True)
        print(f"running {side} ...", flush=True)
        t = time.perf_counter()
        try:
            if side == "shoal":
                # Measured inside, while the server's tree is alive to be counted as own.
                results[side] = _run_shoal(args, cfg, gt)
            else:
                with machine.LoadMeter() as meter:
                    results[side] = _in_worker(side, cfg, gt)
                results[side]["machine_load"] = meter.result
            print(f"  {side} done in {time.perf_counter() - t:.0f}s", flush=True)
            load = results[side].get("machine_load") or {}
            if load.get("foreign_cores", 0.0) > machine.QUIET_CORES:
                warnings.append(
                    f"{side}: other processes used {load['foreign_cores']:.2f} cores on average "
                    "while it ran; its figures are not comparable"
                )
        except Exception as exc:  # one side failing must not lose the others' figures
            errors[side] = f"{type(exc).__name__}: {exc}"
            print(f"  {side} FAILED: {errors[side]}", file=sys.stderr, flush=True)
            traceback.print_exc()

    rows = report.build_rows(results, cfg)
    tgts = report.targets(results, cfg)
    print()
    print(report.render(rows, tgts))
    for w in warnings:
        print("WARNING: " + w)
    doc = {
        "config": asdict(cfg),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "table": [r.as_dict() for r in rows],
        "targets": tgts,
        "results": results,
        "errors": errors,
        "warnings": warnings,
    }
    with open(args.out, "w") as fh:
        json.dump(doc, fh, indent=2, default=str)
    print(f"\nJSON written to {args.out}")
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
