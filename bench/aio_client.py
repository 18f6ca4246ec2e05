"""Fallback HTTP load generator: asyncio + aiohttp, N keep-alive connections, one process.

Used when wrk is not installed (``bench/loadgen.py`` picks). It runs as its own process
(``python -m bench.aio_client ...``) so its event loop does not share the benchmark's
interpreter, and prints one JSON line. Every worker coroutine owns one connection (the
connector's limit equals the concurrency) and sends bodies in rotation from its own
offset; the run stops at the deadline or after ``--max-requests`` responses, whichever
comes first. Client overhead is measured in bench/README.md (it is several times wrk's).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

import aiohttp
import numpy as np


async def _main(args) -> dict:
    with open(args.bodies, "rb") as fh:
        bodies = [line.rstrip(b"\n") for line in fh if line.strip()]
    if not bodies:
        raise ValueError(f"no request bodies in {args.bodies}")
    headers = {"Content-Type": "application/json"}
    latencies: list[float] = []
    errors = {"status": 0, "exception": 0}
    sent = 0
    t0 = time.perf_counter()
    deadline = t0 + args.duration

    connector = aiohttp.TCPConnector(limit=args.concurrency, force_close=False)
    timeout = aiohttp.ClientTimeout(total=args.timeout)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def worker(w: int) -> None:
            nonlocal sent
            i = w * (len(bodies) // args.concurrency)
            while sent < args.max_requests and time.perf_counter() < deadline:
                sent += 1
                body = bodies[i % len(bodies)]
                i += 1
                start = time.perf_counter()
                try:
                    async with session.post(args.url, data=body, headers=headers) as resp:
                        await resp.read()
                        if resp.status != 200:
                            errors["status"] += 1
                except (aiohttp.ClientError, asyncio.TimeoutError):
                    errors["exception"] += 1
                    continue
                latencies.append(time.perf_counter() - start)

        await asyncio.gather(*(worker(w) for w in range(args.concurrency)))
    elapsed = time.perf_counter() - t0
    lat_us = np.asarray(latencies or [0.0]) * 1e6
    return {
        "requests": len(latencies),
        "duration_us": int(elapsed * 1e6),
        "err_status": errors["status"],
        "err_exception": errors["exception"],
        "p50_us": float(np.percentile(lat_us, 50)),
        "p90_us": float(np.percentile(lat_us, 90)),
        "p99_us": float(np.percentile(lat_us, 99)),
        "mean_us": float(lat_us.mean()),
        "max_us": float(lat_us.max()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--bodies", required=True, help="file with one JSON body per line")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--max-requests", type=int, default=1_000_000)
    parser.add_argument("--timeout", type=float, default=30.0)
    args = parser.parse_args(argv)
    result = asyncio.run(_main(args))
    sys.stdout.write("AIOJSON " + json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
