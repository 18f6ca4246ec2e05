"""Hybrid search benchmark: ``python -m bench.hybrid [--shoal-url URL | --start-server] ...``.

On wordnet-minilm-384, each point holds its dense embedding (``dense``, 384, Cosine) and a
sparse term-count vector of its text (``text``, ``modifier: idf``; built and documented in
``hybrid_data``). Two queries, each measured on Shoal (REST, ``hybrid_shoal``) and on Qdrant
Edge (in-process, ``hybrid_edge``), one side after the other:

- sparse-only: the query text's sparse vector, top k by ``text``;
- hybrid: a dense prefetch (limit L, ``hnsw_ef``) and a sparse prefetch (limit L) fused by
  RRF, top k.

Speed: Shoal's queries/s under the load generator with ``--clients`` connections; Edge's
best of one call per query and one batch call. Correctness: the top-k of one pass of
every query against exact references computed here with numpy/scipy (Qdrant's IDF and
RRF formulas), plainly and with ties allowed for (``hybrid_data``), and sparse scores
against exact ones. Prints the table, writes JSON to ``--out``; exit status 1 if a side
failed or Shoal refused a query kind (the other figures are still printed and written).

``--rounds R`` runs Edge then Shoal R times, each side loaded from scratch each time, and
the table gives the median throughputs and the median of the per-round ratios (each
round's figures beside it): on a shared machine, one round's ratio moves by ±10 % with
what the machine does meanwhile, and alternating the sides spreads that over both.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import multiprocessing
import os
import platform
import statistics
import sys
import time
import traceback
from dataclasses import asdict
from pathlib import Path
from urllib.parse import urlsplit

from bench import dataset, hybrid_data, hybrid_shoal, machine, procmem
from bench.config import BenchConfig

REPO = Path(__file__).resolve().parents[1]
COLLECTION = "bench_hybrid"
SCORE_RTOL = 1e-4  # a sparse score further than this from the exact one is a scoring bug, not f32 rounding
LABELS = {"sparse": "sparse-only (text, idf)", "hybrid": "hybrid: dense {L} + sparse {L}, RRF"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.hybrid", description=__doc__.splitlines()[0])
    where = p.add_mutually_exclusive_group()
    where.add_argument("--shoal-url", help="a running Shoal server, e.g. http://127.0.0.1:6333")
    where.add_argument("--start-server", action="store_true", help="start `python -m gateway serve` for the run")
    p.add_argument("--shoal-pid", type=int, help="root pid of the Shoal server tree (default: the pid listening on the URL's port)")
    p.add_argument("--dataset", default=dataset.DEFAULT_DATASET, help="dataset directory (default: %(default)s, relative to the repo root)")
    p.add_argument("--n", type=int, help="use only the first N base points (quick runs)")
    p.add_argument("--only", default="edge,shoal", help="comma-separated sides to run (default: %(default)s)")
    p.add_argument("--prefetch-limit", type=int, default=20, help="L: the limit of each prefetch of the hybrid query (default: %(default)s)")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per throughput measurement (default: %(default)s)")
    p.add_argument("--clients", type=int, default=32, help="Shoal: load-generator connections (default: %(default)s)")
    p.add_argument("--max-requests", type=int, default=1_000_000, help="request cap per load-generator run")
    p.add_argument("--answers-time-limit", type=float, default=300.0,
                   help="Shoal: seconds the one-pass correctness check of a query kind may take; the queries answered by then are checked")
    p.add_argument("--loadgen", choices=("auto", "wrk", "aiohttp"), default="auto")
    p.add_argument("--green-timeout", type=float, default=1800.0, help="max seconds to wait for status green")
    p.add_argument("--ready-timeout", type=float, default=180.0, help="max seconds for a started server to answer /readyz")
    p.add_argument("--quiet-wait", type=float, default=0.0,
                   help="before each side, wait up to S seconds for other processes to go idle (shared machines)")
    p.add_argument("--rounds", type=int, default=1,
                   help="run Edge then Shoal this many times, each from scratch, and report the medians "
                        "(the machine's drift between the two sides is what one round cannot tell apart)")
    p.add_argument("--edge-search-threads", type=int, help="Qdrant Edge's max_search_threads (default: Edge's own)")
    p.add_argument("--out", default=os.path.join("bench", "results", "hybrid.json"),
                   help="JSON output file (default: %(default)s; bench/results/ is in .gitignore)")
    return p.parse_args(argv)


def _edge(cfg: BenchConfig, prefetch_limit: int) -> dict:
    """Edge in a fresh spawned process, so its search pool is gone before Shoal runs."""
    from bench import hybrid_edge

    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
        with machine.LoadMeter() as meter:
            out = pool.submit(hybrid_edge.run, cfg, prefetch_limit).result()
    out["machine_load"] = meter.result
    return out


def _shoal(args: argparse.Namespace, cfg: BenchConfig, data: hybrid_data.HybridData) -> dict:
    from bench.server import ManagedServer, wait_ready

    def run(url: str, pid: int | None) -> dict:
        return hybrid_shoal.run(cfg, data, args.prefetch_limit, args.clients, url, pid, args.answers_time_limit)

    if args.start_server:
        server = ManagedServer(str(REPO), ready_timeout_s=args.ready_timeout)
        print(f"starting Shoal at {server.url} (log: {server.log_path})", flush=True)
        try:
            with server:
                return run(server.url, server.pid)
        except Exception:
            print("--- server log tail ---\n" + server.log_tail(), file=sys.stderr)
            raise
    url = args.shoal_url.rstrip("/")
    wait_ready(url, 10.0)
    return run(url, args.shoal_pid or procmem.pid_listening_on(urlsplit(url).port or 80))


def checks(exact: hybrid_data.Exact, results: dict) -> dict:
    """Each side's answers against the exact references, and the two sides against each
    other (the share of Shoal's top-k that Edge also returned)."""
    check = {"sparse": hybrid_data.check_sparse, "hybrid": hybrid_data.check_hybrid}
    out: dict = {}
    for kind, fn in check.items():
        answers = {side: results[side][kind]["answers"] for side in results if kind in results[side]}
        out[kind] = {side: fn(exact, a) for side, a in answers.items()}
        if len(answers) == 2:
            out[kind]["shoal_vs_edge_overlap"] = hybrid_data.overlap(
                [ids for ids, _ in answers["shoal"]], [ids for ids, _ in answers["edge"]], exact.k)
    return out


def rows(results: dict, checked: dict) -> list[dict]:
    """One row per query kind: Shoal qps, Edge best qps, ratio, each side's overlaps."""
    out = []
    for kind, label in LABELS.items():
        s, e = results.get("shoal", {}).get(kind), results.get("edge", {}).get(kind)
        sq = s["load"]["qps"] if s else None
        eq = e["best_qps"] if e else None
        out.append({
            "query": kind, "label": label, "shoal_qps": sq, "edge_qps": eq, "edge_best": e["best"] if e else None,
            "edge_loop_qps": e["loop"]["qps"] if e else None, "edge_batch_qps": e["batch"]["qps"] if e else None,
            "shoal_over_edge": sq / eq if sq and eq else None,
            **{f"{side}_{m}": checked.get(kind, {}).get(side, {}).get(m)
               for side in ("shoal", "edge") for m in ("overlap", "tie_aware_overlap")},
        })
    return out


def with_medians(table: list[dict], by_round: list[list[dict]]) -> list[dict]:
    """``table`` with each throughput and ratio the median over the rounds (the
    per-round figures kept in ``by_round``: Shoal, Edge, ratio); as it is for one round."""
    if len(by_round) < 2:
        return table
    out = []
    for i, row in enumerate(table):
        runs = [r[i] for r in by_round]
        medians = {key: statistics.median(vals) if (vals := [r[key] for r in runs if r[key]]) else None
                   for key in ("shoal_qps", "edge_qps", "shoal_over_edge")}
        out.append({**row, **medians, "by_round": [(r["shoal_qps"], r["edge_qps"], r["shoal_over_edge"]) for r in runs]})
    return out


def _num(x: float | None, digits: int = 0) -> str:
    return "—" if x is None else f"{x:,.{digits}f}"


def _grid(rows: list[list[str]]) -> list[str]:
    """Rows of cells as aligned text (first column left, the others right), a rule under the head."""
    widths = [max(len(cell) for cell in col) for col in zip(*rows)]
    lines = [" | ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))) for row in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return lines


def render(table: list[dict], results: dict, clients: int, limit: int) -> str:
    head = ["query", f"Shoal q/s ({clients} conn.)", "Edge q/s (best)", "Shoal/Edge", "overlap Shoal", "overlap Edge"]
    cells = [
        [r["label"].format(L=limit), _num(r["shoal_qps"]),
         _num(r["edge_qps"]) + (f" ({r['edge_best']})" if r["edge_best"] else ""), _num(r["shoal_over_edge"], 2),
         f"{_num(r['shoal_overlap'], 4)} / {_num(r['shoal_tie_aware_overlap'], 4)}",
         f"{_num(r['edge_overlap'], 4)} / {_num(r['edge_tie_aware_overlap'], 4)}"]
        for r in table
    ]
    text = _grid([head] + cells)
    text.append("overlap: top-10 overlap with the exact reference, plain / tie-aware (a returned point counts when it "
                "can be in the exact top 10 under some order of the tied exact scores)")
    for r in table:
        if r.get("by_round"):
            text.append(f"{r['query']}: medians of {len(r['by_round'])} rounds; by round, Shoal / Edge q/s (ratio): "
                        + ", ".join(f"{_num(sq)} / {_num(eq)} ({_num(ratio, 2)})" for sq, eq, ratio in r["by_round"]))
    shoal, edge = results.get("shoal", {}), results.get("edge", {})
    for kind in LABELS:
        if kind in edge:
            e = edge[kind]
            text.append(f"Edge {kind}: one query per call {_num(e['loop']['qps'])} q/s (p50 {e['latency']['p50_ms']:.2f} ms), "
                        f"one batch call {_num(e['batch']['qps'])} q/s")
        if kind in shoal:
            s = shoal[kind]
            text.append(f"Shoal {kind}: one connection p50 {s['python_client_latency']['p50_ms']:.2f} ms (Python client), "
                        f"{clients} connections p50 {s['load']['p50_ms']:.2f} ms")
        if kind in shoal.get("errors", {}):
            text.append(f"Shoal {kind}: NOT MEASURED, Shoal answered {shoal['errors'][kind]}")
    return "\n".join(text)


def warnings_of(results: dict, checked: dict, n_queries: int) -> list[str]:
    out = []
    for side, res in results.items():
        load = res.get("machine_load") or {}
        if load.get("foreign_cores", 0.0) > machine.QUIET_CORES:
            out.append(f"{side}: other processes used {load['foreign_cores']:.2f} cores on average; its figures are not comparable")
    for kind in hybrid_shoal.KINDS:
        errors = results.get("shoal", {}).get(kind, {}).get("load", {}).get("errors")
        if errors:
            out.append(f"shoal {kind}: the load generator saw {errors} failed requests")
        for side in ("shoal", "edge"):
            check = checked.get(kind, {}).get(side)
            if check is None:
                continue
            if check["queries"] < n_queries:
                out.append(f"{side} {kind}: only {check['queries']} of {n_queries} queries answered within the time limit were checked")
            if (check.get("max_score_rel_error") or 0.0) > SCORE_RTOL:
                out.append(f"{side} {kind}: scores differ from the exact ones by up to {check['max_score_rel_error']:.2e} (relative)")
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    if only - {"edge", "shoal"}:
        raise SystemExit(f"unknown side(s) in --only: {', '.join(sorted(only - {'edge', 'shoal'}))}")
    if "shoal" in only and not (args.shoal_url or args.start_server):
        raise SystemExit("the shoal side needs --shoal-url URL or --start-server (or --only edge)")
    if min(args.prefetch_limit, args.clients) < 1 or args.prefetch_limit < 10:
        raise SystemExit("--prefetch-limit must be at least 10 (the k of the answer) and --clients positive")
    cfg = BenchConfig(
        dataset=os.path.normpath(REPO / args.dataset), n=args.n, duration_s=args.duration,
        max_requests=args.max_requests, green_timeout_s=args.green_timeout, loadgen=args.loadgen,
        edge_search_threads=args.edge_search_threads, collection=COLLECTION, shoal_endpoint="query",
    )
    t0 = time.perf_counter()
    data = hybrid_data.load(cfg.dataset, cfg.n)
    exact = hybrid_data.Exact(data, cfg.k, args.prefetch_limit)
    print(f"dataset: {data.dense.n} points x {data.dense.dim}, vocabulary {data.dim:,} tokens, "
          f"{len(data.queries)} queries; exact references in {time.perf_counter() - t0:.1f}s", flush=True)

    errors: dict = {}
    rounds: list[dict] = []
    for round_ in range(1, args.rounds + 1):
        results: dict = {}
        for side in ("edge", "shoal"):
            if side not in only or side in errors:
                continue
            if args.quiet_wait > 0:
                print(f"  machine load before {side}: {machine.wait_for_quiet(args.quiet_wait):.2f} cores", flush=True)
            print(f"running {side} (round {round_} of {args.rounds}) ...", flush=True)
            t = time.perf_counter()
            try:
                results[side] = _edge(cfg, args.prefetch_limit) if side == "edge" else _shoal(args, cfg, data)
                print(f"  {side} done in {time.perf_counter() - t:.0f}s", flush=True)
            except Exception as exc:  # one side failing must not lose the other's figures
                errors[side] = f"{type(exc).__name__}: {exc}"
                print(f"  {side} FAILED: {errors[side]}", file=sys.stderr, flush=True)
                traceback.print_exc()
        rounds.append(results)

    results = rounds[0]  # the answers checked, the latencies shown: the first round's
    checked = checks(exact, results)
    table = with_medians(rows(results, checked), [rows(r, checked) for r in rounds])
    warnings = warnings_of(results, checked, len(data.queries))
    print()
    print(render(table, results, args.clients, args.prefetch_limit))
    for kind, c in checked.items():
        if "shoal_vs_edge_overlap" in c:
            print(f"{kind}: Shoal's top-10 vs Edge's: overlap {c['shoal_vs_edge_overlap']:.4f}")
    for w in warnings:
        print("WARNING: " + w)
    doc = {
        "config": {**asdict(cfg), "prefetch_limit": args.prefetch_limit, "clients": args.clients, "vocabulary": data.dim},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "table": table,
        "rounds": [[{k: row[k] for k in ("query", "shoal_qps", "edge_qps", "shoal_over_edge")} for row in rows(r, checked)]
                   for r in rounds],
        "checks": checked,
        "results": results,
        "errors": errors,
        "warnings": warnings,
    }
    for res in (res for r in rounds for res in r.values()):  # the answers are summarised by "checks"
        for kind in hybrid_shoal.KINDS:
            res.get(kind, {}).pop("answers", None)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(doc, indent=2, default=str))
    print(f"\nJSON written to {args.out}")
    return 1 if errors or results.get("shoal", {}).get("errors") else 0


if __name__ == "__main__":
    raise SystemExit(main())
