"""Measure what each load generator costs, against a trivial local server.

``python -m bench.calibrate_loadgen`` starts a minimal aiohttp server (one process, a
canned search-shaped JSON answer), drives it with wrk and with the aiohttp client at 8 and
32 connections, and prints each generator's client CPU per request. On a 2-core machine
every client CPU-microsecond is taken from the server under test, so this is the figure
that decides which generator the benchmark prefers (see bench/README.md).
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import orjson

from bench import loadgen

_SERVER = r"""
import sys
from aiohttp import web
body = sys.argv[2].encode()
async def handle(request):
    await request.read()
    return web.Response(body=body, content_type="application/json")
app = web.Application()
app.router.add_post("/collections/c/points/search", handle)
app.router.add_get("/readyz", lambda r: web.Response(text="ok"))
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=4.0)
    args = parser.parse_args(argv)

    answer = orjson.dumps(
        {"result": [{"id": i, "version": 1, "score": 0.5} for i in range(10)], "status": "ok", "time": 0.001}
    ).decode()
    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", _SERVER, str(port), answer])
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                urllib.request.urlopen(url + "/readyz", timeout=1).read()
                break
            except OSError:
                time.sleep(0.1)
        bodies = [
            orjson.dumps({"vector": [0.001 * ((i * 7 + j) % 997) for j in range(384)], "limit": 10, "params": {"hnsw_ef": 64}})
            for i in range(100)
        ]
        with tempfile.TemporaryDirectory() as tmp:
            bodies_file = os.path.join(tmp, "bodies.jsonl")
            loadgen.write_bodies(bodies_file, bodies)
            gens = ["aiohttp"] + (["wrk"] if loadgen.wrk_path() else [])
            print(f"{'generator':10} {'conns':>5} {'qps':>9} {'p50 ms':>8} {'client CPU us/req':>18}")
            for gen in gens:
                for conc in (8, 32):
                    r = loadgen.run(url + "/collections/c/points/search", bodies_file, conc, args.duration, 10_000_000, gen)
                    print(
                        f"{gen:10} {conc:5d} {r['qps']:9.0f} {r['p50_ms']:8.2f} "
                        f"{r['client_cpu_us_per_request']:18.1f}"
                    )
                    loadgen.wait_a_moment()
    finally:
        server.terminate()
        server.wait(timeout=10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
