"""One client's latency to a shard: its Unix socket against its TCP listener.

A shard (``LocalShard``, 2,000 points of 1,024 dimensions: a search request is
a ~4 KB frame) is served by ``ShardServer`` in a process of its own, on both
its Unix socket and TCP on loopback; one client (uvloop, as the gateway runs)
makes calls one at a time, alternating between the two in rounds, and the
percentiles of each are printed. Loopback TCP measures the protocol's cost
(handshake aside: once per connection) and the TCP stack's, not a network's.

    python -m bench.tcp_latency             # ~20 s
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import secrets
import tempfile
import time

import numpy as np
import uvloop
from threadpoolctl import threadpool_limits

from cluster.transport import ShardChannel, ShardServer
from shard.local_shard import LocalShard
from shard.types import Distance, NearestQuery, PayloadSelector, SearchRequest, ShardConfig, VectorParams

DIM, POINTS = 1024, 2000


def serve(folder: str, secret: bytes, addresses, stop) -> None:
    threadpool_limits(1, user_api="blas")  # as ShardActor does: one search thread
    shard = LocalShard(folder, ShardConfig(vectors={"": VectorParams(DIM, Distance.COSINE)}), background_indexing=False)
    rng = np.random.default_rng(0)
    shard.apply({"type": "upsert", "ids": list(range(POINTS)),
                 "vectors": {"": rng.random((POINTS, DIM), dtype=np.float32)},
                 "payloads": [{"n": i, "city": "Berlin"} for i in range(POINTS)]})
    server = ShardServer(shard, secret=secret, tcp_host="127.0.0.1")
    addresses.send((server.address, server.tcp_address))
    stop.wait()
    server.close()
    shard.close(take_snapshot=False)


async def measure(unix: str, tcp: tuple[str, int], secret: bytes, calls: int, rounds: int) -> dict:
    started = time.perf_counter()
    tcp_channel = await ShardChannel.connect_tcp(*tcp, secret)
    handshake = time.perf_counter() - started
    channels = {"unix": await ShardChannel.connect(unix), "tcp": tcp_channel}
    rng = np.random.default_rng(1)
    queries = [[SearchRequest(NearestQuery(q), limit=10, with_payload=PayloadSelector())]
               for q in rng.random((64, DIM), dtype=np.float32)]
    kinds = {"search": lambda i: ("search_batch", queries[i % 64]), "count": lambda i: ("count", None)}
    times: dict = {(k, c): [] for k in kinds for c in channels}
    for _ in range(rounds):
        for kind, make in kinds.items():
            for name, channel in channels.items():
                for i in range(calls // rounds + 50):
                    method, arg = make(i)
                    begin = time.perf_counter()
                    await channel.call(method, arg)
                    if i >= 50:  # the first calls of a round warm up
                        times[kind, name].append(time.perf_counter() - begin)
    for channel in channels.values():
        channel.close()
    return {"handshake": handshake, **times}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=5000, help="calls per kind and transport")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    secret = secrets.token_bytes(32)
    context = mp.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    stop = context.Event()
    with tempfile.TemporaryDirectory() as folder:
        process = context.Process(target=serve, args=(folder, secret, send, stop), daemon=True)
        process.start()
        unix, tcp = receive.recv()
        try:
            results = uvloop.run(measure(unix, tcp, secret, args.calls, args.rounds))
        finally:
            stop.set()
            process.join(30)
    print(f"TCP handshake (connect + 1.5 round trips): {results.pop('handshake') * 1e6:.0f} us")
    print(f"{'call':<32} | {'p50':>8} | {'p90':>8} | {'p99':>8}")
    for (kind, name), samples in results.items():
        p50, p90, p99 = np.percentile(np.array(samples) * 1e6, [50, 90, 99])
        label = f"{kind} over {name}" + (" (4 KB request)" if kind == "search" else "")
        print(f"{label:<32} | {p50:>5.0f} us | {p90:>5.0f} us | {p99:>5.0f} us")


if __name__ == "__main__":
    main()
